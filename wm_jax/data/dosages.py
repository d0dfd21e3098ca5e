"""Dosage arithmetic shared by the genotype readers: plink2's hard calls of dosages, counts of a block
of dosages, missing-dosage indices (dosages in `wm_jax.data.source.DOSAGE_UNIT`)."""

from __future__ import annotations

import functools

import numpy as np

from wm_jax.data.source import DOSAGE_UNIT, MISSING_DOSAGE, VariantCounts

HARD_CALL_THRESHOLD = 0.1  # plink2's default --hard-call-threshold


def padded_slots(n_samples: int) -> int:
    """Sample slots of a dosage row: the samples, padded to a multiple of 4 (the kernel's per-byte masks)."""
    return 4 * (-(-n_samples // 4))


def float_dosages(units: np.ndarray) -> np.ndarray:
    """ALT dosages in DOSAGE_UNIT (uint16, MISSING_DOSAGE missing) as float32 alleles, NaN missing."""
    return np.where(units == MISSING_DOSAGE, np.nan, units.astype(np.float32) / DOSAGE_UNIT).astype(np.float32)


def hard_calls_from_dosages(units: np.ndarray) -> np.ndarray:
    """plink2's hard calls of ALT dosages in DOSAGE_UNIT (uint16, MISSING_DOSAGE missing): the
    nearest of 0, 1, 2 when the dosage is within HARD_CALL_THRESHOLD of it, else missing (-9)."""
    values = units.astype(np.int32)
    nearest = (values + DOSAGE_UNIT // 2) // DOSAGE_UNIT
    distance = np.abs(values - nearest * DOSAGE_UNIT)
    calls = np.where(distance <= int(HARD_CALL_THRESHOLD * DOSAGE_UNIT), nearest, -9).astype(np.int8)
    calls[units == MISSING_DOSAGE] = -9
    return calls


@functools.cache
def hard_call_table() -> np.ndarray:
    """`hard_calls_from_dosages` of every uint16, to look a block's hard calls up in one gather."""
    return hard_calls_from_dosages(np.arange(1 << 16, dtype=np.uint16))


_NO_HARD_CALL, _NO_DOSAGE = 3, 4  # `dosage_category_table`'s classes after the hard calls 0, 1, 2


@functools.cache
def dosage_category_table() -> np.ndarray:
    """For every uint16 dosage: its hard call 0, 1 or 2, or _NO_HARD_CALL (a dosage too far from
    any, `hard_calls_from_dosages`), or _NO_DOSAGE (MISSING_DOSAGE)."""
    calls = hard_call_table()
    table = np.where(calls < 0, _NO_HARD_CALL, calls).astype(np.uint8)
    table[MISSING_DOSAGE] = _NO_DOSAGE
    return table


@functools.cache
def _category_runs() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """`dosage_category_table` as runs of equal class over the dosages in order: the dosage where
    each run after the first starts, and each run's class."""
    table = dosage_category_table()
    starts = np.flatnonzero(np.diff(table.astype(np.int16)) != 0) + 1
    return tuple(starts.tolist()), tuple(table[np.r_[0, starts]].tolist())


def counts_of_dosages(units: np.ndarray) -> VariantCounts:
    """VariantCounts of a block of ALT dosages (rows, samples) in DOSAGE_UNIT, with plink2's hard
    calls of them (the same counts as `dosage_counts(units, hard_calls_from_dosages(units))`,
    without the int8 hard calls). The classes of `dosage_category_table` are runs of dosages, so
    each row's count of a class is a difference of counts below the runs' bounds: one comparison
    and count per bound (6) rather than a table lookup per dosage (a 16 MiB block of 5,003
    samples: 40 -> 18 ms, one-off timing)."""
    bounds = category_bounds()
    below = np.empty((len(units), len(bounds)), np.int64)
    for j, bound in enumerate(bounds):  # booleans summed as bytes: faster than count_nonzero by row
        below[:, j] = (units < bound).view(np.uint8).sum(axis=1, dtype=np.uint32)
    return counts_below_bounds(below, units.sum(axis=1, dtype=np.int64), units.shape[1])


def category_bounds() -> tuple[int, ...]:
    """The dosages where a run of `dosage_category_table` starts (after the first run): a row's
    count below each of them gives its counts (`counts_below_bounds`)."""
    return _category_runs()[0]


def counts_below_bounds(below: np.ndarray, unit_sum: np.ndarray, n_samples: int) -> VariantCounts:
    """VariantCounts of rows of ``n_samples`` dosages from each row's count of dosages below each
    of `category_bounds` (rows x bounds) and its sum of dosage units, MISSING_DOSAGE included
    (`counts_of_dosages`; also taken on the device, `wm_jax.data.device_counts`)."""
    classes = _category_runs()[1]
    below = np.asarray(below, np.int64)
    edges = np.concatenate([np.zeros((len(below), 1), np.int64), below, np.full((len(below), 1), n_samples)], axis=1)
    per_run = np.diff(edges, axis=1)
    per_row = np.zeros((len(below), 5), np.int64)
    for run, category in enumerate(classes):
        per_row[:, category] += per_run[:, run]
    no_dosage = per_row[:, _NO_DOSAGE]
    alt_units = np.asarray(unit_sum, np.int64) - int(MISSING_DOSAGE) * no_dosage
    return VariantCounts(
        hom_alt=per_row[:, 2],
        het=per_row[:, 1],
        hom_ref=per_row[:, 0],
        missing=per_row[:, _NO_HARD_CALL] + no_dosage,
        alt_dosage=alt_units / DOSAGE_UNIT,
        dosage_missing=no_dosage,
    )


def dosage_counts(units: np.ndarray, hard_calls: np.ndarray) -> VariantCounts:
    """VariantCounts of a block of ALT dosages (rows, samples) in DOSAGE_UNIT and its hard calls (-9 missing)."""
    missing = units == MISSING_DOSAGE
    alt_units = units.sum(axis=1, dtype=np.int64) - int(MISSING_DOSAGE) * missing.sum(axis=1)
    return VariantCounts(
        hom_alt=(hard_calls == 2).sum(axis=1),
        het=(hard_calls == 1).sum(axis=1),
        hom_ref=(hard_calls == 0).sum(axis=1),
        missing=(hard_calls < 0).sum(axis=1),
        alt_dosage=alt_units / DOSAGE_UNIT,
        dosage_missing=missing.sum(axis=1),
    )


def concatenate_counts(parts: list[VariantCounts]) -> VariantCounts:
    """One VariantCounts from the counts of consecutive blocks."""
    fields = ("hom_alt", "het", "hom_ref", "missing", "alt_dosage", "dosage_missing")
    return VariantCounts(
        *(None if getattr(parts[0], f) is None else np.concatenate([getattr(p, f) for p in parts]) for f in fields)
    )


def missing_dosage_index(block: np.ndarray, n_samples: int, width: int) -> np.ndarray:
    """(rows, width) sample slots of each row's missing dosages, padded with block.shape[1] (the
    kernel's zero row); the dosage counterpart of `wm_jax.gwas.kernel.missing_call_index`."""
    missing = block[:, :n_samples] == MISSING_DOSAGE
    per_row = np.count_nonzero(missing, axis=1)
    if len(per_row) and per_row.max() > width:
        raise ValueError(f"a variant has more than {width} missing dosages in this block")
    flat = np.flatnonzero(missing)  # row-major: samples in order within each row
    rows = flat // n_samples
    rank = np.arange(len(flat)) - (np.cumsum(per_row) - per_row)[rows]  # no sort: rows are in order
    index = np.full(block.shape[0] * width, block.shape[1], np.int32)
    index[rows * width + rank] = flat - rows * n_samples
    return index.reshape(block.shape[0], width)
