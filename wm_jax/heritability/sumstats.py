"""Summary statistics for LD score regression: a `wm-jax gwas` compact output read in place
(Z = BETA / SE, N = OBS_CT, no munge step), external files (LDSC `.sumstats`, GWAS-SSF), and our
results written as GWAS-SSF for other tools.

The compact output (`PREFIX.gwas/`) holds BETA and SE as phenotypes x variants float32 `.npy`
files; they are memory-mapped, so a phenotype is one contiguous row read on demand.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from wm_jax.data.chromosomes import chromosome_numbers
from wm_jax.errors import InputError, input_error, require_file
from wm_jax.gwas.results import load_result_column

log = logging.getLogger("wm_jax")

# ldsc's allele rules (ldscore/sumstats.py): SNPs with two different bases, not strand-ambiguous
COMPLEMENT = {"A": "T", "T": "A", "C": "G", "G": "C"}
TEXT_COLUMNS = ("SNP", "A1", "A2", "rsid", "variant_id", "effect_allele", "other_allele")
SSF_COLUMNS = (
    "chromosome",
    "base_pair_location",
    "effect_allele",
    "other_allele",
    "beta",
    "standard_error",
    "effect_allele_frequency",
    "p_value",
)


# ---------------------------------------------------------------------------------------------
# wm-jax gwas compact output
# ---------------------------------------------------------------------------------------------
@dataclass
class GwasSumstats:
    """A `wm-jax gwas` compact output (PREFIX.gwas/), memory-mapped. ``variants``: SNP, A1, A2,
    CHR (PLINK number), POS of every tested variant; A1 is the allele BETA counts."""

    directory: Path
    phenotypes: list[str]
    group_of: np.ndarray
    variants: pd.DataFrame
    beta: np.ndarray
    se: np.ndarray
    obs_ct: np.ndarray

    def z_and_n(self, phenotype: int, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Z = BETA / SE and N = OBS_CT (float64) of one phenotype at variant ``positions``."""
        beta = np.asarray(self.beta[phenotype], np.float64)[positions]
        se = np.asarray(self.se[phenotype], np.float64)[positions]
        with np.errstate(divide="ignore", invalid="ignore"):
            z = beta / se
        n = np.asarray(self.obs_ct[self.group_of[phenotype]], np.float64)[positions]
        return z, n

    def column(self, name: str) -> np.ndarray:
        return load_result_column(
            self.directory / f"{name}.npy", self.beta.shape if name != "a1_freq" else self.obs_ct.shape
        )


def open_gwas(prefix: str) -> GwasSumstats:
    """Open PREFIX.gwas/ (format version 2) without reading its columns."""
    directory = Path(f"{prefix}.gwas")
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        raise input_error(directory, "not a `wm-jax gwas` compact output (expected meta.json, variants.tsv, *.npy)")
    meta = _read_meta(meta_path)
    names, group_of = meta["phenotypes"], np.asarray(meta["group_of_phenotype"], np.int64)
    variants = _read_variants(directory / "variants.tsv")
    n_groups = int(group_of.max()) + 1
    beta = load_result_column(directory / "beta.npy", (len(names), len(variants)))
    se = load_result_column(directory / "se.npy", (len(names), len(variants)))
    obs_ct = load_result_column(directory / "obs_ct.npy", (n_groups, len(variants)))
    return GwasSumstats(directory, names, group_of, variants, beta, se, obs_ct)


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise input_error(path, f"expected the JSON record of a `wm-jax gwas` run ({type(err).__name__})")
    if not isinstance(meta, dict) or meta.get("format_version") != 2:
        raise input_error(path, "expected format version 2 (written by an older wm-jax gwas, or damaged: rerun it)")
    names, groups = meta.get("phenotypes"), meta.get("group_of_phenotype")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise input_error(path, "expected a non-empty list of phenotype names under 'phenotypes'")
    if not isinstance(groups, list) or len(groups) != len(names) or not all(isinstance(g, int) for g in groups):
        raise input_error(path, "expected 'group_of_phenotype', one group number per phenotype")
    return meta


