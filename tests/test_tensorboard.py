"""TensorBoard scalars of training (written by tensorboardX), read back by TensorBoard's own reader."""

import numpy as np


def test_training_metrics_are_readable_by_tensorboard(tmp_path):
    from tensorboard.backend.event_processing import event_accumulator  # a test dependency (setup.cfg)

    from wm_jax.train.loop import _Metrics

    metrics = _Metrics(tmp_path, tensorboard=True)
    rows = [
        {"step": 10, "train_loss": 0.5},
        {"step": 20, "train_loss": 0.25},
        {"step": 20, "epoch": 1, "train_loss": 0.2, "val_loss": 0.3125, "seconds": 1.5},
    ]
    for row in rows:
        metrics.write(row)
    metrics.close()
    reader = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
    reader.Reload()
    assert set(reader.Tags()["scalars"]) == {"train/train_loss", "train/val_loss", "train/seconds"}
    loss = reader.Scalars("train/train_loss")
    assert [e.step for e in loss] == [10, 20, 20]
    np.testing.assert_allclose([e.value for e in loss], [0.5, 0.25, 0.2], rtol=1e-7)
    assert reader.Scalars("train/val_loss")[0].value == 0.3125
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3


def test_without_tensorboardx_asking_for_tensorboard_is_one_error(tmp_path, monkeypatch, capsys):
    import sys

    import pytest

    from wm_jax.errors import InputError
    from wm_jax.train.loop import _Metrics

    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # an import of it fails, as where it is not installed
    with pytest.raises(InputError, match=r"--config.tensorboard: needs the tensorboardX package"):
        _Metrics(tmp_path, tensorboard=True)
    _Metrics(tmp_path, tensorboard=False).close()  # training without TensorBoard does not need it
    # Through `wm-jax train`: one line, exit 2, before the workdir is made.
    from wm_jax.cli import main

    store = _store_of_ten(tmp_path)
    args = ["train", "--store", str(store), "--workdir", str(tmp_path / "run"), "--config.tensorboard=True"]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("error") == 1
    assert err.splitlines()[-1] == (
        "wm-jax train: error: --config.tensorboard: needs the tensorboardX package (pip install tensorboardX)"
    )
    assert not (tmp_path / "run").exists()


def _store_of_ten(directory):
    """A store of ten 8x8x8 volumes."""
    import nibabel as nib

    from wm_jax.data.store import Preprocessing, prepare_store

    rng = np.random.default_rng(0)
    rows = ["FID\tIID\tfa_path"]
    for i in range(10):
        nib.save(
            nib.Nifti1Image(rng.uniform(0.1, 0.9, (8, 8, 8)).astype(np.float32), np.eye(4)), directory / f"{i}.nii"
        )
        rows.append(f"s{i}\ts{i}\t{directory / f'{i}.nii'}")
    (directory / "subjects.tsv").write_text("\n".join(rows) + "\n")
    return prepare_store(directory / "subjects.tsv", directory / "store", Preprocessing())
