"""Hostile inputs to every command, as a table: each case gives a command line (built on the tiny
cohort or a broken copy of one of its files) and a fragment of the expected message. Every case
must end in exit 2 with one line `wm-jax <command>: error: <file or option>: <what was expected>`,
no traceback, no output or temporary left behind, and no pre-existing file touched.

The CLI runs in-process (`wm_jax.cli.main`), so the module costs little more than its fixtures.
Tests after the table: the output policy's successful paths (reruns, --overwrite), temporaries of
a killed run, checkpoint retention and damaged checkpoints, chromosome codes, -9, config loading.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from wm_jax.cli import main

ERROR_LINE = re.compile(r"^wm-jax (?P<command>[a-z][a-z0-9]*): error: (?P<where>[^:]+): (?P<what>.+)$")


# ---------------------------------------------------------------------------------------------
# Fixtures: the tiny cohort, a phenotype table, a store, a GWAS output and a checkpoint, once.
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ctx(tiny_cohort, tmp_path_factory):
    from wm_jax.data.store import Preprocessing, prepare_store
    from wm_jax.gwas.run import GwasOptions, run_gwas

    base = tmp_path_factory.mktemp("hostile")
    covariates = pd.read_csv(tiny_cohort / "covariates.tsv", sep="\t", dtype={"FID": str, "IID": str})
    pheno = covariates[["FID", "IID"]].copy()
    rng = np.random.default_rng(0)
    for name in ("P1", "P2", "P3"):
        pheno[name] = np.round(rng.standard_normal(len(pheno)), 4)
    pheno.to_csv(base / "pheno.tsv", sep="\t", index=False)
    store = prepare_store(
        tiny_cohort / "subjects.tsv", base / "store", Preprocessing(crop=((0, 24), (2, 26), (0, 24)), downsample=2)
    )
    run_gwas(
        str(tiny_cohort / "genotypes"),
        str(base / "pheno.tsv"),
        str(tiny_cohort / "covariates.tsv"),
        str(base / "g"),
        GwasOptions(block_size=256),
    )
    workdir = base / "encoder"
    _fake_checkpoints(workdir, store, val_losses=[0.5])
    return SimpleNamespace(
        cohort=tiny_cohort,
        base=base,
        pheno=base / "pheno.tsv",
        store=store,
        gwas=base / "g",
        workdir=workdir,
        covar=tiny_cohort / "covariates.tsv",
        bfile=tiny_cohort / "genotypes",
    )


def _tiny_train_config():
    from wm_jax.config import load_config

    config = load_config("demo")
    config.model.input_shape = (12, 12, 12)
    config.model.channels = (4, 8)
    config.model.latent_dim = 6
    config.batch_size = 8
    config.epochs = 1
    config.max_subjects = 48
    return config


def _fake_checkpoints(workdir: Path, store: Path, val_losses: list[float], keep: int = 3) -> list[int]:
    """Checkpoints of an untrained tiny model, one per 'epoch' of 5 steps, with these validation
    losses (what training writes, without the cost of training)."""
    from flax import nnx

    from wm_jax import checkpoint
    from wm_jax.sharding import data_mesh
    from wm_jax.train.state import build, config_hash, model_config

    config = _tiny_train_config()
    model, optimizer = build(config, model_config(config), data_mesh(), 5)
    manager = checkpoint.checkpoint_manager(workdir, keep=keep)
    steps = []
    for epoch, loss in enumerate(val_losses, start=1):
        record = {
            "format_version": checkpoint.CHECKPOINT_FORMAT_VERSION,
            "code_version": "test",
            "config": json.loads(config.to_json()),
            "config_hash": config_hash(config),
            "store": str(Path(store).resolve()),
            "epoch": epoch,
            "batch_in_epoch": 0,
            "step": 5 * epoch,
        }
        checkpoint.save(manager, 5 * epoch, nnx.state((model, optimizer)), record, metrics={"val_loss": loss})
        with open(workdir / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps({"step": 5 * epoch, "epoch": epoch, "val_loss": loss}) + "\n")
        steps.append(5 * epoch)
    manager.close()
    return steps


# ---------------------------------------------------------------------------------------------
# Broken inputs, made in the case's own directory `d` from the shared ones.
# ---------------------------------------------------------------------------------------------
def _write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _pheno_edit(c, d: Path, edit) -> Path:
    lines = c.pheno.read_text().splitlines()
    lines = edit(lines)
    return _write(d / "pheno.tsv", "\n".join(lines) + "\n")


def _renamed_pheno(c, d: Path, new_name: str) -> Path:
    return _pheno_edit(c, d, lambda ls: ["\t".join(ls[0].split("\t")[:4] + [new_name])] + ls[1:])


def _config_file(d: Path, body: str) -> Path:
    return _write(d / "my_config.py", body)


def _store_copy(c, d: Path) -> Path:
    shutil.copytree(c.store, d / "store")
    return d / "store"


def _atlas(c, d: Path, shape=None, shift=0.0) -> Path:
    import nibabel as nib

    image = nib.load(str(c.cohort / "atlas.nii.gz"))
    data = np.asarray(image.get_fdata())
    if shape is not None:
        data = np.pad(data, [(0, s - n) for s, n in zip(shape, data.shape)])
    affine = image.affine.copy()
    affine[0, 3] += shift
    nib.save(nib.Nifti1Image(data.astype(np.float32), affine), str(d / "atlas.nii.gz"))
    return d / "atlas.nii.gz"


def _gwas_copy(c, d: Path, damage=None) -> Path:
    shutil.copytree(Path(f"{c.gwas}.gwas"), d / "g.gwas")
    if damage:
        damage(d / "g.gwas")
    return d / "g"


def _truncate(path: Path, keep: int = 100) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _foreign_dir(d: Path, *names: str) -> Path:
    out = d / "existing"
    out.mkdir()
    for name in names:
        _write(out / name, "someone's data\n")
    return out


def _under_file(d: Path) -> Path:
    return _write(d / "plain_file", "x") / "out"


def _read_only_parent(d: Path) -> Path:
    """A directory nobody may write in: /sys when running as root (permissions do not stop root)."""
    if os.geteuid() == 0:
        return Path("/sys/wm-jax-test/out")
    locked = d / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    return locked / "out"


def _gwas_args(c, pheno=None, *extra, out=None, d=None):
    return [
        "gwas",
        "--bfile",
        str(c.bfile),
        "--pheno",
        str(pheno or c.pheno),
        "--covar",
        str(c.covar),
        "--out",
        str(out or d / "res"),
        *extra,
    ]


def _genotype_rows(c, every: int = 10):
    from wm_jax.data.plink import PlinkDataset

    data = PlinkDataset(c.bfile)
    rows = np.arange(0, data.n_variants, every)
    return data, rows, data.bed.dosages(rows)


def _bgen_file(c, d: Path, damage=None) -> Path:
    """The cohort's genotypes (every 10th variant) as an 8-bit zlib BGEN with a .sample beside it;
    ``damage(path, variant_offsets)`` then breaks it."""
    from genotype_files import imputed_probabilities, quantize, write_bgen

    from wm_jax.data.bgen import BgenDataset

    data, rows, alt = _genotype_rows(c)
    bim = data.bim.iloc[rows]
    variants = list(zip(bim.chrom.astype(str), bim.id, bim.pos.astype(int), bim.ref, bim.alt))
    stored = quantize(imputed_probabilities(alt, np.random.default_rng(0)), 8)
    path = d / "g.bgen"
    write_bgen(path, stored, 8, 1, variants, list(data.fam.iid), np.isnan(alt))
    sample_lines = ["ID_1 ID_2 missing sex", "0 0 0 D", *(f"{f} {i} 0 NA" for f, i in zip(data.fam.fid, data.fam.iid))]
    _write(d / "g.sample", "\n".join(sample_lines) + "\n")
    if damage:
        offsets = BgenDataset(path, d / "g.sample")._offsets
        damage(path, offsets)
    return path


def _corrupt_block(path: Path, offsets) -> None:
    """Garbage inside the compressed genotype block of a variant in the middle of the file."""
    data = bytearray(path.read_bytes())
    start = int(offsets[len(offsets) // 2]) + 8
    data[start + 2 : start + 40] = bytes(range(38))
    path.write_bytes(bytes(data))


def _truncate_mid_variant(path: Path, offsets) -> None:
    """The BGEN cut inside the genotype block of a variant in the middle."""
    _truncate(path, int(offsets[len(offsets) // 2]) + 20)


def _truncate_pgen_body(prefix: Path) -> None:
    """The .pgen cut in half: its header and index still read, its last variants do not."""
    path = Path(f"{prefix}.pgen")
    _truncate(path, path.stat().st_size // 2)


def _pgen_prefix(c, d: Path, damage=None) -> Path:
    """The cohort's hard calls (every 10th variant) as .pgen/.pvar/.psam; ``damage(prefix)`` breaks it."""
    from genotype_files import write_pgen

    data, rows, alt = _genotype_rows(c)
    write_pgen(d / "g", alt, data.fam, data.bim.iloc[rows])
    if damage:
        damage(d / "g")
    return d / "g"


def _with_genotypes(c, d, *genotype_args, extra=()):
    """_gwas_args with other genotype options in place of --bfile."""
    args = _gwas_args(c, None, *extra, d=d)
    at = args.index("--bfile")
    return args[:at] + list(genotype_args) + args[at + 2 :]


def _udip_table(c, d: Path) -> Path:
    table = pd.read_csv(c.store / "index.tsv", sep="\t", dtype={"FID": str, "IID": str})[["FID", "IID"]]
    for j in range(6):
        table[f"UDIP{j + 1}"] = 0.1 * j
    table.to_csv(d / "udip.tsv", sep="\t", index=False)
    return d / "udip.tsv"


def _interpret_args(c, d, *extra, out=None, udip=None, store=None):
    return [
        "interpret",
        "--workdir",
        str(c.workdir),
        "--udip",
        str(udip or _udip_table(c, d)),
        "--store",
        str(store or c.store),
        "--atlas",
        str(c.cohort / "atlas.nii.gz"),
        "--labels",
        str(c.cohort / "atlas_labels.tsv"),
        "--out",
        str(out or d / "perdi"),
        *extra,
    ]


def _train_args(c, d, *extra, store=None, workdir=None):
    return [
        "train",
        "--config",
        "demo",
        "--store",
        str(store or c.store),
        "--workdir",
        str(workdir or d / "w"),
        "--config.model.input_shape=(12,12,12)",
        "--config.model.channels=(4,8)",
        "--config.model.latent_dim=6",
        *extra,
    ]


