"""`wm-jax report` argument parsing."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("report", help="lambda GC, clumped loci, Manhattan/QQ plots, replication, one Markdown page")
    p.add_argument("--gwas", required=True, help="discovery GWAS prefix (PREFIX.gwas/ from `wm-jax gwas`)")
    p.add_argument("--bfile", required=True, help="the genotypes the GWAS ran on (LD for clumping)")
    p.add_argument("--out", required=True, help="report directory")
    p.add_argument("--replication", help="replication GWAS prefix (same phenotypes, other samples)")
    p.add_argument("--truth", help="simulator truth.tsv: score loci against the planted causal variants")
    p.add_argument("--clump-p1", type=float, default=5e-8, help="index variant P threshold")
    p.add_argument("--clump-p2", type=float, default=1e-4, help="clump member P threshold")
    p.add_argument("--clump-r2", type=float, default=0.1, help="clump member r^2 threshold")
    p.add_argument("--clump-kb", type=float, default=250.0, help="clump window in kb")
    p.set_defaults(run=run, accepts_overrides=False)


def run(args, overrides) -> None:
    from wm_jax.reporting import ClumpOptions, build_report

    build_report(args.gwas, args.bfile, args.out, args.replication, args.truth,
                 ClumpOptions(args.clump_p1, args.clump_p2, args.clump_r2, args.clump_kb))
