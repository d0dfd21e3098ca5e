"""FA maps as NIfTI: load and validate against the cohort's reference grid."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wm_jax.errors import input_error, require_file


@dataclass(frozen=True)
class Grid:
    """The voxel grid every FA map of a cohort must share."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    def to_json(self) -> dict:
        return {"shape": list(self.shape), "affine": np.asarray(self.affine).tolist()}

    @classmethod
    def from_json(cls, record: dict) -> Grid:
        return cls(tuple(record["shape"]), np.asarray(record["affine"], np.float64))


def _load(path: Path):
    import nibabel as nib

    try:
        return nib.load(str(path))
    except Exception as err:  # nibabel raises several types for unreadable files
        raise input_error(path, f"not a readable NIfTI image ({type(err).__name__})")


def read_grid(path: str | os.PathLike) -> Grid:
    path = require_file(path, "FA map")
    image = _load(path)
    if len(image.shape) != 3:
        raise input_error(path, f"expected a 3D FA map, found shape {tuple(image.shape)}")
    return Grid(tuple(int(s) for s in image.shape), np.asarray(image.affine, np.float64))


def load_fa(path: str | os.PathLike, grid: Grid | None = None) -> np.ndarray:
    """Load one FA map as float32, checking it is 3D, on ``grid``, finite, in [0, 1] and not empty."""
    path = require_file(path, "FA map")
    image = _load(path)
    if len(image.shape) != 3:
        raise input_error(path, f"expected a 3D FA map, found shape {tuple(image.shape)}")
    if grid is not None:
        if tuple(image.shape) != tuple(grid.shape):
            raise input_error(path, f"shape {tuple(image.shape)} differs from the cohort's {tuple(grid.shape)}")
        if not np.allclose(image.affine, grid.affine, atol=1e-3):
            raise input_error(path, "affine differs from the cohort's reference (maps must share one space)")
    try:
        data = np.asarray(image.get_fdata(dtype=np.float32))
    except Exception as err:
        raise input_error(path, f"image data cannot be read ({type(err).__name__}: {err})")
    if not np.isfinite(data).all():
        raise input_error(path, f"{int((~np.isfinite(data)).sum())} voxels are NaN or infinite; expected finite FA")
    low, high = float(data.min()), float(data.max())
    if low < -1e-6 or high > 1 + 1e-6:
        raise input_error(path, f"values span [{low:.3g}, {high:.3g}]; FA must lie in [0, 1]")
    if high <= 0:
        raise input_error(path, "image is empty (no voxel above 0)")
    return data


def save_nifti(path: str | os.PathLike, data: np.ndarray, affine: np.ndarray) -> None:
    import nibabel as nib

    image = nib.Nifti1Image(np.asarray(data, np.float32), np.asarray(affine, np.float64))
    image.header.set_xyzt_units("mm")
    nib.save(image, str(path))
