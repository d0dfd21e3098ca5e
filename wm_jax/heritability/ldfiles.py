"""LD score files in LDSC's format: `PREFIX.l2.ldscore.gz` (whitespace-separated, header CHR SNP BP
and one or more LD score columns; also uncompressed or .bz2), `PREFIX.l2.M` and `PREFIX.l2.M_5_50`
(one number per LD score column). `wm-jax ldscore` writes them and ldsc `--l2` writes them, so one
reader serves both.

A prefix names either one file set (`PREFIX.l2.ldscore.gz` exists) or one per chromosome, as
ldsc's `--ref-ld-chr`: the chromosome number replaces `@`, or is appended (`eur_w_ld_chr/` reads
`eur_w_ld_chr/1.l2.ldscore.gz` ... `22.l2.ldscore.gz`). Like ldsc, every chromosome 1-22 present
is read and M is summed over them; the SNPs are sorted by (CHR, BP) and a repeated SNP ID keeps its
first row. Unlike ldsc, a chromosome that the summary statistics need and the LD scores lack is an
error (`require`), not a silent gap.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from wm_jax.data.chromosomes import chromosome_numbers
from wm_jax.errors import InputError, input_error

log = logging.getLogger("wm_jax")

SUFFIX = ".l2.ldscore"
COMPRESSIONS = ("", ".gz", ".bz2")
AUTOSOMES = tuple(range(1, 23))
M_5_50 = ".l2.M_5_50"  # SNPs with MAF > 5% (ldsc's default M)
M_ALL = ".l2.M"


@dataclass
class LdScores:
    """LD scores of one prefix: ``table`` has SNP, CHR (PLINK number) and the LD score columns,
    one row per SNP in (CHR, BP) order; ``m`` the number of reference SNPs per LD score column
    (None when not read)."""

    prefix: str
    table: pd.DataFrame
    ld_columns: list[str]
    m: np.ndarray | None
    files: list[Path]


def chromosome_prefix(prefix: str, chromosome: int) -> str:
    """ldsc's rule: the chromosome replaces `@`, else it is appended."""
    return prefix.replace("@", str(chromosome)) if "@" in prefix else f"{prefix}{chromosome}"


def _ld_file(stem: str) -> Path | None:
    for compression in COMPRESSIONS:
        path = Path(f"{stem}{SUFFIX}{compression}")
        if path.is_file():
            return path
    return None


def ld_score_stems(prefix: str) -> dict[int | None, str]:
    """The file stems of a prefix: {None: prefix} for one file set, else {chromosome: stem} of the
    chromosomes 1-22 whose LD score file exists. An InputError when there is none."""
    if "@" not in prefix and _ld_file(prefix) is not None:
        return {None: prefix}
    stems = {c: chromosome_prefix(prefix, c) for c in AUTOSOMES if _ld_file(chromosome_prefix(prefix, c))}
    if not stems:
        raise InputError(
            f"{prefix}{SUFFIX}.gz: LD scores not found (expected {prefix}{SUFFIX}[.gz], or one file per "
            f"chromosome {chromosome_prefix(prefix, 1)}{SUFFIX}[.gz] ... as ldsc --ref-ld-chr reads them)"
        )
    return stems


def read_ld_scores(prefix: str, require: set[int] | None = None, m_suffix: str | None = M_5_50) -> LdScores:
    """Read the LD scores of ``prefix`` (module docstring). ``require``: chromosomes that must have
    LD scores; ``m_suffix``: the M file to read (`.l2.M_5_50`, `.l2.M`) or None."""
    stems = ld_score_stems(prefix)
    for chromosome in sorted(require or ()):
        if None not in stems and chromosome not in stems:
            raise input_error(
                f"{chromosome_prefix(prefix, chromosome)}{SUFFIX}.gz",
                f"LD scores of chromosome {chromosome} not found, and the summary statistics have SNPs on it",
            )
    files = [_ld_file(stem) for stem in stems.values()]
    tables = [_read_ld_file(path) for path in files]
    ld_columns = _ld_columns(tables[0])
    for path, table in zip(files, tables):
        if _ld_columns(table) != ld_columns:
            raise input_error(path, f"expected the LD score columns of {files[0]} ({' '.join(ld_columns)})")
    table = pd.concat(tables, ignore_index=True)
    missing = sorted(set(require or ()) - set(table["CHR"].unique()))
    if missing:
        what = f"no LD scores on chromosome {missing[0]}, and the summary statistics have SNPs on it"
        raise input_error(files[0], what)
    table = table.sort_values(["CHR", "BP"], kind="stable").drop(columns="BP")
    before = len(table)
    table = table.drop_duplicates(subset="SNP").reset_index(drop=True)
    if len(table) < before:
        log.info("%s: %d repeated SNP IDs dropped (first kept)", prefix, before - len(table))
    m = None if m_suffix is None else _read_m(list(stems.values()), m_suffix, len(ld_columns))
    log.info(
        "LD scores %s: %d SNPs on %d chromosome(s), column(s) %s%s",
        prefix,
        len(table),
        table["CHR"].nunique(),
        " ".join(ld_columns),
        "" if m is None else f", M = {' '.join(f'{v:g}' for v in m)} ({m_suffix})",
    )
    return LdScores(prefix, table, ld_columns, m, files)


def _ld_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c not in ("CHR", "SNP", "BP")]


def _read_ld_file(path: Path) -> pd.DataFrame:
    """One LD score file: CHR SNP BP and numeric LD score columns (MAF, CM of old files dropped)."""
    try:
        table = pd.read_csv(path, sep=r"\s+", na_values=".", dtype={"SNP": str, "CHR": str})
    except (OSError, EOFError, UnicodeDecodeError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise input_error(path, f"expected an LD score table CHR SNP BP L2 ({type(err).__name__}: {err})")
    if "MAF" in table.columns and "CM" in table.columns:
        table = table.drop(columns=["MAF", "CM"])
    ld_columns = _ld_columns(table)
    if any(c not in table.columns for c in ("CHR", "SNP", "BP")) or not ld_columns or table.empty:
        found = " ".join(table.columns)
        raise input_error(path, f"expected columns CHR SNP BP and LD scores (e.g. L2) with rows, found {found}")
    for column in ["BP", *ld_columns]:
        if not pd.api.types.is_numeric_dtype(table[column]) or table[column].isna().any():
            raise input_error(path, f"column {column}: expected a number on every row")
    numbers = chromosome_numbers(table["CHR"])
    if (numbers < 0).any():
        raise input_error(path, f"column CHR: expected chromosome codes, found {table['CHR'][numbers < 0].iloc[0]!r}")
    table["CHR"] = numbers
    return table


def _read_m(stems: list[str], suffix: str, n_columns: int) -> np.ndarray:
    """M summed over the file sets: one number per LD score column."""
    total = np.zeros(n_columns)
    for stem in stems:
        path = Path(f"{stem}{suffix}")
        try:
            values = [float(v) for v in path.read_text().split()]
        except FileNotFoundError:
            hint = " (or pass --not-M-5-50 to read .l2.M)" if suffix == M_5_50 else ""
            raise input_error(path, f"not found; expected the number of reference SNPs beside {stem}{SUFFIX}{hint}")
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise input_error(path, f"expected {n_columns} number(s), one per LD score column ({type(err).__name__})")
        if len(values) != n_columns:
            raise input_error(path, f"expected {n_columns} number(s), one per LD score column, found {len(values)}")
        total += values
    return total
