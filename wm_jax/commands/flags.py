"""Flags that several subcommands share, written once."""

from __future__ import annotations

import argparse

OVERWRITE_HELP = (
    "replace an existing output that an earlier run of this command did not mark as its own "
    "(a directory is replaced only if it holds nothing but this command's files)"
)


def add_overwrite_flag(parser: argparse.ArgumentParser, help: str = OVERWRITE_HELP) -> None:
    """--overwrite: what it may replace is the command's own (``help`` says what; `wm_jax.publish` decides)."""
    parser.add_argument("--overwrite", action="store_true", help=help)


def directory_overwrite_help(files: str) -> str:
    """--overwrite's help for a command whose output is a marked directory of ``files`` files."""
    return f"replace an output directory without this command's marker that holds only {files} files"


def genotypes_for_output_dir(args: argparse.Namespace, output):
    """The genotypes of `wm_jax.options.add_genotype_flags`' flags, once --out is checked as a
    directory ``output`` (a `wm_jax.publish.Output`) may replace, with --overwrite: both before any work."""
    from wm_jax.options import genotype_input
    from wm_jax.publish import check_output_dir

    genotypes = genotype_input(args)
    check_output_dir(args.out, output, args.overwrite)
    return genotypes
