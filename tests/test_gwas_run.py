"""`wm-jax gwas` end to end: against plink2 --glm on the simulated cohort, outputs, bad input."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wm_jax.errors import InputError
from wm_jax.gwas.qc import hwe_exact_p
from wm_jax.gwas.run import GwasOptions, run_gwas

from conftest import plink2_or_skip


@pytest.fixture(scope="module")
def phenotypes(tiny_cohort, tmp_path_factory):
    covariates = pd.read_csv(tiny_cohort / "covariates.tsv", sep="\t")
    rng = np.random.default_rng(7)
    table = covariates[["FID", "IID"]].copy()
    for j in range(4):
        table[f"UDIP{j + 1}"] = rng.standard_normal(len(table)) + 0.3 * covariates.age / 10
    table.loc[3:8, "UDIP3"] = np.nan  # a second missingness pattern
    table.loc[10:11, "UDIP4"] = np.nan  # a third
    path = tmp_path_factory.mktemp("pheno") / "pheno.tsv"
    table.to_csv(path, sep="\t", index=False, na_rep="NA")
    return path


@pytest.mark.plink2
def test_gwas_equals_plink2_glm(tiny_cohort, phenotypes, tmp_path):
    plink2 = plink2_or_skip()
    bfile, covar = tiny_cohort / "genotypes", tiny_cohort / "covariates.tsv"
    run_gwas(
        str(bfile), str(phenotypes), str(covar), str(tmp_path / "ours"), GwasOptions(format="plink2", block_size=1024)
    )
    subprocess.run(
        [
            plink2,
            "--bfile",
            str(bfile),
            "--pheno",
            str(phenotypes),
            "--covar",
            str(covar),
            "--glm",
            "hide-covar",
            "--out",
            str(tmp_path / "ref"),
        ],
        check=True,
        capture_output=True,
    )
    for name in ["UDIP1", "UDIP2", "UDIP3", "UDIP4"]:
        ours = pd.read_csv(tmp_path / f"ours.{name}.glm.linear", sep="\t")
        ref = pd.read_csv(tmp_path / f"ref.{name}.glm.linear", sep="\t")
        assert list(ours.columns[:6]) == ["#CHROM", "POS", "ID", "REF", "ALT", "A1"]
        np.testing.assert_array_equal(ours.ID, ref.ID)
        np.testing.assert_array_equal(ours.A1, ref.A1)
        np.testing.assert_array_equal(ours.OBS_CT, ref.OBS_CT)
        np.testing.assert_array_equal(ours.BETA.isna(), ref.BETA.isna())
        ok = ref.BETA.notna()
        assert ok.sum() > 0.99 * len(ref)
        # Targets: |dBETA| <= 1e-3 SE; |d(-log10 P)| <= max(1e-3, 1e-4 * (-log10 P)). plink2 prints 6 digits.
        np.testing.assert_array_less(
            np.abs(ours.BETA[ok] - ref.BETA[ok]), 1e-3 * ref.SE[ok] + 1e-6 * np.abs(ref.BETA[ok])
        )
        ref_log10p = -np.log10(ref.P[ok])
        np.testing.assert_array_less(np.abs(ours.LOG10_P[ok] - ref_log10p), np.maximum(1e-3, 1e-4 * ref_log10p))


def test_compact_output_and_multivariate(tiny_cohort, phenotypes, tmp_path):
    prefix = run_gwas(
        str(tiny_cohort / "genotypes"),
        str(phenotypes),
        str(tiny_cohort / "covariates.tsv"),
        str(tmp_path / "run"),
        GwasOptions(maf=0.05, block_size=512),
    )
    compact = tmp_path / "run.gwas"
    beta = np.load(compact / "beta.npy")
    variants = pd.read_csv(compact / "variants.tsv", sep="\t")
    assert beta.shape == (4, len(variants))
    log_text = (tmp_path / "run.log").read_text()
    assert "--maf 0.05:" in log_text and "variants removed" in log_text
    multivariate = pd.read_csv(tmp_path / "run.multivariate.tsv", sep="\t")
    assert len(multivariate) == len(variants) and set(multivariate.N_PHENO) == {4}
    # Omnibus chi2 = t' R^-1 t across all 4 phenotypes (three missingness patterns), R the correlation
    # of the phenotypes residualised on the covariates (NumPy least squares, each on its own
    # samples), pairwise over the samples that have both.
    table = pd.read_csv(phenotypes, sep="\t")
    covariates = pd.read_csv(tiny_cohort / "covariates.tsv", sep="\t").iloc[:, 2:].to_numpy()
    design = np.column_stack([np.ones(len(covariates)), covariates])
    residuals = np.full((len(table), 4), np.nan)
    for j in range(4):
        y = table[f"UDIP{j + 1}"].to_numpy()
        keep = ~np.isnan(y)
        residuals[keep, j] = y[keep] - design[keep] @ np.linalg.lstsq(design[keep], y[keep], rcond=None)[0]
    correlation = pd.DataFrame(residuals).corr().to_numpy()  # pairwise complete, centred: means are 0 here
    t = beta / np.load(compact / "se.npy")
    expected = np.einsum("pv,pq,qv->v", t, np.linalg.inv(correlation), t)
    chi2 = multivariate.OMNIBUS_CHI2.to_numpy()
    finite = np.isfinite(chi2)
    assert finite.mean() > 0.99
    np.testing.assert_allclose(chi2[finite], expected[finite], rtol=2e-3, atol=1e-4)
    best = np.nanargmax(np.load(compact / "log10_p.npy"), axis=0)
    np.testing.assert_array_equal(multivariate.MIN_P_PHENO, np.array([f"UDIP{j + 1}" for j in range(4)])[best])
    assert prefix == tmp_path / "run"
    assert not list(tmp_path.glob(".*partial*"))
    # A rerun to the same prefix replaces the outputs, the compact directory included (as PLINK does).
    run_gwas(
        str(tiny_cohort / "genotypes"),
        str(phenotypes),
        str(tiny_cohort / "covariates.tsv"),
        str(tmp_path / "run"),
        GwasOptions(pheno_names="UDIP2", maf=0.05, block_size=512),
    )
    np.testing.assert_allclose(np.load(compact / "beta.npy"), beta[1:2], rtol=1e-4, atol=1e-6)  # float32 rounding
    assert not list(tmp_path.glob(".*partial*"))


def test_hwe_exact_against_enumeration():
    from math import exp, lgamma

    def reference(het, hom1, hom2):
        n = het + hom1 + hom2
        rare = 2 * min(hom1, hom2) + het

        def prob(h):
            homr = (rare - h) // 2
            homc = n - h - homr
            return exp(
                lgamma(n + 1)
                - lgamma(homr + 1)
                - lgamma(h + 1)
                - lgamma(homc + 1)
                + h * np.log(2)
                + lgamma(rare + 1)
                + lgamma(2 * n - rare + 1)
                - lgamma(2 * n + 1)
            )

        probs = {h: prob(h) for h in range(rare % 2, rare + 1, 2)}
        return sum(p for p in probs.values() if p <= probs[het] * (1 + 1e-8))

    cases = [(10, 40, 50), (0, 30, 70), (50, 25, 25), (3, 1, 96), (20, 0, 80)]
    got = hwe_exact_p(*map(np.array, zip(*cases)))
    np.testing.assert_allclose(got, [reference(*c) for c in cases], rtol=1e-9)


def _error(tmp_path, tiny_cohort, pheno, covar=None, **options):
    with pytest.raises(InputError) as info:
        run_gwas(
            str(tiny_cohort / "genotypes"),
            str(pheno),
            str(covar or tiny_cohort / "covariates.tsv"),
            str(tmp_path / "bad"),
            GwasOptions(**options),
        )
    assert not list(tmp_path.glob("bad*")) and not list(tmp_path.glob(".bad*"))
    return str(info.value)


def test_bad_inputs(tiny_cohort, phenotypes, tmp_path):
    table = pd.read_csv(phenotypes, sep="\t")
    constant = table.assign(UDIP2=1.0)
    constant.to_csv(tmp_path / "constant.tsv", sep="\t", index=False)
    assert "phenotype UDIP2 is constant" in _error(tmp_path, tiny_cohort, tmp_path / "constant.tsv")
    assert "no phenotype column named 'UDIP9'" in _error(tmp_path, tiny_cohort, phenotypes, pheno_names="UDIP9")
    covariates = pd.read_csv(tiny_cohort / "covariates.tsv", sep="\t")
    covariates.assign(age2=2 * covariates.age).to_csv(tmp_path / "collinear.tsv", sep="\t", index=False)
    message = _error(tmp_path, tiny_cohort, phenotypes, covar=tmp_path / "collinear.tsv")
    assert "collinear.tsv: covariate age2 is constant or collinear" in message
    message = _error(tmp_path, tiny_cohort, phenotypes, maf=0.6)
    assert "none is left of the 7270 variants after --maf 0.6 removed 7270" in message and ".log" not in message
    table.assign(FID="other", IID="x" + table.IID).to_csv(tmp_path / "strangers.tsv", sep="\t", index=False)
    assert "no sample matches" in _error(tmp_path, tiny_cohort, tmp_path / "strangers.tsv")


def test_cli_gwas_help_and_error(tiny_cohort, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "wm_jax.cli",
            "gwas",
            "--bfile",
            str(tiny_cohort / "genotypes"),
            "--pheno",
            str(tmp_path / "none.tsv"),
            "--covar",
            str(tiny_cohort / "covariates.tsv"),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "none.tsv: table not found" in result.stderr
    assert not list(tmp_path.glob("o*"))


def test_hits_and_min_p_phenotype(tiny_cohort, tmp_path):
    """PREFIX.hits.tsv holds exactly the phenotype-variant pairs at P < 5e-8 (by phenotype, then
    variant), with their compact-format values; MIN_P_PHENO is the phenotype of largest -log10 P."""
    from wm_jax.data.plink import PlinkDataset

    data = PlinkDataset(tiny_cohort / "genotypes")
    dosage = np.nan_to_num(data.bed.dosages(np.array([100, 2000, 5000])), nan=1.0)
    rng = np.random.default_rng(3)
    y = 0.3 * rng.standard_normal((data.n_samples, 3)) + dosage.T
    y[rng.random(data.n_samples) < 0.05, 2] = np.nan
    pheno = tmp_path / "planted.tsv"
    pd.DataFrame({"FID": data.fam.fid, "IID": data.fam.iid, "A": y[:, 0], "B": y[:, 1], "C": y[:, 2]}).to_csv(
        pheno, sep="\t", index=False, na_rep="NA"
    )
    run_gwas(str(tiny_cohort / "genotypes"), str(pheno), str(tiny_cohort / "covariates.tsv"), str(tmp_path / "run"))
    log10_p = np.load(tmp_path / "run.gwas" / "log10_p.npy")
    beta = np.load(tmp_path / "run.gwas" / "beta.npy")
    variants = pd.read_csv(tmp_path / "run.gwas" / "variants.tsv", sep="\t")
    expected = np.argwhere(np.nan_to_num(log10_p) > -np.log10(5e-8))
    hits = pd.read_csv(tmp_path / "run.hits.tsv", sep="\t")
    assert len(expected) >= 3 and len(hits) == len(expected)
    np.testing.assert_array_equal(hits.PHENO, np.array(["A", "B", "C"])[expected[:, 0]])
    np.testing.assert_array_equal(hits.ID, variants.ID.to_numpy()[expected[:, 1]])
    np.testing.assert_allclose(hits.BETA, beta[expected[:, 0], expected[:, 1]], rtol=1e-5)
    multivariate = pd.read_csv(tmp_path / "run.multivariate.tsv", sep="\t")
    np.testing.assert_array_equal(multivariate.MIN_P_PHENO, np.array(["A", "B", "C"])[np.nanargmax(log10_p, axis=0)])


@pytest.mark.plink2
@pytest.mark.parametrize("n_samples", [49, 50, 103, 104])
def test_a1_on_exact_frequency_ties_as_plink2(tmp_path, n_samples):
    """At an allele frequency of exactly 0.5 plink2 picks A1 by the float64 rounding of
    count * (1 / (2 * observed)); variants with and without missing calls, several sample counts."""
    from wm_jax.data.plink import encode_alt_dosages

    plink2 = plink2_or_skip()
    rng = np.random.default_rng(n_samples)
    rows = []
    for n_missing in (0, 1, 2, 3):
        observed = n_samples - n_missing
        hom = observed // 4
        dosage = np.array([2.0] * hom + [0.0] * hom + [1.0] * (observed - 2 * hom) + [np.nan] * n_missing)
        rows.append(dosage[rng.permutation(n_samples)])
    rows.append(rng.binomial(2, 0.3, n_samples).astype(float))  # and a plain one
    prefix = tmp_path / "ties"
    (tmp_path / "ties.bed").write_bytes(bytes([0x6C, 0x1B, 0x01]) + encode_alt_dosages(np.array(rows)).tobytes())
    (tmp_path / "ties.bim").write_text("".join(f"1\tv{i}\t0\t{i + 1}\tT\tG\n" for i in range(len(rows))))
    ids = [f"s{i}" for i in range(n_samples)]
    (tmp_path / "ties.fam").write_text("".join(f"{s}\t{s}\t0\t0\t0\t-9\n" for s in ids))
    pd.DataFrame({"FID": ids, "IID": ids, "y": rng.standard_normal(n_samples)}).to_csv(
        tmp_path / "y.tsv", sep="\t", index=False
    )
    pd.DataFrame({"FID": ids, "IID": ids, "c": rng.standard_normal(n_samples)}).to_csv(
        tmp_path / "c.tsv", sep="\t", index=False
    )
    run_gwas(
        str(prefix),
        str(tmp_path / "y.tsv"),
        str(tmp_path / "c.tsv"),
        str(tmp_path / "ours"),
        GwasOptions(format="plink2"),
    )
    subprocess.run(
        [
            plink2,
            "--bfile",
            str(prefix),
            "--pheno",
            str(tmp_path / "y.tsv"),
            "--covar",
            str(tmp_path / "c.tsv"),
            "--glm",
            "hide-covar",
            "--out",
            str(tmp_path / "ref"),
        ],
        check=True,
        capture_output=True,
    )
    ours = pd.read_csv(tmp_path / "ours.y.glm.linear", sep="\t")
    ref = pd.read_csv(tmp_path / "ref.y.glm.linear", sep="\t")
    np.testing.assert_array_equal(ours.A1, ref.A1)
    np.testing.assert_allclose(ours.BETA, ref.BETA, rtol=1e-3, atol=1e-5)


def test_result_pages_are_dropped_by_the_span_written(tiny_cohort, phenotypes, tmp_path, monkeypatch):
    """The stream drops the result store's pages each time RELEASE_SPAN more variant positions have
    been written (chunks are written whole, in one contiguous run each), so memory stays flat in the
    number of variants: with chunks of about 500 variants and a span of 1000, at least one drop per
    1000 variants streamed."""
    from wm_jax.gwas import results, stream

    calls = []
    release = results.ResultStore.release
    monkeypatch.setattr(results.ResultStore, "release", lambda self: (calls.append(1), release(self))[1])
    monkeypatch.setattr(stream, "RELEASE_SPAN", 1000)
    monkeypatch.setattr(stream, "CHUNK_BYTES", 500 * 26)  # 103 samples: 26 bytes a variant
    run_gwas(
        str(tiny_cohort / "genotypes"),
        str(phenotypes),
        str(tiny_cohort / "covariates.tsv"),
        str(tmp_path / "run"),
        GwasOptions(block_size=64),
    )
    n_streamed = int(np.load(tmp_path / "run.gwas" / "omnibus_chi2.npy").shape[0])
    assert n_streamed > 5000
    assert len(calls) >= n_streamed // 1000 - 1


_SLOW_CHUNKS = """
import sys, time
from wm_jax.gwas import stream
stream.CHUNK_BYTES = 256 * 26  # 256 variants of 103 samples a chunk
stream.SYNC_SECONDS = 0  # record every chunk
store = stream._Stream._store
stream._Stream._store = lambda self, *args: (store(self, *args), time.sleep(0.2))[0]
from wm_jax.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_killed_run_resumes_from_its_last_chunk_with_the_same_bytes(tiny_cohort, phenotypes, tmp_path, monkeypatch):
    """`wm-jax gwas` killed with SIGKILL during its pass, then rerun with the same command, streams
    only the chunks it had not recorded, and writes the bytes of an uninterrupted run."""
    import signal
    import time

    from wm_jax.gwas import stream

    arguments = ["--bfile", str(tiny_cohort / "genotypes"), "--pheno", str(phenotypes)]
    arguments += ["--covar", str(tiny_cohort / "covariates.tsv"), "--maf", "0.02", "--block-size", "16"]
    killed = subprocess.Popen([sys.executable, "-c", _SLOW_CHUNKS, "gwas", *arguments, "--out", str(tmp_path / "run")])
    deadline = time.time() + 300
    while len(list(tmp_path.glob(".run.gwas.resume-*/progress/*.npz"))) < 4:
        assert killed.poll() is None and time.time() < deadline, "the run ended before it was killed"
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "run.gwas").exists()
    monkeypatch.setattr(stream, "CHUNK_BYTES", 256 * 26)
    options = GwasOptions(maf=0.02, block_size=16)
    covar = str(tiny_cohort / "covariates.tsv")
    run_gwas(str(tiny_cohort / "genotypes"), str(phenotypes), covar, str(tmp_path / "run"), options)
    resumed = re.search(r"resuming: (\d+) of (\d+) variants", (tmp_path / "run.log").read_text())
    assert resumed and 4 * 256 <= int(resumed.group(1)) < int(resumed.group(2))
    assert list(tmp_path.glob(".run.gwas.resume-*")) == []  # published as run.gwas
    run_gwas(str(tiny_cohort / "genotypes"), str(phenotypes), covar, str(tmp_path / "whole"), options)
    assert "resuming" not in (tmp_path / "whole.log").read_text()
    names = sorted(p.name for p in (tmp_path / "whole.gwas").iterdir() if p.name != ".wm-jax-output.json")
    assert names == sorted(p.name for p in (tmp_path / "run.gwas").iterdir() if p.name != ".wm-jax-output.json")
    for name in [*names, "../whole.hits.tsv", "../whole.multivariate.tsv"]:
        whole = (tmp_path / "whole.gwas" / name).resolve()
        run = Path(str(whole).replace("whole", "run"))
        if whole.suffix == ".npy":
            assert whole.read_bytes() == run.read_bytes(), name
        else:  # meta.json names the output files
            assert whole.read_text().replace("whole", "run") == run.read_text(), name


