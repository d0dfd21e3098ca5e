"""The simulator's genetic architecture: spatial genetic factors with a polygenic background, and
large-effect planted loci acting on some of them.

A subject's FA map is the template plus a sum of spatial patterns, each scaled by a per-subject
coefficient. The patterns of the *factors* are

- ``global``: all white matter (the general white-matter factor that makes tracts genetically
  correlated);
- ``tract``: one atlas tract (its weight map);
- ``cross``: a smooth blob over parts of several tracts and the white matter between them, not
  aligned with the atlas;
- ``contrast``: a gradient along one tract with the mean of every atlas tract removed, so tract
  means do not see it (for the corpus callosum, left against right);
- ``local``: a small blob inside one tract;
- ``shape``: a smooth local deformation of the image around a point on one tract, which either
  displaces the tract sideways or thickens it (a dilation across its centre line). It is applied
  as a deformation (the subject's map is resampled, `wm_jax.simulate.cohort`), so it moves FA
  where the tract's edges are and changes little of a tract's mean; its pattern, for the
  oracle phenotype and truth.tsv, is the FA change per unit coefficient to first order,
  -grad(template) . displacement. None by default (``factors.n_shape = 0``).

Each factor's coefficient is ``sd * (sqrt(h2) * polygenic + sqrt(1 - h2) * environment)`` in FA
units: a share ``on_genome_share`` of the polygenic variance comes from ``n_causal`` small-effect
variants of the simulated chromosomes, the rest from the genome that is not simulated (a few Mb
stand for 3 Gb, so most causal variants lie elsewhere). A planted locus adds to one factor's
coefficient an effect sized so that it explains ``loci.share`` of the variance of that factor's
*oracle phenotype* (each volume's coefficient on the pattern), so that a perfect phenotype of the
pattern would find it at the demo's size whatever else overlaps the pattern. Every planted locus
acts on a factor, so loci move directions of heritable variation, as the loci of real imaging
phenotypes do (they are genetically correlated with the polygenic background).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wm_jax.simulate.phantom import TRACTS, Phantom, normalised_coordinates

KINDS = ("local", "tract", "cross", "contrast", "shape")


@dataclass
class Factor:
    name: str
    kind: str  # global, tract, cross, contrast, local or shape
    pattern: np.ndarray  # (X, Y, Z) float32, max |pattern| = 1
    sd: float  # FA units
    h2: float  # of the factor's coefficient
    tract: str = "-"  # the tract it lies in or centres on
    # shape only: (3, X, Y, Z) displacement in voxels per unit of coefficient (a coefficient c moves the
    # map's content by c * displacement: FA becomes F(x - c d(x)), which is F + c pattern to first order)
    displacement: np.ndarray | None = None


@dataclass
class Locus:
    variant: int  # row of the genotype matrix
    factor: int  # index into the factor list
    share: float  # of the factor's variance
    sign: float


def _normalised(pattern: np.ndarray) -> np.ndarray:
    return (pattern / np.abs(pattern).max()).astype(np.float32)


def _blob(coords: np.ndarray, centre: np.ndarray, width: float) -> np.ndarray:
    distance2 = ((coords - centre[:, None, None, None].astype(np.float32)) ** 2).sum(0)
    return np.exp(-0.5 * distance2 / width**2)


def _point_on(tract_index: int, rng: np.random.Generator) -> np.ndarray:
    points = np.asarray(TRACTS[tract_index].points)
    k = rng.integers(0, len(points) - 1)
    return points[k] + rng.uniform(0.2, 0.8) * (points[k + 1] - points[k])


def _without_tract_means(pattern: np.ndarray, atlas: np.ndarray) -> np.ndarray:
    """The pattern with its mean over every atlas label removed inside that label."""
    out = pattern.copy()
    for label in np.unique(atlas[atlas > 0]):
        inside = atlas == label
        out[inside] -= out[inside].mean()
    return out


def spatial_factors(phantom: Phantom, config, rng: np.random.Generator) -> list[Factor]:
    """The factors of ``config.factors`` (see configs/sim.py) on the phantom's grid."""
    f = config.factors
    factors = _factor_patterns(phantom, f, rng)
    # Factors of one kind differ in size: each sd is scaled by a draw from [1 - spread, 1 + spread].
    for factor in factors:
        factor.sd = float(factor.sd * rng.uniform(1 - f.sd_spread, 1 + f.sd_spread))
    return factors


