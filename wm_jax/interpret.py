"""Perturbation-based decoder interpretation (PerDI): which white matter each UDIP moves.

For n subjects' codes z_i and each dimension d, the decoder's output is compared between z_i and
z_i + s_d e_d (s_d the standard deviation of UDIP d over the table): a voxel-wise paired t across
subjects, |t| inside the brain mask, Gaussian smoothing (FWHM 3 mm by default). Per dimension the
top 1% voxels are tested for enrichment in each atlas tract: enrichment = (share of the top voxels in
the tract) / (share of mask voxels in the tract), with a permutation p-value. Drawing random voxel
sets of the same size from the mask and counting those in the tract follows the hypergeometric
law exactly, so the permutations are drawn from it directly (same test, no voxel loop).

The decoder runs on the device in fixed-shape chunks of (dimensions x subjects); only per-voxel
sums and sums of squares come back to the host.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from wm_jax.errors import input_error, read_json
from wm_jax.publish import AtomicFiles, Output
from wm_jax.stage_options import PerdiOptions

log = logging.getLogger("wm_jax")

# What `wm-jax interpret` writes into its directory.
PERDI = Output(
    "interpret",
    "perdi_abs_t.nii.gz perdi_mean_change.nii.gz mean_fa.nii.gz enrichment.tsv montages interpret.json",
)

NO_TRACT = "its top voxels lie in no atlas tract"


def paired_t_maps(
    decode: Callable, codes: np.ndarray, step: np.ndarray, options: PerdiOptions = PerdiOptions()
) -> np.ndarray:
    """(D, X, Y, Z) paired t of decode(z + step_d e_d) - decode(z) over the subjects in ``codes`` (n, D).

    ``decode`` maps (m, D) codes to (m, X, Y, Z) volumes and must be traceable by jax."""
    return paired_difference_maps(decode, codes, step, options)[0]


def paired_difference_maps(
    decode: Callable, codes: np.ndarray, step: np.ndarray, options: PerdiOptions = PerdiOptions()
) -> tuple[np.ndarray, np.ndarray]:
    """The paired t maps of `paired_t_maps` and the mean change maps (D, X, Y, Z) they test. For a
    decoder that is close to linear the change is nearly the same in every subject, so t measures
    its small nonlinear spread; the mean change is what the UDIP moves."""
    import jax
    import jax.numpy as jnp

    n, n_dims = codes.shape
    if n < 3:
        raise ValueError("PerDI needs at least 3 subjects")
    kd, ks = min(options.dims_per_chunk, n_dims), min(options.subjects_per_chunk, n)

    @jax.jit
    def chunk_sums(z, dims, valid):
        # z (ks, D) codes, dims (kd,) dimension indices, valid (ks,) 1 for real subjects
        base = decode(z)
        shifted = z[None] + jax.nn.one_hot(dims, n_dims)[:, None, :] * jnp.asarray(step)[dims][:, None, None]
        moved = decode(shifted.reshape(-1, n_dims)).reshape(kd, ks, *base.shape[1:])
        diff = (moved - base[None]) * valid.reshape(1, ks, *([1] * (base.ndim - 1)))
        return diff.sum(axis=1), (diff * diff).sum(axis=1)

    dim_chunks = [np.arange(s, s + kd) % n_dims for s in range(0, n_dims, kd)]  # the last chunk wraps; trimmed below
    subject_chunks = [np.arange(s, min(s + ks, n)) for s in range(0, n, ks)]
    sums = {}
    with tqdm(total=len(dim_chunks) * len(subject_chunks), desc="perdi", unit="chunk", mininterval=1.0) as bar:
        for c, dims in enumerate(dim_chunks):
            for rows in subject_chunks:
                z = np.zeros((ks, n_dims), np.float32)
                z[: len(rows)] = codes[rows]
                valid = (np.arange(ks) < len(rows)).astype(np.float32)
                s1, s2 = chunk_sums(jnp.asarray(z), jnp.asarray(dims), jnp.asarray(valid))
                a, b = sums.get(c, (0.0, 0.0))
                sums[c] = (a + np.asarray(s1, np.float64), b + np.asarray(s2, np.float64))
                bar.update()
    total = np.concatenate([sums[c][0] for c in range(len(dim_chunks))])[:n_dims]
    total_sq = np.concatenate([sums[c][1] for c in range(len(dim_chunks))])[:n_dims]
    mean = total / n
    var = np.maximum(total_sq - n * mean**2, 0.0) / (n - 1)
    se = np.sqrt(var / n)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, mean / se, 0.0)
    return t, mean


def smooth(volume: np.ndarray, fwhm_mm: float, voxel_mm: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    sigma = fwhm_mm / np.sqrt(8 * np.log(2)) / np.asarray(voxel_mm, float)
    return ndimage.gaussian_filter(volume, sigma=sigma, mode="constant")


def tract_enrichment(
    score: np.ndarray,
    mask: np.ndarray,
    atlas: np.ndarray,
    labels: pd.DataFrame,
    top_fraction: float,
    n_permutations: int,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Rank the tracts by enrichment of the top voxels of ``score`` inside ``mask``."""
    values = score[mask]
    tract_of = atlas[mask]
    n_top = max(1, int(round(top_fraction * len(values))))
    top = np.argsort(-values, kind="stable")[:n_top]
    rows = []
    for label, tract in zip(labels.label, labels.tract):
        in_tract = int((tract_of == label).sum())
        hits = int((tract_of[top] == label).sum())
        expected = n_top * in_tract / len(values)
        null = (
            rng.hypergeometric(in_tract, len(values) - in_tract, n_top, size=n_permutations)
            if in_tract
            else np.zeros(1)
        )
        p = (1 + int((null >= hits).sum())) / (1 + len(null)) if in_tract else 1.0
        rows.append(
            {
                "tract": tract,
                "label": int(label),
                "n_voxels": in_tract,
                "n_top": hits,
                "enrichment": hits / expected if expected > 0 else np.nan,
                "p_perm": p,
            }
        )
    table = pd.DataFrame(rows).sort_values(["enrichment", "n_top"], ascending=False, kind="stable")
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table


