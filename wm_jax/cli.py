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

from wm_jax.commands import (
    demo,
    embed,
    export,
    genes,
    gwas,
    h2,
    interpret,
    ldscore,
    prepare,
    report,
    rg,
    roi,
    simulate,
    train,
)
from wm_jax.errors import InputError

log = logging.getLogger("wm_jax")

# Each module registers its subcommand's parser (``register(sub)``) and does its work (``run(args, overrides)``);
# this order is the order of `wm-jax --help`.
COMMANDS = (simulate, prepare, roi, gwas, train, embed, report, genes, demo, interpret, ldscore, h2, rg, export)


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


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="wm-jax", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that temporaries are removed on the way out."""


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    command_parser = parser._subparsers._group_actions[0].choices[args.command]
    if extra and not getattr(args, "accepts_overrides", False):
        command_parser.error(f"unrecognized arguments: {' '.join(extra)}")
    unknown = [e for e in extra if not e.startswith("--config.")]
    if unknown:
        command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    _setup_logging(args.verbose)
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
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    log.info("%s finished in %.1f s", args.command, time.time() - start)
    return 0


MULTI_PROCESS_COMMANDS = ("train", "embed", "gwas", "ldscore", "h2", "prepare")


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

    if sharding.initialize(command=command) and not sharding.is_main_process():
        logging.getLogger("wm_jax").setLevel(logging.WARNING)


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
