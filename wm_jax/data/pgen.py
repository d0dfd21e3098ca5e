"""PLINK 2 genotypes (--pfile PREFIX: .pgen/.pvar/.psam), read through `pgenlib` as ALT dosages in
plink2's unit (hard-call-only files give dosages 0, 1, 2). The interface is that of
`wm_jax.data.genotypes`."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from wm_jax.data.genotypes import (
    DOSAGE_UNIT,
    MISSING_DOSAGE,
    VariantCounts,
    concatenate_counts,
    dosage_counts,
    missing_dosage_index,
    padded_slots,
)
from wm_jax.errors import input_error, require_file

log = logging.getLogger("wm_jax")

COUNT_CHUNK = 4096  # variants per read while counting genotypes


def _header_lines(path: Path, what: str) -> tuple[int, list[str] | None]:
    """The number of '##' lines at the top and the header's column names (None: no '#' header)."""
    skipped = 0
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("##"):
                    skipped += 1
                    continue
                if line.startswith("#"):
                    return skipped, line.rstrip("\r\n").split()
                return skipped, None
    except UnicodeDecodeError:
        raise input_error(path, f"expected a {what} (UTF-8 text)")
    raise input_error(path, f"file is empty; expected a {what}")


def _read_text_table(path: Path, skip: int, names: list[str], what: str) -> pd.DataFrame:
    try:
        table = pd.read_csv(
            path, sep=r"\s+", header=None, skiprows=skip, names=names, dtype=str, keep_default_na=False, na_values=[]
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise input_error(path, f"expected a {what} with columns {' '.join(names)} ({type(err).__name__})")
    if table.isna().any().any():
        line = skip + 1 + int(np.flatnonzero(table.isna().any(axis=1).to_numpy())[0]) + 1
        raise input_error(path, f"line {line}: expected {len(names)} columns")
    return table


def read_pvar(path: str | os.PathLike) -> pd.DataFrame:
    """Variants of a .pvar (or a .bim-like .pvar without header): chrom, id, cm, pos, alt, ref."""
    path = require_file(path, ".pvar file")
    skipped, header = _header_lines(path, ".pvar")
    if header is None:  # PLINK 1 .bim layout
        table = _read_text_table(path, skipped, ["chrom", "id", "cm", "pos", "alt", "ref"], ".pvar")
    else:
        names = [h.lstrip("#").lower() for h in header]
        if names[:5] != ["chrom", "pos", "id", "ref", "alt"]:
            raise input_error(path, f"expected a header #CHROM POS ID REF ALT, found {' '.join(header[:5])}")
        table = _read_text_table(path, skipped + 1, names, ".pvar")
        table["cm"] = table["cm"] if "cm" in table else "0"
    table = table[["chrom", "id", "cm", "pos", "alt", "ref"]].copy()
    first = skipped + 1 + (header is not None)
    for column, dtype in (("pos", np.int64), ("cm", np.float64)):
        values = pd.to_numeric(table[column], errors="coerce")
        if values.isna().any():
            line = first + int(np.flatnonzero(values.isna().to_numpy())[0])
            raise input_error(path, f"line {line}: column {column.upper()} must be numeric")
        table[column] = values.astype(dtype)
    multi = table.alt.str.contains(",", regex=False).to_numpy()
    if multi.any():
        line = first + int(np.flatnonzero(multi)[0])
        raise input_error(
            path,
            f"line {line}: multiallelic variant {table.id.iloc[line - first]}; expected biallelic variants "
            "(split them, e.g. plink2 --make-pgen multiallelics=-)",
        )
    return table.reset_index(drop=True)


def read_psam(path: str | os.PathLike) -> pd.DataFrame:
    """Samples of a .psam (#FID IID ... or #IID ...; FID "0" without one, as plink2) or of a .fam."""
    path = require_file(path, ".psam file")
    skipped, header = _header_lines(path, ".psam")
    if header is None or header[0].lstrip("#").upper() not in ("FID", "IID"):
        table = _read_text_table(path, skipped, ["fid", "iid", "father", "mother", "sex", "phenotype"], ".psam")
    else:
        names = [h.lstrip("#").lower() for h in header]
        table = _read_text_table(path, skipped + 1, names, ".psam")
        if "fid" not in table:
            table.insert(0, "fid", "0")
    table = table.reset_index(drop=True)
    duplicated = table.duplicated(subset=["fid", "iid"])
    if duplicated.any():
        row = table[duplicated].iloc[0]
        raise input_error(path, f"duplicate sample ID {row.fid} {row.iid}; (FID, IID) pairs must be unique")
    return table


class PgenDataset:
    """A validated .pgen/.pvar/.psam triple, read as ALT dosages (uint16, 1/16384 units)."""

    block_dtype = np.uint16

    def __init__(self, prefix: str | os.PathLike) -> None:
        import pgenlib

        self.name = str(prefix)
        self.pgen_path, self.variants_path = Path(f"{prefix}.pgen"), Path(f"{prefix}.pvar")
        samples_path = Path(f"{prefix}.psam")
        for path, what in ((self.pgen_path, ".pgen"), (self.variants_path, ".pvar"), (samples_path, ".psam")):
            require_file(path, f"{what} file (from --pfile {prefix})")
        self.variants = read_pvar(self.variants_path)
        self.samples = read_psam(samples_path)
        self.n_samples, self.n_variants = len(self.samples), len(self.variants)
        self.n_slots = self.row_width = padded_slots(self.n_samples)
        try:
            self._reader = pgenlib.PgenReader(bytes(self.pgen_path), raw_sample_ct=self.n_samples)
            file_variants = self._reader.get_variant_ct()
        except RuntimeError as err:
            raise input_error(
                self.pgen_path, f"truncated or corrupt, or not a .pgen of {self.n_samples} samples ({_reason(err)})"
            )
        if file_variants != self.n_variants:
            raise input_error(
                self.pgen_path, f"holds {file_variants} variants, the .pvar {self.n_variants}; expected the same"
            )
        log.info("%s: %d samples, %d variants", prefix, self.n_samples, self.n_variants)

    def _dosages(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """ALT dosages of ``rows`` in DOSAGE_UNIT (len(rows), n_samples) uint16."""
        values = np.empty((len(rows), self.n_samples), np.float32)
        try:
            self._reader.read_dosages_list(np.asarray(rows, np.uint32), values)
        except RuntimeError as err:
            raise input_error(self.pgen_path, f"truncated or corrupt ({_reason(err)})")
        units = np.rint(values * DOSAGE_UNIT)
        return np.where(values < 0, MISSING_DOSAGE, units).astype(np.uint16)

    def read_block(self, rows: np.ndarray) -> np.ndarray:
        block = np.zeros((len(rows), self.n_slots), np.uint16)
        if len(rows):
            block[:, : self.n_samples] = self._dosages(rows)
        return block

    def missing_index(self, block: np.ndarray, width: int) -> np.ndarray:
        return missing_dosage_index(block, self.n_samples, width)

    def count(self, rows: np.ndarray) -> VariantCounts:
        """Hard-call counts (the .pgen's hard calls) and dosage sums of ``rows``."""
        parts = []
        for start in range(0, len(rows), COUNT_CHUNK):
            chunk = np.asarray(rows[start : start + COUNT_CHUNK], np.uint32)
            calls = np.empty((len(chunk), self.n_samples), np.int8)
            try:
                self._reader.read_list(chunk, calls)
            except RuntimeError as err:
                raise input_error(self.pgen_path, f"truncated or corrupt ({_reason(err)})")
            parts.append(dosage_counts(self._dosages(chunk), calls))
        return concatenate_counts(parts) if parts else dosage_counts(np.zeros((0, 0), np.uint16), np.zeros((0, 0)))

    def release(self) -> None:
        """Nothing is mapped: pgenlib reads through its own buffers."""


def _reason(err: Exception) -> str:
    """pgenlib's message on one line."""
    text = err.args[0] if err.args else str(err)
    text = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    return " ".join(text.split()) or type(err).__name__
