"""Which volumes go in which batch, and reading them: the one place batches are padded.

A global batch is ``batch_size`` rows of the store, sorted, then padded with zero volumes (weight 0)
to the fixed size. On a mesh that spans processes, process p feeds the contiguous slice
`wm_jax.sharding.process_slice` of every global batch and reads only those rows, so the global
batch, and so the step, is the same whatever the number of processes.

Called by `wm_jax.train.loop` (training, validation) and `wm_jax.embed`.
"""

from __future__ import annotations

import queue
import threading

import numpy as np


def split_validation(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/validation split of a store's rows by subject."""
    order = np.random.default_rng([seed, 7]).permutation(n)
    n_val = max(1, int(round(val_fraction * n))) if n > 1 else 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def epoch_batches(train_rows: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The epoch's batches of store rows: a permutation drawn from (seed, epoch), cut in order."""
    order = np.random.default_rng([seed, epoch]).permutation(train_rows)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def consecutive_batches(rows: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """``rows`` in order, cut into batches (validation, embedding)."""
    return [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]


def read_batch(volumes, rows: np.ndarray, batch_size: int, part: slice | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The global batch of ``rows`` (sorted, zero-padded to ``batch_size``) and its weights (1 real,
    0 padding), cut to ``part``: only the rows in ``part`` are read."""
    part = part or slice(0, batch_size)
    ordered = np.sort(np.asarray(rows))
    weights = (np.arange(batch_size) < len(ordered)).astype(np.float32)[part]
    mine = ordered[part]
    batch = np.zeros((part.stop - part.start, *volumes.shape[1:]), np.float32)
    batch[: len(mine)] = volumes[mine]
    return batch, weights


class Prefetcher:
    """Reads `read_batch`es from the store's memory map in a background thread, ``depth`` ahead.
    Yields (volumes, weights, number of real rows in the global batch)."""

    def __init__(self, volumes, batches: list[np.ndarray], batch_size: int, part: slice | None = None, depth: int = 2):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        args = (volumes, batches, batch_size, part)
        self._thread = threading.Thread(target=self._run, args=args, daemon=True)
        self._thread.start()

    def _run(self, volumes, batches, batch_size, part) -> None:
        for rows in batches:
            self._queue.put((*read_batch(volumes, rows, batch_size, part), len(rows)))
        self._queue.put(None)

    def __iter__(self):
        while (item := self._queue.get()) is not None:
            yield item
