"""Quantitative traits of known SNP heritability on given genotypes: the truth that `wm-jax h2` is
checked against (tests/test_rhe.py, benchmarks/h2_vs_bolt.py).

Each trait is ``g + e`` with ``g`` a polygenic score of a random share of the variants (effects
drawn per standardised genotype) and ``e`` noise, both rescaled so that, over the given samples,
Var(g) = h2 and Var(e) = 1 - h2 exactly (with g and e made uncorrelated): the SNP heritability of
the trait on these genotypes is h2 by construction. Covariate effects, when given, add to both
the trait and nothing else (adjusting for the covariates removes them).
"""

from __future__ import annotations

import numpy as np


def standardised_dosages(dosages: np.ndarray) -> np.ndarray:
    """(samples, variants) dosages, NaN missing -> mean-imputed, centred, unit variance (0 if constant)."""
    mean = np.nanmean(dosages, axis=0)
    x = np.where(np.isnan(dosages), mean, dosages) - mean
    sd = x.std(axis=0)
    return x / np.where(sd == 0, 1.0, sd)


def heritable_traits(
    data,
    h2: list[float],
    rng: np.random.Generator,
    causal_share: float = 0.2,
    covariates: np.ndarray | None = None,
    covariate_sd: float = 0.5,
) -> np.ndarray:
    """(samples, len(h2)) traits of SNP heritability ``h2`` on the genotype source ``data`` (its
    `dosages`); each trait's causal variants are a random ``causal_share`` of the source's."""
    n, m = data.n_samples, data.n_variants
    traits = np.empty((n, len(h2)))
    for t, share in enumerate(h2):
        causal = np.flatnonzero(rng.random(m) < causal_share)
        effects = rng.standard_normal(len(causal))
        g = np.zeros(n)
        for start in range(0, len(causal), 4096):
            part = causal[start : start + 4096]
            g += standardised_dosages(data.dosages(part).T.astype(np.float64)) @ effects[start : start + 4096]
        e = rng.standard_normal(n)
        g, e = g - g.mean(), e - e.mean()
        e -= g * (g @ e) / (g @ g)
        traits[:, t] = np.sqrt(share) * g / g.std() + np.sqrt(1 - share) * e / e.std()
        if covariates is not None:
            traits[:, t] += covariates @ rng.normal(0, covariate_sd, covariates.shape[1])
    return traits
