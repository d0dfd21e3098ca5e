"""Command-line option values, validated at parse time: each type states its range when it fails.

argparse turns an ``ArgumentTypeError`` into ``wm-jax <command>: error: --option: <message>``.

A stage's options are a dataclass (`wm_jax.stage_options`), the one place their defaults and ranges
are written: a flag of that stage has no default of its own (None when not given, an on/off flag
off), its type is the field's declared `Range` (`flag_type`), and `options_from_args` keeps the
dataclass's default for a flag not given. `wm-jax demo` builds the same dataclasses from its config
sections and checks them against the same ranges (`wm_jax.config`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
from collections.abc import Callable
from typing import TypeVar

from wm_jax.data.chromosomes import parse_chromosome_list

Options = TypeVar("Options")


def _fail(expected: str, raw: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"expected {expected}, found {raw!r}")


@dataclasses.dataclass(frozen=True)
class Range:
    """The values an option takes: integers or finite numbers between ``low`` and ``high`` (None or
    inf: no bound; ``low_open``/``high_open``: the end itself excluded). Declared once, on the
    option's dataclass field (`ranged`); `parse` is the flag's argparse type and `accepts` checks a
    config value (`wm_jax.config`), so the command line and the config accept the same values."""

    kind: str  # "integer" or "number"
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    @property
    def expected(self) -> str:
        low, high = self.low, self.high
        if self.kind == "integer":
            if low is None:
                return "an integer"
            return f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        high = math.inf if high is None else high
        left, right = "(" if self.low_open else "[", ")" if self.high_open or math.isinf(high) else "]"
        return f"a number in {left}{low:g}, {'inf' if math.isinf(high) else f'{high:g}'}{right}"

    def inside(self, value: float) -> bool:
        low = -math.inf if self.low is None else self.low
        high = math.inf if self.high is None else self.high
        return (value > low if self.low_open else value >= low) and (value < high if self.high_open else value <= high)

    def accepts(self, value) -> bool:
        """A config value (a Python object): of the kind (an int for an integer, booleans never) and inside."""
        if isinstance(value, bool) or not isinstance(value, int if self.kind == "integer" else (int, float)):
            return False
        return math.isfinite(value) and self.inside(value)

    def parse(self, raw: str) -> int | float:
        """The flag's value, or argparse's error stating the range."""
        try:
            value = int(raw.strip()) if self.kind == "integer" else float(raw)
        except ValueError:
            raise _fail(self.expected, raw) from None
        if not math.isfinite(value) or not self.inside(value):
            raise _fail(self.expected, raw)
        return value


def integer(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An integer in [low, high] (either bound may be open-ended)."""
    return _named_parser(Range("integer", low, high), "integer")


def number(
    low: float, high: float = math.inf, low_open: bool = False, high_open: bool = False
) -> Callable[[str], float]:
    """A finite number in the interval (low, high) with the given open or closed ends."""
    return _named_parser(Range("number", low, high, low_open, high_open), "number")


def _named_parser(values: Range, name: str) -> Callable[[str], int | float]:
    def parse(raw: str) -> int | float:
        return values.parse(raw)

    parse.__name__ = name  # argparse names the type in some messages
    parse.range = values
    return parse


def ranged(default, kind: str | Range, low=None, high=None, *, low_open: bool = False, high_open: bool = False):
    """A dataclass field whose values are ``Range(kind, low, high, ...)`` (or the Range ``kind``); its
    default is ``default``."""
    values = kind if isinstance(kind, Range) else Range(kind, low, high, low_open, high_open)
    return dataclasses.field(default=default, metadata={"range": values})


def field_range(options_class: type, name: str) -> Range:
    """The Range declared on the field ``name`` of an options dataclass."""
    return {field.name: field for field in dataclasses.fields(options_class)}[name].metadata["range"]


def flag_type(options_class: type, name: str) -> Callable[[str], int | float]:
    """The argparse type of the flag of the field ``name``: its declared Range."""
    return range_type(field_range(options_class, name))


def range_type(values: Range) -> Callable[[str], int | float]:
    """The argparse type of a flag whose values are ``values``."""
    return _named_parser(values, values.kind)


