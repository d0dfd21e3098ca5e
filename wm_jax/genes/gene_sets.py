"""Competitive gene-set analysis (MAGMA style): gene Z-scores regressed on set membership with
covariates, one-sided test of a positive membership effect, by generalised least squares.

Model, per phenotype and set: Z = b0 + b_set [gene in set] + b1 log(n_variants)
+ b2 log(variants per kb of the tested window) + e, e ~ N(0, sigma^2 C), with C the correlation of
nearby genes' statistics (`genetest`, an approximation of the correlation of their Z-scores, as
MAGMA approximates it). C is block-diagonal over groups of genes linked by a correlation; each
block is whitened by its inverse square root (eigenvalues floored at EIGEN_FLOOR, as C is pieced
together from pairs and need not be positive definite), then it is ordinary least squares.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse, stats
from scipy.sparse.csgraph import connected_components

EIGEN_FLOOR = 0.01
SETS_PER_PRODUCT = 512  # set columns whitened and fitted at a time


def whitening_blocks(n_genes: int, pairs: list[tuple[int, int, float]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(genes, C_block^-1/2) for every group of correlated genes (singletons are left out: identity)."""
    if not pairs:
        return []
    a, b, r = (np.array(v) for v in zip(*pairs, strict=True))
    graph = sparse.coo_matrix((np.ones(len(a)), (a, b)), shape=(n_genes, n_genes))
    _, label = connected_components(graph, directed=False)
    blocks = []
    for component in np.unique(label[a]):
        genes = np.flatnonzero(label == component)
        where = {g: k for k, g in enumerate(genes)}
        c = np.eye(len(genes))
        inside = label[a] == component
        for i, j, rho in zip(a[inside], b[inside], r[inside], strict=True):
            c[where[i], where[j]] = c[where[j], where[i]] = min(rho, 1.0)
        values, vectors = np.linalg.eigh(c)
        blocks.append((genes, (vectors / np.sqrt(np.maximum(values, EIGEN_FLOOR))) @ vectors.T))
    return blocks


def _whiten(matrix: np.ndarray, blocks) -> np.ndarray:
    out = np.array(matrix, np.float64, copy=True)
    for genes, root in blocks:
        out[genes] = root @ matrix[genes]
    return out


def gene_set_regression(
    z: np.ndarray, covariates: np.ndarray, membership: np.ndarray, blocks
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """beta, se and one-sided P (beta > 0) of each set (columns of ``membership``, genes x sets)
    for each phenotype (columns of ``z``, genes x phenotypes): arrays of sets x phenotypes.
    ``covariates`` (genes x k) get an intercept here."""
    design = _whiten(np.column_stack([np.ones(len(z)), covariates]), blocks)
    basis, _ = np.linalg.qr(design)
    zw = _whiten(z, blocks)
    zr = zw - basis @ (basis.T @ zw)
    df = len(z) - design.shape[1] - 1
    out = [np.empty((membership.shape[1], z.shape[1])) for _ in range(3)]
    for start in range(0, membership.shape[1], SETS_PER_PRODUCT):
        cut = slice(start, start + SETS_PER_PRODUCT)
        sw = _whiten(membership[:, cut].astype(np.float64), blocks)
        sr = sw - basis @ (basis.T @ sw)
        ss = (sr**2).sum(axis=0)[:, None]
        beta = (sr.T @ zr) / ss
        rss = (zr**2).sum(axis=0)[None, :] - beta**2 * ss
        se = np.sqrt(np.maximum(rss, 0) / df / ss)
        out[0][cut], out[1][cut], out[2][cut] = beta, se, stats.t.sf(beta / se, df)
    return out[0], out[1], out[2]
