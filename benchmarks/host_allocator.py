"""A device step with glibc's default allocator settings against `wm_jax.hostmemory`'s.

    python benchmarks/host_allocator.py --cohort COHORT [--phenotypes 128] [--width 64] [--rounds 3]
    python benchmarks/host_allocator.py --job train [--rounds 2]

GWAS (default): one block of 512 variants with missing calls (room for --width of them) of a real
job (the phenotypes of gwas_vs_plink2.py), on the device: milliseconds per step (best of 15) and
minor page faults per step. Training (--job train): the autoencoder training step of
train_throughput.py (48x56x48 volumes, channels 8-16-32-64, batch 4), seconds per step over 3 steps.
Each setting in a fresh process, the two alternated --rounds times. Writes
benchmarks/results/host_allocator.md (or host_allocator_train.md), and .json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gwas_vs_plink2 import write_result_table

CHILD = """
import json, resource, sys, time
from pathlib import Path
import numpy as np
cohort, phenotypes, width, keep = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "keep"
if keep:
    from wm_jax.hostmemory import keep_freed_memory
    assert keep_freed_memory()
import jax
sys.path.insert(0, sys.argv[5])
from gwas_kernel_profile import kernel_job
from wm_jax.gwas.design import kernel_inputs
from wm_jax.gwas.kernel import make_block_fn, missing_call_index
data, grouped = kernel_job(cohort, phenotypes)
counts = data.count(np.arange(min(data.n_variants, 50000)))
rows = np.flatnonzero((counts.missing > 0) & (counts.missing <= width))[:512]
raw = np.asarray(data.read_block(rows))
args = (jax.device_put(raw), jax.device_put(missing_call_index(raw, data.n_samples, width)),
        jax.device_put(kernel_inputs(grouped, 4 * raw.shape[1])))
step = make_block_fn(grouped.layout, small_df=False).lower(*args).compile()
jax.block_until_ready(step(*args))
times, faults = [], []
for _ in range(15):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    jax.block_until_ready(step(*args))
    times.append(time.perf_counter() - start)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"ms_per_step": min(times) * 1e3, "faults_per_step": float(np.median(faults))}))
"""


TRAIN_CHILD = """
import json, sys
if sys.argv[1] == "keep":
    from wm_jax.hostmemory import keep_freed_memory
    assert keep_freed_memory()
sys.path.insert(0, sys.argv[2])
from train_throughput import flax_step_seconds
print(json.dumps({"s_per_step": flax_step_seconds((48, 56, 48), (8, 16, 32, 64), 32, 4, 3)}))
"""


def run_child(cohort: str, phenotypes: int, width: int, setting: str, job: str = "gwas") -> dict:
    here = str(Path(__file__).resolve().parent)
    if job == "train":
        command = [sys.executable, "-c", TRAIN_CHILD, setting, here]
    else:
        command = [sys.executable, "-c", CHILD, cohort, str(phenotypes), str(width), setting, here]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", choices=["gwas", "train"], default="gwas")
    parser.add_argument("--cohort", help="a `wm-jax simulate` directory (--job gwas)")
    parser.add_argument("--phenotypes", type=int, default=128)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.job == "train":
        return train_rows(args.rounds)
    if args.cohort is None:
        parser.error("--cohort is required with --job gwas")
    rows = []
    for round_number in range(args.rounds):
        measured = {s: run_child(args.cohort, args.phenotypes, args.width, s) for s in ("default", "keep")}
        rows.append(
            {
                "round": round_number + 1,
                "default_ms_per_step": round(measured["default"]["ms_per_step"], 1),
                "kept_ms_per_step": round(measured["keep"]["ms_per_step"], 1),
                "speedup": round(measured["default"]["ms_per_step"] / measured["keep"]["ms_per_step"], 2),
                "default_faults_per_step": measured["default"]["faults_per_step"],
                "kept_faults_per_step": measured["keep"]["faults_per_step"],
            }
        )
        print(rows[-1], flush=True)
    print(
        write_result_table(
            "host_allocator",
            "GWAS kernel step: glibc's default allocator settings against wm_jax.hostmemory's",
            f"{args.phenotypes} phenotypes in 5 missingness groups, 512 variants with missing calls, room for "
            f"{args.width}; a fresh process per setting, settings alternated.",
            rows,
        )
    )


def train_rows(rounds: int) -> None:
    rows = []
    for round_number in range(rounds):
        measured = {s: run_child("", 0, 0, s, job="train")["s_per_step"] for s in ("default", "keep")}
        rows.append(
            {
                "round": round_number + 1,
                "default_s_per_step": round(measured["default"], 2),
                "kept_s_per_step": round(measured["keep"], 2),
                "speedup": round(measured["default"] / measured["keep"], 2),
            }
        )
        print(rows[-1], flush=True)
    print(
        write_result_table(
            "host_allocator_train",
            "Autoencoder training step: glibc's default allocator settings against wm_jax.hostmemory's",
            "48x56x48 volumes, channels 8-16-32-64, latent 32, batch 4, mean of 3 steps after compiling; a fresh "
            "process per setting, settings alternated.",
            rows,
        )
    )


if __name__ == "__main__":
    main()
