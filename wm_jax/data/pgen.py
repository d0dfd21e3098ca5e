"""PLINK 2 genotypes (--pfile PREFIX: .pgen/.pvar/.psam), read through `pgenlib`. The interface is
that of `wm_jax.data.source`.

A .pgen whose header allows no dosage (4-bit variant record types, as `plink2 --make-pgen` writes
from a .bed or any hard-call data, or fixed-width hard calls) is read as hard calls and packed into
.bed bytes, so it takes the .bed path on the device: a quarter of the bytes, and pgenlib's own
genotype counts for QC. Any other .pgen is read as ALT dosages in plink2's unit."""

from __future__ import annotations

import logging
import os
import struct
import threading
from pathlib import Path

import numpy as np
import pandas as pd

from wm_jax.data.dosages import concatenate_counts, dosage_counts, float_dosages, missing_dosage_index, padded_slots
from wm_jax.data.plink import bed_row_counts, missing_call_index, pack_bed_codes
from wm_jax.data.source import DOSAGE_UNIT, MISSING_DOSAGE, VariantCounts
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


def hard_calls_only(pgen_path: Path) -> bool:
    """Whether the .pgen's header rules out dosages: fixed-width hard calls (storage mode 0x11), or
    variable-width records (0x10) with 4-bit record types (header control byte, bits 0-3 below
    4), which have no room for the dosage flags. Anything else may hold dosages."""
    with open(pgen_path, "rb") as handle:
        header = handle.read(12)
    if len(header) < 12 or header[:2] != b"\x6c\x1b":
        return False  # pgenlib names the problem when it opens the file
    return header[2] == 0x11 or (header[2] == 0x10 and (header[11] & 15) < 4)


