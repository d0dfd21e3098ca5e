"""`wm-jax gwas --pfile` and `--bgen`: the decoders against plink2's import and cbgen, and the
association statistics against `plink2 --glm` on the same PGEN and BGEN files, with hard calls and
with imputation-like dosages (non-integer, missing samples)."""

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from genotype_files import imputed_probabilities, quantize, write_bgen

from wm_jax.data.bgen import BgenDataset
from wm_jax.data.dosages import counts_of_dosages, dosage_counts, hard_calls_from_dosages, missing_dosage_index
from wm_jax.data.genotypes import open_genotypes
from wm_jax.data.pgen import PgenDataset
from wm_jax.data.plink import PlinkDataset
from wm_jax.data.source import DOSAGE_UNIT, MISSING_DOSAGE, GenotypeInput, GenotypeSource
from wm_jax.gwas.run import GwasOptions, run_gwas

from conftest import plink2_or_skip

PHENOTYPES = ["UDIP1", "UDIP2", "UDIP3", "UDIP4"]


@pytest.fixture(scope="module")
def phenotypes(tiny_cohort, tmp_path_factory):
    """Four phenotypes, three missingness patterns (as in test_gwas_run)."""
    covariates = pd.read_csv(tiny_cohort / "covariates.tsv", sep="\t")
    rng = np.random.default_rng(17)
    table = covariates[["FID", "IID"]].copy()
    for j, name in enumerate(PHENOTYPES):
        table[name] = rng.standard_normal(len(table)) + 0.3 * covariates.age / 10
    table.loc[3:8, "UDIP3"] = np.nan
    table.loc[10:11, "UDIP4"] = np.nan
    path = tmp_path_factory.mktemp("pheno") / "pheno.tsv"
    table.to_csv(path, sep="\t", index=False, na_rep="NA")
    return path


def _write_dosage_bgen(tiny_cohort, path, bits, compression, phased=False, seed=3, every=3):
    """Every ``every``-th variant of the tiny cohort as imputation-like probabilities (the hard
    calls blurred for 40% of samples), the .bed's missing calls plus 1% more flagged missing."""
    data = PlinkDataset(tiny_cohort / "genotypes")
    rows = np.arange(0, data.n_variants, every)
    alt = data.bed.dosages(rows)
    rng = np.random.default_rng(seed)
    if phased:  # each haplotype's P(first allele = REF)
        haplotype = np.clip(1 - np.nan_to_num(alt, nan=1.0) / 2 + rng.normal(0, 0.15, alt.shape), 0, 1)
        top = (1 << bits) - 1
        stored = np.stack([np.rint(haplotype * top)] * 2, axis=-1).astype(np.uint64)
    else:
        stored = quantize(imputed_probabilities(alt, rng), bits)
    missing = np.isnan(alt) | (rng.random(alt.shape) < 0.01)
    bim = data.bim.iloc[rows]
    variants = list(zip(bim.chrom.astype(str), bim.id, bim.pos.astype(int), bim.ref, bim.alt))
    write_bgen(path, stored, bits, compression, variants, list(data.fam.iid), missing, phased)
    sample = path.with_suffix(".sample")
    lines = ["ID_1 ID_2 missing sex", "0 0 0 D"] + [f"{f} {i} 0 NA" for f, i in zip(data.fam.fid, data.fam.iid)]
    sample.write_text("\n".join(lines) + "\n")
    return path, sample


def _plink2(*args):
    subprocess.run([plink2_or_skip(), *map(str, args)], check=True, capture_output=True)


