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


def test_without_tensorboardx_asking_for_tensorboard_is_one_error(tmp_path, monkeypatch):
    import sys

    import pytest

    from wm_jax.errors import InputError
    from wm_jax.train.loop import _Metrics

    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # an import of it fails, as where it is not installed
    with pytest.raises(InputError, match=r"--config.tensorboard: needs the tensorboardX package"):
        _Metrics(tmp_path, tensorboard=True)
    _Metrics(tmp_path, tensorboard=False).close()  # training without TensorBoard does not need it
