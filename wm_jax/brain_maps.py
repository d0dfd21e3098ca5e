"""PerDI maps drawn by nilearn: a stat map over the cohort's mean FA and a glass brain per UDIP.

The maps are NIfTI images on the store's grid with its affine, so nilearn places them in world
coordinates (the simulator's grid spans the MNI field of view); the slices cut through each map's
peak. Each title names the atlas tract the UDIP's top voxels enrich, and the colour bar is the
map's unit, the smoothed |t| of the decoder's paired change (`wm_jax.interpret`). The PNGs carry
the title and the drawing function in their metadata (PNG text chunks), for readers and tests.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

log = logging.getLogger("wm_jax")

UNITS = "|t| (paired t of the decoder's change, smoothed)"
SHOWN_QUANTILE = 0.9  # voxels above this quantile of the brain's map values are coloured
CMAP = "autumn"  # red at the threshold to yellow at the peak: saturated throughout, clear over grey


def mean_fa(store, n_subjects: int = 64) -> np.ndarray:
    """The mean FA of the store's first ``n_subjects`` on its grid, in FA units: each volume's
    z-score undone with the mean and SD its non-zero voxels had (index.tsv), zero voxels kept 0."""
    n = min(len(store), n_subjects)
    volumes = np.asarray(store.volumes[:n], np.float64)
    mean = store.index.nonzero_mean.to_numpy()[:n, None, None, None]
    sd = store.index.nonzero_sd.to_numpy()[:n, None, None, None]
    fa = np.where(volumes != 0, volumes * sd + mean, 0.0)
    return fa.mean(axis=0).astype(np.float32)


def image(volume: np.ndarray, affine: np.ndarray):
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(volume, np.float32), np.asarray(affine, np.float64))
    img.header.set_xyzt_units("mm")
    return img


def template_image(path):
    """A user's FA template as the background: an FA map as `wm-jax prepare` takes one (3D, real,
    finite, in [0, 1]; else an InputError naming the file), on any grid: nilearn resamples it."""
    import nibabel as nib

    from wm_jax.data.nifti import load_fa

    return image(load_fa(path), nib.load(str(path)).affine)


def peak_mm(volume: np.ndarray, affine: np.ndarray) -> tuple[float, float, float]:
    """World coordinates (mm) of the volume's maximum."""
    voxel = np.unravel_index(int(np.argmax(volume)), volume.shape)
    return tuple(float(c) for c in (np.asarray(affine) @ [*voxel, 1.0])[:3])


