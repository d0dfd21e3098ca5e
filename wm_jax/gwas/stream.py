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

RELEASE_EVERY = 64  # steps between dropping the pages of the result store and the .bed from memory


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
        self.compile_seconds = 0.0
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
        """The kernel for the pass's shapes (its compilation time added to ``compile_seconds``)."""
        per_step = plan.block_size * self.n_devices
        block_fn = make_block_fn(self.grouped.layout, small_df=plan.small_df)
        start = time.time()
        step_fn = block_fn.lower(
            self._spec((per_step, self.data.row_width), self.data.block_dtype),
            self._spec((per_step, plan.missing_width), np.int32),
            self.inputs,
        ).compile()
        self.compile_seconds += time.time() - start
        memory = step_fn.memory_analysis()
        log.info(
            "kernel compiled in %.2f s for steps of %d variants (%d per device), room for %d missing calls "
            "each; %.0f MiB of temporaries per device",
            time.time() - start,
            per_step,
            plan.block_size,
            plan.missing_width,
            getattr(memory, "temp_size_in_bytes", float("nan")) / 2**20,
        )
        return step_fn

    def _spec(self, shape: tuple[int, int], dtype: type) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(shape, dtype, sharding=self.block_sharding)

    def run(self, plan: Pass) -> None:
        """Every step of the pass. The kernel compiles while the first block is read; results are
        stored one step late, while the device computes the next."""
        per_step = plan.block_size * self.n_devices
        steps = [plan.variants[s : s + per_step] for s in range(0, len(plan.variants), per_step)]
        pending_read = self._submit_read(steps[0], per_step, plan.missing_width)
        step_fn = self.compile(plan)
        previous = None
        for step_number, step_indices in enumerate(steps):
            raw, missing = pending_read.result()
            if step_number + 1 < len(steps):
                pending_read = self._submit_read(steps[step_number + 1], per_step, plan.missing_width)
            results = step_fn(
                jax.device_put(raw, self.block_sharding), jax.device_put(missing, self.block_sharding), self.inputs
            )
            if previous is not None:
                store_step(self.store, self.column_order, self.tested.a1_is_ref, *previous)
            if step_number % RELEASE_EVERY == RELEASE_EVERY - 1:
                self.store.release()
                self.data.release()
            previous = (step_indices, results)
            self.progress.update(len(step_indices))
        store_step(self.store, self.column_order, self.tested.a1_is_ref, *previous)

    def _submit_read(self, step_indices: np.ndarray, n_rows: int, width: int) -> concurrent.futures.Future:
        return self.reader.submit(_read_step, self.data, self.tested.rows[step_indices], n_rows, width)

    def close(self) -> None:
        self.progress.close()
        self.reader.shutdown()
        self.store.flush()


def associate(data, tested: TestedVariants, grouped: GroupedPhenotypes, passes: list[Pass], store: ResultStore) -> None:
    """Test every variant of every pass against every phenotype, into ``store``; logs the timing."""
    n_variants = sum(len(p.variants) for p in passes)
    stream = _Stream(data, tested, grouped, store, n_variants)
    compute_start = time.time()
    for plan in passes:
        stream.run(plan)
    stream.close()
    compute_seconds = time.time() - compute_start
    n_tests = n_variants * len(grouped.column_order)
    log.info(
        "association: %d variant-phenotype tests in %.2f s (%.3g tests/s), of which %.2f s compiling",
        n_tests,
        compute_seconds,
        n_tests / max(compute_seconds, 1e-9),
        stream.compile_seconds,
    )
