"""/docs and /redoc work with no internet: a real browser loads them with every non-local request blocked."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium comes with Debian's chromium package")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def _offline_page(browser, server_url: str):
    """A page that can reach only the server; it records what else it tried and what failed."""
    page = browser.new_page()
    local = urlsplit(server_url).netloc
    blocked: list[str] = []
    failed: list[str] = []
    errors: list[str] = []

    def route(r):
        if urlsplit(r.request.url).netloc == local or r.request.url.startswith("data:"):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("requestfailed", lambda request: failed.append(request.url))
    page.on("response", lambda response: response.status >= 400 and failed.append(response.url))
    page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
    return page, blocked, failed, errors


def test_swagger_ui_shows_the_operations_offline(browser, live_server):
    page, blocked, failed, errors = _offline_page(browser, live_server.url)
    page.goto(f"{live_server.url}/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=30_000)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert "/api/v1/deployments" in [p.replace("\u200b", "") for p in paths]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "docs-offline.png"))
    assert (blocked, failed, errors) == ([], [], [])
    page.close()


def test_redoc_shows_the_operations_offline(browser, live_server):
    page, blocked, failed, errors = _offline_page(browser, live_server.url)
    page.goto(f"{live_server.url}/redoc")
    # ReDoc renders the whole document up front: slow on a big spec and a busy machine.
    page.locator("h2", has_text="List deployments, newest first").wait_for(timeout=120_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "redoc-offline.png"))
    # Nothing left the browser (the page's policy stops ReDoc's CDN logo before it is fetched); every
    # local request succeeded.
    assert blocked == [] and [url for url in failed if url.startswith(live_server.url)] == []
    assert not [e for e in errors if "Content Security Policy" not in e], errors
    page.close()
