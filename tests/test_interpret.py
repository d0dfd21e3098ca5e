"""PerDI: paired t against NumPy, enrichment p against the exact hypergeometric tail, and a hand-made
decoder whose dimensions move known tracts."""

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from wm_jax.interpret.maths import paired_t_maps, perdi, tract_enrichment
from wm_jax.stage_options import PerdiOptions

SHAPE = (10, 12, 10)


def _atlas():
    atlas = np.zeros(SHAPE, np.int32)
    atlas[1:4, 2:10, 2:8] = 1
    atlas[5:9, 1:5, 1:9] = 2
    atlas[5:9, 7:11, 3:7] = 3
    labels = pd.DataFrame({"label": [1, 2, 3], "tract": ["alpha", "beta", "gamma"]})
    return atlas, labels


def _decoder(atlas, moved_by):
    """Dimension d changes the voxels of tract moved_by[d], nonlinearly (so differences vary by subject)."""
    masks = jnp.asarray(np.stack([(atlas == label) for label in moved_by]), jnp.float32)
    background = jnp.asarray(np.random.default_rng(5).standard_normal(SHAPE), jnp.float32) * 0.1

    def decode(z):
        return (
            background[None]
            + jnp.einsum("nd,dxyz->nxyz", jnp.tanh(z), masks)
            + 0.05 * jnp.sin(z[:, :1, None, None] * 3)
        )

    return decode


def test_paired_t_matches_numpy_float64():
    atlas, _ = _atlas()
    decode = _decoder(atlas, [2, 3, 1])
    codes = np.random.default_rng(0).standard_normal((23, 3)).astype(np.float32)
    step = codes.std(axis=0, ddof=1)
    t = paired_t_maps(decode, codes, step, PerdiOptions(dims_per_chunk=2, subjects_per_chunk=5))
    base = np.asarray(decode(jnp.asarray(codes)), np.float64)
    for d in range(3):
        moved = codes.copy()
        moved[:, d] += step[d]
        diff = np.asarray(decode(jnp.asarray(moved)), np.float64) - base
        expected = stats.ttest_1samp(diff, 0.0, axis=0).statistic
        constant = diff.std(axis=0) < 1e-7  # voxels the dimension does not move: t = 0 by definition
        np.testing.assert_allclose(t[d][~constant], expected[~constant], rtol=2e-3, atol=2e-3)
        assert np.all(t[d][constant] == 0)


def test_enrichment_p_follows_the_exact_hypergeometric_tail():
    rng = np.random.default_rng(1)
    atlas, labels = _atlas()
    mask = np.ones(SHAPE, bool)
    score = rng.random(SHAPE) + 0.8 * (atlas == 2)
    table = tract_enrichment(score, mask, atlas, labels, 0.05, 20000, np.random.default_rng(2))
    n_top = int(round(0.05 * mask.sum()))
    for row in table.itertuples():
        in_tract = int((atlas == row.label).sum())
        exact = stats.hypergeom.sf(row.n_top - 1, mask.sum(), in_tract, n_top)
        assert abs(row.p_perm - exact) < 4 * np.sqrt(max(exact, 1e-4) / 20000) + 1e-4, (row, exact)
    assert table.iloc[0].tract == "beta" and table.iloc[0].p_perm < 1e-3


def test_hand_made_decoder_ranks_its_tracts_first():
    atlas, labels = _atlas()
    moved_by = [3, 1, 2]
    decode = _decoder(atlas, moved_by)
    codes = np.random.default_rng(0).standard_normal((40, 3)).astype(np.float32)
    mask = atlas > 0
    mask[0] = True  # some background inside the mask
    maps, enrichment = perdi(
        decode,
        codes,
        mask,
        atlas,
        labels,
        voxel_mm=np.array([2.0, 2.0, 2.0]),
        options=PerdiOptions(fwhm_mm=3.0, top_fraction=0.05, n_permutations=2000),
    )
    assert maps.shape == (3, *SHAPE)
    assert np.all(maps[:, ~mask] == 0)
    for d, label in enumerate(moved_by):
        first = enrichment[(enrichment.dimension == d + 1) & (enrichment["rank"] == 1)].iloc[0]
        assert first.label == label, enrichment[enrichment.dimension == d + 1]
        assert first.p_perm < 0.01


