"""A plan for the paper-size training run on 8xH100 and on a TPU v5e-64, on paper: memory per
device and a step-time model, from the compiled step of the paper's model on this machine.

    python benchmarks/pod_plan.py

Measured here (XLA:CPU compile, no allocation): the step's FLOPs per volume (`cost_analysis`) and
its memory per device at 1 volume per device (`memory_analysis`), in float32 and bfloat16 compute,
with the library convolution (`lax.conv`, what "auto" picks on GPU and TPU).
Assumed (vendor figures, marked in the output): peak dense bf16 FLOP/s, HBM size and all-reduce
bandwidth of each accelerator, and a model FLOP utilisation (MFU) for 3D convolutions. Writes
benchmarks/results/pod_plan.md. Everything in it is a model until it runs on such hardware.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from wm_jax.model.autoencoder import Autoencoder, AutoencoderConfig, masked_mse

REPO = Path(__file__).resolve().parents[1]
# name: (devices, HBM GiB per device, peak dense bf16 TFLOP/s per device, all-reduce bus GB/s per device)
ACCELERATORS = {
    "8xH100 SXM (one node, NVLink)": (8, 80, 989, 450),
    "TPU v5e-64 (16 hosts x 4 chips, ICI)": (64, 16, 197, 100),
}
MFU = 0.10  # assumed: the full-resolution layers have 16-32 channels, so they are memory-bound


def compiled_step(config: AutoencoderConfig, batch: int):
    def build():
        model = Autoencoder(config, rngs=nnx.Rngs(0))
        return model, nnx.Optimizer(model, optax.adam(3e-4), wrt=nnx.Param)

    abstract = nnx.eval_shape(build)
    graph, state = nnx.split(abstract)

    def step(state, volumes, mask):
        model, optimizer = nnx.merge(graph, state)
        loss, grads = nnx.value_and_grad(lambda m: masked_mse(m(volumes), volumes, mask))(model)
        optimizer.update(model, grads)
        return nnx.state((model, optimizer)), loss

    volumes = jax.ShapeDtypeStruct((batch, *config.input_shape), jnp.float32)
    mask = jax.ShapeDtypeStruct(config.input_shape, jnp.float32)
    n_params = sum(x.size for x in jax.tree.leaves(nnx.state(abstract[0], nnx.Param)))
    return jax.jit(step, donate_argnums=(0,)).lower(state, volumes, mask).compile(), n_params


def main() -> None:
    rows = {}
    for dtype in ("float32", "bfloat16"):
        start = time.perf_counter()
        compiled, n_params = compiled_step(AutoencoderConfig(compute_dtype=dtype, conv_formulation="library"), 1)
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        memory = compiled.memory_analysis()
        rows[dtype] = {
            "flops": float(cost["flops"]),
            "gib": (memory.argument_size_in_bytes + memory.temp_size_in_bytes) / 2**30,
            "temp_gib": memory.temp_size_in_bytes / 2**30,
            "seconds": time.perf_counter() - start,
        }
        print(dtype, rows[dtype], flush=True)
    gradient_gb = n_params * 4 / 1e9
    lines = [
        "# Paper-size training on pods: a plan on paper",
        "",
        f"`python benchmarks/pod_plan.py`, {time.strftime('%Y-%m-%d')}. Model: 1x182x218x182, channels",
        f"16-32-64-128-256, 128 UDIPs, {n_params / 1e6:.1f}M parameters, Adam. **Measured here** from the",
        "compiled step on XLA:CPU (no allocation; XLA:GPU/TPU fuse differently, so rerun there):",
        "",
        "| compute dtype | step FLOPs per volume | memory per device at 1 volume/device (GiB) | of which temporaries |",
        "|---|---|---|---|",
    ]
    for dtype, r in rows.items():
        lines.append(f"| {dtype} | {r['flops'] / 1e12:.2f} TFLOP | {r['gib']:.2f} | {r['temp_gib']:.2f} |")
    lines += [
        "",
        f"**Assumed** (vendor peak figures, not measured): MFU {MFU:.0%} for 3D convolutions; all-reduce of",
        f"the float32 gradient ({gradient_gb:.2f} GB) as a ring, 2(n-1)/n x bytes / bus bandwidth,",
        "not overlapped with compute (the latency-hiding scheduler would hide part of it).",
        "",
        "| hardware | devices | HBM/device | volumes/device (bf16) | global batch | compute s/step | all-reduce s/step "
        "| step s | volumes/s | epoch of 40k (min) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    bf16 = rows["bfloat16"]
    for name, (n, hbm, tflops, bus) in ACCELERATORS.items():
        per_device = max(1, int((hbm * 0.9 - (bf16["gib"] - bf16["temp_gib"])) // bf16["temp_gib"]))
        per_device = min(per_device, 8)
        compute = per_device * bf16["flops"] / (tflops * 1e12 * MFU)
        reduce = 2 * (n - 1) / n * gradient_gb / bus
        step = compute + reduce
        batch = per_device * n
        lines.append(
            f"| {name} | {n} | {hbm} GiB | {per_device} | {batch} | {compute:.3f} | {reduce:.3f} | {step:.3f} "
            f"| {batch / step:.0f} | {40000 / (batch / step) / 60:.1f} |"
        )
    lines += [
        "",
        "Notes. The paper trained with batch 8; a global batch of 64+ needs its learning rate retuned",
        "(linear scaling from 3e-4 as a start). On v5e-64 each host reads 1/16 of every batch from the",
        "shared store (`wm_jax/train/batches.py`): at the modelled rate that is the store's read rate",
        "divided by 16 per host. Until this runs on such hardware, every figure in the second table is a",
        "model.",
        "",
    ]
    out = REPO / "benchmarks" / "results" / "pod_plan.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