@pytest.fixture(scope="module")
def format_files(tiny_cohort, tmp_path_factory):
    """The same cohort as PGEN and BGEN (plink2's exports of the .bed), and imputation-like
    dosages as an 8-bit zlib BGEN (ours) and the PGEN plink2 makes of it."""
    plink2_or_skip()
    d = tmp_path_factory.mktemp("formats")
    bfile = tiny_cohort / "genotypes"
    _plink2("--bfile", bfile, "--make-pgen", "--out", d / "hard")
    _plink2("--bfile", bfile, "--export", "bgen-1.2", "bits=8", "ref-first", "--out", d / "b12")
    _plink2("--bfile", bfile, "--export", "bgen-1.3", "--out", d / "b13")  # zstd, 16 bits, REF last
    bgen, sample = _write_dosage_bgen(tiny_cohort, d / "dosage.bgen", bits=8, compression=1)
    _plink2("--bgen", bgen, "ref-first", "--sample", sample, "--make-pgen", "--out", d / "dosage")
    return {
        "pgen-hard": (GenotypeInput("pfile", str(d / "hard")), ["--pfile", d / "hard"]),
        "bgen-1.2-8bit": (
            GenotypeInput("bgen", str(d / "b12.bgen"), str(d / "b12.sample")),
            ["--bgen", d / "b12.bgen", "ref-first", "--sample", d / "b12.sample"],
        ),
        "bgen-1.3-zstd-ref-last": (
            GenotypeInput("bgen", str(d / "b13.bgen"), str(d / "b13.sample"), bgen_ref_first=False),
            ["--bgen", d / "b13.bgen", "ref-last", "--sample", d / "b13.sample"],
        ),
        "bgen-dosage": (
            GenotypeInput("bgen", str(bgen), str(sample)),
            ["--bgen", bgen, "ref-first", "--sample", sample],
        ),
        "pgen-dosage": (GenotypeInput("pfile", str(d / "dosage")), ["--pfile", d / "dosage"]),
    }


def _assert_equals_plink2(ours_prefix, ref_prefix):
    """The .bed path's test: same variants, A1, OBS_CT and NaN pattern; |dBETA| <= 1e-3 SE;
    |d(-log10 P)| <= max(1e-3, 1e-4 (-log10 P)). Returns the largest differences seen."""
    worst = dict.fromkeys(["beta_abs", "beta_rel", "se_abs", "se_rel", "p_abs", "p_rel"], 0.0)
    for name in PHENOTYPES:
        ours = pd.read_csv(f"{ours_prefix}.{name}.glm.linear", sep="\t")
        ref = pd.read_csv(f"{ref_prefix}.{name}.glm.linear", sep="\t")
        np.testing.assert_array_equal(ours.ID, ref.ID)
        np.testing.assert_array_equal(ours.A1, ref.A1)
        np.testing.assert_array_equal(ours.OBS_CT, ref.OBS_CT)
        np.testing.assert_array_equal(ours.BETA.isna(), ref.BETA.isna())
        ok = ref.BETA.notna()
        assert ok.sum() > 0.99 * len(ref)
        beta, se, p = ref.BETA[ok], ref.SE[ok], ref.P[ok]
        np.testing.assert_array_less(np.abs(ours.BETA[ok] - beta), 1e-3 * se + 1e-6 * np.abs(beta))
        ref_log10p = -np.log10(p)
        np.testing.assert_array_less(np.abs(ours.LOG10_P[ok] - ref_log10p), np.maximum(1e-3, 1e-4 * ref_log10p))
        for key, mine, theirs in (("beta", ours.BETA[ok], beta), ("se", ours.SE[ok], se), ("p", ours.P[ok], p)):
            difference = np.abs(mine - theirs)
            worst[f"{key}_abs"] = max(worst[f"{key}_abs"], float(difference.max()))
            worst[f"{key}_rel"] = max(worst[f"{key}_rel"], float((difference / np.abs(theirs)).max()))
    return worst


@pytest.mark.plink2
@pytest.mark.parametrize("case", ["pgen-hard", "bgen-1.2-8bit", "bgen-1.3-zstd-ref-last", "bgen-dosage", "pgen-dosage"])
def test_gwas_on_pgen_and_bgen_equals_plink2_glm(case, format_files, tiny_cohort, phenotypes, tmp_path, capsys):
    genotypes, plink2_input = format_files[case]
    covar = tiny_cohort / "covariates.tsv"
    run_gwas(genotypes, str(phenotypes), str(covar), str(tmp_path / "ours"), GwasOptions(format="plink2"))
    _plink2(*plink2_input, "--pheno", phenotypes, "--covar", covar, "--glm", "hide-covar", "--out", tmp_path / "ref")
    worst = _assert_equals_plink2(tmp_path / "ours", tmp_path / "ref")
    with capsys.disabled():
        print(
            f"\n{case}: largest differences from plink2 --glm: " + ", ".join(f"{k} {v:.2g}" for k, v in worst.items())
        )


