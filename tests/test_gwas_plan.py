"""The GWAS plan: the A1 rule and the kernel's passes, without genotypes or devices."""

import numpy as np
import pytest

from wm_jax.gwas.plan import EXACT_PASS_VALUES, alt_is_major, plan_passes
from wm_jax.gwas.pvalues import SMALL_DF
from wm_jax.gwas.qc import VariantCounts


def _plan(missing_calls, block_size=512, max_missing=64, fewest_samples=1000, n_basis=5, n_groups=2, n_phenotypes=8):
    return plan_passes(
        np.asarray(missing_calls), block_size, max_missing, fewest_samples, n_basis, n_groups, n_phenotypes
    )


def _covered(passes) -> list[int]:
    return sorted(int(v) for p in passes for v in p.variants)


def test_variants_without_missing_calls_get_their_own_pass_when_common():
    missing = np.array([0, 0, 3, 0, 70, 0, 1, 0])
    passes = _plan(missing, block_size=1 << 16)
    assert [list(p.variants) for p in passes] == [[0, 1, 3, 5, 7], [2, 6], [4]]
    none, gathered, exact = passes
    assert (none.missing_width, none.block_size) == (0, 1 << 16)
    assert (gathered.missing_width, gathered.block_size) == (4, 1 << 16)  # room for 3 calls: the next power of two
    assert exact.missing_width == 128  # 70 calls: past max_missing, a power of two over all of them
    # the exact pass: the largest power of two of variants whose gathers hold at most EXACT_PASS_VALUES
    per_variant = 128 * (2 * 5 + 8)
    assert exact.block_size == 8192
    assert exact.block_size * per_variant <= EXACT_PASS_VALUES < 2 * exact.block_size * per_variant
    assert _covered(passes) == list(range(len(missing)))


def test_rare_complete_variants_join_the_gathered_pass():
    missing = np.array([0, 2, 5, 1, 1, 9, 64, 3])  # 1 of 8 has no missing call: under a quarter
    passes = _plan(missing)
    assert len(passes) == 1
    assert list(passes[0].variants) == list(range(8))
    assert passes[0].missing_width == 64  # 64 calls need 128 slots, capped at max_missing


def test_exact_pass_block_size_is_clipped_to_the_range_8_to_block_size():
    huge = _plan(np.full(10, 1_000_000), block_size=512)[0]
    assert huge.block_size == 8
    small = _plan(np.full(10, 100), block_size=16, n_groups=1, n_phenotypes=1)[0]
    assert small.block_size == 16


@pytest.mark.parametrize("fewest_samples, expected", [(100, False), (76, False), (75, True)])
def test_small_df_flag_follows_the_fewest_degrees_of_freedom(fewest_samples, expected):
    # df = samples - most missing calls (30) - basis (5) - 1
    (only,) = _plan(np.full(4, 30), fewest_samples=fewest_samples)
    assert (fewest_samples - 30 - 5 - 1 < SMALL_DF) == expected
    assert only.small_df is expected


def test_a1_rule_follows_plink2_rounding_on_exact_ties():
    observed = np.array([49, 98, 103, 107, 100, 5003])
    tie = VariantCounts(hom_alt=np.zeros(6, int), het=observed, hom_ref=np.zeros(6, int), missing=np.zeros(6, int))
    np.testing.assert_array_equal(alt_is_major(tie), [True, True, True, True, False, False])
    clear = VariantCounts(
        hom_alt=np.array([40, 1]), het=np.array([10, 10]), hom_ref=np.array([1, 40]), missing=np.array([0, 0])
    )
    np.testing.assert_array_equal(alt_is_major(clear), [True, False])
