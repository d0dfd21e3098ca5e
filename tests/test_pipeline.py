"""`wm-jax demo` end to end on a small cohort: every stage's files, the summary, the manifest's
skip-on-rerun and resume after a failure."""

import json

import numpy as np
import pandas as pd
import pytest

from wm_jax.config import load_config

from html_pages import check_self_contained, load_in_chromium


def small_config():
    config = load_config("pipeline_demo")
    config.sim.n_subjects = 360
    config.sim.shape = (16, 20, 16)
    config.sim.genotypes.n_chromosomes = 2
    config.sim.genotypes.chromosome_length = 1.5e6
    config.sim.pc_max_variants = 4000
    config.train.model.channels = (4, 8)
    config.train.model.latent_dim = 4
    config.train.batch_size = 16
    config.interpret.n_subjects = 20
    config.interpret.n_permutations = 200
    config.report.clump_p1 = 1e-4  # a few loci even at this size
    return config


def test_demo_sections_are_the_options_of_the_subcommands():
    from wm_jax.config import apply_overrides
    from wm_jax.errors import InputError
    from wm_jax.gwas.run import GwasOptions
    from wm_jax.pipeline.stages import stage_options
    from wm_jax.stage_options import ClumpOptions, PerdiOptions

    config = load_config("pipeline_demo")
    options = stage_options(config)
    assert options["gwas"] == GwasOptions(maf=0.05)
    assert options["report"] == ClumpOptions()
    assert options["interpret"] == PerdiOptions(n_subjects=16, n_permutations=2000, seed=0)
    overrides = ["--config.report.clump_kb=100", "--config.gwas.block_size=64", "--config.seed=3"]
    options = stage_options(apply_overrides(config, overrides))
    assert (options["report"].kb, options["gwas"].block_size, options["interpret"].seed) == (100.0, 64, 3)
    config.gwas.mafx = 0.1
    with pytest.raises(InputError, match=r"--config\.gwas\.mafx: not an option of GwasOptions"):
        stage_options(config)
    del config.gwas.mafx
    config.interpret.seed = 5  # PerDI's seed is the demo's
    with pytest.raises(InputError, match=r"--config\.interpret\.seed: not an option of PerdiOptions"):
        stage_options(config)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    from wm_jax.pipeline.run import demo

    out = tmp_path_factory.mktemp("demo") / "run"
    return out, demo(small_config(), str(out))


