"""The gene tests' LD products on the device: each gene's LD correlation matrix, and the sums of
squared correlations between its variants and those of the genes before it within reach (for the
gene-set GLS), from the reference panel's raw blocks (.bed bytes or uint16 dosages).

One jitted step per gene (`_gene_step`), every dot at full float32 precision (`at_full_precision`:
TF32 or one bf16 pass would put r ~1e-3 off): the gene's block is decoded and standardised on the
device as `wm-jax ldscore` does it (a missing call takes the variant's mean; rows of unit norm, so
X X' is the correlation; a constant variant, or a padding row, is a row of 0), multiplied by
itself, and by a ring of the standardised rows of the genes still within reach, whose squared
products are summed per gene (a segment sum). Then the block is written into the ring in place
(the ring is donated). The host keeps which ring rows belong to which gene; when a block does not
fit at the end of the ring, the live rows are moved to its front, and the ring doubles when that
is not enough.

Shapes are fixed by rounding each gene's variant count up to a power of two or 1.5 times one (at
least MIN_ROWS), and the ring's size is chosen before the first gene (`ring_rows`: the most rows the genes within
reach of any gene hold, plus its block), so the step compiles once per block size: 8 times on the
demo's UDIPs, 0.3-0.8 s each on a 2-core machine (a first version, whose ring grew and whose
product covered only the live span, compiled some 30 shapes). A gene's padding rows take no
room in the ring (the next block is written over them).

`HostGeneLd` makes the same products in NumPy on the host (the gene's correlation in float64),
which is faster on XLA:CPU: `gene_ld` picks one by `jax.default_backend()` (`LD_ON_DEVICE`), as
the GWAS picks where its missing-call index is built.
"""

from __future__ import annotations

import collections
import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from wm_jax import sharding
from wm_jax.data.readahead import padded_block
from wm_jax.gwas.kernel import at_full_precision
from wm_jax.heritability.ldscore import standardised as ldsc_standardised

MIN_ROWS = 32  # smallest block (rows) of a gene
INITIAL_RING = 1024  # ring rows to start with, when the caller does not size it
RING_STEP = 256  # the ring's size is a multiple of this
# Where the gene LD products are made: None picks by backend (the jitted step on GPUs and TPUs; NumPy
# on the host for XLA:CPU, where the device step made the gene tests slower: 22.6-23.7 s against
# 17.1-17.8 s for 128 phenotypes on 2 cores, benchmarks/results/genes_speed_ld.md); True or False
# forces it (tests, benchmarks).
LD_ON_DEVICE: bool | None = None


