"""Test helpers: a synthetic LD score regression case under the LDSC model, written as the files
both wm-jax and ldsc read: LD scores per chromosome (`.l2.ldscore.gz`, `.l2.M`, `.l2.M_5_50`),
regression weight LD scores, a `wm-jax gwas` compact output, the same statistics as LDSC
`.sumstats` files, and one external trait as `.sumstats` and GWAS-SSF.

The model (Bulik-Sullivan et al. 2015): for each SNP the Z-scores of all traits are jointly normal
with covariance sqrt(N_j N_k) sqrt(h_j h_k) rg_jk l / M + intercept_jk, so h2, rg and the
intercepts are known. A few things real data have are planted: N varies between SNPs and between
missingness groups, one group has untested variants, the LD score files and the GWAS each have SNPs
the other lacks, some SNPs are strand-ambiguous, and the external file has its alleles swapped,
strand-flipped or (for a few SNPs) different.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

BASES = np.array(list("ACGT"))
COMPLEMENT = {"A": "T", "T": "A", "C": "G", "G": "C"}


@dataclass
class LdscCase:
    directory: Path
    gwas_prefix: Path  # PREFIX (PREFIX.gwas/ is the compact output)
    ld_prefix: str  # chromosome-split reference LD scores (chromosome appended)
    w_prefix: str  # regression weight LD scores
    sumstats: dict[str, Path]  # phenotype -> LDSC .sumstats of the same Z and N
    external_sumstats: Path
    external_ssf: Path
    # as munge_sumstats.py leaves them for ldsc --rg (which fails on strand-ambiguous SNPs and on
    # alleles that differ): those SNPs left out, by this module's own allele rule
    munged: dict[str, Path]
    external_munged: Path
    phenotypes: list[str]
    h2: np.ndarray  # true h2 of the phenotypes, then the external trait
    rg: np.ndarray  # true genetic correlations (traits x traits)
    m_5_50: float
    chromosomes: list[int] = field(default_factory=list)


def _alleles(rng: np.random.Generator, n: int, ambiguous: float) -> tuple[np.ndarray, np.ndarray]:
    """REF, ALT: two different bases, a fraction ``ambiguous`` of them A/T or C/G."""
    ref = BASES[rng.integers(0, 4, n)]
    complement = np.array([COMPLEMENT[b] for b in ref])
    others = np.array([[c for c in "ACGT" if c not in (r, COMPLEMENT[r])] for r in ref])
    alt = np.where(rng.random(n) < ambiguous, complement, others[np.arange(n), rng.integers(0, 2, n)])
    return ref, alt


def _truth(n_pheno: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """h2 of the phenotypes and the external trait, their rg, and the phenotypes' environmental
    correlation (same samples); the external trait shares no samples."""
    h2 = np.concatenate([np.linspace(0.2, 0.6, n_pheno), [0.35]])
    loadings = rng.normal(size=(n_pheno + 1, 2))
    rg = loadings @ loadings.T + np.diag(rng.uniform(0.3, 1.0, n_pheno + 1))
    rg = rg / np.sqrt(np.outer(np.diag(rg), np.diag(rg)))
    env = np.full((n_pheno + 1, n_pheno + 1), 0.2)
    env[-1, :], env[:, -1] = 0.0, 0.0
    np.fill_diagonal(env, 1.0)
    return h2, rg, env


def _z_scores(ld, n, h2, rg, env, m, inflation, rng) -> np.ndarray:
    """Z (traits x SNPs) jointly normal per SNP under the LDSC model."""
    gcov = np.sqrt(np.outer(h2, h2)) * rg
    root_n = np.sqrt(n.T)  # (SNPs, traits)
    overlap = np.minimum(n.T[:, :, None], n.T[:, None, :]) / (root_n[:, :, None] * root_n[:, None, :])
    cov = root_n[:, :, None] * root_n[:, None, :] * gcov[None] * (ld / m)[:, None, None]
    cov += (env + np.diag(inflation))[None] * overlap
    chol = np.linalg.cholesky(cov)
    return np.einsum("sij,sj->is", chol, rng.standard_normal((len(ld), len(h2))))


def write_ldsc_case(directory: Path, n_snps: int = 20_000, n_pheno: int = 3, seed: int = 7) -> LdscCase:
    """Write the case under ``directory`` (module docstring); the last phenotype is in a second
    missingness group with smaller N and 3% untested variants."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    chromosomes = [1, 2, 3, 4]
    n_ref = int(n_snps * 1.1)  # LD scores have 10% SNPs the GWAS lacks
    chrom = np.sort(rng.choice(chromosomes, n_ref))
    bp = np.concatenate([np.sort(rng.choice(10**8, (chrom == c).sum(), replace=False)) + 1 for c in chromosomes])
    snp = np.array([f"rs{100_000 + i}" for i in range(n_ref)])
    smooth = np.convolve(rng.gamma(1.5, 1.0, n_ref + 50), np.ones(51) / 51, mode="valid")[:n_ref]
    ld = np.round(smooth * rng.gamma(3.0, 15.0, n_ref) + rng.uniform(0.5, 3.0, n_ref), 3)
    m_5_50 = float(n_ref * 4)
    _write_ld_scores(directory / "ld", chrom, snp, bp, ld, m_5_50)
    w_keep = rng.random(n_ref) > 0.02
    w_ld = np.round(ld * rng.uniform(0.6, 1.0, n_ref), 3)
    _write_ld_scores(directory / "w", chrom[w_keep], snp[w_keep], bp[w_keep], w_ld[w_keep], None)
    in_gwas = np.sort(rng.choice(n_ref, n_snps, replace=False))
    extra = 200  # GWAS variants without LD scores
    h2, rg, env = _truth(n_pheno, rng)
    group_n = np.stack([rng.integers(4600, 5000, n_snps), rng.integers(2800, 3000, n_snps)])
    group_of = np.array([0] * (n_pheno - 1) + [1])
    n = np.vstack([group_n[group_of], np.full(n_snps, 20_000)]).astype(np.float64)
    inflation = np.concatenate([np.linspace(0.0, 0.05, n_pheno), [0.02]])
    z = _z_scores(ld[in_gwas], n, h2, rg, env, m_5_50, inflation, rng)
    names = [f"UDIP{k + 1}" for k in range(n_pheno)]
    gwas = _write_gwas(directory / "study", rng, chrom, bp, snp, in_gwas, extra, z[:n_pheno], group_n, group_of, names)
    sumstats = _write_sumstats(directory, gwas, names, "")
    munged = _write_sumstats(directory, gwas, names, ".munged", keep=_valid(gwas["A1"], gwas["A2"]))
    ext = _write_external(directory, rng, gwas, z[-1], n[-1])
    return LdscCase(
        directory,
        directory / "study",
        f"{directory}/ld/",
        f"{directory}/w/",
        sumstats,
        ext[0],
        ext[1],
        munged,
        ext[2],
        names,
        h2,
        rg,
        m_5_50,
        chromosomes,
    )


