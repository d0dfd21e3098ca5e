"""User-facing errors and all-or-nothing output.

Bad input raises :class:`InputError`; the CLI prints its message as one line and exits 2.
Outputs are written under a temporary name and renamed into place only when complete, so a
failed run leaves no partial file behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator


class InputError(Exception):
    """Bad user input: the message names the file and what was expected."""


def input_error(path: str | os.PathLike, what: str) -> InputError:
    return InputError(f"{path}: {what}")


def require_file(path: str | os.PathLike, what: str = "file") -> Path:
    path = Path(path)
    if not path.is_file():
        raise input_error(path, f"{what} not found")
    return path


def _temporary_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory; it replaces ``path`` only when the block succeeds."""
    path = Path(path)
    if path.exists() and not overwrite and any(path.iterdir() if path.is_dir() else [path]):
        raise input_error(path, "output directory exists and is not empty (pass --overwrite)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(path)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


class AtomicFiles:
    """Collects several output files and publishes them together.

    ``path(name)`` gives the temporary path to write; ``commit()`` renames all of them.
    Used by stages that write many files under one prefix (e.g. GWAS output), so that an
    error half-way leaves none of them.
    """

    def __init__(self) -> None:
        self._pending: dict[Path, Path] = {}

    def path(self, final: str | os.PathLike) -> Path:
        final = Path(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temporary_sibling(final)
        self._pending[final] = tmp
        return tmp

    def commit(self) -> None:
        """Publish every file; an existing output of the same name is replaced (a directory too:
        it is renamed aside first, since a rename cannot replace a non-empty directory)."""
        for final, tmp in self._pending.items():
            if final.is_dir() and not final.is_symlink():
                old = _temporary_sibling(final)
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old)
            else:
                os.replace(tmp, final)
        self._pending.clear()

    def discard(self) -> None:
        for tmp in self._pending.values():
            if tmp.exists():
                shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
        self._pending.clear()

    def __enter__(self) -> "AtomicFiles":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()
