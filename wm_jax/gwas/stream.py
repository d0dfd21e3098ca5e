"""Genotype blocks through the compiled association kernel in one streaming pass.

The variants this process streams are read in chunks of consecutive rows, on several reader threads,
ahead of the device. Each chunk, as read, is counted (QC and the A1 rule, applied after the pass; on
GPUs and TPUs by the device, which gets the chunk and sends back only its counts,
`wm_jax.data.device_counts`), and each variant's missing calls route it to a kernel shape
(`wm_jax.gwas.plan.Router`: no missing call, a few, many). Each shape fills its own steps; a step is
launched when full, its results read back a few steps later (so the host never waits on the device
it just launched) into the staging of their chunk, and a chunk whose variants all have results is
written to the result store in one contiguous run by a writer thread. Kernels compile on threads the
first time a shape is needed, while reading goes on.

Called by `wm_jax.gwas.run` (the driver).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import logging
import time
from dataclasses import dataclass, field

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from wm_jax import sharding
from wm_jax.data import device_counts
from wm_jax.data.dosages import concatenate_counts
from wm_jax.data.readahead import READ_THREADS, read_ahead
from wm_jax.data.source import VariantCounts
from wm_jax.gwas.design import GroupedPhenotypes, device_inputs, kernel_inputs
from wm_jax.gwas.kernel import AssociationInputs, BlockResult, check_block_result, make_block_fn
from wm_jax.gwas.plan import Pass, Router, a1_is_ref
from wm_jax.gwas.results import ResultStore, store_step
from wm_jax.gwas.resume import Progress
from wm_jax.stage_options import GwasOptions

log = logging.getLogger("wm_jax")

COMPILE_THREADS = 2  # kernels compiled at once
CHUNK_BYTES = 1 << 24  # genotype bytes per chunk (16 MiB), at least one step of the main shape
STEPS_IN_FLIGHT = 2  # steps launched before the oldest one's results are read back
# A chunk waits for every variant it holds; a shape that fills slowly (the few variants with many
# missing calls) has its partial step launched once it holds variants of a chunk this many chunks
# behind the newest, so that staged chunks (and memory) stay bounded.
MAX_STAGED_CHUNKS = 4
# The pages of the result store and of the genotype file are dropped from memory each time this
# many variant positions have been written (memory flat in the number of variants).
RELEASE_SPAN = 64 * GwasOptions.block_size
# A resumable run syncs the result store to disk and records the chunks written at most this often
# (a sync per chunk cost more than the writes themselves).
SYNC_SECONDS = 2.0
# Where each step's missing-call index is built: None picks by backend (on the device for GPUs and
# TPUs, where it is parallel work next to the matmul, so the host only reads and routes blocks; on
# the host for XLA:CPU, where NumPy's is faster); True or False forces it (tests, benchmarks).
INDEX_ON_DEVICE: bool | None = None
# Where each chunk's genotype counts are taken: None picks by backend (on the device for GPUs and
# TPUs: the chunk is sent there and only its counts come back, so the host does no per-byte work; on
# the host for XLA:CPU, where NumPy's popcounts are faster, `wm_jax.data.device_counts`); True or
# False forces it. Sources whose counts need more than the block (a dosage .pgen) count on the host.
COUNTS_ON_DEVICE: bool | None = None


@dataclass
class _Chunk:
    """Consecutive variants as read: their counts and, per kernel shape (room for missing calls),
    which of them go there, their genotype rows (gathered on the reader thread) and their
    missing-call index (None where the kernel builds it)."""

    start: int  # the first variant's column in the result store
    counts: VariantCounts
    routes: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray | None]]  # width -> (rows, genotypes, index)
    nbytes: int  # genotype bytes read
    seconds: float  # reading, counting and routing it


def _read_chunk(data, router: Router, start: int, rows: np.ndarray, index: bool, count_on_device: bool) -> _Chunk:
    """Read, count (on the device where ``count_on_device``) and route the source ``rows`` (on a
    reader thread): each shape's variants gathered into rows of their own (the block itself where
    they all go to one shape), with the missing-call index of each route when the host builds it
    (``index``)."""
    began = time.perf_counter()
    block = data.read_block(rows)
    counts = device_counts.count_block(data, block) if count_on_device else data.block_counts(block, rows)
    widths = router.widths(counts.missing_dosages)
    routes = {}
    for width in np.unique(widths).tolist():
        chosen = np.flatnonzero(widths == width)
        genotypes = block if len(chosen) == len(block) else np.take(block, chosen, axis=0)
        found = None
        if index:
            found = data.missing_index(genotypes, width) if width else np.zeros((len(chosen), 0), np.int32)
        routes[width] = (chosen, genotypes, found)
    return _Chunk(start, counts, routes, block.nbytes, time.perf_counter() - began)


@dataclass
class _Staged:
    """A chunk's results, filled as its variants' steps come back; written once ``missing`` is 0."""

    start: int
    results: BlockResult  # host arrays, (C, ...) each
    counts: VariantCounts
    missing: int


@dataclass
class _Step:
    """The variants gathered for one step of a kernel shape: store columns and where they came from."""

    raw: np.ndarray
    missing: np.ndarray | None  # None where the kernel builds the index
    columns: list = field(default_factory=list)  # arrays of store columns, in order
    filled: int = 0


class _Shape:
    """One kernel shape: its compilation, the step being filled, its timeline for the .log."""

    def __init__(self, shape: Pass, per_step: int, compiled: concurrent.futures.Future) -> None:
        self.shape, self.per_step, self.compiled = shape, per_step, compiled
        self.step_fn = None
        self.step: _Step | None = None
        self.n_variants = self.n_steps = 0
        self.first_launch = self.last_result = None


class _Stream:
    """What the pass shares: the genotypes, the grouping, the device inputs on the mesh, the shapes,
    the staged chunks, the threads and the progress bar."""

    def __init__(
        self, data, router: Router, grouped: GroupedPhenotypes, store: ResultStore, n: int, a1_alt: bool
    ) -> None:
        self.data, self.router, self.grouped, self.store, self.a1_alt = data, router, grouped, store, a1_alt
        # Blocks are independent: the rows of a step are sharded over this process's devices, with no
        # communication (other processes, if any, stream other variants).
        mesh = sharding.local_mesh("blocks")
        self.n_devices = mesh.size
        self.index_on_device = sharding.on_accelerator(INDEX_ON_DEVICE)
        self.counts_on_device = device_counts.can_count(data) and sharding.on_accelerator(COUNTS_ON_DEVICE)
        self.block_sharding = NamedSharding(mesh, PartitionSpec("blocks"))
        self.inputs: AssociationInputs = device_inputs(kernel_inputs(grouped, data.n_slots), mesh)
        self.column_order = grouped.column_order
        log.info(
            "%d phenotype group(s) in %d stack(s) of equal size; one matmul for all %d phenotypes",
            len(grouped.groups),
            len(grouped.layout),
            len(self.column_order),
        )
        self.start = time.time()  # the association's clock, for the .log's timeline
        self.compile_durations: list[float] = []
        self.compiler = concurrent.futures.ThreadPoolExecutor(max_workers=COMPILE_THREADS)
        self.writer = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self.shapes: dict[int, _Shape] = {}
        self.staged: collections.OrderedDict[int, _Staged] = collections.OrderedDict()
        self.in_flight: collections.deque = collections.deque()
        self.writes: list[concurrent.futures.Future] = []
        self.counts: dict[int, VariantCounts] = {}  # by first column, chunks read or already done
        self.progress_record = None  # `resume.Progress.record` when the run can be resumed
        self.unrecorded: list[tuple[int, VariantCounts]] = []  # chunks written since the last sync
        self.synced_at = time.perf_counter()
        self.read_seconds = self.compile_wait_seconds = self.device_wait_seconds = self.write_seconds = 0.0
        self.bytes_read = self.bytes_written = 0
        self.released_at = 0
        self.progress = tqdm(
            total=n,
            desc="association",
            unit="variant",
            unit_scale=True,
            mininterval=1.0,
            disable=not sharding.is_main_process(),
        )

    # -- kernels ------------------------------------------------------------------------------
    def shape_for(self, width: int) -> _Shape:
        """The kernel shape with room for ``width`` missing calls, its compilation started on first use."""
        if width not in self.shapes:
            shape = self.router.shape(width)
            per_step = shape.block_size * self.n_devices
            self.shapes[width] = _Shape(shape, per_step, self.compiler.submit(self._compile, shape))
        return self.shapes[width]

    def _compile(self, plan: Pass) -> jax.stages.Compiled:
        """The kernel for a shape, its compilation logged with when it started and ended (seconds
        since the association began: the .log's timeline)."""
        per_step = plan.block_size * self.n_devices
        raw = self._spec((per_step, self.data.row_width), self.data.block_dtype)
        start = time.time()
        if self.index_on_device:
            block_fn = make_block_fn(self.grouped.layout, small_df=plan.small_df, missing_width=plan.missing_width)
            step_fn = block_fn.lower(raw, self.inputs).compile()
        else:
            block_fn = make_block_fn(self.grouped.layout, small_df=plan.small_df)
            index = self._spec((per_step, plan.missing_width), np.int32)
            step_fn = block_fn.lower(raw, index, self.inputs).compile()
        seconds = time.time() - start
        self.compile_durations.append(seconds)  # from several threads: list.append is atomic
        memory = step_fn.memory_analysis()
        log.info(
            "kernel compiled in %.2f s (at %.2f-%.2f s) for steps of %d variants (%d per device), room for %d "
            "missing calls each (index built on the %s); %.0f MiB of temporaries per device",
            seconds,
            start - self.start,
            start - self.start + seconds,
            per_step,
            plan.block_size,
            plan.missing_width,
            "device" if self.index_on_device else "host",
            getattr(memory, "temp_size_in_bytes", float("nan")) / 2**20,
        )
        return step_fn

    def _spec(self, shape: tuple[int, int], dtype: type) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(shape, dtype, sharding=self.block_sharding)

    # -- routing and steps --------------------------------------------------------------------
    def add_chunk(self, chunk: _Chunk) -> None:
        """Stage the chunk and hand its variants to their shapes, launching every step that fills.
        A whole step of one shape's rows goes to the device as it lies in the chunk; only the
        variants that fill a step across chunks are copied into it."""
        self.read_seconds += chunk.seconds
        self.bytes_read += chunk.nbytes
        self.counts[chunk.start] = chunk.counts
        n = sum(len(chosen) for chosen, _, _ in chunk.routes.values())
        self.staged[chunk.start] = _Staged(chunk.start, None, chunk.counts, n)
        for width in chunk.routes:  # every new shape's compilation under way before any step waits on one
            self.shape_for(width)
        for width, (chosen, genotypes, index) in chunk.routes.items():
            shape = self.shape_for(width)
            taken = 0
            while taken < len(chosen):
                if shape.step is None and len(chosen) - taken >= shape.per_step:
                    whole = slice(taken, taken + shape.per_step)
                    missing = None if self.index_on_device else index[whole]
                    shape.step = _Step(genotypes[whole], missing, [chunk.start + chosen[whole]], shape.per_step)
                    taken += shape.per_step
                    self._launch(shape)
                    continue
                step = shape.step or self._new_step(shape)
                part = slice(taken, taken + min(shape.per_step - step.filled, len(chosen) - taken))
                filled = slice(step.filled, step.filled + part.stop - part.start)
                step.raw[filled] = genotypes[part]
                if step.missing is not None:
                    step.missing[filled] = index[part]
                step.columns.append(chunk.start + chosen[part])
                step.filled = filled.stop
                taken = part.stop
                if step.filled == shape.per_step:
                    self._launch(shape)
        self._launch_behind()

    def _new_step(self, shape: _Shape) -> _Step:
        """An empty step to copy variants into (its unfilled rows are padded at launch)."""
        shape.step = _Step(
            raw=np.empty((shape.per_step, self.data.row_width), self.data.block_dtype),
            missing=None if self.index_on_device else np.empty((shape.per_step, shape.shape.missing_width), np.int32),
        )
        return shape.step

    def _launch_behind(self) -> None:
        """Launch the partial steps that hold variants of a chunk more than MAX_STAGED_CHUNKS behind
        the newest (a shape that fills slowly must not hold every chunk since its first variant)."""
        if len(self.staged) <= MAX_STAGED_CHUNKS:
            return
        waiting_from = list(self.staged)[-MAX_STAGED_CHUNKS]
        for shape in self.shapes.values():
            if shape.step is not None and int(shape.step.columns[0][0]) < waiting_from:
                self._launch(shape)

    def _launch(self, shape: _Shape) -> None:
        """Launch the shape's step (padded where partial), and read back the oldest steps in flight."""
        step, shape.step = shape.step, None
        if step.filled < shape.per_step:  # padding: hom ALT rows with no missing call, dropped on return
            step.raw[step.filled :] = 0
            if step.missing is not None:
                step.missing[step.filled :] = self.data.n_slots
        if shape.step_fn is None:
            waited = time.time()
            shape.step_fn = shape.compiled.result()
            self.compile_wait_seconds += time.time() - waited
        raw = jax.device_put(step.raw, self.block_sharding)
        if step.missing is None:
            results = shape.step_fn(raw, self.inputs)
        else:
            results = shape.step_fn(raw, jax.device_put(step.missing, self.block_sharding), self.inputs)
        shape.first_launch = shape.first_launch or time.time()
        shape.n_steps += 1
        shape.n_variants += step.filled
        self.in_flight.append((shape, np.concatenate(step.columns), results))
        while len(self.in_flight) > STEPS_IN_FLIGHT:
            self._collect()

    def _collect(self) -> None:
        """Read back the oldest step in flight into the staging of its chunks; hand every chunk now
        complete to the writer."""
        shape, columns, results = self.in_flight.popleft()
        waited = time.time()
        host = BlockResult(*(np.asarray(x)[: len(columns)] for x in results))  # one transfer per array
        self.device_wait_seconds += time.time() - waited
        check_block_result(host)
        shape.last_result = time.time()
        starts = np.fromiter(self.staged.keys(), np.int64)
        owner = starts[np.searchsorted(starts, columns, side="right") - 1]
        owners = np.unique(owner).tolist()
        for start in owners:
            mine = slice(None) if len(owners) == 1 else owner == start  # most steps lie in one chunk
            staged = self.staged[start]
            if staged.results is None:
                n = staged.missing
                staged.results = BlockResult(*(np.empty((n, *x.shape[1:]), x.dtype) for x in host))
            positions = columns[mine] - start
            for target, value in zip(staged.results, host):
                target[positions] = value[mine]
            staged.missing -= len(positions)
        self.progress.update(len(columns))
        for start in [s for s, staged in self.staged.items() if staged.missing == 0]:
            self._write(self.staged.pop(start))

    def _write(self, staged: _Staged) -> None:
        flip = a1_is_ref(staged.counts, self.a1_alt)
        columns = np.arange(staged.start, staged.start + len(flip))
        self.writes.append(self.writer.submit(self._store, flip, columns, staged.results, staged.counts))
        if staged.start + len(flip) - self.released_at >= RELEASE_SPAN:
            self.released_at = staged.start + len(flip)
            self.writes.append(self.writer.submit(self._release))

    def _store(self, flip: np.ndarray, columns: np.ndarray, results: BlockResult, counts: VariantCounts) -> None:
        """`store_step` on the writer thread, timed for the .log; then, for a resumable run, the
        store synced to disk and the chunk recorded (`wm_jax.gwas.resume`)."""
        began = time.perf_counter()
        store_step(self.store, self.column_order, flip, columns, results)
        if self.progress_record is not None:
            self.unrecorded.append((int(columns[0]), counts))
            if began - self.synced_at >= SYNC_SECONDS:
                self._record()
        self.write_seconds += time.perf_counter() - began
        self.bytes_written += sum(x.nbytes for x in results)

    def _record(self) -> None:
        """Sync the store to disk, then record the chunks written since the last sync (writer thread)."""
        self.store.flush()
        for start, counts in self.unrecorded:
            self.progress_record(start, counts)
        self.unrecorded.clear()
        self.synced_at = time.perf_counter()

    def _release(self) -> None:
        self.store.release()
        self.data.release()

    def finish(self) -> None:
        """Launch every partial step, read back every step, wait for every write."""
        for shape in self.shapes.values():
            if shape.step is not None:
                self._launch(shape)
        while self.in_flight:
            self._collect()
        for write in self.writes:
            write.result()
        if self.progress_record is not None and self.unrecorded:
            self.writer.submit(self._record).result()
        assert not self.staged, "every chunk written"

    def close(self) -> None:
        """Stop the threads (kernels not yet compiled, after a failure, are not) and flush the store."""
        self.progress.close()
        self.writer.shutdown()
        self.compiler.shutdown(cancel_futures=True)
        self.store.flush()
        self.store.close_files()


def _chunks(data, rows: np.ndarray, per_step: int) -> list[tuple[int, int]]:
    """(first, stop) positions of the chunks of ``rows``: CHUNK_BYTES of genotypes, at least one step."""
    bytes_per_row = data.row_width * np.dtype(data.block_dtype).itemsize
    size = max(per_step, CHUNK_BYTES // max(1, bytes_per_row))
    return [(s, min(s + size, len(rows))) for s in range(0, len(rows), size)]


def associate(
    data,
    rows: np.ndarray,
    first_column: int,
    grouped: GroupedPhenotypes,
    router: Router,
    store: ResultStore,
    a1_alt: bool,
    progress: Progress | None = None,
) -> VariantCounts:
    """Test every variant of ``rows`` (source rows, this process's share) against every phenotype,
    into the store's columns from ``first_column`` on; returns their genotype counts (taken from
    the same blocks). With ``progress`` (a resumable run) the chunks it records are not read
    again (their counts come from the records) and every chunk written is recorded. Logs the timeline."""
    stream = _Stream(data, router, grouped, store, len(rows), a1_alt)
    chunks = _chunks(data, rows, router.block_size * stream.n_devices)
    done = progress.done() if progress is not None else {}
    todo = [(first, stop) for first, stop in chunks if (first_column + first, first_column + stop) not in done]
    n_todo = sum(stop - first for first, stop in todo)
    if progress is not None:
        stream.progress_record = progress.record
        for first, stop in chunks:
            if (first_column + first, first_column + stop) in done:
                stream.counts[first_column + first] = done[first_column + first, first_column + stop]
        resumed = len(rows) - n_todo
        if resumed:
            log.info("resuming: %d of %d variants already in the store, %d chunks to go", resumed, len(rows), len(todo))
            stream.progress.update(resumed)
    start = time.time()

    def read(part: tuple[int, int]) -> _Chunk:
        first, stop = part
        return _read_chunk(
            data, router, first_column + first, rows[first:stop], not stream.index_on_device, stream.counts_on_device
        )

    try:
        with contextlib.closing(read_ahead(read, todo, READ_THREADS)) as chunks:  # readers stopped on any exit
            for chunk in chunks:
                stream.add_chunk(chunk)
        stream.finish()
    finally:
        stream.close()
    _log_timeline(stream, n_todo, time.time() - start)
    if not stream.counts:  # a process with no variant of its own
        return data.block_counts(data.read_block(rows[:0]), rows[:0])
    return concatenate_counts([stream.counts[start] for start in sorted(stream.counts)])


def _log_timeline(stream: _Stream, n_variants: int, seconds: float) -> None:
    """One line per pass (kernel shape) with its time, then the stream's stages with their rates."""
    for width, shape in sorted(stream.shapes.items()):
        if shape.first_launch is None:
            continue
        log.info(
            "pass of %d variants (room for %d missing calls each) ran in %.2f s (at %.2f-%.2f s), %d steps",
            shape.n_variants,
            width,
            shape.last_result - shape.first_launch,
            shape.first_launch - stream.start,
            shape.last_result - stream.start,
            shape.n_steps,
        )
    n_tests = n_variants * len(stream.column_order)
    log.info(
        "association: %d variant-phenotype tests in %.2f s (%.3g tests/s), of which %.2f s compiling before a "
        "pass could start (%.2f s of compilation in all, the rest while passes ran) and %.2f s waiting on the device",
        n_tests,
        seconds,
        n_tests / max(seconds, 1e-9),
        stream.compile_wait_seconds,
        sum(stream.compile_durations),
        stream.device_wait_seconds,
    )
    log.info(
        "stream: genotypes read once, %.1f MB in %.2f s of reading, counting (on the %s) and %s on %d threads "
        "(%.2f GB/s a thread, %.2f GB/s over the association); results written, %.1f MB in %.2f s on 1 thread "
        "(%.2f GB/s)",
        stream.bytes_read / 1e6,
        stream.read_seconds,
        "device" if stream.counts_on_device else "host",
        "routing (missing-call index on the device)" if stream.index_on_device else "indexing",
        READ_THREADS,
        stream.bytes_read / max(stream.read_seconds, 1e-9) / 1e9,
        stream.bytes_read / max(seconds, 1e-9) / 1e9,
        stream.bytes_written / 1e6,
        stream.write_seconds,
        stream.bytes_written / max(stream.write_seconds, 1e-9) / 1e9,
    )
