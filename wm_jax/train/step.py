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


@functools.partial(jax.jit, static_argnums=0)
def _embed(graphdef, state, volumes, mask):
    return embed_outputs(nnx.merge(graphdef, state), volumes, mask)


def embed_step(model: Autoencoder):
    """``embed_outputs`` compiled for ``model``'s structure, called as ``step(state, volumes, mask)`` with
    ``state = nnx.state(model)``: one compiled call per batch, the reconstructions never leave the device.
    A plain `jax.jit` over the split state, because `nnx.jit` walks the model's graph on every call. The
    model's structure (its graphdef, which holds each convolution's formulation) is a static argument of
    one module-level function, so every pass over a model of the same structure and shapes reuses one
    compilation: a second `wm-jax embed` pass in one process (a benchmark's timed passes) compiles nothing."""
    return functools.partial(_embed, nnx.graphdef(model))
