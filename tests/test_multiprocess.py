"""Several processes on this machine (launch/local.sh, jax.distributed over gloo, 2 CPU devices each)
against one process: the GWAS gives the same bytes, training started on 2 processes continues on
1 as if it had run there, and a killed process fails the job without leaving outputs."""

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wm_jax.cli import main

from conftest import REPO

LAUNCH = str(REPO / "launch" / "local.sh")
WM_JAX = [sys.executable, "-m", "wm_jax.cli"]


def _environment(devices_per_process: int, cache) -> dict:
    """The launch environment: the session's compilation cache (tests/conftest.py) unless ``cache``."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS" and not k.startswith("WM_JAX_")}
    env["WM_JAX_CPU_DEVICES"] = str(devices_per_process)
    env["WM_JAX_HEARTBEAT_SECONDS"] = "8"  # a lost process is noticed sooner than the default 20 s
    if cache is not None:
        env["JAX_COMPILATION_CACHE_DIR"] = str(cache)
    return env


def _launch(n: int, args: list[str], cache, timeout: int = 600) -> subprocess.CompletedProcess:
    """``n`` processes of ``wm-jax args`` with 2 CPU devices each."""
    return subprocess.run(
        ["bash", LAUNCH, str(n), *WM_JAX, *args],
        env=_environment(2, cache),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _alone(args: list[str], devices: int, cache, timeout: int = 600) -> subprocess.CompletedProcess:
    """One process with ``devices`` CPU devices."""
    env = _environment(devices, cache)
    del env["WM_JAX_CPU_DEVICES"]
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return subprocess.run([*WM_JAX, *args], env=env, capture_output=True, text=True, timeout=timeout)


def _ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def phenotypes(tiny_cohort, tmp_path_factory):
    """Six phenotypes, three with their own missing samples (three missingness groups)."""
    fam = pd.read_csv(tiny_cohort / "genotypes.fam", sep=r"\s+", header=None)
    rng = np.random.default_rng(5)
    table = pd.DataFrame({"FID": fam[0], "IID": fam[1]})
    for j in range(6):
        values = rng.normal(size=len(table))
        if j % 2:
            values[rng.random(len(table)) < 0.1] = np.nan
        table[f"P{j}"] = values
    path = tmp_path_factory.mktemp("mp") / "pheno.tsv"
    table.to_csv(path, sep="\t", index=False, na_rep="NA")
    return path


def _gwas_args(cohort, pheno, out) -> list[str]:
    return [
        "gwas", "--bfile", str(cohort / "genotypes"), "--pheno", str(pheno), "--covar", str(cohort / "covariates.tsv"),
        "--covar-name", "age,sex,PC1-PC3", "--maf", "0.01", "--format", "plink2", "--out", str(out),
    ]  # fmt: skip


def test_gwas_on_two_processes_equals_one(tiny_cohort, phenotypes, tmp_path):
    """The same bytes in every table and result column (same devices per process: see docs/pods.md)."""
    _ok(_launch(2, _gwas_args(tiny_cohort, phenotypes, tmp_path / "two"), None))
    _ok(_alone(_gwas_args(tiny_cohort, phenotypes, tmp_path / "one"), 2, None))
    names = [f"P{j}.glm.linear" for j in range(6)] + ["hits.tsv", "multivariate.tsv"]
    names += [f"gwas/{c}.npy" for c in ("beta", "se", "log10_p", "obs_ct", "a1_freq", "reason", "omnibus_chi2")]
    names += ["gwas/variants.tsv"]
    for name in names:
        one, two = (tmp_path / f"one.{name}").read_bytes(), (tmp_path / f"two.{name}").read_bytes()
        assert one == two, name
    assert len((tmp_path / "one.P1.glm.linear").read_text().splitlines()) > 1000
    meta = json.loads((tmp_path / "two.gwas" / "meta.json").read_text())
    assert meta["n_variants"] == json.loads((tmp_path / "one.gwas" / "meta.json").read_text())["n_variants"]
    assert len(meta["group_sizes"]) == 4  # the complete phenotypes, and one group per NA pattern
    # The second process wrote nothing of its own: no log lines past warnings, no extra files.
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("two")) == sorted(
        p.name.replace("one", "two", 1) for p in tmp_path.iterdir() if p.name.startswith("one")
    )


@pytest.mark.slow  # about 35 s: four launches
def test_ldscore_and_rhe_h2_on_two_processes_equal_one(tiny_cohort, phenotypes, tmp_path):
    """`ldscore` (each process scores a share of every chromosome's blocks, after filling its ring)
    and `h2 --method rhe` (a share of the jackknife blocks each) write the same bytes as one
    process; the second process writes nothing. Small blocks, so that each process has several."""
    bfile = str(tiny_cohort / "genotypes")
    ldscore = ["ldscore", "--bfile", bfile, "--ld-wind-kb", "200", "--block-size", "64"]
    rhe = ["h2", "--method", "rhe", "--bfile", bfile, "--pheno", str(phenotypes), "--pheno-name", "P0,P2,P4"]
    rhe += ["--covar", str(tiny_cohort / "covariates.tsv"), "--covar-name", "age,sex", "--block-size", "64"]
    rhe += ["--jackknife-blocks", "20", "--probes", "10"]
    for name, launch in (("two", _launch), ("one", _alone)):
        arguments = {"ldscore": [*ldscore, "--out", str(tmp_path / f"{name}_ld")]}
        arguments["rhe"] = [*rhe, "--out", str(tmp_path / f"{name}_rhe")]
        for args in arguments.values():
            _ok(launch(2, args, None) if name == "two" else launch(args, 2, None))
    with (
        gzip.open(tmp_path / "one_ld.l2.ldscore.gz", "rb") as one,
        gzip.open(tmp_path / "two_ld.l2.ldscore.gz", "rb") as two,
    ):
        scores = one.read()
        assert scores == two.read()
    assert len(scores.splitlines()) > 1000
    for name in ("ld.l2.M", "ld.l2.M_5_50", "rhe.h2.tsv"):
        assert (tmp_path / f"one_{name}").read_bytes() == (tmp_path / f"two_{name}").read_bytes(), name
    refused = _launch(
        2, ["h2", "--gwas", str(tmp_path / "g"), "--ldscores", str(tmp_path / "l"), "--out", str(tmp_path / "x")], None
    )
    assert refused.returncode == 2 and "h2 --method ldsc runs as one process" in refused.stderr
    table = pd.read_csv(tmp_path / "two_rhe.h2.tsv", sep="\t")
    assert list(table["phenotype"]) == ["P0", "P2", "P4"] and table["se"].gt(0).all()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("two")) == sorted(
        p.name.replace("one", "two", 1) for p in tmp_path.iterdir() if p.name.startswith("one")
    )


@pytest.mark.slow  # about 20 s: three launches
def test_prepare_on_two_processes_equals_one(tiny_cohort, tmp_path):
    """`prepare --layout zarr` with each process writing its share of the subjects' chunks: the same
    volumes, mask, index and record as one process; the npy layout is refused under a launcher."""
    from wm_jax.data.store import VolumeStore

    args = ["prepare", "--subjects", str(tiny_cohort / "subjects.tsv"), "--layout", "zarr", "--downsample", "2"]
    _ok(_launch(2, [*args, "--out", str(tmp_path / "two")], None))
    _ok(_alone([*args, "--out", str(tmp_path / "one")], 2, None))
    for name in ("mask.npy", "index.tsv", "store.json", "volumes.zarr/zarr.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    one, two = VolumeStore.open(tmp_path / "one"), VolumeStore.open(tmp_path / "two")
    np.testing.assert_array_equal(one.volumes[:], two.volumes[:])
    assert len(two) == 103 and np.abs(two.volumes[:]).sum() > 0
    refused = _launch(
        2, ["prepare", "--subjects", str(tiny_cohort / "subjects.tsv"), "--out", str(tmp_path / "npy")], None
    )
    assert refused.returncode == 2 and "--layout: expected zarr" in refused.stderr
    assert not (tmp_path / "npy").exists()


def _train_args(store, workdir, epochs: int) -> list[str]:
    return [
        "train", "--config", "demo", "--store", str(store), "--workdir", str(workdir),
        "--config.model.input_shape=(12,12,12)", "--config.model.channels=(2,4)", "--config.model.latent_dim=4",
        "--config.batch_size=8", "--config.max_subjects=40", "--config.learning_rate=3e-3",
        f"--config.epochs={epochs}", "--config.log_every=1", "--config.schedule=plateau",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def store(tiny_cohort, tmp_path_factory):
    from wm_jax.data.store import Preprocessing, prepare_store

    return prepare_store(
        tiny_cohort / "subjects.tsv",
        tmp_path_factory.mktemp("mp_store") / "store",
        Preprocessing(crop=((0, 24), (2, 26), (0, 24)), downsample=2),
    )


def _parameters(workdir):
    import jax
    import orbax.checkpoint as ocp

    from wm_jax import checkpoint

    manager = checkpoint.checkpoint_manager(workdir)
    restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    leaves = jax.tree_util.tree_flatten_with_path(restored["state"])[0]
    return manager.latest_step(), {jax.tree_util.keystr(path): np.asarray(x) for path, x in leaves}


@pytest.mark.slow  # 40-100 s: `pytest -q -m slow` (.ci/run runs it after the default suite)
def test_training_stopped_on_two_processes_continues_on_one(store, tmp_path):
    """2 processes x 2 devices, one of them sent SIGTERM during epoch 1: both checkpoint at the same
    step and exit 0. The run then finishes on 1 process x 4 devices, and every training loss and
    every convolution kernel agree with a run done wholly there.

    Tolerances, from what the training can guarantee (`_assert_same_training`): the training
    losses, means over a batch, agree at float rounding (rtol 1e-5), a row a step; a skipped or
    repeated step changes the later losses far more. The validation loss (eval mode, BatchNorm
    running means) at rtol 1e-2: see below. Parameters: the conv biases feed BatchNorm, which
    removes them, so their gradient is zero but for rounding, and Adam turns that rounding into
    steps of up to the learning rate; the rounding depends on the device layout (1 vs 4 devices in
    one process as well) and on the machine's kernels. Through the biases, rounding reaches the
    other parameters too, so no elementwise tolerance holds on every machine."""
    workdir = tmp_path / "split"
    launcher = subprocess.Popen(
        ["bash", LAUNCH, "2", *WM_JAX, *_train_args(store, workdir, 2)],
        env=_environment(2, None),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while not (workdir / "metrics.jsonl").is_file() or not (workdir / "metrics.jsonl").read_text():
        assert launcher.poll() is None and time.time() < deadline, launcher.stderr.read()[-3000:]
        time.sleep(0.05)
    os.kill(_process(launcher, 1), signal.SIGTERM)
    _, stderr = launcher.communicate(timeout=300)
    assert launcher.returncode == 0, stderr[-3000:]
    assert stderr.count("checkpoint saved, rerun to resume") == 1  # logged by process 0 alone
    stopped = [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
    assert len(stopped) == 1 and 1 <= stopped[0] < 10
    # The rest in this process (4 devices, tests/conftest.py): the two runs share one compilation.
    _train_here(_train_args(store, workdir, 2))
    _train_here(_train_args(store, tmp_path / "whole", 2))

    def losses(workdir):
        rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r.get("train_loss"), r.get("val_loss", 0.0)) for r in rows]

    split, whole = losses(workdir), losses(tmp_path / "whole")
    assert [r[0] for r in split] == [r[0] for r in whole] and len(split) == 10  # a row a step
    for a, b in zip(split, whole):
        np.testing.assert_allclose(a[1], b[1], rtol=1e-5)
        np.testing.assert_allclose(a[2], b[2], rtol=1e-2)
    (step_a, params_a), (step_b, params_b) = _parameters(workdir), _parameters(tmp_path / "whole")
    assert step_a == step_b == 10 and params_a.keys() == params_b.keys()
    # The UDIP table from 2 processes (each embedding its slice of every batch) is the 1-process
    # table, to float32 rounding: 2 x 2 devices against 1 x 4. Same bytes held with lax.conv; with
    # the slice convolution (wm_jax/model/conv.py) a value differed in its 6th significant digit.
    embed = ["embed", "--workdir", str(tmp_path / "whole"), "--store", str(store), "--batch-size", "16"]
    _ok(_launch(2, [*embed, "--out", str(tmp_path / "two.tsv")], None))
    assert main([*embed, "--out", str(tmp_path / "one.tsv")]) == 0
    one, two = (pd.read_csv(tmp_path / f"{name}.tsv", sep="\t") for name in ("one", "two"))
    assert len(one) == 103 and list(one.columns) == list(two.columns) and one["IID"].equals(two["IID"])
    values = [c for c in one.columns if c not in ("FID", "IID")]
    np.testing.assert_allclose(two[values].to_numpy(), one[values].to_numpy(), rtol=2e-5, atol=1e-6)
    _assert_same_training(params_a, params_b, learning_rate=3e-3, steps=10)
    # The check has power: the whole run's parameters moved by one more Adam step (a repeated step,
    # made from its own moments at step 10) are rejected.
    with pytest.raises(AssertionError):
        _assert_same_training(params_b, _one_more_adam_step(params_b, 3e-3), learning_rate=3e-3, steps=10)


def _one_more_adam_step(params: dict, learning_rate: float) -> dict:
    """The model parameters after one more Adam step (b1 0.9, b2 0.999, eps 1e-8) of the moments
    in the checkpoint, at its count and plateau scale."""
    adam = "['1']['opt_state']['0']['0']"
    t = int(params[f"{adam}['count']"]) + 1
    rate = learning_rate * float(params["['1']['opt_state']['1']['scale']"])
    moved = dict(params)
    for key in (k for k in params if k.startswith("['0']") and f"{adam}['mu']{k[5:]}" in params):
        mu, nu = params[f"{adam}['mu']{key[5:]}"], params[f"{adam}['nu']{key[5:]}"]
        moved[key] = params[key] - rate * (mu / (1 - 0.9**t)) / (np.sqrt(nu / (1 - 0.999**t)) + 1e-8)
    return moved


# Adam (b1 0.9, b2 0.999) moves a parameter by at most this many learning rates per step over the
# first 10 steps: |m_hat / sqrt(v_hat)| <= (1-b1)/(1-b1^t) sqrt((1-b2^t)/(1-b2)) sqrt(sum_j<t (b1^2/b2)^j)
# (Cauchy-Schwarz), 1.04 at t = 10 and below it before.
ADAM_STEP_BOUND = 1.05


def _assert_same_training(params_a: dict, params_b: dict, learning_rate: float, steps: int) -> None:
    """Two runs of the same ``steps`` Adam steps at most ``learning_rate``, differing only by float
    rounding: every model parameter within 2 * steps * learning_rate * ADAM_STEP_BOUND of the other
    (each run moves it at most that far from the common start), and the bulk of every convolution
    and linear kernel at float rounding: its median difference under learning_rate / 1000 (a step
    moves the median element by about a tenth of the learning rate or more)."""
    bound = 2 * steps * learning_rate * ADAM_STEP_BOUND
    model = [k for k in params_a if k.startswith("['0']")]
    kernels = [k for k in model if k.endswith("kernel']") and params_a[k].size >= 8]
    assert len(kernels) >= 8 and params_a.keys() == params_b.keys()
    for key in model:
        assert np.max(np.abs(params_a[key] - params_b[key]), initial=0.0) <= bound, key
    for key in kernels:
        assert np.median(np.abs(params_a[key] - params_b[key])) <= learning_rate / 1000, key


def _train_here(args: list[str]) -> None:
    """``wm-jax train`` with these arguments, in this process."""
    from wm_jax.config import TRAIN_RULES, apply_overrides, load_config, validate_config
    from wm_jax.train.loop import train_and_evaluate

    overrides = [a for a in args if a.startswith("--config.")]
    config = validate_config(apply_overrides(load_config("demo"), overrides), TRAIN_RULES)
    train_and_evaluate(config, args[args.index("--workdir") + 1], args[args.index("--store") + 1])


def _process(launcher: subprocess.Popen, index: int) -> int:
    """The pid of process ``index`` of a launch/local.sh run."""
    children = subprocess.run(["pgrep", "-P", str(launcher.pid)], capture_output=True, text=True).stdout.split()
    found = [
        int(p) for p in children if f"WM_JAX_PROCESS_ID={index}\0".encode() in open(f"/proc/{p}/environ", "rb").read()
    ]
    assert len(found) == 1, children
    return found[0]


def test_a_killed_process_fails_the_job_without_outputs(tiny_cohort, phenotypes, tmp_path):
    """Process 1 is killed (SIGKILL) once process 0 has made its temporary result store: the job
    exits non-zero within the timeout, and nothing under the output prefix is left."""
    out = tmp_path / "out" / "killed"
    out.parent.mkdir()
    launcher = subprocess.Popen(
        ["bash", LAUNCH, "2", *WM_JAX, *_gwas_args(tiny_cohort, phenotypes, out)],
        env=_environment(2, None),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while not any(".gwas.resume-" in p.name for p in out.parent.iterdir()):  # the store in progress
        assert launcher.poll() is None and time.time() < deadline, "process 0 never started its result store"
        time.sleep(0.02)
    os.kill(_process(launcher, 1), signal.SIGKILL)
    start = time.time()
    _, stderr = launcher.communicate(timeout=120)
    assert launcher.returncode != 0, stderr[-2000:]
    assert time.time() - start < 120
    left = [p.name for p in out.parent.iterdir()]
    assert not [name for name in left if not name.startswith(".")], left  # nothing published
    # Process 0 removes its temporaries when it can (SIGTERM from the launcher); when JAX's
    # coordination service aborts it first, they stay, named for its pid, until the next run to
    # the prefix removes them (the output policy for every killed run, in docs/inputs-and-outputs.md), and so does
    # the result store in progress, which the same command then resumes (wm_jax.gwas.resume).
    for name in left:
        if ".gwas.resume-" in name:
            continue
        pid = int(name.split(".partial-")[1].split("-")[0])
        assert not Path(f"/proc/{pid}").exists(), name


def test_commands_that_run_as_one_process_refuse_a_launcher(tiny_cohort, tmp_path):
    result = _launch(2, ["roi", "--store", str(tmp_path), "--atlas", str(tiny_cohort / "atlas.nii.gz"), "--labels",
                         str(tiny_cohort / "atlas_labels.tsv"), "--out", str(tmp_path / "roi.tsv")], None)  # fmt: skip
    assert result.returncode == 2
    assert "wm-jax roi: error: runs as one process; start it without a launcher" in result.stderr
    assert not (tmp_path / "roi.tsv").exists()
    usage = subprocess.run(["bash", LAUNCH, "two", "wm-jax"], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage: launch/local.sh N" in usage.stderr


def test_a_bad_heartbeat_setting_is_one_line_naming_it(tmp_path):
    """WM_JAX_HEARTBEAT_SECONDS that is not a positive whole number: one line naming it, exit 2,
    before the runtime starts or anything is written."""
    env = {**os.environ, "WM_JAX_COORDINATOR": "127.0.0.1:1", "WM_JAX_NUM_PROCESSES": "2"}
    env.update(WM_JAX_PROCESS_ID="0", WM_JAX_HEARTBEAT_SECONDS="soon")
    command = [sys.executable, "-m", "wm_jax.cli", "gwas", "--bfile", str(tmp_path / "g"), "--pheno", "p"]
    command += ["--covar", "c", "--out", str(tmp_path / "out")]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "WM_JAX_HEARTBEAT_SECONDS='soon'" in lines[0]
    assert list(tmp_path.iterdir()) == []
