import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from wm_jax.data.nifti import load_fa, read_grid
from wm_jax.data.store import Preprocessing, VolumeStore, prepare_store, zscore_nonzero
from wm_jax.errors import InputError


def test_prepare_store_matches_direct_normalisation(tiny_cohort, tmp_path):
    store_path = prepare_store(tiny_cohort / "subjects.tsv", tmp_path / "store")
    store = VolumeStore.open(store_path)
    subjects = pd.read_csv(tiny_cohort / "subjects.tsv", sep="\t")
    assert len(store) == len(subjects) and store.volumes.shape[1:] == (24, 28, 24)
    assert list(store.index.IID) == list(subjects.IID)
    for row in (0, 50, 102):
        fa = nib.load(tiny_cohort / subjects.fa_path[row]).get_fdata()
        nonzero = fa != 0
        expected = np.zeros_like(fa)
        expected[nonzero] = (fa[nonzero] - fa[nonzero].mean()) / fa[nonzero].std()
        np.testing.assert_allclose(store.volumes[row], expected, atol=1e-5)
    assert 0.2 < store.mask.mean() < 0.8
    assert store.record["mask_voxels"] == int(store.mask.sum())


def test_prepare_crop_and_downsample(tiny_cohort, tmp_path):
    prep = Preprocessing(crop=((2, 22), (2, 26), (0, 24)), downsample=2)
    store = VolumeStore.open(prepare_store(tiny_cohort / "subjects.tsv", tmp_path / "s", prep))
    assert store.volumes.shape[1:] == (10, 12, 12)
    source = read_grid(tiny_cohort / "fa" / "sub00001.nii.gz")
    # The centre of output voxel (0,0,0) is the mean of source voxels (2..3, 2..3, 0..1).
    expected = source.affine @ np.array([2.5, 2.5, 0.5, 1.0])
    np.testing.assert_allclose(store.grid.affine @ np.array([0, 0, 0, 1.0]), expected)
    z, _, _ = zscore_nonzero(load_fa(tiny_cohort / "fa" / "sub00001.nii.gz"))
    np.testing.assert_allclose(store.volumes[0][1, 2, 3], z[4:6, 6:8, 6:8].mean(), atol=1e-5)


def _small_cohort(tmp_path, n=3):
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    rows = []
    (tmp_path / "fa").mkdir()
    for i in range(n):
        data = np.zeros((6, 7, 5), np.float32)
        data[1:5, 1:6, 1:4] = 0.3 + 0.1 * i
        nib.save(nib.Nifti1Image(data, affine), tmp_path / "fa" / f"s{i}.nii.gz")
        rows.append(f"s{i}\ts{i}\tfa/s{i}.nii.gz\n")
    (tmp_path / "subjects.tsv").write_text("FID\tIID\tfa_path\n" + "".join(rows))
    return tmp_path / "subjects.tsv", affine


@pytest.mark.parametrize(
    "make_bad, message",
    [
        (
            lambda a: np.zeros((6, 7, 4), np.float32) + 0.2,
            r"s1\.nii\.gz: shape \(6, 7, 4\) differs from the cohort's \(6, 7, 5\)",
        ),
        (
            lambda a: np.full((6, 7, 5, 2), 0.2, np.float32),
            r"s1\.nii\.gz: expected a 3D FA map, found shape \(6, 7, 5, 2\)",
        ),
        (
            lambda a: (
                np.where(np.eye(6, 7)[:, :, None] > 0, np.nan, 0.2).astype(np.float32) * np.ones((1, 1, 5), np.float32)
            ),
            r"s1\.nii\.gz: 30 voxels are NaN or infinite",
        ),
        (
            lambda a: np.full((6, 7, 5), 1.5, np.float32),
            r"s1\.nii\.gz: values span \[1\.5, 1\.5\]; FA must lie in \[0, 1\]",
        ),
        (lambda a: np.zeros((6, 7, 5), np.float32), r"s1\.nii\.gz: image is empty"),
    ],
)
def test_bad_fa_maps_are_rejected_without_partial_output(tmp_path, make_bad, message):
    subjects, affine = _small_cohort(tmp_path)
    nib.save(nib.Nifti1Image(make_bad(affine), affine), tmp_path / "fa" / "s1.nii.gz")
    with pytest.raises(InputError, match=message):
        prepare_store(subjects, tmp_path / "store")
    assert not (tmp_path / "store").exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_bad_affine_missing_file_and_not_nifti(tmp_path):
    subjects, affine = _small_cohort(tmp_path)
    data = np.full((6, 7, 5), 0.3, np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 2.0, 2.0, 1.0])), tmp_path / "fa" / "s2.nii.gz")
    with pytest.raises(InputError, match=r"s2\.nii\.gz: affine differs"):
        prepare_store(subjects, tmp_path / "store")
    (tmp_path / "fa" / "s2.nii.gz").write_bytes(b"not an image")
    with pytest.raises(InputError, match=r"s2\.nii\.gz: not a readable NIfTI"):
        prepare_store(subjects, tmp_path / "store")
    (tmp_path / "fa" / "s2.nii.gz").unlink()
    with pytest.raises(InputError, match=r"s2\.nii\.gz: FA map listed in .* not found"):
        prepare_store(subjects, tmp_path / "store")
    assert not (tmp_path / "store").exists()


def test_store_open_errors(tmp_path):
    with pytest.raises(InputError, match="not a volume store"):
        VolumeStore.open(tmp_path)


def test_cli_prepare_bad_input_is_one_line_exit_2(tmp_path):
    subjects, _ = _small_cohort(tmp_path)
    (tmp_path / "fa" / "s0.nii.gz").unlink()
    result = subprocess.run(
        [sys.executable, "-m", "wm_jax.cli", "prepare", "--subjects", str(subjects), "--out", str(tmp_path / "store")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "s0.nii.gz: FA map listed in" in errors[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "store").exists()