def _embed_args(c, d, *extra, out=None, workdir=None):
    return [
        "embed",
        "--workdir",
        str(workdir or c.workdir),
        "--store",
        str(c.store),
        "--out",
        str(out or d / "u.tsv"),
        *extra,
    ]


def _report_args(c, d, *extra, gwas=None, out=None):
    return ["report", "--gwas", str(gwas or c.gwas), "--bfile", str(c.bfile), "--out", str(out or d / "rep"), *extra]


def _genes_args(c, d, *extra, genes=None, out=None):
    genes = str(genes or c.cohort / "genes.tsv")
    return [
        "genes",
        "--gwas",
        str(c.gwas),
        "--bfile",
        str(c.bfile),
        "--genes",
        genes,
        "--out",
        str(out or d / "gn"),
        *extra,
    ]


def _chr_prefixed_genes(c, d) -> Path:
    genes = pd.read_csv(c.cohort / "genes.tsv", sep="\t", dtype={"chrom": str})
    genes.assign(chrom="chr" + genes.chrom).to_csv(d / "chr_genes.tsv", sep="\t", index=False)
    return d / "chr_genes.tsv"


def _prepare_args(c, d, *extra, subjects=None, out=None):
    return ["prepare", "--subjects", str(subjects or c.cohort / "subjects.tsv"), "--out", str(out or d / "st"), *extra]


def _roi_args(c, d, *extra, store=None, atlas=None, labels=None, out=None):
    return [
        "roi",
        "--store",
        str(store or c.store),
        "--atlas",
        str(atlas or c.cohort / "atlas.nii.gz"),
        "--labels",
        str(labels or c.cohort / "atlas_labels.tsv"),
        "--out",
        str(out or d / "roi.tsv"),
        *extra,
    ]


def _subjects_abs(c, d: Path) -> list[str]:
    table = pd.read_csv(c.cohort / "subjects.tsv", sep="\t", dtype=str)
    table["fa_path"] = [str(c.cohort / p) for p in table.fa_path]
    return table.to_csv(sep="\t", index=False).splitlines()


def _subjects_broken(c, d: Path, edit) -> Path:
    return _write(d / "subjects.tsv", "\n".join(edit(_subjects_abs(c, d))) + "\n")


def _bgen_header_count(count) -> callable:
    """A damage for _bgen_file: the header's variant count set to ``count(n)`` (n: the true count)."""

    def damage(path: Path, offsets) -> None:
        data = bytearray(path.read_bytes())
        struct.pack_into("<I", data, 8, count(len(offsets)))
        path.write_bytes(bytes(data))

    return damage


def _pgen_header_count(prefix: Path) -> None:
    """The .pgen header's variant count set to 2^31 - 3 (plink2's largest)."""
    path = Path(f"{prefix}.pgen")
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, 3, 2**31 - 3)
    path.write_bytes(bytes(data))


def _bfile_with_x(c, d: Path, code: str = "X") -> Path:
    """The cohort's genotypes with chromosome 2 renamed ``code``."""
    for ext in ("bed", "fam"):
        shutil.copy(f"{c.bfile}.{ext}", d / f"g.{ext}")
    bim = Path(f"{c.bfile}.bim").read_text().splitlines()
    renamed = [code + line[1:] if line.startswith("2\t") else line for line in bim]
    _write(d / "g.bim", "\n".join(renamed) + "\n")
    return d / "g"


def _covar_edit(c, d: Path, column: str, values) -> Path:
    table = pd.read_csv(c.covar, sep="\t", dtype=str)
    table[column] = values(len(table))
    table.to_csv(d / "covariates.tsv", sep="\t", index=False)
    return d / "covariates.tsv"


def _fa_stored_as(c, d: Path, make) -> Path:
    """The subjects table with subject 2's FA map replaced by ``make(fa, affine)`` (a NIfTI image)."""
    import nibabel as nib

    lines = _subjects_abs(c, d)
    fields = lines[2].split("\t")
    column = lines[0].split("\t").index("fa_path")
    image = nib.load(fields[column])
    nib.save(make(image.get_fdata().astype(np.float32), image.affine), str(d / "fa.nii.gz"))
    fields[column] = str(d / "fa.nii.gz")
    return _write(d / "subjects.tsv", "\n".join(lines[:2] + ["\t".join(fields)] + lines[3:]) + "\n")


def _nifti(data, affine):
    import nibabel as nib

    return nib.Nifti1Image(data, affine)


def _one_label(d: Path) -> Path:
    """A labels table whose one tract survives the shared store's downsampling: roi then runs to its end."""
    return _write(d / "labels.tsv", "label\ttract\n1\tcc_genu\n")


def _other_store(c, d: Path) -> Path:
    """Another cohort's store: the same subject IDs (as simulated cohorts have) and grid, other maps."""
    store = _store_copy(c, d)
    index = pd.read_csv(store / "index.tsv", sep="\t", dtype={"FID": str, "IID": str})
    index["nonzero_mean"] = index.nonzero_mean[::-1].to_numpy()
    index.to_csv(store / "index.tsv", sep="\t", index=False)
    return store


def _udip_of_store(c, d: Path) -> Path:
    """A UDIP table whose manifest names the shared store."""
    udip = _udip_table(c, d)
    manifest = {"command": "embed", "checkpoint_step": 5, "store": str(c.store.resolve())}
    _write(Path(f"{udip}.manifest.json"), json.dumps(manifest))
    return udip


def _udip_missing(c, d: Path) -> Path:
    """A UDIP table with UDIP2 missing for every subject (all subjects then lack a whole code)."""
    udip = _udip_table(c, d)
    table = pd.read_csv(udip, sep="\t", dtype={"FID": str, "IID": str})
    table["UDIP2"] = "nan"
    table.to_csv(udip, sep="\t", index=False)
    return udip


SYSTEM_EXIT_CONFIG = "import sys\nsys.exit(0)\n"
NO_GET_CONFIG = "x = 1\n"


# (id, builder(ctx, case_dir) -> argv, expected message fragment)
def _ld_scores(c, d: Path, drop_chromosome: str | None = None, rename: bool = False) -> str:
    """LD scores (LDSC format, one file set per chromosome under d/ld/) of the GWAS's variants;
    a chromosome's files left out, or every SNP renamed, on request. Returns the prefix."""
    import gzip

    variants = pd.read_csv(Path(f"{c.gwas}.gwas") / "variants.tsv", sep="\t", dtype={"#CHROM": str, "ID": str})
    (d / "ld").mkdir()
    for chrom, rows in variants.groupby("#CHROM"):
        if chrom == drop_chromosome:
            continue
        with gzip.open(d / "ld" / f"{chrom}.l2.ldscore.gz", "wt") as handle:
            handle.write("CHR\tSNP\tBP\tL2\n")
            ids = ("x" + rows["ID"]) if rename else rows["ID"]
            handle.writelines(f"{chrom}\t{i}\t{b}\t{1 + k % 7}.5\n" for k, (i, b) in enumerate(zip(ids, rows["POS"])))
        _write(d / "ld" / f"{chrom}.l2.M_5_50", f"{len(rows) * 3}\n")
    return f"{d}/ld/"


def _ldsc_args(c, d, command: str, *extra, ld=None, gwas=None, out=None):
    ld = _ld_scores(c, d) if ld is None else ld
    return [command, "--gwas", str(gwas or c.gwas), "--ldscores", ld, "--out", str(out or d / "o"), *extra]


def _sumstats(c, d: Path, drop: str | None = None, edit=None) -> Path:
    """The first phenotype of the GWAS as an LDSC .sumstats (SNP A1 A2 N Z), a column dropped or edited."""
    directory = Path(f"{c.gwas}.gwas")
    variants = pd.read_csv(directory / "variants.tsv", sep="\t", dtype={"ID": str})
    a2 = np.where(variants["A1"] == variants["REF"], variants["ALT"], variants["REF"])
    z = np.load(directory / "beta.npy")[0] / np.load(directory / "se.npy")[0]
    table = pd.DataFrame({"SNP": variants["ID"], "A1": variants["A1"], "A2": a2, "N": 100, "Z": z})
    table = edit(table) if edit else table
    table.drop(columns=[drop] if drop else []).to_csv(d / "other.sumstats", sep="\t", index=False)
    return d / "other.sumstats"


def _first_chromosome(c) -> str:
    return str(pd.read_csv(Path(f"{c.gwas}.gwas") / "variants.tsv", sep="\t", dtype={"#CHROM": str})["#CHROM"].iloc[0])


