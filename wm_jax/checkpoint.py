"""The one place that talks to orbax: save and restore {model, optimizer, step, iterator} + a JSON record.

Uses orbax's v0 API (`CheckpointManager`, `ocp.args.Composite`, `StandardSave`, `JsonSave`), so a
move to orbax v1 touches this file only.
"""

from __future__ import annotations

import os
from pathlib import Path

import orbax.checkpoint as ocp
from flax import nnx

from wm_jax.errors import input_error

CHECKPOINT_FORMAT_VERSION = 1


def checkpoint_manager(workdir: str | os.PathLike, keep: int = 3) -> ocp.CheckpointManager:
    """Keeps the last ``keep`` checkpoints and the best by validation loss."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, best_fn=lambda metrics: metrics["val_loss"], best_mode="min",
        keep_checkpoints_without_metrics=True, enable_async_checkpointing=False)
    return ocp.CheckpointManager(Path(workdir).resolve() / "checkpoints", options=options)


def save(manager: ocp.CheckpointManager, step: int, state: nnx.State, record: dict, metrics: dict | None = None) -> None:
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(nnx.to_pure_dict(state)),
                                               record=ocp.args.JsonSave(record)), metrics=metrics, force=True)
    manager.wait_until_finished()


def restore(manager: ocp.CheckpointManager, step: int, target: nnx.State) -> tuple[nnx.State, dict]:
    """Restore into the shapes (and shardings) of ``target``; returns the filled state and the record.

    The caller applies it with `nnx.update(module, state)`."""
    abstract = nnx.to_pure_dict(target)
    try:
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                                 record=ocp.args.JsonRestore()))
    except Exception as err:  # orbax raises many types for missing or damaged files
        raise input_error(manager.directory / str(step), f"checkpoint cannot be restored ({type(err).__name__}: {str(err)[:200]})")
    record = restored["record"]
    if record.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise input_error(manager.directory / str(step), f"checkpoint format {record.get('format_version')}, expected {CHECKPOINT_FORMAT_VERSION}")
    nnx.replace_by_pure_dict(target, restored["state"])
    return target, record
