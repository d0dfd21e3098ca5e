"""Embedding speed: every volume of a store through the trained autoencoder of a demo run (codes and
reconstruction errors), by the code path `wm-jax embed` takes (`wm_jax.embed._codes`), timed after
compilation, with each CPU convolution formulation side by side in one run.

    python benchmarks/embed_speed.py --run DEMO_DIR [--store store_heldout] [--step best]
        [--batch-sizes 8,32] [--formulations auto,shifted] [--reps 2] [--host-devices 1] [--workers 1,2]
        [--name embed_speed]

DEMO_DIR is the output of `wm-jax demo --out DEMO_DIR`. "shifted" is the formulation the model used on
CPU before the "planes" one ("auto" = planes, shifted for the single-channel first layer). The outputs
of every formulation are compared with the first one's. The load average is recorded before and after
because other processes may share the cores. ``--host-devices N`` runs with N CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=N`): embed then splits each batch over them, as
over GPUs, and XLA:CPU runs one device's program on about one core. ``--workers 1,2`` compares
one dispatch thread with two (`wm-jax embed`'s default with one device on CPU). Writes
benchmarks/results/NAME.md (and .json).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def with_formulation(model, formulation: str):
    """``model`` with every k3 convolution set to ``formulation`` (the parameters are shared)."""
    from flax import nnx

    from wm_jax.model.conv import Conv3dK3

    for _, module in nnx.iter_modules(model):
        if isinstance(module, Conv3dK3):
            module.formulation = formulation
    return model


def time_codes(model, store, batch_size: int, reps: int, workers: int | None = None):
    """(seconds of a first, compiling pass; best wall seconds and that pass's CPU seconds over ``reps``
    passes after it; the codes; the errors). CPU seconds (user + system of this process) / cores is
    the wall time the pass would take with the cores to itself, when it keeps them busy."""
    from wm_jax.embed import _codes

    start = time.perf_counter()
    codes, errors = _codes(model, store, batch_size, workers)
    first = time.perf_counter() - start
    best, best_cpu = float("inf"), float("nan")
    for _ in range(reps):
        start, cpu = time.perf_counter(), _cpu_seconds()
        codes, errors = _codes(model, store, batch_size, workers)
        if time.perf_counter() - start < best:
            best, best_cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    return first, best, best_cpu, codes, errors


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def run(args) -> dict:
    from wm_jax.train.state import load_model, open_store

    model, _, _, step = load_model(Path(args.run) / "encoder", args.step)
    store = open_store(Path(args.run) / args.store, model.config)
    rows, reference = [], None
    for formulation in args.formulations.split(","):
        with_formulation(model, formulation)
        for batch_size, workers in itertools.product(
            [int(b) for b in args.batch_sizes.split(",")], [int(w) for w in args.workers.split(",")]
        ):
            load_before = os.getloadavg()[0]
            first, best, cpu, codes, errors = time_codes(model, store, batch_size, args.reps, workers or None)
            if reference is None:
                reference = (codes, errors)
            row = {
                "formulation": formulation,
                "batch_size": batch_size,
                "workers": workers or "default",
                "first_pass_s": round(first, 2),
                "after_compile_s": round(best, 2),
                "cpu_s": round(cpu, 2),
                "volumes_per_s": round(len(codes) / best, 1),
                "max_code_diff_rel": float(np.abs(codes - reference[0]).max() / np.abs(reference[0]).max()),
                "max_error_diff_rel": float(np.abs(errors / reference[1] - 1).max()),
                "load_before": round(load_before, 2),
                "load_after": round(os.getloadavg()[0], 2),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    return {"checkpoint_step": int(step), "n_volumes": len(store), "grid": list(store.volumes.shape[1:]), "rows": rows}


def write(result: dict, name: str) -> None:
    out = REPO / "benchmarks" / "results" / name
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    names = list(result["rows"][0])
    lines = [
        "# Embedding a store's volumes through a trained demo autoencoder (CPU, after compilation)",
        "",
        f"`{result['command']}` on {result['machine']}, {result['date']}: {result['n_volumes']} volumes of "
        f"{'x'.join(map(str, result['grid']))}, checkpoint step {result['checkpoint_step']}. Seconds are the best "
        "of the timed passes over the whole store (codes and reconstruction errors); diffs are relative to "
        "the first row's outputs; cpu_s is this process's user + system CPU seconds in that pass; load "
        "average (1 min) before and after each row.",
        "",
        "| " + " | ".join(names) + " |",
        "|" + "---|" * len(names),
    ]
    for row in result["rows"]:
        lines.append(
            "| "
            + " | ".join(f"{v:.2g}" if isinstance(v, float) and "diff" in k else str(v) for k, v in row.items())
            + " |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a `wm-jax demo --out` directory")
    parser.add_argument("--store", default="store_heldout")
    parser.add_argument("--step", default="best")
    parser.add_argument("--batch-sizes", default="8,32")
    parser.add_argument("--formulations", default="auto,shifted")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--host-devices", type=int, default=1)
    parser.add_argument(
        "--workers", default="0", help="dispatch threads to compare (0: the default; 2 with one CPU device)"
    )
    parser.add_argument("--name", default="embed_speed")
    args = parser.parse_args()
    if args.host_devices > 1:  # before jax is imported (run() imports it)
        flag = f"--xla_force_host_platform_device_count={args.host_devices}"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
    if not (Path(args.run) / "encoder").is_dir():
        sys.exit(f"embed_speed.py: error: --run {args.run}: no encoder/ directory (a `wm-jax demo --out` directory)")
    result = run(args)
    result["command"] = "python benchmarks/embed_speed.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
    )
    result["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or 'cpu'}"
    result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    write(result, args.name)


if __name__ == "__main__":
    main()
