"""SNP heritability of every phenotype by randomized Haseman-Elston regression (`wm-jax h2 --method rhe`),
in one streaming pass over the genotypes.

Model: y = g + e with Var(g) = s_g K, K = X X' / M (X the genotypes of the M variants, each
standardised over the analysed samples as `wm_jax.heritability.ldscore.standardised` does), and
Var(e) = s_e I, after projecting the covariates (and an intercept) out with P. The method of
moments (Haseman-Elston regression; Wu and Sankararaman's RHE-reg) solves

    [ tr(PKP PKP)  tr(PKP) ] [s_g]   [ y'PKPy ]
    [ tr(PKP)      n - c   ] [s_e] = [ y'Py   ]

and h2 = s_g / (s_g + s_e). Each term is a sum over variant blocks X_b of the same block products
as the association's: y'PKPy = sum_b |X_b' P y|^2 / M for every phenotype at once,
tr(PKP) = sum_b (|X_b|^2 - |X_b' Q|^2) / M (Q an orthonormal basis of the covariates), and
tr((PKP)^2) from B random probes z: E|PKP z|^2 = tr((PKP)^2), with PKP z = P (sum_b X_b X_b' P z) / M.

Standard errors: a delete-one block jackknife over J contiguous blocks of variants (each block's
share of every sum is kept, so leaving one out is a subtraction).

The samples are those with every selected phenotype and covariate (a filter that is logged).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from tqdm import tqdm

from wm_jax import sharding
from wm_jax.data.readahead import padded_block, read_ahead
from wm_jax.gwas.kernel import at_full_precision
from wm_jax.heritability.ldscore import standardised
from wm_jax.stage_options import RheOptions

log = logging.getLogger("wm_jax")


V_BUDGET = 4 << 30  # bytes for the jackknife blocks' X X' P z


def _rhe_step(v, raw, analysed, right, *, n_pheno: int, n_basis: int):
    """One block: its share of y'PKPy (P,), of |P X|^2 (scalar) and its polymorphic variants, with
    X X' P z added to the running ``v`` (R, B)."""
    x = standardised(raw, analysed)  # (B, R)
    products = x @ right  # (B, P + c + B): X' [P y | Q | P z]
    xy, xq, xz = products[:, :n_pheno], products[:, n_pheno : n_pheno + n_basis], products[:, n_pheno + n_basis :]
    yky = (xy * xy).sum(axis=0)
    trace = (x * x).sum() - (xq * xq).sum()
    polymorphic = ((x * x).sum(axis=1) > 0).sum()
    return v + x.T @ xz, yky, trace, polymorphic


@functools.cache
def _compiled_step(n_pheno: int, n_basis: int):
    step = functools.partial(_rhe_step, n_pheno=n_pheno, n_basis=n_basis)
    return jax.jit(at_full_precision(step), donate_argnums=(0,))


@dataclass
class BlockSums:
    """Per jackknife block: sum |X'Py|^2 (J, P), sum |PX|^2 (J,), M (J,), X X' P z (J, R, B)."""

    yky: np.ndarray
    trace: np.ndarray
    m: np.ndarray
    v: np.ndarray


