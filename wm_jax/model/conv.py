"""The k3 SAME 3D convolution written for XLA:CPU speed.

XLA:CPU's 3D `lax.conv_general_dilated` is slow, and so is a sum of 27 shifted (voxels x C) @ (C x O)
products once C > 1 (each is a memory-bound dot with an inner dimension of a few channels). Its 2D
convolution is fast, so on CPU a k3 3D convolution is computed as one 2D convolution over the (Y, Z)
planes with the three X-neighbours of each plane stacked as input channels ("planes"): 4-5x faster
than the shifted products forward + backward at 8 channels (benchmarks/conv_formulations.py,
benchmarks/results/conv_formulations.md). A single-channel input (the first layer) stays with the
shifted products, which XLA fuses into one elementwise loop. The mathematics is the same in every
form: a cross-correlation with zero padding of 1, as `nnx.Conv(kernel_size=(3, 3, 3), padding="SAME")`.
On GPU and TPU the library convolution goes to cuDNN or the TPU's convolution units, so the model
uses it there ("auto" picks by backend; the choice on GPU and TPU rests on that, not on a measurement).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from wm_jax.model.init import lecun_normal


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


def conv3d_k3_planes(x: jax.Array, w: jax.Array) -> jax.Array:
    """x (B, X, Y, Z, C), w (3, 3, 3, C, O) -> (B, X, Y, Z, O) as one 2D k3 convolution over the B*X
    (Y, Z) planes, whose input channels are the plane and its two X-neighbours (3C)."""
    b, sx, sy, sz, c = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (0, 0), (0, 0), (0, 0)))
    stacked = jnp.concatenate([xp[:, i : i + sx] for i in range(3)], axis=-1).reshape(b * sx, sy, sz, 3 * c)
    kernel = jnp.moveaxis(w, 0, 2).reshape(3, 3, 3 * c, w.shape[-1])  # (j, k, i*C + c, O)
    y = lax.conv_general_dilated(stacked, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y.reshape(b, sx, sy, sz, w.shape[-1])


def conv3d_k3_library(x: jax.Array, w: jax.Array) -> jax.Array:
    return lax.conv_general_dilated(x, w, (1, 1, 1), "SAME", dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))


def conv3d_k3(x: jax.Array, w: jax.Array, formulation: str = "auto") -> jax.Array:
    """formulation: "shifted", "planes", "library", or "auto" (on CPU shifted for one input channel and
    planes otherwise, the library elsewhere)."""
    if formulation == "auto":
        if jax.default_backend() != "cpu":
            formulation = "library"
        else:
            formulation = "shifted" if x.shape[-1] == 1 else "planes"
    if formulation == "shifted":
        return conv3d_k3_shifted(x, w)
    if formulation == "planes":
        return conv3d_k3_planes(x, w)
    if formulation == "library":
        return conv3d_k3_library(x, w)
    raise ValueError(f"unknown convolution formulation {formulation!r}")


class Conv3dK3(nnx.Module):
    """Conv3d, kernel 3, SAME padding, with bias; parameters as nnx.Conv (LeCun-normal kernel, zero bias)."""

    def __init__(
        self, in_features: int, out_features: int, *, rngs: nnx.Rngs, dtype=jnp.float32, formulation: str = "auto"
    ):
        self.kernel = nnx.Param(lecun_normal()(rngs.params(), (3, 3, 3, in_features, out_features)))
        self.bias = nnx.Param(jnp.zeros((out_features,)))
        self.dtype = dtype
        self.formulation = formulation

    def __call__(self, x: jax.Array) -> jax.Array:
        y = conv3d_k3(x.astype(self.dtype), self.kernel[...].astype(self.dtype), self.formulation)
        return y + self.bias[...].astype(y.dtype)
