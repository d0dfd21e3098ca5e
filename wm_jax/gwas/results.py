"""The results of `wm-jax gwas`: the compact result store (memory-mapped columns filled step by
step), one scan over it for hits and the min-P phenotype, and the writers of every output table.

Called by `wm_jax.gwas.run` (the driver) and `wm_jax.gwas.stream` (`store_step`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from wm_jax.data.plink import release_pages
from wm_jax.gwas.glm_text import write_glm_linear_files
from wm_jax.gwas.kernel import BlockResult
from wm_jax.gwas.pvalues import GENOME_WIDE_P, chi2_neg_log10_sf, threshold_text
from wm_jax.gwas.text import write_tsv

log = logging.getLogger("wm_jax")

GENOME_WIDE_NEG_LOG10_P = -np.log10(GENOME_WIDE_P)


class ResultStore:
    """Preallocated memory-mapped result columns (the compact format), filled block by block."""

    def __init__(self, directory: Path, n_variants: int, n_phenotypes: int, n_groups: int, create: bool = True):
        """Create the columns in a new ``directory``; with ``create=False`` open the columns another
        process created there (each process of a multi-process run fills its own variants)."""
        if create:
            directory.mkdir(parents=True)
        self.directory, self.create = directory, create
        self.beta = self._column("beta", (n_phenotypes, n_variants), np.float32)
        self.se = self._column("se", (n_phenotypes, n_variants), np.float32)
        self.log10_p = self._column("log10_p", (n_phenotypes, n_variants), np.float32)
        self.obs_ct = self._column("obs_ct", (n_groups, n_variants), np.int32)
        self.a1_freq = self._column("a1_freq", (n_groups, n_variants), np.float32)
        self.reason = self._column("reason", (n_groups, n_variants), np.int8)
        self.omnibus = self._column("omnibus_chi2", (n_variants,), np.float32)
        self._files: dict[str, int] = {}  # file name -> descriptor for `put`, opened on first use

    def _column(self, name: str, shape: tuple[int, ...], dtype: type) -> np.memmap:
        path = self.directory / f"{name}.npy"
        if self.create:
            return np.lib.format.open_memmap(path, "w+", dtype, shape)
        column = np.load(path, mmap_mode="r+")
        if column.shape != shape or column.dtype != dtype:
            raise RuntimeError(f"{path}: expected {dtype} {shape}, found {column.dtype} {column.shape}")
        return column

    _NAMES = {"beta": "beta", "se": "se", "log10_p": "log10_p", "obs_ct": "obs_ct", "a1_freq": "a1_freq"}
    _NAMES.update(reason="reason", omnibus="omnibus_chi2")  # attribute -> file name

    def _columns(self) -> tuple[np.memmap, ...]:
        return self.beta, self.se, self.log10_p, self.obs_ct, self.a1_freq, self.reason, self.omnibus

    def keep_columns(self, positions: np.ndarray, chunk: int = 1 << 20) -> None:
        """Keep only the variant columns at ``positions`` (ascending: the variants that passed QC,
        counted as they streamed), each file rewritten under a temporary name and moved over the old
        one, a row and ``chunk`` columns at a time. Nothing to do when every column is kept."""
        if len(positions) == self.omnibus.shape[-1]:
            return
        self.flush()
        self.close_files()
        for attribute, name in self._NAMES.items():
            array = getattr(self, attribute)
            path, kept_path = self.directory / f"{name}.npy", self.directory / f".{name}.kept.npy"
            kept = np.lib.format.open_memmap(kept_path, "w+", array.dtype, (*array.shape[:-1], len(positions)))
            for row in np.ndindex(array.shape[:-1]):
                for start in range(0, len(positions), chunk):
                    kept[row + (slice(start, start + chunk),)] = array[row][positions[start : start + chunk]]
                release_pages(array)
                release_pages(kept)
            kept.flush()
            del kept
            os.replace(kept_path, path)
            setattr(self, attribute, np.load(path, mmap_mode="r+"))

    def put(self, attribute: str, rows: np.ndarray | None, start: int, values: np.ndarray) -> None:
        """Write ``values`` (R, n) into columns start..start + n of the rows ``rows`` (R,) of a 2-D
        column file (for the 1-D omnibus: ``rows`` None and ``values`` (n,)), by positional writes
        to the file, so the written pages are never mapped into this process (no page faults on the
        maps, nothing for `msync` to walk). It is not a faster copy: writing a span of new columns
        ran at about 0.47 GB/s either way on one core here (a one-off timing), the cost being the
        file system's new pages. The kernel keeps the map and the file's pages coherent, so the map
        reads them back."""
        array = getattr(self, attribute)
        name = f"{self._NAMES[attribute]}.npy"
        if name not in self._files:
            self._files[name] = os.open(self.directory / name, os.O_WRONLY)
        descriptor, itemsize, n_variants = self._files[name], array.dtype.itemsize, array.shape[-1]
        values = np.ascontiguousarray(values, array.dtype)
        if rows is None:
            _write_at(descriptor, values, array.offset + start * itemsize)
            return
        for row, value in zip(rows.tolist(), values, strict=True):
            _write_at(descriptor, value, array.offset + (row * n_variants + start) * itemsize)

    def flush(self) -> None:
        """Every result written so far on disk: the maps synced, the files written by `put` too."""
        for array in self._columns():
            array.flush()
        for descriptor in self._files.values():
            os.fsync(descriptor)

    def close_files(self) -> None:
        """Close the descriptors `put` opened (before the files are replaced, or at the end)."""
        for descriptor in self._files.values():
            os.close(descriptor)
        self._files.clear()

    def release(self) -> None:
        """Drop the results' pages from this process, so that its memory does not grow with the
        number of variants (`flush` at the end writes them all)."""
        for array in self._columns():
            release_pages(array)


def store_step(
    store: ResultStore, column_order: np.ndarray, flip: np.ndarray, step_indices: np.ndarray, results: BlockResult
) -> None:
    """Copy results (device or host arrays) into the output columns at the variants' positions,
    oriented to A1: the kernel counts ALT, so BETA and the frequency flip where ``flip`` (A1 is REF,
    one per variant). Kernel column c is phenotype column_order[c]; groups are numbered in kernel order."""
    n = len(step_indices)
    host = type(results)(*(np.asarray(x)[:n] for x in results))  # one transfer per array
    sign = np.where(flip, -1.0, 1.0).astype(np.float32)[:, None]
    a1_freq = np.where(flip[:, None], 1 - host.alt_freq, host.alt_freq)
    per_phenotype = {"beta": host.beta * sign, "se": host.se, "log10_p": host.neg_log10_p}
    per_group = {"obs_ct": host.obs_ct, "a1_freq": a1_freq, "reason": host.reason}
    if n and step_indices[-1] - step_indices[0] == n - 1:  # consecutive variants: a span of each row
        start, groups = int(step_indices[0]), np.arange(host.obs_ct.shape[1])
        for attribute, value in per_phenotype.items():
            store.put(attribute, column_order, start, value.T)
        for attribute, value in per_group.items():
            store.put(attribute, groups, start, value.T)
        store.put("omnibus", None, start, host.omnibus_chi2)
        return
    for attribute, value in per_phenotype.items():
        getattr(store, attribute)[np.ix_(column_order, step_indices)] = value.T
    for attribute, value in per_group.items():
        getattr(store, attribute)[:, step_indices] = value.T
    store.omnibus[step_indices] = host.omnibus_chi2


def _write_at(descriptor: int, values: np.ndarray, offset: int) -> None:
    """All of the contiguous ``values``' bytes at ``offset`` (a positional write may write fewer)."""
    view = memoryview(values).cast("B")
    while len(view):
        written = os.pwrite(descriptor, view, offset)
        view, offset = view[written:], offset + written


