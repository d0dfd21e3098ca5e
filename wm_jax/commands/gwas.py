"""`wm-jax gwas`: PLINK 2 style flags; the work is `wm_jax.gwas.run`."""

from __future__ import annotations

from wm_jax.commands.flags import add_overwrite_flag


def register(sub) -> None:
    from wm_jax import options as o

    # Each flag's destination is a field of GwasOptions (wm_jax/gwas/run.py), which holds the defaults.
    p = sub.add_parser("gwas", help="linear association of every phenotype, PLINK 2 --glm statistics")
    o.add_genotype_flags(p, "the genotypes to test")
    p.add_argument("--pheno", required=True, help="phenotype table FID IID ... (-9 is missing, as in PLINK 2)")
    p.add_argument(
        "--pheno-name", dest="pheno_names", type=o.name_list, help="comma-separated names, ranges like UDIP1-UDIP16"
    )
    p.add_argument("--covar", required=True, help="covariate table FID IID ... (-9 is missing, as in PLINK 2)")
    p.add_argument("--covar-name", dest="covar_names", type=o.name_list, help="comma-separated names or ranges")
    p.add_argument("--out", required=True, help="output prefix")
    p.add_argument("--maf", type=o.number(0, 0.5), help="minimum minor allele frequency, in [0, 0.5]")
    p.add_argument("--mac", type=o.integer(0), help="minimum minor allele count, >= 0")
    p.add_argument("--geno", type=o.number(0, 1), help="maximum missing call rate per variant, in [0, 1]")
    p.add_argument("--hwe", type=o.number(0, 1), help="Hardy-Weinberg exact test p-value threshold, in [0, 1]")
    p.add_argument(
        "--chr",
        dest="chromosomes",
        type=o.chromosomes,
        help="chromosomes as PLINK reads them, e.g. 1-3,5,X (X = chrX = 23)",
    )
    p.add_argument(
        "--block-size",
        type=o.integer(1, 1 << 20),
        help="variants per device block (fixed shape; the default was fastest: benchmarks/results/gwas_block_size.md)",
    )
    p.add_argument("--format", choices=["compact", "plink2"])
    p.add_argument("--gzip", action="store_true", help="gzip the .glm.linear files")
    p.add_argument("--a1-alt", action="store_true", help="A1 = ALT (.bim 5th column) always, like PLINK 2 omit-ref")
    add_overwrite_flag(p, "replace PREFIX.* files that an earlier wm-jax gwas to this prefix did not write")
    p.set_defaults(run=run, accepts_overrides=False)


def run(args, overrides) -> None:
    from wm_jax.gwas.run import GwasOptions, run_gwas
    from wm_jax.hostmemory import keep_freed_memory
    from wm_jax.jax_cache import use_compilation_cache
    from wm_jax.options import genotype_input, options_from_args

    use_compilation_cache()
    keep_freed_memory()  # before the first device step (see wm_jax.hostmemory)
    run_gwas(genotype_input(args), args.pheno, args.covar, args.out, options_from_args(GwasOptions, args))
