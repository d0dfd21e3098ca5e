"""The UDIP autoencoder's training step in float32 and in bfloat16 compute, side by side: time per
step, volumes per second, peak device memory and model FLOP utilisation, at each batch size, with
the same architecture in PyTorch beside it.

    python benchmarks/train_dtype.py [--shape 182,218,182] [--channels 16,32,64,128,256] [--batches 4,8]
        [--steps 10] [--torch cuda|cpu] [--name train_dtype]

Each (framework, dtype, batch) runs in a fresh process, so that each peak memory is its own
(`memory_stats` where the backend keeps it, GPUs and TPUs; `torch.cuda.max_memory_allocated` for
PyTorch on CUDA), with the model's own convolution choice for the backend (`conv_formulation="auto"`:
cuDNN's through lax.conv on GPUs) and float32 parameters. The first step compiles and is not timed.

MFU: model FLOPs per step (`model_flops`: 3x the forward pass's multiply-adds x 2, counted from the
layer shapes: the convention of MFU, independent of what the compiler does) over the step time, as a
fraction of the bf16 matrix-multiply rate measured in the same process (an 8192^3 product on GPUs and
TPUs, 2048^3 on CPU): the chip's fast path, so float32 and bf16 steps are on one scale.

``--torch DEVICE`` adds the PyTorch rows (`benchmarks/train_throughput.py`'s network: float32, and
bf16 under autocast) on that device. Writes benchmarks/results/NAME.md and .json with the bf16 /
float32 ratios of wm-jax at each batch (the issue's bar: bf16 at least 1.5x faster at no more peak
memory).
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


def model_flops(shape: tuple, channels: tuple, latent: int) -> float:
    """FLOPs of one training step per volume: 3 x the forward pass (the backward pass costs twice the
    forward's multiply-adds), counting 2 per multiply-add of every convolution and linear layer."""
    sizes = [tuple(shape)]
    for _ in channels[1:]:
        sizes.append(tuple(-(-s // 2) for s in sizes[-1]))
    voxels = [int(np.prod(s)) for s in sizes]
    conv = 0
    for level, c in enumerate(channels):  # encoder blocks: two k3 convolutions each
        c_in = 1 if level == 0 else channels[level - 1]
        conv += 27 * voxels[level] * (c_in * c + c * c)
    for level in range(len(channels) - 1, 0, -1):  # decoder: k2 s2 up, then two k3 convolutions
        c = channels[level - 1]
        conv += 8 * voxels[level] * channels[level] * c + 27 * voxels[level - 1] * 2 * c * c
    conv += voxels[0] * channels[0]  # the 1x1x1 output
    linear = 2 * voxels[-1] * channels[-1] * latent
    return 3 * 2 * float(conv + linear)


def matmul_tflops(dtype: str) -> float:
    """The rate of one large square matrix product in ``dtype`` on the default device, best of 3."""
    import jax
    import jax.numpy as jnp

    n = 2048 if jax.default_backend() == "cpu" else 8192
    a = jnp.ones((n, n), dtype)
    product = jax.jit(lambda x: x @ x)
    product(a).block_until_ready()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        product(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e12


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
    achieved = batch * model_flops(shape, channels, latent) / seconds / 1e12
    peak = matmul_tflops("bfloat16")
    return {
        "framework": "wm-jax",
        "dtype": dtype,
        "batch": batch,
        "backend": jax.default_backend(),
        "step_s": round(seconds, 4),
        "volumes_per_s": round(batch / seconds, 2),
        "first_step_s": round(compile_s, 2),
        "peak_gib": round(stats["peak_bytes_in_use"] / 2**30, 2) if "peak_bytes_in_use" in stats else None,
        "model_tflop_s": round(achieved, 3),
        "bf16_matmul_tflop_s": round(peak, 2),
        "mfu": round(achieved / peak, 4),
        "first_loss": round(first, 5),
        "last_loss": round(float(loss), 5),
    }


def measure_torch(shape: tuple, channels: tuple, latent: int, batch: int, steps: int, dtype: str, device: str):
    """The PyTorch network's step on ``device`` (bf16: autocast), in this process."""
    from train_throughput import torch_step

    seconds, peak_bytes = torch_step(shape, channels, latent, batch, steps, device, dtype)
    achieved = batch * model_flops(shape, channels, latent) / seconds / 1e12
    return {
        "framework": "pytorch",
        "dtype": dtype,
        "batch": batch,
        "backend": device,
        "step_s": round(seconds, 4),
        "volumes_per_s": round(batch / seconds, 2),
        "first_step_s": None,
        "peak_gib": None if peak_bytes is None else round(peak_bytes / 2**30, 2),
        "model_tflop_s": round(achieved, 3),
        "bf16_matmul_tflop_s": None,
        "mfu": None,
        "first_loss": None,
        "last_loss": None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="182,218,182")
    parser.add_argument("--channels", default="16,32,64,128,256")
    parser.add_argument("--latent", type=int, default=128)
    parser.add_argument("--batches", default="2", help="comma-separated batch sizes")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--torch", default=None, help="also PyTorch on this device (cuda or cpu)")
    parser.add_argument("--name", default="train_dtype")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = tuple(int(s) for s in args.shape.split(","))
    channels = tuple(int(c) for c in args.channels.split(","))
    if args.child:
        framework, dtype, batch = args.child.split(":")
        if framework == "pytorch":
            row = measure_torch(shape, channels, args.latent, int(batch), args.steps, dtype, args.torch)
        else:
            row = measure(shape, channels, args.latent, int(batch), args.steps, dtype)
        print(json.dumps(row))
        return
    rows = []
    frameworks = ["wm-jax"] + (["pytorch"] if args.torch else [])
    for batch in (int(b) for b in args.batches.split(",")):
        for framework in frameworks:
            for dtype in args.dtypes.split(","):
                command = [sys.executable, __file__, *sys.argv[1:], "--child", f"{framework}:{dtype}:{batch}"]
                found = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
                if found.returncode:  # out of memory, say: recorded, and the others still run
                    rows.append({"framework": framework, "dtype": dtype, "batch": batch, "error": _last(found)})
                else:
                    rows.append(json.loads(found.stdout.strip().splitlines()[-1]))
                print(json.dumps(rows[-1]), flush=True)
    names = list(next((row for row in rows if "error" not in row), rows[0]))
    rows = [
        {name: row.get(name) for name in names + (["error"] if any("error" in r for r in rows) else [])} for row in rows
    ]
    ratios = {}
    for batch in (int(b) for b in args.batches.split(",")):
        by = {r["dtype"]: r for r in rows if r["framework"] == "wm-jax" and r["batch"] == batch and r["step_s"]}
        if {"float32", "bfloat16"} <= by.keys():
            f32, bf16 = by["float32"], by["bfloat16"]
            ratios[f"bf16_speedup_batch_{batch}"] = round(f32["step_s"] / bf16["step_s"], 3)
            if f32["peak_gib"] and bf16["peak_gib"]:
                ratios[f"bf16_peak_over_f32_batch_{batch}"] = round(bf16["peak_gib"] / f32["peak_gib"], 3)
    record.write(
        args.name,
        "Training step, float32 against bfloat16 compute",
        "python benchmarks/train_dtype.py " + " ".join(sys.argv[1:]),
        rows,
        f"Each row in a fresh process, {args.steps} timed steps after the first; model FLOPs "
        f"{model_flops(shape, channels, args.latent) / 1e12:.3f} TFLOP per volume (module docstring).",
        ratios,
    )


def _last(found: subprocess.CompletedProcess) -> str:
    lines = (found.stderr or found.stdout or "").strip().splitlines()
    return lines[-1][:200] if lines else f"exit {found.returncode}"


if __name__ == "__main__":
    main()
