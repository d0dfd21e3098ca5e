"""`wm-jax h2`, `wm-jax rg` and `wm-jax export`: argument parsing and the commands' outputs.

Each command writes its table and a JSON record (what produced it) under temporary names and
publishes them together; an existing output is replaced only when the record says this command
wrote it, or with --overwrite.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from wm_jax.errors import InputError

log = logging.getLogger("wm_jax")

LDSC_HELP = "LD scores of LDSC's format (PREFIX.l2.ldscore.gz, .l2.M_5_50; PREFIX@ or a trailing chromosome split)"


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
    _add_ldsc_flags(p, o)
    p.add_argument("--intercept-h2", type=float, help="constrain the intercept to this value (no two-step)")
    p.add_argument("--chisq-max", type=o.number(0, low_open=True), help="drop SNPs with chi^2 >= this (default none)")
    _add_rhe_flags(p, o)
    p.add_argument("--out", required=True, help="output prefix: OUT.h2.tsv (+ OUT.h2.json)")
    p.set_defaults(run=run_h2, accepts_overrides=False)

    p = sub.add_parser("rg", help="genetic correlations among a GWAS's phenotypes, or with external summary statistics")
    _add_ldsc_flags(p, o)
    p.add_argument(
        "--sumstats",
        nargs="+",
        help="external summary statistics (LDSC .sumstats[.gz] or GWAS-SSF): every phenotype against each file",
    )
    p.add_argument("--out", required=True, help="output prefix: OUT.rg.tsv (+ OUT.rg.json)")
    p.set_defaults(run=run_rg, accepts_overrides=False)

    p = sub.add_parser("export", help="a GWAS's summary statistics as GWAS-SSF files, one per phenotype")
    p.add_argument("--gwas", required=True, help="GWAS prefix (PREFIX.gwas/ from `wm-jax gwas`)")
    p.add_argument("--pheno-name", dest="pheno_names", type=o.name_list, help="phenotypes (default: all)")
    p.add_argument("--out", required=True, help="output directory: PHENO.tsv.gz and PHENO.tsv.gz-meta.yaml")
    p.add_argument("--overwrite", action="store_true", help="replace a directory without this command's marker")
    p.set_defaults(run=run_export, accepts_overrides=False)


def _add_ldsc_flags(p, o) -> None:
    p.add_argument("--gwas", help="GWAS prefix (PREFIX.gwas/ from `wm-jax gwas`)")
    p.add_argument("--pheno-name", dest="pheno_names", type=o.name_list, help="phenotypes (default: all)")
    p.add_argument("--ldscores", help=f"{LDSC_HELP}: the reference and the weight LD scores")
    p.add_argument("--ref-ld", help="reference LD scores (instead of --ldscores)")
    p.add_argument("--w-ld", help="regression weight LD scores (instead of --ldscores)")
    p.add_argument(
        "--two-step",
        type=o.number(0, low_open=True),
        help="two-step estimator cutoff (ldsc's defaults: 30 for h2, none for rg)",
    )
    p.add_argument("--n-blocks", type=o.integer(2), help="jackknife blocks (default 200)")
    p.add_argument("--not-M-5-50", dest="not_m_5_50", action="store_true", help="M from .l2.M, not .l2.M_5_50")
    p.add_argument("--overwrite", action="store_true", help="replace outputs this command did not write")


def _add_rhe_flags(p, o) -> None:
    """--method rhe's flags; the fields of RheOptions (wm_jax/heritability/rhe.py) hold the defaults."""
    o.add_genotype_flags(p, "--method rhe: the genotypes", required=False)
    p.add_argument("--pheno", help="--method rhe: phenotype table FID IID ... (-9 is missing, as in PLINK 2)")
    p.add_argument("--covar", help="--method rhe: covariate table FID IID ... (an intercept is always fitted)")
    p.add_argument("--covar-name", dest="covar_names", type=o.name_list, help="--method rhe: covariates (default: all)")
    p.add_argument("--chr", dest="chromosomes", type=o.chromosomes, help="--method rhe: chromosomes, e.g. 1-22")
    p.add_argument("--probes", type=o.integer(2, 10000), help="--method rhe: random probes for tr(K^2) (100)")
    p.add_argument("--jackknife-blocks", type=o.integer(2, 10000), help="--method rhe: jackknife blocks (100)")
    p.add_argument("--block-size", type=o.integer(1, 1 << 16), help="--method rhe: variants per device step (512)")
    p.add_argument("--seed", type=o.integer(0, 2**32 - 1), help="--method rhe: seed of the probes (1)")


