import subprocess

import numpy as np
import pandas as pd
import pytest

from wm_jax.data.plink import (
    BedReader,
    PlinkDataset,
    bed_row_counts,
    decode_alt_dosages,
    encode_alt_dosages,
    missing_call_index,
    read_fam,
    write_bed,
)
from wm_jax.errors import InputError

from conftest import plink2_or_skip, raw_block, read_bim_fam_pandas_plink


def _write_plink(prefix, dosages, fam_ids=None):
    n_variants, n_samples = dosages.shape
    write_bed(f"{prefix}.bed", [encode_alt_dosages(dosages)])
    ids = fam_ids or [f"s{i}" for i in range(n_samples)]
    pd.DataFrame({"f": ids, "i": ids, "a": 0, "b": 0, "s": 1, "p": -9}).to_csv(
        f"{prefix}.fam", sep=" ", header=False, index=False
    )
    pd.DataFrame(
        {
            "c": 1,
            "id": [f"v{j}" for j in range(n_variants)],
            "cm": 0,
            "pos": np.arange(n_variants) + 1,
            "a1": "A",
            "a2": "G",
        }
    ).to_csv(f"{prefix}.bim", sep="\t", header=False, index=False)


@pytest.mark.parametrize("n_samples", [1, 4, 7, 103])
def test_encode_decode_round_trip(n_samples):
    rng = np.random.default_rng(n_samples)
    dosages = rng.integers(0, 3, (13, n_samples)).astype(float)
    dosages[rng.random(dosages.shape) < 0.1] = np.nan
    decoded = decode_alt_dosages(encode_alt_dosages(dosages), n_samples)
    np.testing.assert_array_equal(decoded, dosages)


def _pandas_plink_alt_dosages(prefix):
    from pandas_plink import read_plink

    _, _, genotypes = read_plink(str(prefix), verbose=False)
    # pandas-plink counts the .bim 6th-column allele; we count the 5th (ALT).
    return 2 - genotypes.compute()


