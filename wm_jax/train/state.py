"""The model and optimizer a config describes, on a mesh, and the trained model of a workdir.

  model_config(config)        the `AutoencoderConfig` of a training config
  build(config, ...)          a fresh model and optimizer (Adam with the configured schedule;
                              the PCA-started linear path at its own learning rate), replicated
  open_store(path, model)     the volume store, checked against the model's input shape
  with_store_shape(config, s) the training config with the model's input shape taken from the store
  load_model(workdir, step)   the model of a checkpoint ("latest", "best" or a step number)

Called by `wm_jax.train.loop` (training), `wm_jax.embed` and `wm_jax.interpret`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import jax
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from wm_jax import checkpoint, sharding
from wm_jax.data.store import VolumeStore
from wm_jax.errors import InputError, input_error
from wm_jax.model.autoencoder import Autoencoder, AutoencoderConfig

log = logging.getLogger("wm_jax")

LINEAR_PATH_PARAMETERS = ("offset", "linear_in", "linear_out")


def model_config(config) -> AutoencoderConfig:
    """The model of a training config. `.get` defaults are for the configs kept in checkpoints written
    before those fields existed; a config from `configs/` has every field."""
    m = config.model
    return AutoencoderConfig(
        input_shape=tuple(m.input_shape),
        channels=tuple(m.channels),
        latent_dim=int(m.latent_dim),
        compute_dtype=m.compute_dtype,
        conv_formulation=m.get("conv_formulation", "auto"),
        linear_path=bool(m.get("linear_path", False)),
    )


def config_hash(config) -> str:
    return hashlib.sha256(config.to_json(sort_keys=True).encode()).hexdigest()[:16]


def _adam(
    config, updates_per_epoch: int, scale: float = 1.0, weight_decay: float = 0.0
) -> optax.GradientTransformation:
    """Adam with the configured schedule, or AdamW with ``weight_decay`` > 0: decoupled decay, scaled by
    the schedule's rate, of the kernels (convolution and linear weights) only; biases and BatchNorm's
    scales are not decayed."""
    rate = config.learning_rate * scale

    def adam(learning_rate):
        if weight_decay:
            return optax.adamw(learning_rate, weight_decay=weight_decay, mask=_decayed)
        return optax.adam(learning_rate)

    if config.schedule == "cosine":  # else "plateau": the config's rules (wm_jax/config.py) allow no other
        return adam(optax.cosine_decay_schedule(rate, max(1, config.epochs * updates_per_epoch)))
    return optax.chain(adam(rate), optax.contrib.reduce_on_plateau(patience=max(1, updates_per_epoch), factor=0.5))


def _decayed(params):
    """True for the parameters weight decay applies to: kernels, the leaves of two or more dimensions."""
    return jax.tree_util.tree_map(lambda leaf: np.ndim(leaf) > 1, params)


def path_labels(params):
    """ "linear" for the parameters of the model's linear path, "conv" for the rest."""

    def label(path, _):
        return "linear" if any(getattr(key, "key", None) in LINEAR_PATH_PARAMETERS for key in path) else "conv"

    return jax.tree_util.tree_map_with_path(label, params)


