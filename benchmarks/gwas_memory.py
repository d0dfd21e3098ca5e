"""Peak memory of `wm-jax gwas` as the number of variants grows (streaming: it should stay flat).

    python benchmarks/gwas_memory.py --cohort COHORT [--phenotypes 128] [--chr 1,1-2,1-4,1-8]

Runs the same job on growing chromosome sets of one cohort (`--chr`), one whole process each, and
writes benchmarks/results/gwas_memory.md (and .json): variants, wall time and peak RSS. The
compact results are memory-mapped files written block by block, so the pages the kernel has
written count towards RSS until the kernel evicts them; the table also shows the size of those
result files, to tell them from the process's own memory.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gwas_vs_plink2 import REPO, make_phenotypes, markdown_table, timed_rss  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", required=True, help="a `wm-jax simulate` directory")
    parser.add_argument("--phenotypes", type=int, default=128)
    parser.add_argument("--chr", default="1,1-2,1-4,1-8", help="chromosome sets, ';'- or ','-separated")
    args = parser.parse_args()
    cohort = Path(args.cohort)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pheno = tmp / "pheno.tsv"
        make_phenotypes(cohort, args.phenotypes, 4, pheno, seed=args.phenotypes)
        for chromosomes in args.chr.split(","):
            out = tmp / f"chr{chromosomes}"
            seconds, rss, _ = timed_rss([sys.executable, "-m", "wm_jax.cli", "gwas", "--bfile", str(cohort / "genotypes"),
                                         "--pheno", str(pheno), "--covar", str(cohort / "covariates.tsv"),
                                         "--chr", chromosomes, "--out", str(out)])
            log_text = Path(f"{out}.log").read_text()
            n_variants = int(re.search(r"(\d+) variants x \d+ phenotypes to test", log_text).group(1))
            result_mib = sum(f.stat().st_size for f in Path(f"{out}.gwas").glob("*.npy")) / 2**20
            rows.append({"chr": chromosomes, "variants": n_variants, "wall_s": round(seconds, 1),
                         "peak_rss_mib": round(rss), "result_files_mib": round(result_mib)})
            print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    command = "python benchmarks/gwas_memory.py " + " ".join(sys.argv[1:])
    text = (f"# Peak memory of wm-jax gwas against the number of variants\n\n`{command}` on {platform.machine()}, "
            f"2 cores, {time.strftime('%Y-%m-%d')}; {args.phenotypes} phenotypes.\n\n" + markdown_table(frame) + "\n")
    out = REPO / "benchmarks" / "results" / "gwas_memory"
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"command": command, "rows": rows}, indent=2))
    print(text)


if __name__ == "__main__":
    main()
