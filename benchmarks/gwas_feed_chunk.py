"""The host's work per chunk of the GWAS stream, stage by stage, on one thread.

    python benchmarks/gwas_feed_chunk.py --bfile PREFIX [--bfile PREFIX ...] [--chunk-mib 16] \
        [--phenotypes 128] [--name NAME]

For each .bed: one chunk of consecutive variants (16 MiB of genotype bytes, as `wm_jax.gwas.stream`
reads), timed as a reader thread handles it: read (`read_block`), counts (`block_counts`), and the
missing-call index of the chunk's variants that have missing calls (`missing_index`, at the width
that holds them all). Then the rest of the host's work for the chunk, for the budget of the whole
feed: the transfer of its steps of 512 variants (`jax.device_put`: a copy on a CPU backend), the
feed-only kernel's work on them (a sum over every byte, as `benchmarks/gwas_device.py
--feed-only` runs on the CPU "device"), and writing the chunk's results for ``--phenotypes``
phenotypes into a result store's new columns (`store_step`: BETA, SE, -log10 P, the group columns).
Every stage on one thread (XLA too, so that its time is CPU time); best of 5 after one warm-up, the
.bed in the page cache; each stage's CPU seconds per GB of .bed bytes (``*_s_per_gb``) follow. Run
the same script with PYTHONPATH at another checkout to compare code. Writes
benchmarks/results/NAME.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

# every stage on one thread, XLA included (set before JAX is imported)
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from gwas_vs_plink2 import write_result_table  # noqa: E402


def best_ms(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(min(times) * 1e3, 2)


STEP = 512  # variants per step, wm-jax gwas's default --block-size


def host_after_reading(block: np.ndarray, n_phenotypes: int) -> dict:
    """Transfer, feed-only kernel and result writing of one chunk, in ms (best of 5)."""
    import tempfile

    import jax
    import jax.numpy as jnp

    from wm_jax.gwas.kernel import BlockResult
    from wm_jax.gwas.results import ResultStore, store_step

    steps = [block[start : start + STEP] for start in range(0, len(block) - STEP + 1, STEP)]
    trivial = jax.jit(lambda raw: jnp.sum(raw.astype(jnp.float32), axis=1))
    on_device = [jax.device_put(step) for step in steps]
    c, rng = len(block), np.random.default_rng(0)
    per_phenotype = [rng.random((c, n_phenotypes), np.float32) for _ in range(3)]
    results = BlockResult(*per_phenotype, np.ones((c, 1), np.int32), rng.random((c, 1), np.float32),
                          np.zeros((c, 1), np.int8), rng.random(c, np.float32))  # fmt: skip
    flip, order = rng.random(c) < 0.5, np.arange(n_phenotypes)
    with tempfile.TemporaryDirectory(dir=REPO / "benchmarks") as tmp:
        store = ResultStore(Path(tmp) / "store", 6 * c, n_phenotypes, 1)  # a fresh span of columns each time
        spans = iter(range(6))
        write = lambda: store_step(store, order, flip, np.arange(c) + next(spans) * c, results)  # noqa: E731
        times = {
            "transfer_ms": best_ms(lambda: jax.block_until_ready([jax.device_put(step) for step in steps])),
            "feed_kernel_ms": best_ms(lambda: jax.block_until_ready([trivial(step) for step in on_device])),
            "write_ms": best_ms(write),
        }
        store.close_files()
    return times


def chunk_row(prefix: str, chunk_mib: int, n_phenotypes: int) -> dict:
    from wm_jax.data.plink import PlinkDataset

    data = PlinkDataset(prefix)
    rows = np.arange(min(data.n_variants, (chunk_mib << 20) // data.row_width))
    block = data.read_block(rows)
    counts = data.block_counts(block, rows)
    missing = np.asarray(counts.missing)
    chosen = np.flatnonzero(missing > 0)
    width = int(2 ** np.ceil(np.log2(max(1, missing.max()))))
    part = block[chosen]
    row = {
        "bed": prefix,
        "samples": data.n_samples,
        "variants_in_chunk": len(rows),
        "chunk_mb": round(block.nbytes / 1e6, 1),
        "with_missing_calls": len(chosen),
        "index_width": width,
        "read_ms": best_ms(lambda: data.read_block(rows)),
        "counts_ms": best_ms(lambda: data.block_counts(block, rows)),
        "index_ms": best_ms(lambda: data.missing_index(part, width)),
        "phenotypes": n_phenotypes,
        **host_after_reading(block, n_phenotypes),
    }
    gigabytes = block.nbytes / 1e9
    for stage in ("read", "counts", "index", "transfer", "feed_kernel", "write"):
        row[f"{stage}_s_per_gb"] = round(row[f"{stage}_ms"] / 1e3 / gigabytes, 3)
    row["load_before"] = Path("/proc/loadavg").read_text().split()[0]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bfile", action="append", required=True)
    parser.add_argument("--chunk-mib", type=int, default=16)
    parser.add_argument("--phenotypes", type=int, default=128)
    parser.add_argument("--name", default="gwas_feed_chunk")
    args = parser.parse_args()
    rows = [chunk_row(prefix, args.chunk_mib, args.phenotypes) for prefix in args.bfile]
    for row in rows:
        print(json.dumps(row), flush=True)
    code = os.environ.get("PYTHONPATH", "this checkout")
    write_result_table(
        args.name,
        "The host's work per chunk of the GWAS stream",
        f"code: {code}; best of 5, one thread (XLA too).",
        rows,
    )


if __name__ == "__main__":
    main()
