"""The whole `wm-jax gwas` process on a synthetic .bed of any size, with its timeline.

    python benchmarks/gwas_device.py --n 35000 --m 1000000 --p 128,512 [--feed-only] [--index auto|host|device]
        [--counts auto|host|device] [--plink2] [--resume] [--name NAME]

Builds (once, under --workdir) a cohort of N samples x M hard calls, tiled from 1,024 random
variants (so 8 GB build in about disk speed), with 1% missing calls in every other variant of the
tile, 10 covariates and P standard-normal phenotypes. Then runs `wm-jax gwas` on it, whole process
with an empty compilation cache, and prints the timeline from its .log: reading the inputs, the
association pass (GB/s of .bed bytes, TFLOP/s of its one matmul, 2 N M (P + k + 1) FLOPs), and the
results. ``--feed-only`` swaps the association kernel for a trivial one of the same inputs and
outputs (one sum over each block's bytes), to measure the host pipeline alone: reading, counting,
routing, transfers and writing the results. ``--index device`` builds the missing-call index in the
kernel, as on GPUs and TPUs (so the trivial kernel leaves the host's own work: reading, counting,
routing); ``host`` builds it on the reader threads, as on CPU. ``--counts device`` takes each
chunk's genotype counts on the device, as on GPUs and TPUs (``host``: NumPy popcounts on the reader
threads, as on CPU). ``--plink2`` times plink2 --glm hide-covar (2 threads,
OpenBLAS 1 thread, as benchmarks/gwas_vs_plink2.py) on the same files, after wm-jax, and gives the
ratio of whole processes. ``--resume`` then runs the same command again into a new prefix, kills
it with SIGKILL halfway through its pass (at the full run's time to the pass plus half the pass),
reruns that command, and reports the rerun's whole process against the full run's pass, and whether
every output but the .log has the full run's bytes. Writes benchmarks/results/NAME.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import record  # noqa: E402

TILE = 1024  # variants in the random tile the .bed repeats
PLACEMENT = {"auto": None, "host": False, "device": True}  # --index, --counts -> the stream's switch
N_COVARIATES = 10


def build_cohort(directory: Path, n: int, m: int, seed: int = 0) -> Path:
    """``directory``/geno.{bed,bim,fam} and covar.tsv (once); returns the --bfile prefix."""
    prefix = directory / "geno"
    if (directory / "complete").exists():
        return prefix
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    from wm_jax.data.plink import encode_alt_dosages

    freq = rng.uniform(0.05, 0.5, TILE)
    dosages = rng.binomial(2, freq[:, None], (TILE, n)).astype(np.float64)
    dosages[::2][rng.random((TILE // 2, n)) < 0.01] = np.nan  # missing calls in every other variant
    tile = encode_alt_dosages(dosages).tobytes()
    with open(f"{prefix}.bed", "wb") as bed:
        bed.write(bytes([0x6C, 0x1B, 0x01]))
        for start in range(0, m, TILE):
            bed.write(tile[: min(TILE, m - start) * (len(tile) // TILE)])
    chrom = np.minimum(np.arange(m) * 22 // m + 1, 22)
    position = np.arange(m) * 100 + 1
    with open(f"{prefix}.bim", "w") as bim:
        bim.writelines(f"{c}\tv{i}\t0\t{p}\tA\tG\n" for i, (c, p) in enumerate(zip(chrom.tolist(), position.tolist())))
    ids = [f"s{i}" for i in range(n)]
    with open(f"{prefix}.fam", "w") as fam:
        fam.writelines(f"{i}\t{i}\t0\t0\t0\t-9\n" for i in ids)
    covariates = rng.standard_normal((n, N_COVARIATES))
    _write_table(directory / "covar.tsv", ids, covariates, "C")
    (directory / "complete").touch()
    return prefix


def _write_table(path: Path, ids: list[str], values: np.ndarray, stem: str) -> None:
    header = "FID\tIID\t" + "\t".join(f"{stem}{j + 1}" for j in range(values.shape[1]))
    rows = (f"{i}\t{i}\t" + "\t".join(f"{v:.5g}" for v in row) for i, row in zip(ids, values.tolist()))
    path.write_text(header + "\n" + "\n".join(rows) + "\n")


def phenotypes(directory: Path, n: int, p: int) -> Path:
    path = directory / f"pheno_{p}.tsv"
    if not path.exists():
        _write_table(path, [f"s{i}" for i in range(n)], np.random.default_rng(p).standard_normal((n, p)), "Y")
    return path


def trivial_block_fn(layout, small_df: bool = True, missing_width: int | None = None):
    """The kernel's signature and outputs, one sum over each block's bytes (and the host's
    missing-call index, where it builds one) as its only work."""
    import jax
    import jax.numpy as jnp

    from wm_jax.gwas.kernel import BlockResult

    def step(raw, *index_and_inputs):
        *missing_index, inputs = index_and_inputs
        rows = jnp.sum(raw.astype(jnp.float32), axis=1)
        if missing_index:
            rows = rows + jnp.sum(missing_index[0], axis=1).astype(jnp.float32)
        zero = jnp.where(rows < 0, rows, 0.0)  # 0 (sums are never negative), but computed from every byte
        n_pheno, n_groups = inputs.residual_ss.shape[0], inputs.group_size.shape[0]
        per_pheno = jnp.broadcast_to(zero[:, None], (raw.shape[0], n_pheno))  # no hits: nothing past P < 5e-8
        per_group = jnp.broadcast_to(zero[:, None], (raw.shape[0], n_groups))
        return BlockResult(
            per_pheno, per_pheno, per_pheno, per_group.astype(jnp.int32), per_group, per_group.astype(jnp.int32), zero
        )

    return jax.jit(step)


class ThreadCpu:
    """CPU seconds of this process's threads over a span, by kind: XLA's own threads (its thread
    pools and compiler workers, named by XLA) and the rest (the host pipeline: the main thread, the
    reader and writer threads). Sampled from /proc/self/task every SAMPLE_S, so a thread that ends
    inside the span counts up to its last sample (at most SAMPLE_S short)."""

    SAMPLE_S = 0.05
    XLA_PREFIXES = ("tf_", "llvm-", "xla", "XLA")

    def __init__(self) -> None:
        import threading

        self.ticks = os.sysconf("SC_CLK_TCK")
        self.last: dict[str, tuple[str, float]] = {}
        self.stop = threading.Event()
        self.sampler = threading.Thread(target=self._run, daemon=True)

    def _read(self) -> dict[str, tuple[str, float]]:
        found = {}
        for tid in os.listdir("/proc/self/task"):
            try:
                stat = Path(f"/proc/self/task/{tid}/stat").read_text()
                comm = Path(f"/proc/self/task/{tid}/comm").read_text().strip()
            except OSError:  # ended meanwhile
                continue
            fields = stat.rsplit(")", 1)[1].split()
            found[tid] = (comm, (int(fields[11]) + int(fields[12])) / self.ticks)
        return found

    def _run(self) -> None:
        while not self.stop.wait(self.SAMPLE_S):
            self.last.update(self._read())

    def __enter__(self) -> ThreadCpu:
        self.base = self._read()
        self.last = dict(self.base)
        self.sampler.start()
        return self

    def __exit__(self, *_) -> None:
        self.stop.set()
        self.sampler.join()
        self.last.update(self._read())
        mine = str(self.sampler.native_id)
        self.by_kind = {"xla_cpu_s": 0.0, "host_cpu_s": 0.0}
        for tid, (comm, seconds) in self.last.items():
            if tid != mine:
                kind = "xla_cpu_s" if comm.startswith(self.XLA_PREFIXES) else "host_cpu_s"
                self.by_kind[kind] += seconds - self.base.get(tid, (comm, 0.0))[1]


def child(arguments: list[str], feed_only: bool, index: str, counts: str) -> None:
    """`wm-jax gwas arguments` in this process, the kernel swapped for the trivial one if asked, the
    missing-call index built and the genotypes counted where ``index`` and ``counts`` say (auto: the
    backend's choice). The association's CPU seconds by kind of thread (`ThreadCpu`) go to the file
    that WM_JAX_THREAD_CPU names, if set."""
    from wm_jax.gwas import stream

    associate, cpu_file = stream.associate, os.environ.get("WM_JAX_THREAD_CPU")

    def timed(*args, **kwargs):
        with ThreadCpu() as cpu:
            found = associate(*args, **kwargs)
        Path(cpu_file).write_text(json.dumps({k: round(v, 2) for k, v in cpu.by_kind.items()}))
        return found

    if cpu_file:
        stream.associate = timed
    if feed_only:
        stream.make_block_fn = trivial_block_fn
    stream.INDEX_ON_DEVICE, stream.COUNTS_ON_DEVICE = PLACEMENT[index], PLACEMENT[counts]
    from wm_jax.cli import main

    sys.exit(main(["gwas", *arguments]))


def timeline(log_text: str) -> dict:
    """The stages of a `wm-jax gwas` .log, in seconds since it began, and the pass's rates."""

    def at(pattern: str) -> float:
        found = re.search(r"\[\s*([\d.]+)s\] " + pattern, log_text)
        return float(found.group(1)) if found else float("nan")

    association = re.search(r"association: \d+ variant-phenotype tests in ([\d.]+) s", log_text)
    compiled = [float(x) for x in re.findall(r"kernel compiled in ([\d.]+) s", log_text)]
    stream = re.search(
        r"stream: genotypes read once, ([\d.]+) MB .* results written, ([\d.]+) MB in ([\d.]+) s", log_text
    )
    return {
        "inputs_read_s": at(r"\d+ variants x \d+ phenotypes to stream"),
        "association_s": float(association.group(1)),
        "compile_s_total": round(sum(compiled), 2),
        "kernels": len(compiled),
        "genotype_mb": float(stream.group(1)),
        "results_mb": float(stream.group(2)),
        "writer_s": float(stream.group(3)),
        "end_s": at(r"total"),
    }


def child_command(
    prefix: Path, pheno: Path, covar: Path, out: Path, feed_only: bool, block_size: int, placement: tuple[str, str]
) -> tuple[list[str], dict]:
    """The child's command line and environment (its compilation cache beside ``out``)."""
    arguments = ["--bfile", str(prefix), "--pheno", str(pheno), "--covar", str(covar), "--out", str(out)]
    arguments += ["--block-size", str(block_size)]
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(out.parent / "jax_cache")}
    command = [sys.executable, __file__, "--child", "--index", placement[0], "--counts", placement[1]]
    command += ["--feed-only"] if feed_only else []
    return [*command, "--", *arguments], env


