"""The one place that talks to orbax: save and restore {model, optimizer, step, iterator} + a JSON record.

Uses orbax's v0 API (`CheckpointManager`, `ocp.args.Composite`, `StandardSave`, `JsonSave`), so a
move to orbax v1 touches this file only.

Retention: the last ``keep`` checkpoints and the best by validation loss, whatever the loss does
(orbax's preservation policies LatestN + BestN; its plain best-k retention would delete the latest
checkpoint when validation loss rises). A damaged checkpoint (its JSON metadata unreadable, or its
arrays failing to restore) is reported in one line and the previous intact one is used.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from flax import nnx
from orbax.checkpoint import checkpoint_managers

from wm_jax.errors import input_error

log = logging.getLogger("wm_jax")

CHECKPOINT_FORMAT_VERSION = 1
# JSON files of a step directory that orbax parses; one of them unreadable = a damaged checkpoint.
_JSON_FILES = ("_CHECKPOINT_METADATA", "record/metadata", "state/_METADATA", "metrics/metrics")


@contextlib.contextmanager
def _quiet_orbax():
    """orbax reports damaged files through absl (ERROR lines, tracebacks) before raising; we report
    them ourselves in one line, so its log is silenced while it works."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def _is_closed_loop_echo(exc_type, exc, tb) -> bool:
    """After a restore fails, tensorstore's remaining reads complete on threads whose asyncio loop
    orbax has closed; each reports `RuntimeError: Event loop is closed` as an unraisable exception."""
    if exc_type is not RuntimeError or str(exc) != "Event loop is closed":
        return False
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_filename.endswith(os.path.join("asyncio", "base_events.py"))


def _silence_closed_loop_echoes() -> None:
    """Drop those echoes (and only those) from sys.unraisablehook: the failed restore is reported
    once, by us."""
    previous = sys.unraisablehook
    if getattr(previous, "_wm_jax_filter", False):
        return

    def hook(unraisable):
        if not _is_closed_loop_echo(unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback):
            previous(unraisable)

    hook._wm_jax_filter = True
    sys.unraisablehook = hook


def _val_loss(metrics: dict) -> float:
    value = float(metrics.get("val_loss", math.inf))
    return value if math.isfinite(value) else math.inf


def checkpoint_manager(workdir: str | os.PathLike, keep: int = 3, reader: bool = False) -> ocp.CheckpointManager:
    """Keeps the last ``keep`` checkpoints and the best by validation loss (module docstring). A
    ``reader`` (embed, interpret) neither writes nor deletes, and reads no metrics: it chooses steps
    with `intact_steps` and `best_step`, which skip damaged checkpoints."""
    with _quiet_orbax():
        if reader:
            options = ocp.CheckpointManagerOptions(read_only=True, create=False, enable_async_checkpointing=False)
        else:
            policy = checkpoint_managers.AnyPreservationPolicy(
                [
                    checkpoint_managers.LatestN(n=keep),
                    checkpoint_managers.BestN(
                        get_metric_fn=_val_loss, reverse=True, n=1, keep_checkpoints_without_metrics=False
                    ),
                ]
            )
            options = ocp.CheckpointManagerOptions(
                best_fn=_val_loss, best_mode="min", preservation_policy=policy, enable_async_checkpointing=False
            )
        return ocp.CheckpointManager(Path(workdir).resolve() / "checkpoints", options=options)


def step_directories(workdir: str | os.PathLike) -> dict[int, Path]:
    directory = Path(workdir) / "checkpoints"
    if not directory.is_dir():
        return {}
    return {int(p.name): p for p in directory.iterdir() if p.is_dir() and p.name.isdigit()}


def damage(step_dir: Path) -> str | None:
    """Why a step directory cannot be a checkpoint (a JSON file unreadable, the record missing), or None."""
    if not (step_dir / "record" / "metadata").is_file() or not (step_dir / "state").is_dir():
        return "incomplete (no record or state)"
    for name in _JSON_FILES:
        path = step_dir / name
        if path.exists():
            try:
                json.loads(path.read_text())
            except (OSError, UnicodeDecodeError, ValueError) as err:
                return f"{name} is not valid JSON ({type(err).__name__})"
    return None


def set_aside_damaged(workdir: str | os.PathLike) -> list[int]:
    """Move damaged checkpoints of a training workdir to WORKDIR/damaged_checkpoints/ (kept, not
    deleted), each reported in one line; returns their steps."""
    moved = []
    for step, path in sorted(step_directories(workdir).items()):
        reason = damage(path)
        if reason is not None:
            set_aside(workdir, step, reason)
            moved.append(step)
    return moved


