"""`wm-jax h2 --method rhe` against the simulated truth and BOLT-REML 2.4 on the same .bed, and its
time against one `wm-jax gwas` pass over the same genotypes, side by side in one run.

    python benchmarks/h2_vs_bolt.py --bfile PREFIX --covar COVAR [--chr 1-4] [--phenotypes 128]

1. Six traits of known SNP h2 (0.1 ... 0.6; `wm_jax.simulate.traits`, 20% of the variants causal,
   covariate effects added) on the genotypes of --chr (written once as a .bed by plink1.9, untimed,
   so that BOLT and wm-jax read the same file). `wm-jax h2 --method rhe` estimates all six in one
   pass; `bolt --reml` one trait per run (2 threads).
2. The same traits repeated with fresh noise to --phenotypes columns: `wm-jax h2 --method rhe` and
   `wm-jax gwas` on them, whole processes, alternating (the issue's bound: RHE within twice a pass).

Writes benchmarks/results/h2_vs_bolt.md (and .json).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gwas_vs_plink2 import write_result_table

REPO = Path(__file__).resolve().parents[1]
H2 = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]


def timed(command: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}{done.stdout[-3000:]}")
    return time.perf_counter() - start, done.stdout + done.stderr


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bfile", required=True)
    parser.add_argument("--covar", required=True)
    parser.add_argument("--chr", default="1-4")
    parser.add_argument("--phenotypes", type=int, default=128)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--bolt-traits", default="2,4,6", help="which of T1..T6 BOLT-REML runs (minutes each)")
    parser.add_argument("--work", default=str(REPO / "benchmarks" / "work" / "h2"))
    args = parser.parse_args()
    from wm_jax.data.genotypes import open_genotypes
    from wm_jax.data.tables import read_table
    from wm_jax.simulate.traits import heritable_traits

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    bed = work / "g"
    subprocess.run(
        ["plink1.9", "--bfile", args.bfile, "--chr", args.chr, "--make-bed", "--out", str(bed)],
        check=True,
        capture_output=True,
    )
    data = open_genotypes(bed)
    covar = read_table(args.covar, missing_code=-9)
    ids = data.samples.iid.to_numpy(str)
    quantitative = [c for c in covar.columns if c in ("age",) or c.startswith("PC")]
    covariates = pd.DataFrame(covar.values, columns=covar.columns)[quantitative].to_numpy(float)
    rng = np.random.default_rng(args.seed)
    effects_of = (covariates[:, :3] - covariates[:, :3].mean(0)) / covariates[:, :3].std(0)
    traits = heritable_traits(data, H2, rng, covariates=effects_of, covariate_sd=0.3)
    names = [f"T{i + 1}" for i in range(len(H2))]
    fids = data.samples.fid.to_numpy(str)
    pd.DataFrame({"FID": fids, "IID": ids, **dict(zip(names, traits.T, strict=True))}).to_csv(
        work / "pheno.tsv", sep="\t", index=False
    )
    pd.DataFrame({"FID": fids, "IID": ids, **{q: covariates[:, i] for i, q in enumerate(quantitative)}}).to_csv(
        work / "covar.tsv", sep="\t", index=False
    )
    wm_jax = [sys.executable, "-m", "wm_jax.cli"]
    load = _load()
    rhe_s, _ = timed(
        [*wm_jax, "h2", "--method", "rhe", "--bfile", str(bed), "--pheno", str(work / "pheno.tsv"),
         "--covar", str(work / "covar.tsv"), "--out", str(work / "rhe")]
    )  # fmt: skip
    rhe = pd.read_csv(work / "rhe.h2.tsv", sep="\t")
    rows, bolt_total = [], 0.0
    for i, name in enumerate(names):
        row = {
            "trait": name,
            "true_h2": H2[i],
            "rhe_h2": round(rhe.h2[i], 4),
            "rhe_se": round(rhe.se[i], 4),
            "rhe_z_vs_truth": round((rhe.h2[i] - H2[i]) / rhe.se[i], 2),
        }
        if str(i + 1) not in args.bolt_traits.split(","):
            rows.append(row)
            continue
        seconds, log = timed(
            ["bolt", f"--bfile={bed}", f"--phenoFile={work / 'pheno.tsv'}", f"--phenoCol={name}",
             f"--covarFile={work / 'covar.tsv'}", f"--qCovarCol={quantitative[0]}", "--qCovarCol=PC{1:10}",
             "--reml", "--numThreads=2"]
        )  # fmt: skip
        bolt_total += seconds
        line = next(x for x in log.splitlines() if "h2g (1,1):" in x).split()
        h2_bolt, se_bolt = float(line[2]), float(line[3].strip("()"))
        rows.append(
            row
            | {
                "bolt_h2": h2_bolt,
                "bolt_se": se_bolt,
                "abs_rhe_minus_bolt": round(abs(rhe.h2[i] - h2_bolt), 4),
                "bolt_s": round(seconds, 1),
            }
        )
        print(rows[-1], flush=True)
    rows.append(
        {
            "trait": "all six (RHE) / those run (BOLT)",
            "rhe_s_one_pass": round(rhe_s, 1),
            "bolt_s_sum": round(bolt_total, 1),
            "load_before": load,
        }
    )
    # RHE of many phenotypes against one GWAS pass
    many = np.repeat(traits, -(-args.phenotypes // len(H2)), axis=1)[:, : args.phenotypes]
    many = many + 0.3 * rng.standard_normal(many.shape)
    columns = {f"P{j + 1}": many[:, j] for j in range(many.shape[1])}
    pd.DataFrame({"FID": fids, "IID": ids, **columns}).to_csv(work / "many.tsv", sep="\t", index=False)
    for _ in range(2):
        load = _load()
        gwas_s, _ = timed(
            [*wm_jax, "gwas", "--bfile", str(bed), "--pheno", str(work / "many.tsv"),
             "--covar", str(work / "covar.tsv"), "--out", str(work / "gwas"), "--overwrite"]
        )  # fmt: skip
        rhe_many_s, _ = timed(
            [*wm_jax, "h2", "--method", "rhe", "--bfile", str(bed), "--pheno", str(work / "many.tsv"),
             "--covar", str(work / "covar.tsv"), "--out", str(work / "rhe_many"), "--overwrite"]
        )  # fmt: skip
        rows.append(
            {
                "trait": f"{args.phenotypes} phenotypes",
                "gwas_s": round(gwas_s, 1),
                "rhe_s": round(rhe_many_s, 1),
                "rhe_over_gwas": round(rhe_many_s / gwas_s, 2),
                "load_before": load,
            }
        )
        print(rows[-1], flush=True)
    print(
        write_result_table(
            "h2_vs_bolt",
            "wm-jax h2 --method rhe against the truth and BOLT-REML 2.4",
            f"{data.n_samples} samples x {data.n_variants} variants (--chr {args.chr} of {args.bfile}); "
            "whole processes; RHE with 100 probes and 100 jackknife blocks; "
            "BOLT-REML with 2 threads, one trait per run.",
            rows,
        )
    )


if __name__ == "__main__":
    main()
