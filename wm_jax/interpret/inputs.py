"""What PerDI reads: the UDIPs of subjects in the store, the checkpoint's decoder (through the
embedding's latent map), the atlas on the store's grid.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wm_jax.errors import input_error, read_json

log = logging.getLogger("wm_jax")


@dataclass
class PerdiInputs:
    """What PerDI reads: the UDIPs of the subjects in the store, the decoder as a function of them,
    and the brain mask and atlas on the store's grid."""

    codes: np.ndarray  # (subjects, UDIPs) float32
    decoder: Callable
    checkpoint_step: int
    store: str
    volume_store: Any  # wm_jax.data.store.VolumeStore
    mask: np.ndarray  # (X, Y, Z) bool
    atlas: np.ndarray  # (X, Y, Z) labels
    labels: pd.DataFrame
    affine: np.ndarray
    voxel_mm: np.ndarray


def read_inputs(
    workdir: str | os.PathLike,
    udip: str | os.PathLike,
    store: str | None,
    atlas: str | None,
    labels: str | None,
    step: str | int | None,
    n_subjects: int,
) -> PerdiInputs:
    """The UDIP table (and the store its manifest names), the checkpoint's model, the codes of the
    first ``n_subjects`` rows in the store, and the atlas (by default beside the store's subjects)."""
    from wm_jax.data.store import check_same_store
    from wm_jax.data.tables import read_labels, read_table
    from wm_jax.roi import atlas_on_store_grid
    from wm_jax.train.state import load_model, open_store

    udip = Path(udip)
    table = read_table(udip)
    manifest_path = udip.with_suffix(udip.suffix + ".manifest.json")
    manifest = None
    if manifest_path.exists():
        manifest = read_json(manifest_path, "the manifest of a `wm-jax embed` table, naming its store", "store")
    elif store is None:
        raise input_error(udip, f"no --store given and no manifest {manifest_path.name} naming the store")
    columns = [c for c in table.columns if c.startswith("UDIP")]
    if not columns:
        raise input_error(udip, "expected columns UDIP1..UDIPk")
    model, config, record, chosen = load_model(workdir, step)
    if len(columns) != model.config.latent_dim:
        raise input_error(udip, f"{len(columns)} UDIP columns but the checkpoint's model has {model.config.latent_dim}")
    volume_store = open_store(store or manifest["store"], model.config)
    if store is not None and manifest is not None:
        check_same_store(volume_store, str(manifest["store"]), manifest.get("store_fingerprint"), f"{manifest_path}")
    store = store or manifest["store"]
    codes = _complete_codes(udip, table, columns, volume_store)[:n_subjects].astype(np.float32)
    log.info("interpret: PerDI over the first %d", len(codes))
    cohort_dir = Path(volume_store.record.get("subjects_table", ".")).parent  # the simulator writes the atlas there
    atlas = atlas or str(cohort_dir / "atlas.nii.gz")
    labels = labels or str(cohort_dir / "atlas_labels.tsv")
    for path in (atlas, labels):
        if not Path(path).exists():
            raise input_error(path, "atlas file not found (pass --atlas and --labels)")
    atlas_grid, label_table = atlas_on_store_grid(volume_store, atlas), read_labels(labels)
    affine = np.asarray(volume_store.grid.affine)
    return PerdiInputs(
        codes=codes,
        decoder=udip_decoder(model, manifest_path),
        checkpoint_step=chosen,
        store=store,
        volume_store=volume_store,
        mask=np.asarray(volume_store.mask, bool),
        atlas=atlas_grid,
        labels=label_table,
        affine=affine,
        voxel_mm=np.sqrt((affine[:3, :3] ** 2).sum(axis=0)),
    )


def _complete_codes(udip: Path, table, columns: list[str], volume_store) -> np.ndarray:
    """The UDIPs of the table's subjects that are in the store, less those with a missing value (PerDI
    decodes each subject's whole code, so a subject missing one UDIP is left out, counted per UDIP in
    the log); fewer than 3 subjects left is an error."""
    present = np.isin(table.iid.astype(str), volume_store.index.IID.astype(str).to_numpy())
    if not present.any():
        raise input_error(udip, f"none of its {len(present)} subjects is in the store {volume_store.path}")
    values = table.values[present][:, [table.columns.index(c) for c in columns]]
    missing = np.isnan(values)
    complete = ~missing.any(axis=1)
    log.info("interpret: %d of %d UDIP rows are in the store", int(present.sum()), len(present))
    if not complete.all():
        per_udip = ", ".join(f"{c}: {int(k)}" for c, k in zip(columns, missing.sum(axis=0)) if k)
        log.info("interpret: %d of them left out for a missing UDIP value (%s)", int((~complete).sum()), per_udip)
    if complete.sum() < 3:
        raise input_error(
            udip,
            f"{int(complete.sum())} subjects in the store have a value for every UDIP; expected at least 3 "
            "(a subject with a missing value is left out)",
        )
    return values[complete]


def udip_decoder(model, manifest_path: Path) -> Callable:
    """The decoder as a function of the UDIPs: through the manifest's latent map when `embed`
    rotated the codes, the model's decoder itself otherwise."""
    import jax.numpy as jnp

    from wm_jax.rotation import LatentMap

    record = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    if not record.get("latent_map"):
        return model.decode
    latent_map = LatentMap.from_json(record["latent_map"])
    mean, inverse = jnp.asarray(latent_map.mean, jnp.float32), jnp.asarray(latent_map.inverse, jnp.float32)
    return lambda udips: model.decode(mean + udips @ inverse)
