"""The loci report: genomic control, clumping against `plink1.9 --clump`, the EM haplotype r^2,
replication with allele flips, and the report end to end with its bad inputs."""

import json
import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats

from wm_jax.errors import InputError
from wm_jax.gwas.run import GwasOptions, run_gwas
from wm_jax.reporting.build import GwasResult, build_report
from wm_jax.reporting.stats import genomic_control, r_squared_haplotype, replication
from wm_jax.stage_options import ClumpOptions

from conftest import plink2_or_skip
from html_pages import check_self_contained


def test_genomic_control_null_and_inflated():
    rng = np.random.default_rng(0)
    null = -np.log10(rng.random(200_000))
    assert abs(genomic_control(null) - 1.0) < 0.01
    inflated = -np.log10(stats.chi2.sf(1.2 * stats.chi2.rvs(1, size=200_000, random_state=1), 1))
    assert abs(genomic_control(inflated) - 1.2) < 0.02
    omnibus = -np.log10(stats.chi2.sf(stats.chi2.rvs(8, size=200_000, random_state=2), 8))
    assert abs(genomic_control(omnibus, df=8) - 1.0) < 0.01


def test_haplotype_r2_recovers_the_population_value():
    """Genotypes made from haplotypes of known frequencies: the EM estimate (phase unknown) is close
    to the haplotypes' true r^2, which genotype correlation alone does not give exactly."""
    rng = np.random.default_rng(3)
    freqs = np.array([0.30, 0.10, 0.05, 0.55])  # ALT-ALT, ALT-REF, REF-ALT, REF-REF
    p_a, p_b = freqs[0] + freqs[1], freqs[0] + freqs[2]
    true_r2 = (freqs[0] - p_a * p_b) ** 2 / (p_a * (1 - p_a) * p_b * (1 - p_b))
    haps = rng.choice(4, size=(200_000, 2), p=freqs)
    alt_a = np.isin(haps, [0, 1]).sum(axis=1).astype(float)
    alt_b = np.isin(haps, [0, 2]).sum(axis=1).astype(float)
    alt_a[:50] = np.nan  # missing calls are left out
    estimate = r_squared_haplotype(alt_a, alt_b[None])[0]
    assert abs(estimate - true_r2) < 0.01, (estimate, true_r2)


@pytest.fixture(scope="module")
def planted_gwas(tiny_cohort, tmp_path_factory):
    """Discovery and replication GWAS (two halves of the tiny cohort) of phenotypes driven by the
    planted causal variants, so that clumps exist."""
    from wm_jax.data.plink import PlinkDataset

    data = PlinkDataset(tiny_cohort / "genotypes")
    truth = pd.read_csv(tiny_cohort / "truth.tsv", sep="\t")
    rows = data.bim.reset_index(drop=True).index[data.bim.id.isin(truth.variant).to_numpy()]
    dosages = np.nan_to_num(data.bed.dosages(rows.to_numpy()), nan=1.0)
    rng = np.random.default_rng(0)
    out = tmp_path_factory.mktemp("gwas")
    halves = {"discovery": np.arange(data.n_samples) % 2 == 0, "replication": np.arange(data.n_samples) % 2 == 1}
    prefixes = {}
    for name, keep in halves.items():
        values = {
            f"P{j + 1}": np.where(keep, 1.5 * dosages[j] + rng.standard_normal(data.n_samples), np.nan)
            for j in range(len(dosages))
        }
        values["NULL"] = np.where(keep, rng.standard_normal(data.n_samples), np.nan)
        pheno = out / f"{name}.tsv"
        pd.DataFrame({"FID": data.fam.fid, "IID": data.fam.iid, **values}).to_csv(
            pheno, sep="\t", index=False, na_rep="NA"
        )
        prefixes[name] = str(
            run_gwas(
                str(tiny_cohort / "genotypes"),
                str(pheno),
                str(tiny_cohort / "covariates.tsv"),
                str(out / name),
                GwasOptions(maf=0.05, block_size=1024, covar_names="age,sex"),
            )
        )
    return prefixes


