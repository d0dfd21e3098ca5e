"""`wm-jax h2 --method rhe` (randomized Haseman-Elston regression) against NumPy float64, the
simulated truth and BOLT-REML.

References and tolerances:
- the streamed block sums (y'PKPy, tr(PKP), X X' P z per jackknife block) against the same sums
  in NumPy float64 from the dosages: rtol 1e-4 (float32 products of standardised genotypes);
- h2 against exact Haseman-Elston regression (the full K and the exact tr((PKP)^2) in float64):
  within 0.002 with 1,000 probes (the probes' estimate of tr((PKP)^2) is the one approximation;
  at the default 100 probes its error is about 0.005, a tenth of the jackknife SE here);
- the simulated truth: within 2 jackknife SEs for at least five of six traits, h2 0.1 to 0.6, and
  within 3 for all (the issue's criterion; one z of 2.3 in six is what chance gives);
- BOLT-REML 2.4 (`bolt --reml`) on the same files: see test_rhe_is_close_to_bolt_reml.
"""

import os
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from wm_jax.data.genotypes import open_genotypes
from wm_jax.data.plink import encode_alt_dosages, write_bed
from wm_jax.heritability.rhe import RheOptions, rhe_h2, stream_sums
from wm_jax.simulate.traits import heritable_traits, standardised_dosages