@pytest.mark.plink2
@pytest.mark.parametrize("case", ["bgen-dosage", "pgen-dosage"])
def test_qc_filters_on_dosages_as_plink2(case, format_files, tiny_cohort, phenotypes, tmp_path):
    """--maf/--mac on dosages, --geno/--hwe on hard calls: the variants plink2 keeps."""
    genotypes, plink2_input = format_files[case]
    covar = tiny_cohort / "covariates.tsv"
    options = GwasOptions(format="plink2", pheno_names="UDIP1", maf=0.08, mac=20, geno=0.35, hwe=1e-3)
    run_gwas(genotypes, str(phenotypes), str(covar), str(tmp_path / "ours"), options)
    filters = ["--maf", 0.08, "--mac", 20, "--geno", 0.35, "--hwe", 1e-3]
    _plink2(
        *plink2_input,
        "--pheno",
        phenotypes,
        "--pheno-name",
        "UDIP1",
        "--covar",
        covar,
        *filters,
        "--glm",
        "hide-covar",
        "--out",
        tmp_path / "ref",
    )
    ours = pd.read_csv(tmp_path / "ours.UDIP1.glm.linear", sep="\t")
    ref = pd.read_csv(tmp_path / "ref.UDIP1.glm.linear", sep="\t")
    all_variants = open_genotypes(genotypes).n_variants
    assert 0.2 * all_variants < len(ref) < 0.95 * all_variants  # the filters removed some, not all
    np.testing.assert_array_equal(ours.ID, ref.ID)
    np.testing.assert_allclose(ours.BETA, ref.BETA, rtol=1e-4, atol=1e-5)


@pytest.mark.plink2
@pytest.mark.parametrize(
    "bits, compression, phased, ref_first",
    [(8, 1, False, True), (8, 1, False, False), (16, 2, False, True), (3, 0, False, False), (8, 2, True, True)],
)
def test_bgen_dosages_equal_plink2_import(bits, compression, phased, ref_first, tiny_cohort, tmp_path):
    """Our BGEN decoder gives exactly the dosages (1/16384 units) and hard calls that plink2 stores
    when it imports the file, for several bit depths, compressions, phased data and REF modes."""
    bgen, sample = _write_dosage_bgen(tiny_cohort, tmp_path / "d.bgen", bits, compression, phased, every=7)
    _plink2(
        "--bgen",
        bgen,
        "ref-first" if ref_first else "ref-last",
        "--sample",
        sample,
        "--make-pgen",
        "--out",
        tmp_path / "imported",
    )
    ours, plink2_import = BgenDataset(bgen, sample, ref_first=ref_first), PgenDataset(tmp_path / "imported")
    rows = np.arange(ours.n_variants)
    block = ours.read_block(rows)
    np.testing.assert_array_equal(block, plink2_import.read_block(rows))
    dosages = block[:, : ours.n_samples]
    assert (dosages % DOSAGE_UNIT != 0)[dosages != MISSING_DOSAGE].mean() > 0.1  # real, non-integer dosages
    columns = ["chrom", "id", "pos", "alt", "ref"]
    pd.testing.assert_frame_equal(ours.variants[columns], plink2_import.variants[columns], check_dtype=False)
    counts, expected = ours.count(rows), plink2_import.count(rows)
    for field in ("hom_alt", "het", "hom_ref", "missing", "alt_dosage", "dosage_missing"):
        np.testing.assert_array_equal(getattr(counts, field), getattr(expected, field), err_msg=field)


