"""The genes sections of `wm-jax report --genes DIR` (DIR: an output of `wm-jax genes`): the genes
of each of the report's loci, the top genes of each phenotype, the gene sets by P, and the
gene-level Manhattan plot (also drawn by `wm-jax genes` itself)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from wm_jax.data.tables import read_command_table
from wm_jax.errors import input_error
from wm_jax.reporting.stats import OMNIBUS

GENE_COLUMNS = ["gene", "chrom", "start", "end", "phenotype", "n_variants", "p"]
SET_COLUMNS = ["set", "phenotype", "beta", "se", "p"]
TOP_PER_PHENOTYPE = 3  # genes listed per phenotype (the genes.tsv has them all)
DEFAULT_WINDOW_KB = 10.0  # `wm-jax genes`'s default, for an output without genes.json

# What the genes sections add to the report directory.
GENE_FILES = "loci_genes.tsv genes_by_phenotype.tsv gene_sets.tsv genes_manhattan.png"


@dataclass
class GeneResults:
    """The tables of a `wm-jax genes` output directory."""

    directory: str
    genes: pd.DataFrame  # one row per gene and phenotype (OMNIBUS last)
    sets: pd.DataFrame | None  # one row per set and phenotype
    window_kb: float


def read_gene_results(path: str) -> GeneResults:
    """genes.tsv (and gene_sets.tsv, genes.json where present) of a `wm-jax genes` directory,
    checked; one error naming the file otherwise."""
    directory = Path(path)
    if not (directory / "genes.tsv").is_file():
        raise input_error(path, "expected the output directory of `wm-jax genes` (with genes.tsv); found none")
    genes = read_command_table(
        directory / "genes.tsv", GENE_COLUMNS, {"gene": str, "chrom": str, "phenotype": str}, "genes"
    )
    sets_path = directory / "gene_sets.tsv"
    sets = (
        read_command_table(sets_path, SET_COLUMNS, {"set": str, "phenotype": str}, "genes")
        if sets_path.is_file()
        else None
    )
    window_kb = DEFAULT_WINDOW_KB
    if (directory / "genes.json").is_file():
        try:
            window_kb = float(json.loads((directory / "genes.json").read_text())["window_kb"])
        except (ValueError, KeyError, TypeError) as err:
            raise input_error(directory / "genes.json", f"expected the genes.json of `wm-jax genes` ({err!r})")
    return GeneResults(str(path), genes, sets, window_kb)


def loci_genes(loci: pd.DataFrame, genes: pd.DataFrame, window_bp: int) -> pd.DataFrame:
    """The genes overlapping each locus span +/- the window (``genes``: gene chrom start end, one
    row per gene), with the lead variant's distance to each (0 inside), nearest first."""
    rows = []
    for locus in loci.itertuples():
        on = genes[
            (genes.chrom == str(locus.chrom))
            & (genes.end >= locus.start - window_bp)
            & (genes.start <= locus.end + window_bp)
        ]
        for gene in on.itertuples():
            distance = max(gene.start - locus.lead_pos, locus.lead_pos - gene.end, 0)
            rows.append([locus.locus, locus.lead_id, locus.lead_phenotype, gene.gene, int(distance)])
    columns = ["locus", "lead_variant", "lead_phenotype", "gene", "distance"]
    return pd.DataFrame(rows, columns=columns).sort_values(["locus", "distance"], kind="stable")


def report_loci_genes(loci: pd.DataFrame, results: GeneResults) -> pd.DataFrame:
    """`loci_genes` over the tested genes, with each gene's P for the locus's lead phenotype (the
    omnibus gene P for an omnibus lead) and its smallest P over the single phenotypes."""
    genes = results.genes
    positions = genes.drop_duplicates("gene")[["gene", "chrom", "start", "end"]]
    table = loci_genes(loci, positions, int(round(results.window_kb * 1000)))
    p = genes.set_index(["gene", "phenotype"]).p
    single = genes[genes.phenotype != OMNIBUS].groupby("gene").p.min()
    table["p_lead_phenotype"] = [
        p.get((gene, phenotype), np.nan) for gene, phenotype in zip(table.gene, table.lead_phenotype, strict=True)
    ]
    table["min_p"] = single.reindex(table.gene).to_numpy()
    return table.reset_index(drop=True)


def top_genes_by_phenotype(genes: pd.DataFrame, k: int = TOP_PER_PHENOTYPE) -> pd.DataFrame:
    """The ``k`` genes of smallest P for each phenotype, phenotypes in the file's order."""
    order = {name: j for j, name in enumerate(dict.fromkeys(genes.phenotype))}
    top = genes.sort_values("p", kind="stable").groupby("phenotype", sort=False).head(k)
    top = top.sort_values("phenotype", key=lambda c: c.map(order), kind="stable")
    top.insert(1, "rank", top.groupby("phenotype").cumcount() + 1)
    columns = ["phenotype", "rank", "gene", "chrom", "start", "end", "n_variants", "p"]
    return top[columns].reset_index(drop=True)


