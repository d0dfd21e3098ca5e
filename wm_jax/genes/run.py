"""`wm-jax genes`: genes of each locus, gene-based tests (SNP-wise mean, LD from a reference
panel) of every phenotype and the omnibus, and competitive gene-set analysis.

Output directory:
  genes.tsv       one row per tested gene and phenotype (OMNIBUS last): gene chrom start end
                  phenotype n_variants stat p neg_log10_p z
  gene_sets.tsv   with --gene-sets: one row per set and phenotype: set phenotype n_genes beta se p neg_log10_p
  loci_genes.tsv  with --loci: each locus's genes (within the locus span +/- the window): locus
                  lead_variant lead_phenotype gene distance (bp from the lead to the gene, 0 inside)
  genes_manhattan.png  gene-level Manhattan plot (min P over the phenotypes; the omnibus)
  genes.json      inputs, settings, counts and seconds
  genes.md        one page: the Manhattan plot, the top genes, each locus's genes, the top sets
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from wm_jax.data.genotypes import open_genotypes
from wm_jax.data.source import GenotypeInput
from wm_jax.data.tables import expand_names
from wm_jax.errors import InputError, input_error, require_file
from wm_jax.genes.annotation import check_chromosomes, read_gene_sets, read_genes
from wm_jax.genes.gene_sets import gene_set_regression, whitening_blocks
from wm_jax.genes.genetest import GeneTests, chi2_from_neg_log10_p, gene_variants, run_gene_tests
from wm_jax.genes.ld import ld_on_device
from wm_jax.publish import Output, atomic_dir, check_output_dir
from wm_jax.reporting.build import GwasResult
from wm_jax.reporting.genes import gene_manhattan, loci_genes
from wm_jax.reporting.stats import OMNIBUS
from wm_jax.stage_options import GeneOptions

log = logging.getLogger("wm_jax")

# What `wm-jax genes` writes into its directory.
GENES = Output("genes", "genes.tsv gene_sets.tsv loci_genes.tsv genes_manhattan.png genes.json genes.md")

MIN_SET_GENES = 2  # sets with fewer tested genes are skipped


def run_genes(
    gwas: str,
    genotypes: GenotypeInput,
    genes_path: str,
    out: str,
    options: GeneOptions = GeneOptions(),
    gene_sets: str | None = None,
    pheno_names: str | None = None,
    loci: str | None = None,
    overwrite: bool = False,
) -> dict:
    """Write the genes output directory ``out``; returns the summary written to genes.json."""
    started = time.time()
    check_output_dir(out, GENES, overwrite)
    result = GwasResult(gwas)
    names = _phenotypes(result, pheno_names)
    data = open_genotypes(genotypes)
    genes = check_chromosomes(read_genes(genes_path), data.variants.chrom.to_numpy(), genes_path, data.variants_path)
    genes = genes.sort_values(["chrom", "start", "end"], kind="stable").reset_index(drop=True)
    sets = _known_sets(read_gene_sets(gene_sets), genes, gene_sets) if gene_sets else None
    loci_table = _read_loci(loci) if loci else None

    ref_row, chi2 = _usable_variants(result, data, names)
    chrom = result.variants["#CHROM"].astype(str).to_numpy()[ref_row.index]
    pos = result.variants["POS"].to_numpy(np.int64)[ref_row.index]
    window_bp = int(round(options.window_kb * 1000))
    members = gene_variants(genes, chrom, pos, window_bp)
    rows = ref_row.to_numpy()
    tested_at = time.time()
    # One BLAS thread: the per-gene products are small, and threads that wait on a shared machine's
    # busy cores made the gene tests 4.8x slower (49.2 s against 10.2 s on the demo's UDIPs).
    with threadpool_limits(1, user_api="blas"):
        tests = run_gene_tests(genes, members, chi2, len(result.phenotypes), rows, data)
    seconds_tests = time.time() - tested_at
    if not len(tests.genes):
        raise input_error(
            genes_path,
            f"no gene has a GWAS variant within {options.window_kb:g} kb; expected genes "
            "on the GWAS's chromosomes and positions (same genome build)",
        )
    where = "device" if ld_on_device() else "host"
    log.info(
        "genes: %d of %d genes tested (>= 1 variant within %g kb) x %d statistics in %.1f s (LD on the %s)",
        len(tests.genes),
        len(genes),
        options.window_kb,
        len(names) + 1,
        seconds_tests,
        where,
    )
    set_table = _gene_set_table(tests, sets, [*names, OMNIBUS], gene_sets) if sets is not None else None
    locus_genes = loci_genes(loci_table, genes, window_bp) if loci_table is not None else None
    summary = {
        "gwas": str(gwas),
        "genotypes": genotypes.describe(),
        "genes": str(genes_path),
        "gene_sets": gene_sets,
        "loci": loci,
        "window_kb": options.window_kb,
        "n_genes_annotated": len(genes),
        "n_genes_tested": len(tests.genes),
        "n_variants_used": len(rows),
        "phenotypes": [*names, OMNIBUS],
        "omnibus_df": len(result.phenotypes),
        "n_sets_tested": None if set_table is None else int(set_table.set.nunique()),
        "gene_ld": where,
        "seconds_gene_tests": round(seconds_tests, 2),
    }
    _write_outputs(out, overwrite, tests, [*names, OMNIBUS], set_table, locus_genes, summary, started)
    log.info("genes: %d genes x %d statistics -> %s", len(tests.genes), len(names) + 1, out)
    return summary


def _write_outputs(out, overwrite, tests: GeneTests, names, set_table, locus_genes, summary: dict, started) -> None:
    """Every output file into a temporary directory that replaces ``out`` when complete."""
    with atomic_dir(out, GENES, overwrite=overwrite) as tmp:
        gene_table = _gene_table(tests, names)
        gene_table.to_csv(tmp / "genes.tsv", sep="\t", index=False, float_format="%.6g")
        if set_table is not None:
            set_table.to_csv(tmp / "gene_sets.tsv", sep="\t", index=False, float_format="%.6g")
        if locus_genes is not None:
            locus_genes.to_csv(tmp / "loci_genes.tsv", sep="\t", index=False)
        gene_manhattan(tmp / "genes_manhattan.png", gene_table)
        summary["seconds"] = round(time.time() - started, 2)
        (tmp / "genes.json").write_text(json.dumps(summary, indent=2) + "\n")
        (tmp / "genes.md").write_text(_markdown(summary, gene_table, set_table, locus_genes))


def _phenotypes(result: GwasResult, pheno_names: str | None) -> list[str]:
    names = expand_names(pheno_names, result.phenotypes) or list(result.phenotypes)
    unknown = [n for n in names if n not in result.phenotypes]
    if unknown:
        raise InputError(
            f"--pheno-name: the GWAS has no phenotype {unknown[0]!r} (it has "
            f"{', '.join(result.phenotypes[:8])}{'...' if len(result.phenotypes) > 8 else ''})"
        )
    return names


def _usable_variants(result: GwasResult, data, names: list[str]) -> tuple[pd.Series, np.ndarray]:
    """The GWAS variants in the reference panel whose statistics are finite for every chosen
    phenotype and the omnibus: their reference rows (indexed by GWAS position), and the chi-square
    matrix (phenotypes + omnibus, variants)."""
    reference = pd.Series(np.arange(len(data.variants)), index=data.variants.id.to_numpy())
    reference = reference[~reference.index.duplicated()]
    ids = result.variants["ID"].to_numpy()
    in_reference = reference.index.get_indexer(ids) >= 0  # a hash lookup (np.isin sorts strings: minutes at 10M)
    if not in_reference.any():
        raise input_error(
            data.variants_path,
            f"none of the GWAS's {len(ids)} variant IDs is in it; expected "
            "the LD reference to share variant IDs with the GWAS",
        )
    index = [result.phenotype_index(n) for n in names]
    lp = np.asarray(result.log10_p[index], np.float64)
    omnibus = np.asarray(np.load(Path(f"{result.prefix}.gwas") / "omnibus_chi2.npy", mmap_mode="r"), np.float64)
    finite = np.isfinite(lp).all(axis=0) & np.isfinite(omnibus)
    keep = np.flatnonzero(in_reference & finite)
    log.info(
        "genes: %d of %d GWAS variants used (%d not in the reference panel, %d without a test for every phenotype)",
        len(keep),
        len(ids),
        int((~in_reference).sum()),
        int((in_reference & ~finite).sum()),
    )
    chi2 = np.vstack([chi2_from_neg_log10_p(lp[:, keep]), omnibus[keep][None, :]])
    return pd.Series(reference[ids[keep]].to_numpy(), index=keep), chi2


def _known_sets(sets: dict[str, list[str]], genes: pd.DataFrame, path: str) -> dict[str, list[str]]:
    """Each set's genes that the annotation has (by gene or symbol); an error when no set names one."""
    known = dict(zip(genes.symbol, genes.gene, strict=True)) | dict(zip(genes.gene, genes.gene, strict=True))
    mapped = {name: sorted({known[g] for g in members if g in known}) for name, members in sets.items()}
    if not any(mapped.values()):
        example = next((m[0] for m in sets.values() if m), "none")
        raise input_error(
            path,
            f"no set names a gene of the annotation (e.g. {example!r}); expected gene IDs or "
            f"symbols as in the gene annotation (e.g. {genes.gene.iloc[0]!r})",
        )
    return mapped


