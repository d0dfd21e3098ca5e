"""`wm-jax demo`: the whole pipeline on a simulated cohort, resumable (`wm_jax.pipeline.run`)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("demo", help="simulate -> prepare -> train -> embed -> gwas -> report -> interpret, resumable")
    p.add_argument("--out", default="demo_run", help="run directory (manifest.json, summary.json, every stage's files)")
    p.add_argument(
        "--config", default="pipeline_demo", help="configs/<name>.py or a file; fields via --config.KEY=VALUE"
    )
    p.set_defaults(run=run, accepts_overrides=True)


def run(args, overrides) -> None:
    from wm_jax.config import DEMO_RULES, apply_overrides, load_config, validate_config
    from wm_jax.pipeline.run import demo
    from wm_jax.pipeline.stages import stage_options
    from wm_jax.pipeline.summary import print_summary
    from wm_jax.publish import run_directory

    config = apply_overrides(load_config(args.config), overrides)
    validate_config(config, DEMO_RULES)
    # A section key that names no option, or clump thresholds out of order: an error before the run
    # directory is claimed.
    stage_options(config)["report"].check_thresholds("--config.report.clump_")
    _claim_run_directory(args.out)
    with run_directory(args.out):  # the stages write inside it
        summary = demo(config, args.out)
    print(print_summary(summary))


def _claim_run_directory(out: str) -> None:
    """The demo writes into its run directory (resumable) and never replaces it whole: it takes a new
    or empty directory, or one of an earlier demo run (its marker, or its manifest.json)."""

    from wm_jax.errors import input_error
    from wm_jax.publish import MARKER, check_output_location, read_marker, write_marker

    path = check_output_location(out, "demo")
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
