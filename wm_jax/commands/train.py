"""`wm-jax train`: the UDIP autoencoder, trained (or resumed) in a workdir (`wm_jax.train.loop`)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("train", help="train the UDIP autoencoder (resumes from the workdir's latest checkpoint)")
    p.add_argument("--config", default="demo", help="configs/<name>.py or a config file; fields via --config.KEY=VALUE")
    p.add_argument("--workdir", required=True, help="checkpoints and metrics.jsonl go here")
    p.add_argument("--store", required=True, help="volume store from `wm-jax prepare`")
    p.set_defaults(run=run, accepts_overrides=True)


def run(args, overrides) -> None:
    from wm_jax.config import TRAIN_RULES, apply_overrides, load_config, validate_config
    from wm_jax.errors import input_error
    from wm_jax.publish import check_output_location
    from wm_jax.train.loop import train_and_evaluate

    config = apply_overrides(load_config(args.config), overrides)
    validate_config(config, TRAIN_RULES)
    workdir = check_output_location(args.workdir)
    if workdir.exists() and not workdir.is_dir():
        raise input_error(workdir, "exists and is not a directory; expected a training workdir")
    train_and_evaluate(config, args.workdir, args.store)
