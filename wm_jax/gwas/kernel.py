"""The association kernel: exact per-variant OLS for many phenotypes from raw .bed bytes.

For one phenotype group (phenotypes sharing one set of samples S), with Q an orthonormal basis of
the covariates on S and Yr the residualised phenotypes, a block of B variants is processed as
(see DESIGN.md, "The GWAS kernel"):

    G0        genotypes centred on the observed calls, missing calls set to 0
    [Qg | GY] = G0 [Q | Yr]                      one dense matmul for all phenotypes
    per variant j with missing samples M_j:      A = I - Q_M'Q_M,  c_y = -Q_M'Yr_M
    num  = GY - Qg' A^-1 c_y
    gg   = G0'G0 - Qg' A^-1 Qg
    yy   = Yr'Yr - Yr_M'Yr_M - c_y' A^-1 c_y
    beta = num / gg, RSS = yy - beta num, df = n_obs - k - 1, SE = sqrt(RSS / df / gg)

This is ordinary least squares on the samples observed for each variant, as `plink2 --glm`.
The missing samples of each variant are gathered by index (at most `max_missing` per variant; a
zero row stands for "none"), so a variant without missing calls costs nothing extra and all shapes
are fixed: the kernel compiles once per group and block size.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from wm_jax.data.plink import BYTE_CODES
from wm_jax.gwas.pvalues import neg_log10_p

REASON_OK = 0
REASON_FEW_OBS = 1  # too few observations for the model (df < 1)
REASON_CONSTANT = 2  # monomorphic, or genotype collinear with the covariates


class GroupInputs(NamedTuple):
    """Device arrays describing one phenotype group, laid out over all N .fam samples.

    Rows of samples outside the group are zero, and so is the extra row N that padded
    missing-call indices point to; a group then needs no gather of genotype columns.
    """

    in_group: jax.Array  # (N + 1,) 1.0 for the group's samples, else 0
    basis: jax.Array  # (N + 1, k) orthonormal covariate basis on the group's samples
    residuals: jax.Array  # (N + 1, P) residualised phenotypes
    residual_ss: jax.Array  # (P,) Yr'Yr
    omnibus_precision: jax.Array  # (P, P) inverse correlation of the residualised phenotypes


class BlockResult(NamedTuple):
    beta: jax.Array  # (B, P) per ALT allele
    se: jax.Array  # (B, P)
    t: jax.Array  # (B, P)
    neg_log10_p: jax.Array  # (B, P)
    obs_ct: jax.Array  # (B,) int32
    alt_freq: jax.Array  # (B,) among the observed samples of the group
    reason: jax.Array  # (B,) int32
    omnibus_chi2: jax.Array  # (B,) z' R^-1 z over the group's phenotypes


def decode_block(raw: jax.Array, n_samples: int) -> jax.Array:
    """Raw .bed bytes (B, ceil(N/4)) -> ALT dosages (B, N) float32, missing calls as 0.

    Missing calls are located separately (`missing_call_index`), so the dosage matrix needs no
    NaN handling and goes straight into the matmul.
    """
    shifts = jnp.arange(0, 8, 2, dtype=jnp.uint8)
    codes = ((raw[:, :, None] >> shifts) & jnp.uint8(3)).astype(jnp.float32)
    # code 0 -> 2, 1 (missing) -> 0, 2 -> 1, 3 -> 0, by arithmetic rather than a table gather.
    values = jnp.where(codes == 1.0, 0.0, 2.0 - codes + (codes >= 2.0))
    return values.reshape(raw.shape[0], -1)[:, :n_samples]


def solve_spd(a: jax.Array, rhs: jax.Array) -> jax.Array:
    """Solve a batch of small symmetric positive definite systems a x = rhs by Gauss-Jordan.

    k (the number of covariates) is small and static, so the elimination is unrolled into k
    broadcast steps of plain array ops. This avoids the batched LAPACK-style custom calls of
    `cholesky`/`cho_solve`, which are slow for tiny matrices on accelerators and were seen to
    deadlock XLA:CPU when several fake devices run concurrently. No pivoting is needed for SPD a.
    """
    k = a.shape[-1]
    augmented = jnp.concatenate([a, rhs], axis=-1)
    for i in range(k):
        pivot_row = augmented[:, i, :] / augmented[:, i, i][:, None]
        factors = augmented[:, :, i].at[:, i].set(0.0)
        augmented = augmented - factors[:, :, None] * pivot_row[:, None, :]
        augmented = augmented.at[:, i, :].set(pivot_row)
    return augmented[:, :, k:]


def associate_block(dosage: jax.Array, missing_index: jax.Array, group: GroupInputs) -> BlockResult:
    """Exact OLS statistics for one block of variants and all phenotypes of a group.

    dosage: (B, N) ALT dosages of every .fam sample, missing calls as 0 (decoded once per block).
    missing_index: (B, L) .fam positions of each variant's missing calls, padded with N.
    With g the dosage, m the group's observed calls and mu their mean, G0 = (g - mu) m, and
    G0'X = g'X - mu (1'X - sum over missing X) for X = [Q | Yr]: one matmul plus gathered rows.
    """
    k = group.basis.shape[1]
    n_group = jnp.sum(group.in_group)
    q_m = group.basis[missing_index]  # (B, L, k); rows outside the group and row N are zero
    y_m = group.residuals[missing_index]  # (B, L, P)
    missing_in_group = group.in_group[missing_index].sum(axis=1)
    obs = n_group - missing_in_group

    n = dosage.shape[1]
    design = jnp.concatenate([group.basis[:n], group.residuals[:n], group.in_group[:n, None]], axis=1)
    projections = dosage @ design  # one matmul: (B, k + P + 1)
    sum_sq = jnp.sum(dosage * dosage * group.in_group[None, :n], axis=1)  # a fused reduction, not a matvec
    mean = projections[:, -1] / jnp.maximum(obs, 1.0)
    column_sums = design[:, :-1].sum(axis=0)
    observed_sums = column_sums[None, :] - jnp.concatenate([q_m.sum(axis=1), y_m.sum(axis=1)], axis=1)
    centred_projections = projections[:, :-1] - mean[:, None] * observed_sums
    qg, gy = centred_projections[:, :k], centred_projections[:, k:]
    gtg = jnp.maximum(sum_sq - obs * mean * mean, 0.0)

    a = jnp.eye(k, dtype=dosage.dtype) - jnp.einsum("blk,blj->bkj", q_m, q_m)
    c_y = -jnp.einsum("blk,blp->bkp", q_m, y_m)
    solved = solve_spd(a, jnp.concatenate([c_y, qg[:, :, None]], axis=2))
    a_inv_c_y, a_inv_qg = solved[:, :, :-1], solved[:, :, -1]

    num = gy - jnp.einsum("bk,bkp->bp", qg, a_inv_c_y)
    gg = gtg - jnp.einsum("bk,bk->b", qg, a_inv_qg)
    yy = group.residual_ss[None, :] - jnp.einsum("blp,blp->bp", y_m, y_m) - jnp.einsum("bkp,bkp->bp", c_y, a_inv_c_y)
    df = obs - k - 1

    constant = gg <= 1e-6 * jnp.maximum(gtg, 1e-30) + 1e-12
    few = df < 1
    reason = jnp.where(few, REASON_FEW_OBS, jnp.where(constant, REASON_CONSTANT, REASON_OK)).astype(jnp.int32)
    ok = (reason == REASON_OK)[:, None]
    safe_gg = jnp.where(ok[:, 0], gg, 1.0)[:, None]
    beta = num / safe_gg
    rss = jnp.maximum(yy - beta * num, 0.0)
    se = jnp.sqrt(rss / jnp.maximum(df, 1.0)[:, None] / safe_gg)
    t = beta / se
    nan = jnp.float32(jnp.nan)
    beta, se, t = (jnp.where(ok, x, nan) for x in (beta, se, t))
    log10p = neg_log10_p(t, jnp.maximum(df, 1.0)[:, None])
    omnibus = jnp.einsum("bp,pq,bq->b", jnp.nan_to_num(t), group.omnibus_precision, jnp.nan_to_num(t))
    omnibus = jnp.where(ok[:, 0], omnibus, nan)
    alt_freq = jnp.where(obs > 0, mean / 2, nan)
    return BlockResult(beta, se, t, log10p, obs.astype(jnp.int32), alt_freq, reason, omnibus)


def associate_stacked(dosage: jax.Array, missing_index: jax.Array, stacked: GroupInputs, chunk: int) -> BlockResult:
    """Every group of a stack (GroupInputs with a leading group axis, groups of equal phenotype
    count) on one decoded block: one compiled kernel however many groups, mapped over the groups
    ``chunk`` at a time (vmapped within a chunk, sequential across chunks, which bounds the
    gathered missing-call arrays' memory; 4 was the fastest of 4, 8 and 32 here, one
    run each on 32 distinct-NA phenotypes)."""
    n_groups = stacked.in_group.shape[0]
    if n_groups == 1:
        return jax.tree.map(lambda x: x[None], associate_block(dosage, missing_index,
                                                               jax.tree.map(lambda x: x[0], stacked)))
    return jax.lax.map(lambda group: associate_block(dosage, missing_index, group), stacked,
                       batch_size=min(chunk, n_groups))


def associate_groups(raw: jax.Array, missing_index: jax.Array, stacks: tuple, *, n_samples: int, chunk: int) -> tuple:
    """Decode one block once and run every stack of phenotype groups on it; one BlockResult
    (leading group axis) per stack."""
    dosage = decode_block(raw, n_samples)
    return tuple(associate_stacked(dosage, missing_index, stack, chunk) for stack in stacks)


def make_block_fn(n_samples: int, chunk: int = 4):
    """A jitted function of (raw bytes (D*B, bytes), missing-call indices (D*B, L), stacks of
    groups) -> one BlockResult (leading group axis) per stack.

    Every operation is row-wise over variants, so sharding the leading axis over a mesh of D
    devices splits the step into D independent blocks with no communication; the group arrays are
    replicated. (A vmap over a separate device axis was measured 2.4x slower on XLA:CPU.) The raw
    bytes are not donated: no output has their shape, so XLA could not reuse the buffer.
    """
    return jax.jit(functools.partial(associate_groups, n_samples=n_samples, chunk=chunk))


_BYTE_HAS_MISSING = (BYTE_CODES == 1).any(axis=1)


def missing_call_index(raw: np.ndarray, n_samples: int, width: int) -> np.ndarray:
    """(B, width) sample positions of each variant's missing calls, padded with n_samples.

    Computed on the host from the same raw bytes (missing calls are rare, so this touches little
    beyond one table lookup per byte); the same index serves every phenotype group.
    """
    rows, byte_cols = np.nonzero(_BYTE_HAS_MISSING[raw])
    codes = (raw[rows, byte_cols][:, None] >> np.array([0, 2, 4, 6], np.uint8)) & 3
    samples = byte_cols[:, None] * 4 + np.arange(4)
    hit = (codes == 1) & (samples < n_samples)
    rows, samples = np.broadcast_to(rows[:, None], hit.shape)[hit], samples[hit]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows)
    if len(rank) and rank.max() >= width:
        raise ValueError(f"a variant has more than {width} missing calls in this block")
    index = np.full((raw.shape[0], width), n_samples, np.int32)
    index[rows, rank] = samples
    return index
