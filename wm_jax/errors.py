"""User-facing errors, and the one output policy of every command.

Bad input raises :class:`InputError`; the CLI prints its message as one line and exits 2.

Outputs:
- Everything is written under a temporary sibling name (``.NAME.partial-PID-HOST-XXXXXXXX``) and
  renamed into place only when complete, so a failed run leaves no partial file behind. Temporaries
  are removed on any exit the process survives. The next run that writes the same output removes
  those of a killed process: made on this machine (HOST: this boot and PID namespace) by a PID no
  longer running, or made elsewhere (another host or container, an earlier boot, an older wm-jax
  whose names carry no HOST), where the PID cannot be checked.
- A command only replaces what it owns. A directory it writes carries a marker file
  (:data:`MARKER`) naming the command and the entries it wrote. An existing, non-empty output
  directory is replaced when it carries the marker of the same command and holds nothing beyond
  the entries listed there. Otherwise it is refused, unless ``--overwrite`` is given and every
  entry in it is one this command writes (an output of an older wm-jax without the marker). A
  directory holding anything else, or marked by another command, is never replaced, and nothing
  is written inside it (or below it) by another command.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

MARKER = ".wm-jax-output.json"

# Top-level entries each command writes into its output directory (the marker aside): what
# `--overwrite` may replace in a directory that has no marker (written before markers existed).
KNOWN_ENTRIES: dict[str, frozenset[str]] = {
    "simulate": frozenset(
        {
            "genotypes.bed",
            "genotypes.bim",
            "genotypes.fam",
            "fa",
            "atlas.nii.gz",
            "atlas_labels.tsv",
            "subjects.tsv",
            "covariates.tsv",
            "truth.tsv",
            "simulation.json",
            "patterns.nii.gz",
            "genetic_values.tsv",
            "genes.tsv",
            "gene_sets.gmt",
        }
    ),
    "prepare": frozenset({"volumes.npy", "mask.npy", "index.tsv", "store.json"}),
    "report": frozenset(
        {
            "loci.tsv",
            "lambda.tsv",
            "replication.tsv",
            "manhattan.png",
            "qq.png",
            "report.json",
            "report.md",
            "h2.png",
            "rg.png",
            "report.html",
        }
    ),
    "genes": frozenset(
        {"genes.tsv", "gene_sets.tsv", "loci_genes.tsv", "genes_manhattan.png", "genes.json", "genes.md"}
    ),
    "interpret": frozenset(
        {
            "perdi_abs_t.nii.gz",
            "perdi_mean_change.nii.gz",
            "mean_fa.nii.gz",
            "enrichment.tsv",
            "montages",
            "interpret.json",
        }
    ),
    "gwas": frozenset(
        {
            "variants.tsv",
            "beta.npy",
            "se.npy",
            "log10_p.npy",
            "obs_ct.npy",
            "a1_freq.npy",
            "reason.npy",
            "omnibus_chi2.npy",
            "meta.json",
        }
    ),
}

# Commands whose output directory is a run directory, written into (resumed) rather than replaced.
WRITES_INSIDE = frozenset({"demo"})

_context = {"command": None}


class InputError(Exception):
    """Bad user input: the message names the file and what was expected."""


def input_error(path: str | os.PathLike, what: str) -> InputError:
    return InputError(f"{path}: {what}")


def require_file(path: str | os.PathLike, what: str = "file") -> Path:
    path = Path(path)
    if not path.is_file():
        raise input_error(path, f"{what} not found")
    return path


def read_json(path: str | os.PathLike, expected: str, *keys: str) -> dict:
    """A JSON object with ``keys``; unreadable, not JSON or lacking a key is an InputError."""
    path = require_file(path, "file")
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise input_error(path, f"expected {expected} (JSON; {type(err).__name__})")
    if not isinstance(record, dict) or any(key not in record for key in keys):
        raise input_error(path, f"expected {expected} (a JSON object with {', '.join(keys) or 'fields'})")
    return record


def set_command(name: str | None) -> None:
    """The command outputs are written for when a caller names none (set by the CLI)."""
    _context["command"] = name


def current_command(command: str | None = None) -> str:
    return command or _context["command"] or "library"


# ---------------------------------------------------------------------------------------------
# Temporaries
# ---------------------------------------------------------------------------------------------
def _temporary_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial-{os.getpid()}-{machine_tag()}-{uuid.uuid4().hex[:8]}")


@functools.cache
def machine_tag() -> str:
    """8 hex digits naming where a PID means this process table: the host name, the kernel's boot
    (a PID of an earlier boot names nothing now) and the PID namespace (containers on one kernel
    share its boot but not its PIDs)."""
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    with contextlib.suppress(OSError):
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:8]


def pid_running(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (signal 0; one we may not signal exists)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def remove_stale_partials(directory: str | os.PathLike, name: str) -> list[Path]:
    """Remove ``.<name>*.partial-PID-*`` in ``directory`` left by processes no longer running
    (a killed run); those of a live process are kept. ``name`` may end in ``.`` to cover every
    output of a prefix. Returns what was removed."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for path in directory.glob(f".{_glob_escape(name)}*.partial-*"):
        if _in_use(path.name.rsplit(".partial-", 1)[1]):
            continue
        _remove(path)
        removed.append(path)
    return removed


