"""`train_and_evaluate(config, workdir, store)`: the training run, resumable, and `embed`.

The run checkpoints {model, optimizer, step, iterator position} at the end of every epoch and
when it is asked to stop (SIGTERM, Ctrl-C); started again on the same workdir it resumes from the
latest checkpoint without being asked. Data order is a permutation drawn from (seed, epoch), so a
resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import queue
import signal
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
from flax import nnx
from tqdm.auto import tqdm

import wm_jax
from wm_jax import checkpoint
from wm_jax.data.store import VolumeStore
from wm_jax.errors import InputError, atomic_path, check_output_file, input_error
from wm_jax.model.autoencoder import Autoencoder, AutoencoderConfig
from wm_jax.train.step import batch_weights, data_mesh, embed_step, eval_step, replicate, shard_batch, train_step

log = logging.getLogger("wm_jax")


def model_config(config) -> AutoencoderConfig:
    m = config.model
    return AutoencoderConfig(
        input_shape=tuple(m.input_shape),
        channels=tuple(m.channels),
        latent_dim=int(m.latent_dim),
        compute_dtype=m.compute_dtype,
        conv_formulation=m.get("conv_formulation", "auto"),
        linear_path=bool(m.get("linear_path", False)),
    )


def _init_linear_path_from_pca(model: Autoencoder, store: VolumeStore, rows: np.ndarray) -> None:
    """Start the model's linear path from PCA of the store's ``rows``."""
    from wm_jax.pca import fit_pca

    start = time.time()
    pca = fit_pca(store, model.config.latent_dim, rows=rows)
    offset = pca.reconstruct(np.zeros((1, pca.components.shape[0]), np.float32))[0]
    components = pca.reconstruct(np.eye(pca.components.shape[0], dtype=np.float32)) - offset
    model.init_linear_path(offset, components)
    log.info(
        "train: linear path started from PCA of %d training volumes (%d components, %.1f s)",
        len(rows),
        len(components),
        time.time() - start,
    )


def config_hash(config) -> str:
    return hashlib.sha256(config.to_json(sort_keys=True).encode()).hexdigest()[:16]


def split_subjects(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/validation split by subject."""
    order = np.random.default_rng([seed, 7]).permutation(n)
    n_val = max(1, int(round(val_fraction * n))) if n > 1 else 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


LINEAR_PATH_PARAMETERS = ("offset", "linear_in", "linear_out")


def _adam(config, updates_per_epoch: int, scale: float = 1.0) -> optax.GradientTransformation:
    rate = config.learning_rate * scale
    if config.schedule == "cosine":
        return optax.adam(optax.cosine_decay_schedule(rate, max(1, config.epochs * updates_per_epoch)))
    if config.schedule == "plateau":
        return optax.chain(
            optax.adam(rate), optax.contrib.reduce_on_plateau(patience=max(1, updates_per_epoch), factor=0.5)
        )
    raise InputError(f"--config.schedule={config.schedule}: expected cosine or plateau")


def _path_labels(params):
    """ "linear" for the parameters of the model's linear path, "conv" for the rest."""

    def label(path, _):
        return "linear" if any(getattr(key, "key", None) in LINEAR_PATH_PARAMETERS for key in path) else "conv"

    return jax.tree_util.tree_map_with_path(label, params)


