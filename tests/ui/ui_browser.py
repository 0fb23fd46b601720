"""Serve the UI on a free port and drive Debian's chromium through Playwright.

Never downloads a browser: CI installs /usr/bin/chromium via ./dev (ensure_system_packages).
A missing chromium is a test failure, not a skip, so the UI can't silently go untested."""
import contextlib
import os
import shutil
import threading
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright
from werkzeug.serving import make_server

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "ui"


def chromium_path():
    path = os.environ.get("ENGINE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(path):
        pytest.fail("chromium not found (looked at $ENGINE_CHROMIUM, PATH, /usr/bin/chromium): "
                    "install it with `apt-get install -y chromium` or run the suite through "
                    "`./dev test`, which installs it", pytrace=False)
    return path


class Server:
    def __init__(self, app):
        self.httpd = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()


@contextlib.contextmanager
def serve_with_browser(app):
    """`app` on a free port and Debian's chromium under Playwright: yields (url, browser)."""
    server = Server(app)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            try:
                yield server.url, browser
            finally:
                browser.close()
    finally:
        server.close()


class PageWatch:
    """Collects console errors, uncaught exceptions and dialogs (an alert means XSS)."""

    def __init__(self, page):
        self.errors, self.dialogs = [], []
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))

    def assert_clean(self):
        assert self.dialogs == [], f"a dialog fired (escaping failed?): {self.dialogs}"
        assert self.errors == [], f"browser console errors: {self.errors}"


@contextlib.contextmanager
def browser_page(browser, timeout_ms):
    """A fresh context and page at the tests' viewport, with console/dialog watching."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = ctx.new_page()
    pg.set_default_timeout(timeout_ms)
    pg.watch = PageWatch(pg)
    try:
        yield pg
    finally:
        ctx.close()


def screenshot(page, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
