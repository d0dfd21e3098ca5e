"""The association kernel: exact per-variant OLS for many phenotypes from raw .bed bytes or dosages.

Blocks arrive as raw .bed bytes (uint8, 4 hard calls per byte) or as ALT dosages in plink2's unit
(uint16, 1/16384 of an allele; `wm_jax.data.source`); only the decoding differs
(`_decoded_projections`). A missing dosage is a missing call: the same correction removes it.

Notation. S is the set of analysed samples (every covariate and
at least one phenotype), Q an orthonormal basis of [1, covariates] on S. Phenotypes are grouped by
missingness pattern: group g is observed on S_g = S minus U_g, and its phenotypes are residualised
on the covariates over S_g (host, float64), so they are zero outside S_g. For a variant j with
missing calls M_j, group g's statistics are OLS over O = S_g minus M_j. With Q restricted to O as the
covariate basis (not orthonormal there, so its Gram matrix enters):

    A     = Q_O'Q_O = (I - Q_U'Q_U) - Q_M'Q_M                     k x k, per variant and group
    qg    = Q_O'g0,  g0 the dosage centred over O, zero elsewhere
    gg    = g0'g0 - qg' A^-1 qg
    num_p = g0'y_p + (Q_M A^-1 qg)' y_p,M                         (y_p is already orthogonal to Q on S_g)
    yy_p  = y_p'y_p - y_p,M'y_p,M - c_p' A^-1 c_p,   c_p = Q_M'y_p,M
    beta  = num / gg,  RSS = yy - beta num,  df = |O| - k - 1,  SE = sqrt(RSS / df / gg)

Every sum over S_g or O is a sum over S (one matmul of the decoded block with [Q | 1 | Y] for all
phenotypes at once) minus the excluded samples: U_g, gathered as columns of the decoded block, and
M_j, gathered as rows of [Q | 1 | Y]. So the matmul does not grow with the number of missingness
patterns; each pattern adds a gather of |U_g| columns and one k x k inversion per variant.
This is ordinary least squares on the samples observed for each variant and phenotype, as
`plink2 --glm`. All shapes are fixed (missing-call and excluded-sample indices padded with a row
of zeros), so the kernel compiles once per pass (`wm_jax.gwas.plan.Pass`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from wm_jax.data.plink import missing_call_index  # noqa: F401 (the .bed rows' missing calls; tests import it here)
from wm_jax.data.source import DOSAGE_UNIT
from wm_jax.data.source import MISSING_DOSAGE as DOSAGE_MISSING
from wm_jax.gwas.pvalues import neg_log10_p

REASON_OK = 0
REASON_FEW_OBS = 1  # too few observations for the model (df < 1)
REASON_CONSTANT = 2  # monomorphic, or genotype collinear with the covariates


class AssociationInputs(NamedTuple):
    """Device arrays describing every phenotype group (replicated on the mesh), built on the host by
    `wm_jax.gwas.design.kernel_inputs`. R = 4 * (bytes per .bed row), or the samples padded to a
    multiple of 4 for dosages (the source's n_slots): one row per sample slot of a
    decoded block. Padded indices are R: the gathered tables have a zero row there.

    Phenotype columns are ordered group by group, and groups stack by stack (see `Layout`). The
    basis and residuals are stored again apart from the design so that the gathers of missing-call
    rows read them without slicing (a copy per step) the design."""

    design: jax.Array  # (R, k + 1 + P) [Q | 1 | Y] on S; zero outside S (Y: outside its group)
    analysed_bits: jax.Array  # (R / 4,) uint8: per .bed byte, bit 2s set where sample slot 4 byte + s is in S
    basis: jax.Array  # (R + 1, k) Q, then a zero row
    residuals: tuple  # per stack: (R + 1, G_s * P_s) its phenotypes' Y, then a zero row
    in_group: jax.Array  # (G, R + 1) 1.0 on each group's samples
    excluded_index: jax.Array  # (G, U) sample slots of S outside each group, padded with R
    excluded_basis: jax.Array  # (G, U, k) Q at those samples (zero at padding)
    base_gram: jax.Array  # (G, k, k) I - Q_U'Q_U: the Gram matrix of Q over S_g
    base_inverse: jax.Array  # (G, k, k) its inverse (host, float64): the answer for variants without missing calls
    group_size: jax.Array  # (G,) |S_g|
    group_basis_sum: jax.Array  # (G, k) sum of Q over S_g
    residual_sum: jax.Array  # (P,) sum of y over its group (0 up to rounding: the intercept is in Q)
    residual_ss: jax.Array  # (P,) y'y
    omnibus_precision: jax.Array  # (P, P) inverse correlation of the residualised phenotypes (pairwise)


# Static: per stack, (number of groups, phenotypes per group). Groups of equal size share a stack,
# whose per-phenotype work is one batched einsum.
Layout = tuple[tuple[int, int], ...]


class BlockResult(NamedTuple):
    beta: jax.Array  # (B, P) per ALT allele
    se: jax.Array  # (B, P)
    neg_log10_p: jax.Array  # (B, P)
    obs_ct: jax.Array  # (B, G) int32
    alt_freq: jax.Array  # (B, G) among the observed samples of the group
    reason: jax.Array  # (B, G) int32
    omnibus_chi2: jax.Array  # (B,) t' R^-1 t over every phenotype (NaN where any group has no test)


def check_block_result(host: BlockResult) -> None:
    """Refuse a step's results (host arrays) whose SE or -log10 P is NaN where BETA is not: a test
    with a BETA has a finite SE by construction, so this can only be a fault below the kernel (see
    `_stack_statistics`), and writing it would publish wrong statistics without a word."""
    bad = ~np.isnan(host.beta) & (np.isnan(host.se) | np.isnan(host.neg_log10_p))
    if bad.any():
        columns = np.flatnonzero(bad.any(axis=0)).tolist()
        raise RuntimeError(
            f"the association kernel returned a NaN SE or P for {int(bad.sum())} tests that have a BETA "
            f"(kernel phenotype columns {columns[:8]}); this is a fault, not a property of the data, and "
            "nothing was published (docs/gwas.md, 'A wrong-results bug')"
        )


def decode_block(raw: jax.Array) -> jax.Array:
    """Raw .bed bytes (B, W) -> ALT dosages (B, 4 W) float32, missing calls as 0.

    The 2-bit code (b1 b0) maps to 2 (00), 0 (01, missing), 1 (10), 0 (11): (1 - b0)(2 - b1).
    The slots past the last sample decode to 2; the design rows there are zero. Missing calls are
    located separately (`missing_call_index`), so the dosage goes straight into the matmul.
    """
    codes = raw[:, :, None] >> jnp.arange(0, 8, 2, dtype=jnp.uint8)
    b0 = (codes & 1).astype(jnp.float32)
    b1 = ((codes >> 1) & 1).astype(jnp.float32)
    return ((1.0 - b0) * (2.0 - b1)).reshape(raw.shape[0], -1)


def decode_dosage_block(raw: jax.Array) -> jax.Array:
    """ALT dosages in plink2's unit, 1/16384 of an allele (B, R) uint16 -> float32 (B, R), missing
    dosages (DOSAGE_MISSING) as 0, like the missing calls of `decode_block`. Exact: a 15-bit integer
    times a power of two."""
    return jnp.where(raw == DOSAGE_MISSING, 0.0, raw.astype(jnp.float32) * (1.0 / DOSAGE_UNIT))


class _Decoded(NamedTuple):
    """A decoded block and what the association takes from it in one go."""

    dosage: jax.Array  # (B, R) float32, missing calls as 0
    projections: jax.Array  # (B, k + 1 + P) the one big matmul with [Q | 1 | Y]
    shift: jax.Array  # (B,) the integer (0, 1 or 2) nearest each variant's mean dosage over S
    sum_sq: jax.Array | None  # (B,) .bed bytes: the sum of squared dosages over S (exact); None for dosages
    centred_sq: jax.Array | None  # (B,) dosages: the sum over S of (dosage - shift)^2, missing left out; None for .bed


def _decoded_projections(raw: jax.Array, inputs: AssociationInputs) -> _Decoded:
    """The decoded block, the one big matmul, the shift each variant's sums of squares are centred
    on, and its sum of squares over S (`_centred_sums`). The block's dtype picks the
    decoder (static): uint8 is raw .bed bytes, uint16 dosages (`wm_jax.data.source`)."""
    k = inputs.base_gram.shape[-1]
    in_s = inputs.design[:, k]
    if raw.dtype == jnp.uint16:
        dosage = decode_dosage_block(raw)
        projections = dosage @ inputs.design
        shift = _nearest_allele_count(projections[:, k], in_s)
        # Dosages are not integers: the variance cannot come exactly from sum g^2 - n mean^2 in
        # float32 (a common ALT allele, mean 1.8 and variance 0.18, loses 4 digits to it), so the
        # squares are summed about the shift instead.
        centred = jnp.where(raw == DOSAGE_MISSING, 0.0, dosage - shift[:, None])
        return _Decoded(dosage, projections, shift, None, (centred * centred) @ in_s)
    dosage = decode_block(raw)  # (B, R)
    projections = dosage @ inputs.design  # the one big matmul: (B, k + 1 + P)
    # g^2 = 2 g - [het] for g in {0, 1, 2}: the sum of squares over S from the bytes, not another pass
    # over the decoded block. Heterozygous codes are 10: bit 2s + 1 set and bit 2s clear.
    het = jax.lax.population_count((raw >> 1) & ~raw & inputs.analysed_bits[None, :])
    sum_sq = 2.0 * projections[:, k] - jnp.sum(het.astype(jnp.float32), axis=1)  # exact: counts < 2^24
    return _Decoded(dosage, projections, _nearest_allele_count(projections[:, k], in_s), sum_sq, None)


def _nearest_allele_count(total: jax.Array, in_s: jax.Array) -> jax.Array:
    """0, 1 or 2: the allele count nearest each variant's mean dosage over S (missing calls as 0;
    any shift is exact, a near one keeps the centred sums small)."""
    return jnp.clip(jnp.round(total / jnp.maximum(jnp.sum(in_s), 1.0)), 0.0, 2.0)


def _centred_sums(
    raw: jax.Array, decoded: _Decoded, excluded: jax.Array, inputs: AssociationInputs, group_sum, obs
) -> tuple[jax.Array, jax.Array]:
    """Per variant and group, sum_O (g - c) and sum_O (g - c)^2 for the shift c (B, G): the terms of
    gtg = sum_O (g - mean)^2 without the cancellation of sum g^2 - |O| mean^2. From .bed bytes every
    sum is an integer below 2^24, so the identity sum (g - c)^2 = sum g^2 - 2 c sum g + c^2 |O| is
    exact; dosages take the centred sum over S less that of each group's excluded samples that
    have a dosage."""
    c = decoded.shift[:, None]
    if decoded.centred_sq is None:
        group_sum_sq = decoded.sum_sq[:, None] - (excluded * excluded).sum(axis=2)
        return group_sum - c * obs, group_sum_sq - 2.0 * c * group_sum + c * c * obs
    raw_u = jnp.take(raw, inputs.excluded_index, axis=1, mode="fill", fill_value=DOSAGE_MISSING)  # padding: none
    off = jnp.where(raw_u == DOSAGE_MISSING, 0.0, excluded - c[:, :, None])
    return group_sum - c * obs, decoded.centred_sq[:, None] - (off * off).sum(axis=2)


def invert_spd(a: jax.Array) -> jax.Array:
    """Inverse of a batch of small symmetric positive definite matrices (..., k, k), Gauss-Jordan
    in place (the inverse overwrites the matrix column by column, no augmented identity).

    k (the number of covariates) is small: each of the k elimination steps is one fused select over
    the batch, in a `fori_loop` rather than unrolled (the same arithmetic, to the bit; the
    width-64 kernel compiled in 1.4 s instead of 2.2 s and ran no slower). This avoids the batched
    LAPACK custom calls, which were seen to deadlock XLA:CPU when two or more (fake) devices run
    concurrently. No pivoting is needed for SPD a.
    """
    k = a.shape[-1]
    row_id, col_id = jnp.arange(k)[None, :, None], jnp.arange(k)[None, None, :]

    def eliminate(i, flat):
        pivot_row = jax.lax.dynamic_index_in_dim(flat, i, axis=1, keepdims=False)  # (n, k)
        inverse_pivot = 1.0 / jax.lax.dynamic_index_in_dim(pivot_row, i, axis=1)[:, :, None]  # (n, 1, 1)
        scaled_row = pivot_row[:, None, :] * inverse_pivot
        column = jax.lax.dynamic_index_in_dim(flat, i, axis=2)  # (n, k, 1)
        return jnp.where(
            row_id == i,
            jnp.where(col_id == i, inverse_pivot, scaled_row),
            jnp.where(col_id == i, -column * inverse_pivot, flat - column * scaled_row),
        )

    return jax.lax.fori_loop(0, k, eliminate, a.reshape(-1, k, k)).reshape(a.shape)


def _sum_over_missing(q_m: jax.Array, y_m: jax.Array) -> jax.Array:
    """einsum("blk,blp->bkp"): a batched matmul for many phenotypes; for a few, one fused
    multiply-and-sum, since XLA:CPU's batched dot costs about as much for 4 columns as for 124."""
    if y_m.shape[-1] > 8:
        return jnp.einsum("blk,blp->bkp", q_m, y_m)
    return jnp.sum(q_m[:, :, :, None] * y_m[:, :, None, :], axis=1)


