import nibabel as nib
import numpy as np
import pandas as pd

from wm_jax.data.store import VolumeStore, prepare_store
from wm_jax.roi import oracle_phenotypes, tract_means


def test_tract_means_equal_direct_computation(tiny_cohort, tmp_path):
    store = VolumeStore.open(prepare_store(tiny_cohort / "subjects.tsv", tmp_path / "store"))
    frame = tract_means(store, tiny_cohort / "atlas.nii.gz", tiny_cohort / "atlas_labels.tsv")
    labels = pd.read_csv(tiny_cohort / "atlas_labels.tsv", sep="\t")
    atlas = np.rint(nib.load(tiny_cohort / "atlas.nii.gz").get_fdata()).astype(int)
    assert list(frame.columns[:2]) == ["FID", "IID"] and frame.shape == (len(store), 2 + len(labels))
    for row in (0, 40):
        for label, tract in zip(labels.label, labels.tract):
            inside = (atlas == label) & store.mask
            np.testing.assert_allclose(frame[f"FA_{tract}"][row], store.volumes[row][inside].mean(), rtol=1e-5)
    patterns = oracle_phenotypes(store, tiny_cohort / "truth.tsv")
    assert patterns.shape[1] == 2 + len(pd.read_csv(tiny_cohort / "truth.tsv", sep="\t"))
    assert np.isfinite(patterns.iloc[:, 2:].to_numpy()).all()
