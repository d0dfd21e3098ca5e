"""The files of a `wm-jax gwas` run under its output prefix: which paths it writes, whether it may
replace what is there (the output policy of `wm_jax.errors`), and the run's .log, all written
under temporary names and published together.

Called by `wm_jax.gwas.run` (the driver).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from wm_jax import sharding
from wm_jax.errors import InputError, input_error
from wm_jax.publish import (
    AtomicFiles,
    Output,
    check_output_dir,
    check_output_location,
    read_marker,
    remove_stale_partials,
)

log = logging.getLogger("wm_jax")

# What `wm-jax gwas` writes into its compact directory, PREFIX.gwas/.
GWAS_STORE = Output(
    "gwas",
    "variants.tsv beta.npy se.npy log10_p.npy obs_ct.npy a1_freq.npy reason.npy omnibus_chi2.npy meta.json",
)


class _ElapsedFormatter(logging.Formatter):
    """Log lines prefixed with seconds since the run started, as a timeline of where time goes."""

    def __init__(self) -> None:
        super().__init__()
        self.start = time.time()

    def format(self, record: logging.LogRecord) -> str:
        return f"[{record.created - self.start:7.2f}s] {record.getMessage()}"


def glm_suffix(gzip: bool) -> str:
    """The file name ending of a phenotype's PLINK 2 text output."""
    return ".glm.linear.gz" if gzip else ".glm.linear"


def output_prefix(out: str | os.PathLike) -> Path:
    """``--out`` as a prefix: a file name stem, not a directory."""
    if str(out).endswith(("/", os.sep)) or Path(out).name in ("", ".", ".."):
        raise InputError(f"--out: expected an output prefix (a file name stem), found {str(out)!r}")
    return Path(out)


def planned_outputs(out: Path, pheno_names: list[str], glm_files_suffix: str | None) -> list[Path]:
    """Every path a run writes, the compact directory second; a .glm.linear file per phenotype
    when ``glm_files_suffix`` is given (--format plink2)."""
    paths = [Path(f"{out}.log"), Path(f"{out}.gwas"), Path(f"{out}.hits.tsv"), Path(f"{out}.multivariate.tsv")]
    if glm_files_suffix is not None:
        paths += [Path(f"{out}.{name}{glm_files_suffix}") for name in pheno_names]
    return paths


def previous_outputs(out: Path) -> list[Path]:
    """The files an earlier wm-jax gwas wrote to this prefix, as its meta.json lists them."""
    compact = Path(f"{out}.gwas")
    marker = read_marker(compact)
    if marker is None or marker["command"] != "gwas":
        return []
    try:
        listed = json.loads((compact / "meta.json").read_text()).get("outputs", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [out.parent / name for name in listed if isinstance(name, str) and "/" not in name and name != ".."]


def check_outputs(out: Path, planned: list[Path], previous: list[Path], overwrite: bool) -> None:
    """Before any work: the prefix's outputs may be written (the output policy of wm_jax.errors)."""
    check_output_location(out, "gwas")
    check_output_dir(planned[1], GWAS_STORE, overwrite)
    owned = set(previous)
    for path in planned[:1] + planned[2:]:
        if path.is_dir() and not path.is_symlink():
            raise input_error(path, "is a directory; expected a file path for this output")
        if path.exists() and path not in owned and not overwrite:
            raise input_error(
                path,
                "exists and was not written by an earlier wm-jax gwas to this prefix; pass --overwrite to replace it",
            )


def claim_outputs(
    files: AtomicFiles | None, out: Path, pheno_names: list[str], glm_files_suffix: str | None, overwrite: bool
) -> list[Path]:
    """The run's outputs, once checked (by every process: each stops on the same error); those of
    an earlier run to this prefix are replaced on commit."""
    planned, previous = planned_outputs(out, pheno_names, glm_files_suffix), previous_outputs(out)
    check_outputs(out, planned, previous, overwrite)
    if files is not None:
        files.replaces = previous
    return planned


@contextlib.contextmanager
def run_files(out: Path, overwrite: bool) -> Iterator[AtomicFiles | None]:
    """The run's output files, published together when the block ends without an error and
    discarded otherwise; the ``wm_jax`` log goes to PREFIX.log (at least INFO) meanwhile.
    Process 0 of a multi-process run writes every output: the others get None."""
    check_outputs(out, planned_outputs(out, [], None), previous_outputs(out), overwrite)  # before the .log's temporary
    if not sharding.is_main_process():
        yield None
        return
    remove_stale_partials(out.parent, f"{out.name}.")
    files = AtomicFiles(GWAS_STORE, overwrite=overwrite)
    handler = logging.FileHandler(files.path(Path(f"{out}.log")), mode="w")
    handler.setFormatter(_ElapsedFormatter())
    log.addHandler(handler)
    previous_level = log.level
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)  # the .log file always holds the INFO record
    try:
        yield files
        handler.close()
        files.commit()
    except BaseException:
        handler.close()
        files.discard()
        raise
    finally:
        log.removeHandler(handler)
        log.setLevel(previous_level)


def glm_files_suffix(options) -> str | None:
    """The file name ending of the per-phenotype PLINK 2 files of a run's `GwasOptions`, None
    without them (the compact format)."""
    return glm_suffix(options.gzip) if options.format == "plink2" else None
