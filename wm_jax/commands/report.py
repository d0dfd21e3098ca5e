"""`wm-jax report`: the loci report of a GWAS (`wm_jax.reporting`)."""

from __future__ import annotations

from wm_jax.commands.flags import add_overwrite_flag, directory_overwrite_help, genotypes_for_output_dir


def register(sub) -> None:
    from wm_jax import options as o
    from wm_jax.stage_options import ClumpOptions

    # The --clump-* flags are the fields of ClumpOptions (wm_jax/stage_options.py), which holds the defaults and ranges.
    p = sub.add_parser("report", help="lambda GC, clumped loci, Manhattan/QQ plots, replication, one Markdown page")
    p.add_argument("--gwas", required=True, help="discovery GWAS prefix (PREFIX.gwas/ from `wm-jax gwas`)")
    o.add_genotype_flags(p, "the genotypes the GWAS ran on (LD for clumping)")
    p.add_argument("--out", required=True, help="report directory")
    p.add_argument("--replication", help="replication GWAS prefix (same phenotypes, other samples)")
    p.add_argument("--truth", help="simulator truth.tsv: score loci against the planted causal variants")
    p.add_argument("--h2", help="an OUT.h2.tsv of `wm-jax h2`: a heritability table and plot (h2.png)")
    p.add_argument("--rg", help="an OUT.rg.tsv of `wm-jax rg`: a genetic-correlation heatmap (rg.png)")
    p.add_argument(
        "--genes",
        help="an output directory of `wm-jax genes`: genes of each locus, top genes, gene sets, gene Manhattan",
    )
    p.add_argument("--clump-p1", type=o.flag_type(ClumpOptions, "p1"), help="index variant P threshold, in (0, 1]")
    p.add_argument("--clump-p2", type=o.flag_type(ClumpOptions, "p2"), help="clump member P threshold, in (0, 1]")
    p.add_argument("--clump-r2", type=o.flag_type(ClumpOptions, "r2"), help="clump member r^2 threshold, in [0, 1]")
    p.add_argument("--clump-kb", type=o.flag_type(ClumpOptions, "kb"), help="clump window in kb, > 0")
    add_overwrite_flag(p, directory_overwrite_help("report"))
    p.set_defaults(run=run, accepts_overrides=False)


def run(args, overrides) -> None:
    from wm_jax.options import options_from_args
    from wm_jax.reporting.build import REPORT, build_report
    from wm_jax.stage_options import ClumpOptions

    options = options_from_args(ClumpOptions, args, prefix="clump_")
    options.check_thresholds()
    genotypes = genotypes_for_output_dir(args, REPORT)
    build_report(
        args.gwas,
        genotypes,
        args.out,
        args.replication,
        args.truth,
        options,
        overwrite=args.overwrite,
        h2=args.h2,
        rg=args.rg,
        genes=args.genes,
    )
