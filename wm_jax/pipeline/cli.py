"""`wm-jax demo` and `wm-jax interpret` argument parsing."""

from __future__ import annotations

import json
import logging

log = logging.getLogger("wm_jax")


def register(sub) -> None:
    from wm_jax import options as o

    p = sub.add_parser("demo", help="simulate -> prepare -> train -> embed -> gwas -> report -> interpret, resumable")
    p.add_argument("--out", default="demo_run", help="run directory (manifest.json, summary.json, every stage's files)")
    p.add_argument(
        "--config", default="pipeline_demo", help="configs/<name>.py or a file; fields via --config.KEY=VALUE"
    )
    p.set_defaults(run=run_demo, accepts_overrides=True)

    p = sub.add_parser("interpret", help="PerDI: which white matter each UDIP moves (maps, montages, tract enrichment)")
    p.add_argument("--workdir", required=True, help="training workdir with checkpoints")
    p.add_argument("--udip", required=True, help="UDIP table from `wm-jax embed`")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--store", help="volume store (default: the one named in the UDIP table's manifest)")
    p.add_argument("--atlas", help="tract atlas NIfTI (default: atlas.nii.gz beside the store's subjects table)")
    p.add_argument("--labels", help="atlas labels TSV: label tract (default: atlas_labels.tsv beside it)")
    p.add_argument("--step", type=o.checkpoint_step, default="best", help="checkpoint step, 'latest' or 'best'")
    p.add_argument("--background", help="FA template (NIfTI, any grid) under the figures (default: the mean FA)")
    # The PerDI flags' defaults are PerdiOptions' (wm_jax/interpret.py).
    p.add_argument("--n-subjects", type=o.integer(3), help="subjects whose codes are perturbed, >= 3")
    p.add_argument(
        "--fwhm", dest="fwhm_mm", type=o.number(0, 100), help="Gaussian smoothing FWHM in mm, in [0, 100] (0: none)"
    )
    p.add_argument(
        "--top-fraction",
        type=o.number(0, 1, low_open=True),
        help="share of mask voxels tested for enrichment, in (0, 1]",
    )
    p.add_argument("--permutations", dest="n_permutations", type=o.integer(1))
    p.add_argument("--seed", type=o.integer(0, 2**32 - 1))
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an output directory without this command's marker that holds only PerDI files",
    )
    p.set_defaults(run=run_interpret, accepts_overrides=False)


def run_demo(args, overrides) -> None:
    from wm_jax.config import DEMO_RULES, apply_overrides, load_config, validate_config
    from wm_jax.pipeline.run import demo, print_summary, stage_options

    config = apply_overrides(load_config(args.config), overrides)
    validate_config(config, DEMO_RULES)
    stage_options(config)  # a section key that names no option: an error before the run directory is claimed
    _claim_run_directory(args.out)
    summary = demo(config, args.out)
    print(print_summary(summary))


def _claim_run_directory(out: str) -> None:
    """The demo writes into its run directory (resumable) and never replaces it whole: it takes a new
    or empty directory, or one of an earlier demo run (its marker, or its manifest.json)."""

    from wm_jax.errors import MARKER, check_output_location, input_error, read_marker, write_marker

    path = check_output_location(out)
    if path.exists() and not path.is_dir():
        raise input_error(path, "exists and is not a directory; expected a run directory")
    if path.is_dir() and any(path.iterdir()):
        marker = read_marker(path)
        if marker is not None and marker["command"] != "demo":
            raise input_error(
                path,
                f"holds the output of wm-jax {marker['command']}; expected a new or empty "
                "directory, or an earlier demo run",
            )
        if marker is None and not (path / "manifest.json").is_file():
            raise input_error(
                path,
                "exists, is not empty and is not a demo run directory (no manifest.json); "
                "expected a new or empty directory, or an earlier demo run",
            )
    path.mkdir(parents=True, exist_ok=True)
    if not (path / MARKER).exists():
        write_marker(path, "demo")


def run_interpret(args, overrides) -> None:
    from wm_jax.errors import check_output_dir
    from wm_jax.interpret import PerdiOptions, interpret
    from wm_jax.options import options_from_args

    check_output_dir(args.out, "interpret", args.overwrite)
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