def _in_use(suffix: str) -> bool:
    """Is the temporary whose name ends in ``.partial-<suffix>`` in use? Only when it was made on
    this machine (its HOST tag) by a process still running: this one or another live one. A PID
    of another host, container or boot (or of an older wm-jax, whose names carry no tag) cannot
    be checked here; two runs writing one output at once are not supported, so it is stale."""
    parts = suffix.split("-")
    if len(parts) != 3 or not parts[0].isdigit() or parts[1] != machine_tag():
        return False
    pid = int(parts[0])
    return pid == os.getpid() or pid_running(pid)


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


# ---------------------------------------------------------------------------------------------
# Where an output may go
# ---------------------------------------------------------------------------------------------
def check_output_location(path: str | os.PathLike, command: str | None = None) -> Path:
    """``path`` can be created: its first existing ancestor is a writable directory (os.access;
    nothing is created to find out, so a refused run leaves every mtime as it was), and no existing
    ancestor is the output directory of another command than ``command`` (module docstring). A
    file system that refuses a write all the same is an error when the output is first written."""
    path = Path(path)
    ancestor = path.parent if str(path.parent) else Path(".")
    while not ancestor.exists() and not ancestor.is_symlink():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise input_error(path, f"cannot be created: {ancestor} is a file, expected a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise input_error(path, f"cannot be created: directory {ancestor} is not writable")
    _check_not_inside_output(path, ancestor, command)
    return path


def _check_not_inside_output(path: Path, ancestor: Path, command: str | None) -> None:
    """No directory above ``path`` (from its first existing ancestor up) carries a marker: a file
    inside a cohort is the cohort's, even one its marker does not list. The exception is a run
    directory (WRITES_INSIDE) and the command that writes in it: the CLI's command (``wm-jax demo``
    runs its stages inside its run directory), or ``command`` in a library call."""
    writer = _context["command"] or command
    resolved = ancestor.resolve()
    for directory in (resolved, *resolved.parents):
        marker = read_marker(directory)
        if marker is not None and not (marker["command"] == writer and writer in WRITES_INSIDE):
            raise input_error(
                path,
                f"is inside {directory}, the output of wm-jax {marker['command']}; expected a path outside "
                "it (nothing is written into an output directory, with or without --overwrite)",
            )


def check_output_name(path: str | os.PathLike, what: str) -> None:
    """An output that is renamed into place needs a name: not '', '.', '..' or '/' (``what``: file
    or directory)."""
    if Path(path).name in ("", ".", "..") or not str(path).strip():
        raise InputError(f"--out: expected the path of a {what}, found {str(path)!r}")


def read_marker(directory: Path) -> dict | None:
    try:
        marker = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("command"), str) else None


def write_marker(directory: Path, command: str) -> None:
    entries = sorted(name for name in os.listdir(directory) if name != MARKER)
    record = {"command": command, "entries": entries, "written": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (directory / MARKER).write_text(json.dumps(record, indent=1) + "\n")


def _visible_entries(directory: Path) -> set[str]:
    return {name for name in os.listdir(directory) if name != MARKER and ".partial-" not in name}


def check_output_dir(
    path: str | os.PathLike, command: str, overwrite: bool = False, writes: Iterable[str] | None = None
) -> Path:
    """May ``command`` replace the directory ``path``? Raises InputError when it may not (module
    docstring). ``writes``: the entries this run writes (default: KNOWN_ENTRIES of the command)."""
    check_output_name(path, "directory")
    path = check_output_location(path, command)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise input_error(path, "exists and is not a directory; expected a directory (or a new path) for the output")
    if not path.exists():
        return path
    entries = _visible_entries(path)
    marker = read_marker(path)
    if not entries and marker is None:
        return path
    if marker is not None and marker["command"] == command:
        foreign = sorted(entries - set(marker.get("entries", [])))
        if foreign:
            raise input_error(
                path,
                f"holds {foreign[0]!r}, which wm-jax {command} did not write; it is never "
                "replaced (move that away or choose another --out)",
            )
        return path
    if marker is not None:
        raise input_error(
            path,
            f"holds the output of wm-jax {marker['command']}; expected a new or empty "
            f"directory, or one written by wm-jax {command}",
        )
    if not overwrite:
        raise input_error(
            path,
            f"exists, is not empty and was not written by wm-jax {command}; expected a new or "
            "empty directory (pass --overwrite to replace an older output of this command)",
        )
    allowed = set(writes if writes is not None else KNOWN_ENTRIES.get(command, ()))
    foreign = sorted(entries - allowed)
    if foreign:
        raise input_error(
            path,
            f"holds {foreign[0]!r}, which wm-jax {command} does not write; not replaced even "
            "with --overwrite (choose another --out)",
        )
    return path


def written_by(record: str | os.PathLike, command: str) -> bool:
    """Did ``command`` write the output whose JSON record (manifest) is ``record``? (``owned`` of
    `check_output_file` for a command whose outputs carry such a record.)"""
    try:
        return json.loads(Path(record).read_text()).get("command") == command
    except (OSError, ValueError, AttributeError):
        return False


def check_output_file(path: str | os.PathLike, command: str, overwrite: bool = False, owned: bool = False) -> Path:
    """May ``command`` write the file ``path``? A new path always; an existing file when ``owned``
    (written by an earlier run of the command, by its own record) or with ``--overwrite``."""
    check_output_name(path, "file")
    path = check_output_location(path, command)
    if path.is_dir():
        raise input_error(path, "is a directory; expected a file path for the output")
    if path.exists() and not owned and not overwrite:
        raise input_error(path, f"exists and was not written by wm-jax {command}; pass --overwrite to replace it")
    return path


# ---------------------------------------------------------------------------------------------
# Atomic writers
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only on success."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        raise input_error(path, "is a directory; expected a file path for the output")
    _make_parent(path)
    remove_stale_partials(path.parent, path.name)
    tmp = _temporary_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            _remove(tmp)


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise input_error(path, f"cannot be created ({err.strerror}); expected a writable directory")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False, command: str | None = None) -> Iterator[Path]:
    """Yield a temporary directory; it replaces ``path`` only when the block succeeds, and only
    what the output policy allows (module docstring). The directory gets the command's marker."""
    path = Path(path)
    command = current_command(command)
    check_output_dir(path, command, overwrite)
    _make_parent(path)
    remove_stale_partials(path.parent, path.name)
    tmp = _temporary_sibling(path)
    tmp.mkdir()
    try:
        yield tmp
        write_marker(tmp, command)
        _publish_dir(tmp, path, command, overwrite)
    finally:
        if tmp.exists():
            _remove(tmp)


