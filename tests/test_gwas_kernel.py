"""The block kernel against a float64 NumPy least-squares reference on fresh random data."""

import re

import jax
import numpy as np
import pytest
from scipy import stats

from wm_jax.data.plink import encode_alt_dosages
from wm_jax.gwas.design import build_groups, device_inputs, kernel_inputs
from wm_jax.gwas.kernel import REASON_CONSTANT, make_block_fn, missing_call_index


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


def _run_kernel(
    dosage, covariates, phenotypes, block_size=64, n_devices=1, max_missing=None, block_fn=None, width=None
):
    """The kernel on one step of ``n_devices * block_size`` variant slots; returns the results of
    the real variants with phenotype columns (and groups) in kernel order, the grouping, the function."""
    n_samples = dosage.shape[1]
    grouped = build_groups(
        phenotypes,
        covariates,
        [f"y{j}" for j in range(phenotypes.shape[1])],
        [f"c{j}" for j in range(covariates.shape[1])],
        "pheno.tsv",
        "covar.tsv",
    )
    mesh = jax.make_mesh(
        (n_devices,), ("blocks",), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[:n_devices]
    )
    raw = np.zeros((n_devices * block_size, (n_samples + 3) // 4), np.uint8)
    raw[: len(dosage)] = encode_alt_dosages(dosage)
    inputs = device_inputs(kernel_inputs(grouped, 4 * raw.shape[1]), mesh)
    missing = missing_call_index(raw, n_samples, max_missing or n_samples if width is None else width)
    block_fn = block_fn or make_block_fn(grouped.layout)
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("blocks"))
    result = block_fn(jax.device_put(raw, sharding), jax.device_put(missing, sharding), inputs)
    return jax.tree.map(lambda x: np.asarray(x)[: len(dosage)], result), grouped, block_fn


@pytest.mark.parametrize("seed", [0, 1])
def test_kernel_matches_float64_least_squares(seed):
    dosage, covariates, phenotypes = _problem(seed)
    result, grouped, _ = _run_kernel(dosage, covariates, phenotypes)
    assert grouped.layout == ((1, phenotypes.shape[1]),)
    assert result.reason[0, 0] == REASON_CONSTANT and np.isnan(result.beta[0]).all()
    assert result.reason[1, 0] != 0 and np.isnan(result.beta[1]).all()
    for j in range(2, len(dosage)):
        for p in range(phenotypes.shape[1]):
            beta, se, log10p, obs = _reference_ols(dosage[j], covariates, phenotypes[:, p])
            assert result.obs_ct[j, 0] == obs
            # float32 kernel vs float64 reference: BETA within 1e-3 SE, -log10 P within 1e-3 or 1e-4 relative
            assert abs(result.beta[j, p] - beta) <= 1e-3 * se
            assert abs(result.se[j, p] - se) <= 1e-4 * se
            assert abs(result.neg_log10_p[j, p] - log10p) <= max(1e-3, 1e-4 * log10p)
    assert result.neg_log10_p[3, 0] > 8  # the planted effect
    np.testing.assert_allclose(result.alt_freq[2:, 0], np.nanmean(dosage[2:], axis=1) / 2, rtol=1e-5)


def test_missing_call_index_matches_numpy():
    rng = np.random.default_rng(8)
    dosage = rng.integers(0, 3, (30, 301)).astype(float)  # 76 bytes: 9 full 64-bit words and a partial one
    dosage[rng.random(dosage.shape) < 0.1] = np.nan
    raw = encode_alt_dosages(dosage)
    index = missing_call_index(raw, 301, 64)
    for j in range(30):
        expected = np.flatnonzero(np.isnan(dosage[j]))
        np.testing.assert_array_equal(index[j, : len(expected)], expected)
        assert (index[j, len(expected) :] == 4 * raw.shape[1]).all()  # the kernel's zero row


def test_exact_path_for_variants_with_many_missing_calls():
    dosage, covariates, phenotypes = _problem(3, missing_rate=0.3)
    result, _, _ = _run_kernel(dosage, covariates, phenotypes, max_missing=dosage.shape[1])
    for j in (2, 10, 30):
        beta, se, log10p, obs = _reference_ols(dosage[j], covariates, phenotypes[:, 1])
        assert result.obs_ct[j, 0] == obs and abs(result.beta[j, 1] - beta) <= 1e-3 * se


def test_padded_last_block_and_compile_once():
    dosage, covariates, phenotypes = _problem(4, n_variants=40)
    first, _, block_fn = _run_kernel(dosage, covariates, phenotypes, block_size=64)
    assert block_fn._cache_size() == 1
    # Another block of the same fixed shape (fewer real variants, more padding): no new compilation.
    second, _, _ = _run_kernel(dosage[:7], covariates, phenotypes, block_size=64, block_fn=block_fn)
    np.testing.assert_array_equal(second.beta, first.beta[:7])
    assert block_fn._cache_size() == 1


def test_four_devices_equal_one_device():
    assert jax.device_count() >= 4
    dosage, covariates, phenotypes = _problem(5, n_variants=100)
    one, _, _ = _run_kernel(dosage, covariates, phenotypes, block_size=128, n_devices=1)
    four, _, _ = _run_kernel(dosage, covariates, phenotypes, block_size=32, n_devices=4)  # 4 x 32 slots, sharded
    for a, b in zip(one, four):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("n_devices", [1, 4])
def test_phenotypes_with_their_own_na_match_float64_least_squares(n_devices):
    """Phenotypes missing different samples (groups of 3, 1 and 1, plus one with the same pattern
    as another, and samples lacking a covariate) share one matmul; each phenotype's statistics equal
    OLS over the samples that have its value, every covariate and a call, including variants whose
    missing calls fall on samples the phenotype lacks."""
    dosage, covariates, phenotypes = _problem(6, p=7, missing_rate=0.08)
    n_samples = dosage.shape[1]
    rng = np.random.default_rng(10)
    covariates[rng.choice(n_samples, 4, replace=False), 1] = np.nan
    phenotypes[rng.random(n_samples) < 0.15, 3] = np.nan
    phenotypes[rng.random(n_samples) < 0.3, 4] = np.nan
    phenotypes[:, 5] = np.where(np.isnan(phenotypes[:, 4]), np.nan, phenotypes[:, 5])  # same pattern as 4
    phenotypes[: n_samples // 2, 6] = np.nan  # half the samples
    result, grouped, _ = _run_kernel(dosage, covariates, phenotypes, block_size=64 // n_devices, n_devices=n_devices)
    assert grouped.layout == ((1, 3), (2, 1), (1, 2))  # groups of one size together, in order first seen
    has_covariates = ~np.isnan(covariates).any(axis=1)
    for column, p in enumerate(grouped.column_order):
        group = next(g for g, members in enumerate(grouped.groups) if p in members.columns)
        for v in range(2, len(dosage)):
            g = np.where(np.isnan(phenotypes[:, p]) | ~has_covariates, np.nan, dosage[v])
            beta, se, log10p, obs = _reference_ols(g, np.nan_to_num(covariates), np.nan_to_num(phenotypes[:, p]))
            assert result.obs_ct[v, group] == obs
            assert abs(result.beta[v, column] - beta) <= 1e-3 * se
            assert abs(result.se[v, column] - se) <= 1e-4 * se
            assert abs(result.neg_log10_p[v, column] - log10p) <= max(1e-3, 1e-4 * log10p)


def test_variants_without_missing_calls_use_the_precomputed_inverse():
    """A pass with no room for missing calls (width 0) takes each group's Gram inverse from the
    host instead of inverting per variant: same numbers as the general path, and float64 OLS, with
    phenotypes of three missingness patterns."""
    dosage, covariates, phenotypes = _problem(11, p=4, missing_rate=0.0)
    dosage = dosage[2:]  # the first two rows of the problem have missing calls by construction
    rng = np.random.default_rng(12)
    phenotypes[rng.random(len(phenotypes)) < 0.2, 2] = np.nan
    phenotypes[rng.random(len(phenotypes)) < 0.1, 3] = np.nan
    fast, grouped, _ = _run_kernel(dosage, covariates, phenotypes, width=0)
    general, _, _ = _run_kernel(dosage, covariates, phenotypes, width=8)
    for a, b in zip(fast, general):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, equal_nan=True)
    for column, p in enumerate(grouped.column_order):
        for v in range(len(dosage)):
            g = np.where(np.isnan(phenotypes[:, p]), np.nan, dosage[v])
            beta, se, log10p, _ = _reference_ols(g, covariates, np.nan_to_num(phenotypes[:, p]))
            assert abs(fast.beta[v, column] - beta) <= 1e-3 * se
            assert abs(fast.neg_log10_p[v, column] - log10p) <= max(1e-3, 1e-4 * log10p)


def _dots_below_highest(hlo_text: str) -> tuple[int, list[str]]:
    """The dots and convolutions of StableHLO or compiled HLO text, and those not at HIGHEST precision."""
    dots = [
        line
        for line in hlo_text.splitlines()
        if re.search(r"stablehlo\.(dot_general|convolution)| (dot|convolution)\(", line)
    ]
    highest = re.compile(r"precision = \[HIGHEST, HIGHEST\]|operand_precision=\{highest,highest\}")
    return len(dots), [line.strip()[:200] for line in dots if not highest.search(line)]


@pytest.mark.parametrize("width", [0, 8])
def test_no_dot_of_the_compiled_kernel_is_left_at_default_precision(width):
    """Default precision is TF32 on NVIDIA GPUs and one bf16 pass on TPUs: every dot of the kernel,
    in the lowered StableHLO and in the compiled HLO, must ask for HIGHEST. Two phenotype groups
    (excluded-sample gathers), with and without the per-variant inversion of missing calls, with
    the missing-call index from the host and built in the kernel."""
    dosage, covariates, phenotypes = _problem(6)
    phenotypes[:9, 1] = np.nan
    grouped = build_groups(
        phenotypes, covariates, [f"y{j}" for j in range(5)], [f"c{j}" for j in range(3)], "pheno.tsv", "covar.tsv"
    )
    assert len(grouped.groups) == 2
    mesh = jax.make_mesh((1,), ("blocks",), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[:1])
    width_bytes = (dosage.shape[1] + 3) // 4
    inputs = device_inputs(kernel_inputs(grouped, 4 * width_bytes), mesh)
    raw = jax.ShapeDtypeStruct((64, width_bytes), np.uint8)
    host_index = make_block_fn(grouped.layout).lower(raw, jax.ShapeDtypeStruct((64, width), np.int32), inputs)
    device_index = make_block_fn(grouped.layout, missing_width=width).lower(raw, inputs)  # GPUs and TPUs
    for lowered in (host_index, device_index):
        for text in (lowered.as_text(), lowered.compile().as_text()):
            n_dots, below = _dots_below_highest(text)
            assert n_dots >= 3 and below == [], below
    # The check sees a dot at default precision (it would fail on a kernel without the precision).
    plain = jax.jit(lambda a, b: a @ b).lower(np.ones((4, 4), np.float32), np.ones((4, 4), np.float32))
    assert _dots_below_highest(plain.as_text())[1] != []


@pytest.mark.parametrize("dosages", [False, True])
def test_missing_call_index_on_the_device_equals_the_hosts_among_analysed_samples(dosages):
    """`missing_index_on_device` (a prefix sum and a scatter in the kernel) against the host's
    index, for .bed bytes and uint16 dosages: the same slots in the same order, padded with R, less
    the missing calls of samples outside the analysis (whose gathered rows are zero anyway)."""
    from wm_jax.data.source import MISSING_DOSAGE
    from wm_jax.gwas.kernel import missing_index_on_device

    rng = np.random.default_rng(3)
    n_samples, width = 301, 64
    dosage = rng.integers(0, 3, (40, n_samples)).astype(float)
    dosage[rng.random(dosage.shape) < rng.uniform(0, 0.2, (40, 1))] = np.nan
    dosage[0] = np.nan  # more missing calls than the width: those past it are dropped
    analysed = rng.random(4 * 76) < 0.8
    analysed[n_samples:] = False
    analysed_bits = (analysed.reshape(-1, 4) << (2 * np.arange(4))).sum(axis=1).astype(np.uint8)
    if dosages:
        raw = np.zeros((40, 4 * 76), np.uint16)
        raw[:, :n_samples] = np.where(np.isnan(dosage), MISSING_DOSAGE, np.nan_to_num(dosage) * 16384)
    else:
        raw = encode_alt_dosages(dosage)
    index = np.asarray(missing_index_on_device(jax.numpy.asarray(raw), jax.numpy.asarray(analysed_bits), width))
    assert index.shape == (40, width)
    for j in range(40):
        expected = np.flatnonzero(np.isnan(dosage[j]) & analysed[:n_samples])[:width]
        np.testing.assert_array_equal(index[j, : len(expected)], expected)
        assert (index[j, len(expected) :] == 4 * 76).all()
    assert np.asarray(missing_index_on_device(jax.numpy.asarray(raw), jax.numpy.asarray(analysed_bits), 0)).shape == (
        40,
        0,
    )


def test_dosages_of_a_common_alt_allele_keep_their_variance_exactly():
    """Imputation-like dosages of a common ALT allele (mean near 2, small variance) with missing
    dosages, at N = 5,003: the genotype's variance, sum g^2 - n mean^2 in float32, lost digits to
    the cancellation (here 9.1e-5 SE off float64 least squares, and 1.5e-4 on the benchmark's
    dosage BGEN, where plink2 was 6e-6 off); summed about the nearest allele count, 2.1e-5 (the
    rest is the float32 accumulation of the big matmul, whose dosages are not centred)."""
    from wm_jax.data.source import DOSAGE_UNIT, MISSING_DOSAGE

    rng = np.random.default_rng(11)
    n, m = 5003, 64
    freq = rng.uniform(0.85, 0.97, m)
    calls = rng.binomial(2, freq[:, None], (m, n)).astype(float)
    blur = rng.random((m, n)) < 0.4
    dosage = np.where(blur, np.clip(calls + rng.normal(0, 0.3, (m, n)), 0, 2), calls)
    dosage = np.round(dosage * DOSAGE_UNIT) / DOSAGE_UNIT  # what the reader hands the kernel
    dosage[rng.random((m, n)) < 0.002] = np.nan
    covariates = rng.standard_normal((n, 6))
    phenotypes = covariates @ rng.standard_normal((6, 3)) + rng.standard_normal((n, 3))
    phenotypes[:, 0] += 0.08 * np.nan_to_num(dosage[5], nan=1.8)
    grouped = build_groups(
        phenotypes, covariates, [f"y{j}" for j in range(3)], [f"c{j}" for j in range(6)], "pheno.tsv", "covar.tsv"
    )
    slots = 4 * ((n + 3) // 4)
    raw = np.zeros((m, slots), np.uint16)
    raw[:, :n] = np.where(np.isnan(dosage), MISSING_DOSAGE, np.nan_to_num(dosage) * DOSAGE_UNIT)
    mesh = jax.make_mesh((1,), ("blocks",), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[:1])
    inputs = device_inputs(kernel_inputs(grouped, slots), mesh)
    from wm_jax.data.dosages import missing_dosage_index

    index = missing_dosage_index(raw, n, 64)
    result = jax.tree.map(np.asarray, make_block_fn(grouped.layout)(raw, index, inputs))
    worst = 0.0
    for j in range(m):
        for p in range(3):
            beta, se, _, _ = _reference_ols(dosage[j], covariates, phenotypes[:, p])
            worst = max(worst, abs(result.beta[j, p] - beta) / se)
    assert worst <= 4e-5, worst
