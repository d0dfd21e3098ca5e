"""wm-jax gwas against plink2 --glm on the same simulated cohort, side by side in one run.

    python benchmarks/gwas_vs_plink2.py [--phenotypes 1,16,128] [--inputs bed,pgen,bgen] [--n-subjects 5003]

Writes benchmarks/results/gwas_vs_plink2.md (and .json): wall time and peak RSS of each whole
process, variant-phenotype tests per second, the speed ratio, the kernel's GFLOP/s against this
machine's measured float32 GEMM rate, and accuracy over all variants. The kernel's time is the
association stage of the log less its compilation (which the log times apart); its FLOPs are
2 N M (P + k + 1), the one matmul per block that exact OLS cannot avoid.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def timed_rss(command: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """As `timed`, with the command's peak RSS from GNU time (``/usr/bin/time -f %M``). Not from
    os.wait4: a child's ru_maxrss keeps the high-water mark of the copy of this process it was
    forked from, so every command reported this (large) process's RSS."""
    start = time.perf_counter()
    err_path = Path(f"/tmp/wm_jax_bench_{os.getpid()}.err")
    rss_path = Path(f"/tmp/wm_jax_bench_{os.getpid()}.rss")
    with open(err_path, "w") as err:
        process = subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", str(rss_path), *command],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, **(env or {})},
        )
    seconds = time.perf_counter() - start
    stderr = err_path.read_text()
    err_path.unlink()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{stderr[-2000:]}")
    rss_kib = float(rss_path.read_text().split()[-1])
    rss_path.unlink()
    return seconds, rss_kib / 1024, stderr


def markdown_table(frame: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def write_result_table(name: str, heading: str, description: str, rows: list[dict]) -> str:
    """benchmarks/results/NAME.md (heading, the command that ran, description, table) and NAME.json."""
    command = f"python benchmarks/{Path(sys.argv[0]).name} " + " ".join(sys.argv[1:])
    text = (
        f"# {heading}\n\n`{command}` on {platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}; "
        f"{description}\n\n" + markdown_table(pd.DataFrame(rows)) + "\n"
    )
    out = REPO / "benchmarks" / "results" / name
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"command": command, "rows": rows}, indent=2))
    return text


def gemm_gflops() -> float:
    """float32 GEMM rate of this machine through XLA (best of 5, 2048^3)."""
    import jax
    import jax.numpy as jnp

    n = 2048
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x, y: x @ y)
    f(a, a).block_until_ready()
    best = min(_time(lambda: f(a, a).block_until_ready()) for _ in range(5))
    return 2 * n**3 / best / 1e9


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def make_phenotypes(cohort: Path, p: int, n_missing_patterns: int, out: Path, seed: int) -> None:
    covariates = pd.read_csv(cohort / "covariates.tsv", sep="\t")
    rng = np.random.default_rng(seed)
    table = covariates[["FID", "IID"]].copy()
    values = rng.standard_normal((len(table), p)) + 0.05 * (covariates.age.to_numpy()[:, None] - 64)
    for j in range(min(n_missing_patterns, p)):
        values[rng.random(len(table)) < 0.01, p - 1 - j] = np.nan
    table = pd.concat([table, pd.DataFrame(values, columns=[f"UDIP{j + 1}" for j in range(p)])], axis=1)
    table.to_csv(out, sep="\t", index=False, na_rep="NA", float_format="%.6g")


