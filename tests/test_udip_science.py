"""The pieces behind the UDIP-vs-ROI comparison: the simulator's genetic architecture, the PCA
baseline, the PCA-started linear path of the encoder, the varimax rotation, oracle phenotypes and
recall by kind. Each against NumPy in float64 or a property that fails if the code is wrong."""

import json

import ml_collections
import numpy as np
import pandas as pd
import pytest

from wm_jax.simulate import genetics


def _random_store(tmp_path, n=40, shape=(6, 7, 5), seed=0, rank=3):
    """A volume store of low-rank volumes plus noise, written in the store's format."""
    from wm_jax.data.store import STORE_FORMAT_VERSION

    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, bool)
    mask[1:-1, 1:-1, 1:-1] = True
    basis = rng.standard_normal((rank, *shape))
    volumes = (rng.standard_normal((n, rank)) * [3, 2, 1][:rank]) @ basis.reshape(rank, -1)
    volumes = (volumes.reshape(n, *shape) + 0.1 * rng.standard_normal((n, *shape))) * mask
    path = tmp_path / "store"
    path.mkdir()
    np.save(path / "volumes.npy", volumes.astype(np.float32))
    np.save(path / "mask.npy", mask)
    ids = [f"s{i}" for i in range(n)]
    pd.DataFrame({"FID": ids, "IID": ids}).to_csv(path / "index.tsv", sep="\t", index=False)
    grid = {"shape": list(shape), "affine": np.eye(4).tolist()}
    record = {
        "format_version": STORE_FORMAT_VERSION,
        "grid": grid,
        "preprocessing": {"crop": None, "downsample": 1, "mask_fraction": 0.5, "dtype": "float32"},
    }
    (path / "store.json").write_text(json.dumps(record))
    return path, volumes.astype(np.float32), mask


def test_pca_matches_numpy_svd(tmp_path):
    from wm_jax.data.store import VolumeStore
    from wm_jax.pca import fit_pca, pca_table

    path, volumes, mask = _random_store(tmp_path)
    store = VolumeStore.open(path)
    rows = np.arange(0, 40, 2)
    pca = fit_pca(store, 3, rows=rows, chunk=7)  # chunks that do not divide the rows
    x = volumes[rows][:, mask].astype(np.float64)
    centred = x - x.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(pca.mean, x.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(pca.explained_variance, singular[:3] ** 2 / (len(rows) - 1), rtol=1e-4)
    np.testing.assert_allclose(np.abs((pca.components * vt[:3]).sum(axis=1)), 1, atol=1e-4)  # same axes
    # Held-out rows: scores and masked reconstruction error as NumPy computes them.
    table = pca_table(pca, store)
    scores = (volumes[:, mask] - x.mean(axis=0)) @ pca.components.T.astype(np.float64)
    np.testing.assert_allclose(table[["IPC1", "IPC2", "IPC3"]].to_numpy(), scores, rtol=1e-3, atol=1e-3)
    residual = volumes[:, mask] - (x.mean(axis=0) + scores @ pca.components.astype(np.float64))
    np.testing.assert_allclose(table.reconstruction_mse, (residual**2).sum(axis=1) / mask.sum(), rtol=1e-3)


def test_linear_path_starts_as_pca(tmp_path):
    """With its linear path started from PCA, the autoencoder encodes and reconstructs as PCA does."""
    import jax.numpy as jnp
    from flax import nnx

    from wm_jax.data.store import VolumeStore
    from wm_jax.model.autoencoder import Autoencoder, AutoencoderConfig
    from wm_jax.pca import fit_pca

    path, volumes, mask = _random_store(tmp_path, shape=(8, 8, 8))
    pca = fit_pca(VolumeStore.open(path), 3)
    model = Autoencoder(
        AutoencoderConfig(input_shape=(8, 8, 8), channels=(2, 4), latent_dim=4, linear_path=True), rngs=nnx.Rngs(0)
    )
    offset = pca.reconstruct(np.zeros((1, 3), np.float32))[0]
    model.init_linear_path(offset, pca.reconstruct(np.eye(3, dtype=np.float32)) - offset)
    model.eval()
    codes = np.asarray(model.encode(jnp.asarray(volumes[:5])))
    np.testing.assert_allclose(codes[:, :3], pca.scores(volumes[:5]), atol=1e-4)
    np.testing.assert_allclose(codes[:, 3], 0, atol=1e-6)  # the fourth dimension has no component
    np.testing.assert_allclose(
        np.asarray(model(jnp.asarray(volumes[:5]))), pca.reconstruct(pca.scores(volumes[:5])), atol=1e-4
    )


def test_varimax_recovers_a_hidden_simple_structure():
    """Sparse loadings mixed by a random rotation: varimax undoes the rotation up to order and sign."""
    from wm_jax.rotation import varimax

    rng = np.random.default_rng(3)
    simple = np.zeros((60, 4))
    for k in range(4):
        simple[15 * k : 15 * (k + 1), k] = rng.uniform(0.5, 1.5, 15)
    mixing, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    rotation = varimax(simple @ mixing)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(4), atol=1e-10)
    recovered = simple @ mixing @ rotation
    match = np.abs(recovered.T @ simple) / np.outer(np.linalg.norm(recovered, axis=0), np.linalg.norm(simple, axis=0))
    np.testing.assert_allclose(np.sort(match.max(axis=1)), 1, atol=1e-6)


