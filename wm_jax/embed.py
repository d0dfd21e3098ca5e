"""`wm-jax embed`: the UDIP table of every subject of a store, from a trained checkpoint.

Across processes the store's subjects are split as a training batch is (`wm_jax.train.batches`):
each process reads its slice of every batch, the codes are gathered, and process 0 writes one
table, the same as a one-process run's. Called by `wm_jax.commands.embed` and `wm_jax.pipeline.stages`.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from flax import nnx
from tqdm.auto import tqdm

import wm_jax
from wm_jax import sharding
from wm_jax.data.store import store_fingerprint
from wm_jax.errors import InputError
from wm_jax.publish import atomic_path, check_output_files, check_output_name
from wm_jax.stage_options import ROTATIONS
from wm_jax.train import batches as batching
from wm_jax.train.state import load_model, open_store
from wm_jax.train.step import embed_step

log = logging.getLogger("wm_jax")


def decoder_jacobian(model, code: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(mask voxels, latent_dim): d reconstruction / d code at ``code``, inside the mask."""
    graphdef, state = nnx.split(model)

    @jax.jit  # one program: run op by op, the forward-mode pass compiles ~100 small ones (4 s on CPU)
    def jacobian_of(state, code):
        decoder = nnx.merge(graphdef, state)
        return jax.jacfwd(lambda z: decoder.decode(z[None])[0])(code)

    jacobian = jacobian_of(state, jnp.asarray(code, jnp.float32))
    return sharding.gather(jacobian).astype(np.float64)[np.asarray(mask, bool)]


def embed(
    workdir: str,
    store_path: str,
    out: str,
    step: str | int | None = None,
    batch_size: int = 8,
    overwrite: bool = False,
    rotation: str = "none",
) -> Path:
    """Write the UDIP table (FID IID UDIP1..) for every subject of the store, and its manifest. An
    existing table is replaced when its manifest says embed wrote it, or with ``overwrite``.

    ``rotation="varimax"``: the codes whitened and varimax-rotated (`wm_jax.rotation`); the map is
    recorded in the manifest (``latent_map``) for PerDI. ``"none"``: the raw bottleneck."""
    if rotation not in ROTATIONS:
        raise InputError(f"--rotation {rotation}: expected {' or '.join(ROTATIONS)}")
    check_output_name(out, "file")
    workdir, out = Path(workdir), Path(out)
    manifest_path = out.with_suffix(out.suffix + ".manifest.json")
    # An older manifest names no command; its checkpoint_step marks it as embed's.
    check_output_files([out, manifest_path], manifest_path, "embed", overwrite, legacy_key="checkpoint_step")
    model, _, record, chosen = load_model(workdir, step)
    store = open_store(store_path, model.config)
    codes, errors = _codes(model, store, batch_size)
    latent_map = None
    if rotation == "varimax":
        from wm_jax.rotation import whitened_varimax

        latent_map = whitened_varimax(codes.astype(np.float64), decoder_jacobian(model, codes.mean(axis=0), store.mask))
        codes = latent_map.apply(codes)
    table = pd.DataFrame(codes, columns=[f"UDIP{j + 1}" for j in range(codes.shape[1])])
    table.insert(0, "IID", store.index.IID.to_numpy())
    table.insert(0, "FID", store.index.FID.to_numpy())
    table["reconstruction_mse"] = errors
    manifest = {
        "command": "embed",
        "checkpoint_step": int(chosen),
        "workdir": str(workdir.resolve()),
        "config_hash": record["config_hash"],
        "store": str(Path(store_path).resolve()),
        "store_fingerprint": store_fingerprint(store),
        "n_subjects": len(table),
        "code_version": wm_jax.__version__,
        "rotation": rotation,
        "latent_map": None if latent_map is None else latent_map.to_json(),
    }
    if sharding.is_main_process():
        with atomic_path(out) as tmp:
            table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
        with atomic_path(manifest_path) as tmp:
            tmp.write_text(json.dumps(manifest, indent=2))
    sharding.barrier("embed: table written")
    log.info("embed: %d subjects x %d UDIPs from checkpoint step %d -> %s", len(table), codes.shape[1], chosen, out)
    return out


def _codes(model, store, batch_size: int, workers: int | None = None, mesh=None) -> tuple[np.ndarray, np.ndarray]:
    """Every subject's code and reconstruction error, in store order, on every process.

    Sequential dispatch (several devices or processes, where every process must launch the same
    programs in the same order): each batch is read back after the next one is dispatched, so reading
    the store overlaps the compute and at most two batches are held at once. One process with one
    device (XLA:CPU): ``workers`` threads (default 2) each run every ``workers``-th batch, because
    one execution of this chain of small convolutions leaves part of the cores idle (7.4 s one
    thread, 4.6 s two, for the demo's 1,400 volumes after compilation: docs/encoder.md). Each batch
    is the same batch through the same compiled program either way, so the outputs are the same
    bytes. ``mesh``: the model's mesh (default: every device)."""
    mesh = mesh or sharding.data_mesh()
    mask = sharding.replicate(mesh, jnp.asarray(store.mask, jnp.float32))
    batch_size = max(batch_size, mesh.size) // mesh.size * mesh.size
    part = sharding.process_slice(mesh, batch_size)
    step = embed_step(model)
    batches = batching.consecutive_batches(np.arange(len(store)), batch_size)
    progress = tqdm(
        total=len(batches), desc="embed", unit="batch", mininterval=1.0, disable=not sharding.is_main_process()
    )

    def dispatch(rows):
        volumes, _ = batching.read_batch(store.volumes, rows, batch_size, part)
        (volumes_d,) = sharding.shard_batch(mesh, volumes, global_batch=batch_size)
        return (len(rows), *step(volumes_d, mask))

    one_device = mesh.size == 1 and jax.process_count() == 1  # threads only where launch order is free
    if workers is None:
        workers = 2 if one_device and jax.default_backend() == "cpu" else 1
    results: list = [None] * len(batches)
    if workers > 1 and one_device:

        def run(first: int) -> None:
            for i in range(first, len(batches), workers):
                results[i] = _read_back(dispatch(batches[i]))
                progress.update()

        with ThreadPoolExecutor(workers) as pool:
            for future in [pool.submit(run, first) for first in range(workers)]:
                future.result()
    else:
        pending = None
        for i, rows in enumerate(batches):
            dispatched = (i, dispatch(rows))
            if pending is not None:
                results[pending[0]] = _read_back(pending[1])
                progress.update()
            pending = dispatched
        if pending is not None:
            results[pending[0]] = _read_back(pending[1])
            progress.update()
    progress.close()
    return np.concatenate([c for c, _ in results]), np.concatenate([e for _, e in results])


def _read_back(outputs) -> tuple[np.ndarray, np.ndarray]:
    n, latent, error = outputs
    return sharding.gather(latent)[:n], sharding.gather(error)[:n]
