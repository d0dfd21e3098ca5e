"""Where the training step's time goes on this CPU: the full step, then with BatchNorm removed,
with the convolutions replaced by a cheap channel broadcast, and with both removed.

    python benchmarks/step_ablation.py [--shape 24,28,24] [--channels 8,16,32] [--batch 16]

Prints one line per variant (seconds per forward+backward, mean of 3 after compiling). The
variants change the model, so they are for attribution only.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from wm_jax.model import autoencoder as A

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="24,28,24")
    parser.add_argument("--channels", default="8,16,32")
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    shape = tuple(int(s) for s in args.shape.split(","))
    channels = tuple(int(c) for c in args.channels.split(","))

    def seconds(formulation):
        config = A.AutoencoderConfig(input_shape=shape, channels=channels, latent_dim=16, conv_formulation=formulation)
        model = A.Autoencoder(config, rngs=nnx.Rngs(0))
        x = jnp.asarray(np.random.default_rng(0).standard_normal((args.batch, *shape)), jnp.float32)

        @nnx.jit
        def step(model, x):
            return nnx.value_and_grad(lambda m: ((m(x) - x) ** 2).mean())(model)

        jax.block_until_ready(step(model, x))
        start = time.perf_counter()
        for _ in range(3):
            out = step(model, x)
        jax.block_until_ready(out)
        return (time.perf_counter() - start) / 3

    def broadcast(conv, norm, x):  # stands in for a convolution at negligible cost
        return jnp.broadcast_to(x.mean(-1, keepdims=True), x.shape[:-1] + (norm.scale.shape[0],)) * conv.bias[...]

    variants = {
        "no batchnorm": lambda conv, norm, x: jax.nn.leaky_relu(conv(x), 0.01),
        "no convolution (batchnorm only)": lambda conv, norm, x: jax.nn.leaky_relu(
            norm(broadcast(conv, norm, x)), 0.01
        ),
        "no convolution, no batchnorm": broadcast,
    }
    print(f"full step, shifted-product conv      {seconds('shifted'):.3f} s")
    print(f"full step, lax.conv                  {seconds('library'):.3f} s")
    original = A.ConvBlock.__call__
    try:
        for name, layer in variants.items():

            def call(self, x, layer=layer):
                for conv, norm in zip(self.convs, self.norms):
                    x = layer(conv, norm, x)
                return x

            A.ConvBlock.__call__ = call
            print(f"{name:36s} {seconds('shifted'):.3f} s")
    finally:
        A.ConvBlock.__call__ = original


if __name__ == "__main__":
    main()
