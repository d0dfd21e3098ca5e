"""`wm-jax simulate`: write a synthetic UK-Biobank-like imaging-genetics cohort.

Output directory:
  genotypes.bed/.bim/.fam   PLINK 1, SNP-major; .bim 5th column = derived (ALT), 6th = ancestral (REF)
  fa/<IID>.nii.gz           one FA map per subject (float32, RAS affine, FOV 182x218x182 mm)
  atlas.nii.gz, atlas_labels.tsv   the tract atlas of the template
  subjects.tsv              FID IID fa_path age sex site
  covariates.tsv            FID IID age sex site_2.. PC1..PC10
  truth.tsv                 the planted loci: variant, kind, factor, tract, effect, variance explained
  patterns.nii.gz           4D: the spatial pattern of each planted locus (volume k = truth row k)
  genetic_values.tsv        FID IID and each factor's genetic value per subject (FA units)
  genes.tsv, gene_sets.gmt  a synthetic gene annotation (gene chrom start end) and gene sets: one
                            planted pathway (the loci's genes and part of their polygenic background)
                            among random sets (wm_jax/simulate/annotation.py)
  simulation.json           the configuration, code version and every factor's kind, h2 and variance
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.ndimage import map_coordinates
from tqdm.auto import tqdm

import wm_jax
from wm_jax.data.nifti import save_nifti
from wm_jax.data.plink import encode_alt_dosages, write_bed
from wm_jax.data.tables import write_table
from wm_jax.publish import Output, atomic_dir
from wm_jax.simulate.annotation import gene_annotation, write_gene_annotation
from wm_jax.simulate.genetics import (
    add_loci,
    choose_loci,
    factor_coefficients,
    oracle_background_variance,
    spatial_factors,
)
from wm_jax.simulate.genotypes import genetic_pcs, simulate_chromosome
from wm_jax.simulate.phantom import TRACTS, build_phantom

log = logging.getLogger("wm_jax")

# What `wm-jax simulate` writes into its cohort directory.
COHORT = Output(
    "simulate",
    "genotypes.bed genotypes.bim genotypes.fam fa atlas.nii.gz atlas_labels.tsv subjects.tsv "
    "covariates.tsv truth.tsv simulation.json patterns.nii.gz genetic_values.tsv genes.tsv "
    "gene_sets.gmt",
)

MNI_FOV_MM = np.array([182.0, 218.0, 182.0])
MNI_ORIGIN_MM = np.array([-90.0, -126.0, -72.0])


def grid_affine(shape) -> np.ndarray:
    """RAS affine covering the MNI 1 mm field of view (182x218x182 mm) with ``shape`` voxels."""
    voxel = MNI_FOV_MM / np.asarray(shape)
    affine = np.diag([*voxel, 1.0])
    affine[:3, 3] = MNI_ORIGIN_MM + voxel / 2 - 0.5
    return affine


def _linear_upsampler(n_out: int, n_coarse: int) -> np.ndarray:
    """(n_out, n_coarse) weights of linear interpolation from a coarse grid spanning the same extent."""
    position = np.linspace(0, n_coarse - 1, n_out)
    lower = np.minimum(np.floor(position).astype(int), n_coarse - 2)
    frac = position - lower
    weights = np.zeros((n_out, n_coarse), np.float32)
    weights[np.arange(n_out), lower] = 1 - frac
    weights[np.arange(n_out), lower + 1] = frac
    return weights


def _smooth_displacement(shape, rng, amplitude_voxels, coarse: int = 4) -> np.ndarray:
    """A smooth random displacement field (3, X, Y, Z): coarse Gaussian noise, linearly upsampled;
    ``amplitude_voxels`` is one sd or one per axis."""
    field = rng.standard_normal((3, coarse, coarse, coarse)).astype(np.float32) * np.reshape(
        amplitude_voxels, (-1, 1, 1, 1)
    )
    wx, wy, wz = (_linear_upsampler(s, coarse) for s in shape)
    return np.einsum("cijk,xi,yj,zk->cxyz", field, wx, wy, wz, optimize=True)


def chromosome_seed(seed: int, c: int) -> int:
    """msprime's seed for chromosome ``c`` (it takes 1 to 2^32 - 1, and the mutations use this + 1):
    seed * 1000 + 17 c + 1 where that fits, as always; for larger seeds one drawn from (seed, c)."""
    value = seed * 1000 + 17 * c + 1
    if value <= 2**32 - 2:
        return value
    return int(np.random.SeedSequence([seed, c]).generate_state(1)[0]) % (2**32 - 2) + 1


def _write_genotypes(tmp: Path, config, rng: np.random.Generator):
    """Coalescent genotypes with missing calls -> genotypes.bed/.bim/.fam.

    Returns the true (variants, subjects) ALT dosages, the called ones (-1 missing), each
    subject's deme and the .bim table."""
    n, g = int(config.n_subjects), config.genotypes
    chromosomes = [
        simulate_chromosome(
            str(c + 1),
            n,
            g.chromosome_length,
            chromosome_seed(config.seed, c),
            g.demes,
            g.population_size,
            g.migration_rate,
            g.recombination_rate,
            g.mutation_rate,
            g.min_maf,
        )
        for c in tqdm(range(g.n_chromosomes), desc="genotypes", unit="chr")
    ]
    dosage = np.concatenate([c.dosages for c in chromosomes])
    # simulate_chromosome puts n // demes (+1 for the first n % demes) individuals in each deme, in order.
    deme = np.repeat(np.arange(g.demes), [len(x) for x in np.array_split(np.arange(n), g.demes)])
    order = rng.permutation(n)  # msprime lists deme 0 first; shuffled, sample order carries no ancestry
    dosage, deme = dosage[:, order], deme[order]
    observed = rng.random(dosage.shape) >= g.missing_rate
    called = np.where(observed, dosage, -1).astype(np.int8)
    bim = pd.DataFrame(
        {
            "chrom": np.concatenate([[c.name] * len(c.positions) for c in chromosomes]),
            "id": [f"{c.name}:{p}" for c in chromosomes for p in c.positions],
            "cm": 0.0,
            "pos": np.concatenate([c.positions for c in chromosomes]),
            "alt": np.concatenate([c.alt for c in chromosomes]),
            "ref": np.concatenate([c.ref for c in chromosomes]),
        }
    )
    bim.to_csv(tmp / "genotypes.bim", sep="\t", header=False, index=False)
    write_bed(tmp / "genotypes.bed", (encode_alt_dosages(called[i : i + 4096]) for i in range(0, len(bim), 4096)))
    return dosage, called, deme, bim


