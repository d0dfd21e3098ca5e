"""Genotype counts of a block taken on the device, from the block as it goes there.

The GWAS stream counts every block it reads (QC, the A1 rule, and each variant's missing calls,
which route it to a kernel shape). On the host that is NumPy popcounts on the reader threads
(`wm_jax.data.plink.bed_row_counts`, `wm_jax.data.dosages.counts_of_dosages`); on a GPU or TPU the
block is sent to the device, counted there at memory speed, and only the counts come back, so the
host reads and routes and does no per-byte work. The device returns integer partial counts
(int32), and the host turns them into `VariantCounts` with the same functions as its own counting,
so both give the same integers.

Which sources: `block_counting` "bed" (a .bed, a hard-call .pgen: three popcounts of the bytes)
and "dosages" (BGEN: counts below each bound of plink2's hard-call classes, and the sum of dosage
units in two 8-bit halves, so that no int32 sum can overflow below 8 million samples). A dosage
.pgen stores its hard calls apart from its dosages, so it is counted on the host.

On XLA:CPU the host's NumPy is faster (a 16 MiB chunk of 35,000 samples: 9 ms against 44 ms with
32-bit words, as here, and 88 ms with bytes, one-off timing), so `wm_jax.gwas.stream` counts on the
device only on GPUs and TPUs unless told otherwise.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from wm_jax.data.dosages import category_bounds, counts_below_bounds
from wm_jax.data.plink import counts_of_code_bits
from wm_jax.data.source import VariantCounts


def can_count(data) -> bool:
    """Whether the device can take the counts of this source's blocks."""
    return getattr(data, "block_counting", None) in ("bed", "dosages")


def count_block(data, block: np.ndarray) -> VariantCounts:
    """`data.block_counts(block, rows)`, the same integers, taken on this process's first device."""
    if not can_count(data):
        raise ValueError(f"{data.name}: its block counts need more than the block; count it on the host")
    on_device = jax.device_put(block, jax.local_devices()[0])
    if data.block_counting == "bed":
        bits = np.asarray(_bed_bits(on_device, data.n_samples))
        return counts_of_code_bits(bits[:, 0], bits[:, 1], bits[:, 2], data.n_samples)
    parts = np.asarray(_dosage_parts(on_device, data.n_samples))
    unit_sum = (parts[:, -2].astype(np.int64) << 8) + parts[:, -1]
    return counts_below_bounds(parts[:, :-2], unit_sum, data.n_samples)


@functools.partial(jax.jit, static_argnums=1)
def _bed_bits(raw: jax.Array, n_samples: int) -> jax.Array:
    """(rows, 3) int32 per row of .bed bytes: every set bit, the high bits (codes 10, 11), the
    codes 11; padding codes past the last sample masked out first (a malformed last byte's too)."""
    width = raw.shape[1]
    used = n_samples - 4 * (width - 1)  # samples in the last byte
    last = 0xFF if used >= 4 else (1 << 2 * max(used, 0)) - 1
    mask = np.full(width, 0xFF, np.uint8)
    if width:
        mask[-1] = last
    codes = raw & jnp.asarray(mask)
    # As 32-bit words (zero bytes appended: no set bits): every backend's native popcount width. A
    # shift moves a byte's low bit into its neighbour's bit 7, which the even-bit mask drops, so the
    # counts hold whatever the words' byte order.
    codes = jnp.pad(codes, ((0, 0), (0, -width % 4)))
    codes = jax.lax.bitcast_convert_type(codes.reshape(raw.shape[0], -1, 4), jnp.uint32)
    high = (codes >> 1) & jnp.uint32(0x55555555)

    def bits(x: jax.Array) -> jax.Array:
        return jax.lax.population_count(x).astype(jnp.int32).sum(axis=1)

    return jnp.stack([bits(codes), bits(high), bits(high & codes)], axis=1)


@functools.partial(jax.jit, static_argnums=1)
def _dosage_parts(units: jax.Array, n_samples: int) -> jax.Array:
    """(rows, bounds + 2) int32 per row of dosage units over its first ``n_samples`` slots: the
    count below each of `category_bounds`, then the sums of the units' high and low bytes."""
    units = units[:, :n_samples]
    below = [(units < bound).astype(jnp.int32).sum(axis=1) for bound in category_bounds()]
    high = (units >> 8).astype(jnp.int32).sum(axis=1)
    low = (units & jnp.uint16(0xFF)).astype(jnp.int32).sum(axis=1)
    return jnp.stack([*below, high, low], axis=1)
