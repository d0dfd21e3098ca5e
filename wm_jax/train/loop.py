"""`train_and_evaluate(config, workdir, store)`: the training run, resumable, on one or many processes.

The run checkpoints {model, optimizer, step, iterator position} at the end of every epoch and
when it is asked to stop (SIGTERM, Ctrl-C, to any one process); started again on the same workdir
it resumes from the latest checkpoint without being asked. Data order is a permutation drawn from
(seed, epoch), so a resumed run sees the same batches as an uninterrupted one.

Validation runs at the start (step 0, when the model starts from PCA), at every epoch's end, and
every ``val_every`` steps inside an epoch when that is set; each validation is checkpointed with
its loss, so the best checkpoint is among them. With ``patience`` > 0 the run stops early after that
many validations in a row without a new best (`_note_validation`): training whose result would be
thrown away is not run. The counters live in the checkpoint's record, so a resumed run stops where
an uninterrupted one does, and a run that stopped early does not train again when rerun.

Across processes (`wm_jax.sharding`): the global batch is split over every device of every
process, each process reads only its slice of it (`wm_jax.train.batches`), every process takes
part in each checkpoint (orbax), and process 0 alone writes metrics.jsonl and shows progress.
The state restores on another number of processes or devices: checkpoints hold global arrays.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

import wm_jax
from wm_jax import checkpoint, sharding
from wm_jax.data.store import VolumeStore, check_same_store, store_fingerprint
from wm_jax.errors import InputError
from wm_jax.publish import atomic_path
from wm_jax.train import batches as batching
from wm_jax.train.state import (
    build,
    config_hash,
    init_linear_path_from_pca,
    model_config,
    with_store_shape,
)
from wm_jax.train.step import eval_step, train_step

log = logging.getLogger("wm_jax")


@dataclass
class _Run:
    """What one training run works with."""

    config: object
    workdir: Path
    store: VolumeStore
    train_rows: np.ndarray
    val_rows: np.ndarray
    mesh: object
    part: slice  # the rows of each global batch that this process feeds
    model: object
    optimizer: object
    mask: object
    record: dict
    manager: object = None
    metrics: _Metrics | None = None
    stop: dict = field(default_factory=lambda: {"requested": False})

    @property
    def batch_size(self) -> int:
        return int(self.config.batch_size)


def train_and_evaluate(config, workdir: str, store_path: str, stop_after_steps: int | None = None) -> dict:
    """Train (or resume) the autoencoder; returns the last metrics. ``stop_after_steps`` simulates a kill."""
    run = _setup(config, Path(workdir), store_path)
    _start_or_resume(run)
    previous_handlers = _catch_stop_signals(run.stop)
    last = {}
    try:
        for epoch in range(run.record["epoch"], config.epochs):
            if run.record.get("stopped_early"):
                break
            finished = _train_epoch(run, epoch, stop_after_steps)
            if finished is None:
                return {"step": run.record["step"], "stopped": True}
            if finished == "stopped_early":
                break
            last = _end_epoch(run, epoch, *finished)
        if run.record.get("stopped_early"):
            last = _early_stop_summary(run, last)
    except checkpoint.NonFiniteState as diverged:
        raise divergence_error(run, str(diverged)) from None
    finally:
        for s, handler in previous_handlers.items():
            signal.signal(s, handler)
        run.metrics.close()
        run.manager.wait_until_finished()
    return last


def _setup(config, workdir: Path, store_path: str) -> _Run:
    """The store and its split, the mesh, a fresh model and optimizer, the checkpoint record (whose
    config holds the input shape, from the store when the config leaves it unset)."""
    store = VolumeStore.open(store_path)
    config = with_store_shape(config, store)
    if config.get("tensorboard", False):
        _summary_writer_class()  # without tensorboardX: the error before the workdir is made
    mcfg = model_config(config)
    n_subjects = len(store) if not config.max_subjects else min(len(store), config.max_subjects)
    train_rows, val_rows = batching.split_validation(n_subjects, config.val_fraction, config.seed)
    log.info(
        "train: %d subjects for training, %d for validation (store %s)", len(train_rows), len(val_rows), store_path
    )
    mesh = sharding.data_mesh()
    _check_batch_size(config.batch_size, len(train_rows), mesh.size)
    for key in ("val_every", "patience"):  # before the workdir is made
        value = config.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InputError(f"--config.{key}: expected a whole number >= 0 (0: off), found {value!r}")
    workdir.mkdir(parents=True, exist_ok=True)
    model, optimizer = build(config, mcfg, mesh, -(-len(train_rows) // config.batch_size))
    record = {
        "format_version": checkpoint.CHECKPOINT_FORMAT_VERSION,
        "code_version": wm_jax.__version__,
        "config": json.loads(config.to_json()),
        "config_hash": config_hash(config),
        "store": str(Path(store_path).resolve()),
        "store_fingerprint": store_fingerprint(store),
        "epoch": 0,
        "batch_in_epoch": 0,
        "step": 0,
        "train_loss": None,  # the last batch's loss, kept for an epoch whose last batch ran before a stop
        "best_val_loss": None,  # the lowest validation loss so far (early stopping)
        "validations_without_improvement": 0,
        "stopped_early": False,
    }
    mask = sharding.replicate(mesh, jnp.asarray(store.mask, jnp.float32))
    part = sharding.process_slice(mesh, config.batch_size)
    return _Run(config, workdir, store, train_rows, val_rows, mesh, part, model, optimizer, mask, record)


def _check_batch_size(batch_size: int, n_train: int, n_devices: int) -> None:
    """A multiple of the device count, and at most the training set rounded up to one: a larger
    batch would be padding, allocated on every device (1000 on 103 subjects asked 52 GB)."""
    if batch_size % n_devices:
        raise InputError(f"--config.batch_size: expected a multiple of the {n_devices} devices, found {batch_size}")
    limit = -(-n_train // n_devices) * n_devices
    if batch_size > limit:
        raise InputError(
            f"--config.batch_size: expected at most {limit} (the {n_train} training subjects, rounded up to a "
            f"multiple of the {n_devices} devices), found {batch_size}"
        )


def _start_or_resume(run: _Run) -> None:
    """Resume from the latest intact checkpoint, or start: from PCA when the model has a linear path."""
    if sharding.is_main_process():
        checkpoint.set_aside_damaged(run.workdir)
    sharding.barrier("train: damaged checkpoints set aside")
    run.manager, resumed = _resume(run.workdir, run.config.keep, run.model, run.optimizer)
    run.metrics = _Metrics(run.workdir, tensorboard=bool(run.config.get("tensorboard", False)))
    if resumed is not None:
        where = f"the run in {run.workdir} (checkpoint step {resumed.get('step')})"
        check_same_store(run.store, resumed.get("store", ""), resumed.get("store_fingerprint"), where)
        run.record.update(resumed)
        if sharding.is_main_process():
            _drop_metrics_after(run.workdir / "metrics.jsonl", run.record["step"])
        log.info(
            "train: resumed from step %d (epoch %d, batch %d)",
            run.record["step"],
            run.record["epoch"],
            run.record["batch_in_epoch"],
        )
    elif run.model.config.linear_path:
        # PCA of every training-store volume, validation rows included: the same data as the PCA
        # baseline the encoder is compared with. So the start's validation loss is in-sample for
        # PCA, and the best checkpoint leans to the start unless the convolutions clearly help.
        n_subjects = len(run.train_rows) + len(run.val_rows)
        init_linear_path_from_pca(run.model, run.store, np.arange(n_subjects))
        nnx.update(run.model, sharding.replicate(run.mesh, nnx.state(run.model)))
        _save_start(run, _validate(run))


def _catch_stop_signals(stop: dict) -> dict:
    """SIGTERM and SIGINT set ``stop["requested"]``; returns the handlers they replace."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, lambda *_: stop.update(requested=True)) for s in (signal.SIGTERM, signal.SIGINT)}