def _read_variants(path: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, sep="\t", dtype={"#CHROM": str, "ID": str, "REF": str, "ALT": str, "A1": str})
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise input_error(path, f"expected the variant table of a `wm-jax gwas` run ({type(err).__name__})")
    expected = ["#CHROM", "POS", "ID", "REF", "ALT", "A1"]
    if list(table.columns[:6]) != expected or table[expected].isna().any().any():
        raise input_error(path, f"expected columns {' '.join(expected)} filled on every row")
    a1 = table["A1"].str.upper()
    a2 = np.where(a1 == table["REF"].str.upper(), table["ALT"].str.upper(), table["REF"].str.upper())
    return pd.DataFrame(
        {
            "SNP": table["ID"].to_numpy(),
            "A1": a1.to_numpy(),
            "A2": a2,
            "CHR": chromosome_numbers(table["#CHROM"]),
            "POS": table["POS"].to_numpy(),
        }
    )


# ---------------------------------------------------------------------------------------------
# External summary statistics
# ---------------------------------------------------------------------------------------------
@dataclass
class ExternalSumstats:
    """One trait's summary statistics from a file: ``table`` has SNP, A1, A2, Z, N (float64)."""

    path: Path
    name: str  # the path as given (ldsc's name of a trait in --rg)
    table: pd.DataFrame
    kind: str  # "ldsc" or "ssf"


def read_sumstats(path: str) -> ExternalSumstats:
    """An LDSC `.sumstats[.gz]` (SNP A1 A2 N Z, whitespace-separated) or a GWAS-SSF file (tab-
    separated: effect_allele other_allele beta standard_error, rsid or variant_id, n), told apart by
    their columns. Rows with a missing value are dropped; a repeated SNP keeps its first row."""
    given, path = str(path), require_file(path, "summary statistics")
    header = _header(path)
    if {"SNP", "Z"} <= set(header):
        table, kind = _read_ldsc(path, header), "ldsc"
    elif {"beta", "standard_error", "effect_allele"} <= set(header):
        table, kind = _read_ssf(path, header), "ssf"
    else:
        raise input_error(
            path,
            "expected LDSC .sumstats columns SNP A1 A2 N Z, or GWAS-SSF columns effect_allele other_allele "
            f"beta standard_error rsid/variant_id n; found {' '.join(header[:12])}",
        )
    rows = len(table)
    table = table.dropna().drop_duplicates(subset="SNP")
    table = table.assign(A1=table["A1"].str.upper(), A2=table["A2"].str.upper()).reset_index(drop=True)
    log.info(
        "%s (%s): %d SNPs read, %d kept (%d with a missing value or a repeated SNP dropped)",
        path,
        kind,
        rows,
        len(table),
        rows - len(table),
    )
    if table.empty:
        raise input_error(path, "no SNP with SNP, alleles, Z and N all present")
    return ExternalSumstats(path, given, table, kind)


