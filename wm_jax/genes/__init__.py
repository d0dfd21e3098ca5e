"""`wm-jax genes`: from loci to genes and pathways (positional mapping, gene-based tests with LD,
competitive gene-set analysis)."""
