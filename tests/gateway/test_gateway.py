"""Gateway mode end to end: a second vidgate on loopback is the upstream (its procedural engine), and a gateway
vidgate in front of it is driven through its public API and the third-party Venice clients."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import SHORT_PROMPT, LiveServer, data_url, free_port
from tests.test_compat_sdks import (
    test_venice_py_sync_submit_retrieve_cancel as drive_with_venice_py,
)
from tests.test_compat_sdks import (
    test_venice_sdk_queue_wait_cleanup as drive_with_venice_sdk,
)
from tests.test_compat_sdks import (
    test_veniceresch_download_complete as drive_with_veniceresch,
)
from tests.test_consent import face_png

MODEL = "wan-2.5-preview-text-to-video"
BODY = {"model": MODEL, "prompt": SHORT_PROMPT, "duration": "5s", "resolution": "480p", "aspect_ratio": "16:9"}
MARKUP = 10
WAIT_S = 60


def server_env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("VIDGATE_")},
            "VIDGATE_X264_PRESET": "ultrafast", "VIDGATE_LEASE_SECONDS": "2", "VIDGATE_IDLE_POLL_SECONDS": "0.2",
            "VIDGATE_RATE_LIMIT_QUEUE_PER_MIN": "0", "VIDGATE_RATE_LIMIT_RETRIEVE_PER_MIN": "0",
            "PYTHONUNBUFFERED": "1", **extra}


def start(server: LiveServer) -> LiveServer:
    server.start()
    return server


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[LiveServer]:
    # The upstream's own catalogue is stricter than the gateway's in one place (wan-2.5-preview takes 5 s only
    # there), and it asks for face consent on a model whose consent the gateway turned off: so the tests can
    # watch the upstream's own 400 and 409 pass through the gateway unchanged.
    (tmp_path / "upstream-catalog.json").write_text(json.dumps({
        "update": {MODEL: {"durations": ["5s"]}, "seedance-2-0-image-to-video-basic": {"face_consent": True}}}))
    server = LiveServer(tmp_path / "upstream", free_port(),
                        server_env(VIDGATE_CATALOG_FILE=str(tmp_path / "upstream-catalog.json")), workers=1)
    yield start(server)
    server.stop()


def gateway_for(tmp_path: Path, upstream: LiveServer, key: str | None = None, **config: Any) -> LiveServer:
    upstreams = {"up": {"base_url": f"{upstream.base_url}/api/v1", "api_key_env": "UP_KEY",
                        "models": ["wan-2.5-preview-*", "grok-imagine-text-to-video-private",
                                   "seedance-2-0-image-to-video-basic"],
                        "markup_percent": MARKUP, "poll_interval_s": 0.2, **config}}
    return LiveServer(tmp_path / "gateway", free_port(),
                      server_env(VIDGATE_UPSTREAMS=json.dumps(upstreams), UP_KEY=key or upstream.api_key or ""),
                      workers=1)


@pytest.fixture
def gateway(tmp_path: Path, upstream: LiveServer) -> Iterator[LiveServer]:
    server = gateway_for(tmp_path, upstream)
    yield start(server)
    server.stop()


def post(server: LiveServer, path: str, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key or server.api_key}"}
    return httpx.post(f"{server.base_url}/api/v1{path}", json=body, headers=headers, timeout=30)


def wait_for_video(server: LiveServer, model: str, queue_id: str) -> bytes:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        got = post(server, "/video/retrieve", {"model": model, "queue_id": queue_id})
        if got.headers.get("content-type") == "video/mp4":
            return got.content
        assert got.status_code == 200 and got.json()["status"] == "PROCESSING", got.text
        time.sleep(0.2)
    raise AssertionError("no video in time")


def db_rows(server: LiveServer, query: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{server.data_dir / 'vidgate.db'}?mode=ro", uri=True, timeout=10) as db:
        return db.execute(query).fetchall()


def upstream_job_of(gateway: LiveServer, queue_id: str) -> dict[str, Any]:
    [(payload,)] = db_rows(gateway, f"select request_json from jobs where id = '{queue_id}'")
    return json.loads(payload)["upstream"]


def balance(server: LiveServer) -> Decimal:
    response = httpx.get(f"{server.base_url}/api/v1/models", headers={"Authorization": f"Bearer {server.api_key}"})
    return Decimal(response.headers["x-venice-balance-usd"])


def test_the_video_is_the_upstreams_bytes_the_charge_its_quote_plus_markup_and_its_copy_is_gone(
        upstream: LiveServer, gateway: LiveServer) -> None:
    upstream_quote = Decimal(str(post(upstream, "/video/quote", BODY).json()["quote"]))
    gateway_quote = Decimal(str(post(gateway, "/video/quote", BODY).json()["quote"]))
    assert gateway_quote == (upstream_quote * Decimal("1.1")).quantize(Decimal("0.01"))
    before = balance(gateway)
    queued = post(gateway, "/video/queue", BODY)
    assert queued.status_code == 200, queued.text
    assert balance(gateway) == before - gateway_quote
    video = wait_for_video(gateway, MODEL, queued.json()["queue_id"])
    direct = post(upstream, "/video/queue", BODY)
    assert video == wait_for_video(upstream, MODEL, direct.json()["queue_id"]), "byte-identical to the upstream's"
    twin = upstream_job_of(gateway, queued.json()["queue_id"])
    deadline = time.monotonic() + 10
    while post(upstream, "/video/retrieve", {"model": MODEL, "queue_id": twin["queue_id"]}).status_code != 404:
        assert time.monotonic() < deadline, "the upstream still holds its copy"
        time.sleep(0.2)


def test_private_models_are_fetched_from_the_upstreams_download_url(upstream: LiveServer,
                                                                    gateway: LiveServer) -> None:
    body = {"model": "grok-imagine-text-to-video-private", "prompt": SHORT_PROMPT, "duration": "1s",
            "resolution": "480p", "aspect_ratio": "16:9"}
    queued = post(gateway, "/video/queue", body)
    assert queued.status_code == 200, queued.text
    link = queued.json()["download_url"]
    assert link.startswith(gateway.base_url), "the client gets the gateway's own link"
    deadline = time.monotonic() + WAIT_S
    while (got := httpx.get(link, timeout=30)).headers.get("content-type") != "video/mp4":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert got.content[4:8] == b"ftyp"


@pytest.mark.parametrize("drive", [drive_with_venice_py, drive_with_venice_sdk, drive_with_veniceresch])
def test_third_party_clients_work_through_the_gateway(gateway: LiveServer, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch, drive: Any) -> None:
    if drive is drive_with_venice_sdk:
        drive(gateway, tmp_path, monkeypatch)
    else:
        drive(gateway)


def test_the_upstreams_own_400_and_409_reach_the_client_unchanged_with_nothing_charged(
        upstream: LiveServer, gateway: LiveServer, tmp_path: Path) -> None:
    ten = {**BODY, "duration": "10s"}  # fine by the gateway's catalogue, not by the upstream's
    theirs, ours = post(upstream, "/video/queue", ten), post(gateway, "/video/queue", ten)
    assert theirs.status_code == ours.status_code == 400
    assert ours.json() == theirs.json()
    face = data_url(face_png(tmp_path), "image/png")
    seedance = {"model": "seedance-2-0-image-to-video-basic", "prompt": SHORT_PROMPT, "duration": "5s",
                "resolution": "480p", "image_url": face}
    before = balance(gateway)
    theirs, ours = post(upstream, "/video/queue", seedance), post(gateway, "/video/queue", seedance)
    assert theirs.status_code == ours.status_code == 409
    assert ours.json() == theirs.json()
    assert balance(gateway) == before
    assert db_rows(gateway, "select count(*) from jobs") == [(0,)]


def test_a_killed_worker_resumes_the_same_upstream_job_and_an_upstream_outage_is_waited_out(
        upstream: LiveServer, gateway: LiveServer) -> None:
    upstream.stop()  # the upstream takes the job, then goes away before rendering it
    upstream.workers = 0
    start(upstream)
    queued = post(gateway, "/video/queue", BODY)
    assert queued.status_code == 200, queued.text
    time.sleep(1.0)  # the gateway's worker is polling now
    [worker] = gateway.worker_pids()
    os.kill(worker, signal.SIGKILL)
    upstream.stop()
    time.sleep(3.0)  # the supervisor restarts the worker; the upstream is down; polls fail and back off
    upstream.workers = 1
    start(upstream)
    wait_for_video(gateway, MODEL, queued.json()["queue_id"])
    assert db_rows(upstream, "select count(*) from jobs") == [(1,)], "submitted upstream exactly once"
    assert db_rows(gateway, "select count(*) from ledger where kind = 'CHARGE'") == [(1,)]


def test_a_wrong_upstream_key_charges_nothing_and_tells_the_operator(tmp_path: Path, upstream: LiveServer) -> None:
    gateway = start(gateway_for(tmp_path, upstream, key="vg_not_a_key"))
    try:
        before = balance(gateway)
        refused = post(gateway, "/video/queue", BODY)
        assert refused.status_code == 503 and refused.headers["retry-after"]
        assert upstream.base_url not in refused.text and "vg_not_a_key" not in refused.text
        assert balance(gateway) == before
        assert gateway.log is not None and "OPERATOR: upstream up refused our credentials" in gateway.log.read_text()
    finally:
        gateway.stop()


def test_fifty_concurrent_gateway_jobs_keep_its_memory_flat(tmp_path: Path, upstream: LiveServer) -> None:
    import concurrent.futures

    gateway = start(gateway_for(tmp_path, upstream, max_in_flight=64))
    body = {"model": "grok-imagine-text-to-video-private", "prompt": SHORT_PROMPT, "duration": "1s",
            "resolution": "480p", "aspect_ratio": "16:9"}
    try:
        def rss_kib() -> int:
            pids = [gateway.proc.pid, *gateway.worker_pids()] if gateway.proc else []
            return sum(int(line.split()[1]) for pid in pids
                       for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmRSS"))

        def one(_: int) -> str:
            queued = post(gateway, "/video/queue", body)
            assert queued.status_code == 200, queued.text
            return queued.json()["download_url"]

        links = [one(0)]  # warm: first imports, first connections
        deadline = time.monotonic() + WAIT_S
        while httpx.get(links[0]).headers.get("content-type") != "video/mp4" and time.monotonic() < deadline:
            time.sleep(0.3)
        before = rss_kib()
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            links = list(pool.map(one, range(50)))
        deadline = time.monotonic() + 4 * WAIT_S
        pending = set(links)
        while pending and time.monotonic() < deadline:
            pending = {link for link in pending if httpx.get(link).headers.get("content-type") != "video/mp4"}
            time.sleep(0.5)
        assert not pending, f"{len(pending)} jobs unfinished"
        assert rss_kib() - before < 60 * 1024, "the gateway's memory grew with the jobs it relayed"
    finally:
        gateway.stop()


def test_settings_that_cannot_work_are_startup_errors(tmp_path: Path) -> None:
    import subprocess
    import sys

    def serve(upstreams: dict[str, Any], **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "vidgate", "serve", "--data-dir", str(tmp_path / "d"),
                               "--port", "1"], capture_output=True, text=True, timeout=60,
                              env=server_env(VIDGATE_UPSTREAMS=json.dumps(upstreams), **env))

    base = {"base_url": "http://127.0.0.1:9/api/v1", "api_key_env": "UP_KEY", "models": [MODEL]}
    missing_key = serve({"up": base})
    assert missing_key.returncode == 2 and "VIDGATE_UPSTREAMS.up.api_key_env names UP_KEY" in missing_key.stderr
    nothing = serve({"up": {**base, "models": ["sora-9-*"]}}, UP_KEY="k")
    assert nothing.returncode == 2 and "'sora-9-*' routes no model" in nothing.stderr
    unknown = serve({"up": {**base, "colour": "red"}}, UP_KEY="k")
    assert unknown.returncode == 2 and "VIDGATE_UPSTREAMS" in unknown.stderr and "colour" in unknown.stderr


def test_cancel_on_the_gateway_cancels_the_upstream_job_and_refunds(tmp_path: Path) -> None:
    # An upstream without workers keeps its job queued, so the gateway's worker is polling it when it is canceled.
    upstream = start(LiveServer(tmp_path / "upstream", free_port(), server_env(), workers=0))
    gateway = start(gateway_for(tmp_path, upstream))
    try:
        before = balance(gateway)
        queued = post(gateway, "/video/queue", BODY)
        assert queued.status_code == 200, queued.text
        queue_id = queued.json()["queue_id"]
        upstream_id = upstream_job_of(gateway, queue_id)["queue_id"]
        auth = {"Authorization": f"Bearer {gateway.api_key}"}
        deadline = time.monotonic() + WAIT_S
        while httpx.get(f"{gateway.base_url}/api/v1/video/jobs/{queue_id}", headers=auth).json()["status"] != "running":
            assert time.monotonic() < deadline, "the gateway's worker never took the job"
            time.sleep(0.1)
        canceled = httpx.post(f"{gateway.base_url}/api/v1/video/jobs/{queue_id}/cancel", headers=auth)
        assert canceled.status_code == 200, canceled.text
        upstream_auth = {"Authorization": f"Bearer {upstream.api_key}"}
        while True:
            there = httpx.get(f"{upstream.base_url}/api/v1/video/jobs/{upstream_id}", headers=upstream_auth).json()
            here = httpx.get(f"{gateway.base_url}/api/v1/video/jobs/{queue_id}", headers=auth).json()
            if there["status"] == "canceled" and here["status"] == "canceled":
                break
            assert time.monotonic() < deadline, (here, there)
            time.sleep(0.2)
        assert here["refunded_usd"] == here["price_usd"] and balance(gateway) == before
    finally:
        gateway.stop()
        upstream.stop()
