"""`wm-jax gwas`: load and align inputs, filter, group phenotypes, stream blocks, write results.

Output under PREFIX (all written under temporary names and published together):
  PREFIX.gwas/            compact columnar results (the default format):
      variants.tsv        #CHROM POS ID REF ALT A1 (one row per tested variant)
      beta.npy, se.npy, log10_p.npy   (P, M) float32, one contiguous row per phenotype
      obs_ct.npy, a1_freq.npy, reason.npy   (G, M) per phenotype group
      meta.json           phenotype names, their groups, sample counts, options
  PREFIX.<PHENO>.glm.linear   with --format plink2 (PLINK 2 columns, plus LOG10_P)
  PREFIX.hits.tsv         every variant-phenotype pair with P < 5e-8
  PREFIX.multivariate.tsv omnibus chi-square across every phenotype, and min-P
  PREFIX.log              what was loaded, filtered, grouped and how long it took
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

import wm_jax
from wm_jax.data.chromosomes import chromosome_numbers, parse_chromosome_list
from wm_jax.data.plink import PlinkDataset, release_pages
from wm_jax.data.tables import align_to_samples, expand_names, read_table, select_columns
from wm_jax.errors import (AtomicFiles, InputError, check_output_dir, check_output_location, input_error,
                           read_marker, remove_stale_partials)
from wm_jax.gwas import qc
from wm_jax.gwas.glm_text import write_glm_linear_files
from wm_jax.gwas.text import write_tsv

log = logging.getLogger("wm_jax")

GENOME_WIDE = -np.log10(5e-8)


class _ElapsedFormatter(logging.Formatter):
    """Log lines prefixed with seconds since the run started, as a timeline of where time goes."""

    def __init__(self) -> None:
        super().__init__()
        self.start = time.time()

    def format(self, record: logging.LogRecord) -> str:
        return f"[{record.created - self.start:7.2f}s] {record.getMessage()}"


@dataclass
class GwasOptions:
    pheno_names: str | None = None
    covar_names: str | None = None
    maf: float | None = None
    mac: int | None = None
    geno: float | None = None
    hwe: float | None = None
    chromosomes: str | None = None
    block_size: int = 512  # per device; see benchmarks/results/gwas_block_size.md
    format: str = "compact"
    gzip: bool = False
    a1_alt: bool = False  # count ALT always (PLINK 2 `omit-ref`); default: A1 = minor allele
    max_missing: int = 64  # per-variant missing calls handled by the gathered correction
    overwrite: bool = False  # replace PREFIX.* files that no earlier wm-jax gwas to this prefix wrote


@dataclass
class PhenotypeGroup:
    columns: list[int]  # indices into the phenotype list
    samples: np.ndarray  # positions in the .fam
    residuals: np.ndarray  # (n, P) float64, residualised on the covariates over these samples


@dataclass
class GroupedPhenotypes:
    """The analysed samples S (every covariate, at least one phenotype), an orthonormal basis of
    [1, covariates] on S, and the phenotype groups ordered so that groups with the same number of
    phenotypes are contiguous: each such stack is one batched einsum in the kernel (`layout`)."""

    samples: np.ndarray
    basis: np.ndarray  # (len(samples), k) float64
    groups: list[PhenotypeGroup]

    @property
    def layout(self) -> tuple[tuple[int, int], ...]:
        sizes = [len(g.columns) for g in self.groups]
        return tuple((sizes.count(size), size) for size in dict.fromkeys(sizes))

    @property
    def column_order(self) -> np.ndarray:
        """The phenotype index of each kernel column."""
        return np.concatenate([g.columns for g in self.groups])


def _covariate_basis(covariates: np.ndarray, names: list[str], path) -> np.ndarray:
    """Orthonormal basis of [1, covariates]; collinear covariates are an error naming them."""
    design = np.column_stack([np.ones(len(covariates)), covariates])
    labels = ["intercept", *names]
    scale = np.linalg.norm(design, axis=0)
    scale[scale == 0] = 1
    q, r = np.linalg.qr(design / scale)
    dependent = np.flatnonzero(np.abs(np.diag(r)) < 1e-9)
    if len(dependent):
        j = int(dependent[0])
        raise input_error(path, f"covariate {labels[j]} is constant or collinear with "
                                f"{', '.join(labels[:j]) or 'the others'} on the analysed samples")
    return q


def build_groups(phenotypes: np.ndarray, covariates: np.ndarray, pheno_names: list[str], covar_names: list[str],
                 pheno_path, covar_path) -> GroupedPhenotypes:
    has_covariates = ~np.isnan(covariates).any(axis=1)
    log.info("%d of %d genotyped samples have every covariate", int(has_covariates.sum()), len(has_covariates))
    observed = ~np.isnan(phenotypes) & has_covariates[:, None]
    patterns: dict[bytes, list[int]] = {}
    for j in range(phenotypes.shape[1]):
        if observed[:, j].sum() == 0:
            raise input_error(pheno_path, f"phenotype {pheno_names[j]} has no value for any analysed sample")
        patterns.setdefault(np.packbits(observed[:, j]).tobytes(), []).append(j)
    groups = []
    for columns in patterns.values():
        samples = np.flatnonzero(observed[:, columns[0]])
        basis = _covariate_basis(covariates[samples], covar_names, covar_path)
        y = phenotypes[np.ix_(samples, columns)]
        residuals = y - basis @ (basis.T @ y)
        for j, column in enumerate(columns):
            if np.sqrt(np.mean(residuals[:, j] ** 2)) <= 1e-10 * max(np.std(y[:, j]), 1e-300) or np.ptp(y[:, j]) == 0:
                raise input_error(pheno_path, f"phenotype {pheno_names[column]} is constant (or fully explained by the covariates)")
        groups.append(PhenotypeGroup(columns, samples, residuals))
    sizes = ", ".join(f"{len(g.columns)} phenotypes x {len(g.samples)} samples" for g in groups[:5])
    log.info("%d phenotype group(s) by missingness pattern: %s%s", len(groups), sizes, " ..." if len(groups) > 5 else "")
    first_of_size = {size: i for i, size in reversed(list(enumerate(len(g.columns) for g in groups)))}
    groups.sort(key=lambda g: first_of_size[len(g.columns)])  # stable: groups of one size contiguous
    analysed = np.flatnonzero(observed.any(axis=1))
    return GroupedPhenotypes(analysed, _covariate_basis(covariates[analysed], covar_names, covar_path), groups)


def kernel_inputs(grouped: GroupedPhenotypes, n_slots: int):
    """The kernel's AssociationInputs on the host (float32), for blocks of ``n_slots`` sample slots
    (4 per .bed byte); index n_slots is the padding: a zero row of the gathered tables, and out of
    bounds (filled with zeros) for the columns of the decoded block."""
    from wm_jax.gwas.kernel import AssociationInputs

    basis, groups = grouped.basis, grouped.groups
    k = basis.shape[1]
    n_pheno = sum(len(g.columns) for g in groups)
    design = np.zeros((n_slots, k + 1 + n_pheno))
    design[grouped.samples, :k] = basis
    design[grouped.samples, k] = 1.0
    in_group = np.zeros((len(groups), n_slots + 1), np.float32)
    width = max(len(grouped.samples) - len(g.samples) for g in groups)
    excluded_index = np.full((len(groups), width), n_slots, np.int32)
    column = k + 1
    for g, group in enumerate(groups):
        design[group.samples, column: column + len(group.columns)] = group.residuals
        column += len(group.columns)
        in_group[g, group.samples] = 1.0
        excluded = np.setdiff1d(grouped.samples, group.samples)
        excluded_index[g, : len(excluded)] = excluded
    with_zero_row = np.concatenate([design, np.zeros((1, design.shape[1]))])
    excluded_basis = with_zero_row[excluded_index, :k]
    residuals = design[:, k + 1:]
    observed = np.repeat(in_group[:, :n_slots].T, [len(g.columns) for g in groups], axis=1)  # (slots, P)
    in_analysed = np.zeros(n_slots, bool)
    in_analysed[grouped.samples] = True
    analysed_bits = (in_analysed.reshape(-1, 4) << np.arange(0, 8, 2)).sum(axis=1).astype(np.uint8)
    stack_residuals, p0 = [], 0
    for n_groups, size in grouped.layout:
        stack_residuals.append(np.asarray(with_zero_row[:, k + 1 + p0: k + 1 + p0 + n_groups * size], np.float32))
        p0 += n_groups * size
    f32 = lambda x: np.asarray(x, np.float32)  # noqa: E731
    base_gram = np.eye(k) - np.einsum("guk,guj->gkj", excluded_basis, excluded_basis)
    return AssociationInputs(
        design=f32(design), analysed_bits=analysed_bits, basis=f32(with_zero_row[:, :k]),
        residuals=tuple(stack_residuals), in_group=in_group,
        excluded_index=excluded_index, excluded_basis=f32(excluded_basis),
        base_gram=f32(base_gram), base_inverse=f32(np.linalg.inv(base_gram)),
        group_size=f32([len(g.samples) for g in groups]),
        group_basis_sum=f32([design[g.samples, :k].sum(axis=0) for g in groups]),
        residual_sum=f32(residuals.sum(axis=0)), residual_ss=f32((residuals ** 2).sum(axis=0)),
        omnibus_precision=f32(np.linalg.pinv(omnibus_correlation(residuals, observed))))


def omnibus_correlation(residuals: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Correlation of residualised phenotypes (samples x P, zero where a phenotype is missing), each
    pair over the samples that have both: R of the omnibus test t' R^-1 t (JAGWAS's, from the
    phenotypes rather than from null summary statistics)."""
    cross = residuals.T @ residuals
    squares = (residuals ** 2).T @ observed  # [p, q]: sum of y_p^2 over the samples that have q
    return cross / np.sqrt(squares * squares.T)


