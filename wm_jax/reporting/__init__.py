"""The loci report (`wm-jax report`): genomic control, clumping, plots, replication, truth scoring.

Names are imported on first use, so that `wm-jax <any command>` does not pay for SciPy's stats
and the plotting stack when it registers the `report` subcommand.
"""

import importlib

_WHERE = {
    "GwasResult": "wm_jax.reporting.build",
    "build_report": "wm_jax.reporting.build",
    "ClumpOptions": "wm_jax.reporting.stats",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
