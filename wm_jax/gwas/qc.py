"""Variant selection for `wm-jax gwas`: --chr and the PLINK 2 style QC filters, on the genotype
counts of any source (`wm_jax.data.source`).

On dosage data (--pfile, --bgen) the filters follow plink2's defaults: --maf and --mac use the ALT
dosages (summed over the samples that have one), --geno and --hwe the hard calls (in a BGEN, the
dosage's nearest genotype within --hard-call-threshold 0.1, as plink2 imports it)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from wm_jax.data.chromosomes import chromosome_number, chromosome_numbers, parse_chromosome_list
from wm_jax.data.plink import count_genotypes  # noqa: F401 (the .bed's counts, also used from here)
from wm_jax.data.source import VariantCounts
from wm_jax.errors import InputError, input_error

log = logging.getLogger("wm_jax")


@dataclass(frozen=True)
class VariantFilters:
    """The variant filters of `wm-jax gwas`, in PLINK 2's flags (None: not applied)."""

    chromosomes: str | None = None  # --chr
    maf: float | None = None
    mac: int | None = None
    geno: float | None = None
    hwe: float | None = None


def select_chromosomes(data, chromosomes: str | None) -> np.ndarray:
    """Variants on the chromosomes of ``--chr`` (PLINK's codes: X, chrX and 23 are one); all without it."""
    selected = np.arange(data.n_variants)
    if chromosomes:
        try:
            wanted = parse_chromosome_list(chromosomes)
        except ValueError as err:
            raise InputError(f"--chr: {err}") from None
        selected = np.flatnonzero(np.isin(chromosome_numbers(data.variants.chrom), sorted(wanted)))
        log.info("--chr %s: %d of %d variants kept", chromosomes, len(selected), data.n_variants)
        if len(selected) == 0:
            kind = data.variants_path.suffix or "variant list"
            present = ", ".join(map(str, pd.unique(data.variants.chrom.astype(str))[:10]))
            raise input_error(
                data.variants_path,
                f"no variant on --chr {chromosomes}; expected variants on those chromosomes (the {kind} has {present})",
            )
    return selected


def refuse_chromosome_x(data, selected: np.ndarray) -> None:
    """Chromosome X (X, chrX, 23) among the selected variants is an error: wm-jax tests it as an
    autosome, plink2 by default codes males haploid (--xchr-model 1), so the statistics would differ.
    XY (the pseudo-autosomal region, diploid in plink2 too) is tested. Codes are looked up once each."""
    x_codes = [code for code in pd.unique(data.variants.chrom) if chromosome_number(str(code)) == 23]
    if not x_codes:
        return
    on_x = np.flatnonzero(data.variants.chrom.iloc[selected].isin(x_codes).to_numpy())
    if len(on_x):
        raise input_error(
            data.variants_path,
            f"{len(on_x)} selected variants are on chromosome X (code {data.variants.chrom.iloc[selected[on_x[0]]]}), "
            "which wm-jax would test as an autosome, unlike plink2 (males haploid); expected autosomes: "
            "exclude it with --chr (e.g. --chr 1-22)",
        )


def hwe_exact_p(het: np.ndarray, hom1: np.ndarray, hom2: np.ndarray) -> np.ndarray:
    """Hardy-Weinberg exact test p-values (Wigginton et al. 2005), as `plink2 --hwe` (no midp)."""
    out = np.ones(len(het))
    for i, (h, a, b) in enumerate(zip(het.tolist(), hom1.tolist(), hom2.tolist())):
        out[i] = _hwe_single(int(h), int(a), int(b))
    return out


def _hwe_single(obs_hets: int, obs_hom1: int, obs_hom2: int) -> float:
    obs_homc = max(obs_hom1, obs_hom2)
    obs_homr = min(obs_hom1, obs_hom2)
    rare = 2 * obs_homr + obs_hets
    genotypes = obs_hets + obs_homc + obs_homr
    if genotypes == 0:
        return 1.0
    probs = np.zeros(rare + 1)
    mid = rare * (2 * genotypes - rare) // (2 * genotypes)
    if (rare & 1) ^ (mid & 1):
        mid += 1
    probs[mid] = 1.0
    total = 1.0
    hets, homr, homc = mid, (rare - mid) // 2, genotypes - mid - (rare - mid) // 2
    while hets >= 2:
        probs[hets - 2] = probs[hets] * hets * (hets - 1) / (4.0 * (homr + 1) * (homc + 1))
        total += probs[hets - 2]
        hets -= 2
        homr += 1
        homc += 1
    hets, homr, homc = mid, (rare - mid) // 2, genotypes - mid - (rare - mid) // 2
    while hets <= rare - 2:
        probs[hets + 2] = probs[hets] * 4.0 * homr * homc / ((hets + 2) * (hets + 1))
        total += probs[hets + 2]
        hets += 2
        homr -= 1
        homc -= 1
    target = probs[obs_hets]
    p = probs[probs <= target * (1 + 1e-8)].sum() / total
    return float(min(1.0, p))


def apply_filters(
    counts: VariantCounts,
    maf: float | None,
    mac: int | None,
    geno: float | None,
    hwe: float | None,
    removed: list[str] | None = None,
) -> np.ndarray:
    """Boolean keep-mask; logs the count each filter removes, in PLINK 2's order, and appends
    "--flag value removed n" to ``removed`` when given."""
    removed = [] if removed is None else removed
    keep = np.ones(len(counts.het), bool)
    n_total = counts.observed + counts.missing
    if geno is not None:
        drop = keep & (counts.missing / np.maximum(n_total, 1) > geno)
        log.info(
            "--geno %g: %d variants removed (missing call rate), %d remain",
            geno,
            int(drop.sum()),
            int((keep & ~drop).sum()),
        )
        removed.append(f"--geno {geno:g} removed {int(drop.sum())}")
        keep &= ~drop
    if hwe is not None:
        idx = np.flatnonzero(keep)
        p = hwe_exact_p(counts.het[idx], counts.hom_alt[idx], counts.hom_ref[idx])
        drop_idx = idx[p < hwe]
        keep[drop_idx] = False
        log.info("--hwe %g: %d variants removed, %d remain", hwe, len(drop_idx), int(keep.sum()))
        removed.append(f"--hwe {hwe:g} removed {len(drop_idx)}")
    alt_count, observed = counts.alt_count, counts.dosage_observed  # the hard calls' on a .bed
    minor_count = np.minimum(alt_count, 2 * observed - alt_count)
    if maf is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            minor_freq = np.where(observed > 0, minor_count / (2 * observed), 0.0)
        drop = keep & (minor_freq < maf)
        log.info("--maf %g: %d variants removed, %d remain", maf, int(drop.sum()), int((keep & ~drop).sum()))
        removed.append(f"--maf {maf:g} removed {int(drop.sum())}")
        keep &= ~drop
    if mac is not None:
        drop = keep & (minor_count < mac)
        log.info("--mac %d: %d variants removed, %d remain", mac, int(drop.sum()), int((keep & ~drop).sum()))
        removed.append(f"--mac {mac} removed {int(drop.sum())}")
        keep &= ~drop
    return keep
