"""The end-to-end UDIP-FA pipeline behind `wm-jax demo`, as stages tied together by a manifest.

simulate -> split -> prepare (train / held-out stores) -> train -> embed -> roi -> gwas
(UDIP and ROI-FA, discovery and replication) -> report (UDIP and ROI-FA) -> interpret -> summary.

`DIR/manifest.json` records for each finished stage its fingerprint (the stage's settings and the
fingerprints of the stages it reads from), its outputs, its seconds and when it ended. A rerun
skips a stage whose fingerprint is unchanged and whose outputs exist; a killed run therefore
resumes at the stage it was in (and training resumes from its own latest checkpoint).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

import wm_jax
from wm_jax.errors import atomic_path

log = logging.getLogger("wm_jax")

MANIFEST_VERSION = 1


@dataclass
class Stage:
    name: str
    settings: dict
    needs: list[str]
    outputs: list[str]  # paths relative to the run directory
    run: Callable[[], dict | None]
    result: dict = field(default_factory=dict)


class Manifest:
    def __init__(self, directory: Path) -> None:
        self.path = directory / "manifest.json"
        self.record = {"format_version": MANIFEST_VERSION, "code_version": wm_jax.__version__, "stages": {}}
        if self.path.exists():
            record = json.loads(self.path.read_text())
            if record.get("format_version") == MANIFEST_VERSION:
                self.record = record

    def stage(self, name: str) -> dict | None:
        return self.record["stages"].get(name)

    def finish(self, name: str, entry: dict) -> None:
        self.record["stages"][name] = entry
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(self.record, indent=2, default=str))


def fingerprint(settings: dict, upstream: list[str]) -> str:
    text = json.dumps({"settings": settings, "upstream": upstream}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_stages(directory: Path, stages: list[Stage]) -> dict[str, dict]:
    manifest = Manifest(directory)
    prints: dict[str, str] = {}
    for stage in stages:
        prints[stage.name] = fingerprint(stage.settings, [prints[n] for n in stage.needs])
        done = manifest.stage(stage.name)
        outputs_exist = all((directory / o).exists() for o in stage.outputs)
        if done and done.get("fingerprint") == prints[stage.name] and outputs_exist:
            log.info("demo: %-12s done earlier (%.1f s), skipped", stage.name, done["seconds"])
            stage.result = done.get("result") or {}
            continue
        log.info("demo: %-12s running", stage.name)
        start = time.time()
        stage.result = stage.run() or {}
        seconds = time.time() - start
        manifest.finish(stage.name, {"fingerprint": prints[stage.name], "needs": stage.needs, "settings": stage.settings,
                                     "outputs": stage.outputs, "seconds": round(seconds, 2),
                                     "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "result": stage.result})
        log.info("demo: %-12s finished in %.1f s", stage.name, seconds)
    return manifest.record["stages"]


def split_subjects(subjects: pd.DataFrame, train_fraction: float, replication_fraction: float, seed: int) -> pd.DataFrame:
    """FID IID SET with SET in train / discovery / replication, deterministic by seed."""
    order = np.random.default_rng([seed, 11]).permutation(len(subjects))
    n_train = int(round(train_fraction * len(subjects)))
    n_rep = int(round(replication_fraction * (len(subjects) - n_train)))
    sets = np.empty(len(subjects), object)
    sets[order[:n_train]] = "train"
    sets[order[n_train: n_train + n_rep]] = "replication"
    sets[order[n_train + n_rep:]] = "discovery"
    return pd.DataFrame({"FID": subjects.FID.to_numpy(), "IID": subjects.IID.to_numpy(), "SET": sets})


def _rows_of(table: pd.DataFrame, split: pd.DataFrame, which: str) -> pd.DataFrame:
    """The rows of ``table`` whose IID is in set ``which`` of the split."""
    return table[table.IID.astype(str).isin(set(split.IID[split.SET == which].astype(str)))]


def demo(config, out: str) -> dict:
    """Run (or resume) the whole pipeline into ``out``; returns the summary also written to summary.json."""
    from wm_jax.data.store import Preprocessing, prepare_store
    from wm_jax.gwas.run import GwasOptions, run_gwas
    from wm_jax.interpret import PerdiOptions, interpret
    from wm_jax.roi import tract_means
    from wm_jax.simulate.cohort import simulate_cohort
    from wm_jax.train.loop import embed, train_and_evaluate

    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    cohort = d / "cohort"
    seed = int(config.seed)

    def simulate():
        simulate_cohort(config.sim, cohort, overwrite=True)
        return {"n_subjects": int(config.sim.n_subjects), "shape": list(config.sim.shape)}

    def split():
        subjects = pd.read_csv(cohort / "subjects.tsv", sep="\t", dtype={"FID": str, "IID": str})
        subjects["fa_path"] = [str((cohort / p).resolve()) for p in subjects.fa_path]  # the tables live elsewhere
        table = split_subjects(subjects, config.split.train_fraction, config.split.replication_fraction, seed)
        with atomic_path(d / "split.tsv") as tmp:
            table.to_csv(tmp, sep="\t", index=False)
        is_train = (table.SET == "train").to_numpy()  # split_subjects keeps the subjects' row order
        for name, rows in (("subjects_train.tsv", subjects[is_train]), ("subjects_heldout.tsv", subjects[~is_train])):
            with atomic_path(d / name) as tmp:
                rows.to_csv(tmp, sep="\t", index=False)
        counts = table.SET.value_counts().to_dict()
        log.info("split: %d subjects -> %d train, %d discovery, %d replication", len(table), counts.get("train", 0),
                 counts.get("discovery", 0), counts.get("replication", 0))
        return {k: int(v) for k, v in counts.items()}

    def prepare():
        prepare_store(d / "subjects_train.tsv", d / "store_train", Preprocessing(), overwrite=True)
        prepare_store(d / "subjects_heldout.tsv", d / "store_heldout", Preprocessing(), overwrite=True)

    def train():
        summary = train_and_evaluate(config.train, str(d / "encoder"), str(d / "store_train"))
        return {k: v for k, v in (summary or {}).items() if isinstance(v, (int, float, str))}

    def embed_stage():
        embed(str(d / "encoder"), str(d / "store_heldout"), str(d / "udip.tsv"), step="best")

    def roi():
        from wm_jax.data.store import VolumeStore

        frame = tract_means(VolumeStore.open(d / "store_heldout"), cohort / "atlas.nii.gz", cohort / "atlas_labels.tsv")
        with atomic_path(d / "roi_fa.tsv") as tmp:
            frame.to_csv(tmp, sep="\t", index=False, float_format="%.6g")

    phenotype_sets = {"udip": "udip.tsv", "roi": "roi_fa.tsv"}

    def gwas():
        table = pd.read_csv(d / "split.tsv", sep="\t", dtype={"FID": str, "IID": str})
        options = GwasOptions(maf=float(config.gwas.maf), block_size=int(config.gwas.block_size))
        (d / "gwas").mkdir(exist_ok=True)
        tests = {}
        for kind, source in phenotype_sets.items():
            phenotypes = pd.read_csv(d / source, sep="\t", dtype={"FID": str, "IID": str})
            names = ",".join(c for c in phenotypes.columns if c.startswith(("UDIP", "FA_")))
            for which in ("discovery", "replication"):
                pheno = d / "gwas" / f"{kind}_{which}.pheno.tsv"
                with atomic_path(pheno) as tmp:
                    _rows_of(phenotypes, table, which).to_csv(tmp, sep="\t", index=False, float_format="%.6g")
                run_gwas(str(cohort / "genotypes"), str(pheno), str(cohort / "covariates.tsv"),
                         str(d / "gwas" / f"{kind}_{which}"), dataclasses.replace(options, pheno_names=names))
                meta = json.loads((d / "gwas" / f"{kind}_{which}.gwas" / "meta.json").read_text())
                tests[f"{kind}_{which}"] = {"variants": meta["n_variants"], "phenotypes": len(meta["phenotypes"])}
        return tests

    def report():
        from wm_jax.reporting import ClumpOptions, build_report

        options = ClumpOptions(p1=float(config.report.clump_p1), p2=float(config.report.clump_p2),
                               r2=float(config.report.clump_r2), kb=float(config.report.clump_kb))
        results = {}
        for kind in phenotype_sets:
            results[kind] = build_report(str(d / "gwas" / f"{kind}_discovery"), str(cohort / "genotypes"),
                                         str(d / "report" / kind), replication_gwas=str(d / "gwas" / f"{kind}_replication"),
                                         truth=str(cohort / "truth.tsv"), options=options)
        return results

    def interpret_stage():
        options = PerdiOptions(n_subjects=int(config.interpret.n_subjects),
                               n_permutations=int(config.interpret.n_permutations), seed=seed)
        return interpret(str(d / "encoder"), str(d / "udip.tsv"), str(d / "interpret"),
                         store=str(d / "store_heldout"), atlas=str(cohort / "atlas.nii.gz"),
                         labels=str(cohort / "atlas_labels.tsv"), step="best", options=options)

    sim_settings = config.sim.to_dict()
    stages = [
        Stage("simulate", sim_settings, [], ["cohort/genotypes.bed", "cohort/truth.tsv"], simulate),
        Stage("split", config.split.to_dict() | {"seed": seed}, ["simulate"], ["split.tsv"], split),
        Stage("prepare", {}, ["split"], ["store_train", "store_heldout"], prepare),
        Stage("train", config.train.to_dict(), ["prepare"], ["encoder/checkpoints"], train),
        Stage("embed", {}, ["train"], ["udip.tsv"], embed_stage),
        Stage("roi", {}, ["prepare"], ["roi_fa.tsv"], roi),
        Stage("gwas", config.gwas.to_dict(), ["embed", "roi"],
              [f"gwas/{k}_{w}.gwas" for k in phenotype_sets for w in ("discovery", "replication")], gwas),
        Stage("report", config.report.to_dict(), ["gwas"], ["report/udip/report.json", "report/roi/report.json"], report),
        Stage("interpret", config.interpret.to_dict(), ["embed"], ["interpret/interpret.json"], interpret_stage),
    ]
    record = run_stages(d, stages)
    summary = make_summary(d, record)
    with atomic_path(d / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=str))
    return summary


def make_summary(d: Path, record: dict) -> dict:
    """The headline figures of a finished run, from the stages' results."""
    reports = record["report"]["result"]
    train = record["train"]["result"]
    metrics = [json.loads(line) for line in (d / "encoder" / "metrics.jsonl").read_text().splitlines() if line.strip()]
    val = [m["val_loss"] for m in metrics if "val_loss" in m]
    interpret = record["interpret"]["result"]
    comparison = {}
    for kind, rep in reports.items():
        comparison[kind] = {key: rep.get(key) for key in (
            "n_phenotypes", "lambda_median", "lambda_min", "lambda_max", "omnibus_lambda", "n_loci", "n_leads",
            "n_replicated", "n_planted", "n_planted_recovered", "n_false_loci")}
    return {
        "run_directory": str(d.resolve()),
        "seconds": {name: stage["seconds"] for name, stage in record.items()},
        "total_seconds": round(sum(stage["seconds"] for stage in record.values()), 1),
        "subjects": record["split"]["result"],
        "encoder": {"validation_loss": val, "train": train},
        "udip_vs_roi_fa": comparison,
        "perdi_top_tract": interpret.get("top_tract", {}),
        "files": {"udip_report": "report/udip/report.md", "roi_report": "report/roi/report.md",
                  "perdi_maps": "interpret/perdi_abs_t.nii.gz", "perdi_enrichment": "interpret/enrichment.tsv",
                  "manifest": "manifest.json"},
    }


