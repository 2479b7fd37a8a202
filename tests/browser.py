"""A real headless Chromium (Debian's package) for the report page's tests, driven by Playwright.

CI installs the browser (.ci/run) and sets NIGHTOWL_REQUIRE_BROWSER=1, so there a missing browser
fails the test instead of skipping it.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

#: The flags that keep Chromium off the (closed) network and quiet in a sandbox.
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]  # fmt: skip


def chromium() -> str:
    """The Chromium binary, or skip (fail in CI) saying how to install it."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    message = "Chromium is not installed: apt-get install chromium (Debian's package)"
    if os.environ.get("NIGHTOWL_REQUIRE_BROWSER"):
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Visit:
    """What a page did when Chromium opened it."""

    console: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    charts: int = 0
    svg_sizes: list[tuple[float, float]] = field(default_factory=list)
    text: str = ""
    #: The raw values of the clicked column, top to bottom, after one click on its header.
    sorted_values: list = field(default_factory=list)
    #: A screenshot of each chart as the browser drew it, by the chart figure's id.
    chart_shots: dict[str, Path] = field(default_factory=dict)


def visit(page_file: Path, screenshot: Path, sort: tuple[str, int] | None = None) -> Visit:
    """Open ``page_file`` in headless Chromium, record its console, errors and requests, count
    its rendered charts, save a full-page screenshot and one of each chart, and (given a table
    id and a column index) click that column's header and read its values back."""
    from playwright.sync_api import sync_playwright

    seen = Visit()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: seen.console.append((m.type, m.text)))
            page.on("pageerror", lambda e: seen.errors.append(str(e)))
            page.on("request", lambda r: seen.requests.append(r.url))
            page.goto(page_file.absolute().as_uri(), wait_until="load")
            charts = page.locator("figure.chart svg")
            seen.charts = charts.count()
            for i in range(seen.charts):
                box = charts.nth(i).bounding_box()
                seen.svg_sizes.append((box["width"], box["height"]) if box else (0, 0))
            seen.text = page.inner_text("body")
            page.screenshot(path=str(screenshot), full_page=True)
            for figure in page.locator("figure.chart").all():
                name = figure.get_attribute("id") or f"chart-{len(seen.chart_shots)}"
                shot = screenshot.with_name(f"{screenshot.stem}-{name}.png")
                figure.screenshot(path=str(shot))
                seen.chart_shots[name] = shot
            if sort:
                table, column = sort
                page.click(f"#{table} th >> nth={column}")
                cells = page.locator(f"#{table} tbody tr td:nth-child({column + 1})")
                seen.sorted_values = [json.loads(v) for v in cells.evaluate_all(
                    "cells => cells.map(c => c.dataset.v)"
                )]  # fmt: skip
        finally:
            browser.close()
    return seen


def coloured_share(
    screenshot: Path, colour: tuple[int, int, int] | None, tolerance: int = 40
) -> float:
    """The share of the screenshot's pixels within ``tolerance`` of ``colour`` (None: of any
    ink, a pixel that is not near white)."""
    import numpy as np
    from PIL import Image

    with Image.open(screenshot) as image:
        data = np.asarray(image.convert("RGB"), dtype=np.int16).reshape(-1, 3)
    if colour is None:
        return float((data.min(axis=1) < 200).mean())
    close = (np.abs(data - np.array(colour, dtype=np.int16)) <= tolerance).all(axis=1)
    return float(close.mean())


def start_tags(html: str) -> list[tuple[str, dict[str, str | None]]]:
    """Every element a browser would build from ``html``: tag name and attributes, in order."""
    from html.parser import HTMLParser

    tags: list[tuple[str, dict[str, str | None]]] = []

    class Tags(HTMLParser):
        def handle_starttag(self, tag, attrs):
            tags.append((tag, dict(attrs)))

    Tags().feed(html)
    return tags
