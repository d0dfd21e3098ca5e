"""Simulator preset `tiny`, for tests: 103 subjects (not a multiple of 4) at 24x28x24.

wm-jax simulate --config configs/sim_tiny.py --out tiny_data
"""

from configs.sim_common import base_config


def get_config():
    c = base_config()
    c.n_subjects = 103
    c.shape = (24, 28, 24)
    c.genotypes.n_chromosomes = 2
    c.genotypes.chromosome_length = 1e6
    c.genotypes.missing_rate = 0.01
    c.loci.per_kind = 1
    c.factors.n_cross = c.factors.n_contrast = c.factors.n_local = 2
    c.pc_max_variants = 5000
    return c