def _rows_of(table: jax.Array, index: jax.Array) -> jax.Array:
    """Rows of ``table`` at ``index`` (in bounds: padding points at the table's zero row). A bare
    XLA gather: ``table.at[index]`` would add a wrap of negative indices, fused into every gather."""
    dimensions = jax.lax.GatherDimensionNumbers(
        offset_dims=(index.ndim,), collapsed_slice_dims=(0,), start_index_map=(0,)
    )
    return jax.lax.gather(
        table, index[..., None], dimensions, (1, table.shape[1]), indices_are_sorted=False, mode="promise_in_bounds"
    )


def _by_group(x: jax.Array, n_groups: int, n_pheno: int) -> jax.Array:
    """(..., G_s * P_s) -> (..., G_s, P_s)."""
    return x.reshape(*x.shape[:-1], n_groups, n_pheno)


class _SharedTerms(NamedTuple):
    """Per variant and group, the terms that every phenotype of the group shares."""

    proj_y: jax.Array  # (B, P) g'Y over S
    q_m: jax.Array  # (B, L, k) Q at the missing calls
    mean: jax.Array  # (B, G) mean dosage over O
    gram_inverse: jax.Array  # (B, G, k, k) A^-1
    weights: jax.Array  # (B, G, L) Q_M A^-1 qg
    obs: jax.Array  # (B, G) |O|
    reason: jax.Array  # (B, G) REASON_*
    ok: jax.Array  # (B, G) reason == REASON_OK
    safe_gg: jax.Array  # (B, G) gg, 1 where there is no test
    safe_df: jax.Array  # (B, G) df, at least 1


