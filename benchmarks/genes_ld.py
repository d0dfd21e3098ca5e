"""The gene tests' LD products: on the device (`wm_jax.genes.ld.GeneLd`) against NumPy on the host.

    python benchmarks/genes_ld.py --cohort COHORT [--window-kb 10]

For the genes of COHORT/genes.tsv (each +/- the window) on COHORT/genotypes: every gene's LD
correlation and the sum of squared correlations with each gene within 500 kb before it, (a) in
NumPy float64 from the mean-imputed dosages (the earlier host path; one BLAS thread), (b) by
`GeneLd` (raw blocks decoded, standardised and multiplied by JAX at full float32 precision).
Prints and writes benchmarks/results/genes_ld.md (and .json): seconds of each and their largest
differences.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from wm_jax.data.genotypes import open_genotypes
from wm_jax.genes.annotation import read_genes
from wm_jax.genes.genetest import CORRELATION_KB, gene_variants
from wm_jax.genes.ld import GeneLd, ring_rows

from gwas_vs_plink2 import write_result_table


def _nearby(genes, g: int, done: list[int]) -> list[int]:
    gene = genes.iloc[g]
    return [h for h in done if genes.chrom[h] == gene.chrom and genes.end[h] >= gene.start - CORRELATION_KB * 1000]


def host_products(data, genes, members) -> tuple[dict, dict]:
    """NumPy float64: each gene's correlation, and {(h, g): sum r^2} for h within reach."""
    x, correlation, between, done = {}, {}, {}, []
    for g, rows in enumerate(members):
        d = np.asarray(data.dosages(rows), np.float64)
        mean = np.nanmean(d, axis=1, keepdims=True)
        d = np.where(np.isnan(d), mean, d) - mean
        norm = np.sqrt((d**2).sum(axis=1, keepdims=True))
        x[g] = np.divide(d, norm, out=np.zeros_like(d), where=norm > 0)
        correlation[g] = x[g] @ x[g].T
        done = _nearby(genes, g, done)
        for h in done:
            between[h, g] = float(((x[h] @ x[g].T) ** 2).sum())
        done.append(g)
    return correlation, between


def device_products(data, genes, members) -> tuple[dict, dict]:
    sizes, genes = np.array([len(m) for m in members]), genes.iloc[: len(members)]
    need = ring_rows(genes.start.to_numpy(), genes.end.to_numpy(), genes.chrom.to_numpy(), sizes, CORRELATION_KB * 1000)
    ld, correlation, between, done = GeneLd(data, need), {}, {}, []
    for g, rows in enumerate(members):
        done = _nearby(genes, g, done)
        ld.keep(set(done))
        correlation[g], sums = ld.step(g, rows)
        between.update({(h, g): v for h, v in sums.items()})
        done.append(g)
    return correlation, between


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", required=True)
    parser.add_argument("--window-kb", type=float, default=10.0)
    args = parser.parse_args()
    cohort = Path(args.cohort)
    data = open_genotypes(str(cohort / "genotypes"))
    genes = read_genes(cohort / "genes.tsv").sort_values(["chrom", "start"]).reset_index(drop=True)
    v = data.variants
    members = gene_variants(genes, v.chrom.astype(str).to_numpy(), v.pos.to_numpy(np.int64), int(args.window_kb * 1000))
    keep = [g for g, m in enumerate(members) if len(m)]
    genes, members = genes.iloc[keep].reset_index(drop=True), [members[g] for g in keep]
    device_products(data, genes, members[:40])  # compile the shapes first
    started = time.perf_counter()
    on_device = device_products(data, genes, members)
    device_seconds = time.perf_counter() - started
    started = time.perf_counter()
    with threadpool_limits(1, user_api="blas"):
        on_host = host_products(data, genes, members)
    host_seconds = time.perf_counter() - started
    r = max(float(np.abs(on_device[0][g] - on_host[0][g]).max()) for g in on_host[0])
    pairs = [abs(on_device[1][k] - on_host[1][k]) / max(on_host[1][k], 1e-3) for k in on_host[1]]
    row = {
        "genes": len(members),
        "variants per gene (median)": int(np.median([len(m) for m in members])),
        "samples": data.n_samples,
        "gene pairs within 500 kb": len(on_host[1]),
        "NumPy float64, host (s)": round(host_seconds, 1),
        f"GeneLd, JAX {jax.default_backend()} (s)": round(device_seconds, 1),
        "largest |r - r64|": float(f"{r:.2g}"),
        "largest relative error, sum r^2 of a pair": float(f"{max(pairs):.2g}"),
    }
    print(row)
    print(
        write_result_table(
            "genes_ld",
            "wm-jax genes: LD products on the device against NumPy on the host",
            "each gene's LD correlation and its sums of r^2 with the genes within 500 kb; the device's "
            "shapes compiled before the timing.",
            [row],
        )
    )


if __name__ == "__main__":
    main()
