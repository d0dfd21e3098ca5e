"""`wm-jax demo`: the whole UDIP-FA pipeline on a simulated cohort, a few minutes on 2 CPU cores.

    wm-jax demo --out demo_run [--config.train.epochs=2] [--config.sim.n_subjects=3000]

Volumes are 24x28x24 (the demo preset's phantom at half resolution) because XLA:CPU's 3D
convolutions are the bottleneck on a CPU (benchmarks/results/train_speed_attempts.md).

The sections of the stages that have their own subcommand (gwas, report, interpret) are made from
that subcommand's options dataclass: they hold the fields the demo sets, with the dataclass's
defaults where the demo keeps them, and the pipeline turns them back into that dataclass.
"""

import ml_collections

from configs.demo import get_config as train_config
from configs.sim import get_config as sim_config
from wm_jax.config import options_section
from wm_jax.stage_options import ClumpOptions, GwasOptions, PerdiOptions


def get_config():
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.sim = sim_config("demo")
    c.sim.shape = (24, 28, 24)
    c.sim.n_subjects = 2000

    c.split = ml_collections.ConfigDict()
    c.split.train_fraction = 0.3  # the encoder learns from these subjects only, as in the paper
    c.split.replication_fraction = 1 / 3  # of the held-out subjects; the rest are the discovery cohort

    c.train = train_config()
    c.train.model.input_shape = None  # derived: the store's grid, which is sim.shape (not set twice)
    c.train.model.channels = (8, 16, 32)
    c.train.model.latent_dim = 32
    # The linear path starts the encoder from PCA of the training volumes: within the demo's budget
    # (tens of optimiser steps) the convolutional autoencoder alone does not get near PCA's
    # reconstruction (README, "Why the demo's encoder starts from PCA").
    c.train.model.linear_path = True
    c.train.batch_size = 16
    c.train.epochs = 1
    c.train.log_every = 5
    # Validate every 5 of the epoch's 34 steps; stop once 3 validations in a row have not beaten the
    # best (at first the PCA start): the demo spends no time on training whose result it discards.
    c.train.val_every = 5
    c.train.patience = 3

    c.embed = ml_collections.ConfigDict()
    c.embed.rotation = "varimax"  # whitened, varimax-rotated UDIPs (wm_jax/rotation.py); "none": raw codes

    # MAF >= 5%: at ~900 discovery subjects, rarer variants carry < 90 minor alleles, the least reliable tests.
    c.gwas = options_section(GwasOptions(maf=0.05), "maf", "block_size")
    c.report = options_section(ClumpOptions(), prefix="clump_")  # keys as the flags of `wm-jax report`
    # Decoding dominates on CPU: (32 dims + 1) x 16 subjects decoded.
    c.interpret = options_section(PerdiOptions(n_subjects=16, n_permutations=2000), "n_subjects", "n_permutations")
    return c
