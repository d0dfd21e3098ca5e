"""Compiled memory of one training step of the paper-size model (1x182x218x182, channels
16-32-64-128-256, 128 UDIPs) per device, for several batch sizes, without allocating anything.

    python benchmarks/paper_step_memory.py [--batches 1,2,4,8]

Uses `jit(step).lower(abstract inputs).compile().memory_analysis()` on this machine's backend
(XLA:CPU here; rerun on the target GPU/TPU for its own figures). Writes
benchmarks/results/paper_step_memory.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
from pod_plan import compiled_step

from wm_jax.model.autoencoder import AutoencoderConfig

REPO = Path(__file__).resolve().parents[1]


def _gib(n_bytes: int) -> float:
    return round(n_bytes / 2**30, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,2,4,8")
    args = parser.parse_args()
    config = AutoencoderConfig()

    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        start = time.perf_counter()
        compiled, _ = compiled_step(config, batch)  # the step pod_plan.py plans with
        memory = compiled.memory_analysis()
        row = {
            "batch": batch,
            "arguments_gib": _gib(memory.argument_size_in_bytes),
            "outputs_gib": _gib(memory.output_size_in_bytes),
            "temporaries_gib": _gib(memory.temp_size_in_bytes),
            "compile_s": round(time.perf_counter() - start, 1),
        }
        rows.append(row)
        print(row, flush=True)
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(str(v) for v in r.values()) + " |" for r in rows]
    out = REPO / "benchmarks" / "results" / "paper_step_memory.md"
    out.write_text(
        f"# Paper-size training step: compiled memory per device ({jax.default_backend()})\n\n"
        f"`python benchmarks/paper_step_memory.py --batches {args.batches}`, {time.strftime('%Y-%m-%d')}. "
        "Parameters (137.7M) and Adam state are the arguments; donated, outputs alias them.\n\n"
        + "\n".join(lines)
        + "\n"
    )


if __name__ == "__main__":
    main()
