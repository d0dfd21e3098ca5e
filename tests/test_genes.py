"""`wm-jax genes`: the quadratic-form P-values against closed forms and Monte Carlo, calibration
under null phenotypes, a planted pathway found first, the simulator's annotation, and bad inputs."""

import json

import mpmath
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from wm_jax.cli import main
from wm_jax.data.plink import encode_alt_dosages, write_bed
from wm_jax.data.source import GenotypeInput
from wm_jax.genes.quadform import SADDLEPOINT_BELOW, quadform_sf
from wm_jax.genes.run import GeneOptions, run_genes
from wm_jax.simulate.genotypes import simulate_chromosome

N_SAMPLES = 500


@pytest.fixture(scope="module")
def panel(tmp_path_factory):
    """Coalescent genotypes (2 chromosomes of 600 kb, 500 samples) as a .bed, and a gene every
    ~30 kb along them (genes.tsv, no header)."""
    out = tmp_path_factory.mktemp("genes_panel")
    chromosomes = [
        simulate_chromosome(str(c), N_SAMPLES, 6e5, 11 + c, 1, 5000.0, 0.0, 1e-8, 1.25e-8, 0.02) for c in (1, 2)
    ]
    dosages = np.concatenate([c.dosages for c in chromosomes]).astype(np.float64)
    bim = pd.DataFrame(
        {
            "chrom": np.concatenate([[c.name] * len(c.positions) for c in chromosomes]),
            "id": [f"{c.name}:{p}" for c in chromosomes for p in c.positions],
            "cm": 0.0,
            "pos": np.concatenate([c.positions for c in chromosomes]),
            "alt": np.concatenate([c.alt for c in chromosomes]),
            "ref": np.concatenate([c.ref for c in chromosomes]),
        }
    )
    bim.to_csv(out / "ref.bim", sep="\t", header=False, index=False)
    write_bed(out / "ref.bed", [encode_alt_dosages(dosages)])
    # A wrong LD reference: each variant's genotypes shuffled over the samples on its own (same
    # variants and allele frequencies, no LD), for the calibration test to reject.
    shuffled = np.random.default_rng(4).permuted(dosages, axis=1)
    write_bed(out / "unlinked.bed", [encode_alt_dosages(shuffled)])
    bim.to_csv(out / "unlinked.bim", sep="\t", header=False, index=False)
    iid = [f"s{i}" for i in range(N_SAMPLES)]
    for name in ("ref", "unlinked"):
        pd.DataFrame({"f": iid, "i": iid, "a": 0, "b": 0, "s": 1, "p": -9}).to_csv(
            out / f"{name}.fam", sep=" ", header=False, index=False
        )
    rng = np.random.default_rng(3)
    genes = []
    for c in chromosomes:
        start = int(c.positions[0])
        while start < c.positions[-1] - 20000:
            length = int(rng.integers(5000, 25000))
            genes.append([f"G{len(genes) + 1:03d}", c.name, start, start + length])
            start += length + int(rng.integers(5000, 15000))
    genes = pd.DataFrame(genes, columns=["gene", "chrom", "start", "end"])
    genes.to_csv(out / "genes.tsv", sep="\t", header=False, index=False)
    short = [
        [f"S{k:03d}", c.name, s, s + 4000]
        for c in chromosomes
        for k, s in enumerate(range(int(c.positions[0]), int(c.positions[-1]) - 4000, 12_000))
    ]
    pd.DataFrame(short, columns=genes.columns).drop_duplicates("start").assign(
        gene=lambda f: [f"S{k:03d}" for k in range(len(f))]
    ).to_csv(out / "short_genes.tsv", sep="\t", index=False)
    return {"dir": out, "bim": bim, "dosages": dosages, "genes": genes}


def null_statistics(dosages: np.ndarray, phenotypes: np.ndarray) -> tuple:
    """Ordinary least squares in NumPy (intercept only) of each variant (rows of ``dosages``) on
    each phenotype (columns): beta, se and -log10 P (variants x phenotypes), and each variant's
    multivariate statistic t' S^-1 t (S the phenotypes' correlation)."""
    n = dosages.shape[1]
    g = dosages - dosages.mean(axis=1, keepdims=True)
    y = phenotypes - phenotypes.mean(axis=0)
    sxx = (g**2).sum(axis=1)[:, None]
    beta = g @ y / sxx
    rss = (y**2).sum(axis=0)[None, :] - beta**2 * sxx
    se = np.sqrt(rss / (n - 2) / sxx)
    t = beta / se
    neg_log10_p = -(stats.t.logsf(np.abs(t), n - 2) + np.log(2)) / np.log(10)
    omnibus = np.einsum("vp,pq,vq->v", t, np.linalg.inv(np.corrcoef(y.T)), t)
    return beta, se, neg_log10_p, omnibus


