"""`VidgateClient`: the blocking client (see `vidgate.client` for the overview; `aio.py` is its async twin)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, overload

import httpx
from httpx_sse import connect_sse

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


class VidgateClient:
    """A vidgate (or any Venice-compatible) server. `base_url` defaults to $VIDGATE_URL or
    http://127.0.0.1:8000, `api_key` to $VIDGATE_API_KEY. Pass `transport=` or a ready `http_client=` (whose
    lifetime stays yours) for tests or custom networking."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: httpx.Timeout | float = DEFAULT_TIMEOUT, max_retries: int = 3,
                 max_retry_wait: float = 60.0, transport: httpx.BaseTransport | None = None,
                 http_client: httpx.Client | None = None) -> None:
        self.config = ClientConfig.resolve(base_url, api_key, max_retries, max_retry_wait)
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(timeout=timeout, transport=transport)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> VidgateClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- sending, with the retry rule of ClientConfig.retry_delay ------------------------------------------

    def _send(self, call: Call, *, stream: bool = False) -> httpx.Response:
        """The response to `call` (status < 400), retrying as allowed; a streamed one must be closed."""
        attempt = 0
        while True:
            request = self._http.build_request(call.method, self.config.url(call.path), json=call.json,
                                               params=call.params, headers=self.config.headers(call.headers))
            try:
                response = self._http.send(request, stream=stream)
            except httpx.ConnectError:
                delay = self.config.retry_delay(call, attempt, None)
                if delay is None:
                    raise
            else:
                if response.status_code < 400:
                    return response
                response.read()
                response.close()
                error = api_error(response)
                delay = self.config.retry_delay(call, attempt, error)
                if delay is None:
                    raise error
            time.sleep(delay)
            attempt += 1

    def _json(self, call: Call) -> Any:
        return self._send(call).json()

    # --- Venice's routes ---------------------------------------------------------------------------------

    def models(self) -> list[Model]:
        """The video models the server offers."""
        data = self._json(Call("GET", "/models", params={"type": "video"}))
        return [Model.from_json(m) for m in data.get("data") or ()]

    def quote(self, **body: Any) -> float:
        """The price in USD of a request (`model=`, `duration=`, `resolution=`, ...); no key needed."""
        return float(self._json(Call("POST", "/video/quote", json=body))["quote"])

    def queue(self, *, idempotency_key: str | None = None, **body: Any) -> Queued:
        """Queue a video (`model=`, `prompt=`, ...) and charge for it. With `idempotency_key`, sending it again
        (as the retries on 429/503 do) returns the same job and charges once."""
        return Queued.from_json(self._json(queue_call(body, idempotency_key)))

    @overload
    def retrieve(self, model: str, queue_id: str, *, to: None = None,
                 delete_media_on_completion: bool = False) -> RetrieveStatus | bytes: ...

    @overload
    def retrieve(self, model: str, queue_id: str, *, to: str | Path,
                 delete_media_on_completion: bool = False) -> RetrieveStatus | Path: ...

    def retrieve(self, model: str, queue_id: str, *, to: str | Path | None = None,
                 delete_media_on_completion: bool = False) -> RetrieveStatus | bytes | Path:
        """The status while the job runs, then the MP4: as bytes, or streamed into the file `to`."""
        call = Call("POST", "/video/retrieve", json=retrieve_body(model, queue_id, delete_media_on_completion))
        response = self._send(call, stream=True)
        try:
            if not is_video(response):
                response.read()
                return RetrieveStatus.from_json(response.json())
            if to is None:
                return response.read()
            return _save(response, Path(to))
        finally:
            response.close()

    def complete(self, model: str, queue_id: str) -> None:
        """Delete the job's video from the server, once you have it."""
        self._json(Call("POST", "/video/complete", json={"model": model, "queue_id": queue_id}))

    def download_url(self, url: str, to: str | Path) -> Path:
        """Save a private model's signed `download_url` into `to` (the link is the credential: no key sent)."""
        with self._http.stream("GET", url) as response:
            if response.status_code >= 400:
                response.read()
                raise api_error(response)
            return _save(response, Path(to))

    # --- vidgate's job routes ----------------------------------------------------------------------------

    def jobs(self, status: str | list[str] | None = None, model: str | None = None, limit: int | None = None,
             cursor: str | None = None) -> JobPage:
        """Your jobs, newest first, one page at a time (`status="queued,running"` or a list)."""
        return JobPage.from_json(self._json(jobs_call(status, model, limit, cursor)))

    def job(self, queue_id: str) -> Job:
        return Job.from_json(self._json(Call("GET", f"/video/jobs/{queue_id}")))

    def cancel(self, queue_id: str) -> Job:
        """Cancel a queued or running job (a 409 JOB_FINISHED error if it had already finished)."""
        return Job.from_json(self._json(Call("POST", f"/video/jobs/{queue_id}/cancel")))

    def events(self, queue_id: str | None = None, *, last_event_id: int | None = None) -> Iterator[JobEvent]:
        """Job events as they happen: one job's (ending after its final event) or all of yours.

        Each event carries the job's whole state. A stream that drops, or that the server closes (it does so
        to a client that falls behind), is reopened with Last-Event-ID: the server then sends each job's newest
        event since, so no state change is missed. Pass the last `JobEvent.id` you saw to resume later."""
        failures = 0
        reconnect_after: float | None = None  # the server's `retry:`, when it sent one
        while True:
            headers = self.config.headers({"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {})
            error: httpx.TransportError | None = None
            try:
                with connect_sse(self._http, "GET", self.config.url(events_path(queue_id)), headers=headers,
                                 timeout=SSE_TIMEOUT) as source:
                    if source.response.status_code >= 400:
                        source.response.read()
                        raise api_error(source.response)
                    for sse in source.iter_sse():
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
            time.sleep(delay if reconnect_after is None else reconnect_after)

    # --- the whole flow ----------------------------------------------------------------------------------

    def wait(self, queue_id: str, model: str | None = None, *, to: str | Path | None = None,
             on_update: Callable[[Job], None] | None = None, timeout: float | None = None,
             poll_interval: float = 1.0) -> Job:
        """Follow a job (its status route, every `poll_interval` s) until it is final; save the MP4 into `to`.

        `on_update` gets every state seen. Raises JobFailed / JobCanceled, or WaitTimeout after `timeout` s
        (the job goes on)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(queue_id)
            if on_update is not None:
                on_update(job)
            if job.is_final:
                break
            remaining = poll_interval if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(job, timeout or 0)
            time.sleep(min(poll_interval, remaining))
        if job.status == "failed":
            raise JobFailed(job)
        if job.status == "canceled":
            raise JobCanceled(job)
        if to is not None:
            self._download_finished(job, model or job.model, Path(to))
        return job

    def _download_finished(self, job: Job, model: str, to: Path) -> None:
        if job.download_url:  # a private model: its video is only offered through the signed link
            self.download_url(job.download_url, to)
            return
        if isinstance(self.retrieve(model, job.queue_id, to=to), RetrieveStatus):
            raise MediaUnavailable(job.queue_id, "the server offers no video for it")

    def generate(self, *, to: str | Path, on_update: Callable[[Job], None] | None = None,
                 timeout: float | None = None, idempotency_key: str | None = None,
                 poll_interval: float = 1.0, **body: Any) -> Job:
        """Queue (with a fresh Idempotency-Key unless given, so retries never charge twice), wait, save."""
        queued = self.queue(idempotency_key=idempotency_key or str(uuid.uuid4()), **body)
        return self.wait(queued.queue_id, queued.model, to=to, on_update=on_update, timeout=timeout,
                         poll_interval=poll_interval)


def _save(response: httpx.Response, to: Path) -> Path:
    partial = part_path(to)
    try:
        with partial.open("wb") as out:
            for chunk in response.iter_bytes():
                out.write(chunk)
        partial.replace(to)
    finally:
        partial.unlink(missing_ok=True)
    return to
