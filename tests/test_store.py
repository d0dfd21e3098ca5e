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


def test_zarr_layout_holds_the_npy_store_and_reads_like_it(tiny_cohort, tmp_path, capsys):
    """--layout zarr: the same volumes bit for bit, the same mask, index and fingerprint (the layout
    is not content); rows, slices, row arrays and masks read as from the memory map; roi on it
    writes the same table; a store missing a subject's chunk is one line naming it, exit 2."""
    import shutil

    from wm_jax.cli import main
    from wm_jax.data.store import ZarrVolumes, store_fingerprint

    prep = Preprocessing(crop=((2, 22), (2, 26), (0, 24)), downsample=2)
    npy = VolumeStore.open(prepare_store(tiny_cohort / "subjects.tsv", tmp_path / "npy", prep))
    zarr_prep = Preprocessing(crop=prep.crop, downsample=2, layout="zarr")
    store = VolumeStore.open(prepare_store(tiny_cohort / "subjects.tsv", tmp_path / "zarr", zarr_prep))
    assert isinstance(store.volumes, ZarrVolumes) and not (tmp_path / "zarr" / "volumes.npy").exists()
    assert store.volumes.shape == npy.volumes.shape and store.volumes.dtype == npy.volumes.dtype
    rows = np.array([3, 0, 77, 102])
    chosen = np.zeros(len(npy), bool)
    chosen[[5, 6, 40]] = True
    for key in (7, -1, np.int64(102), slice(10, 20), slice(None, 5), slice(90, 300), rows, chosen, rows[:0]):
        np.testing.assert_array_equal(store.volumes[key], npy.volumes[key])
    from wm_jax.train.batches import Prefetcher, read_batch

    for part in (None, slice(2, 6)):  # a whole batch, and one process's part of it
        for a, b in zip(read_batch(store.volumes, rows, 8, part), read_batch(npy.volumes, rows, 8, part)):
            np.testing.assert_array_equal(a, b)
    batches = [np.array([1, 9]), np.array([4, 50, 60])]
    for a, b in zip(Prefetcher(store.volumes, batches, 4), Prefetcher(npy.volumes, batches, 4)):  # reader threads
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(store.mask, npy.mask)
    pd.testing.assert_frame_equal(store.index, npy.index)
    assert store.record["preprocessing"]["layout"] == "zarr"
    assert store_fingerprint(store) == store_fingerprint(npy)
    roi = ["roi", "--atlas", str(tiny_cohort / "atlas.nii.gz"), "--labels", str(tiny_cohort / "atlas_labels.tsv")]
    full = ["--store", str(tmp_path / "npy_full"), "--out", str(tmp_path / "roi_npy.tsv")]
    prepare_store(tiny_cohort / "subjects.tsv", tmp_path / "npy_full")
    prepare_store(tiny_cohort / "subjects.tsv", tmp_path / "zarr_full", Preprocessing(layout="zarr"))
    assert main([*roi, *full]) == 0
    assert main([*roi, "--store", str(tmp_path / "zarr_full"), "--out", str(tmp_path / "roi_zarr.tsv")]) == 0
    assert (tmp_path / "roi_npy.tsv").read_bytes() == (tmp_path / "roi_zarr.tsv").read_bytes()
    shutil.rmtree(tmp_path / "zarr" / "volumes.zarr" / "c" / "77")
    capsys.readouterr()
    assert main([*roi, "--store", str(tmp_path / "zarr"), "--out", str(tmp_path / "roi_bad.tsv")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and str(tmp_path / "zarr") in errors[0] and "row 77" in errors[0], errors
    assert not (tmp_path / "roi_bad.tsv").exists()