def test_whitened_varimax_map_whitens_and_inverts():
    from wm_jax.rotation import LatentMap, whitened_varimax

    rng = np.random.default_rng(4)
    codes = rng.standard_normal((500, 5)) @ rng.standard_normal((5, 5)) + 3
    latent_map = whitened_varimax(codes, rng.standard_normal((80, 5)))
    udips = latent_map.apply(codes)
    np.testing.assert_allclose(np.cov(udips, rowvar=False), np.eye(5), atol=1e-8)
    np.testing.assert_allclose(latent_map.undo(udips), codes, atol=1e-8)
    again = LatentMap.from_json(json.loads(json.dumps(latent_map.to_json())))
    np.testing.assert_allclose(again.apply(codes), udips)


def _genetics_config(share=0.1, h2=0.5, on_genome=0.3):
    c = ml_collections.ConfigDict()
    c.genetics = ml_collections.ConfigDict({"n_causal": 50, "min_causal_maf": 0.05, "on_genome_share": on_genome})
    c.loci = ml_collections.ConfigDict({"kinds": ("local",), "per_kind": 1, "share": share, "min_maf": 0.2})
    return c, h2


def test_factor_coefficients_and_loci_have_the_configured_variance_h2_and_share():
    """Against least squares in float64 on 20,000 subjects: each factor's sd and h2, and a locus's
    share of its oracle phenotype's variance (here the oracle is the factor's coefficient alone)."""
    rng = np.random.default_rng(5)
    n, m = 20000, 400
    freq = rng.uniform(0.1, 0.5, m)
    dosage = rng.binomial(2, freq[:, None], (m, n)).astype(np.int8)
    config, h2 = _genetics_config()
    pattern = np.ones((2, 2, 2), np.float32)
    factors = [
        genetics.Factor("local1", "local", pattern, 0.05, h2),
        genetics.Factor("global", "global", pattern, 0.02, h2),
    ]
    coefficients, genetic_values = genetics.factor_coefficients(factors, dosage, freq, config, rng)
    np.testing.assert_allclose(coefficients.std(axis=0), [0.05, 0.02], rtol=0.03)
    np.testing.assert_allclose(genetic_values.var(axis=0) / coefficients.var(axis=0), h2, atol=0.03)
    loci = [genetics.Locus(variant=7, factor=0, share=0.1, sign=-1.0)]
    betas = genetics.add_loci(loci, factors, coefficients, genetic_values, [coefficients[:, 0].var()], dosage, freq)
    g = dosage[7].astype(np.float64)
    slope = np.polyfit(g, coefficients[:, 0], 1)[0]
    r2 = np.corrcoef(g, coefficients[:, 0])[0, 1] ** 2
    assert abs(r2 - 0.1) < 0.015
    assert slope < 0 and abs(slope - betas[0]) < 0.1 * abs(betas[0])
    np.testing.assert_allclose(coefficients[:, 1].std(), 0.02, rtol=0.03)  # the other factor is untouched


def test_oracle_background_variance_matches_simulated_volumes():
    """The analytic variance of a pattern's oracle phenotype against volumes built voxel by voxel."""
    rng = np.random.default_rng(8)
    brain = rng.random((5, 6, 4)) > 0.2
    maps = rng.standard_normal((3, 5, 6, 4))
    pattern = rng.random((5, 6, 4))
    coefficients = rng.standard_normal((4000, 3)) * [1.0, 0.5, 0.2]
    volumes = np.einsum("nm,mxyz->nxyz", coefficients, maps) + 0.3 * rng.standard_normal((4000, 5, 6, 4))
    p = pattern[brain]
    inside = volumes[:, brain]
    oracle = (inside - inside.mean(axis=1, keepdims=True)) @ p / (p @ p)  # each volume less its brain mean
    expected = genetics.oracle_background_variance(pattern, maps, coefficients, brain, 0.09)
    assert abs(oracle.var() - expected) < 0.05 * expected


def test_contrast_patterns_cancel_in_every_tract_and_factors_have_their_kinds():
    from wm_jax.simulate.phantom import build_phantom

    c = ml_collections.ConfigDict(
        {
            "factors": {
                "global_sd": 0.02,
                "global_h2": 0.5,
                "tract_sd": 0.03,
                "tract_h2": 0.5,
                "n_cross": 2,
                "cross_sd": 0.05,
                "cross_h2": 0.5,
                "cross_width": 0.18,
                "n_contrast": 3,
                "contrast_sd": 0.06,
                "contrast_h2": 0.5,
                "n_local": 2,
                "local_sd": 0.06,
                "local_h2": 0.5,
                "local_width": 0.12,
                "sd_spread": 0.3,
            }
        }
    )
    phantom = build_phantom((24, 28, 24), seed=1)
    factors = genetics.spatial_factors(phantom, c, np.random.default_rng(0))
    kinds = [f.kind for f in factors]
    assert kinds.count("tract") == 11 and kinds.count("contrast") == 3 and kinds.count("cross") == 2
    for factor in factors:
        assert np.abs(factor.pattern).max() == pytest.approx(1.0)
        assert 0.7 * 0.02 <= factor.sd <= 1.3 * 0.06
        if factor.kind == "contrast":
            for label in range(1, 12):
                inside = phantom.atlas == label
                assert abs(factor.pattern[inside].mean()) < 1e-5
            assert factor.pattern.std() > 0.01


