"""PLINK 2 `.glm.linear` text files from the compact results, one per phenotype, in parallel.

Formatting numbers is the cost (18M rows for 128 phenotypes x 142k variants), so the work per row
is cut to what differs between phenotypes: the variant columns (the lines of variants.tsv), A1_FREQ
and OBS_CT are joined once per phenotype group into one string per row, and each phenotype's row
formats five numbers (BETA, SE, T_STAT, P, LOG10_P) with one %-template. Phenotypes are split over
worker processes (spawned: they import numpy only, not JAX), which read the compact results from
their memory maps.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import multiprocessing
import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from wm_jax.gwas.text import open_text

REASON_NAMES = {1: "TOO_FEW_OBS", 2: "CONST_OR_COLLINEAR_GENOTYPE"}
HEADER = "#CHROM\tPOS\tID\tREF\tALT\tA1\tTEST\tA1_FREQ\tOBS_CT\tBETA\tSE\tT_STAT\tP\tLOG10_P\tERRCODE\n"
_ROW = "%s\t%.6g\t%.6g\t%.6g\t%.6g\t%.6g\t%s\n"
_CHUNK_ROWS = 100_000


def _group_columns(variant_prefix: list, a1_freq: np.ndarray, obs_ct: np.ndarray, reason: np.ndarray):
    """One group's shared columns: 'variant prefix, A1_FREQ, OBS_CT' joined per row, and ERRCODE."""
    left = [
        f"{prefix}\t{freq:.6g}\t{obs}" for prefix, freq, obs in zip(variant_prefix, a1_freq.tolist(), obs_ct.tolist())
    ]
    names = np.array(["."] + [REASON_NAMES.get(r, ".") for r in range(1, 8)], dtype=object)
    return left, names[np.clip(reason, 0, 7)].tolist()


def _rows(left: list, errcode: list, beta: np.ndarray, se: np.ndarray, log10_p: np.ndarray) -> str:
    b, s, lp = (np.asarray(x, np.float64) for x in (beta, se, log10_p))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        t, p = b / s, np.power(10.0, -lp)
    rows = zip(left, b.tolist(), s.tolist(), t.tolist(), p.tolist(), lp.tolist(), errcode)
    return "".join(map(_ROW.__mod__, rows)).replace("\tnan", "\tNA")


def _load(compact_dir: Path, name: str) -> np.ndarray:
    """A result column of the compact format, memory-mapped read-only."""
    return np.load(compact_dir / f"{name}.npy", mmap_mode="r")


def write_files(compact_dir: Path, tasks: list[tuple[str, int, int]], compress: bool) -> int:
    """Write ``tasks`` (path, phenotype row, group row) from the compact results in ``compact_dir``,
    a chunk of variants at a time: memory stays flat in the number of variants, and each group's
    shared columns are formatted once per chunk."""
    compact_dir = Path(compact_dir)
    beta, se, log10_p = (_load(compact_dir, name) for name in ("beta", "se", "log10_p"))
    a1_freq, obs_ct, reason = (_load(compact_dir, name) for name in ("a1_freq", "obs_ct", "reason"))
    handles = [open_text(path, compress) for path, _, _ in tasks]
    try:
        for handle in handles:
            handle.write(HEADER)
        with open(compact_dir / "variants.tsv") as variants:
            next(variants)  # its header: #CHROM POS ID REF ALT A1, the first columns of a .glm.linear row
            start = 0
            while True:
                prefix = [line[:-1] + "\tADD" for line in itertools.islice(variants, _CHUNK_ROWS)]
                if not prefix:
                    break
                stop = start + len(prefix)
                shared = {
                    g: _group_columns(prefix, a1_freq[g, start:stop], obs_ct[g, start:stop], reason[g, start:stop])
                    for g in {g for _, _, g in tasks}
                }
                for handle, (_, j, g) in zip(handles, tasks):
                    handle.write(_rows(*shared[g], beta[j, start:stop], se[j, start:stop], log10_p[j, start:stop]))
                start = stop
    finally:
        for handle in handles:
            handle.close()
    return len(tasks)


def write_glm_linear_files(
    compact_dir: Path,
    tasks: list[tuple[str, int, int]],
    compress: bool,
    workers: int | None = None,
    parts_per_worker: int = 4,
) -> None:
    """Every task's `.glm.linear` file, split over ``workers`` processes (default: the usable cores).
    The phenotypes go out in contiguous shares, ``parts_per_worker`` per worker, so that the
    progress bar moves while a group's shared columns are still formatted by few workers."""
    workers = max(1, min(workers or len(os.sched_getaffinity(0)), len(tasks)))
    tasks = sorted(tasks, key=lambda task: task[2])
    n_parts = min(len(tasks), workers * parts_per_worker if workers > 1 else 1)
    parts = [[tasks[i] for i in part] for part in np.array_split(np.arange(len(tasks)), n_parts)]
    progress = tqdm(total=len(tasks), desc="write .glm.linear", unit="pheno", mininterval=1.0)
    if workers == 1:
        progress.update(write_files(compact_dir, tasks, compress))
    else:
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for future in concurrent.futures.as_completed(
                [pool.submit(write_files, compact_dir, part, compress) for part in parts]
            ):
                progress.update(future.result())
    progress.close()