def write_gwas(prefix, bim: pd.DataFrame, dosages: np.ndarray, phenotypes: np.ndarray) -> None:
    """A `wm-jax gwas` compact output from `null_statistics`: variants x samples dosages, samples
    x phenotypes."""
    beta, se, neg_log10_p, omnibus = null_statistics(dosages, phenotypes)
    d = prefix.parent / f"{prefix.name}.gwas"
    d.mkdir()
    variants = pd.DataFrame({"#CHROM": bim.chrom, "POS": bim.pos, "ID": bim.id, "REF": bim.ref, "ALT": bim.alt})
    variants["A1"] = variants.ALT
    variants.to_csv(d / "variants.tsv", sep="\t", index=False)
    names = [f"P{k + 1}" for k in range(phenotypes.shape[1])]
    (d / "meta.json").write_text(json.dumps({"format_version": 2, "phenotypes": names}))
    for name, column in (("beta", beta), ("se", se), ("log10_p", neg_log10_p)):
        np.save(d / f"{name}.npy", column.T.astype(np.float32))
    np.save(d / "omnibus_chi2.npy", omnibus.astype(np.float32))


# ------------------------------------------------------------------------------------------
# The P-value of a sum of weighted chi-squares
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k,h", [(2, 1), (3, 1), (7, 1), (30, 1), (4, 3)])
def test_equal_lambdas_give_a_scaled_chi_square(k, h):
    """lambda = 2.5 each: Q / 2.5 is chi2 with k h df. Imhof within 1e-6 relative of SciPy; the
    saddle-point tail (P < SADDLEPOINT_BELOW) within 5% and finite far past float64's range."""
    p_true = np.array([0.999, 0.7, 0.3, 0.05, 1e-3, 1e-5, 1e-7, 1e-9])
    x = 2.5 * stats.chi2.isf(p_true, k * h)
    p, neg_log10_p = quadform_sf(x, np.full(k, 2.5), h)
    np.testing.assert_allclose(p, p_true, rtol=1e-6, atol=1e-13)
    tail_true = np.array([1e-12, 1e-20, 1e-50, 1e-200])
    x_tail = 2.5 * stats.chi2.isf(tail_true, k * h)
    p_tail, nl_tail = quadform_sf(x_tail, np.full(k, 2.5), h)
    np.testing.assert_allclose(p_tail, tail_true, rtol=0.05)
    far, nl_far = quadform_sf(np.array([2.5 * 8000.0]), np.full(k, 2.5), h)
    expected = -float(mpmath.log10(mpmath.gammainc(k * h / 2, 4000.0, regularized=True)))  # SciPy underflows
    assert far[0] == 0 and abs(nl_far[0] - expected) < 0.02 * expected  # P < 1e-308, in log space


def test_gene_p_equals_monte_carlo_of_the_statistic(panel):
    """On LD matrices of random stretches of the coalescent genotypes, P(sum z_i^2 > x) with
    z ~ N(0, R) from 10^6 draws of sum lambda chi2 agrees with quadform_sf within 4.5 MC SE."""
    rng = np.random.default_rng(5)
    dosages = panel["dosages"]
    worst = 0.0
    for m, h in ((3, 1), (12, 1), (30, 1), (8, 4)):
        start = int(rng.integers(0, len(dosages) - m))
        lam = np.clip(np.linalg.eigvalsh(np.corrcoef(dosages[start : start + m])), 0, None)
        chi2 = rng.standard_normal((1_000_000, m)) ** 2 if h == 1 else rng.chisquare(h, (1_000_000, m))
        draws = chi2 @ lam
        x = np.quantile(draws, [0.5, 0.9, 0.99, 0.999])
        p, _ = quadform_sf(x, lam, h)
        empirical = (draws[:, None] > x).mean(axis=0)
        se = np.sqrt(p * (1 - p) / len(draws))
        worst = max(worst, float(np.max(np.abs(empirical - p) / se)))
    print(f"largest |MC - quadform| / MC SE over 16 cases: {worst:.2f}")
    assert worst < 4.5


def test_far_tail_switches_to_the_saddle_point_smoothly():
    lam = np.array([3.0, 1.0, 0.5, 0.2, 0.05])
    x = np.linspace(20, 200, 400)
    _, neg_log10_p = quadform_sf(x, lam)
    assert np.all(np.diff(neg_log10_p) > 0)
    assert neg_log10_p[-1] > -np.log10(SADDLEPOINT_BELOW)