def _shared_terms(raw: jax.Array, missing_index: jax.Array, inputs: AssociationInputs) -> _SharedTerms:
    """The one big matmul, the corrections for each group's excluded samples and each variant's
    missing calls, and the genotype's residual sum of squares gg per variant and group."""
    k = inputs.base_gram.shape[-1]
    decoded = _decoded_projections(raw, inputs)
    dosage, projections = decoded.dosage, decoded.projections
    proj_q, proj_1, proj_y = projections[:, :k], projections[:, k], projections[:, k + 1 :]

    # Samples of S that each group excludes (its phenotypes' NA): columns of the block.
    excluded = jnp.take(dosage, inputs.excluded_index, axis=1, mode="fill", fill_value=0.0)  # (B, G, U)
    proj_q = proj_q[:, None, :] - jnp.einsum("bgu,guk->bgk", excluded, inputs.excluded_basis)
    group_sum = proj_1[:, None] - excluded.sum(axis=2)

    # Missing calls of each variant: rows of Q and Y (zero outside S, outside a group and for padding).
    q_m = _rows_of(inputs.basis, missing_index)  # (B, L, k)
    in_m = jnp.moveaxis(inputs.in_group.at[:, missing_index].get(mode="promise_in_bounds"), 0, 1)  # (B, G, L)
    obs = inputs.group_size[None, :] - in_m.sum(axis=2)  # (B, G)
    mean = group_sum / jnp.maximum(obs, 1.0)
    qg = proj_q - mean[:, :, None] * (inputs.group_basis_sum[None] - jnp.einsum("bgl,blk->bgk", in_m, q_m))
    centred_sum, centred_sq = _centred_sums(raw, decoded, excluded, inputs, group_sum, obs)
    centred_mean = centred_sum / jnp.maximum(obs, 1.0)
    gtg = jnp.maximum(centred_sq - obs * centred_mean * centred_mean, 0.0)
    masked_q_m = in_m[:, :, :, None] * q_m[:, None]  # (B, G, L, k)
    if missing_index.shape[1] == 0:  # a pass of variants without missing calls: nothing to invert
        gram_inverse = jnp.broadcast_to(inputs.base_inverse[None], (raw.shape[0], *inputs.base_inverse.shape))
    else:
        gram_inverse = invert_spd(inputs.base_gram[None] - jnp.einsum("bglk,blj->bgkj", masked_q_m, q_m))
    a_inv_qg = jnp.einsum("bgkj,bgj->bgk", gram_inverse, qg)
    gg = gtg - jnp.sum(qg * a_inv_qg, axis=2)  # (B, G)
    weights = jnp.einsum("blk,bgk->bgl", q_m, a_inv_qg)  # Q_M A^-1 qg
    df = obs - k - 1
    few = df < 1
    constant = gg <= 1e-6 * jnp.maximum(gtg, 1e-30) + 1e-12
    reason = jnp.where(few, REASON_FEW_OBS, jnp.where(constant, REASON_CONSTANT, REASON_OK)).astype(jnp.int32)
    ok = reason == REASON_OK
    return _SharedTerms(
        proj_y,
        q_m,
        mean,
        gram_inverse,
        weights,
        obs,
        reason,
        ok,
        safe_gg=jnp.where(ok, gg, 1.0),
        safe_df=jnp.maximum(df, 1.0),
    )