def test_clumping_equals_plink19(tiny_cohort, planted_gwas, tmp_path):
    plink = plink2_or_skip("plink1.9")
    from wm_jax.data.plink import PlinkDataset
    from wm_jax.reporting.stats import clump

    result = GwasResult(planted_gwas["discovery"])
    data = PlinkDataset(tiny_cohort / "genotypes")
    rows = pd.Series(np.arange(len(data.bim)), index=data.bim.id.to_numpy())[result.variants.ID].to_numpy()
    options = ClumpOptions(p1=1e-3, p2=0.05, r2=0.2, kb=250)
    compared = 0
    for name in result.phenotypes:
        lp = result.series(name)
        assoc = tmp_path / f"{name}.assoc"
        pd.DataFrame({"SNP": result.variants.ID, "P": 10.0**-lp}).to_csv(assoc, sep="\t", index=False)
        subprocess.run(
            [
                plink,
                "--bfile",
                str(tiny_cohort / "genotypes"),
                "--clump",
                str(assoc),
                "--clump-p1",
                "1e-3",
                "--clump-p2",
                "0.05",
                "--clump-r2",
                "0.2",
                "--clump-kb",
                "250",
                "--out",
                str(tmp_path / name),
            ],
            check=True,
            capture_output=True,
        )
        ours = clump(result.variants, lp, lambda idx: data.bed.dosages(rows[idx]).astype(float), options)
        reference_path = tmp_path / f"{name}.clumped"
        reference = (
            pd.read_csv(reference_path, sep=r"\s+") if reference_path.exists() else pd.DataFrame(columns=["SNP", "SP2"])
        )
        theirs = {
            row.SNP: (set() if row.SP2 == "NONE" else {s.split("(")[0] for s in row.SP2.split(",")})
            for row in reference.itertuples()
        }
        mine = {result.variants.ID.iloc[r.index]: set(result.variants.ID.iloc[r.members]) for r in ours.itertuples()}
        assert mine == theirs, name  # the same index variants, each with the same members
        compared += len(mine)
    assert compared >= 4  # the planted phenotypes do give clumps


def test_replication_turns_betas_to_the_discovery_allele():
    variants = pd.DataFrame({"ID": ["a", "b", "c"], "A1": ["G", "T", "C"]})
    discovery = SimpleNamespace(
        variants=variants,
        phenotypes=["X"],
        beta=np.array([[0.5, -0.4, 0.3]]),
        log10_p=np.array([[9.0, 8.5, 8.0]]),
        phenotype_index=lambda n: 0,
    )
    # replication: b's A1 is the other allele (beta sign flips back to -), c has the wrong sign, d absent
    rep_variants = pd.DataFrame({"ID": ["c", "b", "a"], "A1": ["C", "A", "G"]})
    replicate = SimpleNamespace(
        variants=rep_variants,
        phenotypes=["X"],
        beta=np.array([[-0.2, 0.3, 0.4]]),
        log10_p=np.array([[5.0, 3.0, 1.0]]),
        phenotype_index=lambda n: 0,
    )
    leads = pd.DataFrame({"phenotype": ["X", "X", "X"], "index": [0, 1, 2]})
    table = replication(leads, discovery, replicate)
    # threshold -log10(0.05 / 3) = 1.78: a (P 0.1) fails, b replicates after the flip, c has the wrong sign
    assert table.replicated.tolist() == [False, True, False]
    assert table.replication_beta.tolist() == [0.4, -0.3, -0.2]