# ------------------------------------------------------------------------------------------
# Gene tests and gene sets end to end (run_genes on a NumPy GWAS of the coalescent panel)
# ------------------------------------------------------------------------------------------
def _genes(panel, tmp_path, name: str, phenotypes: np.ndarray, genes: str = "genes.tsv", **kwargs) -> dict:
    write_gwas(tmp_path / name, panel["bim"], panel["dosages"], phenotypes)
    return run_genes(
        str(tmp_path / name),
        GenotypeInput("bfile", str(panel["dir"] / "ref")),
        str(panel["dir"] / genes),
        str(tmp_path / f"{name}_genes"),
        GeneOptions(window_kb=5),
        **kwargs,
    )


def _one_gene_per_phenotype(genes: pd.DataFrame, names: list[str], first: int) -> np.ndarray:
    """From a genes.tsv of null phenotypes, the P of gene (first + k) mod G for phenotype k: each P
    from a different, independent phenotype, so the P are independent, and every gene is used."""
    single = genes[genes.phenotype != "OMNIBUS"].set_index(["phenotype", "gene"]).p
    phenotypes = list(dict.fromkeys(genes.phenotype[genes.phenotype != "OMNIBUS"]))
    return np.array([single[(ph, names[(first + k) % len(names)])] for k, ph in enumerate(phenotypes)])


def test_null_gene_p_values_are_calibrated_over_all_genes(panel, tmp_path):
    """Null phenotypes (3 GWAS of 240): phenotype k contributes the P of gene k mod 48, so the
    720 P are independent and cover all 48 genes 15 times each; they are uniform by KS at 1e-3.
    The same test rejects the P computed with a wrong LD reference (the genotypes shuffled per
    variant: no LD). A KS pooled over all genes of each phenotype is printed but not tested: the
    genes' P are correlated (shared variants, LD between neighbours), and with P exact (z ~ N(0, R)
    with the very R used) such a pooled KS rejected at 1e-3 in 3 of 20 replicates of the demo
    cohort (benchmarks/genes_calibration.py, docs/genes.md).
    20 random gene sets of 6 genes: the sets' P, one set per phenotype likewise, uniform (GLS)."""
    rng = np.random.default_rng(8)
    names = list(panel["genes"].gene)
    gmt = tmp_path / "random.gmt"
    members = [panel["genes"].gene[rng.choice(len(names), 6, replace=False)] for _ in range(20)]
    gmt.write_text("".join(f"R{k}\t-\t" + "\t".join(m) + "\n" for k, m in enumerate(members)))
    p, p_sets, pooled = [], [], []
    for k in range(3):
        _genes(panel, tmp_path, f"null{k}", rng.standard_normal((N_SAMPLES, 240)), gene_sets=str(gmt))
        genes = pd.read_csv(tmp_path / f"null{k}_genes" / "genes.tsv", sep="\t")
        assert set(genes.gene) == set(names) and (genes.n_variants >= 1).all()
        p.append(_one_gene_per_phenotype(genes, names, 240 * k))
        pooled.append(stats.kstest(genes.p[genes.phenotype != "OMNIBUS"], "uniform").pvalue)
        sets = pd.read_csv(tmp_path / f"null{k}_genes" / "gene_sets.tsv", sep="\t").rename(columns={"set": "gene"})
        p_sets.append(_one_gene_per_phenotype(sets, [f"R{j}" for j in range(20)], 240 * k))
    unlinked = run_genes(
        str(tmp_path / "null0"),
        GenotypeInput("bfile", str(panel["dir"] / "unlinked")),
        str(panel["dir"] / "genes.tsv"),
        str(tmp_path / "unlinked_genes"),
        GeneOptions(window_kb=5),
    )
    wrong = _one_gene_per_phenotype(pd.read_csv(tmp_path / "unlinked_genes" / "genes.tsv", sep="\t"), names, 0)
    ks, ks_sets, ks_wrong = (stats.kstest(np.concatenate(v), "uniform").pvalue for v in (p, p_sets, [wrong]))
    print(
        f"null, one gene per phenotype: {sum(map(len, p))} P over all {len(names)} genes KS p {ks:.3g} "
        f"(P < 0.05: {np.mean(np.concatenate(p) < 0.05):.3f}); with an unlinked LD reference KS p {ks_wrong:.3g}; "
        f"pooled over all genes per GWAS KS p {', '.join(f'{v:.3g}' for v in pooled)}; "
        f"random sets KS p {ks_sets:.3g}; gene tests {unlinked['seconds_gene_tests']} s"
    )
    assert list(genes.columns[:10]) == [
        "gene",
        "chrom",
        "start",
        "end",
        "phenotype",
        "n_variants",
        "stat",
        "p",
        "neg_log10_p",
        "z",
    ]
    assert ks > 1e-3 and ks_sets > 1e-3
    assert ks_wrong < 1e-6
    assert (tmp_path / "null0_genes" / "genes_manhattan.png").stat().st_size > 10_000


