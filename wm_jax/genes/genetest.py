"""The SNP-wise mean gene test (MAGMA's 'snp-wise=mean' model), for every phenotype and the omnibus.

For gene g with variants i = 1..m (inside the gene +/- the window), the statistic is
T_g = sum_i chi2_i. Under the null the variants' Z-scores are N(0, R), R their LD correlation in
the reference panel (dosages mean-imputed, over the reference samples; computed on the device or
the host, `wm_jax.genes.ld`), so T_g is distributed as sum_k lambda_k chi2_1 with lambda the
eigenvalues of R (`quadform.quadform_sf`). The eigen-decomposition (float64, on the host) is done
once per gene and shared by every phenotype.

chi2_i is taken from the variant's P (the chi2_1 quantile of the GWAS's t-test P), which is
(BETA/SE)^2 at large N and keeps small-N tests (t with few df) calibrated.

The omnibus: a variant's multivariate statistic t_i' S^-1 t_i (S the phenotypes' correlation) is
the sum of squares of P whitened Z-scores, each correlated across variants by the same R. So the
gene's sum over its variants is sum_k lambda_k chi2_P exactly under that model: the same
eigenvalues, each with P degrees of freedom.

The correlation between the statistics of two genes on one chromosome (for the gene-set GLS) is
sum_{i in g, j in h} r_ij^2 / sqrt(sum_{g} r^2 sum_{h} r^2), as cov(chi2_i, chi2_j) = 2 r_ij^2.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import special
from tqdm.auto import tqdm

from wm_jax.genes.ld import gene_ld
from wm_jax.genes.quadform import quadform_sf

log = logging.getLogger("wm_jax")

CORRELATION_KB = 500.0  # genes whose windows lie within this distance get a statistic correlation


@dataclass
class GeneTests:
    """Per tested gene (rows) and statistic (columns: phenotypes, then the omnibus)."""

    genes: pd.DataFrame  # the tested genes: gene, chrom, start, end, n_variants
    stat: np.ndarray
    neg_log10_p: np.ndarray
    pairs: list[tuple[int, int, float]] = field(default_factory=list)  # (gene row, gene row, correlation)

    @property
    def p(self) -> np.ndarray:
        return 10.0**-self.neg_log10_p

    @property
    def z(self) -> np.ndarray:
        """Gene Z = Phi^-1(1 - p), from log P (finite however small P is; P is capped at 1 - 1e-12,
        a Z of -7, so that a gene whose variants all have P = 1 is not an outlier of -38)."""
        return -special.ndtri_exp(np.minimum(-self.neg_log10_p * np.log(10), np.log1p(-1e-12)))


def chi2_from_neg_log10_p(neg_log10_p: np.ndarray) -> np.ndarray:
    """The chi2_1 quantile of each P given as -log10 P (float64, no underflow)."""
    log_half_p = np.asarray(neg_log10_p, np.float64) * -np.log(10) - np.log(2)
    return special.ndtri_exp(np.minimum(log_half_p, -1e-300)) ** 2


def gene_variants(genes: pd.DataFrame, chrom: np.ndarray, pos: np.ndarray, window_bp: int) -> list[np.ndarray]:
    """For each gene, the indices (ascending) of the variants within its start - window and end + window."""
    order = np.lexsort((pos, chrom))
    out = []
    by_chrom = {c: order[chrom[order] == c] for c in pd.unique(chrom)}
    for row in genes.itertuples():
        on = by_chrom.get(row.chrom)
        if on is None:
            out.append(np.zeros(0, np.int64))
            continue
        lo = np.searchsorted(pos[on], row.start - window_bp, side="left")
        hi = np.searchsorted(pos[on], row.end + window_bp, side="right")
        out.append(np.sort(on[lo:hi]))
    return out


def run_gene_tests(
    genes: pd.DataFrame,
    members: list[np.ndarray],
    chi2: np.ndarray,
    omnibus_df: int | None,
    reference_rows: np.ndarray,
    data,
) -> GeneTests:
    """Gene tests of every statistic row of ``chi2`` (statistics x variants; with ``omnibus_df``
    the last row is the omnibus statistic, with that many df per eigenvalue). ``members``: each
    gene's variant columns; ``reference_rows``: each column's row in the LD reference ``data`` (a
    genotype source), whose LD products are made on the device or on the host by backend
    (`wm_jax.genes.ld.gene_ld`)."""
    sizes = np.array([len(m) for m in members])
    reach = CORRELATION_KB * 1000
    ld = gene_ld(data, genes.start.to_numpy(), genes.end.to_numpy(), genes.chrom.to_numpy(), sizes, reach)
    rows, stats, neg_log10_p, pairs = [], [], [], []
    recent: deque = deque()  # (tested row, chrom, window start, window end, sum r^2, gene) of nearby genes
    n_stats = chi2.shape[0]
    for g in tqdm(range(len(genes)), desc="genes", unit="gene", mininterval=1.0):
        cols = members[g]
        if not len(cols):
            continue
        gene = genes.iloc[g]
        while recent and (recent[0][1] != gene.chrom or recent[0][3] < gene.start - CORRELATION_KB * 1000):
            recent.popleft()
        ld.keep({entry[5] for entry in recent})
        correlation, between = ld.step(g, reference_rows[cols])
        varies = np.diag(correlation) > 0.5  # 1 for a varying variant, 0 for a constant one
        if not varies.any():
            continue
        cols, correlation = cols[varies], correlation[np.ix_(varies, varies)]
        lam = np.clip(np.linalg.eigvalsh(correlation), 0, None)
        stat = chi2[:, cols].sum(axis=1)
        nl = np.empty(n_stats)
        single = n_stats - 1 if omnibus_df else n_stats
        nl[:single] = quadform_sf(stat[:single], lam, 1.0)[1]
        if omnibus_df:
            nl[single:] = quadform_sf(stat[single:], lam, float(omnibus_df))[1]
        here, frob = len(rows), float((correlation**2).sum())
        for row, *_, other_frob, key in recent:
            if between.get(key, 0.0) > 0:
                pairs.append((row, here, between[key] / np.sqrt(frob * other_frob)))
        recent.append((here, gene.chrom, gene.start, gene.end, frob, g))
        rows.append(
            {"gene": gene.gene, "chrom": gene.chrom, "start": gene.start, "end": gene.end, "n_variants": len(cols)}
        )
        stats.append(stat)
        neg_log10_p.append(nl)
    table = pd.DataFrame(rows, columns=["gene", "chrom", "start", "end", "n_variants"])
    shape = (0, n_stats)
    return GeneTests(
        table,
        np.array(stats).reshape(-1, n_stats) if stats else np.zeros(shape),
        np.array(neg_log10_p).reshape(-1, n_stats) if stats else np.zeros(shape),
        pairs,
    )
