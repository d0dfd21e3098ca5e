"""Why a KS test pooled over all genes rejects under the null, and what the gene P do instead.

    python benchmarks/genes_calibration.py --cohort COHORT [--phenotypes 860] [--replicates 20] [--name NAME]

On a simulated cohort (its genotypes, covariates.tsv and genes.tsv; window 10 kb, MAF >= 1%):
null phenotypes N(0, I), regressed on the cohort's covariates (PCs included) as `wm-jax gwas`
does. Gene P from three models of the variants' statistics and LD:
- exact: z = the numerator of the covariate-adjusted regression with sigma known, so z ~ N(0, R)
  with R the LD of the covariate-RESIDUALISED genotypes; gene P with that R. Exact by construction.
- raw LD: the same z, gene P with the LD of the raw genotypes (what `wm-jax genes` uses: a
  reference panel knows nothing of the GWAS's covariates).
- t, raw LD: chi2 from the P of the t-test (df n - k - 1), raw LD: the pipeline's model.
For each: KS over one gene per phenotype (phenotype j, gene j mod G: independent P over all
genes), KS pooled over all genes x phenotypes, the share of P below 0.05, 0.01, 0.001, and the
pooled KS p of R replicates (the phenotypes split in R groups). Also the sum of r^2 per gene
(raw / residualised), the part of the variance of a gene statistic that the LD sets.
Writes benchmarks/results/NAME.md (and .json; NAME genes_calibration by default).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from wm_jax.data.genotypes import open_genotypes
from wm_jax.genes.annotation import read_genes
from wm_jax.genes.genetest import chi2_from_neg_log10_p, gene_variants
from wm_jax.genes.quadform import quadform_sf

from gwas_vs_plink2 import write_result_table


def _standardised(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=1, keepdims=True)
    return x / np.sqrt((x**2).sum(axis=1, keepdims=True))


def _cohort(cohort: Path):
    """Mean-imputed dosages of the variants in gene windows (MAF >= 1%), each gene's rows, and the
    covariate basis (intercept and covariates.tsv, in .fam order)."""
    data = open_genotypes(str(cohort / "genotypes"))
    genes = read_genes(cohort / "genes.tsv")
    v = data.variants
    members = gene_variants(genes, v.chrom.astype(str).to_numpy(), v.pos.to_numpy(np.int64), 10_000)
    cols = np.unique(np.concatenate(members))
    d = data.dosages(cols).astype(np.float64)
    mean = np.nanmean(d, axis=1, keepdims=True)
    d = np.where(np.isnan(d), mean, d)
    keep = np.minimum(mean[:, 0], 2 - mean[:, 0]) / 2 >= 0.01
    row = -np.ones(cols.max() + 1, np.int64)
    row[cols[keep]] = np.arange(keep.sum())
    rows = [row[m][row[m] >= 0] for m in members]
    fam = pd.read_csv(cohort / "genotypes.fam", sep=r"\s+", header=None, dtype=str)
    cov = pd.read_csv(cohort / "covariates.tsv", sep="\t", dtype={"FID": str, "IID": str}).set_index("IID")
    c = np.column_stack([np.ones(len(fam)), cov.loc[fam[1]].drop(columns=["FID"]).to_numpy(np.float64)])
    return d[keep], [r for r in rows if len(r)], np.linalg.qr(c)[0]


def _row(name: str, p: np.ndarray, replicates: int) -> dict:
    """p: genes x phenotypes."""
    j = np.arange(p.shape[1])
    pooled = [stats.kstest(p[:, part].ravel(), "uniform").pvalue for part in np.array_split(j, replicates)]
    return {
        "model": name,
        "KS p, one gene per phenotype": float(f"{stats.kstest(p[j % len(p), j], 'uniform').pvalue:.3g}"),
        "KS p, pooled": float(f"{stats.kstest(p.ravel(), 'uniform').pvalue:.3g}"),
        "P < 0.05": round(float((p < 0.05).mean()), 4),
        "P < 0.01": round(float((p < 0.01).mean()), 5),
        "P < 0.001": round(float((p < 0.001).mean()), 6),
        f"replicates (of {replicates}) with pooled KS p < 1e-3": int(np.sum(np.array(pooled) < 1e-3)),
        "KS p of the replicates' pooled KS p": float(f"{stats.kstest(pooled, 'uniform').pvalue:.3g}"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", required=True)
    parser.add_argument("--phenotypes", type=int, default=860)
    parser.add_argument("--replicates", type=int, default=20)
    parser.add_argument("--name", default="genes_calibration", help="of the result files")
    args = parser.parse_args()
    d, rows, q = _cohort(Path(args.cohort))
    raw = _standardised(d)
    residualised = _standardised(d - (d @ q) @ q.T)
    y = np.random.default_rng(1).standard_normal((len(q), args.phenotypes))
    y -= q @ (q.T @ y)
    z = residualised @ y  # sigma = 1 known
    df = len(q) - q.shape[1] - 1
    t = z / np.sqrt(((y**2).sum(axis=0)[None] - z**2) / df)
    chi2_t = chi2_from_neg_log10_p(-(stats.t.logsf(np.abs(t), df) + np.log(2)) / np.log(10))
    p = {name: np.empty((len(rows), args.phenotypes)) for name in ("exact", "raw LD", "t, raw LD")}
    ratio = np.empty(len(rows))
    with threadpool_limits(1):
        for g, r in enumerate(rows):
            r_raw, r_res = raw[r] @ raw[r].T, residualised[r] @ residualised[r].T
            ratio[g] = (r_raw**2).sum() / (r_res**2).sum()
            lam_raw, lam_res = (np.clip(np.linalg.eigvalsh(m), 0, None) for m in (r_raw, r_res))
            p["exact"][g] = quadform_sf((z[r] ** 2).sum(axis=0), lam_res)[0]
            p["raw LD"][g] = quadform_sf((z[r] ** 2).sum(axis=0), lam_raw)[0]
            p["t, raw LD"][g] = quadform_sf(chi2_t[r].sum(axis=0), lam_raw)[0]
    table = [_row(name, v, args.replicates) for name, v in p.items()]
    for row in table:
        print(row, flush=True)
    print(
        write_result_table(
            args.name,
            "wm-jax genes: gene P under the null, all genes",
            f"{len(rows)} genes (median {int(np.median([len(r) for r in rows]))} variants), {len(q)} samples, "
            f"{q.shape[1]} covariates with the intercept, {args.phenotypes} null phenotypes. Sum of r^2 per gene, "
            f"raw / residualised LD: median {np.median(ratio):.4f}, max {ratio.max():.4f}.",
            table,
        )
    )


if __name__ == "__main__":
    main()
