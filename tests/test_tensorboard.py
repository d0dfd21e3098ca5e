"""TensorBoard event files written without TensorFlow, read back by TensorBoard's own reader."""

import numpy as np

from wm_jax.train.tensorboard import crc32c


def test_crc32c_standard_check_values():
    # The CRC-32C (Castagnoli) check value, and the all-zero vector of RFC 3720 (iSCSI), B.4
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA


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