def perdi(
    decode: Callable,
    codes: np.ndarray,
    mask: np.ndarray,
    atlas: np.ndarray,
    labels: pd.DataFrame,
    voxel_mm,
    options: PerdiOptions = PerdiOptions(),
    changes: list | None = None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Smoothed |t| maps (D, X, Y, Z) and the per-dimension tract enrichment table; the mean change
    maps are appended to ``changes`` when it is given."""
    step = codes.std(axis=0, ddof=1)
    t, mean = paired_difference_maps(decode, codes, step, options)
    if changes is not None:
        changes.append((mean * mask).astype(np.float32))
    rng = np.random.default_rng(options.seed)
    maps, tables = [], []
    for d in range(codes.shape[1]):
        m = smooth(np.abs(t[d]) * mask, options.fwhm_mm, voxel_mm) * mask
        maps.append(m.astype(np.float32))
        table = tract_enrichment(m, mask, atlas, labels, options.top_fraction, options.n_permutations, rng)
        tables.append(table.assign(dimension=d + 1))
    enrichment = pd.concat(tables)[["dimension", "rank", "tract", "label", "n_voxels", "n_top", "enrichment", "p_perm"]]
    return np.stack(maps), enrichment


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


@dataclass
class PerdiInputs:
    """What PerDI reads: the UDIPs of the subjects in the store, the decoder as a function of them,
    and the brain mask and atlas on the store's grid."""

    codes: np.ndarray  # (subjects, UDIPs) float32
    decoder: Callable
    checkpoint_step: int
    store: str
    volume_store: Any  # wm_jax.data.store.VolumeStore
    mask: np.ndarray  # (X, Y, Z) bool
    atlas: np.ndarray  # (X, Y, Z) labels
    labels: pd.DataFrame
    affine: np.ndarray
    voxel_mm: np.ndarray


def read_inputs(
    workdir: str | os.PathLike,
    udip: str | os.PathLike,
    store: str | None,
    atlas: str | None,
    labels: str | None,
    step: str | int | None,
    n_subjects: int,
) -> PerdiInputs:
    """The UDIP table (and the store its manifest names), the checkpoint's model, the codes of the
    first ``n_subjects`` rows in the store, and the atlas (by default beside the store's subjects)."""
    from wm_jax.data.store import check_same_store
    from wm_jax.data.tables import read_labels, read_table
    from wm_jax.roi import atlas_on_store_grid
    from wm_jax.train.state import load_model, open_store

    udip = Path(udip)
    table = read_table(udip)
    manifest_path = udip.with_suffix(udip.suffix + ".manifest.json")
    manifest = None
    if manifest_path.exists():
        manifest = read_json(manifest_path, "the manifest of a `wm-jax embed` table, naming its store", "store")
    elif store is None:
        raise input_error(udip, f"no --store given and no manifest {manifest_path.name} naming the store")
    columns = [c for c in table.columns if c.startswith("UDIP")]
    if not columns:
        raise input_error(udip, "expected columns UDIP1..UDIPk")
    model, config, record, chosen = load_model(workdir, step)
    if len(columns) != model.config.latent_dim:
        raise input_error(udip, f"{len(columns)} UDIP columns but the checkpoint's model has {model.config.latent_dim}")
    volume_store = open_store(store or manifest["store"], model.config)
    if store is not None and manifest is not None:
        check_same_store(volume_store, str(manifest["store"]), manifest.get("store_fingerprint"), f"{manifest_path}")
    store = store or manifest["store"]
    codes = _complete_codes(udip, table, columns, volume_store)[:n_subjects].astype(np.float32)
    log.info("interpret: PerDI over the first %d", len(codes))
    cohort_dir = Path(volume_store.record.get("subjects_table", ".")).parent  # the simulator writes the atlas there
    atlas = atlas or str(cohort_dir / "atlas.nii.gz")
    labels = labels or str(cohort_dir / "atlas_labels.tsv")
    for path in (atlas, labels):
        if not Path(path).exists():
            raise input_error(path, "atlas file not found (pass --atlas and --labels)")
    atlas_grid, label_table = atlas_on_store_grid(volume_store, atlas), read_labels(labels)
    affine = np.asarray(volume_store.grid.affine)
    return PerdiInputs(
        codes=codes,
        decoder=_udip_decoder(model, manifest_path),
        checkpoint_step=chosen,
        store=store,
        volume_store=volume_store,
        mask=np.asarray(volume_store.mask, bool),
        atlas=atlas_grid,
        labels=label_table,
        affine=affine,
        voxel_mm=np.sqrt((affine[:3, :3] ** 2).sum(axis=0)),
    )


def _complete_codes(udip: Path, table, columns: list[str], volume_store) -> np.ndarray:
    """The UDIPs of the table's subjects that are in the store, less those with a missing value (PerDI
    decodes each subject's whole code, so a subject missing one UDIP is left out, counted per UDIP in
    the log); fewer than 3 subjects left is an error."""
    present = np.isin(table.iid.astype(str), volume_store.index.IID.astype(str).to_numpy())
    if not present.any():
        raise input_error(udip, f"none of its {len(present)} subjects is in the store {volume_store.path}")
    values = table.values[present][:, [table.columns.index(c) for c in columns]]
    missing = np.isnan(values)
    complete = ~missing.any(axis=1)
    log.info("interpret: %d of %d UDIP rows are in the store", int(present.sum()), len(present))
    if not complete.all():
        per_udip = ", ".join(f"{c}: {int(k)}" for c, k in zip(columns, missing.sum(axis=0)) if k)
        log.info("interpret: %d of them left out for a missing UDIP value (%s)", int((~complete).sum()), per_udip)
    if complete.sum() < 3:
        raise input_error(
            udip,
            f"{int(complete.sum())} subjects in the store have a value for every UDIP; expected at least 3 "
            "(a subject with a missing value is left out)",
        )
    return values[complete]


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
        titles = _titles(enrichment, len(maps))
        bg = template if template is not None else image(background, inputs.affine)
        perdi_figures(directory / "montages", maps, inputs.mask, inputs.affine, bg, titles)
        (directory / "interpret.json").write_text(json.dumps(summary, indent=2))
        files.commit()
    except BaseException:
        files.discard()
        raise


def _titles(enrichment: pd.DataFrame, n_maps: int) -> list[str]:
    """Each UDIP's figure title: the atlas tract its top voxels enrich most, with the enrichment; or,
    when none of its top voxels lies in a tract (every enrichment 0), that, naming no tract."""
    titles = []
    for d in range(n_maps):
        best = enrichment[(enrichment.dimension == d + 1) & (enrichment["rank"] == 1)].iloc[0]
        if best.n_top == 0:
            titles.append(f"UDIP{d + 1}: {NO_TRACT}")
        else:
            titles.append(
                f"UDIP{d + 1}: top tract {best.tract} (enrichment x{best.enrichment:.1f}, p={best.p_perm:.2g})"
            )
    return titles


def _udip_decoder(model, manifest_path: Path) -> Callable:
    """The decoder as a function of the UDIPs: through the manifest's latent map when `embed`
    rotated the codes, the model's decoder itself otherwise."""
    import jax.numpy as jnp

    from wm_jax.rotation import LatentMap

    record = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    if not record.get("latent_map"):
        return model.decode
    latent_map = LatentMap.from_json(record["latent_map"])
    mean, inverse = jnp.asarray(latent_map.mean, jnp.float32), jnp.asarray(latent_map.inverse, jnp.float32)
    return lambda udips: model.decode(mean + udips @ inverse)


def pattern_overlap(
    changes: np.ndarray,
    mask: np.ndarray,
    truth: str | os.PathLike,
    loci: str | os.PathLike,
    store,
    kb: float | None = None,
) -> list[dict]:
    """For each planted locus that a UDIP found (inside a locus span widened by kb, as the report
    scores it; by default the report's default window): the correlation, over the brain mask, of the
    |mean change| PerDI finds for that UDIP with the locus's |pattern|, and that correlation's rank
    among all UDIPs' maps."""
    from wm_jax.reporting.stats import OMNIBUS, ClumpOptions
    from wm_jax.roi import patterns_on_store_grid

    kb = ClumpOptions().kb if kb is None else kb

    truth_table = pd.read_csv(truth, sep="\t", dtype={"chrom": str})
    loci_table = pd.read_csv(loci, sep="\t", dtype={"chrom": str})
    patterns = patterns_on_store_grid(store, Path(truth).with_name("patterns.nii.gz"))
    flat_maps = np.abs(changes[:, mask])
    flat_maps = (flat_maps - flat_maps.mean(axis=1, keepdims=True)) / np.maximum(
        flat_maps.std(axis=1, keepdims=True), 1e-12
    )
    rows = []
    for k, planted in enumerate(truth_table.itertuples()):
        hits = loci_table[
            (loci_table.chrom == str(planted.chrom))
            & (loci_table.start - kb * 1000 <= planted.pos)
            & (loci_table.end + kb * 1000 >= planted.pos)
        ]
        udips = sorted(
            {name for names in hits.phenotypes for name in str(names).split(",") if name != OMNIBUS},
            key=lambda name: int(name[4:]) if name[4:].isdigit() else 0,
        )
        if not udips:
            continue
        pattern = np.abs(patterns[k][mask])
        pattern = (pattern - pattern.mean()) / max(pattern.std(), 1e-12)
        correlation = flat_maps @ pattern / pattern.size  # one value per UDIP
        order = np.argsort(-correlation)
        for name in udips:
            d = int(name[4:]) - 1
            rows.append(
                {
                    "variant": planted.variant,
                    "kind": planted.kind,
                    "udip": name,
                    "correlation": round(float(correlation[d]), 4),
                    "rank_among_udips": int(np.flatnonzero(order == d)[0]) + 1,
                    "best_udip": f"UDIP{order[0] + 1}",
                    "best_correlation": round(float(correlation[order[0]]), 4),
                }
            )
    return rows
