"""Region-of-interest FA phenotypes: the conventional baseline that UDIPs are compared with.

`tract_means`: the mean of each atlas tract per subject (ROI-FA, as TBSS/JHU-atlas studies use).
`oracle_phenotypes`: for a simulated cohort, each volume's coefficient on each planted locus's spatial
pattern (the oracle phenotype: what a perfect atlas-free phenotype of that locus would measure).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from wm_jax.data.store import VolumeStore
from wm_jax.errors import input_error, require_file


def _weighted_sums(store: VolumeStore, weights: np.ndarray, chunk: int = 256) -> np.ndarray:
    """(subjects, maps): each volume of the store dotted with each weight map (maps, X, Y, Z)."""
    weights = weights.reshape(len(weights), -1).astype(np.float32)
    out = np.empty((len(store), len(weights)), np.float64)
    for start in range(0, len(store), chunk):
        block = np.asarray(store.volumes[start : start + chunk], np.float32).reshape(-1, weights.shape[1])
        out[start : start + chunk] = block @ weights.T
    return out


def _region_means(store: VolumeStore, masks: np.ndarray) -> np.ndarray:
    """(subjects, regions) mean of the store's volumes over each boolean mask (regions, X, Y, Z)."""
    weights = masks.reshape(len(masks), -1).astype(np.float32)
    return _weighted_sums(store, weights / np.maximum(weights.sum(axis=1, keepdims=True), 1))


def _as_store_was(store: VolumeStore, array: np.ndarray) -> np.ndarray:
    """An array on the FA maps' grid (its last three axes) cropped and downsampled as the store's
    volumes were; a downsampled block takes the value at its centre."""
    prep = store.record["preprocessing"]
    if prep["crop"]:
        array = array[(..., *(slice(a, b) for a, b in prep["crop"]))]
    factor = prep["downsample"]
    if factor > 1:
        array = array[..., factor // 2 :: factor, factor // 2 :: factor, factor // 2 :: factor]
    return array


def _with_ids(store: VolumeStore, frame: pd.DataFrame) -> pd.DataFrame:
    frame.insert(0, "IID", store.index.IID.to_numpy())
    frame.insert(0, "FID", store.index.FID.to_numpy())
    return frame


def atlas_on_store_grid(store: VolumeStore, atlas_path: str | os.PathLike) -> np.ndarray:
    """The atlas on the store's grid. It must be on the FA maps' grid (shape and affine, as recorded
    in the store) and is cropped and downsampled as the store was."""
    atlas = np.rint(_as_store_was(store, _read_atlas(store, atlas_path))).astype(np.int32)
    if atlas.shape != store.volumes.shape[1:]:
        raise input_error(atlas_path, f"atlas grid {atlas.shape} does not fit the store's {store.volumes.shape[1:]}")
    return atlas


def _read_atlas(store: VolumeStore, atlas_path) -> np.ndarray:
    from wm_jax.data.nifti import Grid, load_image

    image = load_image(require_file(atlas_path, "atlas image"))
    source = Grid.from_json(store.record.get("source_grid", store.record["grid"]))
    if tuple(image.shape) != tuple(source.shape):
        raise input_error(
            atlas_path,
            f"shape {tuple(image.shape)}, expected the FA maps' grid {tuple(source.shape)} (store {store.path})",
        )
    if not np.allclose(image.affine, source.affine, atol=1e-3):
        raise input_error(
            atlas_path,
            f"affine differs from the FA maps' (store {store.path}); expected an atlas in the same space and grid",
        )
    atlas = np.asarray(image.get_fdata(), np.float32)
    if not np.isfinite(atlas).all() or (atlas < 0).any() or (np.abs(atlas - np.rint(atlas)) > 1e-3).any():
        raise input_error(atlas_path, "expected integer labels >= 0 (0 = background)")
    return atlas


def _resampled(store: VolumeStore) -> bool:
    prep = store.record["preprocessing"]
    return bool(prep["crop"]) or prep["downsample"] > 1


def tract_means(store: VolumeStore, atlas_path, labels_path) -> pd.DataFrame:
    """FID IID and one column per tract: the mean normalised FA inside it. Every label of the
    table must have voxels inside the store's brain mask."""
    from wm_jax.data.tables import read_labels

    labels = read_labels(labels_path)
    atlas = atlas_on_store_grid(store, atlas_path)
    masks = np.stack([(atlas == label) & store.mask for label in labels.label])
    for label, tract, mask in zip(labels.label, labels.tract, masks):
        if not (atlas == label).any():
            where = " on the store's grid (after its crop/downsampling)" if _resampled(store) else ""
            raise input_error(
                labels_path,
                f"label {label} ({tract}) does not occur in the atlas {atlas_path}{where}; "
                "expected every label of the table in the image",
            )
        if not mask.any():
            raise input_error(labels_path, f"label {label} ({tract}) has no voxel inside the store's brain mask")
    return _with_ids(store, pd.DataFrame(_region_means(store, masks), columns=[f"FA_{t}" for t in labels.tract]))


def patterns_on_store_grid(store: VolumeStore, patterns_path) -> np.ndarray:
    """(loci, X, Y, Z) planted patterns, cropped and subsampled as the store's volumes were."""
    import nibabel as nib

    require_file(patterns_path, "planted patterns (written by `wm-jax simulate` beside truth.tsv)")
    patterns = np.asarray(nib.load(str(patterns_path)).get_fdata(), np.float32)
    patterns = _as_store_was(store, np.moveaxis(patterns.reshape(*patterns.shape[:3], -1), -1, 0))
    if patterns.shape[1:] != store.volumes.shape[1:]:
        raise input_error(
            patterns_path, f"pattern grid {patterns.shape[1:]} does not fit the store's {store.volumes.shape[1:]}"
        )
    return patterns


def oracle_phenotypes(store: VolumeStore, truth_path) -> pd.DataFrame:
    """For a simulated cohort, the oracle phenotypes: per planted locus, each volume's least-squares
    coefficient on the locus's spatial pattern (patterns.nii.gz beside truth.tsv) over the brain
    mask, (p . x) / (p . p). A signed pattern (a contrast) keeps its sign, where a region mean
    would cancel it."""
    truth = pd.read_csv(truth_path, sep="\t")
    patterns = patterns_on_store_grid(store, os.path.join(os.path.dirname(os.fspath(truth_path)), "patterns.nii.gz"))
    if len(patterns) != len(truth):
        raise input_error(truth_path, f"{len(truth)} loci but patterns.nii.gz holds {len(patterns)} patterns")
    weights = (patterns * store.mask).reshape(len(patterns), -1).astype(np.float32)
    weights /= np.maximum((weights**2).sum(axis=1, keepdims=True), 1e-12)
    columns = [f"ORACLE_{v.replace(':', '_')}" for v in truth.variant]
    return _with_ids(store, pd.DataFrame(_weighted_sums(store, weights), columns=columns))
