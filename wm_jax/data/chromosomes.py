"""Chromosome codes as PLINK reads them (human): 1-22, X = 23, Y = 24, XY = 25 (pseudo-autosomal),
MT = 26, 0 = unplaced; a `chr` prefix is ignored. So `X`, `chrX` and `23` are one chromosome."""

from __future__ import annotations

import re

NAMED = {"X": 23, "Y": 24, "XY": 25, "MT": 26, "M": 26}
LARGEST = 26


def chromosome_number(code: str) -> int | None:
    """PLINK's number of a chromosome code, or None for a code PLINK does not know (a contig)."""
    text = str(code).strip()
    if text[:3].lower() == "chr":
        text = text[3:]
    if re.fullmatch(r"\d+", text):
        value = int(text)
        return value if value <= LARGEST else None
    return NAMED.get(text.upper())


def chromosome_numbers(codes):
    """PLINK numbers of a pandas column of codes (-1 where a code is not a PLINK chromosome)."""
    import numpy as np
    import pandas as pd

    unique = pd.unique(codes.astype(str))
    lookup = {code: chromosome_number(code) for code in unique}
    return codes.astype(str).map(lambda c: -1 if lookup[c] is None else lookup[c]).to_numpy(np.int64)


def parse_chromosome_list(spec: str) -> set[int]:
    """PLINK's `--chr` list: codes and ranges of numbered chromosomes, separated by commas or
    spaces (e.g. `1-4,22,X`, `chr1-chr3`). Raises ValueError saying what was expected."""
    expected = "PLINK chromosome codes or ranges, e.g. 1-22,X (codes 0-26, X, Y, XY, MT, optionally chr-prefixed)"
    items = re.split(r"[,\s]+", spec.strip())
    if not spec.strip() or any(not item for item in items):
        raise ValueError(f"expected {expected}, found {spec!r}")
    wanted: set[int] = set()
    for item in items:
        ends = item.split("-")
        if len(ends) == 1:
            number = chromosome_number(item)
            if number is None:
                raise ValueError(f"expected {expected}, found {item!r}")
            wanted.add(number)
            continue
        numbers = [chromosome_number(end) if re.fullmatch(r"(?i:chr)?\d+", end) else None for end in ends]
        if len(ends) != 2 or None in numbers:
            raise ValueError(
                f"expected {expected}; {item!r} is not a range of numbered chromosomes "
                "(as in PLINK, X, Y, XY and MT cannot end a range)"
            )
        if numbers[0] > numbers[1]:
            raise ValueError(f"expected {expected}; range {item!r} runs backwards")
        wanted.update(range(numbers[0], numbers[1] + 1))
    return wanted
