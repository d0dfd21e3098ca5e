import json

import nibabel as nib
import numpy as np
import pandas as pd

from wm_jax.config import apply_overrides, load_config
from wm_jax.data.plink import PlinkDataset
from wm_jax.simulate.cohort import simulate_cohort
from wm_jax.simulate.phantom import TRACTS, build_phantom


def _simulate(tmp_path, name, **overrides):
    config = load_config("sim:tiny")
    config = apply_overrides(config, [f"--config.{k}={v}" for k, v in overrides.items()])
    config.n_subjects = 41
    config.genotypes.chromosome_length = 3e5
    return simulate_cohort(config, tmp_path / name)


def test_simulation_is_deterministic_by_seed(tmp_path):
    a = _simulate(tmp_path, "a")
    b = _simulate(tmp_path, "b")
    c = _simulate(tmp_path, "c", seed=2)
    assert (a / "genotypes.bed").read_bytes() == (b / "genotypes.bed").read_bytes()
    assert (a / "covariates.tsv").read_text() == (b / "covariates.tsv").read_text()
    assert (a / "truth.tsv").read_text() == (b / "truth.tsv").read_text()
    fa_a = nib.load(a / "fa" / "sub00007.nii.gz").get_fdata()
    fa_b = nib.load(b / "fa" / "sub00007.nii.gz").get_fdata()
    fa_c = nib.load(c / "fa" / "sub00007.nii.gz").get_fdata()
    np.testing.assert_array_equal(fa_a, fa_b)
    assert not np.array_equal(fa_a, fa_c)
    assert (a / "genotypes.bed").read_bytes() != (c / "genotypes.bed").read_bytes()


def test_cohort_files_and_contents(tiny_cohort):
    record = json.loads((tiny_cohort / "simulation.json").read_text())
    n = record["n_subjects"]
    subjects = pd.read_csv(tiny_cohort / "subjects.tsv", sep="\t")
    covariates = pd.read_csv(tiny_cohort / "covariates.tsv", sep="\t")
    truth = pd.read_csv(tiny_cohort / "truth.tsv", sep="\t")
    assert len(subjects) == len(covariates) == n == 103
    assert list(covariates.columns[:4]) == ["FID", "IID", "age", "sex"]
    assert [f"PC{k}" for k in range(1, 11)] == list(covariates.columns[-10:])
    assert subjects.age.between(45, 80).all() and set(subjects.sex) == {0, 1}
    assert len(truth) == record["n_causal"] >= 1
    data = PlinkDataset(tiny_cohort / "genotypes")
    assert data.n_samples == n and data.n_variants == record["n_variants"]
    assert set(truth.variant) <= set(data.bim.id)
    dosages = data.bed.dosages(slice(None))
    missing = np.isnan(dosages).mean()
    assert 0.002 < missing < 0.03  # the tiny preset's missing rate is 1%
    freq = np.nanmean(dosages, axis=1) / 2
    assert np.minimum(freq, 1 - freq).min() >= 0.004  # MAF >= 0.5% before missingness
    # PCs carry the simulated population structure: more than 3 chromosomes' worth of noise.
    assert np.allclose(covariates[[f"PC{k}" for k in range(1, 11)]].std(), 1, atol=0.05)


def test_fa_maps_look_like_fa(tiny_cohort):
    atlas = nib.load(tiny_cohort / "atlas.nii.gz")
    labels = pd.read_csv(tiny_cohort / "atlas_labels.tsv", sep="\t")
    assert len(labels) >= 8 and {"cc_genu", "cc_body", "cc_splenium", "cst_l", "cst_r"} <= set(labels.tract)
    present = set(np.unique(atlas.get_fdata()).astype(int)) - {0}
    assert present == set(labels.label)
    image = nib.load(tiny_cohort / "fa" / "sub00001.nii.gz")
    assert image.shape == atlas.shape == (24, 28, 24)
    assert image.get_data_dtype() == np.float32
    np.testing.assert_allclose(np.abs(np.diag(image.affine)[:3]), [182 / 24, 218 / 28, 182 / 24])
    fa = image.get_fdata()
    assert fa.min() == 0 and fa.max() < 1
    in_tracts = fa[atlas.get_fdata() > 0]
    assert 0.4 < np.median(in_tracts) < 0.8


