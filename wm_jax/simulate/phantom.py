"""A brain-shaped FA phantom with named white-matter tracts, defined on any grid.

Coordinates are normalised to [-1, 1] on each axis of the grid, with axes ordered as MNI/RAS:
x left->right, y posterior->anterior, z inferior->superior. Tracts are tubes around polylines;
their FA peaks on the centre line and falls off as a Gaussian of the distance to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tract:
    name: str
    points: tuple[tuple[float, float, float], ...]
    radius: float
    peak_fa: float
    age_slope: float  # FA change per decade of age (negative = decline)


def _mirror(name: str, points, radius, peak, slope) -> list[Tract]:
    left = tuple((-abs(x), y, z) for x, y, z in points)
    right = tuple((abs(x), y, z) for x, y, z in points)
    return [Tract(f"{name}_l", left, radius, peak, slope), Tract(f"{name}_r", right, radius, peak, slope)]


TRACTS: tuple[Tract, ...] = tuple(
    [
        Tract(
            "cc_genu",
            ((-0.45, 0.33, 0.05), (-0.22, 0.48, 0.12), (0.0, 0.52, 0.12), (0.22, 0.48, 0.12), (0.45, 0.33, 0.05)),
            0.075,
            0.78,
            -0.030,
        ),
        Tract(
            "cc_body",
            ((-0.5, 0.0, 0.38), (-0.25, 0.04, 0.27), (0.0, 0.05, 0.23), (0.25, 0.04, 0.27), (0.5, 0.0, 0.38)),
            0.065,
            0.74,
            -0.022,
        ),
        Tract(
            "cc_splenium",
            ((-0.45, -0.52, 0.12), (-0.22, -0.5, 0.12), (0.0, -0.46, 0.1), (0.22, -0.5, 0.12), (0.45, -0.52, 0.12)),
            0.08,
            0.80,
            -0.015,
        ),
    ]
    + _mirror(
        "cst",
        ((0.26, -0.05, 0.6), (0.2, -0.08, 0.3), (0.15, -0.1, 0.0), (0.1, -0.12, -0.3), (0.06, -0.15, -0.6)),
        0.06,
        0.70,
        -0.010,
    )
    + _mirror(
        "cingulum",
        ((0.1, 0.45, 0.12), (0.1, 0.2, 0.32), (0.1, -0.1, 0.36), (0.1, -0.4, 0.26), (0.12, -0.56, 0.0)),
        0.045,
        0.62,
        -0.018,
    )
    + _mirror(
        "slf", ((0.45, 0.35, 0.26), (0.5, 0.05, 0.32), (0.5, -0.25, 0.32), (0.5, -0.46, 0.14)), 0.06, 0.58, -0.020
    )
    + _mirror(
        "ilf", ((0.5, 0.2, -0.35), (0.52, -0.2, -0.25), (0.45, -0.55, -0.1), (0.33, -0.75, 0.0)), 0.055, 0.60, -0.016
    )
)

BRAIN_CENTRE = np.array([0.0, -0.02, 0.05])
BRAIN_AXES = np.array([0.8, 0.9, 0.75])
WM_RADIUS = 0.84  # inside this ellipsoidal radius: white matter; between it and 1: cortex
VENTRICLES = (
    (np.array([-0.12, 0.02, 0.12]), np.array([0.07, 0.26, 0.1])),
    (np.array([0.12, 0.02, 0.12]), np.array([0.07, 0.26, 0.1])),
)
DEEP_GREY = (
    (np.array([-0.17, -0.12, -0.05]), np.array([0.1, 0.14, 0.1])),
    (np.array([0.17, -0.12, -0.05]), np.array([0.1, 0.14, 0.1])),
)


def normalised_coordinates(shape: tuple[int, int, int]) -> np.ndarray:
    """(3, X, Y, Z) voxel centres mapped to [-1, 1]."""
    axes = [np.linspace(-1, 1, s, dtype=np.float32) for s in shape]
    return np.stack(np.meshgrid(*axes, indexing="ij"))


def ellipsoid_radius(coords: np.ndarray, centre: np.ndarray, axes: np.ndarray) -> np.ndarray:
    d = (coords - centre[:, None, None, None]) / axes[:, None, None, None]
    return np.sqrt((d**2).sum(axis=0))


def distance_to_polyline(coords: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance of every voxel to a polyline, and the arc-length fraction (0..1) of its nearest point."""
    flat = coords.reshape(3, -1).T
    best = np.full(flat.shape[0], np.inf, np.float32)
    arc = np.zeros(flat.shape[0], np.float32)
    lengths = np.linalg.norm(np.diff(points, axis=0), axis=1)
    starts = np.concatenate([[0.0], np.cumsum(lengths)])
    for k in range(len(points) - 1):
        a, b = points[k], points[k + 1]
        ab = b - a
        t = np.clip(((flat - a) @ ab) / (ab @ ab), 0.0, 1.0)
        d = np.linalg.norm(flat - (a + t[:, None] * ab), axis=1)
        closer = d < best
        best[closer] = d[closer]
        arc[closer] = (starts[k] + t[closer] * lengths[k]) / starts[-1]
    return best.reshape(coords.shape[1:]), arc.reshape(coords.shape[1:])


