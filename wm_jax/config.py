"""Config files: Python files with `get_config()` returning an ml_collections.ConfigDict.

`--config.KEY=VALUE` on the command line overrides a field (dotted keys reach nested fields);
the value is parsed to the field's current type.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import ml_collections

from wm_jax.errors import InputError, input_error

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def resolve_config_path(spec: str, prefix: str = "") -> Path:
    """A config file path, or a preset name looked up as configs/<prefix><name>.py."""
    path = Path(spec)
    if path.suffix == ".py":
        if not path.is_file():
            raise input_error(path, "config file not found")
        return path
    candidate = CONFIG_DIR / f"{prefix}{spec}.py"
    if not candidate.is_file():
        presets = sorted(p.stem[len(prefix):] for p in CONFIG_DIR.glob(f"{prefix}*.py") if p.stem != f"{prefix}common")
        raise InputError(f"{spec}: no such preset (expected one of {', '.join(presets)} or a .py config file)")
    return candidate


def load_config(spec: str, prefix: str = "") -> ml_collections.ConfigDict:
    path = resolve_config_path(spec, prefix)
    root = str(path.resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    module_spec = importlib.util.spec_from_file_location(f"wm_jax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
        config = module.get_config()
    except Exception as err:
        raise input_error(path, f"could not build the config ({type(err).__name__}: {err})")
    return config


def apply_overrides(config: ml_collections.ConfigDict, overrides: list[str]) -> ml_collections.ConfigDict:
    """Apply `--config.a.b=value` overrides."""
    for item in overrides:
        if not item.startswith("--config.") or "=" not in item:
            raise InputError(f"unrecognized argument: {item} (overrides look like --config.KEY=VALUE)")
        key, raw = item[len("--config."):].split("=", 1)
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
        elif current is not None and not isinstance(value, type(current)) and not (isinstance(current, tuple) and isinstance(value, (list, tuple))):
            raise InputError(f"--config.{key}={raw}: expected a value of type {type(current).__name__}")
        if isinstance(current, tuple):
            value = tuple(value)
        node[leaf] = value
    return config