def test_other_resume_directories_of_the_prefix_are_removed(tmp_path):
    """A run removes this prefix's resume directories of other keys, marked or not (a run killed
    before it marked its store), and keeps its own key's and those whose marker names another prefix."""
    import json

    from wm_jax.gwas import resume

    out = tmp_path / "res"
    own, unmarked, marked, foreign = (tmp_path / f".res.gwas.resume-{k}" for k in ("a1", "b2", "c3", "d4"))
    for path in (own, unmarked, marked, foreign):
        path.mkdir()
    (marked / resume.MARKER).write_text(json.dumps({"prefix": str(out)}))
    (foreign / resume.MARKER).write_text(json.dumps({"prefix": str(tmp_path / "other" / "res")}))
    resume.remove_other_keys(out, "a1")
    assert sorted(p.name for p in tmp_path.iterdir()) == [own.name, foreign.name]


def _run_tiny(tiny_cohort, phenotypes, prefix) -> None:
    """`run_gwas` on the tiny cohort, with room for 4 missing calls in the gathered correction (so
    every kind of kernel shape runs: none, 2, 4 and the exact path)."""
    run_gwas(
        str(tiny_cohort / "genotypes"),
        str(phenotypes),
        str(tiny_cohort / "covariates.tsv"),
        str(prefix),
        GwasOptions(block_size=64, max_missing=4),
    )