CASES = [
    # --- simulate ---------------------------------------------------------------------------
    (
        "simulate-n-subjects-0",
        lambda c, d: ["simulate", "--preset", "tiny", "--out", str(d / "o"), "--n-subjects", "0"],
        "--n-subjects: expected an integer >= 10, found '0'",
    ),
    (
        "simulate-seed-negative",
        lambda c, d: ["simulate", "--preset", "tiny", "--out", str(d / "o"), "--seed", "-1"],
        "--seed: expected an integer in [0, 4294967295], found '-1'",
    ),
    (
        "simulate-seed-huge",
        lambda c, d: ["simulate", "--preset", "tiny", "--out", str(d / "o"), "--seed", "99999999999999999999999"],
        "--seed: expected an integer in [0, 4294967295], found '99999999999999999999999'",
    ),
    (
        "simulate-config-seed-huge",
        lambda c, d: ["simulate", "--preset", "tiny", "--out", str(d / "o"), "--config.seed=99999999999999999999999"],
        "--config.seed: expected an integer in [0, 4294967295]",
    ),
    (
        "simulate-config-n-subjects-0",
        lambda c, d: ["simulate", "--preset", "tiny", "--out", str(d / "o"), "--config.n_subjects=0"],
        "--config.n_subjects: expected an integer >= 10",
    ),
    (
        "simulate-config-shape",
        lambda c, d: ["simulate", "--preset", "tiny", "--out", str(d / "o"), "--config.shape=(2,2,2)"],
        "--config.shape: expected 3 integers in [8, 256]",
    ),
    (
        "simulate-config-shape-huge",
        lambda c, d: ["simulate", "--preset", "tiny", "--out", str(d / "o"), "--config.shape=(100000,100000,100000)"],
        "--config.shape: expected 3 integers in [8, 256], found (100000, 100000, 100000)",
    ),
    (
        "simulate-config-chromosome-length-huge",
        lambda c, d: [
            "simulate",
            "--preset",
            "tiny",
            "--out",
            str(d / "o"),
            "--config.genotypes.chromosome_length=1e308",
        ],
        "--config.genotypes.chromosome_length: expected a number in (0, 2.5e+08], found 1e+308",
    ),
    (
        "simulate-config-chromosomes-23",
        lambda c, d: ["simulate", "--preset", "tiny", "--out", str(d / "o"), "--config.genotypes.n_chromosomes=23"],
        "--config.genotypes.n_chromosomes: expected an integer in [1, 22], found 23",
    ),
    (
        "simulate-config-system-exit",
        lambda c, d: ["simulate", "--config", str(_config_file(d, SYSTEM_EXIT_CONFIG)), "--out", str(d / "o")],
        "could not build the config (SystemExit",
    ),
    (
        "simulate-config-no-get-config",
        lambda c, d: ["simulate", "--config", str(_config_file(d, NO_GET_CONFIG)), "--out", str(d / "o")],
        "expected a function get_config()",
    ),
    (
        "simulate-unknown-preset",
        lambda c, d: ["simulate", "--preset", "huge", "--out", str(d / "o")],
        "huge: no such preset",
    ),
    (
        "simulate-unknown-field",
        lambda c, d: ["simulate", "--preset", "tiny", "--out", str(d / "o"), "--config.nonsense=1"],
        "no such config field 'nonsense'",
    ),
    (
        "simulate-out-foreign-dir",
        lambda c, d: ["simulate", "--preset", "tiny", "--out", str(_foreign_dir(d, "notes.txt"))],
        "was not written by wm-jax simulate",
    ),
    (
        "simulate-out-foreign-dir-overwrite",
        lambda c, d: [
            "simulate",
            "--preset",
            "tiny",
            "--overwrite",
            "--out",
            str(_foreign_dir(d, "notes.txt", "truth.tsv")),
        ],
        "holds 'notes.txt', which wm-jax simulate does not write; not replaced even with --overwrite",
    ),
    (
        "simulate-out-under-file",
        lambda c, d: ["simulate", "--preset", "tiny", "--out", str(_under_file(d))],
        "is a file, expected a directory",
    ),
    (
        "simulate-out-read-only",
        lambda c, d: ["simulate", "--preset", "tiny", "--out", str(_read_only_parent(d))],
        "cannot be created",
    ),
    (
        "simulate-out-store",
        lambda c, d: ["simulate", "--preset", "tiny", "--overwrite", "--out", str(c.store)],
        "holds the output of wm-jax prepare",
    ),
    ("simulate-out-root", lambda c, d: ["simulate", "--preset", "tiny", "--out", "/"], "--out: expected the path"),
    (
        "simulate-out-inside-cohort",
        lambda c, d: ["simulate", "--preset", "tiny", "--out", str(c.cohort / "again")],
        "again: is inside",
    ),
    # --- prepare ----------------------------------------------------------------------------
    (
        "prepare-downsample-0",
        lambda c, d: _prepare_args(c, d, "--downsample", "0"),
        "--downsample: expected an integer >= 1",
    ),
    (
        "prepare-downsample-huge",
        lambda c, d: _prepare_args(c, d, "--downsample", "100"),
        "--downsample 100 leaves no voxel",
    ),
    (
        "prepare-mask-fraction-2",
        lambda c, d: _prepare_args(c, d, "--mask-fraction", "2"),
        "--mask-fraction: expected a number in (0, 1], found '2'",
    ),
    ("prepare-mask-fraction-0", lambda c, d: _prepare_args(c, d, "--mask-fraction", "0"), "--mask-fraction: expected"),
    (
        "prepare-mask-fraction-nan",
        lambda c, d: _prepare_args(c, d, "--mask-fraction", "nan"),
        "--mask-fraction: expected",
    ),
    ("prepare-crop-letter", lambda c, d: _prepare_args(c, d, "--crop", "1,2,a"), "--crop: expected six integers"),
    ("prepare-crop-backwards", lambda c, d: _prepare_args(c, d, "--crop", "5,2,0,4,0,4"), "start < stop"),
    ("prepare-crop-outside", lambda c, d: _prepare_args(c, d, "--crop", "0,99,0,4,0,4"), "does not fit the grid"),
    ("prepare-dtype", lambda c, d: _prepare_args(c, d, "--dtype", "int8"), "--dtype: invalid choice: 'int8'"),
    (
        "prepare-subjects-missing",
        lambda c, d: _prepare_args(c, d, subjects=d / "none.tsv"),
        "none.tsv: table not found",
    ),
    (
        "prepare-subjects-no-fa-path",
        lambda c, d: _prepare_args(
            c, d, subjects=_subjects_broken(c, d, lambda ls: [line.replace("fa_path", "path") for line in ls])
        ),
        "expected a column fa_path (the path of each subject",
    ),
    (
        "prepare-subjects-ragged",
        lambda c, d: _prepare_args(
            c, d, subjects=_subjects_broken(c, d, lambda ls: ls[:3] + ["\t".join(ls[3].split("\t")[:-1])] + ls[4:])
        ),
        "line 4: expected 6 fields as in the header, found 5",
    ),
    (
        "prepare-subjects-not-utf8",
        lambda c, d: _prepare_args(
            c,
            d,
            subjects=_write(
                d / "s.tsv", "\n".join(_subjects_abs(c, d)).replace("sub00002", "sub\xff02").encode("latin-1")
            ),
        ),
        "line 3: byte 0xff is not UTF-8",
    ),
    ("prepare-out-cohort", lambda c, d: _prepare_args(c, d, out=c.cohort), "holds the output of wm-jax simulate"),
    (
        "prepare-out-cohort-overwrite",
        lambda c, d: _prepare_args(c, d, "--overwrite", out=c.cohort),
        "holds the output of wm-jax simulate",
    ),
    ("prepare-out-read-only", lambda c, d: _prepare_args(c, d, out=_read_only_parent(d)), "cannot be created"),
    (
        "prepare-out-inside-cohort",
        lambda c, d: _prepare_args(c, d, "--overwrite", out=c.cohort / "store"),
        "store: is inside",
    ),
    (
        "prepare-fa-complex",
        lambda c, d: _prepare_args(c, d, subjects=_fa_stored_as(c, d, lambda x, a: _nifti(x + 0.5j, a))),
        "fa.nii.gz: stored as complex64; expected FA as real numbers",
    ),
    (
        "prepare-fa-complex-real",
        lambda c, d: _prepare_args(c, d, subjects=_fa_stored_as(c, d, lambda x, a: _nifti(x.astype(np.complex64), a))),
        "fa.nii.gz: stored as complex64",
    ),
    (
        "prepare-fa-integer-mask",
        lambda c, d: _prepare_args(
            c, d, subjects=_fa_stored_as(c, d, lambda x, a: _nifti((x > 0.3).astype(np.uint8), a))
        ),
        "fa.nii.gz: stored as uint8 without a scale factor",
    ),
    # --- roi ---------------------------------------------------------------------------------
    (
        "roi-labels-missing",
        lambda c, d: _roi_args(c, d, labels=d / "none.tsv"),
        "none.tsv: atlas labels table not found",
    ),
    (
        "roi-no-labels-no-truth",
        lambda c, d: [
            "roi",
            "--store",
            str(c.store),
            "--atlas",
            str(c.cohort / "atlas.nii.gz"),
            "--out",
            str(d / "roi.tsv"),
        ],
        "--labels: expected an atlas labels table",
    ),
    (
        "roi-labels-no-tract-column",
        lambda c, d: _roi_args(c, d, labels=_write(d / "l.tsv", "label\tname\n1\tcc\n")),
        "expected columns label and tract",
    ),
    (
        "roi-labels-bad-label",
        lambda c, d: _roi_args(c, d, labels=_write(d / "l.tsv", "label\ttract\nx\tcc\n")),
        "line 2, column label: expected an integer > 0",
    ),
    (
        "roi-label-absent",
        lambda c, d: _roi_args(c, d, labels=_write(d / "l.tsv", "label\ttract\n1\tcc_genu\n99\tghost\n")),
        "label 99 (ghost) does not occur in the atlas",
    ),
    (
        "roi-atlas-larger",
        lambda c, d: _roi_args(c, d, atlas=_atlas(c, d, shape=(30, 30, 30))),
        "expected the FA maps' grid (24, 28, 24)",
    ),
    ("roi-atlas-other-affine", lambda c, d: _roi_args(c, d, atlas=_atlas(c, d, shift=5.0)), "affine differs"),
    ("roi-atlas-missing", lambda c, d: _roi_args(c, d, atlas=d / "none.nii.gz"), "none.nii.gz: atlas image not found"),
    (
        "roi-store-garbage-json",
        lambda c, d: _roi_args(c, d, store=_damaged_store(c, d, "store.json", b"{garbage")),
        "volume store is incomplete or corrupt",
    ),
    (
        "roi-store-json-list",
        lambda c, d: _roi_args(c, d, store=_damaged_store(c, d, "store.json", b"[1, 2]")),
        "expected the JSON record of a volume store",
    ),
    (
        "roi-store-truncated-npy",
        lambda c, d: _roi_args(c, d, store=_damaged_store(c, d, "volumes.npy", None)),
        "volume store is incomplete or corrupt",
    ),
    ("roi-out-directory", lambda c, d: _roi_args(c, d, out=_foreign_dir(d)), "is a directory; expected a file path"),
    (
        "roi-out-cohort-table",
        lambda c, d: _roi_args(c, d, out=c.cohort / "covariates.tsv"),
        "covariates.tsv: is inside",
    ),
    (
        "roi-out-cohort-table-overwrite",
        lambda c, d: _roi_args(c, d, "--overwrite", labels=_one_label(d), out=c.cohort / "covariates.tsv"),
        ", the output of wm-jax simulate; expected a path outside it (nothing is written into an output",
    ),
    (
        "roi-out-new-in-cohort",
        lambda c, d: _roi_args(c, d, labels=_one_label(d), out=c.cohort / "fa" / "roi.tsv"),
        "roi.tsv: is inside",
    ),
    (
        "roi-out-in-store",
        lambda c, d: _roi_args(c, d, "--overwrite", labels=_one_label(d), out=c.store / "index.tsv"),
        "output of wm-jax prepare",
    ),
    ("roi-out-root", lambda c, d: _roi_args(c, d, out="/"), "--out: expected the path of a file, found '/'"),
    (
        "roi-truth-missing",
        lambda c, d: [
            "roi",
            "--store",
            str(c.store),
            "--atlas",
            str(c.cohort / "atlas.nii.gz"),
            "--truth",
            str(d / "none.tsv"),
            "--out",
            str(d / "roi.tsv"),
        ],
        "truth table not found",
    ),
    # --- gwas --------------------------------------------------------------------------------
    (
        "gwas-block-size-0",
        lambda c, d: _gwas_args(c, None, "--block-size", "0", d=d),
        "--block-size: expected an integer in [1,",
    ),
    (
        "gwas-maf-negative",
        lambda c, d: _gwas_args(c, None, "--maf", "-0.1", d=d),
        "--maf: expected a number in [0, 0.5]",
    ),
    ("gwas-maf-text", lambda c, d: _gwas_args(c, None, "--maf", "lots", d=d), "--maf: expected a number"),
    ("gwas-mac-negative", lambda c, d: _gwas_args(c, None, "--mac", "-1", d=d), "--mac: expected an integer >= 0"),
    ("gwas-geno-2", lambda c, d: _gwas_args(c, None, "--geno", "2", d=d), "--geno: expected a number in [0, 1]"),
    ("gwas-hwe-inf", lambda c, d: _gwas_args(c, None, "--hwe", "inf", d=d), "--hwe: expected a number in [0, 1]"),
    (
        "gwas-chr-range-to-x",
        lambda c, d: _gwas_args(c, None, "--chr", "1-X", d=d),
        "X, Y, XY and MT cannot end a range",
    ),
    (
        "gwas-chr-unknown",
        lambda c, d: _gwas_args(c, None, "--chr", "1,foo", d=d),
        "--chr: expected PLINK chromosome codes",
    ),
    ("gwas-chr-empty-item", lambda c, d: _gwas_args(c, None, "--chr", ",", d=d), "--chr: expected"),
    ("gwas-chr-backwards", lambda c, d: _gwas_args(c, None, "--chr", "3-1", d=d), "runs backwards"),
    ("gwas-chr-absent", lambda c, d: _gwas_args(c, None, "--chr", "X", d=d), "no variant on --chr X"),
    (
        "gwas-pheno-name-comma",
        lambda c, d: _gwas_args(c, None, "--pheno-name", ",", d=d),
        "--pheno-name: expected comma-separated",
    ),
    ("gwas-pheno-name-repeat", lambda c, d: _gwas_args(c, None, "--pheno-name", "P1,P1", d=d), "'P1' is given twice"),
    (
        "gwas-pheno-name-repeat-range",
        lambda c, d: _gwas_args(c, None, "--pheno-name", "P1-P3,P2", d=d),
        "--pheno-name: expected each phenotype once, 'P2' is selected twice",
    ),
    (
        "gwas-pheno-name-unknown",
        lambda c, d: _gwas_args(c, None, "--pheno-name", "P9", d=d),
        "no phenotype column named 'P9'",
    ),
    (
        "gwas-pheno-name-backwards",
        lambda c, d: _gwas_args(c, None, "--pheno-name", "P3-P1", d=d),
        "--pheno-name: expected a range FIRST-LAST with FIRST before LAST, found 'P3-P1'",
    ),
    (
        "gwas-covar-name-backwards",
        lambda c, d: _gwas_args(c, None, "--covar-name", "PC5-PC2", d=d),
        "--covar-name: expected a range FIRST-LAST with FIRST before LAST, found 'PC5-PC2'",
    ),
    (
        "gwas-pheno-ids-only",
        lambda c, d: _gwas_args(c, _pheno_edit(c, d, lambda ls: ["\t".join(line.split("\t")[:2]) for line in ls]), d=d),
        "pheno.tsv: has no phenotype column",
    ),
    (
        "gwas-pheno-nul",
        lambda c, d: _gwas_args(
            c, _write(d / "pheno.tsv", c.pheno.read_bytes().replace(b"sub00004", b"sub\x000004")), d=d
        ),
        "pheno.tsv: line 5: a NUL byte",
    ),
    (
        "gwas-covar-all-missing",
        lambda c, d: [
            *_gwas_args(c, None, d=d)[:5],
            "--covar",
            str(_covar_edit(c, d, "age", lambda n: ["NA"] * n)),
            "--out",
            str(d / "r"),
        ],
        "covariates.tsv: column age: a value for 0 of the 103 samples",
    ),
    (
        "gwas-covar-one-value",
        lambda c, d: [
            *_gwas_args(c, None, d=d)[:5],
            "--covar",
            str(_covar_edit(c, d, "sex", lambda n: ["1"] + ["NA"] * (n - 1))),
            "--out",
            str(d / "r"),
        ],
        "covariates.tsv: column sex: a value for 1 of the 103 samples",
    ),
    (
        "gwas-chr-x",
        lambda c, d: (
            _gwas_args(c, None, d=d)[:1] + ["--bfile", str(_bfile_with_x(c, d))] + _gwas_args(c, None, d=d)[3:]
        ),
        "g.bim: 3692 selected variants are on chromosome X (code X)",
    ),
    (
        "gwas-chr-23",
        lambda c, d: (
            _gwas_args(c, None, d=d)[:1] + ["--bfile", str(_bfile_with_x(c, d, "23"))] + _gwas_args(c, None, d=d)[3:]
        ),
        "exclude it with --chr",
    ),
    ("gwas-covar-name-comma", lambda c, d: _gwas_args(c, None, "--covar-name", "age,", d=d), "--covar-name: expected"),
    (
        "gwas-pheno-ragged",
        lambda c, d: _gwas_args(c, _pheno_edit(c, d, lambda ls: ls[:4] + [ls[4].rsplit("\t", 1)[0]] + ls[5:]), d=d),
        "pheno.tsv: line 5: expected 5 fields as in the header, found 4",
    ),
    (
        "gwas-pheno-inf",
        lambda c, d: _gwas_args(
            c, _pheno_edit(c, d, lambda ls: ls[:3] + [ls[3].rsplit("\t", 1)[0] + "\tinf"] + ls[4:]), d=d
        ),
        "line 4, column P3: expected a finite number or NA, found 'inf'",
    ),
    (
        "gwas-pheno-not-utf8",
        lambda c, d: _gwas_args(
            c, _write(d / "pheno.tsv", c.pheno.read_bytes().replace(b"sub00003", b"sub\xe90003")), d=d
        ),
        "pheno.tsv: line 4: byte 0xe9 is not UTF-8",
    ),
    (
        "gwas-pheno-no-header",
        lambda c, d: _gwas_args(c, _pheno_edit(c, d, lambda ls: ls[1:]), d=d),
        "header must start with FID IID",
    ),
    (
        "gwas-covar-missing",
        lambda c, d: [
            "gwas",
            "--bfile",
            str(c.bfile),
            "--pheno",
            str(c.pheno),
            "--covar",
            str(d / "none.tsv"),
            "--out",
            str(d / "res"),
        ],
        "none.tsv: table not found",
    ),
    (
        "gwas-bfile-missing",
        lambda c, d: [
            "gwas",
            "--bfile",
            str(d / "none"),
            "--pheno",
            str(c.pheno),
            "--covar",
            str(c.covar),
            "--out",
            str(d / "res"),
        ],
        ".bed file (from --bfile",
    ),
    (
        "gwas-bgen-truncated",
        lambda c, d: _with_genotypes(
            c,
            d,
            "--bgen",
            str(_bgen_file(c, d, lambda p, o: _truncate(p, int(o[len(o) // 2])))),
            "--sample",
            str(d / "g.sample"),
        ),
        "g.bgen: truncated: variant",
    ),
    (
        "gwas-bgen-corrupt-block",
        lambda c, d: _with_genotypes(
            c, d, "--bgen", str(_bgen_file(c, d, _corrupt_block)), "--sample", str(d / "g.sample")
        ),
        "g.bgen: variant",
    ),
    (
        "gwas-bgen-not-bgen",
        lambda c, d: _with_genotypes(c, d, "--bgen", str(_write(d / "g.bgen", "FID IID\n" * 20))),
        "g.bgen: not a BGEN file",
    ),
    (
        "gwas-bgen-sample-count",
        lambda c, d: _with_genotypes(
            c, d, "--bgen", str(_bgen_file(c, d)), "--sample", str(_write(d / "s.sample", "ID_1 ID_2\n0 0\na a\n"))
        ),
        "s.sample: lists 1 samples; the BGEN has",
    ),
    (
        "gwas-bgen-bad-mode",
        lambda c, d: _with_genotypes(c, d, "--bgen", str(_bgen_file(c, d)), "ref-middle"),
        "--bgen: expected FILE [ref-first|ref-last]",
    ),
    (
        "gwas-bgen-header-bomb",
        lambda c, d: _with_genotypes(
            c,
            d,
            "--bgen",
            str(_bgen_file(c, d, _bgen_header_count(lambda n: 2**32 - 1))),
            "--sample",
            str(d / "g.sample"),
        ),
        "g.bgen: its header counts 4294967295 variants, but the",
    ),
    (
        "gwas-bgen-header-undercounts",
        lambda c, d: _with_genotypes(
            c,
            d,
            "--bgen",
            str(_bgen_file(c, d, _bgen_header_count(lambda n: n - 100))),
            "--sample",
            str(d / "g.sample"),
        ),
        "bytes follow variant 627, the last its header counts",
    ),
    (
        "gwas-pgen-truncated",
        lambda c, d: _with_genotypes(c, d, "--pfile", str(_pgen_prefix(c, d, _truncate_pgen_body))),
        "g.pgen: truncated or corrupt",
    ),
    (
        "gwas-pgen-header-garbage",
        lambda c, d: _with_genotypes(
            c, d, "--pfile", str(_pgen_prefix(c, d, lambda p: _write(Path(f"{p}.pgen"), "not a pgen")))
        ),
        "g.pgen: truncated or corrupt, or not a .pgen",
    ),
    (
        "gwas-pgen-header-count",
        lambda c, d: _with_genotypes(c, d, "--pfile", str(_pgen_prefix(c, d, _pgen_header_count))),
        "g.pgen: its header counts 2147483645 variants, the .pvar 727",
    ),
    (
        "gwas-pgen-pvar-short",
        lambda c, d: _with_genotypes(
            c, d, "--pfile", str(_pgen_prefix(c, d, lambda p: _truncate(Path(f"{p}.pvar"), 2000)))
        ),
        "g.p",
    ),
    (
        "gwas-sample-without-bgen",
        lambda c, d: _gwas_args(c, None, "--sample", str(_write(d / "s.sample", "ID_1 ID_2\n")), d=d),
        "--sample: expected only with --bgen",
    ),
    (
        "gwas-plink2-name-traversal",
        lambda c, d: _gwas_args(c, _renamed_pheno(c, d, "../../X"), "--format", "plink2", d=d),
        "phenotype column '../../X': with --format plink2 the name becomes part of an output file name",
    ),
    (
        "gwas-plink2-name-control",
        lambda c, d: _gwas_args(c, _renamed_pheno(c, d, "a\x01b"), "--format", "plink2", d=d),
        "phenotype column 'a\\x01b'",
    ),
    (
        "gwas-pheno-empty-name",
        lambda c, d: _gwas_args(c, _pheno_edit(c, d, lambda ls: [ls[0].rsplit("\t", 1)[0] + "\t"] + ls[1:]), d=d),
        "empty column name in the header",
    ),
    (
        "gwas-filters-remove-all",
        lambda c, d: _gwas_args(c, None, "--mac", "100000", d=d),
        "none is left of the 7270 variants after --mac 100000 removed 7270",
    ),
    ("gwas-out-under-file", lambda c, d: _gwas_args(c, None, out=_under_file(d)), "is a file, expected a directory"),
    ("gwas-out-read-only", lambda c, d: _gwas_args(c, None, out=_read_only_parent(d)), "cannot be created"),
    (
        "gwas-out-foreign-hits",
        lambda c, d: _gwas_args(c, None, out=_write(d / "res.hits.tsv", "mine\n").with_name("res")),
        "res.hits.tsv: exists and was not written by an earlier wm-jax gwas",
    ),
    (
        "gwas-out-foreign-dir",
        lambda c, d: _gwas_args(
            c, None, "--overwrite", out=_foreign_dir(d, "x.txt").rename(d / "res.gwas").with_name("res")
        ),
        "holds 'x.txt', which wm-jax gwas does not write",
    ),
    ("gwas-out-empty-prefix", lambda c, d: _gwas_args(c, None, out=str(d) + "/"), "--out: expected an output prefix"),
    ("gwas-out-inside-cohort", lambda c, d: _gwas_args(c, None, out=c.cohort / "res"), "res: is inside"),
    # --- report ------------------------------------------------------------------------------
    (
        "report-clump-p1-negative",
        lambda c, d: _report_args(c, d, "--clump-p1", "-1"),
        "--clump-p1: expected a number in (0, 1]",
    ),
    (
        "report-clump-r2-2",
        lambda c, d: _report_args(c, d, "--clump-r2", "2"),
        "--clump-r2: expected a number in [0, 1]",
    ),
    (
        "report-clump-kb-0",
        lambda c, d: _report_args(c, d, "--clump-kb", "0"),
        "--clump-kb: expected a number in (0, inf)",
    ),
    (
        "report-clump-p2-below-p1",
        lambda c, d: _report_args(c, d, "--clump-p1", "1e-3", "--clump-p2", "1e-5"),
        "--clump-p2: expected a threshold >= --clump-p1",
    ),
    ("report-out-cohort", lambda c, d: _report_args(c, d, out=c.cohort), "holds the output of wm-jax simulate"),
    (
        "report-out-cohort-overwrite",
        lambda c, d: _report_args(c, d, "--overwrite", out=c.cohort),
        "holds the output of wm-jax simulate",
    ),
    (
        "report-out-foreign-overwrite",
        lambda c, d: _report_args(c, d, "--overwrite", out=_foreign_dir(d, "qq.png", "genotypes.bed")),
        "holds 'genotypes.bed', which wm-jax report does not write",
    ),
    ("report-out-foreign", lambda c, d: _report_args(c, d, out=_foreign_dir(d, "qq.png")), "(pass --overwrite"),
    (
        "report-out-empty",
        lambda c, d: _report_args(c, d)[:-2] + ["--out", ""],
        "--out: expected the path of a directory",
    ),
    ("report-out-inside-store", lambda c, d: _report_args(c, d, out=c.store / "report"), "output of wm-jax prepare"),
    (
        "ldscore-window-spans-the-chromosome",
        lambda c, d: ["ldscore", "--bfile", str(c.cohort / "genotypes"), "--out", str(d / "ld")],
        "--ld-wind-cm 1: the window spans all of chromosome",
    ),
    (
        "ldscore-out-inside-cohort",
        lambda c, d: [
            "ldscore",
            "--bfile",
            str(c.cohort / "genotypes"),
            "--ld-wind-kb",
            "10",
            "--out",
            str(c.cohort / "ld"),
        ],
        "output of wm-jax simulate",
    ),
    ("ldscore-no-bfile", lambda c, d: ["ldscore", "--bfile", str(d / "none"), "--out", str(d / "ld")], ".bed file"),
    (
        "h2-rhe-stray-ldsc-flag",
        lambda c, d: [
            "h2",
            "--method",
            "rhe",
            "--bfile",
            str(c.cohort / "genotypes"),
            "--pheno",
            str(c.pheno),
            "--ldscores",
            str(d / "x"),
            "--out",
            str(d / "o"),
        ],
        "--ldscores: expected only with --method ldsc",
    ),  # fmt: skip
    (
        "h2-rhe-no-pheno",
        lambda c, d: ["h2", "--method", "rhe", "--bfile", str(c.cohort / "genotypes"), "--out", str(d / "o")],
        "--pheno: expected a phenotype table",
    ),
    ("h2-gwas-missing", lambda c, d: _ldsc_args(c, d, "h2", gwas=d / "none"), "not a `wm-jax gwas` compact output"),
    ("h2-no-ldscores", lambda c, d: _ldsc_args(c, d, "h2")[:3] + ["--out", str(d / "o")], "--ldscores: expected"),
    (
        "h2-ldscores-missing",
        lambda c, d: _ldsc_args(c, d, "h2", ld=f"{d}/nowhere/"),
        "LD scores not found",
    ),
    (
        "h2-ldscores-missing-chromosome",
        lambda c, d: _ldsc_args(c, d, "h2", ld=_ld_scores(c, d, drop_chromosome=_first_chromosome(c))),
        "and the summary statistics have SNPs on it",
    ),
    (
        "h2-ldscores-other-snp-ids",
        lambda c, d: _ldsc_args(c, d, "h2", ld=_ld_scores(c, d, rename=True)),
        "is among the SNP IDs of the LD scores",
    ),
    ("h2-unknown-phenotype", lambda c, d: _ldsc_args(c, d, "h2", "--pheno-name", "P9"), "--pheno-name: 'P9'"),
    (
        "h2-out-foreign-file",
        lambda c, d: _ldsc_args(c, d, "h2", out=_write(d / "x.h2.tsv", "x").parent / "x"),
        "pass --overwrite",
    ),
    ("h2-out-inside-cohort", lambda c, d: _ldsc_args(c, d, "h2", out=c.cohort / "h"), "output of wm-jax simulate"),
    ("rg-one-phenotype", lambda c, d: _ldsc_args(c, d, "rg", "--pheno-name", "P1"), "expected at least two"),
    (
        "rg-sumstats-without-n",
        lambda c, d: _ldsc_args(c, d, "rg", "--sumstats", str(_sumstats(c, d, drop="N"))),
        "expected the sample size",
    ),
    (
        "rg-sumstats-other-snp-ids",
        lambda c, d: _ldsc_args(
            c, d, "rg", "--sumstats", str(_sumstats(c, d, edit=lambda t: t.assign(SNP="z" + t.SNP)))
        ),
        "none of its SNP IDs",
    ),
    (
        "rg-sumstats-z-not-numbers",
        lambda c, d: _ldsc_args(c, d, "rg", "--sumstats", str(_sumstats(c, d, edit=lambda t: t.assign(Z="big")))),
        "column Z: expected numbers",
    ),
    ("rg-sumstats-missing", lambda c, d: _ldsc_args(c, d, "rg", "--sumstats", str(d / "none.sumstats")), "not found"),
    ("export-gwas-missing", lambda c, d: ["export", "--gwas", str(d / "none"), "--out", str(d / "e")], "not a `wm-jax"),
    (
        "export-out-cohort",
        lambda c, d: ["export", "--gwas", str(c.gwas), "--out", str(c.cohort)],
        "holds the output of wm-jax simulate",
    ),
    ("report-gwas-missing", lambda c, d: _report_args(c, d, gwas=d / "none"), "not a `wm-jax gwas` output"),
    (
        "report-meta-garbage",
        lambda c, d: _report_args(c, d, gwas=_gwas_copy(c, d, lambda g: _write(g / "meta.json", "{garbage"))),
        "meta.json: expected the JSON record of a `wm-jax gwas` run",
    ),
    (
        "report-meta-no-phenotypes",
        lambda c, d: _report_args(
            c, d, gwas=_gwas_copy(c, d, lambda g: _write(g / "meta.json", '{"format_version": 2}'))
        ),
        "expected a non-empty list of phenotype names",
    ),
    (
        "report-truncated-npy",
        lambda c, d: _report_args(c, d, gwas=_gwas_copy(c, d, lambda g: _truncate(g / "log10_p.npy"))),
        "log10_p.npy: expected a complete .npy array",
    ),
    (
        "report-variants-garbage",
        lambda c, d: _report_args(c, d, gwas=_gwas_copy(c, d, lambda g: _write(g / "variants.tsv", "a\tb\n1\t2\n"))),
        "variants.tsv: expected columns #CHROM POS ID REF ALT A1",
    ),
    (
        "report-truth-no-pos",
        lambda c, d: _report_args(c, d, "--truth", str(_write(d / "t.tsv", "variant\tchrom\n1:5\t1\n"))),
        "expected columns variant, chrom and pos",
    ),
    # --- genes -------------------------------------------------------------------------------
    ("genes-window-negative", lambda c, d: _genes_args(c, d, "--window-kb", "-1"), "--window-kb: expected a number"),
    ("genes-annotation-missing", lambda c, d: _genes_args(c, d, genes=d / "none.tsv"), "gene annotation not found"),
    (
        "genes-gtf-without-genes",
        lambda c, d: _genes_args(
            c, d, genes=_write(d / "x.gtf", '1\tsim\texon\t10\t20\t.\t+\t.\tgene_id "G1"; transcript_id "T1";\n')
        ),
        "x.gtf: expected gene records",
    ),
    ("genes-chr-prefix", lambda c, d: _genes_args(c, d, genes=_chr_prefixed_genes(c, d)), "chr1 vs 1"),
    (
        "genes-gmt-unknown-genes",
        lambda c, d: _genes_args(c, d, "--gene-sets", str(_write(d / "s.gmt", "S1\t-\tBRCA1\tTP53\n"))),
        "s.gmt: no set names a gene of the annotation",
    ),
    ("genes-pheno-name-unknown", lambda c, d: _genes_args(c, d, "--pheno-name", "P9"), "the GWAS has no phenotype"),
    ("genes-out-cohort", lambda c, d: _genes_args(c, d, out=c.cohort), "holds the output of wm-jax simulate"),
    # --- train -------------------------------------------------------------------------------
    (
        "train-batch-size-0",
        lambda c, d: _train_args(c, d, "--config.batch_size=0"),
        "--config.batch_size: expected an integer >= 1, found 0",
    ),
    (
        "train-epochs-negative",
        lambda c, d: _train_args(c, d, "--config.epochs=-1"),
        "--config.epochs: expected an integer >= 1, found -1",
    ),
    (
        "train-learning-rate-0",
        lambda c, d: _train_args(c, d, "--config.learning_rate=0"),
        "--config.learning_rate: expected a number in (0, inf)",
    ),
    (
        "train-weight-decay-negative",
        lambda c, d: _train_args(c, d, "--config.weight_decay=-0.1"),
        "--config.weight_decay: expected a number in [0, inf), found -0.1",
    ),
    (
        "train-val-fraction",
        lambda c, d: _train_args(c, d, "--config.val_fraction=1.5"),
        "--config.val_fraction: expected a number in [0, 1)",
    ),
    (
        "train-latent-0",
        lambda c, d: _train_args(c, d, "--config.model.latent_dim=0"),
        "--config.model.latent_dim: expected an integer >= 1",
    ),
    (
        "train-schedule",
        lambda c, d: _train_args(c, d, "--config.schedule=linear"),
        "--config.schedule: expected one of cosine, plateau",
    ),
    (
        "train-batch-not-multiple",
        lambda c, d: _train_args(c, d, "--config.batch_size=6", "--config.max_subjects=48"),
        "--config.batch_size: expected a multiple of the 4 devices, found 6",
    ),
    (
        "train-batch-larger-than-training-set",
        lambda c, d: _train_args(c, d, "--config.batch_size=1000"),
        "--config.batch_size: expected at most 96 (the 93 training subjects, rounded up to a multiple of the 4 "
        "devices), found 1000",
    ),
    ("train-type", lambda c, d: _train_args(c, d, "--config.epochs=many"), "expected a value of type int"),
    (
        "train-config-system-exit",
        lambda c, d: [
            "train",
            "--config",
            str(_config_file(d, SYSTEM_EXIT_CONFIG)),
            "--store",
            str(c.store),
            "--workdir",
            str(d / "w"),
        ],
        "could not build the config (SystemExit",
    ),
    ("train-store-missing", lambda c, d: _train_args(c, d, store=d / "none"), "not a volume store"),
    (
        "train-store-shape",
        lambda c, d: [
            "train",
            "--config",
            "demo",
            "--store",
            str(c.store),
            "--workdir",
            str(d / "w"),
            "--config.model.input_shape=(48,56,48)",
        ],
        "--config.model.input_shape: (48, 56, 48) but the store",
    ),
    (
        "train-workdir-under-file",
        lambda c, d: _train_args(c, d, workdir=_under_file(d)),
        "is a file, expected a directory",
    ),
    (
        "train-workdir-other-store",
        lambda c, d: _train_args(
            c, d, "--config.batch_size=8", "--config.max_subjects=48", store=_other_store(c, d), workdir=c.workdir
        ),
        "store: another store than",
    ),
    ("train-workdir-inside-cohort", lambda c, d: _train_args(c, d, workdir=c.cohort / "w"), "w: is inside"),
    ("train-unknown-option", lambda c, d: _train_args(c, d, "--bogus"), "unrecognized arguments: --bogus"),
    # --- embed -------------------------------------------------------------------------------
    (
        "embed-batch-size-0",
        lambda c, d: _embed_args(c, d, "--batch-size", "0"),
        "--batch-size: expected an integer >= 1",
    ),
    ("embed-step-text", lambda c, d: _embed_args(c, d, "--step", "newest"), "--step: expected a checkpoint step"),
    ("embed-step-absent", lambda c, d: _embed_args(c, d, "--step", "99"), "no checkpoint at step 99"),
    ("embed-no-checkpoint", lambda c, d: _embed_args(c, d, workdir=d), "no checkpoint found"),
    (
        "embed-out-directory",
        lambda c, d: _embed_args(c, d, out=_foreign_dir(d)),
        "is a directory; expected a file path",
    ),
    (
        "embed-out-foreign",
        lambda c, d: _embed_args(c, d, out=_write(d / "mine.tsv", "x\n")),
        "exists and was not written by wm-jax embed",
    ),
    ("embed-out-under-file", lambda c, d: _embed_args(c, d, out=_under_file(d)), "is a file, expected a directory"),
    ("embed-out-root", lambda c, d: _embed_args(c, d, out="/"), "--out: expected the path of a file, found '/'"),
    ("embed-out-inside-store", lambda c, d: _embed_args(c, d, out=c.store / "u.tsv"), "u.tsv: is inside"),
    # --- interpret ---------------------------------------------------------------------------
    (
        "interpret-n-subjects-2",
        lambda c, d: _interpret_args(c, d, "--n-subjects", "2"),
        "--n-subjects: expected an integer >= 3",
    ),
    (
        "interpret-top-fraction-0",
        lambda c, d: _interpret_args(c, d, "--top-fraction", "0"),
        "--top-fraction: expected a number in (0, 1]",
    ),
    (
        "interpret-permutations-0",
        lambda c, d: _interpret_args(c, d, "--permutations", "0"),
        "--permutations: expected an integer >= 1",
    ),
    (
        "interpret-fwhm-negative",
        lambda c, d: _interpret_args(c, d, "--fwhm", "-1"),
        "--fwhm: expected a number in [0, 100]",
    ),
    (
        "interpret-fwhm-huge",
        lambda c, d: _interpret_args(c, d, "--fwhm", "1e308"),
        "--fwhm: expected a number in [0, 100], found '1e308'",
    ),
    ("interpret-out-cohort", lambda c, d: _interpret_args(c, d, out=c.cohort), "holds the output of wm-jax simulate"),
    (
        "interpret-out-cohort-overwrite",
        lambda c, d: _interpret_args(c, d, "--overwrite", out=c.cohort),
        "holds the output of wm-jax simulate",
    ),
    (
        "interpret-out-report",
        lambda c, d: _interpret_args(c, d, "--overwrite", out=_foreign_dir(d, "report.md", "loci.tsv")),
        "holds 'loci.tsv', which wm-jax interpret does not write",
    ),
    ("interpret-udip-missing", lambda c, d: _interpret_args(c, d, udip=d / "none.tsv"), "none.tsv: table not found"),
    (
        "interpret-udip-missing-values",
        lambda c, d: _interpret_args(c, d, udip=_udip_missing(c, d)),
        "udip.tsv: 0 subjects in the store have a value for every UDIP; expected at least 3",
    ),
    (
        "interpret-udip-other-store",
        lambda c, d: _interpret_args(c, d, udip=_udip_of_store(c, d), store=_other_store(c, d)),
        "store: another store than",
    ),
    (
        "interpret-manifest-garbage",
        lambda c, d: [
            "interpret",
            "--workdir",
            str(c.workdir),
            "--udip",
            str(_udip_with_manifest(c, d)),
            "--out",
            str(d / "perdi"),
        ],
        "expected the manifest of a `wm-jax embed` table",
    ),
    (
        "interpret-labels-missing",
        lambda c, d: _interpret_args(c, d)[:-4] + ["--labels", str(d / "none.tsv"), "--out", str(d / "p")],
        "none.tsv: atlas file not found",
    ),
    # --- demo --------------------------------------------------------------------------------
    (
        "demo-out-foreign",
        lambda c, d: ["demo", "--out", str(_foreign_dir(d, "thesis.tex"))],
        "is not a demo run directory",
    ),
    ("demo-out-cohort", lambda c, d: ["demo", "--out", str(c.cohort)], "holds the output of wm-jax simulate"),
    (
        "demo-epochs-negative",
        lambda c, d: ["demo", "--out", str(d / "run"), "--config.train.epochs=-1"],
        "--config.train.epochs: expected an integer >= 1",
    ),
    (
        "demo-config-system-exit",
        lambda c, d: ["demo", "--out", str(d / "run"), "--config", str(_config_file(d, SYSTEM_EXIT_CONFIG))],
        "could not build the config (SystemExit",
    ),
]


def _damaged_store(c, d: Path, name: str, content: bytes | None) -> Path:
    store = _store_copy(c, d)
    if content is None:
        _truncate(store / name, 200)
    else:
        _write(store / name, content)
    return store


def _udip_with_manifest(c, d: Path) -> Path:
    udip = _udip_table(c, d)
    _write(Path(f"{udip}.manifest.json"), "not json")
    return udip


def _snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    state = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                info = path.lstat()
                state[str(path)] = (info.st_size, info.st_mtime_ns if not path.is_dir() else 0)
    return state


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse
        code = exit_.code
    return code, capsys.readouterr().err


def assert_one_error_line(err: str, command: str, fragment: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if ": error:" in line]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    match = ERROR_LINE.match(errors[0])
    assert match and match["command"] == command, errors[0]
    assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


@pytest.mark.parametrize("case_id, build, fragment", CASES, ids=[c[0] for c in CASES])
def test_hostile_input(case_id, build, fragment, ctx, tmp_path, capsys):
    d = tmp_path / "case"
    d.mkdir()
    argv = build(ctx, d)
    roots = [d, ctx.base, ctx.cohort]
    before = _snapshot(*roots)
    try:
        code, err = run_cli(argv, capsys)
    finally:
        if (d / "locked").exists():
            (d / "locked").chmod(0o755)
    assert code == 2, err
    assert_one_error_line(err, argv[0], fragment)
    after = _snapshot(*roots)
    assert not [p for p in after if ".partial-" in p], "temporaries left behind"
    created = sorted(set(after) - set(before))
    assert not created, f"output created: {created}"
    changed = sorted(p for p in before if after.get(p) != before[p])
    assert not changed, f"pre-existing files touched: {changed}"


def test_every_command_has_cases():
    from wm_jax.cli import build_parser

    commands = set(build_parser()._subparsers._group_actions[0].choices)
    covered = {build_case[0].split("-")[0] for build_case in CASES}
    assert commands <= covered, commands - covered


def test_bgen_header_claiming_2_to_the_32_variants_is_refused_in_little_memory(ctx, tmp_path):
    """The header's variant count is checked against the file's size before the variant offsets
    are allocated (32 GiB for 2^32 - 1 of them)."""
    import tracemalloc

    from wm_jax.data.bgen import BgenDataset
    from wm_jax.errors import InputError

    path = _bgen_file(ctx, tmp_path, _bgen_header_count(lambda n: 2**32 - 1))
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(InputError, match="its header counts 4294967295 variants"):
            BgenDataset(path, tmp_path / "g.sample")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100e6 and time.perf_counter() - start < 30  # a hang bound, not a speed test


def test_udip_rows_with_a_missing_value_are_left_out_and_counted(ctx, tmp_path, caplog):
    from wm_jax.interpret.inputs import read_inputs

    udip = _udip_table(ctx, tmp_path)
    table = pd.read_csv(udip, sep="\t", dtype={"FID": str, "IID": str})
    table["UDIP1"] = np.arange(len(table), dtype=float)
    table.loc[[1, 4], "UDIP3"] = np.nan
    table.loc[4, "UDIP5"] = np.nan
    table.to_csv(udip, sep="\t", index=False, na_rep="NA")
    caplog.set_level("INFO", logger="wm_jax")
    inputs = read_inputs(ctx.workdir, udip, str(ctx.store), None, None, "latest", 200)
    assert not np.isnan(inputs.codes).any() and len(inputs.codes) == len(table) - 2
    assert 1 not in inputs.codes[:, 0] and 4 not in inputs.codes[:, 0]
    assert "2 of them left out for a missing UDIP value (UDIP3: 2, UDIP5: 1)" in caplog.text


def test_fa_maps_stored_as_scaled_integers_are_read_with_the_conversion_logged(ctx, tmp_path, capsys):
    def scaled(fa, affine):
        image = _nifti(np.round(fa * 10000).astype(np.int16), affine)
        image.header.set_slope_inter(1e-4, 0)
        return image

    subjects = _fa_stored_as(ctx, tmp_path, scaled)
    _write(subjects, "\n".join(subjects.read_text().splitlines()[:12]) + "\n")
    code, err = run_cli(_prepare_args(ctx, tmp_path, subjects=subjects, out=tmp_path / "st"), capsys)
    assert code == 0, err
    assert "prepare: 1 of 11 FA maps stored as int16 with scale factor 0.0001 (intercept 0), read as float32" in err


def test_a_refused_output_creates_nothing_beside_it(ctx, tmp_path, capsys):
    """The output checks find out whether --out may be written without creating anything: a refused
    run leaves the parent directory's mtime as it was (with --out /, that of /)."""
    foreign = _foreign_dir(tmp_path, "notes.txt")
    mine = _write(tmp_path / "mine.tsv", "mine\n")
    _write(tmp_path / "res.hits.tsv", "mine\n")
    old = 1_000_000_000
    os.utime(tmp_path, (old, old))
    for argv in (
        ["simulate", "--preset", "tiny", "--out", str(foreign)],
        _report_args(ctx, tmp_path, out=foreign),
        _embed_args(ctx, tmp_path, out=mine),
        _roi_args(ctx, tmp_path, out=mine),
        _gwas_args(ctx, None, out=tmp_path / "res"),
    ):
        code, err = run_cli(argv, capsys)
        assert code == 2 and "Traceback" not in err, err
        assert tmp_path.stat().st_mtime_ns == old * 10**9, argv[0]


# ---------------------------------------------------------------------------------------------
# The output policy's successful paths, and temporaries of failed and killed runs.
# ---------------------------------------------------------------------------------------------
def _prepare(c, out: Path, capsys, *extra) -> tuple[int, str]:
    return run_cli(
        [
            "prepare",
            "--subjects",
            str(c.cohort / "subjects.tsv"),
            "--out",
            str(out),
            "--crop",
            "0,24,2,26,0,24",
            "--downsample",
            "2",
            *extra,
        ],
        capsys,
    )


def test_rerun_replaces_its_own_output_and_overwrite_only_outputs_of_the_command(ctx, tmp_path, capsys):
    from wm_jax.publish import MARKER, read_marker

    out = tmp_path / "store"
    assert _prepare(ctx, out, capsys)[0] == 0
    first = (out / "store.json").stat().st_mtime_ns
    assert _prepare(ctx, out, capsys)[0] == 0  # a rerun replaces what the command wrote
    assert (out / "store.json").stat().st_mtime_ns != first and read_marker(out)["command"] == "prepare"
    _write(out / "notes.txt", "mine")  # something the command did not write: never replaced
    code, err = _prepare(ctx, out, capsys, "--overwrite")
    assert code == 2 and (out / "notes.txt").read_text() == "mine"
    assert_one_error_line(err, "prepare", "holds 'notes.txt', which wm-jax prepare did not write")
    # An output of an older wm-jax (no marker): refused, replaced with --overwrite.
    (out / "notes.txt").unlink()
    (out / MARKER).unlink()
    code, err = _prepare(ctx, out, capsys)
    assert code == 2 and "(pass --overwrite" in err
    assert _prepare(ctx, out, capsys, "--overwrite")[0] == 0 and read_marker(out)["command"] == "prepare"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_failed_run_leaves_nothing_and_stale_temporaries_are_removed(ctx, tmp_path, capsys, monkeypatch):
    """A temporary is kept only when it is in use: made here (its machine tag: this host, boot and PID
    namespace) by a running process. A PID of another host (or of an older wm-jax's untagged name)
    cannot be checked, and two runs writing one output at once are not supported: removed."""
    import wm_jax.data.store as store_module
    from wm_jax.publish import machine_tag

    out = tmp_path / "store"
    real_load = store_module.load_fa
    calls = {"n": 0}

    def failing_load(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("disk vanished")
        return real_load(*args, **kwargs)

    monkeypatch.setattr(store_module, "load_fa", failing_load)
    with pytest.raises(RuntimeError):
        _prepare(ctx, out, capsys)
    assert calls["n"] == 5 and list(tmp_path.iterdir()) == []  # nothing written, no temporary left
    monkeypatch.undo()
    here = machine_tag()
    stale = tmp_path / f".store.partial-{_dead_pid()}-{here}-0123abcd"  # a killed run's preallocated store
    (stale / "sub").mkdir(parents=True)
    live = tmp_path / f".store.partial-1-{here}-89abcdef"  # PID 1 is running here: in use, kept
    live.mkdir()
    other_host = ("1" if here[0] == "0" else "0") + here[1:]
    elsewhere = tmp_path / f".store.partial-1-{other_host}-89abcdef"  # another host's PID 1
    elsewhere.mkdir()
    untagged = tmp_path / ".store.partial-1-89abcdef"  # an older wm-jax's: its host is unknown
    untagged.mkdir()
    assert _prepare(ctx, out, capsys)[0] == 0
    assert not stale.exists() and live.exists() and not elsewhere.exists() and not untagged.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "store"]


class _FillingFile:
    """A file on a disk with ``room`` bytes left: a write past it fails with ENOSPC."""

    def __init__(self, handle, room: int) -> None:
        self.handle, self.room = handle, room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()


@pytest.mark.parametrize("when", ["before", "while-writing"])
def test_prepare_on_a_full_disk_is_an_error_naming_the_output(ctx, tmp_path, capsys, monkeypatch, when):
    """The free space is checked against the store's size before any map is read; a disk that
    fills anyway fails a write (the store is written through a file: a memory map would SIGBUS).
    Either way one line names --out, exit 2, and the partial store is removed."""
    import builtins

    import wm_jax.data.store as store_module

    if when == "before":
        monkeypatch.setattr(store_module, "free_bytes", lambda directory: 4096)
        fragment = "MiB and its file system has 0.0 MiB free; expected room for it"
    else:

        def filling_open(path, mode="r", *args, **kwargs):
            handle = builtins.open(path, mode, *args, **kwargs)
            return _FillingFile(handle, room=10_000) if Path(path).name == "volumes.npy" else handle

        monkeypatch.setattr(store_module, "open", filling_open, raising=False)
        fragment = "could not be written (No space left on device); nothing was kept"
    out = tmp_path / "store"
    code, err = _prepare(ctx, out, capsys)
    assert code == 2
    assert_one_error_line(err, "prepare", f"{out}: ")
    assert fragment in err, err
    assert list(tmp_path.iterdir()) == []


def _gwas_files(directory: Path, prefix: str) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith((prefix + ".", "." + prefix + ".")))


def test_killed_gwas_then_rerun_leaves_exactly_the_reruns_outputs(ctx, tmp_path, capsys):
    out = tmp_path / "res"
    args = _gwas_args(ctx, None, "--format", "plink2", out=out)
    assert run_cli(args, capsys)[0] == 0  # three phenotypes
    assert "res.P3.glm.linear" in _gwas_files(tmp_path, "res")
    # A run of two phenotypes, killed while its results are preallocated (SIGKILL: no clean-up).
    command = [sys.executable, "-m", "wm_jax.cli", *args, "--pheno-name", "P1,P2", "--block-size", "8"]
    process = subprocess.Popen(
        command, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    )
    deadline = time.time() + 120
    # the result store of a run in progress: `.res.gwas.resume-KEY` (wm_jax.gwas.resume)
    while not list(tmp_path.glob(".res.gwas.resume-*")) and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert list(tmp_path.glob(".res.*partial-*")) and list(tmp_path.glob(".res.gwas.resume-*"))  # what a kill leaves
    assert run_cli([*args, "--pheno-name", "P1,P2"], capsys)[0] == 0  # another command (block size): not resumed
    assert list(tmp_path.glob(".res.*")) == []
    assert _gwas_files(tmp_path, "res") == [
        "res.P1.glm.linear",
        "res.P2.glm.linear",
        "res.gwas",
        "res.hits.tsv",
        "res.log",
        "res.multivariate.tsv",
    ]
    meta = json.loads((tmp_path / "res.gwas" / "meta.json").read_text())
    assert meta["phenotypes"] == ["P1", "P2"] and "res.P2.glm.linear" in meta["outputs"]


# ---------------------------------------------------------------------------------------------
# Checkpoints: the latest survives any validation loss; a damaged one is set aside or skipped.
# ---------------------------------------------------------------------------------------------
def test_latest_checkpoint_survives_rising_validation_loss(ctx, tmp_path):
    from wm_jax import checkpoint

    steps = _fake_checkpoints(tmp_path / "w", ctx.store, val_losses=[3.0, 2.0, 1.0, 1.5, 1.7, 2.0], keep=2)
    manager = checkpoint.checkpoint_manager(tmp_path / "w", keep=2)
    assert manager.all_steps() == [15, 25, 30] and manager.latest_step() == steps[-1] == 30
    assert checkpoint.best_step(tmp_path / "w", manager.all_steps()) == 15


def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(ctx, tmp_path, capsys, monkeypatch):
    from wm_jax.train.loop import train_and_evaluate

    workdir = tmp_path / "w"
    _fake_checkpoints(workdir, ctx.store, val_losses=[0.5, 0.4])
    _write(workdir / "checkpoints" / "10" / "record" / "metadata", "{not json")
    code, err = run_cli(_embed_args(ctx, tmp_path, workdir=workdir, out=tmp_path / "u.tsv"), capsys)
    assert code == 0 and "Traceback" not in err
    assert [line for line in err.splitlines() if "step 10" in line] == [
        "checkpoint step 10 is damaged (record/metadata is not valid JSON (JSONDecodeError)); the previous one is used"
    ]
    assert json.loads((tmp_path / "u.tsv.manifest.json").read_text())["checkpoint_step"] == 5
    # Training: arrays that fail to restore (valid JSON) are found on restore; the step is set
    # aside (kept, not deleted), training resumes from the one before and metrics.jsonl loses the
    # rows past it (a rerun would repeat them).
    _write(
        workdir / "checkpoints" / "10" / "record" / "metadata",
        (workdir / "checkpoints" / "5" / "record" / "metadata").read_text().replace('"step": 5', '"step": 10'),
    )
    _write(workdir / "checkpoints" / "10" / "state" / "manifest.ocdbt", b"\x00" * 64)
    capsys.readouterr()
    unraisable = []  # tensorstore's reads outliving orbax's closed event loop report here
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    train_and_evaluate(_tiny_train_config(), str(workdir), str(ctx.store))
    time.sleep(0.5)
    err = capsys.readouterr().err
    assert "Traceback" not in err and not [u for u in unraisable if "Event loop is closed" in str(u.exc_value)]
    assert len([line for line in err.splitlines() if "checkpoint step 10" in line]) == 1, err
    assert (workdir / "damaged_checkpoints" / "10").is_dir() and not (workdir / "checkpoints" / "10").exists()
    assert [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()] == [5]


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # 1e308 as float32
def test_training_that_diverges_stops_and_keeps_its_last_finite_checkpoint(ctx, tmp_path, capsys):
    """Resumed from a finite checkpoint (step 5) with learning_rate=1e308: step 6's update makes
    every parameter infinite, so step 7's loss is NaN. The run ends by the next logging step but
    one (step 8 reads back steps up to 7) naming step 7 and the setting, keeps step 5 as the latest
    and best checkpoint, writes no NaN metric and never says it finished."""
    from wm_jax import checkpoint

    workdir = tmp_path / "w"
    _fake_checkpoints(workdir, ctx.store, val_losses=[0.5])
    argv = _train_args(
        ctx,
        tmp_path,
        "--config.learning_rate=1e308",
        "--config.batch_size=8",
        "--config.max_subjects=48",
        "--config.epochs=2",
        "--config.log_every=2",
        workdir=workdir,
    )
    code, err = run_cli(argv, capsys)
    assert code == 2, err
    line = assert_one_error_line(err, "train", "--config.learning_rate: training diverged, non-finite loss at step 7")
    assert "the latest checkpoint (step 5) and the best (step 5) are finite and kept" in line
    assert "finished" not in err
    assert checkpoint.checkpoint_manager(workdir).all_steps() == [5] and checkpoint.best_step(workdir, [5]) == 5
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(v) for row in rows for v in row.values()), rows


def test_divergence_blames_the_linear_paths_scale_when_it_is_above_one(tmp_path):
    from wm_jax.train.loop import divergence_error

    config = _tiny_train_config()
    config.model.linear_path = True
    config.linear_path_lr_scale = 1e308
    run = SimpleNamespace(config=config, workdir=tmp_path, manager=SimpleNamespace(all_steps=list))
    message = str(divergence_error(run, "non-finite loss at step 3 (nan)"))
    assert message.startswith("--config.linear_path_lr_scale: training diverged, non-finite loss at step 3")
    assert message.endswith("no checkpoint was written")
    config.linear_path_lr_scale = 0.03
    assert str(divergence_error(run, "x")).startswith("--config.learning_rate: ")


# ---------------------------------------------------------------------------------------------
# Inputs accepted as documented: PLINK chromosome codes, -9 as missing, config files by path.
# ---------------------------------------------------------------------------------------------
def test_chromosome_codes_follow_plink(ctx):
    from wm_jax.data.chromosomes import chromosome_number, parse_chromosome_list
    from wm_jax.errors import InputError
    from wm_jax.gwas.qc import refuse_chromosome_x, select_chromosomes

    assert {chromosome_number(c) for c in ("X", "chrX", "23", "x", "CHRX")} == {23}
    assert [chromosome_number(c) for c in ("Y", "XY", "MT", "M", "chr7", "07")] == [24, 25, 26, 26, 7, 7]
    assert chromosome_number("GL000192.1") is None and chromosome_number("27") is None
    assert parse_chromosome_list("1-3, X,chrY") == {1, 2, 3, 23, 24}
    assert parse_chromosome_list("chr2-chr4") == {2, 3, 4}
    bim = pd.DataFrame({"chrom": ["1", "chr1", "X", "chrX", "23", "25", "MT", "GL1"]})
    data = SimpleNamespace(variants=bim, n_variants=len(bim), variants_path=Path("g.bim"))
    assert list(select_chromosomes(data, "X")) == [2, 3, 4]
    assert list(select_chromosomes(data, "23,1")) == [0, 1, 2, 3, 4]
    assert list(select_chromosomes(data, "XY,26")) == [5, 6]
    refuse_chromosome_x(data, np.array([0, 1, 5, 6, 7]))  # XY (the PAR) is diploid in plink2 too: tested
    with pytest.raises(InputError, match="3 selected variants are on chromosome X .code X."):
        refuse_chromosome_x(data, np.arange(8))


def test_minus_nine_is_missing_in_phenotype_and_covariate_tables(tmp_path):
    from wm_jax.data.tables import read_table

    path = _write(tmp_path / "p.tsv", "FID\tIID\ty\tz\na\ta\t-9\t-9.5\nb\tb\t1\t-9.0\n")
    table = read_table(path, missing_code=-9)
    np.testing.assert_array_equal(np.isnan(table.values), [[True, False], [False, True]])
    assert read_table(path).values[0, 0] == -9  # other tables (UDIPs, subjects) keep the value


def test_config_file_is_loaded_by_path_without_putting_its_folders_first_on_sys_path(tmp_path):
    from wm_jax.config import load_config

    config_dir = tmp_path / "a" / "b"
    config_dir.mkdir(parents=True)
    _write(tmp_path / "a" / "json.py", "raise RuntimeError('shadowed the standard library')\n")
    path = _write(
        config_dir / "my.py",
        "from configs.sim import get_config as sim_config\n\ndef get_config():\n"
        "    c = sim_config('tiny')\n    c.n_subjects = 12\n    return c\n",
    )
    before = list(sys.path)
    assert load_config(str(path)).n_subjects == 12
    assert sys.path[: len(before)] == before and str(tmp_path / "a") not in sys.path


def test_closed_event_loop_echoes_of_a_failed_restore_are_dropped_and_nothing_else(monkeypatch):
    """A failing orbax restore leaves tensorstore reads that complete on threads whose event loop
    is closed; each reports `RuntimeError: Event loop is closed` from asyncio as an unraisable
    exception (seen as ~100 tracebacks after one error line). Only those are dropped."""
    import asyncio

    from wm_jax import checkpoint

    loop = asyncio.new_event_loop()
    loop.close()
    with pytest.raises(RuntimeError) as echo:
        loop.call_soon_threadsafe(print)
    other = RuntimeError("Event loop is closed")  # same text, raised elsewhere: kept
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    checkpoint._silence_closed_loop_echoes()
    for exc, tb in ((echo.value, echo.value.__traceback__), (other, None), (ValueError("x"), None)):
        sys.unraisablehook(SimpleNamespace(exc_type=type(exc), exc_value=exc, exc_traceback=tb, object=None))
    assert [type(u.exc_value) for u in seen] == [RuntimeError, ValueError] and seen[0].exc_value is other


def test_bed_truncated_during_the_pass_is_one_line_and_nothing_published(ctx, tmp_path, capsys, monkeypatch):
    """The .bed is read once, in the pass (no counting pass first): a file cut short after it was
    opened and checked is met mid-pass by a reader thread, and ends as one line naming it, exit 2,
    nothing published (with a memory map it was SIGBUS)."""
    import wm_jax.data.plink as plink_module

    for suffix in (".bed", ".bim", ".fam"):
        shutil.copy(ctx.cohort / f"genotypes{suffix}", tmp_path / f"g{suffix}")
    bed = tmp_path / "g.bed"
    real_init = plink_module.PlinkDataset.__init__

    def init_then_truncate(self, prefix):
        real_init(self, prefix)
        os.truncate(bed, bed.stat().st_size // 2)

    monkeypatch.setattr(plink_module.PlinkDataset, "__init__", init_then_truncate)
    argv = ["gwas", "--bfile", tmp_path / "g", "--pheno", ctx.base / "pheno.tsv"]
    argv += ["--covar", ctx.cohort / "covariates.tsv", "--out", tmp_path / "out"]
    code, err = run_cli(argv, capsys)
    assert code == 2
    line = assert_one_error_line(err, "gwas", "truncated while it was being read")
    assert str(bed) in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.bed", "g.bim", "g.fam"]
