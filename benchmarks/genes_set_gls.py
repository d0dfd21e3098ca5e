"""The gene-set regression's GLS: is its gene-gene correlation right, is it needed, and what it does
to a planted pathway.

    python benchmarks/genes_set_gls.py --cohort COHORT [--phenotypes 500] [--run DEMO_DIR] [--tag TAG]

Null part, on COHORT (genotypes, genes.tsv; window 10 kb, MAF >= 1%): z ~ N(0, R) exactly (R the
raw LD), gene Z = Phi^-1(1 - P) per phenotype, and C from `wm-jax genes`'s formula (pairs within
500 kb). (1) For every eigenvector of each block of C, the variance over phenotypes of Z projected
on it, over its eigenvalue (1 where C is right), by eigenvalue range. (2) Null P of 100 random sets
of 16 genes and 100 sets of 8 adjacent gene pairs, by GLS and by OLS (no covariates).
With --run (a `wm-jax demo` directory): `run_genes` on each set's discovery GWAS as the demo runs
it, and the planted pathway's omnibus P and rank among the sets by the GLS and by OLS.
(3) The empirical correlation of neighbouring genes' Z against the formula's, by range.
Writes benchmarks/results/genes_set_gls_{eigen,pairs,sets,planted}.md (and .json).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy import special
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from genes_calibration import _cohort, _standardised

import wm_jax.genes.run as genes_run
from wm_jax.data.source import GenotypeInput
from wm_jax.genes.gene_sets import gene_set_regression, whitening_blocks
from wm_jax.genes.genetest import CORRELATION_KB
from wm_jax.genes.quadform import quadform_sf
from wm_jax.stage_options import GeneOptions

from gwas_vs_plink2 import write_result_table

RANGES = [(0, 0.02), (0.02, 0.05), (0.05, 0.1), (0.1, 0.5), (0.5, 2), (2, np.inf)]


def null_gene_z(cohort: Path, phenotypes: int) -> tuple[np.ndarray, list]:
    """Gene Z (genes x phenotypes) under z ~ N(0, R), and the (gene, gene, correlation) pairs."""
    from wm_jax.genes.annotation import read_genes
    from wm_jax.genes.genetest import gene_variants

    d, rows, _ = _cohort(cohort)
    x = _standardised(d)
    genes = read_genes(cohort / "genes.tsv")
    data_rows = [m for m in gene_variants(genes, *_positions(cohort), 10_000) if len(m)]
    genes = genes.iloc[[g for g, m in enumerate(gene_variants(genes, *_positions(cohort), 10_000)) if len(m)]]
    genes = genes.reset_index(drop=True)
    assert len(data_rows) == len(rows) == len(genes)
    z = x @ np.random.default_rng(3).standard_normal((x.shape[1], phenotypes))
    gene_z, frob, pairs = np.empty((len(rows), phenotypes)), np.empty(len(rows)), []
    with threadpool_limits(1):
        for g, r in enumerate(rows):
            correlation = x[r] @ x[r].T
            nl = quadform_sf((z[r] ** 2).sum(axis=0), np.clip(np.linalg.eigvalsh(correlation), 0, None))[1]
            gene_z[g] = -special.ndtri_exp(np.minimum(-nl * np.log(10), np.log1p(-1e-12)))
            frob[g] = (correlation**2).sum()
            for h in range(g - 1, -1, -1):
                if genes.chrom[h] != genes.chrom[g]:
                    break
                if genes.end[h] >= genes.start[g] - CORRELATION_KB * 1000:
                    between = ((x[rows[h]] @ x[r].T) ** 2).sum()
                    pairs.append((h, g, between / np.sqrt(frob[h] * frob[g])))
    return gene_z, pairs


def _positions(cohort: Path):
    from wm_jax.data.genotypes import open_genotypes

    v = open_genotypes(str(cohort / "genotypes")).variants
    return v.chrom.astype(str).to_numpy(), v.pos.to_numpy(np.int64)


def eigen_rows(gene_z: np.ndarray, pairs: list) -> list[dict]:
    ratios, values = [], []
    centred = gene_z - gene_z.mean(axis=1, keepdims=True)
    for genes, _ in whitening_blocks(len(gene_z), pairs):
        where = {g: k for k, g in enumerate(genes)}
        c = np.eye(len(genes))
        for a, b, rho in pairs:
            if a in where and b in where:
                c[where[a], where[b]] = c[where[b], where[a]] = min(rho, 1.0)
        ev, vectors = np.linalg.eigh(c)
        ratios.append((vectors.T @ centred[genes]).var(axis=1) / ev)
        values.append(ev)
    ratios, values = np.concatenate(ratios), np.concatenate(values)
    rows = []
    for lo, hi in RANGES:
        m = (values >= lo) & (values < hi)
        if m.any():
            rows.append(
                {
                    "check": f"C's eigenvalues in [{lo:g}, {hi:g})",
                    "n": int(m.sum()),
                    "var(Z on eigenvector) / eigenvalue, mean": round(float(ratios[m].mean()), 3),
                    "min": round(float(ratios[m].min()), 3),
                    "max": round(float(ratios[m].max()), 3),
                }
            )
    return rows


def correlation_rows(gene_z: np.ndarray, pairs: list) -> list[dict]:
    """The empirical correlation of two genes' Z over the null phenotypes against the formula's."""
    formula = np.array([rho for _, _, rho in pairs])
    empirical = np.array([np.corrcoef(gene_z[a], gene_z[b])[0, 1] for a, b, _ in pairs])
    rows = []
    for lo, hi in [(0.02, 0.05), (0.05, 0.1), (0.1, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1.0)]:
        m = (formula >= lo) & (formula < hi)
        if m.any():
            rows.append(
                {
                    "formula's correlation": f"[{lo:g}, {hi:g})",
                    "pairs": int(m.sum()),
                    "mean, formula": round(float(formula[m].mean()), 3),
                    "mean, empirical corr of Z": round(float(empirical[m].mean()), 3),
                }
            )
    return rows


def set_rows(gene_z: np.ndarray, pairs: list) -> list[dict]:
    rng, n = np.random.default_rng(0), len(gene_z)
    sets = [rng.choice(n, 16, replace=False) for _ in range(100)]
    for _ in range(100):
        starts = rng.choice(n - 1, 8, replace=False)
        sets.append(np.unique(np.concatenate([starts, starts + 1])))
    membership = np.zeros((n, len(sets)), bool)
    for k, members in enumerate(sets):
        membership[members, k] = True
    rows = []
    for name, blocks in (("GLS", whitening_blocks(n, pairs)), ("OLS", [])):
        _, _, p = gene_set_regression(gene_z, np.zeros((n, 0)), membership, blocks)
        for kind, cut in (("100 random sets of 16", slice(0, 100)), ("100 sets of 8 adjacent pairs", slice(100, 200))):
            values = p[cut].ravel()
            rows.append(
                {
                    "check": f"{name}, {kind}",
                    "n": int(values.size),
                    "P < 0.05": round(float(np.mean(values < 0.05)), 4),
                    "P < 0.01": round(float(np.mean(values < 0.01)), 4),
                    "P < 0.001": round(float(np.mean(values < 0.001)), 5),
                }
            )
    return rows


def planted_rows(run: Path) -> list[dict]:
    """The planted pathway's omnibus P and rank by the GLS and by OLS, per phenotype set."""
    from wm_jax.simulate.annotation import PLANTED_SET

    captured = {}

    def capture(z, covariates, membership, blocks):
        captured.update(z=z, covariates=covariates, membership=membership, blocks=blocks)
        return gene_set_regression(z, covariates, membership, blocks)

    genes_run.gene_set_regression = capture
    names = [line.split("\t")[0] for line in (run / "cohort" / "gene_sets.gmt").read_text().splitlines()]
    rows = []
    for kind in ("udip", "roi", "pca", "oracle"):
        with tempfile.TemporaryDirectory() as tmp:
            genes_run.run_genes(
                str(run / "gwas" / f"{kind}_discovery"),
                GenotypeInput("bfile", str(run / "cohort" / "genotypes")),
                str(run / "cohort" / "genes.tsv"),
                str(Path(tmp) / "genes"),
                GeneOptions(),
                gene_sets=str(run / "cohort" / "gene_sets.gmt"),
            )
        k = names.index(PLANTED_SET)
        row = {"check": f"planted pathway, {kind}, omnibus"}
        for name, blocks in (("GLS", captured["blocks"]), ("OLS", [])):
            beta, _, p = gene_set_regression(captured["z"], captured["covariates"], captured["membership"], blocks)
            row[f"{name} beta"] = round(float(beta[k, -1]), 3)
            row[f"{name} P"] = float(f"{p[k, -1]:.3g}")
            row[f"{name} rank"] = f"{int((p[:, -1] < p[k, -1]).sum()) + 1}/{len(p)}"
        rows.append(row)
    genes_run.gene_set_regression = gene_set_regression
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", required=True)
    parser.add_argument("--phenotypes", type=int, default=500)
    parser.add_argument("--run")
    parser.add_argument("--tag", default="", help="appended to the result files' names")
    args = parser.parse_args()
    gene_z, pairs = null_gene_z(Path(args.cohort), args.phenotypes)
    about = f"{len(gene_z)} genes of {args.cohort}, {args.phenotypes} null phenotypes (z ~ N(0, R) exactly)"
    tables = [
        (
            "genes_set_gls_eigen",
            "the GLS's gene correlation C along its eigenvectors (null)",
            eigen_rows(gene_z, pairs),
        ),
        ("genes_set_gls_pairs", "gene Z correlations: formula and null", correlation_rows(gene_z, pairs)),
        ("genes_set_gls_sets", "null gene-set P by GLS and OLS", set_rows(gene_z, pairs)),
    ]
    if args.run:
        tables.append(
            ("genes_set_gls_planted", f"the planted pathway of {args.run} by GLS and OLS", planted_rows(Path(args.run)))
        )
    for name, heading, rows in tables:
        name = f"{name}_{args.tag}" if args.tag else name
        print(write_result_table(name, f"wm-jax genes: {heading}", about + ".", rows))


if __name__ == "__main__":
    main()
