"""A small synchronous client for one upstream Venice-compatible video API (Venice itself, or another vidgate).

Synchronous on purpose: the worker runs engines in threads, and the API side calls it through
`asyncio.to_thread`. One `httpx.Client` per upstream keeps connections alive between polls.

Every failure is an `UpstreamError` whose `public_message` is safe to show a client: it never names the
upstream's host or key. `str(error)` is for the operator's logs (upstream name, operation, status, the
upstream's own message) and never carries the key either.

    UpstreamError                      status, public_message, body, transient
    ├── UpstreamRejected               400/409/413/415/410 on quote/queue: relay `body` and `status` unchanged
    ├── UpstreamInferenceFailed        500 "Inference processing failed", 422 content policy: terminal
    ├── UpstreamPaymentRequired        402: the operator's upstream account is out of credit: terminal
    ├── UpstreamAuthFailed             401/403: the operator's key is wrong: terminal
    ├── UpstreamMediaGone              404/410 on retrieve/complete/download: terminal
    ├── UpstreamUnavailable            network, timeouts, 429, other 5xx: transient (retry_after_s, maybe_processed)
    └── UpstreamProtocolError          an answer this client cannot read (bad JSON, redirect, unknown route)
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, ClassVar

import httpx

# Bounded write size for downloads: a video never sits in memory whole, only one chunk of it.
CHUNK_BYTES = 256 * 1024
# JSON answers (the model list is the largest, ~100 KB) are read whole but capped, so a misbehaving
# upstream cannot make us buffer a video-sized "JSON" body.
MAX_JSON_BYTES = 8 * 1024 * 1024
# Error bodies are only read to classify and relay them; a bigger one is cut (then it is not JSON).
MAX_ERROR_BYTES = 64 * 1024
INFERENCE_FAILED_MESSAGE = "Inference processing failed"
# Third-party clients treat application/octet-stream like video (SPEC §2.3); so do we.
VIDEO_MEDIA_TYPES = frozenset({"video/mp4", "application/octet-stream"})
# Vendor docs disagree on the status words (SPEC §2.3 CONFLICTs); these all mean "not done yet".
RUNNING_STATUSES = frozenset({"PROCESSING", "QUEUED", "RUNNING", "PENDING", "IN_PROGRESS"})
USER_AGENT = "vidgate-gateway/0.1"


@dataclass(frozen=True)
class UpstreamSpec:
    name: str
    base_url: str  # e.g. http://127.0.0.1:8123/api/v1
    api_key: str = field(repr=False)  # kept out of repr so it never lands in a log line by accident
    timeout_s: float = 30.0


@dataclass(frozen=True)
class Submitted:
    queue_id: str
    download_url: str | None = None  # only for private (VPS-backed) models; given once, valid ~24 h


@dataclass(frozen=True)
class Progress:
    execution_ms: int
    average_ms: int


@dataclass(frozen=True)
class Finished:
    """The video is ready: retrieve would answer the MP4 (or COMPLETED JSON for download_url models)."""

    size_bytes: int | None = None  # the MP4's Content-Length when the upstream sent one


# --- errors -------------------------------------------------------------------------------------------------


class UpstreamError(Exception):
    transient: ClassVar[bool] = False
    default_public_message: ClassVar[str] = "The video service is temporarily unable to process this request."

    def __init__(self, detail: str, *, status: int | None = None, body: Any = None,
                 public_message: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.body = body  # the upstream's parsed JSON error body, when it sent one
        self.public_message = public_message or self.default_public_message


class UpstreamRejected(UpstreamError):
    """The upstream refused the request itself (validation 400, consent 409, ...). `body` and `status` are
    relayed to the client unchanged: they describe the client's own request."""

    default_public_message = "The request was rejected."

    def __init__(self, detail: str, *, status: int, body: Any) -> None:
        super().__init__(detail, status=status, body=body)


class UpstreamInferenceFailed(UpstreamError):
    default_public_message = INFERENCE_FAILED_MESSAGE


class UpstreamPaymentRequired(UpstreamError):
    """The operator's account at the upstream is out of credit. The client is told nothing about that."""


class UpstreamAuthFailed(UpstreamError):
    """The operator's upstream key is wrong or lacks access. The client is told nothing about that."""


