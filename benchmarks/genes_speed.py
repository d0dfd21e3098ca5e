"""`wm-jax genes` time against the number of phenotypes, on a simulated cohort's annotation.

    python benchmarks/genes_speed.py --cohort COHORT [--phenotypes 1,32,128] [--window-kb 10]
        [--ld auto|host|device|host,device] [--repeats 1] [--name genes_speed]

For each P: random normal phenotypes (as gwas_vs_plink2.py makes them), `wm-jax gwas` (compact),
then `run_genes` with the cohort's genes.tsv, gene_sets.gmt and its own genotypes as the LD
reference, once per --ld choice (where the gene LD products run: the backend's choice, or forced;
several choices alternate on the same GWAS, in turn --repeats times). Writes
benchmarks/results/NAME.md (and .json): genes tested, where the LD ran, seconds of the gene tests
(LD, eigenvalues, P of every gene x statistic), of the whole `run_genes`, the share of the null
gene P below 0.05, and the 1-minute load average after the run.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

import wm_jax.genes.ld as gene_ld

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
    parser.add_argument("--ld", default="auto", help="comma-separated: auto (the backend's choice), host, device")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--name", default="genes_speed")
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
            for repeat in range(args.repeats):
                choices = args.ld.split(",")
                for choice in choices if repeat % 2 == 0 else choices[::-1]:
                    rows.append(_timed_genes(cohort, prefix, Path(tmp) / f"genes{p}_{choice}", p, args, choice))
                    print(rows[-1], flush=True)
    print(
        write_result_table(
            args.name,
            "wm-jax genes: time against phenotypes",
            "null phenotypes on the cohort's own genotypes (LD reference = the cohort), MAF >= 1%; "
            "load: the 1-minute load average after the run (2 cores shared with other jobs).",
            rows,
        )
    )


def _timed_genes(cohort: Path, prefix: Path, out: Path, p: int, args, choice: str) -> dict:
    """`run_genes` with the gene LD where ``choice`` says; its row of the table."""
    gene_ld.LD_ON_DEVICE = {"auto": None, "host": False, "device": True}[choice]
    started = time.time()
    summary = run_genes(
        str(prefix),
        GenotypeInput("bfile", str(cohort / "genotypes")),
        str(cohort / "genes.tsv"),
        str(out),
        GeneOptions(window_kb=args.window_kb),
        gene_sets=str(cohort / "gene_sets.gmt"),
        overwrite=True,
    )
    seconds = time.time() - started
    genes = pd.read_csv(out / "genes.tsv", sep="\t")
    single = genes[genes.phenotype != "OMNIBUS"]
    return {
        "phenotypes": p,
        "gene LD": f"{summary['gene_ld']} ({choice})",
        "genes tested": summary["n_genes_tested"],
        "variants": summary["n_variants_used"],
        "gene x statistic P-values": len(genes),
        "gene tests (s)": summary["seconds_gene_tests"],
        "run_genes (s)": round(seconds, 1),
        # the share below 0.05, not a KS: a phenotype's gene P are dependent (docs/genes.md)
        "gene P < 0.05 (null)": round(float((single.p < 0.05).mean()), 4),
        "load": round(os.getloadavg()[0], 2),
    }


if __name__ == "__main__":
    main()