def _publish_dir(tmp: Path, path: Path, command: str, overwrite: bool) -> None:
    """Rename ``tmp`` to ``path``; an existing ``path`` is checked again, then moved aside and removed."""
    if path.exists() or path.is_symlink():
        check_output_dir(path, command, overwrite, writes=_visible_entries(tmp) | KNOWN_ENTRIES.get(command, set()))
        old = _temporary_sibling(path)
        os.replace(path, old)
        os.replace(tmp, path)
        _remove(old)
    else:
        os.replace(tmp, path)


class AtomicFiles:
    """Collects several output files (and directories) and publishes them together.

    ``path(name)`` gives the temporary path to write; ``commit()`` renames all of them. Used by
    stages that write many files under one prefix (e.g. GWAS output), so that an error half-way
    leaves none of them. A directory output gets the command's marker and is published under the
    output policy (module docstring); ``replaces`` lists files of an earlier run to remove on commit.
    """

    def __init__(self, overwrite: bool = False, command: str | None = None) -> None:
        self._pending: dict[Path, Path] = {}
        self.overwrite = overwrite
        self.command = current_command(command)
        self.replaces: list[Path] = []

    def path(self, final: str | os.PathLike) -> Path:
        final = Path(final)
        _make_parent(final)
        remove_stale_partials(final.parent, final.name)
        tmp = _temporary_sibling(final)
        self._pending[final] = tmp
        return tmp

    def adopt(self, final: str | os.PathLike, directory: Path) -> Path:
        """Publish ``directory``, which this command made under a name of its own (a resumable GWAS
        store, `wm_jax.gwas.resume`), as ``final`` with the other outputs; like a `path`
        temporary it is removed if the run fails."""
        final = Path(final)
        _make_parent(final)
        remove_stale_partials(final.parent, final.name)
        self._pending[final] = directory
        return directory

    def commit(self) -> None:
        """Publish every file; a directory is checked against the output policy first (before any
        file is renamed), then replaced by moving the old one aside."""
        for final, tmp in self._pending.items():
            if tmp.is_dir():
                write_marker(tmp, self.command)
                if final.exists() or final.is_symlink():
                    check_output_dir(
                        final,
                        self.command,
                        self.overwrite,
                        writes=_visible_entries(tmp) | KNOWN_ENTRIES.get(self.command, set()),
                    )
            elif final.is_dir() and not final.is_symlink():
                raise input_error(final, "is a directory; expected a file path for the output")
        for final, tmp in self._pending.items():
            if tmp.is_dir() and (final.exists() or final.is_symlink()):
                old = _temporary_sibling(final)
                os.replace(final, old)
                os.replace(tmp, final)
                _remove(old)
            else:
                os.replace(tmp, final)
        published = set(self._pending)
        for stale in self.replaces:
            if stale not in published and (stale.is_file() or stale.is_symlink()):
                stale.unlink()
        self._pending.clear()

    def discard(self) -> None:
        for tmp in self._pending.values():
            if tmp.exists() or tmp.is_symlink():
                _remove(tmp)
        self._pending.clear()

    def __enter__(self) -> AtomicFiles:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()
