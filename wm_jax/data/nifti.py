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


def load_image(path: Path):
    """The NIfTI image at ``path`` (header read, data not yet); unreadable is an InputError."""
    import nibabel as nib

    try:
        return nib.load(str(path))
    except Exception as err:  # nibabel raises several types for unreadable files
        raise input_error(path, f"not a readable NIfTI image ({type(err).__name__})")


def read_grid(path: str | os.PathLike) -> Grid:
    path = require_file(path, "FA map")
    image = load_image(path)
    if len(image.shape) != 3:
        raise input_error(path, f"expected a 3D FA map, found shape {tuple(image.shape)}")
    return Grid(tuple(int(s) for s in image.shape), np.asarray(image.affine, np.float64))


def storage_conversion(image, path: Path) -> str | None:
    """How the map's stored values become FA: None for floating point. Integers with a scale factor
    (scl_slope, scl_inter: FA stored compactly) are read as the scaled values, and described here so
    the caller can log it. Complex values, and integers without a scale (only 0 and 1 could be FA:
    a mask, most likely), are errors."""
    dtype = np.dtype(image.get_data_dtype())
    if dtype.kind == "f":
        return None
    if dtype.kind in "iu":
        slope, inter = getattr(image.dataobj, "slope", 1.0), getattr(image.dataobj, "inter", 0.0)
        if slope != 1.0 or inter != 0.0:
            return f"{dtype} with scale factor {slope:g} (intercept {inter:g}), read as float32"
        raise input_error(
            path,
            f"stored as {dtype} without a scale factor, so its values are whole numbers (a mask?); expected FA "
            "as floating point in [0, 1], or integers with scl_slope",
        )
    raise input_error(path, f"stored as {dtype}; expected FA as real numbers (floating point) in [0, 1]")


def load_fa(path: str | os.PathLike, grid: Grid | None = None, conversions: dict | None = None) -> np.ndarray:
    """Load one FA map as float32, checking it is 3D, on ``grid``, stored as real numbers (not complex,
    `storage_conversion`), finite, in [0, 1] and not empty. A conversion from scaled integers is
    counted in ``conversions`` (description -> maps)."""
    path = require_file(path, "FA map")
    image = load_image(path)
    if len(image.shape) != 3:
        raise input_error(path, f"expected a 3D FA map, found shape {tuple(image.shape)}")
    conversion = storage_conversion(image, path)
    if conversion is not None and conversions is not None:
        conversions[conversion] = conversions.get(conversion, 0) + 1
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
