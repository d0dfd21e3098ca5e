"""The volume store: all subjects' preprocessed FA maps in one memory-mapped array.

Layout of a store directory:
  volumes.npy   (N, X, Y, Z) float32 (or float16), per-image z-scored over its non-zero voxels; or,
                with --layout zarr, volumes.zarr: the same array in zarr v3 (tensorstore), one
                zstd-compressed chunk per subject, so that a host reads only the subjects it trains on
  mask.npy      (X, Y, Z) bool, the brain mask (voxels non-zero in >= mask_fraction of subjects)
  index.tsv     row FID IID fa_path nonzero_mean nonzero_sd
  store.json    format version, grid (shape, affine after crop/downsample), preprocessing
`np.load(..., mmap_mode="r")` streams rows without reading the whole array. The store is written
through a file, not a memory map: a full disk is then an error (ENOSPC), not a SIGBUS, and the
free space is checked against the store's size before the first map is read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from wm_jax.data.nifti import Grid, load_fa, read_grid
from wm_jax.data.tables import read_table
from wm_jax.errors import InputError, input_error, require_file
from wm_jax.publish import Output, atomic_dir
from wm_jax.stage_options import Preprocessing

log = logging.getLogger("wm_jax")

# What `wm-jax prepare` writes into its store directory.
STORE = Output("prepare", "volumes.npy volumes.zarr mask.npy index.tsv store.json")

STORE_FORMAT_VERSION = 1


def zscore_nonzero(volume: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The paper's normalisation: z-score over the non-zero voxels; zero voxels stay 0."""
    nonzero = volume != 0
    values = volume[nonzero].astype(np.float64)
    mean, sd = float(values.mean()), float(values.std())
    out = np.zeros_like(volume, dtype=np.float32)
    out[nonzero] = ((values - mean) / max(sd, 1e-12)).astype(np.float32)
    return out, mean, sd


def output_grid(grid: Grid, prep: Preprocessing) -> Grid:
    affine = np.array(grid.affine, np.float64)
    shape = np.array(grid.shape)
    if prep.crop is not None:
        starts = np.array([c[0] for c in prep.crop])
        shape = np.array([c[1] - c[0] for c in prep.crop])
        affine[:3, 3] = affine[:3, :3] @ starts + affine[:3, 3]
    factor = prep.downsample
    shape = shape // factor
    scaled = affine.copy()
    scaled[:3, :3] = affine[:3, :3] * factor
    scaled[:3, 3] = affine[:3, :3] @ np.full(3, (factor - 1) / 2) + affine[:3, 3]
    return Grid(tuple(int(s) for s in shape), scaled)