def run(
    prefix: Path,
    pheno: Path,
    covar: Path,
    out: Path,
    feed_only: bool,
    block_size: int,
    placement: tuple[str, str],
    env_extra: dict | None = None,
) -> tuple[float, str]:
    """The child, whole process, with an empty compilation cache (and ``env_extra`` set); its
    seconds and .log. Its association's CPU by kind of thread goes to thread_cpu.json beside ``out``."""
    shutil.rmtree(out.parent / "jax_cache", ignore_errors=True)
    command, env = child_command(prefix, pheno, covar, out, feed_only, block_size, placement)
    env.update(env_extra or {}, WM_JAX_THREAD_CPU=str(out.parent / "thread_cpu.json"))
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start, Path(f"{out}.log").read_text()


def outputs(out: Path) -> dict[str, bytes]:
    """Every output file of the run with prefix ``out`` but its .log and the ownership markers (which
    hold the time they were written), by name relative to its folder."""
    files = [p for p in out.parent.glob(out.name + ".*") if p.suffix != ".log"]
    found = {}
    for path in files:
        for member in [path] if path.is_file() else sorted(q for q in path.rglob("*") if q.is_file()):
            if member.name != ".wm-jax-output.json":
                found[str(member.relative_to(out.parent))] = member.read_bytes()
    return found