H2 = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
N, M = 2000, 6000


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Independent variants (MAF 0.05-0.5, 0.2% missing calls), 3 covariates, six traits of known h2."""
    rng = np.random.default_rng(5)
    out = tmp_path_factory.mktemp("rhe")
    g = rng.binomial(2, rng.uniform(0.05, 0.5, M), (N, M)).astype(np.float32)
    g[rng.random((N, M)) < 0.002] = np.nan
    g[:, 7] = 1.0  # a constant variant, which does not count in M
    write_bed(out / "g.bed", (encode_alt_dosages(g.T[i : i + 1024]) for i in range(0, M, 1024)))
    ids = [f"s{i}" for i in range(N)]
    bim = {"c": 1, "id": [f"v{i}" for i in range(M)], "cm": 0, "pos": np.arange(M) * 100 + 1, "a": "A", "b": "G"}
    pd.DataFrame(bim).to_csv(out / "g.bim", sep="\t", header=False, index=False)
    pd.DataFrame({"f": ids, "i": ids, "p": 0, "m": 0, "s": 1, "ph": -9}).to_csv(
        out / "g.fam", sep=" ", header=False, index=False
    )
    covariates = rng.standard_normal((N, 3))
    traits = heritable_traits(open_genotypes(out / "g"), H2, rng, covariates=covariates)
    names = [f"T{i + 1}" for i in range(len(H2))]
    pd.DataFrame({"FID": ids, "IID": ids, **dict(zip(names, traits.T, strict=True))}).to_csv(
        out / "pheno.tsv", sep="\t", index=False
    )
    covar = {f"C{i + 1}": covariates[:, i] for i in range(3)}
    pd.DataFrame({"FID": ids, "IID": ids, **covar}).to_csv(out / "covar.tsv", sep="\t", index=False)
    return {"dir": out, "g": g, "traits": traits, "covariates": covariates, "names": names}


def _projection(covariates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    basis = np.linalg.qr(np.column_stack([np.ones(len(covariates)), covariates]))[0]
    return basis, np.eye(len(covariates)) - basis @ basis.T


def test_streamed_sums_equal_numpy_float64(cohort):
    data = open_genotypes(cohort["dir"] / "g")
    rng = np.random.default_rng(0)
    basis, projection = _projection(cohort["covariates"])
    y = projection @ cohort["traits"]
    probes = projection @ rng.standard_normal((N, 7))
    right = np.zeros((data.n_slots, y.shape[1] + basis.shape[1] + 7))
    right[:N] = np.concatenate([y, basis, probes], axis=1)
    analysed = np.arange(data.n_slots) < N
    options = RheOptions(block_size=256, jackknife_blocks=5)
    sums = stream_sums(data, np.arange(M), analysed, right, y.shape[1], basis.shape[1], options)
    x = standardised_dosages(cohort["g"].astype(np.float64))
    bounds = np.array_split(np.arange(-(-M // 256)), 5)
    for j, steps in enumerate(bounds):
        cols = slice(steps[0] * 256, min((steps[-1] + 1) * 256, M))
        xb = x[:, cols]
        np.testing.assert_allclose(sums.yky[j], ((xb.T @ y) ** 2).sum(axis=0), rtol=1e-4)
        np.testing.assert_allclose(sums.trace[j], ((projection @ xb) ** 2).sum(), rtol=1e-4)
        assert sums.m[j] == int((xb.std(axis=0) > 0).sum())
        np.testing.assert_allclose(
            sums.v[j][:N], xb @ (xb.T @ probes), rtol=1e-4, atol=1e-3 * np.abs(xb @ (xb.T @ probes)).max()
        )


def test_h2_equals_exact_haseman_elston(cohort):
    data = open_genotypes(cohort["dir"] / "g")
    options = RheOptions(probes=1000, jackknife_blocks=10)
    result = rhe_h2(data, np.arange(M), cohort["traits"], cohort["covariates"], cohort["names"], options)
    x = standardised_dosages(cohort["g"].astype(np.float64))
    x = x[:, x.std(axis=0) > 0]
    basis, projection = _projection(cohort["covariates"])
    pkp = projection @ (x @ x.T / x.shape[1]) @ projection
    a = np.array([[(pkp * pkp).sum(), np.trace(pkp)], [np.trace(pkp), N - basis.shape[1]]])
    for t in range(len(H2)):
        r = projection @ cohort["traits"][:, t]
        s_g, s_e = np.linalg.solve(a, [r @ pkp @ r, r @ r])
        assert abs(result.table.h2[t] - s_g / (s_g + s_e)) < 0.002
    assert (result.table.m == M - 1).all() and (result.table.n == N).all()


def test_h2_recovers_the_simulated_truth(cohort):
    data = open_genotypes(cohort["dir"] / "g")
    table = rhe_h2(data, np.arange(M), cohort["traits"], cohort["covariates"], cohort["names"], RheOptions()).table
    z = (table.h2 - np.array(H2)) / table.se
    assert (np.abs(z) < 2).sum() >= 5 and (np.abs(z) < 3).all(), table
    assert ((table.se > 0.02) & (table.se < 0.1)).all()  # the jackknife's SE is of the right size


def test_rhe_is_close_to_bolt_reml(cohort):
    """BOLT-REML on the h2 0.5 trait (one: 10 s a run): within 0.05. RHE (a method of moments)
    and REML are different estimators, each with an error of about 0.05 here; on this data the two
    differed by 0.007-0.024 on the h2 0.1, 0.3, 0.5 traits (and by 0.09 on the h2 0.4 trait, which REML puts nearer
    the truth: benchmarks/results/h2_vs_bolt.md has every trait on realistic genetics)."""
    bolt = shutil.which("bolt")
    if bolt is None:
        if os.environ.get("CI"):
            pytest.fail("bolt (BOLT-REML, Debian bolt-lmm) is required here (CI installs it)")
        pytest.skip("bolt not installed")
    data = open_genotypes(cohort["dir"] / "g")
    table = rhe_h2(data, np.arange(M), cohort["traits"], cohort["covariates"], cohort["names"], RheOptions()).table
    d = cohort["dir"]
    for t in (4,):
        log = subprocess.run(
            [
                bolt,
                f"--bfile={d / 'g'}",
                f"--phenoFile={d / 'pheno.tsv'}",
                f"--phenoCol={cohort['names'][t]}",
                f"--covarFile={d / 'covar.tsv'}",
                "--qCovarCol=C{1:3}",
                "--reml",
                "--numThreads=1",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        h2_bolt = float(next(line for line in log.splitlines() if "h2g (1,1):" in line).split()[2])
        assert abs(table.h2[t] - h2_bolt) < 0.05, (t, table.h2[t], h2_bolt)


def test_h2_method_rhe_command(cohort, tmp_path, capsys):
    """The CLI writes OUT.h2.tsv (phenotype h2 se ...) and its record; bad input is one line, exit 2,
    nothing written."""
    from wm_jax.cli import main

    d, out = cohort["dir"], tmp_path / "rhe"
    constant = pd.read_csv(d / "covar.tsv", sep="\t").assign(C2=1.0)
    constant.to_csv(tmp_path / "constant.tsv", sep="\t", index=False)
    base = ["h2", "--method", "rhe", "--bfile", str(d / "g"), "--pheno", str(d / "pheno.tsv")]
    assert main([*base, "--pheno-name", "T1-T3", "--covar", str(d / "covar.tsv"), "--out", str(out)]) == 0
    table = pd.read_csv(f"{out}.h2.tsv", sep="\t")
    assert list(table.phenotype) == ["T1", "T2", "T3"] and {"h2", "se"} <= set(table.columns)
    assert (table.n == N).all()
    for args, flag in (
        ([*base, "--gwas", "x", "--out", str(tmp_path / "a")], "--gwas"),
        (["h2", "--method", "rhe", "--pheno", str(d / "pheno.tsv"), "--out", str(tmp_path / "a")], "--bfile"),
        ([*base, "--pheno-name", "T9", "--out", str(tmp_path / "a")], "T9"),
        ([*base, "--covar", str(tmp_path / "none.tsv"), "--out", str(tmp_path / "a")], "none.tsv"),
        ([*base, "--covar", str(tmp_path / "constant.tsv"), "--out", str(tmp_path / "a")], "covariate C2 is constant"),
    ):
        capsys.readouterr()
        assert main(args) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert lines[-1].startswith("wm-jax h2: error: ") and flag in lines[-1], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["constant.tsv", "rhe.h2.json", "rhe.h2.tsv"]


def test_the_rhe_step_asks_for_full_precision():
    """Every dot of the compiled RHE block step (StableHLO and compiled HLO) at HIGHEST precision,
    for .bed bytes and for dosages (TF32 on NVIDIA GPUs would move h2 by more than its tolerance)."""
    import jax
    from test_gwas_kernel import _dots_below_highest

    from wm_jax.heritability.rhe import _compiled_step

    step = _compiled_step(3, 5)
    v = jax.ShapeDtypeStruct((304, 10), np.float32)
    analysed = jax.ShapeDtypeStruct((304,), np.bool_)
    right = jax.ShapeDtypeStruct((304, 3 + 5 + 10), np.float32)
    for raw in (jax.ShapeDtypeStruct((10, 76), np.uint8), jax.ShapeDtypeStruct((10, 304), np.uint16)):
        lowered = step.lower(v, raw, analysed, right)
        for text in (lowered.as_text(), lowered.compile().as_text()):
            n_dots, below = _dots_below_highest(text)
            assert n_dots >= 2 and below == [], below