def _stack_statistics(
    shared: _SharedTerms,
    missing_index: jax.Array,
    inputs: AssociationInputs,
    stack: int,
    groups: slice,
    phenotypes: slice,
    n_pheno: int,
    small_df: bool,
) -> list[jax.Array]:
    """BETA, SE, -log10 P and t of one stack's phenotypes, each (B, G_s * P_s)."""
    g0, g1, p0, p1 = groups.start, groups.stop, phenotypes.start, phenotypes.stop
    n_groups = g1 - g0
    y_m = _rows_of(inputs.residuals[stack], missing_index)  # (B, L, G_s * P_s)
    y_s = _by_group(y_m, n_groups, n_pheno)
    num = (
        _by_group(shared.proj_y[:, p0:p1], n_groups, n_pheno)
        - shared.mean[:, g0:g1, None] * _by_group(inputs.residual_sum[p0:p1] - y_m.sum(axis=1), n_groups, n_pheno)
        + jnp.einsum("bgl,blgp->bgp", shared.weights[:, g0:g1], y_s)
    )
    c_s = _by_group(_sum_over_missing(shared.q_m, y_m), n_groups, n_pheno)  # Q_M'Y_M: (B, k, G_s, P_s)
    c_g = jnp.moveaxis(c_s, 1, 2)  # (B, G_s, k, P_s)
    # A^-1 c as a multiply-and-sum over the k x k inverse, not a batched dot: with the dot
    # (einsum "bgkj,bjgp->bgkp"), XLA:CPU (jaxlib 0.10.2) left one or two phenotype columns of
    # c' A^-1 c as garbage (NaN bit patterns such as 0xffffffff) for every variant with missing calls,
    # in about half the processes of a 35,000-sample, 128-phenotype run, different columns in each;
    # never with this form (docs/gwas.md, "A wrong-results bug"). k is the covariate basis, a few to
    # tens, so this is small next to the block's matmul.
    a_inv_c = jnp.sum(shared.gram_inverse[:, g0:g1, :, :, None] * c_g[:, :, None], axis=3)
    quad = jnp.sum(a_inv_c * c_g, axis=2)  # c' A^-1 c: (B, G_s, P_s)
    yy = _by_group(inputs.residual_ss[p0:p1] - (y_m * y_m).sum(axis=1), n_groups, n_pheno) - quad
    ok_s = shared.ok[:, g0:g1, None]
    beta = num / shared.safe_gg[:, g0:g1, None]
    rss = jnp.maximum(yy - beta * num, 0.0)
    se = jnp.sqrt(rss / shared.safe_df[:, g0:g1, None] / shared.safe_gg[:, g0:g1, None])
    t = beta / se
    nan = jnp.float32(jnp.nan)
    beta, se, t = (jnp.where(ok_s, x, nan) for x in (beta, se, t))
    log10p = neg_log10_p(t, shared.safe_df[:, g0:g1, None], small_df)
    return [x.reshape(y_m.shape[0], -1) for x in (beta, se, log10p, t)]


