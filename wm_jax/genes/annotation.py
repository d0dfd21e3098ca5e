"""Gene annotations (a `gene chrom start end` table, MAGMA's .gene.loc, or a GTF), gene sets (GMT),
and the check that the annotation names chromosomes as the genotypes do."""

from __future__ import annotations

import gzip
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from wm_jax.errors import input_error, require_file

log = logging.getLogger("wm_jax")

GENE_COLUMNS = ["gene", "chrom", "start", "end"]


def _lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of the non-empty lines of a text file, gzip-compressed or not."""
    from wm_jax.data.tables import text_lines

    if path.suffix != ".gz":
        return text_lines(path)
    try:
        text = gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as err:
        raise input_error(path, f"expected a gzip-compressed text file ({err})")
    try:
        decoded = text.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        raise input_error(path, "expected UTF-8 text inside the gzip file")
    return [(k + 1, line.rstrip("\r")) for k, line in enumerate(decoded.split("\n")) if line.rstrip("\r")]


def read_genes(path: str | Path) -> pd.DataFrame:
    """The genes of an annotation: columns gene, chrom, start, end (1-based, inclusive) and, for a
    MAGMA .gene.loc (ID CHR START STOP STRAND NAME) or a GTF, symbol. A file whose lines have 9
    tab-separated fields with a 'gene_id' attribute is read as a GTF (records of feature 'gene');
    anything else as a table of gene, chrom, start, end (more columns allowed), with or without a
    header, tab- or space-separated."""
    path = require_file(path, "gene annotation")
    lines = [(n, text) for n, text in _lines(path) if not text.startswith("#")]
    if not lines:
        raise input_error(path, "expected a gene annotation (gene chrom start end, or a GTF), found no lines")
    first = lines[0][1].split("\t")
    genes = _read_gtf(path, lines) if len(first) == 9 and "gene_id" in first[8] else _read_table(path, lines)
    duplicated = genes.gene.duplicated()
    if duplicated.any():
        raise input_error(path, f"gene {genes.gene[duplicated].iloc[0]!r} is listed twice; expected one row per gene")
    log.info("genes: %d genes in %s", len(genes), path)
    return genes.reset_index(drop=True)


def _read_table(path: Path, lines: list[tuple[int, str]]) -> pd.DataFrame:
    rows = [(n, text.split()) for n, text in lines]
    if not _is_integer(rows[0][1][2:4]):  # a header
        rows = rows[1:]
    records = []
    for n, fields in rows:
        if len(fields) < 4 or not _is_integer(fields[2:4]):
            raise input_error(path, f"line {n}: expected gene, chrom, start, end (integer base pairs), found {fields}")
        records.append(fields[:4] + [fields[5] if len(fields) >= 6 else fields[0]])
    if not records:
        raise input_error(path, "expected rows of gene, chrom, start, end; found only a header")
    genes = pd.DataFrame(records, columns=[*GENE_COLUMNS, "symbol"])
    genes[["start", "end"]] = genes[["start", "end"]].astype(np.int64)
    bad = genes.end < genes.start
    if bad.any():
        raise input_error(path, f"gene {genes.gene[bad].iloc[0]}: end before start; expected start <= end")
    return genes


def _is_integer(fields: list[str]) -> bool:
    return len(fields) == 2 and all(re.fullmatch(r"\d+", f) for f in fields)


def _read_gtf(path: Path, lines: list[tuple[int, str]]) -> pd.DataFrame:
    """The 'gene' records of a GTF: gene_id as gene, gene_name (else gene_id) as symbol."""
    records, features = [], set()
    for n, text in lines:
        fields = text.split("\t")
        if len(fields) != 9 or not _is_integer(fields[3:5]):
            raise input_error(path, f"line {n}: expected 9 tab-separated GTF fields with integer start and end")
        features.add(fields[2])
        if fields[2] != "gene":
            continue
        gene_id = re.search(r'gene_id "([^"]+)"', fields[8])
        if gene_id is None:
            raise input_error(path, f"line {n}: a gene record without a gene_id attribute")
        name = re.search(r'gene_name "([^"]+)"', fields[8])
        records.append([gene_id[1], fields[0], int(fields[3]), int(fields[4]), name[1] if name else gene_id[1]])
    if not records:
        raise input_error(
            path,
            f"expected gene records (feature 'gene' in column 3) in this GTF, found none "
            f"(features: {', '.join(sorted(features)[:5])})",
        )
    return pd.DataFrame(records, columns=[*GENE_COLUMNS, "symbol"])


def check_chromosomes(genes: pd.DataFrame, chroms: np.ndarray, genes_path, variants_path) -> pd.DataFrame:
    """The genes on chromosomes the genotypes have; an error when none is, naming the fix when the
    names differ only by a 'chr' prefix (chr1 vs 1)."""
    have = set(map(str, pd.unique(chroms)))
    on = genes.chrom.isin(have)
    if not on.any():
        named = sorted(set(genes.chrom))[:3]
        example = sorted(have)[:3]
        stripped = {re.sub(r"^chr", "", c, flags=re.I) for c in genes.chrom}
        if stripped & have:
            fix = "chr1 vs 1: remove the 'chr' prefix from the annotation (e.g. sed 's/^chr//')"
        elif {f"chr{c}" for c in genes.chrom} & have:
            fix = "1 vs chr1: add the 'chr' prefix to the annotation's chromosomes"
        else:
            fix = "no gene lies on a chromosome of the genotypes"
        raise input_error(
            genes_path,
            f"chromosomes named {', '.join(named)} but {variants_path} names them {', '.join(example)} ({fix})",
        )
    if not on.all():
        log.info("genes: %d of %d genes are on chromosomes the genotypes lack; dropped", int((~on).sum()), len(genes))
    return genes[on].reset_index(drop=True)


def read_gene_sets(path: str | Path) -> dict[str, list[str]]:
    """GMT: one set per line, name, description, then its genes, tab-separated."""
    path = require_file(path, "gene-set file")
    sets: dict[str, list[str]] = {}
    for n, text in _lines(path):
        fields = [f.strip() for f in text.split("\t")]
        if len(fields) < 3 or not fields[0]:
            raise input_error(path, f"line {n}: expected a GMT line: set name, description, genes (tab-separated)")
        if fields[0] in sets:
            raise input_error(path, f"line {n}: set {fields[0]!r} is listed twice")
        sets[fields[0]] = [g for g in fields[2:] if g]
    if not sets:
        raise input_error(path, "expected gene sets (GMT: set name, description, genes), found none")
    return sets
