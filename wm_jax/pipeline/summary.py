"""The summary of a `wm-jax demo` run: the recall of the planted loci by each phenotype set, the
verdict on the study's claim, `summary.json`'s table as printed, and `report.html`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from wm_jax.pipeline.stages import PHENOTYPE_SETS
from wm_jax.publish import atomic_path
from wm_jax.truth import recall_by_kind, verdict

log = logging.getLogger("wm_jax")


def write_report_html(d: Path, summary: dict) -> None:
    """DIR/report.html: the phenotype families side by side, the PerDI maps, heritability, links."""
    from wm_jax.reporting import html

    with atomic_path(d / "report.html") as tmp:
        html.write_html(tmp, html.demo_context(d, summary, list(PHENOTYPE_SETS)))
    log.info("demo: report.html written")


def make_summary(d: Path, record: dict) -> dict:
    """The headline figures of a finished run, from the stages' results."""
    reports = record["report"]["result"]
    metrics = [json.loads(line) for line in (d / "encoder" / "metrics.jsonl").read_text().splitlines() if line.strip()]
    interpret = record["interpret"]["result"]
    keys = (
        "n_phenotypes",
        "lambda_median",
        "lambda_min",
        "lambda_max",
        "omnibus_lambda",
        "n_loci",
        "n_leads",
        "n_replicated",
        "n_planted",
        "n_planted_recovered",
        "n_false_loci",
    )
    comparison = {
        kind: {key: rep.get(key) for key in keys} | {"recall_by_kind": recall_by_kind(rep)}
        for kind, rep in reports.items()
    }
    return {
        "run_directory": str(d.resolve()),
        "seconds": {name: stage["seconds"] for name, stage in record.items()},
        "total_seconds": round(sum(stage["seconds"] for stage in record.values()), 1),
        "subjects": record["split"]["result"],
        "encoder": {
            "validation_loss": [m["val_loss"] for m in metrics if "val_loss" in m],
            "validation_steps": [m["step"] for m in metrics if "val_loss" in m],
            # the checkpoint the UDIPs came from: the best by validation loss (step 0 is the PCA start)
            "checkpoint_step": json.loads((d / "udip.tsv.manifest.json").read_text())["checkpoint_step"],
            "train": record["train"]["result"],
            "heldout_reconstruction_mse": record["embed"]["result"].get("heldout_reconstruction_mse"),
            "pca_heldout_reconstruction_mse": record["baselines"]["result"].get("pca_heldout_reconstruction_mse"),
        },
        "udip_vs_roi_fa": comparison,
        "recall_by_kind": {kind: recall_by_kind(rep) for kind, rep in reports.items()},
        "verdict": verdict(reports),
        "perdi_top_tract": interpret.get("top_tract", {}),
        "perdi_pattern_overlap": interpret.get("pattern_overlap", []),
        "genes": record["genes"]["result"] if "genes" in record else {},
        "heritability": record["heritability"]["result"] if "heritability" in record else {},
        "files": {
            "udip_report": "report/udip/report.md",
            "roi_report": "report/roi/report.md",
            "perdi_maps": "interpret/perdi_abs_t.nii.gz",
            "perdi_enrichment": "interpret/enrichment.tsv",
            "udip_gene_sets": "genes/udip/gene_sets.tsv",
            "manifest": "manifest.json",
            "report_html": "report.html",
        },
    }


def print_summary(summary: dict) -> str:
    """The end-of-run text: timing, the encoder against PCA, UDIPs against the baselines, the verdict."""
    enc = summary["encoder"]
    lines = [
        f"wm-jax demo: {summary['run_directory']} ({summary['total_seconds']:.0f} s)",
        "  subjects: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["subjects"].items())),
        "  validation loss at steps "
        + ", ".join(str(step) for step in enc.get("validation_steps", []))
        + ": "
        + ", ".join(f"{v:.4f}" for v in enc["validation_loss"]),
        "  encoder used: checkpoint step "
        + str(enc.get("checkpoint_step"))
        + (" (the PCA start: training did not improve on it)" if enc.get("checkpoint_step") == 0 else " (trained)")
        + (
            f"; training stopped early at step {enc['train']['step']}"
            if enc.get("train", {}).get("stopped_early")
            else ""
        ),
        f"  held-out reconstruction MSE: encoder {enc['heldout_reconstruction_mse']:.5f}, "
        f"PCA (same size, fit on the training store) {enc['pca_heldout_reconstruction_mse']:.5f}",
    ]
    kinds = list(summary["udip_vs_roi_fa"])
    rows = [
        ("phenotypes", "n_phenotypes"),
        ("lambda GC (median)", "lambda_median"),
        ("omnibus lambda", "omnibus_lambda"),
        ("loci (discovery)", "n_loci"),
        ("leads replicated", "n_replicated"),
        ("planted loci", "n_planted"),
        ("planted recovered", "n_planted_recovered"),
        ("loci without a planted variant", "n_false_loci"),
    ]
    cmp = summary["udip_vs_roi_fa"]
    lines.append("  " + f"{'':32s}" + "".join(f"{k:>9s}" for k in kinds))
    for label, key in rows:
        values = [cmp[kind].get(key) for kind in kinds]
        lines.append(
            "  "
            + f"{label:32s}"
            + "".join(f"{('-' if v is None else f'{v:.3f}' if isinstance(v, float) else str(v)):>9s}" for v in values)
        )
    loci_kinds = sorted({k for kind in kinds for k in cmp[kind]["recall_by_kind"]})
    for locus_kind in loci_kinds:
        cells = []
        for kind in kinds:
            r = cmp[kind]["recall_by_kind"].get(locus_kind, {})
            cells.append(f"{r.get('any', 0)}/{r.get('planted', 0)}")
        lines.append("  " + f"{'recall, ' + locus_kind + ' loci':32s}" + "".join(f"{c:>9s}" for c in cells))
    for row in summary.get("perdi_pattern_overlap", []):
        lines.append(
            f"  PerDI of {row['udip']} (found {row['variant']}, {row['kind']}): correlation with the planted "
            f"pattern {row['correlation']:.2f}, rank {row['rank_among_udips']} of the UDIPs"
        )
    genes = summary.get("genes", {})
    if genes:
        cells = [
            f"{genes[k]['planted_pathway_rank_omnibus']}/{genes[k]['n_sets']}" if k in genes else "-" for k in kinds
        ]
        lines.append("  " + f"{'planted pathway rank (omnibus)':32s}" + "".join(f"{c:>9s}" for c in cells))
    h2 = summary.get("heritability", {})
    if h2:
        cells = [f"{h2[k]['mean_h2']:.3f}" if k in h2 else "-" for k in kinds]
        lines.append("  " + f"{'mean SNP h2 (RHE, held out)':32s}" + "".join(f"{c:>9s}" for c in cells))
        truth = ", ".join(f"{v:g}" for v in h2.get("truth_factor_h2_on_simulated_genome", []))
        lines.append(f"  (the simulated factors' SNP h2 on the simulated genome: {truth})")
    lines.append("  verdict: " + summary["verdict"]["text"])
    lines.append("  reports: " + ", ".join(f"report/{k}/report.md" for k in kinds))
    lines.append("  summary: summary.json, manifest: manifest.json, page: report.html")
    return "\n".join(lines)