def _factor_patterns(phantom: Phantom, f, rng: np.random.Generator) -> list[Factor]:
    coords = normalised_coordinates(phantom.fa.shape)
    white = phantom.white_matter.astype(np.float32)
    factors = [Factor("global", "global", _normalised(white), f.global_sd, f.global_h2)]
    factors += [
        Factor(f"tract_{t.name}", "tract", _normalised(phantom.tract_weight[i]), f.tract_sd, f.tract_h2, t.name)
        for i, t in enumerate(TRACTS)
    ]
    for k in range(f.n_cross):
        a, b = rng.choice(len(TRACTS), 2, replace=False)
        centre = (_point_on(a, rng) + _point_on(b, rng)) / 2
        pattern = _blob(coords, centre, f.cross_width) * phantom.brain
        factors.append(
            Factor(
                f"cross{k + 1}",
                "cross",
                _normalised(pattern),
                f.cross_sd,
                f.cross_h2,
                f"{TRACTS[a].name}+{TRACTS[b].name}",
            )
        )
    for k, t in enumerate(rng.choice(len(TRACTS), f.n_contrast, replace=len(TRACTS) < f.n_contrast)):
        gradient = phantom.tract_weight[t] * (phantom.tract_arc[t] - 0.5) * rng.choice([-1.0, 1.0])
        pattern = _without_tract_means(gradient, phantom.atlas)
        factors.append(
            Factor(f"contrast{k + 1}", "contrast", _normalised(pattern), f.contrast_sd, f.contrast_h2, TRACTS[t].name)
        )
    for k in range(f.n_local):
        t = int(rng.integers(len(TRACTS)))
        pattern = _blob(coords, _point_on(t, rng), f.local_width) * phantom.tract_weight[t]
        factors.append(Factor(f"local{k + 1}", "local", _normalised(pattern), f.local_sd, f.local_h2, TRACTS[t].name))
    for k in range(f.get("n_shape", 0)):  # none by default: the default cohort draws nothing more
        t = int(rng.integers(len(TRACTS)))
        thicken = k % 2 == 1  # displace, thicken, displace, ...
        field = shape_displacement(phantom.fa.shape, TRACTS[t], f.shape_width, thicken, rng)
        pattern, displacement = _deformation_pattern(phantom.fa, field)
        name = f"shape{k + 1}_{'thicken' if thicken else 'displace'}"
        factors.append(Factor(name, "shape", pattern, f.shape_sd, f.shape_h2, TRACTS[t].name, displacement))
    return factors


def shape_displacement(shape, tract, width: float, thicken: bool, rng: np.random.Generator) -> np.ndarray:
    """(3, X, Y, Z) smooth displacement in voxels, at most 1 voxel long: a Gaussian window of sd
    ``width`` (normalised coordinates) around a point on ``tract`` times either one direction
    across the tract (displace) or the offset from the tract's local centre line across it, which
    moves both edges outwards (thicken). Both factors are smooth (infinitely differentiable)."""
    coords = normalised_coordinates(shape)
    points = np.asarray(tract.points, np.float64)
    k = int(rng.integers(0, len(points) - 1))
    centre = points[k] + rng.uniform(0.2, 0.8) * (points[k + 1] - points[k])
    along = (points[k + 1] - points[k]) / np.linalg.norm(points[k + 1] - points[k])
    window = _blob(coords, centre, width)
    if thicken:
        offset = coords - centre[:, None, None, None].astype(np.float32)
        across = offset - np.einsum("c,cxyz->xyz", along, offset)[None] * along[:, None, None, None]
        field = window[None] * across / width
    else:
        direction = rng.standard_normal(3)
        direction -= (direction @ along) * along
        field = window[None] * (direction / np.linalg.norm(direction))[:, None, None, None]
    voxels_per_unit = (np.asarray(shape, np.float64) - 1) / 2  # normalised [-1, 1] -> voxel index
    field = field * voxels_per_unit[:, None, None, None]
    return (field / np.sqrt((field**2).sum(0)).max()).astype(np.float32)


