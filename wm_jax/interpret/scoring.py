"""PerDI against a simulated cohort's truth: how well each locus-finding UDIP's map matches the
planted pattern of its locus.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger("wm_jax")


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
