"""Config files: Python files with `get_config()` returning an ml_collections.ConfigDict.

`--config.KEY=VALUE` on the command line overrides a field (dotted keys reach nested fields);
the value is parsed to the field's current type.

A stage that has its own subcommand takes its options as a dataclass (`GwasOptions`,
`ClumpOptions`, `PerdiOptions`), whose fields hold the defaults. A config section for such a stage
is made from that dataclass (`options_section`) and turned back into it (`section_options`), so
`wm-jax demo` and the subcommand run the stage with the same options object and the same defaults.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import runpy
import sys
from pathlib import Path

import ml_collections

from wm_jax.errors import InputError, input_error
from wm_jax.options import Range
from wm_jax.stage_options import ROTATIONS, SEED, SIM_SUBJECTS, ClumpOptions, GwasOptions, PerdiOptions

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def split_config_spec(spec: str) -> tuple[str, str | None]:
    """``FILE_OR_NAME[:ARG]`` -> (file or name, ARG or None), as big_vision's ``config.py:arg``."""
    head, sep, arg = spec.rpartition(":")
    if sep and head and arg and "/" not in arg:
        return head, arg
    return spec, None


def resolve_config_path(spec: str) -> Path:
    """A config file path, or a name looked up as configs/<name>.py."""
    path = Path(spec)
    if path.suffix == ".py":
        if not path.is_file():
            raise input_error(path, "config file not found")
        return path
    candidate = CONFIG_DIR / f"{spec}.py"
    if not candidate.is_file():
        names = sorted(p.stem for p in CONFIG_DIR.glob("*.py") if p.stem != "__init__")
        raise InputError(f"{spec}: no such config (expected one of {', '.join(names)} or a .py config file)")
    return candidate


def _configs_importable() -> None:
    """Append the repository root to ``sys.path`` (last, so it shadows nothing) when the repository's
    ``configs`` package, which config files import each other from, is not importable otherwise."""
    if str(CONFIG_DIR.parent) in sys.path:
        return
    try:
        import configs  # noqa: F401
    except ImportError:
        sys.path.append(str(CONFIG_DIR.parent))


def load_config(spec: str) -> ml_collections.ConfigDict:
    """Run ``get_config()`` of the file named by ``spec``: ``NAME`` (configs/NAME.py) or a path, and
    with ``:ARG`` appended, ``get_config(ARG)`` (e.g. ``sim:tiny``; ARG must be one of the file's
    ``PRESETS`` when it has them). The file is loaded by its path; only when it imports the
    repository's ``configs`` package and that is not importable is the repository root appended to
    ``sys.path`` (last, so it shadows nothing). Any failure, SystemExit included, is an InputError."""
    spec, arg = split_config_spec(spec)
    path = resolve_config_path(spec)
    _configs_importable()
    try:
        namespace = runpy.run_path(str(path), run_name=f"wm_jax_config_{path.stem}")  # the file, by its path
        get_config = namespace.get("get_config")
        if get_config is None:
            raise input_error(path, "expected a function get_config() returning an ml_collections.ConfigDict")
        presets = namespace.get("PRESETS")
        if arg is not None and presets is not None and arg not in presets:
            raise InputError(f"{arg}: no such preset (expected one of {', '.join(presets)} or a .py config file)")
        config = get_config() if arg is None else get_config(arg)
    except InputError:
        raise
    except KeyboardInterrupt:
        raise
    except BaseException as err:  # SystemExit too: a config file must not end the command silently
        raise input_error(path, f"could not build the config ({type(err).__name__}: {err})")
    if not isinstance(config, ml_collections.ConfigDict):
        raise input_error(path, f"get_config() returned {type(config).__name__}, expected an ml_collections.ConfigDict")
    return config


def options_section(options, *names: str, prefix: str = "") -> ml_collections.ConfigDict:
    """A config section holding the fields ``names`` of a stage's options (every field when none is
    named) under the keys ``prefix + name``, with their values in ``options``: a config file writes
    only what it changes, and the dataclass supplies the rest."""
    names = names or tuple(field.name for field in dataclasses.fields(options))
    return ml_collections.ConfigDict({prefix + name: getattr(options, name) for name in names})


