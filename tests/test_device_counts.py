"""`wm_jax.data.device_counts`: a block's genotype counts taken on the device equal the host's
NumPy counts (`bed_row_counts`, `counts_of_dosages`), integer for integer."""

from types import SimpleNamespace

import numpy as np
import pytest

from wm_jax.data import device_counts
from wm_jax.data.dosages import counts_of_dosages
from wm_jax.data.plink import bed_row_counts, bytes_per_variant, pack_bed_codes
from wm_jax.data.source import DOSAGE_UNIT, MISSING_DOSAGE

FIELDS = ("hom_alt", "het", "hom_ref", "missing", "alt_dosage", "dosage_missing")


def _assert_same_counts(ours, theirs):
    for field in FIELDS:
        mine, expected = getattr(ours, field), getattr(theirs, field)
        if expected is None:
            assert mine is None, field
        else:
            np.testing.assert_array_equal(mine, expected, err_msg=field)
            assert np.asarray(mine).dtype == np.asarray(expected).dtype, field


@pytest.mark.parametrize("n_samples", [1, 101, 102, 103, 104, 333])
def test_bed_counts_on_the_device_equal_the_hosts(n_samples):
    """Random codes (missing calls in some rows, none in others) in every sample count modulo 4,
    with the last byte's padding codes set to garbage (a malformed file): the device masks them as
    the host does."""
    rng = np.random.default_rng(n_samples)
    width = bytes_per_variant(n_samples)
    codes = rng.choice(np.array([0, 1, 2, 3], np.uint8), p=[0.3, 0.05, 0.4, 0.25], size=(70, 4 * width))
    codes[::3, :] = np.where(codes[::3, :] == 1, 2, codes[::3, :])  # rows without a missing call
    codes[:, n_samples:] = rng.integers(0, 4, size=(70, 4 * width - n_samples))  # padding garbage
    raw = pack_bed_codes(codes)
    source = SimpleNamespace(block_counting="bed", n_samples=n_samples, name="test.bed")
    assert device_counts.can_count(source)
    host = bed_row_counts(raw, n_samples)
    assert (host.missing == 0).any() and (host.missing > 0).any()
    _assert_same_counts(device_counts.count_block(source, raw), host)
    truth = codes[:, :n_samples]
    np.testing.assert_array_equal(host.missing, (truth == 1).sum(axis=1))  # and the host is right
    np.testing.assert_array_equal(host.hom_alt, (truth == 0).sum(axis=1))


def test_dosage_counts_on_the_device_equal_the_hosts():
    """Dosages at, near and between plink2's hard-call thresholds, missing dosages, and padding slots
    past the samples holding garbage (ignored both ways); the unit sums exceed what 16 bits hold."""
    rng = np.random.default_rng(2)
    n_samples, slots = 777, 780
    units = rng.integers(0, 2 * DOSAGE_UNIT + 1, size=(90, slots)).astype(np.uint16)
    edges = np.array([0, 1638, 1639, 14745, 14746, DOSAGE_UNIT, 18022, 18023, 31129, 31130, 2 * DOSAGE_UNIT])
    mask = rng.random(units.shape) < 0.4
    units[mask] = rng.choice(edges.astype(np.uint16), size=mask.sum())
    units[rng.random(units.shape) < 0.05] = MISSING_DOSAGE
    units[:, n_samples:] = MISSING_DOSAGE
    units[0, :n_samples] = 2 * DOSAGE_UNIT  # the largest sum of a row
    source = SimpleNamespace(block_counting="dosages", n_samples=n_samples, name="test.bgen")
    host = counts_of_dosages(units[:, :n_samples])
    assert host.alt_dosage[0] == 2 * n_samples and (host.dosage_missing > 0).any()
    _assert_same_counts(device_counts.count_block(source, units), host)


def test_a_source_whose_counts_need_more_than_the_block_is_counted_on_the_host():
    """A dosage .pgen (hard calls stored apart) says so; asking the device anyway is an error."""
    source = SimpleNamespace(block_counting=None, n_samples=4, name="dosage.pgen")
    assert not device_counts.can_count(source)
    with pytest.raises(ValueError, match="dosage.pgen: its block counts need more than the block"):
        device_counts.count_block(source, np.zeros((1, 4), np.uint16))