LDSC_ONLY = ("gwas", "ldscores", "ref_ld", "w_ld", "two_step", "n_blocks", "intercept_h2", "chisq_max")
RHE_ONLY = ("bfile", "pfile", "bgen", "sample", "pheno", "covar", "covar_names", "chromosomes", "probes",
            "jackknife_blocks", "block_size", "seed")  # fmt: skip


def _check_method_flags(args) -> None:
    """Each method's flags only with that method: one line naming the first stray flag."""
    stray = [name for name in (RHE_ONLY if args.method == "ldsc" else LDSC_ONLY) if getattr(args, name, None)]
    if args.method == "rhe" and args.not_m_5_50:
        stray.append("not_m_5_50")
    if stray:
        flag = "--" + stray[0].replace("_", "-").replace("covar-names", "covar-name").replace("chromosomes", "chr")
        other = "rhe" if args.method == "ldsc" else "ldsc"
        raise InputError(f"{flag}: expected only with --method {other}")


def run_rhe(args, table_path: Path, record_path: Path) -> None:
    from wm_jax.heritability.rhe import RheOptions, rhe_table
    from wm_jax.options import genotype_input, options_from_args

    if args.bfile is None and args.pfile is None and args.bgen is None:
        raise InputError("--bfile: expected the genotypes (--bfile, --pfile or --bgen) with --method rhe")
    if args.pheno is None:
        raise InputError("--pheno: expected a phenotype table with --method rhe")
    source = genotype_input(args)
    options = options_from_args(RheOptions, args)
    start = time.time()
    table = rhe_table(source, args.pheno, args.pheno_names, args.covar, args.covar_names, options, args.chromosomes)
    log.info("h2 (rhe) of %d phenotype(s) in %.2f s -> %s", len(table), time.time() - start, table_path)
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
    _publish(table_path, record_path, table, record)


def _ldsc_inputs(args):
    """The GWAS, the phenotype rows, the merged LD scores and the regression options."""
    import numpy as np

    from wm_jax.heritability.ldsc import LdscOptions, load_reference
    from wm_jax.heritability.sumstats import check_phenotypes, open_gwas
    from wm_jax.hostmemory import keep_freed_memory
    from wm_jax.options import options_from_args

    if args.gwas is None:
        raise InputError("--gwas: expected the prefix of a `wm-jax gwas` output")
    if args.ldscores is not None and (args.ref_ld or args.w_ld):
        raise InputError("--ldscores: expected either --ldscores or --ref-ld and --w-ld, not both")
    ref_ld, w_ld = (args.ldscores, args.ldscores) if args.ldscores else (args.ref_ld, args.w_ld)
    if not ref_ld or not w_ld:
        raise InputError("--ldscores: expected LD scores (--ldscores PREFIX, or --ref-ld PREFIX and --w-ld PREFIX)")
    keep_freed_memory()  # the regressions' temporaries are reused, not page-faulted in anew (wm_jax.hostmemory)
    gwas = open_gwas(args.gwas)
    phenotypes = check_phenotypes(gwas, args.pheno_names)
    options = options_from_args(LdscOptions, args)
    chromosomes = set(np.unique(gwas.variants["CHR"].to_numpy()).tolist())
    autosomes = {c for c in chromosomes if 1 <= c <= 22}  # LD score sets hold 1-22, as ldsc reads them
    reference = load_reference(ref_ld, w_ld, autosomes, options)
    return gwas, phenotypes, reference, options


