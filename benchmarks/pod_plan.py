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

import json
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
# Measured: the paper-size step on one NVIDIA H200 (jax 0.11.2, the project at 3f07e19; shared/DESIGN.md
# and issue 22): float32 at batch 4, 16.5 volumes/s and 27.3 GiB peak; bfloat16 11.4 volumes/s (slower);
# that machine's bf16 matrix-multiply rate 790 TFLOP/s. benchmarks/results/train_dtype_gpu.json, once
# `benchmarks/device_check.sh train` has run on a GPU, replaces these figures (its fastest wm-jax row).
MEASURED_GPU = {
    "source": "one NVIDIA H200, float32 at batch 4 (shared/DESIGN.md, issue 22)",
    "volumes_per_s": 16.5,
    "batch": 4,
    "peak_gib": 27.3,
    "bf16_matmul_tflops": 790.0,
}


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


def measured_gpu() -> dict:
    """The fastest measured paper-size wm-jax step on a GPU: train_dtype_gpu.json where it exists."""
    path = REPO / "benchmarks" / "results" / "train_dtype_gpu.json"
    if not path.exists():
        return MEASURED_GPU
    result = json.loads(path.read_text())
    rows = [r for r in result["rows"] if r.get("framework") == "wm-jax" and r.get("volumes_per_s")]
    best = max(rows, key=lambda r: r["volumes_per_s"])
    return {
        "source": f"{result['machine']}, {best['dtype']} at batch {best['batch']} "
        f"(train_dtype_gpu.json, {result['date']})",
        "volumes_per_s": best["volumes_per_s"],
        "batch": best["batch"],
        "peak_gib": best["peak_gib"],
        "bf16_matmul_tflops": best["bf16_matmul_tflop_s"],
    }


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
    gpu = measured_gpu()
    mfu = gpu["volumes_per_s"] * rows["float32"]["flops"] / (gpu["bf16_matmul_tflops"] * 1e12)
    n, _, peak_h100, bus = ACCELERATORS["8xH100 SXM (one node, NVLink)"]
    reduce = 2 * (n - 1) / n * gradient_gb / bus
    step = gpu["batch"] / gpu["volumes_per_s"] + reduce
    node_rate = n * gpu["batch"] / step
    achieved = gpu["volumes_per_s"] * rows["float32"]["flops"] / 1e12
    lines += [
        "",
        f"**Measured** on a GPU ({gpu['source']}): {gpu['volumes_per_s']} volumes/s per device, peak "
        f"{gpu['peak_gib']} GiB; that is {mfu:.1%} MFU against the {gpu['bf16_matmul_tflops']:.0f} TFLOP/s bf16",
        f"matrix rate measured on the same machine, not the {MFU:.0%} assumed above. At that rate, per device,",
        f"8 GPUs of one NVLink node at batch {gpu['batch']} per device take {step:.3f} s a step (all-reduce as",
        f"above): {node_rate:.0f} volumes/s, an epoch of 40k in {40000 / node_rate / 60:.1f} min. An"
        " H100's HBM is about 30% slower than the H200's, so",
        "for a memory-bound step this is an upper bound there. The modelled H100 row above assumes",
        f"{peak_h100 * MFU:.0f} TFLOP/s per device against {achieved:.1f} measured: {peak_h100 * MFU / achieved:.1f}x",
        "optimistic until the step is faster (issue 22).",
    ]
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