def stream_sums(
    data, rows: np.ndarray, analysed: np.ndarray, right: np.ndarray, n_pheno: int, n_basis: int, options: RheOptions
) -> BlockSums:
    """One pass over ``rows`` in blocks of options.block_size, grouped into jackknife blocks."""
    block = options.block_size
    n_steps = -(-len(rows) // block)
    n_probes = right.shape[1] - n_pheno - n_basis
    # each jackknife block keeps its X X' P z (R x B float32): at most V_BUDGET bytes in all
    fitting = max(2, V_BUDGET // (4 * right.shape[0] * max(n_probes, 1)))
    if fitting < options.jackknife_blocks:
        log.info(
            "rhe: %d jackknife blocks (not %d), to keep them within %.1f GiB",
            fitting,
            options.jackknife_blocks,
            V_BUDGET / 2**30,
        )
    every_group = np.array_split(np.arange(n_steps), min(options.jackknife_blocks, fitting, n_steps))
    # each process streams a contiguous share of the jackknife blocks; their sums are gathered at the end
    groups = every_group[sharding.this_process_share(len(every_group))]
    step = _compiled_step(n_pheno, n_basis)
    analysed_d, right_d = jnp.asarray(analysed), jnp.asarray(right, jnp.float32)
    sums = BlockSums(
        np.zeros((len(groups), n_pheno)),
        np.zeros(len(groups)),
        np.zeros(len(groups), np.int64),
        np.zeros((len(groups), right.shape[0], n_probes), np.float32),  # 4 J R B bytes
    )
    steps_here = [int(s) for steps in groups for s in steps]
    blocks = read_ahead(lambda s: padded_block(data, rows[s * block : (s + 1) * block], block), steps_here)
    in_share = sum(min(block, len(rows) - s * block) for s in steps_here)
    progress_bar = tqdm(
        total=in_share, desc="RHE", unit="variant", mininterval=1, disable=not sharding.is_main_process()
    )
    with contextlib.closing(blocks), progress_bar as progress:
        for g, steps in enumerate(groups):  # consecutive steps, in order
            v = jnp.zeros((right.shape[0], n_probes), jnp.float32)
            parts = []
            for s in steps:
                v, *rest = step(v, next(blocks), analysed_d, right_d)  # padding rows are constant: add nothing
                parts.append(rest)
                progress.update(min(block, len(rows) - s * block))
            sums.v[g] = np.asarray(v)
            sums.yky[g] = np.sum([np.asarray(p[0], np.float64) for p in parts], axis=0)
            sums.trace[g] = np.sum([float(p[1]) for p in parts])
            sums.m[g] = np.sum([int(p[2]) for p in parts])
    return BlockSums(*(sharding.gather_parts(part) for part in (sums.yky, sums.trace, sums.m, sums.v)))


def _estimates(yky, trace, m, v, yy, basis, probes, n_free) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(h2, s_g, s_e) per phenotype from the sums over a set of variants.

    tr((PKP)^2) with a control variate: PKP = a P + E with a = tr(PKP) / (n - c), so
    tr((PKP)^2) = a^2 (n - c) + tr(E^2) (tr E = 0), and only tr(E^2) is estimated from the probes,
    as the mean of |PKP z - a P z|^2. E is small beside a P when M is large, so this cuts the probes'
    error by an order of magnitude against estimating tr((PKP)^2) from |PKP z|^2 directly."""
    t1 = trace / m
    a = t1 / n_free
    ez = (v - basis @ (basis.T @ v)) / m - a * probes
    t2 = a * a * n_free + float((ez * ez).sum()) / probes.shape[1]
    s_g, s_e = np.linalg.solve(np.array([[t2, t1], [t1, n_free]]), np.vstack([yky / m, yy]))
    return s_g / (s_g + s_e), s_g, s_e


@dataclass
class RheResult:
    table: pd.DataFrame  # phenotype h2 se sigma_g sigma_e n m


def rhe_h2(
    data,
    rows: np.ndarray,
    phenotypes: np.ndarray,
    covariates: np.ndarray,
    names: list[str],
    options: RheOptions,
    covariate_names: list[str] | None = None,
    covariate_path: str = "covariates",
) -> RheResult:
    """RHE h2 of every column of ``phenotypes`` (samples x P, aligned to the source's samples, NaN
    missing) adjusted for ``covariates`` (samples x C) and an intercept, on the samples that have all.
    A constant or collinear covariate is an error naming it (``covariate_names``) and ``covariate_path``."""
    from wm_jax.gwas.design import covariate_basis

    complete = ~np.isnan(phenotypes).any(axis=1) & ~np.isnan(covariates).any(axis=1)
    n = int(complete.sum())
    log.info("rhe: %d of %d samples have every phenotype and covariate", n, len(complete))
    slots = data.n_slots
    analysed = np.zeros(slots, bool)
    analysed[: len(complete)] = complete
    basis = np.zeros((slots, covariates.shape[1] + 1))
    labels = covariate_names or [f"column {j + 1}" for j in range(covariates.shape[1])]
    basis[analysed] = covariate_basis(covariates[complete], labels, covariate_path)
    residual = np.zeros((slots, phenotypes.shape[1]))
    y = phenotypes[complete]
    residual[analysed] = y - basis[analysed] @ (basis[analysed].T @ y)
    residual /= np.sqrt((residual**2).sum(axis=0) / (n - basis.shape[1]))  # unit residual variance
    rng = np.random.default_rng(options.seed)
    probes = np.zeros((slots, options.probes))
    probes[analysed] = rng.standard_normal((n, options.probes))
    probes -= basis @ (basis.T @ probes)
    right = np.concatenate([residual, basis, probes], axis=1)
    sums = stream_sums(data, rows, analysed, right, phenotypes.shape[1], basis.shape[1], options)
    yy = (residual**2).sum(axis=0)
    n_free = n - basis.shape[1]
    total = (sums.yky.sum(0), sums.trace.sum(), sums.m.sum(), sums.v.sum(0, dtype=np.float64))
    h2, s_g, s_e = _estimates(*total, yy, basis, probes, n_free)
    j = len(sums.m)
    deleted = np.array(
        [
            _estimates(
                total[0] - sums.yky[i],
                total[1] - sums.trace[i],
                total[2] - sums.m[i],
                total[3] - sums.v[i],
                yy,
                basis,
                probes,
                n_free,
            )[0]
            for i in range(j)
        ]
    )
    se = np.sqrt((j - 1) / j * ((deleted - deleted.mean(axis=0)) ** 2).sum(axis=0))
    table = pd.DataFrame(
        {"phenotype": names, "h2": h2, "se": se, "sigma_g": s_g, "sigma_e": s_e, "n": n, "m": int(total[2])}
    )
    return RheResult(table)


def rhe_table(
    source,
    pheno: str,
    pheno_names: str | None,
    covar: str | None,
    covar_names: str | None,
    options: RheOptions,
    chromosomes: str | None = None,
) -> pd.DataFrame:
    """`wm-jax h2 --method rhe`: the tables read and aligned to the genotypes' samples, the genotypes
    (of --chr; chromosome X is refused, as by `wm-jax gwas`) streamed once: one row per phenotype."""
    from wm_jax.data.genotypes import open_genotypes
    from wm_jax.gwas import qc
    from wm_jax.gwas.inputs import align_inputs, aligned_columns, phenotype_columns, read_phenotype_table

    data = open_genotypes(source)
    table = read_phenotype_table(pheno)
    columns = phenotype_columns(table, pheno_names, None)
    if covar is not None:
        inputs = align_inputs(table, columns, covar, covar_names, data)
        phenotypes, covariates, covariate_names = inputs.phenotypes, inputs.covariates, inputs.covar_names
    else:
        phenotypes, covariates, covariate_names = (
            aligned_columns(table, columns, data),
            np.zeros((data.n_samples, 0)),
            [],
        )
    rows = qc.select_chromosomes(data, chromosomes)
    qc.refuse_chromosome_x(data, rows)
    names = [table.columns[j] for j in columns]
    return rhe_h2(data, rows, phenotypes, covariates, names, options, covariate_names, str(covar)).table