def test_too_few_subjects_is_an_error():
    atlas, _ = _atlas()
    with pytest.raises(ValueError, match="at least 3"):
        paired_t_maps(_decoder(atlas, [1]), np.zeros((2, 1), np.float32), np.ones(1, np.float32))


def test_mean_fa_undoes_each_volumes_z_score():
    from wm_jax.brain_maps import mean_fa
    from wm_jax.data.store import zscore_nonzero

    rng = np.random.default_rng(3)
    fa = rng.uniform(0.2, 0.8, (5, *SHAPE)) * (rng.random((5, *SHAPE)) > 0.3)
    normalised = [zscore_nonzero(v) for v in fa]
    store = _Store(
        np.stack([z for z, _, _ in normalised]),
        pd.DataFrame({"nonzero_mean": [m for _, m, _ in normalised], "nonzero_sd": [s for _, _, s in normalised]}),
    )
    np.testing.assert_allclose(mean_fa(store), fa.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(mean_fa(store, n_subjects=2), fa[:2].mean(axis=0), atol=1e-5)


class _Store:
    """A stand-in volume store: volumes, index, and its length."""

    def __init__(self, volumes, index):
        self.volumes, self.index = volumes, index

    def __len__(self):
        return len(self.volumes)


def test_perdi_figures_are_nilearn_stat_maps_in_world_coordinates_with_the_tract_named(tmp_path, monkeypatch):
    """Each UDIP: a stat map over the mean FA through the map's peak (in mm, through the grid's
    affine) and a glass brain, both drawn by nilearn, titled with the tract, saying so in the PNG."""
    from nilearn import plotting
    from PIL import Image

    from wm_jax.brain_maps import image, perdi_figures
    from wm_jax.simulate.cohort import grid_affine

    atlas, _ = _atlas()
    mask = atlas > 0
    rng = np.random.default_rng(4)
    maps = np.stack([(atlas == label) * 3.0 + rng.random(SHAPE) for label in (2, 3)]).astype(np.float32) * mask
    maps[0][6, 3, 4] = 9.0  # the peak of UDIP1, inside tract beta
    background = rng.uniform(0.2, 0.6, SHAPE).astype(np.float32) * mask
    affine = grid_affine(SHAPE)
    calls = []
    for name in ("plot_stat_map", "plot_glass_brain"):

        def spy(img, *args, _real=getattr(plotting, name), _name=name, **kwargs):
            calls.append((_name, img, kwargs))
            return _real(img, *args, **kwargs)

        monkeypatch.setattr(plotting, name, spy)
    titles = ["UDIP1: top tract beta (enrichment x3.0, p=0.001)", "UDIP2: top tract gamma (enrichment x2.0, p=0.01)"]
    written = perdi_figures(tmp_path, maps, mask, affine, image(background, affine), titles)

    assert [p.name for p in written] == ["UDIP1.png", "UDIP1_glass.png", "UDIP2.png", "UDIP2_glass.png"]
    assert [c[0] for c in calls] == ["plot_stat_map", "plot_glass_brain"] * 2
    for path, (name, img, kwargs) in zip(written, calls):
        d = int(path.stem[4]) - 1
        text = Image.open(path).text
        assert text["Title"] == titles[d] == kwargs["title"] and ("beta" if d == 0 else "gamma") in text["Title"]
        assert text["Software"].startswith("nilearn ") and name in text["Software"] and "|t|" in text["Comment"]
        np.testing.assert_array_equal(img.affine, affine)
        np.testing.assert_array_equal(np.asarray(img.dataobj), maps[d])
        pixels = np.asarray(Image.open(path).convert("RGB"), np.int32)
        assert pixels.shape[1] > 400 and (pixels[..., 0] - pixels[..., 2] > 120).sum() > 50  # the map's hot colours
    stat_kwargs = calls[0][2]
    np.testing.assert_array_equal(np.asarray(stat_kwargs["bg_img"].dataobj), background)
    np.testing.assert_allclose(stat_kwargs["cut_coords"], (affine @ [6, 3, 4, 1])[:3])


def test_perdi_figures_drawn_by_worker_processes_are_the_same_bytes(tmp_path):
    """Many UDIPs are drawn by worker processes: every PNG is byte for byte the one drawn in this
    process, each in its own UDIP's file; a worker that fails fails the call, saying so."""
    from wm_jax.brain_maps import image, perdi_figures
    from wm_jax.simulate.cohort import grid_affine

    atlas, _ = _atlas()
    mask = atlas > 0
    rng = np.random.default_rng(5)
    maps = np.stack([(atlas == label) * 3.0 + rng.random(SHAPE) for label in (1, 2, 3)]).astype(np.float32) * mask
    affine = grid_affine(SHAPE)
    background = image(rng.uniform(0.2, 0.6, SHAPE).astype(np.float32) * mask, affine)
    titles = [f"UDIP{d + 1}: top tract {name}" for d, name in enumerate(("alpha", "beta", "gamma"))]
    here, workers = tmp_path / "here", tmp_path / "workers"
    here.mkdir(), workers.mkdir()
    expected = perdi_figures(here, maps, mask, affine, background, titles, workers=1)
    written = perdi_figures(workers, maps, mask, affine, background, titles, workers=2)
    assert [p.name for p in written] == [p.name for p in expected] == sorted(p.name for p in workers.iterdir())
    for ours, theirs in zip(written, expected):
        assert ours.read_bytes() == theirs.read_bytes()
    assert len({p.read_bytes() for p in written}) == 6  # six different figures, not one six times
    with pytest.raises(RuntimeError, match="drawing worker failed"):
        perdi_figures(tmp_path / "missing", maps, mask, affine, background, titles, workers=2)


def test_a_template_background_is_an_fa_map_on_any_grid(tmp_path):
    """--background: a 3D FA map on another grid is taken as it is (nilearn resamples it); a 4D
    image or values outside [0, 1] are one error naming the file."""
    import nibabel as nib

    from wm_jax.brain_maps import template_image
    from wm_jax.errors import InputError

    affine = np.diag([1.25, 1.25, 1.25, 1.0])
    fa = np.random.default_rng(5).uniform(0.1, 0.8, (29, 35, 29)).astype(np.float32)
    nib.save(nib.Nifti1Image(fa, affine), tmp_path / "template.nii.gz")
    img = template_image(tmp_path / "template.nii.gz")
    np.testing.assert_array_equal(img.affine, affine)
    np.testing.assert_allclose(np.asarray(img.dataobj), fa)
    nib.save(nib.Nifti1Image(np.stack([fa, fa], -1), affine), tmp_path / "four_d.nii.gz")
    with pytest.raises(InputError, match=r"four_d\.nii\.gz.*expected a 3D FA map"):
        template_image(tmp_path / "four_d.nii.gz")
    nib.save(nib.Nifti1Image(fa * 3, affine), tmp_path / "not_fa.nii.gz")
    with pytest.raises(InputError, match=r"not_fa\.nii\.gz.*FA must lie in \[0, 1\]"):
        template_image(tmp_path / "not_fa.nii.gz")


def test_figure_titles_name_the_top_tract_or_say_there_is_none():
    from wm_jax.interpret.plots import titles as _titles

    atlas, labels = _atlas()
    mask = np.ones(SHAPE, bool)
    in_beta = (atlas == 2).astype(float) + 0.01 * np.random.default_rng(6).random(SHAPE)
    outside = (atlas == 0).astype(float) + 0.01 * np.random.default_rng(7).random(SHAPE)
    tables = [
        tract_enrichment(score, mask, atlas, labels, 0.05, 100, np.random.default_rng(8)).assign(dimension=d + 1)
        for d, score in enumerate([in_beta, outside])
    ]
    first, second = _titles(pd.concat(tables), 2)
    assert first.startswith("UDIP1: top tract beta (enrichment x")
    assert second == "UDIP2: its top voxels lie in no atlas tract"
