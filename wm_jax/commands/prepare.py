"""`wm-jax prepare`: FA maps checked, normalised and packed into a volume store (`wm_jax.data.store`)."""

from __future__ import annotations

from wm_jax.commands.flags import add_overwrite_flag


def register(sub) -> None:
    from wm_jax import options as o
    from wm_jax.stage_options import Preprocessing

    # --crop, --downsample, --mask-fraction and --dtype are the fields of Preprocessing (wm_jax/stage_options.py),
    # which holds their defaults and ranges.
    p = sub.add_parser("prepare", help="validate, normalise and pack FA maps into a volume store")
    p.add_argument("--subjects", required=True, help="table FID IID fa_path ...")
    p.add_argument("--out", required=True, help="store directory")
    p.add_argument("--crop", type=o.crop, help="x0,x1,y0,y1,z0,z1 in voxels")
    p.add_argument("--downsample", type=o.flag_type(Preprocessing, "downsample"), help="integer block-mean factor")
    p.add_argument(
        "--mask-fraction",
        type=o.flag_type(Preprocessing, "mask_fraction"),
        help="brain mask: non-zero in this fraction of subjects, in (0, 1]",
    )
    p.add_argument("--dtype", choices=["float32", "float16"])
    p.add_argument(
        "--layout",
        choices=["npy", "zarr"],
        help="volumes.npy, one memory-mappable file (default); or volumes.zarr, zarr v3 with a chunk per "
        "subject, so that each host of a pod reads only its own subjects",
    )
    add_overwrite_flag(p)
    p.set_defaults(run=run, accepts_overrides=False)


def run(args, overrides) -> None:
    from wm_jax.data.store import STORE, prepare_store
    from wm_jax.options import options_from_args
    from wm_jax.publish import check_output_dir
    from wm_jax.stage_options import Preprocessing

    check_output_dir(args.out, STORE, args.overwrite)
    prepare_store(args.subjects, args.out, options_from_args(Preprocessing, args), overwrite=args.overwrite)