def associate_block(
    raw: jax.Array, missing_index: jax.Array, inputs: AssociationInputs, layout: Layout, small_df: bool = True
) -> BlockResult:
    """Exact OLS statistics of one block of variants for every phenotype.

    raw: (B, W) .bed bytes or (B, R) uint16 dosages; missing_index: (B, L) sample slots of each variant's missing calls,
    padded with R (the zero row of the gathered tables). ``small_df=False`` promises that no test
    has fewer than SMALL_DF degrees of freedom (see `neg_log10_p`).
    """
    shared = _shared_terms(raw, missing_index, inputs)
    per_phenotype = []
    g0 = p0 = 0
    for stack, (n_groups, n_pheno) in enumerate(layout):
        g1, p1 = g0 + n_groups, p0 + n_groups * n_pheno
        per_phenotype.append(
            _stack_statistics(shared, missing_index, inputs, stack, slice(g0, g1), slice(p0, p1), n_pheno, small_df)
        )
        g0, p0 = g1, p1
    beta, se, log10p, t = (jnp.concatenate(parts, axis=1) for parts in zip(*per_phenotype))
    # The multivariate test across every phenotype, as JAGWAS forms it from summary statistics.
    t0 = jnp.nan_to_num(t)
    omnibus = jnp.where(shared.ok.all(axis=1), jnp.einsum("bp,pq,bq->b", t0, inputs.omnibus_precision, t0), jnp.nan)
    alt_freq = jnp.where(shared.obs > 0, shared.mean / 2, jnp.nan)
    return BlockResult(beta, se, log10p, shared.obs.astype(jnp.int32), alt_freq, shared.reason, omnibus)


