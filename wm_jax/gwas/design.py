"""The regression design of `wm-jax gwas`: phenotype groups by missingness pattern, the covariate
basis of each, and the kernel's inputs built from them on the host.

Called by `wm_jax.gwas.run` (the driver) and `wm_jax.gwas.stream` (device placement).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from wm_jax.errors import input_error
from wm_jax.gwas.kernel import AssociationInputs

log = logging.getLogger("wm_jax")


@dataclass
class PhenotypeGroup:
    columns: list[int]  # indices into the phenotype list
    samples: np.ndarray  # positions in the .fam
    residuals: np.ndarray  # (n, P) float64, residualised on the covariates over these samples


@dataclass
class GroupedPhenotypes:
    """The analysed samples S (every covariate, at least one phenotype), an orthonormal basis of
    [1, covariates] on S, and the phenotype groups ordered so that groups with the same number of
    phenotypes are contiguous: each such stack is one batched einsum in the kernel (`layout`)."""

    samples: np.ndarray
    basis: np.ndarray  # (len(samples), k) float64
    groups: list[PhenotypeGroup]

    @property
    def layout(self) -> tuple[tuple[int, int], ...]:
        sizes = [len(g.columns) for g in self.groups]
        return tuple((sizes.count(size), size) for size in dict.fromkeys(sizes))

    @property
    def column_order(self) -> np.ndarray:
        """The phenotype index of each kernel column."""
        return np.concatenate([g.columns for g in self.groups])

    @property
    def group_of_phenotype(self) -> np.ndarray:
        """For each phenotype (in input order), the number of its group (in kernel order)."""
        group_of = np.zeros(sum(len(g.columns) for g in self.groups), int)
        for g, group in enumerate(self.groups):
            group_of[group.columns] = g
        return group_of


def covariate_basis(covariates: np.ndarray, names: list[str], path) -> np.ndarray:
    """Orthonormal basis of [1, covariates]; collinear covariates are an error naming them."""
    design = np.column_stack([np.ones(len(covariates)), covariates])
    labels = ["intercept", *names]
    scale = np.linalg.norm(design, axis=0)
    scale[scale == 0] = 1
    q, r = np.linalg.qr(design / scale)
    dependent = np.flatnonzero(np.abs(np.diag(r)) < 1e-9)
    if len(dependent):
        j = int(dependent[0])
        raise input_error(
            path,
            f"covariate {labels[j]} is constant or collinear with "
            f"{', '.join(labels[:j]) or 'the others'} on the analysed samples",
        )
    return q


def _check_covariates_observed(phenotypes: np.ndarray, covariates: np.ndarray, names: list[str], path) -> None:
    """Enough samples with a phenotype have every covariate to fit one (intercept, covariates and a
    genotype, plus a degree of freedom); otherwise the covariate with the fewest values is named."""
    with_phenotype = ~np.isnan(phenotypes).all(axis=1)
    observed = ~np.isnan(covariates[with_phenotype])
    needed = len(names) + 3
    if not names or observed.all(axis=1).sum() >= needed:
        return
    counts = observed.sum(axis=0)
    j = int(np.argmin(counts))
    raise input_error(
        path,
        f"column {names[j]}: a value for {int(counts[j])} of the {int(with_phenotype.sum())} samples with a "
        f"phenotype, and {int(observed.all(axis=1).sum())} have every covariate; expected at least {needed} "
        "(leave the column out with --covar-name)",
    )


def _check_not_constant(y: np.ndarray, residuals: np.ndarray, names: list[str], path) -> None:
    """Each phenotype of a group varies, and not only with the covariates."""
    for j, name in enumerate(names):
        explained = np.sqrt(np.mean(residuals[:, j] ** 2)) <= 1e-10 * max(np.std(y[:, j]), 1e-300)
        if explained or np.ptp(y[:, j]) == 0:
            raise input_error(path, f"phenotype {name} is constant (or fully explained by the covariates)")


def _patterns(observed: np.ndarray, pheno_names: list[str], pheno_path) -> list[list[int]]:
    """Phenotype columns grouped by the set of samples that have them, in order of first column."""
    patterns: dict[bytes, list[int]] = {}
    for j in range(observed.shape[1]):
        if observed[:, j].sum() == 0:
            raise input_error(pheno_path, f"phenotype {pheno_names[j]} has no value for any analysed sample")
        patterns.setdefault(np.packbits(observed[:, j]).tobytes(), []).append(j)
    return list(patterns.values())


def build_groups(
    phenotypes: np.ndarray,
    covariates: np.ndarray,
    pheno_names: list[str],
    covar_names: list[str],
    pheno_path,
    covar_path,
) -> GroupedPhenotypes:
    """Group the phenotypes by missingness pattern and residualise each group on the covariates."""
    _check_covariates_observed(phenotypes, covariates, covar_names, covar_path)
    has_covariates = ~np.isnan(covariates).any(axis=1)
    log.info("%d of %d genotyped samples have every covariate", int(has_covariates.sum()), len(has_covariates))
    observed = ~np.isnan(phenotypes) & has_covariates[:, None]
    groups = []
    for columns in _patterns(observed, pheno_names, pheno_path):
        samples = np.flatnonzero(observed[:, columns[0]])
        basis = covariate_basis(covariates[samples], covar_names, covar_path)
        y = phenotypes[np.ix_(samples, columns)]
        residuals = y - basis @ (basis.T @ y)
        _check_not_constant(y, residuals, [pheno_names[c] for c in columns], pheno_path)
        groups.append(PhenotypeGroup(columns, samples, residuals))
    sizes = ", ".join(f"{len(g.columns)} phenotypes x {len(g.samples)} samples" for g in groups[:5])
    log.info(
        "%d phenotype group(s) by missingness pattern: %s%s", len(groups), sizes, " ..." if len(groups) > 5 else ""
    )
    first_of_size = {size: i for i, size in reversed(list(enumerate(len(g.columns) for g in groups)))}
    groups.sort(key=lambda g: first_of_size[len(g.columns)])  # stable: groups of one size contiguous
    analysed = np.flatnonzero(observed.any(axis=1))
    return GroupedPhenotypes(analysed, covariate_basis(covariates[analysed], covar_names, covar_path), groups)


def _float32(x) -> np.ndarray:
    return np.asarray(x, np.float32)


def _design_matrix(grouped: GroupedPhenotypes, n_slots: int) -> np.ndarray:
    """[Q | 1 | Y] on the sample slots: zero outside S, and each group's Y zero outside its group."""
    k = grouped.basis.shape[1]
    n_pheno = sum(len(g.columns) for g in grouped.groups)
    design = np.zeros((n_slots, k + 1 + n_pheno))
    design[grouped.samples, :k] = grouped.basis
    design[grouped.samples, k] = 1.0
    column = k + 1
    for group in grouped.groups:
        design[group.samples, column : column + len(group.columns)] = group.residuals
        column += len(group.columns)
    return design


