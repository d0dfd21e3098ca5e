"""`report.html`: one self-contained page per `wm-jax report` and per `wm-jax demo` run.

The page is rendered from a Jinja2 template (``templates/report.html.j2``, package data). Images are
embedded as base64 data URIs and the page's Content-Security-Policy allows nothing else to load
(no network, no local file read by the page itself); links to the run's files are relative, so the
page works wherever the directory is moved. The page's inline script records, on load, how many
images decoded and how many tables it holds, and any error event, in ``<html data-check=...>``:
the browser test reads it back (tests/test_report_html.py).
"""

from __future__ import annotations

import base64
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

import wm_jax
from wm_jax.brain_maps import SHOWN_QUANTILE

TEMPLATE = "report.html.j2"
MAX_ROWS = 30  # rows of a table shown in the page; the TSV it links to holds all
FAMILY_LABELS = {"udip": "UDIP", "roi": "ROI-FA", "pca": "PCA", "oracle": "oracle"}
SKIPPED_DIRECTORIES = {"jax_cache"}  # the compilation cache of a run directory: not an output


def data_uri(path: Path) -> str:
    """A PNG file as a data: URI."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}"
    return str(value)


def table(frame: pd.DataFrame | None, link: str | None = None, max_rows: int = MAX_ROWS) -> dict | None:
    """A table for the template: columns, formatted rows (the first ``max_rows``), the total row
    count and the file it comes from."""
    if frame is None:
        return None
    shown = frame.head(max_rows)
    return {
        "columns": [str(c) for c in frame.columns],
        "rows": [[cell(v) for v in row] for row in shown.itertuples(index=False)],
        "total": int(len(frame)),
        "link": link,
    }


def read_tsv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path, sep="\t") if path.is_file() else None


def file_links(directory: Path, skip: frozenset[str] = frozenset()) -> list[dict]:
    """Every file under ``directory`` (but hidden ones, the compilation cache and ``skip``), grouped
    by its top folder, as relative links with their sizes."""
    groups: dict[str, list[dict]] = {}
    for root, folders, files in os.walk(directory):
        folders[:] = sorted(f for f in folders if f not in SKIPPED_DIRECTORIES)
        for name in sorted(f for f in files if not f.startswith(".")):  # hidden: the output marker
            path = Path(root) / name
            relative = path.relative_to(directory).as_posix()
            if relative in skip:
                continue
            group = relative.split("/", 1)[0] if "/" in relative else "."
            groups.setdefault(group, []).append({"path": relative, "size": _size(path.stat().st_size)})
    return [{"name": name, "files": groups[name]} for name in sorted(groups, key=lambda g: (g != ".", g))]


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def render(context: dict) -> str:
    """The template rendered with ``context`` (autoescaped)."""
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return environment.get_template(TEMPLATE).render(**context)


def _family(name: str, label: str, directory: Path, prefix: str = "") -> dict:
    """A phenotype family's Manhattan and QQ plots, loci and replication, from a report directory
    (``prefix``: its path relative to the page)."""
    loci = read_tsv(directory / "loci.tsv")
    replication = read_tsv(directory / "replication.tsv")
    return {
        "name": name,
        "label": label,
        "prefix": prefix,
        "manhattan": data_uri(directory / "manhattan.png"),
        "qq": data_uri(directory / "qq.png"),
        "loci": table(loci, f"{prefix}loci.tsv"),
        "replication": table(replication, f"{prefix}replication.tsv") if replication is not None else None,
    }


def _summary_rows(reports: dict[str, dict]) -> list[dict]:
    """One row per figure of `wm-jax report`'s summary, one value per family."""
    rows = [
        ("variants", "n_variants"),
        ("phenotypes", "n_phenotypes"),
        ("lambda GC (median)", "lambda_median"),
        ("omnibus lambda", "omnibus_lambda"),
        ("index variants", "n_index_variants"),
        ("loci (discovery)", "n_loci"),
        ("leads replicated", "n_replicated"),
        ("lead variants", "n_leads"),
        ("planted loci", "n_planted"),
        ("planted recovered", "n_planted_recovered"),
        ("loci without a planted variant", "n_false_loci"),
    ]
    return [
        {"label": label, "values": [cell(report.get(key)) for report in reports.values()]}
        for label, key in rows
        if any(report.get(key) is not None for report in reports.values())
    ]


