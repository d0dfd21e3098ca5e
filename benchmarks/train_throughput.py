"""Training-step throughput of the UDIP autoencoder on this machine: Flax (XLA) vs the same
architecture in PyTorch, side by side in one run, plus the input pipeline's rate.

    python benchmarks/train_throughput.py [--shape 48,56,48] [--channels 8,16,32,64] [--batch 4] [--steps 5]
        [--device cpu|cuda] [--torch-dtype float32|bfloat16] [--flax-formulations library,shifted,auto]

Writes benchmarks/results/NAME.md (and .json), NAME = --name (train_throughput). PyTorch is optional
(`pip install torch==2.13.0`, CPU); without it the PyTorch column is empty. ``--device cuda`` runs
PyTorch on the GPU (eager; bf16 under autocast with ``--torch-dtype bfloat16``) and JAX on its
default backend, without preallocating the GPU's memory so that both fit; on a GPU pass
``--flax-formulations auto`` (the CPU forms are for XLA:CPU). `benchmarks/train_dtype.py --torch
cuda` gives both frameworks in both dtypes, each in its own process, with peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def flax_step_seconds(shape, channels, latent, batch, steps, formulation="auto") -> float:
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from wm_jax.model.autoencoder import Autoencoder, AutoencoderConfig
    from wm_jax.train.step import train_step

    model = Autoencoder(
        AutoencoderConfig(input_shape=shape, channels=channels, latent_dim=latent, conv_formulation=formulation),
        rngs=nnx.Rngs(0),
    )
    optimizer = nnx.Optimizer(model, optax.adam(1e-4), wrt=nnx.Param)
    volumes = jnp.asarray(np.random.default_rng(0).standard_normal((batch, *shape)), jnp.float32)
    mask, weights = jnp.ones(shape), jnp.ones(batch)
    train_step(model, optimizer, volumes, weights, mask).block_until_ready()  # compile
    start = time.perf_counter()
    for _ in range(steps):
        loss = train_step(model, optimizer, volumes, weights, mask)
    loss.block_until_ready()
    return (time.perf_counter() - start) / steps


def torch_step_seconds(shape, channels, latent, batch, steps, device="cpu", dtype="float32") -> float | None:
    try:
        return torch_step(shape, channels, latent, batch, steps, device, dtype)[0]
    except ImportError:
        return None


def torch_step(shape, channels, latent, batch, steps, device="cpu", dtype="float32") -> tuple[float, int | None]:
    """(seconds per step, peak CUDA bytes allocated or None) of the PyTorch network on ``device``;
    ``dtype="bfloat16"``: the step under `torch.autocast` (float32 parameters)."""
    import torch
    from torch import nn

    torch.manual_seed(0)

    def block(cin, cout):
        return nn.Sequential(
            nn.Conv3d(cin, cout, 3, padding=1),
            nn.BatchNorm3d(cout),
            nn.LeakyReLU(0.01),
            nn.Conv3d(cout, cout, 3, padding=1),
            nn.BatchNorm3d(cout),
            nn.LeakyReLU(0.01),
        )

    sizes = [tuple(shape)]
    for _ in channels[1:]:
        sizes.append(tuple(-(-s // 2) for s in sizes[-1]))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.ModuleList([block(1 if i == 0 else channels[i - 1], c) for i, c in enumerate(channels)])
            self.pool = nn.MaxPool3d(2, ceil_mode=True)
            flat = channels[-1] * int(np.prod(sizes[-1]))
            self.to_latent, self.from_latent = nn.Linear(flat, latent), nn.Linear(latent, flat)
            self.up = nn.ModuleList(
                [nn.ConvTranspose3d(channels[i], channels[i - 1], 2, stride=2) for i in range(len(channels) - 1, 0, -1)]
            )
            self.dec = nn.ModuleList([block(channels[i - 1], channels[i - 1]) for i in range(len(channels) - 1, 0, -1)])
            self.out = nn.Conv3d(channels[0], 1, 1)

        def forward(self, x):
            for i, b in enumerate(self.enc):
                x = b(self.pool(x) if i else x)
            z = self.to_latent(x.flatten(1))
            x = self.from_latent(z).view(x.shape)
            for level, (u, b) in enumerate(zip(self.up, self.dec)):
                t = sizes[len(sizes) - 2 - level]
                x = b(u(x)[:, :, : t[0], : t[1], : t[2]])
            return self.out(x)

    net = Net().to(device)
    optimizer = torch.optim.Adam(net.parameters(), 1e-4)
    x = torch.randn(batch, 1, *shape, device=device)
    cuda = device.startswith("cuda")

    def step():
        optimizer.zero_grad()
        with torch.autocast(device.split(":")[0], torch.bfloat16, enabled=dtype == "bfloat16"):
            loss = ((net(x).float() - x) ** 2).mean()
        loss.backward()
        optimizer.step()

    def sync():
        if cuda:
            torch.cuda.synchronize()

    step()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    seconds = (time.perf_counter() - start) / steps
    return seconds, torch.cuda.max_memory_allocated() if cuda else None


def pipeline_volumes_per_second(shape, batch, n_batches=30) -> float:
    """The training loop's prefetcher reading random batches from a memory-mapped store."""
    from wm_jax.train.batches import Prefetcher

    with tempfile.TemporaryDirectory() as tmp:
        volumes = np.lib.format.open_memmap(Path(tmp) / "v.npy", "w+", np.float32, (batch * n_batches, *shape))
        volumes[:] = 1.0
        volumes.flush()
        volumes = np.load(Path(tmp) / "v.npy", mmap_mode="r")
        rows = np.random.default_rng(0).permutation(len(volumes))
        batches = [rows[i : i + batch] for i in range(0, len(rows), batch)]
        start = time.perf_counter()
        count = sum(n for _, _, n in Prefetcher(volumes, batches, batch))
        return count / (time.perf_counter() - start)