def _excluded_samples(grouped: GroupedPhenotypes, n_slots: int) -> tuple[np.ndarray, np.ndarray]:
    """Per group, 1.0 on its samples (G, n_slots + 1), and the slots of S outside it, padded with n_slots."""
    groups = grouped.groups
    in_group = np.zeros((len(groups), n_slots + 1), np.float32)
    width = max(len(grouped.samples) - len(g.samples) for g in groups)
    excluded_index = np.full((len(groups), width), n_slots, np.int32)
    for g, group in enumerate(groups):
        in_group[g, group.samples] = 1.0
        excluded = np.setdiff1d(grouped.samples, group.samples)
        excluded_index[g, : len(excluded)] = excluded
    return in_group, excluded_index


def _analysed_bits(samples: np.ndarray, n_slots: int) -> np.ndarray:
    """Per .bed byte, bit 2s set where sample slot 4 byte + s is analysed."""
    in_analysed = np.zeros(n_slots, bool)
    in_analysed[samples] = True
    return (in_analysed.reshape(-1, 4) << np.arange(0, 8, 2)).sum(axis=1).astype(np.uint8)


def kernel_inputs(grouped: GroupedPhenotypes, n_slots: int) -> AssociationInputs:
    """The kernel's AssociationInputs on the host (float32), for blocks of ``n_slots`` sample slots
    (4 per .bed byte); index n_slots is the padding: a zero row of the gathered tables, and out of
    bounds (filled with zeros) for the columns of the decoded block."""
    groups = grouped.groups
    k = grouped.basis.shape[1]
    design = _design_matrix(grouped, n_slots)
    in_group, excluded_index = _excluded_samples(grouped, n_slots)
    with_zero_row = np.concatenate([design, np.zeros((1, design.shape[1]))])
    excluded_basis = with_zero_row[excluded_index, :k]
    residuals = design[:, k + 1 :]
    observed = np.repeat(in_group[:, :n_slots].T, [len(g.columns) for g in groups], axis=1)  # (slots, P)
    stack_residuals, p0 = [], 0
    for n_groups, size in grouped.layout:
        stack_residuals.append(np.asarray(with_zero_row[:, k + 1 + p0 : k + 1 + p0 + n_groups * size], np.float32))
        p0 += n_groups * size
    base_gram = np.eye(k) - np.einsum("guk,guj->gkj", excluded_basis, excluded_basis)
    return AssociationInputs(
        design=_float32(design),
        analysed_bits=_analysed_bits(grouped.samples, n_slots),
        basis=_float32(with_zero_row[:, :k]),
        residuals=tuple(stack_residuals),
        in_group=in_group,
        excluded_index=excluded_index,
        excluded_basis=_float32(excluded_basis),
        base_gram=_float32(base_gram),
        base_inverse=_float32(np.linalg.inv(base_gram)),
        group_size=_float32([len(g.samples) for g in groups]),
        group_basis_sum=_float32([design[g.samples, :k].sum(axis=0) for g in groups]),
        residual_sum=_float32(residuals.sum(axis=0)),
        residual_ss=_float32((residuals**2).sum(axis=0)),
        omnibus_precision=_float32(np.linalg.pinv(omnibus_correlation(residuals, observed))),
    )


def omnibus_correlation(residuals: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Correlation of residualised phenotypes (samples x P, zero where a phenotype is missing), each
    pair over the samples that have both: R of the omnibus test t' R^-1 t (JAGWAS's, from the
    phenotypes rather than from null summary statistics)."""
    cross = residuals.T @ residuals
    squares = (residuals**2).T @ observed  # [p, q]: sum of y_p^2 over the samples that have q
    return cross / np.sqrt(squares * squares.T)


def device_inputs(inputs: AssociationInputs, mesh: Mesh) -> AssociationInputs:
    """The kernel inputs replicated over the mesh."""
    return jax.device_put(inputs, NamedSharding(mesh, PartitionSpec()))
