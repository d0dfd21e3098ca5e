"""wm-jax: white-matter phenotypes from FA maps (UDIPs) and their GWAS, in JAX."""

__version__ = "0.1.0"