def _select_variants(data: PlinkDataset, chromosomes: str | None) -> np.ndarray:
    """Variants on the chromosomes of ``--chr`` (PLINK's codes: X, chrX and 23 are one)."""
    selected = np.arange(data.n_variants)
    if chromosomes:
        try:
            wanted = parse_chromosome_list(chromosomes)
        except ValueError as err:
            raise InputError(f"--chr: {err}") from None
        selected = np.flatnonzero(np.isin(chromosome_numbers(data.bim.chrom), sorted(wanted)))
        log.info("--chr %s: %d of %d variants kept", chromosomes, len(selected), data.n_variants)
        if len(selected) == 0:
            present = ", ".join(map(str, pd.unique(data.bim.chrom.astype(str))[:10]))
            raise input_error(data.files.bim, f"no variant on --chr {chromosomes}; expected variants on those "
                                              f"chromosomes (the .bim has {present})")
    return selected


def _phenotype_names(pheno_table, options: GwasOptions) -> list[int]:
    """Columns of the phenotypes to test: each once, and (with --format plink2, where a name becomes
    part of a file name) only names that are safe as one."""
    names = expand_names(options.pheno_names, pheno_table.columns)
    if names is not None:
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise InputError(f"--pheno-name: expected each phenotype once, {repeated[0]!r} is selected twice "
                             f"({options.pheno_names})")
    columns = select_columns(pheno_table, names, "phenotype")
    if options.format == "plink2":
        suffix = ".glm.linear.gz" if options.gzip else ".glm.linear"
        for j in columns:
            _check_file_name_part(pheno_table.path, pheno_table.columns[j], suffix)
    return columns