class UpstreamMediaGone(UpstreamError):
    default_public_message = "Media could not be found. Request may be invalid, expired, or deleted."


class UpstreamUnavailable(UpstreamError):
    transient = True
    default_public_message = "The video service is temporarily unavailable. Please try again later."

    def __init__(self, detail: str, *, status: int | None = None, body: Any = None,
                 retry_after_s: float | None = None, maybe_processed: bool = False) -> None:
        super().__init__(detail, status=status, body=body)
        self.retry_after_s = retry_after_s
        # True when the request may have reached the upstream and been acted on (read timeout, dropped
        # connection, 500): a queue call is then NOT safe to repeat blindly, it may already be charged.
        self.maybe_processed = maybe_processed


class UpstreamProtocolError(UpstreamError):
    """The upstream answered something this client cannot use: a misconfigured base URL or a broken upstream."""


# A 500 whose text says the content was refused (Venice words moderation blocks in several ways).
MODERATION = re.compile(r"moderat|content polic|flagged|not allowed|violat", re.IGNORECASE)


# --- operator-facing reports ---------------------------------------------------------------------------------

log = logging.getLogger("vidgate.gateway")
# Upstream errors seen by this process, by "<upstream>:<error kind>" (exported by a metrics endpoint later).
OPERATOR_ERRORS: Counter[str] = Counter()


def report(upstream: str, exc: UpstreamError) -> None:
    """Count an upstream error; the provider refusing the operator's key or credit is an `OPERATOR:` error
    (the one thing only the operator can fix), anything else a warning."""
    kind = type(exc).__name__
    OPERATOR_ERRORS[f"{upstream}:{kind}"] += 1
    if isinstance(exc, (UpstreamPaymentRequired, UpstreamAuthFailed)):
        log.error("OPERATOR: upstream %s refused our credentials or credit (%s): %s; check its API key "
                  "variable and the provider account's balance", upstream, kind, exc)
    else:
        log.warning("upstream %s: %s", upstream, exc)


# --- Retry-After and backoff ----------------------------------------------------------------------------------

