"""A synthetic gene annotation along the simulated chromosomes, and gene sets with one planted
pathway: the genes of the planted loci and as many genes holding polygenic causal variants of the
loci's factors, among random sets of the same size drawn from the other genes.

Genes are laid one after another (a gene per ~120 kb, as in the human genome); a planted locus that
falls between two genes gets the next gene laid over it, so every locus is inside a gene without a
gene squeezed in beside its neighbours (which put non-member genes a few kb from a locus, sharing
its variants, and cancelled the pathway's signal in the gene-set GLS).

It draws from its own generator, seeded from (config seed, GENE_STREAM), so that adding it left
every other output of `wm-jax simulate` byte for byte as it was.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

GENE_STREAM = 0x67656E65  # "gene": the annotation's own random stream beside the cohort's
# Between genes (exponential): with genes of ~19 kb on average, one gene per ~120 kb, as in the human
# genome (~20,000 protein-coding genes in 3.1 Gb: one per ~150 kb, denser where genes cluster). It
# was 20 kb (a gene per ~40 kb): with LD over hundreds of kb here, each causal variant lifted 5-10
# genes, and the gene-set GLS credited the planted pathway only beyond its non-member neighbours.
MEAN_GAP_BP = 100_000
MEDIAN_LENGTH_BP = 15_000  # of a gene (log-normal, sigma 0.7, clipped to [2 kb, 150 kb])
N_RANDOM_SETS = 20
PLANTED_SET = "PLANTED_PATHWAY"


def gene_annotation(bim: pd.DataFrame, locus_variants: list[int], background: np.ndarray, seed: int):
    """(genes: gene chrom start end, gene sets: name -> genes) for the simulated chromosomes.
    ``locus_variants`` and ``background`` (polygenic causal variants of the loci's factors) are
    rows of ``bim``."""
    rng = np.random.default_rng([seed, GENE_STREAM])
    loci = bim.iloc[np.asarray(locus_variants, int)]
    genes = _genes_along(bim, loci, rng)
    order = {c: k for k, c in enumerate(pd.unique(bim.chrom.astype(str)))}
    genes = genes.sort_values(["chrom", "start"], key=lambda c: c.map(order) if c.name == "chrom" else c)
    genes.insert(0, "gene", [f"GENE{k + 1:04d}" for k in range(len(genes))])
    genes = genes.reset_index(drop=True)
    planted = _genes_holding(genes, bim, np.asarray(locus_variants, int))
    others = sorted(set(_genes_holding(genes, bim, np.asarray(background, int))) - set(planted))
    chosen = list(rng.choice(others, min(len(planted), len(others)), replace=False)) if others else []
    pathway = sorted(set(planted) | set(chosen))
    sets = {PLANTED_SET: [genes.gene[g] for g in pathway]}
    # Random sets from the genes outside the pathway, as they almost surely are in a genome of
    # ~20,000 genes (a random set of 16 holds one of 16 given genes with P ~1.3%; of ~130 genes, ~89%);
    # from all genes where too few are outside (a tiny genome).
    outside = np.setdiff1d(np.arange(len(genes)), pathway)
    pool = outside if len(outside) >= len(pathway) else np.arange(len(genes))
    for k in range(N_RANDOM_SETS):
        sets[f"RANDOM_SET_{k + 1:02d}"] = sorted(genes.gene[rng.choice(pool, len(pathway), replace=False)])
    return genes, sets


def _genes_along(bim: pd.DataFrame, loci: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Genes one after another along each chromosome: a gap (exponential, mean MEAN_GAP_BP), then a
    gene (log-normal length). Where a planted locus lies in the gap, the gene is laid over it
    instead (the locus at a uniform place inside), so that every locus is inside a gene and no gene
    is squeezed in beside another to hold it."""
    rows = []
    for chrom in pd.unique(bim.chrom.astype(str)):
        pos = bim.pos[bim.chrom.astype(str) == chrom]
        at = np.sort(loci.pos[loci.chrom.astype(str) == chrom].to_numpy(np.int64))
        end, last = int(pos.min()), int(pos.max())
        while True:
            length = int(np.clip(rng.lognormal(np.log(MEDIAN_LENGTH_BP), 0.7), 2_000, 150_000))
            start = end + int(rng.exponential(MEAN_GAP_BP)) + 1
            waiting = at[at > end]  # loci not inside a gene yet
            if len(waiting) and waiting[0] < start:
                start = max(end + 1, int(waiting[0] - rng.uniform(0, length)))
            elif start >= last:
                break
            rows.append([chrom, start, start + length])
            end = start + length
    return pd.DataFrame(rows, columns=["chrom", "start", "end"])


def _genes_holding(genes: pd.DataFrame, bim: pd.DataFrame, variants: np.ndarray) -> list[int]:
    """Rows of ``genes`` that contain at least one of ``variants``."""
    held = set()
    for v in variants:
        inside = (
            (genes.chrom == str(bim.chrom.iloc[v])) & genes.start.le(bim.pos.iloc[v]) & genes.end.ge(bim.pos.iloc[v])
        )
        held.update(np.flatnonzero(inside.to_numpy()).tolist())
    return sorted(held)


def write_gene_annotation(directory: Path, genes: pd.DataFrame, sets: dict[str, list[str]]) -> None:
    """genes.tsv (gene chrom start end, with a header) and gene_sets.gmt."""
    genes.to_csv(directory / "genes.tsv", sep="\t", index=False)
    descriptions = {PLANTED_SET: "genes of the planted loci and of part of their factors' polygenic background"}
    with open(directory / "gene_sets.gmt", "w") as handle:
        for name, members in sets.items():
            handle.write("\t".join([name, descriptions.get(name, "random genes"), *members]) + "\n")
