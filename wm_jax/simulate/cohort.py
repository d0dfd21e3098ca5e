"""`wm-jax simulate`: write a synthetic UK-Biobank-like imaging-genetics cohort.

Output directory:
  genotypes.bed/.bim/.fam   PLINK 1, SNP-major; .bim 5th column = derived (ALT), 6th = ancestral (REF)
  fa/<IID>.nii.gz           one FA map per subject (float32, RAS affine, FOV 182x218x182 mm)
  atlas.nii.gz, atlas_labels.tsv   the tract atlas of the template
  subjects.tsv              FID IID fa_path age sex site
  covariates.tsv            FID IID age sex site_2.. PC1..PC10
  truth.tsv                 the causal variants: tract, pattern centre and width, effect, h2
  simulation.json           the configuration and code version that made it
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

import wm_jax
from wm_jax.data.nifti import save_nifti
from wm_jax.data.plink import encode_alt_dosages, write_bed
from wm_jax.data.tables import write_table
from wm_jax.errors import atomic_dir
from wm_jax.simulate.genotypes import genetic_pcs, simulate_chromosome
from wm_jax.simulate.phantom import TRACTS, build_phantom, normalised_coordinates

log = logging.getLogger("wm_jax")

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


def _smooth_displacement(shape, rng, amplitude_voxels: float, coarse: int = 4) -> np.ndarray:
    """A smooth random displacement field (3, X, Y, Z): coarse Gaussian noise, linearly upsampled."""
    field = rng.standard_normal((3, coarse, coarse, coarse)).astype(np.float32) * amplitude_voxels
    wx, wy, wz = (_linear_upsampler(s, coarse) for s in shape)
    return np.einsum("cijk,xi,yj,zk->cxyz", field, wx, wy, wz, optimize=True)


def simulate_cohort(config, out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Simulate the cohort described by ``config`` (see configs/sim_*.py) into ``out``."""
    rng = np.random.default_rng(config.seed)
    n = int(config.n_subjects)
    shape = tuple(int(s) for s in config.shape)
    g = config.genotypes
    with atomic_dir(out, overwrite=overwrite, command="simulate") as tmp:
        # Genotypes, one coalescent simulation per chromosome.
        chromosomes = [
            simulate_chromosome(str(c + 1), n, g.chromosome_length, config.seed * 1000 + 17 * c + 1, g.demes,
                                g.population_size, g.migration_rate, g.recombination_rate, g.mutation_rate, g.min_maf)
            for c in tqdm(range(g.n_chromosomes), desc="genotypes", unit="chr")
        ]
        dosage = np.concatenate([c.dosages for c in chromosomes])  # (M, N) true genotypes
        n_variants = dosage.shape[0]
        # simulate_chromosome puts n // demes (+1 for the first n % demes) individuals in each deme, in order.
        deme = np.repeat(np.arange(g.demes), [len(x) for x in np.array_split(np.arange(n), g.demes)])
        # msprime lists deme 0's individuals first; shuffle so that sample order carries no ancestry.
        order = rng.permutation(n)
        dosage, deme = dosage[:, order], deme[order]
        observed = rng.random(dosage.shape) >= g.missing_rate
        called = np.where(observed, dosage, -1).astype(np.int8)

        iid = np.array([f"sub{i + 1:05d}" for i in range(n)])
        bim = pd.DataFrame({
            "chrom": np.concatenate([[c.name] * len(c.positions) for c in chromosomes]),
            "id": [f"{c.name}:{p}" for c in chromosomes for p in c.positions],
            "cm": 0.0,
            "pos": np.concatenate([c.positions for c in chromosomes]),
            "alt": np.concatenate([c.alt for c in chromosomes]),
            "ref": np.concatenate([c.ref for c in chromosomes]),
        })
        sex = rng.integers(0, 2, n)  # 1 = male
        fam = pd.DataFrame({"fid": iid, "iid": iid, "father": 0, "mother": 0, "sex": np.where(sex == 1, 1, 2), "phenotype": -9})
        bim.to_csv(tmp / "genotypes.bim", sep="\t", header=False, index=False)
        fam.to_csv(tmp / "genotypes.fam", sep=" ", header=False, index=False)
        write_bed(tmp / "genotypes.bed", (encode_alt_dosages(called[i: i + 4096]) for i in range(0, n_variants, 4096)))

        # Covariates.
        v = config.variation
        age = np.clip(rng.normal(v.age_mean, v.age_sd, n), v.age_min, v.age_max).round(1)
        site = rng.choice(len(v.site_offsets), size=n, p=np.asarray(v.site_weights) / np.sum(v.site_weights))
        pcs = genetic_pcs(called, config.n_pcs, config.pc_max_variants, config.seed + 5)
        covariates = {"age": age, "sex": sex.astype(float)}
        for s in range(1, len(v.site_offsets)):
            covariates[f"site_{s + 1}"] = (site == s).astype(float)
        for k in range(config.n_pcs):
            covariates[f"PC{k + 1}"] = pcs[:, k]
        write_table(tmp / "covariates.tsv", iid, iid, covariates)
        pd.DataFrame({"FID": iid, "IID": iid, "fa_path": [f"fa/{i}.nii.gz" for i in iid], "age": age,
                      "sex": sex, "site": site + 1}).to_csv(tmp / "subjects.tsv", sep="\t", index=False)

        # Template and atlas.
        phantom = build_phantom(shape, seed=config.seed)
        affine = grid_affine(shape)
        save_nifti(tmp / "atlas.nii.gz", phantom.atlas.astype(np.float32), affine)
        pd.DataFrame({"label": np.arange(1, len(TRACTS) + 1), "tract": [t.name for t in TRACTS]}).to_csv(
            tmp / "atlas_labels.tsv", sep="\t", index=False)

        # Causal variants: each changes FA in a spatially local part of one tract.
        e = config.effects
        freq = dosage.mean(axis=1) / 2
        maf = np.minimum(freq, 1 - freq)
        candidates = np.flatnonzero(maf >= e.min_causal_maf)
        segments = np.array_split(candidates, e.n_causal)  # spread the causal variants along the genome
        causal = np.array([rng.choice(s) for s in segments if len(s)])
        coords = normalised_coordinates(shape)
        patterns, truth = [], []
        for j, variant in enumerate(causal):
            t = j % len(TRACTS) if e.tracts_round_robin else rng.integers(len(TRACTS))
            tract = TRACTS[t]
            points = np.asarray(tract.points)
            k = rng.integers(1, len(points) - 1) if len(points) > 2 else 0
            centre = points[k] + rng.uniform(-0.3, 0.3) * (points[k + 1] - points[k])
            width = e.pattern_width
            distance2 = ((coords - centre[:, None, None, None].astype(np.float32)) ** 2).sum(0)
            pattern = phantom.tract_weight[t] * np.exp(-0.5 * distance2 / width**2)
            patterns.append(pattern / pattern.max())
            p = freq[variant]
            beta = rng.choice([-1, 1]) * np.sqrt(e.h2_per_variant / (1 - e.h2_per_variant)) * v.tract_random_sd / np.sqrt(2 * p * (1 - p))
            centre_voxel = (centre + 1) / 2 * (np.asarray(shape) - 1)
            truth.append({"variant": bim.id.iloc[variant], "chrom": bim.chrom.iloc[variant], "pos": int(bim.pos.iloc[variant]),
                          "alt": bim.alt.iloc[variant], "alt_freq": round(float(p), 4), "tract": tract.name,
                          "pattern_centre_voxel": ",".join(f"{c:.1f}" for c in centre_voxel),
                          "pattern_width_voxels": round(float(width / 2 * (shape[0] - 1)), 2),
                          "beta_fa_per_alt": float(beta), "h2": e.h2_per_variant})
        pd.DataFrame(truth).to_csv(tmp / "truth.tsv", sep="\t", index=False)
        betas = np.array([row["beta_fa_per_alt"] for row in truth])

        # Per-subject coefficients of each component map (all subjects at once).
        n_tracts = len(TRACTS)
        tract_slopes = np.array([t.age_slope for t in TRACTS])
        decades = (age - 60.0) / 10.0
        tract_coef = (decades[:, None] * tract_slopes[None, :] + v.sex_effect * (sex[:, None] - 0.5)
                      + rng.normal(0, v.tract_random_sd, (n, n_tracts)))
        genetic_coef = (dosage[causal].T - 2 * freq[causal][None, :]) * betas[None, :]
        global_coef = (v.global_age_slope * decades + np.asarray(v.site_offsets)[site]
                       + np.asarray(v.deme_offsets)[deme % len(v.deme_offsets)])
        maps = np.concatenate([phantom.white_matter[None].astype(np.float32), phantom.tract_weight,
                               np.stack(patterns) if patterns else np.zeros((0, *shape), np.float32)]).reshape(-1, int(np.prod(shape)))
        coefs = np.concatenate([global_coef[:, None], tract_coef, genetic_coef], axis=1).astype(np.float32)
        head_scale = 1 + v.head_size_sex * (sex - 0.5) + rng.normal(0, v.head_size_sd, n)
        noise_scale = np.asarray(v.site_noise)[site] * v.noise_sd

        (tmp / "fa").mkdir()
        grid_index = np.indices(shape, dtype=np.float32)
        centre_index = (np.asarray(shape, np.float32)[:, None, None, None] - 1) / 2
        template = phantom.fa
        brain = phantom.brain.astype(np.float32)
        from scipy.ndimage import map_coordinates

        # Compression runs in writer threads (zlib releases the GIL) while the next volume is made.
        writers = ThreadPoolExecutor(max_workers=2)
        pending = []
        for i in tqdm(range(n), desc="FA maps", unit="vol", mininterval=1.0):
            subject_rng = np.random.default_rng([config.seed, i])
            native = template + (coefs[i] @ maps).reshape(shape) * (template > 0)
            sample_at = centre_index + (grid_index - centre_index) / head_scale[i]
            sample_at += _smooth_displacement(shape, subject_rng, v.deformation_voxels)
            warped = map_coordinates(native, sample_at, order=1, mode="constant", cval=0.0)
            inside = map_coordinates(brain, sample_at, order=1, mode="constant", cval=0.0) >= 0.5
            noisy = warped + subject_rng.normal(0, noise_scale[i], shape).astype(np.float32)
            fa = np.where(inside, np.clip(noisy, 0.01, 0.98), 0.0).astype(np.float32)
            pending.append(writers.submit(save_nifti, tmp / "fa" / f"{iid[i]}.nii.gz", fa, affine))
            if len(pending) > 8:
                pending.pop(0).result()
        for future in pending:
            future.result()
        writers.shutdown()

        record = {"format_version": 1, "code_version": wm_jax.__version__, "config": config.to_dict(),
                  "n_subjects": n, "n_variants": int(n_variants), "shape": list(shape), "n_causal": len(causal)}
        (tmp / "simulation.json").write_text(json.dumps(record, indent=2, default=str))
    log.info("simulate: %d subjects, %d variants on %d chromosomes, %d causal -> %s",
             n, n_variants, g.n_chromosomes, len(causal), out)
    return Path(out)