def test_null_omnibus_gene_p_values_are_calibrated(panel, tmp_path):
    """300 null GWAS of 5 phenotypes, on 4 kb genes every 12 kb: GWAS r contributes the omnibus
    gene P (sum of the variants' multivariate chi-squares against sum lambda chi2_5) of gene r mod
    G, so 300 independent P over all genes; uniform by KS at 1e-3. `run_genes` gives the same
    omnibus P as this direct computation (GWAS 0, every gene). (With 40 phenotypes on 500 samples
    the per-variant chi2_P of the GWAS's omnibus is itself ~9% inflated: Hotelling.)"""
    from wm_jax.genes.annotation import read_genes
    from wm_jax.genes.genetest import gene_variants

    rng = np.random.default_rng(9)
    genes = read_genes(panel["dir"] / "short_genes.tsv")
    dosages, bim = panel["dosages"], panel["bim"]
    members = [m for m in gene_variants(genes, bim.chrom.to_numpy(), bim.pos.to_numpy(), 5000) if len(m)]
    lam = [np.linalg.eigvalsh(np.corrcoef(dosages[m])) for m in members]
    phenotypes = [rng.standard_normal((N_SAMPLES, 5)) for _ in range(300)]
    p = []
    for r, y in enumerate(phenotypes):
        g = r % len(members)
        omnibus = null_statistics(dosages[members[g]], y)[3]
        p.append(quadform_sf(np.array([omnibus.sum()]), np.clip(lam[g], 0, None), 5.0)[0][0])
    ks = stats.kstest(p, "uniform").pvalue
    _genes(panel, tmp_path, "null0", phenotypes[0], genes="short_genes.tsv")
    table = pd.read_csv(tmp_path / "null0_genes" / "genes.tsv", sep="\t")
    direct = [
        quadform_sf(np.array([null_statistics(dosages[m], phenotypes[0])[3].sum()]), np.clip(v, 0, None), 5.0)[0][0]
        for m, v in zip(members, lam, strict=True)
    ]
    print(f"{len(p)} omnibus gene P under the null, one gene per GWAS over {len(members)} genes: KS p {ks:.3g}")
    assert ks > 1e-3
    np.testing.assert_allclose(table.p[table.phenotype == "OMNIBUS"], direct, rtol=2e-4)  # float32 files


def test_planted_pathway_ranks_first(panel, tmp_path):
    """8 genes, each with a causal variant acting on 4 phenotypes, form a pathway among 15 random
    sets of 8 genes: it has the smallest P for the omnibus and every phenotype; a report locus
    at one of its variants maps to its gene at distance 0."""
    rng = np.random.default_rng(10)
    genes, bim, dosages = panel["genes"], panel["bim"], panel["dosages"]
    pathway = rng.choice(len(genes), 8, replace=False)
    effects = np.zeros((len(bim), 4))
    causal = []
    for g in pathway:
        inside = np.flatnonzero((bim.chrom == genes.chrom[g]) & bim.pos.between(genes.start[g], genes.end[g]))
        causal.append(int(rng.choice(inside)))
        effects[causal[-1]] = rng.choice([-1, 1], 4) * 0.12 / dosages[causal[-1]].std()
    phenotypes = dosages.T @ effects + rng.standard_normal((N_SAMPLES, 4))
    sets = {"PATHWAY": list(genes.gene[pathway])}
    for k in range(15):
        sets[f"RANDOM{k:02d}"] = list(genes.gene[rng.choice(len(genes), 8, replace=False)])
    gmt = tmp_path / "sets.gmt"
    gmt.write_text("".join(f"{name}\tdescription\t" + "\t".join(m) + "\n" for name, m in sets.items()))
    loci = tmp_path / "loci.tsv"
    lead = bim.iloc[causal[0]]
    pd.DataFrame(
        [[1, lead.chrom, lead.pos - 2000, lead.pos + 2000, lead.id, lead.pos, 9.0, "P1", 1, "P1", 5]],
        columns=[
            "locus",
            "chrom",
            "start",
            "end",
            "lead_id",
            "lead_pos",
            "lead_log10_p",
            "lead_phenotype",
            "n_phenotypes",
            "phenotypes",
            "n_variants",
        ],
    ).to_csv(loci, sep="\t", index=False)
    _genes(panel, tmp_path, "planted", phenotypes, gene_sets=str(gmt), loci=str(loci))
    table = pd.read_csv(tmp_path / "planted_genes" / "gene_sets.tsv", sep="\t")
    assert list(table.columns[:5]) == ["set", "phenotype", "beta", "se", "p"] or {
        "set",
        "phenotype",
        "beta",
        "se",
        "p",
    } <= set(table.columns)
    first = table.sort_values("p").groupby("phenotype").head(1).set_index("phenotype").set
    omnibus = table[table.phenotype == "OMNIBUS"].reset_index(drop=True)
    print(
        f"planted pathway: rank 1 in {int((first == 'PATHWAY').sum())} of 5; omnibus P {omnibus.p[0]:.3g}, "
        f"next set {omnibus.set[1]} P {omnibus.p[1]:.3g}"
    )
    assert (first == "PATHWAY").all() and omnibus.p[0] < 0.01
    mapped = pd.read_csv(tmp_path / "planted_genes" / "loci_genes.tsv", sep="\t")
    assert genes.gene[pathway[0]] in set(mapped.gene[mapped.distance == 0])
    page = (tmp_path / "planted_genes" / "genes.md").read_text()
    assert "## Genes of each locus" in page and "| PATHWAY | OMNIBUS |" in page