def section_options(config: ml_collections.ConfigDict, section: str, options_class, prefix: str = "", **fixed):
    """The stage's options from ``config[section]`` (as `options_section` made it, with overrides);
    fields the section does not hold keep their defaults, ``fixed`` sets fields directly. A key that
    names no field, or one that ``fixed`` sets, is an InputError."""
    settable = {field.name for field in dataclasses.fields(options_class)} - set(fixed)
    values = {}
    for key, value in config[section].items():
        name = key[len(prefix) :] if key.startswith(prefix) else None
        if name not in settable:
            expected = ", ".join(prefix + f for f in sorted(settable))
            raise InputError(f"--config.{section}.{key}: not an option of {options_class.__name__} (one of {expected})")
        values[name] = value
    return options_class(**values, **fixed)


def apply_overrides(config: ml_collections.ConfigDict, overrides: list[str]) -> ml_collections.ConfigDict:
    """Apply `--config.a.b=value` overrides."""
    for item in overrides:
        if not item.startswith("--config.") or "=" not in item:
            raise InputError(f"unrecognized argument: {item} (overrides look like --config.KEY=VALUE)")
        key, raw = item[len("--config.") :].split("=", 1)
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            if part not in node:
                raise InputError(f"--config.{key}: no such config field {part!r}")
            node = node[part]
        if leaf not in node:
            raise InputError(f"--config.{key}: no such config field {leaf!r}")
        current = node[leaf]
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        if isinstance(current, bool):
            value = str(raw).lower() in ("1", "true", "yes")
        elif isinstance(current, float) and isinstance(value, int):
            value = float(value)
        elif (
            current is not None
            and not isinstance(value, type(current))
            and not (isinstance(current, tuple) and isinstance(value, (list, tuple)))
        ):
            raise InputError(f"--config.{key}={raw}: expected a value of type {type(current).__name__}")
        if isinstance(current, tuple):
            value = tuple(value)
        node[leaf] = value
    return config


# ---------------------------------------------------------------------------------------------
# Ranges of config fields, checked before a command starts: field -> a Range (`wm_jax.options`), or
# (test, what is expected) for a value that is not one number. A stage with a subcommand declares
# its fields' ranges on its options dataclass (`wm_jax.stage_options`): `section_rules` reads them.
# A field the config does not have is skipped (configs differ by command and grow over time).
# ---------------------------------------------------------------------------------------------
def _int_at_least(low: int) -> Range:
    return Range("integer", low)


def _int_in(low: int, high: int) -> Range:
    return Range("integer", low, high)


def _number_in(low: float, high: float, low_open: bool = False, high_open: bool = False) -> Range:
    return Range("number", low, high, low_open, high_open)


def section_rules(section: str, options_class, prefix: str = "") -> dict:
    """The rules of a config section made by `options_section`: each field's declared Range."""
    return {
        f"{section}.{prefix}{field.name}": field.metadata["range"]
        for field in dataclasses.fields(options_class)
        if "range" in field.metadata
    }


def _integers_at_least(v, low: int) -> bool:
    """A tuple or list of integers (not booleans), each >= low."""
    return isinstance(v, (tuple, list)) and all(isinstance(x, int) and not isinstance(x, bool) and x >= low for x in v)


def _shape(n: int, low: int = 1, high: int | None = None):
    def test(v) -> bool:
        return _integers_at_least(v, low) and len(v) == n and (high is None or max(v) <= high)

    return test, f"{n} integers >= {low}" if high is None else f"{n} integers in [{low}, {high}]"


def _optional(rule):
    """``rule``, or None (unset: a later step fills the field in)."""
    test, expected = rule
    return (lambda v: v is None or test(v)), f"{expected}, or None"


def _channels():
    def test(v) -> bool:
        return _integers_at_least(v, 1) and len(v) >= 1

    return test, "one or more integers >= 1"


