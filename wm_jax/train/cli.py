"""`wm-jax train` and `wm-jax embed` argument parsing."""

from __future__ import annotations


def register(sub) -> None:
    from wm_jax import options as o

    p = sub.add_parser("train", help="train the UDIP autoencoder (resumes from the workdir's latest checkpoint)")
    p.add_argument("--config", default="demo", help="configs/<name>.py or a config file; fields via --config.KEY=VALUE")
    p.add_argument("--workdir", required=True, help="checkpoints and metrics.jsonl go here")
    p.add_argument("--store", required=True, help="volume store from `wm-jax prepare`")
    p.set_defaults(run=run_train, accepts_overrides=True)

    p = sub.add_parser("embed", help="write the UDIP table of every subject in a store")
    p.add_argument("--workdir", required=True)
    p.add_argument("--store", required=True)
    p.add_argument("--out", required=True, help="UDIP table FID IID UDIP1.. (+ a .manifest.json beside it)")
    p.add_argument("--step", type=o.checkpoint_step, default="latest", help="checkpoint step, 'latest' or 'best'")
    p.add_argument(
        "--batch-size",
        type=o.integer(1),
        default=32,
        help="volumes per forward pass, rounded to the device count (lower it for full-size volumes)",
    )
    p.add_argument(
        "--rotation",
        choices=("none", "varimax"),
        default="none",
        help="none: the raw bottleneck (the paper's UDIPs); varimax: whitened and rotated so each UDIP "
        "moves a compact pattern (the map is kept in the manifest for `wm-jax interpret`)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out that embed did not write")
    p.set_defaults(run=run_embed, accepts_overrides=False)


def run_train(args, overrides) -> None:
    from wm_jax.config import TRAIN_RULES, apply_overrides, load_config, validate_config
    from wm_jax.errors import check_output_location, input_error
    from wm_jax.train.loop import train_and_evaluate

    config = apply_overrides(load_config(args.config), overrides)
    validate_config(config, TRAIN_RULES)
    workdir = check_output_location(args.workdir)
    if workdir.exists() and not workdir.is_dir():
        raise input_error(workdir, "exists and is not a directory; expected a training workdir")
    train_and_evaluate(config, args.workdir, args.store)


def run_embed(args, overrides) -> None:
    from wm_jax.embed import embed

    embed(
        args.workdir, args.store, args.out, args.step, args.batch_size, overwrite=args.overwrite, rotation=args.rotation
    )