def test_block_reader_equals_pandas_plink_on_simulated_cohort(tiny_cohort):
    prefix = tiny_cohort / "genotypes"
    data = PlinkDataset(prefix)
    assert data.n_samples % 4 != 0
    reference = _pandas_plink_alt_dosages(prefix)
    block_size = 1000
    for start in range(0, data.n_variants, block_size):
        rows = np.arange(start, min(start + block_size, data.n_variants))
        raw = raw_block(data.bed, rows, block_size)
        assert raw.shape == (block_size, (data.n_samples + 3) // 4)
        np.testing.assert_array_equal(decode_alt_dosages(raw, data.n_samples)[: len(rows)], reference[rows])


def test_block_reader_equals_pandas_plink_when_n_not_multiple_of_4(tmp_path):
    rng = np.random.default_rng(0)
    dosages = rng.integers(0, 3, (37, 10)).astype(float)
    dosages[rng.random(dosages.shape) < 0.05] = np.nan
    _write_plink(tmp_path / "x", dosages)
    data = PlinkDataset(tmp_path / "x")
    np.testing.assert_array_equal(data.bed.dosages(np.arange(37)), _pandas_plink_alt_dosages(tmp_path / "x"))
    np.testing.assert_array_equal(data.bed.dosages(np.arange(37)), dosages)


def test_bim_fam_agree_with_pandas_plink(tiny_cohort):
    data = PlinkDataset(tiny_cohort / "genotypes")
    bim, fam = read_bim_fam_pandas_plink(tiny_cohort / "genotypes")
    np.testing.assert_array_equal(data.bim.id.to_numpy(), bim.snp.to_numpy())
    np.testing.assert_array_equal(data.bim.pos.to_numpy(), bim.pos.to_numpy())
    np.testing.assert_array_equal(data.bim.alt.to_numpy(), bim.a0.to_numpy())
    np.testing.assert_array_equal(data.fam.iid.to_numpy(), fam.iid.to_numpy())


@pytest.mark.plink2
def test_plink2_freq_agrees_with_our_allele_frequencies(tiny_cohort, tmp_path):
    plink2 = plink2_or_skip()
    subprocess.run(
        [plink2, "--bfile", str(tiny_cohort / "genotypes"), "--freq", "--out", str(tmp_path / "f")],
        check=True,
        capture_output=True,
    )
    afreq = pd.read_csv(tmp_path / "f.afreq", sep="\t")
    data = PlinkDataset(tiny_cohort / "genotypes")
    dosages = data.bed.dosages(slice(None))
    ours = np.nanmean(dosages, axis=1) / 2
    np.testing.assert_array_equal(afreq.ID.to_numpy(), data.bim.id.to_numpy())
    np.testing.assert_array_equal(afreq.ALT.to_numpy(), data.bim.alt.to_numpy())
    np.testing.assert_array_equal(afreq.OBS_CT.to_numpy(), 2 * (~np.isnan(dosages)).sum(axis=1))
    np.testing.assert_allclose(afreq.ALT_FREQS.to_numpy(), ours, atol=1e-6)  # plink2 prints 6 significant digits


@pytest.fixture
def small_plink(tmp_path):
    rng = np.random.default_rng(1)
    _write_plink(tmp_path / "g", rng.integers(0, 3, (20, 9)).astype(float))
    return tmp_path / "g"


def test_truncated_bed_is_rejected(small_plink):
    bed = small_plink.with_suffix(".bed")
    bed.write_bytes(bed.read_bytes()[:-1])
    with pytest.raises(InputError, match=r"g\.bed: size 62 bytes .*\(expected 3 \+ 20 \* 3 = 63"):
        PlinkDataset(small_plink)


def test_wrong_magic_is_rejected(small_plink):
    bed = small_plink.with_suffix(".bed")
    bed.write_bytes(b"\x00\x00\x01" + bed.read_bytes()[3:])
    with pytest.raises(InputError, match="not a PLINK 1 .bed file"):
        PlinkDataset(small_plink)
    bed.write_bytes(b"\x6c\x1b\x00" + bed.read_bytes()[3:])
    with pytest.raises(InputError, match="sample-major"):
        PlinkDataset(small_plink)


def test_bim_fam_counts_must_fit_bed(small_plink):
    bim = small_plink.with_suffix(".bim")
    bim.write_text("".join(bim.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(InputError, match="does not fit 19 variants x 9 samples"):
        PlinkDataset(small_plink)


def test_fam_with_more_samples_than_bed(small_plink):
    fam = small_plink.with_suffix(".fam")
    fam.write_text(fam.read_text() + "x y 0 0 1 -9\nx z 0 0 1 -9\nx w 0 0 1 -9\nx v 0 0 1 -9\n")
    with pytest.raises(InputError, match="does not fit 20 variants x 13 samples"):
        PlinkDataset(small_plink)


def test_duplicate_sample_ids_are_rejected(small_plink):
    fam = small_plink.with_suffix(".fam")
    lines = fam.read_text().splitlines()
    lines[3] = lines[2]
    fam.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"g\.fam: duplicate sample ID s2 s2"):
        read_fam(fam)


def test_missing_files_and_malformed_bim(small_plink):
    with pytest.raises(InputError, match=r"nothing\.bed: \.bed file .*not found"):
        PlinkDataset(small_plink.parent / "nothing")
    bim = small_plink.with_suffix(".bim")
    bim.write_text(bim.read_text().replace("\t11\tA", "\televen\tA", 1))
    with pytest.raises(InputError, match=r"g\.bim: line 11: column pos must be numeric"):
        PlinkDataset(small_plink)
    bim.write_text("1 v0 0 1 A\n")
    with pytest.raises(InputError, match=r"g\.bim: expected 6 whitespace-separated columns, found 5"):
        PlinkDataset(small_plink)


def test_raw_block_pads_with_zero_rows(small_plink):
    data = PlinkDataset(small_plink)
    block = raw_block(data.bed, np.arange(16, 20), 8)
    assert block.shape == (8, 3) and (block[4:] == 0).all()
    np.testing.assert_array_equal(block[:4], data.bed.raw(np.arange(16, 20)))
    assert isinstance(data.bed, BedReader)


@pytest.mark.parametrize("n_samples", [1, 31, 32, 33, 301, 1000])
def test_counts_and_missing_call_index_match_a_decode_of_every_code(n_samples):
    """`bed_row_counts` and `missing_call_index` (64-bit word popcounts and bit extraction) against
    a plain decode of every 2-bit code: rows with no, some, most and all calls missing, words with
    many missing calls, a row width that is not whole words, a non-contiguous block, and code 01 in
    the padding slots of a malformed last byte (not a sample: neither counted as one nor indexed)."""
    rng = np.random.default_rng(n_samples)
    rates = np.array([0.0, 0.01, 0.1, 0.5, 0.9, 1.0] * 3)
    dosage = rng.integers(0, 3, (len(rates), n_samples)).astype(float)
    dosage[rng.random(dosage.shape) < rates[:, None]] = np.nan
    raw = encode_alt_dosages(dosage)
    pad = 4 * raw.shape[1] - n_samples
    if pad:
        raw[1::2, -1] |= np.uint8(sum(1 << 2 * s for s in range(4 - pad, 4)))  # 01 in every padding slot
    for block, rows in ((raw, dosage), (raw[::2], dosage[::2])):
        counts = bed_row_counts(block, n_samples)
        for name, value in (("missing", np.nan), ("hom_alt", 2), ("het", 1), ("hom_ref", 0)):
            expected = np.isnan(rows).sum(axis=1) if name == "missing" else (rows == value).sum(axis=1)
            np.testing.assert_array_equal(getattr(counts, name), expected, err_msg=name)
        index = missing_call_index(block, n_samples, n_samples)
        for j, row in enumerate(rows):
            expected = np.flatnonzero(np.isnan(row))
            np.testing.assert_array_equal(index[j, : len(expected)], expected)
            assert (index[j, len(expected) :] == 4 * block.shape[1]).all()  # the kernel's zero row
    if n_samples > 1:
        with pytest.raises(ValueError, match="more than"):
            missing_call_index(raw, n_samples, int(np.isnan(dosage).sum(axis=1).max()) - 1)
