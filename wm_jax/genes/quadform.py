"""P-values of a sum of weighted chi-squares, Q = sum_j lambda_j chi2_h (independent), in float64.

This is the null distribution of the SNP-wise mean gene statistic (the sum of a gene's variant
chi-squares, whose Z-scores are correlated by LD with eigenvalues lambda): `quadform_sf(x, lam, h)`
gives P(Q > x) for every x at once, sharing the work that depends on lambda only.

- **Imhof (1961)**, exact: P(Q > x) = 1/2 + (1/pi) int_0^inf sin(theta(u)) / (u rho(u)) du with
  theta(u) = 1/2 sum_j h atan(lambda_j u) - x u / 2 and rho(u) = prod_j (1 + lambda_j^2 u^2)^(h/4).
  The integral is a sum over fixed 16-point Gauss-Legendre panels (each at most one oscillation of
  the x u / 2 term wide, widening geometrically from 0), so one matrix product gives it for every x
  that shares a panel set; x are grouped by octave of x / 2. Past the last panel, U, the tail is
  integrated by parts: g cos(phi) / phi' at U, with U chosen so that the next term, about
  g(U) (H/2 + 1) / (U omega^2) (H = h times the number of lambdas), is below 1e-13, or 1e-7 times
  a rough P (Satterthwaite's scaled chi-square) when that is larger: a P near 1 needs no 1e-13,
  and a small H with a small x would otherwise need a very long range (measured: within 1e-13
  of chi2_k for equal lambdas, k = 2 to 100, at P <= 1e-5).
- **Saddle-point (Lugannani-Rice, as Kuonen 1999 gives it for quadratic forms)** where Imhof's P is
  below SADDLEPOINT_BELOW: there the integral is a difference of O(1) terms and its absolute
  error (about 1e-13) is no longer small relative to P. The saddle-point P is computed in log
  space, so it does not underflow (-log10 P is returned beside P). Its relative error (a few %
  for few lambdas, 7% for chi2_2 at 1e-100) changes slowly along the tail, so it is scaled by
  Imhof / saddle-point at P ~ ANCHOR_P, where Imhof is still accurate to ~1e-5 relative: the two
  join without a step, and the tail is within 3% of chi2_k for equal lambdas (k >= 2, tests).
- One lambda: Q / lambda is chi2_h exactly, taken from SciPy.
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats

SADDLEPOINT_BELOW = 1e-10  # Imhof P below this is replaced by the saddle-point P
TOLERANCE = 1e-13  # absolute error aimed at in Imhof's small P
ANCHOR_P = 1e-8  # where the saddle-point P is matched to Imhof's (`_saddlepoint_correction`)
RELATIVE_TOLERANCE = 1e-7  # of a rough P (Satterthwaite's): larger P need no 1e-13
NEGLIGIBLE = 1e-10  # eigenvalues below this fraction of the largest are dropped
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(16)
_CHUNK = 4096  # quadrature nodes per matrix product (bounds memory at nodes x statistics)


def quadform_sf(x: np.ndarray, lam: np.ndarray, h: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """P(sum_j lam_j chi2_h > x) and its -log10, for each x (float64; NaN x gives NaN)."""
    x = np.asarray(x, np.float64)
    lam = np.asarray(lam, np.float64)
    lam = lam[lam > NEGLIGIBLE * lam.max()] if lam.size and lam.max() > 0 else lam[:0]
    p = np.full(x.shape, np.nan)
    neg_log10_p = np.full(x.shape, np.nan)
    finite = np.isfinite(x)
    if not lam.size:
        p[finite], neg_log10_p[finite] = 1.0, 0.0
        return p, neg_log10_p
    scale = lam.max()
    lam, xs = lam / scale, x[finite] / scale
    if lam.size == 1:
        log_p = stats.chi2.logsf(xs / lam[0], h)
    else:
        log_p = _log_sf(xs, lam, h)
    p[finite] = np.exp(log_p)
    neg_log10_p[finite] = -log_p / np.log(10)
    return p, neg_log10_p


def _log_sf(x: np.ndarray, lam: np.ndarray, h: float) -> np.ndarray:
    """log P(Q > x) for lambdas scaled to a largest of 1: Imhof, saddle-point in the far tail."""
    log_p = np.zeros(x.shape)
    positive = x > 0
    p = imhof_sf(x[positive], lam, h)
    tail = p < SADDLEPOINT_BELOW
    values = np.log(np.clip(p, 1e-300, 1.0))
    if tail.any():
        values[tail] = saddlepoint_log_sf(x[positive][tail], lam, h) + _saddlepoint_correction(lam, h)
    log_p[positive] = values
    return log_p


def _saddlepoint_correction(lam: np.ndarray, h: float) -> float:
    """log(Imhof / saddle-point) at the x where the saddle-point P is about ANCHOR_P: the
    saddle-point's relative error changes slowly along the tail, so the tail P is scaled by it
    and joins Imhof's without a step."""
    mean, sd = h * lam.sum(), np.sqrt(2 * h * (lam**2).sum())
    candidates = mean + sd * np.geomspace(1, 1e4, 256)
    log_sp = saddlepoint_log_sf(candidates, lam, h)
    anchor = int(np.nanargmin(np.abs(log_sp - np.log(ANCHOR_P))))
    imhof = imhof_sf(candidates[anchor : anchor + 1], lam, h)[0]
    if not np.isfinite(log_sp[anchor]) or imhof <= 0:
        return 0.0
    return float(np.log(imhof) - log_sp[anchor])