def perdi_figures(
    directory: Path,
    maps: np.ndarray,
    mask: np.ndarray,
    affine: np.ndarray,
    bg,
    titles: list[str],
    workers: int | None = None,
):
    """For each map ``maps[d]`` (on the grid of ``mask`` and ``affine``): ``UDIP{d+1}.png`` (stat map
    over the image ``bg`` through the peak) and ``UDIP{d+1}_glass.png`` (glass brain) in
    ``directory``, titled ``titles[d]``. Returns the paths written, in that order.

    Drawing is matplotlib's work on one core, about 0.8 s a UDIP at the demo's size, so with many
    UDIPs they are shared among ``workers`` Python processes (default: one per core this process
    may use, and at least ``UDIPS_PER_WORKER`` UDIPs each, since a worker takes ~2 s to import
    nilearn). Each figure is the same drawing by the same code, so the PNGs are the same bytes as
    drawn here (tests/test_interpret.py). A worker is a fresh interpreter (`python -c`), not a fork
    of this process, which runs JAX's threads, nor a `multiprocessing` spawn, which would rerun the
    caller's script."""
    from tqdm.auto import tqdm

    jobs = []
    for d in range(len(maps)):
        values = maps[d][mask]
        threshold = float(np.quantile(values, SHOWN_QUANTILE)) if values.size else 0.0
        top = float(values.max()) if values.size else 1.0
        jobs.append((Path(directory), d, np.asarray(maps[d]), affine, bg, titles[d], threshold, top))
    if workers is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        workers = min(cores, len(jobs) // UDIPS_PER_WORKER)
    workers = max(1, min(workers, len(jobs)))
    with tqdm(total=len(jobs), desc="brain maps", unit="UDIP", mininterval=1.0) as progress:
        if workers == 1:
            for job in jobs:
                _draw_udip(job)
                progress.update()
        else:
            _draw_in_workers([jobs[w::workers] for w in range(workers)], progress)
    return [Path(directory) / f"UDIP{d + 1}{kind}.png" for d in range(len(maps)) for kind in ("", "_glass")]


UDIPS_PER_WORKER = 8
_WORKER = "import sys; from wm_jax.brain_maps import _worker; _worker(sys.stdin.buffer, sys.stdout)"


def _draw_in_workers(shares: list[list], progress) -> None:
    """Each share of jobs drawn by its own worker process; a worker prints a line per UDIP drawn. A
    worker that fails fails the call, with its last lines of stderr. Its stderr goes to a file, so
    that neither side can block on a full pipe while the jobs are being written to its stdin."""
    # The worker imports what this process imports: its module search path, whatever set it.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    procs, readers, failed = [], [], []
    try:
        for share in shares:
            errors = tempfile.TemporaryFile()
            pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": errors}
            proc = subprocess.Popen([sys.executable, "-c", _WORKER], env=env, **pipes)
            procs.append((proc, errors))
            readers.append(threading.Thread(target=_count_lines, args=(proc.stdout, progress), daemon=True))
            readers[-1].start()
            try:
                proc.stdin.write(pickle.dumps(share))
                proc.stdin.close()
            except BrokenPipeError:  # the worker died first: its exit status and stderr say why
                pass
        for (proc, errors), reader in zip(procs, readers):
            if proc.wait() != 0:
                errors.seek(0)
                failed.append(" ".join(errors.read().decode(errors="replace").strip().splitlines()[-3:]))
            reader.join()
    finally:  # an interrupted call leaves no worker drawing
        for proc, errors in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            errors.close()
    if failed:
        raise RuntimeError(f"brain maps: a drawing worker failed: {' | '.join(failed)}")


def _count_lines(stream, progress) -> None:
    for _ in stream:
        progress.update()


def _worker(stdin, stdout) -> None:
    """A worker process: draw each job read (pickled) from ``stdin``, a line to ``stdout`` per UDIP."""
    for job in pickle.load(stdin):
        _draw_udip(job)
        print(job[1] + 1, file=stdout, flush=True)


def _draw_udip(job) -> None:
    """One UDIP's two figures."""
    import matplotlib

    matplotlib.use("Agg")
    directory, d, volume, affine, bg, title, threshold, top = job
    stat = image(volume, affine)
    stat_map_png(directory / f"UDIP{d + 1}.png", stat, bg, title, threshold, top, affine)
    glass_brain_png(directory / f"UDIP{d + 1}_glass.png", stat, title, threshold, top)


def stat_map_png(path: Path, stat, bg, title: str, threshold: float, top: float, affine) -> Path:
    """nilearn's `plot_stat_map`: three orthogonal slices through the peak over the mean FA."""
    from nilearn import plotting

    display = plotting.plot_stat_map(
        stat,
        bg_img=bg,
        cut_coords=peak_mm(np.asarray(stat.dataobj), affine),
        **_colour_scale(threshold, top),
        black_bg=True,
        dim=0,
        title=title,
        draw_cross=True,
        annotate=True,
    )
    return _save(display, path, title, "nilearn.plotting.plot_stat_map")


def glass_brain_png(path: Path, stat, title: str, threshold: float, top: float) -> Path:
    """nilearn's `plot_glass_brain`: the map's maximum projections in the MNI brain outline."""
    from nilearn import plotting

    display = plotting.plot_glass_brain(
        stat, **_colour_scale(threshold, top), plot_abs=True, display_mode="ortho", title=title
    )
    return _save(display, path, title, "nilearn.plotting.plot_glass_brain")


def _colour_scale(threshold: float, top: float) -> dict:
    """The colours both figures share: values from the threshold to the top, one-sided, with a bar."""
    return {
        "threshold": threshold,
        "vmin": threshold,
        "vmax": max(top, threshold + 1e-6),
        "cmap": CMAP,
        "symmetric_cbar": False,
        "colorbar": True,
    }


def _save(display, path: Path, title: str, drawn_by: str) -> Path:
    """The figure with the colour bar's unit written under it, and the title and drawing function
    as PNG metadata."""
    import matplotlib.pyplot as plt
    import nilearn

    figure = display.frame_axes.figure
    figure.text(0.995, 0.005, f"colour: {UNITS}", ha="right", va="bottom", fontsize=7, color="0.5")
    metadata = {"Title": title, "Software": f"nilearn {nilearn.__version__} ({drawn_by})", "Comment": UNITS}
    figure.savefig(path, dpi=90, metadata=metadata, facecolor=figure.get_facecolor())
    display.close()
    plt.close(figure)
    return path