def test_report_end_to_end(tiny_cohort, planted_gwas, tmp_path):
    out = tmp_path / "report"
    summary = build_report(
        planted_gwas["discovery"],
        str(tiny_cohort / "genotypes"),
        str(out),
        replication_gwas=planted_gwas["replication"],
        truth=str(tiny_cohort / "truth.tsv"),
        options=ClumpOptions(p1=1e-4),
    )
    assert json.loads((out / "report.json").read_text())["n_loci"] == summary["n_loci"] > 0
    loci = pd.read_csv(out / "loci.tsv", sep="\t")
    assert len(loci) == summary["n_loci"] and summary["n_leads"] == len(loci)
    assert 0 < summary["n_planted_recovered"] <= summary["n_planted"]
    assert 0.7 < summary["lambda"]["NULL"] < 1.4  # 51 samples, ~10k variants
    for png in ("manhattan.png", "qq.png"):
        with Image.open(out / png) as image:
            assert image.size[0] > 300
    text = (out / "report.md").read_text()
    assert "manhattan.png" in text and "## Replication" in text and "planted causal variants" in text
    # report.html: the plots embedded, the summary, loci and replication tables, links to the files
    page = check_self_contained(out / "report.html")
    assert len(page.images) == 2 and page.tables == 3
    assert {"loci.tsv", "replication.tsv", "report.md", "report.json", "manhattan.png", "qq.png"} <= set(page.links)
    words = " ".join(page.text)
    assert all(lead in words for lead in loci.lead_id) and f"{summary['lambda_median']:.4g}" in words


def test_report_bad_inputs(tiny_cohort, planted_gwas, tmp_path):
    # a GWAS whose variants are not the .bed's
    other = tmp_path / "other"
    shutil.copytree(f"{planted_gwas['discovery']}.gwas", f"{other}.gwas")
    variants = pd.read_csv(f"{other}.gwas/variants.tsv", sep="\t")
    variants.loc[3, "ID"] = "rs_not_there"
    variants.to_csv(f"{other}.gwas/variants.tsv", sep="\t", index=False)
    with pytest.raises(InputError, match="another variant set"):
        build_report(str(other), str(tiny_cohort / "genotypes"), str(tmp_path / "r1"))
    # a replication with no variant in common
    renamed = tmp_path / "renamed"
    shutil.copytree(f"{planted_gwas['replication']}.gwas", f"{renamed}.gwas")
    variants = pd.read_csv(f"{renamed}.gwas/variants.tsv", sep="\t")
    variants["ID"] = "x" + variants["ID"]
    variants.to_csv(f"{renamed}.gwas/variants.tsv", sep="\t", index=False)
    with pytest.raises(InputError, match="no variant in common"):
        build_report(
            planted_gwas["discovery"],
            str(tiny_cohort / "genotypes"),
            str(tmp_path / "r2"),
            replication_gwas=str(renamed),
        )
    with pytest.raises(InputError, match="not a `wm-jax gwas` output"):
        build_report(str(tmp_path / "nothing"), str(tiny_cohort / "genotypes"), str(tmp_path / "r3"))
    assert not any((tmp_path / r).exists() for r in ("r1", "r2", "r3"))


def test_report_takes_the_ld_from_a_pgen_or_bgen(tiny_cohort, planted_gwas, tmp_path):
    """`wm-jax report --pfile` / `--bgen`: the tiny cohort's hard calls as a .pgen and as an exact
    8-bit BGEN give the loci of the .bed (the same LD for clumping), and bad genotypes are named."""
    from genotype_files import imputed_probabilities, quantize, write_bgen, write_pgen

    from wm_jax.cli import main
    from wm_jax.data.plink import PlinkDataset

    data = PlinkDataset(tiny_cohort / "genotypes")
    alt = data.bed.dosages(np.arange(data.n_variants))
    write_pgen(tmp_path / "g", alt, data.fam, data.bim)
    stored = quantize(imputed_probabilities(alt, np.random.default_rng(0), uncertain=0.0), 8)
    variants = list(zip(data.bim.chrom.astype(str), data.bim.id, data.bim.pos.astype(int), data.bim.ref, data.bim.alt))
    write_bgen(tmp_path / "g.bgen", stored, 8, 1, variants, list(data.fam.iid), np.isnan(alt))
    sample = ["ID_1 ID_2 missing sex", "0 0 0 D", *(f"{f} {i} 0 NA" for f, i in zip(data.fam.fid, data.fam.iid))]
    (tmp_path / "g.sample").write_text("\n".join(sample) + "\n")
    common = ["report", "--gwas", planted_gwas["discovery"], "--clump-p1", "1e-4"]
    runs = {
        "bed": ["--bfile", str(tiny_cohort / "genotypes")],
        "pgen": ["--pfile", str(tmp_path / "g")],
        "bgen": ["--bgen", str(tmp_path / "g.bgen"), "--sample", str(tmp_path / "g.sample")],
    }
    for name, flags in runs.items():
        assert main([*common, *flags, "--out", str(tmp_path / name)]) == 0
    loci = {name: (tmp_path / name / "loci.tsv").read_text() for name in runs}
    assert loci["bed"] == loci["pgen"] == loci["bgen"] and len(loci["bed"].splitlines()) > 1
    summary = json.loads((tmp_path / "pgen" / "report.json").read_text())
    assert summary["genotypes"] == f"--pfile {tmp_path / 'g'}" and summary["bfile"] is None
    (tmp_path / "g.pvar").write_text((tmp_path / "g.pvar").read_text().replace(data.bim.id.iloc[5], "rs_other"))
    with pytest.raises(InputError, match=r"g.pvar: \d+ of the GWAS's .* another variant set"):
        build_report(planted_gwas["discovery"], _pfile(tmp_path / "g"), str(tmp_path / "bad"))


