"""`wm-jax h2` (LDSC) and `wm-jax rg`: the LD score regression of every phenotype of a GWAS, and
the genetic correlations among them and with external summary statistics.

Which SNPs enter, as ldsc 2.0.1 (`ldscore/sumstats.py`) chooses them:
- the SNPs of the summary statistics that are in both the reference LD scores and the weight LD
  scores, in the reference LD scores' order (CHR, BP), which sets the jackknife blocks;
- a phenotype's SNPs with a missing BETA or SE (not tested) are dropped, and with --chisq-max
  those with chi^2 >= the bound (ldsc's default for one LD score column: no bound);
- for rg, also SNPs that are not two different bases, strand-ambiguous SNPs (A/T, C/G) and SNPs
  whose alleles differ between the two studies; the second study's Z is aligned to the first's A1;
  each trait's h2 is computed again on the pair's SNPs, as ldsc does.

The LD scores are read once for every phenotype and pair. Phenotypes with the same SNPs (the same
missingness pattern) are fitted together as rows of one array; pairs in chunks of rows.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import logging
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from wm_jax.errors import InputError, input_error
from wm_jax.heritability import regression as reg
from wm_jax.heritability.ldfiles import M_5_50, M_ALL, read_ld_scores
from wm_jax.heritability.sumstats import ExternalSumstats, GwasSumstats, align, valid_snp
from wm_jax.stage_options import LdscOptions

log = logging.getLogger("wm_jax")

MIN_SNPS = 200  # fewer SNPs than ldsc's jackknife blocks: no estimate
PROGRESS_PAIRS = 500  # a progress bar from this many pairs
PAIR_THREADS = 4  # threads fitting chunks of pairs (each holds a few dozen arrays of a chunk)
PAIR_CHUNK_VALUES = 4_000_000  # float64 values per array of a chunk of pairs (32 MB)


@dataclass
class Reference:
    """Reference and weight LD scores merged: SNP, CHR, ld, w_ld in reference order; M."""

    snps: pd.DataFrame
    m: float
    source: str


def load_reference(ref_ld: str, w_ld: str, require: set[int] | None, options: LdscOptions) -> Reference:
    """Read the reference LD scores (one column: partitioned LD scores are not supported) and the
    weight LD scores (the same files when the prefixes are equal) and merge them on SNP."""
    ref = read_ld_scores(ref_ld, require, M_ALL if options.not_m_5_50 else M_5_50)
    if len(ref.ld_columns) != 1:
        raise input_error(ref.files[0], f"expected one LD score column, found {len(ref.ld_columns)} (partitioned)")
    if ref.table[ref.ld_columns[0]].var() == 0:
        raise input_error(ref.files[0], "expected LD scores that vary between SNPs (all are equal)")
    weights = ref if w_ld == ref_ld else read_ld_scores(w_ld, require, None)
    if len(weights.ld_columns) != 1:
        raise input_error(weights.files[0], "expected one LD score column for the regression weights")
    snps = ref.table.rename(columns={ref.ld_columns[0]: "ld"})[["SNP", "CHR", "ld"]]
    w = weights.table.rename(columns={weights.ld_columns[0]: "w_ld"})[["SNP", "w_ld"]]
    merged = snps.merge(w, on="SNP", how="inner")
    if w_ld != ref_ld:
        log.info("reference LD scores: %d SNPs, %d of them with weight LD scores", len(snps), len(merged))
    if merged.empty:
        raise input_error(weights.files[0], f"none of its SNP IDs is among those of {ref.files[0]}")
    source = ref_ld if w_ld == ref_ld else f"{ref_ld} (weights {w_ld})"
    return Reference(merged.reset_index(drop=True), float(ref.m[0]), source)


def merge_gwas(gwas: GwasSumstats, reference: Reference) -> pd.DataFrame:
    """The GWAS variants among the reference SNPs: SNP, A1, A2, ld, w_ld and ``position`` (the
    variant's column in the GWAS arrays), in reference order. A repeated variant ID keeps its first."""
    variants = gwas.variants.assign(position=np.arange(len(gwas.variants)))
    unique = variants.drop_duplicates(subset="SNP")
    if len(unique) < len(variants):
        log.info("%s: %d variants with a repeated ID dropped (first kept)", gwas.directory, len(variants) - len(unique))
    merged = reference.snps.merge(unique[["SNP", "A1", "A2", "position"]], on="SNP", how="inner")
    log.info(
        "SNPs merged: %d of the GWAS's %d variants are among the %d SNPs with LD scores",
        len(merged),
        len(variants),
        len(reference.snps),
    )
    if merged.empty:
        raise input_error(
            gwas.directory,
            f"none of its {len(variants)} variant IDs (e.g. {variants['SNP'].iloc[0]}) is among the SNP IDs of the "
            f"LD scores {reference.source} (e.g. {reference.snps['SNP'].iloc[0]}): expected the same SNP naming",
        )
    return merged.reset_index(drop=True)


def gwas_traits(gwas: GwasSumstats, merged: pd.DataFrame, phenotypes: list[int]) -> tuple[np.ndarray, ...]:
    """Z, N (phenotypes x merged SNPs, float64) and where both are present (a SNP tested)."""
    z = np.empty((len(phenotypes), len(merged)))
    n = np.empty_like(z)
    for row, j in enumerate(phenotypes):
        z[row], n[row] = gwas.z_and_n(j, merged["position"].to_numpy())
    present = np.isfinite(z) & np.isfinite(n) & (n > 0)
    return z, n, present


def _shared(n: np.ndarray) -> np.ndarray:
    """N (rows, SNPs) as one vector when every row has the same (the regression is cheaper then)."""
    return n[0] if (n == n[0]).all() else n


def _row_patterns(n: np.ndarray) -> np.ndarray:
    """A number per row, equal for rows with equal values (by a 128-bit digest of each row)."""
    numbers: dict[bytes, int] = {}
    digests = [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in n]
    return np.array([numbers.setdefault(digest, len(numbers)) for digest in digests])


def _same_rows(masks: np.ndarray) -> list[np.ndarray]:
    """Rows with identical masks, grouped (in first-appearance order)."""
    groups: dict[bytes, list[int]] = {}
    for row, mask in enumerate(masks):
        groups.setdefault(np.packbits(mask).tobytes(), []).append(row)
    return [np.array(rows) for rows in groups.values()]


# ---------------------------------------------------------------------------------------------
# h2
# ---------------------------------------------------------------------------------------------
H2_COLUMNS = ["phenotype", "h2", "se", "intercept", "intercept_se", "ratio", "ratio_se", "mean_chi2", "lambda_gc"]


def h2_table(gwas: GwasSumstats, reference: Reference, phenotypes: list[int], options: LdscOptions) -> pd.DataFrame:
    """One row per phenotype: h2, SE, intercept, its SE, ratio, mean chi^2, lambda GC, SNPs used."""
    merged = merge_gwas(gwas, reference)
    z, n, keep = gwas_traits(gwas, merged, phenotypes)
    _log_dropped("without a test (missing BETA or SE)", keep, gwas, phenotypes)
    if options.chisq_max is not None:
        with np.errstate(invalid="ignore"):
            below = keep & (z**2 < options.chisq_max)
        _log_dropped(f"with chi^2 >= --chisq-max {options.chisq_max:g}", below, gwas, phenotypes, keep)
        keep = below
    rows: list[dict | None] = [None] * len(phenotypes)
    ld, w_ld = merged["ld"].to_numpy(), merged["w_ld"].to_numpy()
    for group in _same_rows(keep):
        snps = keep[group[0]]
        if snps.sum() < MIN_SNPS:
            _log_not_estimated([gwas.phenotypes[phenotypes[row]] for row in group], int(snps.sum()))
            rows = _nan_rows(rows, group, [gwas.phenotypes[phenotypes[row]] for row in group])
            continue
        z_group, n_group = z[np.ix_(group, snps)], _shared(n[np.ix_(group, snps)])
        fit = _fit_h2(z_group, ld[snps], w_ld[snps], n_group, reference.m, options, _two_step(options, reg.TWO_STEP))
        for k, row in enumerate(group):
            rows[row] = _h2_row(gwas.phenotypes[phenotypes[row]], fit, k)
    return pd.DataFrame(rows)


def _log_not_estimated(names: list[str], n_snps: int) -> None:
    log.warning("%s: %d SNPs after the filters, fewer than %d: not estimated (NA)", ", ".join(names), n_snps, MIN_SNPS)


def _nan_rows(rows: list, group: np.ndarray, names: list[str]) -> list:
    for row, name in zip(group, names):
        rows[row] = {"phenotype": name, **dict.fromkeys(H2_COLUMNS[1:], np.nan), "n_snps": 0}
    return rows


def _fit_h2(z, ld, w_ld, n, m, options: LdscOptions, two_step: float | None) -> reg.HsqFit:
    """h2 of each row of ``z``, in chunks of rows (memory stays at a few arrays of PAIR_CHUNK_VALUES)."""
    chunk = max(1, PAIR_CHUNK_VALUES // z.shape[1])
    with _two_step_guard():
        fits = [
            reg.fit_h2(
                z[start : start + chunk] ** 2,
                ld,
                w_ld,
                n if n.ndim == 1 else n[start : start + chunk],
                m,
                options.intercept_h2,
                two_step,
                options.n_blocks,
            )
            for start in range(0, len(z), chunk)
        ]
    return reg.concatenate_fits(fits)


@contextlib.contextmanager
def _two_step_guard():
    """The two-step estimator needs a jackknife block's worth of SNPs below its cutoff."""
    try:
        yield
    except reg.TooFewSnps as err:
        raise InputError(f"--two-step: {err}; expected a higher cutoff for these statistics") from None


def _two_step(options: LdscOptions, default: float | None) -> float | None:
    """The two-step cutoff of a run: none with a fixed intercept, else the option or ``default``."""
    if options.intercept_h2 is not None:
        return None
    return default if options.two_step is None else options.two_step


def _h2_row(name: str, fit: reg.HsqFit, k: int) -> dict:
    return {
        "phenotype": name,
        "h2": fit.total[k],
        "se": fit.total_se[k],
        "intercept": fit.intercept[k],
        "intercept_se": fit.intercept_se[k],
        "ratio": fit.ratio[k],
        "ratio_se": fit.ratio_se[k],
        "mean_chi2": fit.mean_chi2[k],
        "lambda_gc": fit.lambda_gc[k],
        "n_snps": fit.n_snps,
    }


def _log_dropped(what: str, kept: np.ndarray, gwas, phenotypes, before: np.ndarray | None = None) -> None:
    before_counts = kept.shape[1] if before is None else before.sum(axis=1)
    dropped = before_counts - kept.sum(axis=1)
    if dropped.any():
        worst = int(np.argmax(dropped))
        log.info(
            "SNPs %s dropped: %d phenotype(s) lose some, at most %d (%s; %d SNPs remain)",
            what,
            int((dropped > 0).sum()),
            int(dropped[worst]),
            gwas.phenotypes[phenotypes[worst]],
            int(kept[worst].sum()),
        )
    else:
        log.info("SNPs %s dropped: none", what)


# ---------------------------------------------------------------------------------------------
# rg
# ---------------------------------------------------------------------------------------------
@dataclass
class Traits:
    """Traits on one list of SNPs: names, Z and N (traits x SNPs), where each is present."""

    names: list[str]
    z: np.ndarray
    n: np.ndarray
    present: np.ndarray


def rg_among_gwas(gwas: GwasSumstats, reference: Reference, phenotypes: list[int], options: LdscOptions):
    """Every pair of the phenotypes (upper triangle, in phenotype order)."""
    merged = merge_gwas(gwas, reference)
    valid = valid_snp(merged["A1"].to_numpy(), merged["A2"].to_numpy())
    log.info(
        "SNPs with valid alleles for rg: %d of %d (%d strand-ambiguous or not two bases dropped)",
        valid.sum(),
        len(valid),
        (~valid).sum(),
    )
    merged = merged[valid].reset_index(drop=True)
    z, n, present = gwas_traits(gwas, merged, phenotypes)
    traits = Traits([gwas.phenotypes[j] for j in phenotypes], z, n, present)
    pairs = np.array([(i, j) for i in range(len(phenotypes)) for j in range(i + 1, len(phenotypes))], np.int64)
    return pair_table(traits, pairs, merged["ld"].to_numpy(), merged["w_ld"].to_numpy(), reference.m, options)


def rg_with_external(
    gwas: GwasSumstats, reference: Reference, external: ExternalSumstats, phenotypes: list[int], options: LdscOptions
) -> pd.DataFrame:
    """Every phenotype against one external trait (p1 the phenotype, p2 the file)."""
    merged = merge_gwas(gwas, reference)
    other = external.table.rename(columns={"A1": "B1", "A2": "B2", "Z": "Z2", "N": "N2"})
    shared = merged.merge(other, on="SNP", how="inner")
    log.info("%s: %d of its %d SNPs are among the GWAS's SNPs with LD scores", external.path, len(shared), len(other))
    if shared.empty:
        raise input_error(
            external.path,
            f"none of its SNP IDs (e.g. {other['SNP'].iloc[0]}) is among the GWAS's SNPs with LD scores "
            f"(e.g. {merged['SNP'].iloc[0]}): expected the same SNP naming",
        )
    match, sign = align(shared["A1"], shared["A2"], shared["B1"], shared["B2"])
    _check_alleles(external, shared, match)
    shared = shared[match].reset_index(drop=True)
    z, n, present = gwas_traits(gwas, shared, phenotypes)
    z2 = shared["Z2"].to_numpy() * sign[match]
    traits = Traits(
        [gwas.phenotypes[j] for j in phenotypes] + [external.name],
        np.vstack([z, z2]),
        np.vstack([n, shared["N2"].to_numpy()]),
        np.vstack([present, np.isfinite(z2)]),
    )
    pairs = np.array([(i, len(phenotypes)) for i in range(len(phenotypes))], np.int64)
    return pair_table(traits, pairs, shared["ld"].to_numpy(), shared["w_ld"].to_numpy(), reference.m, options)


def _check_alleles(external: ExternalSumstats, shared: pd.DataFrame, match: np.ndarray) -> None:
    """Log the allele filter; an error when no SNP is left, or when most SNPs that are valid in
    both studies have different alleles (another build or another allele coding)."""
    both_valid = valid_snp(shared["A1"], shared["A2"]) & valid_snp(shared["B1"], shared["B2"])
    mismatched = int((both_valid & ~match).sum())
    log.info(
        "%s: %d SNPs with matching alleles; dropped %d strand-ambiguous or not two bases, %d whose alleles differ",
        external.path,
        match.sum(),
        int((~both_valid).sum()),
        mismatched,
    )
    if not match.any() or mismatched > 0.5 * both_valid.sum():
        example = shared[both_valid & ~match].iloc[0] if mismatched else shared.iloc[0]
        raise input_error(
            external.path,
            f"alleles of {mismatched} of the {int(both_valid.sum())} SNPs shared with the GWAS don't match "
            f"(e.g. {example['SNP']}: {example['B1']}/{example['B2']} here, {example['A1']}/{example['A2']} in the "
            "GWAS); expected the same alleles up to strand and order",
        )


PAIR_COLUMNS = ["rg", "se", "z", "p", "h2_p1", "h2_p1_se", "h2_int_p1", "h2_int_p1_se", "h2_p2", "h2_p2_se"]
PAIR_COLUMNS += ["h2_int_p2", "h2_int_p2_se", "gcov", "gcov_se", "gcov_int", "gcov_int_se", "n_snps"]


def pair_table(
    traits: Traits, pairs: np.ndarray, ld: np.ndarray, w_ld: np.ndarray, m: float, options: LdscOptions
) -> pd.DataFrame:
    """rg of each pair (rows of ``pairs``: trait indices), on the SNPs both traits have. Pairs whose
    traits have the same SNPs as other pairs' are fitted together: one h2 fit per trait and SNP set,
    the covariance regressions in chunks of pairs."""
    groups = _same_rows(traits.present)
    group_of = np.empty(len(traits.names), np.int64)
    for g, rows in enumerate(groups):
        group_of[rows] = g
    columns: dict[str, np.ndarray] = {}
    keys = group_of[pairs[:, 0]] * len(groups) + group_of[pairs[:, 1]]
    progress = tqdm(total=len(pairs), unit="pair", desc="rg", disable=len(pairs) < PROGRESS_PAIRS)
    for key in np.unique(keys):
        selected = np.flatnonzero(keys == key)
        first, second = pairs[selected[0]]
        snps = traits.present[first] & traits.present[second]
        if snps.sum() < MIN_SNPS:
            first_pair = f"{traits.names[first]} x {traits.names[second]}"
            _log_not_estimated([f"{len(selected)} pair(s) like {first_pair}"], int(snps.sum()))
            continue
        _fit_pairs(traits, pairs, selected, snps, ld, w_ld, m, options, columns, progress)
    progress.close()
    table = pd.DataFrame({name: columns.get(name, np.full(len(pairs), np.nan)) for name in PAIR_COLUMNS})
    table.insert(0, "p2", np.asarray(traits.names, dtype=object)[pairs[:, 1]])
    table.insert(0, "p1", np.asarray(traits.names, dtype=object)[pairs[:, 0]])
    return table


def _fit_pairs(traits, pairs, selected, snps, ld, w_ld, m, options, columns, progress) -> None:
    """Fit the pairs ``selected`` (rows of ``pairs``) on ``snps``; fill ``columns`` at those rows.
    Chunks of pairs run on up to PAIR_THREADS threads (NumPy releases the GIL in its loops)."""
    cols = slice(None) if snps.all() else snps
    involved = np.unique(pairs[selected])
    local = np.full(len(traits.names), -1, np.int64)
    local[involved] = np.arange(len(involved))
    everyone = len(involved) == len(traits.names)  # views, not copies, of every trait's Z and N
    z, n = (a if everyone else a[involved] for a in (traits.z, traits.n))
    if not snps.all():
        z, n = z[:, cols], n[:, cols]
    two_step = _two_step(options, None)
    h2 = _fit_h2(z, ld[cols], w_ld[cols], _shared(n), m, options, two_step)
    gencov_two_step = None if options.intercept_gencov is not None else two_step
    shared = SnpSet(
        z, n, ld[cols], w_ld[cols], m, h2, _row_patterns(n), gencov_two_step, options.n_blocks, options.intercept_gencov
    )
    chunk = max(1, PAIR_CHUNK_VALUES // z.shape[1])
    chunks = [selected[start : start + chunk] for start in range(0, len(selected), chunk)]
    workers = min(PAIR_THREADS, os.cpu_count() or 1, len(chunks))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        jobs = {pool.submit(_fit_chunk, shared, local[pairs[rows, 0]], local[pairs[rows, 1]]): rows for rows in chunks}
        for job in concurrent.futures.as_completed(jobs):
            rows = jobs[job]
            for name, value in job.result().items():
                columns.setdefault(name, np.full(len(pairs), np.nan))[rows] = value
            progress.update(len(rows))


@dataclass
class SnpSet:
    """What every pair on one set of SNPs shares: its traits' Z and N, the LD scores, h2 fits."""

    z: np.ndarray
    n: np.ndarray
    ld: np.ndarray
    w_ld: np.ndarray
    m: float
    h2: reg.HsqFit
    pattern: np.ndarray  # traits with the same N per SNP have the same number
    two_step: float | None  # of the genetic covariance regressions
    n_blocks: int
    intercept_gencov: float | None = None


def _fit_chunk(s: SnpSet, a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """The output columns of the pairs (a[k], b[k]) (rows of the SnpSet's traits)."""
    h1, h2 = reg.select_rows(s.h2, a), reg.select_rows(s.h2, b)
    n1 = s.n[a[0]] if (s.pattern[a] == s.pattern[a[0]]).all() else s.n[a]
    n2 = s.n[b[0]] if (s.pattern[b] == s.pattern[b[0]]).all() else s.n[b]
    with _two_step_guard():
        gencov = reg.fit_gencov(
            s.z[a], s.z[b], s.ld, s.w_ld, n1, n2, s.m, h1, h2, s.two_step, s.n_blocks, s.intercept_gencov
        )
    fit = reg.genetic_correlation(gencov, h1, h2)
    return {
        "rg": fit.rg,
        "se": fit.se,
        "z": fit.z,
        "p": fit.p,
        "h2_p1": h1.total,
        "h2_p1_se": h1.total_se,
        "h2_int_p1": h1.intercept,
        "h2_int_p1_se": h1.intercept_se,
        "h2_p2": h2.total,
        "h2_p2_se": h2.total_se,
        "h2_int_p2": h2.intercept,
        "h2_int_p2_se": h2.intercept_se,
        "gcov": gencov.total,
        "gcov_se": gencov.total_se,
        "gcov_int": gencov.intercept,
        "gcov_int_se": gencov.intercept_se,
        "n_snps": np.full(len(a), s.z.shape[1]),
    }
