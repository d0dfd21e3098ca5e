"""Simulator preset `paper`: 40,000 subjects at 182x218x182 (UK Biobank scale).

Volumes are written one at a time, so memory holds one volume plus the genotype matrix.

    wm-jax simulate --config configs/sim_paper.py --out paper_data
"""

from configs.sim_common import base_config


def get_config():
    c = base_config()
    c.n_subjects = 40000
    c.shape = (182, 218, 182)
    c.genotypes.n_chromosomes = 22
    c.genotypes.chromosome_length = 10e6
    c.factors.n_cross = c.factors.n_contrast = c.factors.n_local = 12
    c.loci.per_kind = 10
    c.loci.share = 0.003  # real-size loci: 40,000 subjects find them
    c.genetics.on_genome_share = 0.07  # 22 x 10 Mb of a 3 Gb genome
    c.genetics.n_causal = 2000
    return c
