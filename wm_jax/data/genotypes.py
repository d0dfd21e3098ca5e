"""Genotype sources of `wm-jax gwas`: PLINK 1 .bed (--bfile), PLINK 2 .pgen (--pfile) and BGEN
(--bgen), behind one narrow interface that the GWAS engine streams from.

A source has:
  samples          DataFrame fid, iid (the .fam, .psam or .sample; FID "0" where the file has none,
                   as plink2 reads it)
  variants         DataFrame chrom, id, cm, pos, alt, ref (the .bim, .pvar or the BGEN's variant headers)
  variants_path    the file that lists the variants (named in errors)
  name             how the user named the input (the --bfile prefix, --pfile prefix or --bgen file)
  n_slots          sample slots per row of a block (the samples, padded to a multiple of 4)
  block_dtype      uint8 (.bed: 4 hard calls per byte, decoded on the device) or uint16 (dosages)
  row_width        entries per row of a block: n_slots / 4 bytes (.bed) or n_slots dosages
  read_block(rows) (len(rows), row_width) block_dtype: what goes to the device
  missing_index(block, width) (rows, width) int32 sample slots of each row's missing calls, padded
                   with n_slots (the kernel's zero row)
  count(rows)      VariantCounts for QC and the A1 rule
  block_counts(block, rows) VariantCounts of rows from their block as read (the GWAS's one pass)
  dosages(rows)    (rows, samples) float32 ALT dosages, NaN missing (LD for clumping)
  release()        drop the pages read so far (memory flat in the number of variants)

Dosages travel as uint16 in plink2's own unit, 1/16384 of an allele (0..32768; MISSING_DOSAGE is a
missing dosage). That is the precision plink2 keeps internally (its .pgen stores dosages so, and
it rounds BGEN probabilities to it on import), so the device sees exactly the dosages that
`plink2 --glm` regresses on: same bytes as float16, which cannot hold them (float16 keeps 1/1024
between 1 and 2), and uint8 with a scale cannot hold the 511 dosage levels of an 8-bit BGEN.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np

DOSAGE_UNIT = 16384  # plink2's dosage unit: 1/16384 of an allele
MISSING_DOSAGE = np.uint16(0xFFFF)
HARD_CALL_THRESHOLD = 0.1  # plink2's default --hard-call-threshold


@dataclass
class VariantCounts:
    """Per variant: hard-call genotype counts (ALT homozygotes, heterozygotes, REF homozygotes,
    missing calls) and, for dosage data, the ALT dosage summed over the samples that have a dosage
    and the number of missing dosages (None: the hard calls are the dosages, as in a .bed)."""

    hom_alt: np.ndarray
    het: np.ndarray
    hom_ref: np.ndarray
    missing: np.ndarray
    alt_dosage: np.ndarray | None = None
    dosage_missing: np.ndarray | None = None

    @property
    def observed(self) -> np.ndarray:
        """Samples with a hard call."""
        return self.hom_alt + self.het + self.hom_ref

    @property
    def alt_count(self) -> np.ndarray:
        """ALT alleles over the samples with a dosage (the allele count plink2's --maf/--mac use)."""
        return 2 * self.hom_alt + self.het if self.alt_dosage is None else self.alt_dosage

    @property
    def dosage_observed(self) -> np.ndarray:
        """Samples with a dosage (those the regression uses)."""
        return self.observed if self.dosage_missing is None else self.observed + self.missing - self.dosage_missing

    @property
    def missing_dosages(self) -> np.ndarray:
        """Missing dosages: the samples the kernel's missing-call correction removes."""
        return self.missing if self.dosage_missing is None else self.dosage_missing


@dataclass(frozen=True)
class GenotypeInput:
    """Which genotypes `wm-jax gwas` reads: exactly one of --bfile, --pfile, --bgen (with --sample)."""

    kind: str  # "bfile", "pfile" or "bgen"
    path: str
    sample: str | None = None  # --sample for --bgen
    bgen_ref_first: bool = True  # the BGEN's first allele is REF (plink2's 'ref-first'); else the last

    def describe(self) -> str:
        """The command-line form, for the log."""
        text = f"--{self.kind} {self.path}"
        if self.kind == "bgen":
            text += f" {'ref-first' if self.bgen_ref_first else 'ref-last'}"
        return text + (f" --sample {self.sample}" if self.sample else "")


def open_genotypes(source: GenotypeInput | str | os.PathLike):
    """The genotype source for ``source`` (a str is a --bfile prefix)."""
    if not isinstance(source, GenotypeInput):
        source = GenotypeInput("bfile", str(source))
    if source.kind == "bfile":
        from wm_jax.data.plink import PlinkDataset

        return PlinkDataset(source.path)
    if source.kind == "pfile":
        from wm_jax.data.pgen import PgenDataset

        return PgenDataset(source.path)
    if source.kind == "bgen":
        from wm_jax.data.bgen import BgenDataset

        return BgenDataset(source.path, source.sample, ref_first=source.bgen_ref_first)
    raise ValueError(f"unknown genotype input kind {source.kind!r}")


def padded_slots(n_samples: int) -> int:
    """Sample slots of a dosage row: the samples, padded to a multiple of 4 (the kernel's per-byte masks)."""
    return 4 * (-(-n_samples // 4))


def float_dosages(units: np.ndarray) -> np.ndarray:
    """ALT dosages in DOSAGE_UNIT (uint16, MISSING_DOSAGE missing) as float32 alleles, NaN missing."""
    return np.where(units == MISSING_DOSAGE, np.nan, units.astype(np.float32) / DOSAGE_UNIT).astype(np.float32)


def hard_calls_from_dosages(units: np.ndarray) -> np.ndarray:
    """plink2's hard calls of ALT dosages in DOSAGE_UNIT (uint16, MISSING_DOSAGE missing): the
    nearest of 0, 1, 2 when the dosage is within HARD_CALL_THRESHOLD of it, else missing (-9)."""
    values = units.astype(np.int32)
    nearest = (values + DOSAGE_UNIT // 2) // DOSAGE_UNIT
    distance = np.abs(values - nearest * DOSAGE_UNIT)
    calls = np.where(distance <= int(HARD_CALL_THRESHOLD * DOSAGE_UNIT), nearest, -9).astype(np.int8)
    calls[units == MISSING_DOSAGE] = -9
    return calls


@functools.cache
def hard_call_table() -> np.ndarray:
    """`hard_calls_from_dosages` of every uint16, to look a block's hard calls up in one gather."""
    return hard_calls_from_dosages(np.arange(1 << 16, dtype=np.uint16))


_NO_HARD_CALL, _NO_DOSAGE = 3, 4  # `dosage_category_table`'s classes after the hard calls 0, 1, 2


@functools.cache
def dosage_category_table() -> np.ndarray:
    """For every uint16 dosage: its hard call 0, 1 or 2, or _NO_HARD_CALL (a dosage too far from
    any, `hard_calls_from_dosages`), or _NO_DOSAGE (MISSING_DOSAGE)."""
    calls = hard_call_table()
    table = np.where(calls < 0, _NO_HARD_CALL, calls).astype(np.uint8)
    table[MISSING_DOSAGE] = _NO_DOSAGE
    return table


def counts_of_dosages(units: np.ndarray) -> VariantCounts:
    """VariantCounts of a block of ALT dosages (rows, samples) in DOSAGE_UNIT, with plink2's hard
    calls of them: one table lookup to a class per dosage, then a count per class (the same counts
    as `dosage_counts(units, hard_calls_from_dosages(units))`, without the int8 hard calls)."""
    category = dosage_category_table()[units]
    per_row = np.stack([np.count_nonzero(category == c, axis=1) for c in range(5)], axis=1).astype(np.int64)
    no_dosage = per_row[:, _NO_DOSAGE]
    alt_units = units.sum(axis=1, dtype=np.int64) - int(MISSING_DOSAGE) * no_dosage
    return VariantCounts(
        hom_alt=per_row[:, 2],
        het=per_row[:, 1],
        hom_ref=per_row[:, 0],
        missing=per_row[:, _NO_HARD_CALL] + no_dosage,
        alt_dosage=alt_units / DOSAGE_UNIT,
        dosage_missing=no_dosage,
    )


def dosage_counts(units: np.ndarray, hard_calls: np.ndarray) -> VariantCounts:
    """VariantCounts of a block of ALT dosages (rows, samples) in DOSAGE_UNIT and its hard calls (-9 missing)."""
    missing = units == MISSING_DOSAGE
    alt_units = units.sum(axis=1, dtype=np.int64) - int(MISSING_DOSAGE) * missing.sum(axis=1)
    return VariantCounts(
        hom_alt=(hard_calls == 2).sum(axis=1),
        het=(hard_calls == 1).sum(axis=1),
        hom_ref=(hard_calls == 0).sum(axis=1),
        missing=(hard_calls < 0).sum(axis=1),
        alt_dosage=alt_units / DOSAGE_UNIT,
        dosage_missing=missing.sum(axis=1),
    )


def concatenate_counts(parts: list[VariantCounts]) -> VariantCounts:
    """One VariantCounts from the counts of consecutive blocks."""
    fields = ("hom_alt", "het", "hom_ref", "missing", "alt_dosage", "dosage_missing")
    return VariantCounts(
        *(None if getattr(parts[0], f) is None else np.concatenate([getattr(p, f) for p in parts]) for f in fields)
    )


def missing_dosage_index(block: np.ndarray, n_samples: int, width: int) -> np.ndarray:
    """(rows, width) sample slots of each row's missing dosages, padded with block.shape[1] (the
    kernel's zero row); the dosage counterpart of `wm_jax.gwas.kernel.missing_call_index`."""
    rows, samples = np.nonzero(block[:, :n_samples] == MISSING_DOSAGE)
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows)
    if len(rank) and rank.max() >= width:
        raise ValueError(f"a variant has more than {width} missing dosages in this block")
    index = np.full((block.shape[0], width), block.shape[1], np.int32)
    index[rows, rank] = samples
    return index