def crop(raw: str) -> tuple[tuple[int, int], ...]:
    """``x0,x1,y0,y1,z0,z1``: voxel ranges [start, stop) with 0 <= start < stop."""
    expected = "six integers x0,x1,y0,y1,z0,z1 with 0 <= start < stop on each axis"
    parts = raw.split(",")
    if len(parts) != 6 or not all(re.fullmatch(r"\s*\d+\s*", p) for p in parts):
        raise _fail(expected, raw)
    values = [int(p) for p in parts]
    pairs = tuple((values[2 * k], values[2 * k + 1]) for k in range(3))
    if any(a >= b for a, b in pairs):
        raise _fail(expected, raw)
    return pairs


def chromosomes(raw: str) -> str:
    """PLINK's --chr syntax (checked here, applied by the GWAS): kept as text for the log."""
    try:
        parse_chromosome_list(raw)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return raw


def name_list(raw: str) -> str:
    """PLINK 2 style names: comma-separated, ranges like UDIP1-UDIP16; no empty item, no repeat."""
    items = [item.strip() for item in raw.split(",")]
    expected = "comma-separated column names or ranges like UDIP1-UDIP16"
    if not raw.strip() or any(not item for item in items):
        raise _fail(expected + " (no empty name)", raw)
    repeated = sorted({item for item in items if items.count(item) > 1})
    if repeated:
        raise _fail(expected + f" without repeats ({repeated[0]!r} is given twice)", raw)
    return raw


def checkpoint_step(raw: str) -> str | int:
    if raw in ("latest", "best"):
        return raw
    if re.fullmatch(r"\d+", raw.strip()):
        return int(raw)
    raise _fail("a checkpoint step (an integer >= 0), 'latest' or 'best'", raw)


def add_genotype_flags(parser: argparse.ArgumentParser, what: str, required: bool = True) -> None:
    """--bfile | --pfile | --bgen FILE [ref-first|ref-last] [--sample FILE], one of them required
    unless ``required`` is False (`genotype_input` reads them)."""
    genotypes = parser.add_mutually_exclusive_group(required=required)
    genotypes.add_argument("--bfile", help=f"{what}: PLINK 1 binary prefix (.bed/.bim/.fam), hard calls")
    genotypes.add_argument("--pfile", help=f"{what}: PLINK 2 prefix (.pgen/.pvar/.psam), hard calls and dosages")
    genotypes.add_argument(
        "--bgen",
        nargs="+",
        metavar=("FILE", "REF/ALT_MODE"),
        help=f"{what}: BGEN v1.2/v1.3 file, then optionally ref-first (default: the first allele is REF) or ref-last",
    )
    parser.add_argument("--sample", help="Oxford .sample file for --bgen (default: the BGEN's own sample IDs)")


def genotype_input(args: argparse.Namespace):
    """The GenotypeInput of `add_genotype_flags`' flags."""
    from wm_jax.data.source import GenotypeInput
    from wm_jax.errors import InputError

    if args.sample is not None and args.bgen is None:
        raise InputError("--sample: expected only with --bgen")
    if args.bgen is not None:
        modes = {"ref-first": True, "ref-last": False}
        if len(args.bgen) > 2 or (len(args.bgen) == 2 and args.bgen[1] not in modes):
            raise InputError(f"--bgen: expected FILE [ref-first|ref-last], found {' '.join(args.bgen)}")
        return GenotypeInput("bgen", args.bgen[0], args.sample, modes[args.bgen[1]] if len(args.bgen) == 2 else True)
    if args.pfile is not None:
        return GenotypeInput("pfile", args.pfile)
    return GenotypeInput("bfile", args.bfile)


def options_from_args(options_class: type[Options], args: argparse.Namespace, prefix: str = "", **fixed) -> Options:
    """``options_class`` from the parsed flags: each field takes the value of the flag whose
    destination is ``prefix + field`` when that flag was given (not None), and keeps its default
    otherwise; ``fixed`` sets fields directly."""
    given = {
        field.name: getattr(args, prefix + field.name)
        for field in dataclasses.fields(options_class)
        if field.name not in fixed and getattr(args, prefix + field.name, None) is not None
    }
    return options_class(**given, **fixed)