def _transform(config, steps_per_epoch: int) -> optax.GradientTransformation:
    """Adam with the configured schedule; the linear path (if any) at ``linear_path_lr_scale`` times
    the learning rate. With ``grad_accum_steps`` k > 1 the gradients of k consecutive batches are
    averaged before each update (optax.MultiSteps), so the schedule counts updates."""
    k = int(config.get("grad_accum_steps", 1))
    if k < 1:
        raise InputError(f"--config.grad_accum_steps={k}: expected 1 or more")
    updates_per_epoch = max(1, steps_per_epoch // k)
    transform = _adam(config, updates_per_epoch)
    if config.get("model") is not None and config.model.get("linear_path", False):
        scale = float(config.get("linear_path_lr_scale", 1.0))
        transform = optax.multi_transform(
            {"conv": transform, "linear": _adam(config, updates_per_epoch, scale)}, _path_labels
        )
    return optax.MultiSteps(transform, every_k_schedule=k) if k > 1 else transform


class _Prefetcher:
    """Reads batches of volumes from the store's memory map in a background thread."""

    def __init__(self, volumes, batches: list[np.ndarray], batch_size: int, depth: int = 2) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._run, args=(volumes, batches, batch_size), daemon=True)
        self._thread.start()

    def _run(self, volumes, batches, batch_size) -> None:
        for rows in batches:
            batch = np.zeros((batch_size, *volumes.shape[1:]), np.float32)
            batch[: len(rows)] = volumes[np.sort(rows)]
            self._queue.put((batch, len(rows)))
        self._queue.put(None)

    def __iter__(self):
        while (item := self._queue.get()) is not None:
            yield item


