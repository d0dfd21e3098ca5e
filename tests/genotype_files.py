"""Test helpers: imputation-like genotype probabilities from hard calls, and a BGEN v1.2/v1.3
writer (layout 2) of any bit depth and compression, phased or not, with missing samples."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import zstandard


def imputed_probabilities(alt_calls: np.ndarray, rng: np.random.Generator, uncertain: float = 0.4) -> np.ndarray:
    """(M, N, 3) probabilities of 0, 1, 2 ALT copies: the hard call (NaN: missing) for most samples,
    blurred towards a random genotype distribution for a fraction ``uncertain`` of them, as an
    imputation server's output looks. Missing calls get uniform probabilities (the caller masks them)."""
    calls = np.nan_to_num(alt_calls, nan=1.0).astype(int)
    probs = np.eye(3)[calls]
    blur = rng.dirichlet(np.ones(3), size=calls.shape)
    weight = np.where(rng.random(calls.shape) < uncertain, rng.uniform(0.05, 0.9, calls.shape), 0.0)[..., None]
    return (1 - weight) * probs + weight * blur


def quantize(probs: np.ndarray, bits: int) -> np.ndarray:
    """(M, N, 2) stored integers of P(first allele homozygous), P(heterozygous), ``bits`` bits each,
    with the first allele REF (0 ALT copies). Rounded so that their sum never passes 2^bits - 1."""
    top = (1 << bits) - 1
    first = np.rint(probs[..., 0] * top)
    het = np.minimum(np.rint(probs[..., 1] * top), top - first)
    return np.stack([first, het], axis=-1).astype(np.uint64)


def _pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Little-endian bit packing of unsigned integers of ``bits`` bits each."""
    unpacked = ((values[:, None] >> np.arange(bits, dtype=np.uint64)) & np.uint64(1)).astype(np.uint8).ravel()
    return np.packbits(unpacked, bitorder="little").tobytes()


def _text(value: str, length_format: str) -> bytes:
    encoded = value.encode()
    return struct.pack(length_format, len(encoded)) + encoded


def write_bgen(
    path,
    stored: np.ndarray,
    bits: int,
    compression: int,
    variants: list[tuple[str, str, int, str, str]],
    sample_ids: list[str] | None = None,
    missing: np.ndarray | None = None,
    phased: bool = False,
) -> None:
    """A BGEN with the (M, N, 2) ``stored`` integers per variant and sample (`quantize`; phased: the
    two haplotypes' P(first allele)), ``variants`` as (chrom, id, pos, first allele, second allele),
    compression 0 (none), 1 (zlib) or 2 (zstd; BGEN v1.3), ``missing`` (M, N) samples flagged missing."""
    n_variants, n_samples, _ = stored.shape
    missing = np.zeros((n_variants, n_samples), bool) if missing is None else missing
    flags = compression | (2 << 2) | ((1 << 31) if sample_ids is not None else 0)
    header = struct.pack("<I", 20) + struct.pack("<II", n_variants, n_samples) + b"bgen" + struct.pack("<I", flags)
    samples = b""
    if sample_ids is not None:
        body = b"".join(_text(s, "<H") for s in sample_ids)
        samples = struct.pack("<II", 8 + len(body), n_samples) + body
    compressor = zstandard.ZstdCompressor()
    with open(path, "wb") as handle:
        handle.write(struct.pack("<I", len(header) + len(samples)) + header + samples)
        for i, (chrom, vid, pos, first, second) in enumerate(variants):
            handle.write(_text(vid, "<H") + _text(vid, "<H") + _text(chrom, "<H") + struct.pack("<IH", pos, 2))
            handle.write(_text(first, "<I") + _text(second, "<I"))
            ploidy = np.where(missing[i], 0x82, 2).astype(np.uint8).tobytes()
            payload = struct.pack("<IHBB", n_samples, 2, 2, 2) + ploidy + bytes([int(phased), bits])
            payload += _pack_bits(stored[i].reshape(-1), bits)
            if compression == 0:
                handle.write(struct.pack("<I", len(payload)) + payload)
                continue
            packed = zlib.compress(payload) if compression == 1 else compressor.compress(payload)
            handle.write(struct.pack("<II", len(packed) + 4, len(payload)) + packed)


def write_pgen(prefix, alt_calls: np.ndarray, fam, bim) -> None:
    """A hard-call .pgen/.pvar/.psam (pgenlib's writer, no plink2 needed) of ALT counts (M, N) with
    NaN missing, for the samples of ``fam`` and the variants of ``bim`` (wm_jax.data.plink tables)."""
    import pgenlib

    calls = np.where(np.isnan(alt_calls), -9, alt_calls).astype(np.int8)
    writer = pgenlib.PgenWriter(f"{prefix}.pgen".encode(), calls.shape[1], calls.shape[0], False)
    for row in calls:
        writer.append_biallelic(np.ascontiguousarray(row))
    writer.close()
    lines = ["#CHROM\tPOS\tID\tREF\tALT"] + [
        f"{c}\t{p}\t{i}\t{r}\t{a}" for c, p, i, r, a in zip(bim.chrom, bim.pos, bim.id, bim.ref, bim.alt)
    ]
    with open(f"{prefix}.pvar", "w") as handle:
        handle.write("\n".join(lines) + "\n")
    with open(f"{prefix}.psam", "w") as handle:
        handle.write("#FID\tIID\n" + "".join(f"{f}\t{i}\n" for f, i in zip(fam.fid, fam.iid)))