# ------------------------------------------------------------------------------------------
# Bad inputs: one line naming the file, exit 2, no output
# ------------------------------------------------------------------------------------------
def _bad_genes_file(panel, tmp_path) -> str:
    path = tmp_path / "chr_genes.tsv"
    genes = panel["genes"].assign(chrom="chr" + panel["genes"].chrom)
    genes.to_csv(path, sep="\t", index=False)
    return str(path)


def _gtf_without_genes(panel, tmp_path) -> str:
    path = tmp_path / "exons.gtf"
    path.write_text('1\tsim\texon\t1000\t2000\t.\t+\t.\tgene_id "G1"; transcript_id "T1";\n')
    return str(path)


def _gmt_of_unknown_genes(panel, tmp_path) -> str:
    path = tmp_path / "unknown.gmt"
    path.write_text("SET1\tdescription\tBRCA1\tTP53\nSET2\t-\tAPOE\n")
    return str(path)


@pytest.mark.parametrize(
    "case,flag,expected",
    [
        ("chr_prefix", "--genes", "chr1 vs 1"),
        ("gtf_without_genes", "--genes", "expected gene records"),
        ("gmt_of_unknown_genes", "--gene-sets", "no set names a gene of the annotation"),
    ],
)
def test_bad_inputs_end_in_one_line_naming_the_file(panel, tmp_path, capsys, case, flag, expected):
    rng = np.random.default_rng(12)
    write_gwas(tmp_path / "g", panel["bim"], panel["dosages"], rng.standard_normal((N_SAMPLES, 3)))
    make = {"chr_prefix": _bad_genes_file, "gtf_without_genes": _gtf_without_genes}
    bad = make.get(case, _gmt_of_unknown_genes)(panel, tmp_path)
    genes = bad if flag == "--genes" else str(panel["dir"] / "genes.tsv")
    argv = ["genes", "--gwas", str(tmp_path / "g"), "--bfile", str(panel["dir"] / "ref"), "--genes", genes]
    argv += ["--gene-sets", bad] if flag == "--gene-sets" else []
    before = sorted(p.name for p in tmp_path.iterdir())
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    lines = [line for line in err if "error" in line or "Traceback" in line]  # the rest is the log
    assert len(lines) == 1 and lines[0] == err[-1], err
    assert lines[0].startswith(f"wm-jax genes: error: {bad}: ") and expected in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output, no temporary


# ------------------------------------------------------------------------------------------
# The simulator's gene annotation
# ------------------------------------------------------------------------------------------
def test_simulated_annotation_plants_the_loci_genes_in_one_pathway(tiny_cohort):
    """genes.tsv lies along the .bim's chromosomes (read by the annotation reader, header and
    all); every planted locus is inside a gene of PLANTED_PATHWAY, which also holds as many
    background genes at most; the random sets have its size."""
    from wm_jax.genes.annotation import read_gene_sets, read_genes
    from wm_jax.simulate.annotation import PLANTED_SET

    genes = read_genes(tiny_cohort / "genes.tsv")
    bim = pd.read_csv(tiny_cohort / "genotypes.bim", sep="\t", header=None, dtype={0: str})
    sets = read_gene_sets(tiny_cohort / "gene_sets.gmt")
    truth = pd.read_csv(tiny_cohort / "truth.tsv", sep="\t", dtype={"chrom": str})
    assert set(genes.chrom) == set(bim[0]) and (genes.end > genes.start).all()
    pathway = genes[genes.gene.isin(sets[PLANTED_SET])]
    locus_genes = set()
    for locus in truth.itertuples():
        inside = pathway[(pathway.chrom == locus.chrom) & (pathway.start <= locus.pos) & (pathway.end >= locus.pos)]
        assert len(inside) >= 1, locus.variant
        locus_genes.update(inside.gene)
    assert len(locus_genes) < len(pathway) <= 2 * len(locus_genes)
    assert all(len(m) == len(pathway) for name, m in sets.items() if name != PLANTED_SET) and len(sets) == 21
    if len(genes) >= 2 * len(pathway):  # the random sets come from the other genes where there are enough
        assert all(not set(m) & set(pathway.gene) for name, m in sets.items() if name != PLANTED_SET)


