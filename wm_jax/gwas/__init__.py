"""GWAS engine: PLINK 2-exact linear association streamed from BED through a jit-compiled kernel."""
