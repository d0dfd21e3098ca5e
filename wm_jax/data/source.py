"""What every genotype source is: `GenotypeSource`, the interface the GWAS engine, LD scores, RHE,
clumping and the gene tests read genotypes through, with `VariantCounts` (what a source counts) and
`GenotypeInput` (which source the user named). Implemented by `wm_jax.data.plink.PlinkDataset`
(--bfile), `wm_jax.data.pgen.PgenDataset` (--pfile) and `wm_jax.data.bgen.BgenDataset` (--bgen);
`wm_jax.data.genotypes.open_genotypes` opens one. This module imports no reader.

Dosages travel as uint16 in plink2's own unit, 1/16384 of an allele (0..32768; MISSING_DOSAGE is a
missing dosage). That is the precision plink2 keeps internally (its .pgen stores dosages so, and
it rounds BGEN probabilities to it on import), so the device sees exactly the dosages that
`plink2 --glm` regresses on: same bytes as float16, which cannot hold them (float16 keeps 1/1024
between 1 and 2), and uint8 with a scale cannot hold the 511 dosage levels of an 8-bit BGEN.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

DOSAGE_UNIT = 16384  # plink2's dosage unit: 1/16384 of an allele
MISSING_DOSAGE = np.uint16(0xFFFF)


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


@runtime_checkable
class GenotypeSource(Protocol):
    """A genotype file set opened for reading, in blocks of variant rows (``rows``: indices into
    ``variants``)."""

    samples: pd.DataFrame
    """fid, iid (the .fam, .psam or .sample; FID "0" where the file has none, as plink2 reads it)"""
    variants: pd.DataFrame
    """chrom, id, cm, pos, alt, ref (the .bim, .pvar or the BGEN's variant headers)"""
    variants_path: Path
    """the file that lists the variants (named in errors)"""
    name: str
    """how the user named the input (the --bfile prefix, --pfile prefix or --bgen file)"""
    n_samples: int
    n_variants: int
    n_slots: int
    """sample slots per row of a block (the samples, padded to a multiple of 4)"""
    block_dtype: type
    """uint8 (.bed: 4 hard calls per byte, decoded on the device) or uint16 (dosages in DOSAGE_UNIT)"""
    row_width: int
    """entries per row of a block: n_slots / 4 bytes (hard calls) or n_slots dosages"""
    block_counting: str | None
    """how `block_counts` follow from the block alone, so that the device can take them
    (`wm_jax.data.device_counts`): "bed" (popcounts of the bytes), "dosages" (plink2's hard calls
    of the dosages), or None where they need more than the block"""

    def read_block(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), row_width) block_dtype: what goes to the device."""
        ...

    def missing_index(self, block: np.ndarray, width: int) -> np.ndarray:
        """(rows, width) int32 sample slots of each row's missing calls, padded with n_slots (the
        kernel's zero row)."""
        ...

    def count(self, rows: np.ndarray) -> VariantCounts:
        """The counts of ``rows`` (QC, the A1 rule, LD scores' MAF)."""
        ...

    def block_counts(self, block: np.ndarray, rows: np.ndarray) -> VariantCounts:
        """The counts of ``rows`` from their block as read (the GWAS's one pass)."""
        ...

    def dosages(self, rows: np.ndarray) -> np.ndarray:
        """(rows, samples) float32 ALT dosages, NaN missing (LD for clumping and gene tests)."""
        ...

    def release(self) -> None:
        """Drop the pages read so far (memory flat in the number of variants)."""
        ...


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
