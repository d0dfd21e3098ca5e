"""The k3 SAME 3D convolution written for XLA:CPU speed.

`lax.conv_general_dilated` on XLA:CPU was measured 1.3-5.5x slower (forward + backward) than a
sum of 27 shifted matrix products for the model's sizes (benchmarks/conv_formulations.py,
results in benchmarks/results/conv_formulations.md). The mathematics is the same: a
cross-correlation with zero padding of 1, as `nnx.Conv(kernel_size=(3, 3, 3), padding="SAME")`.
On GPU and TPU the library convolution goes to cuDNN or the TPU's convolution units, so the model
uses it there ("auto" picks by backend; the choice on GPU and TPU rests on that, not on a measurement).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax


def conv3d_k3_shifted(x: jax.Array, w: jax.Array) -> jax.Array:
    """x (B, X, Y, Z, C), w (3, 3, 3, C, O) -> (B, X, Y, Z, O) as 27 shifted (B*X*Y*Z, C) x (C, O) products."""
    _, sx, sy, sz, _ = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (1, 1), (0, 0)))
    out = None
    for i in range(3):
        for j in range(3):
            for k in range(3):
                term = jnp.einsum("bxyzc,co->bxyzo", xp[:, i : i + sx, j : j + sy, k : k + sz], w[i, j, k])
                out = term if out is None else out + term
    return out


def conv3d_k3_library(x: jax.Array, w: jax.Array) -> jax.Array:
    return lax.conv_general_dilated(x, w, (1, 1, 1), "SAME", dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))


def conv3d_k3(x: jax.Array, w: jax.Array, formulation: str = "auto") -> jax.Array:
    """formulation: "shifted", "library", or "auto" (shifted on CPU, the library elsewhere)."""
    if formulation == "auto":
        formulation = "shifted" if jax.default_backend() == "cpu" else "library"
    if formulation == "shifted":
        return conv3d_k3_shifted(x, w)
    if formulation == "library":
        return conv3d_k3_library(x, w)
    raise ValueError(f"unknown convolution formulation {formulation!r}")


class Conv3dK3(nnx.Module):
    """Conv3d, kernel 3, SAME padding, with bias; parameters as nnx.Conv (LeCun-normal kernel, zero bias)."""

    def __init__(
        self, in_features: int, out_features: int, *, rngs: nnx.Rngs, dtype=jnp.float32, formulation: str = "auto"
    ):
        init = nnx.initializers.lecun_normal()
        self.kernel = nnx.Param(init(rngs.params(), (3, 3, 3, in_features, out_features)))
        self.bias = nnx.Param(jnp.zeros((out_features,)))
        self.dtype = dtype
        self.formulation = formulation

    def __call__(self, x: jax.Array) -> jax.Array:
        y = conv3d_k3(x.astype(self.dtype), self.kernel[...].astype(self.dtype), self.formulation)
        return y + self.bias[...].astype(y.dtype)
