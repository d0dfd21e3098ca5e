"""User-facing errors: bad input raises :class:`InputError`, and the CLI prints its message as one
line and exits 2. (The output policy, what a command may write and replace, is `wm_jax.publish`.)"""

from __future__ import annotations

import json
import os
from pathlib import Path


class InputError(Exception):
    """Bad user input: the message names the file and what was expected."""


def input_error(path: str | os.PathLike, what: str) -> InputError:
    return InputError(f"{path}: {what}")


def require_file(path: str | os.PathLike, what: str = "file") -> Path:
    path = Path(path)
    if not path.is_file():
        raise input_error(path, f"{what} not found")
    return path


def read_json(path: str | os.PathLike, expected: str, *keys: str) -> dict:
    """A JSON object with ``keys``; unreadable, not JSON or lacking a key is an InputError."""
    path = require_file(path, "file")
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise input_error(path, f"expected {expected} (JSON; {type(err).__name__})")
    if not isinstance(record, dict) or any(key not in record for key in keys):
        raise input_error(path, f"expected {expected} (a JSON object with {', '.join(keys) or 'fields'})")
    return record
