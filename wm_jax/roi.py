"""Region-of-interest FA phenotypes: the conventional baseline that UDIPs are compared with.

`tract_means`: the mean of each atlas tract per subject (ROI-FA, as TBSS/JHU-atlas studies use).
`pattern_means`: the mean over each planted effect's region of a simulated cohort (an oracle
phenotype that checks the simulator and GWAS end to end).
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
        block = np.asarray(store.volumes[start: start + chunk], np.float32).reshape(-1, weights.shape[1])
        out[start: start + chunk] = block @ weights.T
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
        atlas = atlas[factor // 2:: factor, factor // 2:: factor, factor // 2:: factor]
    atlas = np.rint(atlas).astype(np.int32)
    if atlas.shape != store.volumes.shape[1:]:
        raise input_error(atlas_path, f"atlas grid {atlas.shape} does not fit the store's {store.volumes.shape[1:]}")
    return atlas


def _read_atlas(store: VolumeStore, atlas_path) -> np.ndarray:
    from wm_jax.data.nifti import Grid, _load

    image = _load(require_file(atlas_path, "atlas image"))
    source = Grid.from_json(store.record.get("source_grid", store.record["grid"]))
    if tuple(image.shape) != tuple(source.shape):
        raise input_error(atlas_path, f"shape {tuple(image.shape)}, expected the FA maps' grid {tuple(source.shape)} "
                                      f"(store {store.path})")
    if not np.allclose(image.affine, source.affine, atol=1e-3):
        raise input_error(atlas_path, f"affine differs from the FA maps' (store {store.path}); expected an atlas "
                                      "in the same space and grid")
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
            raise input_error(labels_path, f"label {label} ({tract}) does not occur in the atlas {atlas_path}{where}; "
                                           "expected every label of the table in the image")
        if not mask.any():
            raise input_error(labels_path, f"label {label} ({tract}) has no voxel inside the store's brain mask")
    values = _region_means(store, masks)
    frame = pd.DataFrame(values, columns=[f"FA_{t}" for t in labels.tract])
    frame.insert(0, "IID", store.index.IID.to_numpy())
    frame.insert(0, "FID", store.index.FID.to_numpy())
    return frame


def pattern_means(store: VolumeStore, truth_path, atlas_path) -> pd.DataFrame:
    """For a simulated cohort: per causal variant, the mean FA over its planted region."""
    truth = pd.read_csv(truth_path, sep="\t")
    atlas = _atlas_on_store_grid(store, atlas_path)
    grid = np.indices(atlas.shape).astype(np.float32)
    masks = []
    for row in truth.itertuples():
        centre = np.array([float(c) for c in row.pattern_centre_voxel.split(",")], np.float32)
        distance = np.sqrt(((grid - centre[:, None, None, None]) ** 2).sum(axis=0))
        masks.append((distance <= 1.5 * row.pattern_width_voxels) & (atlas > 0) & store.mask)
    values = _region_means(store, np.stack(masks))
    frame = pd.DataFrame(values, columns=[f"ROI_{v.replace(':', '_')}" for v in truth.variant])
    frame.insert(0, "IID", store.index.IID.to_numpy())
    frame.insert(0, "FID", store.index.FID.to_numpy())
    return frame