def _write_ld_scores(directory: Path, chrom, snp, bp, ld, m_5_50: float | None) -> None:
    directory.mkdir(exist_ok=True)
    for c in np.unique(chrom):
        rows = chrom == c
        with gzip.open(directory / f"{c}.l2.ldscore.gz", "wt") as handle:
            handle.write("CHR\tSNP\tBP\tL2\n")
            handle.writelines(f"{c}\t{s}\t{b}\t{v:.3f}\n" for s, b, v in zip(snp[rows], bp[rows], ld[rows]))
        if m_5_50 is not None:
            share = rows.mean()
            (directory / f"{c}.l2.M_5_50").write_text(f"{round(m_5_50 * share)}\n")
            (directory / f"{c}.l2.M").write_text(f"{round(1.3 * m_5_50 * share)}\n")


def _write_gwas(directory, rng, chrom, bp, snp, in_gwas, extra, z, group_n, group_of, names) -> pd.DataFrame:
    """A `wm-jax gwas` compact output (format 2) holding Z = BETA / SE; returns its variants with
    Z (float64 of the stored float32 BETA / SE), N and alleles. The extra variants (not in the LD
    scores) come first, so that the GWAS order differs from the LD scores' order."""
    n_var = len(in_gwas) + extra
    ref, alt = _alleles(rng, n_var, ambiguous=0.1)
    a1_is_ref = rng.random(n_var) < 0.4
    ids = np.concatenate([[f"chr9:{k}" for k in range(extra)], snp[in_gwas]])
    variants = pd.DataFrame(
        {
            "#CHROM": np.concatenate([np.full(extra, 4), chrom[in_gwas]]),
            "POS": np.concatenate([np.arange(extra) + 10**9, bp[in_gwas]]),
            "ID": ids,
            "REF": ref,
            "ALT": alt,
            "A1": np.where(a1_is_ref, ref, alt),
        }
    )
    compact = Path(f"{directory}.gwas")
    compact.mkdir()
    variants.to_csv(compact / "variants.tsv", sep="\t", index=False)
    freq = rng.uniform(0.05, 0.5, n_var)
    n_all = np.hstack([rng.integers(2800, 5000, (2, extra)), group_n]).astype(np.int32)
    z_all = np.hstack([rng.standard_normal((len(names), extra)), z])
    se = (1.0 / np.sqrt(2 * freq * (1 - freq) * n_all[group_of])).astype(np.float32)
    beta = (z_all * se).astype(np.float32)
    untested = np.zeros((2, n_var), bool)
    untested[1] = rng.random(n_var) < 0.03
    beta[untested[group_of]], se[untested[group_of]] = np.nan, np.nan
    z_stored = beta.astype(np.float64) / se.astype(np.float64)
    log10_p = -stats.norm.logsf(np.abs(z_stored)) / np.log(10) - np.log10(2)
    for name, array in {
        "beta": beta,
        "se": se,
        "log10_p": log10_p.astype(np.float32),
        "obs_ct": n_all,
        "a1_freq": np.tile(freq, (2, 1)).astype(np.float32),
        "reason": untested.astype(np.int8),
        "omnibus_chi2": np.nansum(z_stored**2, axis=0).astype(np.float32),
    }.items():
        np.save(compact / f"{name}.npy", array)
    meta = {"format_version": 2, "phenotypes": names, "group_of_phenotype": group_of.tolist(), "n_variants": n_var}
    (compact / "meta.json").write_text(json.dumps(meta))
    a2 = np.where(a1_is_ref, alt, ref)
    columns = {"SNP": ids, "A1": variants["A1"], "A2": a2}
    for k, name in enumerate(names):
        columns[f"Z_{name}"], columns[f"N_{name}"] = z_stored[k], n_all[group_of[k]]
    return pd.DataFrame(columns)