@pytest.mark.parametrize(
    "knob, logged",
    [("INDEX_ON_DEVICE", "index built on the device"), ("COUNTS_ON_DEVICE", "counting (on the device)")],
)
def test_device_index_and_device_counts_give_the_same_bytes(
    knob, logged, tiny_cohort, phenotypes, tmp_path, monkeypatch
):
    """The stream with the missing-call index built in the kernel, or with each chunk's genotype
    counts taken on the device (both the default on GPUs and TPUs), writes the bytes of the stream
    with the host's (CPU): every result column, variants.tsv (the counts' MAF, MAC, call rate, HWE
    and A1) and the hits. The tiny cohort's variants have up to a few missing calls, so with room for
    4 in the gathered correction every kind of kernel shape runs both ways (none, 2, 4 and the exact
    path), routed by the counts."""
    from wm_jax.gwas import stream

    monkeypatch.setattr(stream, "CHUNK_BYTES", 500 * 26)  # several chunks
    outputs = {}
    for on_device in (False, True):
        monkeypatch.setattr(stream, knob, on_device)
        prefix = tmp_path / f"device_{on_device}"
        _run_tiny(tiny_cohort, phenotypes, prefix)
        log_text = Path(f"{prefix}.log").read_text()
        assert (logged in log_text) == on_device
        outputs[on_device] = {
            path.relative_to(tmp_path / f"device_{on_device}.gwas"): path.read_bytes()
            for path in sorted((tmp_path / f"device_{on_device}.gwas").iterdir())
            if path.name != "meta.json" and not path.name.startswith(".")  # records with times
        }
        outputs[on_device]["hits"] = Path(f"{prefix}.hits.tsv").read_bytes()
        widths = {int(w) for w in re.findall(r"room for (\d+) missing calls each \(index", log_text)}
        assert {0, 2, 4} <= widths and max(widths) > 4, widths  # every kind of shape ran
    assert outputs[True].keys() == outputs[False].keys()
    for name in outputs[False]:
        assert outputs[True][name] == outputs[False][name], name