def _claim(out: str, suffix: str, command: str, overwrite: bool) -> tuple[Path, Path]:
    """OUT.<suffix>.tsv and its record OUT.<suffix>.json, checked before any work."""
    from wm_jax.errors import check_output_file, check_output_name, written_by

    check_output_name(out, "file")
    table, record = Path(f"{out}.{suffix}.tsv"), Path(f"{out}.{suffix}.json")
    owned = written_by(record, command)
    for path in (table, record):
        check_output_file(path, command, overwrite, owned=owned)
    return table, record


def _publish(table_path: Path, record_path: Path, table, record: dict) -> None:
    from wm_jax.errors import atomic_path

    with atomic_path(table_path) as tmp, atomic_path(record_path) as tmp_record:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.10g", na_rep="NA")
        tmp_record.write_text(json.dumps(record, indent=2) + "\n")


def _record(command: str, args, reference, options, **extra) -> dict:
    from dataclasses import asdict

    import wm_jax

    return {
        "command": command,
        "code_version": wm_jax.__version__,
        "gwas": str(Path(args.gwas).resolve()),
        "ldscores": reference.source,
        "m": reference.m,
        "options": asdict(options),
        "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **extra,
    }


def run_h2(args, overrides) -> None:
    from wm_jax.heritability.ldsc import h2_table

    _check_method_flags(args)
    table_path, record_path = _claim(args.out, "h2", "h2", args.overwrite)
    if args.method == "rhe":
        return run_rhe(args, table_path, record_path)
    gwas, phenotypes, reference, options = _ldsc_inputs(args)
    start = time.time()
    table = h2_table(gwas, reference, phenotypes, options)
    log.info("h2 of %d phenotype(s) in %.2f s -> %s", len(table), time.time() - start, table_path)
    _publish(table_path, record_path, table, _record("h2", args, reference, options, method=args.method))


def run_rg(args, overrides) -> None:
    import pandas as pd

    from wm_jax.heritability.ldsc import rg_among_gwas, rg_with_external
    from wm_jax.heritability.sumstats import read_sumstats

    table_path, record_path = _claim(args.out, "rg", "rg", args.overwrite)
    gwas, phenotypes, reference, options = _ldsc_inputs(args)
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
    _publish(table_path, record_path, table, _record("rg", args, reference, options, sumstats=sumstats))


def run_export(args, overrides) -> None:
    import numpy as np

    from wm_jax.errors import atomic_dir, check_output_dir
    from wm_jax.gwas.inputs import check_file_name_part
    from wm_jax.gwas.text import write_tsv
    from wm_jax.heritability.sumstats import check_phenotypes, open_gwas, ssf_columns, ssf_metadata

    check_output_dir(args.out, "export", args.overwrite)
    gwas = open_gwas(args.gwas)
    phenotypes = check_phenotypes(gwas, args.pheno_names)
    for j in phenotypes:
        check_file_name_part(gwas.directory / "meta.json", gwas.phenotypes[j], ".tsv.gz-meta.yaml", "in wm-jax export")
    log10_p, a1_freq = gwas.column("log10_p"), gwas.column("a1_freq")
    with atomic_dir(args.out, args.overwrite, "export") as tmp:
        for j in phenotypes:
            data = tmp / f"{gwas.phenotypes[j]}.tsv.gz"
            columns = ssf_columns(gwas, j, log10_p, a1_freq)
            formats = {"beta": "%.8g", "standard_error": "%.8g"}  # float32's digits
            if columns["p_value"].dtype == object:
                formats["p_value"] = "%s"
            write_tsv(data, columns, formats=formats, compress=True)
            n_max = int(np.max(columns["n"])) if len(columns["n"]) else 0
            Path(f"{data}-meta.yaml").write_text(ssf_metadata(data, gwas.phenotypes[j], gwas, n_max))
    log.info("GWAS-SSF files of %d phenotype(s) -> %s", len(phenotypes), args.out)