def _pfile(prefix):
    from wm_jax.data.source import GenotypeInput

    return GenotypeInput("pfile", str(prefix))


def test_report_shows_heritability_and_genetic_correlations(tiny_cohort, planted_gwas, tmp_path):
    """--h2 / --rg: the tables of `wm-jax h2` and `wm-jax rg` become h2.png, rg.png, report.md
    sections and report.json figures; a table without its columns is one error naming it."""
    h2 = tmp_path / "x.h2.tsv"
    pd.DataFrame({"phenotype": ["A", "B", "C"], "h2": [0.1, 0.5, 0.3], "se": [0.05, 0.06, 0.04]}).to_csv(
        h2, sep="\t", index=False
    )
    rg = tmp_path / "x.rg.tsv"
    pairs = {"p1": ["A", "A", "B", "A"], "p2": ["B", "C", "C", "EXT"], "rg": [0.5, -0.2, 0.9, 0.1], "se": [0.1] * 4}
    pd.DataFrame(pairs).to_csv(rg, sep="\t", index=False)
    out = tmp_path / "report"
    summary = build_report(planted_gwas["discovery"], str(tiny_cohort / "genotypes"), str(out), h2=str(h2), rg=str(rg))
    assert summary["h2"]["mean"] == pytest.approx(0.3) and summary["rg"]["pairs"] == 4
    assert summary["h2"]["by_phenotype"]["B"] == 0.5
    for png in ("h2.png", "rg.png"):
        with Image.open(out / png) as image:
            assert image.size[0] > 300
    text = (out / "report.md").read_text()
    assert "## SNP heritability" in text and "Mean h2 0.300" in text and "## Genetic correlations" in text
    page = check_self_contained(out / "report.html")
    words = " ".join(page.text)
    assert "SNP heritability" in words and "Mean h2 0.300" in words and "Genetic correlations" in words
    assert len(page.images) == 4 and {"h2.png", "rg.png"} <= set(page.links)  # Manhattan, QQ, h2, rg
    pd.DataFrame({"phenotype": ["A"], "h2": [0.1]}).to_csv(tmp_path / "bad.h2.tsv", sep="\t", index=False)
    with pytest.raises(InputError, match=r"bad\.h2\.tsv.*se missing"):
        build_report(
            planted_gwas["discovery"],
            str(tiny_cohort / "genotypes"),
            str(tmp_path / "r"),
            h2=str(tmp_path / "bad.h2.tsv"),
        )
    assert not (tmp_path / "r").exists()


