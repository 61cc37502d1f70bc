"""Screenshots of every console page, 1280 px and 390 px wide (issue 26).

The browser test (tests/test_console_browser.py) takes them into its temporary folder on every
run, so a run leaves the tree clean; `make screenshots` runs that same test with
SCREENSHOTS_DIR=docs/screenshots, refreshing the ones docs/console.md and the README show
(`console-<page>-<width>.png`).
"""

from __future__ import annotations

import os
from pathlib import Path

from playwright.sync_api import Page

# Every page of the console: its name in the file's, its address (after the gateway's URL).
PAGES: dict[str, str] = {
    "login": "/console/login",
    "overview": "/console",
    "gallery": "/console/gallery",
    "requests": "/console/requests",
    "jobs": "/console/jobs",
    "batches": "/console/batches",
    "keys": "/console/keys",
    "models": "/console/models",
    "playground": "/console/playground",
    "health": "/console/health",
    "export": "/console/export",
}
WIDTHS = (1280, 390)
HEIGHTS = {1280: 800, 390: 844}
ENV = "SCREENSHOTS_DIR"


def folder(default: Path) -> Path:
    """Where this run's screenshots go: SCREENSHOTS_DIR (`make screenshots`), else `default`."""
    named = os.environ.get(ENV)
    path = Path(named) if named else default
    path.mkdir(parents=True, exist_ok=True)
    return path


def take(page: Page, name: str, width: int, into: Path) -> Path:
    """The page as shown in its viewport (the top of a long page), fonts and images loaded."""
    path = into / f"console-{name}-{width}.png"
    page.evaluate("() => document.fonts.ready")
    page.screenshot(path=path, animations="disabled", caret="hide")
    return path