# Every dot of the association runs at full float32 precision, on every backend. Left to the
# default, XLA runs float32 matmuls in TF32 on NVIDIA GPUs (10-bit mantissa) and in one bf16 pass on
# TPUs; on an H200 that put BETA up to 1.3e-3 SE and log10 P 4e-3 from the CPU's. "highest" is
# float32 on GPUs and the 6-pass bf16 algorithm (float32-accurate) on TPUs; XLA:CPU is float32
# either way. tests/test_gwas_kernel.py checks that no dot of the compiled kernel is left at default.
STATISTICS_PRECISION = "highest"


def at_full_precision(fn):
    """``fn`` traced with every matmul, einsum and dot at STATISTICS_PRECISION (the precision is
    fixed when the function is traced, so it is recorded in the HLO of each dot)."""

    @functools.wraps(fn)
    def traced_at_full_precision(*args, **kwargs):
        with jax.default_matmul_precision(STATISTICS_PRECISION):
            return fn(*args, **kwargs)

    return traced_at_full_precision


def missing_index_on_device(raw: jax.Array, analysed_bits: jax.Array, width: int) -> jax.Array:
    """(B, width) sample slots of each variant's missing calls among the analysed samples, in order,
    padded with R (the zero row): the index that `missing_call_index` builds on the host, made
    from the block on the device instead (a prefix sum gives each missing call its rank, a scatter
    puts its slot there). Missing calls of samples outside S are left out: their rows of the
    gathered tables are zero, so the statistics are the same. The caller routes each variant to a
    width that holds its missing calls (`wm_jax.gwas.plan.Router`); any beyond are dropped.
    Parallel work for an accelerator; on XLA:CPU the host's index is faster."""
    n_rows = raw.shape[0]
    if width == 0:
        return jnp.zeros((n_rows, 0), jnp.int32)
    if raw.dtype == jnp.uint16:
        missing = raw == DOSAGE_MISSING
    else:
        codes = raw[:, :, None] >> jnp.arange(0, 8, 2, dtype=jnp.uint8)
        missing = ((codes & 3) == 1).reshape(n_rows, -1)
    analysed = ((analysed_bits[:, None] >> jnp.arange(0, 8, 2, dtype=jnp.uint8)) & 1).reshape(-1) == 1
    missing = missing & analysed[None, :]
    n_slots = missing.shape[1]
    rank = jnp.cumsum(missing, axis=1, dtype=jnp.int32) - 1
    target = jnp.where(missing, rank, width)  # width: out of bounds, dropped
    slots = jnp.broadcast_to(jnp.arange(n_slots, dtype=jnp.int32), missing.shape)
    index = jnp.full((n_rows, width), n_slots, jnp.int32)
    return index.at[jnp.arange(n_rows)[:, None], target].set(slots, mode="drop")


