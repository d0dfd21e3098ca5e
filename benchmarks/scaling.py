"""GWAS and training throughput at 1 and 2 processes on this machine (launch/local.sh), side by side
in one run, and the bytes a training step communicates, read from its compiled HLO.

    python benchmarks/scaling.py [--workdir benchmarks/work/scaling] [--repeats 2]

- GWAS: `wm-jax gwas` on a simulated cohort (128 phenotypes, 4 with their own NA pattern), one
  process with 1 CPU device against `launch/local.sh 2` with 1 CPU device each, alternated
  ``--repeats`` times; whole-process wall time and the ratio, and whether the outputs are the
  same bytes.
- Training: `wm-jax train` for 2 epochs; the second epoch's seconds (no compilation) from
  metrics.jsonl, 1 process x 2 devices against 2 processes x 1 device (the same 2-device mesh).
- Communication: the all-reduce bytes per training step of the demo model (batch 8) and the
  paper's model (batch 8, 1 volume per device), on a mesh of 8 fake devices: parameters
  replicated, batch split, so the step all-reduces every gradient once plus BatchNorm statistics.

Writes benchmarks/results/scaling.md. On this 2-core machine two processes share the same cores,
so the ratios measure the cost of the multi-process machinery, not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WM_JAX = [sys.executable, "-m", "wm_jax.cli"]
LAUNCH = ["bash", str(REPO / "launch" / "local.sh")]
HLO_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "f64": 8, "s8": 1, "u8": 1, "pred": 1}


def _env(devices: int, processes: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS" and not k.startswith("WM_JAX_")}
    if processes > 1:
        env["WM_JAX_CPU_DEVICES"] = str(devices)
    else:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def _run(args: list[str], devices: int, processes: int) -> float:
    command = [*LAUNCH, str(processes), *WM_JAX, *args] if processes > 1 else [*WM_JAX, *args]
    start = time.perf_counter()
    subprocess.run(command, env=_env(devices, processes), check=True, capture_output=True)
    return time.perf_counter() - start


def _cohort(work: Path) -> Path:
    cohort = work / "cohort"
    if not cohort.exists():
        subprocess.run(
            [*WM_JAX, "simulate", "--out", str(cohort), "--n-subjects", "3000", "--config.shape=(16,20,16)"]
            + ["--config.genotypes.n_chromosomes=4", "--config.genotypes.chromosome_length=4.5e6"],
            check=True,
            capture_output=True,
        )
    return cohort


def gwas_rows(work: Path, repeats: int) -> list[dict]:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from gwas_vs_plink2 import make_phenotypes

    cohort = _cohort(work)
    pheno = work / "pheno_128.tsv"
    make_phenotypes(cohort, 128, 4, pheno, seed=128)
    n_variants = sum(1 for _ in open(cohort / "genotypes.bim"))
    base = [
        "gwas",
        "--bfile",
        str(cohort / "genotypes"),
        "--pheno",
        str(pheno),
        "--covar",
        str(cohort / "covariates.tsv"),
    ]
    times = {1: [], 2: []}
    for r in range(repeats):
        for processes in (1, 2):
            out = work / f"gwas_{processes}_{r}"
            times[processes].append(_run([*base, "--out", str(out), "--overwrite"], 1, processes))
    same = all(
        (work / "gwas_1_0.gwas" / name).read_bytes() == (work / "gwas_2_0.gwas" / name).read_bytes()
        for name in ("beta.npy", "se.npy", "log10_p.npy", "omnibus_chi2.npy")
    )
    one, two = min(times[1]), min(times[2])
    return [
        {"job": f"gwas, {n_variants} variants x 128 phenotypes", "layout": "1 process x 1 device", "seconds": one},
        {"job": "", "layout": f"2 processes x 1 device (same bytes: {same})", "seconds": two, "ratio": one / two},
    ]


def train_rows(work: Path) -> list[dict]:
    cohort = _cohort(work)
    store = work / "store"
    if not store.exists():
        subprocess.run(
            [*WM_JAX, "prepare", "--subjects", str(cohort / "subjects.tsv"), "--out", str(store)],
            check=True,
            capture_output=True,
        )
    shape = json.loads((store / "store.json").read_text())["grid"]["shape"]
    args = ["train", "--config", "demo", "--store", str(store), f"--config.model.input_shape={tuple(shape)}"]
    args += ["--config.batch_size=8", "--config.max_subjects=400", "--config.epochs=2", "--config.log_every=10"]
    rows = []
    for devices, processes in ((2, 1), (1, 2)):
        workdir = work / f"train_{processes}"
        subprocess.run(["rm", "-rf", str(workdir)], check=True)
        _run([*args, "--workdir", str(workdir)], devices, processes)
        epochs = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines() if '"epoch"' in x]
        seconds = [e["seconds"] for e in epochs if e.get("epoch") == 2][0]
        rows.append(
            {
                "job": "train, demo model, epoch 2",
                "layout": f"{processes} process x {devices} device",
                "seconds": seconds,
            }
        )
    rows[1]["ratio"] = rows[0]["seconds"] / rows[1]["seconds"]
    return rows


def communication_rows() -> list[dict]:
    """All-reduce bytes per step, from a subprocess with 8 fake devices."""
    code = f"import sys; sys.path.insert(0, {str(REPO / 'benchmarks')!r}); import scaling; scaling._hlo_bytes()"
    env = {**_env(8, 1), "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _hlo_bytes() -> None:
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from jax.sharding import NamedSharding, PartitionSpec

    from wm_jax import sharding
    from wm_jax.config import load_config
    from wm_jax.model.autoencoder import Autoencoder, AutoencoderConfig, masked_mse
    from wm_jax.train.state import model_config, transform

    demo = load_config("demo")
    paper = load_config("udip_fa")
    demo.model.input_shape, paper.model.input_shape = (48, 56, 48), (182, 218, 182)  # unset: the store's grid
    for name, config in (("demo", demo), ("paper", paper)):
        mcfg: AutoencoderConfig = model_config(config)
        mesh = sharding.data_mesh()

        def build(mcfg=mcfg, config=config):
            model = Autoencoder(mcfg, rngs=nnx.Rngs(0))
            return model, nnx.Optimizer(model, transform(config, 10), wrt=nnx.Param)

        graph, state = nnx.split(nnx.eval_shape(build))
        n_params = sum(x.size for x in jax.tree.leaves(nnx.state(nnx.eval_shape(build)[0], nnx.Param)))

        def step(state, volumes, weights, mask, graph=graph):
            model, optimizer = nnx.merge(graph, state)
            loss, grads = nnx.value_and_grad(lambda m: masked_mse(m(volumes), volumes, mask, weights))(model)
            optimizer.update(model, grads, value=loss)
            return nnx.state((model, optimizer)), loss

        replicated, split = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("data"))
        batch = 8
        state_spec = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), state)
        args = (
            state_spec,
            jax.ShapeDtypeStruct((batch, *mcfg.input_shape), jnp.float32, sharding=split),
            jax.ShapeDtypeStruct((batch,), jnp.float32, sharding=split),
            jax.ShapeDtypeStruct(mcfg.input_shape, jnp.float32, sharding=replicated),
        )
        hlo = jax.jit(step, donate_argnums=(0,)).lower(*args).compile().as_text()
        total, count = 0, 0
        for line in hlo.splitlines():
            match = re.search(r"=\s*(.+?)\s+all-reduce(?:-start)?\(", line)
            if match:
                count += 1
                for dtype, dims in re.findall(r"(\w+)\[([\d,]*)\]", match.group(1)):
                    size = 1
                    for d in filter(None, dims.split(",")):
                        size *= int(d)
                    total += size * HLO_BYTES.get(dtype, 4)
        row = {"model": name, "devices": mesh.size, "batch": batch, "parameters": n_params}
        row |= {"all_reduces": count, "all_reduce_mib": round(total / 2**20, 2)}
        row["gradient_mib"] = round(n_params * 4 / 2**20, 2)
        print(json.dumps(row), flush=True)


def _table(rows: list[dict]) -> list[str]:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        cells = [f"{r[k]:.3g}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=str(REPO / "benchmarks" / "work" / "scaling"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--reuse-throughput", action="store_true", help="the last run's throughput rows")
    args = parser.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    saved = work / "throughput.json"
    if args.reuse_throughput and saved.exists():
        throughput = json.loads(saved.read_text())
    else:
        throughput = gwas_rows(work, args.repeats) + train_rows(work)
        saved.write_text(json.dumps(throughput))
    communication = communication_rows()
    text = [
        "# Scaling: 1 and 2 processes on this machine, and training-step communication",
        "",
        f"`python benchmarks/scaling.py --repeats {args.repeats}`, {time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()} cores.",
        "Two processes share the same 2 cores here: a ratio near 1 means the multi-process machinery",
        "costs little; it is not a speed-up. `ratio` = 1-process seconds / 2-process seconds.",
        "",
        *_table(throughput),
        "",
        "All-reduce traffic per training step from the compiled HLO (8 fake CPU devices, `data` mesh;",
        "operand bytes of every all-reduce, summed):",
        "",
        *_table(communication),
        "",
    ]
    out = REPO / "benchmarks" / "results" / "scaling.md"
    out.write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
