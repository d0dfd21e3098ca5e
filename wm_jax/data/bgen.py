"""BGEN genotypes (--bgen FILE [--sample FILE]): a decoder of BGEN v1.2/v1.3 (layout 2), with
uncompressed, zlib or zstd variant blocks and probabilities of any bit depth 1-32, phased or not,
into ALT dosages in plink2's unit (`wm_jax.data.source`). The interface is that of
`wm_jax.data.source`; tests check the decoder against cbgen and against plink2's import.

One pass over the variant headers at open records where each variant's block starts (the BGEN has
no index of its own); blocks are then read and decoded on demand, so memory holds the variant
table and the blocks in flight, never all dosages. Diploid, biallelic variants only; anything else
is an error naming the variant. Any truncation or inconsistency is an error naming the file.

Dosages as plink2 imports them: the expected count of the ALT allele, rounded to 1/16384; a sample
flagged missing has no dosage. `ref_first` (plink2's 'ref-first', the default here) reads the first
allele as REF; otherwise the last allele is REF ('ref-last', the order plink2 --export bgen writes).
"""

from __future__ import annotations

import concurrent.futures
import logging
import mmap
import os
import struct
import threading
from pathlib import Path

import deflate
import numpy as np
import pandas as pd
import zstandard

from wm_jax.data.dosages import concatenate_counts, counts_of_dosages, float_dosages, missing_dosage_index, padded_slots
from wm_jax.data.source import DOSAGE_UNIT, MISSING_DOSAGE, VariantCounts
from wm_jax.errors import input_error, require_file

log = logging.getLogger("wm_jax")

COUNT_CHUNK = 4096
DECODE_BATCH = 256  # 8-bit blocks decoded at once
DECODE_THREADS = 2
_INVALID = 65534  # `_dosage_table`'s mark of probabilities that sum past 1
_COMPRESSION = {0: "none", 1: "zlib", 2: "zstd"}
# The smallest variant of layout 2 this reader accepts: three empty identifiers (2 bytes each), the
# position (4), the allele count (2), two empty alleles (4 each) and an empty genotype block (4).
MIN_VARIANT_BYTES = 24


class _Truncated(Exception):
    """A read past the end of the file."""


_CORRUPT = (ValueError, struct.error, deflate.DeflateError, zstandard.ZstdError, _Truncated)


class _Cursor:
    """Little-endian reads from a byte buffer; a read past its end raises _Truncated."""

    def __init__(self, data, position: int) -> None:
        self.data, self.position = data, position

    def take(self, n: int) -> bytes:
        end = self.position + n
        if end > len(self.data):
            raise _Truncated
        chunk = self.data[self.position : end]
        self.position = end
        return chunk

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def text(self, length_fmt: str) -> str:
        (length,) = self.unpack(length_fmt)
        return self.take(length).decode("utf-8", errors="replace")


def _header(data, path: Path) -> tuple[int, int, int, int, bool, _Cursor]:
    """(offset of the first variant, variants, samples, compression, sample IDs present, cursor after the header)."""
    cursor = _Cursor(data, 0)
    try:
        offset, header_length, n_variants, n_samples = cursor.unpack("<IIII")
        magic = cursor.take(4)
    except (_Truncated, struct.error):
        raise input_error(path, "truncated BGEN header; expected a BGEN file")
    if magic not in (b"bgen", b"\0\0\0\0") or header_length < 20 or offset < header_length:
        raise input_error(path, "not a BGEN file (expected the magic number 'bgen' in its header)")
    try:
        cursor.take(header_length - 20)
        (flags,) = cursor.unpack("<I")
    except (_Truncated, struct.error):
        raise input_error(path, "truncated BGEN header; expected a BGEN file")
    layout, compression = (flags >> 2) & 0xF, flags & 3
    if layout != 2:
        raise input_error(path, f"BGEN layout {layout}; expected layout 2 (BGEN v1.2 or v1.3)")
    if compression not in _COMPRESSION:
        raise input_error(path, f"unknown BGEN compression code {compression}; expected 0 (none), 1 (zlib), 2 (zstd)")
    return offset, n_variants, n_samples, compression, bool(flags >> 31), cursor


