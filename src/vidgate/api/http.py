"""HTTP plumbing shared by the routes: JSON responses, body parsing, per-response headers, request ids."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from random import getrandbits
from typing import TYPE_CHECKING, Any

import orjson
from starlette.background import BackgroundTask
from starlette.concurrency import iterate_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vidgate.errors import BadRequest, PayloadTooLarge, VidgateError, invalid

if TYPE_CHECKING:
    from vidgate.storage.base import Storage

API_VERSION = "vidgate-0.1.0"
API_PREFIX = "/api/v1"
_VERSION_HEADER = (b"x-venice-version", API_VERSION.encode())


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def add_headers(request: Request, headers: dict[str, str]) -> None:
    """Headers for whatever response this request ends with (success or error)."""
    request.scope.setdefault("state", {}).setdefault("vidgate_headers", {}).update(headers)


def on_response_end(request: Request, callback: Callable[[], Awaitable[None] | None]) -> None:
    """Run `callback` once this request is over: after the response is sent, or when it fails or is cancelled
    (an awaitable it returns is awaited, and finishes even if the request is cancelled). Only under
    ResponseHeadersMiddleware, which every app from create_app has."""
    request.scope.setdefault("state", {}).setdefault("vidgate_on_end", []).append(callback)


def error_response(request: Request, exc: VidgateError) -> JSONResponse:
    response = JSONResponse(exc.body(), status_code=exc.status_code)
    for name, value in exc.headers.items():
        response.headers[name] = value
    return response


class ResponseHeadersMiddleware:
    """Pure ASGI (cheap on the hot path): a request id (`CF-RAY`), `x-venice-version`, and any headers the
    route collected with `add_headers`; then the callbacks registered with `on_response_end`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # A request id, not a secret (it is sent to the client and logged): 64 bits from the process's PRNG
        # (reseeded in every forked process) instead of an os.urandom system call on every request.
        request_id = f"{getrandbits(64):016x}-VGT"
        state = scope.setdefault("state", {})
        state["request_id"] = request_id

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                headers.append((b"cf-ray", request_id.encode()))
                headers.append(_VERSION_HEADER)
                for name, value in state.get("vidgate_headers", {}).items():
                    headers.append((name.lower().encode(), str(value).encode()))
                message["headers"] = headers
            await send(message)

        app = self.app
        if "\x00" in scope["path"] or b"%00" in scope["query_string"]:
            # PostgreSQL stores no NUL in text, so such an id or parameter names nothing; refused on every backend
            # before a route hands it to the database.
            app = JSONResponse(BadRequest("The URL must not contain the NUL character (%00)").body(), status_code=400)
        try:
            await app(scope, receive, send_with_headers)
        finally:
            pending = [outcome for callback in state.get("vidgate_on_end", ())
                       if (outcome := callback()) is not None]
            if pending:
                await asyncio.shield(asyncio.gather(*pending))


async def read_json_object(request: Request, max_bytes: int) -> dict[str, Any]:
    """The request's JSON object, with Venice's errors for a wrong type, size or syntax (SPEC §1)."""
    # One pass over the raw headers (lower-case bytes; the first of repeated ones counts, as in Headers.get):
    # every request with a body comes here, and each Headers lookup is a scan of its own.
    declared = content_type = None
    for name, value in request.scope["headers"]:
        if name == b"content-length":
            declared = value if declared is None else declared
        elif name == b"content-type":
            content_type = value if content_type is None else content_type
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge("Request body exceeds the maximum allowed size.")
    kind = content_type.decode("latin-1").split(";")[0].strip().lower() if content_type is not None else (
        "application/json")
    if kind != "application/json" and not kind.endswith("+json"):
        raise BadRequest("'Content-Type' must be 'application/json'")
    raw = await _read_body(request, max_bytes)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("Invalid JSON request") from None
    if not isinstance(body, dict):
        raise invalid([], "Expected a JSON object", code="invalid_type", expected="object")
    if b"\\u0000" in raw:  # rarely there, so the body is walked only then
        where = _nul_path(body)
        if where is not None:  # PostgreSQL stores no NUL in text: refused alike on every backend
            raise invalid(where, "Must not contain the NUL character (\\u0000)", code="invalid_string")
    return body


