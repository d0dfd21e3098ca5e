"""-log10 P of Student t against a 40-digit reference (mpmath quadrature), |t| to 100, df 10 to 1e6."""

import jax.numpy as jnp
import mpmath
import numpy as np
import pytest

from wm_jax.gwas.pvalues import neg_log10_p

mpmath.mp.dps = 40


def _reference(t: float, df: float) -> float:
    df, t = mpmath.mpf(df), mpmath.mpf(t)
    norm = mpmath.gamma((df + 1) / 2) / (mpmath.sqrt(df * mpmath.pi) * mpmath.gamma(df / 2))

    def density(u):
        return (1 + u * u / df) ** (-(df + 1) / 2)

    if t < 5:
        tail = mpmath.mpf(0.5) - norm * mpmath.quad(density, [0, t])
    else:
        tail = norm * mpmath.quad(density, [t, 2 * t, 10 * t, mpmath.inf])
    return float(-mpmath.log10(2 * tail))


@pytest.mark.parametrize("df", [10, 17, 39, 41, 120, 5000, 1e5, 1e6])
def test_neg_log10_p_matches_high_precision_reference(df):
    ts = [0.0, 1e-3, 0.4, 1.0, 1.7, 2.5, 4.0, 6.0, 10.0, 20.0, 45.0, 70.0, 100.0]
    got = np.asarray(neg_log10_p(jnp.asarray(ts + [-t for t in ts], jnp.float32), jnp.float32(df)), np.float64)
    want = np.array([_reference(t, df) for t in ts] * 2)
    tolerance = np.maximum(1e-3, 1e-4 * want)  # the GWAS engine's accuracy target
    assert np.all(np.isfinite(got))
    np.testing.assert_array_less(np.abs(got - want), tolerance)


def test_no_underflow_and_nan_propagation():
    got = np.asarray(neg_log10_p(jnp.asarray([300.0, jnp.nan], jnp.float32), jnp.float32(1e6)))
    assert np.isfinite(got[0]) and got[0] > 1e4
    assert np.isnan(got[1])


@pytest.mark.parametrize("df", [1, 4, 32, 124])
def test_omnibus_chi2_tail_against_mpmath(df):
    """-log10 of the chi-square upper tail (the omnibus test), from the body to past float64
    underflow (the asymptotic branch), against mpmath's incomplete gamma at 40 digits:
    within 1e-6 relative (or 1e-9 absolute)."""
    from wm_jax.gwas.pvalues import chi2_neg_log10_sf

    statistics = np.array([0.0, 0.5, df, 3.0 * df + 10, 200.0, 1500.0, 2500.0, 5000.0, np.nan])
    ours = chi2_neg_log10_sf(statistics, df)
    assert np.isnan(ours[-1])
    for x, value in zip(statistics[:-1], ours[:-1]):
        expected = float(-mpmath.log10(mpmath.gammainc(mpmath.mpf(df) / 2, mpmath.mpf(x) / 2, regularized=True)))
        assert abs(value - expected) <= max(1e-9, 1e-6 * expected), (x, value, expected)


def test_hill_only_path_equals_the_full_one_where_df_is_large():
    """small_df=False (the kernel's choice when every test has >= SMALL_DF degrees of freedom)
    compiles only Hill's transformation; it must give the same values there."""
    from wm_jax.gwas.pvalues import SMALL_DF

    t = jnp.asarray(np.repeat(np.linspace(-60, 60, 241)[:, None], 3, axis=1), jnp.float32)
    df = jnp.asarray([SMALL_DF, 100.0, 5000.0], jnp.float32)[None, :]
    np.testing.assert_array_equal(np.asarray(neg_log10_p(t, df, small_df=False)), np.asarray(neg_log10_p(t, df)))
