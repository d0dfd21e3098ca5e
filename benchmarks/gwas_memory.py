"""Peak memory of `wm-jax gwas` as the number of variants grows (streaming: it should stay flat).

    python benchmarks/gwas_memory.py --cohort COHORT [--phenotypes 128] [--chr 1,1-2,1-4,1-8] [--repeat R]
        [--inputs bed,pgen,bgen]

Runs the same job on growing chromosome sets of one cohort (`--chr`), one whole process each, and
writes benchmarks/results/gwas_memory.md (and .json): variants, wall time and peak RSS. The
compact results are memory-mapped files written block by block, so the pages the kernel has
written count towards RSS until the kernel evicts them; the table also shows the size of those
result files, to tell them from the process's own memory. `--repeat R` first writes a cohort with
the variants repeated R times (chromosomes renumbered 1..8R for a cohort of 8), for larger M.
Every run loads the whole variant table, so that part of the memory is the same in all rows.
`--inputs` also runs the PGEN and the 8-bit BGEN that plink2 makes of the (repeated) .bed.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gwas_vs_plink2 import genotype_inputs, make_phenotypes, timed_rss, write_result_table


def repeat_variants(cohort: Path, times: int, out: Path) -> Path:
    """A copy of the cohort (genotypes, covariates) whose variants repeat ``times`` times, each copy on
    chromosomes shifted past the previous copy's."""
    out.mkdir()
    bim = pd.read_csv(cohort / "genotypes.bim", sep=r"\s+", header=None)
    n_chromosomes = int(bim[0].max())
    copies = []
    for r in range(times):
        copy = bim.copy()
        copy[0] = copy[0] + n_chromosomes * r
        copy[1] = copy[0].astype(str) + ":" + copy[3].astype(str)
        copies.append(copy)
    pd.concat(copies).to_csv(out / "genotypes.bim", sep="\t", header=False, index=False)
    body = (cohort / "genotypes.bed").read_bytes()
    with open(out / "genotypes.bed", "wb") as bed:
        bed.write(body[:3])
        for _ in range(times):
            bed.write(body[3:])
    shutil.copy(cohort / "genotypes.fam", out / "genotypes.fam")
    shutil.copy(cohort / "covariates.tsv", out / "covariates.tsv")
    return out


def run_one(kind: str, flags: list, chromosomes: str, pheno: Path, cohort: Path, out: Path) -> dict:
    """One whole `wm-jax gwas` process on ``chromosomes``: its wall time and peak RSS."""
    seconds, rss, _ = timed_rss(
        [sys.executable, "-m", "wm_jax.cli", "gwas", *flags, "--pheno", str(pheno)]
        + ["--covar", str(cohort / "covariates.tsv"), "--chr", chromosomes, "--out", str(out)]
    )
    log_text = Path(f"{out}.log").read_text()
    n_variants = int(re.search(r"(\d+) variants x \d+ phenotypes to test", log_text).group(1))
    result_mib = sum(f.stat().st_size for f in Path(f"{out}.gwas").glob("*.npy")) / 2**20
    return {
        "input": kind,
        "chr": chromosomes,
        "variants": n_variants,
        "wall_s": round(seconds, 1),
        "peak_rss_mib": round(rss),
        "result_files_mib": round(result_mib),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", required=True, help="a `wm-jax simulate` directory")
    parser.add_argument("--phenotypes", type=int, default=128)
    parser.add_argument("--chr", default="1,1-2,1-4,1-8", help="comma-separated chromosome sets")
    parser.add_argument("--repeat", type=int, default=1, help="repeat the cohort's variants this many times")
    parser.add_argument("--inputs", default="bed", help="comma-separated: bed, pgen, bgen (made from the .bed)")
    args = parser.parse_args()
    cohort = Path(args.cohort)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.repeat > 1:
            cohort = repeat_variants(cohort, args.repeat, tmp / "repeated")
        pheno = tmp / "pheno.tsv"
        make_phenotypes(cohort, args.phenotypes, 4, pheno, seed=args.phenotypes)
        plink2 = shutil.which("plink2")
        if plink2 is None and args.inputs != "bed":
            sys.exit("plink2 not found (it makes the PGEN and BGEN): apt-get install plink2")
        inputs = genotype_inputs(cohort, args.inputs.split(","), tmp, plink2)
        for kind, (_, flags) in inputs.items():
            for chromosomes in args.chr.split(","):
                rows.append(run_one(kind, flags, chromosomes, pheno, cohort, tmp / f"{kind}_chr{chromosomes}"))
                print(rows[-1], flush=True)
    text = write_result_table(
        "gwas_memory",
        "Peak memory of wm-jax gwas against the number of variants",
        f"{args.phenotypes} phenotypes.",
        rows,
    )
    print(text)


if __name__ == "__main__":
    main()
