"""Where the planted pathway ranks among the simulated gene sets, on `wm-jax demo` runs of several
seeds, with the simulator's annotation as this code makes it.

    python benchmarks/genes_planted_rank.py --runs DIR[,DIR...] [--name genes_planted_rank] [--mean-gap-kb KB]

For each run directory (a finished `wm-jax demo --out DIR [--config.seed=S --config.sim.seed=S]`):
`wm-jax simulate` again with the run's configuration (its cohort/simulation.json) into a temporary
directory, which checks that every file but genes.tsv and gene_sets.gmt (and the output record's
time) is byte for byte the run's; then `run_genes` as the demo's genes stage runs it (window 10
kb, the run's genotypes as the LD reference) on each phenotype set's discovery GWAS of the run,
with the new genes.tsv and gene_sets.gmt. Per set: the planted pathway's rank among the sets for
the omnibus test (its P) and its best rank over the single phenotypes, as the demo's summary
reports them, beside the run's own (the annotation it was made with). --mean-gap-kb: the mean gap
between genes instead of the annotation's MEAN_GAP_BP (how much the result hangs on it). Writes
benchmarks/results/NAME.md (and .json).
"""

from __future__ import annotations

import argparse
import filecmp
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import ml_collections
import pandas as pd

import wm_jax.simulate.annotation as annotation

sys.path.insert(0, str(Path(__file__).resolve().parent))
from wm_jax.data.source import GenotypeInput
from wm_jax.genes.run import run_genes
from wm_jax.pipeline.stages import PHENOTYPE_SETS
from wm_jax.simulate.annotation import PLANTED_SET
from wm_jax.simulate.cohort import simulate_cohort
from wm_jax.stage_options import GeneOptions

from gwas_vs_plink2 import write_result_table

ANNOTATION = {"genes.tsv", "gene_sets.gmt"}
RECORD = ".wm-jax-output.json"  # the output record: its time of writing differs


def resimulated_cohort(run: Path, out: Path) -> tuple[dict, list[str]]:
    """The run's cohort simulated again into ``out``: its configuration, and the files other than
    the annotation that differ from the run's (none expected)."""
    config = json.loads((run / "cohort" / "simulation.json").read_text())["config"]
    simulate_cohort(ml_collections.ConfigDict(config), out)
    theirs = {p.relative_to(run / "cohort") for p in (run / "cohort").rglob("*") if p.is_file()}
    ours = {p.relative_to(out) for p in out.rglob("*") if p.is_file()}
    differ = sorted(str(p) for p in theirs ^ ours)
    differ += sorted(
        str(p)
        for p in theirs & ours
        if str(p) not in ANNOTATION | {RECORD} and not filecmp.cmp(run / "cohort" / p, out / p, shallow=False)
    )
    return config, differ


def planted_ranks(gene_sets: Path) -> tuple[int, float, int]:
    """From a gene_sets.tsv: the planted pathway's omnibus rank, its omnibus P, its best single rank."""
    table = pd.read_csv(gene_sets, sep="\t")
    ranks = table.groupby("phenotype").set.agg(lambda names: list(names).index(PLANTED_SET) + 1)
    omnibus = table[table.phenotype == "OMNIBUS"]
    return int(ranks["OMNIBUS"]), float(omnibus.p[omnibus.set == PLANTED_SET].iloc[0]), int(ranks.drop("OMNIBUS").min())


def run_row(run: Path) -> dict:
    before = json.loads((run / "summary.json").read_text())["genes"]
    with tempfile.TemporaryDirectory() as tmp:
        cohort = Path(tmp) / "cohort"
        config, differ = resimulated_cohort(run, cohort)
        n_sets = sum(1 for _ in open(cohort / "gene_sets.gmt"))
        pathway = len(open(cohort / "gene_sets.gmt").readline().rstrip("\n").split("\t")) - 2
        row = {"run": run.name, "sim seed": config["seed"], "other files differing": ", ".join(differ) or "none"}
        for kind in PHENOTYPE_SETS:
            summary = run_genes(
                str(run / "gwas" / f"{kind}_discovery"),
                GenotypeInput("bfile", str(run / "cohort" / "genotypes")),
                str(cohort / "genes.tsv"),
                str(Path(tmp) / kind),
                GeneOptions(),
                gene_sets=str(cohort / "gene_sets.gmt"),
            )
            rank, p, single = planted_ranks(Path(tmp) / kind / "gene_sets.tsv")
            row[f"{kind}: rank (P), best single"] = f"{rank}/{n_sets} ({p:.2g}), {single}"
            row[f"{kind}: before"] = (
                f"{before[kind]['planted_pathway_rank_omnibus']}, {before[kind]['planted_pathway_best_rank_single']}"
            )
        row["genes tested (before)"] = f"{summary['n_genes_tested']} ({before['udip']['n_genes_tested']})"
        row["pathway genes"] = pathway
    row["load"] = round(os.getloadavg()[0], 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, help="comma-separated `wm-jax demo` output directories")
    parser.add_argument("--name", default="genes_planted_rank")
    parser.add_argument("--mean-gap-kb", type=float, help="the mean gap between genes (default: the annotation's)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.mean_gap_kb is not None:
        annotation.MEAN_GAP_BP = int(round(args.mean_gap_kb * 1000))
    rows = []
    for run in args.runs.split(","):
        rows.append(run_row(Path(run)))
        print(rows[-1], flush=True)
    print(
        write_result_table(
            args.name,
            "wm-jax genes: the planted pathway's rank on demo runs of several seeds",
            "each run's cohort simulated again with this code (other files differing: those not byte for "
            "byte the run's, the annotation aside), `run_genes` on the run's discovery GWAS of each set with "
            f"the new annotation (mean gap between genes {annotation.MEAN_GAP_BP / 1000:g} kb). Rank (P): "
            "the planted pathway's rank among the sets for the omnibus test "
            "and its P; best single: its best rank over the single phenotypes; before: the same two from the "
            "run's summary.json (the annotation it was made with). Load: the 1-minute load average after the "
            "run's rows (2 cores shared with other jobs).",
            rows,
        )
    )


if __name__ == "__main__":
    main()
