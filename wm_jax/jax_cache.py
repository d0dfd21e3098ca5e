"""The persistent JAX compilation cache, set up in one place (`wm-jax gwas`, `wm-jax ldscore`, the demo)."""

from __future__ import annotations

import os
from pathlib import Path


def use_compilation_cache(directory: str | os.PathLike | None = None) -> None:
    """A persistent compilation cache, so that a later run with the same shapes (cohort, phenotype
    groups, block size) loads its kernels instead of compiling them. Every kernel is kept, however
    fast it compiled.

    With ``directory`` (the demo's run directory cache), that directory. Without: JAX_COMPILATION_CACHE_DIR
    when set, else ${XDG_CACHE_HOME:-~/.cache}/wm-jax/jax (the directory launch/*.sh use), and
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS may keep fewer kernels."""
    import jax

    if directory is not None:
        jax.config.update("jax_compilation_cache_dir", str(Path(directory).resolve()))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        return
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        jax.config.update("jax_compilation_cache_dir", str(cache_home / "wm-jax" / "jax"))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