def test_bgen_decoder_agrees_with_cbgen(tiny_cohort, tmp_path):
    """Against an independent reader (cbgen): our dosages are cbgen's expected ALT counts to within
    half a unit of 1/16384 (plus plink2's rounding of remainders just over one half: 1/(2 top)),
    and missing exactly where cbgen reports missing."""
    cbgen = pytest.importorskip("cbgen")
    bgen, sample = _write_dosage_bgen(tiny_cohort, tmp_path / "d.bgen", bits=10, compression=2, every=11)
    ours = BgenDataset(bgen, sample)
    units = ours.read_block(np.arange(ours.n_variants))[:, : ours.n_samples]
    reader = cbgen.bgen_file(bgen)
    reader.create_metafile(tmp_path / "d.metafile")
    with cbgen.bgen_metafile(tmp_path / "d.metafile") as metafile:
        offsets = np.concatenate([metafile.read_partition(i).variants.offset for i in range(metafile.npartitions)])
    for i, offset in enumerate(offsets):
        genotype = reader.read_genotype(int(offset))
        np.testing.assert_array_equal(units[i] == MISSING_DOSAGE, genotype.missing)
        expected = (genotype.probability[:, 1] + 2 * genotype.probability[:, 2]) * DOSAGE_UNIT
        seen = ~genotype.missing
        assert np.abs(units[i][seen] - expected[seen]).max() <= 0.5 + 1 / 1023
    reader.close()


def test_hard_call_pgen_is_read_as_bed_bytes(tiny_cohort, phenotypes, tmp_path):
    """A hard-call .pgen (plink2 --make-pgen of the .bed) is read as the .bed's own bytes, with the
    .bed's genotype counts, so its statistics are the .bed's to the bit; read through the dosage
    path instead (uint16), the statistics agree up to float32 rounding."""
    plink2_or_skip()
    _plink2("--bfile", tiny_cohort / "genotypes", "--make-pgen", "--out", tmp_path / "hard")
    pgen, bed = PgenDataset(tmp_path / "hard"), PlinkDataset(tiny_cohort / "genotypes")
    assert pgen.hard_calls and pgen.block_dtype == np.uint8
    rows = np.arange(bed.n_variants)
    np.testing.assert_array_equal(pgen.read_block(rows), bed.read_block(rows))
    assert bed.count(rows).missing.sum() > 0  # the cohort has missing calls
    for field in ("hom_alt", "het", "hom_ref", "missing"):
        np.testing.assert_array_equal(getattr(pgen.count(rows), field), getattr(bed.count(rows), field))
    dosage_path = PgenDataset(tmp_path / "hard", as_dosages=True)
    assert not dosage_path.hard_calls
    expected = bed.bed.dosages(rows)  # (variants, samples) ALT counts, NaN missing
    units = dosage_path.read_block(rows)[:, : bed.n_samples]
    np.testing.assert_array_equal(units == MISSING_DOSAGE, np.isnan(expected))
    np.testing.assert_array_equal(units[~np.isnan(expected)], expected[~np.isnan(expected)] * DOSAGE_UNIT)

    covar = str(tiny_cohort / "covariates.tsv")
    run_gwas(GenotypeInput("pfile", str(tmp_path / "hard")), str(phenotypes), covar, str(tmp_path / "pgen"))
    run_gwas(str(tiny_cohort / "genotypes"), str(phenotypes), covar, str(tmp_path / "bed"))
    for column in ("beta", "se", "log10_p"):
        np.testing.assert_array_equal(
            np.load(tmp_path / f"pgen.gwas/{column}.npy"), np.load(tmp_path / f"bed.gwas/{column}.npy")
        )
    assert (tmp_path / "bed.gwas/variants.tsv").read_text() == (tmp_path / "pgen.gwas/variants.tsv").read_text()


def test_counts_of_dosages_equal_the_counts_of_their_hard_calls():
    """The one-bincount counts of a dosage block equal the plain ones over `hard_calls_from_dosages`,
    on dosages at, near and between the hard calls (the threshold's edges included) and missing."""
    rng = np.random.default_rng(1)
    units = rng.integers(0, 2 * DOSAGE_UNIT + 1, size=(300, 777)).astype(np.uint16)
    edges = np.array([0, 1638, 1639, 14745, 14746, DOSAGE_UNIT, 18022, 18023, 31129, 31130, 2 * DOSAGE_UNIT])
    mask = rng.random(units.shape) < 0.4
    units[mask] = rng.choice(edges.astype(np.uint16), size=mask.sum())
    units[rng.random(units.shape) < 0.05] = MISSING_DOSAGE
    fast, plain = counts_of_dosages(units), dosage_counts(units, hard_calls_from_dosages(units))
    assert plain.missing.min() > plain.dosage_missing.max() > 0  # some dosages without a hard call
    for field in ("hom_alt", "het", "hom_ref", "missing", "alt_dosage", "dosage_missing"):
        np.testing.assert_array_equal(getattr(fast, field), getattr(plain, field), err_msg=field)