def associate_block_indexing_on_device(
    raw: jax.Array, inputs: AssociationInputs, layout: Layout, missing_width: int, small_df: bool = True
) -> BlockResult:
    """`associate_block` with the missing-call index built in the kernel (`missing_index_on_device`)."""
    missing_index = missing_index_on_device(raw, inputs.analysed_bits, missing_width)
    return associate_block(raw, missing_index, inputs, layout, small_df)


def make_block_fn(layout: Layout, small_df: bool = True, missing_width: int | None = None):
    """A jitted function of (raw bytes (D*B, W), missing-call indices (D*B, L), inputs) -> BlockResult,
    every dot at full float32 precision (`at_full_precision`). With ``missing_width``, a function of
    (raw bytes, inputs) that builds the index of that width on the device
    (`associate_block_indexing_on_device`): the host then only reads and routes the blocks.

    Every operation is row-wise over variants, so sharding the leading axis over a mesh of D
    devices splits the step into D independent blocks with no communication; the inputs are
    replicated. (A vmap over a separate device axis was measured 2.4x slower on XLA:CPU.) The raw
    bytes are not donated: no output has their shape, so XLA could not reuse the buffer.
    """
    if missing_width is None:
        fn = functools.partial(associate_block, layout=layout, small_df=small_df)
    else:
        fn = functools.partial(
            associate_block_indexing_on_device, layout=layout, missing_width=missing_width, small_df=small_df
        )
    return jax.jit(at_full_precision(fn))
