"""The block kernel against a float64 NumPy least-squares reference on fresh random data."""

import jax
import numpy as np
import pytest
from scipy import stats

from wm_jax.data.plink import encode_alt_dosages
from wm_jax.gwas.kernel import REASON_CONSTANT, make_block_fn, missing_call_index
from wm_jax.gwas.run import PhenotypeGroup, _covariate_basis, _device_stack


def _problem(seed, n=203, n_variants=50, k=4, p=5, missing_rate=0.05):
    rng = np.random.default_rng(seed)
    freq = rng.uniform(0.05, 0.5, n_variants)
    dosage = rng.binomial(2, freq[:, None], (n_variants, n)).astype(float)
    dosage[rng.random(dosage.shape) < missing_rate] = np.nan
    dosage[0] = 1.0  # monomorphic
    dosage[1, :] = np.nan
    dosage[1, :5] = [0, 1, 2, 1, 0]  # too few observations for k + 2 parameters
    covariates = rng.standard_normal((n, k - 1))
    phenotypes = covariates @ rng.standard_normal((k - 1, p)) + rng.standard_normal((n, p))
    phenotypes[:, 0] += 1.5 * np.nan_to_num(dosage[3], nan=1.0)  # an effect to find
    return dosage, covariates, phenotypes


def _reference_ols(g, covariates, y):
    """float64 OLS of y on [1, covariates, g] over the samples with a call."""
    keep = ~np.isnan(g)
    x = np.column_stack([np.ones(keep.sum()), covariates[keep], g[keep]])
    coef, *_ = np.linalg.lstsq(x, y[keep], rcond=None)
    resid = y[keep] - x @ coef
    df = keep.sum() - x.shape[1]
    cov = np.linalg.inv(x.T @ x) * (resid @ resid) / df
    beta, se = coef[-1], np.sqrt(cov[-1, -1])
    return beta, se, -np.log10(2 * stats.t.sf(abs(beta / se), df)), keep.sum()