def gwas_report_context(directory: Path, summary: dict, architecture: dict[str, pd.DataFrame]) -> dict:
    """The page of one `wm-jax report` directory (its files already written)."""
    name = Path(summary["gwas"]).name
    context = _empty_context(f"GWAS report: {name}")
    context["lines"] = [
        f"{summary['n_variants']:,} variants x {summary['n_phenotypes']} phenotypes of the GWAS {summary['gwas']}; "
        f"genotypes {summary['genotypes']}.",
        f"Clumping: P1 {summary['clump']['p1']:g}, P2 {summary['clump']['p2']:g}, r2 {summary['clump']['r2']:g}, "
        f"{summary['clump']['kb']:g} kb.",
    ]
    context["summary"] = {"columns": [name], "rows": _summary_rows({name: summary})}
    context["families"] = [_family(name, name, directory)]
    context["architecture"] = _architecture_sections(directory, architecture) + _gene_sections(directory, summary)
    context["files"] = file_links(directory, skip=frozenset({"report.html"}))
    return context


def _architecture_sections(directory: Path, architecture: dict[str, pd.DataFrame]) -> list[dict]:
    sections = []
    if "h2" in architecture:
        frame = architecture["h2"]
        text = f"Mean h2 {frame.h2.mean():.3f} over {len(frame)} phenotypes."
        sections.append(_plot_section(directory, "SNP heritability", text, "h2.png", frame))
    if "rg" in architecture:
        frame = architecture["rg"]
        top = frame.reindex(frame.rg.abs().sort_values(ascending=False).index)
        text = f"{len(frame)} pairs; mean |rg| {frame.rg.abs().mean():.3f} (largest |rg| first)."
        sections.append(_plot_section(directory, "Genetic correlations", text, "rg.png", top))
    return sections


def _gene_sections(directory: Path, summary: dict, prefix: str = "") -> list[dict]:
    """The genes section of a report directory written with --genes (none without)."""
    if "genes" not in summary:
        return []
    from wm_jax.reporting.genes import gene_section_text, gene_tables

    image = directory / "genes_manhattan.png"
    return [
        {
            "title": "Genes and pathways",
            "text": gene_section_text(summary["genes"]),
            "image": data_uri(image) if image.is_file() else None,
            "image_link": f"{prefix}genes_manhattan.png",
            "tables": [
                {"caption": caption, "table": table(frame, f"{prefix}{name}")}
                for caption, name, frame in gene_tables(directory)
            ],
        }
    ]


def _plot_section(directory: Path, title: str, text: str, image: str, frame: pd.DataFrame) -> dict:
    """A section of a plot written beside the page (embedded when it exists) and its table."""
    return {
        "title": title,
        "text": text,
        "image": data_uri(directory / image) if (directory / image).is_file() else None,
        "image_link": image,
        "tables": [{"caption": "", "table": table(frame)}],
    }


def _empty_context(title: str) -> dict:
    return {
        "title": title,
        "lines": [],
        "verdict": None,
        "summary": None,
        "families": [],
        "perdi": None,
        "architecture": [],
        "files": [],
        "version": wm_jax.__version__,
    }


def demo_context(directory: Path, summary: dict, kinds: list[str]) -> dict:
    """The page of a `wm-jax demo` run directory: the four phenotype families side by side."""
    context = _empty_context("wm-jax demo")
    encoder = summary["encoder"]
    context["lines"] = [
        f"Run directory {summary['run_directory']} ({summary['total_seconds']:.0f} s); subjects: "
        + ", ".join(f"{k} {v}" for k, v in sorted(summary["subjects"].items()))
        + ".",
        f"Held-out reconstruction MSE: encoder {encoder['heldout_reconstruction_mse']:.5f}, "
        f"PCA of the same size {encoder['pca_heldout_reconstruction_mse']:.5f}.",
    ]
    context["verdict"] = summary["verdict"]["text"]
    reports = {
        FAMILY_LABELS.get(k, k): json.loads((directory / "report" / k / "report.json").read_text()) for k in kinds
    }
    rows = _summary_rows(reports)
    heritability = summary.get("heritability", {})
    if heritability:
        rows.append(
            {"label": "mean SNP h2 (RHE)", "values": [cell(heritability.get(k, {}).get("mean_h2")) for k in kinds]}
        )
    context["summary"] = {"columns": list(reports), "rows": rows}
    context["families"] = [_family(k, FAMILY_LABELS.get(k, k), directory / "report" / k, f"report/{k}/") for k in kinds]
    context["perdi"] = _perdi(directory / "interpret")
    context["architecture"] = _demo_heritability(directory, kinds, heritability) + _demo_genes(
        directory, kinds, summary
    )
    context["files"] = file_links(directory, skip=frozenset({"report.html"}))
    return context


