"""`wm-jax h2`: SNP heritability by LD score regression of a GWAS (`wm_jax.heritability.ldsc`) or by
randomized Haseman-Elston regression on the genotypes (`wm_jax.heritability.rhe`)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from wm_jax.commands.ldsc_shared import add_ldsc_flags, claim_table, ldsc_inputs, publish_table, table_record
from wm_jax.errors import InputError
from wm_jax.stage_options import LdscOptions

log = logging.getLogger("wm_jax")


def register(sub) -> None:
    from wm_jax import options as o

    p = sub.add_parser(
        "h2", help="SNP heritability of every phenotype: LD score regression of a GWAS, or RHE from genotypes"
    )
    p.add_argument(
        "--method",
        choices=["ldsc", "rhe"],
        default="ldsc",
        help="ldsc (default): LD score regression of --gwas; rhe: randomized Haseman-Elston regression of "
        "--pheno on the genotypes, in one pass",
    )
    add_ldsc_flags(p, o)
    p.add_argument(
        "--chisq-max", type=o.flag_type(LdscOptions, "chisq_max"), help="drop SNPs with chi^2 >= this (default none)"
    )
    add_rhe_flags(p, o)
    p.add_argument("--out", required=True, help="output prefix: OUT.h2.tsv (+ OUT.h2.json)")
    p.set_defaults(run=run, accepts_overrides=False)


def add_rhe_flags(p, o) -> None:
    """--method rhe's flags; the fields of RheOptions (wm_jax/stage_options.py) hold the defaults and ranges."""
    from wm_jax.stage_options import RheOptions

    o.add_genotype_flags(p, "--method rhe: the genotypes", required=False)
    p.add_argument("--pheno", help="--method rhe: phenotype table FID IID ... (-9 is missing, as in PLINK 2)")
    p.add_argument("--covar", help="--method rhe: covariate table FID IID ... (an intercept is always fitted)")
    p.add_argument("--covar-name", dest="covar_names", type=o.name_list, help="--method rhe: covariates (default: all)")
    p.add_argument("--chr", dest="chromosomes", type=o.chromosomes, help="--method rhe: chromosomes, e.g. 1-22")
    p.add_argument(
        "--probes", type=o.flag_type(RheOptions, "probes"), help="--method rhe: random probes for tr(K^2) (100)"
    )
    p.add_argument(
        "--jackknife-blocks",
        type=o.flag_type(RheOptions, "jackknife_blocks"),
        help="--method rhe: jackknife blocks (100)",
    )
    p.add_argument(
        "--block-size", type=o.flag_type(RheOptions, "block_size"), help="--method rhe: variants per device step (512)"
    )
    p.add_argument("--seed", type=o.flag_type(RheOptions, "seed"), help="--method rhe: seed of the probes (1)")


LDSC_ONLY = ("gwas", "ldscores", "ref_ld", "w_ld", "two_step", "n_blocks", "intercept_h2", "no_intercept", "chisq_max")
RHE_ONLY = ("bfile", "pfile", "bgen", "sample", "pheno", "covar", "covar_names", "chromosomes", "probes",
            "jackknife_blocks", "block_size", "seed")  # fmt: skip


def check_method_flags(args) -> None:
    """Each method's flags only with that method: one line naming the first stray flag."""
    stray = [name for name in (RHE_ONLY if args.method == "ldsc" else LDSC_ONLY) if getattr(args, name, None)]
    if args.method == "rhe" and args.not_m_5_50:
        stray.append("not_m_5_50")
    if stray:
        flag = "--" + stray[0].replace("_", "-").replace("covar-names", "covar-name").replace("chromosomes", "chr")
        other = "rhe" if args.method == "ldsc" else "ldsc"
        raise InputError(f"{flag}: expected only with --method {other}")


def run_rhe(args, table_path: Path, record_path: Path) -> None:
    from wm_jax.heritability.rhe import rhe_table
    from wm_jax.options import genotype_input, options_from_args
    from wm_jax.stage_options import RheOptions

    if args.bfile is None and args.pfile is None and args.bgen is None:
        raise InputError("--bfile: expected the genotypes (--bfile, --pfile or --bgen) with --method rhe")
    if args.pheno is None:
        raise InputError("--pheno: expected a phenotype table with --method rhe")
    source = genotype_input(args)
    options = options_from_args(RheOptions, args)
    start = time.time()
    table = rhe_table(source, args.pheno, args.pheno_names, args.covar, args.covar_names, options, args.chromosomes)
    log.info("h2 (rhe) of %d phenotype(s) in %.2f s -> %s", len(table), time.time() - start, table_path)
    from wm_jax import sharding

    if not sharding.is_main_process():
        return  # every process streamed its share and has the whole table; process 0 writes it
    import wm_jax

    record = {
        "command": "h2",
        "method": "rhe",
        "code_version": wm_jax.__version__,
        "genotypes": source.describe(),
        "pheno": str(Path(args.pheno).resolve()),
        "covar": args.covar and str(Path(args.covar).resolve()),
        "chr": args.chromosomes,
        "options": options.__dict__,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    publish_table(table_path, record_path, table, record)


def run(args, overrides) -> None:
    from wm_jax.heritability.ldsc import h2_table

    check_method_flags(args)
    table_path, record_path = claim_table(args.out, "h2", "h2", args.overwrite)
    if args.method == "rhe":
        return run_rhe(args, table_path, record_path)
    from wm_jax import sharding

    sharding.refuse_other_processes("h2 --method ldsc")
    gwas, phenotypes, reference, options = ldsc_inputs(args)
    start = time.time()
    table = h2_table(gwas, reference, phenotypes, options)
    log.info("h2 of %d phenotype(s) in %.2f s -> %s", len(table), time.time() - start, table_path)
    publish_table(table_path, record_path, table, table_record("h2", args, reference, options, method=args.method))
