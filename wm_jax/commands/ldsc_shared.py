"""What `wm-jax h2` (LDSC) and `wm-jax rg` share: the LD score flags, the inputs they name, and the
commands' outputs.

Each command writes its table and a JSON record (what produced it) under temporary names and
publishes them together; an existing output is replaced only when the record says this command
wrote it, or with --overwrite.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from wm_jax.commands.flags import add_overwrite_flag
from wm_jax.errors import InputError
from wm_jax.stage_options import LdscOptions

LDSC_HELP = "LD scores of LDSC's format (PREFIX.l2.ldscore.gz, .l2.M_5_50; PREFIX@ or a trailing chromosome split)"


def add_ldsc_flags(p, o) -> None:
    p.add_argument("--gwas", help="GWAS prefix (PREFIX.gwas/ from `wm-jax gwas`)")
    p.add_argument("--pheno-name", dest="pheno_names", type=o.name_list, help="phenotypes (default: all)")
    p.add_argument("--ldscores", help=f"{LDSC_HELP}: the reference and the weight LD scores")
    p.add_argument("--ref-ld", help="reference LD scores (instead of --ldscores)")
    p.add_argument("--w-ld", help="regression weight LD scores (instead of --ldscores)")
    p.add_argument(
        "--two-step",
        type=o.flag_type(LdscOptions, "two_step"),
        help="two-step estimator cutoff (ldsc's defaults: 30 for h2, none for rg)",
    )
    p.add_argument("--n-blocks", type=o.flag_type(LdscOptions, "n_blocks"), help="jackknife blocks (default 200)")
    p.add_argument("--intercept-h2", type=float, help="constrain every h2 intercept to this value (no two-step)")
    p.add_argument(
        "--no-intercept",
        action="store_true",
        help="h2 intercepts constrained to 1 (and, for rg, genetic covariance intercepts to 0), as ldsc's flag",
    )
    p.add_argument("--not-M-5-50", dest="not_m_5_50", action="store_true", help="M from .l2.M, not .l2.M_5_50")
    add_overwrite_flag(p, "replace outputs this command did not write")


def ldsc_inputs(args):
    """The GWAS, the phenotype rows, the merged LD scores and the regression options."""
    from dataclasses import replace

    import numpy as np

    from wm_jax.heritability.ldsc import load_reference
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
    if args.no_intercept:
        if options.intercept_h2 is not None or options.intercept_gencov is not None:
            raise InputError("--no-intercept: expected without --intercept-h2 or --intercept-gencov")
        options = replace(options, intercept_h2=1.0, intercept_gencov=0.0)
    if options.intercept_gencov is not None and options.two_step is not None:
        raise InputError("--two-step: expected a free genetic covariance intercept (not with --intercept-gencov)")
    chromosomes = set(np.unique(gwas.variants["CHR"].to_numpy()).tolist())
    autosomes = {c for c in chromosomes if 1 <= c <= 22}  # LD score sets hold 1-22, as ldsc reads them
    reference = load_reference(ref_ld, w_ld, autosomes, options)
    return gwas, phenotypes, reference, options


def claim_table(out: str, suffix: str, command: str, overwrite: bool) -> tuple[Path, Path]:
    """OUT.<suffix>.tsv and its record OUT.<suffix>.json, checked before any work."""
    from wm_jax.publish import check_output_files, check_output_name

    check_output_name(out, "file")
    table, record = Path(f"{out}.{suffix}.tsv"), Path(f"{out}.{suffix}.json")
    check_output_files([table, record], record, command, overwrite)
    return table, record


def publish_table(table_path: Path, record_path: Path, table, record: dict) -> None:
    from wm_jax.publish import atomic_path

    with atomic_path(table_path) as tmp, atomic_path(record_path) as tmp_record:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.10g", na_rep="NA")
        tmp_record.write_text(json.dumps(record, indent=2) + "\n")


def table_record(command: str, args, reference, options, **extra) -> dict:
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
