"""The stage runner of `wm-jax demo`: stages tied together by a manifest.

`DIR/manifest.json` records for each finished stage its fingerprint (the stage's settings and the
fingerprints of the stages it reads from), its outputs, its seconds and when it ended. A rerun
skips a stage whose fingerprint is unchanged and whose outputs exist; a killed run therefore
resumes at the stage it was in (and training resumes from its own latest checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import wm_jax
from wm_jax.publish import atomic_path

log = logging.getLogger("wm_jax")

MANIFEST_VERSION = 1


@dataclass
class Stage:
    name: str
    settings: dict
    needs: list[str]
    outputs: list[str]  # paths relative to the run directory
    run: Callable[[], dict | None]
    result: dict = field(default_factory=dict)


class Manifest:
    def __init__(self, directory: Path) -> None:
        self.path = directory / "manifest.json"
        self.record = {"format_version": MANIFEST_VERSION, "code_version": wm_jax.__version__, "stages": {}}
        if self.path.exists():
            record = json.loads(self.path.read_text())
            if record.get("format_version") == MANIFEST_VERSION:
                self.record = record

    def stage(self, name: str) -> dict | None:
        return self.record["stages"].get(name)

    def finish(self, name: str, entry: dict) -> None:
        self.record["stages"][name] = entry
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(self.record, indent=2, default=str))


def fingerprint(settings: dict, upstream: list[str]) -> str:
    text = json.dumps({"settings": settings, "upstream": upstream}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_stages(directory: Path, stages: list[Stage]) -> dict[str, dict]:
    manifest = Manifest(directory)
    prints: dict[str, str] = {}
    for stage in stages:
        prints[stage.name] = fingerprint(stage.settings, [prints[n] for n in stage.needs])
        done = manifest.stage(stage.name)
        outputs_exist = all((directory / o).exists() for o in stage.outputs)
        if done and done.get("fingerprint") == prints[stage.name] and outputs_exist:
            log.info("demo: %-12s done earlier (%.1f s), skipped", stage.name, done["seconds"])
            stage.result = done.get("result") or {}
            continue
        log.info("demo: %-12s running", stage.name)
        start = time.time()
        stage.result = stage.run() or {}
        seconds = time.time() - start
        manifest.finish(
            stage.name,
            {
                "fingerprint": prints[stage.name],
                "needs": stage.needs,
                "settings": stage.settings,
                "outputs": stage.outputs,
                "seconds": round(seconds, 2),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "result": stage.result,
            },
        )
        log.info("demo: %-12s finished in %.1f s", stage.name, seconds)
    return manifest.record["stages"]
