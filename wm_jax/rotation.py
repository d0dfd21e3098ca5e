"""A varimax rotation of the latent space: UDIPs that each move one compact part of white matter.

An autoencoder's latent space is identified only up to an invertible map: any rotation of the
codes can be undone by the decoder, and training picks one at random. So the raw latent
coordinates mix spatial patterns, and a locus that moves one pattern is spread thinly over many
UDIPs. Before the GWAS the codes are whitened (zero mean, identity covariance over the embedded
subjects) and rotated by varimax (Kaiser 1958) of the decoder's loadings, the Jacobian of the
reconstruction with respect to the whitened code at the mean code. Varimax makes each column of
the loadings as sparse as possible, so each UDIP changes few voxels. Whitening and rotation are
fit on images alone (no genotypes), and the map is recorded so PerDI can undo it.

The rotated UDIPs span the same space as the raw codes: the multivariate (omnibus) test is
unchanged, and the single-UDIP tests gain power when a locus moves one compact pattern.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def varimax(loadings: np.ndarray, max_iterations: int = 500, tolerance: float = 1e-7) -> np.ndarray:
    """The orthogonal (k, k) rotation R maximising the varimax criterion of ``loadings @ R`` (p, k):
    the sum over columns of the variance of the squared loadings (Kaiser 1958, the SVD iteration)."""
    p, k = loadings.shape
    rotation = np.eye(k)
    criterion = 0.0
    for _ in range(max_iterations):
        rotated = loadings @ rotation
        target = rotated**3 - rotated * (rotated**2).sum(axis=0) / p
        u, singular, vt = np.linalg.svd(loadings.T @ target)
        rotation = u @ vt
        previous, criterion = criterion, singular.sum()
        if criterion <= previous * (1 + tolerance):
            break
    return rotation


@dataclass
class LatentMap:
    """UDIP = (code - mean) @ forward; code = mean + UDIP @ inverse."""

    mean: np.ndarray  # (k,)
    forward: np.ndarray  # (k, k)
    inverse: np.ndarray  # (k, k)

    def apply(self, codes: np.ndarray) -> np.ndarray:
        return (codes - self.mean) @ self.forward

    def undo(self, udips: np.ndarray) -> np.ndarray:
        return self.mean + udips @ self.inverse

    def to_json(self) -> dict:
        return {"mean": self.mean.tolist(), "forward": self.forward.tolist(), "inverse": self.inverse.tolist()}

    @classmethod
    def from_json(cls, record: dict) -> LatentMap:
        return cls(*(np.asarray(record[key], np.float64) for key in ("mean", "forward", "inverse")))


def whitened_varimax(codes: np.ndarray, jacobian: np.ndarray) -> LatentMap:
    """The whitening + varimax map of ``codes`` (n, k) given the decoder's Jacobian (voxels, k) at
    their mean. Columns are ordered by the variance their loadings explain, signs so that each
    column's largest loading is positive."""
    mean = codes.mean(axis=0)
    covariance = np.cov(codes - mean, rowvar=False)
    values, vectors = np.linalg.eigh(covariance)
    values = np.maximum(values, 1e-12 * values.max())
    root = vectors @ np.diag(np.sqrt(values)) @ vectors.T  # C^(1/2)
    inverse_root = vectors @ np.diag(1 / np.sqrt(values)) @ vectors.T  # C^(-1/2)
    loadings = jacobian @ root  # a unit change of each whitened coordinate, in voxels
    rotation = varimax(loadings)
    rotated = loadings @ rotation
    order = np.argsort(-(rotated**2).sum(axis=0))
    signs = np.sign(rotated[np.abs(rotated).argmax(axis=0), np.arange(rotated.shape[1])])[order]
    rotation = rotation[:, order] * signs
    return LatentMap(mean, inverse_root @ rotation, rotation.T @ root)
