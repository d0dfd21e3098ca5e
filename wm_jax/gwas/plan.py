"""Which variants `wm-jax gwas` tests, which allele it counts (the A1 rule), and the passes of the
kernel over them: each `Pass` is a set of variants with one compiled shape.

Called by `wm_jax.gwas.run` (the driver); `plan_passes` is pure, so tests call it directly.
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
    missing_calls: np.ndarray  # missing calls (dosages) of each: the kernel's missing-sample correction
    a1_is_ref: np.ndarray  # True where A1 (the counted allele) is REF; the kernel counts ALT


@dataclass(frozen=True)
class Pass:
    """Variants that go through the kernel with one shape (compiled once for the pass)."""

    variants: np.ndarray  # positions among the tested variants, ascending
    block_size: int  # variants per device in one step
    missing_width: int  # room for missing calls per variant in the gathered correction (0: none)
    small_df: bool  # some test may have fewer than SMALL_DF degrees of freedom (continued fraction compiled)


def alt_is_major(counts: qc.VariantCounts) -> np.ndarray:
    """The A1 rule: A1 is the minor allele as PLINK 2 (2.00a3.5) chooses it, REF when its frequency,
    computed as count * (1 / (2 * observed)) in float64, is below 0.5. On an exact tie that product
    rounds either way depending on the count (e.g. below 0.5 for 49, 98, 103 or 107 observed
    samples, not for 100 or 5003), and plink2 follows the rounding, as we do."""
    alt_count, observed = counts.alt_count, counts.dosage_observed  # on dosages: their sums
    ref_count = 2 * observed - alt_count
    with np.errstate(divide="ignore", invalid="ignore"):
        return ref_count * (1.0 / (2.0 * observed)) < 0.5


def variants_to_test(data, name: str, filters: qc.VariantFilters, a1_alt: bool) -> TestedVariants:
    """--chr, then the QC filters (each logged) on the genotype source ``data``; A1 is ALT with
    ``a1_alt``, else the minor allele. No variant left is an error naming ``name`` (the --bfile or
    --pfile prefix, or the --bgen file, as given) and every filter."""
    selected = qc.select_chromosomes(data, filters.chromosomes)
    counts = _count_in_shares(data, selected)
    removed: list[str] = []
    keep = qc.apply_filters(counts, filters.maf, filters.mac, filters.geno, filters.hwe, removed)
    if not keep.any():
        selection = f" on --chr {filters.chromosomes}" if filters.chromosomes else ""
        raise InputError(
            f"{name}: expected at least one variant to test; none is left of the {len(keep)} "
            f"variants{selection}{' after ' + ', '.join(removed) if removed else ''}"
        )
    a1_is_ref = np.zeros(int(keep.sum()), bool) if a1_alt else alt_is_major(counts)[keep]
    return TestedVariants(rows=selected[keep], missing_calls=counts.missing_dosages[keep], a1_is_ref=a1_is_ref)


def _count_in_shares(data, selected: np.ndarray) -> qc.VariantCounts:
    """The genotype counts of the ``selected`` variants of the genotype source ``data``; with several
    processes each counts its share and every process gets them all (fields that are None, as the
    dosage sums of hard calls, stay None), so every process plans the same passes."""
    local = data.count(selected[sharding.this_process_share(len(selected))])
    sharding.barrier("gwas: genotypes counted")
    gathered = {f.name: getattr(local, f.name) for f in fields(local)}
    return replace(local, **{k: sharding.gather_parts(v) for k, v in gathered.items() if v is not None})


def this_process(passes: list[Pass]) -> list[Pass]:
    """This process's share of every pass: a contiguous run of each pass's variants, so that the
    work (uniform within a pass) is balanced and each process writes its own result columns."""
    shares = [replace(p, variants=p.variants[sharding.this_process_share(len(p.variants))]) for p in passes]
    return [p for p in shares if len(p.variants)]


def passes_for(tested: TestedVariants, grouped: GroupedPhenotypes, block_size: int, max_missing: int) -> list[Pass]:
    """`plan_passes` for the tested variants and the phenotype groups."""
    return plan_passes(
        tested.missing_calls,
        block_size,
        max_missing,
        fewest_samples=min(len(g.samples) for g in grouped.groups),
        n_basis=grouped.basis.shape[1],
        n_groups=len(grouped.groups),
        n_phenotypes=len(grouped.column_order),
    )


def plan_passes(
    missing_calls: np.ndarray,
    block_size: int,
    max_missing: int,
    fewest_samples: int,
    n_basis: int,
    n_groups: int,
    n_phenotypes: int,
) -> list[Pass]:
    """The kernel's passes over variants with ``missing_calls`` each:

    - variants without any missing call need no per-variant Gram matrix: a pass of their own when
      they are common enough to repay its compilation (a quarter of the variants; hard-called
      imputed data: all of them);
    - variants with up to ``max_missing`` missing calls: the gathered correction;
    - variants with more (rare after --geno): the exact path, whose gather covers their most
      missing calls, in blocks sized by EXACT_PASS_VALUES.

    ``fewest_samples`` is the smallest phenotype group and ``n_basis`` the covariate basis with the
    intercept: they bound the degrees of freedom. Empty passes are left out."""
    none_missing = missing_calls == 0
    if none_missing.sum() < len(missing_calls) / 4:
        none_missing[:] = False
    many_missing = missing_calls > max_missing
    if none_missing.any():
        log.info(
            "%d variants have no missing call: a pass without the missing-call correction", int(none_missing.sum())
        )
    if many_missing.any():
        log.info(
            "%d variants have more than %d missing calls: exact path over all samples",
            int(many_missing.sum()),
            max_missing,
        )
    selections = [(none_missing, 0), (~none_missing & ~many_missing, max_missing), (many_missing, None)]
    passes = []
    for selected, width_limit in selections:
        variants = np.flatnonzero(selected)
        if len(variants) == 0:
            continue
        most_missing = int(missing_calls[variants].max())
        # Room for the most missing calls of any variant in this pass (a power of two, so few shapes).
        width = 1 << int(max(1, most_missing)).bit_length()
        if width_limit is None:
            per_variant = width * (n_groups * n_basis + n_phenotypes)
            size = int(np.clip(1 << max(0, (EXACT_PASS_VALUES // per_variant).bit_length() - 1), 8, block_size))
        else:
            width, size = min(width, width_limit), block_size
        fewest_df = fewest_samples - most_missing - n_basis - 1
        passes.append(Pass(variants, size, width, small_df=fewest_df < SMALL_DF))
    return passes
