"""The training step: masked MSE, optax update, batch sharded over a `data` mesh axis.

Parameters are replicated and the batch is split over devices; the compiler turns the global
batch statistics of BatchNorm and the gradient mean into all-reduces, so one step on D devices
computes what one step on a single device computes (tests/test_model.py checks this).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from wm_jax.model.autoencoder import Autoencoder, masked_mse


def data_mesh(n_devices: int | None = None) -> jax.sharding.Mesh:
    devices = jax.devices()[: n_devices or jax.device_count()]
    return jax.make_mesh((len(devices),), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def shard_batch(mesh, *arrays):
    """Put batch-leading arrays on the mesh, split along `data`."""
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    return tuple(jax.device_put(a, sharding) for a in arrays)


def replicate(mesh, tree):
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


@nnx.jit
def train_step(
    model: Autoencoder, optimizer: nnx.Optimizer, volumes: jax.Array, weights: jax.Array, mask: jax.Array
) -> jax.Array:
    """One optimisation step on a (possibly padded) batch; ``weights`` is 0 for padding entries."""

    def loss_fn(model):
        return masked_mse(model(volumes), volumes, mask, weights)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def eval_step(model: Autoencoder, volumes: jax.Array, weights: jax.Array, mask: jax.Array) -> jax.Array:
    return masked_mse(model(volumes), volumes, mask, weights)


@nnx.jit
def embed_step(model: Autoencoder, volumes: jax.Array) -> tuple[jax.Array, jax.Array]:
    """UDIPs and the reconstruction, in one compiled call."""
    latent = model.encode(volumes)
    return latent, model.decode(latent)


def batch_weights(n_real: int, batch_size: int) -> jnp.ndarray:
    return (jnp.arange(batch_size) < n_real).astype(jnp.float32)