def _embedded_samples(cursor: _Cursor, n_samples: int, path: Path) -> pd.DataFrame:
    """The BGEN's own sample IDs: IID, with FID "0" (as plink2 imports them)."""
    try:
        _, count = cursor.unpack("<II")
        if count != n_samples:
            raise input_error(path, f"sample block lists {count} samples, the header {n_samples}")
        iid = [cursor.text("<H") for _ in range(n_samples)]
    except (_Truncated, struct.error):
        raise input_error(path, "truncated sample identifier block")
    return pd.DataFrame({"fid": "0", "iid": iid})


def read_sample_file(path: str | os.PathLike, n_samples: int) -> pd.DataFrame:
    """An Oxford .sample file: header, type line, then ID_1 ID_2 ... (FID = ID_1, IID = ID_2)."""
    path = require_file(path, ".sample file")
    try:
        lines = [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise input_error(path, "expected an Oxford .sample file (UTF-8 text)")
    if len(lines) < 2 or lines[0][:2] != ["ID_1", "ID_2"]:
        raise input_error(path, "expected an Oxford .sample file (header ID_1 ID_2 ..., then a type line 0 0 ...)")
    rows = lines[2:]
    short = [i for i, row in enumerate(rows) if len(row) < 2]
    if short:
        raise input_error(path, f"line {short[0] + 3}: expected ID_1 ID_2")
    if len(rows) != n_samples:
        raise input_error(path, f"lists {len(rows)} samples; the BGEN has {n_samples}")
    table = pd.DataFrame({"fid": [r[0] for r in rows], "iid": [r[1] for r in rows]})
    if table.duplicated().any():
        row = table[table.duplicated()].iloc[0]
        raise input_error(path, f"duplicate sample ID {row.fid} {row.iid}; (FID, IID) pairs must be unique")
    return table


def _index_variants(data, start: int, n_variants: int, path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """Every variant's header (as a .bim-like table: first allele, last allele) and where its
    genotype block starts (at its length field). The headers have variable lengths, so this is one
    walk, kept to the fewest Python operations per variant."""
    u16, u32, size = struct.Struct("<H").unpack_from, struct.Struct("<I").unpack_from, len(data)
    room = max(size - start, 0) // MIN_VARIANT_BYTES
    if n_variants > room:  # checked before the offsets are allocated: a header's count is not trusted
        raise input_error(
            path,
            f"its header counts {n_variants} variants, but the {max(size - start, 0)} bytes after the header "
            f"hold at most {room}; expected a complete BGEN file",
        )
    rows, offsets, position = [], np.empty(n_variants, np.int64), start
    for i in range(n_variants):
        try:
            fields = []
            for _ in range(3):  # variant ID, rsID, chromosome
                (length,) = u16(data, position)
                fields.append(data[position + 2 : position + 2 + length])
                position += 2 + length
            bp, n_alleles = u32(data, position)[0], u16(data, position + 4)[0]
            position += 6
            alleles = []
            for _ in range(n_alleles):
                (length,) = u32(data, position)
                alleles.append(data[position + 4 : position + 4 + length])
                position += 4 + length
            offsets[i] = position
            position += 4 + u32(data, position)[0]
        except struct.error:
            position = size + 1
        if position > size:
            raise input_error(path, f"truncated: variant {i + 1} of {n_variants} ends past the end of the file")
        if n_alleles != 2:
            name = (fields[1] or fields[0]).decode("utf-8", errors="replace")
            raise input_error(path, f"variant {name} has {n_alleles} alleles; expected biallelic variants")
        rows.append((fields[2], fields[1] or fields[0], bp, alleles[0], alleles[1]))
    if position != size:
        raise input_error(
            path,
            f"{size - position} bytes follow variant {n_variants}, the last its header counts; expected the "
            "file to end there (a header that counts fewer variants than the file holds)",
        )
    table = pd.DataFrame(rows, columns=["chrom", "id", "pos", "first", "last"])
    for column in ("chrom", "id", "first", "last"):
        table[column] = table[column].str.decode("utf-8", errors="replace")
    table["chrom"] = table.chrom.str.replace(r"^0+(?=\d)", "", regex=True)  # UK Biobank's "01" is plink2's 1
    return table, offsets


def _bit_values(payload: bytes, start: int, count: int, bits: int) -> np.ndarray:
    """``count`` little-endian unsigned integers of ``bits`` bits packed from byte ``start``."""
    raw = np.frombuffer(payload, np.uint8, count=-(-count * bits // 8), offset=start)
    if bits == 8:
        return raw.astype(np.uint32)
    if bits == 16:
        return raw.view("<u2").astype(np.uint32)
    unpacked = np.unpackbits(raw, bitorder="little")[: count * bits].reshape(count, bits)
    return unpacked.astype(np.uint64) @ (np.uint64(1) << np.arange(bits, dtype=np.uint64))


def to_dosage_units(numerator: np.ndarray, top: int) -> np.ndarray:
    """Dosages numerator / top (allele counts, top = 2^bits - 1) in DOSAGE_UNIT, rounded as plink2
    2.00a3.5 rounds them on import: to nearest, but remainders of just over one half (e.g. 128/255)
    down. Checked against plink2's import of every 3- and 8-bit probability pair (tests)."""
    rounding = max((top - 3) // 2, 0)
    return ((numerator * DOSAGE_UNIT + rounding) // top).astype(np.uint16)


def dosage_table(ref_first: bool) -> np.ndarray:
    """ALT dosages (DOSAGE_UNIT) of every pair of 8-bit probabilities, indexed [phased, first + 256 second]
    (the pair read as one little-endian uint16), computed as `BgenDataset._decode` computes them;
    _INVALID where unphased probabilities sum past 1."""
    pair = np.arange(1 << 16, dtype=np.int64)
    first, second, top = pair & 255, pair >> 8, 255
    table = np.empty((2, 1 << 16), np.uint16)
    for phased in (0, 1):
        first_allele = (1 if phased else 2) * first + second
        units = to_dosage_units(2 * top - first_allele, top)
        table[phased] = units if ref_first else (2 * DOSAGE_UNIT - units).astype(np.uint16)
    table[0, first + second > top] = _INVALID
    return table


_ZSTD = threading.local()  # one zstd decompression context per thread (a context is not thread-safe)


def _decompress(block: bytes, compression: int, size: int) -> bytes:
    """A zlib block through libdeflate (the `deflate` package: 3.5x zlib's speed on 8-bit blocks of
    5,003 samples here, `benchmarks/results/gwas_speed_attempts.md`), a zstd block through zstandard,
    with this thread's context: making one per block took 145 us of a block's 150 here (8-bit
    blocks of 5,003 samples)."""
    if compression == 1:
        return deflate.zlib_decompress(block, size)
    if not hasattr(_ZSTD, "context"):
        _ZSTD.context = zstandard.ZstdDecompressor()
    return _ZSTD.context.decompress(block, max_output_size=size)


class BgenDataset:
    """A BGEN v1.2/v1.3 file (and its .sample), read as ALT dosages (uint16, 1/16384 units)."""

    block_dtype = np.uint16
    block_counting = "dosages"  # plink2's hard calls are those of the dosages

    def __init__(self, path: str | os.PathLike, sample: str | os.PathLike | None = None, ref_first: bool = True):
        self.name = str(path)
        self.path = self.variants_path = require_file(path, "BGEN file (from --bgen)")
        if self.path.stat().st_size == 0:
            raise input_error(self.path, "file is empty; expected a BGEN file")
        with open(self.path, "rb") as handle:
            self._data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        first_variant, n_variants, self.n_samples, self.compression, has_ids, cursor = _header(self._data, self.path)
        if sample is not None:
            self.samples = read_sample_file(sample, self.n_samples)
        elif has_ids:
            self.samples = _embedded_samples(cursor, self.n_samples, self.path)
        else:
            raise input_error(self.path, "holds no sample identifiers; expected --sample FILE")
        table, self._offsets = _index_variants(self._data, first_variant + 4, n_variants, self.path)
        ref, alt = (table["first"], table["last"]) if ref_first else (table["last"], table["first"])
        self.variants = pd.DataFrame(
            {"chrom": table.chrom, "id": table.id, "cm": 0.0, "pos": table.pos.astype(np.int64), "alt": alt, "ref": ref}
        )
        self.ref_first, self.n_variants = ref_first, n_variants
        self.n_slots = self.row_width = padded_slots(self.n_samples)
        self._block_head = np.frombuffer(struct.pack("<IHBB", self.n_samples, 2, 2, 2), np.uint8)
        self._dosage_table = dosage_table(ref_first)
        self._decoders = concurrent.futures.ThreadPoolExecutor(DECODE_THREADS)
        log.info(
            "%s: %d samples, %d variants, %s-compressed blocks",
            path,
            self.n_samples,
            n_variants,
            _COMPRESSION[self.compression],
        )

    def _payload(self, i: int) -> bytes:
        """Variant i's genotype block, decompressed."""
        cursor = _Cursor(self._data, int(self._offsets[i]))
        (length,) = cursor.unpack("<I")
        if self.compression == 0:
            return cursor.take(length)
        if length < 4:
            raise ValueError(f"block length {length}")
        (size,) = cursor.unpack("<I")
        if size > 10 + 9 * self.n_samples:  # 32-bit probabilities of biallelic diploid samples, the most
            raise ValueError(f"its header says {size} bytes decompressed, more than {self.n_samples} samples take")
        payload = _decompress(cursor.take(length - 4), self.compression, size)
        if len(payload) != size:
            raise ValueError(f"decompressed to {len(payload)} bytes, its header says {size}")
        return payload

    def _decode(self, i: int) -> np.ndarray:
        """Variant i's ALT dosages in DOSAGE_UNIT (n_samples,) uint16; the reason as ValueError when corrupt."""
        payload = self._payload(i)
        n, n_alleles, least, most = struct.unpack_from("<IHBB", payload, 0)
        if n != self.n_samples or n_alleles != 2:
            raise ValueError(f"its block has {n} samples and {n_alleles} alleles, the file {self.n_samples} and 2")
        if least != 2 or most != 2:
            raise ValueError(f"ploidy {least}-{most}; expected diploid samples")
        if len(payload) < 10 + n:
            raise ValueError(f"its {len(payload)}-byte block is too short for {n} samples")
        ploidy = np.frombuffer(payload, np.uint8, count=n, offset=8)
        phased, bits = payload[8 + n], payload[9 + n]
        if not 1 <= bits <= 32 or len(payload) < 10 + n + -(-2 * n * bits // 8):
            raise ValueError(f"{bits}-bit probabilities do not fit its {len(payload)}-byte block")
        values = _bit_values(payload, 10 + n, 2 * n, bits).reshape(n, 2).astype(np.int64)
        top = (1 << bits) - 1
        if not phased and (values.sum(axis=1) > top).any():
            raise ValueError("genotype probabilities sum past 1")
        first_allele = (1 if phased else 2) * values[:, 0] + values[:, 1]  # its dosage, in 1/top
        # plink2 rounds the second allele's dosage; with 'ref-last' the first allele is ALT.
        second = to_dosage_units(2 * top - first_allele, top)
        units = second if self.ref_first else (2 * DOSAGE_UNIT - second).astype(np.uint16)
        units[(ploidy & 0x80) != 0] = MISSING_DOSAGE
        return units

    def _dosages(self, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """ALT dosages of ``rows`` (rows, n_samples), into ``out`` if given, in batches on DECODE_THREADS
        threads (decompression and NumPy release the GIL)."""
        rows = np.asarray(rows)
        out = np.empty((len(rows), self.n_samples), np.uint16) if out is None else out
        starts = range(0, len(rows), DECODE_BATCH)
        batches = [(rows[s : s + DECODE_BATCH], out[s : s + DECODE_BATCH]) for s in starts]
        for _ in self._decoders.map(lambda batch: self._decode_batch(*batch), batches):
            pass
        return out

    def _decode_batch(self, rows: np.ndarray, out: np.ndarray) -> None:
        """8-bit blocks decoded at once; any other block (or a batch with a corrupt one, so that the
        error names it) one by one."""
        try:
            decoded = self._decode_8bit(rows, out)
        except _CORRUPT:
            decoded = False
        if not decoded:
            for j, i in enumerate(rows.tolist()):
                out[j] = self._checked_decode(i)

    def _decode_8bit(self, rows: np.ndarray, out: np.ndarray) -> bool:
        """Decode ``rows`` into ``out`` when every block holds 8-bit probabilities of this file's
        samples, through `_dosage_table`; False (``out`` unfinished) otherwise or if any is corrupt."""
        n = self.n_samples
        payloads = [self._payload(i) for i in rows.tolist()]
        if any(len(payload) != 10 + 3 * n for payload in payloads):
            return False
        block = np.frombuffer(b"".join(payloads), np.uint8).reshape(len(payloads), 10 + 3 * n)
        if not ((block[:, :8] == self._block_head).all() and (block[:, 9 + n] == 8).all()):
            return False
        phased, pairs = block[:, 8 + n] != 0, block[:, 10 + n :].view("<u2")
        out[:] = self._dosage_table[0][pairs]
        if phased.any():
            out[phased] = self._dosage_table[1][pairs[phased]]
        if (out == _INVALID).any():
            return False
        out[(block[:, 8 : 8 + n] & 0x80) != 0] = MISSING_DOSAGE
        return True

    def _checked_decode(self, i: int) -> np.ndarray:
        """`_decode`, its failure an input error naming the variant."""
        try:
            return self._decode(i)
        except _CORRUPT as err:
            reason = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
            raise input_error(
                self.path, f"variant {self.variants.id.iloc[i]} (number {i + 1}): corrupt or truncated ({reason})"
            ) from None

    def read_block(self, rows: np.ndarray) -> np.ndarray:
        block = np.zeros((len(rows), self.n_slots), np.uint16)
        self._dosages(rows, block[:, : self.n_samples])
        return block

    def missing_index(self, block: np.ndarray, width: int) -> np.ndarray:
        return missing_dosage_index(block, self.n_samples, width)

    def count(self, rows: np.ndarray) -> VariantCounts:
        """Dosage sums and plink2's hard calls (--hard-call-threshold 0.1) of ``rows``: each batch
        decoded and counted on the decoder threads."""

        def decode_and_count(batch: np.ndarray) -> VariantCounts:
            units = np.empty((len(batch), self.n_samples), np.uint16)
            self._decode_batch(batch, units)
            return counts_of_dosages(units)

        parts = []
        for start in range(0, len(rows), COUNT_CHUNK):
            chunk = np.asarray(rows[start : start + COUNT_CHUNK])
            batches = [chunk[s : s + DECODE_BATCH] for s in range(0, len(chunk), DECODE_BATCH)]
            parts.extend(self._decoders.map(decode_and_count, batches))
            self.release()
        return concatenate_counts(parts) if parts else counts_of_dosages(np.zeros((0, 0), np.uint16))

    def dosages(self, rows: np.ndarray) -> np.ndarray:
        """ALT dosages of ``rows`` (rows, samples) float32, NaN for missing dosages."""
        return float_dosages(self._dosages(np.asarray(rows)))

    def block_counts(self, block: np.ndarray, rows: np.ndarray) -> VariantCounts:
        """The counts of ``rows`` from their block of dosages, as read (`read_block`)."""
        return counts_of_dosages(block[:, : self.n_samples])

    def release(self) -> None:
        """Drop the pages read so far from this process (they stay in the page cache)."""
        if hasattr(mmap, "MADV_DONTNEED"):
            self._data.madvise(mmap.MADV_DONTNEED)
