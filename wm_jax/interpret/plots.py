"""The PerDI figures' titles: each UDIP's top tract, or that it has none."""

from __future__ import annotations

import logging

import pandas as pd

log = logging.getLogger("wm_jax")

NO_TRACT = "its top voxels lie in no atlas tract"


def titles(enrichment: pd.DataFrame, n_maps: int) -> list[str]:
    """Each UDIP's figure title: the atlas tract its top voxels enrich most, with the enrichment; or,
    when none of its top voxels lies in a tract (every enrichment 0), that, naming no tract."""
    titles = []
    for d in range(n_maps):
        best = enrichment[(enrichment.dimension == d + 1) & (enrichment["rank"] == 1)].iloc[0]
        if best.n_top == 0:
            titles.append(f"UDIP{d + 1}: {NO_TRACT}")
        else:
            titles.append(
                f"UDIP{d + 1}: top tract {best.tract} (enrichment x{best.enrichment:.1f}, p={best.p_perm:.2g})"
            )
    return titles
