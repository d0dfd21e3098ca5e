"""The phenotype and covariate tables of `wm-jax gwas`: which columns are tested or adjusted for
(--pheno-name, --covar-name) and their values aligned to the samples of the genotypes (.fam,
.psam or .sample; `wm_jax.data.source`).

Called by `wm_jax.gwas.run` (the driver).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wm_jax.data.tables import SampleTable, align_to_samples, expand_names, read_table, select_columns
from wm_jax.errors import InputError, input_error

MISSING_CODE = -9  # missing in --pheno and --covar, as PLINK 2 reads them


@dataclass
class AlignedInputs:
    """The phenotypes to test and the covariates, one row per sample of the .fam (NaN: missing)."""

    pheno_names: list[str]
    phenotypes: np.ndarray
    pheno_path: Path
    covar_names: list[str]
    covariates: np.ndarray
    covar_path: Path


def read_phenotype_table(path: str) -> SampleTable:
    """The --pheno table, read strictly (wm_jax.data.tables), -9 as missing."""
    return read_table(path, missing_code=MISSING_CODE)


def phenotype_columns(table: SampleTable, pheno_names: str | None, glm_files_suffix: str | None) -> list[int]:
    """Columns of the phenotypes to test: each once, and (with --format plink2, where a name becomes
    part of the file name ending in ``glm_files_suffix``) only names that are safe as one."""
    if not table.columns:
        raise input_error(table.path, "has no phenotype column; expected FID IID and one column per phenotype")
    names = expand_names(pheno_names, table.columns, "--pheno-name")
    if names is not None:
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise InputError(
                f"--pheno-name: expected each phenotype once, {repeated[0]!r} is selected twice ({pheno_names})"
            )
    columns = select_columns(table, names, "phenotype")
    if glm_files_suffix is not None:
        for j in columns:
            check_file_name_part(table.path, table.columns[j], glm_files_suffix)
    return columns


def check_file_name_part(path, name: str, suffix: str, why: str = "with --format plink2") -> None:
    """A phenotype name that becomes part of a file name (PREFIX.<name>.glm.linear with --format
    plink2, DIR/<name>.tsv.gz of `wm-jax export`) must name a file there: ``why`` says which."""
    unsafe = (
        not name
        or "/" in name
        or "\\" in name
        or ".." in name
        or name in (".",)
        or any(ord(c) < 32 or ord(c) == 127 for c in name)
        or len(f".{name}{suffix}".encode()) > 200
    )
    if unsafe:
        raise input_error(
            path,
            f"phenotype column {name!r}: {why} the name becomes part of an "
            "output file name; expected a non-empty name without '/', '\\', '..' or control "
            "characters (rename the column)",
        )


def covariate_columns(table: SampleTable, covar_names: str | None) -> list[int]:
    """Columns of the covariates (--covar-name, each once; all without it)."""
    names = expand_names(covar_names, table.columns, "--covar-name")
    if names is not None and len(set(names)) != len(names):
        raise InputError(f"--covar-name: expected each covariate once ({covar_names})")
    return select_columns(table, names, "covariate")


def aligned_columns(table: SampleTable, columns: list[int], data) -> np.ndarray:
    """The table's ``columns`` in the order of the genotype source's samples (NaN for a sample the
    table lacks)."""
    fam_fid, fam_iid = data.samples.fid.to_numpy(str), data.samples.iid.to_numpy(str)
    return align_to_samples(table, fam_fid, fam_iid)[:, columns]


def align_inputs(
    pheno_table: SampleTable, pheno_columns: list[int], covar: str, covar_names: str | None, data
) -> AlignedInputs:
    """The selected phenotypes aligned to the .fam, then the covariate table read, selected and aligned."""
    phenotypes = aligned_columns(pheno_table, pheno_columns, data)
    covar_table = read_table(covar, missing_code=MISSING_CODE)
    covar_columns = covariate_columns(covar_table, covar_names)
    return AlignedInputs(
        pheno_names=[pheno_table.columns[j] for j in pheno_columns],
        phenotypes=phenotypes,
        pheno_path=pheno_table.path,
        covar_names=[covar_table.columns[j] for j in covar_columns],
        covariates=aligned_columns(covar_table, covar_columns, data),
        covar_path=covar_table.path,
    )
