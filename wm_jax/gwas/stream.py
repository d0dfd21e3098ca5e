"""Genotype blocks through the compiled association kernel: one mesh over the devices, one
compilation per `Pass`, the next step's genotype rows read on a thread while the device computes, and
each step's results copied into the result store one step late (so the host never waits on the
device it just launched).

Called by `wm_jax.gwas.run` (the driver).
"""

from __future__ import annotations

import concurrent.futures
import logging
import time

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from wm_jax import sharding
from wm_jax.gwas.design import GroupedPhenotypes, device_inputs, kernel_inputs
from wm_jax.gwas.kernel import AssociationInputs, make_block_fn
from wm_jax.gwas.plan import Pass, TestedVariants
from wm_jax.gwas.results import ResultStore, store_step

log = logging.getLogger("wm_jax")

COMPILE_THREADS = 2  # kernels compiled at once (see `_Stream.compile_all`)
# The pages of the result store and of the genotype file are dropped from memory once the steps since
# the last drop have spanned this many variant positions: 64 steps of 512 consecutive variants. A
# pass over variants scattered through the file (the few with many missing calls) spans the whole
# store in each step, since each variant's results sit in every phenotype's row; counting steps
# alone let such a pass keep every page of the store resident (peak RSS grew with the variants).
RELEASE_SPAN = 64 * 512


def _read_step(data, rows: np.ndarray, n_rows: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """One step's rows of the genotype source (`wm_jax.data.genotypes`: raw .bed bytes or dosages),
    padded with zero rows to ``n_rows``, and their missing-call index."""
    raw = np.zeros((n_rows, data.row_width), data.block_dtype)
    raw[: len(rows)] = data.read_block(rows)
    return raw, data.missing_index(raw, width)


class _Stream:
    """What every pass shares: the genotypes, the tested variants, the grouping, the device inputs
    on the mesh, the result store, the reader thread and the progress bar."""

    def __init__(self, data, tested: TestedVariants, grouped: GroupedPhenotypes, store: ResultStore, n: int) -> None:
        self.data, self.tested, self.grouped, self.store = data, tested, grouped, store
        # Blocks are independent: the rows of a step are sharded over this process's devices, with no
        # communication (other processes, if any, stream other variants).
        mesh = sharding.local_mesh("blocks")
        self.n_devices = mesh.size
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
        self.compile_wait_seconds = 0.0
        # Two compiler threads: the first pass's kernel and the next compile side by side while the
        # first block is read; later ones while earlier passes run.
        self.compiler = concurrent.futures.ThreadPoolExecutor(max_workers=COMPILE_THREADS)
        self.reader = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self.progress = tqdm(
            total=n,
            desc="association",
            unit="variant",
            unit_scale=True,
            mininterval=1.0,
            disable=not sharding.is_main_process(),
        )

    def compile(self, plan: Pass) -> jax.stages.Compiled:
        """The kernel for the pass's shapes, its compilation logged with when it started and ended
        (seconds since the association began: the .log's timeline)."""
        per_step = plan.block_size * self.n_devices
        block_fn = make_block_fn(self.grouped.layout, small_df=plan.small_df)
        start = time.time()
        step_fn = block_fn.lower(
            self._spec((per_step, self.data.row_width), self.data.block_dtype),
            self._spec((per_step, plan.missing_width), np.int32),
            self.inputs,
        ).compile()
        seconds = time.time() - start
        self.compile_durations.append(seconds)  # from several threads: list.append is atomic
        memory = step_fn.memory_analysis()
        log.info(
            "kernel compiled in %.2f s (at %.2f-%.2f s) for steps of %d variants (%d per device), room for %d "
            "missing calls each; %.0f MiB of temporaries per device",
            seconds,
            start - self.start,
            start - self.start + seconds,
            per_step,
            plan.block_size,
            plan.missing_width,
            getattr(memory, "temp_size_in_bytes", float("nan")) / 2**20,
        )
        return step_fn

    def compile_all(self, passes: list[Pass]) -> list[concurrent.futures.Future]:
        """Every pass's kernel, compiled on threads in pass order (XLA compiles without the GIL), so
        that later passes compile while earlier ones run."""
        return [self.compiler.submit(self.compile, plan) for plan in passes]

    def wait_for(self, compiled: concurrent.futures.Future) -> jax.stages.Compiled:
        """The compiled kernel, the time spent waiting for it added to ``compile_wait_seconds``."""
        start = time.time()
        step_fn = compiled.result()
        self.compile_wait_seconds += time.time() - start
        return step_fn

    def _spec(self, shape: tuple[int, int], dtype: type) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(shape, dtype, sharding=self.block_sharding)

    def run(self, plan: Pass, compiled: concurrent.futures.Future) -> None:
        """Every step of the pass. The first block is read while the kernel compiles; results are
        stored one step late, while the device computes the next."""
        per_step = plan.block_size * self.n_devices
        steps = [plan.variants[s : s + per_step] for s in range(0, len(plan.variants), per_step)]
        pending_read = self._submit_read(steps[0], per_step, plan.missing_width)
        step_fn = self.wait_for(compiled)
        start = time.time()
        previous, span = None, 0
        for step_number, step_indices in enumerate(steps):
            raw, missing = pending_read.result()
            if step_number + 1 < len(steps):
                pending_read = self._submit_read(steps[step_number + 1], per_step, plan.missing_width)
            results = step_fn(
                jax.device_put(raw, self.block_sharding), jax.device_put(missing, self.block_sharding), self.inputs
            )
            if previous is not None:
                store_step(self.store, self.column_order, self.tested.a1_is_ref, *previous)
            span += int(step_indices[-1] - step_indices[0]) + 1
            if span >= RELEASE_SPAN:
                self.store.release()
                self.data.release()
                span = 0
            previous = (step_indices, results)
            self.progress.update(len(step_indices))
        store_step(self.store, self.column_order, self.tested.a1_is_ref, *previous)
        log.info(
            "pass of %d variants (room for %d missing calls each) ran in %.2f s (at %.2f-%.2f s)",
            len(plan.variants),
            plan.missing_width,
            time.time() - start,
            start - self.start,
            time.time() - self.start,
        )

    def _submit_read(self, step_indices: np.ndarray, n_rows: int, width: int) -> concurrent.futures.Future:
        return self.reader.submit(_read_step, self.data, self.tested.rows[step_indices], n_rows, width)

    def close(self) -> None:
        """Stop the threads (kernels not yet compiled, after a failure, are not) and flush the store."""
        self.progress.close()
        self.reader.shutdown()
        self.compiler.shutdown(cancel_futures=True)
        self.store.flush()


def associate(data, tested: TestedVariants, grouped: GroupedPhenotypes, passes: list[Pass], store: ResultStore) -> None:
    """Test every variant of every pass against every phenotype, into ``store``; logs the timing."""
    n_variants = sum(len(p.variants) for p in passes)
    stream = _Stream(data, tested, grouped, store, n_variants)
    compute_start = time.time()
    try:
        for plan, compiled in zip(passes, stream.compile_all(passes)):
            stream.run(plan, compiled)
    finally:
        stream.close()
    compute_seconds = time.time() - compute_start
    n_tests = n_variants * len(grouped.column_order)
    log.info(
        "association: %d variant-phenotype tests in %.2f s (%.3g tests/s), of which %.2f s compiling "
        "before a pass could start (%.2f s of compilation in all, the rest while passes ran)",
        n_tests,
        compute_seconds,
        n_tests / max(compute_seconds, 1e-9),
        stream.compile_wait_seconds,
        sum(stream.compile_durations),
    )
