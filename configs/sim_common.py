"""Shared simulator settings; the presets (sim_tiny, sim_demo, sim_paper) override a few."""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 1
    c.n_subjects = 2000
    c.shape = (48, 56, 48)
    c.n_pcs = 10
    c.pc_max_variants = 20000

    c.genotypes = ml_collections.ConfigDict()
    c.genotypes.n_chromosomes = 4
    c.genotypes.chromosome_length = 4e6
    c.genotypes.demes = 3
    c.genotypes.population_size = 5000.0
    c.genotypes.migration_rate = 2e-3
    c.genotypes.recombination_rate = 1e-8
    c.genotypes.mutation_rate = 1.25e-8
    c.genotypes.min_maf = 0.005
    c.genotypes.missing_rate = 0.002

    c.variation = ml_collections.ConfigDict()
    c.variation.age_mean = 64.0
    c.variation.age_sd = 7.5
    c.variation.age_min = 45.0
    c.variation.age_max = 80.0
    c.variation.global_age_slope = -0.01  # FA per decade, all white matter
    c.variation.sex_effect = 0.008  # FA, male minus female, in the tracts
    c.variation.tract_random_sd = 0.02  # subject-level, per tract, not genetic
    c.variation.site_weights = (0.5, 0.3, 0.2)
    c.variation.site_offsets = (0.0, 0.012, -0.008)
    c.variation.site_noise = (1.0, 1.2, 0.9)
    c.variation.deme_offsets = (0.0, 0.004, -0.004)
    c.variation.head_size_sd = 0.02
    c.variation.head_size_sex = 0.03
    c.variation.deformation_voxels = 0.5
    c.variation.noise_sd = 0.02

    c.effects = ml_collections.ConfigDict()
    c.effects.n_causal = 8
    c.effects.h2_per_variant = 0.1
    c.effects.min_causal_maf = 0.1
    c.effects.pattern_width = 0.15  # in normalised coordinates (grid spans [-1, 1])
    c.effects.tracts_round_robin = True
    return c