def _check_file_name_part(path, name: str, suffix: str) -> None:
    """A phenotype name that becomes PREFIX.<name>.glm.linear must name a file beside PREFIX."""
    unsafe = (not name or "/" in name or "\\" in name or ".." in name or name in (".",)
              or any(ord(c) < 32 or ord(c) == 127 for c in name) or len(f".{name}{suffix}".encode()) > 200)
    if unsafe:
        raise input_error(path, f"phenotype column {name!r}: with --format plink2 the name becomes part of an "
                                "output file name; expected a non-empty name without '/', '\\', '..' or control "
                                "characters (rename the column)")


def _gwas_outputs(out: Path, pheno_names: list[str], options: GwasOptions) -> list[Path]:
    """Every path a run writes, the compact directory second."""
    paths = [Path(f"{out}.log"), Path(f"{out}.gwas"), Path(f"{out}.hits.tsv"), Path(f"{out}.multivariate.tsv")]
    if options.format == "plink2":
        suffix = ".glm.linear.gz" if options.gzip else ".glm.linear"
        paths += [Path(f"{out}.{name}{suffix}") for name in pheno_names]
    return paths


def _previous_outputs(out: Path) -> list[Path]:
    """The files an earlier wm-jax gwas wrote to this prefix, as its meta.json lists them."""
    compact = Path(f"{out}.gwas")
    marker = read_marker(compact)
    if marker is None or marker["command"] != "gwas":
        return []
    try:
        listed = json.loads((compact / "meta.json").read_text()).get("outputs", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [out.parent / name for name in listed if isinstance(name, str) and "/" not in name and name != ".."]


def _check_outputs(out: Path, planned: list[Path], previous: list[Path], overwrite: bool) -> None:
    """Before any work: the prefix's outputs may be written (the output policy of wm_jax.errors)."""
    check_output_location(out)
    check_output_dir(planned[1], "gwas", overwrite)
    owned = set(previous)
    for path in planned[:1] + planned[2:]:
        if path.is_dir() and not path.is_symlink():
            raise input_error(path, "is a directory; expected a file path for this output")
        if path.exists() and path not in owned and not overwrite:
            raise input_error(path, "exists and was not written by an earlier wm-jax gwas to this prefix; "
                                    "pass --overwrite to replace it")


def device_inputs(inputs, mesh):
    """The kernel inputs replicated over the mesh."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    return jax.device_put(inputs, NamedSharding(mesh, PartitionSpec()))


def chi2_neg_log10_sf(statistic: np.ndarray, df: int) -> np.ndarray:
    """-log10 of the chi-square upper tail, in float64, with a log-space asymptotic past underflow."""
    from scipy import special

    statistic = np.asarray(statistic, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        # The regularised upper incomplete gamma directly (scipy.stats' logsf wrapper cost 4x more).
        out = -np.log(special.gammaincc(df / 2.0, np.maximum(statistic, 0.0) / 2.0)) / np.log(10)
        out[np.isnan(statistic)] = np.nan
        deep = ~np.isfinite(out) & np.isfinite(statistic)
        if deep.any():
            a, x = df / 2.0, statistic[deep] / 2.0
            series = 1 + (a - 1) / x + (a - 1) * (a - 2) / x**2
            out[deep] = -((a - 1) * np.log(x) - x - special.gammaln(a) + np.log(series)) / np.log(10)
    return out


class _Outputs:
    """Preallocated memory-mapped result columns (the compact format), filled block by block."""

    def __init__(self, directory: Path, n_variants: int, n_phenotypes: int, n_groups: int) -> None:
        directory.mkdir(parents=True)
        make = lambda name, shape, dtype: np.lib.format.open_memmap(directory / f"{name}.npy", "w+", dtype, shape)  # noqa: E731
        self.beta = make("beta", (n_phenotypes, n_variants), np.float32)
        self.se = make("se", (n_phenotypes, n_variants), np.float32)
        self.log10_p = make("log10_p", (n_phenotypes, n_variants), np.float32)
        self.obs_ct = make("obs_ct", (n_groups, n_variants), np.int32)
        self.a1_freq = make("a1_freq", (n_groups, n_variants), np.float32)
        self.reason = make("reason", (n_groups, n_variants), np.int8)
        self.omnibus = make("omnibus_chi2", (n_variants,), np.float32)

    def flush(self) -> None:
        for array in (self.beta, self.se, self.log10_p, self.obs_ct, self.a1_freq, self.reason, self.omnibus):
            array.flush()

    def release(self) -> None:
        """Drop the results' pages from this process, so that its memory does not grow with the
        number of variants (`flush` at the end writes them all)."""
        for array in (self.beta, self.se, self.log10_p, self.obs_ct, self.a1_freq, self.reason, self.omnibus):
            release_pages(array)


def _scan_results(outputs: _Outputs, chunk: int = 1 << 16):
    """One pass over -log10 P, (P, chunk) at a time: the phenotype-variant pairs at P < 5e-8, and
    per variant the phenotype of smallest P and its -log10 P."""
    n_variants = outputs.log10_p.shape[1]
    hit_pheno, hit_variant = [], []
    best, min_p = np.empty(n_variants, np.int64), np.empty(n_variants, np.float32)
    for start in range(0, n_variants, chunk):
        lp = np.nan_to_num(np.asarray(outputs.log10_p[:, start: start + chunk]), nan=-1.0)
        pheno, variant = np.nonzero(lp > GENOME_WIDE)
        hit_pheno.append(pheno)
        hit_variant.append(variant + start)
        best[start: start + chunk] = lp.argmax(axis=0)
        min_p[start: start + chunk] = lp[best[start: start + chunk], np.arange(lp.shape[1])]
        outputs.release()
    order = np.lexsort((np.concatenate(hit_variant), np.concatenate(hit_pheno)))  # by phenotype, then variant
    return np.concatenate(hit_pheno)[order], np.concatenate(hit_variant)[order], best, np.where(min_p < 0, np.nan, min_p)


def run_gwas(bfile: str, pheno: str, covar: str, out: str, options: GwasOptions = GwasOptions()) -> Path:
    """Run the association study; returns the output prefix."""
    import jax

    from wm_jax.gwas.kernel import make_block_fn, missing_call_index
    from wm_jax.gwas.pvalues import SMALL_DF

    start = time.time()
    if str(out).endswith(("/", os.sep)) or Path(out).name in ("", ".", ".."):
        raise InputError(f"--out: expected an output prefix (a file name stem), found {str(out)!r}")
    out = Path(out)
    if not out.name or out.name in (".", ".."):
        raise InputError(f"--out: expected an output prefix (a file name stem), found {str(out)!r}")
    log_path = Path(f"{out}.log")
    check_output_location(out)
    remove_stale_partials(out.parent, f"{out.name}.")
    files = AtomicFiles(overwrite=options.overwrite, command="gwas")
    handler = logging.FileHandler(files.path(log_path), mode="w")
    handler.setFormatter(_ElapsedFormatter())
    log.addHandler(handler)
    previous_level = log.level
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)  # the .log file always holds the INFO record
    try:
        log.info("wm-jax %s gwas --bfile %s --pheno %s --covar %s --out %s", wm_jax.__version__, bfile, pheno, covar, out)
        log.info("options: %s", json.dumps({k: v for k, v in asdict(options).items() if v is not None}))
        log.info("devices: %s", ", ".join(str(d) for d in jax.devices()))
        data = PlinkDataset(bfile)
        fam_fid, fam_iid = data.fam.fid.to_numpy(str), data.fam.iid.to_numpy(str)

        pheno_table = read_table(pheno, missing_code=-9)
        pheno_cols = _phenotype_names(pheno_table, options)
        pheno_names = [pheno_table.columns[j] for j in pheno_cols]
        outputs_planned, previous = _gwas_outputs(out, pheno_names, options), _previous_outputs(out)
        _check_outputs(out, outputs_planned, previous, options.overwrite)
        files.replaces = previous
        phenotypes = align_to_samples(pheno_table, fam_fid, fam_iid)[:, pheno_cols]
        covar_table = read_table(covar, missing_code=-9)
        covar_names_selected = expand_names(options.covar_names, covar_table.columns)
        if covar_names_selected is not None and len(set(covar_names_selected)) != len(covar_names_selected):
            raise InputError(f"--covar-name: expected each covariate once ({options.covar_names})")
        covar_cols = select_columns(covar_table, covar_names_selected, "covariate")
        covar_names = [covar_table.columns[j] for j in covar_cols]
        covariates = align_to_samples(covar_table, fam_fid, fam_iid)[:, covar_cols]
        grouped = build_groups(phenotypes, covariates, pheno_names, covar_names, pheno_table.path, covar_table.path)
        groups = grouped.groups

        variants = _select_variants(data, options.chromosomes)
        counts = qc.count_genotypes(data.bed, variants)
        removed: list[str] = []
        keep = qc.apply_filters(counts, options.maf, options.mac, options.geno, options.hwe, removed)
        alt_count = 2 * counts.hom_alt + counts.het
        # A1 is the minor allele as PLINK 2 (2.00a3.5) chooses it: REF when its frequency, computed
        # as count * (1 / (2 * observed)) in float64, is below 0.5. On an exact tie that product
        # rounds either way depending on the count (e.g. below 0.5 for 49, 98, 103 or 107
        # observed samples, not for 100 or 5003), and plink2 follows the rounding, as we do.
        ref_count = 2 * counts.observed - alt_count
        with np.errstate(divide="ignore", invalid="ignore"):
            alt_is_major = (ref_count * (1.0 / (2.0 * counts.observed)) < 0.5)[keep]
        variants = variants[keep]
        missing_all = counts.missing[keep]
        if len(variants) == 0:
            selection = f" on --chr {options.chromosomes}" if options.chromosomes else ""
            raise InputError(f"{bfile}: expected at least one variant to test; none is left of the {len(keep)} "
                             f"variants{selection}{' after ' + ', '.join(removed) if removed else ''}")
        log.info("%d variants x %d phenotypes to test", len(variants), len(pheno_names))

        # Variants with more missing calls than the gathered correction holds go through a second
        # kernel whose gather covers every sample (rare after --geno). Variants without any missing
        # call need no per-variant Gram matrix at all; they get a pass of their own when they are
        # common enough to repay its compilation (hard-called imputed data: all of them).
        none_missing = missing_all == 0
        if none_missing.sum() < len(variants) / 4:
            none_missing[:] = False
        many_missing = missing_all > options.max_missing
        passes = [(np.flatnonzero(none_missing), options.block_size, 0),
                  (np.flatnonzero(~none_missing & ~many_missing), options.block_size, options.max_missing)]
        if none_missing.any():
            log.info("%d variants have no missing call: a pass without the missing-call correction",
                     int(none_missing.sum()))
        if many_missing.any():
            log.info("%d variants have more than %d missing calls: exact path over all samples",
                     int(many_missing.sum()), options.max_missing)
            passes.append((np.flatnonzero(many_missing), None, None))

        a1_is_ref = np.zeros(len(variants), bool) if options.a1_alt else alt_is_major

        n_devices = jax.device_count()
        # Blocks are independent: the rows of a step are sharded over the devices, no communication.
        mesh = jax.make_mesh((n_devices,), ("blocks",), axis_types=(jax.sharding.AxisType.Auto,))
        from jax.sharding import NamedSharding, PartitionSpec

        block_sharding = NamedSharding(mesh, PartitionSpec("blocks"))
        n_slots = 4 * data.bed.row_bytes
        inputs = device_inputs(kernel_inputs(grouped, n_slots), mesh)
        column_order = grouped.column_order
        log.info("%d phenotype group(s) in %d stack(s) of equal size; one matmul for all %d phenotypes",
                 len(groups), len(grouped.layout), len(pheno_names))
        compact_dir = Path(f"{out}.gwas")
        compact_tmp = files.path(compact_dir)
        outputs = _Outputs(compact_tmp, len(variants), len(pheno_names), len(groups))

        reader = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        progress = tqdm(total=len(variants), desc="association", unit="variant", unit_scale=True, mininterval=1.0)
        compute_start = time.time()
        compile_seconds = 0.0
        for indices, block_size, max_missing in passes:
            if len(indices) == 0:
                continue
            # Fewest degrees of freedom any test of this pass can have: below SMALL_DF the kernel
            # needs the continued-fraction p-value too (compiled only then).
            fewest_df = min(len(g.samples) for g in groups) - int(missing_all[indices].max()) - grouped.basis.shape[1] - 1
            block_fn = make_block_fn(grouped.layout, small_df=fewest_df < SMALL_DF)
            # Room for the most missing calls of any variant in this pass (a power of two, so few shapes).
            width = 1 << int(max(1, missing_all[indices].max())).bit_length()
            if max_missing is not None:  # 0 for the pass of variants without missing calls
                width = min(width, max_missing)
            if block_size is None:  # many missing calls: keep the (B, L, G + P) gathers near 2^25 values
                per_variant = width * (len(groups) * grouped.basis.shape[1] + len(pheno_names))
                block_size = int(np.clip(1 << max(0, (2**25 // per_variant).bit_length() - 1), 8, options.block_size))
            per_step = block_size * n_devices
            steps = [indices[s: s + per_step] for s in range(0, len(indices), per_step)]

            def read(step_indices, block_size=block_size, width=width):
                raw = np.zeros((n_devices * block_size, data.bed.row_bytes), np.uint8)
                raw[: len(step_indices)] = data.bed.raw(variants[step_indices])
                return raw, missing_call_index(raw, data.n_samples, width)

            pending_read = reader.submit(read, steps[0])
            compile_start = time.time()  # compiled up front (while the first block is read), timed apart
            spec = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=block_sharding)  # noqa: E731
            step_fn = block_fn.lower(spec((per_step, data.bed.row_bytes), np.uint8), spec((per_step, width), np.int32),
                                     inputs).compile()
            compile_seconds += time.time() - compile_start
            memory = step_fn.memory_analysis()
            log.info("kernel compiled in %.2f s for steps of %d variants (%d per device), room for %d missing calls "
                     "each; %.0f MiB of temporaries per device", time.time() - compile_start, per_step, block_size, width,
                     getattr(memory, "temp_size_in_bytes", float("nan")) / 2**20)
            previous = None
            for step_number, step_indices in enumerate(steps):
                raw, missing = pending_read.result()
                if step_number + 1 < len(steps):
                    pending_read = reader.submit(read, steps[step_number + 1])
                results = step_fn(jax.device_put(raw, block_sharding), jax.device_put(missing, block_sharding), inputs)
                if previous is not None:
                    _store(outputs, column_order, a1_is_ref, *previous)
                if step_number % 64 == 63:
                    outputs.release()
                    data.bed.release()
                previous = (step_indices, results)
                progress.update(len(step_indices))
            _store(outputs, column_order, a1_is_ref, *previous)
        progress.close()
        reader.shutdown()
        outputs.flush()
        compute_seconds = time.time() - compute_start
        n_tests = len(variants) * len(pheno_names)
        log.info("association: %d variant-phenotype tests in %.2f s (%.3g tests/s), of which %.2f s compiling",
                 n_tests, compute_seconds, n_tests / max(compute_seconds, 1e-9), compile_seconds)


        bim = data.bim.iloc[variants]
        variant_table = pd.DataFrame({
            "#CHROM": bim.chrom.to_numpy(), "POS": bim.pos.to_numpy(), "ID": bim.id.to_numpy(),
            "REF": bim.ref.to_numpy(), "ALT": bim.alt.to_numpy(),
            "A1": np.where(a1_is_ref, bim.ref.to_numpy(), bim.alt.to_numpy()),
        })
        variant_table.to_csv(compact_tmp / "variants.tsv", sep="\t", index=False)
        group_of = np.zeros(len(pheno_names), int)
        for g, group in enumerate(groups):
            group_of[group.columns] = g
        meta = {"format_version": 2, "code_version": wm_jax.__version__, "phenotypes": pheno_names,
                "group_of_phenotype": group_of.tolist(), "group_sizes": [len(g.samples) for g in groups],
                "n_covariates": len(covar_names), "covariates": covar_names, "n_variants": int(len(variants)),
                "bfile": str(bfile), "options": asdict(options),
                "outputs": [p.name for p in outputs_planned]}
        (compact_tmp / "meta.json").write_text(json.dumps(meta, indent=2))

        hit_pheno, hit_variant, best, min_p = _scan_results(outputs)
        _write_hits(files.path(Path(f"{out}.hits.tsv")), variant_table, outputs, pheno_names, group_of, hit_pheno, hit_variant)
        _write_multivariate(files.path(Path(f"{out}.multivariate.tsv")), variant_table, outputs, pheno_names, best, min_p)
        if options.format == "plink2":
            write_start = time.time()
            suffix = ".glm.linear.gz" if options.gzip else ".glm.linear"
            tasks = [(str(files.path(Path(f"{out}.{name}{suffix}"))), j, int(group_of[j])) for j, name in enumerate(pheno_names)]
            write_glm_linear_files(compact_tmp, tasks, options.gzip)
            log.info("wrote %d .glm.linear files in %.2f s", len(pheno_names), time.time() - write_start)
        log.info("total %.2f s", time.time() - start)
        handler.close()
        files.commit()
    except BaseException:
        handler.close()
        files.discard()
        raise
    finally:
        log.removeHandler(handler)
        log.setLevel(previous_level)
    return out


def _store(outputs: _Outputs, column_order: np.ndarray, a1_is_ref: np.ndarray, step_indices: np.ndarray,
           results) -> None:
    """Copy one step's device results into the output columns at the variants' positions, oriented
    to A1: the kernel counts ALT, so BETA and the frequency flip where A1 is REF. Kernel column c
    is phenotype column_order[c]; groups are numbered in kernel order."""
    n = len(step_indices)
    flip = a1_is_ref[step_indices]
    host = type(results)(*(np.asarray(x)[:n] for x in results))  # one transfer per array
    where = slice(step_indices[0], step_indices[0] + n) if step_indices[-1] - step_indices[0] == n - 1 else step_indices
    rows = slice(None) if (column_order == np.arange(len(column_order))).all() else column_order
    sign = np.where(flip, -1.0, 1.0).astype(np.float32)[:, None]
    for target, value in ((outputs.beta, host.beta * sign), (outputs.se, host.se), (outputs.log10_p, host.neg_log10_p)):
        if isinstance(where, slice) or isinstance(rows, slice):
            target[rows, where] = value.T
        else:
            target[np.ix_(rows, where)] = value.T
    outputs.obs_ct[:, where] = host.obs_ct.T
    outputs.a1_freq[:, where] = np.where(flip[:, None], 1 - host.alt_freq, host.alt_freq).T
    outputs.reason[:, where] = host.reason.T
    outputs.omnibus[where] = host.omnibus_chi2


def _write_hits(path: Path, variants: pd.DataFrame, outputs: _Outputs, names: list[str], group_of: np.ndarray,
                hit_pheno: np.ndarray, hit_variant: np.ndarray) -> None:
    columns = {c: variants[c].to_numpy()[hit_variant] for c in variants.columns}
    groups = group_of[hit_pheno]
    columns.update(PHENO=np.asarray(names, dtype=object)[hit_pheno], A1_FREQ=outputs.a1_freq[groups, hit_variant],
                   OBS_CT=outputs.obs_ct[groups, hit_variant], BETA=outputs.beta[hit_pheno, hit_variant],
                   SE=outputs.se[hit_pheno, hit_variant], LOG10_P=outputs.log10_p[hit_pheno, hit_variant])
    write_tsv(path, columns)
    log.info("%d variant-phenotype pairs at P < 5e-8 -> %s", len(hit_pheno), path.name.split(".partial")[0].lstrip("."))


def _write_multivariate(path: Path, variants: pd.DataFrame, outputs: _Outputs, names: list[str], best: np.ndarray,
                        min_p: np.ndarray) -> None:
    """One row per variant: the omnibus test across every phenotype and the min-P phenotype."""
    columns = {c: variants[c].to_numpy() for c in variants.columns}
    columns.update(N_PHENO=np.full(len(variants), len(names)), OMNIBUS_CHI2=np.asarray(outputs.omnibus),
                   OMNIBUS_LOG10_P=chi2_neg_log10_sf(outputs.omnibus, len(names)),
                   MIN_P_PHENO=np.asarray(names, dtype=object)[best], MIN_P_LOG10_P=min_p)
    write_tsv(path, columns)
