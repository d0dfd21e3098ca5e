"""`wm-jax report`: lambda GC, clumped loci merged across phenotypes (and the multivariate test),
Manhattan and QQ plots, replication, truth scoring, one Markdown page, a JSON summary and one
self-contained HTML page (report.html, `wm_jax.reporting.html`)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from wm_jax.data.genotypes import open_genotypes
from wm_jax.data.source import GenotypeInput
from wm_jax.data.tables import read_command_table
from wm_jax.errors import input_error, require_file
from wm_jax.gwas.pvalues import chi2_neg_log10_sf
from wm_jax.gwas.results import load_result_column
from wm_jax.publish import Output, atomic_dir, check_output_dir
from wm_jax.reporting import html, plots
from wm_jax.reporting.genes import GENE_FILES, gene_section_text, gene_tables, read_gene_results, write_gene_section
from wm_jax.reporting.stats import (
    OMNIBUS,
    ClumpOptions,
    clump,
    genomic_control,
    merge_loci,
    replication,
)
from wm_jax.truth import score_against_truth

log = logging.getLogger("wm_jax")

MARKDOWN_SET_ROWS = 20  # gene-set rows in report.md

# What `wm-jax report` writes into its directory.
REPORT = Output(
    "report",
    "loci.tsv lambda.tsv replication.tsv manhattan.png qq.png report.json report.md h2.png rg.png report.html "
    + GENE_FILES,
)


class GwasResult:
    """A `wm-jax gwas` compact output (PREFIX.gwas/), memory-mapped."""

    def __init__(self, prefix: str | os.PathLike) -> None:
        self.prefix = Path(prefix)
        directory = Path(f"{prefix}.gwas")
        if not (directory / "meta.json").is_file():
            raise input_error(directory, "not a `wm-jax gwas` output (expected meta.json, variants.tsv, *.npy)")
        self.meta = _read_meta(directory / "meta.json")
        self.variants = _read_variants(directory / "variants.tsv")
        self.phenotypes: list[str] = list(self.meta["phenotypes"])
        shape = (len(self.phenotypes), len(self.variants))
        self.beta = load_result_column(directory / "beta.npy", shape)
        self.log10_p = load_result_column(directory / "log10_p.npy", shape)
        # the multivariate test across every phenotype (one statistic per variant)
        omnibus = np.asarray(load_result_column(directory / "omnibus_chi2.npy", (len(self.variants),)))
        self.omnibus_df = len(self.meta["phenotypes"])
        self.omnibus_log10_p = chi2_neg_log10_sf(omnibus.astype(np.float64), self.omnibus_df)

    def phenotype_index(self, name: str) -> int:
        return self.phenotypes.index(name)

    def series(self, name: str) -> np.ndarray:
        return (
            self.omnibus_log10_p
            if name == OMNIBUS
            else np.asarray(self.log10_p[self.phenotype_index(name)], np.float64)
        )


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise input_error(path, f"expected the JSON record of a `wm-jax gwas` run ({type(err).__name__}: {err})")
    if not isinstance(meta, dict) or meta.get("format_version") != 2:
        version = meta.get("format_version") if isinstance(meta, dict) else None
        raise input_error(
            path, f"format version {version}, expected 2 (written by an older wm-jax gwas, or damaged: rerun it)"
        )
    names = meta.get("phenotypes")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise input_error(path, "expected a non-empty list of phenotype names under 'phenotypes'")
    return meta


def _read_variants(path: Path) -> pd.DataFrame:
    try:
        variants = pd.read_csv(path, sep="\t", dtype={"#CHROM": str, "ID": str})
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise input_error(path, f"expected the variant table of a `wm-jax gwas` run ({type(err).__name__})")
    expected = ["#CHROM", "POS", "ID", "REF", "ALT", "A1"]
    if list(variants.columns[:6]) != expected or variants[expected].isna().any().any():
        raise input_error(path, f"expected columns {' '.join(expected)} filled on every row")
    return variants


def _read_truth(path: str) -> pd.DataFrame:
    from wm_jax.data.tables import text_lines

    require_file(path, "truth table")
    text_lines(Path(path))  # UTF-8 throughout
    try:
        truth = pd.read_csv(path, sep="\t", dtype={"chrom": str, "variant": str})
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise input_error(path, f"expected a tab-separated truth table ({type(err).__name__})")
    needed = ["variant", "chrom", "pos"]
    if any(c not in truth.columns for c in needed) or truth[needed].isna().any().any():
        raise input_error(path, "expected columns variant, chrom and pos (the planted causal variants) on every row")
    if not pd.api.types.is_integer_dtype(truth["pos"]):
        raise input_error(path, "column pos: expected integer base-pair positions")
    return truth


def _variant_rows(result: GwasResult, data) -> np.ndarray:
    """For each GWAS variant, its row in the genotype source's variants (an error when the variant
    sets differ)."""
    row = pd.Series(np.arange(len(data.variants)), index=data.variants.id.to_numpy())
    row = row[~row.index.duplicated()]
    missing = ~result.variants["ID"].isin(row.index)
    if missing.any():
        raise input_error(
            data.variants_path,
            f"{int(missing.sum())} of the GWAS's {len(missing)} variants (e.g. "
            f"{result.variants['ID'][missing].iloc[0]}) are not in it: the GWAS ran on another variant set",
        )
    return row[result.variants["ID"]].to_numpy()


def build_report(
    gwas: str,
    genotypes: GenotypeInput | str,
    out: str,
    replication_gwas: str | None = None,
    truth: str | None = None,
    options: ClumpOptions = ClumpOptions(),
    overwrite: bool = False,
    h2: str | None = None,
    rg: str | None = None,
    genes: str | None = None,
) -> dict:
    """Write the report directory; returns the summary also written to report.json. ``genotypes``
    (--bfile, --pfile or --bgen; a str is a --bfile prefix) give the LD for clumping. ``h2`` and
    ``rg`` (tables of `wm-jax h2` and `wm-jax rg`) add the heritability and genetic-correlation
    sections; ``genes`` (an output directory of `wm-jax genes`) the genes of each locus, the top
    genes of each phenotype, the gene sets and the gene-level Manhattan plot."""
    check_output_dir(out, REPORT, overwrite)
    architecture = _read_architecture(h2, rg)
    gene_results = read_gene_results(genes) if genes is not None else None
    if not isinstance(genotypes, GenotypeInput):
        genotypes = GenotypeInput("bfile", str(genotypes))
    result = GwasResult(gwas)
    data = open_genotypes(genotypes)
    rows = _variant_rows(result, data)
    rep = _open_replication(replication_gwas, result, gwas) if replication_gwas is not None else None
    truth_table = _read_truth(truth) if truth is not None else None

    lambdas = {name: genomic_control(result.log10_p[j]) for j, name in enumerate(result.phenotypes)}
    omnibus_lambda = genomic_control(result.omnibus_log10_p, df=result.omnibus_df)
    n_index, loci = _clumped_loci(result, data, rows, options)
    replication_table = _replicate(loci, result, rep) if rep is not None else None
    scoring = score_against_truth(loci, truth_table, options.kb) if truth_table is not None else None
    lambda_values = np.array(list(lambdas.values()))
    summary = {
        "gwas": str(gwas),
        "bfile": genotypes.path if genotypes.kind == "bfile" else None,
        "genotypes": genotypes.describe(),
        "replication": replication_gwas,
        "clump": asdict(options),
        "n_variants": int(len(result.variants)),
        "n_phenotypes": len(result.phenotypes),
        "lambda_median": float(np.median(lambda_values)),
        "lambda_min": float(lambda_values.min()),
        "lambda_max": float(lambda_values.max()),
        "omnibus_lambda": omnibus_lambda,
        "omnibus_df": result.omnibus_df,
        "lambda": lambdas,
        "n_index_variants": int(n_index),
        "n_loci": int(len(loci)),
        "n_leads": None if replication_table is None else int(len(replication_table)),
        "n_replicated": None if replication_table is None else int(replication_table.replicated.sum()),
    }
    if scoring is not None:
        summary.update(scoring)
    if "h2" in architecture:
        table = architecture["h2"]
        summary["h2"] = {
            "file": h2,
            "mean": float(table.h2.mean()),
            "by_phenotype": dict(zip(table.phenotype, table.h2.astype(float), strict=True)),
        }
    if "rg" in architecture:
        summary["rg"] = {
            "file": rg,
            "pairs": int(len(architecture["rg"])),
            "mean_abs": float(architecture["rg"].rg.abs().mean()),
        }
    with atomic_dir(out, REPORT, overwrite=overwrite) as tmp:
        if gene_results is not None:
            summary["genes"] = write_gene_section(tmp, gene_results, loci)
        _write_report(tmp, result, summary, loci, replication_table)
        _write_architecture(tmp, architecture)
        if gene_results is not None:
            _append_gene_markdown(tmp, summary["genes"])
        html.write_html(tmp / "report.html", html.gwas_report_context(tmp, summary, architecture))
    log.info("report: %d loci, lambda median %.3f -> %s", len(loci), summary["lambda_median"], out)
    return summary


def _read_architecture(h2: str | None, rg: str | None) -> dict[str, pd.DataFrame]:
    """The tables of `wm-jax h2` (phenotype h2 se) and `wm-jax rg` (p1 p2 rg se), checked."""
    tables = {}
    for key, path, columns in (("h2", h2, ["phenotype", "h2", "se"]), ("rg", rg, ["p1", "p2", "rg", "se"])):
        if path is None:
            continue
        require_file(path, f"--{key} table")
        names = {c: str for c in columns if c in ("phenotype", "p1", "p2")}
        tables[key] = read_command_table(path, columns, names, key)
    return tables


def _write_architecture(tmp: Path, tables: dict[str, pd.DataFrame]) -> None:
    """h2.png / rg.png and their sections appended to report.md."""
    lines = []
    if "h2" in tables:
        table = tables["h2"]
        plots.heritability(tmp / "h2.png", table)
        summary = f"Mean h2 {table.h2.mean():.3f} over {len(table)} phenotypes."
        shown = table[[c for c in ("phenotype", "h2", "se", "intercept", "intercept_se", "n") if c in table]]
        lines += _section("SNP heritability", summary, "h2.png", shown)
    if "rg" in tables:
        table = tables["rg"]
        plots.genetic_correlations(tmp / "rg.png", table)
        summary = f"{len(table)} pairs; mean |rg| {table.rg.abs().mean():.3f}."
        top = table.reindex(table.rg.abs().sort_values(ascending=False).index).head(30)
        lines += _section(
            "Genetic correlations", summary, "rg.png", top[[c for c in ("p1", "p2", "rg", "se", "p") if c in top]]
        )
    if lines:
        with open(tmp / "report.md", "a") as handle:
            handle.write("\n".join(lines) + "\n")


def _append_gene_markdown(tmp: Path, figures: dict) -> None:
    """The genes sections of report.md: the summary line, the gene-level Manhattan plot and the
    tables (the gene sets' first MARKDOWN_SET_ROWS rows; gene_sets.tsv has them all)."""
    lines = ["", "## Genes and pathways", "", gene_section_text(figures), "", "![genes](genes_manhattan.png)"]
    for caption, name, frame in gene_tables(tmp):
        shown = frame.head(MARKDOWN_SET_ROWS) if name == "gene_sets.tsv" else frame
        lines += ["", f"### {caption}", "", *(_table(shown) if len(shown) else ["(none)"]), "", f"File: `{name}`."]
    with open(tmp / "report.md", "a") as handle:
        handle.write("\n".join(lines) + "\n")


def _section(title: str, summary: str, image: str, table: pd.DataFrame) -> list[str]:
    """A report.md section: heading, one line, the plot and a table."""
    return ["", f"## {title}", "", summary, "", f"![{Path(image).stem}]({image})", "", *_table(table)]


def _open_replication(replication_gwas: str, result: GwasResult, gwas: str) -> GwasResult:
    """The replication GWAS, which must share variants and phenotypes with the discovery GWAS."""
    rep = GwasResult(replication_gwas)
    shared = set(rep.variants["ID"]) & set(result.variants["ID"])
    if not shared:
        raise input_error(f"{replication_gwas}.gwas", f"no variant in common with the discovery GWAS {gwas}")
    if not set(rep.phenotypes) & set(result.phenotypes):
        raise input_error(f"{replication_gwas}.gwas", f"no phenotype in common with the discovery GWAS {gwas}")
    log.info(
        "report: replication GWAS shares %d of %d variants and %d of %d phenotypes",
        len(shared),
        len(result.variants),
        len(set(rep.phenotypes) & set(result.phenotypes)),
        len(result.phenotypes),
    )
    return rep


def _clumped_loci(result: GwasResult, data, rows: np.ndarray, options: ClumpOptions) -> tuple[int, pd.DataFrame]:
    """The number of index variants over every phenotype and the omnibus test, and their loci."""

    def dosages(indices):
        return data.dosages(rows[np.asarray(indices)]).astype(np.float64)

    clumps = {}
    names = [*result.phenotypes, OMNIBUS]
    for name in tqdm(names, desc="clump", unit="pheno", mininterval=1.0):
        clumps[name] = clump(result.variants, result.series(name), dosages, options)
    n_index = sum(len(c) for c in clumps.values())
    loci = merge_loci(clumps, result.variants, options.kb)
    log.info(
        "report: %d index variants at P <= %g over %d phenotypes + the omnibus test -> %d loci",
        n_index,
        options.p1,
        len(result.phenotypes),
        len(loci),
    )
    return n_index, loci


def _replicate(loci: pd.DataFrame, result: GwasResult, rep: GwasResult) -> pd.DataFrame:
    """Each locus lead looked up in the replication GWAS."""
    leads = pd.DataFrame(
        {
            "phenotype": loci.lead_phenotype,
            "index": [int(np.flatnonzero(result.variants["ID"].to_numpy() == v)[0]) for v in loci.lead_id],
        }
    )
    # per-phenotype leads first, then those of the omnibus test
    leads = leads.sort_values("phenotype", key=lambda name: name == OMNIBUS, kind="stable")
    replication_table = replication(leads, result, rep)
    log.info(
        "report: %d of %d lead variants replicate (P <= 0.05/%d, same sign)",
        int(replication_table.replicated.sum()),
        len(replication_table),
        max(1, len(leads)),
    )
    return replication_table


def _write_report(
    tmp: Path, result: GwasResult, summary: dict, loci: pd.DataFrame, replication_table: pd.DataFrame | None
) -> None:
    """The tables, the plots, report.json and report.md into the report directory ``tmp``."""
    lambdas = summary["lambda"]
    loci.to_csv(tmp / "loci.tsv", sep="\t", index=False, float_format="%.4g")
    pd.DataFrame({"phenotype": list(lambdas), "lambda_gc": list(lambdas.values())}).to_csv(
        tmp / "lambda.tsv", sep="\t", index=False, float_format="%.5g"
    )
    if replication_table is not None:
        replication_table.to_csv(tmp / "replication.tsv", sep="\t", index=False, float_format="%.5g")
    min_lp = np.fmax.reduce(np.asarray(result.log10_p, np.float64), axis=0)  # NaN only where all are
    plots.manhattan(
        tmp / "manhattan.png",
        result.variants,
        [
            (f"min P over {len(result.phenotypes)} phenotypes", min_lp, len(result.phenotypes)),
            (f"multivariate omnibus test ({result.omnibus_df} df)", result.omnibus_log10_p, 1),
        ],
    )
    pooled = np.asarray(result.log10_p, np.float64).ravel()
    plots.qq(
        tmp / "qq.png",
        [
            (f"all {len(result.phenotypes)} phenotypes", pooled, summary["lambda_median"]),
            ("omnibus", result.omnibus_log10_p, summary["omnibus_lambda"]),
        ],
    )
    (tmp / "report.json").write_text(json.dumps(summary, indent=2, default=float))
    (tmp / "report.md").write_text(_markdown(summary, loci, replication_table))


def _markdown(summary: dict, loci: pd.DataFrame, replication_table: pd.DataFrame | None) -> str:
    lines = [
        f"# GWAS report: {summary['gwas']}",
        "",
        f"{summary['n_variants']:,} variants x {summary['n_phenotypes']} phenotypes; genomic control lambda "
        f"median {summary['lambda_median']:.3f} (range {summary['lambda_min']:.3f}-{summary['lambda_max']:.3f}), "
        f"omnibus ({summary['omnibus_df']} df) {summary['omnibus_lambda']:.3f}.",
        "",
        f"Clumping (P1 {summary['clump']['p1']:g}, P2 {summary['clump']['p2']:g}, r2 {summary['clump']['r2']:g}, "
        f"{summary['clump']['kb']:g} kb): {summary['n_index_variants']} index variants, "
        f"**{summary['n_loci']} loci** after merging across phenotypes.",
        "",
        "![Manhattan](manhattan.png)",
        "",
        "![QQ](qq.png)",
        "",
        "## Loci",
        "",
    ]
    lines += _table(loci) if len(loci) else ["(none)"]
    if replication_table is not None:
        lines += [
            "",
            "## Replication",
            "",
            f"{summary['n_replicated']} of {summary['n_leads']} lead variants replicate "
            f"(P <= 0.05 / {summary['n_leads']}, same sign).",
            "",
        ]
        lines += _table(replication_table) if len(replication_table) else ["(no leads)"]
    if "n_planted" in summary:
        lines += [
            "",
            "## Against the simulation's truth",
            "",
            f"{summary['n_planted_recovered']} of {summary['n_planted']} planted causal variants lie in a locus; "
            f"{summary['n_false_loci']} loci hold no planted variant.",
        ]
    lines += ["", "Files: `loci.tsv`, `lambda.tsv`, `replication.tsv`, `report.json`."]
    return "\n".join(lines) + "\n"


def _table(frame: pd.DataFrame) -> list[str]:
    def cell(v):
        return f"{v:.4g}" if isinstance(v, (float, np.floating)) else str(v)

    return ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)] + [
        "| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)
    ]
