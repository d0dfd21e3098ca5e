"""A synthetic gene annotation along the simulated chromosomes, and gene sets with one planted
pathway: the genes of the planted loci and as many genes holding polygenic causal variants of the
loci's factors, among random sets of the same size.

It draws from its own generator, seeded from (config seed, GENE_STREAM), so that adding it left
every other output of `wm-jax simulate` byte for byte as it was.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

GENE_STREAM = 0x67656E65  # "gene": the annotation's own random stream beside the cohort's
MEAN_GAP_BP = 20_000  # between genes (exponential)
MEDIAN_LENGTH_BP = 15_000  # of a gene (log-normal, sigma 0.7, clipped to [2 kb, 150 kb])
N_RANDOM_SETS = 20
PLANTED_SET = "PLANTED_PATHWAY"


def gene_annotation(bim: pd.DataFrame, locus_variants: list[int], background: np.ndarray, seed: int):
    """(genes: gene chrom start end, gene sets: name -> genes) for the simulated chromosomes.
    ``locus_variants`` and ``background`` (polygenic causal variants of the loci's factors) are
    rows of ``bim``."""
    rng = np.random.default_rng([seed, GENE_STREAM])
    genes = _genes_along(bim, rng)
    for v in locus_variants:  # every planted locus lies inside a gene
        chrom, pos = str(bim.chrom.iloc[v]), int(bim.pos.iloc[v])
        if not ((genes.chrom == chrom) & (genes.start <= pos) & (genes.end >= pos)).any():
            extra = pd.DataFrame(
                [[chrom, pos - MEDIAN_LENGTH_BP // 2, pos + MEDIAN_LENGTH_BP // 2]], columns=genes.columns
            )
            genes = pd.concat([genes, extra], ignore_index=True)
    order = {c: k for k, c in enumerate(pd.unique(bim.chrom.astype(str)))}
    genes = genes.sort_values(["chrom", "start"], key=lambda c: c.map(order) if c.name == "chrom" else c)
    genes.insert(0, "gene", [f"GENE{k + 1:04d}" for k in range(len(genes))])
    genes = genes.reset_index(drop=True)
    planted = _genes_holding(genes, bim, np.asarray(locus_variants, int))
    others = sorted(set(_genes_holding(genes, bim, np.asarray(background, int))) - set(planted))
    chosen = list(rng.choice(others, min(len(planted), len(others)), replace=False)) if others else []
    pathway = sorted(set(planted) | set(chosen))
    sets = {PLANTED_SET: [genes.gene[g] for g in pathway]}
    for k in range(N_RANDOM_SETS):
        sets[f"RANDOM_SET_{k + 1:02d}"] = sorted(genes.gene[rng.choice(len(genes), len(pathway), replace=False)])
    return genes, sets


def _genes_along(bim: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for chrom in pd.unique(bim.chrom.astype(str)):
        pos = bim.pos[bim.chrom.astype(str) == chrom]
        start, last = int(pos.min()) + int(rng.exponential(MEAN_GAP_BP)), int(pos.max())
        while start < last:
            length = int(np.clip(rng.lognormal(np.log(MEDIAN_LENGTH_BP), 0.7), 2_000, 150_000))
            rows.append([chrom, start, start + length])
            start += length + int(rng.exponential(MEAN_GAP_BP)) + 1
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
