"""The simulator's settings (`wm-jax simulate`), with named presets: `demo` (the base below),
`tiny` and `paper` change a few fields.

    wm-jax simulate --preset tiny --out tiny_data
    wm-jax simulate --config configs/sim.py:paper --out paper_data
"""

import ml_collections


def get_config(preset: str = "demo") -> ml_collections.ConfigDict:
    """The settings of ``preset``, one of PRESETS: the base below with the preset's changes."""
    c = _base()
    PRESETS[preset](c)
    return c


def _base() -> ml_collections.ConfigDict:
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
    c.variation.site_weights = (0.5, 0.3, 0.2)
    c.variation.site_offsets = (0.0, 0.012, -0.008)
    c.variation.site_noise = (1.0, 1.2, 0.9)
    c.variation.deme_offsets = (0.0, 0.004, -0.004)
    # Maps are registered to MNI space: what is left of head size and shape is the registration's
    # residual, a scale of about 1% and a smooth displacement of about 1.5 mm.
    c.variation.head_size_sd = 0.01
    c.variation.head_size_sex = 0.01
    c.variation.deformation_mm = 1.5
    c.variation.noise_sd = 0.015

    # The genetic architecture (wm_jax/simulate/genetics.py). Figures from UK Biobank studies of
    # diffusion MRI: SNP h2 of tract-mean FA about 0.2-0.6, with strong genetic correlation across
    # tracts (a general white-matter factor); UDIP-FA reports a mean UDIP SNP h2 of 0.51.
    # Each factor: coefficient sd in FA units and its h2. The global factor's share of a tract's
    # genetic variance sets the genetic correlation of two tract means:
    # rg ~ global_sd^2 global_h2 / (global_sd^2 global_h2 + tract_sd^2 tract_h2) = 0.5 here
    # (before the random spread of each sd, below).
    c.factors = ml_collections.ConfigDict()
    c.factors.global_sd = 0.03
    c.factors.global_h2 = 0.5
    c.factors.tract_sd = 0.03
    c.factors.tract_h2 = 0.5
    c.factors.n_cross = 4
    c.factors.cross_sd = 0.05
    c.factors.cross_h2 = 0.5
    c.factors.cross_width = 0.18  # in normalised coordinates (the grid spans [-1, 1])
    c.factors.n_contrast = 4
    c.factors.contrast_sd = 0.06
    c.factors.contrast_h2 = 0.5
    c.factors.n_local = 4
    c.factors.local_sd = 0.06
    c.factors.local_h2 = 0.5
    c.factors.local_width = 0.12
    # Shape factors: a smooth local deformation that displaces or thickens a tract (wm_jax/simulate/
    # genetics.py). None by default; `--config.factors.n_shape=2 --config.loci.kinds=...,shape` plants them.
    c.factors.n_shape = 0
    c.factors.shape_sd = 0.06  # FA units of the first-order pattern, as for the other kinds
    c.factors.shape_h2 = 0.5
    c.factors.shape_width = 0.2
    c.factors.sd_spread = 0.3

    c.genetics = ml_collections.ConfigDict()
    c.genetics.n_causal = 200  # small-effect causal variants per factor on the simulated chromosomes
    c.genetics.min_causal_maf = 0.01
    # Share of each factor's polygenic variance carried by the simulated chromosomes (a few Mb of
    # a 3 Gb genome); the rest is drawn as a score of the genome that is not simulated. Keeps
    # lambda GC near 1 at the demo's N, as it is for real IDPs at N ~ 1,000.
    c.genetics.on_genome_share = 0.1

    # Planted loci: per_kind loci of each kind, each on a factor of its kind, explaining `share` of
    # the variance of that factor's oracle phenotype (each volume's coefficient on the pattern).
    # Real loci of imaging phenotypes explain about 0.1-1% of a phenotype's variance; the demo's
    # are 8% (realised 4-9%, as registration residuals add variance) so that its ~900 discovery
    # subjects can find them.
    c.loci = ml_collections.ConfigDict()
    c.loci.kinds = ("local", "tract", "cross", "contrast")
    c.loci.per_kind = 2
    c.loci.share = 0.08
    c.loci.min_maf = 0.1
    return c


def _demo(c: ml_collections.ConfigDict) -> None:
    """2,000 subjects at 48x56x48, a few minutes on 2 CPU cores: the base as it is."""


def _tiny(c: ml_collections.ConfigDict) -> None:
    """For tests: 103 subjects (not a multiple of 4) at 24x28x24, one locus of each kind."""
    c.n_subjects = 103
    c.shape = (24, 28, 24)
    c.genotypes.n_chromosomes = 2
    c.genotypes.chromosome_length = 1e6
    c.genotypes.missing_rate = 0.01
    c.loci.per_kind = 1
    c.factors.n_cross = c.factors.n_contrast = c.factors.n_local = 2
    c.pc_max_variants = 5000


def _paper(c: ml_collections.ConfigDict) -> None:
    """40,000 subjects at 182x218x182 (UK Biobank scale). Volumes are written one at a time, so
    memory holds one volume plus the genotype matrix."""
    c.n_subjects = 40000
    c.shape = (182, 218, 182)
    c.genotypes.n_chromosomes = 22
    c.genotypes.chromosome_length = 10e6
    c.factors.n_cross = c.factors.n_contrast = c.factors.n_local = 12
    c.loci.per_kind = 10
    c.loci.share = 0.003  # real-size loci: 40,000 subjects find them
    c.genetics.on_genome_share = 0.07  # 22 x 10 Mb of a 3 Gb genome
    c.genetics.n_causal = 2000


PRESETS = {"tiny": _tiny, "demo": _demo, "paper": _paper}