def _gene_set_table(tests: GeneTests, sets: dict[str, list[str]], names: list[str], path: str) -> pd.DataFrame:
    position = {g: k for k, g in enumerate(tests.genes.gene)}
    chosen = {s: [position[g] for g in m if g in position] for s, m in sets.items()}
    chosen = {s: m for s, m in chosen.items() if len(m) >= MIN_SET_GENES}
    if not chosen:
        raise input_error(path, f"no set has {MIN_SET_GENES} or more tested genes (genes with a variant of the GWAS)")
    membership = np.zeros((len(tests.genes), len(chosen)), bool)
    for k, m in enumerate(chosen.values()):
        membership[m, k] = True
    n_variants = tests.genes.n_variants.to_numpy(np.float64)
    span_kb = (tests.genes.end - tests.genes.start).to_numpy(np.float64) / 1000 + 1
    covariates = np.column_stack([np.log(n_variants), np.log(n_variants / span_kb)])
    blocks = whitening_blocks(len(tests.genes), tests.pairs)
    beta, se, p = gene_set_regression(tests.z, covariates, membership, blocks)
    log.info(
        "gene sets: %d of %d sets with >= %d tested genes; %d correlated gene groups in the GLS",
        len(chosen),
        len(sets),
        MIN_SET_GENES,
        len(blocks),
    )
    frame = pd.DataFrame(
        {
            "set": np.repeat(list(chosen), len(names)),
            "phenotype": np.tile(names, len(chosen)),
            "n_genes": np.repeat(membership.sum(axis=0), len(names)),
            "beta": beta.ravel(),
            "se": se.ravel(),
            "p": p.ravel(),
        }
    )
    frame["neg_log10_p"] = -np.log10(np.maximum(frame.p, 1e-300))
    order = {n: k for k, n in enumerate(names)}
    return frame.sort_values(
        ["phenotype", "p"], key=lambda c: c.map(order) if c.name == "phenotype" else c, kind="stable"
    ).reset_index(drop=True)


