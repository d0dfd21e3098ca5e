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
    _kill_resume_and_compare(config, store, tmp_path / "resumed", 7, tmp_path / "full")


def _kill_resume_and_compare(config, store, workdir, steps: int, reference) -> None:
    """Stop a run after ``steps`` (as a kill would), rerun it, and compare its final parameters
    with the uninterrupted run's in ``reference``."""
    assert train_and_evaluate(config, str(workdir), str(store), stop_after_steps=steps)["stopped"]
    train_and_evaluate(config, str(workdir), str(store))
    for a, b in zip(_params(reference), _params(workdir)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def _rows(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_validation_inside_epochs_and_early_stopping(store, tmp_path):
    """``val_every`` validates (and checkpoints) inside epochs; ``patience`` stops the run after that
    many validations in a row without a new best, and a rerun of a stopped run trains no further.
    Started from PCA (the demo's linear path) at a learning rate that makes every step worse, the
    start stays the best: validations at steps 0, 2, 4 and the second miss ends the run at step 4,
    inside the first epoch of 6 steps."""
    from wm_jax import checkpoint

    def config(**changes):
        c = _config(val_every=2, learning_rate=3e-2, epochs=3, **changes)
        c.model.linear_path = True
        return c

    summary = train_and_evaluate(config(patience=2), str(tmp_path / "run"), str(store))
    checks = [(row["step"], row["val_loss"]) for row in _rows(tmp_path / "run") if "val_loss" in row]
    assert [step for step, _ in checks] == [0, 2, 4]
    assert checks[1][1] > checks[0][1] and checks[2][1] > checks[0][1]  # two misses: what stopped it
    assert summary["stopped_early"] and summary["step"] == 4 and summary["best_val_loss"] == checks[0][1]
    manager = checkpoint.checkpoint_manager(tmp_path / "run")
    assert manager.latest_step() == 4 and checkpoint.best_step(tmp_path / "run", manager.all_steps()) == 0
    # rerun: nothing more is trained or written
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    again = train_and_evaluate(config(patience=2), str(tmp_path / "run"), str(store))
    assert again["stopped_early"] and again["step"] == 4
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before
    # without patience the same run trains every step of its 3 epochs, validating every 2
    full = train_and_evaluate(config(), str(tmp_path / "full"), str(store))
    assert full["step"] == 18 and "stopped_early" not in full
    steps = [row["step"] for row in _rows(tmp_path / "full") if "val_loss" in row]
    assert steps == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]


def test_resume_with_validation_inside_epochs_is_exact(store, tmp_path):
    """Killed between two validations inside an epoch and rerun: the same parameters, the same
    validation rows and the same early-stopping state as an uninterrupted run."""
    config = _config(val_every=4, patience=50, epochs=2)
    train_and_evaluate(config, str(tmp_path / "full"), str(store))
    _kill_resume_and_compare(config, store, tmp_path / "resumed", 10, tmp_path / "full")

    def checks(workdir):
        return [(row["step"], round(row["val_loss"], 6)) for row in _rows(workdir) if "val_loss" in row]

    assert checks(tmp_path / "full") == checks(tmp_path / "resumed")
    assert [step for step, _ in checks(tmp_path / "full")] == [4, 6, 8, 12]
    # killed right at a validation inside the epoch (step 8, already checkpointed by it)
    _kill_resume_and_compare(config, store, tmp_path / "at8", 8, tmp_path / "full")
    assert checks(tmp_path / "full") == checks(tmp_path / "at8")


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


def test_embed_threads_give_the_sequential_bytes_in_store_order(store, tmp_path):
    """One CPU device: two dispatch threads (the default there) give every code and error of the
    sequential loop, byte for byte and in store order; batch size 5 leaves a padded last batch, and
    21 batches split unevenly between the threads."""
    from wm_jax import sharding
    from wm_jax.embed import _codes
    from wm_jax.train.state import load_model, open_store

    train_and_evaluate(_config(epochs=1), str(tmp_path / "run"), str(store))
    mesh = sharding.data_mesh(1)  # the suite runs with 4 CPU devices; threads are for one
    model = load_model(tmp_path / "run", "latest", mesh=mesh)[0]
    volumes = open_store(str(store), model.config)
    sequential = _codes(model, volumes, 5, workers=1, mesh=mesh)
    threaded = _codes(model, volumes, 5, mesh=mesh)
    assert sequential[0].shape == (103, 6) and sequential[1].shape == (103,)
    for a, b in zip(sequential, threaded):
        assert a.tobytes() == b.tobytes()

    # store order: the codes of rows 50..54 alone are rows 50..54 of the whole pass
    class Rows:
        def __init__(self, rows):
            self.volumes, self.mask = volumes.volumes[rows], volumes.mask

        def __len__(self):
            return len(self.volumes)

    part = _codes(model, Rows(slice(50, 55)), 5, workers=1, mesh=mesh)
    assert part[0].tobytes() == sequential[0][50:55].tobytes()


def test_bad_inputs(store, tmp_path):
    config = load_config("demo")
    config.model.input_shape = (48, 56, 48)
    with pytest.raises(
        InputError, match=r"input_shape: \(48, 56, 48\) but the store .* holds volumes of \(12, 12, 12\)"
    ):
        train_and_evaluate(config, str(tmp_path / "w"), str(store))
    with pytest.raises(InputError, match="no checkpoint found"):
        embed(str(tmp_path / "empty"), str(store), str(tmp_path / "u.tsv"))
    with pytest.raises(InputError, match="not a volume store"):
        train_and_evaluate(_config(), str(tmp_path / "w"), str(tmp_path))
    for key, value in (("patience", -1), ("val_every", -5)):
        expected = rf"^--config\.{key}: expected a whole number >= 0 \(0: off\), found {value}$"
        with pytest.raises(InputError, match=expected):
            train_and_evaluate(_config(**{key: value}), str(tmp_path / key), str(store))
        assert not (tmp_path / key).exists()  # nothing made
    assert not (tmp_path / "u.tsv").exists()


# `_config(epochs=1)` as overrides (the same compiled step as the tests above, from the session's cache)
TINY_MODEL = [
    "--config.model.channels=(4,8)",
    "--config.model.latent_dim=6",
    "--config.epochs=1",
    "--config.batch_size=8",
    "--config.max_subjects=48",
    "--config.learning_rate=3e-3",
    "--config.log_every=2",
]


def test_train_takes_the_input_shape_from_the_store(store, tmp_path, capsys):
    """No shape option: the model is built on the store's grid and the checkpoint records it; a config
    that sets another grid is one line naming both, exit 2, and no workdir."""
    from wm_jax.cli import main
    from wm_jax.train.state import load_model

    assert load_config("demo").model.input_shape is None
    args = ["train", "--store", str(store), *TINY_MODEL]
    assert main([*args, "--workdir", str(tmp_path / "run")]) == 0
    model, config, record, _ = load_model(tmp_path / "run")
    assert tuple(config.model.input_shape) == (12, 12, 12) == model.config.input_shape
    assert record["config"]["model"]["input_shape"] == [12, 12, 12]

    capsys.readouterr()
    assert main([*args, "--workdir", str(tmp_path / "other"), "--config.model.input_shape=(12,12,14)"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("wm-jax train: error: --config.model.input_shape:")
    assert "(12, 12, 14)" in err and "(12, 12, 12)" in err and str(store) in err
    assert not (tmp_path / "other").exists()


def _real_template_store(directory, n_subjects: int):
    """A store on the grid of the MNI FA template (145x174x145, 1.25 mm): an ellipsoid brain."""
    import nibabel as nib

    shape = (145, 174, 145)
    affine = np.diag([1.25, 1.25, 1.25, 1.0])
    affine[:3, 3] = [-90.0, -126.0, -72.0]
    x, y, z = np.ogrid[: shape[0], : shape[1], : shape[2]]
    brain = ((x - 72) / 60) ** 2 + ((y - 87) / 75) ** 2 + ((z - 72) / 55) ** 2 < 1
    rng = np.random.default_rng(0)
    rows = ["FID\tIID\tfa_path"]
    for i in range(n_subjects):
        volume = np.where(brain, 0.3 + 0.1 * rng.random(shape), 0.0).astype(np.float32)
        nib.save(nib.Nifti1Image(volume, affine), directory / f"s{i}.nii")
        rows.append(f"s{i}\ts{i}\t{directory / f's{i}.nii'}")
    (directory / "subjects.tsv").write_text("\n".join(rows) + "\n")
    return prepare_store(directory / "subjects.tsv", directory / "store", Preprocessing())


def test_a_real_template_sized_store_sets_the_model_shape(tmp_path):
    """145x174x145 (odd sizes): the shape comes from the store and the model's forward pass is
    well formed on it (traced, not run: a real step takes ~40 s on 2 cores, the slow test below)."""
    from flax import nnx

    from wm_jax.data.store import VolumeStore
    from wm_jax.model.autoencoder import Autoencoder
    from wm_jax.train.state import model_config, with_store_shape

    store = VolumeStore.open(_real_template_store(tmp_path, 2))
    config = load_config("demo")
    resolved = with_store_shape(config, store)
    grid = (145, 174, 145)
    assert config.model.input_shape is None and tuple(resolved.model.input_shape) == grid
    config.model.input_shape = grid  # set, and equal to the store's: kept
    assert with_store_shape(config, store) is config
    resolved.model.channels, resolved.model.latent_dim = (2,), 2
    mcfg = model_config(resolved)
    out = jax.eval_shape(lambda v: Autoencoder(mcfg, rngs=nnx.Rngs(0))(v), jax.ShapeDtypeStruct((1, *grid), np.float32))
    assert out.shape == (1, *grid)


@pytest.mark.slow
def test_train_one_step_on_a_real_template_sized_store(tmp_path, capsys):
    """`wm-jax train --store STORE` with no shape option on 145x174x145 volumes: one step of a tiny
    model (about 40 s and 8 GB on 2 cores)."""
    from wm_jax.cli import main

    store = _real_template_store(tmp_path, 4)
    args = ["train", "--store", str(store), "--workdir", str(tmp_path / "run"), "--config.batch_size=4"]
    assert main([*args, "--config.model.channels=(2,)", "--config.model.latent_dim=2", "--config.epochs=1"]) == 0
    record = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert record[-1]["step"] == 1 and np.isfinite(record[-1]["train_loss"])
