"""`wm-jax gwas`: PLINK 2 style flags; the work is `wm_jax.gwas.run`."""

from __future__ import annotations

from wm_jax.commands.flags import add_overwrite_flag


def register(sub) -> None:
    from wm_jax import options as o
    from wm_jax.stage_options import GwasOptions

    # Each flag's destination is a field of GwasOptions (wm_jax/stage_options.py), which holds the defaults and ranges.
    p = sub.add_parser("gwas", help="linear association of every phenotype, PLINK 2 --glm statistics")
    o.add_genotype_flags(p, "the genotypes to test")
    p.add_argument("--pheno", required=True, help="phenotype table FID IID ... (-9 is missing, as in PLINK 2)")
    p.add_argument(
        "--pheno-name", dest="pheno_names", type=o.name_list, help="comma-separated names, ranges like UDIP1-UDIP16"
    )
    p.add_argument("--covar", required=True, help="covariate table FID IID ... (-9 is missing, as in PLINK 2)")
    p.add_argument("--covar-name", dest="covar_names", type=o.name_list, help="comma-separated names or ranges")
    p.add_argument("--out", required=True, help="output prefix")
    p.add_argument("--maf", type=o.flag_type(GwasOptions, "maf"), help="minimum minor allele frequency, in [0, 0.5]")
    p.add_argument("--mac", type=o.flag_type(GwasOptions, "mac"), help="minimum minor allele count, >= 0")
    p.add_argument(
        "--geno", type=o.flag_type(GwasOptions, "geno"), help="maximum missing call rate per variant, in [0, 1]"
    )
    p.add_argument(
        "--hwe", type=o.flag_type(GwasOptions, "hwe"), help="Hardy-Weinberg exact test p-value threshold, in [0, 1]"
    )
    p.add_argument(
        "--chr",
        dest="chromosomes",
        type=o.chromosomes,
        help="chromosomes as PLINK reads them, e.g. 1-3,5,X (X = chrX = 23)",
    )
    p.add_argument(
        "--block-size",
        type=o.flag_type(GwasOptions, "block_size"),
        help="variants per device block (fixed shape; the default was fastest: benchmarks/results/gwas_block_size.md)",
    )
    p.add_argument("--format", choices=["compact", "plink2"])
    p.add_argument("--gzip", action="store_true", help="gzip the .glm.linear files")
    p.add_argument("--a1-alt", action="store_true", help="A1 = ALT (.bim 5th column) always, like PLINK 2 omit-ref")
    add_overwrite_flag(p, "replace PREFIX.* files that an earlier wm-jax gwas to this prefix did not write")
    p.set_defaults(run=run, accepts_overrides=False)


def run(args, overrides) -> None:
    from wm_jax.gwas.run import run_gwas
    from wm_jax.hostmemory import keep_freed_memory
    from wm_jax.jax_cache import use_compilation_cache
    from wm_jax.options import genotype_input, options_from_args
    from wm_jax.stage_options import GwasOptions

    use_compilation_cache()
    keep_freed_memory()  # before the first device step (see wm_jax.hostmemory)
    run_gwas(genotype_input(args), args.pheno, args.covar, args.out, options_from_args(GwasOptions, args))
