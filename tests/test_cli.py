import subprocess
import sys

import pytest

from wm_jax.cli import build_parser, main

SUBCOMMANDS = ["simulate", "prepare", "gwas", "roi", "train", "embed", "genes"]


def _run(*args):
    return subprocess.run([sys.executable, "-m", "wm_jax.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_for_each_subcommand(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    usage = capsys.readouterr().out
    assert usage.startswith(f"usage: wm-jax {command}") and ("--out" in usage or "--workdir" in usage)


def test_all_registered_subcommands_have_help():
    parser = build_parser()
    choices = parser._subparsers._group_actions[0].choices
    assert set(SUBCOMMANDS) <= set(choices)
    for name, sub in choices.items():
        assert sub.format_help()


def test_unknown_option_is_an_error():
    result = _run("simulate", "--out", "x", "--bogus")
    assert result.returncode == 2 and "unrecognized arguments: --bogus" in result.stderr
    result = _run("prepare", "--subjects", "s", "--out", "x", "--config.seed=3")
    assert result.returncode == 2 and "unrecognized arguments" in result.stderr


def test_config_spec_names_a_file_or_a_name_and_a_preset():
    from wm_jax.config import load_config
    from wm_jax.errors import InputError

    from conftest import REPO

    tiny, paper = load_config("sim:tiny"), load_config(f"{REPO / 'configs' / 'sim.py'}:paper")
    assert (tiny.n_subjects, tiny.shape) == (103, (24, 28, 24))
    assert (paper.n_subjects, paper.shape) == (40000, (182, 218, 182))
    assert load_config("sim").to_dict() == load_config("sim:demo").to_dict() != tiny.to_dict()
    with pytest.raises(InputError, match="huge: no such preset"):
        load_config("sim:huge")


def test_flags_not_given_keep_the_defaults_of_the_stage_options():
    from wm_jax.data.store import Preprocessing
    from wm_jax.gwas.run import GwasOptions
    from wm_jax.options import options_from_args
    from wm_jax.stage_options import ClumpOptions, PerdiOptions

    parser = build_parser()
    gwas = ["gwas", "--bfile", "b", "--pheno", "p", "--covar", "c", "--out", "o"]
    report = ["report", "--gwas", "g", "--bfile", "b", "--out", "o"]
    interpret = ["interpret", "--workdir", "w", "--udip", "u", "--out", "o"]
    prepare = ["prepare", "--subjects", "s", "--out", "o"]
    assert options_from_args(GwasOptions, parser.parse_args(gwas)) == GwasOptions()
    assert options_from_args(ClumpOptions, parser.parse_args(report), prefix="clump_") == ClumpOptions()
    assert options_from_args(PerdiOptions, parser.parse_args(interpret)) == PerdiOptions()
    assert options_from_args(Preprocessing, parser.parse_args(prepare)) == Preprocessing()

    given = "--pheno-name A,B --covar-name age --block-size 64 --format plink2 --gzip --maf 0.01 --chr 2".split()
    assert options_from_args(GwasOptions, parser.parse_args(gwas + given)) == GwasOptions(
        pheno_names="A,B", covar_names="age", block_size=64, format="plink2", gzip=True, maf=0.01, chromosomes="2"
    )
    args = parser.parse_args(report + ["--clump-p1", "1e-6", "--clump-kb", "100"])
    assert options_from_args(ClumpOptions, args, prefix="clump_") == ClumpOptions(p1=1e-6, kb=100.0)
    args = parser.parse_args(interpret + ["--fwhm", "2", "--permutations", "50", "--seed", "4"])
    assert options_from_args(PerdiOptions, args) == PerdiOptions(fwhm_mm=2.0, n_permutations=50, seed=4)
    args = parser.parse_args(prepare + ["--downsample", "2", "--dtype", "float16", "--crop", "0,4,0,4,0,4"])
    assert options_from_args(Preprocessing, args) == Preprocessing(((0, 4), (0, 4), (0, 4)), 2, 0.5, "float16")


def test_unknown_preset_and_config_field(tmp_path):
    result = _run("simulate", "--out", str(tmp_path / "o"), "--preset", "huge")
    assert result.returncode == 2 and "huge: no such preset" in result.stderr
    result = _run("simulate", "--out", str(tmp_path / "o"), "--preset", "tiny", "--config.nonsense=1")
    assert result.returncode == 2 and "no such config field 'nonsense'" in result.stderr
    assert not (tmp_path / "o").exists()