def killed_and_resumed(
    prefix: Path,
    pheno: Path,
    covar: Path,
    out: Path,
    full: dict,
    block_size: int,
    placement: tuple[str, str],
    kill_at: float,
) -> dict:
    """Run into ``out``, SIGKILL it at ``kill_at`` seconds, rerun the same command (same compilation
    cache, as a user would); the rerun's times and whether its outputs equal ``full``'s."""
    out.parent.mkdir(parents=True)
    command, env = child_command(prefix, pheno, covar, out, False, block_size, placement)
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        child.wait(timeout=kill_at)
        raise SystemExit(f"the run finished in under {kill_at:.1f} s, before it could be killed")
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
    recorded = sum(len(list(d.glob("progress/*"))) for d in out.parent.glob(f".{out.name}.gwas.resume-*"))
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    stages = timeline(Path(f"{out}.log").read_text())
    same = outputs(out)
    return {
        "killed_at_s": round(kill_at, 2),
        "chunks_recorded_when_killed": recorded,
        "rerun_whole_process_s": round(seconds, 2),
        "rerun_association_s": stages["association_s"],
        "identical_outputs": sorted(same) == sorted(full) and all(same[k] == full[k] for k in full),
        "output_files": len(full),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=35000)
    parser.add_argument("--m", type=int, default=1_000_000)
    parser.add_argument("--p", default="128")
    parser.add_argument("--block-size", type=int, default=512)
    parser.add_argument("--feed-only", action="store_true")
    parser.add_argument("--workdir", default="/tmp/wm_jax_gwas_device")
    parser.add_argument("--name", default="gwas_device")
    parser.add_argument("--plink2", action="store_true", help="also time plink2 --glm on the same files, side by side")
    parser.add_argument(
        "--index",
        choices=tuple(PLACEMENT),
        default="auto",
        help="where the missing-call index is built: the backend's choice (host on CPU, device on GPU/TPU), or forced",
    )
    parser.add_argument(
        "--counts",
        choices=tuple(PLACEMENT),
        default="auto",
        help="where each chunk's genotype counts are taken: the backend's choice (host on CPU, device on GPU/TPU), "
        "or forced",
    )
    parser.add_argument("--resume", action="store_true", help="also kill a run halfway and time its rerun")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.child:
        child(rest[1:] if rest[:1] == ["--"] else rest, args.feed_only, args.index, args.counts)
    work = Path(args.workdir)
    began = time.perf_counter()
    prefix = build_cohort(work / f"cohort_{args.n}x{args.m}", args.n, args.m)
    print(f"cohort ready in {time.perf_counter() - began:.1f} s: {prefix}", flush=True)

    rows = []
    for p in [int(x) for x in args.p.split(",")]:
        pheno = phenotypes(prefix.parent, args.n, p)
        out = work / f"run_{p}{'_feed' if args.feed_only else ''}" / "out"
        if out.parent.exists():
            shutil.rmtree(out.parent)
        out.parent.mkdir(parents=True)
        load = Path("/proc/loadavg").read_text().split()[0]  # other work on the machine, for the record
        seconds, log_text = run(
            prefix, pheno, prefix.parent / "covar.tsv", out, args.feed_only, args.block_size, (args.index, args.counts)
        )
        stages = timeline(log_text)
        stages.update(json.loads((out.parent / "thread_cpu.json").read_text()))
        if args.plink2:
            from gwas_vs_plink2 import run_plink2

            plink_seconds, _ = run_plink2(
                shutil.which("plink2"),
                ["--bfile", str(prefix)],
                pheno,
                prefix.parent / "covar.tsv",
                out.parent / "plink2",
            )
            stages.update(plink2_s=round(plink_seconds, 2), speedup=round(plink_seconds / seconds, 2))
        if args.resume and not args.feed_only:
            kill_at = seconds - stages["end_s"] + stages["inputs_read_s"] + stages["association_s"] / 2
            resumed = killed_and_resumed(
                prefix,
                pheno,
                prefix.parent / "covar.tsv",
                out.parent / "resumed" / "out",
                outputs(out),
                args.block_size,
                (args.index, args.counts),
                kill_at,
            )
            resumed["rerun_over_full_pass"] = round(resumed["rerun_whole_process_s"] / stages["association_s"], 3)
            stages.update(resumed)
        bed_gb = args.m * ((args.n + 3) // 4) / 1e9
        flops = 2.0 * args.n * args.m * (p + N_COVARIATES + 2)
        rows.append(
            {
                "n": args.n,
                "m": args.m,
                "p": p,
                "mode": "feed-only" if args.feed_only else "gwas",
                "index": args.index,
                "counts": args.counts,
                "whole_process_s": round(seconds, 2),
                **stages,
                "bed_gb": round(bed_gb, 3),
                "pass_gb_per_s": round(bed_gb / stages["association_s"], 2),
                "pass_tflops": None if args.feed_only else round(flops / stages["association_s"] / 1e12, 3),
                # the host pipeline's CPU per GB of .bed over the association, and the rate it alone
                # would allow on all of this machine's cores (XLA's threads, the device's work here, excluded)
                "host_cpu_s_per_gb": round(stages["host_cpu_s"] / bed_gb, 2),
                "host_bound_gb_per_s": round(os.cpu_count() * bed_gb / max(stages["host_cpu_s"], 1e-9), 2),
                "load_before": load,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    command = "python benchmarks/gwas_device.py " + " ".join(sys.argv[1:])
    record.write(
        args.name,
        "wm-jax gwas on a synthetic .bed, whole process",
        command,
        rows,
        "An empty compilation cache each run; the .bed in the page cache (built just before, or read by an "
        "earlier run). Stage times are seconds since the run's .log began.",
    )


if __name__ == "__main__":
    main()
