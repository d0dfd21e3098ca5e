"""Does the study's claim hold? `wm-jax demo` over several simulation seeds, side by side.

For each seed, the whole demo (simulate -> train -> embed -> GWAS -> report) runs as a user would
run it (`wm-jax demo --out DIR --config.seed=S --config.sim.seed=S`), then this script tabulates:
recall of the planted loci by kind for the UDIPs (any, single-UDIP and omnibus loci), ROI-FA
(tract means), PCA with the encoder's latent size and the oracle phenotypes (each planted pattern's
coefficient); loci with no planted variant; lambda GC; the encoder's and PCA's held-out
reconstruction MSE; and the genetic share of each phenotype's variance, from the simulator's
per-subject genetic values (R^2 of the phenotype on every factor's genetic value, held-out subjects).

    python benchmarks/udip_vs_roi.py --seeds 11,12,13 --workdir /tmp/udip_vs_roi [--config.KEY=VALUE ...]

Writes benchmarks/results/udip_vs_roi.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results"
SETS = {"udip": "UDIP", "roi": "FA_", "pca": "IPC", "oracle": "ORACLE_"}
TABLES = {"udip": "udip.tsv", "roi": "roi_fa.tsv", "pca": "pca.tsv", "oracle": "oracle.tsv"}


def run_demo(out: Path, seed: int, overrides: list[str]) -> float:
    start = time.time()
    command = ["wm-jax", "demo", "--out", str(out), f"--config.seed={seed}", f"--config.sim.seed={seed}", *overrides]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.time() - start


def genetic_share(run: Path, kind: str) -> list[float]:
    """Per phenotype of a set: R^2 of its held-out values on all factors' true genetic values."""
    genetic = pd.read_csv(run / "cohort" / "genetic_values.tsv", sep="\t", dtype={"IID": str})
    table = pd.read_csv(run / TABLES[kind], sep="\t", dtype={"IID": str})
    merged = table.merge(genetic, on="IID", suffixes=("", "_g"))
    x = merged[[c for c in genetic.columns if c not in ("FID", "IID")]].to_numpy(np.float64)
    x = np.column_stack([np.ones(len(x)), x - x.mean(axis=0)])
    shares = []
    for column in (c for c in table.columns if c.startswith(SETS[kind])):
        y = merged[column].to_numpy(np.float64)
        fitted = x @ np.linalg.lstsq(x, y, rcond=None)[0]
        shares.append(float(1 - ((y - fitted) ** 2).sum() / ((y - y.mean()) ** 2).sum()))
    return shares


def seed_row(run: Path, seed: int, seconds: float) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    row = {
        "seed": seed,
        "seconds": round(seconds, 1),
        "verdict": summary["verdict"]["holds"],
        "encoder_mse": summary["encoder"]["heldout_reconstruction_mse"],
        "pca_mse": summary["encoder"]["pca_heldout_reconstruction_mse"],
        "sets": {},
    }
    for kind, figures in summary["udip_vs_roi_fa"].items():
        shares = genetic_share(run, kind)
        row["sets"][kind] = {
            "recall_by_kind": figures["recall_by_kind"],
            "n_planted": figures["n_planted"],
            "recovered": figures["n_planted_recovered"],
            "false_loci": figures["n_false_loci"],
            "lambda_median": figures["lambda_median"],
            "omnibus_lambda": figures["omnibus_lambda"],
            "genetic_share_mean": float(np.mean(shares)),
            "genetic_share_max": float(np.max(shares)),
        }
    return row


def markdown(rows: list[dict], command: str) -> str:
    kinds = sorted({k for row in rows for k in row["sets"]["udip"]["recall_by_kind"]})
    lines = [
        "# UDIPs against ROI-FA, PCA and the oracle, over simulation seeds",
        "",
        f"`{command}`",
        "",
        "Recall of planted loci (found / planted) by kind. UDIP single / omnibus: loci found by a single "
        "UDIP's GWAS / by the multivariate test. Genetic share: R^2 of a phenotype on every factor's true "
        "genetic value (held-out subjects), mean (max) over the set's phenotypes.",
        "",
    ]
    header = (
        "| seed | phenotypes | "
        + " | ".join(kinds)
        + " | all | false loci | lambda GC | omnibus lambda | genetic share |"
    )
    lines += [header, "|" + " --- |" * (header.count("|") - 1)]
    for row in rows:
        for kind in SETS:
            s = row["sets"][kind]
            views = (
                [("UDIP any", "any"), ("UDIP single", "single"), ("UDIP omnibus", "omnibus")]
                if kind == "udip"
                else [(kind, "any")]
            )
            for label, how in views:
                cells = [
                    f"{s['recall_by_kind'].get(k, {}).get(how, 0)}/{s['recall_by_kind'].get(k, {}).get('planted', 0)}"
                    for k in kinds
                ]
                total = sum(s["recall_by_kind"].get(k, {}).get(how, 0) for k in kinds)
                extra = (
                    (
                        f"{s['false_loci']} | {s['lambda_median']:.3f} | {s['omnibus_lambda']:.3f} | "
                        f"{s['genetic_share_mean']:.2f} ({s['genetic_share_max']:.2f})"
                    )
                    if how == "any"
                    else "| | |"
                )
                lines.append(
                    f"| {row['seed']} | {label} | " + " | ".join(cells) + f" | {total}/{s['n_planted']} | {extra} |"
                )
    lines += [
        "",
        "| seed | demo seconds | encoder held-out MSE | PCA held-out MSE | encoder / PCA | claim holds |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['seed']} | {row['seconds']} | {row['encoder_mse']:.5f} | {row['pca_mse']:.5f} | "
            f"{row['encoder_mse'] / row['pca_mse']:.4f} | {row['verdict']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="11,12,13")
    parser.add_argument("--workdir", default="/tmp/udip_vs_roi")
    parser.add_argument("--name", default="udip_vs_roi")
    args, overrides = parser.parse_known_args(argv)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        run = Path(args.workdir) / f"seed{seed}"
        seconds = run_demo(run, seed, overrides)
        rows.append(seed_row(run, seed, seconds))
        print(json.dumps({"seed": seed, "seconds": round(seconds, 1), "verdict": rows[-1]["verdict"]}), flush=True)
    command = "python benchmarks/udip_vs_roi.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = markdown(rows, command)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.md").write_text(text)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(rows, indent=2))
    print(text)


if __name__ == "__main__":
    main()
