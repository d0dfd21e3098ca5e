"""The `wm-jax` command line: one subcommand per pipeline stage."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from wm_jax.errors import InputError

log = logging.getLogger("wm_jax")


def _setup_logging(verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("wm_jax")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False  # libraries (absl via orbax) may configure the root logger too


def cmd_simulate(args, overrides) -> None:
    from wm_jax.config import apply_overrides, load_config
    from wm_jax.simulate.cohort import simulate_cohort

    config = apply_overrides(load_config(args.config or args.preset, prefix="sim_"), overrides)
    if args.n_subjects is not None:
        config.n_subjects = args.n_subjects
    if args.seed is not None:
        config.seed = args.seed
    simulate_cohort(config, args.out, overwrite=args.overwrite)


def cmd_prepare(args, overrides) -> None:
    from wm_jax.data.store import Preprocessing, prepare_store

    if overrides:
        raise InputError(f"unrecognized arguments: {' '.join(overrides)}")
    crop = None
    if args.crop:
        values = [int(v) for v in args.crop.split(",")]
        if len(values) != 6:
            raise InputError(f"--crop {args.crop}: expected x0,x1,y0,y1,z0,z1")
        crop = tuple((values[2 * k], values[2 * k + 1]) for k in range(3))
    prep = Preprocessing(crop=crop, downsample=args.downsample, mask_fraction=args.mask_fraction, dtype=args.dtype)
    prepare_store(args.subjects, args.out, prep, overwrite=args.overwrite)


def cmd_roi(args, overrides) -> None:
    from wm_jax.data.store import VolumeStore
    from wm_jax.errors import atomic_path
    from wm_jax.roi import oracle_phenotypes, tract_means

    store = VolumeStore.open(args.store)
    frame = (oracle_phenotypes(store, args.truth) if args.truth
             else tract_means(store, args.atlas, args.labels))
    with atomic_path(args.out) as tmp:
        frame.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    log.info("roi: %d subjects x %d regions -> %s", len(frame), frame.shape[1] - 2, args.out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wm-jax", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="write a synthetic imaging-genetics cohort")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--preset", default="demo", help="tiny, demo or paper (configs/sim_<preset>.py)")
    p.add_argument("--config", help="a config file (overrides --preset); fields via --config.KEY=VALUE")
    p.add_argument("--n-subjects", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.set_defaults(run=cmd_simulate, accepts_overrides=True)

    p = sub.add_parser("prepare", help="validate, normalise and pack FA maps into a volume store")
    p.add_argument("--subjects", required=True, help="table FID IID fa_path ...")
    p.add_argument("--out", required=True, help="store directory")
    p.add_argument("--crop", help="x0,x1,y0,y1,z0,z1 in voxels")
    p.add_argument("--downsample", type=int, default=1, help="integer block-mean factor")
    p.add_argument("--mask-fraction", type=float, default=0.5, help="brain mask: non-zero in this fraction of subjects")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(run=cmd_prepare, accepts_overrides=False)

    p = sub.add_parser("roi", help="ROI-FA phenotypes: mean normalised FA per atlas tract (or per planted region)")
    p.add_argument("--store", required=True, help="volume store from `wm-jax prepare`")
    p.add_argument("--atlas", required=True, help="label image on the FA maps' grid")
    p.add_argument("--labels", help="table label tract (required without --truth)")
    p.add_argument("--truth", help="a simulated cohort's truth.tsv: one region per planted effect instead")
    p.add_argument("--out", required=True, help="phenotype table FID IID ...")
    p.set_defaults(run=cmd_roi, accepts_overrides=False)

    _add_later_stages(sub)
    return parser


def _add_later_stages(sub) -> None:
    """Stages defined in their own modules register their parsers here."""
    for module_name in ("wm_jax.gwas.cli", "wm_jax.train.cli", "wm_jax.reporting.cli", "wm_jax.pipeline.cli"):
        try:
            module = __import__(module_name, fromlist=["register"])
        except ModuleNotFoundError as err:
            if err.name and module_name.startswith(err.name):
                continue
            raise
        module.register(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    unknown = [e for e in extra if not e.startswith("--config.")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    _setup_logging(args.verbose)
    start = time.time()
    try:
        args.run(args, extra)
    except InputError as err:
        print(f"wm-jax {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"wm-jax {args.command}: interrupted", file=sys.stderr)
        return 130
    log.info("%s finished in %.1f s", args.command, time.time() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
