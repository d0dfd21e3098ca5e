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
import weakref
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
        self._fd = os.open(self.path, os.O_RDONLY)
        weakref.finalize(self, os.close, self._fd)

    def raw(self, variant_indices: np.ndarray | slice) -> np.ndarray:
        """Raw bytes (len(indices), ceil(N/4)) of the given variants. A consecutive run is one
        positional read into a new array (no pages mapped, so nothing to fault in or release, and
        a file cut short since it was opened is an error naming it, not SIGBUS); scattered rows
        are copied from the memory map."""
        if isinstance(variant_indices, np.ndarray) and len(variant_indices) > 1:
            first, last = int(variant_indices[0]), int(variant_indices[-1])
            if last - first == len(variant_indices) - 1 and (np.diff(variant_indices) == 1).all():
                return self._read_run(first, len(variant_indices))
        return np.asarray(self._body[variant_indices])

    def _read_run(self, first: int, count: int) -> np.ndarray:
        """Rows first .. first + count - 1, read with pread (thread-safe: no shared file offset)."""
        out = np.empty((count, self.row_bytes), np.uint8)
        done = 0
        while done < out.nbytes:  # pread may return less than asked (signals, large reads)
            got = os.preadv(self._fd, [memoryview(out.reshape(-1))[done:]], 3 + first * self.row_bytes + done)
            if got == 0:
                raise input_error(
                    self.path,
                    f"ended at byte {3 + first * self.row_bytes + done} while reading variants {first + 1}-"
                    f"{first + count}: the .bed was truncated while it was being read",
                )
            done += got
        return out

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


_EVEN_BITS = np.uint64(0x5555555555555555)  # the low bit of each 2-bit code in a 64-bit word
# Rows are counted in tiles of about this many bytes, so that each tile's temporaries stay in cache
# (at N = 5,003 and 35,000: 8 ms per 16 MiB against 13 ms in one piece, one-off timing; 64 KiB
# tiles were slower).
COUNT_TILE_BYTES = 1 << 20


