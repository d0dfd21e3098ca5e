"""A configurable 3D convolutional autoencoder (Flax NNX), channels-last (N, X, Y, Z, C).

The paper's architecture: per block [Conv3d k3 -> BatchNorm -> LeakyReLU] x 2, channels
16-32-64-128-256, max-pool k2 between blocks (odd sizes padded), flatten -> Linear -> 128 (the
UDIPs); the decoder mirrors it with transposed convolutions k2 s2 and ends with a 1x1x1 conv.

Two operations are written by hand because XLA:CPU's generic forms were measured several times
slower (see benchmarks): the k2 s2 transposed convolution is one einsum plus a reshape (its
output voxels do not overlap, so this is the same mathematics), and the 2x max-pool is a
reshape-and-max (whose gradient is cheaper than `reduce_window`'s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from wm_jax.model import init as param_init
from wm_jax.model.conv import Conv3dK3


@dataclass(frozen=True)
class AutoencoderConfig:
    input_shape: tuple[int, int, int] = (182, 218, 182)
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    latent_dim: int = 128
    convs_per_block: int = 2
    negative_slope: float = 0.01
    compute_dtype: str = "float32"  # "bfloat16": convolutions in bf16, parameters in float32
    batch_norm_momentum: float = 0.9
    conv_formulation: str = "auto"  # "planes"/"shifted" (fast on XLA:CPU), "library" (lax.conv), "auto" by backend
    # True: a linear path beside the convolutions, latent = L_in (x - offset) + conv encoder(x) and
    # reconstruction = offset + L_out z + conv decoder(z), started from PCA of the training volumes
    # (`init_linear_path`) with the convolutional paths' last layers at zero, so training starts from
    # PCA's reconstruction and the convolutions learn what a linear map cannot.
    linear_path: bool = False

    def level_shapes(self) -> list[tuple[int, int, int]]:
        """Spatial shape at each block (before its pool); pools round odd sizes up."""
        shapes = [tuple(self.input_shape)]
        for _ in self.channels[1:]:
            shapes.append(tuple(math.ceil(s / 2) for s in shapes[-1]))
        return shapes


def max_pool_2x(x: jax.Array) -> jax.Array:
    """2x2x2 max-pool, stride 2; an odd size is padded by repeating its last slice, which gives the
    same maximum as ignoring the padding. (Padding with -inf gave wrong gradients once the batch
    was sharded over devices; edge padding is exact either way.)"""
    b, *spatial, c = x.shape
    pad = [(0, 0)] + [(0, s % 2) for s in spatial] + [(0, 0)]
    x = jnp.pad(x, pad, mode="edge")
    sx, sy, sz = (math.ceil(s / 2) for s in spatial)
    return x.reshape(b, sx, 2, sy, 2, sz, 2, c).max(axis=(2, 4, 6))


class TransposedConv2x(nnx.Module):
    """ConvTranspose k2 s2 as one einsum: out[2x+i, 2y+j, 2z+l] = in[x, y, z] . W[i, j, l]."""

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs, dtype=jnp.float32):
        fan_in = in_features * 8
        self.kernel = nnx.Param(
            param_init.normal(rngs.params(), (2, 2, 2, in_features, out_features)) / math.sqrt(fan_in)
        )
        self.bias = nnx.Param(jnp.zeros((out_features,)))
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        b, sx, sy, sz, _ = x.shape
        kernel = self.kernel[...].astype(self.dtype)
        out = jnp.einsum("bxyzc,ijlco->bxiyjzlo", x.astype(self.dtype), kernel)
        out = out.reshape(b, 2 * sx, 2 * sy, 2 * sz, -1)
        return out + self.bias[...].astype(out.dtype)


class ConvBlock(nnx.Module):
    """[Conv3d k3 -> BatchNorm -> LeakyReLU] x n."""

    def __init__(self, in_features: int, out_features: int, config: AutoencoderConfig, *, rngs: nnx.Rngs):
        dtype = jnp.dtype(config.compute_dtype)
        self.convs = nnx.List(
            [
                Conv3dK3(
                    in_features if i == 0 else out_features,
                    out_features,
                    dtype=dtype,
                    formulation=config.conv_formulation,
                    rngs=rngs,
                )
                for i in range(config.convs_per_block)
            ]
        )
        # BatchNorm returns the compute dtype: its statistics and normalisation are float32 inside one
        # fusion (Flax promotes), and the activations kept between layers and for the backward pass are
        # bf16 under bf16 compute. (Casting each convolution's output to float32 first wrote every
        # activation in float32 and added a convert per layer: benchmarks/results/train_step_cost.md.)
        self.norms = nnx.List(
            [
                nnx.BatchNorm(out_features, momentum=config.batch_norm_momentum, dtype=dtype, rngs=rngs)
                for _ in range(config.convs_per_block)
            ]
        )
        self.negative_slope = config.negative_slope

    def __call__(self, x: jax.Array) -> jax.Array:
        for conv, norm in zip(self.convs, self.norms):
            x = jax.nn.leaky_relu(norm(conv(x)), self.negative_slope)
        return x


class Autoencoder(nnx.Module):
    def __init__(self, config: AutoencoderConfig, *, rngs: nnx.Rngs):
        self.config = config
        channels = config.channels
        shapes = config.level_shapes()
        self.encoder_blocks = nnx.List(
            [ConvBlock(1 if i == 0 else channels[i - 1], c, config, rngs=rngs) for i, c in enumerate(channels)]
        )
        self.bottleneck_shape = (*shapes[-1], channels[-1])
        flat = math.prod(self.bottleneck_shape)
        self.to_latent = nnx.Linear(flat, config.latent_dim, kernel_init=param_init.lecun_normal(), rngs=rngs)
        self.from_latent = nnx.Linear(config.latent_dim, flat, kernel_init=param_init.lecun_normal(), rngs=rngs)
        dtype = jnp.dtype(config.compute_dtype)
        self.upsamplers = nnx.List(
            [
                TransposedConv2x(channels[i], channels[i - 1], rngs=rngs, dtype=dtype)
                for i in range(len(channels) - 1, 0, -1)
            ]
        )
        self.decoder_blocks = nnx.List(
            [ConvBlock(channels[i - 1], channels[i - 1], config, rngs=rngs) for i in range(len(channels) - 1, 0, -1)]
        )
        self.output = nnx.Conv(
            channels[0], 1, kernel_size=(1, 1, 1), dtype=dtype, kernel_init=param_init.lecun_normal(), rngs=rngs
        )
        if config.linear_path:
            voxels = math.prod(config.input_shape)
            self.offset = nnx.Param(jnp.zeros(tuple(config.input_shape)))
            self.linear_in = nnx.Param(jnp.zeros((voxels, config.latent_dim)))
            self.linear_out = nnx.Param(jnp.zeros((config.latent_dim, voxels)))
            for layer in (self.to_latent, self.output):  # the model starts as its linear path alone
                layer.kernel[...] = jnp.zeros_like(layer.kernel[...])

    def init_linear_path(self, offset, components) -> None:
        """Start the linear path from PCA: ``offset`` the mean volume (X, Y, Z), ``components`` (K, X, Y, Z)
        orthonormal, K <= latent_dim (the rest stay 0)."""
        k = components.shape[0]
        flat = jnp.asarray(components, jnp.float32).reshape(k, -1)
        self.offset[...] = jnp.asarray(offset, jnp.float32)
        self.linear_in[...] = jnp.zeros_like(self.linear_in[...]).at[:, :k].set(flat.T)
        self.linear_out[...] = jnp.zeros_like(self.linear_out[...]).at[:k].set(flat)

    def encode(self, volumes: jax.Array) -> jax.Array:
        """(N, X, Y, Z) normalised FA -> (N, latent_dim) UDIPs."""
        x = volumes[..., None]
        for i, block in enumerate(self.encoder_blocks):
            if i > 0:
                x = max_pool_2x(x)
            x = block(x)
        latent = self.to_latent(x.reshape(x.shape[0], -1))
        if self.config.linear_path:
            centred = (volumes - self.offset[...]).reshape(volumes.shape[0], -1)
            latent = latent + centred @ self.linear_in[...]
        return latent

    def decode(self, latent: jax.Array) -> jax.Array:
        """(N, latent_dim) -> (N, X, Y, Z) reconstruction."""
        shapes = self.config.level_shapes()
        x = self.from_latent(latent).reshape(latent.shape[0], *self.bottleneck_shape)
        for level, (up, block) in enumerate(zip(self.upsamplers, self.decoder_blocks)):
            target = shapes[len(shapes) - 2 - level]
            x = up(x)[:, : target[0], : target[1], : target[2]]  # crop what the pools padded
            x = block(x)
        out = self.output(x)[..., 0].astype(jnp.float32)
        if self.config.linear_path:
            linear = (latent @ self.linear_out[...]).reshape(out.shape)
            out = out + self.offset[...] + linear
        return out

    def __call__(self, volumes: jax.Array) -> jax.Array:
        return self.decode(self.encode(volumes))


def masked_mse(
    reconstruction: jax.Array, volumes: jax.Array, mask: jax.Array, weights: jax.Array | None = None
) -> jax.Array:
    """Mean squared error over the brain mask (and over real, not padded, batch entries)."""
    per_voxel = (reconstruction - volumes) ** 2 * mask[None]
    per_volume = per_voxel.sum(axis=(1, 2, 3)) / mask.sum()
    if weights is None:
        return per_volume.mean()
    return (per_volume * weights).sum() / jnp.maximum(weights.sum(), 1.0)