def block_rows(n: int) -> int:
    """The padded block size of a gene of ``n`` variants: the next power of two or 1.5 times a power
    of two (32, 48, 64, 96, 128, 192, ...; at most 1/3 padding), at least MIN_ROWS."""
    power = 1 << max(0, int(n) - 1).bit_length()
    return max(MIN_ROWS, 3 * power // 4 if 3 * power // 4 >= n else power)


def ring_size(rows: int) -> int:
    """A ring of at least ``rows`` rows, in whole RING_STEP rows (its size is fixed for the run)."""
    return max(RING_STEP, -(-int(rows) // RING_STEP) * RING_STEP)


def unit_rows(raw: jax.Array, n_samples: int) -> jax.Array:
    """Raw .bed bytes (B, W) or dosages (B, R) -> (B, R) float32 standardised rows of unit norm
    (mean-imputed missing calls; a constant variant is a row of 0)."""
    slots = raw.shape[1] * (4 if raw.dtype == jnp.uint8 else 1)
    x = ldsc_standardised(raw, jnp.arange(slots) < n_samples)  # each varying row: norm^2 = n_samples
    return x * (1.0 / np.sqrt(n_samples))


def _gene_step(ring, segments, raw, offset, *, n_samples: int):
    """(ring with this gene's rows written at ``offset``, the gene's correlation (B, B), the sum of
    squared correlations of its variants with the ring's rows of each segment (ring rows,) indexed
    by segment id; rows of segment -1 are left out)."""
    x = unit_rows(raw, n_samples)
    correlation = x @ x.T
    products = ring @ x.T
    per_row = jnp.where(segments >= 0, (products * products).sum(axis=1), 0.0)
    sums = jax.ops.segment_sum(per_row, jnp.maximum(segments, 0), num_segments=ring.shape[0])
    return jax.lax.dynamic_update_slice(ring, x, (offset, 0)), correlation, sums


@functools.cache
def compiled_gene_step(n_samples: int):
    return jax.jit(at_full_precision(functools.partial(_gene_step, n_samples=n_samples)), donate_argnums=(0,))


@functools.cache
def _compiled_gather():
    return jax.jit(lambda ring, rows: ring[rows], donate_argnums=(0,))


@dataclass
class _Live:
    key: int  # the caller's id of the gene
    offset: int  # its first ring row (also its segment id)
    rows: int  # its rows in the ring: its variants (the block's padding rows are free)


def ring_rows(starts: np.ndarray, ends: np.ndarray, chroms: np.ndarray, sizes: np.ndarray, reach_bp: float) -> int:
    """The ring rows that hold, for every gene in order, the rows of the genes before it still
    within reach (dropped from the oldest while the oldest is on another chromosome or ends more
    than ``reach_bp`` before its start), plus its padded block (``sizes``: the variant counts)."""
    need, live = 0, collections.deque()
    for start, end, chrom, size in zip(starts, ends, chroms, sizes, strict=True):
        while live and (live[0][0] != chrom or live[0][1] < start - reach_bp):  # as `run_gene_tests` drops them
            live.popleft()
        need = max(need, sum(n for *_, n in live) + block_rows(size))
        live.append((chrom, end, int(size)))
    return need


class GeneLd:
    """The LD products of genes given in order along each chromosome: ``step(key, rows)`` with the
    gene's reference ``rows`` returns its correlation matrix (float64, len(rows) square) and the
    sum of squared correlations with each gene still in the ring ({key: sum}); ``keep(keys)`` says
    which earlier genes are still within reach (the others leave the ring)."""

    def __init__(self, data, capacity: int = INITIAL_RING) -> None:
        self.data = data
        self.step_fn = compiled_gene_step(data.n_samples)
        self.ring = jnp.zeros((ring_size(capacity), data.n_slots), jnp.float32)
        self.live: list[_Live] = []
        self.top = 0  # the first ring row after the last live block

    def keep(self, keys: set[int]) -> None:
        self.live = [entry for entry in self.live if entry.key in keys]

    def step(self, key: int, rows: np.ndarray) -> tuple[np.ndarray, dict[int, float]]:
        size = block_rows(len(rows))
        raw = padded_block(self.data, np.asarray(rows), size)
        offset = self._place(size)
        segments = np.full(self.ring.shape[0], -1, np.int32)
        for entry in self.live:
            segments[entry.offset : entry.offset + entry.rows] = entry.offset
        self.ring, correlation, sums = self.step_fn(self.ring, segments, raw, np.int32(offset))
        sums = np.asarray(sums, np.float64)
        between = {entry.key: float(sums[entry.offset]) for entry in self.live}
        # its padding rows (0) are free: the next gene's block may start right after its variants
        self.live.append(_Live(key, offset, len(rows)))
        self.top = offset + len(rows)
        return np.asarray(correlation, np.float64)[: len(rows), : len(rows)], between

    def _place(self, size: int) -> int:
        """The ring row where a block of ``size`` rows goes: after the last live block; else, the
        live blocks moved to the front (and the ring doubled until they and the block fit)."""
        if self.top + size <= self.ring.shape[0]:
            return self.top
        live_rows = sum(entry.rows for entry in self.live)
        capacity = self.ring.shape[0]
        while live_rows + size > capacity:
            capacity *= 2
        order = np.zeros(capacity, np.int32)
        at = 0
        for entry in self.live:
            order[at : at + entry.rows] = np.arange(entry.offset, entry.offset + entry.rows)
            entry.offset, at = at, at + entry.rows
        ring = self.ring
        if capacity > ring.shape[0]:
            ring = jnp.concatenate([ring, jnp.zeros((capacity - ring.shape[0], ring.shape[1]), ring.dtype)])
        self.ring = _compiled_gather()(ring, order)  # rows past the live ones: copies of row 0, unused
        self.top = at
        return at


def ld_on_device() -> bool:
    """Whether the gene LD products run on the device (`GeneLd`) rather than on the host (`HostGeneLd`)."""
    return sharding.on_accelerator(LD_ON_DEVICE)


def gene_ld(data, starts: np.ndarray, ends: np.ndarray, chroms: np.ndarray, sizes: np.ndarray, reach_bp: float):
    """The LD products' maker for genes in this order (`ring_rows`' arguments): `GeneLd` with its
    ring sized for them, or `HostGeneLd` (`ld_on_device`)."""
    if ld_on_device():
        return GeneLd(data, ring_rows(starts, ends, chroms, sizes, reach_bp))
    return HostGeneLd(data)


def host_unit_rows(dosages: np.ndarray) -> np.ndarray:
    """(variants, samples) dosages with NaN for missing calls -> float64 rows, mean-imputed, centred
    and of unit norm, so X X' is their correlation (a constant variant is a row of 0), as `unit_rows`
    makes them on the device."""
    d = np.asarray(dosages, np.float64)
    mean = np.nanmean(d, axis=1, keepdims=True) if d.size else d[:, :1]
    d = np.where(np.isnan(d), mean, d) - mean
    norm = np.sqrt((d * d).sum(axis=1, keepdims=True))
    varies = norm > 1e-8 * np.sqrt(d.shape[1])  # a constant fractional dosage leaves a rounding residue
    return np.divide(d, norm, out=np.zeros_like(d), where=varies)


class HostGeneLd:
    """`GeneLd`'s products in NumPy on the host: the gene's dosages (`data.dosages`) standardised
    and its correlation in float64, and its products with the rows of the genes still within
    reach in float32 (one BLAS call with all of them stacked; r to ~1e-7 is plenty for a sum of r^2),
    their squares summed in float64. Same interface: ``step(key, rows)`` and ``keep(keys)``."""

    def __init__(self, data) -> None:
        self.data = data
        self.live: dict[int, np.ndarray] = {}  # key -> the gene's float32 unit rows

    def keep(self, keys: set[int]) -> None:
        self.live = {key: rows for key, rows in self.live.items() if key in keys}

    def step(self, key: int, rows: np.ndarray) -> tuple[np.ndarray, dict[int, float]]:
        x = host_unit_rows(self.data.dosages(np.asarray(rows)))
        x32 = x.astype(np.float32)
        between = {}
        if self.live:
            products = np.vstack(list(self.live.values())) @ x32.T
            per_row = (products.astype(np.float64) ** 2).sum(axis=1)
            bounds = np.cumsum([0, *(len(v) for v in self.live.values())])
            between = {k: float(per_row[a:b].sum()) for k, a, b in zip(self.live, bounds[:-1], bounds[1:], strict=True)}
        self.live[key] = x32
        return x @ x.T, between
