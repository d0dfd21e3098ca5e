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


def _region_means(store: VolumeStore, masks: np.ndarray, chunk: int = 256) -> np.ndarray:
    """(subjects, regions) mean of the store's volumes over each boolean mask (regions, X, Y, Z)."""
    weights = masks.reshape(len(masks), -1).astype(np.float32)
    weights /= np.maximum(weights.sum(axis=1, keepdims=True), 1)
    out = np.empty((len(store), len(masks)), np.float64)
    for start in range(0, len(store), chunk):
        block = np.asarray(store.volumes[start : start + chunk], np.float32).reshape(-1, weights.shape[1])
        out[start : start + chunk] = block @ weights.T
    return out


def _atlas_on_store_grid(store: VolumeStore, atlas_path: str | os.PathLike) -> np.ndarray:
    """The atlas on the store's grid. It must be on the FA maps' grid (shape and affine, as recorded
    in the store) and is cropped and downsampled as the store was."""
    atlas = _read_atlas(store, atlas_path)
    prep = store.record["preprocessing"]
    crop = tuple(tuple(c) for c in prep["crop"]) if prep["crop"] else None
    if crop is not None:
        atlas = atlas[tuple(slice(a, b) for a, b in crop)]
    factor = prep["downsample"]
    if factor > 1:  # majority label of each block is approximated by the label at the block centre
        atlas = atlas[factor // 2 :: factor, factor // 2 :: factor, factor // 2 :: factor]
    atlas = np.rint(atlas).astype(np.int32)
    if atlas.shape != store.volumes.shape[1:]:
        raise input_error(atlas_path, f"atlas grid {atlas.shape} does not fit the store's {store.volumes.shape[1:]}")
    return atlas


def _read_atlas(store: VolumeStore, atlas_path) -> np.ndarray:
    from wm_jax.data.nifti import Grid, _load

    image = _load(require_file(atlas_path, "atlas image"))
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
    atlas = _atlas_on_store_grid(store, atlas_path)
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
    values = _region_means(store, masks)
    frame = pd.DataFrame(values, columns=[f"FA_{t}" for t in labels.tract])
    frame.insert(0, "IID", store.index.IID.to_numpy())
    frame.insert(0, "FID", store.index.FID.to_numpy())
    return frame


def _patterns_on_store_grid(store: VolumeStore, patterns_path) -> np.ndarray:
    """(loci, X, Y, Z) planted patterns, cropped and subsampled as the store's volumes were."""
    import nibabel as nib

    if not os.path.isfile(patterns_path):
        raise input_error(patterns_path, "planted patterns not found (written by `wm-jax simulate` beside truth.tsv)")
    patterns = np.asarray(nib.load(str(patterns_path)).get_fdata(), np.float32)
    patterns = np.moveaxis(patterns.reshape(*patterns.shape[:3], -1), -1, 0)
    prep = store.record["preprocessing"]
    if prep["crop"]:
        patterns = patterns[(slice(None), *(slice(a, b) for a, b in prep["crop"]))]
    factor = prep["downsample"]
    if factor > 1:
        patterns = patterns[:, factor // 2 :: factor, factor // 2 :: factor, factor // 2 :: factor]
    patterns = patterns[(slice(None), *(slice(0, s) for s in store.volumes.shape[1:]))]
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
    patterns = _patterns_on_store_grid(store, os.path.join(os.path.dirname(os.fspath(truth_path)), "patterns.nii.gz"))
    if len(patterns) != len(truth):
        raise input_error(truth_path, f"{len(truth)} loci but patterns.nii.gz holds {len(patterns)} patterns")
    weights = (patterns * store.mask).reshape(len(patterns), -1).astype(np.float32)
    weights /= np.maximum((weights**2).sum(axis=1, keepdims=True), 1e-12)
    out = np.empty((len(store), len(weights)), np.float64)
    for start in range(0, len(store), 256):
        block = np.asarray(store.volumes[start : start + 256], np.float32).reshape(-1, weights.shape[1])
        out[start : start + 256] = block @ weights.T
    frame = pd.DataFrame(out, columns=[f"ORACLE_{v.replace(':', '_')}" for v in truth.variant])
    frame.insert(0, "IID", store.index.IID.to_numpy())
    frame.insert(0, "FID", store.index.FID.to_numpy())
    return frame