def gene_manhattan(path: Path, genes: pd.DataFrame) -> None:
    """Gene-level Manhattan plot at each gene's midpoint from a genes.tsv table: the smallest P
    over the single phenotypes, and the omnibus test; the line at 0.05 / genes."""
    from wm_jax.reporting import plots

    lp = -np.log10(np.maximum(genes.p.to_numpy(np.float64), 1e-300))
    if "neg_log10_p" in genes:  # finite past 1e-300
        lp = genes.neg_log10_p.to_numpy(np.float64)
    frame = genes.assign(lp=lp)
    single = frame[frame.phenotype != OMNIBUS]
    names = single.phenotype.nunique()
    per_gene = single.groupby("gene", sort=False).agg(
        chrom=("chrom", "first"), start=("start", "first"), end=("end", "first"), lp=("lp", "max")
    )
    at = pd.DataFrame({"#CHROM": per_gene.chrom.to_numpy(), "POS": ((per_gene.start + per_gene.end) // 2).to_numpy()})
    panels = [(f"genes: min P over {names} phenotypes", per_gene.lp.to_numpy(), names)]
    omnibus = frame[frame.phenotype == OMNIBUS].set_index("gene").lp
    if len(omnibus):
        panels.append(("genes: omnibus test", omnibus.reindex(per_gene.index).to_numpy(), 1))
    plots.manhattan(path, at, panels, threshold=0.05 / max(1, len(per_gene)))


def write_gene_section(tmp: Path, results: GeneResults, loci: pd.DataFrame) -> dict:
    """The genes files of the report into ``tmp``; returns the figures for report.json (the
    tables themselves are read back from the files for report.md and report.html)."""
    genes = results.genes
    n_genes = genes.gene.nunique()
    threshold = 0.05 / max(1, n_genes)
    report_loci_genes(loci, results).to_csv(tmp / "loci_genes.tsv", sep="\t", index=False, float_format="%.4g")
    top_genes_by_phenotype(genes).to_csv(tmp / "genes_by_phenotype.tsv", sep="\t", index=False, float_format="%.4g")
    gene_manhattan(tmp / "genes_manhattan.png", genes)
    best = genes.loc[genes.p.idxmin()]
    figures = {
        "directory": results.directory,
        "window_kb": results.window_kb,
        "n_genes_tested": int(n_genes),
        "bonferroni_p": threshold,
        "n_significant": int((genes.p <= threshold).sum()),
        "top_gene": {"gene": best.gene, "phenotype": best.phenotype, "p": float(best.p)},
    }
    if results.sets is not None:
        sets = results.sets.sort_values("p", kind="stable")
        sets.to_csv(tmp / "gene_sets.tsv", sep="\t", index=False, float_format="%.6g")
        first = sets.iloc[0]
        figures["n_sets"] = int(sets.set.nunique())
        figures["top_set"] = {"set": first.set, "phenotype": first.phenotype, "p": float(first.p)}
    return figures


def gene_section_text(figures: dict) -> str:
    """The one-line summary of the genes sections (report.md and report.html)."""
    top = figures["top_gene"]
    text = (
        f"{figures['n_genes_tested']:,} genes tested in {figures['directory']} (variants within "
        f"{figures['window_kb']:g} kb); {figures['n_significant']} gene-phenotype pairs at P <= 0.05 / genes "
        f"({figures['bonferroni_p']:.3g}); smallest P {top['p']:.3g} ({top['gene']}, {top['phenotype']})."
    )
    if "top_set" in figures:
        first = figures["top_set"]
        text += f" Gene sets: {figures['n_sets']}; smallest P {first['p']:.3g} ({first['set']}, {first['phenotype']})."
    return text


def gene_tables(directory: Path) -> list[tuple[str, str, pd.DataFrame]]:
    """(caption, file, table) of the genes sections, read from the report directory."""
    out = []
    for caption, name in (
        ("Genes of each locus (tested genes within the locus span +/- the window)", "loci_genes.tsv"),
        (f"Top {TOP_PER_PHENOTYPE} genes of each phenotype", "genes_by_phenotype.tsv"),
        ("Gene sets, by P", "gene_sets.tsv"),
    ):
        if (directory / name).is_file():
            out.append((caption, name, pd.read_csv(directory / name, sep="\t")))
    return out