def imhof_sf(x: np.ndarray, lam: np.ndarray, h: float = 1.0) -> np.ndarray:
    """Imhof's P(Q > x) for x > 0 and lambdas scaled to a largest of 1 (absolute error ~1e-13)."""
    omega = np.asarray(x, np.float64) / 2
    p = np.empty(omega.shape)
    band = np.floor(np.log2(omega)).astype(int)
    rough = _satterthwaite_sf(2 * omega, lam, h)
    for b in np.unique(band):
        members = band == b
        low, high = omega[members].min(), omega[members].max()
        tolerance = float(np.clip(RELATIVE_TOLERANCE * rough[members].min(), TOLERANCE, 1e-8))
        upper = _tail_start(lam, h, low, tolerance)
        nodes, weights = _panels(high, upper)
        integral = _body(nodes, weights, lam, h, omega[members]) + _tail(upper, lam, h, omega[members])
        p[members] = 0.5 + integral / np.pi
    return np.clip(p, 0.0, 1.0)


def _envelope(u: np.ndarray, lam: np.ndarray, h: float) -> tuple[np.ndarray, np.ndarray]:
    """theta_0(u) = 1/2 sum h atan(lam u) and g(u) = 1 / (u rho(u)) at each u."""
    lu = np.multiply.outer(u, lam)
    theta = 0.5 * h * np.arctan(lu).sum(-1)
    log_g = -np.log(u) - 0.25 * h * np.log1p(lu**2).sum(-1)
    return theta, np.exp(log_g)


def _satterthwaite_sf(x: np.ndarray, lam: np.ndarray, h: float) -> np.ndarray:
    """P(Q > x) of the scaled chi-square with Q's mean and variance: a rough P that sets how
    small an absolute error each x needs."""
    mean, variance = h * lam.sum(), 2 * h * (lam**2).sum()
    return stats.chi2.sf(x * 2 * mean / variance, 2 * mean**2 / variance)


def _tail_start(lam: np.ndarray, h: float, omega: float, tolerance: float) -> float:
    """U past which the first term of integration by parts leaves an error below ``tolerance``, and
    where theta_0 turns slowly against omega (so the tail's phase has no stationary point)."""
    big_h = h * lam.size
    upper = 1.0
    while True:
        _, g = _envelope(np.array([upper]), lam, h)
        slope = 0.5 * h * (lam / (1 + (lam * upper) ** 2)).sum()
        if g[0] * (big_h / 2 + 1) / (upper * omega**2) < tolerance * np.pi and slope < omega / 2:
            return upper
        upper *= 2


