"""Training loop: loss goes down, kill-and-resume equals an uninterrupted run, embed, bad input
(SIGTERM through the command line: tests/test_multiprocess.py)."""

import json

import jax
import numpy as np
import pandas as pd
import pytest

from wm_jax.config import load_config
from wm_jax.data.store import Preprocessing, prepare_store
from wm_jax.embed import embed
from wm_jax.errors import InputError
from wm_jax.train.loop import train_and_evaluate


@pytest.fixture(scope="module")
def store(tiny_cohort, tmp_path_factory):
    return prepare_store(
        tiny_cohort / "subjects.tsv",
        tmp_path_factory.mktemp("store") / "store",
        Preprocessing(crop=((0, 24), (2, 26), (0, 24)), downsample=2),
    )


def _config(**changes):
    config = load_config("demo")
    config.model.input_shape = (12, 12, 12)
    config.model.channels = (4, 8)
    config.model.latent_dim = 6
    config.batch_size = 8
    config.epochs = 3
    config.learning_rate = 3e-3
    config.max_subjects = 48
    config.log_every = 2
    for key, value in changes.items():
        setattr(config, key, value)
    return config


def _params(workdir):
    import orbax.checkpoint as ocp

    from wm_jax import checkpoint

    manager = checkpoint.checkpoint_manager(workdir)
    restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return jax.tree.leaves(restored["state"])


def test_training_lowers_validation_loss_and_resume_is_exact(store, tmp_path):
    config = _config()
    train_and_evaluate(config, str(tmp_path / "full"), str(store))
    metrics = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    epochs = [m for m in metrics if "val_loss" in m]
    assert len(epochs) == 3 and epochs[-1]["val_loss"] < epochs[0]["val_loss"]
    # Killed mid-epoch 2 (after 7 of 15 steps), then rerun: the same final parameters.
    stopped = train_and_evaluate(config, str(tmp_path / "resumed"), str(store), stop_after_steps=7)
    assert stopped["stopped"]
    train_and_evaluate(config, str(tmp_path / "resumed"), str(store))
    for a, b in zip(_params(tmp_path / "full"), _params(tmp_path / "resumed")):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_embed_writes_deterministic_udips(store, tmp_path):
    config = _config(epochs=1)
    train_and_evaluate(config, str(tmp_path / "run"), str(store))
    embed(str(tmp_path / "run"), str(store), str(tmp_path / "udip.tsv"))
    embed(str(tmp_path / "run"), str(store), str(tmp_path / "again.tsv"), step="best")
    table = pd.read_csv(tmp_path / "udip.tsv", sep="\t")
    assert list(table.columns[:3]) == ["FID", "IID", "UDIP1"] and "UDIP6" in table.columns and len(table) == 103
    assert (tmp_path / "udip.tsv").read_text() == (tmp_path / "again.tsv").read_text()
    manifest = json.loads((tmp_path / "udip.tsv.manifest.json").read_text())
    assert manifest["checkpoint_step"] == 6 and manifest["n_subjects"] == 103


def test_bad_inputs(store, tmp_path):
    with pytest.raises(InputError, match=r"volumes are \(12, 12, 12\) but the config's model expects \(48, 56, 48\)"):
        train_and_evaluate(load_config("demo"), str(tmp_path / "w"), str(store))
    with pytest.raises(InputError, match="no checkpoint found"):
        embed(str(tmp_path / "empty"), str(store), str(tmp_path / "u.tsv"))
    with pytest.raises(InputError, match="not a volume store"):
        train_and_evaluate(_config(), str(tmp_path / "w"), str(tmp_path))
    assert not (tmp_path / "u.tsv").exists()
