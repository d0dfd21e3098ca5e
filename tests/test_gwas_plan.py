"""The GWAS plan: the A1 rule and the routing of variants to kernel shapes, without genotypes or devices."""

import numpy as np
import pytest

from wm_jax.gwas.plan import EXACT_PASS_VALUES, Router, alt_is_major
from wm_jax.gwas.pvalues import SMALL_DF
from wm_jax.gwas.qc import VariantCounts


def _router(block_size=512, max_missing=64, fewest_samples=1000, n_basis=5, n_groups=2, n_phenotypes=8):
    return Router(block_size, max_missing, fewest_samples, n_basis, n_groups, n_phenotypes)


def test_each_variant_is_routed_by_its_missing_calls():
    missing = np.array([0, 0, 3, 0, 70, 0, 1, 64, 65, 128, 129, 1_000_000])
    widths = _router().widths(missing)
    # none: no correction; up to 32 (half of max_missing): room for 32; up to max_missing: room for 64;
    # more: the next power of two, at least 2 x 64
    np.testing.assert_array_equal(widths, [0, 0, 32, 0, 128, 0, 32, 64, 128, 128, 256, 1 << 20])
    np.testing.assert_array_equal(_router().widths([32, 33]), [32, 64])
    assert (widths >= missing).all()


def test_exact_shape_block_size_holds_exact_pass_values():
    exact = _router(block_size=1 << 16).shape(128)
    per_variant = 128 * (2 * 5 + 8)
    assert exact.block_size == 8192 and exact.missing_width == 128
    assert exact.block_size * per_variant <= EXACT_PASS_VALUES < 2 * exact.block_size * per_variant
    assert _router(block_size=1 << 16).shape(64).block_size == 1 << 16  # the gathered correction: the block size
    assert _router(block_size=1 << 16).shape(0).block_size == 1 << 16


def test_exact_shape_block_size_is_clipped_to_the_range_8_to_block_size():
    assert _router(block_size=512).shape(1 << 20).block_size == 8
    assert _router(block_size=16, n_groups=1, n_phenotypes=1).shape(128).block_size == 16


@pytest.mark.parametrize("fewest_samples, expected", [(200, False), (174, False), (173, True)])
def test_small_df_flag_follows_the_fewest_degrees_of_freedom(fewest_samples, expected):
    # df >= samples - room for missing calls (128) - basis (5) - 1
    shape = _router(fewest_samples=fewest_samples).shape(128)
    assert (fewest_samples - 128 - 5 - 1 < SMALL_DF) == expected
    assert shape.small_df is expected
    assert _router(fewest_samples=fewest_samples).shape(0).small_df is False


def test_a1_rule_follows_plink2_rounding_on_exact_ties():
    observed = np.array([49, 98, 103, 107, 100, 5003])
    tie = VariantCounts(hom_alt=np.zeros(6, int), het=observed, hom_ref=np.zeros(6, int), missing=np.zeros(6, int))
    np.testing.assert_array_equal(alt_is_major(tie), [True, True, True, True, False, False])
    clear = VariantCounts(
        hom_alt=np.array([40, 1]), het=np.array([10, 10]), hom_ref=np.array([1, 40]), missing=np.array([0, 0])
    )
    np.testing.assert_array_equal(alt_is_major(clear), [True, False])
