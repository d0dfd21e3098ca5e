"""Which variants `wm-jax gwas` streams (--chr) and tests (the QC filters, on the counts taken as
they stream), which allele it counts (the A1 rule), and which kernel shape (`Pass`) each variant
goes through (`Router`).

Called by `wm_jax.gwas.run` (the driver) and `wm_jax.gwas.stream`; `Router` is pure, so tests call
it directly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields, replace

import numpy as np

from wm_jax import sharding
from wm_jax.errors import InputError
from wm_jax.gwas import qc
from wm_jax.gwas.design import GroupedPhenotypes
from wm_jax.gwas.pvalues import SMALL_DF

log = logging.getLogger("wm_jax")

EXACT_PASS_VALUES = 2**25  # the exact pass sizes its blocks so that its (B, L, G + P) gathers hold about this many


@dataclass
class TestedVariants:
    """The variants that passed the filters, in .bim order."""

    rows: np.ndarray  # their rows in the .bim
    positions: np.ndarray  # their positions among the variants streamed (the result store's columns before QC)
    a1_is_ref: np.ndarray  # True where A1 (the counted allele) is REF; the kernel counts ALT


@dataclass(frozen=True)
class Pass:
    """One compiled shape of the kernel: the variants routed to it share it (a "pass" in the .log)."""

    block_size: int  # variants per device in one step
    missing_width: int  # room for missing calls per variant in the gathered correction (0: none)
    small_df: bool  # some test may have fewer than SMALL_DF degrees of freedom (continued fraction compiled)


@dataclass(frozen=True)
class Router:
    """Which kernel shape (`Pass`) each variant goes through, from its number of missing calls, as
    its genotypes are read (one streaming pass; nothing is counted beforehand):

    - no missing call: no per-variant Gram matrix (the precomputed inverse);
    - up to ``max_missing``: the gathered correction, room for half of ``max_missing`` calls or for
      all of them (two shapes, so that a cohort with few missing calls gathers half as much);
    - more (rare after --geno): the exact path, room for the next power of two of its calls, in
      blocks sized by EXACT_PASS_VALUES.

    ``fewest_samples`` is the smallest phenotype group and ``n_basis`` the covariate basis with the
    intercept: with the room for missing calls they bound the degrees of freedom."""

    block_size: int
    max_missing: int
    fewest_samples: int
    n_basis: int
    n_groups: int
    n_phenotypes: int

    def widths(self, missing_calls: np.ndarray) -> np.ndarray:
        """The room for missing calls (the pass) of variants with ``missing_calls`` each."""
        missing = np.asarray(missing_calls, np.int64)
        exact = np.left_shift(1, np.ceil(np.log2(np.maximum(missing, 1))).astype(np.int64))
        exact = np.maximum(exact, 2 * self.max_missing)
        # log2 in float64 is exact at powers of two; a count just past one rounds up, never down
        exact = np.where(exact < missing, 2 * exact, exact)
        half = self.max_missing // 2
        gathered = np.where(missing <= half, half, self.max_missing) if half > 0 else self.max_missing
        return np.where(missing == 0, 0, np.where(missing <= self.max_missing, gathered, exact))

    def shape(self, width: int) -> Pass:
        """The kernel shape of the pass with room for ``width`` missing calls."""
        size = self.block_size
        if width > self.max_missing:
            per_variant = width * (self.n_groups * self.n_basis + self.n_phenotypes)
            size = int(np.clip(1 << max(0, (EXACT_PASS_VALUES // per_variant).bit_length() - 1), 8, self.block_size))
        fewest_df = self.fewest_samples - width - self.n_basis - 1
        return Pass(size, int(width), small_df=fewest_df < SMALL_DF)


def alt_is_major(counts: qc.VariantCounts) -> np.ndarray:
    """The A1 rule: A1 is the minor allele as PLINK 2 (2.00a3.5) chooses it, REF when its frequency,
    computed as count * (1 / (2 * observed)) in float64, is below 0.5. On an exact tie that product
    rounds either way depending on the count (e.g. below 0.5 for 49, 98, 103 or 107 observed
    samples, not for 100 or 5003), and plink2 follows the rounding, as we do."""
    alt_count, observed = counts.alt_count, counts.dosage_observed  # on dosages: their sums
    ref_count = 2 * observed - alt_count
    with np.errstate(divide="ignore", invalid="ignore"):
        return ref_count * (1.0 / (2.0 * observed)) < 0.5


def selected_variants(data, filters: qc.VariantFilters) -> np.ndarray:
    """The rows of the genotype source that --chr selects (all without it): the variants streamed.
    Chromosome X among them is an error (`qc.refuse_chromosome_x`)."""
    selected = qc.select_chromosomes(data, filters.chromosomes)
    qc.refuse_chromosome_x(data, selected)
    return selected


def variants_to_test(
    counts: qc.VariantCounts, selected: np.ndarray, name: str, filters: qc.VariantFilters, a1_alt: bool
) -> TestedVariants:
    """The QC filters (each logged) on the ``counts`` of the ``selected`` variants, counted as they
    were streamed; A1 is ALT with ``a1_alt``, else the minor allele. No variant left is an error
    naming ``name`` (the --bfile or --pfile prefix, or the --bgen file, as given) and every filter."""
    removed: list[str] = []
    keep = qc.apply_filters(counts, filters.maf, filters.mac, filters.geno, filters.hwe, removed)
    if not keep.any():
        selection = f" on --chr {filters.chromosomes}" if filters.chromosomes else ""
        raise InputError(
            f"{name}: expected at least one variant to test; none is left of the {len(keep)} "
            f"variants{selection}{' after ' + ', '.join(removed) if removed else ''}"
        )
    a1 = a1_is_ref(counts, a1_alt)[keep]
    return TestedVariants(rows=selected[keep], positions=np.flatnonzero(keep), a1_is_ref=a1)


def a1_is_ref(counts: qc.VariantCounts, a1_alt: bool) -> np.ndarray:
    """Where A1 is REF: never with --a1-alt, else where ALT is the major allele (`alt_is_major`)."""
    return np.zeros(len(counts.het), bool) if a1_alt else alt_is_major(counts)


def gather_counts(local: qc.VariantCounts) -> qc.VariantCounts:
    """Every process's counts of its share of the variants, in order, on every process (fields that
    are None, as the dosage sums of hard calls, stay None)."""
    gathered = {f.name: getattr(local, f.name) for f in fields(local)}
    return replace(local, **{k: sharding.gather_parts(v) for k, v in gathered.items() if v is not None})


def this_process(n_variants: int) -> np.ndarray:
    """This process's share of the ``n_variants`` streamed: a contiguous run, so that each process
    reads its own stretch of the file and writes its own result columns."""
    return np.arange(n_variants)[sharding.this_process_share(n_variants)]


def router_for(grouped: GroupedPhenotypes, block_size: int, max_missing: int) -> Router:
    """The `Router` for the phenotype groups."""
    return Router(
        block_size,
        max_missing,
        fewest_samples=min(len(g.samples) for g in grouped.groups),
        n_basis=grouped.basis.shape[1],
        n_groups=len(grouped.groups),
        n_phenotypes=len(grouped.column_order),
    )