_SECONDS = re.compile(r"\d+(\.\d+)?")


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` value: delta-seconds or an HTTP-date (RFC 9110 §10.2.3).
    None when absent or unreadable; a date in the past is 0."""
    if value is None:
        return None
    value = value.strip()
    if _SECONDS.fullmatch(value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP-dates are GMT; a zone-less one is read the same way
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def backoff_delays(base: float = 1.0, factor: float = 2.0, cap: float = 30.0) -> Iterator[float]:
    """base, base·factor, base·factor², … capped at `cap`, forever."""
    delay = base
    while True:
        yield min(delay, cap)
        delay = min(delay * factor, cap)  # kept at the cap so it cannot overflow to inf


def next_delay(error: UpstreamError, attempt: int, *, base: float = 1.0, factor: float = 2.0, cap: float = 30.0,
               max_retry_after: float = 600.0) -> float:
    """Seconds to wait before retry number `attempt` (0-based) after `error`.

    A `Retry-After` is a minimum: we wait at least that long (bounded by `max_retry_after`, so a hostile or
    broken upstream cannot park a job for a day), and never less than the exponential backoff.
    """
    backoff = min(cap, base * factor ** min(max(attempt, 0), 64))
    retry_after = getattr(error, "retry_after_s", None)
    if retry_after is not None:
        return max(backoff, min(float(retry_after), max_retry_after))
    return backoff


# --- quote cache ----------------------------------------------------------------------------------------------


class QuoteCache:
    """Thread-safe TTL cache of quotes, keyed by the canonical JSON of the quote body (and the upstream's name,
    so one cache can serve several upstreams)."""

    def __init__(self, ttl_s: float = 60.0, max_entries: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, Decimal]] = {}  # key -> (expires_at, quote), insertion-ordered

    @staticmethod
    def key(body: Mapping[str, Any], scope: str = "") -> str:
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return f"{scope}\n{canonical}"

    def get(self, body: Mapping[str, Any], scope: str = "") -> Decimal | None:
        key = self.key(body, scope)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= self._clock():
                del self._entries[key]
                return None
            return entry[1]

    def put(self, body: Mapping[str, Any], value: Decimal, scope: str = "") -> None:
        key = self.key(body, scope)
        with self._lock:
            now = self._clock()
            self._entries.pop(key, None)  # re-insert at the end: the dict's order is the expiry order
            if len(self._entries) >= self.max_entries:
                for stale in [k for k, (expires, _) in self._entries.items() if expires <= now]:
                    del self._entries[stale]
                while len(self._entries) >= self.max_entries:
                    del self._entries[next(iter(self._entries))]
            self._entries[key] = (now + self.ttl_s, value)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


# --- the client -----------------------------------------------------------------------------------------------


def _media_type(response: httpx.Response) -> str:
    return response.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length")
    return int(value) if value is not None and value.isdigit() else None


def _error_text(body: Any) -> str:
    """The upstream's own message, shortened, for the operator's log line."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            error = error.get("message") or error.get("code")
        if isinstance(error, str):
            return error[:200]
    return ""


class UpstreamClient:
    def __init__(self, spec: UpstreamSpec, *, quote_cache: QuoteCache | None = None,
                 transport: httpx.BaseTransport | None = None,
                 event_hooks: Mapping[str, list[Callable[..., Any]]] | None = None) -> None:
        self.spec = spec
        self.quote_cache = quote_cache
        self._client = httpx.Client(
            base_url=spec.base_url,
            # Connecting should be quick; a slow connect means the upstream is down, not busy.
            timeout=httpx.Timeout(spec.timeout_s, connect=min(spec.timeout_s, 10.0)),
            follow_redirects=False,  # a redirect on the API would carry our key somewhere unexpected
            headers={"User-Agent": USER_AGENT},  # the key is added per request: download_url must not get it
            transport=transport,
            event_hooks=dict(event_hooks) if event_hooks else None,
        )

    # -- lifecycle

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> UpstreamClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the API

    def quote(self, body: Mapping[str, Any]) -> Decimal:
        """POST /video/quote: the upstream's price in USD, exactly as it wrote it."""
        if self.quote_cache is not None and (cached := self.quote_cache.get(body, self.spec.name)) is not None:
            return cached
        data = self._json_call("POST", "/video/quote", "quote", json=dict(body))
        value = data.get("quote")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._protocol("quote", "the answer has no numeric quote")
        try:
            # str() gives the shortest repr, i.e. the digits the upstream sent ("0.085", not 0.08500000000000000611).
            price = Decimal(str(value))
        except InvalidOperation:
            raise self._protocol("quote", "unreadable quote") from None
        if not price.is_finite() or price < 0:
            raise self._protocol("quote", f"quote out of range: {price}")
        if self.quote_cache is not None:
            self.quote_cache.put(body, price, self.spec.name)
        return price

    def submit(self, body: Mapping[str, Any]) -> Submitted:
        """POST /video/queue. An `UpstreamUnavailable` with `maybe_processed` means the job may exist upstream."""
        data = self._json_call("POST", "/video/queue", "submit", json=dict(body))
        queue_id = data.get("queue_id")
        if not isinstance(queue_id, str) or not queue_id:
            raise self._protocol("submit", "the answer has no queue_id")
        download_url = data.get("download_url")
        if download_url is not None and (not isinstance(download_url, str)
                                         or not download_url.startswith(("https://", "http://"))):
            raise self._protocol("submit", "download_url is not an http(s) URL")
        return Submitted(queue_id=queue_id, download_url=download_url)

    def poll(self, model: str, queue_id: str) -> Progress | Finished:
        """POST /video/retrieve without downloading: a `video/mp4` answer is closed unread."""
        with self._stream("POST", "/video/retrieve", "poll", json={"model": model, "queue_id": queue_id}) as response:
            if response.status_code != 200:
                raise self._error(response, "poll")
            if _media_type(response) in VIDEO_MEDIA_TYPES:
                # Leaving the `with` closes the response without reading the body; httpx then drops the
                # connection instead of draining a whole video to reuse it, which is the cheaper of the two.
                return Finished(size_bytes=_content_length(response))
            return self._status_of(response, "poll")

    def download(self, model: str, queue_id: str, dest: Path, download_url: str | None = None) -> int:
        """Stream the MP4 into `dest` (via a temp file in the same folder, then an atomic rename) and return
        the bytes written. With `download_url` (private models) it GETs that link, without our key."""
        if download_url is not None:
            # The link is self-authorising and may live on another host (Venice: private-share.venice.ai), so
            # no key goes with it, and a redirect (to a CDN, say) is followed: there is nothing to leak.
            stream = self._stream("GET", download_url, "download_url", auth=False, follow_redirects=True)
        else:
            stream = self._stream("POST", "/video/retrieve", "download", json={"model": model, "queue_id": queue_id})
        with stream as response:
            if response.status_code != 200:
                raise self._error(response, "download_url" if download_url is not None else "download")
            if _media_type(response) not in VIDEO_MEDIA_TYPES:
                state = self._status_of(response, "download")
                if isinstance(state, Progress):
                    raise UpstreamUnavailable(self._detail("download", "the video is not ready yet"))
                raise self._protocol("download", "retrieve answers JSON only: this model needs its download_url")
            return self._save(response, Path(dest))

    def complete(self, model: str, queue_id: str) -> None:
        """POST /video/complete: the upstream deletes its copy. Already gone (404) is fine."""
        try:
            self._json_call("POST", "/video/complete", "complete", json={"model": model, "queue_id": queue_id})
        except UpstreamMediaGone:
            return

    def cancel(self, model: str, queue_id: str) -> bool:
        """Stop the upstream's job: vidgate's `POST /video/jobs/{id}/cancel` when the upstream is a vidgate
        (True). Venice has no cancel (404/405): its generation runs on and is paid for; its copy is deleted
        when done: False, and the caller deletes what it can (`complete`)."""
        try:
            self._json_call("POST", f"/video/jobs/{queue_id}/cancel", "cancel")
            return True
        except UpstreamError as exc:
            if exc.status in (404, 405, 409):  # no such route (Venice), or the job is already over
                return False
            raise

    def list_models(self) -> list[dict[str, Any]]:
        """GET /models?type=video: the upstream's catalogue entries (`data[]`)."""
        data = self._json_call("GET", "/models", "models", params={"type": "video"})
        models = data.get("data")
        if not isinstance(models, list) or not all(isinstance(m, dict) for m in models):
            raise self._protocol("models", "the answer has no data list")
        return models

    # -- plumbing

    @contextlib.contextmanager
    def _stream(self, method: str, url: str, op: str, *, auth: bool = True,
                **kwargs: Any) -> Iterator[httpx.Response]:
        headers = {"Authorization": f"Bearer {self.spec.api_key}"} if auth else {}
        try:
            with self._client.stream(method, url, headers=headers, **kwargs) as response:
                yield response
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise self._protocol(op, f"bad URL ({type(exc).__name__})") from exc
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # The request never left: repeating it cannot double anything.
            raise UpstreamUnavailable(self._detail(op, f"cannot connect ({type(exc).__name__}: {exc})")) from exc
        except httpx.HTTPError as exc:
            # Read timeouts, dropped connections, truncated bodies: the upstream may have acted on it.
            raise UpstreamUnavailable(self._detail(op, f"{type(exc).__name__}: {exc}"), maybe_processed=True) from exc

    def _json_call(self, method: str, url: str, op: str, **kwargs: Any) -> dict[str, Any]:
        with self._stream(method, url, op, **kwargs) as response:
            if response.status_code != 200:
                raise self._error(response, op)
            return self._json_body(response, op)

    def _json_body(self, response: httpx.Response, op: str) -> dict[str, Any]:
        if _media_type(response) != "application/json" and not _media_type(response).endswith("+json"):
            raise self._protocol(op, f"expected JSON, got {_media_type(response) or 'no content type'}")
        raw, complete = self._read_limited(response, MAX_JSON_BYTES)
        if not complete:
            raise self._protocol(op, "the JSON answer is too large")
        try:
            data = json.loads(raw)
        except ValueError:
            raise self._protocol(op, "unreadable JSON") from None
        if not isinstance(data, dict):
            raise self._protocol(op, "the JSON answer is not an object")
        return data

    @staticmethod
    def _read_limited(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
        """At most `limit` bytes of the body, and whether that was all of it."""
        buf = bytearray()
        for chunk in response.iter_bytes():
            buf += chunk
            if len(buf) > limit:
                return bytes(buf[:limit]), False
        return bytes(buf), True

    def _status_of(self, response: httpx.Response, op: str) -> Progress | Finished:
        data = self._json_body(response, op)
        status = str(data.get("status", "")).upper()
        if status in RUNNING_STATUSES:
            return Progress(execution_ms=_int(data.get("execution_duration")),
                            average_ms=_int(data.get("average_execution_time")))
        if status == "COMPLETED":
            return Finished()
        if status == "FAILED":  # not in the OAS, but Venice's Seedance guide shows it
            raise UpstreamInferenceFailed(self._detail(op, "status FAILED"), status=200, body=data)
        raise self._protocol(op, f"unknown status {status[:40]!r}")

    def _save(self, response: httpx.Response, dest: Path) -> int:
        dest.parent.mkdir(parents=True, exist_ok=True)
        # Same folder as dest, so the final rename is atomic and a half-written file never has dest's name.
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        tmp = Path(tmp_name)
        written = 0
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in response.iter_bytes(CHUNK_BYTES):
                    out.write(chunk)
                    written += len(chunk)
                out.flush()
                os.fsync(out.fileno())  # the caller records the job as delivered next: the bytes must be on disk
            expected = _content_length(response)
            # Content-Length counts wire bytes: compare those when the body was content-encoded (gzip, ...).
            encoded = response.headers.get("content-encoding", "identity").lower() != "identity"
            received = response.num_bytes_downloaded if encoded else written
            if expected is not None and received != expected:
                raise UpstreamUnavailable(self._detail("download", f"truncated: {received} of {expected} bytes"))
            if written == 0:
                raise UpstreamUnavailable(self._detail("download", "empty video"))
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return written

    def _error(self, response: httpx.Response, op: str) -> UpstreamError:
        """Classify a non-200 answer (reading at most MAX_ERROR_BYTES of it)."""
        status = response.status_code
        raw, complete = self._read_limited(response, MAX_ERROR_BYTES)
        body: Any = None
        if complete and raw:
            with contextlib.suppress(ValueError):
                body = json.loads(raw)
        detail = self._detail(op, f"HTTP {status}" + (f": {_error_text(body)}" if _error_text(body) else ""))
        retry_after = parse_retry_after(response.headers.get("retry-after"))

        if op == "download_url" and status in (401, 403, 404, 410):
            # The signed link itself is refused, expired, used up or revoked; our key was never involved.
            return UpstreamMediaGone(detail, status=status, body=body)
        if status in (401, 403):
            return UpstreamAuthFailed(detail, status=status, body=body)
        if status == 402:
            return UpstreamPaymentRequired(detail, status=status, body=body)
        media_op = op in ("poll", "download", "download_url", "complete")
        if media_op and status in (404, 410):
            return UpstreamMediaGone(detail, status=status, body=body)
        # Refusals of the request itself; on complete, a 400 is "still processing" (or Venice's VPS-model quirk).
        refusals = (400,) if op == "complete" else () if media_op else (400, 409, 410, 413, 415)
        if status in refusals:
            if isinstance(body, dict):
                return UpstreamRejected(detail, status=status, body=body)
            return UpstreamProtocolError(detail + " (no JSON body to relay)", status=status)
        if status == 422:  # content policy: the upstream will not make this video
            return UpstreamInferenceFailed(detail, status=status, body=body,
                                           public_message="The request was refused by the content policy.")
        if status == 500 and (_error_text(body) == INFERENCE_FAILED_MESSAGE or MODERATION.search(_error_text(body))):
            # Venice's terminal failure, or a moderation block worded as one: retrying cannot change it.
            return UpstreamInferenceFailed(detail, status=status, body=body)
        if status in (408, 429) or status >= 500:
            # 429 and 503 are refusals before any work; other 5xx may come after the upstream acted.
            return UpstreamUnavailable(detail, status=status, body=body, retry_after_s=retry_after,
                                       maybe_processed=status not in (408, 429, 503))
        # 3xx (not followed), 404 on quote/queue/models (a wrong base URL, or a model the upstream lacks), ...
        return UpstreamProtocolError(detail, status=status, body=body)

    def _detail(self, op: str, what: str) -> str:
        return f"upstream {self.spec.name}: {op}: {what}"

    def _protocol(self, op: str, what: str) -> UpstreamProtocolError:
        return UpstreamProtocolError(self._detail(op, what))


def _int(value: Any) -> int:
    """A millisecond count from the status JSON; a missing or odd value reads as 0 rather than failing a poll."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0
    return max(0, int(value))
