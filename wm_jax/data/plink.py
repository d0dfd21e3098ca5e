"""PLINK 1 binary genotypes: validated .bim/.fam and a block reader of raw .bed bytes (pandas-plink,
the independent reference, checks both in the tests).

The .bed body is SNP-major: each variant takes ceil(N/4) bytes, 4 samples per byte, low bits first.
Codes (2 bits): 00 = two copies of the .bim 5th-column allele (ALT), 01 = missing,
10 = heterozygous, 11 = zero copies. We count the ALT allele (0, 1, 2) and mark missing calls.
"""

from __future__ import annotations

import logging
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from wm_jax.data.dosages import concatenate_counts
from wm_jax.data.source import VariantCounts
from wm_jax.errors import InputError, input_error, require_file

log = logging.getLogger("wm_jax")

BED_MAGIC = bytes([0x6C, 0x1B, 0x01])

# ALT dosage for each 2-bit code; NaN for missing.
CODE_TO_ALT_DOSAGE = np.array([2.0, np.nan, 1.0, 0.0], dtype=np.float32)
# For every byte value, the four 2-bit codes it holds (low bits = first sample), and their ALT dosages.
BYTE_CODES = (np.arange(256)[:, None] >> (2 * np.arange(4))[None, :]) & 3
BYTE_TO_ALT_DOSAGE = CODE_TO_ALT_DOSAGE[BYTE_CODES]


def release_pages(array: np.ndarray) -> None:
    """Drop the resident pages of a memory-mapped array from this process (MADV_DONTNEED). The
    mapping is shared, so the pages stay in the page cache and written ones still reach the file;
    a later read maps them back. Does nothing for an array that is not a memory map."""
    mapping = getattr(array, "_mmap", None)
    if hasattr(mmap, "MADV_DONTNEED") and isinstance(mapping, mmap.mmap):
        mapping.madvise(mmap.MADV_DONTNEED)


def bytes_per_variant(n_samples: int) -> int:
    return (n_samples + 3) // 4


@dataclass(frozen=True)
class PlinkFiles:
    prefix: Path

    @property
    def bed(self) -> Path:
        return Path(f"{self.prefix}.bed")

    @property
    def bim(self) -> Path:
        return Path(f"{self.prefix}.bim")

    @property
    def fam(self) -> Path:
        return Path(f"{self.prefix}.fam")


def _read_whitespace_table(path: Path, names: list[str], dtypes: dict[str, object]) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, sep=r"\s+", header=None, dtype=str, engine="c", keep_default_na=False, na_values=[])
    except pd.errors.EmptyDataError:
        raise input_error(path, "file is empty")
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise input_error(path, f"expected {len(names)} whitespace-separated columns ({err})")
    if table.shape[1] != len(names):
        raise input_error(path, f"expected {len(names)} whitespace-separated columns, found {table.shape[1]}")
    if table.isna().any().any():
        line = int(np.flatnonzero(table.isna().any(axis=1).to_numpy())[0]) + 1
        raise input_error(path, f"line {line}: expected {len(names)} columns")
    table.columns = names
    for column, dtype in dtypes.items():
        try:
            table[column] = table[column].astype(dtype)
        except ValueError:
            bad = pd.to_numeric(table[column], errors="coerce").isna().to_numpy()
            line = int(np.flatnonzero(bad)[0]) + 1
            raise input_error(
                path, f"line {line}: column {column} must be numeric, got {table[column].iloc[line - 1]!r}"
            )
    return table


def read_bim(path: str | os.PathLike) -> pd.DataFrame:
    """Variants: chrom, id, cm, pos, alt (5th column), ref (6th column)."""
    path = require_file(path, ".bim file")
    bim = _read_whitespace_table(path, ["chrom", "id", "cm", "pos", "alt", "ref"], {"cm": np.float64, "pos": np.int64})
    return bim


def read_fam(path: str | os.PathLike) -> pd.DataFrame:
    """Samples: fid, iid, father, mother, sex, phenotype (all as text but sex)."""
    path = require_file(path, ".fam file")
    fam = _read_whitespace_table(path, ["fid", "iid", "father", "mother", "sex", "phenotype"], {})
    duplicated = fam.duplicated(subset=["fid", "iid"])
    if duplicated.any():
        row = fam[duplicated].iloc[0]
        raise input_error(path, f"duplicate sample ID {row.fid} {row.iid}; (FID, IID) pairs must be unique")
    return fam


