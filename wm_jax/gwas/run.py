"""`wm-jax gwas`, the driver: each section of `run_gwas` hands its work to one module of `wm_jax.gwas`:

  outputs   the prefix's files: which, whether they may be replaced, the .log, publishing them
  inputs    phenotype and covariate columns, aligned to the genotypes' samples (.fam, .psam, .sample)
  design    phenotype groups by missingness pattern, the covariate basis, the kernel's inputs
  plan      --chr and QC (qc), the A1 allele, the kernel's passes (`Pass`)
  stream    the mesh, one compilation per pass, genotype blocks through the kernel (kernel, pvalues)
  results   the result store, the scan for hits, every output table (text, glm_text)

Output under PREFIX (all written under temporary names and published together):
  PREFIX.gwas/            compact columnar results (the default format):
      variants.tsv        #CHROM POS ID REF ALT A1 (one row per tested variant)
      beta.npy, se.npy, log10_p.npy   (P, M) float32, one contiguous row per phenotype
      obs_ct.npy, a1_freq.npy, reason.npy   (G, M) per phenotype group
      omnibus_chi2.npy    (M,) the multivariate test across every phenotype
      meta.json           phenotype names, their groups, sample counts, options
  PREFIX.<PHENO>.glm.linear   with --format plink2 (PLINK 2 columns, plus LOG10_P)
  PREFIX.hits.tsv         every variant-phenotype pair with P < 5e-8
  PREFIX.multivariate.tsv omnibus chi-square across every phenotype, and min-P
  PREFIX.log              what was loaded, filtered, grouped and how long it took
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import jax
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

import wm_jax
from wm_jax import sharding
from wm_jax.data.genotypes import open_genotypes
from wm_jax.data.source import GenotypeInput
from wm_jax.gwas import design, inputs, outputs, plan, qc, results, resume, stream
from wm_jax.publish import AtomicFiles
from wm_jax.stage_options import GwasOptions

log = logging.getLogger("wm_jax")


def run_gwas(
    genotypes: GenotypeInput | str,
    pheno: str,
    covar: str,
    out: str | os.PathLike,
    options: GwasOptions = GwasOptions(),
) -> Path:
    """Run the association study of ``genotypes`` (a --bfile prefix, or any `GenotypeInput`);
    returns the output prefix."""
    start = time.time()
    if not isinstance(genotypes, GenotypeInput):
        genotypes = GenotypeInput("bfile", str(genotypes))
    out = outputs.output_prefix(out)
    glm_suffix = outputs.glm_files_suffix(options)
    filters = qc.VariantFilters(options.chromosomes, options.maf, options.mac, options.geno, options.hwe)
    # The host's linear algebra here is small (covariate bases, residuals, the omnibus correlation:
    # tens of ms on one core) next to reader, writer and XLA threads. OpenBLAS's own threads spin
    # when they do not get a core: at N = 35,000 and 128 phenotypes, on 2 busy cores, the omnibus
    # correlation took 1.0-1.7 s and its pinv 0.8 s with 2 BLAS threads, 0.06 s and 0.004 s with 1.
    with threadpool_limits(1, user_api="blas"), outputs.run_files(out, options.overwrite) as files:
        _log_invocation(genotypes, pheno, covar, out, options)

        # Inputs: the genotypes, the phenotypes to test (which name the outputs: checked before any work),
        # phenotypes and covariates aligned to the .fam.
        data = open_genotypes(genotypes)
        pheno_table = inputs.read_phenotype_table(pheno)
        pheno_columns = inputs.phenotype_columns(pheno_table, options.pheno_names, glm_suffix)
        planned = outputs.claim_outputs(
            files, out, [pheno_table.columns[j] for j in pheno_columns], glm_suffix, options.overwrite
        )
        aligned = inputs.align_inputs(pheno_table, pheno_columns, covar, options.covar_names, data)

        # Design: phenotype groups by missingness pattern, each residualised on the covariates.
        grouped = design.build_groups(
            aligned.phenotypes,
            aligned.covariates,
            aligned.pheno_names,
            aligned.covar_names,
            aligned.pheno_path,
            aligned.covar_path,
        )

        # Plan: --chr (the variants streamed), and which kernel shape each variant goes through.
        selected = plan.selected_variants(data, filters)
        log.info("%d variants x %d phenotypes to stream", len(selected), len(aligned.pheno_names))
        router = plan.router_for(grouped, options.block_size, options.max_missing)

        # Association: one streaming pass; each process streams its share of the variants into the
        # store process 0 made, counting their genotypes from the same blocks.
        key = resume.run_key(genotypes, pheno, covar, options, jax.process_count(), jax.local_device_count())
        store = _result_store(files, out, key, len(selected), len(aligned.pheno_names), len(grouped.groups))
        share = plan.this_process(len(selected))
        first_column = int(share[0]) if len(share) else 0
        progress = resume.Progress(store.directory)
        local_counts = stream.associate(
            data, selected[share], first_column, grouped, router, store, options.a1_alt, progress
        )
        counts = plan.gather_counts(local_counts)
        sharding.barrier("gwas: every process has stored its variants")
        if files is not None:
            resume.unmark(store.directory)  # the pass is complete: an ordinary output from here on

        # QC on the counts: the filters (each logged), the A1 allele; the store keeps the tested variants.
        tested = plan.variants_to_test(counts, selected, genotypes.path, filters, options.a1_alt)
        log.info("%d variants x %d phenotypes tested", len(tested.rows), len(aligned.pheno_names))
        if files is None:
            return out  # process 0 writes the tables and publishes
        store.keep_columns(tested.positions)

        # Results: variants.tsv and meta.json beside the store; hits, multivariate test, .glm.linear files.
        variant_table = results.write_variant_table(store.directory, data.variants.iloc[tested.rows], tested.a1_is_ref)
        results.write_meta(store.directory, _run_record(genotypes, options, aligned, grouped, tested, planned))
        _write_tables(out, options, aligned.pheno_names, grouped.group_of_phenotype, variant_table, store, files)
        log.info("total %.2f s", time.time() - start)
    return out


def _result_store(files: AtomicFiles | None, out: Path, key: str, *shape: int) -> results.ResultStore:
    """The result store: process 0 (``files``) finds the one an earlier run of the same command left
    when killed during its pass and continues it, or creates it (`wm_jax.gwas.resume`); it is
    published as PREFIX.gwas with the other outputs. The other processes (``files`` None) open it
    at the name process 0 sends them."""
    store = None
    if files is not None:
        resume.remove_other_keys(out, key)
        path = resume.directory(out, key)
        if resume.resumable(path):
            try:
                store = results.ResultStore(path, *shape, create=False)
                log.info("%s: an unfinished run of this command; continuing it", path)
            except (OSError, ValueError, RuntimeError):
                store = None
        if store is None:
            shutil.rmtree(path, ignore_errors=True)
            store = results.ResultStore(path, *shape)
            resume.mark(path, out, key)
        files.adopt(Path(f"{out}.gwas"), path)
    shared = sharding.broadcast_text(str(store.directory) if store is not None else "")
    return store if store is not None else results.ResultStore(Path(shared), *shape, create=False)


def _log_invocation(genotypes: GenotypeInput, pheno: str, covar: str, out: Path, options: GwasOptions) -> None:
    """The command, its options and the devices, first in the .log."""
    log.info(
        "wm-jax %s gwas %s --pheno %s --covar %s --out %s", wm_jax.__version__, genotypes.describe(), pheno, covar, out
    )
    log.info("options: %s", json.dumps({k: v for k, v in asdict(options).items() if v is not None}))
    log.info("devices: %s", ", ".join(str(d) for d in jax.devices()))


def _run_record(
    genotypes: GenotypeInput,
    options: GwasOptions,
    aligned: inputs.AlignedInputs,
    grouped: design.GroupedPhenotypes,
    tested: plan.TestedVariants,
    planned: list[Path],
) -> dict:
    """meta.json: what was tested, on which samples, with which options, and every output file."""
    return {
        "format_version": 2,
        "code_version": wm_jax.__version__,
        "phenotypes": aligned.pheno_names,
        "group_of_phenotype": grouped.group_of_phenotype.tolist(),
        "group_sizes": [len(g.samples) for g in grouped.groups],
        "n_covariates": len(aligned.covar_names),
        "covariates": aligned.covar_names,
        "n_variants": int(len(tested.rows)),
        **_genotype_record(genotypes),
        "options": asdict(options),
        "outputs": [p.name for p in planned],
    }


def _genotype_record(genotypes: GenotypeInput) -> dict:
    """meta.json's name of the genotypes: "bfile" (as before), "pfile" or "bgen" (+ "sample")."""
    record = {genotypes.kind: str(genotypes.path)}
    if genotypes.kind == "bgen":
        record.update(sample=genotypes.sample, bgen_ref="first" if genotypes.bgen_ref_first else "last")
    return record


def _write_tables(
    out: Path,
    options: GwasOptions,
    pheno_names: list[str],
    group_of: np.ndarray,
    variant_table: pd.DataFrame,
    store: results.ResultStore,
    files: AtomicFiles,
) -> None:
    """The text outputs from the filled store: hits, the multivariate test, the .glm.linear files."""
    scan = results.scan_results(store)
    results.write_hits(files.path(Path(f"{out}.hits.tsv")), variant_table, store, pheno_names, group_of, scan)
    results.write_multivariate(files.path(Path(f"{out}.multivariate.tsv")), variant_table, store, pheno_names, scan)
    glm_suffix = outputs.glm_files_suffix(options)
    if glm_suffix is not None:
        paths = [files.path(Path(f"{out}.{name}{glm_suffix}")) for name in pheno_names]
        results.write_glm_linear(store, paths, group_of, options.gzip)
