"""The playground page (`GET /playground`), driven in a real headless Chromium against a real `vidgate serve`.

The browser is Debian's chromium (`apt-get install chromium`), launched by Playwright through `executable_path`:
Playwright's own browser download is never used. Without chromium or the playwright package the browser tests
skip, saying which is missing, unless VIDGATE_REQUIRE_CHROMIUM=1 (CI), where they fail.
"""

from __future__ import annotations

import io
import os
import shutil
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
from PIL import Image, ImageStat

from tests.conftest import SHORT_PROMPT, Api, LiveServer, free_port

REQUIRE_ENV = "VIDGATE_REQUIRE_CHROMIUM"
T2V = "wan-2.5-preview-text-to-video"
I2V = "wan-2.5-preview-image-to-video"
ROOT = Path(__file__).resolve().parents[2]
RENDER_TIMEOUT_MS = 180_000  # a 5 s 480p render plus the browser on a busy 2-core CI machine


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        if found := shutil.which(name):
            return found
    return None


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[test]')"
    if chromium_path() is None:
        return "Debian's chromium is not installed (apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if reason := missing_browser():
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason} ({REQUIRE_ENV}=1)")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # --no-sandbox: Chromium's sandbox cannot start as root in a container (CI runs as root).
        # The autoplay flag lets the test call play() without a user gesture.
        chromium = p.chromium.launch(executable_path=chromium_path(), headless=True,
                                     args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"the page threw: {errors}"


@pytest.fixture
def idle_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A server without render workers: its jobs stay queued, so cancel always finds one to cancel."""
    env = dict(os.environ, VIDGATE_RATE_LIMIT_QUEUE_PER_MIN="0", VIDGATE_RATE_LIMIT_RETRIEVE_PER_MIN="0",
               PYTHONUNBUFFERED="1")
    server = LiveServer(data_dir=tmp_path / "data", port=free_port(), env=env, workers=0)
    server.start()
    yield server
    server.stop()


def open_playground(page: Any, server: LiveServer, key: str | None) -> None:
    page.goto(f"{server.base_url}/playground")
    page.wait_for_selector(f"#model option[value='{T2V}']", state="attached")
    if key is not None:
        page.fill("#api-key", key)
        page.dispatch_event("#api-key", "change")


def wait_quote(page: Any) -> float:
    page.wait_for_function("() => Number(document.querySelector('#quote').dataset.usd) > 0")
    return float(page.get_attribute("#quote", "data-usd"))


def select_values(page: Any, selector: str) -> list[str]:
    return page.eval_on_selector_all(f"{selector} option", "options => options.map(o => o.value)")


def record_statuses(page: Any) -> None:
    """Keep every state and text the status line shows (they change faster than a test can poll)."""
    page.evaluate("""() => {
        const el = document.querySelector('#status');
        window.statusLog = [];
        new MutationObserver(() => window.statusLog.push([el.dataset.state, el.textContent]))
            .observe(el, {attributes: true, childList: true, characterData: true, subtree: true});
    }""")


# --- without a browser -------------------------------------------------------------------------------------------


async def test_page_is_served_self_contained(api: Api) -> None:
    response = await api.client.get("/playground")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    html = response.text
    # Offline: nothing is loaded from another host (no CDN scripts, styles or fonts).
    for attribute in ("src=\"http", "href=\"http", "src='http", "href='http", "@import", "url(http"):
        assert attribute not in html
    for element_id in ("api-key", "model", "prompt", "quote", "generate", "cancel", "progress", "status",
                       "video", "download", "error"):
        assert f'id="{element_id}"' in html

    needs = (await api.client.get("/playground/inputs")).json()["models"]
    assert (needs[T2V]["prompt"], needs[T2V]["image"], needs[T2V]["other_media_required"]) == ("required", "no", False)
    assert needs[I2V]["image"] == "required" and not needs[I2V]["other_media_required"]
    assert needs["wan-2-7-reference-to-video"]["other_media_required"]  # reference images: not offered
    assert needs["topaz-video-upscale"]["other_media_required"]  # a source video: not offered


def test_page_ships_in_the_package() -> None:
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "api/static/*.html" in package_data["vidgate"]
    assert (ROOT / "src/vidgate/api/static/playground.html").is_file()


# --- in Chromium -------------------------------------------------------------------------------------------------


def test_generate_watch_play_and_download(page: Any, live_server: LiveServer) -> None:
    assert live_server.api_key
    open_playground(page, live_server, live_server.api_key)
    page.select_option("#model", T2V)

    # The options are the model's constraints from /models.
    with httpx.Client(base_url=f"{live_server.base_url}/api/v1") as client:
        listed = {m["id"]: m for m in client.get("/models", params={"type": "video"}).json()["data"]}
        constraints = listed[T2V]["model_spec"]["constraints"]
        expected_quote = client.post("/video/quote", json={"model": T2V, "duration": "5s", "resolution": "480p",
                                                           "aspect_ratio": "16:9"}).json()["quote"]
    assert select_values(page, "#duration") == constraints["durations"]
    assert select_values(page, "#resolution") == constraints["resolutions"]
    assert select_values(page, "#aspect-ratio") == constraints["aspect_ratios"]
    assert page.locator("#audio").count() == 0  # this model's audio is not configurable

    page.select_option("#duration", "5s")
    page.select_option("#resolution", "480p")
    page.select_option("#aspect-ratio", "16:9")
    page.fill("#prompt", SHORT_PROMPT)
    assert wait_quote(page) == expected_quote > 0
    page.wait_for_function("() => document.querySelector('#balance').textContent.includes('$')")

    record_statuses(page)
    page.click("#generate")
    page.wait_for_function("() => { const v = document.querySelector('#video');"
                           " return v.getAttribute('src') && v.readyState >= 2; }", timeout=RENDER_TIMEOUT_MS)
    assert page.evaluate("() => document.querySelector('#video').src").startswith("blob:")
    assert not page.is_visible("#error"), page.text_content("#error")

    log: list[list[str]] = page.evaluate("() => window.statusLog")
    states = [state for state, _ in log]
    assert states[-1] == "completed" and page.text_content("#status").startswith("Completed")
    assert {"queued", "running"} & set(states), log  # it was watched live before it completed
    assert any(text.startswith(("Queued — #", "Running — ")) for _, text in log), log
    assert page.evaluate("() => document.querySelector('#progress').value") == 100

    # It plays: time advances, and the frame is the requested size.
    page.evaluate("() => { const v = document.querySelector('#video'); v.muted = true; return v.play(); }")
    page.wait_for_function("() => document.querySelector('#video').currentTime > 0.5", timeout=30_000)
    width, height = page.evaluate("() => [document.querySelector('#video').videoWidth,"
                                  " document.querySelector('#video').videoHeight]")
    assert height == 480 and abs(width - 854) <= 8, (width, height)

    # A screenshot of the element shows a picture, not a blank or uniform box. Without its controls, so that
    # only the decoded frame is measured.
    page.evaluate("() => { const v = document.querySelector('#video'); v.pause(); v.controls = false; }")
    shot = Image.open(io.BytesIO(page.locator("#video").screenshot())).convert("RGB")
    spread = ImageStat.Stat(shot.convert("L")).stddev[0]
    assert spread > 8, f"the video element looks blank (pixel standard deviation {spread:.1f})"

    # The download link saves the MP4 (the same bytes retrieve answers).
    with page.expect_download() as info:
        page.click("#download")
    download = info.value
    assert download.suggested_filename.endswith(".mp4")
    data = Path(download.path()).read_bytes()
    assert data[4:8] == b"ftyp"
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (width, height)
    queue_id = page.text_content("#job-meta").split()[1]
    with live_server.client() as client:
        assert client.post("/video/retrieve", json={"model": T2V, "queue_id": queue_id}).content == data


def test_image_to_video_queue_cancel_and_errors(page: Any, idle_server: LiveServer, tmp_path: Path) -> None:
    assert idle_server.api_key
    open_playground(page, idle_server, "vg_not_a_real_key")

    # The image model's options follow its constraints: no aspect ratio (the image gives it), an image field.
    page.select_option("#model", I2V)
    assert page.locator("#aspect-ratio").count() == 0
    assert page.is_visible("#image")
    assert wait_quote(page) > 0  # quote needs no key

    page.fill("#prompt", SHORT_PROMPT)
    page.click("#generate")  # no image yet: the page says so before sending anything
    page.wait_for_selector("#error.shown")
    assert "image" in page.text_content("#error")

    picture = tmp_path / "gradient.png"
    Image.radial_gradient("L").convert("RGB").resize((640, 360)).save(picture)
    page.set_input_files("#image", str(picture))
    page.wait_for_selector("#image-preview[src^='data:image/png']", state="attached")
    page.click("#generate")  # a bad key: the API's own message is shown
    page.wait_for_function("() => document.querySelector('#error').textContent.includes('Authentication failed')")

    page.fill("#api-key", idle_server.api_key)
    page.dispatch_event("#api-key", "change")
    page.click("#generate")
    # No workers: it stays first in line until canceled.
    page.wait_for_function("() => document.querySelector('#status').textContent.startsWith('Queued — #1')")
    assert not page.is_visible("#error")
    page.click("#cancel")
    page.wait_for_function("() => document.querySelector('#status').dataset.state === 'canceled'")
    assert "refunded" in page.text_content("#status")
    assert page.is_enabled("#generate") and page.is_disabled("#cancel")

    # The key was kept for the next visit.
    page.reload()
    page.wait_for_selector(f"#model option[value='{T2V}']", state="attached")
    assert page.input_value("#api-key") == idle_server.api_key