def _run_kernel(dosage, covariates, phenotypes, block_size=64, n_devices=1, max_missing=None, block_fn=None):
    n_samples = dosage.shape[1]
    basis = _covariate_basis(covariates, [f"c{j}" for j in range(covariates.shape[1])], "covar.tsv")
    group = PhenotypeGroup(list(range(phenotypes.shape[1])), np.arange(n_samples), basis,
                           phenotypes - basis @ (basis.T @ phenotypes))
    mesh = jax.make_mesh((n_devices,), ("blocks",), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=jax.devices()[:n_devices])
    device_stack = _device_stack([group], [0], n_samples, mesh)
    raw = np.zeros((n_devices * block_size, (n_samples + 3) // 4), np.uint8)
    raw[: len(dosage)] = encode_alt_dosages(dosage)
    missing = missing_call_index(raw, n_samples, max_missing or n_samples)
    block_fn = block_fn or make_block_fn(n_samples)
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("blocks"))
    (result,) = block_fn(jax.device_put(raw, sharding), jax.device_put(missing, sharding), (device_stack,))
    return jax.tree.map(lambda x: np.asarray(x)[0, : len(dosage)], result), block_fn


@pytest.mark.parametrize("seed", [0, 1])
def test_kernel_matches_float64_least_squares(seed):
    dosage, covariates, phenotypes = _problem(seed)
    result, _ = _run_kernel(dosage, covariates, phenotypes)
    assert result.reason[0] == REASON_CONSTANT and np.isnan(result.beta[0]).all()
    assert result.reason[1] != 0 and np.isnan(result.beta[1]).all()
    for j in range(2, len(dosage)):
        for p in range(phenotypes.shape[1]):
            beta, se, log10p, obs = _reference_ols(dosage[j], covariates, phenotypes[:, p])
            assert result.obs_ct[j] == obs
            # float32 kernel vs float64 reference: BETA within 1e-3 SE, -log10 P within 1e-3 or 1e-4 relative
            assert abs(result.beta[j, p] - beta) <= 1e-3 * se
            assert abs(result.se[j, p] - se) <= 1e-4 * se
            assert abs(result.neg_log10_p[j, p] - log10p) <= max(1e-3, 1e-4 * log10p)
    assert result.neg_log10_p[3, 0] > 8  # the planted effect
    np.testing.assert_allclose(result.alt_freq[2:], np.nanmean(dosage[2:], axis=1) / 2, rtol=1e-5)


def test_missing_call_index_matches_numpy():
    rng = np.random.default_rng(8)
    dosage = rng.integers(0, 3, (30, 37)).astype(float)
    dosage[rng.random(dosage.shape) < 0.1] = np.nan
    raw = encode_alt_dosages(dosage)
    index = missing_call_index(raw, 37, 12)
    for j in range(30):
        expected = np.flatnonzero(np.isnan(dosage[j]))
        np.testing.assert_array_equal(index[j, : len(expected)], expected)
        assert (index[j, len(expected):] == 37).all()


def test_exact_path_for_variants_with_many_missing_calls():
    dosage, covariates, phenotypes = _problem(3, missing_rate=0.3)
    result, _ = _run_kernel(dosage, covariates, phenotypes, max_missing=dosage.shape[1])
    for j in (2, 10, 30):
        beta, se, log10p, obs = _reference_ols(dosage[j], covariates, phenotypes[:, 1])
        assert result.obs_ct[j] == obs and abs(result.beta[j, 1] - beta) <= 1e-3 * se


def test_padded_last_block_and_compile_once():
    dosage, covariates, phenotypes = _problem(4, n_variants=40)
    first, block_fn = _run_kernel(dosage, covariates, phenotypes, block_size=64)
    assert block_fn._cache_size() == 1
    # Another block of the same fixed shape (fewer real variants, more padding): no new compilation.
    second, _ = _run_kernel(dosage[:7], covariates, phenotypes, block_size=64, block_fn=block_fn)
    np.testing.assert_array_equal(second.beta, first.beta[:7])
    assert block_fn._cache_size() == 1


def test_four_devices_equal_one_device():
    assert jax.device_count() >= 4
    dosage, covariates, phenotypes = _problem(5, n_variants=100)
    one, _ = _run_kernel(dosage, covariates, phenotypes, block_size=128, n_devices=1)
    four, _ = _run_kernel(dosage, covariates, phenotypes, block_size=32, n_devices=4)  # 4 x 32 slots, sharded
    for a, b in zip(one, four):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True)


def test_stacked_groups_each_match_float64_least_squares():
    """Phenotypes with their own NA patterns run as one stack of groups (one compiled kernel, mapped
    over groups in chunks); each group's statistics equal OLS on its own samples."""
    dosage, covariates, phenotypes = _problem(5, p=7)
    n_samples = dosage.shape[1]
    rng = np.random.default_rng(9)
    groups = []
    for j in range(phenotypes.shape[1]):  # every phenotype misses a different set of samples
        samples = np.sort(rng.choice(n_samples, n_samples - 10 - j, replace=False))
        basis = _covariate_basis(covariates[samples], ["a", "b", "c"], "covar.tsv")
        y = phenotypes[samples][:, [j]]
        groups.append(PhenotypeGroup([j], samples, basis, y - basis @ (basis.T @ y)))
    mesh = jax.make_mesh((1,), ("blocks",), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[:1])
    stack = _device_stack(groups, list(range(len(groups))), n_samples, mesh)
    raw = np.zeros((64, (n_samples + 3) // 4), np.uint8)
    raw[: len(dosage)] = encode_alt_dosages(dosage)
    missing = missing_call_index(raw, n_samples, n_samples)
    (result,) = make_block_fn(n_samples, chunk=3)(raw, missing, (stack,))  # 7 groups: chunks of 3, 3, 1
    result = jax.tree.map(np.asarray, result)
    assert result.beta.shape == (7, 64, 1)
    for j, group in enumerate(groups):
        for v in range(2, len(dosage)):
            g = np.full(n_samples, np.nan)
            g[group.samples] = dosage[v, group.samples]
            beta, se, log10p, obs = _reference_ols(g, covariates, phenotypes[:, j])
            assert result.obs_ct[j, v] == obs
            assert abs(result.beta[j, v, 0] - beta) <= 1e-3 * se
            assert abs(result.neg_log10_p[j, v, 0] - log10p) <= max(1e-3, 1e-4 * log10p)