def _words(raw: np.ndarray) -> np.ndarray:
    """Raw .bed rows (variants x bytes) as 64-bit words (variants x ceil(bytes / 8)), each row
    zero-padded to whole words (a copy only where the rows are not already whole words): 32
    codes a word, so every pass below is an eighth as many elements as over bytes."""
    n_rows, width = raw.shape
    padded = -(-width // 8) * 8
    if padded == width and raw.flags.c_contiguous and raw.ctypes.data % 8 == 0:
        return raw.view(np.uint64)
    words = np.zeros((n_rows, padded), np.uint8)
    words[:, :width] = raw
    return words.view(np.uint64)


def _missing_bits(words: np.ndarray) -> np.ndarray:
    """Bit 2s of a word set where its code s is 01 (missing): the low bit set, the high bit clear."""
    high = words >> np.uint64(1)
    np.invert(high, out=high)
    high &= words
    high &= _EVEN_BITS
    return high


def _row_bits(words: np.ndarray) -> np.ndarray:
    """The set bits of each row of 64-bit words (int64), summed in uint32 (no row has 2^32 bits)."""
    return np.bitwise_count(words).sum(axis=1, dtype=np.uint32).astype(np.int64)


def _padding_slots(n_samples: int, words_per_row: int) -> np.uint64:
    """The bits of a row's last word that are padding codes, past the last sample (0 if none)."""
    used = n_samples - 32 * (words_per_row - 1)
    return np.uint64(0) if used >= 32 else np.uint64(((1 << 64) - 1) ^ ((1 << 2 * used) - 1))


def _code_bits(words: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: every set bit, the high bits (codes 10 and 11) and the codes 11."""
    every_bit = _row_bits(words)
    high = words >> np.uint64(1)
    high &= _EVEN_BITS
    high_bits = _row_bits(high)
    high &= words  # codes 11
    return every_bit, high_bits, _row_bits(high)


def bed_row_counts(raw: np.ndarray, n_samples: int) -> VariantCounts:
    """Genotype counts of raw .bed rows (variants x bytes) over their ``n_samples`` samples.

    Three popcounts of 64-bit words (32 codes each), straight on the bytes as read: with hi the
    high bit of each 2-bit code (the word shifted right by one, its even bits), popcount(hi) counts
    codes 10 (het) and 11 (hom REF), popcount(hi & word) codes 11, and popcount(word), every set
    bit, counts 01 (missing) and 10 once and 11 twice (in tiles of COUNT_TILE_BYTES). Hom ALT (00)
    is what remains. Padding codes past the last sample are 00; where a malformed last byte has
    others there, they are taken out again (counted on the last word alone).
    """
    rows_per_tile = max(1, COUNT_TILE_BYTES // max(1, raw.shape[1]))
    padding = _padding_slots(n_samples, -(-raw.shape[1] // 8))
    every_bit, high_bits, hom_ref = (np.empty(len(raw), np.int64) for _ in range(3))
    for first in range(0, len(raw), rows_per_tile):  # tiles that stay in cache through the passes below
        tile = slice(first, first + rows_per_tile)
        words = _words(raw[tile])
        every_bit[tile], high_bits[tile], hom_ref[tile] = _code_bits(words)
        if padding:
            extra = _code_bits(words[:, -1:] & padding)
            every_bit[tile] -= extra[0]
            high_bits[tile] -= extra[1]
            hom_ref[tile] -= extra[2]
    return counts_of_code_bits(every_bit, high_bits, hom_ref, n_samples)


def counts_of_code_bits(
    every_bit: np.ndarray, high_bits: np.ndarray, hom_ref: np.ndarray, n_samples: int
) -> VariantCounts:
    """VariantCounts from each row's three popcounts (`bed_row_counts`; also taken on the device,
    `wm_jax.data.device_counts`): set bits, high bits (codes 10 and 11) and codes 11."""
    every_bit, high_bits, hom_ref = (np.asarray(x, np.int64) for x in (every_bit, high_bits, hom_ref))
    het = high_bits - hom_ref
    missing = every_bit - high_bits - hom_ref
    return VariantCounts(n_samples - missing - het - hom_ref, het, hom_ref, missing)


def missing_call_index(raw: np.ndarray, n_samples: int, width: int) -> np.ndarray:
    """(B, width) sample positions of each variant's missing calls, in order, padded with
    4 * raw.shape[1], one past the last sample slot: the zero row of the kernel's tables.

    Computed on the host from the same raw bytes, with no per-byte lookup: the words that hold a
    missing call are found (`_missing_bits`), then their set bits are taken lowest first, one
    round per bit (a word of 32 codes rarely holds more than a few missing calls). A call's rank in
    its row is the missing calls of the row's earlier words plus the round that took it, so no
    sort is needed. The same index serves every phenotype group.
    """
    bits = _missing_bits(_words(raw))
    words_per_row = bits.shape[1]
    if words_per_row:  # padding slots are 00, never missing; a malformed last byte's are ignored
        bits[:, -1] &= ~_padding_slots(n_samples, words_per_row)
    per_row = _row_bits(bits)
    if len(per_row) and per_row.max() > width:
        raise ValueError(f"a variant has more than {width} missing calls in this block")
    flat = np.flatnonzero(bits)  # row-major: words in order within each variant
    found = bits.ravel()[flat]
    per_word = np.bitwise_count(found).astype(np.int64)
    rows = flat // words_per_row
    # the first slot of each call in the flat index: its row's start, plus the calls of the row's
    # earlier words (all earlier calls, less those of earlier rows)
    target = rows * width + (np.cumsum(per_word) - per_word) - (np.cumsum(per_row) - per_row)[rows]
    first_sample = (flat - rows * words_per_row) * 32
    index = np.full(raw.shape[0] * width, 4 * raw.shape[1], np.int32)
    one = np.uint64(1)
    while len(found):
        lowest = found & (~found + one)
        index[target] = first_sample + np.bitwise_count(lowest - one) // 2
        found &= found - one
        left = np.flatnonzero(found)
        found, target, first_sample = found[left], target[left] + 1, first_sample[left]
    return index.reshape(raw.shape[0], width)


class PlinkDataset:
    """A validated .bed/.bim/.fam triple; a genotype source (`wm_jax.data.source`) whose blocks
    are the raw .bed bytes, decoded on the device."""

    block_dtype = np.uint8
    block_counting = "bed"

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