def _valid(a1, a2) -> np.ndarray:
    """Two different bases that are not each other's complement."""
    pairs = zip(np.asarray(a1).tolist(), np.asarray(a2).tolist())
    return np.array([x in COMPLEMENT and y in COMPLEMENT and x != y and COMPLEMENT[x] != y for x, y in pairs])


def _same_alleles(a1, a2, b1, b2) -> np.ndarray:
    """The same unordered pair of alleles, on the same strand or the other."""
    rows = zip(*(np.asarray(x).tolist() for x in (a1, a2, b1, b2)))
    return np.array([{b, d} in ({w, x}, {COMPLEMENT.get(w), COMPLEMENT.get(x)}) for b, d, w, x in rows])


def _write_sumstats(directory: Path, gwas: pd.DataFrame, names, suffix: str, keep=None) -> dict[str, Path]:
    """Each phenotype's LDSC .sumstats (SNP A1 A2 N Z), the untested variants left out."""
    paths = {}
    for name in names:
        path = directory / f"{name}{suffix}.sumstats"
        table = gwas[["SNP", "A1", "A2", f"N_{name}", f"Z_{name}"]][keep if keep is not None else slice(None)].dropna()
        table.columns = ["SNP", "A1", "A2", "N", "Z"]
        table.to_csv(path, sep="\t", index=False, float_format="%.17g")
        paths[name] = path
    return paths


