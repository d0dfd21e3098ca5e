"""The stages of `wm-jax demo`, in order:

simulate -> split -> prepare (train / held-out stores) -> train -> embed -> baselines (ROI-FA, PCA,
oracle) -> gwas (every phenotype set, discovery and replication) -> genes (gene tests, gene sets:
where the planted pathway ranks) -> report (each set, scored against the simulator's truth, with
the genes of each locus) -> interpret (PerDI) -> heritability (RHE). Each is a function of the
config and the run directory that returns its settings-independent record; `demo_stages` lists
them for the runner.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from wm_jax.config import section_options
from wm_jax.pipeline.runner import Stage
from wm_jax.publish import atomic_path
from wm_jax.stage_options import ClumpOptions, GeneOptions, GwasOptions, PerdiOptions

log = logging.getLogger("wm_jax")


def split_subjects(
    subjects: pd.DataFrame, train_fraction: float, replication_fraction: float, seed: int
) -> pd.DataFrame:
    """FID IID SET with SET in train / discovery / replication, deterministic by seed."""
    order = np.random.default_rng([seed, 11]).permutation(len(subjects))
    n_train = int(round(train_fraction * len(subjects)))
    n_rep = int(round(replication_fraction * (len(subjects) - n_train)))
    sets = np.empty(len(subjects), object)
    sets[order[:n_train]] = "train"
    sets[order[n_train : n_train + n_rep]] = "replication"
    sets[order[n_train + n_rep :]] = "discovery"
    return pd.DataFrame({"FID": subjects.FID.to_numpy(), "IID": subjects.IID.to_numpy(), "SET": sets})


def _rows_of(table: pd.DataFrame, split: pd.DataFrame, which: str) -> pd.DataFrame:
    """The rows of ``table`` whose IID is in set ``which`` of the split."""
    return table[table.IID.astype(str).isin(set(split.IID[split.SET == which].astype(str)))]


# Phenotype sets compared in the demo: the table each GWAS reads and the prefix of its columns.
PHENOTYPE_SETS = {
    "udip": ("udip.tsv", "UDIP"),
    "roi": ("roi_fa.tsv", "FA_"),
    "pca": ("pca.tsv", "IPC"),
    "oracle": ("oracle.tsv", "ORACLE_"),
}


def _publish_table(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False, float_format="%.6g")


def stage_options(config) -> dict:
    """The options of the stages that have their own subcommand, the dataclasses those subcommands
    build from their flags: from the config's sections, with the dataclasses' defaults for the rest."""
    return {
        "gwas": section_options(config, "gwas", GwasOptions),
        "report": section_options(config, "report", ClumpOptions, prefix="clump_"),
        "interpret": section_options(config, "interpret", PerdiOptions, seed=config.seed),
    }


def stage_simulate(config, d: Path) -> dict:
    from wm_jax.simulate.cohort import simulate_cohort

    simulate_cohort(config.sim, d / "cohort", overwrite=True)
    return {"n_subjects": config.sim.n_subjects, "shape": list(config.sim.shape)}


def stage_split(config, d: Path) -> dict:
    cohort = d / "cohort"
    subjects = pd.read_csv(cohort / "subjects.tsv", sep="\t", dtype={"FID": str, "IID": str})
    subjects["fa_path"] = [str((cohort / p).resolve()) for p in subjects.fa_path]  # the tables live elsewhere
    table = split_subjects(subjects, config.split.train_fraction, config.split.replication_fraction, config.seed)
    _publish_table(table, d / "split.tsv")
    is_train = (table.SET == "train").to_numpy()  # split_subjects keeps the subjects' row order
    _publish_table(subjects[is_train], d / "subjects_train.tsv")
    _publish_table(subjects[~is_train], d / "subjects_heldout.tsv")
    counts = table.SET.value_counts().to_dict()
    log.info(
        "split: %d subjects -> %d train, %d discovery, %d replication",
        len(table),
        counts.get("train", 0),
        counts.get("discovery", 0),
        counts.get("replication", 0),
    )
    return {k: int(v) for k, v in counts.items()}


def stage_prepare(config, d: Path) -> dict:
    from wm_jax.data.store import prepare_store
    from wm_jax.stage_options import Preprocessing

    prepare_store(d / "subjects_train.tsv", d / "store_train", Preprocessing(), overwrite=True)
    prepare_store(d / "subjects_heldout.tsv", d / "store_heldout", Preprocessing(), overwrite=True)
    return {}


def stage_train(config, d: Path) -> dict:
    from wm_jax.train.loop import train_and_evaluate

    summary = train_and_evaluate(config.train, str(d / "encoder"), str(d / "store_train"))
    return {k: v for k, v in (summary or {}).items() if isinstance(v, (int, float, str))}


def stage_embed(config, d: Path) -> dict:
    from wm_jax.embed import embed

    embed(
        str(d / "encoder"),
        str(d / "store_heldout"),
        str(d / "udip.tsv"),
        step="best",
        rotation=config.embed.rotation,
    )
    mse = pd.read_csv(d / "udip.tsv", sep="\t", usecols=["reconstruction_mse"]).reconstruction_mse
    return {"heldout_reconstruction_mse": float(mse.mean())}


def stage_baselines(config, d: Path) -> dict:
    """Tract means (ROI-FA), PCA with the encoder's latent size fit on the training store, and the
    oracle phenotypes (each planted pattern's coefficient), all on the held-out subjects."""
    from wm_jax.data.store import VolumeStore
    from wm_jax.pca import fit_pca, pca_table
    from wm_jax.roi import oracle_phenotypes, tract_means

    cohort, heldout = d / "cohort", VolumeStore.open(d / "store_heldout")
    _publish_table(tract_means(heldout, cohort / "atlas.nii.gz", cohort / "atlas_labels.tsv"), d / "roi_fa.tsv")
    _publish_table(oracle_phenotypes(heldout, cohort / "truth.tsv"), d / "oracle.tsv")
    pca = fit_pca(VolumeStore.open(d / "store_train"), config.train.model.latent_dim)
    table = pca_table(pca, heldout)
    _publish_table(table, d / "pca.tsv")
    return {
        "pca_heldout_reconstruction_mse": float(table.reconstruction_mse.mean()),
        "pca_components": int(pca.components.shape[0]),
    }


def stage_gwas(config, d: Path) -> dict:
    from wm_jax.gwas.run import run_gwas

    split = pd.read_csv(d / "split.tsv", sep="\t", dtype={"FID": str, "IID": str})
    options = stage_options(config)["gwas"]
    (d / "gwas").mkdir(exist_ok=True)
    tests = {}
    for kind, (source, prefix) in PHENOTYPE_SETS.items():
        phenotypes = pd.read_csv(d / source, sep="\t", dtype={"FID": str, "IID": str})
        names = ",".join(c for c in phenotypes.columns if c.startswith(prefix))
        for which in ("discovery", "replication"):
            pheno = d / "gwas" / f"{kind}_{which}.pheno.tsv"
            _publish_table(_rows_of(phenotypes, split, which), pheno)
            run_gwas(
                str(d / "cohort" / "genotypes"),
                str(pheno),
                str(d / "cohort" / "covariates.tsv"),
                str(d / "gwas" / f"{kind}_{which}"),
                dataclasses.replace(options, pheno_names=names),
            )
            meta = json.loads((d / "gwas" / f"{kind}_{which}.gwas" / "meta.json").read_text())
            tests[f"{kind}_{which}"] = {"variants": meta["n_variants"], "phenotypes": len(meta["phenotypes"])}
    return tests


def stage_report(config, d: Path) -> dict:
    from wm_jax.reporting.build import build_report

    options = stage_options(config)["report"]
    return {
        kind: build_report(
            str(d / "gwas" / f"{kind}_discovery"),
            str(d / "cohort" / "genotypes"),
            str(d / "report" / kind),
            replication_gwas=str(d / "gwas" / f"{kind}_replication"),
            truth=str(d / "cohort" / "truth.tsv"),
            options=options,
            genes=str(d / "genes" / kind),
        )
        for kind in PHENOTYPE_SETS
    }


def stage_interpret(config, d: Path) -> dict:
    from wm_jax.interpret.run import interpret

    return interpret(
        str(d / "encoder"),
        str(d / "udip.tsv"),
        str(d / "interpret"),
        store=str(d / "store_heldout"),
        atlas=str(d / "cohort" / "atlas.nii.gz"),
        labels=str(d / "cohort" / "atlas_labels.tsv"),
        step="best",
        options=stage_options(config)["interpret"],
        truth=str(d / "cohort" / "truth.tsv"),
        loci=str(d / "report" / "udip" / "loci.tsv"),
    )


def stage_genes(config, d: Path) -> dict:
    """`wm-jax genes` on each set's discovery GWAS with the cohort's annotation and gene sets: gene
    tests and where the planted pathway ranks among the sets (the report, which runs after, maps
    its loci to these genes: `wm-jax report --genes`)."""
    from wm_jax.data.source import GenotypeInput
    from wm_jax.genes.run import run_genes
    from wm_jax.simulate.annotation import PLANTED_SET

    results = {}
    for kind in PHENOTYPE_SETS:
        out = d / "genes" / kind
        summary = run_genes(
            str(d / "gwas" / f"{kind}_discovery"),
            GenotypeInput("bfile", str(d / "cohort" / "genotypes")),
            str(d / "cohort" / "genes.tsv"),
            str(out),
            GeneOptions(),
            gene_sets=str(d / "cohort" / "gene_sets.gmt"),
        )
        sets = pd.read_csv(out / "gene_sets.tsv", sep="\t")
        omnibus = sets[sets.phenotype == "OMNIBUS"].reset_index(drop=True)
        ranks = sets.groupby("phenotype").set.agg(lambda names: list(names).index(PLANTED_SET) + 1)
        results[kind] = {
            "n_genes_tested": summary["n_genes_tested"],
            "n_sets": int(len(omnibus)),
            "planted_pathway_rank_omnibus": int(ranks["OMNIBUS"]),
            "planted_pathway_p_omnibus": float(omnibus.p[omnibus.set == PLANTED_SET].iloc[0]),
            "planted_pathway_best_rank_single": int(ranks.drop("OMNIBUS").min()),
            "seconds_gene_tests": summary["seconds_gene_tests"],
        }
    return results


def _rhe_settings() -> dict:
    """The heritability stage's settings: RheOptions' defaults."""
    from dataclasses import asdict

    from wm_jax.stage_options import RheOptions

    return asdict(RheOptions())


def stage_heritability(config, d: Path) -> dict:
    """SNP h2 of every phenotype of each set by RHE (`wm-jax h2 --method rhe`), on the held-out
    subjects (those the phenotype tables hold), adjusted for the cohort's covariates; with the
    simulator's truth: each factor's h2 on the simulated genome."""
    from wm_jax.data.source import GenotypeInput
    from wm_jax.heritability.rhe import rhe_table
    from wm_jax.stage_options import RheOptions

    (d / "h2").mkdir(exist_ok=True)
    results = {}
    for kind, (source, prefix) in PHENOTYPE_SETS.items():
        columns = pd.read_csv(d / source, sep="\t", nrows=0).columns
        table = rhe_table(
            GenotypeInput("bfile", str(d / "cohort" / "genotypes")),
            str(d / source),
            ",".join(c for c in columns if c.startswith(prefix)),
            str(d / "cohort" / "covariates.tsv"),
            None,
            RheOptions(),
        )
        _publish_table(table, d / "h2" / f"{kind}.h2.tsv")
        results[kind] = {
            "n_phenotypes": int(len(table)),
            "mean_h2": float(table.h2.mean()),
            "mean_se": float(table.se.mean()),
            "n_subjects": int(table.n.iloc[0]),
        }
    factors = json.loads((d / "cohort" / "simulation.json").read_text())["factors"]
    results["truth_factor_h2_on_simulated_genome"] = sorted({round(f["h2_on_simulated_genome"], 4) for f in factors})
    return results


def demo_stages(config, d: Path) -> list[Stage]:
    """The pipeline as stages: name, settings, the stages it reads, its outputs, what runs it."""

    def bound(function):
        return lambda: function(config, d)

    gwas_outputs = [f"gwas/{k}_{w}.gwas" for k in PHENOTYPE_SETS for w in ("discovery", "replication")]
    return [
        Stage(
            "simulate", config.sim.to_dict(), [], ["cohort/genotypes.bed", "cohort/truth.tsv"], bound(stage_simulate)
        ),
        Stage(
            "split",
            config.split.to_dict() | {"seed": config.seed},
            ["simulate"],
            ["split.tsv"],
            bound(stage_split),
        ),
        Stage("prepare", {}, ["split"], ["store_train", "store_heldout"], bound(stage_prepare)),
        Stage("train", config.train.to_dict(), ["prepare"], ["encoder/checkpoints"], bound(stage_train)),
        Stage("embed", config.embed.to_dict(), ["train"], ["udip.tsv"], bound(stage_embed)),
        Stage(
            "baselines",
            {"latent_dim": config.train.model.latent_dim},
            ["prepare"],
            ["roi_fa.tsv", "pca.tsv", "oracle.tsv"],
            bound(stage_baselines),
        ),
        Stage("gwas", config.gwas.to_dict(), ["embed", "baselines"], gwas_outputs, bound(stage_gwas)),
        Stage(
            "genes",
            {"window_kb": GeneOptions().window_kb},
            ["gwas"],
            [f"genes/{k}/gene_sets.tsv" for k in PHENOTYPE_SETS],
            bound(stage_genes),
        ),
        Stage(
            "report",
            config.report.to_dict(),
            ["gwas", "genes"],
            [f"report/{k}/report.json" for k in PHENOTYPE_SETS],
            bound(stage_report),
        ),
        Stage(
            "interpret",
            config.interpret.to_dict(),
            ["embed", "report"],
            ["interpret/interpret.json"],
            bound(stage_interpret),
        ),
        Stage(
            "heritability",
            {"rhe": _rhe_settings()},
            ["embed", "baselines"],
            [f"h2/{k}.h2.tsv" for k in PHENOTYPE_SETS],
            bound(stage_heritability),
        ),
    ]
