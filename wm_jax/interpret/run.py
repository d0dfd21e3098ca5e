"""`wm-jax interpret`: PerDI maps, montages and tract enrichment for every UDIP of a checkpoint."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from wm_jax.interpret.inputs import PerdiInputs, read_inputs
from wm_jax.interpret.maths import perdi
from wm_jax.interpret.plots import titles
from wm_jax.publish import AtomicFiles, Output
from wm_jax.stage_options import PerdiOptions
from wm_jax.truth import pattern_overlap

log = logging.getLogger("wm_jax")

# What `wm-jax interpret` writes into its directory.
PERDI = Output(
    "interpret",
    "perdi_abs_t.nii.gz perdi_mean_change.nii.gz mean_fa.nii.gz enrichment.tsv montages interpret.json",
)


def interpret(
    workdir: str | os.PathLike,
    udip: str | os.PathLike,
    out: str | os.PathLike,
    store: str | None = None,
    atlas: str | None = None,
    labels: str | None = None,
    step: str | int | None = "best",
    options: PerdiOptions = PerdiOptions(),
    overwrite: bool = False,
    truth: str | None = None,
    loci: str | None = None,
    background: str | None = None,
) -> dict:
    """`wm-jax interpret`: PerDI maps, montages and tract enrichment for every UDIP of a checkpoint.

    With a simulator's ``truth`` and the UDIP report's ``loci``, also how well the PerDI map of each
    UDIP that found a planted locus matches that locus's pattern (`pattern_overlap`). ``background``:
    an FA template under the figures instead of the cohort's mean FA."""
    from wm_jax.brain_maps import template_image

    # Inputs: the UDIPs of subjects in the store, the checkpoint's decoder, the atlas on the store's grid.
    inputs = read_inputs(workdir, udip, store, atlas, labels, step, options.n_subjects)
    template = template_image(background) if background is not None else None

    # PerDI: paired t of the decoder's change per UDIP, smoothed, and the tracts its top voxels enrich.
    changes: list = []
    maps, enrichment = perdi(
        inputs.decoder, inputs.codes, inputs.mask, inputs.atlas, inputs.labels, inputs.voxel_mm, options, changes
    )

    # Summary: the top tract of each UDIP and, on a simulated cohort, the match with the planted patterns.
    summary = _summary(inputs, options, udip, enrichment, len(maps))
    if truth is not None and loci is not None:
        summary["pattern_overlap"] = pattern_overlap(changes[0], inputs.mask, truth, loci, inputs.volume_store)

    # Outputs: maps, montages, enrichment and summary, published together.
    _write_outputs(Path(out), overwrite, inputs, maps, changes[0], enrichment, summary, template)
    log.info("interpret: %d PerDI maps -> %s", len(maps), out)
    return summary


def _summary(inputs: PerdiInputs, options: PerdiOptions, udip, enrichment: pd.DataFrame, n_maps: int) -> dict:
    """interpret.json: what was read, with which options, and the top tract of each UDIP."""
    top = enrichment[enrichment["rank"] == 1]
    return {
        "checkpoint_step": inputs.checkpoint_step,
        "n_subjects": len(inputs.codes),
        "n_dimensions": int(n_maps),
        "options": asdict(options),
        "udip": str(Path(udip)),
        "store": str(inputs.store),
        "top_tract": {
            f"UDIP{int(r.dimension)}": {"tract": r.tract, "enrichment": float(r.enrichment), "p_perm": float(r.p_perm)}
            for r in top.itertuples()
        },
    }


def _write_outputs(
    out: Path,
    overwrite: bool,
    inputs: PerdiInputs,
    maps: np.ndarray,
    mean_change: np.ndarray,
    enrichment: pd.DataFrame,
    summary: dict,
    template=None,
) -> None:
    """perdi_abs_t.nii.gz, perdi_mean_change.nii.gz, mean_fa.nii.gz (the figures' background unless
    a ``template`` image is given), enrichment.tsv, montages/UDIPk.png and UDIPk_glass.png (nilearn:
    `wm_jax.brain_maps`) and interpret.json, written under a temporary name and published together."""
    from wm_jax.brain_maps import image, mean_fa, perdi_figures
    from wm_jax.data.nifti import save_nifti

    files = AtomicFiles(PERDI, overwrite=overwrite)
    try:
        directory = files.path(out)
        directory.mkdir(parents=True)
        save_nifti(directory / "perdi_abs_t.nii.gz", np.moveaxis(maps, 0, -1), inputs.affine)
        save_nifti(directory / "perdi_mean_change.nii.gz", np.moveaxis(mean_change, 0, -1), inputs.affine)
        enrichment.to_csv(directory / "enrichment.tsv", sep="\t", index=False, float_format="%.6g")
        background = mean_fa(inputs.volume_store)
        save_nifti(directory / "mean_fa.nii.gz", background, inputs.affine)
        (directory / "montages").mkdir()
        figure_titles = titles(enrichment, len(maps))
        bg = template if template is not None else image(background, inputs.affine)
        perdi_figures(directory / "montages", maps, inputs.mask, inputs.affine, bg, figure_titles)
        (directory / "interpret.json").write_text(json.dumps(summary, indent=2))
        files.commit()
    except BaseException:
        files.discard()
        raise