def transform(config, steps_per_epoch: int) -> optax.GradientTransformation:
    """Adam with the configured schedule (AdamW with ``weight_decay`` > 0); the linear path (if any) at
    ``linear_path_lr_scale`` times the learning rate and never decayed. With ``grad_accum_steps``
    k > 1 the gradients of k consecutive batches are averaged before each update (optax.MultiSteps),
    so the schedule counts updates."""
    k = int(config.get("grad_accum_steps", 1))  # at least 1: the config's rules
    updates_per_epoch = max(1, steps_per_epoch // k)
    adam = _adam(config, updates_per_epoch, weight_decay=float(config.get("weight_decay", 0.0)))
    if config.get("model") is not None and config.model.get("linear_path", False):
        scale = float(config.get("linear_path_lr_scale", 1.0))
        adam = optax.multi_transform({"conv": adam, "linear": _adam(config, updates_per_epoch, scale)}, path_labels)
    return optax.MultiSteps(adam, every_k_schedule=k) if k > 1 else adam


def build(config, mcfg: AutoencoderConfig, mesh, steps_per_epoch: int):
    """A fresh model and optimizer from ``config.seed``, replicated over ``mesh``."""
    model, optimizer = _create(config, mcfg, steps_per_epoch)
    nnx.update((model, optimizer), sharding.replicate(mesh, nnx.state((model, optimizer))))
    return model, optimizer


def _create(config, mcfg: AutoencoderConfig, steps_per_epoch: int):
    model = Autoencoder(mcfg, rngs=nnx.Rngs(config.seed))
    return model, nnx.Optimizer(model, transform(config, steps_per_epoch), wrt=nnx.Param)


def build_abstract(config, mcfg: AutoencoderConfig, mesh, steps_per_epoch: int):
    """The model and optimizer of `build` with shapes, dtypes and replicated shardings but no values,
    for a checkpoint to be restored into, which would overwrite initial values at once (drawing them
    took 15-20 s on a 2-core CPU before `wm_jax.model.init`, 1.6 s for the demo's model after)."""
    model, optimizer = nnx.eval_shape(lambda: _create(config, mcfg, steps_per_epoch))
    replicated = NamedSharding(mesh, PartitionSpec())
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), nnx.state((model, optimizer))
    )
    nnx.update((model, optimizer), abstract)
    return model, optimizer


def init_linear_path_from_pca(model: Autoencoder, store: VolumeStore, rows: np.ndarray) -> None:
    """Start the model's linear path from PCA of the store's ``rows`` (every process computes the
    same PCA from the same rows)."""
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


def with_store_shape(config, store: VolumeStore):
    """The training ``config`` with ``model.input_shape`` set to the store's grid when the config
    leaves it unset (None; a copy, the caller's config is not changed). A config that sets another
    grid is an InputError naming both."""
    grid = tuple(int(n) for n in store.volumes.shape[1:])
    shape = config.model.get("input_shape")
    if shape is None:
        config = config.copy_and_resolve_references()
        config.model.input_shape = grid
        log.info("train: input shape %s, the store's grid", "x".join(map(str, grid)))
        return config
    if tuple(shape) != grid:
        raise InputError(
            f"--config.model.input_shape: {tuple(shape)} but the store {store.path} holds volumes of "
            f"{grid}; leave it unset (None) to take the store's grid, or prepare with --crop/--downsample"
        )
    return config


def open_store(store_path, mcfg: AutoencoderConfig) -> VolumeStore:
    store = VolumeStore.open(store_path)
    if tuple(store.volumes.shape[1:]) != tuple(mcfg.input_shape):
        raise input_error(
            store_path,
            f"volumes are {tuple(store.volumes.shape[1:])} but the config's model expects "
            f"{tuple(mcfg.input_shape)} (set --config.model.input_shape or prepare with --crop/--downsample)",
        )
    return store


def load_model(workdir: str | os.PathLike, step: str | int | None = None, mesh=None):
    """The trained model (eval mode) of a workdir's checkpoint: step "best", "latest"/None, or a number,
    replicated over ``mesh`` (default: every device). Returns (model, config, record, step)."""
    workdir = Path(workdir)
    intact, damaged = checkpoint.intact_steps(workdir)
    if not intact and not damaged:
        raise input_error(workdir, "no checkpoint found (train first with `wm-jax train`)")
    manager = checkpoint.checkpoint_manager(workdir, reader=True)
    for chosen in _candidate_steps(workdir, step, intact, damaged):
        try:
            return (*_load_step(manager, chosen, mesh or sharding.data_mesh()), int(chosen))
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


def _load_step(manager, step: int, mesh):
    import ml_collections

    record = checkpoint.read_record(manager, step)
    config = ml_collections.ConfigDict(record["config"])
    model, optimizer = build_abstract(config, model_config(config), mesh, 1)
    state, _ = checkpoint.restore(manager, step, nnx.state((model, optimizer)))
    nnx.update((model, optimizer), state)
    model.eval()
    return model, config, record