def accuracy(ours_prefix: Path, plink_prefix: Path, names: list[str]) -> dict:
    compact = Path(f"{ours_prefix}.gwas")
    beta = np.load(compact / "beta.npy", mmap_mode="r")
    log10p = np.load(compact / "log10_p.npy", mmap_mode="r")
    obs = np.load(compact / "obs_ct.npy", mmap_mode="r")
    meta = json.loads((compact / "meta.json").read_text())
    variants = pd.read_csv(compact / "variants.tsv", sep="\t")
    worst_beta, worst_p, mismatched, compared = 0.0, 0.0, 0, 0
    for j, name in enumerate(names):
        ref = pd.read_csv(
            f"{plink_prefix}.{name}.glm.linear", sep="\t", usecols=["ID", "A1", "OBS_CT", "BETA", "SE", "P"]
        )
        assert (ref.ID.to_numpy() == variants.ID.to_numpy()).all()
        g = meta["group_of_phenotype"][j]
        mismatched += int((ref.A1.to_numpy() != variants.A1.to_numpy()).sum() + (ref.OBS_CT.to_numpy() != obs[g]).sum())
        ok = ref.BETA.notna().to_numpy() & (ref.P.to_numpy() > 0)
        compared += int(ok.sum())
        worst_beta = max(
            worst_beta, float(np.max(np.abs(beta[j][ok] - ref.BETA.to_numpy()[ok]) / ref.SE.to_numpy()[ok]))
        )
        ref_lp = -np.log10(ref.P.to_numpy()[ok])
        worst_p = max(worst_p, float(np.max(np.abs(log10p[j][ok] - ref_lp) / np.maximum(1e-3, 1e-4 * ref_lp))))
    return {
        "max_dbeta_over_se": worst_beta,
        "max_dlog10p_over_tolerance": worst_p,
        "a1_or_obs_mismatches": mismatched,
        "tests_compared": compared,
    }


