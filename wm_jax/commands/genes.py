"""`wm-jax genes`: gene-based and gene-set tests of a GWAS (`wm_jax.genes.run`)."""

from __future__ import annotations

from wm_jax.commands.flags import add_overwrite_flag, directory_overwrite_help, genotypes_for_output_dir


def register(sub) -> None:
    from wm_jax import options as o
    from wm_jax.stage_options import GeneOptions

    # --window-kb is the field of GeneOptions (wm_jax/stage_options.py), which holds its default and range.
    p = sub.add_parser(
        "genes", help="genes of each locus, gene-based tests with LD (every phenotype and the omnibus), gene sets"
    )
    p.add_argument("--gwas", required=True, help="GWAS prefix (PREFIX.gwas/ from `wm-jax gwas`)")
    o.add_genotype_flags(p, "LD reference panel (variant IDs as in the GWAS)")
    p.add_argument(
        "--genes",
        required=True,
        help="gene annotation: gene chrom start end (header optional; MAGMA .gene.loc) or a GTF",
    )
    p.add_argument(
        "--window-kb",
        type=o.flag_type(GeneOptions, "window_kb"),
        help="variants within this many kb of a gene count as its own, >= 0",
    )
    p.add_argument("--gene-sets", help="gene sets, GMT (set name, description, genes; tab-separated)")
    p.add_argument("--pheno-name", type=o.name_list, help="phenotypes to test (default: all), e.g. UDIP1-UDIP16")
    p.add_argument("--loci", help="loci.tsv of `wm-jax report`: write each locus's genes (loci_genes.tsv)")
    p.add_argument("--out", required=True, help="output directory")
    add_overwrite_flag(p, directory_overwrite_help("genes"))
    p.set_defaults(run=run, accepts_overrides=False)


def run(args, overrides) -> None:
    from wm_jax.genes.run import GENES, run_genes
    from wm_jax.options import options_from_args
    from wm_jax.stage_options import GeneOptions

    genotypes = genotypes_for_output_dir(args, GENES)
    options = options_from_args(GeneOptions, args)
    sets, phenotypes = args.gene_sets, args.pheno_name
    run_genes(args.gwas, genotypes, args.genes, args.out, options, sets, phenotypes, args.loci, args.overwrite)