def set_aside(workdir, step: int, reason: str) -> None:
    """Move checkpoint ``step`` to WORKDIR/damaged_checkpoints/ and say so in one line."""
    path = Path(workdir) / "checkpoints" / str(step)
    target = Path(workdir) / "damaged_checkpoints" / f"{step}"
    suffix = 0
    while target.exists():
        suffix += 1
        target = Path(workdir) / "damaged_checkpoints" / f"{step}.{suffix}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(path), str(target))
    log.warning("checkpoint step %d is damaged (%s); set aside to %s, the previous one is used", step, reason, target)


class NonFiniteState(Exception):
    """A state holding a NaN or an infinity (training diverged): it is never written as a checkpoint."""


@jax.jit
def _finite(leaves: list) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def all_finite(state: nnx.State) -> bool:
    """True when every floating-point value of ``state`` is finite (one reduction on the device)."""
    leaves = [
        x
        for x in jax.tree.leaves(nnx.to_pure_dict(state))
        if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)
    ]
    return not leaves or bool(_finite(leaves))


def save(
    manager: ocp.CheckpointManager, step: int, state: nnx.State, record: dict, metrics: dict | None = None
) -> None:
    """Write checkpoint ``step``. A state with a non-finite value raises `NonFiniteState` and writes
    nothing, so the latest and best checkpoints of a run that diverges are its last finite ones."""
    if not all_finite(state):
        raise NonFiniteState(f"non-finite parameters at step {step}")
    with _quiet_orbax():
        manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(nnx.to_pure_dict(state)), record=ocp.args.JsonSave(record)
            ),
            metrics=metrics,
            force=True,
        )
        manager.wait_until_finished()


def restore(manager: ocp.CheckpointManager, step: int, target: nnx.State) -> tuple[nnx.State, dict]:
    """Restore into the shapes (and shardings) of ``target``; returns the filled state and the record.

    The caller applies it with `nnx.update(module, state)`."""
    abstract = nnx.to_pure_dict(target)
    _silence_closed_loop_echoes()  # before: the echoes of a failing restore start while it unwinds
    try:
        with _quiet_orbax():
            restored = manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), record=ocp.args.JsonRestore())
            )
    except Exception as err:  # orbax raises many types for missing or damaged files
        raise input_error(
            manager.directory / str(step),
            f"checkpoint cannot be restored ({type(err).__name__}: {' '.join(str(err).split())[:200]})",
        )
    record = restored["record"]
    if not isinstance(record, dict) or record.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        version = record.get("format_version") if isinstance(record, dict) else None
        raise input_error(
            manager.directory / str(step), f"checkpoint format {version}, expected {CHECKPOINT_FORMAT_VERSION}"
        )
    nnx.replace_by_pure_dict(target, restored["state"])
    return target, record


def read_record(manager: ocp.CheckpointManager, step: int) -> dict:
    """The JSON record of one checkpoint (without its arrays)."""
    try:
        with _quiet_orbax():
            record = manager.restore(step, args=ocp.args.Composite(record=ocp.args.JsonRestore()))["record"]
    except Exception as err:
        raise input_error(manager.directory / str(step), f"checkpoint record cannot be read ({type(err).__name__})")
    if not isinstance(record, dict) or record.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise input_error(
            manager.directory / str(step), f"expected a checkpoint record of format {CHECKPOINT_FORMAT_VERSION}"
        )
    return record


def intact_steps(workdir: str | os.PathLike) -> tuple[list[int], dict[int, str]]:
    """Steps of the workdir's checkpoints that look intact (sorted), and the damaged ones with why."""
    intact, damaged = [], {}
    for step, path in sorted(step_directories(workdir).items()):
        reason = damage(path)
        if reason is None:
            intact.append(step)
        else:
            damaged[step] = reason
    return intact, damaged


def best_step(workdir: str | os.PathLike, steps: list[int]) -> int | None:
    """The step of lowest validation loss among ``steps`` (their metrics files), or None."""
    losses = {}
    for step in steps:
        path = Path(workdir) / "checkpoints" / str(step) / "metrics" / "metrics"
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
            losses[step] = _val_loss(json.loads(path.read_text()))
    return min(losses, key=lambda s: (losses[s], -s)) if losses else None
