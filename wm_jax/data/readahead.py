"""Reading ahead of the device: blocks of a genotype source read on threads, handed over in order.

One reader for every pass over genotypes (`wm-jax gwas`, `ldscore`, `h2 --method rhe`): while the
device works on one block, the next ones are read (and, for the GWAS, counted and routed) on
threads. Positional reads of a `.bed`, BGEN decoding and pgenlib release the GIL, so the threads
overlap with each other and with the device.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import numpy as np

Part = TypeVar("Part")
Block = TypeVar("Block")

READ_THREADS = max(2, min(8, os.cpu_count() or 2))  # blocks read at once


def read_ahead(read: Callable[[Part], Block], parts: Iterable[Part], threads: int = READ_THREADS) -> Iterator[Block]:
    """``read(part)`` of every part, in order, with up to ``threads`` reads under way ahead of the
    consumer. An error in a read is raised where its block is taken; reads not yet started are
    cancelled when the consumer stops early."""
    readers = concurrent.futures.ThreadPoolExecutor(max_workers=threads)
    pending: collections.deque = collections.deque()
    try:
        for part in parts:
            pending.append(readers.submit(read, part))
            if len(pending) > threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        readers.shutdown(cancel_futures=True)


def padded_block(data, rows, size: int):
    """``data.read_block(rows)`` with zero rows appended up to ``size`` (a fixed step shape). Zero
    rows decode to constant variants (hom ALT from .bed bytes, dosage 0), which standardise to 0."""
    raw = data.read_block(rows)
    if len(raw) < size:
        raw = np.concatenate([raw, np.zeros((size - len(raw), raw.shape[1]), raw.dtype)])
    return raw
