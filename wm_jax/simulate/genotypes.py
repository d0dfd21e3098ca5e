"""Genotypes with human-like LD and allele-frequency spectrum from a coalescent simulation (msprime)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("wm_jax")


@dataclass
class Chromosome:
    name: str
    positions: np.ndarray  # (M,) int64, 1-based, increasing
    ref: np.ndarray  # ancestral allele
    alt: np.ndarray  # derived allele
    dosages: np.ndarray  # (M, N) int8 ALT dosage (true genotypes, no missing calls)


def simulate_chromosome(
    name: str,
    n_individuals: int,
    length: float,
    seed: int,
    demes: int,
    population_size: float,
    migration_rate: float,
    recombination_rate: float,
    mutation_rate: float,
    min_maf: float,
) -> Chromosome:
    import msprime
    import tskit

    demography = msprime.Demography.island_model([population_size] * demes, migration_rate)
    counts = np.full(demes, n_individuals // demes)
    counts[: n_individuals - counts.sum()] += 1
    samples = [msprime.SampleSet(int(c), population=i) for i, c in enumerate(counts)]
    ancestry = msprime.sim_ancestry(
        samples=samples,
        demography=demography,
        sequence_length=length,
        recombination_rate=recombination_rate,
        random_seed=seed,
    )
    ts = msprime.sim_mutations(ancestry, rate=mutation_rate, random_seed=seed + 1)
    sites = ts.tables.sites
    mutations = ts.tables.mutations
    per_site = np.bincount(mutations.site, minlength=ts.num_sites)
    biallelic = per_site == 1
    haplotypes = ts.genotype_matrix()[biallelic]  # (M, 2N), sample nodes in individual order
    dosage = (haplotypes[:, 0::2] + haplotypes[:, 1::2]).astype(np.int8)
    ancestral = np.array(tskit.unpack_strings(sites.ancestral_state, sites.ancestral_state_offset))[biallelic]
    derived_all = np.array(tskit.unpack_strings(mutations.derived_state, mutations.derived_state_offset))
    derived = np.empty(ts.num_sites, dtype=derived_all.dtype)
    derived[mutations.site] = derived_all
    derived = derived[biallelic]
    positions = sites.position[biallelic].astype(np.int64) + 1
    freq = dosage.mean(axis=1) / 2
    keep = np.minimum(freq, 1 - freq) >= min_maf
    dosage = dosage[keep]
    log.info(
        "chromosome %s: %d biallelic sites, %d with MAF >= %g", name, int(biallelic.sum()), int(keep.sum()), min_maf
    )
    return Chromosome(name, positions[keep], ancestral[keep], derived[keep], dosage)


def genetic_pcs(dosages: np.ndarray, n_pcs: int, max_variants: int, seed: int) -> np.ndarray:
    """Top principal components of standardised genotypes (variants x samples), missing -> mean.

    Uses a random subset of at most ``max_variants`` variants with MAF >= 1% and a randomised SVD,
    so it scales to large cohorts.
    """
    rng = np.random.default_rng(seed)
    observed = dosages >= 0
    freq = np.where(observed, dosages, 0).sum(1) / np.maximum(observed.sum(1), 1) / 2
    common = np.flatnonzero(np.minimum(freq, 1 - freq) >= 0.01)
    chosen = np.sort(rng.choice(common, size=min(max_variants, len(common)), replace=False))
    g = dosages[chosen].astype(np.float32)
    f = freq[chosen, None].astype(np.float32)
    x = np.where(g >= 0, (g - 2 * f) / np.sqrt(2 * f * (1 - f)), 0).T  # samples x variants
    k = n_pcs + 10
    basis = x @ rng.standard_normal((x.shape[1], k)).astype(np.float32)
    for _ in range(3):
        basis, _ = np.linalg.qr(x @ (x.T @ basis))
    u, _, _ = np.linalg.svd(basis.T @ x @ x.T @ basis)
    pcs = basis @ u[:, :n_pcs]
    return (pcs - pcs.mean(0)) / pcs.std(0)
