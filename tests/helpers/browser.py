"""The ComfyUI frontend in Debian's headless Chromium, driven by Playwright: launch, settings, a ready page."""

from __future__ import annotations

import contextlib
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from . import unavailable

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Ready once the backend's node types, the core's own (newer frontends register MarkdownNote after the backend's)
# and the startup workflow are in: a graph loaded before that may be replaced by the frontend's startup.
FRONTEND_READY = ("() => { const app = window.comfyAPI?.app?.app, types = window.LiteGraph?.registered_node_types;"
                  " return !!(app?.canvas && types?.NoiseSearchScoreViewer && types?.MarkdownNote"
                  " && app.extensionManager?.workflow?.activeWorkflow); }")
# Stored for the default user before each page load: no first-run dialogs, and the canvas renderer unless a test
# asks for Vue nodes (the setting persists on the server between pages).
BASE_SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Workflow.ShowMissingModelsWarning": False,
                 "Comfy.VueNodes.Enabled": False}


@contextlib.contextmanager
def launch_chromium() -> Iterator:
    """A Playwright browser on Debian's Chromium; skips the calling test (fails it in CI) when either is missing."""
    if not CHROMIUM.is_file():
        unavailable(f"Chromium is not installed at {CHROMIUM}: apt-get install -y chromium")
    try:
        from playwright import sync_api
    except ImportError:
        unavailable("playwright is not installed: pip install playwright")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def post_settings(url: str, settings: dict) -> None:
    """Store frontend settings (BASE_SETTINGS overridden by `settings`) for the default user before a page loads."""
    req = urllib.request.Request(f"{url}/settings", data=json.dumps({**BASE_SETTINGS, **settings}).encode(),
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=30).close()


def open_frontend(browser, url: str, settings: dict, width: int, height: int, init_script: str | None = None):
    """A page on the server's frontend, loaded after storing `settings` and ready; `page.errors` collects page
    errors with their stacks."""
    post_settings(url, settings)
    page = browser.new_page(viewport={"width": width, "height": height})
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(f"{e}\n{e.stack}"))
    if init_script is not None:
        page.add_init_script(init_script)
    page.goto(url)
    page.wait_for_function(FRONTEND_READY, timeout=120_000)
    return page
