"""One declaration per option range (`wm_jax.stage_options`): the command line and the
`--config.SECTION.KEY=VALUE` checks accept exactly the same values, and the declarations import no JAX."""

import argparse
import dataclasses
import math
import subprocess
import sys

import pytest

from wm_jax.cli import build_parser
from wm_jax.config import DEMO_RULES, validate_config
from wm_jax.options import Range
from wm_jax.stage_options import (
    ClumpOptions,
    GeneOptions,
    GwasOptions,
    LdscOptions,
    PerdiOptions,
    Preprocessing,
    RheOptions,
)

# command, its options dataclass, the prefix of its flags' destinations, the demo config's section (if any)
COMMANDS = [
    ("gwas", GwasOptions, "", "gwas"),
    ("report", ClumpOptions, "clump_", "report"),
    ("interpret", PerdiOptions, "", "interpret"),
    ("genes", GeneOptions, "", None),
    ("h2", RheOptions, "", None),
    ("h2", LdscOptions, "", None),
    ("rg", LdscOptions, "", None),
    ("prepare", Preprocessing, "", None),
]


def probes(values: Range) -> list:
    """Values at and around the ends of a range, and some that no range of numbers holds."""
    ends = [e for e in (values.low, values.high) if e is not None]
    found = [0, 1, -1, 2, 3, 0.5, 1e-9, 2**32, 2**32 - 1, 2**20, 2**20 + 1, 1e300, math.inf, math.nan, True]
    for end in ends:
        found += [end, end - 1, end + 1, end - 0.5, end + 0.5, end * (1 - 1e-9), end * (1 + 1e-9) + 1e-12]
    return [
        int(v) if isinstance(v, float) and math.isfinite(v) and v == int(v) and abs(v) < 2**53 else v for v in found
    ]


def flag_accepts(action: argparse.Action, value) -> bool:
    try:
        action.type(repr(value) if isinstance(value, float) else str(value))
    except argparse.ArgumentTypeError:
        return False
    return True


def ranged_fields(options_class):
    return [
        (field.name, field.metadata["range"])
        for field in dataclasses.fields(options_class)
        if "range" in field.metadata
    ]


def flag_actions(command: str) -> dict[str, argparse.Action]:
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]
    return {action.dest: action for action in sub._actions}


@pytest.mark.parametrize(("command", "options_class", "prefix", "section"), COMMANDS)
def test_each_flag_accepts_what_its_field_declares(command, options_class, prefix, section):
    actions = flag_actions(command)
    fields = ranged_fields(options_class)
    assert fields
    for name, values in fields:
        action = actions.get(prefix + name)
        if action is None:  # a field without a flag (the demo's seed of PerDI, say)
            continue
        for value in probes(values):
            assert flag_accepts(action, value) == values.accepts(value), (command, name, value)


@pytest.mark.parametrize(("command", "options_class", "prefix", "section"), [c for c in COMMANDS if c[3]])
def test_flag_and_demo_config_accept_the_same_values(command, options_class, prefix, section):
    """For every field a flag and the demo config both set, the same values pass both checks."""
    import ml_collections

    actions = flag_actions(command)
    compared = 0
    for name, values in ranged_fields(options_class):
        key = f"{section}.{prefix}{name}"
        if prefix + name not in actions:
            continue
        assert key in DEMO_RULES, f"--config.{key} is not checked"
        for value in probes(values):
            config = ml_collections.ConfigDict({section: {prefix + name: value}})
            try:
                validate_config(config, DEMO_RULES)
                config_ok = True
            except Exception:
                config_ok = False
            assert flag_accepts(actions[prefix + name], value) == config_ok, (key, value)
        compared += 1
    assert compared >= 2


def test_the_gwas_block_size_has_one_range():
    """It was 1..2^20 on the command line but any value >= 1 in the demo config."""
    import ml_collections

    actions = flag_actions("gwas")
    assert not flag_accepts(actions["block_size"], 2**20 + 1)
    with pytest.raises(Exception, match=r"--config\.gwas\.block_size: expected an integer in \[1, 1048576\]"):
        validate_config(ml_collections.ConfigDict({"gwas": {"block_size": 2**20 + 1}}), DEMO_RULES)


def test_ranges_state_what_they_expect():
    assert Range("integer", 1).expected == "an integer >= 1"
    assert Range("integer", 0, 9).expected == "an integer in [0, 9]"
    assert Range("number", 0, 1, low_open=True).expected == "a number in (0, 1]"
    assert Range("number", 0).expected == "a number in [0, inf)"
    assert not Range("integer", 0).accepts(True) and not Range("number", 0).accepts(math.nan)


def test_option_declarations_and_the_demo_config_import_no_jax():
    code = (
        "import sys; import wm_jax.stage_options, wm_jax.config, wm_jax.cli; "
        "from wm_jax.config import load_config; load_config('pipeline_demo'); "
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'flax', 'scipy')); "
        "assert not heavy, heavy"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", ["n_subjects", "seed"])
def test_simulate_flags_accept_what_the_simulator_config_accepts(name):
    import ml_collections

    from wm_jax.config import SIM_RULES

    action = flag_actions("simulate")[name]
    for value in probes(SIM_RULES[name]):
        try:
            validate_config(ml_collections.ConfigDict({name: value}), SIM_RULES)
            config_ok = True
        except Exception:
            config_ok = False
        assert flag_accepts(action, value) == config_ok, (name, value)


def test_clump_thresholds_are_checked_in_the_demo_config_as_on_the_command_line(tmp_path, capsys):
    from wm_jax.cli import main

    out = tmp_path / "run"
    assert main(["demo", "--out", str(out), "--config.report.clump_p1=1e-3", "--config.report.clump_p2=1e-4"]) == 2
    error = capsys.readouterr().err
    assert "--config.report.clump_p2: expected a threshold >= --config.report.clump_p1 (0.001), found 0.0001" in error
    assert not out.exists()
    args = ["report", "--gwas", "g", "--bfile", "b", "--out", str(tmp_path / "r"), "--clump-p1", "1e-3"]
    assert main([*args, "--clump-p2", "1e-4"]) == 2
    assert "--clump-p2: expected a threshold >= --clump-p1 (0.001), found 0.0001" in capsys.readouterr().err