def test_check_block_result_refuses_a_nan_se_beside_a_beta():
    """A test with a BETA has a finite SE and P; NaN in both (no test) passes."""
    from wm_jax.gwas.kernel import BlockResult, check_block_result

    beta = np.array([[0.1, np.nan], [0.2, 0.3]], np.float32)
    se = np.array([[0.05, np.nan], [0.05, 0.04]], np.float32)
    per_group = np.zeros((2, 1), np.int32)
    check_block_result(BlockResult(beta, se, se, per_group, per_group, per_group, np.zeros(2)))
    se[1, 1] = np.float32(np.nan)
    expected = r"NaN SE or P for 1 tests that have a BETA \(kernel phenotype columns \[1\]"
    with pytest.raises(RuntimeError, match=expected):
        check_block_result(BlockResult(beta, se, beta, per_group, per_group, per_group, np.zeros(2)))


def test_a_kernel_fault_fails_the_run_and_publishes_nothing(tiny_cohort, phenotypes, tmp_path, monkeypatch):
    """A kernel that returns a NaN SE for tests with a BETA (the fault docs/gwas.md describes) stops
    the run before anything is published, instead of writing wrong statistics."""
    import jax

    from wm_jax.gwas import stream

    real = stream.make_block_fn

    def faulty(*args, **kwargs):
        fn = real(*args, **kwargs)

        def step(*inputs):
            result = fn(*inputs)
            return result._replace(se=result.se.at[:, -1].set(np.nan))

        return jax.jit(step)

    monkeypatch.setattr(stream, "make_block_fn", faulty)
    monkeypatch.setattr(stream, "CHUNK_BYTES", 500 * 26)
    prefix = tmp_path / "faulty"
    with pytest.raises(RuntimeError, match="NaN SE or P"):
        _run_tiny(tiny_cohort, phenotypes, prefix)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no output, no log, no resume directory