@dataclass
class ResultScan:
    """The phenotype-variant pairs at genome-wide significance (by phenotype, then variant), and per
    variant the phenotype of smallest P and its -log10 P (NaN where no phenotype has a test)."""

    hit_pheno: np.ndarray
    hit_variant: np.ndarray
    best_pheno: np.ndarray
    min_p: np.ndarray


def scan_results(store: ResultStore, chunk: int = 1 << 16) -> ResultScan:
    """One pass over -log10 P, (P, chunk) at a time."""
    n_variants = store.log10_p.shape[1]
    hit_pheno, hit_variant = [], []
    best, min_p = np.empty(n_variants, np.int64), np.empty(n_variants, np.float32)
    for start in range(0, n_variants, chunk):
        lp = np.nan_to_num(np.asarray(store.log10_p[:, start : start + chunk]), nan=-1.0)
        pheno, variant = np.nonzero(lp > GENOME_WIDE_NEG_LOG10_P)
        hit_pheno.append(pheno)
        hit_variant.append(variant + start)
        best[start : start + chunk] = lp.argmax(axis=0)
        min_p[start : start + chunk] = lp[best[start : start + chunk], np.arange(lp.shape[1])]
        store.release()
    order = np.lexsort((np.concatenate(hit_variant), np.concatenate(hit_pheno)))  # by phenotype, then variant
    return ResultScan(
        np.concatenate(hit_pheno)[order], np.concatenate(hit_variant)[order], best, np.where(min_p < 0, np.nan, min_p)
    )


