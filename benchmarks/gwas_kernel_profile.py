"""Where one block's time goes: the GWAS kernel alone on the device, against its matmul alone.

    python benchmarks/gwas_kernel_profile.py --cohort COHORT [--phenotypes 128] [--block-size 512]

Builds the kernel inputs of a real job (same phenotypes as gwas_vs_plink2.py), then times, best of
7 on one block already on the device: the whole compiled step; the decode and the one matmul with
[Q | 1 | Y] alone; and a float32 GEMM of 2048^3 for scale. Writes
benchmarks/results/gwas_kernel_profile.md (and .json).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gwas_vs_plink2 import gemm_gflops, make_phenotypes, write_result_table


def best_seconds(fn, *args, repeats: int = 7) -> float:
    import jax

    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return min(times)


def kernel_job(cohort: Path, phenotypes: int):
    """The .bed and the phenotype groups of a real job on ``cohort`` (the phenotypes of
    gwas_vs_plink2.py): (PlinkDataset, GroupedPhenotypes)."""
    from wm_jax.data.plink import PlinkDataset
    from wm_jax.data.tables import align_to_samples, read_table
    from wm_jax.gwas.design import build_groups

    data = PlinkDataset(cohort / "genotypes")
    fid, iid = data.fam.fid.to_numpy(str), data.fam.iid.to_numpy(str)
    with tempfile.TemporaryDirectory() as tmp:
        pheno_path = Path(tmp) / "pheno.tsv"
        make_phenotypes(cohort, phenotypes, 4, pheno_path, seed=phenotypes)
        pheno = read_table(pheno_path)
    covar = read_table(cohort / "covariates.tsv")
    grouped = build_groups(
        align_to_samples(pheno, fid, iid),
        align_to_samples(covar, fid, iid),
        pheno.columns,
        covar.columns,
        pheno.path,
        covar.path,
    )
    return data, grouped


def main() -> None:
    import jax

    from wm_jax.gwas import qc
    from wm_jax.gwas.design import kernel_inputs
    from wm_jax.gwas.kernel import decode_block, make_block_fn, missing_call_index

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", required=True)
    parser.add_argument("--phenotypes", type=int, default=128)
    parser.add_argument("--block-size", type=int, default=512)
    args = parser.parse_args()
    data, grouped = kernel_job(Path(args.cohort), args.phenotypes)
    raw = np.asarray(data.bed.raw(np.arange(args.block_size)))
    most_missing = int(qc.count_genotypes(data.bed, np.arange(args.block_size)).missing.max())
    width = 1 << max(1, most_missing).bit_length()  # as wm_jax.gwas.plan sizes it
    missing = missing_call_index(raw, data.n_samples, width)
    inputs = jax.device_put(kernel_inputs(grouped, 4 * raw.shape[1]))
    raw_d, missing_d = jax.device_put(raw), jax.device_put(missing)
    step = best_seconds(make_block_fn(grouped.layout, small_df=False), raw_d, missing_d, inputs)
    matmul = best_seconds(jax.jit(lambda r, design: decode_block(r) @ design), raw_d, inputs.design)
    flops = 2.0 * inputs.design.shape[0] * inputs.design.shape[1] * args.block_size
    gemm = gemm_gflops()
    rows = [
        {
            "what": "whole kernel step",
            "ms_per_block": round(step * 1e3, 2),
            "us_per_variant": round(step / args.block_size * 1e6, 1),
            "gflops_of_the_matmul": round(flops / step / 1e9, 1),
        },
        {
            "what": "decode + matmul only",
            "ms_per_block": round(matmul * 1e3, 2),
            "us_per_variant": round(matmul / args.block_size * 1e6, 1),
            "gflops_of_the_matmul": round(flops / matmul / 1e9, 1),
        },
        {
            "what": "float32 GEMM 2048^3",
            "ms_per_block": None,
            "us_per_variant": None,
            "gflops_of_the_matmul": round(gemm, 1),
        },
    ]
    for row in rows:
        print(row, flush=True)
    print(
        write_result_table(
            "gwas_kernel_profile",
            "One block of the GWAS kernel",
            f"{args.phenotypes} phenotypes in {len(grouped.groups)} missingness groups, block of "
            f"{args.block_size} variants, room for {width} missing calls, N={data.n_samples}.",
            rows,
        )
    )


if __name__ == "__main__":
    main()
