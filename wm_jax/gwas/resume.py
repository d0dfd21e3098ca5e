"""Resuming a killed `wm-jax gwas` from its last finished chunk of variants.

The result store of a run in progress is a hidden directory beside the outputs,
``.PREFIX.gwas.resume-KEY``, where KEY is a digest of everything the results depend on: the
genotype, phenotype and covariate files (path, size, modification time), the options, the code
version, and the number of processes and devices (which fix the chunks). Each chunk of variants
written to the store is recorded in its ``progress/`` folder with its genotype counts, after its
results. A rerun of the same command finds the directory and streams only the chunks not recorded;
every chunk's results depend on its own variants only, so the outputs are the bytes an
uninterrupted run writes. When the pass is complete the records are removed and the directory is
published as ``PREFIX.gwas`` like any other output.

What survives: a process killed outright (SIGKILL, the out-of-memory killer, a pre-empted node)
leaves the directory; a chunk is recorded only once its results are synced to disk, so a record
holds after a power loss too. A run that ends with an error or is interrupted (Ctrl-C, SIGTERM),
which wm-jax survives long enough to clean up, removes the directory like every other temporary.
Directories of the same prefix with another KEY (the command or its files changed) are removed at
the start of a run.

Called by `wm_jax.gwas.run` (the directory, `Progress`) and `wm_jax.gwas.stream` (`Progress.record`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

import wm_jax
from wm_jax.data.source import GenotypeInput, VariantCounts

log = logging.getLogger("wm_jax")

MARKER = "resume.json"  # names the prefix and the key; removed before publishing


def _file_identity(path: str | os.PathLike | None) -> list | None:
    """A file's path, size and modification time (None for no file)."""
    if path is None:
        return None
    stat = os.stat(path)
    return [str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]


def genotype_files(genotypes: GenotypeInput) -> list[str]:
    """The files a genotype input reads."""
    if genotypes.kind == "bfile":
        return [f"{genotypes.path}.{ext}" for ext in ("bed", "bim", "fam")]
    if genotypes.kind == "pfile":
        return [f"{genotypes.path}.{ext}" for ext in ("pgen", "pvar", "psam")]
    return [genotypes.path, *([genotypes.sample] if genotypes.sample else [])]


def run_key(genotypes: GenotypeInput, pheno: str, covar: str, options, n_processes: int, n_devices: int) -> str:
    """The digest of everything a run's result store depends on."""
    settings = {k: v for k, v in asdict(options).items() if k != "overwrite"}
    identity = {
        "version": wm_jax.__version__,
        "genotypes": [genotypes.kind, genotypes.bgen_ref_first, *map(_file_identity, genotype_files(genotypes))],
        "pheno": _file_identity(pheno),
        "covar": _file_identity(covar),
        "options": settings,
        "processes": n_processes,
        "devices": n_devices,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def directory(out: Path, key: str) -> Path:
    return out.parent / f".{out.name}.gwas.resume-{key}"


def remove_other_keys(out: Path, key: str) -> None:
    """Remove this prefix's resume directories of other keys: those whose marker names this prefix,
    and those without a marker (a run killed between making its store and marking it: nothing to
    resume; the name is this prefix's and only `wm-jax gwas` makes it)."""
    for candidate in out.parent.glob(f".{out.name}.gwas.resume-*"):
        marker = candidate / MARKER
        if candidate == directory(out, key) or not candidate.is_dir() or candidate.is_symlink():
            continue
        try:
            prefix = json.loads(marker.read_text()).get("prefix") if marker.is_file() else str(out)
        except (OSError, ValueError):
            continue
        if prefix == str(out):
            log.info("removing %s: an unfinished run of another command or other files", candidate)
            shutil.rmtree(candidate, ignore_errors=True)


def resumable(path: Path) -> bool:
    """Whether ``path`` is a resume directory with its records (a run killed during the pass)."""
    return (path / MARKER).is_file() and (path / "progress").is_dir()


def mark(path: Path, out: Path, key: str) -> None:
    """Make ``path`` (the new store) a resume directory."""
    (path / "progress").mkdir()
    (path / MARKER).write_text(json.dumps({"command": "gwas", "prefix": str(out), "key": key}) + "\n")


def unmark(path: Path) -> None:
    """The pass is complete: remove the records, so the directory is an ordinary output."""
    shutil.rmtree(path / "progress", ignore_errors=True)
    (path / MARKER).unlink(missing_ok=True)


_FIELDS = [f.name for f in fields(VariantCounts)]


class Progress:
    """The chunks written to a store, each with its genotype counts (``progress/START-STOP.npz``:
    the chunk's first column and one past its last, so that a chunk is only taken for the same one)."""

    def __init__(self, store_directory: Path) -> None:
        self.path = store_directory / "progress"

    def record(self, start: int, counts: VariantCounts) -> None:
        """The chunk from column ``start`` is in the store (recorded under a temporary name, then renamed)."""
        arrays = {name: getattr(counts, name) for name in _FIELDS if getattr(counts, name) is not None}
        name = f"{start}-{start + len(counts.het)}"
        temporary = self.path / f".{name}.npz"
        with open(temporary, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(temporary, self.path / f"{name}.npz")

    def done(self) -> dict[tuple[int, int], VariantCounts]:
        """Every recorded chunk's counts, by its first column and one past its last."""
        chunks = {}
        for path in self.path.glob("[0-9]*-[0-9]*.npz"):
            start, stop = map(int, path.stem.split("-"))
            with np.load(path) as stored:
                chunks[start, stop] = VariantCounts(**{name: stored[name] for name in stored.files})
        return chunks
