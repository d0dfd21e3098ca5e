"""`wm-jax interpret`: PerDI, which white matter each UDIP moves (`wm_jax.interpret`)."""

from __future__ import annotations

import json
import logging

from wm_jax.commands.flags import add_overwrite_flag, directory_overwrite_help

log = logging.getLogger("wm_jax")


def register(sub) -> None:
    from wm_jax import options as o
    from wm_jax.stage_options import PerdiOptions

    p = sub.add_parser("interpret", help="PerDI: which white matter each UDIP moves (maps, montages, tract enrichment)")
    p.add_argument("--workdir", required=True, help="training workdir with checkpoints")
    p.add_argument("--udip", required=True, help="UDIP table from `wm-jax embed`")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--store", help="volume store (default: the one named in the UDIP table's manifest)")
    p.add_argument("--atlas", help="tract atlas NIfTI (default: atlas.nii.gz beside the store's subjects table)")
    p.add_argument("--labels", help="atlas labels TSV: label tract (default: atlas_labels.tsv beside it)")
    p.add_argument("--step", type=o.checkpoint_step, default="best", help="checkpoint step, 'latest' or 'best'")
    p.add_argument("--background", help="FA template (NIfTI, any grid) under the figures (default: the mean FA)")
    # The PerDI flags' defaults and ranges are PerdiOptions' (wm_jax/stage_options.py).
    p.add_argument(
        "--n-subjects", type=o.flag_type(PerdiOptions, "n_subjects"), help="subjects whose codes are perturbed, >= 3"
    )
    p.add_argument(
        "--fwhm",
        dest="fwhm_mm",
        type=o.flag_type(PerdiOptions, "fwhm_mm"),
        help="Gaussian smoothing FWHM in mm, in [0, 100] (0: none)",
    )
    p.add_argument(
        "--top-fraction",
        type=o.flag_type(PerdiOptions, "top_fraction"),
        help="share of mask voxels tested for enrichment, in (0, 1]",
    )
    p.add_argument("--permutations", dest="n_permutations", type=o.flag_type(PerdiOptions, "n_permutations"))
    p.add_argument("--seed", type=o.flag_type(PerdiOptions, "seed"))
    add_overwrite_flag(p, directory_overwrite_help("PerDI"))
    p.set_defaults(run=run, accepts_overrides=False)


def run(args, overrides) -> None:
    from wm_jax.interpret.run import PERDI, interpret
    from wm_jax.options import options_from_args
    from wm_jax.publish import check_output_dir
    from wm_jax.stage_options import PerdiOptions

    check_output_dir(args.out, PERDI, args.overwrite)
    options = options_from_args(PerdiOptions, args)
    summary = interpret(
        args.workdir,
        args.udip,
        args.out,
        store=args.store,
        atlas=args.atlas,
        labels=args.labels,
        step=args.step,
        options=options,
        overwrite=args.overwrite,
        background=args.background,
    )
    log.info("top tract per UDIP: %s", json.dumps({k: v["tract"] for k, v in summary["top_tract"].items()}))
