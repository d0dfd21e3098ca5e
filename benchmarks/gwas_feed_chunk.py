"""The host's work per chunk of the GWAS stream, stage by stage, on one thread.

    python benchmarks/gwas_feed_chunk.py --bfile PREFIX [--bfile PREFIX ...] [--chunk-mib 16] [--name NAME]

For each .bed: one chunk of consecutive variants (16 MiB of genotype bytes, as `wm_jax.gwas.stream`
reads), timed as a reader thread handles it: read (`read_block`), counts (`block_counts`), and the
missing-call index of the chunk's variants that have missing calls (`missing_index`, at the width
that holds them all). Best of 5 after one warm-up, the .bed in the page cache. Run the same script
with PYTHONPATH at another checkout to compare code. Writes benchmarks/results/NAME.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

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


def chunk_row(prefix: str, chunk_mib: int) -> dict:
    from wm_jax.data.plink import PlinkDataset

    data = PlinkDataset(prefix)
    rows = np.arange(min(data.n_variants, (chunk_mib << 20) // data.row_width))
    block = data.read_block(rows)
    counts = data.block_counts(block, rows)
    missing = np.asarray(counts.missing)
    chosen = np.flatnonzero(missing > 0)
    width = int(2 ** np.ceil(np.log2(max(1, missing.max()))))
    part = block[chosen]
    return {
        "bed": prefix,
        "samples": data.n_samples,
        "variants_in_chunk": len(rows),
        "chunk_mb": round(block.nbytes / 1e6, 1),
        "with_missing_calls": len(chosen),
        "index_width": width,
        "read_ms": best_ms(lambda: data.read_block(rows)),
        "counts_ms": best_ms(lambda: data.block_counts(block, rows)),
        "index_ms": best_ms(lambda: data.missing_index(part, width)),
        "load_before": Path("/proc/loadavg").read_text().split()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bfile", action="append", required=True)
    parser.add_argument("--chunk-mib", type=int, default=16)
    parser.add_argument("--name", default="gwas_feed_chunk")
    args = parser.parse_args()
    rows = [chunk_row(prefix, args.chunk_mib) for prefix in args.bfile]
    for row in rows:
        print(json.dumps(row), flush=True)
    code = os.environ.get("PYTHONPATH", "this checkout")
    write_result_table(
        args.name, "The host's work per chunk of the GWAS stream", f"code: {code}; best of 5, one thread.", rows
    )


if __name__ == "__main__":
    main()