def subject_ids(n: int) -> np.ndarray:
    return np.array([f"sub{i + 1:05d}" for i in range(n)])


def _write_subjects(tmp: Path, config, called: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """Age, sex, site and genetic PCs -> genotypes.fam, covariates.tsv, subjects.tsv."""
    n, v = int(config.n_subjects), config.variation
    iid = subject_ids(n)
    sex = rng.integers(0, 2, n)  # 1 = male
    fam = pd.DataFrame(
        {"fid": iid, "iid": iid, "father": 0, "mother": 0, "sex": np.where(sex == 1, 1, 2), "phenotype": -9}
    )
    fam.to_csv(tmp / "genotypes.fam", sep=" ", header=False, index=False)
    age = np.clip(rng.normal(v.age_mean, v.age_sd, n), v.age_min, v.age_max).round(1)
    site = rng.choice(len(v.site_offsets), size=n, p=np.asarray(v.site_weights) / np.sum(v.site_weights))
    pcs = genetic_pcs(called, config.n_pcs, config.pc_max_variants, config.seed + 5)
    covariates = {"age": age, "sex": sex.astype(float)}
    for s in range(1, len(v.site_offsets)):
        covariates[f"site_{s + 1}"] = (site == s).astype(float)
    for k in range(config.n_pcs):
        covariates[f"PC{k + 1}"] = pcs[:, k]
    write_table(tmp / "covariates.tsv", iid, iid, covariates)
    subjects = pd.DataFrame(
        {"FID": iid, "IID": iid, "fa_path": [f"fa/{i}.nii.gz" for i in iid], "age": age, "sex": sex, "site": site + 1}
    )
    subjects.to_csv(tmp / "subjects.tsv", sep="\t", index=False)
    return subjects


def _nuisance(subjects: pd.DataFrame, deme: np.ndarray, phantom, v, rng: np.random.Generator):
    """Maps and per-subject coefficients of the non-genetic variation: a global offset by age,
    site and ancestry; tract-specific age decline and sex difference."""
    n = len(subjects)
    decades = (subjects.age.to_numpy() - 60.0) / 10.0
    sex = subjects.sex.to_numpy()
    site = subjects.site.to_numpy() - 1
    tract_slopes = np.array([t.age_slope for t in TRACTS])
    tract_coef = decades[:, None] * tract_slopes[None, :] + v.sex_effect * (sex[:, None] - 0.5) * np.ones(len(TRACTS))
    global_coef = (
        v.global_age_slope * decades
        + np.asarray(v.site_offsets)[site]
        + np.asarray(v.deme_offsets)[deme % len(v.deme_offsets)]
    )
    maps = np.concatenate([phantom.white_matter[None].astype(np.float32), phantom.tract_weight])
    head_scale = 1 + v.head_size_sex * (sex - 0.5) + rng.normal(0, v.head_size_sd, n)
    noise_scale = np.asarray(v.site_noise)[site] * v.noise_sd
    return maps, np.concatenate([global_coef[:, None], tract_coef], axis=1), head_scale, noise_scale


def _write_truth(
    tmp: Path, loci, factors, betas, freq, bim, pattern_share: np.ndarray, factor_coefs: np.ndarray, affine
) -> pd.DataFrame:
    """truth.tsv (one row per planted locus) and patterns.nii.gz (its spatial pattern, 4D)."""
    rows = []
    for j, locus in enumerate(loci):
        factor = factors[locus.factor]
        centre = np.array(np.unravel_index(np.abs(factor.pattern).argmax(), factor.pattern.shape))
        p = freq[locus.variant]
        rows.append(
            {
                "variant": bim.id.iloc[locus.variant],
                "chrom": bim.chrom.iloc[locus.variant],
                "pos": int(bim.pos.iloc[locus.variant]),
                "alt": bim.alt.iloc[locus.variant],
                "alt_freq": round(float(p), 4),
                "kind": factor.kind,
                "factor": factor.name,
                "tract": factor.tract,
                "pattern": j,
                "pattern_peak_voxel": ",".join(str(int(c)) for c in centre),
                "beta_fa_per_alt": float(betas[j]),
                "factor_sd": factor.sd,
                "factor_h2": factor.h2,
                "var_explained": round(float(locus.share), 6),
                "factor_share": round(float(betas[j] ** 2 * 2 * p * (1 - p) / factor_coefs[:, locus.factor].var()), 6),
                "pattern_variance_share": round(float(pattern_share[locus.factor]), 6),
            }
        )
    truth = pd.DataFrame(rows)
    truth.to_csv(tmp / "truth.tsv", sep="\t", index=False)
    patterns = (
        np.stack([factors[locus.factor].pattern for locus in loci], axis=-1)
        if loci
        else np.zeros((*factors[0].pattern.shape, 0))
    )
    save_nifti(tmp / "patterns.nii.gz", patterns, affine)
    return truth


def _write_fa_maps(
    tmp: Path, config, phantom, maps: np.ndarray, coefs: np.ndarray, head_scale, noise_scale, affine, deformations=()
):
    """One FA map per subject: the template plus coefficient-weighted maps, warped by head size and
    a smooth deformation, with voxel noise. ``deformations`` are (column of ``coefs``, displacement
    per unit coefficient) of the ``shape`` factors: those columns move the map's content instead of
    adding their map. Returns the voxel-wise variance over subjects."""
    shape = tuple(int(s) for s in config.shape)
    iid = subject_ids(len(coefs))
    (tmp / "fa").mkdir()
    grid_index = np.indices(shape, dtype=np.float32)
    centre_index = (np.asarray(shape, np.float32)[:, None, None, None] - 1) / 2
    template, brain = phantom.fa, phantom.brain.astype(np.float32)
    total, total2 = np.zeros(shape), np.zeros(shape)
    deformation_voxels = config.variation.deformation_mm / (MNI_FOV_MM / np.asarray(shape))
    # Compression runs in writer threads (zlib releases the GIL) while the next volume is made.
    with ThreadPoolExecutor(max_workers=2) as writers:
        pending = []
        for i in tqdm(range(len(coefs)), desc="FA maps", unit="vol", mininterval=1.0):
            subject_rng = np.random.default_rng([config.seed, i])
            linear = coefs[i]
            if deformations:
                linear = coefs[i].copy()
                linear[[column for column, _ in deformations]] = 0.0
            native = template + (linear @ maps).reshape(shape)
            sample_at = centre_index + (grid_index - centre_index) / head_scale[i]
            sample_at += _smooth_displacement(shape, subject_rng, deformation_voxels)
            for column, displacement in deformations:  # F(x - c d(x)): the content moves by c d
                sample_at -= coefs[i, column] * displacement
            warped = map_coordinates(native, sample_at, order=1, mode="constant", cval=0.0)
            inside = map_coordinates(brain, sample_at, order=1, mode="constant", cval=0.0) >= 0.5
            noisy = warped + subject_rng.normal(0, noise_scale[i], shape).astype(np.float32)
            fa = np.where(inside, np.clip(noisy, 0.01, 0.98), 0.0).astype(np.float32)
            total += fa
            total2 += fa.astype(np.float64) ** 2
            pending.append(writers.submit(save_nifti, tmp / "fa" / f"{iid[i]}.nii.gz", fa, affine))
            if len(pending) > 8:
                pending.pop(0).result()
        for future in pending:
            future.result()
    n = len(coefs)
    return total2 / n - (total / n) ** 2


def _deformations(factors, first_column: int) -> list:
    """(column of the coefficients, displacement per unit coefficient) of each ``shape`` factor; the
    factors' coefficients follow ``first_column`` nuisance columns."""
    return [(first_column + i, f.displacement) for i, f in enumerate(factors) if f.displacement is not None]


def simulate_cohort(config, out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Simulate the cohort described by ``config`` (see configs/sim.py) into ``out``."""
    rng = np.random.default_rng(config.seed)
    shape = tuple(int(s) for s in config.shape)
    with atomic_dir(out, COHORT, overwrite=overwrite) as tmp:
        dosage, called, deme, bim = _write_genotypes(tmp, config, rng)
        subjects = _write_subjects(tmp, config, called, rng)
        del called
        phantom = build_phantom(shape, seed=config.seed)
        affine = grid_affine(shape)
        save_nifti(tmp / "atlas.nii.gz", phantom.atlas.astype(np.float32), affine)
        pd.DataFrame({"label": np.arange(1, len(TRACTS) + 1), "tract": [t.name for t in TRACTS]}).to_csv(
            tmp / "atlas_labels.tsv", sep="\t", index=False
        )

        freq = dosage.mean(axis=1) / 2
        factors = spatial_factors(phantom, config, rng)
        loci = choose_loci(factors, np.minimum(freq, 1 - freq), config, rng)
        causal: list[np.ndarray] = []
        factor_coefs, genetic_values = factor_coefficients(factors, dosage, freq, config, rng, causal_out=causal)
        maps, nuisance_coefs, head_scale, noise_scale = _nuisance(subjects, deme, phantom, config.variation, rng)
        maps = np.concatenate([maps, np.stack([f.pattern for f in factors])]) * (phantom.fa > 0)
        background = [
            oracle_background_variance(
                factors[locus.factor].pattern,
                maps,
                np.concatenate([nuisance_coefs, factor_coefs], axis=1),
                phantom.brain,
                float(np.mean(noise_scale**2)),
            )
            for locus in loci
        ]
        betas = add_loci(loci, factors, factor_coefs, genetic_values, background, dosage, freq)
        iid = subject_ids(int(config.n_subjects))
        write_table(tmp / "genetic_values.tsv", iid, iid, {f.name: genetic_values[:, i] for i, f in enumerate(factors)})
        maps = maps.reshape(len(maps), -1)
        coefs = np.concatenate([nuisance_coefs, factor_coefs], axis=1).astype(np.float32)
        deformations = _deformations(factors, first_column=nuisance_coefs.shape[1])
        variance = _write_fa_maps(tmp, config, phantom, maps, coefs, head_scale, noise_scale, affine, deformations)
        # Share of the image variance (summed over voxels) that each factor's pattern holds.
        pattern_share = np.array(
            [factor_coefs[:, i].var() * float((f.pattern**2).sum()) for i, f in enumerate(factors)]
        )
        pattern_share /= variance.sum()
        _write_truth(tmp, loci, factors, betas, freq, bim, pattern_share, factor_coefs, affine)
        background = np.concatenate([causal[f] for f in sorted({locus.factor for locus in loci})] or [[]])
        genes, gene_sets = gene_annotation(bim, [locus.variant for locus in loci], background, int(config.seed))
        write_gene_annotation(tmp, genes, gene_sets)
        record = {
            "format_version": 2,
            "code_version": wm_jax.__version__,
            "config": config.to_dict(),
            "n_subjects": int(config.n_subjects),
            "n_variants": len(bim),
            "shape": list(shape),
            "n_causal": len(loci),
            "factors": [
                {
                    "name": f.name,
                    "kind": f.kind,
                    "tract": f.tract,
                    "sd": f.sd,
                    "h2": f.h2,
                    "h2_on_simulated_genome": f.h2 * config.genetics.on_genome_share,
                    "variance_share": round(float(pattern_share[i]), 6),
                }
                for i, f in enumerate(factors)
            ],
        }
        (tmp / "simulation.json").write_text(json.dumps(record, indent=2, default=str))
    log.info(
        "simulate: %d subjects, %d variants on %d chromosomes, %d factors, %d planted loci -> %s",
        config.n_subjects,
        len(bim),
        config.genotypes.n_chromosomes,
        len(factors),
        len(loci),
        out,
    )
    return Path(out)
