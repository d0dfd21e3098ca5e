"""Results files of the benchmarks that run on any backend: benchmarks/results/NAME.json (command,
machine with its JAX device, date, rows, any extra fields) and NAME.md (a title, the command on the
machine, an introduction, the rows as one table, the extra fields as a list)."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    """The processor, its cores and JAX's first device (``kind x count``)."""
    import jax

    return f"{platform.machine()}, {os.cpu_count()} cores, {jax.devices()[0].device_kind} x {jax.device_count()}"


def write(name: str, title: str, command: str, rows: list[dict], intro: str, extra: dict | None = None) -> dict:
    """Write NAME.json and NAME.md; returns the JSON's content."""
    result = {"command": command, "machine": machine(), "date": time.strftime("%Y-%m-%d"), "rows": rows}
    result.update(extra or {})
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
    header = "| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]) + "\n"
    body = "".join("| " + " | ".join(str(v) for v in row.values()) + " |\n" for row in rows)
    listed = "".join(f"- {k}: {v}\n" for k, v in (extra or {}).items())
    (RESULTS / f"{name}.md").write_text(
        f"# {title}\n\n`{command}` on {result['machine']}, {result['date']}. {intro}\n\n"
        + header
        + body
        + (f"\n{listed}" if listed else "")
    )
    return result