def _smooth_field(shape, rng: np.random.Generator, coarse: int = 4) -> np.ndarray:
    from scipy.ndimage import zoom

    field = rng.standard_normal((coarse, coarse, coarse)).astype(np.float32)
    return zoom(field, [s / coarse for s in shape], order=3)[: shape[0], : shape[1], : shape[2]]


@dataclass
class Phantom:
    """The template: FA values, tissue labels, per-tract weight maps and atlas labels."""

    fa: np.ndarray  # (X, Y, Z) template FA
    brain: np.ndarray  # bool
    white_matter: np.ndarray  # bool
    tract_weight: np.ndarray  # (T, X, Y, Z) in [0, 1], Gaussian profile around the centre line
    tract_arc: np.ndarray  # (T, X, Y, Z) position along each tract, 0..1
    atlas: np.ndarray  # (X, Y, Z) int16: 0 = none, k = TRACTS[k-1]
    tracts: tuple[Tract, ...] = TRACTS


def build_phantom(shape: tuple[int, int, int], seed: int = 0) -> Phantom:
    rng = np.random.default_rng(seed)
    coords = normalised_coordinates(shape)
    # Cortex folding: modulate the brain boundary with a smooth random field.
    radius = ellipsoid_radius(coords, BRAIN_CENTRE, BRAIN_AXES) * (1 + 0.03 * _smooth_field(shape, rng, 6))
    brain = radius <= 1.0
    white_matter = radius <= WM_RADIUS
    fa = np.zeros(shape, np.float32)
    fa[brain] = 0.2 + 0.04 * _smooth_field(shape, rng, 8)[brain]  # cortex 0.12-0.28
    wm_background = 0.42 + 0.025 * _smooth_field(shape, rng, 8)
    fa[white_matter] = wm_background[white_matter]
    for centre, axes in DEEP_GREY:
        inside = ellipsoid_radius(coords, centre, axes) <= 1
        fa[inside & brain] = 0.26
    weights, arcs = [], []
    for tract in TRACTS:
        distance, arc = distance_to_polyline(coords, np.asarray(tract.points, np.float32))
        weight = np.exp(-0.5 * (distance / (0.6 * tract.radius)) ** 2) * brain
        weights.append(weight.astype(np.float32))
        arcs.append(arc)
        core = brain & (weight > 0.1)
        fa[core] = np.maximum(fa[core], (wm_background + (tract.peak_fa - wm_background) * weight)[core])
    for centre, axes in VENTRICLES:
        inside = ellipsoid_radius(coords, centre, axes) <= 1
        fa[inside & brain] = 0.05
    tract_weight = np.stack(weights)
    atlas = np.zeros(shape, np.int16)
    strongest = tract_weight.argmax(axis=0)
    in_tract = (tract_weight.max(axis=0) > np.exp(-0.5 * (1 / 0.6) ** 2)) & brain & (fa > 0.3)
    atlas[in_tract] = strongest[in_tract] + 1
    return Phantom(fa, brain, white_matter, tract_weight, np.stack(arcs), atlas)