def print_summary(summary: dict) -> str:
    """The end-of-run text: timing, the encoder, and UDIPs against ROI-FA."""
    lines = [f"wm-jax demo: {summary['run_directory']} ({summary['total_seconds']:.0f} s)",
             "  subjects: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["subjects"].items())),
             "  validation loss by epoch: " + ", ".join(f"{v:.4f}" for v in summary["encoder"]["validation_loss"])]
    header = ["", "UDIP", "ROI-FA"]
    rows = [("phenotypes", "n_phenotypes"), ("lambda GC (median)", "lambda_median"), ("loci (discovery)", "n_loci"),
            ("leads replicated", "n_replicated"), ("planted variants", "n_planted"),
            ("planted recovered", "n_planted_recovered"), ("loci without a planted variant", "n_false_loci")]
    cmp = summary["udip_vs_roi_fa"]
    lines.append("  " + f"{header[0]:32s}{header[1]:>10s}{header[2]:>10s}")
    for label, key in rows:
        values = [cmp.get(kind, {}).get(key) for kind in ("udip", "roi")]
        text = [("-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)) for v in values]
        lines.append("  " + f"{label:32s}{text[0]:>10s}{text[1]:>10s}")
    lines.append("  reports: " + ", ".join(summary["files"][k] for k in ("udip_report", "roi_report")))
    lines.append("  summary: summary.json, manifest: manifest.json")
    return "\n".join(lines)