def _deformation_pattern(template: np.ndarray, field: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first-order FA change of moving ``template``'s content by ``field`` (voxels),
    -grad(template) . field, max-normalised, and the displacement per unit of that pattern's
    coefficient (so that a coefficient c changes FA by about c * pattern, as for the other kinds)."""
    change = -sum(np.gradient(template.astype(np.float64), axis=a) * field[a] for a in range(3))
    peak = np.abs(change).max()
    return (change / peak).astype(np.float32), (field / peak).astype(np.float32)


def choose_loci(factors: list[Factor], maf: np.ndarray, config, rng: np.random.Generator) -> list[Locus]:
    """``config.loci.per_kind`` loci of each kind in ``config.loci.kinds``, each on its own factor of
    that kind, at variants of MAF >= ``min_maf`` spread along the genome."""
    loci_config = config.loci
    chosen_factors = []
    for kind in loci_config.kinds:
        candidates = [i for i, factor in enumerate(factors) if factor.kind == kind]
        if len(candidates) < loci_config.per_kind:
            raise ValueError(f"loci.per_kind={loci_config.per_kind} but only {len(candidates)} {kind} factors")
        chosen_factors += list(rng.choice(candidates, loci_config.per_kind, replace=False))
    candidates = np.flatnonzero(maf >= loci_config.min_maf)
    segments = np.array_split(candidates, len(chosen_factors))  # one locus per stretch of the genome
    order = rng.permutation(len(chosen_factors))  # which kind lands where carries no pattern
    return [
        Locus(
            int(rng.choice(segments[j])), int(chosen_factors[i]), float(loci_config.share), float(rng.choice([-1, 1]))
        )
        for j, i in enumerate(order)
    ]


def _standardised(values: np.ndarray) -> np.ndarray:
    values = values - values.mean()
    sd = values.std()
    return values / sd if sd > 0 else values


def factor_coefficients(
    factors: list[Factor],
    dosage: np.ndarray,
    freq: np.ndarray,
    config,
    rng: np.random.Generator,
    causal_out: list | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(subjects, factors) coefficients in FA units before any planted locus, and their genetic
    parts (same units: the polygenic score). ``dosage`` is (variants, subjects) true ALT dosage,
    ``freq`` the ALT frequency. ``causal_out``, when given, receives each factor's causal variants."""
    g = config.genetics
    n = dosage.shape[1]
    eligible = np.flatnonzero(np.minimum(freq, 1 - freq) >= g.min_causal_maf)
    coefficients = np.empty((n, len(factors)), np.float64)
    genetic_values = np.empty((n, len(factors)), np.float64)
    for i, factor in enumerate(factors):
        causal = rng.choice(eligible, min(g.n_causal, len(eligible)), replace=False)
        if causal_out is not None:
            causal_out.append(causal)
        genotypes = dosage[causal].astype(np.float32)
        scaled = (genotypes - 2 * freq[causal, None]) / np.sqrt(2 * freq[causal, None] * (1 - freq[causal, None]))
        on_genome = _standardised(rng.standard_normal(len(causal)).astype(np.float32) @ scaled)
        polygenic = np.sqrt(g.on_genome_share) * on_genome + np.sqrt(1 - g.on_genome_share) * rng.standard_normal(n)
        genetic_values[:, i] = factor.sd * np.sqrt(factor.h2) * polygenic
        coefficients[:, i] = genetic_values[:, i] + factor.sd * np.sqrt(1 - factor.h2) * rng.standard_normal(n)
    return coefficients, genetic_values


def oracle_background_variance(
    pattern: np.ndarray, maps: np.ndarray, coefficients: np.ndarray, brain: np.ndarray, noise_variance: float
) -> float:
    """Variance over subjects of the oracle phenotype of ``pattern`` (its least-squares coefficient
    in a volume, over the brain) for volumes sum_m coefficients[:, m] maps[m] plus white noise of
    ``noise_variance`` per voxel: what a locus on that pattern has to stand out against. Each map is
    taken less its mean over the brain, as the per-image z-score removes a shift of all voxels.
    Registration residuals are left out."""
    p = pattern[brain].astype(np.float64)
    norm = p @ p
    brain_maps = maps.reshape(len(maps), -1)[:, brain.ravel()].astype(np.float64)
    loadings = (brain_maps - brain_maps.mean(axis=1, keepdims=True)) @ p / norm
    centred = p - p.mean()  # white noise less its brain mean, projected on p
    return float(np.var(coefficients @ loadings) + noise_variance * (centred @ centred) / norm**2)


def add_loci(
    loci: list[Locus],
    factors: list[Factor],
    coefficients: np.ndarray,
    genetic_values: np.ndarray,
    background: list[float],
    dosage: np.ndarray,
    freq: np.ndarray,
) -> np.ndarray:
    """Add each locus to its factor's coefficient (and genetic value) so that it explains its
    ``share`` of the variance of its pattern's oracle phenotype, given that phenotype's
    ``background`` variance; returns each locus's effect per ALT allele in FA units."""
    betas = np.empty(len(loci))
    for j, locus in enumerate(loci):
        p = freq[locus.variant]
        variance = locus.share / (1 - locus.share) * background[j]
        betas[j] = locus.sign * np.sqrt(variance / (2 * p * (1 - p)))
        effect = betas[j] * (dosage[locus.variant] - 2 * p)
        coefficients[:, locus.factor] += effect
        genetic_values[:, locus.factor] += effect
    return betas
