"""Gateway failure modes against a scripted fake upstream: a small Venice-compatible server on loopback whose
retrieve answers follow a per-test script, and which records every request it got. A real gateway vidgate
(`LiveServer`) in front of it is driven over HTTP, and each test checks what the client or the operator sees."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from fnmatch import fnmatchcase
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import SHORT_PROMPT, LiveServer, free_port
from tests.media.factory import make_mp4
from vidgate.catalog.models import load_catalog

MODEL = "wan-2.5-preview-text-to-video"
BODY = {"model": MODEL, "prompt": SHORT_PROMPT, "duration": "5s", "resolution": "480p", "aspect_ratio": "16:9"}
PATTERN = "wan-2.5-preview-*"
UPSTREAM = "fakeprov"  # distinctive, so a test can tell whether a client-facing message names it
UPSTREAM_KEY = "fake-upstream-secret-7f3a9c"
UPSTREAM_QUOTE = 0.5
WAIT_S = 30

# --- the scripted fake upstream -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One scripted HTTP answer; `drop` closes the connection without answering at all."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    drop: bool = False


def json_answer(status: int, body: dict[str, Any], **headers: str) -> Answer:
    return Answer(status, json.dumps(body).encode(), headers=tuple(headers.items()))


PROCESSING = json_answer(200, {"status": "PROCESSING", "average_execution_time": 4000, "execution_duration": 1000})
INFERENCE_FAILED = json_answer(500, {"error": "Inference processing failed"})
MODERATION_MESSAGE = ("Your generation was blocked due to the model provider's content policies. "
                      "Credits have been refunded.")
# vidgate.gateway.client reads a 422 as the content-policy refusal (terminal); a 500 is terminal only with the
# exact "Inference processing failed" text, any other 500 is treated as transient.
MODERATED = json_answer(422, {"error": MODERATION_MESSAGE, "credits_refunded": True})
OUT_OF_CREDIT = json_answer(402, {"code": "INSUFFICIENT_BALANCE", "error": "Insufficient USD or Diem balance"})
UNAVAILABLE = json_answer(503, {"error": "Service temporarily unavailable"}, **{"Retry-After": "1"})
RATE_LIMITED = json_answer(429, {"error": "Rate limit exceeded"}, **{"Retry-After": "1"})
BAD_GATEWAY = json_answer(502, {"error": "Bad gateway"})
DROP = Answer(drop=True)
KEY_REFUSED = json_answer(401, {"error": "Authentication failed"})


@dataclass(frozen=True)
class Seen:
    """A request the fake got."""

    method: str
    path: str  # without the /api/v1 prefix
    body: dict[str, Any]
    authorized: bool
    at: float  # time.monotonic()


@dataclass
class FakeUpstream:
    video: bytes
    routed: list[str]
    port: int = 0
    retrieve_script: list[Answer] = field(default_factory=lambda: [PROCESSING])
    models_answer: Answer | None = None  # None: every routed model is listed
    requests: list[Seen] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    def script(self, *answers: Answer) -> None:
        """Retrieve's answers, consumed in order, the last one repeated."""
        with self._lock:
            self.retrieve_script = list(answers)

    def video_answer(self) -> Answer:
        return Answer(200, self.video, "video/mp4")

    def seen(self, path: str) -> list[Seen]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def answer(self, method: str, path: str, body: dict[str, Any], authorized: bool) -> Answer:
        with self._lock:
            self.requests.append(Seen(method, path, body, authorized, time.monotonic()))
            if path == "/models" and method == "GET":  # readable without a key, as Venice's is
                return self.models_answer or json_answer(200, {"data": [{"id": m, "type": "video"}
                                                                        for m in self.routed]})
            if not authorized:
                return KEY_REFUSED
            if method != "POST":
                return json_answer(405, {"error": "Method not allowed"})
            if path == "/video/quote":
                return json_answer(200, {"quote": UPSTREAM_QUOTE})
            if path == "/video/queue":
                return json_answer(200, {"model": body.get("model"), "queue_id": str(uuid.uuid4())})
            if path == "/video/retrieve":
                return self.retrieve_script.pop(0) if len(self.retrieve_script) > 1 else self.retrieve_script[0]
            if path == "/video/complete":
                return json_answer(200, {"success": True})
            return json_answer(404, {"error": "Not found"})

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self.handle_call("GET")

            def do_POST(self) -> None:
                self.handle_call("POST")

            def handle_call(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    body = {}
                path = urlsplit(self.path).path.removeprefix("/api/v1")
                authorized = self.headers.get("Authorization") == f"Bearer {UPSTREAM_KEY}"
                answer = fake.answer(method, path, body if isinstance(body, dict) else {}, authorized)
                if answer.drop:
                    self.close_connection = True  # no status line at all: the client sees a dropped connection
                    return
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", answer.content_type)
                    self.send_header("Content-Length", str(len(answer.body)))
                    for name, value in answer.headers:
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(answer.body)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # a poll closes a video answer unread

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make_mp4(tmp_path_factory.mktemp("fake-upstream") / "clip.mp4", 0.5, 64, 48, fps=8).read_bytes()


@pytest.fixture(scope="module")
def routed() -> list[str]:
    return sorted(spec.id for spec in load_catalog() if fnmatchcase(spec.id, PATTERN))


@pytest.fixture
def fake(video: bytes, routed: list[str]) -> Iterator[FakeUpstream]:
    upstream = FakeUpstream(video, routed, port=free_port())
    upstream.start()
    yield upstream
    upstream.stop()


# --- the gateway ------------------------------------------------------------------------------------------------


def server_env(fake: FakeUpstream, **config: Any) -> dict[str, str]:
    upstreams = {UPSTREAM: {"base_url": fake.base_url, "api_key_env": "FAKE_UPSTREAM_KEY", "models": [PATTERN],
                            "markup_percent": 10, "poll_interval_s": 0.2, **config}}
    return {**{k: v for k, v in os.environ.items() if not k.startswith("VIDGATE_")},
            "VIDGATE_X264_PRESET": "ultrafast", "VIDGATE_LEASE_SECONDS": "2", "VIDGATE_IDLE_POLL_SECONDS": "0.2",
            "VIDGATE_RATE_LIMIT_QUEUE_PER_MIN": "0", "VIDGATE_RATE_LIMIT_RETRIEVE_PER_MIN": "0",
            "PYTHONUNBUFFERED": "1", "VIDGATE_UPSTREAMS": json.dumps(upstreams), "FAKE_UPSTREAM_KEY": UPSTREAM_KEY}


@pytest.fixture
def gateway_with(tmp_path: Path, fake: FakeUpstream) -> Iterator[Callable[..., LiveServer]]:
    """Starts a gateway routed to the fake, with extra upstream settings; stops it after the test."""
    started: list[LiveServer] = []

    def start(**config: Any) -> LiveServer:
        server = LiveServer(tmp_path / f"gateway{len(started)}", free_port(), server_env(fake, **config), workers=1)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def gateway(gateway_with: Callable[..., LiveServer]) -> LiveServer:
    return gateway_with()


def post(server: LiveServer, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.base_url}/api/v1{path}", json=body,
                      headers={"Authorization": f"Bearer {server.api_key}"}, timeout=30)