def _header(path: Path) -> list[str]:
    try:
        head = pd.read_csv(path, sep=r"\s+", nrows=0)
    except (OSError, EOFError, UnicodeDecodeError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise input_error(path, f"expected a table of summary statistics with a header ({type(err).__name__})")
    return list(head.columns)


def _read_table(path: Path, sep: str, columns: list[str], na_values: list[str]) -> pd.DataFrame:
    dtypes = {c: str for c in columns if c in TEXT_COLUMNS}
    try:
        return pd.read_csv(path, sep=sep, usecols=columns, dtype=dtypes, na_values=na_values)
    except (OSError, EOFError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as err:
        raise input_error(path, f"expected columns {' '.join(columns)} ({type(err).__name__}: {err})")


def _numeric(path: Path, table: pd.DataFrame, column: str) -> pd.Series:
    if not pd.api.types.is_numeric_dtype(table[column]):
        bad = pd.to_numeric(table[column], errors="coerce").isna() & table[column].notna()
        raise input_error(path, f"column {column}: expected numbers, found {table[column][bad].iloc[0]!r}")
    return table[column].astype(np.float64)


def _read_ldsc(path: Path, header: list[str]) -> pd.DataFrame:
    missing = [c for c in ("SNP", "A1", "A2", "Z", "N") if c not in header]
    if missing:
        what = "the sample size" if missing == ["N"] else "columns"
        raise input_error(path, f"no column {' '.join(missing)}: expected {what} (LDSC .sumstats: SNP A1 A2 N Z)")
    table = _read_table(path, r"\s+", ["SNP", "A1", "A2", "Z", "N"], ["."])
    return pd.DataFrame(
        {
            "SNP": table["SNP"],
            "A1": table["A1"],
            "A2": table["A2"],
            "Z": _numeric(path, table, "Z"),
            "N": _numeric(path, table, "N"),
        }
    )


def _read_ssf(path: Path, header: list[str]) -> pd.DataFrame:
    snp = "rsid" if "rsid" in header else "variant_id" if "variant_id" in header else None
    if snp is None:
        raise input_error(path, "no column rsid or variant_id: expected the SNP IDs of the LD scores (GWAS-SSF)")
    if "n" not in header:
        raise input_error(path, "no column n: expected the sample size of each SNP (GWAS-SSF column n)")
    if "other_allele" not in header:
        raise input_error(path, "no column other_allele: expected both alleles (GWAS-SSF)")
    columns = [snp, "effect_allele", "other_allele", "beta", "standard_error", "n"]
    table = _read_table(path, "\t", columns, ["NA", "#NA"])
    with np.errstate(divide="ignore", invalid="ignore"):
        z = _numeric(path, table, "beta") / _numeric(path, table, "standard_error")
    return pd.DataFrame(
        {
            "SNP": table[snp],
            "A1": table["effect_allele"],
            "A2": table["other_allele"],
            "Z": z.where(np.isfinite(z)),
            "N": _numeric(path, table, "n"),
        }
    )


# ---------------------------------------------------------------------------------------------
# Alleles (ldsc's rules for --rg)
# ---------------------------------------------------------------------------------------------
def valid_snp(a1: np.ndarray, a2: np.ndarray) -> np.ndarray:
    """Two different bases (A C G T) that are not strand-ambiguous (A/T, C/G)."""
    a1, a2 = pd.Series(a1, dtype=object), pd.Series(a2, dtype=object)
    bases = a1.isin(list(COMPLEMENT)) & a2.isin(list(COMPLEMENT))
    return (bases & (a1 != a2) & (a1.map(COMPLEMENT) != a2)).to_numpy()


def align(a1: np.ndarray, a2: np.ndarray, b1: np.ndarray, b2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For SNPs with alleles (a1, a2) in one study and (b1, b2) in another: which match (both valid
    SNPs, the same alleles up to strand and order: ldsc's MATCH_ALLELES) and the sign (+1, or -1
    where b1 is the other allele) that aligns the second study's Z to a1."""
    a1, a2, b1, b2 = (pd.Series(x, dtype=object).reset_index(drop=True) for x in (a1, a2, b1, b2))
    c1, c2 = b1.map(COMPLEMENT), b2.map(COMPLEMENT)
    same = ((a1 == b1) & (a2 == b2)) | ((a1 == c1) & (a2 == c2))
    flipped = ((a1 == b2) & (a2 == b1)) | ((a1 == c2) & (a2 == c1))
    match = valid_snp(a1, a2) & valid_snp(b1, b2) & (same | flipped).to_numpy()
    return match, np.where(flipped.to_numpy() & ~same.to_numpy(), -1.0, 1.0)


# ---------------------------------------------------------------------------------------------
# GWAS-SSF export
# ---------------------------------------------------------------------------------------------
def _p_value_text(log10_p: np.ndarray) -> np.ndarray:
    """P = 10^-LOG10_P, as numbers, and as text (mantissa e-exponent) where a float64 underflows."""
    p = np.power(10.0, -np.asarray(log10_p, np.float64))
    tiny = p < 1e-300
    if not tiny.any():
        return p
    text = np.array([f"{v:.6g}" for v in p.tolist()], dtype=object)
    exponent = np.floor(-log10_p[tiny])
    mantissa = np.power(10.0, -log10_p[tiny] - exponent)
    text[tiny] = [f"{m:.5f}e{int(e)}" for m, e in zip(mantissa.tolist(), exponent.tolist())]
    text[np.isnan(p)] = "NA"
    return text


def ssf_columns(gwas: GwasSumstats, phenotype: int, log10_p: np.ndarray, a1_freq: np.ndarray) -> dict:
    """One phenotype's GWAS-SSF columns (the mandatory ones in the spec's order, then variant_id,
    rsid and n); the other allele is A2, chromosomes are numbers (X = 23)."""
    variants, group = gwas.variants, gwas.group_of[phenotype]
    n = np.asarray(gwas.obs_ct[group])
    beta = np.asarray(gwas.beta[phenotype], np.float64)
    return {
        "chromosome": variants["CHR"].to_numpy(),
        "base_pair_location": variants["POS"].to_numpy(),
        "effect_allele": variants["A1"].to_numpy(),
        "other_allele": variants["A2"].to_numpy(),
        "beta": beta,
        "standard_error": np.asarray(gwas.se[phenotype], np.float64),
        "effect_allele_frequency": np.asarray(a1_freq[group], np.float64),
        "p_value": _p_value_text(log10_p[phenotype]),
        "variant_id": _variant_ids(variants),
        "rsid": variants["SNP"].to_numpy(),
        "n": n,
    }


def _variant_ids(variants: pd.DataFrame) -> np.ndarray:
    """GWAS-SSF variant_id: CHR_POS_OTHER_EFFECT."""
    location = variants["CHR"].astype(str) + "_" + variants["POS"].astype(str)
    return (location + "_" + variants["A2"] + "_" + variants["A1"]).to_numpy()


def ssf_metadata(data_file: Path, phenotype: str, gwas: GwasSumstats, n_max: int) -> str:
    """The GWAS-SSF metadata file (YAML) of one data file."""
    digest = hashlib.md5(data_file.read_bytes()).hexdigest()
    lines = [
        f"data_file_name: {data_file.name.split('.partial')[0].lstrip('.')}",
        "file_type: GWAS-SSF v1.0",
        f"data_file_md5sum: {digest}",
        "is_harmonised: false",
        "is_sorted: false",
        f"date_last_modified: {time.strftime('%Y-%m-%d')}",
        "genome_assembly: unknown",
        "coordinate_system: 1-based",
        f"trait_description: [{json.dumps(phenotype)}]",
        "analysis_software: wm-jax gwas (linear regression, PLINK 2 --glm statistics)",
        "samples:",
        f"  - sample_size: {n_max}",
        "    sample_ancestry: [unknown]",
        f"source: {json.dumps(str(gwas.directory))}",
    ]
    return "\n".join(lines) + "\n"


def check_phenotypes(gwas: GwasSumstats, spec: str | None) -> list[int]:
    """Rows of the phenotypes named by ``spec`` (--pheno-name: names and ranges; all without one);
    an unknown name is an InputError."""
    from wm_jax.data.tables import expand_names

    names = expand_names(spec, gwas.phenotypes, "--pheno-name")
    if not names:
        return list(range(len(gwas.phenotypes)))
    unknown = [n for n in names if n not in gwas.phenotypes]
    if unknown:
        raise InputError(f"--pheno-name: {unknown[0]!r} is not a phenotype of {gwas.directory}")
    return [gwas.phenotypes.index(n) for n in names]