class BedReader:
    """Memory-mapped, validated reader of a SNP-major PLINK 1 .bed file, in blocks of variants."""

    def __init__(self, path: str | os.PathLike, n_samples: int, n_variants: int) -> None:
        self.path = require_file(path, ".bed file")
        self.n_samples = n_samples
        self.n_variants = n_variants
        self.row_bytes = bytes_per_variant(n_samples)
        size = self.path.stat().st_size
        with open(self.path, "rb") as handle:
            magic = handle.read(3)
        if len(magic) < 3 or magic[:2] != BED_MAGIC[:2]:
            raise input_error(self.path, "not a PLINK 1 .bed file (expected magic bytes 6c 1b)")
        if magic[2] != BED_MAGIC[2]:
            raise input_error(self.path, "sample-major .bed is not supported (expected SNP-major, third byte 01)")
        expected = 3 + n_variants * self.row_bytes
        if size != expected:
            raise input_error(
                self.path,
                f"size {size} bytes does not fit {n_variants} variants x {n_samples} samples "
                f"(expected 3 + {n_variants} * {self.row_bytes} = {expected}); "
                "the .bed is truncated or the .bim/.fam do not belong to it",
            )
        if n_variants == 0:
            self._body = np.zeros((0, self.row_bytes), np.uint8)
        else:
            self._body = np.memmap(self.path, dtype=np.uint8, mode="r", offset=3, shape=(n_variants, self.row_bytes))

    def raw(self, variant_indices: np.ndarray | slice) -> np.ndarray:
        """Raw bytes (len(indices), ceil(N/4)) of the given variants (a consecutive run in one
        sequential copy)."""
        if isinstance(variant_indices, np.ndarray) and len(variant_indices) > 1:
            first, last = int(variant_indices[0]), int(variant_indices[-1])
            if last - first == len(variant_indices) - 1 and (np.diff(variant_indices) == 1).all():
                return np.array(self._body[first : last + 1])
        return np.asarray(self._body[variant_indices])

    def release(self) -> None:
        """Drop the pages read so far from this process: streaming a .bed of any size then holds
        only the blocks in flight."""
        release_pages(self._body)

    def dosages(self, variant_indices: np.ndarray | slice) -> np.ndarray:
        """ALT dosages (variants x samples), float32 with NaN for missing calls."""
        return decode_alt_dosages(self.raw(variant_indices), self.n_samples)


def decode_alt_dosages(raw: np.ndarray, n_samples: int) -> np.ndarray:
    """Decode raw .bed rows (variants x bytes) into ALT dosages (variants x samples)."""
    decoded = BYTE_TO_ALT_DOSAGE[raw]  # (variants, bytes, 4)
    return decoded.reshape(raw.shape[0], -1)[:, :n_samples]


def encode_alt_dosages(dosages: np.ndarray) -> np.ndarray:
    """Encode ALT dosages (variants x samples; NaN or -1 = missing) into raw .bed rows."""
    dosages = np.asarray(dosages, dtype=np.float64)
    n_variants, n_samples = dosages.shape
    codes = np.full(dosages.shape, 1, np.uint8)
    codes[dosages == 2] = 0
    codes[dosages == 1] = 2
    codes[dosages == 0] = 3
    padded = np.zeros((n_variants, 4 * bytes_per_variant(n_samples)), np.uint8)
    padded[:, :n_samples] = codes
    return pack_bed_codes(padded)


def pack_bed_codes(codes: np.ndarray) -> np.ndarray:
    """2-bit .bed codes (variants x sample slots, a multiple of 4) uint8 -> raw .bed rows, 4 samples
    per byte from the low bits: the four codes of a little-endian 32-bit word gathered into its low
    byte by shifts."""
    words = np.ascontiguousarray(codes, np.uint8).view("<u4")
    return ((words | words >> 6 | words >> 12 | words >> 18) & 0xFF).astype(np.uint8)


def write_bed(path: str | os.PathLike, raw_rows_iter) -> None:
    """Write a SNP-major .bed from an iterable of raw row blocks."""
    with open(path, "wb") as handle:
        handle.write(BED_MAGIC)
        for rows in raw_rows_iter:
            handle.write(np.ascontiguousarray(rows, dtype=np.uint8).tobytes())


def count_genotypes(bed, variant_indices: np.ndarray, chunk: int = 4096) -> VariantCounts:
    """Genotype counts over all samples of the .bed, for the given variants (`bed_row_counts`
    chunk by chunk; the GWAS counts the blocks it streams instead)."""
    parts = []
    for start in tqdm(
        range(0, len(variant_indices), chunk),
        desc="genotype counts",
        unit="block",
        disable=len(variant_indices) < 50 * chunk,
        mininterval=1.0,
    ):
        parts.append(bed_row_counts(bed.raw(variant_indices[start : start + chunk]), bed.n_samples))
        bed.release()
    return concatenate_counts(parts) if parts else bed_row_counts(np.zeros((0, bed.row_bytes), np.uint8), 0)