def _one_of(*choices: str):
    return (lambda v: v in choices), "one of " + ", ".join(choices)


TRAIN_RULES = {
    "batch_size": _int_at_least(1),
    "epochs": _int_at_least(1),
    "seed": SEED,
    "learning_rate": _number_in(0, math.inf, low_open=True),
    "val_fraction": _number_in(0, 1, high_open=True),
    "log_every": _int_at_least(1),
    "keep": _int_at_least(1),
    "max_subjects": _int_at_least(0),
    "grad_accum_steps": _int_at_least(1),
    "schedule": _one_of("cosine", "plateau"),
    "model.input_shape": _optional(_shape(3)),  # None: the store's grid (wm_jax.train.state.with_store_shape)
    "model.channels": _channels(),
    "model.latent_dim": _int_at_least(1),
    "model.compute_dtype": _one_of("float32", "bfloat16"),
    "linear_path_lr_scale": _number_in(0, math.inf),
    "weight_decay": _number_in(0, math.inf),
}
SIM_RULES = {
    "n_subjects": SIM_SUBJECTS,
    "seed": SEED,
    # At most 256 voxels an axis: finer than the 1 mm grid of the MNI field of view the maps span
    # (182x218x182), and one float32 volume stays under 64 MiB.
    "shape": _shape(3, 8, 256),
    "n_pcs": _int_at_least(0),
    # Named 1..22: codes above 22 are X, Y, XY and MT to PLINK.
    "genotypes.n_chromosomes": _int_in(1, 22),
    # At most the longest human chromosome (chr1, 249 Mb); the coalescent's time grows with it.
    "genotypes.chromosome_length": _number_in(0, 2.5e8, low_open=True),
    "genotypes.missing_rate": _number_in(0, 1, high_open=True),
    "genotypes.min_maf": _number_in(0, 0.5),
    "loci.per_kind": _int_at_least(0),
    "loci.share": _number_in(0, 1),
    "loci.min_maf": _number_in(0, 0.5),
    "genetics.n_causal": _int_at_least(1),
    "genetics.on_genome_share": _number_in(0, 1),
    "genetics.min_causal_maf": _number_in(0, 0.5),
    "factors.sd_spread": _number_in(0, 1, high_open=True),
    "variation.deformation_mm": _number_in(0, math.inf),
    **{f"factors.{kind}_h2": _number_in(0, 1) for kind in ("global", "tract", "cross", "contrast", "local", "shape")},
    **{
        f"factors.{kind}_sd": _number_in(0, math.inf)
        for kind in ("global", "tract", "cross", "contrast", "local", "shape")
    },
    **{f"factors.n_{kind}": _int_at_least(0) for kind in ("cross", "contrast", "local", "shape")},
    "factors.shape_width": _number_in(0, math.inf, low_open=True),
}
DEMO_RULES = {
    "seed": SEED,
    **{f"train.{k}": v for k, v in TRAIN_RULES.items()},
    **{f"sim.{k}": v for k, v in SIM_RULES.items()},
    "split.train_fraction": _number_in(0, 1, low_open=True, high_open=True),
    "split.replication_fraction": _number_in(0, 1, high_open=True),
    **section_rules("gwas", GwasOptions),
    **section_rules("report", ClumpOptions, prefix="clump_"),
    **section_rules("interpret", PerdiOptions),
    "embed.rotation": _one_of(*ROTATIONS),
}


def validate_config(config: ml_collections.ConfigDict, rules: dict) -> ml_collections.ConfigDict:
    """Check every field named in ``rules`` that the config has; the first out of range is an
    InputError ``--config.FIELD: expected ..., found ...``."""
    for key, rule in rules.items():
        test, expected = (rule.accepts, rule.expected) if isinstance(rule, Range) else rule
        node, present = config, True
        for part in key.split("."):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                present = False
                break
            node = node[part]
        if present and not test(node):
            raise InputError(f"--config.{key}: expected {expected}, found {node!r}")
    return config
