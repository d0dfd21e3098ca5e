"""The `wm-jax` command line: one subcommand per pipeline stage."""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

from wm_jax.errors import InputError

log = logging.getLogger("wm_jax")


def _setup_logging(verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("wm_jax")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False  # libraries (absl via orbax) may configure the root logger too


class Parser(argparse.ArgumentParser):
    """Errors as one line, ``wm-jax <command>: error: --option: <what was expected>``, exit 2."""

    def error(self, message: str):
        message = re.sub(r"^argument ([^:/]+)(/[^:]+)?: ", r"\1: ", message.replace("\n", " "))
        self.exit(2, f"{self.prog}: error: {message}\n")


def cmd_simulate(args, overrides) -> None:
    from wm_jax.config import SIM_RULES, apply_overrides, load_config, validate_config
    from wm_jax.errors import check_output_dir
    from wm_jax.simulate.cohort import simulate_cohort

    spec = args.config or (f"sim:{args.preset}" if args.preset else "sim")  # configs/sim.py has the default preset
    config = apply_overrides(load_config(spec), overrides)
    if args.n_subjects is not None:
        config.n_subjects = args.n_subjects
    if args.seed is not None:
        config.seed = args.seed
    validate_config(config, SIM_RULES)
    check_output_dir(args.out, "simulate", args.overwrite)
    simulate_cohort(config, args.out, overwrite=args.overwrite)


def cmd_prepare(args, overrides) -> None:
    from wm_jax.data.store import Preprocessing, prepare_store
    from wm_jax.errors import check_output_dir
    from wm_jax.options import options_from_args

    check_output_dir(args.out, "prepare", args.overwrite)
    prepare_store(args.subjects, args.out, options_from_args(Preprocessing, args), overwrite=args.overwrite)


def cmd_roi(args, overrides) -> None:
    import json

    from wm_jax.data.store import VolumeStore
    from wm_jax.errors import atomic_path, check_output_file, check_output_name, require_file, written_by
    from wm_jax.roi import oracle_phenotypes, tract_means

    if args.truth is None and args.labels is None:
        raise InputError("--labels: expected an atlas labels table (label tract), or --truth")
    check_output_name(args.out, "file")
    manifest = Path(f"{args.out}.manifest.json")
    check_output_file(args.out, "roi", args.overwrite, owned=written_by(manifest, "roi"))
    check_output_file(manifest, "roi", args.overwrite, owned=written_by(manifest, "roi"))
    store = VolumeStore.open(args.store)
    if args.truth:
        require_file(args.truth, "truth table")
        try:
            frame = oracle_phenotypes(store, args.truth)
        except (KeyError, AttributeError, ValueError, UnicodeDecodeError) as err:
            raise InputError(f"{args.truth}: expected a simulated cohort's truth.tsv ({type(err).__name__}: {err})")
    else:
        frame = tract_means(store, args.atlas, args.labels)
    with atomic_path(args.out) as tmp, atomic_path(manifest) as tmp_manifest:
        frame.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
        record = {
            "command": "roi",
            "store": str(Path(args.store).resolve()),
            "atlas": str(Path(args.atlas).resolve()),
            "labels": args.labels and str(Path(args.labels).resolve()),
            "truth": args.truth and str(Path(args.truth).resolve()),
            "n_subjects": len(frame),
        }
        tmp_manifest.write_text(json.dumps(record, indent=2))
    log.info("roi: %d subjects x %d regions -> %s", len(frame), frame.shape[1] - 2, args.out)


def build_parser() -> argparse.ArgumentParser:
    from wm_jax import options as o

    parser = Parser(prog="wm-jax", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="write a synthetic imaging-genetics cohort")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--preset", help="tiny, demo or paper: a preset of configs/sim.py (without one, its default)")
    p.add_argument(
        "--config", help="a config file, FILE or FILE:PRESET (overrides --preset); fields via --config.KEY=VALUE"
    )
    p.add_argument("--n-subjects", type=o.integer(10), help="subjects to simulate, >= 10")
    p.add_argument("--seed", type=o.integer(0, 2**32 - 1))
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.set_defaults(run=cmd_simulate, accepts_overrides=True)

    # --crop, --downsample, --mask-fraction and --dtype are the fields of Preprocessing (wm_jax/data/store.py),
    # which holds their defaults.
    p = sub.add_parser("prepare", help="validate, normalise and pack FA maps into a volume store")
    p.add_argument("--subjects", required=True, help="table FID IID fa_path ...")
    p.add_argument("--out", required=True, help="store directory")
    p.add_argument("--crop", type=o.crop, help="x0,x1,y0,y1,z0,z1 in voxels")
    p.add_argument("--downsample", type=o.integer(1), help="integer block-mean factor")
    p.add_argument(
        "--mask-fraction",
        type=o.number(0, 1, low_open=True),
        help="brain mask: non-zero in this fraction of subjects, in (0, 1]",
    )
    p.add_argument("--dtype", choices=["float32", "float16"])
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.set_defaults(run=cmd_prepare, accepts_overrides=False)

    p = sub.add_parser("roi", help="ROI-FA phenotypes: mean normalised FA per atlas tract (or per planted region)")
    p.add_argument("--store", required=True, help="volume store from `wm-jax prepare`")
    p.add_argument("--atlas", required=True, help="label image on the FA maps' grid")
    p.add_argument("--labels", help="table label tract (required without --truth)")
    p.add_argument("--truth", help="a simulated cohort's truth.tsv: one region per planted effect instead")
    p.add_argument("--out", required=True, help="phenotype table FID IID ... (+ OUT.manifest.json)")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.set_defaults(run=cmd_roi, accepts_overrides=False)

    _add_later_stages(sub)
    return parser


OVERWRITE_HELP = (
    "replace an existing output that an earlier run of this command did not mark as its own "
    "(a directory is replaced only if it holds nothing but this command's files)"
)


def _add_later_stages(sub) -> None:
    """Subcommands defined in modules of their own register their parsers here, imported as any
    module is (each imports only its flags' helpers at the top; the work when the command runs)."""
    from wm_jax.commands import ldscore
    from wm_jax.genes import cli as genes_cli
    from wm_jax.gwas import cli as gwas_cli
    from wm_jax.heritability import cli as heritability_cli
    from wm_jax.pipeline import cli as pipeline_cli
    from wm_jax.reporting import cli as reporting_cli
    from wm_jax.train import cli as train_cli

    for module in (gwas_cli, train_cli, reporting_cli, genes_cli, pipeline_cli, ldscore, heritability_cli):
        module.register(sub)


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that temporaries are removed on the way out."""


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    from wm_jax.errors import set_command

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    command_parser = parser._subparsers._group_actions[0].choices[args.command]
    if extra and not getattr(args, "accepts_overrides", False):
        command_parser.error(f"unrecognized arguments: {' '.join(extra)}")
    unknown = [e for e in extra if not e.startswith("--config.")]
    if unknown:
        command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    _setup_logging(args.verbose)
    set_command(args.command)
    try:
        _start_distributed(args.command)
    except InputError as err:
        print(f"wm-jax {args.command}: error: {_one_line(str(err))}", file=sys.stderr)
        return 2
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    start = time.time()
    try:
        args.run(args, extra)
    except InputError as err:
        print(f"wm-jax {args.command}: error: {_one_line(str(err))}", file=sys.stderr)
        return 2
    except OSError as err:  # the file system refused (permissions, space): one line naming the file
        where = err.filename or "output"
        print(f"wm-jax {args.command}: error: {where}: {err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"wm-jax {args.command}: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print(f"wm-jax {args.command}: terminated", file=sys.stderr)
        return 143
    finally:
        set_command(None)
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    log.info("%s finished in %.1f s", args.command, time.time() - start)
    return 0


MULTI_PROCESS_COMMANDS = ("train", "embed", "gwas")


def _start_distributed(command: str) -> None:
    """Join a multi-process run when a launcher (launch/*.sh) set it up; only process 0 logs
    information then. Imports JAX only in that case, so one-process start-up is unchanged."""
    if "WM_JAX_COORDINATOR" not in os.environ and "WM_JAX_DISTRIBUTED" not in os.environ:
        return
    if command not in MULTI_PROCESS_COMMANDS:
        raise InputError(
            f"runs as one process; start it without a launcher (WM_JAX_COORDINATOR or WM_JAX_DISTRIBUTED is "
            f"set; commands that run across processes: {', '.join(MULTI_PROCESS_COMMANDS)})"
        )
    from wm_jax import sharding

    if sharding.initialize() and not sharding.is_main_process():
        logging.getLogger("wm_jax").setLevel(logging.WARNING)


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