def without_missing_calls(cohort: Path, out: Path, every: int = 1) -> Path:
    """A copy of the cohort's genotypes (and covariates) with the missing calls (code 01) of every
    ``every``-th variant (from the first) made homozygous REF (11): set the high bit wherever the
    low bit is set. ``every=2`` leaves missing calls in half the variants."""
    out.mkdir(parents=True, exist_ok=True)
    body = np.fromfile(cohort / "genotypes.bed", np.uint8)
    n_samples = sum(1 for _ in open(cohort / "genotypes.fam"))
    genotypes = body[3:].reshape(-1, -(-n_samples // 4))
    cleared = genotypes[::every]
    genotypes[::every] = cleared | ((cleared & ~(cleared >> 1) & 0x55) << 1)
    np.concatenate([body[:3], genotypes.ravel()]).tofile(out / "genotypes.bed")
    for name in ("genotypes.bim", "genotypes.fam", "covariates.tsv"):
        shutil.copy(cohort / name, out / name)
    return out


def genotype_inputs(cohort: Path, kinds: list[str], work: Path, plink2: str) -> dict[str, tuple[list, list]]:
    """Each input kind's flags for plink2 and for wm-jax: the cohort's .bed, and a PGEN and an
    8-bit BGEN 1.2 (zlib, REF last, as plink2 writes it) that plink2 makes of it in ``work``."""
    bfile = str(cohort / "genotypes")
    flags = {"bed": (["--bfile", bfile], ["--bfile", bfile])}
    for kind in kinds:
        if kind == "pgen":
            prefix = str(work / "genotypes_pgen")
            if not Path(prefix + ".pgen").exists():
                subprocess.run(
                    [plink2, "--bfile", bfile, "--make-pgen", "--out", prefix], check=True, capture_output=True
                )
            flags[kind] = (["--pfile", prefix], ["--pfile", prefix])
        elif kind == "bgen":
            prefix = str(work / "genotypes_bgen")
            if not Path(prefix + ".bgen").exists():
                export = ["--export", "bgen-1.2", "bits=8", "--out", prefix]
                subprocess.run([plink2, "--bfile", bfile, *export], check=True, capture_output=True)
            bgen = [prefix + ".bgen", "ref-last", "--sample", prefix + ".sample"]
            flags[kind] = (["--bgen", *bgen], ["--bgen", *bgen])
        elif kind == "bgen-dosage":
            bgen, sample = dosage_bgen(cohort, work, DOSAGE_VARIANTS)
            flags[kind] = (["--bgen", bgen, "ref-first", "--sample", sample],) * 2
        elif kind != "bed":
            sys.exit(f"--inputs: unknown input {kind}; expected bed, pgen, bgen or bgen-dosage")
    return {kind: flags[kind] for kind in kinds}


DOSAGE_VARIANTS = 45_000  # the first variants of the cohort, in its dosage BGEN


def dosage_bgen(cohort: Path, work: Path, n_variants: int) -> tuple[str, str]:
    """An imputation-like dosage BGEN 1.3 of the cohort's first ``n_variants`` (8-bit probabilities,
    zstd blocks, REF first, the missing calls flagged missing), and its .sample: each hard call
    blurred towards a random genotype distribution for 40% of the samples
    (`tests/genotype_files.py`). Written once, 2,000 variants at a time."""
    bgen, sample = work / "genotypes_dosage.bgen", work / "genotypes_dosage.sample"
    if bgen.exists() and sample.exists():
        return str(bgen), str(sample)
    sys.path.insert(0, str(REPO / "tests"))
    from genotype_files import imputed_probabilities, quantize, write_bgen

    from wm_jax.data.plink import PlinkDataset

    data = PlinkDataset(cohort / "genotypes")
    rng = np.random.default_rng(5)
    part = work / "genotypes_dosage.part.bgen"
    with open(f"{bgen}.tmp", "wb") as out:
        for start in range(0, n_variants, 2000):
            rows = np.arange(start, min(n_variants, start + 2000))
            alt = data.dosages(rows)
            table = data.bim.iloc[rows]
            variants = list(zip(table.chrom.astype(str), table.id, table.pos.astype(int), table.ref, table.alt))
            stored = quantize(imputed_probabilities(alt, rng), 8)
            write_bgen(part, stored, 8, 2, variants, sample_ids=list(data.fam.iloc[:, 1]), missing=np.isnan(alt))
            written = part.read_bytes()
            offset = struct.unpack("<I", written[:4])[0]
            if start == 0:  # the header, with every variant counted
                out.write(written[:8] + struct.pack("<I", n_variants) + written[12 : 4 + offset])
            out.write(written[4 + offset :])
    part.unlink()
    lines = [f"{fid} {iid} 0 NA" for fid, iid in zip(data.fam.iloc[:, 0], data.fam.iloc[:, 1])]
    sample.write_text("ID_1 ID_2 missing sex\n0 0 0 D\n" + "\n".join(lines) + "\n")
    os.replace(f"{bgen}.tmp", bgen)
    return str(bgen), str(sample)


def run_plink2(plink2: str, genotype_flags: list, pheno: Path, covar: Path, prefix: Path) -> tuple[float, float]:
    seconds, rss, _ = timed_rss(
        [plink2, *genotype_flags, "--pheno", str(pheno), "--covar", str(covar), "--glm", "hide-covar"]
        + ["--threads", "2", "--out", str(prefix)],
        env={"OPENBLAS_NUM_THREADS": "1"},
    )
    return seconds, rss


def run_wmjax(genotype_flags: list, pheno: Path, covar: Path, prefix: Path, cache: Path, extra: list) -> tuple:
    """One whole `wm-jax gwas` process with its compilation cache in ``cache``: (seconds, RSS, log)."""
    for old in prefix.parent.glob(f"{prefix.name}*"):
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    seconds, rss, _ = timed_rss(
        [sys.executable, "-m", "wm_jax.cli", "gwas", *genotype_flags, "--pheno", str(pheno), "--covar", str(covar)]
        + ["--out", str(prefix), *extra],
        env={"JAX_COMPILATION_CACHE_DIR": str(cache)},
    )
    return seconds, rss, Path(f"{prefix}.log").read_text()


def log_timing(log_text: str) -> tuple[float, float, int, float]:
    """(association seconds, seconds compiling before a pass could start, groups, seconds before
    the association began) from a `wm-jax gwas` .log."""
    found = re.search(
        r"association: \d+ variant-phenotype tests in ([\d.]+) s .* of which ([\d.]+) s compiling", log_text
    )
    groups = int(re.search(r"(\d+) phenotype group", log_text).group(1))
    began = re.search(r"\[\s*([\d.]+)s\] \d+ phenotype group\(s\) in", log_text)
    return float(found.group(1)), float(found.group(2)), groups, float(began.group(1))


def benchmark_job(job: dict, args, gemm: float) -> dict:
    """plink2, then wm-jax with an empty compilation cache (a new user's first run), then wm-jax
    again with the cache that run filled, on one input and phenotype count."""
    kind, (plink_flags, ours_flags), p, cohort, work = (job[k] for k in ("kind", "flags", "p", "cohort", "work"))
    pheno, covar = work / f"pheno_{p}.tsv", cohort / "covariates.tsv"
    names = [f"UDIP{j + 1}" for j in range(p)]
    plink_prefix, ours_prefix = work / f"plink2_{kind}_{p}", work / f"wmjax_{kind}_{p}"
    plink_seconds, plink_rss = run_plink2(job["plink2"], plink_flags, pheno, covar, plink_prefix)
    cache = work / "jax_cache"
    shutil.rmtree(cache, ignore_errors=True)
    extra = ["--block-size", str(args.block_size)]
    ours_seconds, ours_rss, log_text = run_wmjax(ours_flags, pheno, covar, ours_prefix, cache, extra)
    warm_seconds, _, warm_log = run_wmjax(ours_flags, pheno, covar, ours_prefix, cache, extra)
    association_seconds, compile_seconds, groups, startup_seconds = log_timing(log_text)
    kernel_seconds = association_seconds - compile_seconds
    n_variants, n_samples, k = job["n_variants"], job["n_samples"], job["n_covariates"] + 1
    # The work the kernel cannot avoid: one product of the decoded genotypes with [Q | 1 | Y]
    # (k + 1 + P columns) per variant, whatever the number of missingness groups.
    flops = 2.0 * n_samples * n_variants * (p + k + 1)
    row = {
        "input": kind,
        "phenotypes": p,
        "missingness_groups": groups,
        "variants": n_variants,
        "samples": n_samples,
        "plink2_s": round(plink_seconds, 2),
        "wmjax_s": round(ours_seconds, 2),
        "speedup": round(plink_seconds / ours_seconds, 2),
        "wmjax_warm_cache_s": round(warm_seconds, 2),
        "speedup_warm_cache": round(plink_seconds / warm_seconds, 2),
        "plink2_rss_mib": round(plink_rss),
        "wmjax_rss_mib": round(ours_rss),
        "wmjax_tests_per_s": round(n_variants * p / ours_seconds),
        "log_start_to_association_s": startup_seconds,
        "association_s": association_seconds,
        "compile_wait_s": compile_seconds,
        "compile_wait_warm_cache_s": log_timing(warm_log)[1],
        "kernel_s": round(kernel_seconds, 2),
        "kernel_gflops": round(flops / kernel_seconds / 1e9, 1),
        "kernel_fraction_of_gemm": round(flops / kernel_seconds / 1e9 / gemm, 3),
        "load_before": job["load"],
        **accuracy(ours_prefix, plink_prefix, names),
    }
    if args.text_format and kind == "bed" and p == max(int(x) for x in args.phenotypes.split(",")):
        extra = [*extra, "--format", "plink2"]
        row["wmjax_plink2_format_s"] = round(
            run_wmjax(ours_flags, pheno, covar, work / f"text_{p}", cache, extra)[0], 2
        )
    return row


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phenotypes", default="1,16,128")
    parser.add_argument(
        "--inputs",
        default="bed",
        help="comma-separated: bed, pgen, bgen (made from the .bed by plink2), bgen-dosage (an imputation-like "
        "8-bit zstd dosage BGEN of the first 45,000 variants)",
    )
    parser.add_argument("--n-subjects", type=int, default=5003)
    parser.add_argument("--workdir", default=str(REPO / "benchmarks" / "work"))
    parser.add_argument("--cohort", help="an existing `wm-jax simulate` directory")
    parser.add_argument("--block-size", type=int, default=512)
    parser.add_argument("--name", default="gwas_vs_plink2", help="results file name in benchmarks/results/")
    parser.add_argument("--text-format", action="store_true", help="also time --format plink2 (bed, most phenotypes)")
    parser.add_argument(
        "--without-missing-calls",
        action="store_true",
        help="run on a copy of the cohort whose missing calls are set to homozygous REF "
        "(as hard-called imputed genotypes have none)",
    )
    parser.add_argument(
        "--missing-calls-in-half",
        action="store_true",
        help="run on a copy of the cohort whose missing calls are kept in every other variant only",
    )
    return parser.parse_args()


def simulated_cohort(args, work: Path) -> Path:
    cohort = Path(args.cohort) if args.cohort else work / "cohort"
    if not cohort.exists():
        subprocess.run(
            [sys.executable, "-m", "wm_jax.cli", "simulate", "--out", str(cohort)]
            + ["--n-subjects", str(args.n_subjects), "--config.shape=(16,20,16)"]
            + ["--config.genotypes.n_chromosomes=8", "--config.genotypes.chromosome_length=4.5e6"],
            check=True,
        )
    if args.without_missing_calls:
        return without_missing_calls(cohort, work / "cohort_without_missing_calls")
    if args.missing_calls_in_half:
        return without_missing_calls(cohort, work / "cohort_missing_calls_in_half", every=2)
    return cohort


def main() -> None:
    args = parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    cohort = simulated_cohort(args, work)
    plink2 = shutil.which("plink2")
    if plink2 is None:
        sys.exit("plink2 not found: apt-get install plink2 libopenblas0-pthread")
    inputs = genotype_inputs(cohort, args.inputs.split(","), work, plink2)
    shape = {
        "n_variants": sum(1 for _ in open(cohort / "genotypes.bim")),
        "n_samples": sum(1 for _ in open(cohort / "genotypes.fam")),
        "n_covariates": len(open(cohort / "covariates.tsv").readline().split("\t")) - 2,
    }
    gemm = gemm_gflops()
    rows = []
    for p in [int(x) for x in args.phenotypes.split(",")]:
        make_phenotypes(cohort, p, 0 if p == 1 else (2 if p <= 16 else 4), work / f"pheno_{p}.tsv", seed=p)
        for kind, flags in inputs.items():
            load = Path("/proc/loadavg").read_text().split()[0]
            job = {"kind": kind, "flags": flags, "p": p, "cohort": cohort, "work": work, "plink2": plink2, "load": load}
            if kind == "bgen-dosage":
                job["n_variants"] = DOSAGE_VARIANTS
            rows.append(benchmark_job({**shape, **job}, args, gemm))
            print(json.dumps(rows[-1]), flush=True)
    write_results(args, plink2, gemm, rows)


def write_results(args, plink2: str, gemm: float, rows: list[dict]) -> None:
    result = {
        "command": "python benchmarks/gwas_vs_plink2.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "gemm_float32_gflops": round(gemm, 1),
        "plink2": subprocess.run([plink2, "--version"], capture_output=True, text=True).stdout.strip(),
        "date": time.strftime("%Y-%m-%d"),
        "rows": rows,
    }
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    table = pd.DataFrame(rows)
    (out / f"{args.name}.md").write_text(
        f"# wm-jax gwas vs plink2 --glm\n\n`{result['command']}` on {result['machine']}, {result['date']}; "
        f"{result['plink2']}; float32 GEMM {result['gemm_float32_gflops']} GFLOP/s. wmjax_s starts from an "
        "empty compilation cache, wmjax_warm_cache_s reruns with the cache that run filled; load_before is "
        "the 1-minute load average before the row's first process.\n\n" + markdown_table(table) + "\n"
    )
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
