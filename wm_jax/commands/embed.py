"""`wm-jax embed`: the UDIP table of every subject of a store (`wm_jax.embed`)."""

from __future__ import annotations

from wm_jax.commands.flags import add_overwrite_flag


def register(sub) -> None:
    from wm_jax import options as o
    from wm_jax.stage_options import ROTATIONS

    p = sub.add_parser("embed", help="write the UDIP table of every subject in a store")
    p.add_argument("--workdir", required=True)
    p.add_argument("--store", required=True)
    p.add_argument("--out", required=True, help="UDIP table FID IID UDIP1.. (+ a .manifest.json beside it)")
    p.add_argument("--step", type=o.checkpoint_step, default="latest", help="checkpoint step, 'latest' or 'best'")
    p.add_argument(
        "--batch-size",
        type=o.integer(1),
        default=8,
        help="volumes per forward pass, rounded to the device count (8 embeds demo-size volumes fastest on "
        "a 2-core CPU: benchmarks/results/embed_speed.md)",
    )
    p.add_argument(
        "--rotation",
        choices=ROTATIONS,
        default="none",
        help="none: the raw bottleneck (the paper's UDIPs); varimax: whitened and rotated so each UDIP "
        "moves a compact pattern (the map is kept in the manifest for `wm-jax interpret`)",
    )
    add_overwrite_flag(p, "replace an existing --out that embed did not write")
    p.set_defaults(run=run, accepts_overrides=False)


def run(args, overrides) -> None:
    from wm_jax.embed import embed

    embed(
        args.workdir, args.store, args.out, args.step, args.batch_size, overwrite=args.overwrite, rotation=args.rotation
    )