def test_truth_and_patterns_of_the_simulated_cohort(tiny_cohort):
    import nibabel as nib

    truth = pd.read_csv(tiny_cohort / "truth.tsv", sep="\t")
    assert {"chrom", "pos", "kind", "var_explained", "pattern_variance_share"} <= set(truth.columns)
    assert sorted(truth.kind) == ["contrast", "cross", "local", "tract"]
    patterns = nib.load(tiny_cohort / "patterns.nii.gz").get_fdata()
    assert patterns.shape == (24, 28, 24, len(truth))
    record = json.loads((tiny_cohort / "simulation.json").read_text())
    assert {f["kind"] for f in record["factors"]} == {"global", "tract", "cross", "contrast", "local"}


def test_oracle_phenotype_is_the_least_squares_coefficient_on_the_pattern(tiny_cohort, tmp_path):
    import nibabel as nib

    from wm_jax.data.store import VolumeStore, prepare_store
    from wm_jax.roi import oracle_phenotypes

    store = VolumeStore.open(prepare_store(tiny_cohort / "subjects.tsv", tmp_path / "store"))
    frame = oracle_phenotypes(store, tiny_cohort / "truth.tsv")
    patterns = nib.load(tiny_cohort / "patterns.nii.gz").get_fdata()
    for k in range(patterns.shape[-1]):
        p = patterns[..., k][store.mask]
        for row in (0, 57):
            x = np.asarray(store.volumes[row], np.float64)[store.mask]
            np.testing.assert_allclose(
                frame.iloc[row, 2 + k], np.linalg.lstsq(p[:, None], x, rcond=None)[0][0], rtol=1e-4
            )


def test_recall_by_kind_counts_single_and_omnibus_loci():
    from wm_jax.truth import score_against_truth

    truth = pd.DataFrame(
        {
            "variant": ["a", "b", "c", "d"],
            "chrom": ["1", "1", "2", "2"],
            "pos": [1_000_000, 5_000_000, 1_000_000, 9_000_000],
            "kind": ["local", "cross", "cross", "tract"],
        }
    )
    loci = pd.DataFrame(
        {
            "chrom": ["1", "2", "2"],
            "start": [990_000, 1_100_000, 4_000_000],
            "end": [1_010_000, 1_200_000, 4_000_100],
            "phenotypes": ["UDIP1,OMNIBUS", "OMNIBUS", "UDIP3"],
        }
    )
    scores = score_against_truth(loci, truth, kb=250)
    assert scores["n_planted_recovered"] == 2 and scores["n_false_loci"] == 1
    assert scores["recall_by_kind"] == {
        "cross": {"planted": 2, "any": 1, "single": 0, "omnibus": 1},
        "local": {"planted": 1, "any": 1, "single": 1, "omnibus": 1},
        "tract": {"planted": 1, "any": 0, "single": 0, "omnibus": 0},
    }


def test_perdi_decodes_rotated_udips_through_the_manifest_map(tmp_path):
    """PerDI of rotated UDIPs perturbs them in UDIP space: decoding goes through the inverse map."""
    import jax.numpy as jnp
    from flax import nnx

    from wm_jax.interpret.inputs import udip_decoder as _udip_decoder
    from wm_jax.model.autoencoder import Autoencoder, AutoencoderConfig
    from wm_jax.rotation import whitened_varimax

    model = Autoencoder(AutoencoderConfig(input_shape=(8, 8, 8), channels=(2, 4), latent_dim=3), rngs=nnx.Rngs(1))
    model.eval()
    rng = np.random.default_rng(6)
    codes = rng.standard_normal((50, 3)) @ rng.standard_normal((3, 3))
    latent_map = whitened_varimax(codes, rng.standard_normal((40, 3)))
    manifest = tmp_path / "udip.tsv.manifest.json"
    manifest.write_text(json.dumps({"latent_map": latent_map.to_json()}))
    udips = latent_map.apply(codes[:4]).astype(np.float32)
    through_map = np.asarray(_udip_decoder(model, manifest)(jnp.asarray(udips)))
    direct = np.asarray(model.decode(jnp.asarray(codes[:4], jnp.float32)))
    np.testing.assert_allclose(through_map, direct, atol=1e-4)
    manifest.write_text(json.dumps({"latent_map": None}))
    assert _udip_decoder(model, manifest) == model.decode