def _train_epoch(run: _Run, epoch: int, stop_after_steps: int | None) -> tuple[float, float] | str | None:
    """The epoch's remaining batches. Returns (last batch's loss, seconds); None when the run
    stopped (a stop request on any process, or ``stop_after_steps``) and saved a checkpoint;
    "stopped_early" when a validation inside the epoch (``val_every``) ended the run (``patience``).
    A non-finite loss raises `checkpoint.NonFiniteState` within ``log_every`` steps of it."""
    config, record = run.config, run.record
    skip = record["batch_in_epoch"]
    todo = batching.epoch_batches(run.train_rows, run.batch_size, config.seed, epoch)[skip:]
    record["batch_in_epoch"] = 0
    bar = tqdm(
        total=len(todo),
        desc=f"epoch {epoch + 1}/{config.epochs}",
        unit="batch",
        mininterval=1.0,
        disable=not sharding.is_main_process(),
    )
    start, pending, loss = time.time(), None, record.get("train_loss")
    val_every = config.get("val_every", 0)
    unread = []  # (step, loss on the device) not yet checked to be finite
    with bar as progress:  # closed on any exit, so an error line starts a line of its own
        batches = batching.Prefetcher(run.store.volumes, todo, run.batch_size, run.part)
        for i, (volumes, weights, _) in enumerate(batches):
            volumes_d, weights_d = sharding.shard_batch(run.mesh, volumes, weights, global_batch=run.batch_size)
            loss = train_step(run.model, run.optimizer, volumes_d, weights_d, run.mask)
            record["step"] += 1
            unread.append((record["step"], loss))
            progress.update()
            if record["step"] % config.log_every == 0:
                # The losses before this step (it is still queued, so reading them stalls nothing).
                _check_losses(unread[:-1])
                del unread[:-1]
                if pending is not None:  # read the loss one logging interval late: no stall
                    run.metrics.write({"step": pending[0], "train_loss": float(pending[1])})
                pending = (record["step"], loss)
                progress.set_postfix(vol_s=f"{(i + 1) * run.batch_size / (time.time() - start):.1f}")
            if val_every and record["step"] % val_every == 0 and i + 1 < len(todo):  # the epoch's end validates
                _check_losses(unread)
                unread.clear()
                if _validate_inside_epoch(run, epoch, skip + i + 1, loss):
                    if pending is not None:
                        run.metrics.write({"step": pending[0], "train_loss": float(pending[1])})
                    return "stopped_early"
            stop_now = stop_after_steps is not None and record["step"] >= stop_after_steps
            # A stop request is agreed at logging steps only: the agreement is a collective and a
            # host sync, too dear for every step of a fast accelerator.
            if stop_now or (record["step"] % config.log_every == 0 and sharding.any_process(run.stop["requested"])):
                _check_losses(unread)
                _stop(run, epoch, skip + i + 1, pending, loss)
                return None
    _check_losses(unread)
    return float(loss) if loss is not None else float("nan"), time.time() - start


