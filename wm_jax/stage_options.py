"""The options of the stages that have a subcommand, one dataclass each, the one place their defaults
and ranges are written: a field's range is declared on it (`wm_jax.options.ranged`), and the same
declaration is the flag's argparse type (`wm_jax.options.flag_type`) and the check of its
`--config.SECTION.KEY=VALUE` (`wm_jax.config.section_rules`). This module imports no JAX (config
files read the defaults from it).
"""

from __future__ import annotations

from dataclasses import dataclass

from wm_jax.errors import InputError
from wm_jax.options import Range, ranged

SEED_MAX = 2**32 - 1
SEED = Range("integer", 0, SEED_MAX)  # every seed: numpy, JAX and msprime (`chromosome_seed`) take this range
# `wm-jax simulate`'s settings are a config (configs/sim.py); these two are also flags.
SIM_SUBJECTS = Range("integer", 10)
ROTATIONS = ("none", "varimax")  # `wm-jax embed --rotation`: the raw bottleneck, or whitened and varimax-rotated


@dataclass
class GwasOptions:
    """`wm-jax gwas` (flags of the same names)."""

    pheno_names: str | None = None
    covar_names: str | None = None
    maf: float | None = ranged(None, "number", 0, 0.5)
    mac: int | None = ranged(None, "integer", 0)
    geno: float | None = ranged(None, "number", 0, 1)
    hwe: float | None = ranged(None, "number", 0, 1)
    chromosomes: str | None = None
    block_size: int = ranged(512, "integer", 1, 1 << 20)  # per device; see benchmarks/results/gwas_block_size.md
    format: str = "compact"
    gzip: bool = False
    a1_alt: bool = False  # count ALT always (PLINK 2 `omit-ref`); default: A1 = minor allele
    max_missing: int = 64  # per-variant missing calls handled by the gathered correction
    overwrite: bool = False  # replace PREFIX.* files that no earlier wm-jax gwas to this prefix wrote


@dataclass(frozen=True)
class ClumpOptions:
    """`wm-jax report`'s clumping (flags --clump-P1 and so on)."""

    p1: float = ranged(5e-8, "number", 0, 1, low_open=True)  # index variants: P <= p1
    p2: float = ranged(1e-4, "number", 0, 1, low_open=True)  # clump members: P <= p2
    r2: float = ranged(0.1, "number", 0, 1)  # members: r^2 >= r2 with the index variant
    kb: float = ranged(250.0, "number", 0, low_open=True)  # members: within kb of the index variant

    def check_thresholds(self, flag: str = "--clump-") -> None:
        """A member's threshold is at least the index variant's; ``flag`` names the two settings
        (``--clump-`` on the command line, ``--config.report.clump_`` in the demo's config)."""
        if self.p2 < self.p1:
            raise InputError(f"{flag}p2: expected a threshold >= {flag}p1 ({self.p1:g}), found {self.p2:g}")


@dataclass(frozen=True)
class PerdiOptions:
    """`wm-jax interpret` (PerDI)."""

    n_subjects: int = ranged(200, "integer", 3)
    fwhm_mm: float = ranged(3.0, "number", 0, 100)
    top_fraction: float = ranged(0.01, "number", 0, 1, low_open=True)
    n_permutations: int = ranged(10000, "integer", 1)
    dims_per_chunk: int = 8
    subjects_per_chunk: int = 16
    seed: int = ranged(0, SEED)


@dataclass(frozen=True)
class GeneOptions:
    """Settings of `wm-jax genes` (the flags' defaults)."""

    window_kb: float = ranged(10.0, "number", 0)


@dataclass(frozen=True)
class RheOptions:
    """`wm-jax h2 --method rhe`."""

    probes: int = ranged(100, "integer", 2, 10000)  # random vectors for tr((PKP)^2)
    jackknife_blocks: int = ranged(100, "integer", 2, 10000)
    block_size: int = ranged(512, "integer", 1, 1 << 16)  # variants per device step
    seed: int = ranged(1, SEED)


@dataclass
class LdscOptions:
    """`wm-jax h2` (LD score regression) and `wm-jax rg`, with ldsc's defaults. ``two_step`` (the
    two-step estimator's cutoff) applies when the intercept is free (ldsc's --no-intercept is
    intercept_h2 1 and intercept_gencov 0); None is ldsc's default: 30 for
    h2, and none for rg (ldsc --rg uses the two-step estimator only when --two-step is given)."""

    intercept_h2: float | None = None
    intercept_gencov: float | None = None  # rg: every pair's genetic covariance intercept, fixed
    two_step: float | None = ranged(None, "number", 0, low_open=True)
    chisq_max: float | None = ranged(None, "number", 0, low_open=True)
    n_blocks: int = ranged(200, "integer", 2)  # jackknife blocks
    not_m_5_50: bool = False


@dataclass(frozen=True)
class Preprocessing:
    """`wm-jax prepare`: crop (per axis [start, stop) in voxels, or None) then integer block-mean downsampling."""

    crop: tuple[tuple[int, int], ...] | None = None
    downsample: int = ranged(1, "integer", 1)
    mask_fraction: float = ranged(0.5, "number", 0, 1, low_open=True)
    dtype: str = "float32"
    layout: str = "npy"  # volumes.npy (one memory-mappable file) or volumes.zarr (zarr v3, a chunk per subject)
