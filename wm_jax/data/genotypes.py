"""Open the genotype source the user named (`wm_jax.data.source.GenotypeInput`): PLINK 1 .bed
(--bfile), PLINK 2 .pgen (--pfile) or BGEN (--bgen), each a `wm_jax.data.source.GenotypeSource`."""

from __future__ import annotations

import os

from wm_jax.data.bgen import BgenDataset
from wm_jax.data.pgen import PgenDataset
from wm_jax.data.plink import PlinkDataset
from wm_jax.data.source import GenotypeInput, GenotypeSource


def open_genotypes(source: GenotypeInput | str | os.PathLike) -> GenotypeSource:
    """The genotype source for ``source`` (a str is a --bfile prefix)."""
    if not isinstance(source, GenotypeInput):
        source = GenotypeInput("bfile", str(source))
    if source.kind == "bfile":
        return PlinkDataset(source.path)
    if source.kind == "pfile":
        return PgenDataset(source.path)
    if source.kind == "bgen":
        return BgenDataset(source.path, source.sample, ref_first=source.bgen_ref_first)
    raise ValueError(f"unknown genotype input kind {source.kind!r}")