@pytest.mark.slow
def test_large_run_with_missing_calls_has_a_finite_se_for_every_beta_in_fresh_processes(tmp_path):
    """The wrong-results fault of docs/gwas.md: at N = 35,000 and 128 phenotypes, with the batched dot
    for c' A^-1 c, about half of the processes left one or two phenotype columns NaN for every variant
    with missing calls. Four fresh processes (each compiling its own kernels, as the fault came and
    went by process) run 2,048 variants, missing calls in half of them; every one must finish (the
    kernel check refuses a NaN SE beside a BETA) with identical bytes."""
    n, m, p = 35_000, 2048, 128
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from gwas_device import build_cohort
    from gwas_device import phenotypes as write_phenotypes

    prefix = build_cohort(tmp_path / "cohort", n, m)
    pheno = write_phenotypes(tmp_path / "cohort", n, p)
    results = []
    for run in range(4):
        out = tmp_path / f"run{run}" / "out"
        out.parent.mkdir()
        env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(out.parent / "cache")}
        done = subprocess.run(
            [sys.executable, "-m", "wm_jax.cli", "gwas", "--bfile", str(prefix), "--pheno", str(pheno)]
            + ["--covar", str(prefix.parent / "covar.tsv"), "--out", str(out)],
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        se = np.load(f"{out}.gwas/se.npy")
        beta = np.load(f"{out}.gwas/beta.npy")
        assert not (np.isnan(se) & ~np.isnan(beta)).any()
        results.append((se.tobytes(), beta.tobytes(), np.load(f"{out}.gwas/omnibus_chi2.npy").tobytes()))
    assert all(r == results[0] for r in results)
