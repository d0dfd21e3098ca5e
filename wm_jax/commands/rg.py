"""`wm-jax rg`: genetic correlations by LD score regression (`wm_jax.heritability.ldsc`), among a GWAS's
phenotypes or with external summary statistics."""

from __future__ import annotations

import logging
import time

from wm_jax.commands.ldsc_shared import add_ldsc_flags, claim_table, ldsc_inputs, publish_table, table_record
from wm_jax.errors import InputError

log = logging.getLogger("wm_jax")


def register(sub) -> None:
    from wm_jax import options as o

    p = sub.add_parser("rg", help="genetic correlations among a GWAS's phenotypes, or with external summary statistics")
    add_ldsc_flags(p, o)
    p.add_argument(
        "--intercept-gencov",
        type=float,
        help="constrain every pair's genetic covariance intercept to this value (0: no sample overlap)",
    )
    p.add_argument(
        "--sumstats",
        nargs="+",
        help="external summary statistics (LDSC .sumstats[.gz] or GWAS-SSF): every phenotype against each file",
    )
    p.add_argument("--out", required=True, help="output prefix: OUT.rg.tsv (+ OUT.rg.json)")
    p.set_defaults(run=run, accepts_overrides=False)


def run(args, overrides) -> None:
    import pandas as pd

    from wm_jax.heritability.ldsc import rg_among_gwas, rg_with_external
    from wm_jax.heritability.sumstats import read_sumstats

    table_path, record_path = claim_table(args.out, "rg", "rg", args.overwrite)
    gwas, phenotypes, reference, options = ldsc_inputs(args)
    externals = [read_sumstats(path) for path in args.sumstats or []]
    start = time.time()
    if externals:
        table = pd.concat([rg_with_external(gwas, reference, e, phenotypes, options) for e in externals])
    else:
        if len(phenotypes) < 2:
            raise InputError("--pheno-name: expected at least two phenotypes for rg among them (or --sumstats FILE)")
        table = rg_among_gwas(gwas, reference, phenotypes, options)
    log.info("rg of %d pair(s) in %.2f s -> %s", len(table), time.time() - start, table_path)
    sumstats = [str(e.path.resolve()) for e in externals]
    publish_table(table_path, record_path, table, table_record("rg", args, reference, options, sumstats=sumstats))