def test_simulated_annotation_has_human_gene_density_and_loci_inside_genes():
    """On 4 chromosomes of 4 Mb (the demo's genome) with 8 loci and 1,600 background variants, for 3
    seeds: one gene per 90-170 kb (the human genome: one protein-coding gene per ~150 kb; it was
    ~40 kb), genes that do not overlap (a locus gene is one of the layout, not squeezed in beside
    another), every locus inside exactly one gene, of the pathway; random sets of the pathway's
    size, disjoint from it."""
    from wm_jax.simulate.annotation import PLANTED_SET, gene_annotation

    rng = np.random.default_rng(5)
    pos = np.arange(1, 4_000_000, 250)
    bim = pd.DataFrame({"chrom": np.repeat(["1", "2", "3", "4"], len(pos)), "pos": np.tile(pos, 4)})
    for seed in (1, 2, 3):
        loci = rng.choice(len(bim), 8, replace=False)
        genes, sets = gene_annotation(bim, list(loci), rng.choice(len(bim), 1600, replace=False), seed)
        spacing = 4 * 4e6 / len(genes)
        pathway = set(sets[PLANTED_SET])
        for chrom, on in genes.groupby("chrom"):
            assert (on.start.to_numpy()[1:] > on.end.to_numpy()[:-1]).all(), (seed, chrom)
        for v in loci:
            holding = genes[(genes.chrom == bim.chrom[v]) & (genes.start <= bim.pos[v]) & (genes.end >= bim.pos[v])]
            assert len(holding) == 1 and holding.gene.iloc[0] in pathway, (seed, v)
        randoms = [m for name, m in sets.items() if name != PLANTED_SET]
        print(f"seed {seed}: {len(genes)} genes, one per {spacing / 1000:.0f} kb; pathway of {len(pathway)}")
        assert 90e3 < spacing < 170e3
        assert len(randoms) == 20 and all(len(m) == len(pathway) and not set(m) & pathway for m in randoms)


def test_annotation_formats_read_alike(tmp_path):
    """A 4-column table with a header, MAGMA's 6-column .gene.loc (no header) and a GTF (gene
    records among exons) give the same genes; GTF and .gene.loc carry the symbol."""
    from wm_jax.genes.annotation import read_genes

    (tmp_path / "a.tsv").write_text("gene\tchrom\tstart\tend\nG1\t1\t100\t900\nG2\t2\t5000\t7000\n")
    (tmp_path / "b.gene.loc").write_text("G1 1 100 900 + ALPHA\nG2 2 5000 7000 - BETA\n")
    (tmp_path / "c.gtf").write_text(
        "#!genome-build test\n"
        '1\tsim\tgene\t100\t900\t.\t+\t.\tgene_id "G1"; gene_name "ALPHA";\n'
        '1\tsim\texon\t100\t300\t.\t+\t.\tgene_id "G1"; transcript_id "T1";\n'
        '2\tsim\tgene\t5000\t7000\t.\t-\t.\tgene_id "G2"; gene_name "BETA";\n'
    )
    tables = [read_genes(tmp_path / name) for name in ("a.tsv", "b.gene.loc", "c.gtf")]
    for table in tables:
        assert table[["gene", "chrom", "start", "end"]].values.tolist() == [
            ["G1", "1", 100, 900],
            ["G2", "2", 5000, 7000],
        ]
    assert list(tables[1].symbol) == list(tables[2].symbol) == ["ALPHA", "BETA"]


# ------------------------------------------------------------------------------------------
# The LD products, on the device and on the host
# ------------------------------------------------------------------------------------------
class _DosageBlocks:
    """A genotype source of uint16 dosages (plink2's unit, 1/16384; MISSING_DOSAGE for missing),
    as .pgen and BGEN sources hand their blocks to the device."""

    def __init__(self, dosages: np.ndarray) -> None:
        from wm_jax.data.source import MISSING_DOSAGE

        self.n_samples = dosages.shape[1]
        self.n_slots = self.n_samples + 3
        self.raw = np.zeros((len(dosages), self.n_slots), np.uint16)
        self.raw[:, : self.n_samples] = np.where(np.isnan(dosages), MISSING_DOSAGE, np.nan_to_num(dosages) * 16384)

    def read_block(self, rows):
        return self.raw[rows]

    def dosages(self, rows):
        from wm_jax.data.source import MISSING_DOSAGE

        raw = self.raw[rows, : self.n_samples]
        return np.where(raw == MISSING_DOSAGE, np.nan, raw / 16384).astype(np.float32)