def _stop(run: _Run, epoch: int, batch_in_epoch: int, pending, loss) -> None:
    """Checkpoint a run stopped inside an epoch (its losses checked), with the pending metrics row."""
    if pending is not None:
        run.metrics.write({"step": pending[0], "train_loss": float(pending[1])})
    run.record.update(epoch=epoch, batch_in_epoch=batch_in_epoch, train_loss=float(loss))
    if run.manager.latest_step() != run.record["step"]:  # a validation at this step saved it already
        checkpoint.save(run.manager, run.record["step"], nnx.state((run.model, run.optimizer)), run.record)
    log.info("train: stopped at step %d; checkpoint saved, rerun to resume", run.record["step"])


def _check_losses(losses: list[tuple[int, object]]) -> None:
    """Read back (step, loss) pairs; the first non-finite loss raises `checkpoint.NonFiniteState`."""
    values = jax.device_get([loss for _, loss in losses])
    for (step, _), value in zip(losses, values):
        if not np.isfinite(value):
            raise checkpoint.NonFiniteState(f"non-finite loss at step {step} ({float(value)})")


def divergence_error(run: _Run, what: str) -> InputError:
    """The one-line error of a run that diverged: the step, the setting most likely at fault (the
    linear path's learning-rate scale when it is above 1, else the learning rate) and the checkpoints
    kept (every one written is finite: `checkpoint.save` refuses a non-finite state)."""
    config = run.config
    setting, value = "learning_rate", config.learning_rate
    linear_path = config.get("model") is not None and config.model.get("linear_path", False)
    if linear_path and float(config.get("linear_path_lr_scale", 1.0)) > 1:
        setting, value = "linear_path_lr_scale", config.linear_path_lr_scale
    steps = run.manager.all_steps()
    if steps:
        best = checkpoint.best_step(run.workdir, steps)
        kept = f"the latest checkpoint (step {steps[-1]}) and the best ({'none' if best is None else f'step {best}'})"
        kept += " are finite and kept; nothing past them was written"
    else:
        kept = "no checkpoint was written"
    return InputError(
        f"--config.{setting}: training diverged, {what} with {setting}={value:g}; expected a smaller value. {kept}"
    )


