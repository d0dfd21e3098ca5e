"""Sample tables (phenotypes, covariates, UDIPs): header `FID IID col...`, matched to the .fam.

Accepted as PLINK 2 accepts them: tab- or space-separated; a header whose first columns are
`FID IID` or `#FID IID`, or `IID`/`#IID` alone (then samples match by IID only); missing values
`NA`, `nan` or an empty field.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from wm_jax.errors import input_error, require_file

log = logging.getLogger("wm_jax")

MISSING_TOKENS = {"", "NA", "na", "nan", "NaN", "NAN", "."}


@dataclass
class SampleTable:
    path: Path
    fid: np.ndarray | None  # None when the file has no FID column
    iid: np.ndarray
    columns: list[str]
    values: np.ndarray  # (rows, columns) float64, NaN = missing
    text: dict[str, np.ndarray] = field(default_factory=dict)  # non-numeric columns kept as text


def read_table(path: str | os.PathLike, numeric: bool = True, text_columns: tuple[str, ...] = ()) -> SampleTable:
    """Read a sample table. Columns in ``text_columns`` stay text; all others must be numeric."""
    path = require_file(path, "table")
    with open(path, "r", encoding="utf-8", errors="replace") as handle:
        header_line = handle.readline().rstrip("\r\n")
    if not header_line.strip():
        raise input_error(path, "empty file; expected a header line starting with FID IID")
    sep = "\t" if "\t" in header_line else r"\s+"
    header = re.split(sep, header_line.strip()) if sep != "\t" else header_line.split("\t")
    first = header[0].lstrip("#")
    if first == "FID" and len(header) > 1 and header[1].lstrip("#") == "IID":
        has_fid = True
    elif first == "IID":
        has_fid = False
    else:
        raise input_error(path, f"header must start with FID IID (or #FID, #IID), found {header_line[:60]!r}")
    try:
        table = pd.read_csv(
            path, sep=sep, header=0, dtype=str, keep_default_na=False, na_values=[], engine="c" if sep == "\t" else "python"
        )
    except pd.errors.ParserError as err:
        raise input_error(path, f"expected {len(header)} columns on every line ({err})")
    if table.shape[1] != len(header):
        raise input_error(path, f"expected {len(header)} columns, found {table.shape[1]}")
    table.columns = [name.lstrip("#") if i < 1 + has_fid else name for i, name in enumerate(header)]
    id_columns = ["FID", "IID"] if has_fid else ["IID"]
    data_columns = [c for c in table.columns if c not in id_columns]
    if len(set(data_columns)) != len(data_columns):
        raise input_error(path, "duplicate column names in the header")
    table = table.fillna("")
    if (table["IID"] == "").any():
        line = int(np.flatnonzero(table["IID"].to_numpy() == "")[0]) + 2
        raise input_error(path, f"line {line}: empty IID")
    keys = table[id_columns].astype(str).agg("\t".join, axis=1) if has_fid else table["IID"]
    if keys.duplicated().any():
        dup = keys[keys.duplicated()].iloc[0].replace("\t", " ")
        raise input_error(path, f"sample {dup} appears more than once")
    numeric_columns = [c for c in data_columns if c not in text_columns]
    values = np.empty((len(table), len(numeric_columns)), np.float64)
    for j, column in enumerate(numeric_columns):
        raw = table[column].str.strip()
        missing = raw.isin(MISSING_TOKENS).to_numpy()
        parsed = pd.to_numeric(raw.where(~missing, "nan"), errors="coerce").to_numpy(np.float64)
        bad = np.isnan(parsed) & ~missing
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise input_error(
                path, f"line {row + 2}, column {column}: expected a number or NA, found {raw.iloc[row]!r}"
            )
        values[:, j] = parsed
    return SampleTable(
        path=path,
        fid=table["FID"].to_numpy(str) if has_fid else None,
        iid=table["IID"].to_numpy(str),
        columns=numeric_columns,
        values=values,
        text={c: table[c].to_numpy(str) for c in text_columns if c in table.columns},
    )


def align_to_samples(table: SampleTable, fid: np.ndarray, iid: np.ndarray) -> np.ndarray:
    """Rows of ``table`` in the order of the given samples (e.g. the .fam); NaN where absent.

    Logs how many of the table's samples were dropped (not in the genotype samples) and how many
    genotype samples the table lacks.
    """
    fid = np.asarray(fid, str)
    iid = np.asarray(iid, str)
    if table.fid is not None:
        target = pd.Index(pd.Series(fid) + "\t" + pd.Series(iid))
        source = pd.Series(table.fid) + "\t" + pd.Series(table.iid)
    else:
        if pd.Index(iid).has_duplicates:
            raise input_error(table.path, "has no FID column but IIDs are not unique in the .fam")
        target = pd.Index(iid)
        source = pd.Series(table.iid)
    position = target.get_indexer(source)
    matched = position >= 0
    aligned = np.full((len(target), len(table.columns)), np.nan)
    aligned[position[matched]] = table.values[matched]
    n_dropped = int((~matched).sum())
    n_absent = len(target) - int(matched.sum())
    log.info(
        "%s: %d samples read, %d matched, %d dropped (not among the genotyped samples); "
        "%d genotyped samples absent from it",
        table.path, len(table.iid), int(matched.sum()), n_dropped, n_absent,
    )
    if not matched.any():
        raise input_error(table.path, "no sample matches the genotype samples by (FID, IID)")
    return aligned


def select_columns(table: SampleTable, names: list[str] | None, what: str) -> list[int]:
    """Indices of the named columns (all when ``names`` is None); an unknown name is an error."""
    if names is None:
        return list(range(len(table.columns)))
    index = {name: j for j, name in enumerate(table.columns)}
    unknown = [n for n in names if n not in index]
    if unknown:
        raise input_error(table.path, f"no {what} column named {unknown[0]!r} (columns: {', '.join(table.columns[:8])}...)")
    return [index[n] for n in names]


def expand_names(spec: str | None, available: list[str]) -> list[str] | None:
    """PLINK 2 style name lists: comma-separated, with ranges like ``UDIP1-UDIP16``."""
    if spec is None:
        return None
    names: list[str] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        match = re.fullmatch(r"(.*?)(\d+)-(.*?)(\d+)", part)
        if match and part not in available and match.group(1) == match.group(3):
            prefix, lo, hi = match.group(1), int(match.group(2)), int(match.group(4))
            names.extend(f"{prefix}{k}" for k in range(lo, hi + 1))
        elif "-" in part and part not in available and part.split("-")[0] in available:
            lo_name, hi_name = part.split("-", 1)
            if hi_name not in available:
                names.append(hi_name)
            else:
                names.extend(available[available.index(lo_name): available.index(hi_name) + 1])
        else:
            names.append(part)
    return names


def write_table(path: str | os.PathLike, fid, iid, columns: dict[str, np.ndarray], float_format: str = "%.6g") -> None:
    """Write a `FID IID col...` table (NaN as NA)."""
    frame = pd.DataFrame({"FID": fid, "IID": iid, **columns})
    frame.to_csv(path, sep="\t", index=False, na_rep="NA", float_format=float_format)
