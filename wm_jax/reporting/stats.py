"""Statistics of the loci report: genomic control, LD clumping (as `plink --clump`), loci merged
across phenotypes, replication and scoring against a simulation's truth."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy import stats

from wm_jax.stage_options import ClumpOptions

log = logging.getLogger("wm_jax")


def genomic_control(log10_p: np.ndarray, df: int = 1) -> float:
    """lambda GC: the median chi-square statistic (from -log10 P, df degrees of freedom) over its null median."""
    lp = np.asarray(log10_p, np.float64)
    lp = lp[np.isfinite(lp)]
    if len(lp) == 0:
        return float("nan")
    median_lp = np.median(lp)  # the chi-square transform is monotone, so transform the median only
    return float(stats.chi2.isf(10.0**-median_lp, df) / stats.chi2.ppf(0.5, df))


def r_squared_haplotype(index: np.ndarray, others: np.ndarray, iterations: int = 200) -> np.ndarray:
    """r^2 from maximum-likelihood two-locus haplotype frequencies (EM over the double
    heterozygotes, whose phase is unknown), as PLINK 1.9 computes it for --clump; samples called at
    both variants only. index (samples,), others (variants, samples) allele counts, NaN = missing."""
    ok = np.isfinite(others) & np.isfinite(index)[None]
    a = np.stack([ok & (index[None] == g) for g in range(3)], axis=1).astype(np.float64)  # (k, 3, samples)
    b = np.stack([ok & (others == g) for g in range(3)], axis=1).astype(np.float64)
    n = np.einsum("kis,kjs->kij", a, b)  # (k, 3, 3) genotype counts, rows index ALT count, cols other's
    # haplotype counts from the phase-known cells: 11 = ALT-ALT, 10 = ALT-REF, 01 = REF-ALT, 00 = REF-REF
    h11 = 2 * n[:, 2, 2] + n[:, 2, 1] + n[:, 1, 2]
    h10 = 2 * n[:, 2, 0] + n[:, 2, 1] + n[:, 1, 0]
    h01 = 2 * n[:, 0, 2] + n[:, 0, 1] + n[:, 1, 2]
    h00 = 2 * n[:, 0, 0] + n[:, 0, 1] + n[:, 1, 0]
    het = n[:, 1, 1]
    total = h11 + h10 + h01 + h00 + 2 * het
    with np.errstate(divide="ignore", invalid="ignore"):
        f11, f10, f01, f00 = [(h + het / 2) / total for h in (h11, h10, h01, h00)]
        for _ in range(iterations):
            cis, trans = f11 * f00, f10 * f01
            share = np.where(cis + trans > 0, cis / (cis + trans), 0.5)  # P(double het is ALT-ALT / REF-REF)
            f11, f00 = (h11 + het * share) / total, (h00 + het * share) / total
            f10, f01 = (h10 + het * (1 - share)) / total, (h01 + het * (1 - share)) / total
        p_a, p_b = f11 + f10, f11 + f01
        r2 = (f11 - p_a * p_b) ** 2 / (p_a * (1 - p_a) * p_b * (1 - p_b))
    return np.nan_to_num(r2, nan=0.0)


def clump(variants: pd.DataFrame, log10_p: np.ndarray, dosages, options: ClumpOptions = ClumpOptions()) -> pd.DataFrame:
    """Greedy LD clumping, PLINK 1.9 semantics: variants with P <= p1, in order of increasing P,
    become index variants unless already clumped; each claims the not-yet-clumped variants within
    kb on its chromosome with P <= p2 and r^2 >= r2. ``dosages(indices)`` returns (k, samples) allele
    counts with NaN for missing calls. Returns one row per clump: index row, P, and member rows."""
    lp = np.nan_to_num(np.asarray(log10_p, np.float64), nan=-1.0)
    chrom = variants["#CHROM"].astype(str).to_numpy()
    pos = variants["POS"].to_numpy(np.int64)
    p1, p2 = -np.log10(options.p1), -np.log10(options.p2)
    clumped = np.zeros(len(lp), bool)
    rows = []
    for i in np.flatnonzero(lp >= p1)[np.argsort(-lp[lp >= p1], kind="stable")]:
        if clumped[i]:
            continue
        window = np.flatnonzero(
            (chrom == chrom[i]) & (np.abs(pos - pos[i]) <= options.kb * 1000) & (lp >= p2) & ~clumped
        )
        window = window[window != i]
        members = np.empty(0, int)
        if len(window):
            d = dosages(np.concatenate([[i], window]))
            members = window[r_squared_haplotype(d[0], d[1:]) >= options.r2]
        clumped[i] = True
        clumped[members] = True
        rows.append({"index": int(i), "log10_p": float(lp[i]), "members": members})
    return pd.DataFrame(rows, columns=["index", "log10_p", "members"])


LOCUS_COLUMNS = [
    "locus",
    "chrom",
    "start",
    "end",
    "lead_id",
    "lead_pos",
    "lead_log10_p",
    "lead_phenotype",
    "n_phenotypes",
    "phenotypes",
    "n_variants",
]


def _clump_spans(clumps: dict[str, pd.DataFrame], chrom: np.ndarray, pos: np.ndarray) -> list[tuple]:
    """Each clump as (chrom, start, end, -log10 P, index variant, phenotype, number of variants)."""
    spans = []
    for name, table in clumps.items():
        for row in table.itertuples():
            members = np.concatenate([[row.index], row.members]).astype(int)
            spans.append(
                (
                    chrom[row.index],
                    pos[members].min(),
                    pos[members].max(),
                    row.log10_p,
                    int(row.index),
                    name,
                    len(members),
                )
            )
    return spans


def _merged_spans(spans: list[tuple], kb: float) -> list[dict]:
    """Spans sorted by position and merged where they overlap or lie within kb on a chromosome."""
    loci, current = [], None
    for span in sorted(spans, key=lambda s: (s[0], s[1])):
        if current is not None and span[0] == current["chrom"] and span[1] <= current["end"] + kb * 1000:
            current["end"] = max(current["end"], span[2])
            current["parts"].append(span)
        else:
            current = {"chrom": span[0], "start": span[1], "end": span[2], "parts": [span]}
            loci.append(current)
    return loci


def merge_loci(clumps: dict[str, pd.DataFrame], variants: pd.DataFrame, kb: float) -> pd.DataFrame:
    """Genomic loci: each phenotype's clumps as spans (index and members), merged across phenotypes
    when they overlap or lie within kb of each other on a chromosome; the lead is the smallest P."""
    chrom = variants["#CHROM"].astype(str).to_numpy()
    pos = variants["POS"].to_numpy(np.int64)
    spans = _clump_spans(clumps, chrom, pos)
    if not spans:
        return pd.DataFrame(columns=LOCUS_COLUMNS)
    rows = []
    for n, locus in enumerate(_merged_spans(spans, kb), 1):
        lead = max(locus["parts"], key=lambda s: s[3])
        names = sorted({s[5] for s in locus["parts"]})
        rows.append(
            [
                n,
                locus["chrom"],
                int(locus["start"]),
                int(locus["end"]),
                variants["ID"].iloc[lead[4]],
                int(pos[lead[4]]),
                lead[3],
                lead[5],
                len(names),
                ",".join(names),
                max(s[6] for s in locus["parts"]),
            ]
        )
    return pd.DataFrame(rows, columns=LOCUS_COLUMNS)


OMNIBUS = "OMNIBUS"  # the phenotype name of the multivariate test's leads


def replication(leads: pd.DataFrame, discovery, replicate, n_leads: int | None = None) -> pd.DataFrame:
    """Each (lead variant, phenotype) of the discovery looked up in the replication GWAS: same
    phenotype, same variant ID, BETA turned to the discovery's A1. Replicates: P <= 0.05 / n_leads
    (default: the rows of ``leads``) and the same sign; a lead of the omnibus test (phenotype
    OMNIBUS, no BETA) on P alone. ``discovery``/``replicate`` are `GwasResult`s."""
    rep_row = pd.Series(np.arange(len(replicate.variants)), index=replicate.variants["ID"].to_numpy())
    out = []
    threshold = -np.log10(0.05 / max(1, len(leads) if n_leads is None else n_leads))

    def beta_and_log10_p(result, name, i):
        if name == OMNIBUS:
            return np.nan, float(result.omnibus_log10_p[i])
        j = result.phenotype_index(name)
        return float(result.beta[j, i]), float(result.log10_p[j, i])

    for lead in leads.itertuples():
        i_d = int(lead.index)
        beta, log10_p = beta_and_log10_p(discovery, lead.phenotype, i_d)
        row = {
            "phenotype": lead.phenotype,
            "ID": discovery.variants["ID"].iloc[i_d],
            "A1": discovery.variants["A1"].iloc[i_d],
            "discovery_beta": beta,
            "discovery_log10_p": log10_p,
            "replication_beta": np.nan,
            "replication_log10_p": np.nan,
            "replicated": False,
        }
        variant_id = row["ID"]
        if variant_id in rep_row.index and (lead.phenotype == OMNIBUS or lead.phenotype in replicate.phenotypes):
            i_r = int(rep_row[variant_id])
            beta_r, row["replication_log10_p"] = beta_and_log10_p(replicate, lead.phenotype, i_r)
            flip = -1.0 if replicate.variants["A1"].iloc[i_r] != row["A1"] else 1.0
            row["replication_beta"] = flip * beta_r
            same_sign = lead.phenotype == OMNIBUS or np.sign(row["replication_beta"]) == np.sign(row["discovery_beta"])
            row["replicated"] = bool(row["replication_log10_p"] >= threshold and same_sign)
        out.append(row)
    return pd.DataFrame(
        out,
        columns=[
            "phenotype",
            "ID",
            "A1",
            "discovery_beta",
            "discovery_log10_p",
            "replication_beta",
            "replication_log10_p",
            "replicated",
        ],
    )
