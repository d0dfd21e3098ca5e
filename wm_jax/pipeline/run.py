"""`wm-jax demo`: the end-to-end UDIP-FA pipeline (`pipeline.stages`) run by the stage runner
(`pipeline.runner`), then its summary (`pipeline.summary`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from wm_jax.jax_cache import use_compilation_cache
from wm_jax.pipeline.runner import run_stages
from wm_jax.pipeline.stages import demo_stages, stage_options
from wm_jax.pipeline.summary import make_summary, write_report_html
from wm_jax.publish import atomic_path

log = logging.getLogger("wm_jax")


def demo(config, out: str) -> dict:
    """Run (or resume) the whole pipeline into ``out``; returns the summary also written to summary.json."""
    stage_options(config)  # a section key that names no option fails here, before any stage runs
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    # A persistent compilation cache in the run directory: the GWAS kernel has the same shapes for
    # the UDIPs and PCA (and for each set's discovery and replication runs' groups), and a resumed
    # run recompiles nothing.
    use_compilation_cache(d / "jax_cache")
    record = run_stages(d, demo_stages(config, d))
    summary = make_summary(d, record)
    with atomic_path(d / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=str))
    write_report_html(d, summary)
    return summary
