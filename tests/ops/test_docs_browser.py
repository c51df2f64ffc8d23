"""`/docs` in a real headless Chromium (Debian's, through Playwright, as tests/playground does): Swagger UI
renders vidgate's document with every request going to the server itself, under the page's CSP."""

from __future__ import annotations

import os
import shutil
from urllib.parse import urlsplit

import pytest

from tests.conftest import LiveServer

REQUIRE_ENV = "VIDGATE_REQUIRE_CHROMIUM"


def chromium_path() -> str | None:
    return next((found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None)


def test_docs_render_offline_from_this_server(live_server: LiveServer) -> None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "the playwright package is not installed (pip install -e '.[test]')"
    else:
        reason = None if chromium_path() else "Debian's chromium is not installed (apt-get install chromium)"
    if reason:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason} ({REQUIRE_ENV}=1)")
        pytest.skip(reason)

    origin = urlsplit(live_server.base_url).netloc
    requested: list[str] = []
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.on("request", lambda request: requested.append(request.url))
            page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            page.goto(f"{live_server.base_url}/docs")
            page.wait_for_selector(".opblock-summary-path", timeout=30_000)
            paths = page.locator(".opblock-summary-path").all_inner_texts()
            title = page.locator(".info .title").inner_text()
        finally:
            browser.close()
    assert "vidgate" in title
    assert any("/api/v1/video/queue" in path.replace("\u200b", "") for path in paths)
    assert any("/readyz" in path.replace("\u200b", "") for path in paths)
    assert len(paths) >= 28
    assert f"{live_server.base_url}/openapi.json" in requested
    elsewhere = [url for url in requested if urlsplit(url).netloc != origin and not url.startswith("data:")]
    assert elsewhere == [], "the page asked for something not on this server"
    assert problems == [], "errors (a refused load shows here as a CSP violation)"
