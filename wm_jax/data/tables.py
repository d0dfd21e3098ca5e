"""Sample tables (phenotypes, covariates, UDIPs): header `FID IID col...`, matched to the .fam.

Accepted as PLINK 2 accepts them: tab- or space-separated; a header whose first columns are
`FID IID` or `#FID IID`, or `IID`/`#IID` alone (then samples match by IID only); missing values
`NA`, `nan`, `.` or an empty field (and -9 in phenotype and covariate files, as PLINK 2 reads them).
Read strictly: UTF-8, every row as many fields as the header, every number finite; an error names
the file, the line and the column.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from wm_jax.errors import InputError, input_error, require_file

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


def read_table(
    path: str | os.PathLike,
    numeric: bool = True,
    text_columns: tuple[str, ...] = (),
    missing_code: float | None = None,
    required: tuple[tuple[str, str], ...] = (),
) -> SampleTable:
    """Read a sample table, strictly: UTF-8, every row as many fields as the header, numbers
    finite. Columns in ``text_columns`` stay text; all others must be numeric (or missing). A value
    equal to ``missing_code`` is missing too (PLINK 2 reads -9 so in phenotype and covariate files).
    ``required``: (column, what it holds) pairs the header must have."""
    path = require_file(path, "table")
    fast = _read_tab_separated(path, text_columns, missing_code, required)
    if fast is not None:
        return fast
    lines = text_lines(path)
    if not lines or not lines[0][1].strip():
        raise input_error(path, "empty file; expected a header line starting with FID IID")
    header_line = lines[0][1]
    split = (lambda line: line.split("\t")) if "\t" in header_line else (lambda line: line.split())
    header = split(header_line.strip() if "\t" not in header_line else header_line)
    first = header[0].lstrip("#")
    if first == "FID" and len(header) > 1 and header[1].lstrip("#") == "IID":
        has_fid = True
    elif first == "IID":
        has_fid = False
    else:
        raise input_error(path, f"header must start with FID IID (or #FID, #IID), found {header_line[:60]!r}")
    names = [name.lstrip("#") if i < 1 + has_fid else name for i, name in enumerate(header)]
    id_columns = ["FID", "IID"] if has_fid else ["IID"]
    data_columns = names[len(id_columns) :]
    if any(not name for name in data_columns):
        raise input_error(path, "empty column name in the header")
    if len(set(names)) != len(names):
        raise input_error(
            path, f"duplicate column names in the header ({sorted({n for n in names if names.count(n) > 1})[0]})"
        )
    for name, what in required:
        if name not in data_columns:
            raise input_error(path, f"expected a column {name} ({what}); the header has {', '.join(names)[:80]}")
    rows, line_numbers = _split_rows(path, lines[1:], split, len(header))
    fields = np.array(rows, dtype=str) if rows else np.empty((0, len(names)), str)
    columns = {name: fields[:, j] for j, name in enumerate(names)}
    _check_ids(path, columns, id_columns, line_numbers)
    numeric_columns = [c for c in data_columns if c not in text_columns]
    numeric_fields = fields[:, [names.index(c) for c in numeric_columns]]
    # Fields split on tabs may carry spaces around a value; fields split on whitespace cannot.
    padded = "\t" in header_line and any(" " in line for _, line in lines)
    values = _parse_numbers(path, numeric_columns, numeric_fields, line_numbers, missing_code, padded)
    return SampleTable(
        path=path,
        fid=columns["FID"].astype(str) if has_fid else None,
        iid=columns["IID"].astype(str),
        columns=numeric_columns,
        values=values,
        text={c: columns[c].astype(str) for c in text_columns if c in columns},
    )


def _read_tab_separated(
    path: Path, text_columns: tuple[str, ...], missing_code: float | None, required: tuple[tuple[str, str], ...]
) -> SampleTable | None:
    """The common case read by pyarrow's multi-threaded CSV reader: a tab-separated table whose
    first line is a `FID IID ...` header and whose every field parses cleanly (numbers as pyarrow's
    float64, the missing tokens as missing). Anything else (and any error) returns None, and the
    strict reader below reads the file and names the first problem, so messages do not change."""
    raw = path.read_bytes()
    end = raw.find(b"\n")
    header = raw[: end if end >= 0 else len(raw)].decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\r")
    names = ["FID", "IID", *header.split("\t")[2:]]
    if b"\x00" in raw or header.split("\t")[:2] not in (["FID", "IID"], ["#FID", "IID"]):
        return None
    if len(set(names)) != len(names) or "" in names or any(c not in names[2:] for c, _ in required):
        return None
    numeric = [c for c in names[2:] if c not in text_columns]
    columns = _arrow_columns(raw, names, numeric)
    if columns is None:
        return None
    values, nulls = columns["values"], columns["nulls"]
    fid, iid = columns["FID"], columns["IID"]
    # Not the common case: NaN spelled otherwise than a missing token, inf, an empty or repeated ID.
    if (np.isnan(values) & ~nulls).any() or np.isinf(values).any() or (iid == "").any():
        return None
    if pd.Series(fid + "\t" + iid).duplicated().any():
        return None
    if missing_code is not None:
        values[values == missing_code] = np.nan
    text = {c: columns[c] for c in text_columns if c in names}
    return SampleTable(path=path, fid=fid, iid=iid, columns=numeric, values=values, text=text)


def _arrow_columns(raw: bytes, names: list[str], numeric: list[str]) -> dict | None:
    """The text columns (str arrays), and the numeric ones as ``values`` (rows, columns) float64
    with ``nulls`` where a missing token stood, parsed by pyarrow on several threads; None if it
    cannot parse the data (no quoting, every row as many fields as the header)."""
    import pyarrow as pa
    from pyarrow import csv

    types = {c: pa.float64() if c in numeric else pa.string() for c in names}
    try:
        table = csv.read_csv(
            pa.py_buffer(raw),
            read_options=csv.ReadOptions(use_threads=True, skip_rows=1, column_names=names),
            parse_options=csv.ParseOptions(delimiter="\t", quote_char=False, double_quote=False),
            convert_options=csv.ConvertOptions(
                column_types=types, null_values=sorted(MISSING_TOKENS), strings_can_be_null=False
            ),
        )
    except (pa.ArrowException, ValueError):
        return None
    values = np.empty((table.num_rows, len(numeric)), np.float64)
    nulls = np.zeros(values.shape, bool)
    for j, name in enumerate(numeric):
        column = table.column(name)
        values[:, j] = column.to_numpy(zero_copy_only=False)
        nulls[:, j] = column.is_null().to_numpy(zero_copy_only=False)
    text = {c: table.column(c).to_numpy(zero_copy_only=False).astype(str) for c in names if c not in numeric}
    return {**text, "values": values, "nulls": nulls}


def text_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every non-empty line; a byte that is not UTF-8 is an error."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise input_error(path, f"line {line}: byte 0x{raw[err.start]:02x} is not UTF-8; expected UTF-8 text")
    text = text.removeprefix("\ufeff")
    if "\0" in text:
        line = text.count("\n", 0, text.index("\0")) + 1
        raise input_error(path, f"line {line}: a NUL byte (0x00); expected text")
    return [(k + 1, line.rstrip("\r")) for k, line in enumerate(text.split("\n")) if line.rstrip("\r")]


def _split_rows(path: Path, lines: list[tuple[int, str]], split, width: int) -> tuple[list[list[str]], np.ndarray]:
    rows = []
    for number, line in lines:
        fields = split(line)
        if len(fields) != width:
            raise input_error(path, f"line {number}: expected {width} fields as in the header, found {len(fields)}")
        rows.append(fields)
    return rows, np.array([number for number, _ in lines], np.int64)


def _check_ids(path: Path, columns: dict, id_columns: list[str], line_numbers: np.ndarray) -> None:
    iid = columns["IID"]
    if (iid == "").any():
        raise input_error(path, f"line {line_numbers[np.flatnonzero(iid == '')[0]]}: empty IID")
    keys = pd.Series(["\t".join(k) for k in zip(*(columns[c] for c in id_columns))] if len(iid) else [], dtype=str)
    if keys.duplicated().any():
        row = int(np.flatnonzero(keys.duplicated().to_numpy())[0])
        raise input_error(
            path, f"line {line_numbers[row]}: sample {keys.iloc[row].replace(chr(9), ' ')} appears more than once"
        )


def _parse_numbers(
    path: Path,
    columns: list[str],
    raw: np.ndarray,
    line_numbers: np.ndarray,
    missing_code: float | None,
    padded: bool = True,
) -> np.ndarray:
    """The (rows, columns) numbers of the text fields ``raw``, parsed in one pass (column by column
    in memory, so that an error names the first column with a bad value, at its first bad line).
    ``padded``: fields may have spaces around them (stripped first)."""
    text = pd.Series(raw.ravel(order="F"), dtype=str)
    if padded:
        text = text.str.strip()
    missing = text.isin(MISSING_TOKENS).to_numpy()
    parsed = pd.to_numeric(text.where(~missing, "nan"), errors="coerce").to_numpy(np.float64)
    bad = (np.isnan(parsed) & ~missing) | np.isinf(parsed)
    if bad.any():
        column, row = divmod(int(np.flatnonzero(bad)[0]), raw.shape[0])
        raise input_error(
            path,
            f"line {line_numbers[row]}, column {columns[column]}: expected a finite number or NA, "
            f"found {text.iloc[column * raw.shape[0] + row]!r}",
        )
    if missing_code is not None:
        parsed[parsed == missing_code] = np.nan
    return np.ascontiguousarray(parsed.reshape(raw.shape, order="F"))


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
        table.path,
        len(table.iid),
        int(matched.sum()),
        n_dropped,
        n_absent,
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
        raise input_error(
            table.path, f"no {what} column named {unknown[0]!r} (columns: {', '.join(table.columns[:8])}...)"
        )
    return [index[n] for n in names]


def expand_names(spec: str | None, available: list[str], option: str = "--pheno-name") -> list[str] | None:
    """PLINK 2 style name lists: comma-separated, with ranges like ``UDIP1-UDIP16``; a range that
    runs backwards is an error naming ``option``."""
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
            _check_forwards(part, lo <= hi, option)
            names.extend(f"{prefix}{k}" for k in range(lo, hi + 1))
        elif "-" in part and part not in available and part.split("-")[0] in available:
            lo_name, hi_name = part.split("-", 1)
            if hi_name not in available:
                names.append(hi_name)
            else:
                _check_forwards(part, available.index(lo_name) <= available.index(hi_name), option)
                names.extend(available[available.index(lo_name) : available.index(hi_name) + 1])
        else:
            names.append(part)
    return names


def _check_forwards(part: str, forwards: bool, option: str) -> None:
    if not forwards:
        raise InputError(f"{option}: expected a range FIRST-LAST with FIRST before LAST, found {part!r} (backwards)")


def write_table(path: str | os.PathLike, fid, iid, columns: dict[str, np.ndarray], float_format: str = "%.6g") -> None:
    """Write a `FID IID col...` table (NaN as NA)."""
    frame = pd.DataFrame({"FID": fid, "IID": iid, **columns})
    frame.to_csv(path, sep="\t", index=False, na_rep="NA", float_format=float_format)


def read_labels(path: str | os.PathLike) -> pd.DataFrame:
    """An atlas labels table: columns `label` (integer > 0, unique) and `tract` (unique names)."""
    path = require_file(path, "atlas labels table")
    lines = text_lines(path)
    if not lines:
        raise input_error(path, "empty file; expected a header with columns label and tract")
    split = (lambda line: line.split("\t")) if "\t" in lines[0][1] else (lambda line: line.split())
    header = split(lines[0][1])
    if "label" not in header or "tract" not in header:
        raise input_error(path, f"expected columns label and tract, found {', '.join(header)[:80]}")
    rows, line_numbers = _split_rows(path, lines[1:], split, len(header))
    if not rows:
        raise input_error(path, "lists no label; expected one row per tract")
    label_text = [row[header.index("label")].strip() for row in rows]
    tracts = [row[header.index("tract")].strip() for row in rows]
    for number, text, tract in zip(line_numbers, label_text, tracts):
        if not re.fullmatch(r"\d+", text) or int(text) == 0:
            raise input_error(path, f"line {number}, column label: expected an integer > 0, found {text!r}")
        if not tract:
            raise input_error(path, f"line {number}, column tract: expected a tract name")
    labels = [int(t) for t in label_text]
    for values, what in ((labels, "label"), (tracts, "tract")):
        repeated = [v for v in values if values.count(v) > 1]
        if repeated:
            raise input_error(path, f"{what} {repeated[0]} appears more than once")
    return pd.DataFrame({"label": labels, "tract": tracts})


def read_command_table(path, columns: list[str], dtype: dict, command: str) -> pd.DataFrame:
    """A tab-separated table another wm-jax command wrote (``command``, e.g. "genes", "h2"), with at
    least ``columns`` and one row; anything else is an error naming ``path``."""
    try:
        frame = pd.read_csv(path, sep="\t", dtype=dtype)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise input_error(
            path, f"expected a tab-separated table of `wm-jax {command}` ({type(err).__name__})"
        ) from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise input_error(
            path, f"expected the columns {' '.join(columns)} of `wm-jax {command}`; {', '.join(missing)} missing"
        )
    if not len(frame):
        raise input_error(path, f"expected at least one row of `wm-jax {command}` results")
    return frame
