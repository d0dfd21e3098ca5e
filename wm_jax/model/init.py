"""Parameter initialisers that give Flax's values but compile once per size bucket, not per shape.

Flax's `lecun_normal` draws `jax.random.truncated_normal(key, -2, 2, shape)`, a program that XLA
compiles for each new shape: about 1 s each on a 2-core CPU (the inverse error function), so a new
model of the demo's size spent ~12 s compiling its initialisers before its first step. With JAX's
partitionable threefry (its default) a draw of ``n`` values is the first ``n`` values of a larger
draw with the same key, so every kernel up to a bucket's size is drawn at that size, cut to its
own and reshaped: the same bits, from at most one compiled program per bucket
(tests/test_model.py checks equality with Flax's initialisers, bit for bit, across the buckets).
Kernels above the largest bucket, or a JAX configured without partitionable threefry, take Flax's
own path.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# Draw sizes: a kernel of n values is drawn at the smallest bucket >= n (at most 8 times n, above
# the first). The demo's model fits the first; the paper's convolutions the first two or three.
BUCKETS = (1 << 18, 1 << 21, 1 << 24)
# The standard deviation of a standard normal truncated to (-2, 2), as Flax's variance scaling has it.
_TRUNCATED_STD = 0.87962566103423978


def _bucket(n: int) -> int | None:
    if not jax.config.jax_threefry_partitionable:
        return None
    return next((b for b in BUCKETS if n <= b), None)


def _cut(draw: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """The first prod(shape) values of a flat draw, reshaped: on the host, so that no program is
    compiled per shape; inside a trace (`nnx.eval_shape`, `jit`), as part of the traced program."""
    try:
        host = np.asarray(draw)
    except jax.errors.TracerArrayConversionError:
        return draw[: math.prod(shape)].reshape(shape)
    return jnp.asarray(host[: math.prod(shape)].reshape(shape))


def lecun_normal():
    """`nnx.initializers.lecun_normal()`, value for value (fan-in: every axis but the last)."""
    flax_init = nnx.initializers.lecun_normal()

    def init(key, shape, dtype=jnp.float32, **kwargs):
        shape = tuple(int(s) for s in shape)
        bucket = _bucket(math.prod(shape))
        if bucket is None or jnp.dtype(dtype) != jnp.float32 or len(shape) < 2 or any(kwargs.values()):
            return flax_init(key, shape, dtype, **kwargs)
        values = _cut(jax.random.truncated_normal(key, -2, 2, (bucket,), dtype), shape)
        variance = jnp.array(1.0 / math.prod(shape[:-1]), dtype=dtype)
        return values * (jnp.sqrt(variance) / jnp.array(_TRUNCATED_STD, dtype))

    return init


def normal(key, shape) -> jax.Array:
    """`jax.random.normal(key, shape)` (float32), value for value."""
    shape = tuple(int(s) for s in shape)
    bucket = _bucket(math.prod(shape))
    if bucket is None:
        return jax.random.normal(key, shape)
    return _cut(jax.random.normal(key, (bucket,)), shape)