def test_demo_writes_every_stage_and_a_summary(demo_run):
    out, summary = demo_run
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary, default=str))
    subjects = summary["subjects"]
    assert sum(subjects.values()) == 360 and subjects["train"] == 108
    # the PCA start (step 0), every 5 steps inside the epoch (val_every), and the epoch's end (step 7);
    # patience 3 cannot be reached with 2 validations after the start
    assert summary["encoder"]["validation_steps"] == [0, 5, 7] and len(summary["encoder"]["validation_loss"]) == 3
    best = summary["encoder"]["validation_steps"][int(np.argmin(summary["encoder"]["validation_loss"]))]
    assert summary["encoder"]["checkpoint_step"] == best
    assert set(summary["udip_vs_roi_fa"]) == {"udip", "roi", "pca", "oracle"}
    for kind, row in summary["udip_vs_roi_fa"].items():
        assert row["n_planted"] == 8
        assert 0 <= row["n_planted_recovered"] <= row["n_planted"]
        assert 0.5 < row["lambda_median"] < 2.0
        recall = summary["recall_by_kind"][kind]
        assert set(recall) == {"local", "tract", "cross", "contrast"}
        assert sum(r["any"] for r in recall.values()) == row["n_planted_recovered"]
    assert summary["udip_vs_roi_fa"]["udip"]["n_phenotypes"] == 4
    assert summary["udip_vs_roi_fa"]["pca"]["n_phenotypes"] == 4
    assert summary["udip_vs_roi_fa"]["roi"]["n_phenotypes"] == 11
    assert summary["udip_vs_roi_fa"]["oracle"]["n_phenotypes"] == 8
    assert isinstance(summary["verdict"]["holds"], bool) and "claim" in summary["verdict"]["text"]
    encoder = summary["encoder"]
    assert 0 < encoder["heldout_reconstruction_mse"] and 0 < encoder["pca_heldout_reconstruction_mse"]
    udip = pd.read_csv(out / "udip.tsv", sep="\t")
    assert encoder["heldout_reconstruction_mse"] == pytest.approx(udip.reconstruction_mse.mean())
    # The rotated UDIPs are whitened over the held-out subjects.
    np.testing.assert_allclose(np.cov(udip.filter(like="UDIP").to_numpy(), rowvar=False), np.eye(4), atol=1e-3)
    truth = pd.read_csv(out / "cohort" / "truth.tsv", sep="\t")
    assert {"chrom", "pos", "kind"} <= set(truth.columns)
    for kind in ("udip", "roi"):
        loci = pd.read_csv(out / "report" / kind / "loci.tsv", sep="\t")
        assert {"chrom", "lead_pos", "start", "end"} <= set(loci.columns)
    for path in summary["files"].values():
        assert (out / path).exists(), path
    assert list((out / "report" / "udip").glob("*.png"))
    montages = out / "interpret" / "montages"
    assert len(list(montages.glob("UDIP?.png"))) == len(list(montages.glob("UDIP?_glass.png"))) == 4
    from PIL import Image

    top_tract = json.loads((out / "interpret" / "interpret.json").read_text())["top_tract"]
    for name, top in top_tract.items():  # nilearn's stat map over the mean FA, the top tract named
        text = Image.open(montages / f"{name}.png").text
        where = f"top tract {top['tract']} (" if top["enrichment"] > 0 else "its top voxels lie in no atlas tract"
        assert text["Title"].startswith(f"{name}: {where}") and "plot_stat_map" in text["Software"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["stages"]) == {
        "simulate",
        "split",
        "prepare",
        "train",
        "embed",
        "baselines",
        "gwas",
        "report",
        "interpret",
        "heritability",
        "genes",
    }
    h2 = summary["heritability"]
    for kind in ("udip", "roi", "pca", "oracle"):
        table = pd.read_csv(out / "h2" / f"{kind}.h2.tsv", sep="\t")
        assert len(table) == summary["udip_vs_roi_fa"][kind]["n_phenotypes"] == h2[kind]["n_phenotypes"]
        assert table.se.gt(0).all() and h2[kind]["mean_h2"] == pytest.approx(table.h2.mean(), rel=1e-4)
        assert h2[kind]["n_subjects"] == subjects["discovery"] + subjects["replication"]
    assert h2["truth_factor_h2_on_simulated_genome"]


def test_rerun_skips_finished_stages_and_resumes_after_a_failure(demo_run, monkeypatch, caplog):
    import logging

    from wm_jax.pipeline import run as pipeline

    out, summary = demo_run
    caplog.set_level(logging.INFO, logger="wm_jax")
    again = pipeline.demo(small_config(), str(out))
    assert again["udip_vs_roi_fa"] == summary["udip_vs_roi_fa"]
    assert sum("skipped" in r.getMessage() for r in caplog.records) == 11

    # A changed report setting re-runs the report and what reads it (PerDI's overlap with the loci),
    # not the genes stage the report reads; a failure in it leaves earlier stages done.
    config = small_config()
    config.report.clump_r2 = 0.2

    def broken(*args, **kwargs):
        raise RuntimeError("killed")

    import wm_jax.reporting.build

    monkeypatch.setattr(wm_jax.reporting.build, "build_report", broken)
    with pytest.raises(RuntimeError, match="killed"):
        pipeline.demo(config, str(out))
    monkeypatch.undo()
    caplog.clear()
    caplog.set_level(logging.INFO, logger="wm_jax")
    pipeline.demo(config, str(out))
    ran = [r.getMessage().split()[1] for r in caplog.records if r.getMessage().endswith("running")]
    assert ran == ["report", "interpret"]


