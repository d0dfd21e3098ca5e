import subprocess
import sys

import pytest

from wm_jax.cli import build_parser, main

SUBCOMMANDS = ["simulate", "prepare", "gwas", "roi", "train", "embed"]


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


def test_unknown_preset_and_config_field(tmp_path):
    result = _run("simulate", "--out", str(tmp_path / "o"), "--preset", "huge")
    assert result.returncode == 2 and "huge: no such preset" in result.stderr
    result = _run("simulate", "--out", str(tmp_path / "o"), "--preset", "tiny", "--config.nonsense=1")
    assert result.returncode == 2 and "no such config field 'nonsense'" in result.stderr
    assert not (tmp_path / "o").exists()
