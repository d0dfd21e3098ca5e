"""The same `wm-jax gwas` job on the default backend and on XLA:CPU: are the statistics the same?

    python benchmarks/gwas_backends.py --n 35000 --m 20000 --p 16 [--name NAME]

Builds (or reuses) the synthetic cohort of `benchmarks/gwas_device.py` (hard calls, 1% missing
calls in every other variant, 10 covariates, P standard-normal phenotypes), then runs the whole
`wm-jax gwas` process twice on it, each with an empty compilation cache:

- the reference on XLA:CPU (``JAX_PLATFORMS=cpu``), with the host's missing-call index and counts;
- the default backend (a GPU or TPU where there is one), with the index built in the kernel and the
  counts taken on the device (what GPUs and TPUs do by default; forced, so that on a CPU-only
  machine this compares the device paths with the host paths on one backend).

Then it compares BETA, SE and -log10 P of every test (largest |dBETA| / SE, |dSE| / SE and
|d(-log10 P)|, against the plink2 tolerance used everywhere in this project, 1e-4 dBETA/SE) and
variants.tsv byte for byte (counts, QC, A1). Writes benchmarks/results/NAME.md and .json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import record  # noqa: E402
from gwas_device import build_cohort, phenotypes, run  # noqa: E402

TOLERANCE = 1e-4  # |dBETA| / SE, as against plink2


def run_one(prefix: Path, pheno: Path, out: Path, reference: bool) -> float:
    """The whole process into a new folder ``out.parent``; the reference on XLA:CPU with the host's paths."""
    if out.parent.exists():
        shutil.rmtree(out.parent)
    out.parent.mkdir(parents=True)
    placement = ("host", "host") if reference else ("device", "device")
    env = {"JAX_PLATFORMS": "cpu"} if reference else {}
    return run(prefix, pheno, prefix.parent / "covar.tsv", out, False, 512, placement, env)[0]


def compare(reference: Path, other: Path) -> dict:
    """Largest differences of the compact columns, relative to the reference's SE."""
    folder_a, folder_b = Path(f"{reference}.gwas"), Path(f"{other}.gwas")
    beta_a, beta_b = np.load(folder_a / "beta.npy"), np.load(folder_b / "beta.npy")
    se_a, se_b = np.load(folder_a / "se.npy"), np.load(folder_b / "se.npy")
    p_a, p_b = np.load(folder_a / "log10_p.npy"), np.load(folder_b / "log10_p.npy")
    same_nan = bool((np.isnan(beta_a) == np.isnan(beta_b)).all() and (np.isnan(se_a) == np.isnan(se_b)).all())
    ok = np.isfinite(beta_a) & np.isfinite(se_a) & (se_a > 0)
    with np.errstate(invalid="ignore"):
        d_beta = np.abs(beta_b - beta_a)[ok] / se_a[ok]
        d_se = np.abs(se_b - se_a)[ok] / se_a[ok]
        d_p = np.abs(p_b - p_a)[ok]
    return {
        "tests": int(ok.sum()),
        "same_nan_pattern": same_nan,
        "max_dbeta_over_se": float(d_beta.max()),
        "max_dse_over_se": float(d_se.max()),
        "max_dlog10p": float(d_p.max()),
        "identical_bytes": bool(
            np.array_equal(beta_a, beta_b, equal_nan=True)
            and np.array_equal(se_a, se_b, equal_nan=True)
            and np.array_equal(p_a, p_b, equal_nan=True)
        ),
        "variants_tsv_identical": (folder_a / "variants.tsv").read_bytes() == (folder_b / "variants.tsv").read_bytes(),
        "within_tolerance": bool(same_nan and d_beta.max() <= TOLERANCE and d_se.max() <= TOLERANCE),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=35000)
    parser.add_argument("--m", type=int, default=20000)
    parser.add_argument("--p", type=int, default=16)
    parser.add_argument("--workdir", default="/tmp/wm_jax_gwas_device")
    parser.add_argument("--name", default="gwas_backends")
    args = parser.parse_args()
    import jax

    work = Path(args.workdir)
    prefix = build_cohort(work / f"cohort_{args.n}x{args.m}", args.n, args.m)
    pheno = phenotypes(prefix.parent, args.n, args.p)
    reference_out, device_out = work / "backends_cpu" / "out", work / "backends_default" / "out"
    cpu_s = run_one(prefix, pheno, reference_out, reference=True)
    default_s = run_one(prefix, pheno, device_out, reference=False)
    row = {
        "n": args.n,
        "m": args.m,
        "p": args.p,
        "default_backend": jax.default_backend(),
        "cpu_whole_process_s": round(cpu_s, 2),
        "default_whole_process_s": round(default_s, 2),
        **compare(reference_out, device_out),
        "tolerance": TOLERANCE,
    }
    print(json.dumps(row), flush=True)
    record.write(
        args.name,
        "One `wm-jax gwas` job on the default backend against XLA:CPU",
        "python benchmarks/gwas_backends.py " + " ".join(sys.argv[1:]),
        [row],
        "Reference: XLA:CPU with the host's missing-call index and counts; the other run: the default backend "
        "with the index built in the kernel and the counts taken on the device (forced). Differences are over "
        "every test with a BETA, relative to the reference's SE.",
    )


if __name__ == "__main__":
    main()