def test_each_reader_is_a_genotype_source(tiny_cohort, tmp_path):
    """The .bed, PGEN and BGEN readers, opened through `open_genotypes`, have every member of
    `GenotypeSource`, and their `dosages(rows)` agree on the same calls."""
    bfile = tiny_cohort / "genotypes"
    _plink2("--bfile", bfile, "--make-pgen", "--out", tmp_path / "hard")
    _plink2("--bfile", bfile, "--export", "bgen-1.2", "bits=8", "ref-first", "--out", tmp_path / "b12")
    inputs = [
        GenotypeInput("bfile", str(bfile)),
        GenotypeInput("pfile", str(tmp_path / "hard")),
        GenotypeInput("bgen", str(tmp_path / "b12.bgen"), str(tmp_path / "b12.sample")),
    ]
    sources = [open_genotypes(source) for source in inputs]
    assert [type(source) for source in sources] == [PlinkDataset, PgenDataset, BgenDataset]
    rows = np.arange(0, sources[0].n_variants, 97)
    expected = sources[0].dosages(rows)
    assert np.isnan(expected).any()
    for source in sources:
        assert isinstance(source, GenotypeSource)
        np.testing.assert_array_equal(source.dosages(rows), expected)
    assert not isinstance(object(), GenotypeSource)


def test_missing_dosage_index_lists_each_rows_missing_dosages_in_order():
    """`missing_dosage_index` (ranks from the rows' counts, no sort) against a loop over the rows,
    with padding slots past the samples ignored and a row over the width refused."""
    rng = np.random.default_rng(4)
    block = rng.integers(0, 2 * DOSAGE_UNIT + 1, size=(50, 104)).astype(np.uint16)
    block[rng.random(block.shape) < rng.uniform(0, 0.3, (50, 1))] = MISSING_DOSAGE
    block[:, 101:] = MISSING_DOSAGE  # padding slots of 101 samples: not samples
    block[7, :101] = MISSING_DOSAGE
    index = missing_dosage_index(block, 101, 101)
    for j, row in enumerate(block[:, :101]):
        expected = np.flatnonzero(row == MISSING_DOSAGE)
        np.testing.assert_array_equal(index[j, : len(expected)], expected)
        assert (index[j, len(expected) :] == 104).all()
    with pytest.raises(ValueError, match="more than 100"):
        missing_dosage_index(block, 101, 100)


def test_bgen_counts_on_the_device_give_the_same_bytes(tiny_cohort, phenotypes, tmp_path, monkeypatch):
    """A dosage BGEN's GWAS with each chunk counted on the device (the default on GPUs and TPUs)
    writes the bytes of the host's counting: every result column and variants.tsv (MAF and MAC on
    dosages, call rate and HWE on plink2's hard calls of them, A1)."""
    from wm_jax.gwas import stream

    bgen, sample = _write_dosage_bgen(tiny_cohort, tmp_path / "dosage.bgen", bits=8, compression=1, every=2)
    monkeypatch.setattr(stream, "CHUNK_BYTES", 40 * 2 * 104)  # several chunks
    written = {}
    for on_device in (False, True):
        monkeypatch.setattr(stream, "COUNTS_ON_DEVICE", on_device)
        prefix = tmp_path / f"counts_{on_device}"
        run_gwas(
            GenotypeInput("bgen", str(bgen), str(sample)),
            str(phenotypes),
            str(tiny_cohort / "covariates.tsv"),
            str(prefix),
            GwasOptions(block_size=32, maf=0.05),
        )
        assert ("counting (on the device)" in Path(f"{prefix}.log").read_text()) == on_device
        folder = Path(f"{prefix}.gwas")
        written[on_device] = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix in (".npy", ".tsv")}
    assert "variants.tsv" in written[False] and len(written[False]) > 3
    assert written[True] == written[False]
