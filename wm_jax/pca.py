"""Principal components of FA maps: the linear baseline the UDIP encoder must beat.

PCA with as many components as the encoder has latent dimensions, fit on the encoder's training
store (voxels of its brain mask), gives (a) the held-out reconstruction error any useful
nonlinear encoder should undercut and (b) image PC scores (IPC1.., named apart from the genetic
PCs among the covariates), a linear atlas-free phenotype to GWAS beside the UDIPs. The fit goes
through the subjects' Gram matrix (N x N, accumulated over chunks of volumes), so memory is N^2
plus one chunk, whatever the grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from wm_jax.data.store import VolumeStore


@dataclass
class Pca:
    mask: np.ndarray  # (X, Y, Z) bool: the voxels it was fit on
    mean: np.ndarray  # (V,) over the mask voxels
    components: np.ndarray  # (K, V) orthonormal rows
    explained_variance: np.ndarray  # (K,)

    def scores(self, volumes: np.ndarray) -> np.ndarray:
        """(N, X, Y, Z) -> (N, K)."""
        return (volumes.reshape(len(volumes), -1)[:, self.mask.ravel()] - self.mean) @ self.components.T

    def reconstruct(self, scores: np.ndarray) -> np.ndarray:
        """(N, K) -> (N, X, Y, Z): the mean plus the components; 0 outside the fit's mask."""
        out = np.zeros((len(scores), self.mask.size), np.float32)
        out[:, self.mask.ravel()] = self.mean + scores @ self.components
        return out.reshape(len(scores), *self.mask.shape)


def _chunks(store: VolumeStore, rows: np.ndarray, mask: np.ndarray, chunk: int):
    flat = mask.ravel()
    for start in range(0, len(rows), chunk):
        block = np.asarray(store.volumes[np.sort(rows[start : start + chunk])], np.float64)
        yield start, block.reshape(len(block), -1)[:, flat]


def fit_pca(store: VolumeStore, n_components: int, rows: np.ndarray | None = None, chunk: int = 256) -> Pca:
    """PCA of the store's volumes (``rows`` of it, default all) over its mask, through the N x N
    Gram matrix of the centred volumes."""
    mask = np.asarray(store.mask, bool)
    rows = np.sort(np.arange(len(store)) if rows is None else np.asarray(rows))
    n = len(rows)
    mean = np.zeros(int(mask.sum()))
    for _, block in _chunks(store, rows, mask, chunk):
        mean += block.sum(axis=0)
    mean /= n
    gram = np.zeros((n, n))
    blocks = [(start, block - mean) for start, block in _chunks(store, rows, mask, chunk)]
    for i, a in blocks:
        for j, b in blocks:
            gram[i : i + len(a), j : j + len(b)] = a @ b.T
    eigenvalues, eigenvectors = np.linalg.eigh(gram)
    order = np.argsort(eigenvalues)[::-1][: min(n_components, n - 1)]
    values, vectors = np.maximum(eigenvalues[order], 0), eigenvectors[:, order]
    components = np.zeros((len(order), mean.size))
    for start, block in blocks:
        components += vectors[start : start + len(block)].T @ block
    components /= np.sqrt(np.maximum(values, 1e-30))[:, None]
    return Pca(
        mask, mean.astype(np.float32), components.astype(np.float32), (values / max(n - 1, 1)).astype(np.float32)
    )


def pca_table(pca: Pca, store: VolumeStore, chunk: int = 256) -> pd.DataFrame:
    """FID IID IPC1..IPCK and each subject's masked reconstruction MSE over ``store``'s own mask
    (the measure `wm-jax embed` reports for the encoder)."""
    mask = np.asarray(store.mask, np.float32)
    scores, errors = [], []
    for start in range(0, len(store), chunk):
        volumes = np.asarray(store.volumes[start : start + chunk], np.float32)
        s = pca.scores(volumes)
        residual = (pca.reconstruct(s) - volumes) ** 2 * mask
        scores.append(s)
        errors.append(residual.reshape(len(volumes), -1).sum(axis=1) / mask.sum())
    table = pd.DataFrame(np.concatenate(scores), columns=[f"IPC{k + 1}" for k in range(pca.components.shape[0])])
    table.insert(0, "IID", store.index.IID.to_numpy())
    table.insert(0, "FID", store.index.FID.to_numpy())
    table["reconstruction_mse"] = np.concatenate(errors)
    return table
