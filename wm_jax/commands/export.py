"""`wm-jax export`: a GWAS's summary statistics as GWAS-SSF files (`wm_jax.heritability.sumstats`)."""

from __future__ import annotations

import logging
from pathlib import Path

from wm_jax.commands.flags import add_overwrite_flag

log = logging.getLogger("wm_jax")


def register(sub) -> None:
    from wm_jax import options as o

    p = sub.add_parser("export", help="a GWAS's summary statistics as GWAS-SSF files, one per phenotype")
    p.add_argument("--gwas", required=True, help="GWAS prefix (PREFIX.gwas/ from `wm-jax gwas`)")
    p.add_argument("--pheno-name", dest="pheno_names", type=o.name_list, help="phenotypes (default: all)")
    p.add_argument("--out", required=True, help="output directory: PHENO.tsv.gz and PHENO.tsv.gz-meta.yaml")
    add_overwrite_flag(p, "replace a directory without this command's marker")
    p.set_defaults(run=run, accepts_overrides=False)


def run(args, overrides) -> None:
    import numpy as np

    from wm_jax.gwas.inputs import check_file_name_part
    from wm_jax.gwas.text import write_tsv
    from wm_jax.heritability.sumstats import check_phenotypes, open_gwas, ssf_columns, ssf_metadata
    from wm_jax.publish import Output, atomic_dir, check_output_dir

    output = Output("export")  # GWAS-SSF files named by phenotype: no fixed entries
    check_output_dir(args.out, output, args.overwrite)
    gwas = open_gwas(args.gwas)
    phenotypes = check_phenotypes(gwas, args.pheno_names)
    for j in phenotypes:
        check_file_name_part(gwas.directory / "meta.json", gwas.phenotypes[j], ".tsv.gz-meta.yaml", "in wm-jax export")
    log10_p, a1_freq = gwas.column("log10_p"), gwas.column("a1_freq")
    with atomic_dir(args.out, output, args.overwrite) as tmp:
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
