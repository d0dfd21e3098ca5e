"""Helpers for the tests of report.html: what a page holds (parsed with the standard library) and
how it behaves in headless Chromium (Debian's `chromium`).

In the browser a page is checked two ways, each catching what the other could miss:
- the page's own inline script writes, on its load event, the number of images, how many of them
  decoded, the number of tables and every error event (a script error, an image that failed) into
  ``<html data-check=...>``; ``--dump-dom`` prints the DOM after load, so the test reads it back;
- Chromium's log (``--enable-logging=stderr --v=0``) has a ``CONSOLE`` line for every console
  message, including a Content-Security-Policy violation (the page allows data: images only, so
  anything that tried to load from the network or disk shows there). The page itself logs
  nothing, so any console line is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest


class PageOutline(HTMLParser):
    """Images (src), tables, links (href), scripts with a src, ids and the <html> attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.image_alts: list[str] = []
        self.tables = 0
        self.links: list[str] = []
        self.external_scripts: list[str] = []
        self.ids: list[str] = []
        self.html_attributes: dict[str, str] = {}
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "html":
            self.html_attributes = {k: v or "" for k, v in attributes.items()}
        if tag == "img":
            self.images.append(attributes.get("src", ""))
            self.image_alts.append(attributes.get("alt", ""))
        elif tag == "table":
            self.tables += 1
        elif tag == "a" and "href" in attributes:
            self.links.append(attributes["href"])
        elif tag in ("script", "link") and (attributes.get("src") or attributes.get("href")):
            self.external_scripts.append(attributes.get("src") or attributes.get("href"))
        if "id" in attributes:
            self.ids.append(attributes["id"])

    def handle_data(self, data):
        self.text.append(data)


def outline(text: str) -> PageOutline:
    page = PageOutline()
    page.feed(text)
    return page


def check_self_contained(path: Path) -> PageOutline:
    """Every image a data: URI, no script or stylesheet from elsewhere, every link relative and to
    a file that exists beside the page."""
    page = outline(path.read_text(encoding="utf-8"))
    assert page.images and all(src.startswith("data:image/png;base64,") for src in page.images)
    assert not page.external_scripts
    for href in page.links:
        assert "://" not in href and not href.startswith("/"), href
        assert (path.parent / href).is_file(), href
    return page


def chromium_or_skip() -> str:
    """Debian's chromium; skipped where it is absent, but a failure under CI (which installs it)."""
    for name in ("chromium", "chromium-browser"):
        binary = shutil.which(name)
        if binary:
            return binary
    if os.environ.get("CI"):
        pytest.fail("chromium is required here (.ci/run installs it) but is not on PATH")
    pytest.skip("chromium not installed")


def _chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        binary,
        "--headless",
        "--no-sandbox",  # the tests may run as root (containers), where Chromium's sandbox refuses
        "--disable-gpu",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def load_in_chromium(page: Path, screenshot: Path, profile: Path, size: str = "1400,2400") -> tuple[dict, list[str]]:
    """Open ``page`` in headless Chromium: the page's own check (``data-check``) after load and
    Chromium's console lines; a screenshot of the first ``size`` pixels goes to ``screenshot``."""
    binary = chromium_or_skip()
    url = page.resolve().as_uri()
    dom = _chromium(binary, profile, f"--window-size={size}", "--virtual-time-budget=10000", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    shot = _chromium(binary, profile, f"--window-size={size}", f"--screenshot={screenshot}", url)
    assert shot.returncode == 0 and screenshot.is_file(), shot.stderr[-2000:]
    console = [line for line in (dom.stderr + shot.stderr).splitlines() if ":CONSOLE" in line]
    attributes = outline(dom.stdout).html_attributes
    assert "data-check" in attributes, "the page's load handler did not run: " + dom.stdout[:300]
    return json.loads(attributes["data-check"]), console
