"""The loci report (`wm-jax report`): genomic control, clumping, plots, replication, truth scoring."""

from wm_jax.reporting.build import GwasResult, build_report
from wm_jax.reporting.stats import ClumpOptions

__all__ = ["ClumpOptions", "GwasResult", "build_report"]
