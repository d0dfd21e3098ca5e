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
    c.effects.n_causal = 40
    c.effects.h2_per_variant = 0.01
    c.variation.deformation_voxels = 2.0
    return c
