"""Every score against a simulated cohort's truth (`truth.tsv`, `patterns.nii.gz`): which planted
loci a report's loci recover (by kind, single-phenotype or omnibus) and which loci hold no planted
variant; the demo's verdict on the study's claim from those scores; and how well the PerDI map of
each locus-finding UDIP matches the planted pattern of its locus. A real cohort has no truth: none
of this runs there.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from wm_jax.reporting.stats import OMNIBUS

log = logging.getLogger("wm_jax")


def score_against_truth(loci: pd.DataFrame, truth: pd.DataFrame, kb: float) -> dict:
    """Planted causal variants recovered (inside a locus span, widened by kb) and loci holding none.

    With a ``kind`` column in the truth, also the recall of each kind: by any locus, by a locus
    that some single phenotype found, and by one the omnibus test found."""
    found = {"any": set(), "single": set(), "omnibus": set()}
    holds = np.zeros(len(loci), bool)
    for k, locus in enumerate(loci.itertuples()):
        near = truth[
            (truth.chrom.astype(str) == str(locus.chrom))
            & (truth.pos >= locus.start - kb * 1000)
            & (truth.pos <= locus.end + kb * 1000)
        ]
        names = str(locus.phenotypes).split(",")
        found["any"] |= set(near.variant)
        if any(name != OMNIBUS for name in names):
            found["single"] |= set(near.variant)
        if OMNIBUS in names:
            found["omnibus"] |= set(near.variant)
        holds[k] = len(near) > 0
    scores = {
        "n_planted": int(len(truth)),
        "n_planted_recovered": len(found["any"]),
        "planted_recovered": sorted(found["any"]),
        "n_false_loci": int((~holds).sum()),
    }
    if "kind" in truth.columns:
        scores["recall_by_kind"] = {
            kind: {"planted": int(len(rows)), **{how: int(rows.variant.isin(found[how]).sum()) for how in found}}
            for kind, rows in truth.groupby("kind", sort=True)
        }
    return scores


def recall_by_kind(report: dict) -> dict:
    """Per kind of planted locus: planted, and found by any / single-phenotype / omnibus loci."""
    return report.get("recall_by_kind", {})


def verdict(reports: dict) -> dict:
    """Does the study's claim hold here: UDIPs find planted loci that tract means miss, and find
    at least half of them with no locus that holds no planted variant?"""
    udip, roi = reports["udip"], reports["roi"]
    udip_found = set(udip.get("planted_recovered", []))
    roi_found = set(roi.get("planted_recovered", []))
    missed_by_roi = sorted(udip_found - roi_found)
    half = udip.get("n_planted_recovered", 0) * 2 >= udip.get("n_planted", 0) > 0
    holds = bool(missed_by_roi) and half and udip.get("n_false_loci", 0) == 0
    text = (
        f"UDIPs recover {len(udip_found)} of {udip.get('n_planted', 0)} planted loci "
        f"({udip.get('n_false_loci', 0)} loci without a planted variant), ROI-FA {len(roi_found)}; "
        f"{len(missed_by_roi)} found by UDIPs only: the study's claim "
        + ("holds on this cohort" if holds else "does not hold on this cohort")
    )
    return {"holds": holds, "udip_only": missed_by_roi, "text": text}


def pattern_overlap(
    changes: np.ndarray,
    mask: np.ndarray,
    truth: str | os.PathLike,
    loci: str | os.PathLike,
    store,
    kb: float | None = None,
) -> list[dict]:
    """For each planted locus that a UDIP found (inside a locus span widened by kb, as the report
    scores it; by default the report's default window): the correlation, over the brain mask, of the
    |mean change| PerDI finds for that UDIP with the locus's |pattern|, and that correlation's rank
    among all UDIPs' maps."""
    from wm_jax.reporting.stats import OMNIBUS, ClumpOptions
    from wm_jax.roi import patterns_on_store_grid

    kb = ClumpOptions().kb if kb is None else kb

    truth_table = pd.read_csv(truth, sep="\t", dtype={"chrom": str})
    loci_table = pd.read_csv(loci, sep="\t", dtype={"chrom": str})
    patterns = patterns_on_store_grid(store, Path(truth).with_name("patterns.nii.gz"))
    flat_maps = np.abs(changes[:, mask])
    flat_maps = (flat_maps - flat_maps.mean(axis=1, keepdims=True)) / np.maximum(
        flat_maps.std(axis=1, keepdims=True), 1e-12
    )
    rows = []
    for k, planted in enumerate(truth_table.itertuples()):
        hits = loci_table[
            (loci_table.chrom == str(planted.chrom))
            & (loci_table.start - kb * 1000 <= planted.pos)
            & (loci_table.end + kb * 1000 >= planted.pos)
        ]
        udips = sorted(
            {name for names in hits.phenotypes for name in str(names).split(",") if name != OMNIBUS},
            key=lambda name: int(name[4:]) if name[4:].isdigit() else 0,
        )
        if not udips:
            continue
        pattern = np.abs(patterns[k][mask])
        pattern = (pattern - pattern.mean()) / max(pattern.std(), 1e-12)
        correlation = flat_maps @ pattern / pattern.size  # one value per UDIP
        order = np.argsort(-correlation)
        for name in udips:
            d = int(name[4:]) - 1
            rows.append(
                {
                    "variant": planted.variant,
                    "kind": planted.kind,
                    "udip": name,
                    "correlation": round(float(correlation[d]), 4),
                    "rank_among_udips": int(np.flatnonzero(order == d)[0]) + 1,
                    "best_udip": f"UDIP{order[0] + 1}",
                    "best_correlation": round(float(correlation[order[0]]), 4),
                }
            )
    return rows
