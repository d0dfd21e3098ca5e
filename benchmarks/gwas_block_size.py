"""`wm-jax gwas` at several block sizes on one job: the association time less compilation.

    python benchmarks/gwas_block_size.py --cohort COHORT [--phenotypes 128] [--sizes 256,512,1024,2048]

Writes benchmarks/results/gwas_block_size.md (and .json). Same phenotypes as gwas_vs_plink2.py
(the last 4 of P each missing 1% of samples).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gwas_vs_plink2 import make_phenotypes, timed_rss, write_result_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", required=True)
    parser.add_argument("--phenotypes", type=int, default=128)
    parser.add_argument("--sizes", default="256,512,1024,2048")
    args = parser.parse_args()
    cohort, rows = Path(args.cohort), []
    with tempfile.TemporaryDirectory() as tmp:
        pheno = Path(tmp) / "pheno.tsv"
        make_phenotypes(cohort, args.phenotypes, 4, pheno, seed=args.phenotypes)
        for size in [int(s) for s in args.sizes.split(",")]:
            out = Path(tmp) / f"b{size}"
            seconds, rss, _ = timed_rss(
                [
                    sys.executable,
                    "-m",
                    "wm_jax.cli",
                    "gwas",
                    "--bfile",
                    str(cohort / "genotypes"),
                    "--pheno",
                    str(pheno),
                    "--covar",
                    str(cohort / "covariates.tsv"),
                    "--out",
                    str(out),
                    "--block-size",
                    str(size),
                ]
            )
            log_text = Path(f"{out}.log").read_text()
            found = re.search(
                r"association: (\d+) variant-phenotype tests in ([\d.]+) s .* of which ([\d.]+) s compiling", log_text
            )
            n_variants = int(found.group(1)) // args.phenotypes
            kernel = float(found.group(2)) - float(found.group(3))
            rows.append(
                {
                    "block_size": size,
                    "whole_process_s": round(seconds, 1),
                    "association_less_compile_s": round(kernel, 2),
                    "us_per_variant": round(kernel / n_variants * 1e6, 1),
                    "peak_rss_mib": round(rss),
                }
            )
            print(rows[-1], flush=True)
    text = write_result_table("gwas_block_size", "wm-jax gwas block size", f"{args.phenotypes} phenotypes.", rows)
    print(text)


if __name__ == "__main__":
    main()