def _perdi(directory: Path) -> dict | None:
    """Each UDIP's nilearn stat map and glass brain, with its top tract."""
    record_path = directory / "interpret.json"
    if not record_path.is_file():
        return None
    record = json.loads(record_path.read_text())
    maps = []
    for name, top in record.get("top_tract", {}).items():
        stat, glass = directory / "montages" / f"{name}.png", directory / "montages" / f"{name}_glass.png"
        if not stat.is_file():
            continue
        maps.append(
            {
                "name": name,
                "tract": top["tract"] if top["enrichment"] > 0 else None,
                "enrichment": cell(top["enrichment"]),
                "p": cell(top["p_perm"]),
                "stat": data_uri(stat),
                "stat_link": f"interpret/montages/{stat.name}",
                "glass": data_uri(glass) if glass.is_file() else None,
                "glass_link": f"interpret/montages/{glass.name}",
            }
        )
    overlap = pd.DataFrame(record.get("pattern_overlap", []))
    return {
        "maps": maps,
        "n_subjects": record.get("n_subjects"),
        "shown_percent": f"{100 * (1 - SHOWN_QUANTILE):g}",
        "enrichment_link": "interpret/enrichment.tsv",
        "overlap": table(overlap) if len(overlap) else None,
    }


def _demo_heritability(directory: Path, kinds: list[str], heritability: dict) -> list[dict]:
    tables = []
    for k in kinds:
        frame = read_tsv(directory / "h2" / f"{k}.h2.tsv")
        if frame is not None:
            tables.append({"caption": FAMILY_LABELS.get(k, k), "table": table(frame, f"h2/{k}.h2.tsv")})
    if not tables:
        return []
    truth = heritability.get("truth_factor_h2_on_simulated_genome", [])
    text = "SNP heritability of each phenotype by randomized Haseman-Elston (RHE), on the held-out subjects."
    if truth:
        text += " The simulated factors' SNP h2 on the simulated genome: " + ", ".join(f"{v:g}" for v in truth) + "."
    return [{"title": "SNP heritability", "text": text, "image": None, "image_link": None, "tables": tables}]


def _demo_genes(directory: Path, kinds: list[str], summary: dict) -> list[dict]:
    """Each family's gene sets (first rows) and the genes of its loci, from its report directory."""
    genes = summary.get("genes", {})
    tables = []
    for k in kinds:
        for name, caption, rows in (
            ("gene_sets.tsv", "gene sets by P", 5),
            ("loci_genes.tsv", "genes of each locus", 10),
        ):
            frame = read_tsv(directory / "report" / k / name)
            if frame is not None:
                label = f"{FAMILY_LABELS.get(k, k)}: {caption}"
                tables.append({"caption": label, "table": table(frame, f"report/{k}/{name}", max_rows=rows)})
    if not tables:
        return []
    text = "Gene tests (MAGMA's SNP-wise mean model) and competitive gene-set analysis on each discovery GWAS."
    if genes:
        ranks = ", ".join(
            f"{FAMILY_LABELS.get(k, k)} {genes[k]['planted_pathway_rank_omnibus']}/{genes[k]['n_sets']}"
            for k in kinds
            if k in genes
        )
        text += f" Rank of the planted pathway among the sets (omnibus test): {ranks}."
    text += " Each family's report.html has its gene-level Manhattan plot and top genes."
    return [{"title": "Genes and pathways", "text": text, "image": None, "image_link": None, "tables": tables}]


def write_html(path: Path, context: dict) -> None:
    path.write_text(render(context), encoding="utf-8")
