"""`AsyncVidgateClient`: `VidgateClient` for asyncio, method for method (the shared rules are in `_http.py`)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, overload

import httpx
from httpx_sse import aconnect_sse

from vidgate.client._http import (
    DEFAULT_TIMEOUT,
    SSE_TIMEOUT,
    Call,
    ClientConfig,
    api_error,
    events_path,
    is_video,
    jobs_call,
    parse_event,
    part_path,
    queue_call,
    retrieve_body,
)
from vidgate.client.errors import JobCanceled, JobFailed, MediaUnavailable, WaitTimeout
from vidgate.client.types import Job, JobEvent, JobPage, Model, Queued, RetrieveStatus


class AsyncVidgateClient:
    """See `VidgateClient`; every method is a coroutine, `events` an async iterator. `transport=` takes e.g.
    `httpx.ASGITransport(app)` to talk to an app in the same process."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: httpx.Timeout | float = DEFAULT_TIMEOUT, max_retries: int = 3,
                 max_retry_wait: float = 60.0, transport: httpx.AsyncBaseTransport | None = None,
                 http_client: httpx.AsyncClient | None = None) -> None:
        self.config = ClientConfig.resolve(base_url, api_key, max_retries, max_retry_wait)
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=timeout, transport=transport)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncVidgateClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def _send(self, call: Call, *, stream: bool = False) -> httpx.Response:
        attempt = 0
        while True:
            request = self._http.build_request(call.method, self.config.url(call.path), json=call.json,
                                               params=call.params, headers=self.config.headers(call.headers))
            try:
                response = await self._http.send(request, stream=stream)
            except httpx.ConnectError:
                delay = self.config.retry_delay(call, attempt, None)
                if delay is None:
                    raise
            else:
                if response.status_code < 400:
                    return response
                await response.aread()
                await response.aclose()
                error = api_error(response)
                delay = self.config.retry_delay(call, attempt, error)
                if delay is None:
                    raise error
            await asyncio.sleep(delay)
            attempt += 1

    async def _json(self, call: Call) -> Any:
        return (await self._send(call)).json()

    async def models(self) -> list[Model]:
        data = await self._json(Call("GET", "/models", params={"type": "video"}))
        return [Model.from_json(m) for m in data.get("data") or ()]

    async def quote(self, **body: Any) -> float:
        return float((await self._json(Call("POST", "/video/quote", json=body)))["quote"])

    async def queue(self, *, idempotency_key: str | None = None, **body: Any) -> Queued:
        return Queued.from_json(await self._json(queue_call(body, idempotency_key)))

    @overload
    async def retrieve(self, model: str, queue_id: str, *, to: None = None,
                       delete_media_on_completion: bool = False) -> RetrieveStatus | bytes: ...

    @overload
    async def retrieve(self, model: str, queue_id: str, *, to: str | Path,
                       delete_media_on_completion: bool = False) -> RetrieveStatus | Path: ...

    async def retrieve(self, model: str, queue_id: str, *, to: str | Path | None = None,
                       delete_media_on_completion: bool = False) -> RetrieveStatus | bytes | Path:
        call = Call("POST", "/video/retrieve", json=retrieve_body(model, queue_id, delete_media_on_completion))
        response = await self._send(call, stream=True)
        try:
            if not is_video(response):
                await response.aread()
                return RetrieveStatus.from_json(response.json())
            if to is None:
                return await response.aread()
            return await _save(response, Path(to))
        finally:
            await response.aclose()

    async def complete(self, model: str, queue_id: str) -> None:
        await self._json(Call("POST", "/video/complete", json={"model": model, "queue_id": queue_id}))

    async def download_url(self, url: str, to: str | Path) -> Path:
        async with self._http.stream("GET", url) as response:
            if response.status_code >= 400:
                await response.aread()
                raise api_error(response)
            return await _save(response, Path(to))

    async def jobs(self, status: str | list[str] | None = None, model: str | None = None,
                   limit: int | None = None, cursor: str | None = None) -> JobPage:
        return JobPage.from_json(await self._json(jobs_call(status, model, limit, cursor)))

    async def job(self, queue_id: str) -> Job:
        return Job.from_json(await self._json(Call("GET", f"/video/jobs/{queue_id}")))

    async def cancel(self, queue_id: str) -> Job:
        return Job.from_json(await self._json(Call("POST", f"/video/jobs/{queue_id}/cancel")))

    async def events(self, queue_id: str | None = None, *, last_event_id: int | None = None) -> AsyncIterator[JobEvent]:
        """See `VidgateClient.events`."""
        failures = 0
        reconnect_after: float | None = None  # the server's `retry:`, when it sent one
        while True:
            headers = self.config.headers({"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {})
            error: httpx.TransportError | None = None
            try:
                async with aconnect_sse(self._http, "GET", self.config.url(events_path(queue_id)), headers=headers,
                                        timeout=SSE_TIMEOUT) as source:
                    if source.response.status_code >= 400:
                        await source.response.aread()
                        raise api_error(source.response)
                    async for sse in source.aiter_sse():
                        if sse.retry is not None:
                            reconnect_after = sse.retry / 1000
                        event = parse_event(sse)
                        if event is None:
                            continue
                        failures = 0
                        if event.id is not None:
                            last_event_id = event.id
                        yield event
                        if queue_id is not None and event.is_final:
                            return
            except (httpx.ReadError, httpx.RemoteProtocolError, httpx.ConnectError) as exc:
                error = exc
            failures += 1
            delay = self.config.backoff(failures - 1)
            if delay is None:
                if error is not None:
                    raise error
                return  # closed again and again without an event: the server means it
            await asyncio.sleep(delay if reconnect_after is None else reconnect_after)

    async def wait(self, queue_id: str, model: str | None = None, *, to: str | Path | None = None,
                   on_update: Callable[[Job], None] | None = None, timeout: float | None = None,
                   poll_interval: float = 1.0) -> Job:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = await self.job(queue_id)
            if on_update is not None:
                on_update(job)
            if job.is_final:
                break
            remaining = poll_interval if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(job, timeout or 0)
            await asyncio.sleep(min(poll_interval, remaining))
        if job.status == "failed":
            raise JobFailed(job)
        if job.status == "canceled":
            raise JobCanceled(job)
        if to is not None:
            await self._download_finished(job, model or job.model, Path(to))
        return job

    async def _download_finished(self, job: Job, model: str, to: Path) -> None:
        if job.download_url:
            await self.download_url(job.download_url, to)
            return
        if isinstance(await self.retrieve(model, job.queue_id, to=to), RetrieveStatus):
            raise MediaUnavailable(job.queue_id, "the server offers no video for it")

    async def generate(self, *, to: str | Path, on_update: Callable[[Job], None] | None = None,
                       timeout: float | None = None, idempotency_key: str | None = None,
                       poll_interval: float = 1.0, **body: Any) -> Job:
        queued = await self.queue(idempotency_key=idempotency_key or str(uuid.uuid4()), **body)
        return await self.wait(queued.queue_id, queued.model, to=to, on_update=on_update, timeout=timeout,
                               poll_interval=poll_interval)


async def _save(response: httpx.Response, to: Path) -> Path:
    # Plain file writes: a chunk to local disk costs microseconds, not worth a thread or another dependency.
    partial = part_path(to)
    try:
        with partial.open("wb") as out:
            async for chunk in response.aiter_bytes():
                out.write(chunk)
        partial.replace(to)
    finally:
        partial.unlink(missing_ok=True)
    return to