def _epoch_batches(train_rows: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    order = np.random.default_rng([seed, epoch]).permutation(train_rows)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _open_store(store_path, mcfg: AutoencoderConfig) -> VolumeStore:
    store = VolumeStore.open(store_path)
    if tuple(store.volumes.shape[1:]) != tuple(mcfg.input_shape):
        raise input_error(
            store_path,
            f"volumes are {tuple(store.volumes.shape[1:])} but the config's model expects "
            f"{tuple(mcfg.input_shape)} (set --config.model.input_shape or prepare with --crop/--downsample)",
        )
    return store


def _build(config, mcfg, mesh, steps_per_epoch):
    model = Autoencoder(mcfg, rngs=nnx.Rngs(config.seed))
    optimizer = nnx.Optimizer(model, _transform(config, steps_per_epoch), wrt=nnx.Param)
    nnx.update((model, optimizer), replicate(mesh, nnx.state((model, optimizer))))
    return model, optimizer


def train_and_evaluate(config, workdir: str, store_path: str, stop_after_steps: int | None = None) -> dict:
    """Train (or resume) the autoencoder; returns the last metrics. ``stop_after_steps`` simulates a kill."""
    workdir = Path(workdir)
    mcfg = model_config(config)
    store = _open_store(store_path, mcfg)
    n_subjects = len(store) if not config.max_subjects else min(len(store), config.max_subjects)
    train_rows, val_rows = split_subjects(n_subjects, config.val_fraction, config.seed)
    log.info(
        "train: %d subjects for training, %d for validation (store %s)", len(train_rows), len(val_rows), store_path
    )
    mesh = data_mesh()
    batch_size = config.batch_size
    if batch_size % mesh.size:
        raise InputError(f"--config.batch_size: expected a multiple of the {mesh.size} devices, found {batch_size}")
    workdir.mkdir(parents=True, exist_ok=True)
    steps_per_epoch = -(-len(train_rows) // batch_size)
    model, optimizer = _build(config, mcfg, mesh, steps_per_epoch)
    mask = replicate(mesh, jnp.asarray(store.mask, jnp.float32))
    checkpoint.set_aside_damaged(workdir)
    record = {
        "format_version": checkpoint.CHECKPOINT_FORMAT_VERSION,
        "code_version": wm_jax.__version__,
        "config": json.loads(config.to_json()),
        "config_hash": config_hash(config),
        "store": str(Path(store_path).resolve()),
        "epoch": 0,
        "batch_in_epoch": 0,
        "step": 0,
    }
    manager, resumed = _resume(workdir, config.keep, model, optimizer)
    metrics = _Metrics(workdir, tensorboard=bool(config.get("tensorboard", False)))
    if resumed is None and mcfg.linear_path:
        # PCA of every training-store volume, validation rows included: the same data as the PCA
        # baseline the encoder is compared with. So the start's validation loss is in-sample for
        # PCA, and the best checkpoint leans to the start unless the convolutions clearly help.
        _init_linear_path_from_pca(model, store, np.arange(n_subjects))
        nnx.update(model, replicate(mesh, nnx.state(model)))
        _save_start(
            manager, model, optimizer, record, metrics, _validate(model, store, val_rows, batch_size, mesh, mask)
        )
    if resumed is not None:
        record = resumed
        _drop_metrics_after(workdir / "metrics.jsonl", record["step"])
        log.info(
            "train: resumed from step %d (epoch %d, batch %d)",
            record["step"],
            record["epoch"],
            record["batch_in_epoch"],
        )
    stop = {"requested": False}
    previous_handlers = (
        {s: signal.signal(s, lambda *_: stop.update(requested=True)) for s in (signal.SIGTERM, signal.SIGINT)}
        if threading.current_thread() is threading.main_thread()
        else {}
    )
    step, last = record["step"], {}
    try:
        for epoch in range(record["epoch"], config.epochs):
            batches = _epoch_batches(train_rows, batch_size, config.seed, epoch)[record["batch_in_epoch"] :]
            skip = record["batch_in_epoch"]
            record["batch_in_epoch"] = 0
            progress = tqdm(
                total=len(batches), desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", mininterval=1.0
            )
            start, pending = time.time(), None
            for i, (volumes, n_real) in enumerate(_Prefetcher(store.volumes, batches, batch_size)):
                volumes_d, weights_d = shard_batch(mesh, volumes, np.asarray(batch_weights(n_real, batch_size)))
                loss = train_step(model, optimizer, volumes_d, weights_d, mask)
                step += 1
                progress.update()
                if step % config.log_every == 0:
                    if pending is not None:  # read the loss one logging interval late: no stall
                        metrics.write({"step": pending[0], "train_loss": float(pending[1])})
                    pending = (step, loss)
                    progress.set_postfix(vol_s=f"{(i + 1) * batch_size / (time.time() - start):.1f}")
                if stop["requested"] or (stop_after_steps is not None and step >= stop_after_steps):
                    record.update(epoch=epoch, batch_in_epoch=skip + i + 1, step=step)
                    checkpoint.save(manager, step, nnx.state((model, optimizer)), record)
                    log.info("train: stopped at step %d; checkpoint saved, rerun to resume", step)
                    progress.close()
                    return {"step": step, "stopped": True}
            progress.close()
            val_loss = _validate(model, store, val_rows, batch_size, mesh, mask)
            last = {
                "step": step,
                "epoch": epoch + 1,
                "train_loss": float(loss),
                "val_loss": val_loss,
                "seconds": time.time() - start,
            }
            metrics.write(last)
            log.info("epoch %d: train loss %.4f, validation loss %.4f", epoch + 1, last["train_loss"], val_loss)
            record.update(epoch=epoch + 1, batch_in_epoch=0, step=step)
            checkpoint.save(manager, step, nnx.state((model, optimizer)), record, metrics={"val_loss": val_loss})
    finally:
        for s, handler in previous_handlers.items():
            signal.signal(s, handler)
        metrics.close()
        manager.wait_until_finished()
    return last


def _save_start(manager, model, optimizer, record: dict, metrics: _Metrics, val_loss: float) -> None:
    """Checkpoint the PCA-started model as step 0 with its validation loss, so the best checkpoint
    is never worse on validation than where training started."""
    metrics.write({"step": 0, "epoch": 0, "val_loss": val_loss})
    log.info("train: validation loss %.4f at the start (the linear path alone: PCA)", val_loss)
    checkpoint.save(manager, 0, nnx.state((model, optimizer)), record, metrics={"val_loss": val_loss})


def _resume(workdir: Path, keep: int, model, optimizer):
    """The checkpoint manager, and the record of the latest checkpoint that restores (None when
    there is none). One that fails is reported in one line and set aside, and the one before it
    is tried (orbax caches its step list, so the manager is built again)."""
    while True:
        manager = checkpoint.checkpoint_manager(workdir, keep=keep)
        step = manager.latest_step()
        if step is None:
            return manager, None
        try:
            state, record = checkpoint.restore(manager, step, nnx.state((model, optimizer)))
        except InputError as err:
            manager.close()
            checkpoint.set_aside(workdir, step, str(err).split(": ", 1)[-1][:160])
            continue
        nnx.update((model, optimizer), state)
        return manager, record


def _drop_metrics_after(path: Path, step: int) -> None:
    """Rows of metrics.jsonl past the resumed step were written by a run whose checkpoint is gone
    (damaged, or never saved): drop them, so that the rerun does not repeat them."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    kept = []
    for line in lines:
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            if int(json.loads(line).get("step", 0)) > step:
                continue
        kept.append(line)
    if len(kept) != len(lines):
        with atomic_path(path) as tmp:
            tmp.write_text("".join(f"{line}\n" for line in kept))


class _Metrics:
    """JSON lines in ``workdir/metrics.jsonl``, and TensorBoard scalars in ``workdir/tensorboard/``
    when asked (`--config.tensorboard=True`): every number of a row but its step and epoch."""

    def __init__(self, workdir: Path, tensorboard: bool) -> None:
        from wm_jax.train.tensorboard import EventWriter

        self.path = workdir / "metrics.jsonl"
        self.events = EventWriter(workdir / "tensorboard") if tensorboard else None

    def write(self, row: dict) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        if self.events is not None:
            for key, value in row.items():
                if key not in ("step", "epoch") and isinstance(value, (int, float)):
                    self.events.scalar(f"train/{key}", value, row["step"])
            self.events.flush()

    def close(self) -> None:
        if self.events is not None:
            self.events.close()


def _validate(model, store, rows, batch_size, mesh, mask) -> float:
    if len(rows) == 0:
        return float("nan")
    total, count = 0.0, 0
    model.eval()  # BatchNorm uses its running statistics
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        batch = np.zeros((batch_size, *store.volumes.shape[1:]), np.float32)
        batch[: len(chunk)] = store.volumes[chunk]
        volumes_d, weights_d = shard_batch(mesh, batch, np.asarray(batch_weights(len(chunk), batch_size)))
        total += float(eval_step(model, volumes_d, weights_d, mask)) * len(chunk)
        count += len(chunk)
    model.train()
    return total / count


def load_model(workdir: str | os.PathLike, step: str | int | None = None):
    """The trained model (eval mode) of a workdir's checkpoint: step "best", "latest"/None, or a number.

    Returns (model, config, record, step)."""
    workdir = Path(workdir)
    intact, damaged = checkpoint.intact_steps(workdir)
    if not intact and not damaged:
        raise input_error(workdir, "no checkpoint found (train first with `wm-jax train`)")
    manager = checkpoint.checkpoint_manager(workdir, reader=True)
    for chosen in _candidate_steps(workdir, step, intact, damaged):
        try:
            return (*_load_step(manager, chosen), int(chosen))
        except InputError as err:
            if step not in (None, "latest"):
                raise
            log.warning("checkpoint step %d: %s; the previous one is used", chosen, str(err).split(": ", 1)[-1][:200])
    raise input_error(workdir / "checkpoints", "no intact checkpoint (every one is damaged)")


def _candidate_steps(workdir: Path, step, intact: list[int], damaged: dict[int, str]) -> list[int]:
    """Steps to try in order: for 'latest' the intact ones newest first (a newer damaged one is
    reported), for 'best' the best intact one, else the step asked for (an error if damaged)."""
    if step in (None, "latest"):
        for newer in (s for s in damaged if not intact or s > intact[-1]):
            log.warning("checkpoint step %d is damaged (%s); the previous one is used", newer, damaged[newer])
        return intact[::-1]
    if step == "best":
        best = checkpoint.best_step(workdir, intact)
        if best is None:
            raise input_error(workdir, "no intact checkpoint with a validation loss (use --step latest)")
        return [best]
    if int(step) in damaged:
        raise input_error(workdir / "checkpoints" / str(step), f"checkpoint is damaged ({damaged[int(step)]})")
    if int(step) not in intact:
        raise input_error(workdir, f"no checkpoint at step {step} (have {intact})")
    return [int(step)]


def _load_step(manager, step: int):
    import ml_collections

    record = checkpoint.read_record(manager, step)
    config = ml_collections.ConfigDict(record["config"])
    model, optimizer = _build(config, model_config(config), data_mesh(), 1)
    state, _ = checkpoint.restore(manager, step, nnx.state((model, optimizer)))
    nnx.update((model, optimizer), state)
    model.eval()
    return model, config, record


def decoder_jacobian(model, code: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(mask voxels, latent_dim): d reconstruction / d code at ``code``, inside the mask."""
    import jax

    jacobian = jax.jacfwd(lambda z: model.decode(z[None])[0])(jnp.asarray(code, jnp.float32))
    return np.asarray(jacobian, np.float64)[np.asarray(mask, bool)]


def embed(
    workdir: str,
    store_path: str,
    out: str,
    step: str | int | None = None,
    batch_size: int = 32,
    overwrite: bool = False,
    rotation: str = "none",
) -> Path:
    """Write the UDIP table (FID IID UDIP1..) for every subject of the store, and its manifest. An
    existing table is replaced when its manifest says embed wrote it, or with ``overwrite``.

    ``rotation="varimax"``: the codes whitened and varimax-rotated (`wm_jax.rotation`); the map is
    recorded in the manifest (``latent_map``) for PerDI. ``"none"``: the raw bottleneck."""
    if rotation not in ("none", "varimax"):
        raise InputError(f"--rotation {rotation}: expected none or varimax")
    workdir = Path(workdir)
    out = Path(out)
    manifest_path = out.with_suffix(out.suffix + ".manifest.json")
    owned = _written_by_embed(manifest_path)
    check_output_file(out, "embed", overwrite, owned=owned)
    check_output_file(manifest_path, "embed", overwrite, owned=owned)
    model, config, record, chosen = load_model(workdir, step)
    store = _open_store(store_path, model.config)
    mesh = data_mesh()
    mask = jnp.asarray(store.mask, jnp.float32)
    batch_size = max(batch_size, mesh.size) // mesh.size * mesh.size
    codes, errors = [], []
    for start in tqdm(range(0, len(store), batch_size), desc="embed", unit="batch", mininterval=1.0):
        rows = np.arange(start, min(start + batch_size, len(store)))
        batch = np.zeros((batch_size, *store.volumes.shape[1:]), np.float32)
        batch[: len(rows)] = store.volumes[rows]
        (volumes_d,) = shard_batch(mesh, batch)
        latent, recon = embed_step(model, volumes_d)
        per_volume = ((np.asarray(recon) - batch) ** 2 * np.asarray(mask)).sum(axis=(1, 2, 3)) / float(mask.sum())
        codes.append(np.asarray(latent)[: len(rows)])
        errors.append(per_volume[: len(rows)])
    codes = np.concatenate(codes)
    latent_map = None
    if rotation == "varimax":
        from wm_jax.rotation import whitened_varimax

        latent_map = whitened_varimax(codes.astype(np.float64), decoder_jacobian(model, codes.mean(axis=0), store.mask))
        codes = latent_map.apply(codes)
    table = pd.DataFrame(codes, columns=[f"UDIP{j + 1}" for j in range(codes.shape[1])])
    table.insert(0, "IID", store.index.IID.to_numpy())
    table.insert(0, "FID", store.index.FID.to_numpy())
    table["reconstruction_mse"] = np.concatenate(errors)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    manifest = {
        "command": "embed",
        "checkpoint_step": int(chosen),
        "workdir": str(workdir.resolve()),
        "config_hash": record["config_hash"],
        "store": str(Path(store_path).resolve()),
        "n_subjects": len(table),
        "code_version": wm_jax.__version__,
        "rotation": rotation,
        "latent_map": None if latent_map is None else latent_map.to_json(),
    }
    with atomic_path(manifest_path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2))
    log.info("embed: %d subjects x %d UDIPs from checkpoint step %d -> %s", len(table), codes.shape[1], chosen, out)
    return out


def _written_by_embed(manifest: Path) -> bool:
    try:
        record = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and "checkpoint_step" in record and record.get("command", "embed") == "embed"
