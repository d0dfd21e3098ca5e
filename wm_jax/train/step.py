"""The compiled steps: training (masked MSE, optax update), evaluation and embedding, on a batch
sharded over the `data` axis of `wm_jax.sharding.data_mesh`.

Parameters are replicated and the batch is split over devices; the compiler turns the global
batch statistics of BatchNorm and the gradient mean into all-reduces, so one step on D devices
computes what one step on a single device computes (tests/test_model.py checks this).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from wm_jax.model.autoencoder import Autoencoder, masked_mse


@nnx.jit
def train_step(
    model: Autoencoder, optimizer: nnx.Optimizer, volumes: jax.Array, weights: jax.Array, mask: jax.Array
) -> jax.Array:
    """One optimisation step on a (possibly padded) batch; ``weights`` is 0 for padding entries."""

    def loss_fn(model):
        return masked_mse(model(volumes), volumes, mask, weights)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads, value=loss)  # the loss feeds reduce_on_plateau (the paper schedule)
    return loss


@nnx.jit
def eval_step(model: Autoencoder, volumes: jax.Array, weights: jax.Array, mask: jax.Array) -> jax.Array:
    return masked_mse(model(volumes), volumes, mask, weights)


def embed_outputs(model: Autoencoder, volumes: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """UDIPs and each volume's reconstruction error (mean squared error inside the mask)."""
    latent = model.encode(volumes)
    error = jnp.sum((model.decode(latent).astype(jnp.float32) - volumes) ** 2 * mask, axis=(1, 2, 3))
    return latent, error / jnp.sum(mask)


@functools.lru_cache(maxsize=16)
def _compiled_embed(graphdef, treedef):
    """One jitted embedding function per model structure: ``graphdef`` (which holds each convolution's
    formulation) and the state's tree structure, each hashed once per `embed_step`, not per batch."""

    @jax.jit
    def run(leaves, volumes, mask):
        return embed_outputs(nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves)), volumes, mask)

    return run


def embed_step(model: Autoencoder):
    """``embed_outputs`` compiled for ``model``, called as ``step(volumes, mask)``: one compiled call per
    batch, the reconstructions never leave the device. The model's state is flattened once here and
    bound to the step (`nnx.jit`, or a jit over the nnx state, walks or sorts the model's tree on every
    call: 7.5 ms a batch on CPU in a profile). Every step made for a model of the same structure and shapes
    reuses one compilation, so a second `wm-jax embed` pass in one process (a benchmark's timed passes)
    compiles nothing."""
    graphdef, state = nnx.split(model)
    leaves, treedef = jax.tree.flatten(state)
    return functools.partial(_compiled_embed(graphdef, treedef), leaves)
