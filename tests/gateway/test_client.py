"""The upstream client against a real second vidgate on loopback, plus the error mapping on canned answers."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

import vidgate.gateway.client as client_mod
from tests.conftest import LiveServer, free_port, t2v_body
from vidgate.gateway.client import (
    Finished,
    Progress,
    QuoteCache,
    UpstreamAuthFailed,
    UpstreamClient,
    UpstreamError,
    UpstreamInferenceFailed,
    UpstreamMediaGone,
    UpstreamPaymentRequired,
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamSpec,
    UpstreamUnavailable,
    backoff_delays,
    next_delay,
    parse_retry_after,
)

MODEL = "wan-2.5-preview-text-to-video"
PRIVATE_MODEL = "grok-imagine-text-to-video-private"
MiB = 1024 * 1024


def upstream(server: LiveServer, **kwargs: Any) -> UpstreamClient:
    assert server.api_key
    return UpstreamClient(UpstreamSpec("test-upstream", f"{server.base_url}/api/v1", server.api_key), **kwargs)


def wait_finished(client: UpstreamClient, model: str, queue_id: str, deadline_s: float = 60) -> list[Progress]:
    """Poll at a short interval (the procedural engine renders 5 s of 480p in about a second)."""
    seen: list[Progress] = []
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        state = client.poll(model, queue_id)
        if isinstance(state, Finished):
            return seen
        seen.append(state)
        time.sleep(0.1)
    raise AssertionError(f"{queue_id} did not finish in {deadline_s}s")


@pytest.fixture
def body_reads(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[int]]:
    """Record how video bodies are read: whole (`read`) or chunked (`iter_bytes`), and the sizes written to disk."""
    seen: dict[str, list[int]] = {"read": [], "chunks": [], "writes": []}

    def is_video(response: httpx.Response) -> bool:
        return response.headers.get("content-type", "").startswith("video/")

    original_read = httpx.Response.read
    original_iter_bytes = httpx.Response.iter_bytes

    def read(self: httpx.Response) -> bytes:
        data = original_read(self)
        if is_video(self):
            seen["read"].append(len(data))
        return data

    def iter_bytes(self: httpx.Response, chunk_size: int | None = None) -> Iterator[bytes]:
        for chunk in original_iter_bytes(self, chunk_size):
            if is_video(self):
                seen["chunks"].append(len(chunk))
            yield chunk

    original_fdopen = client_mod.os.fdopen

    class CountingFile:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def write(self, data: bytes) -> int:
            seen["writes"].append(len(data))
            return self.inner.write(data)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def __enter__(self) -> CountingFile:
            return self

        def __exit__(self, *exc: object) -> None:
            self.inner.close()

    monkeypatch.setattr(httpx.Response, "read", read)
    monkeypatch.setattr(httpx.Response, "iter_bytes", iter_bytes)
    monkeypatch.setattr(client_mod.os, "fdopen", lambda fd, *a, **k: CountingFile(original_fdopen(fd, *a, **k)))
    return seen


# --- against a live vidgate ----------------------------------------------------------------------------------


def test_quote_matches_server_and_is_cached(live_server: LiveServer) -> None:
    own = httpx.post(f"{live_server.base_url}/api/v1/video/quote", json=t2v_body(), timeout=30)
    assert own.status_code == 200
    requests: list[str] = []
    now = [1000.0]
    cache = QuoteCache(ttl_s=30, clock=lambda: now[0])
    hooks: dict[str, list[Callable[..., Any]]] = {"request": [lambda request: requests.append(request.url.path)]}
    with upstream(live_server, quote_cache=cache, event_hooks=hooks) as client:
        price = client.quote(t2v_body())
        assert price == Decimal(str(own.json()["quote"]))
        assert isinstance(price, Decimal)
        # Within the TTL the same body (keys in another order) is not asked again.
        assert client.quote(dict(reversed(list(t2v_body().items())))) == price
        assert requests == ["/api/v1/video/quote"]
        ten = client.quote(t2v_body(duration="10s"))
        assert ten > price
        assert len(requests) == 2
        now[0] += 31
        assert client.quote(t2v_body()) == price
        assert len(requests) == 3
        # The catalogue comes back in Venice's list shape.
        assert MODEL in {m["id"] for m in client.list_models()}


def test_submit_poll_download_complete(live_server: LiveServer, tmp_path: Path,
                                       body_reads: dict[str, list[int]]) -> None:
    with upstream(live_server) as client:
        submitted = client.submit(t2v_body())
        assert submitted.download_url is None
        progress = wait_finished(client, MODEL, submitted.queue_id)
        assert all(p.execution_ms >= 0 and p.average_ms > 0 for p in progress)
        # poll saw the MP4 answer and did not read a byte of it.
        assert body_reads == {"read": [], "chunks": [], "writes": []}

        dest = tmp_path / "out" / "video.mp4"
        size = client.download(MODEL, submitted.queue_id, dest)
        assert size == dest.stat().st_size > 0
        # Streamed chunk by chunk, never read whole.
        assert body_reads["read"] == []
        assert len(body_reads["chunks"]) > 1 and max(body_reads["chunks"]) <= MiB
        assert sum(body_reads["writes"]) == size and max(body_reads["writes"]) <= MiB
        assert [p.name for p in dest.parent.iterdir()] == ["video.mp4"]  # no temp file left behind

        direct = httpx.post(f"{live_server.base_url}/api/v1/video/retrieve", timeout=30,
                            json={"model": MODEL, "queue_id": submitted.queue_id},
                            headers={"Authorization": f"Bearer {live_server.api_key}"})
        assert direct.headers["content-type"] == "video/mp4"
        assert dest.read_bytes() == direct.content
        with av.open(str(dest)) as container:
            frame = next(container.decode(video=0))
            assert frame.height == 480

        client.complete(MODEL, submitted.queue_id)
        client.complete(MODEL, submitted.queue_id)  # repeating it is harmless
        with pytest.raises(UpstreamMediaGone) as gone:
            client.poll(MODEL, submitted.queue_id)
        assert gone.value.status == 404
        with pytest.raises(UpstreamMediaGone):
            client.download(MODEL, submitted.queue_id, tmp_path / "again.mp4")
        assert not (tmp_path / "again.mp4").exists()


def test_private_model_downloads_from_its_link(live_server: LiveServer, tmp_path: Path) -> None:
    with upstream(live_server) as client:
        submitted = client.submit(t2v_body(model=PRIVATE_MODEL))
        assert submitted.download_url
        wait_finished(client, PRIVATE_MODEL, submitted.queue_id)  # COMPLETED JSON reads as Finished
        with pytest.raises(UpstreamProtocolError):  # retrieve never carries the bytes for these models
            client.download(PRIVATE_MODEL, submitted.queue_id, tmp_path / "no.mp4")
        dest = tmp_path / "private.mp4"
        size = client.download(PRIVATE_MODEL, submitted.queue_id, dest, submitted.download_url)
        assert size == dest.stat().st_size > 0
        with av.open(str(dest)) as container:
            assert container.streams.video[0].height == 480


def test_rejections_and_wrong_key(live_server: LiveServer) -> None:
    bad = t2v_body(duration="7s")
    own = httpx.post(f"{live_server.base_url}/api/v1/video/queue", json=bad, timeout=30,
                     headers={"Authorization": f"Bearer {live_server.api_key}"})
    assert own.status_code == 400
    with upstream(live_server) as client:
        with pytest.raises(UpstreamRejected) as rejected:
            client.submit(bad)
        assert rejected.value.status == 400
        assert rejected.value.body == own.json()
        assert rejected.value.body["issues"][0]["path"] == ["duration"]
        with pytest.raises(UpstreamRejected):
            client.quote(bad)

    wrong = UpstreamClient(UpstreamSpec("test-upstream", f"{live_server.base_url}/api/v1", "vg_not_a_key"))
    with wrong:
        with pytest.raises(UpstreamAuthFailed) as denied:
            wrong.submit(t2v_body())
        assert denied.value.status == 401
        assert "vg_not_a_key" not in str(denied.value) + denied.value.public_message
        with pytest.raises(UpstreamAuthFailed):
            wrong.poll(MODEL, "00000000-0000-0000-0000-000000000000")


def test_unreachable_upstream_is_transient() -> None:
    port = free_port()  # nothing listens there
    spec = UpstreamSpec("down", f"http://127.0.0.1:{port}/api/v1", "vg_secret", timeout_s=2)
    with UpstreamClient(spec) as client:
        for call in (lambda: client.quote(t2v_body()), lambda: client.submit(t2v_body()),
                     lambda: client.poll(MODEL, "x")):
            with pytest.raises(UpstreamUnavailable) as down:
                call()
            assert down.value.transient and down.value.status is None
            assert down.value.maybe_processed is False  # never connected: a queue call is safe to repeat
            assert str(port) not in down.value.public_message and "vg_secret" not in str(down.value)
    assert "vg_secret" not in repr(spec)


# --- the error mapping, on canned answers ------------------------------------------------------------------


def canned(status: int, body: Any = None, headers: dict[str, str] | None = None,
           content: bytes | None = None) -> UpstreamClient:
    def handler(request: httpx.Request) -> httpx.Response:
        if content is not None:
            return httpx.Response(status, content=content, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    spec = UpstreamSpec("canned", "http://upstream.invalid/api/v1", "vg_secret")
    return UpstreamClient(spec, transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(
    ("op", "status", "body", "expected"),
    [
        ("submit", 402, {"error": "Insufficient USD or Diem balance", "code": "INSUFFICIENT_BALANCE"},
         UpstreamPaymentRequired),
        ("submit", 403, {"error": "The specified model is unavailable in your region"}, UpstreamAuthFailed),
        ("submit", 409, {"error": {"code": "needs_consent", "message": "consent"}}, UpstreamRejected),
        ("submit", 413, {"code": "PAYLOAD_TOO_LARGE", "error": "too large"}, UpstreamRejected),
        ("submit", 422, {"error": "Content policy", "credits_refunded": True}, UpstreamInferenceFailed),
        ("submit", 500, {"error": "Inference processing failed"}, UpstreamInferenceFailed),
        ("submit", 500, {"error": "An unknown error occurred"}, UpstreamUnavailable),
        ("submit", 404, {"error": "Not found"}, UpstreamProtocolError),  # a wrong base URL, not a gone video
        ("poll", 500, {"error": "Inference processing failed"}, UpstreamInferenceFailed),
        ("poll", 422, {"error": "Content policy"}, UpstreamInferenceFailed),
        ("poll", 500, {"error": "Your prompt was flagged by our content moderation"}, UpstreamInferenceFailed),
        ("poll", 404, {"error": "Media could not be found."}, UpstreamMediaGone),
        ("poll", 502, None, UpstreamUnavailable),
        ("poll", 302, None, UpstreamProtocolError),
        ("poll", 200, {"status": "FAILED"}, UpstreamInferenceFailed),
        ("poll", 200, {"status": "WHATEVER"}, UpstreamProtocolError),
        ("quote", 200, {"nope": 1}, UpstreamProtocolError),
    ],
)
def test_error_mapping(op: str, status: int, body: Any, expected: type[UpstreamError]) -> None:
    calls: dict[str, Callable[[UpstreamClient], object]] = {
        "submit": lambda c: c.submit(t2v_body()),
        "poll": lambda c: c.poll(MODEL, "q"),
        "quote": lambda c: c.quote(t2v_body()),
    }
    with canned(status, body) as client, pytest.raises(UpstreamError) as caught:
        calls[op](client)
    error = caught.value
    assert type(error) is expected
    if status != 200:
        assert error.status == status
    if expected is UpstreamRejected:
        assert error.body == body
    for secret in ("upstream.invalid", "vg_secret"):
        assert secret not in error.public_message
    assert "vg_secret" not in str(error)


def test_rate_limit_and_capacity_carry_retry_after() -> None:
    limited_client = canned(429, {"error": "Rate limit exceeded"}, headers={"Retry-After": "7"})
    with limited_client, pytest.raises(UpstreamUnavailable) as limited:
        limited_client.submit(t2v_body())
    assert limited.value.retry_after_s == 7.0 and limited.value.maybe_processed is False
    assert next_delay(limited.value, 0) == 7.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    busy_client = canned(503, {"error": "The model is at capacity."}, headers={"Retry-After": later})
    with busy_client, pytest.raises(UpstreamUnavailable) as busy:
        busy_client.poll(MODEL, "q")
    assert busy.value.retry_after_s is not None and 100 < busy.value.retry_after_s <= 120


def test_retry_after_parsing() -> None:
    now = datetime(2026, 8, 20, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("30", now) == 30.0
    assert parse_retry_after(" 1.5 ", now) == 1.5
    assert parse_retry_after("Thu, 20 Aug 2026 12:00:45 GMT", now) == 45.0
    assert parse_retry_after("Thu, 20 Aug 2026 11:00:00 GMT", now) == 0.0  # already past
    assert parse_retry_after("-3", now) is None
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_backoff() -> None:
    delays = backoff_delays(base=1.0, factor=2.0, cap=30.0)
    assert [next(delays) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    plain = UpstreamUnavailable("x")
    assert [next_delay(plain, n) for n in (0, 1, 5, 500)] == [1, 2, 30, 30]
    hinted = UpstreamUnavailable("x", retry_after_s=10)
    assert next_delay(hinted, 0) == 10  # Retry-After is a floor ...
    assert next_delay(hinted, 5) == 30  # ... the backoff still grows past it
    assert next_delay(UpstreamUnavailable("x", retry_after_s=86400), 0) == 600  # and a silly one is bounded


def test_truncated_download_leaves_nothing(tmp_path: Path) -> None:
    headers = {"Content-Type": "video/mp4", "Content-Length": "1000"}
    with canned(200, headers=headers, content=b"\0" * 10) as client, pytest.raises(UpstreamUnavailable):
        client.download(MODEL, "q", tmp_path / "v.mp4")
    assert list(tmp_path.iterdir()) == []


def test_download_link_gets_no_key(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"\0\0\0\x18ftypmp42", headers={"Content-Type": "video/mp4"})

    spec = UpstreamSpec("canned", "http://upstream.invalid/api/v1", "vg_secret")
    with UpstreamClient(spec, transport=httpx.MockTransport(handler)) as client:
        size = client.download(MODEL, "q", tmp_path / "v.mp4", download_url="https://share.invalid/v1/read/abc")
    assert size == 12
    assert seen[0].method == "GET" and seen[0].url.host == "share.invalid"
    assert "authorization" not in seen[0].headers