def check_header_counts(pgen_path: Path, n_variants: int, n_samples: int) -> None:
    """The variant and sample counts of a .pgen header (storage modes 0x10 and 0x11, which carry them)
    against the .pvar, the .psam and the file's size, before pgenlib allocates by them. A variable-width
    file holds at least a 4-bit record type and a 1-byte record length per variant, a fixed-width
    one exactly 2 bits per sample per variant."""
    with open(pgen_path, "rb") as handle:
        header = handle.read(12)
    if len(header) < 12 or header[:2] != b"\x6c\x1b" or header[2] not in (0x10, 0x11):
        return  # pgenlib names the problem, or reads a PLINK 1 .bed-mode file (no counts in it)
    variants, samples = struct.unpack_from("<II", header, 3)
    for counted, listed, where in (
        (variants, n_variants, "variants, the .pvar"),
        (samples, n_samples, "samples, the .psam"),
    ):
        if counted != listed:
            raise input_error(pgen_path, f"its header counts {counted} {where} {listed}; expected the same")
    size = pgen_path.stat().st_size
    least = 12 + (variants * -(-samples // 4) if header[2] == 0x11 else variants + (variants + 1) // 2)
    if size < least:
        raise input_error(
            pgen_path, f"truncated: {size} bytes, fewer than the {least} its header needs; expected a whole .pgen"
        )


def pack_bed_bytes(calls: np.ndarray, n_slots: int) -> np.ndarray:
    """pgenlib hard calls (rows, samples) int8 (0, 1, 2 ALT alleles; -9 missing) -> .bed bytes
    (rows, n_slots / 4), 4 samples per byte from the low bits; padding slots are 00.

    The kernel's .bed decoder reads 00 as 2 ALT alleles, 10 as 1, 11 as 0 and 01 as missing. With
    c = call & 3 (missing: -9 & 3 = 3), that code is (3 - c) ^ (c >> 1): integer arithmetic on the reader
    thread's hot path, where `encode_alt_dosages`'s float comparisons are too slow; both share
    `pack_bed_codes`."""
    c = np.zeros((calls.shape[0], n_slots), np.uint8)
    c[:, : calls.shape[1]] = calls.view(np.uint8) & 3
    codes = (3 - c) ^ (c >> 1)
    codes[:, calls.shape[1] :] = 0
    return pack_bed_codes(codes)


class PgenDataset:
    """A validated .pgen/.pvar/.psam triple, read as .bed bytes (hard-call files) or as ALT dosages
    (uint16, 1/16384 units)."""

    def __init__(self, prefix: str | os.PathLike, as_dosages: bool = False) -> None:
        """``as_dosages`` reads dosages even where the header rules them out (the tests compare the
        two paths)."""
        self.name = str(prefix)
        self.pgen_path, self.variants_path = Path(f"{prefix}.pgen"), Path(f"{prefix}.pvar")
        samples_path = Path(f"{prefix}.psam")
        for path, what in ((self.pgen_path, ".pgen"), (self.variants_path, ".pvar"), (samples_path, ".psam")):
            require_file(path, f"{what} file (from --pfile {prefix})")
        self.variants = read_pvar(self.variants_path)
        self.samples = read_psam(samples_path)
        self.n_samples, self.n_variants = len(self.samples), len(self.variants)
        self.n_slots = padded_slots(self.n_samples)
        check_header_counts(self.pgen_path, self.n_variants, self.n_samples)
        self._readers = threading.local()  # one pgenlib reader per thread: a PgenReader is not thread-safe
        try:
            file_variants = self._reader.get_variant_ct()
        except RuntimeError as err:
            raise input_error(
                self.pgen_path, f"truncated or corrupt, or not a .pgen of {self.n_samples} samples ({_reason(err)})"
            )
        if file_variants != self.n_variants:
            raise input_error(
                self.pgen_path, f"holds {file_variants} variants, the .pvar {self.n_variants}; expected the same"
            )
        self.hard_calls = not as_dosages and hard_calls_only(self.pgen_path)
        self.block_dtype = np.uint8 if self.hard_calls else np.uint16
        self.row_width = self.n_slots // 4 if self.hard_calls else self.n_slots
        # a dosage .pgen stores its hard calls apart from the dosages: its counts need more than the block
        self.block_counting = "bed" if self.hard_calls else None
        log.info(
            "%s: %d samples, %d variants, %s",
            prefix,
            self.n_samples,
            self.n_variants,
            "hard calls (read as .bed bytes)" if self.hard_calls else "dosages",
        )

    @property
    def _reader(self):
        """This thread's pgenlib reader of the .pgen (opened on first use). The readers of the
        stream (`wm_jax.data.readahead`) read blocks on several threads at once; one shared
        PgenReader gave them each other's state ("read_range() error 6" on an intact file, in
        about one run in three of `test_dosage_source_gives_the_bed_s_scores`)."""
        reader = getattr(self._readers, "reader", None)
        if reader is None:
            import pgenlib

            reader = self._readers.reader = pgenlib.PgenReader(bytes(self.pgen_path), raw_sample_ct=self.n_samples)
        return reader

    def _read(self, read_list: str, rows: np.ndarray, dtype) -> np.ndarray:
        """(len(rows), n_samples) ``dtype`` from one of pgenlib's list readers (by name); a corrupt
        file is an InputError."""
        values = np.empty((len(rows), self.n_samples), dtype)
        try:
            getattr(self._reader, read_list)(np.asarray(rows, np.uint32), values)
        except RuntimeError as err:
            raise input_error(self.pgen_path, f"truncated or corrupt ({_reason(err)})")
        return values

    def _dosages(self, rows: np.ndarray) -> np.ndarray:
        """ALT dosages of ``rows`` in DOSAGE_UNIT (len(rows), n_samples) uint16."""
        values = self._read("read_dosages_list", rows, np.float32)
        units = np.rint(values * DOSAGE_UNIT)
        return np.where(values < 0, MISSING_DOSAGE, units).astype(np.uint16)

    def _hard_calls(self, rows: np.ndarray) -> np.ndarray:
        """pgenlib's hard calls of ``rows`` (len(rows), n_samples) int8: ALT alleles, -9 missing."""
        return self._read("read_list", rows, np.int8)

    def read_block(self, rows: np.ndarray) -> np.ndarray:
        if self.hard_calls:
            return pack_bed_bytes(self._hard_calls(rows), self.n_slots)
        block = np.zeros((len(rows), self.n_slots), np.uint16)
        if len(rows):
            block[:, : self.n_samples] = self._dosages(rows)
        return block

    def missing_index(self, block: np.ndarray, width: int) -> np.ndarray:
        if self.hard_calls:
            return missing_call_index(block, self.n_samples, width)
        return missing_dosage_index(block, self.n_samples, width)

    def count(self, rows: np.ndarray) -> VariantCounts:
        """Hard-call counts (the .pgen's hard calls) and, for dosage files, dosage sums of ``rows``."""
        if self.hard_calls:
            return self._count_hard_calls(rows)
        parts = []
        for start in range(0, len(rows), COUNT_CHUNK):
            chunk = np.asarray(rows[start : start + COUNT_CHUNK], np.uint32)
            parts.append(dosage_counts(self._dosages(chunk), self._hard_calls(chunk)))
        return concatenate_counts(parts) if parts else dosage_counts(np.zeros((0, 0), np.uint16), np.zeros((0, 0)))

    def dosages(self, rows: np.ndarray) -> np.ndarray:
        """ALT dosages of ``rows`` (rows, samples) float32, NaN where missing: the hard calls of a
        hard-call file, else the dosages."""
        rows = np.asarray(rows)
        if self.hard_calls:
            calls = self._hard_calls(rows).astype(np.float32)
            return np.where(calls < 0, np.nan, calls).astype(np.float32)
        return float_dosages(self._dosages(rows))

    def block_counts(self, block: np.ndarray, rows: np.ndarray) -> VariantCounts:
        """The counts of ``rows`` from their block, as read (`read_block`): popcounts of the .bed
        bytes of a hard-call file; for dosages, their sums and the .pgen's hard calls (read again:
        a .pgen stores them apart from the dosages)."""
        if self.hard_calls:
            return bed_row_counts(block, self.n_samples)
        return dosage_counts(block[:, : self.n_samples], self._hard_calls(rows))

    def _count_hard_calls(self, rows: np.ndarray) -> VariantCounts:
        """pgenlib's genotype counts (0, 1, 2 ALT alleles, missing) of each of ``rows``."""
        counts = np.empty((len(rows), 4), np.uint32)
        try:
            for i, row in enumerate(np.asarray(rows, np.uint32).tolist()):
                self._reader.count(row, counts[i])
        except RuntimeError as err:
            raise input_error(self.pgen_path, f"truncated or corrupt ({_reason(err)})")
        counts = counts.astype(np.int64)
        return VariantCounts(hom_alt=counts[:, 2], het=counts[:, 1], hom_ref=counts[:, 0], missing=counts[:, 3])

    def release(self) -> None:
        """Nothing is mapped: pgenlib reads through its own buffers."""


def _reason(err: Exception) -> str:
    """pgenlib's message on one line."""
    text = err.args[0] if err.args else str(err)
    text = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    return " ".join(text.split()) or type(err).__name__