def _write_external(directory: Path, rng, gwas: pd.DataFrame, z: np.ndarray, n: np.ndarray) -> tuple[Path, ...]:
    """The external trait over the GWAS SNPs with LD scores (minus 5%, plus 300 of its own): alleles
    swapped (Z negated) for 40%, strand-flipped for 30%, different for 2%."""
    rows = gwas.iloc[-len(z) :].reset_index(drop=True)
    a1, a2 = rows["A1"].to_numpy(), rows["A2"].to_numpy()
    swap = rng.random(len(z)) < 0.4
    b1, b2, zz = np.where(swap, a2, a1), np.where(swap, a1, a2), np.where(swap, -z, z)
    strand = rng.random(len(z)) < 0.3
    complement = np.vectorize(COMPLEMENT.get)
    b1, b2 = np.where(strand, complement(b1), b1), np.where(strand, complement(b2), b2)
    different = rng.random(len(z)) < 0.02
    b2 = np.where(different, np.where(b1 == "A", "C", "A"), b2)
    table = pd.DataFrame({"SNP": rows["SNP"], "A1": b1, "A2": b2, "N": n.astype(int), "Z": zz})
    table = table[rng.random(len(table)) > 0.05]
    own = pd.DataFrame({"SNP": [f"rs9{k:07d}" for k in range(300)], "A1": "A", "A2": "G", "N": 20_000, "Z": 0.5})
    table = pd.concat([own, table], ignore_index=True)
    ldsc_path = directory / "external.sumstats"
    table.to_csv(ldsc_path, sep="\t", index=False, float_format="%.17g")
    ours = gwas.set_index("SNP").reindex(table["SNP"])
    keep = _valid(table["A1"], table["A2"]) & _same_alleles(table["A1"], table["A2"], ours["A1"], ours["A2"])
    munged_path = directory / "external.munged.sumstats"
    table[keep | ours["A1"].isna().to_numpy()].to_csv(munged_path, sep="\t", index=False, float_format="%.17g")
    se = 1.0 / np.sqrt(table["N"].to_numpy(np.float64) * 0.3)
    ssf = pd.DataFrame(
        {
            "chromosome": 1,
            "base_pair_location": np.arange(len(table)) + 1,
            "effect_allele": table["A1"],
            "other_allele": table["A2"],
            "beta": table["Z"] * se,
            "standard_error": se,
            "effect_allele_frequency": 0.3,
            "p_value": 2 * stats.norm.sf(np.abs(table["Z"])),
            "variant_id": "NA",
            "rsid": table["SNP"],
            "n": table["N"],
        }
    )
    ssf_path = directory / "external.tsv.gz"
    ssf.to_csv(ssf_path, sep="\t", index=False, float_format="%.17g")
    return ldsc_path, ssf_path, munged_path


def write_factor_case(directory: Path, n_snps: int, n_pheno: int, n_sumstats: int, seed: int = 11) -> LdscCase:
    """A large case for benchmarks, drawn faster than `write_ldsc_case`: each phenotype's genetic
    part loads on 4 genetic factors per SNP, its noise on 2 environmental ones (same samples), so
    the traits are correlated without a per-SNP Cholesky. 22 chromosomes; no external trait;
    .sumstats (and their munged copies) for the first ``n_sumstats`` phenotypes only."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    chromosomes = list(range(1, 23))
    n_ref = int(n_snps * 1.05)
    chrom = np.sort(rng.choice(chromosomes, n_ref))
    bp = np.concatenate([np.sort(rng.choice(10**8, (chrom == c).sum(), replace=False)) + 1 for c in chromosomes])
    snp = np.array([f"rs{100_000 + i}" for i in range(n_ref)])
    ld = np.round(rng.gamma(2.0, 25.0, n_ref) + 1.0, 3)
    m_5_50 = float(n_ref * 4)
    _write_ld_scores(directory / "ld", chrom, snp, bp, ld, m_5_50)
    in_gwas = np.sort(rng.choice(n_ref, n_snps, replace=False))
    h2 = rng.uniform(0.1, 0.6, n_pheno)
    genetic = rng.normal(size=(n_pheno, 4))
    genetic /= np.linalg.norm(genetic, axis=1, keepdims=True)
    env = rng.uniform(-0.4, 0.4, (n_pheno, 2))
    group_n = np.stack([rng.integers(4600, 5000, n_snps), rng.integers(2800, 3000, n_snps)])
    group_of = np.array([0] * (n_pheno - 1) + [1])
    n = group_n[group_of].astype(np.float64)
    scale = np.sqrt(n * h2[:, None] * ld[in_gwas] / m_5_50)
    noise = env @ rng.standard_normal((2, n_snps)) + np.sqrt(1 - (env**2).sum(1))[:, None] * rng.standard_normal(
        (n_pheno, n_snps)
    )
    z = scale * (genetic @ rng.standard_normal((4, n_snps))) + noise
    names = [f"UDIP{k + 1}" for k in range(n_pheno)]
    gwas = _write_gwas(directory / "study", rng, chrom, bp, snp, in_gwas, 0, z, group_n, group_of, names)
    sumstats = _write_sumstats(directory, gwas, names[:n_sumstats], "")
    munged = _write_sumstats(directory, gwas, names[:n_sumstats], ".munged", keep=_valid(gwas["A1"], gwas["A2"]))
    rg = genetic @ genetic.T
    path = directory / "none"
    return LdscCase(
        directory,
        directory / "study",
        f"{directory}/ld/",
        f"{directory}/ld/",
        sumstats,
        path,
        path,
        munged,
        path,
        names,
        h2,
        rg,
        m_5_50,
        chromosomes,
    )