def test_report_shows_genes_and_pathways(tiny_cohort, planted_gwas, tmp_path, capsys):
    """--genes DIR (a `wm-jax genes` output): the genes of each locus (a lead inside a gene at
    distance 0, the gene's P for the lead phenotype as genes.tsv has it), the top genes of each
    phenotype, the gene sets by P and the gene-level Manhattan plot, in report.md, report.json and
    report.html; a directory without genes.tsv is one error naming it, exit 2, nothing written."""
    from wm_jax.cli import main
    from wm_jax.data.source import GenotypeInput
    from wm_jax.genes.run import run_genes
    from wm_jax.stage_options import GeneOptions

    genes_dir = tmp_path / "genes"
    run_genes(
        planted_gwas["discovery"],
        GenotypeInput("bfile", str(tiny_cohort / "genotypes")),
        str(tiny_cohort / "genes.tsv"),
        str(genes_dir),
        GeneOptions(),
        gene_sets=str(tiny_cohort / "gene_sets.gmt"),
    )
    out = tmp_path / "report"
    summary = build_report(
        planted_gwas["discovery"],
        str(tiny_cohort / "genotypes"),
        str(out),
        options=ClumpOptions(p1=1e-4),
        genes=str(genes_dir),
    )
    genes = pd.read_csv(genes_dir / "genes.tsv", sep="\t", dtype={"chrom": str})
    assert summary["genes"]["n_genes_tested"] == json.loads((genes_dir / "genes.json").read_text())["n_genes_tested"]
    assert summary["genes"]["top_gene"]["p"] == pytest.approx(genes.p.min())
    assert json.loads((out / "report.json").read_text())["genes"] == json.loads(json.dumps(summary["genes"]))
    loci = pd.read_csv(out / "loci.tsv", sep="\t", dtype={"chrom": str})
    mapped = pd.read_csv(out / "loci_genes.tsv", sep="\t")
    assert len(loci) and set(mapped.locus) == set(loci.locus)  # every planted locus lies in a gene
    p = genes.set_index(["gene", "phenotype"]).p
    for row in mapped.itertuples():
        locus = loci.set_index("locus").loc[row.locus]
        gene = genes[genes.gene == row.gene].iloc[0]
        expected = max(gene.start - locus.lead_pos, locus.lead_pos - gene.end, 0)
        assert gene.chrom == locus.chrom and row.distance == expected
        assert gene.end >= locus.start - 10_000 and gene.start <= locus.end + 10_000
        assert row.p_lead_phenotype == pytest.approx(p[(row.gene, row.lead_phenotype)], rel=1e-3)
    assert (mapped.groupby("locus").distance.min() == 0).all()
    top = pd.read_csv(out / "genes_by_phenotype.tsv", sep="\t")
    assert list(top.groupby("phenotype", sort=False).size()) == [3] * genes.phenotype.nunique()
    first = top[top["rank"] == 1].set_index("phenotype").p
    np.testing.assert_allclose(first, genes.groupby("phenotype").p.min().reindex(first.index), rtol=1e-3)
    sets = pd.read_csv(out / "gene_sets.tsv", sep="\t")
    assert len(sets) == len(pd.read_csv(genes_dir / "gene_sets.tsv", sep="\t")) and sets.p.is_monotonic_increasing
    text = (out / "report.md").read_text()
    assert "## Genes and pathways" in text and "### Genes of each locus" in text and "genes_manhattan.png" in text
    page = check_self_contained(out / "report.html")
    words = " ".join(page.text)
    assert len(page.images) == 3 and "Genes and pathways" in words and "Top 3 genes of each phenotype" in words
    assert {"loci_genes.tsv", "genes_by_phenotype.tsv", "gene_sets.tsv", "genes_manhattan.png"} <= set(page.links)
    with Image.open(out / "genes_manhattan.png") as image:
        assert image.size[0] > 300
    capsys.readouterr()
    argv = ["report", "--gwas", planted_gwas["discovery"], "--bfile", str(tiny_cohort / "genotypes")]
    assert main([*argv, "--genes", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "error" in line]
    assert len(err) == 1 and err[0].startswith(f"wm-jax report: error: {tmp_path}: expected the output directory")
    assert not (tmp_path / "r").exists()