def balance(server: LiveServer) -> Decimal:
    response = httpx.get(f"{server.base_url}/api/v1/models", headers={"Authorization": f"Bearer {server.api_key}"})
    return Decimal(response.headers["x-venice-balance-usd"])


def ledger_of(server: LiveServer, job_id: str) -> list[tuple[str, int]]:
    with sqlite3.connect(f"file:{server.data_dir / 'vidgate.db'}?mode=ro", uri=True, timeout=10) as db:
        return db.execute("select kind, amount_micros from ledger where job_id = ? order by id", (job_id,)).fetchall()


def queue(server: LiveServer) -> str:
    queued = post(server, "/video/queue", BODY)
    assert queued.status_code == 200, queued.text
    return str(queued.json()["queue_id"])


def wait_for_failure(server: LiveServer, queue_id: str, within_s: float = WAIT_S) -> httpx.Response:
    """Polls the gateway's retrieve until it stops answering PROCESSING; fails the test on a video."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        got = post(server, "/video/retrieve", {"model": MODEL, "queue_id": queue_id})
        assert got.headers.get("content-type") != "video/mp4", "the job finished instead of failing"
        if got.status_code != 200:
            return got
        assert got.json()["status"] == "PROCESSING", got.text
        time.sleep(0.2)
    raise AssertionError("the job did not fail in time")


def assert_refunded_once(server: LiveServer, job_id: str, before: Decimal) -> None:
    assert balance(server) == before, "the balance is back where it was"
    entries = ledger_of(server, job_id)
    assert [kind for kind, _ in entries] == ["CHARGE", "REFUND"], entries
    assert sum(amount for _, amount in entries) == 0, entries


def assert_nothing_about_the_upstream(text: str, fake: FakeUpstream) -> None:
    for secret in (UPSTREAM_KEY, fake.base_url, f"127.0.0.1:{fake.port}", str(fake.port), UPSTREAM, "402",
                   "Diem", "INSUFFICIENT_BALANCE"):
        assert secret not in text, f"the client-facing error mentions {secret!r}: {text}"


# --- the tests ----------------------------------------------------------------------------------------------------


def test_an_upstream_inference_failure_fails_the_job_with_its_message_and_refunds_it_once(
        fake: FakeUpstream, gateway: LiveServer) -> None:
    fake.script(PROCESSING, PROCESSING, INFERENCE_FAILED)
    before = balance(gateway)
    job_id = queue(gateway)
    assert balance(gateway) < before, "charged at queue time"
    failed = wait_for_failure(gateway, job_id)
    assert failed.status_code == 500
    assert failed.json()["error"] == "Inference processing failed"
    assert_refunded_once(gateway, job_id, before)
    time.sleep(1.0)  # a worker that wrongly retried would submit again now
    assert len(fake.seen("/video/queue")) == 1, "never submitted twice"
    assert len(fake.seen("/video/retrieve")) == 3, "no polling after the terminal answer"
    assert fake.seen("/video/complete") == []


def test_a_moderation_block_fails_the_job_with_the_upstreams_own_message(fake: FakeUpstream,
                                                                         gateway: LiveServer) -> None:
    fake.script(PROCESSING, MODERATED)
    before = balance(gateway)
    job_id = queue(gateway)
    failed = wait_for_failure(gateway, job_id)
    assert failed.status_code == 500
    assert failed.json()["error"] == MODERATION_MESSAGE
    assert_refunded_once(gateway, job_id, before)
    assert len(fake.seen("/video/queue")) == 1


def test_the_upstream_account_out_of_credit_fails_and_refunds_the_job_and_tells_only_the_operator(
        fake: FakeUpstream, gateway: LiveServer) -> None:
    fake.script(PROCESSING, OUT_OF_CREDIT)
    before = balance(gateway)
    job_id = queue(gateway)
    failed = wait_for_failure(gateway, job_id)
    assert failed.status_code == 500
    assert_nothing_about_the_upstream(failed.text, fake)
    assert_refunded_once(gateway, job_id, before)
    assert gateway.log is not None
    operator = [line for line in gateway.log.read_text().splitlines() if "OPERATOR:" in line]
    assert len(operator) == 1, operator
    assert f"upstream {UPSTREAM}" in operator[0] and "UpstreamPaymentRequired" in operator[0]
    assert UPSTREAM_KEY not in gateway.log.read_text(), "the key never reaches the log"


def test_unavailable_and_rate_limited_polls_are_waited_out_and_the_video_relayed_byte_for_byte(
        fake: FakeUpstream, gateway: LiveServer, video: bytes) -> None:
    fake.script(UNAVAILABLE, RATE_LIMITED, PROCESSING, fake.video_answer())
    before = balance(gateway)
    job_id = queue(gateway)
    charged = before - balance(gateway)
    assert charged == Decimal("0.55"), "the upstream's quote plus the 10 % markup"
    deadline = time.monotonic() + WAIT_S
    while (got := post(gateway, "/video/retrieve", {"model": MODEL, "queue_id": job_id})).headers.get(
            "content-type") != "video/mp4":
        assert got.status_code == 200 and got.json()["status"] == "PROCESSING", got.text
        assert time.monotonic() < deadline, "no video in time"
        time.sleep(0.2)
    assert got.content == video, "byte-identical to the upstream's MP4"
    assert [kind for kind, _ in ledger_of(gateway, job_id)] == ["CHARGE"], "charged once, never refunded"
    assert balance(gateway) == before - charged

    [submitted] = fake.seen("/video/queue")
    retrieves = fake.seen("/video/retrieve")
    assert len(retrieves) >= 5, "503, 429, PROCESSING, the finished poll, and the download"
    assert retrieves[1].at - retrieves[0].at >= 1.0 and retrieves[2].at - retrieves[1].at >= 1.0, \
        "Retry-After honoured"
    deadline = time.monotonic() + 10
    while not (completes := fake.seen("/video/complete")):
        assert time.monotonic() < deadline, "the upstream's copy was never deleted"
        time.sleep(0.1)
    [complete] = completes
    queue_id = retrieves[0].body["queue_id"]
    assert all(r.body["queue_id"] == queue_id for r in retrieves)
    assert complete.body == {"model": MODEL, "queue_id": queue_id}
    assert complete.at >= retrieves[-1].at, "deleted only after the download"
    assert submitted.authorized and all(r.authorized for r in fake.requests if r.path != "/models")


def test_transient_errors_until_the_deadline_fail_the_job_and_refund_it_once(
        fake: FakeUpstream, gateway_with: Callable[..., LiveServer]) -> None:
    gateway = gateway_with(deadline_s=3)
    fake.script(UNAVAILABLE, DROP, BAD_GATEWAY, RATE_LIMITED)
    before = balance(gateway)
    queued_at = time.monotonic()
    job_id = queue(gateway)
    failed = wait_for_failure(gateway, job_id)
    assert time.monotonic() - queued_at >= 3, "not failed before the deadline"
    assert failed.status_code == 500
    assert_nothing_about_the_upstream(failed.text, fake)
    assert_refunded_once(gateway, job_id, before)
    assert len(fake.seen("/video/retrieve")) >= 2, "retried before giving up"
    assert len(fake.seen("/video/queue")) == 1


def run_check(fake: FakeUpstream, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vidgate", "upstreams", "check", "--data-dir",
                           str(tmp_path / "check")], capture_output=True, text=True, timeout=60,
                          env={**server_env(fake), "COLUMNS": "400"})


def test_upstreams_check_reports_reachability_key_and_missing_models(fake: FakeUpstream, tmp_path: Path,
                                                                     routed: list[str]) -> None:
    fake.script(json_answer(404, {"error": "Media could not be found"}))
    ok = run_check(fake, tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    [row] = [line for line in ok.stdout.splitlines() if UPSTREAM in line]
    assert "yes" in row and "accepted" in row and str(len(routed)) in row

    missing = routed[-1]
    fake.models_answer = json_answer(200, {"data": [{"id": m, "type": "video"} for m in routed[:-1]]})
    lacking = run_check(fake, tmp_path)
    assert lacking.returncode == 1, lacking.stdout + lacking.stderr
    [row] = [line for line in lacking.stdout.splitlines() if UPSTREAM in line]
    assert "accepted" in row and missing in row

    fake.models_answer = None
    fake.script(KEY_REFUSED)
    refused = run_check(fake, tmp_path)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    [row] = [line for line in refused.stdout.splitlines() if UPSTREAM in line]
    assert "yes" in row and "refused" in row
    assert UPSTREAM_KEY not in refused.stdout + refused.stderr