def test_phantom_tissue_values():
    phantom = build_phantom((48, 56, 48), seed=0)
    cortex = phantom.brain & ~phantom.white_matter & (phantom.atlas == 0)
    tracts = phantom.atlas > 0
    assert np.percentile(phantom.fa[cortex], 5) >= 0.1 and np.percentile(phantom.fa[cortex], 50) <= 0.3
    assert 0.35 <= np.percentile(phantom.fa[tracts], 5) and np.percentile(phantom.fa[tracts], 99) <= 0.85
    assert (phantom.fa[~phantom.brain] == 0).all()
    csf = phantom.fa[phantom.brain & (phantom.fa < 0.1)]
    assert csf.size > 0 and csf.max() < 0.1
    assert len(TRACTS) >= 8 and all((phantom.atlas == k + 1).sum() > 20 for k in range(len(TRACTS)))


def _shape_factors():
    from wm_jax.config import load_config
    from wm_jax.simulate.genetics import spatial_factors

    config = load_config("sim:tiny")
    config.factors.n_shape = 2
    phantom = build_phantom((24, 28, 24), seed=1)
    factors = spatial_factors(phantom, config, np.random.default_rng(0))
    return phantom, [f for f in factors if f.kind == "shape"]


def test_shape_factors_deform_smoothly_and_their_pattern_is_the_first_order_change():
    """A shape factor moves the image's content by a smooth field (neighbouring voxels move alike, and
    at 3 SD of its coefficient the map x -> x - c d(x) does not fold), and resampling the template
    by it changes FA as its pattern says, to first order."""
    from scipy.ndimage import map_coordinates

    phantom, shapes = _shape_factors()
    assert [f.name.split("_")[1] for f in shapes] == ["displace", "thicken"]
    grid = np.indices(phantom.fa.shape, dtype=np.float32)
    for factor in shapes:
        d = factor.displacement
        assert np.abs(factor.pattern).max() == 1.0 and factor.tract in {t.name for t in TRACTS}
        c = 3 * 1.3 * factor.sd  # 3 SD at the largest sd spread
        step = max(np.abs(np.diff(d, axis=a)).max() for a in (1, 2, 3))
        assert c * np.sqrt((d**2).sum(0)).max() > 0.5  # it moves the content by a good part of a voxel
        assert c * step < 0.8  # and neighbouring voxels move alike (measured 0.75 at 24x28x24, thicken)
        jacobian = np.eye(3)[:, :, None, None, None] - c * np.stack([np.gradient(d[i]) for i in range(3)])
        assert np.linalg.det(np.moveaxis(jacobian, (0, 1), (-2, -1))).min() > 0
        c = factor.sd
        moved = map_coordinates(phantom.fa, grid - c * d, order=1, mode="nearest") - phantom.fa
        brain = phantom.brain
        # 0.61-0.68 measured, at any c down to 0.2 SD: linear resampling takes one-sided differences of
        # the voxel-sharp template where the pattern takes central ones. Unrelated or sign-flipped: <= 0.
        assert np.corrcoef(moved[brain], factor.pattern[brain])[0, 1] > 0.5
        assert np.abs(moved).max() > 0.3 * c  # the deformation moves FA by about c x pattern


def test_shape_loci_are_planted_recorded_and_found_by_their_oracle(tmp_path):
    """With shape factors and loci switched on, truth.tsv carries kind `shape` (chrom, pos, pattern),
    and each locus's oracle phenotype (the least-squares coefficient of the FA maps on its pattern)
    follows the planted variant's dosage."""
    out = _simulate(
        tmp_path, "shape", **{"factors.n_shape": 2, "loci.kinds": "('shape',)", "loci.per_kind": 2, "loci.share": 0.5}
    )
    truth = pd.read_csv(out / "truth.tsv", sep="\t")
    assert list(truth.kind) == ["shape", "shape"] and truth.pos.gt(0).all() and truth.chrom.notna().all()
    assert sorted(truth.factor.str.split("_").str[1]) == ["displace", "thicken"]
    patterns = nib.load(out / "patterns.nii.gz").get_fdata()
    subjects = pd.read_csv(out / "subjects.tsv", sep="\t")
    maps = np.stack([nib.load(out / p).get_fdata() for p in subjects.fa_path])
    brain = maps.min(axis=0) > 0
    data = PlinkDataset(out / "genotypes")
    for j, row in truth.iterrows():
        p = patterns[..., j][brain]
        x = maps[:, brain] - maps[:, brain].mean(axis=1, keepdims=True)
        oracle = x @ p / (p @ p)
        dosage = data.dosages(np.flatnonzero(data.bim.id == row.variant))[0]
        seen = ~np.isnan(dosage)
        r = np.corrcoef(oracle[seen], dosage[seen])[0, 1] * np.sign(row.beta_fa_per_alt)
        assert r > 0.4, (row.factor, r)
