"""The cost of phenotypes with distinct missingness patterns: wm-jax and plink2 --glm on P
complete phenotypes and on the same P phenotypes each missing its own 1% of samples, side by side.

    python benchmarks/gwas_na_patterns.py --bfile COHORT/genotypes --covar COHORT/covariates.tsv
        [--phenotypes 32] [--no-plink2]

Writes benchmarks/results/gwas_na_patterns.md (and .json).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gwas_vs_plink2 import REPO, markdown_table, timed_rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bfile", required=True)
    parser.add_argument("--covar", required=True)
    parser.add_argument("--phenotypes", type=int, default=32)
    parser.add_argument("--missing-fraction", type=float, default=0.01)
    parser.add_argument("--no-plink2", action="store_true")
    args = parser.parse_args()
    fam = pd.read_csv(f"{args.bfile}.fam", sep=r"\s+", header=None, dtype=str)
    n, p = len(fam), args.phenotypes
    rng = np.random.default_rng(0)
    values = rng.standard_normal((n, p))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tables = {"complete": values.copy(), "distinct NA patterns": values.copy()}
        for j in range(p):
            tables["distinct NA patterns"][rng.choice(n, max(1, int(args.missing_fraction * n)), replace=False), j] = (
                np.nan
            )
        for label, y in tables.items():
            pheno = tmp / f"{label.split()[0]}.tsv"
            pd.DataFrame({"FID": fam[0], "IID": fam[1], **{f"Y{j + 1}": y[:, j] for j in range(p)}}).to_csv(
                pheno, sep="\t", index=False, na_rep="NA"
            )
            ours, ours_rss, _ = timed_rss(
                [
                    sys.executable,
                    "-m",
                    "wm_jax.cli",
                    "gwas",
                    "--bfile",
                    args.bfile,
                    "--pheno",
                    str(pheno),
                    "--covar",
                    args.covar,
                    "--out",
                    str(tmp / f"ours_{label[0]}"),
                ]
            )
            theirs = theirs_rss = None
            if not args.no_plink2 and shutil.which("plink2"):
                theirs, theirs_rss, _ = timed_rss(
                    [
                        "plink2",
                        "--bfile",
                        args.bfile,
                        "--pheno",
                        str(pheno),
                        "--covar",
                        args.covar,
                        "--glm",
                        "hide-covar",
                        "--threads",
                        "2",
                        "--out",
                        str(tmp / f"ref_{label[0]}"),
                    ],
                    env={"OPENBLAS_NUM_THREADS": "1"},
                )
            rows.append(
                {
                    "phenotypes": f"{p} {label}",
                    "wm_jax_s": round(ours, 1),
                    "wm_jax_rss_mib": round(ours_rss),
                    "plink2_s": None if theirs is None else round(theirs, 1),
                    "plink2_rss_mib": None if theirs_rss is None else round(theirs_rss),
                    "speedup": None if theirs is None else round(theirs / ours, 1),
                }
            )
            print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    frame["wm_jax_vs_complete"] = (frame.wm_jax_s / frame.wm_jax_s.iloc[0]).round(2)
    command = "python benchmarks/gwas_na_patterns.py " + " ".join(sys.argv[1:])
    bim = sum(1 for _ in open(f"{args.bfile}.bim"))
    text = (
        f"# Phenotypes with distinct missingness patterns\n\n`{command}` on {platform.machine()}, 2 cores, "
        f"{time.strftime('%Y-%m-%d')}; N={n}, M={bim}, each distinct phenotype missing "
        f"{args.missing_fraction:.0%} of samples.\n\n" + markdown_table(frame) + "\n"
    )
    out = REPO / "benchmarks" / "results" / "gwas_na_patterns"
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"command": command, "rows": frame.to_dict("records")}, indent=2))
    print(text)


if __name__ == "__main__":
    main()