def _end_epoch(run: _Run, epoch: int, train_loss: float, seconds: float) -> dict:
    """Validate, write the epoch's metrics and checkpoint it with its validation loss."""
    val_loss = _validate_finite(run)
    last = {"step": run.record["step"], "epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss}
    run.metrics.write({**last, "seconds": seconds})
    log.info("epoch %d: train loss %.4f, validation loss %.4f", epoch + 1, train_loss, val_loss)
    _checkpoint_validation(run, val_loss, epoch=epoch + 1, batch_in_epoch=0, train_loss=None)
    return {**last, "seconds": seconds}


def _note_validation(run: _Run, val_loss: float) -> bool:
    """Record a validation loss: a new best resets the count of validations without improvement,
    anything else (not below the best) adds one; with ``patience`` > 0 the run stops early once the
    count reaches it. A NaN loss (no validation subjects) counts as neither. Returns whether to stop."""
    record, patience = run.record, run.config.get("patience", 0)
    if np.isnan(val_loss):
        return False
    if record.get("best_val_loss") is None or val_loss < record["best_val_loss"]:
        record.update(best_val_loss=float(val_loss), validations_without_improvement=0)
    else:
        record["validations_without_improvement"] = record.get("validations_without_improvement", 0) + 1
    record["stopped_early"] = bool(patience and record["validations_without_improvement"] >= patience)
    return record["stopped_early"]


def _checkpoint_validation(run: _Run, val_loss: float, **position) -> bool:
    """After a validation (its metrics row written): note its loss for early stopping, move the record
    to ``position`` (epoch, batch_in_epoch, train_loss) and checkpoint the step with the loss, so the
    best checkpoint is among the validated ones. Returns whether the run stops early."""
    stop = _note_validation(run, val_loss)
    run.record.update(position)
    state = nnx.state((run.model, run.optimizer))
    checkpoint.save(run.manager, run.record["step"], state, run.record, metrics={"val_loss": val_loss})
    return stop


def _validate_inside_epoch(run: _Run, epoch: int, batch_in_epoch: int, loss) -> bool:
    """Validate after a step inside an epoch (``val_every``), checkpoint there with the loss, and
    return whether the run stops early."""
    val_loss = _validate_finite(run)
    run.metrics.write({"step": run.record["step"], "val_loss": val_loss})
    log.info("step %d: validation loss %.4f", run.record["step"], val_loss)
    return _checkpoint_validation(run, val_loss, epoch=epoch, batch_in_epoch=batch_in_epoch, train_loss=float(loss))


def _early_stop_summary(run: _Run, last: dict) -> dict:
    """The log line and the returned summary of a run that stopped early (now or in an earlier run)."""
    record = run.record
    log.info(
        "train: stopped early at step %d: %d validations in a row without improving on %.4f (patience %d)",
        record["step"],
        record["validations_without_improvement"],
        record["best_val_loss"],
        run.config.get("patience", 0),
    )
    return {**last, "step": record["step"], "stopped_early": True, "best_val_loss": record["best_val_loss"]}


def _save_start(run: _Run, val_loss: float) -> None:
    """Checkpoint the PCA-started model as step 0 with its validation loss, so the best checkpoint
    is never worse on validation than where training started."""
    run.metrics.write({"step": 0, "epoch": 0, "val_loss": val_loss})
    log.info("train: validation loss %.4f at the start (the linear path alone: PCA)", val_loss)
    _checkpoint_validation(run, val_loss)


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
            if sharding.is_main_process():
                checkpoint.set_aside(workdir, step, str(err).split(": ", 1)[-1][:160])
            sharding.barrier(f"train: checkpoint {step} set aside")
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
    when asked (`--config.tensorboard=True`): every number of a row but its step and epoch.
    Written by process 0 only."""

    def __init__(self, workdir: Path, tensorboard: bool) -> None:
        self.path = workdir / "metrics.jsonl"
        self.enabled = sharding.is_main_process()
        self.events = _tensorboard_writer(workdir / "tensorboard") if tensorboard and self.enabled else None

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        if self.events is not None:
            for key, value in row.items():
                if key not in ("step", "epoch") and isinstance(value, (int, float)):
                    self.events.add_scalar(f"train/{key}", value, global_step=int(row["step"]))
            self.events.flush()

    def close(self) -> None:
        if self.events is not None:
            self.events.close()


def _summary_writer_class():
    """tensorboardX's event writer class (imported only when TensorBoard scalars are asked for)."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise InputError("--config.tensorboard: needs the tensorboardX package (pip install tensorboardX)") from None
    return SummaryWriter


def _tensorboard_writer(logdir: Path):
    return _summary_writer_class()(logdir=str(logdir))


def _validate_finite(run: _Run) -> float:
    """`_validate` after a training step: a state with a non-finite value raises
    `checkpoint.NonFiniteState` first, so no validation row is written for a diverged run."""
    if not checkpoint.all_finite(nnx.state((run.model, run.optimizer))):
        raise checkpoint.NonFiniteState(f"non-finite parameters after step {run.record['step']}")
    return _validate(run)


def _validate(run: _Run) -> float:
    """Mean masked MSE over the validation rows (BatchNorm on its running statistics)."""
    if len(run.val_rows) == 0:
        return float("nan")
    total, count = 0.0, 0
    run.model.eval()
    for rows in batching.consecutive_batches(run.val_rows, run.batch_size):
        volumes, weights = batching.read_batch(run.store.volumes, rows, run.batch_size, run.part)
        volumes_d, weights_d = sharding.shard_batch(run.mesh, volumes, weights, global_batch=run.batch_size)
        total += float(eval_step(run.model, volumes_d, weights_d, run.mask)) * len(rows)
        count += len(rows)
    run.model.train()
    return total / count