def _panels(omega: float, upper: float) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on [0, upper]: panels widening geometrically from 0.5, each
    at most one period 2 pi / omega wide."""
    period = 2 * np.pi / omega
    n_geometric = int(np.ceil(np.log(max(min(period, upper), 0.5) / 0.5) / np.log(1.5))) + 1
    edges = 0.5 * 1.5 ** np.arange(n_geometric)
    edges = np.concatenate([[0.0], edges[edges < min(period, upper)]])
    last = edges[-1]
    if last < upper:
        n_periodic = int(np.ceil((upper - last) / min(period, max(last, 0.5) * 0.5)))
        edges = np.concatenate([edges, last + (upper - last) * np.arange(1, n_periodic + 1) / n_periodic])
    a, b = edges[:-1, None], edges[1:, None]
    nodes = (a + b) / 2 + (b - a) / 2 * _GL_NODES
    weights = (b - a) / 2 * _GL_WEIGHTS
    return nodes.ravel(), weights.ravel()


def _body(nodes: np.ndarray, weights: np.ndarray, lam: np.ndarray, h: float, omega: np.ndarray) -> np.ndarray:
    """int_0^U sin(theta_0(u) - omega u) g(u) du for each omega, a chunk of nodes at a time."""
    total = np.zeros(omega.shape)
    for start in range(0, len(nodes), _CHUNK):
        u, w = nodes[start : start + _CHUNK], weights[start : start + _CHUNK]
        theta, g = _envelope(u, lam, h)
        total += (w * g) @ np.sin(theta[:, None] - np.multiply.outer(u, omega))
    return total


def _tail(upper: float, lam: np.ndarray, h: float, omega: np.ndarray) -> np.ndarray:
    """int_U^inf sin(phi) g du ~ g(U) cos(phi(U)) / phi'(U), phi = theta_0 - omega u."""
    theta, g = _envelope(np.array([upper]), lam, h)
    slope = 0.5 * h * (lam / (1 + (lam * upper) ** 2)).sum()
    return g[0] * np.cos(theta[0] - omega * upper) / (slope - omega)


def saddlepoint_log_sf(x: np.ndarray, lam: np.ndarray, h: float = 1.0) -> np.ndarray:
    """log P(Q > x) by the Lugannani-Rice saddle-point formula, for x above the mean h sum(lam)
    (lambdas scaled to a largest of 1)."""
    x = np.asarray(x, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _lugannani_rice(x, lam, h)


def _lugannani_rice(x: np.ndarray, lam: np.ndarray, h: float) -> np.ndarray:
    # K'(z) = sum h lam / (1 - 2 z lam) = x, solved for z in (0, 1/2) by bisection on log(1 - 2z).
    low, high = np.full(x.shape, np.log(1e-300)), np.zeros(x.shape)  # bounds of log(1 - 2 z)
    for _ in range(200):
        mid = (low + high) / 2
        z = (1 - np.exp(mid)) / 2
        too_far = (h * lam / (1 - 2 * np.multiply.outer(z, lam))).sum(-1) > x
        low, high = np.where(too_far, mid, low), np.where(too_far, high, mid)
    z = (1 - np.exp((low + high) / 2)) / 2
    one_minus = 1 - 2 * np.multiply.outer(z, lam)
    cumulant = -0.5 * h * np.log(one_minus).sum(-1)
    second = (2 * h * lam**2 / one_minus**2).sum(-1)
    w = np.sqrt(np.maximum(2 * (z * x - cumulant), 0))
    v = z * np.sqrt(second)
    return special.log_ndtr(-(w + np.log(v / w) / w))