def bed_row_counts(raw: np.ndarray, n_samples: int) -> VariantCounts:
    """Genotype counts of raw .bed rows (variants x bytes) over their ``n_samples`` samples.

    With lo the low and hi the high bit of each 2-bit code (masks 0x55 of the byte and of the byte
    shifted right by one), popcount(lo) counts codes 01 (missing) and 11 (hom REF), popcount(hi)
    codes 10 (het) and 11, popcount(lo & hi) codes 11: three popcounts per byte, straight on the
    bytes as read. Hom ALT (00) is what remains; padding codes past the last sample are 00 and
    only change that remainder.
    """
    lo = raw & np.uint8(0x55)
    hi = (raw >> 1) & np.uint8(0x55)
    low_bits = np.bitwise_count(lo).sum(axis=1, dtype=np.int64)
    high_bits = np.bitwise_count(hi).sum(axis=1, dtype=np.int64)
    hom_ref = np.bitwise_count(lo & hi).sum(axis=1, dtype=np.int64)
    missing, het = low_bits - hom_ref, high_bits - hom_ref
    return VariantCounts(n_samples - missing - het - hom_ref, het, hom_ref, missing)


def _missing_slot_bits() -> np.ndarray:
    """For every .bed byte, bit s set where its sample slot s holds a missing call (code 01)."""
    codes = np.arange(256)[:, None] >> (2 * np.arange(4))[None, :] & 3
    return ((codes == 1) << np.arange(4)).sum(axis=1).astype(np.uint8)


_MISSING_SLOT_BITS = _missing_slot_bits()


def missing_call_index(raw: np.ndarray, n_samples: int, width: int) -> np.ndarray:
    """(B, width) sample positions of each variant's missing calls, padded with 4 * raw.shape[1],
    one past the last sample slot: the zero row of the kernel's tables.

    Computed on the host from the same raw bytes: one lookup per byte gives the byte's missing
    slots as bits; missing calls are rare, so only the few flagged bytes are expanded. The same
    index serves every phenotype group.
    """
    flags = np.take(_MISSING_SLOT_BITS, raw)
    flagged = np.flatnonzero(flags)  # row-major: samples stay in order within each variant
    bits = (flags.ravel()[flagged][:, None] >> np.arange(4, dtype=np.uint8)) & 1
    hit, slot = np.nonzero(bits)
    rows, byte_cols = np.divmod(flagged[hit], raw.shape[1])
    samples = byte_cols * 4 + slot
    keep = samples < n_samples
    rows, samples = rows[keep], samples[keep]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows)
    if len(rank) and rank.max() >= width:
        raise ValueError(f"a variant has more than {width} missing calls in this block")
    index = np.full((raw.shape[0], width), 4 * raw.shape[1], np.int32)
    index[rows, rank] = samples
    return index


class PlinkDataset:
    """A validated .bed/.bim/.fam triple; a genotype source (`wm_jax.data.source`) whose blocks
    are the raw .bed bytes, decoded on the device."""

    block_dtype = np.uint8

    def __init__(self, prefix: str | os.PathLike) -> None:
        self.files = PlinkFiles(Path(prefix))
        for path, what in ((self.files.bed, ".bed"), (self.files.bim, ".bim"), (self.files.fam, ".fam")):
            require_file(path, f"{what} file (from --bfile {prefix})")
        self.bim = read_bim(self.files.bim)
        self.fam = read_fam(self.files.fam)
        if self.bim["id"].duplicated().any():
            dup = self.bim["id"][self.bim["id"].duplicated()].iloc[0]
            log.warning("%s: variant ID %s appears more than once", self.files.bim, dup)
        self.bed = BedReader(self.files.bed, len(self.fam), len(self.bim))
        self.name, self.variants_path = str(prefix), self.files.bim
        log.info("%s: %d samples, %d variants", prefix, len(self.fam), len(self.bim))

    @property
    def variants(self) -> pd.DataFrame:
        return self.bim

    @property
    def samples(self) -> pd.DataFrame:
        return self.fam

    @property
    def row_width(self) -> int:
        return self.bed.row_bytes

    @property
    def n_slots(self) -> int:
        return 4 * self.bed.row_bytes

    def read_block(self, rows: np.ndarray) -> np.ndarray:
        return self.bed.raw(rows)

    def missing_index(self, block: np.ndarray, width: int) -> np.ndarray:
        return missing_call_index(block, self.n_samples, width)

    def count(self, rows: np.ndarray) -> VariantCounts:
        return count_genotypes(self.bed, rows)

    def block_counts(self, block: np.ndarray, rows: np.ndarray) -> VariantCounts:
        """The counts of ``rows`` from their block, as read (`read_block`)."""
        return bed_row_counts(block, self.n_samples)

    def dosages(self, rows: np.ndarray) -> np.ndarray:
        """ALT dosages of ``rows`` (rows, samples) float32, NaN for missing calls."""
        return self.bed.dosages(np.asarray(rows))

    def release(self) -> None:
        self.bed.release()

    @property
    def n_samples(self) -> int:
        return len(self.fam)

    @property
    def n_variants(self) -> int:
        return len(self.bim)


__all__ = [
    "BedReader",
    "count_genotypes",
    "missing_call_index",
    "PlinkDataset",
    "InputError",
    "decode_alt_dosages",
    "encode_alt_dosages",
    "pack_bed_codes",
    "read_bim",
    "read_fam",
    "write_bed",
]
