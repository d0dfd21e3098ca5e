"""`wm-jax ldscore`: LDSC --l2 LD scores, streamed through the accelerator (`wm_jax.heritability.ldscore`)."""

from __future__ import annotations

import logging

from wm_jax.commands.flags import add_overwrite_flag

log = logging.getLogger("wm_jax")


def register(sub) -> None:
    from wm_jax import options as o
    from wm_jax.stage_options import GwasOptions

    p = sub.add_parser("ldscore", help="LD scores as LDSC --l2 computes them, in LDSC's files")
    o.add_genotype_flags(p, "the reference genotypes")
    p.add_argument("--out", required=True, help="output prefix: OUT.l2.ldscore.gz, OUT.l2.M, OUT.l2.M_5_50")
    window = p.add_mutually_exclusive_group()
    window.add_argument("--ld-wind-kb", type=o.number(0, low_open=True), help="window in kb (LDSC's --ld-wind-kb)")
    window.add_argument(
        "--ld-wind-cm", type=o.number(0, low_open=True), help="window in cM, the .bim's 3rd column (default 1)"
    )
    window.add_argument("--ld-wind-snps", type=o.integer(1), help="window in variants")
    p.add_argument("--chr", dest="chromosomes", type=o.chromosomes, help="chromosomes as PLINK reads them, e.g. 1-3,5")
    p.add_argument(  # the GWAS's --maf range, declared once on GwasOptions.maf
        "--maf", type=o.flag_type(GwasOptions, "maf"), help="keep variants with minor allele frequency above this"
    )
    p.add_argument("--block-size", type=o.integer(1, 1 << 16), default=512, help="variants per device step (512)")
    p.add_argument(
        "--yes-really", action="store_true", help="allow a window that spans a whole chromosome (as LDSC's flag)"
    )
    add_overwrite_flag(p, "replace OUT.l2.* files that an earlier wm-jax ldscore did not write")
    p.set_defaults(run=run, accepts_overrides=False)


def window_of(args):
    from wm_jax.heritability.ldscore import Window

    if args.ld_wind_kb is not None:
        return Window("kb", args.ld_wind_kb)
    if args.ld_wind_snps is not None:
        return Window("snps", args.ld_wind_snps)
    return Window("cm", 1.0 if args.ld_wind_cm is None else args.ld_wind_cm)


def run(args, overrides) -> None:
    import time

    from wm_jax import __version__
    from wm_jax.data.genotypes import open_genotypes
    from wm_jax.gwas import qc
    from wm_jax.heritability.ldscore import check_ld_score_outputs, ld_scores, write_ld_score_files
    from wm_jax.jax_cache import use_compilation_cache
    from wm_jax.options import genotype_input

    start = time.perf_counter()
    source = genotype_input(args)
    check_ld_score_outputs(args.out, args.overwrite)
    use_compilation_cache()
    data = open_genotypes(source)
    rows = qc.select_chromosomes(data, args.chromosomes)
    window = window_of(args)
    scores = ld_scores(data, rows, window, args.block_size, args.maf, args.yes_really)
    from wm_jax import sharding

    if not sharding.is_main_process():
        return  # every process scored its share of each chromosome and has every score; process 0 writes
    record = {
        "version": __version__,
        "genotypes": source.describe(),
        "window": window.describe(),
        "chr": args.chromosomes,
        "maf": args.maf,
        "n_samples": data.n_samples,
        "M": scores.m,
        "M_5_50": scores.m_5_50,
    }
    written = write_ld_score_files(args.out, scores, record, args.overwrite)
    log.info(
        "ldscore: %d variants (%d with MAF > 0.05), mean L2 %.3f, in %.1f s -> %s",
        scores.m,
        scores.m_5_50,
        scores.table["L2"].mean(),
        time.perf_counter() - start,
        written[0],
    )