def _gene_table(tests: GeneTests, names: list[str]) -> pd.DataFrame:
    n_genes = len(tests.genes)
    frame = pd.concat([tests.genes] * len(names), ignore_index=True)
    frame.insert(4, "phenotype", np.repeat(names, n_genes))
    frame["stat"] = tests.stat.T.ravel()
    frame["p"] = tests.p.T.ravel()
    frame["neg_log10_p"] = tests.neg_log10_p.T.ravel()
    frame["z"] = tests.z.T.ravel()
    return frame


def _read_loci(path: str) -> pd.DataFrame:
    require_file(path, "loci table")
    try:
        loci = pd.read_csv(path, sep="\t", dtype={"chrom": str, "lead_id": str})
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise input_error(path, f"expected the loci.tsv of `wm-jax report` ({type(err).__name__})")
    needed = ["locus", "chrom", "start", "end", "lead_id", "lead_pos", "lead_phenotype"]
    if any(c not in loci.columns for c in needed):
        raise input_error(path, f"expected the loci.tsv of `wm-jax report` with columns {' '.join(needed)}")
    return loci


def _markdown(summary: dict, genes: pd.DataFrame, sets: pd.DataFrame | None, loci: pd.DataFrame | None) -> str:
    """genes.md: what ran, the gene-level Manhattan plot and the top rows of each table."""
    threshold = 0.05 / max(1, summary["n_genes_tested"])
    significant = genes[genes.p <= threshold]
    lines = [
        f"# Genes: {summary['gwas']}",
        "",
        f"{summary['n_genes_tested']:,} of {summary['n_genes_annotated']:,} genes tested (a variant within "
        f"{summary['window_kb']:g} kb) x {len(summary['phenotypes'])} statistics (the omnibus last); LD from "
        f"{summary['genotypes']}. {len(significant)} gene-phenotype pairs at P <= 0.05 / genes ({threshold:.3g}).",
        "",
        "![gene-level Manhattan](genes_manhattan.png)",
        "",
        "## Top genes",
        "",
    ]
    top = genes.nsmallest(20, "p")[["gene", "chrom", "start", "end", "phenotype", "n_variants", "p"]]
    lines += _table(top)
    if loci is not None:
        lines += ["", "## Genes of each locus", ""] + (_table(loci) if len(loci) else ["(no gene in any locus)"])
    if sets is not None:
        lines += ["", "## Gene sets (top 20 by P)", ""]
        lines += _table(sets.nsmallest(20, "p")[["set", "phenotype", "n_genes", "beta", "se", "p"]])
    lines += ["", "Files: `genes.tsv`, `gene_sets.tsv`, `loci_genes.tsv`, `genes.json`."]
    return "\n".join(lines) + "\n"


def _table(frame: pd.DataFrame) -> list[str]:
    def cell(v):
        return f"{v:.4g}" if isinstance(v, (float, np.floating)) else str(v)

    header = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    return header + ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