def _round(value, digits):
    return None if value is None else round(value, digits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="48,56,48")
    parser.add_argument("--channels", default="8,16,32,64")
    parser.add_argument("--latent", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="PyTorch's device: cpu or cuda")
    parser.add_argument("--torch-dtype", default="float32", help="float32, or bfloat16 (autocast)")
    parser.add_argument("--flax-formulations", default="library,shifted,auto")
    parser.add_argument("--name", default="train_throughput", help="results file name in benchmarks/results/")
    args = parser.parse_args()
    if args.device.startswith("cuda"):  # before jax is imported: leave the GPU's memory to both
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    shape = tuple(int(s) for s in args.shape.split(","))
    channels = tuple(int(c) for c in args.channels.split(","))
    # The library convolution (lax.conv) and the shifted products (the CPU form before "planes") are
    # timed beside the one the model uses on CPU ("auto": planes, shifted for the 1-channel input).
    forms = args.flax_formulations.split(",")

    def timed(form):
        return flax_step_seconds(shape, channels, args.latent, args.batch, args.steps, form) if form in forms else None

    flax_library_s, flax_shifted_s, flax_s = timed("library"), timed("shifted"), timed("auto")
    torch_s = torch_step_seconds(shape, channels, args.latent, args.batch, args.steps, args.device, args.torch_dtype)
    pipeline = pipeline_volumes_per_second(shape, args.batch)
    row = {
        "shape": "x".join(map(str, shape)),
        "channels": "-".join(map(str, channels)),
        "batch": args.batch,
        "flax_lax_conv_step_s": _round(flax_library_s, 3),
        "flax_shifted_step_s": _round(flax_shifted_s, 3),
        "flax_step_s": _round(flax_s, 3),
        "flax_volumes_per_s": None if flax_s is None else round(args.batch / flax_s, 2),
        "torch_device": args.device,
        "torch_dtype": args.torch_dtype,
        "torch_step_s": _round(torch_s, 3),
        "torch_volumes_per_s": None if torch_s is None else round(args.batch / torch_s, 2),
        "flax_over_torch_time": None if torch_s is None or flax_s is None else round(flax_s / torch_s, 2),
        "pipeline_volumes_per_s": round(pipeline, 1),
        "pipeline_over_flax_step": None if flax_s is None else round(pipeline / (args.batch / flax_s), 1),
    }
    command = "python benchmarks/train_throughput.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items())
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "command": command,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "row": row,
    }
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    lines = [
        "| " + " | ".join(row) + " |",
        "|" + "---|" * len(row),
        "| " + " | ".join(str(v) for v in row.values()) + " |",
    ]
    (out / f"{args.name}.md").write_text(
        f"# UDIP autoencoder training step, Flax vs PyTorch\n\n`{command}` on "
        f"{result['machine']}, {result['date']}.\n\n" + "\n".join(lines) + "\n"
    )
    print(json.dumps(row))


if __name__ == "__main__":
    main()