def _nul_path(value: Any, path: tuple[str | int, ...] = ()) -> list[str | int] | None:
    """Where in a parsed JSON value a string (or an object's key) holds a NUL character, or None."""
    if isinstance(value, str):
        return list(path) if "\x00" in value else None
    items: Any = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, str) and "\x00" in key:
            return [*path, key]
        found = _nul_path(item, (*path, key))
        if found is not None:
            return found
    return None


async def _read_body(request: Request, max_bytes: int) -> bytes:
    """The body, at most `max_bytes` (413 past that, whether or not a Content-Length was declared).

    What `Request.body()` does, straight from `receive` instead of through its async generator and
    `aclosing` (~3 µs of a ~45 µs retrieve poll); the result is kept where Request.body() and stream() look
    first, so anything that reads the body again gets it rather than waiting on `receive`."""
    if hasattr(request, "_body") or request._stream_consumed:  # read before: Request.body() has it, or raises
        raw: bytes = await request.body()
        if len(raw) > max_bytes:
            raise PayloadTooLarge("Request body exceeds the maximum allowed size.")
        return raw
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await request.receive()
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge("Request body exceeds the maximum allowed size.")
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect()
    raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    request._body = raw
    return raw


def require_string(body: dict[str, Any], name: str) -> str:
    """A required string field; missing or mistyped gives a DetailedError naming it."""
    value = body.get(name)
    if value is None:
        raise invalid(name, "Required", code="invalid_type", expected="string", received="undefined")
    if not isinstance(value, str):
        raise invalid(name, f"Expected string, received {type(value).__name__}", code="invalid_type",
                      expected="string", received=type(value).__name__)
    return value


def require_model_field(body: dict[str, Any]) -> str:
    """`model` with Venice's exact messages (SK-ERR): "model is required" / "model must be a string"."""
    value = body.get("model")
    if value is None:
        raise BadRequest("model is required")
    if not isinstance(value, str):
        raise BadRequest("model must be a string")
    return value


class VideoFileResponse(FileResponse):
    """Streams an MP4 from disk with Range support on POST too (`/video/retrieve` is a POST; Starlette only
    honours Range on GET/HEAD)."""

    def __init__(self, path: Path, queue_id: str, background: BackgroundTask | None = None) -> None:
        super().__init__(path, media_type="video/mp4", background=background,
                         headers={"Content-Disposition": f'attachment; filename="{queue_id}.mp4"'})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method", "GET").upper() == "POST":
            scope = dict(scope, method="GET")
        await super().__call__(scope, receive, send)


_SINGLE_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


def parse_single_range(header: str | None, size: int) -> tuple[int, int] | bool | None:
    """(start, end) inclusive for a satisfiable single `bytes=` range; None to send the whole object (no
    Range, a malformed or multi-part one: a server may ignore Range); False when it cannot be satisfied."""
    match = _SINGLE_RANGE.match(header or "")
    if not match or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":  # bytes=-N: the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            return False
        return max(0, size - suffix), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        return False
    return start, end


class StoredVideoResponse(StreamingResponse):
    """Streams an MP4 from a storage that is not on local disk (`size` + `iter_range`, in a thread), with
    single-range support (206 / 416) on GET, HEAD and POST, like VideoFileResponse does for local files."""

    def __init__(self, storage: Storage, key: str, size: int, queue_id: str,
                 background: BackgroundTask | None = None) -> None:
        self.storage, self.key, self.size = storage, key, size
        super().__init__(iter(()), media_type="video/mp4", background=background,
                         headers={"Content-Disposition": f'attachment; filename="{queue_id}.mp4"',
                                  "Accept-Ranges": "bytes"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope.get("method", "GET").upper()
        span = parse_single_range(Headers(scope=scope).get("range"), self.size)
        if span is False:
            self.status_code = 416
            self.headers["content-range"] = f"bytes */{self.size}"
            self.headers["content-length"] = "0"
        else:
            start, end = span if isinstance(span, tuple) else (0, self.size - 1)
            if isinstance(span, tuple):
                self.status_code = 206
                self.headers["content-range"] = f"bytes {start}-{end}/{self.size}"
            self.headers["content-length"] = str(max(0, end - start + 1))
            if method != "HEAD" and end >= start:
                self.body_iterator = iterate_in_threadpool(self.storage.iter_range(self.key, start, end))
        await super().__call__(scope, receive, send)
