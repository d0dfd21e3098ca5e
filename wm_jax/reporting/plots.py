"""Manhattan and QQ plots (matplotlib, PNG). Points with P > 0.01 are thinned (seeded) so that a
10M-variant plot stays fast; every point above that is drawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from wm_jax.gwas.pvalues import GENOME_WIDE_P, threshold_text


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _thin(lp: np.ndarray, keep_fraction: float, rng: np.random.Generator) -> np.ndarray:
    keep = (lp > 2) | (rng.random(len(lp)) < keep_fraction)
    return np.flatnonzero(keep & np.isfinite(lp))


def manhattan(
    path: Path,
    variants: pd.DataFrame,
    panels: list[tuple[str, np.ndarray, int]],
    seed: int = 0,
    threshold: float = GENOME_WIDE_P,
) -> None:
    """One panel per (title, -log10 P per variant, tests per variant); lines at genome-wide
    significance (``threshold``, GENOME_WIDE_P for variants) and, for a panel of several tests per
    variant (min P over phenotypes), at its Bonferroni correction threshold / tests."""
    plt = _pyplot()
    rng = np.random.default_rng(seed)
    chrom = variants["#CHROM"].astype(str).to_numpy()
    pos = variants["POS"].to_numpy(np.float64)
    order = list(dict.fromkeys(chrom))
    offsets, ticks, start = {}, [], 0.0
    for c in order:
        span = pos[chrom == c]
        offsets[c] = start - span.min()
        ticks.append(start + (span.max() - span.min()) / 2)
        start += span.max() - span.min() + 0.02 * (pos.max() - pos.min() + 1)
    x = pos + np.array([offsets[c] for c in chrom])
    colour = np.array([order.index(c) % 2 for c in chrom])
    keep_fraction = min(1.0, 200_000 / max(1, len(x)))
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 3.2 * len(panels)), squeeze=False)
    for ax, (title, lp, n_tests) in zip(axes[:, 0], panels):
        idx = _thin(np.asarray(lp, np.float64), keep_fraction, rng)
        ax.scatter(x[idx], lp[idx], c=np.where(colour[idx] == 0, "#1f4e79", "#7aa6c2"), s=3, linewidths=0)
        label = threshold_text(threshold)
        ax.axhline(-np.log10(threshold), color="grey", lw=0.8, ls="--", label=label)
        if n_tests > 1:
            bonferroni = -np.log10(threshold / n_tests)
            ax.axhline(bonferroni, color="firebrick", lw=0.8, ls="--", label=f"{label} / {n_tests}")
        ax.set_xticks(ticks, order)
        ax.set_ylabel("-log10 P")
        ax.set_title(title, fontsize=10)
        ax.legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("chromosome")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def qq(path: Path, series: list[tuple[str, np.ndarray, float]]) -> None:
    """Observed against expected -log10 P; series of (label, -log10 P, lambda GC)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 4.8))
    top = 1.0
    for label, lp, lam in series:
        lp = np.sort(np.asarray(lp, np.float64)[np.isfinite(lp)])[::-1]
        n = len(lp)
        if n == 0:
            continue
        expected = -np.log10((np.arange(1, n + 1) - 0.5) / n)
        # every point of the upper tail, log-spaced ranks below
        ranks = np.unique(np.concatenate([np.arange(min(n, 2000)), np.geomspace(1, n, 3000).astype(int) - 1]))
        ax.scatter(expected[ranks], lp[ranks], s=4, linewidths=0, label=f"{label} (lambda {lam:.3f})")
        top = max(top, expected[0], lp[0])
    ax.plot([0, top], [0, top], color="grey", lw=0.8)
    ax.set_xlabel("expected -log10 P")
    ax.set_ylabel("observed -log10 P")
    ax.set_title("QQ", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def heritability(path: Path, table: pd.DataFrame) -> None:
    """SNP h2 per phenotype (``table``: phenotype h2 se), sorted, with +-1.96 SE bars and the mean."""
    plt = _pyplot()
    order = table.sort_values("h2").reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.12 * len(order) + 2), 3.6))
    x = np.arange(len(order))
    ax.errorbar(x, order.h2, yerr=1.96 * order.se, fmt="o", ms=3, lw=0.8, color="#1f4e79", ecolor="#8fa9c4")
    mean = float(order.h2.mean())
    ax.axhline(mean, color="#c0504d", lw=1, ls="--", label=f"mean {mean:.3f}")
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xticks(x if len(order) <= 40 else [])
    if len(order) <= 40:
        ax.set_xticklabels(order.phenotype, rotation=90, fontsize=7)
    ax.set_ylabel("SNP heritability (95% CI)")
    ax.set_xlabel(f"{len(order)} phenotypes, sorted by h2")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def genetic_correlations(path: Path, table: pd.DataFrame) -> None:
    """Heatmap of rg (``table``: p1 p2 rg, one row per pair): a symmetric matrix among the traits
    that appear as p1, with external traits (only ever p2) as extra columns; NaN blank."""
    plt = _pyplot()
    rows = list(pd.unique(table.p1))
    columns = rows + [name for name in pd.unique(table.p2) if name not in rows]
    matrix = np.full((len(rows), len(columns)), np.nan)
    position = {name: j for j, name in enumerate(columns)}
    for p1, p2, rg in table[["p1", "p2", "rg"]].itertuples(index=False):
        matrix[rows.index(p1), position[p2]] = rg
        if p2 in rows:
            matrix[rows.index(p2), position[p1]] = rg
    for i in range(len(rows)):
        matrix[i, i] = 1.0
    side = 0.14 * max(len(rows), len(columns)) + 2.5
    fig, ax = plt.subplots(figsize=(min(side * len(columns) / max(len(rows), 1), 16), min(side, 16)))
    image = ax.imshow(np.clip(matrix, -1, 1), cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
    if len(columns) <= 40:
        ax.set_xticks(np.arange(len(columns)), columns, rotation=90, fontsize=7)
        ax.set_yticks(np.arange(len(rows)), rows, fontsize=7)
    fig.colorbar(image, ax=ax, label="genetic correlation", shrink=0.8)
    external = len(columns) - len(rows)
    title = f"rg among {len(rows)} phenotypes"
    ax.set_title(title + (f" and {external} external trait{'s' * (external > 1)}" if external else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