def apply_geometry(volume: np.ndarray, prep: Preprocessing) -> np.ndarray:
    if prep.crop is not None:
        volume = volume[tuple(slice(a, b) for a, b in prep.crop)]
    f = prep.downsample
    if f > 1:
        x, y, z = (s // f for s in volume.shape)
        volume = volume[: x * f, : y * f, : z * f].reshape(x, f, y, f, z, f).mean(axis=(1, 3, 5))
    return volume


def read_subjects(path: str | os.PathLike) -> pd.DataFrame:
    """subjects.tsv: FID IID fa_path ...; relative paths are taken from the table's folder."""
    table = read_table(
        path,
        text_columns=("fa_path", "site", "sex", "age"),
        required=(("fa_path", "the path of each subject's FA map"),),
    )
    base = table.path.parent
    paths = [str(p if os.path.isabs(p) else base / p) for p in table.text["fa_path"]]
    fid = table.fid if table.fid is not None else table.iid
    return pd.DataFrame({"FID": fid, "IID": table.iid, "fa_path": paths})


def _checked_target_grid(subjects_path, grid: Grid, prep: Preprocessing) -> Grid:
    """The store's grid after --crop and --downsample; options that do not fit the grid are errors."""
    if prep.crop is not None and (
        len(prep.crop) != 3 or any(not 0 <= a < b <= s for (a, b), s in zip(prep.crop, grid.shape))
    ):
        raise input_error(subjects_path, f"crop {prep.crop} does not fit the grid {grid.shape}")
    target = output_grid(grid, prep)
    if min(target.shape) < 1:
        raise input_error(
            subjects_path,
            f"--downsample {prep.downsample} leaves no voxel of the grid "
            f"{grid.shape}{' after --crop' if prep.crop else ''}; expected a smaller factor",
        )
    if not 0 < prep.mask_fraction <= 1:
        raise InputError(f"--mask-fraction: expected a number in (0, 1], found {prep.mask_fraction}")
    return target


def free_bytes(directory: str | os.PathLike) -> int:
    """Bytes this process can still write on the file system holding ``directory``."""
    stats = os.statvfs(directory)
    return (stats.f_bfree if os.geteuid() == 0 else stats.f_bavail) * stats.f_frsize


def store_bytes(n_subjects: int, target: Grid, prep: Preprocessing) -> int:
    """The size of a store: its volumes, the mask, and 1 MiB for headers and tables."""
    voxels = int(np.prod(target.shape))
    return n_subjects * voxels * np.dtype(prep.dtype).itemsize + voxels + 2**20


@contextlib.contextmanager
def _writing(out: str | os.PathLike):
    """A write that fails (a full disk, a quota) is an error naming the output."""
    try:
        yield
    except OSError as err:
        raise input_error(
            out, f"could not be written ({err.strerror or err}); nothing was kept (expected room on its file system)"
        ) from None


def _check_free_space(tmp: Path, out: str | os.PathLike, needed: int) -> None:
    free = free_bytes(tmp)
    if free < needed:
        raise input_error(
            out,
            f"the store needs {needed / 2**20:.1f} MiB and its file system has {free / 2**20:.1f} MiB free; "
            "expected room for it",
        )


def _write_volumes(
    write, out, subjects: pd.DataFrame, grid: Grid, prep: Preprocessing, first_row: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every subject's normalised map on the target grid, handed to ``write(row, volume)`` (rows
    from ``first_row``, in order); returns each map's non-zero mean and SD, and per voxel the number
    of subjects in which it is non-zero."""
    n = len(subjects)
    dtype = np.dtype(prep.dtype)
    nonzero_count = None
    means, sds = np.zeros(n), np.zeros(n)
    conversions: dict[str, int] = {}
    with _writing(out):
        for i, path in enumerate(tqdm(subjects["fa_path"], desc="prepare", unit="vol", mininterval=1.0)):
            fa = load_fa(path, grid, conversions)
            normalised, means[i], sds[i] = zscore_nonzero(fa)
            normalised = apply_geometry(normalised, prep)
            write(first_row + i, np.ascontiguousarray(normalised, dtype=dtype))
            if nonzero_count is None:
                nonzero_count = np.zeros(normalised.shape, np.int32)  # C order, whatever the map's
            nonzero_count += normalised != 0
    for conversion, count in conversions.items():
        log.info("prepare: %d of %d FA maps stored as %s", count, n, conversion)
    return means, sds, nonzero_count


@contextlib.contextmanager
def _volume_writer(tmp: Path, layout: str, shape: tuple[int, ...], dtype: np.dtype):
    """``write(i, volume)`` for subjects in order: rows of volumes.npy, or chunks of volumes.zarr."""
    if layout == "zarr":
        array = zarr_volumes(tmp / "volumes.zarr", shape, dtype)
        yield lambda i, volume: array[i].write(volume).result()
        return
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    with open(tmp / "volumes.npy", "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        yield lambda i, volume: handle.write(volume.tobytes())


def zarr_volumes(path: Path, shape: tuple[int, ...] | None = None, dtype: np.dtype | None = None):
    """A tensorstore zarr v3 array at ``path``: created with ``shape`` and ``dtype`` (one chunk per
    subject, zstd level 3), or opened as it is (``shape`` None)."""
    import tensorstore as ts

    spec: dict = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}}
    if shape is not None:
        spec["create"] = True
        spec["metadata"] = {
            "shape": list(shape),
            "data_type": np.dtype(dtype).name,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1, *shape[1:]]}},
            "codecs": [
                {"name": "bytes", "configuration": {"endian": "little"}},
                {"name": "zstd", "configuration": {"level": 3}},
            ],
        }
    return ts.open(spec).result()


class ZarrVolumes:
    """The volumes of a zarr store, indexed like the memory map of volumes.npy: a row, a slice or an
    array of rows reads only those subjects' chunks (into a NumPy array)."""

    def __init__(self, array) -> None:
        self._array = array
        self.shape = tuple(int(n) for n in array.shape)
        self.dtype = np.dtype(array.dtype.numpy_dtype)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        n = self.shape[0]
        if isinstance(key, slice):  # clipped to the rows, as NumPy does (tensorstore refuses bounds past them)
            return self._array[slice(*key.indices(n))].read().result()
        if isinstance(key, (int, np.integer)):
            if not -n <= key < n:
                raise IndexError(f"row {key} of {n}")
            return self._array[int(key) % n].read().result()
        rows = np.asarray(key)
        rows = np.flatnonzero(rows) if rows.dtype == bool else rows.astype(np.int64)
        if len(rows) and (rows.min() < -n or rows.max() >= n):
            raise IndexError(f"rows {rows.min()}..{rows.max()} of {n}")
        rows = np.where(rows < 0, rows + n, rows)
        if len(rows) == 0:
            return np.zeros((0, *self.shape[1:]), self.dtype)
        return self._array.oindex[rows].read().result()


def _open_zarr_volumes(path: Path) -> ZarrVolumes:
    """volumes.zarr, with a chunk for every subject: a missing chunk would read as zeros, silently."""
    volumes = ZarrVolumes(zarr_volumes(path))
    chunks = path / "c"
    present = {entry.name for entry in os.scandir(chunks)} if chunks.is_dir() else set()
    missing = [i for i in range(len(volumes)) if str(i) not in present]
    if missing:
        raise ValueError(f"{len(missing)} of {len(volumes)} subjects have no chunk (first: row {missing[0]})")
    return volumes


def prepare_store(
    subjects_path: str | os.PathLike,
    out: str | os.PathLike,
    prep: Preprocessing = Preprocessing(),
    overwrite: bool = False,
) -> Path:
    """Validate, normalise and pack every subject's FA map into a store (all or nothing). Under a
    launcher (several processes), each process writes a contiguous share of the subjects into
    volumes.zarr, and process 0 writes the rest and publishes the store."""
    subjects = read_subjects(subjects_path)
    if len(subjects) == 0:
        raise input_error(subjects_path, "lists no subjects")
    for p in subjects["fa_path"]:
        require_file(p, "FA map listed in " + str(subjects_path))
    grid = read_grid(subjects["fa_path"].iloc[0])
    target = _checked_target_grid(subjects_path, grid, prep)
    n = len(subjects)
    shape, dtype = (n, *target.shape), np.dtype(prep.dtype)
    if _process_count() > 1:
        return _prepare_across_processes(subjects, subjects_path, out, prep, overwrite, grid, target)
    with atomic_dir(out, STORE, overwrite=overwrite) as tmp:
        _check_free_space(tmp, out, store_bytes(n, target, prep))
        with _writing(out), _volume_writer(tmp, prep.layout, shape, dtype) as write:
            means, sds, nonzero_count = _write_volumes(write, out, subjects, grid, prep)
        _finish_store(tmp, out, subjects, subjects_path, grid, target, prep, means, sds, nonzero_count)
    return Path(out)


def _process_count() -> int:
    """The number of processes: 1 unless a launcher started several (JAX is then imported already)."""
    import sys

    if "jax" not in sys.modules:
        return 1
    import jax

    return jax.process_count()


def _prepare_across_processes(subjects, subjects_path, out, prep, overwrite, grid, target) -> Path:
    """`prepare_store` on several processes: process 0 claims the temporary store and creates
    volumes.zarr; each process writes the chunks of its share of the subjects; their statistics
    are gathered, and process 0 writes the mask, index and record and publishes. A bad input met by
    any process fails every process (the one that met it names it)."""
    from wm_jax import sharding

    if prep.layout != "zarr":
        raise InputError("--layout: expected zarr when prepare runs across processes (each writes its own chunks)")
    n, main = len(subjects), sharding.is_main_process()
    share = sharding.this_process_share(n)
    with atomic_dir(out, STORE, overwrite=overwrite) if main else contextlib.nullcontext() as tmp:
        if main:
            _check_free_space(tmp, out, store_bytes(n, target, prep))
            with _writing(out):
                zarr_volumes(tmp / "volumes.zarr", (n, *target.shape), np.dtype(prep.dtype))
        shared = Path(sharding.broadcast_text(str(tmp) if main else ""))  # after process 0 created the array
        array = zarr_volumes(shared / "volumes.zarr")
        error = None
        try:
            write = lambda row, volume: array[row].write(volume).result()  # noqa: E731
            means, sds, counts = _write_volumes(write, out, subjects.iloc[share], grid, prep, share.start)
        except InputError as err:
            error, means, sds, counts = err, np.zeros(0), np.zeros(0), None
        if sharding.any_process(error is not None):
            raise error or InputError(f"{subjects_path}: another process met a bad FA map (its error names it)")
        counts = np.zeros(target.shape, np.int32) if counts is None else counts
        means, sds = sharding.gather_parts(means), sharding.gather_parts(sds)
        nonzero_count = sharding.gather_parts(counts[None]).sum(axis=0, dtype=np.int32)
        if main:
            _finish_store(tmp, out, subjects, subjects_path, grid, target, prep, means, sds, nonzero_count)
    return Path(out)


def _finish_store(tmp, out, subjects, subjects_path, grid, target, prep, means, sds, nonzero_count) -> None:
    """mask.npy, index.tsv and store.json beside the volumes (an empty brain mask is an error)."""
    n = len(subjects)
    mask = nonzero_count >= prep.mask_fraction * n
    if not mask.any():
        raise input_error(
            subjects_path,
            f"no voxel is non-zero in {prep.mask_fraction:g} of the subjects: "
            "the brain mask would be empty (expected a lower --mask-fraction)",
        )
    index = subjects.assign(row=np.arange(n), nonzero_mean=means, nonzero_sd=sds)
    record = {
        "format_version": STORE_FORMAT_VERSION,
        "n_subjects": n,
        "grid": target.to_json(),
        "source_grid": grid.to_json(),
        "preprocessing": {
            "crop": prep.crop,
            "downsample": prep.downsample,
            "mask_fraction": prep.mask_fraction,
            "dtype": prep.dtype,
            "layout": prep.layout,
            "normalisation": "z-score over non-zero voxels per image",
        },
        "mask_voxels": int(mask.sum()),
        "subjects_table": str(Path(subjects_path).resolve()),
    }
    with _writing(out):
        np.save(tmp / "mask.npy", mask)
        index[["row", "FID", "IID", "fa_path", "nonzero_mean", "nonzero_sd"]].to_csv(
            tmp / "index.tsv", sep="\t", index=False
        )
        (tmp / "store.json").write_text(json.dumps(record, indent=2))
    log.info("prepare: %d subjects -> %s (grid %s, %d mask voxels)", n, out, target.shape, int(mask.sum()))


@dataclass
class VolumeStore:
    """Read side of a store."""

    path: Path
    volumes: np.ndarray | ZarrVolumes  # (N, X, Y, Z): a memory map of volumes.npy, or volumes.zarr
    mask: np.ndarray
    index: pd.DataFrame
    record: dict

    @classmethod
    def open(cls, path: str | os.PathLike) -> VolumeStore:
        path = Path(path)
        record_path = path / "store.json"
        if not record_path.is_file():
            raise input_error(path, "not a volume store (no store.json; build one with `wm-jax prepare`)")
        try:
            record = json.loads(record_path.read_text())
            if (path / "volumes.zarr").is_dir():
                volumes = _open_zarr_volumes(path / "volumes.zarr")
            else:
                volumes = np.load(path / "volumes.npy", mmap_mode="r")
            mask = np.load(path / "mask.npy")
            index = pd.read_csv(path / "index.tsv", sep="\t", dtype={"FID": str, "IID": str})
        except (OSError, ValueError, EOFError, UnicodeDecodeError, pd.errors.ParserError) as err:
            raise input_error(
                path,
                f"volume store is incomplete or corrupt ({type(err).__name__}: {err}); "
                "expected the output of `wm-jax prepare`",
            )
        if not isinstance(record, dict) or not isinstance(record.get("grid"), dict):
            raise input_error(record_path, "expected the JSON record of a volume store (with its grid)")
        if record.get("format_version") != STORE_FORMAT_VERSION:
            raise input_error(
                record_path, f"store format {record.get('format_version')}, expected {STORE_FORMAT_VERSION}"
            )
        if volumes.shape[0] == 0:
            raise input_error(path, "volume store holds no subjects")
        if (
            volumes.ndim != 4
            or volumes.shape[0] != len(index)
            or volumes.shape[1:] != mask.shape
            or not {"FID", "IID"} <= set(index.columns)
            or mask.dtype != bool
        ):
            raise input_error(path, "volume store is inconsistent (volumes, mask and index disagree)")
        return cls(path, volumes, mask, index, record)

    @property
    def grid(self) -> Grid:
        return Grid.from_json(self.record["grid"])

    def __len__(self) -> int:
        return self.volumes.shape[0]


def store_fingerprint(store: VolumeStore) -> str:
    """What a store holds, not where: its subjects (FID, IID), each map's non-zero mean and SD, the
    grid and the preprocessing. A copied or moved store keeps it; another cohort's store (the same
    subject IDs, as simulated cohorts have, but other maps) does not."""
    settings = {k: store.record.get(k) for k in ("grid", "preprocessing", "n_subjects")}
    if isinstance(settings["preprocessing"], dict):  # the layout is how, not what: npy and zarr stores are one
        settings["preprocessing"] = {k: v for k, v in settings["preprocessing"].items() if k != "layout"}
    settings = json.dumps(settings, sort_keys=True)
    columns = [c for c in ("FID", "IID", "nonzero_mean", "nonzero_sd") if c in store.index]
    subjects = store.index[columns].to_csv(sep="\t", index=False)
    return hashlib.sha256((settings + subjects).encode()).hexdigest()[:16]


def check_same_store(given: VolumeStore, recorded: str, fingerprint: str | None, where: str) -> None:
    """``given`` is the store that ``where`` (a workdir, a UDIP table) records as its own: the same
    fingerprint, or, for records without one, the same path or a store there with the same content
    (a recorded store that no longer exists cannot be compared and is not an error)."""
    ours = store_fingerprint(given)
    if fingerprint is None:
        if not recorded or not (Path(recorded) / "store.json").is_file():
            return
        if Path(recorded).resolve() == given.path.resolve():
            return
        try:
            fingerprint = store_fingerprint(VolumeStore.open(recorded))
        except InputError:
            return
    if fingerprint != ours:
        raise input_error(
            given.path,
            f"another store than {recorded}, the one {where} records (its subjects or maps differ); "
            "expected that store",
        )
