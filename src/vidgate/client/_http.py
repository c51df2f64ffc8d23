"""What the sync and async clients share: settings, request descriptions, error parsing and the retry rule.

No I/O here, so the two clients differ only in `await` and the rules live once.
"""

from __future__ import annotations

import base64
import mimetypes
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import ServerSentEvent

from vidgate.client.errors import VidgateAPIError
from vidgate.client.types import Job, JobEvent

DEFAULT_URL = "http://127.0.0.1:8000"
API_PREFIX = "/api/v1"
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
# An event stream is quiet while nothing happens: no read timeout, or an idle stream would be cut.
SSE_TIMEOUT = httpx.Timeout(None, connect=10.0)
MAX_BACKOFF_S = 8.0


@dataclass(frozen=True)
class ClientConfig:
    """Where the server is, the key, and how patient to be with 429/503."""

    api_base: str  # ends in /api/v1
    api_key: str | None
    max_retries: int = 3
    max_retry_wait: float = 60.0  # a Retry-After longer than this is raised, not slept through

    @classmethod
    def resolve(cls, base_url: str | None, api_key: str | None, max_retries: int,
                max_retry_wait: float) -> ClientConfig:
        url = (base_url or os.environ.get("VIDGATE_URL") or DEFAULT_URL).rstrip("/")
        # Accept both the server root and the Venice-style base that ends in /api/v1.
        if url.endswith(API_PREFIX):
            url = url[: -len(API_PREFIX)]
        return cls(api_base=url + API_PREFIX, api_key=api_key or os.environ.get("VIDGATE_API_KEY") or None,
                   max_retries=max_retries, max_retry_wait=max_retry_wait)

    def url(self, path: str) -> str:
        return self.api_base + path

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        # Sent per request rather than set on the httpx client: a caller's own http_client is left unchanged,
        # and the key never goes to a signed download_url (which may point at another host).
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        headers.update(extra or {})
        return headers

    def retry_delay(self, call: Call, attempt: int, error: VidgateAPIError | None) -> float | None:
        """Seconds to wait before sending `call` again, or None to give up and raise.

        Only 429 and 503 (the server did nothing) are retried, and only calls that are safe to repeat; a
        connection that could not be opened (`error` None) is retried for every call, since nothing was sent."""
        if error is not None:
            if error.status not in (429, 503) or not call.retry:
                return None
            if error.retry_after is not None and attempt < self.max_retries:
                return error.retry_after if error.retry_after <= self.max_retry_wait else None
        return self.backoff(attempt)

    def backoff(self, attempt: int) -> float | None:
        """Exponential backoff for the `attempt`th retry (0-based), or None once the retries are used up."""
        return None if attempt >= self.max_retries else min(0.5 * 2**attempt, MAX_BACKOFF_S)


@dataclass(frozen=True)
class Call:
    """One API request. `retry`: sending it twice does no harm (a read, or a queue with an Idempotency-Key)."""

    method: str
    path: str
    json: dict[str, Any] | None = None
    params: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    retry: bool = True


def queue_call(body: dict[str, Any], idempotency_key: str | None) -> Call:
    # Without a key a repeated queue could charge twice, so it is sent once and its failure is the caller's.
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    return Call("POST", "/video/queue", json=body, headers=headers, retry=idempotency_key is not None)


def jobs_call(status: str | list[str] | None, model: str | None, limit: int | None, cursor: str | None) -> Call:
    params: dict[str, Any] = {}
    if status:
        params["status"] = status if isinstance(status, str) else ",".join(status)
    if model:
        params["model"] = model
    if limit is not None:
        params["limit"] = limit
    if cursor:
        params["cursor"] = cursor
    return Call("GET", "/video/jobs", params=params)


def events_path(queue_id: str | None) -> str:
    return f"/video/jobs/{queue_id}/events" if queue_id else "/video/events"


def retrieve_body(model: str, queue_id: str, delete_media_on_completion: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "queue_id": queue_id}
    if delete_media_on_completion:
        body["delete_media_on_completion"] = True
    return body


def retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds (the delta form vidgate sends; an HTTP date is not worth a parser here)."""
    value = response.headers.get("retry-after", "").strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def api_error(response: httpx.Response) -> VidgateAPIError:
    """The typed error for a 4xx/5xx response whose body has been read."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {}
    message = body.get("error") or body.get("message") or response.reason_phrase or "request failed"
    code = body.get("code")
    return VidgateAPIError(response.status_code, str(code) if code is not None else None, str(message),
                           retry_after(response), body)


def is_video(response: httpx.Response) -> bool:
    """Retrieve answers the MP4 itself once done, else a JSON status: the content type tells them apart."""
    content_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
    return content_type.startswith("video/") or content_type == "application/octet-stream"


def part_path(path: Path) -> Path:
    # Written beside the target and renamed when whole, so an interrupted download never looks finished.
    return path.with_name(path.name + ".part")


def parse_event(sse: ServerSentEvent) -> JobEvent | None:
    """A job event, or None for one without a job (e.g. a bare `retry:` line)."""
    if not sse.data:
        return None
    data = sse.json()
    if not isinstance(data, dict) or "queue_id" not in data:
        return None
    event_id = int(sse.id) if sse.id.strip().isdigit() else None
    return JobEvent(id=event_id, event=sse.event, job=Job.from_json(data))


def media_url(value: str) -> str:
    """A URL as it is, or a local file as a `data:` URL (the server accepts both for every media field)."""
    if value.startswith(("http://", "https://", "data:")):
        return value
    path = Path(value).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{value}: no such file (give an http(s) URL or a local file)")
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"
