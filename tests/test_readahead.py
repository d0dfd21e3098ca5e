"""`read_ahead`: blocks in order, errors where their block is taken, reads stopped early."""

import threading
import time

import numpy as np
import pytest

from wm_jax.data.readahead import padded_block, read_ahead


def test_blocks_come_in_order_with_reads_on_threads_ahead():
    seen_threads = set()

    def read(part):
        time.sleep(0.01 * (part % 3))  # later parts may finish first
        seen_threads.add(threading.get_ident())
        return part * 10

    assert list(read_ahead(read, range(20), threads=4)) == [10 * p for p in range(20)]
    assert threading.get_ident() not in seen_threads


def test_an_error_is_raised_where_its_block_is_taken_and_later_reads_are_cancelled():
    started = []

    def read(part):
        started.append(part)
        if part == 3:
            raise ValueError("block 3 is damaged")
        time.sleep(0.02)
        return part

    blocks = read_ahead(read, range(1000), threads=2)
    assert [next(blocks) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="block 3"):
        next(blocks)
    time.sleep(0.1)
    assert max(started) < 10  # reading ahead is bounded and stops with the consumer


def test_padded_block_appends_zero_rows():
    class Source:
        def read_block(self, rows):
            return np.full((len(rows), 3), 7, np.uint8)

    block = padded_block(Source(), np.arange(2), 5)
    assert block.shape == (5, 3) and (block[:2] == 7).all() and (block[2:] == 0).all()