def test_interpret_rejects_a_udip_table_of_other_subjects(demo_run, tmp_path, capsys):
    import pandas as pd

    from wm_jax.cli import main

    out, _ = demo_run
    table = pd.read_csv(out / "udip.tsv", sep="\t")
    table["IID"] = "stranger_" + table["IID"].astype(str)
    table["FID"] = table["IID"]
    strangers = tmp_path / "udip.tsv"
    table.to_csv(strangers, sep="\t", index=False)
    code = main(
        [
            "interpret",
            "--workdir",
            str(out / "encoder"),
            "--udip",
            str(strangers),
            "--store",
            str(out / "store_heldout"),
            "--atlas",
            str(out / "cohort" / "atlas.nii.gz"),
            "--labels",
            str(out / "cohort" / "atlas_labels.tsv"),
            "--out",
            str(tmp_path / "perdi"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "wm-jax interpret: error:" in err and f"none of its {len(table)} subjects is in the store" in err
    assert not (tmp_path / "perdi").exists()


def test_demo_report_html_opens_in_chromium(demo_run, tmp_path):
    """DIR/report.html: self-contained, the four families' plots side by side, every UDIP's PerDI
    maps with its top tract, loaded in headless Chromium with every image decoded and no console
    message or error (tests/html_pages.py says how)."""
    out, summary = demo_run
    assert summary["files"]["report_html"] == "report.html"
    page = check_self_contained(out / "report.html")
    top_tract = json.loads((out / "interpret" / "interpret.json").read_text())["top_tract"]
    assert len(page.images) == 2 * 4 + 2 * len(top_tract) == 2 * 4 + 2 * 4  # Manhattan + QQ; stat map + glass brain
    assert {"plots-udip", "plots-roi", "plots-pca", "plots-oracle", "perdi", "summary", "loci", "files"} <= set(
        page.ids
    )
    for name, top in top_tract.items():
        where = f"top tract {top['tract']}" if top["enrichment"] > 0 else "top voxels in no atlas tract"
        assert f"PerDI stat map of {name}, {where}" in page.image_alts
    words = " ".join(page.text)
    assert summary["verdict"]["text"] in words and "SNP heritability" in words and "Genes and pathways" in words
    assert {"summary.json", "report/udip/loci.tsv", "interpret/perdi_abs_t.nii.gz", "h2/roi.h2.tsv"} <= set(page.links)
    assert {"report/udip/gene_sets.tsv", "report/oracle/loci_genes.tsv"} <= set(page.links)

    check, console = load_in_chromium(out / "report.html", tmp_path / "report.png", tmp_path / "profile")
    assert check["errors"] == [] and console == []
    assert check["images"] == check["decoded"] == len(page.images) and check["tables"] == page.tables >= 5
    ids, lefts, tops = zip(*check["families"])
    assert ids == ("plots-udip", "plots-roi", "plots-pca", "plots-oracle")
    assert len(set(tops)) == 1 and list(lefts) == sorted(set(lefts))  # one row, left to right
    from PIL import Image

    with Image.open(tmp_path / "report.png") as shot:
        pixels = np.asarray(shot.convert("L"), np.float64)
    assert pixels.shape == (2400, 1400) and pixels.std() > 10  # drawn, not blank


def test_interpret_draws_over_a_template_the_user_gives(demo_run, tmp_path, capsys, monkeypatch):
    """--background: the stat maps over the user's FA template (its own grid, here twice as fine),
    in the same world coordinates; a template that is not an FA map is one line naming it, exit 2,
    and no output."""
    import nibabel as nib
    from nilearn import plotting

    from wm_jax.cli import main

    out, _ = demo_run
    mean_fa = nib.load(out / "interpret" / "mean_fa.nii.gz")
    fine = mean_fa.affine.copy()
    fine[:3, :3] /= 2
    data = np.repeat(np.repeat(np.repeat(np.asarray(mean_fa.dataobj), 2, 0), 2, 1), 2, 2)
    nib.save(nib.Nifti1Image(np.clip(data, 0, 1), fine), tmp_path / "template.nii.gz")
    nib.save(nib.Nifti1Image(data * 5 + 1, fine), tmp_path / "not_fa.nii.gz")
    backgrounds = []

    def spy(stat, *args, _real=plotting.plot_stat_map, **kwargs):
        backgrounds.append(kwargs["bg_img"])
        return _real(stat, *args, **kwargs)

    monkeypatch.setattr(plotting, "plot_stat_map", spy)
    common = ["interpret", "--workdir", str(out / "encoder"), "--udip", str(out / "udip.tsv")]
    common += ["--atlas", str(out / "cohort" / "atlas.nii.gz"), "--labels", str(out / "cohort" / "atlas_labels.tsv")]
    common += ["--n-subjects", "3", "--permutations", "10"]
    assert main([*common, "--background", str(tmp_path / "template.nii.gz"), "--out", str(tmp_path / "p")]) == 0
    assert len(backgrounds) == 4 and all(np.array_equal(b.affine, fine) for b in backgrounds)
    assert (tmp_path / "p" / "montages" / "UDIP4_glass.png").is_file()
    capsys.readouterr()
    assert main([*common, "--background", str(tmp_path / "not_fa.nii.gz"), "--out", str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("wm-jax interpret: error: ") and "not_fa.nii.gz" in err.splitlines()[-1]
    assert not (tmp_path / "q").exists()