def _unit_rows_float64(dosages: np.ndarray) -> np.ndarray:
    """NumPy float64: mean-imputed, centred, unit-norm rows (a constant variant: a row of 0)."""
    mean = np.nanmean(dosages, axis=1, keepdims=True)
    d = np.where(np.isnan(dosages), mean, dosages) - mean
    norm = np.sqrt((d**2).sum(axis=1, keepdims=True))
    return np.divide(d, norm, out=np.zeros_like(d), where=norm > 0)


@pytest.mark.parametrize("where", ["device", "host"])
@pytest.mark.parametrize("kind", ["bed", "dosages"])
def test_gene_ld_equals_numpy_float64(panel, tmp_path, kind, where):
    """`GeneLd` (decoded, standardised and multiplied on the device at full precision, with a ring
    of the genes within reach) and `HostGeneLd` (NumPy on the host) against NumPy float64 on the
    mean-imputed dosages: each gene's correlation within 2e-5 absolute (device: float32 sums over
    333 samples; host: float64), and each sum of squared correlations with an earlier gene within
    1e-5 relative. 24 overlapping genes of 3, 40 or 300 variants (blocks of 32, 64, 512 rows), 2%
    missing calls, a constant variant, from raw .bed bytes and from uint16 dosages (fractional); the
    4 latest genes kept, so the device's ring is compacted and doubled."""
    from wm_jax.data.plink import PlinkDataset
    from wm_jax.genes.ld import INITIAL_RING, GeneLd, HostGeneLd

    rng = np.random.default_rng(21)
    dosages = panel["dosages"][:, :333].copy()
    dosages[rng.random(dosages.shape) < 0.02] = np.nan
    dosages[7] = 1.0  # constant
    if kind == "dosages":
        dosages = np.where(np.isnan(dosages), np.nan, np.clip(dosages + rng.uniform(-0.3, 0.3, dosages.shape), 0, 2))
        data = _DosageBlocks(dosages)
        dosages = np.where(np.isnan(dosages), np.nan, data.raw[:, :333] / 16384)  # as stored
    else:
        write_bed(tmp_path / "g.bed", [encode_alt_dosages(dosages)])
        pd.DataFrame(
            {
                "c": 1,
                "i": [f"v{k}" for k in range(len(dosages))],
                "m": 0,
                "p": np.arange(len(dosages)) + 1,
                "a": "A",
                "b": "C",
            }
        ).to_csv(tmp_path / "g.bim", sep="\t", header=False, index=False)
        pd.DataFrame({"f": range(333), "i": range(333), "a": 0, "b": 0, "s": 1, "p": -9}).to_csv(
            tmp_path / "g.fam", sep=" ", header=False, index=False
        )
        data = PlinkDataset(tmp_path / "g")
    x64 = _unit_rows_float64(dosages)
    ld, genes, worst_r, worst_sum = (GeneLd if where == "device" else HostGeneLd)(data), [], 0.0, 0.0
    for g in range(24):
        size = int(rng.choice([3, 40, 300]))
        start = int(rng.integers(0, len(dosages) - size))
        rows = np.arange(start, start + size)
        genes = genes[-4:]
        ld.keep({key for key, _ in genes})
        correlation, between = ld.step(g, rows)
        worst_r = max(worst_r, float(np.abs(correlation - x64[rows] @ x64[rows].T).max()))
        assert set(between) == {key for key, _ in genes}
        for key, other in genes:
            expected = float(((x64[other] @ x64[rows].T) ** 2).sum())
            worst_sum = max(worst_sum, abs(between[key] - expected) / max(expected, 1e-3))
        genes.append((g, rows))
    print(f"{kind}, {where}: largest |r - r64| {worst_r:.2g}, largest relative error of a sum of r^2 {worst_sum:.2g}")
    assert worst_r < 2e-5 and worst_sum < 1e-5
    assert where == "host" or ld.ring.shape[0] > INITIAL_RING  # it grew
    assert where == "device" or (correlation.dtype == np.float64 and worst_r < 1e-12)


def test_gene_ld_backend_follows_jax_backend(monkeypatch):
    """NumPy on the host for XLA:CPU, the device step for GPUs and TPUs; LD_ON_DEVICE overrides."""
    import jax

    from wm_jax.genes import ld

    chosen = {}
    for backend in ("cpu", "gpu", "tpu"):
        monkeypatch.setattr(jax, "default_backend", lambda b=backend: b)
        chosen[backend] = ld.ld_on_device()
        for forced in (True, False):
            monkeypatch.setattr(ld, "LD_ON_DEVICE", forced)
            assert ld.ld_on_device() is forced
        monkeypatch.setattr(ld, "LD_ON_DEVICE", None)
    assert chosen == {"cpu": False, "gpu": True, "tpu": True}


