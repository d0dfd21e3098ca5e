"""PerDI's statistics: the decoder's paired change per UDIP as a voxel-wise t, smoothing, and the
tract enrichment of each map's top voxels with its permutation p-value.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from wm_jax.stage_options import PerdiOptions

log = logging.getLogger("wm_jax")


def paired_t_maps(
    decode: Callable, codes: np.ndarray, step: np.ndarray, options: PerdiOptions = PerdiOptions()
) -> np.ndarray:
    """(D, X, Y, Z) paired t of decode(z + step_d e_d) - decode(z) over the subjects in ``codes`` (n, D).

    ``decode`` maps (m, D) codes to (m, X, Y, Z) volumes and must be traceable by jax."""
    return paired_difference_maps(decode, codes, step, options)[0]


def paired_difference_maps(
    decode: Callable, codes: np.ndarray, step: np.ndarray, options: PerdiOptions = PerdiOptions()
) -> tuple[np.ndarray, np.ndarray]:
    """The paired t maps of `paired_t_maps` and the mean change maps (D, X, Y, Z) they test. For a
    decoder that is close to linear the change is nearly the same in every subject, so t measures
    its small nonlinear spread; the mean change is what the UDIP moves."""
    import jax
    import jax.numpy as jnp

    n, n_dims = codes.shape
    if n < 3:
        raise ValueError("PerDI needs at least 3 subjects")
    kd, ks = min(options.dims_per_chunk, n_dims), min(options.subjects_per_chunk, n)

    @jax.jit
    def chunk_sums(z, dims, valid):
        # z (ks, D) codes, dims (kd,) dimension indices, valid (ks,) 1 for real subjects
        base = decode(z)
        shifted = z[None] + jax.nn.one_hot(dims, n_dims)[:, None, :] * jnp.asarray(step)[dims][:, None, None]
        moved = decode(shifted.reshape(-1, n_dims)).reshape(kd, ks, *base.shape[1:])
        diff = (moved - base[None]) * valid.reshape(1, ks, *([1] * (base.ndim - 1)))
        return diff.sum(axis=1), (diff * diff).sum(axis=1)

    dim_chunks = [np.arange(s, s + kd) % n_dims for s in range(0, n_dims, kd)]  # the last chunk wraps; trimmed below
    subject_chunks = [np.arange(s, min(s + ks, n)) for s in range(0, n, ks)]
    sums = {}
    with tqdm(total=len(dim_chunks) * len(subject_chunks), desc="perdi", unit="chunk", mininterval=1.0) as bar:
        for c, dims in enumerate(dim_chunks):
            for rows in subject_chunks:
                z = np.zeros((ks, n_dims), np.float32)
                z[: len(rows)] = codes[rows]
                valid = (np.arange(ks) < len(rows)).astype(np.float32)
                s1, s2 = chunk_sums(jnp.asarray(z), jnp.asarray(dims), jnp.asarray(valid))
                a, b = sums.get(c, (0.0, 0.0))
                sums[c] = (a + np.asarray(s1, np.float64), b + np.asarray(s2, np.float64))
                bar.update()
    total = np.concatenate([sums[c][0] for c in range(len(dim_chunks))])[:n_dims]
    total_sq = np.concatenate([sums[c][1] for c in range(len(dim_chunks))])[:n_dims]
    mean = total / n
    var = np.maximum(total_sq - n * mean**2, 0.0) / (n - 1)
    se = np.sqrt(var / n)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, mean / se, 0.0)
    return t, mean


def smooth(volume: np.ndarray, fwhm_mm: float, voxel_mm: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    sigma = fwhm_mm / np.sqrt(8 * np.log(2)) / np.asarray(voxel_mm, float)
    return ndimage.gaussian_filter(volume, sigma=sigma, mode="constant")


def tract_enrichment(
    score: np.ndarray,
    mask: np.ndarray,
    atlas: np.ndarray,
    labels: pd.DataFrame,
    top_fraction: float,
    n_permutations: int,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Rank the tracts by enrichment of the top voxels of ``score`` inside ``mask``."""
    values = score[mask]
    tract_of = atlas[mask]
    n_top = max(1, int(round(top_fraction * len(values))))
    top = np.argsort(-values, kind="stable")[:n_top]
    rows = []
    for label, tract in zip(labels.label, labels.tract):
        in_tract = int((tract_of == label).sum())
        hits = int((tract_of[top] == label).sum())
        expected = n_top * in_tract / len(values)
        null = (
            rng.hypergeometric(in_tract, len(values) - in_tract, n_top, size=n_permutations)
            if in_tract
            else np.zeros(1)
        )
        p = (1 + int((null >= hits).sum())) / (1 + len(null)) if in_tract else 1.0
        rows.append(
            {
                "tract": tract,
                "label": int(label),
                "n_voxels": in_tract,
                "n_top": hits,
                "enrichment": hits / expected if expected > 0 else np.nan,
                "p_perm": p,
            }
        )
    table = pd.DataFrame(rows).sort_values(["enrichment", "n_top"], ascending=False, kind="stable")
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table


def perdi(
    decode: Callable,
    codes: np.ndarray,
    mask: np.ndarray,
    atlas: np.ndarray,
    labels: pd.DataFrame,
    voxel_mm,
    options: PerdiOptions = PerdiOptions(),
    changes: list | None = None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Smoothed |t| maps (D, X, Y, Z) and the per-dimension tract enrichment table; the mean change
    maps are appended to ``changes`` when it is given."""
    step = codes.std(axis=0, ddof=1)
    t, mean = paired_difference_maps(decode, codes, step, options)
    if changes is not None:
        changes.append((mean * mask).astype(np.float32))
    rng = np.random.default_rng(options.seed)
    maps, tables = [], []
    for d in range(codes.shape[1]):
        m = smooth(np.abs(t[d]) * mask, options.fwhm_mm, voxel_mm) * mask
        maps.append(m.astype(np.float32))
        table = tract_enrichment(m, mask, atlas, labels, options.top_fraction, options.n_permutations, rng)
        tables.append(table.assign(dimension=d + 1))
    enrichment = pd.concat(tables)[["dimension", "rank", "tract", "label", "n_voxels", "n_top", "enrichment", "p_perm"]]
    return np.stack(maps), enrichment
