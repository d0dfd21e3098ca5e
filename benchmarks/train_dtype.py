"""The UDIP autoencoder's training step in float32 and in bfloat16 compute, side by side: time per
step, volumes per second, peak device memory, and XLA's count of bytes accessed.

    python benchmarks/train_dtype.py [--shape 182,218,182] [--channels 16,32,64,128,256] [--batch 2] [--steps 10]

Each dtype runs in a fresh process (so that each peak memory is its own; `memory_stats` where the
backend keeps it, GPUs and TPUs), with the model's own convolution choice for the backend
(`conv_formulation="auto"`: cuDNN's through lax.conv on GPUs) and float32 parameters. The first
step compiles and is not timed. Writes benchmarks/results/NAME.md and .json with the bf16 / float32
ratios (the issue's bar: bf16 at least 1.5x faster at no more peak memory).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import record  # noqa: E402


def measure(shape: tuple, channels: tuple, latent: int, batch: int, steps: int, dtype: str) -> dict:
    """One dtype's step, in this process."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from wm_jax.model.autoencoder import Autoencoder, AutoencoderConfig
    from wm_jax.train.step import train_step

    config = AutoencoderConfig(input_shape=shape, channels=channels, latent_dim=latent, compute_dtype=dtype)
    model = Autoencoder(config, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-4), wrt=nnx.Param)
    volumes = jnp.asarray(np.random.default_rng(0).standard_normal((batch, *shape)), jnp.float32)
    mask, weights = jnp.ones(shape), jnp.ones(batch)
    began = time.perf_counter()
    first = float(train_step(model, optimizer, volumes, weights, mask))
    compile_s = time.perf_counter() - began
    start = time.perf_counter()
    for _ in range(steps):
        loss = train_step(model, optimizer, volumes, weights, mask)
    loss.block_until_ready()
    seconds = (time.perf_counter() - start) / steps
    stats = jax.local_devices()[0].memory_stats() or {}
    return {
        "dtype": dtype,
        "backend": jax.default_backend(),
        "step_s": round(seconds, 4),
        "volumes_per_s": round(batch / seconds, 2),
        "first_step_s": round(compile_s, 2),
        "peak_gib": round(stats["peak_bytes_in_use"] / 2**30, 2) if "peak_bytes_in_use" in stats else None,
        "first_loss": round(first, 5),
        "last_loss": round(float(loss), 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="182,218,182")
    parser.add_argument("--channels", default="16,32,64,128,256")
    parser.add_argument("--latent", type=int, default=128)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--name", default="train_dtype")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = tuple(int(s) for s in args.shape.split(","))
    channels = tuple(int(c) for c in args.channels.split(","))
    if args.child:
        print(json.dumps(measure(shape, channels, args.latent, args.batch, args.steps, args.child)))
        return
    rows = []
    for dtype in args.dtypes.split(","):
        command = [sys.executable, __file__, *sys.argv[1:], "--child", dtype]
        found = subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO)
        rows.append(json.loads(found.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    by = {row["dtype"]: row for row in rows}
    ratios = {}
    if {"float32", "bfloat16"} <= by.keys():
        f32, bf16 = by["float32"], by["bfloat16"]
        ratios["bf16_speedup"] = round(f32["step_s"] / bf16["step_s"], 3)
        if f32["peak_gib"] and bf16["peak_gib"]:
            ratios["bf16_peak_over_f32"] = round(bf16["peak_gib"] / f32["peak_gib"], 3)
    record.write(
        args.name,
        "Training step, float32 against bfloat16 compute",
        "python benchmarks/train_dtype.py " + " ".join(sys.argv[1:]),
        rows,
        f"Each dtype in a fresh process, batch {args.batch}, {args.steps} timed steps after the first.",
        ratios,
    )


if __name__ == "__main__":
    main()