def test_gene_ld_paths_give_the_same_gene_statistics(panel, tmp_path, monkeypatch):
    """`run_genes` with the LD on the device and on the host (5 phenotypes, 3 of them with causal
    variants in 6 genes; 20 random gene sets and the causal genes' set): the same genes and
    statistics, gene -log10 P within 2e-4 relative (+1e-6 absolute), the gene sets' beta within
    2e-4 of its se, se and P within 2e-4 relative; genes.json names the path. The device's r is
    float32 (|r - r64| ~1e-5); measured here: 1.1e-5, 8.5e-6 se and 1.3e-5."""
    from wm_jax.genes import ld

    rng = np.random.default_rng(12)
    genes, bim, dosages = panel["genes"], panel["bim"], panel["dosages"]
    causal_genes = rng.choice(len(genes), 6, replace=False)
    effects = np.zeros((len(bim), 5))
    for g in causal_genes:
        inside = np.flatnonzero((bim.chrom == genes.chrom[g]) & bim.pos.between(genes.start[g], genes.end[g]))
        v = int(rng.choice(inside))
        effects[v, :3] = rng.choice([-1, 1], 3) * 0.2 / dosages[v].std()
    write_gwas(tmp_path / "gwas", bim, dosages, dosages.T @ effects + rng.standard_normal((N_SAMPLES, 5)))
    gmt = tmp_path / "sets.gmt"
    sets = [genes.gene[causal_genes]] + [genes.gene[rng.choice(len(genes), 6, replace=False)] for _ in range(20)]
    gmt.write_text("".join(f"S{k}\t-\t" + "\t".join(m) + "\n" for k, m in enumerate(sets)))
    tables = {}
    for where in ("device", "host"):
        monkeypatch.setattr(ld, "LD_ON_DEVICE", where == "device")
        out = tmp_path / where
        summary = run_genes(
            str(tmp_path / "gwas"),
            GenotypeInput("bfile", str(panel["dir"] / "ref")),
            str(panel["dir"] / "genes.tsv"),
            str(out),
            GeneOptions(window_kb=5),
            gene_sets=str(gmt),
        )
        assert summary["gene_ld"] == json.loads((out / "genes.json").read_text())["gene_ld"] == where
        tables[where] = [pd.read_csv(out / name, sep="\t") for name in ("genes.tsv", "gene_sets.tsv")]
    (device, device_sets), (host, host_sets) = tables["device"], tables["host"]
    pd.testing.assert_frame_equal(
        device[["gene", "phenotype", "n_variants"]], host[["gene", "phenotype", "n_variants"]]
    )
    np.testing.assert_allclose(device.stat, host.stat, rtol=1e-6)
    worst = np.max(np.abs(device.neg_log10_p - host.neg_log10_p) / (host.neg_log10_p + 1e-6))
    worst_beta = np.max(np.abs(device_sets.beta - host_sets.beta) / host_sets.se)
    worst_sets = max(float(np.max(np.abs(device_sets[c] - host_sets[c]) / host_sets[c])) for c in ("se", "p"))
    print(
        f"device vs host LD: gene -log10 P within {worst:.2g} relative (largest {host.neg_log10_p.max():.1f}); "
        f"gene sets' beta within {worst_beta:.2g} se, se and P within {worst_sets:.2g} relative"
    )
    assert host.neg_log10_p.max() > 5  # the causal genes: P across the range
    np.testing.assert_allclose(device.neg_log10_p, host.neg_log10_p, rtol=2e-4, atol=1e-6)
    assert list(device_sets.set) == list(host_sets.set)
    assert worst_beta < 2e-4
    for column in ("se", "p"):
        np.testing.assert_allclose(device_sets[column], host_sets[column], rtol=2e-4)


def test_the_gene_ld_step_asks_for_full_precision():
    """Every dot of the compiled gene LD step (StableHLO and compiled HLO) at HIGHEST precision."""
    import jax
    from test_gwas_kernel import _dots_below_highest

    from wm_jax.genes.ld import compiled_gene_step

    lowered = compiled_gene_step(301).lower(
        jax.ShapeDtypeStruct((256, 304), np.float32),
        jax.ShapeDtypeStruct((256,), np.int32),
        jax.ShapeDtypeStruct((64, 76), np.uint8),
        np.int32(0),
    )
    for text in (lowered.as_text(), lowered.compile().as_text()):
        n_dots, below = _dots_below_highest(text)
        assert n_dots >= 2 and below == [], below
