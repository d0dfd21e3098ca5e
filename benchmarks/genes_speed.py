"""`wm-jax genes` time against the number of phenotypes, on a simulated cohort's annotation.

    python benchmarks/genes_speed.py --cohort COHORT [--phenotypes 1,32,128] [--window-kb 10]

For each P: random normal phenotypes (as gwas_vs_plink2.py makes them), `wm-jax gwas` (compact),
then `run_genes` with the cohort's genes.tsv, gene_sets.gmt and its own genotypes as the LD
reference. Writes benchmarks/results/genes_speed.md (and .json): genes tested, seconds of the gene
tests (LD, eigenvalues, P of every gene x statistic), of the whole `run_genes`, and the share of
the null gene P below 0.05.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from wm_jax.data.source import GenotypeInput
from wm_jax.genes.run import GeneOptions, run_genes
from wm_jax.gwas.run import GwasOptions, run_gwas

from gwas_vs_plink2 import make_phenotypes, write_result_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", required=True)
    parser.add_argument("--phenotypes", default="1,32,128")
    parser.add_argument("--window-kb", type=float, default=10.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cohort, rows = Path(args.cohort), []
    with tempfile.TemporaryDirectory() as tmp:
        for p in [int(v) for v in args.phenotypes.split(",")]:
            pheno = Path(tmp) / f"pheno{p}.tsv"
            make_phenotypes(cohort, p, 0, pheno, seed=p)
            prefix = Path(tmp) / f"gwas{p}"
            options = GwasOptions(maf=0.01)
            run_gwas(str(cohort / "genotypes"), str(pheno), str(cohort / "covariates.tsv"), str(prefix), options)
            started = time.time()
            summary = run_genes(
                str(prefix),
                GenotypeInput("bfile", str(cohort / "genotypes")),
                str(cohort / "genes.tsv"),
                str(Path(tmp) / f"genes{p}"),
                GeneOptions(window_kb=args.window_kb),
                gene_sets=str(cohort / "gene_sets.gmt"),
            )
            seconds = time.time() - started
            genes = pd.read_csv(Path(tmp) / f"genes{p}" / "genes.tsv", sep="\t")
            single = genes[genes.phenotype != "OMNIBUS"]
            rows.append(
                {
                    "phenotypes": p,
                    "genes tested": summary["n_genes_tested"],
                    "variants": summary["n_variants_used"],
                    "gene x statistic P-values": len(genes),
                    "gene tests (s)": summary["seconds_gene_tests"],
                    "run_genes (s)": round(seconds, 1),
                    # the share below 0.05, not a KS: a phenotype's gene P are dependent (docs/genes.md)
                    "gene P < 0.05 (null)": round(float((single.p < 0.05).mean()), 4),
                }
            )
            print(rows[-1], flush=True)
    print(
        write_result_table(
            "genes_speed",
            "wm-jax genes: time against phenotypes",
            "null phenotypes on the cohort's own genotypes (LD reference = the cohort), MAF >= 1%.",
            rows,
        )
    )


if __name__ == "__main__":
    main()