def write_variant_table(directory: Path, bim: pd.DataFrame, a1_is_ref: np.ndarray) -> pd.DataFrame:
    """variants.tsv of the compact format: #CHROM POS ID REF ALT A1 of the tested variants."""
    variants = pd.DataFrame(
        {
            "#CHROM": bim.chrom.to_numpy(),
            "POS": bim.pos.to_numpy(),
            "ID": bim.id.to_numpy(),
            "REF": bim.ref.to_numpy(),
            "ALT": bim.alt.to_numpy(),
            "A1": np.where(a1_is_ref, bim.ref.to_numpy(), bim.alt.to_numpy()),
        }
    )
    variants.to_csv(directory / "variants.tsv", sep="\t", index=False)
    return variants


def write_meta(directory: Path, meta: dict) -> None:
    """meta.json of the compact format: phenotype names, their groups, sample counts, options."""
    (directory / "meta.json").write_text(json.dumps(meta, indent=2))


def write_hits(
    path: Path, variants: pd.DataFrame, store: ResultStore, names: list[str], group_of: np.ndarray, scan: ResultScan
) -> None:
    """Every variant-phenotype pair at genome-wide significance, with its statistics."""
    hit_pheno, hit_variant = scan.hit_pheno, scan.hit_variant
    columns = {c: variants[c].to_numpy()[hit_variant] for c in variants.columns}
    groups = group_of[hit_pheno]
    columns.update(
        PHENO=np.asarray(names, dtype=object)[hit_pheno],
        A1_FREQ=store.a1_freq[groups, hit_variant],
        OBS_CT=store.obs_ct[groups, hit_variant],
        BETA=store.beta[hit_pheno, hit_variant],
        SE=store.se[hit_pheno, hit_variant],
        LOG10_P=store.log10_p[hit_pheno, hit_variant],
    )
    write_tsv(path, columns)
    log.info(
        "%d variant-phenotype pairs at P < %s -> %s",
        len(hit_pheno),
        threshold_text(GENOME_WIDE_P),
        path.name.split(".partial")[0].lstrip("."),
    )


def write_multivariate(
    path: Path, variants: pd.DataFrame, store: ResultStore, names: list[str], scan: ResultScan
) -> None:
    """One row per variant: the omnibus test across every phenotype and the min-P phenotype."""
    columns = {c: variants[c].to_numpy() for c in variants.columns}
    columns.update(
        N_PHENO=np.full(len(variants), len(names)),
        OMNIBUS_CHI2=np.asarray(store.omnibus),
        OMNIBUS_LOG10_P=chi2_neg_log10_sf(store.omnibus, len(names)),
        MIN_P_PHENO=np.asarray(names, dtype=object)[scan.best_pheno],
        MIN_P_LOG10_P=scan.min_p,
    )
    write_tsv(path, columns)


def write_glm_linear(store: ResultStore, paths: list[Path], group_of: np.ndarray, gzip: bool) -> None:
    """PLINK 2 .glm.linear text files, one per phenotype (``paths`` in phenotype order)."""
    write_start = time.time()
    tasks = [(str(path), j, int(group_of[j])) for j, path in enumerate(paths)]
    write_glm_linear_files(store.directory, tasks, gzip)
    log.info("wrote %d .glm.linear files in %.2f s", len(paths), time.time() - write_start)


def load_result_column(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A result column (.npy, memory-mapped) of a compact output, of the expected shape; truncated
    or damaged is an error naming the file (the readers of `wm-jax report`, `h2`, `rg`, `export`)."""
    from wm_jax.errors import input_error

    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError) as err:
        raise input_error(path, f"expected a complete .npy array of shape {shape} ({type(err).__name__}: {err})")
    if array.shape != shape:
        raise input_error(path, f"shape {array.shape}, expected {shape} from meta.json and variants.tsv")
    return array
