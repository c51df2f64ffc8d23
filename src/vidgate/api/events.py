"""Live status as Server-Sent Events (vidgate extensions):

    GET /api/v1/video/jobs/{queue_id}/events    one job: its state changes and progress; ends when it is final
    GET /api/v1/video/events                    every job of the caller's account

Each event is `id: <n>`, `event: queued|running|progress|completed|failed|canceled` and `data: <the job's view>`,
the same JSON as `GET /api/v1/video/jobs/{queue_id}`, so a stream and a poll never disagree. `n` is the job event
log's id: a client that reconnects with `Last-Event-ID: n` gets what happened after n (one event per job: its
newest), then the live stream. Without it, a job stream starts with the job's current state, and an account
stream with what happens from the moment its request was answered.

One `EventHub` per API process (api/eventhub.py) fans the job event log out to the streams.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from vidgate.api.auth import authenticate
from vidgate.api.eventhub import Subscription
from vidgate.api.http import API_PREFIX
from vidgate.api.jobs import own_job, view_of
from vidgate.api.video import ctx_of
from vidgate.jobs.events import JobEvent, events_after, latest_event, newest_event_id

KEEPALIVE_SECONDS = 15.0  # a comment line, so proxies keep an idle stream open
JOBS_REMEMBERED = 10_000  # per stream, the jobs whose newest sent event id is kept
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def last_event_id(request: Request) -> int | None:
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    return int(raw) if raw and raw.isdigit() else None


def newest_per_job(events: list[JobEvent]) -> list[JobEvent]:
    """Missed events, one per job (its newest): each carries the job's current view anyway."""
    newest: dict[str, JobEvent] = {}
    for event in events:
        newest.pop(event.job_id, None)
        newest[event.job_id] = event
    return list(newest.values())


async def sse_stream(request: Request, subscription: Subscription, missed: list[JobEvent], *,
                     ends_when_final: bool) -> AsyncIterator[bytes]:
    ctx = ctx_of(request)
    # The newest event id sent per job: a job's events are written one after another, so their ids rise; the
    # ids of different jobs' events may commit out of order (PostgreSQL), and each is sent when it appears.
    sent: dict[str, int] = {}

    async def frame(event: JobEvent) -> bytes:
        async def render() -> bytes:
            job = await ctx.store.get(event.job_id)
            data = orjson.dumps(await view_of(ctx, request, job)) if job else b"{}"
            return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.id, event.kind.encode(), data)

        return await ctx.hub.frame(event, str(request.base_url), render)

    yield b"retry: 2000\n\n"
    for event in missed:
        sent[event.job_id] = event.id
        yield await frame(event)
        if ends_when_final and event.is_final:
            return
    while True:
        try:
            event = await asyncio.wait_for(subscription.queue.get(), KEEPALIVE_SECONDS)
        except TimeoutError:
            yield b": keep-alive\n\n"
            continue
        if event is None:
            return  # fell behind; the client resumes from the last id it got
        if event.id <= sent.get(event.job_id, 0):
            continue  # what was missed had it, or a newer event of its job
        sent[event.job_id] = event.id
        if len(sent) > JOBS_REMEMBERED:
            del sent[next(iter(sent))]  # the job first sent: long past the overlap with what was missed
        yield await frame(event)
        if ends_when_final and event.is_final:
            return


async def job_events(request: Request) -> StreamingResponse:
    ctx = ctx_of(request)
    principal = await authenticate(ctx, request, "retrieve")
    job = await own_job(ctx, request, principal.account_id)
    after = last_event_id(request)
    return StreamingResponse(_follow(request, "job", job.id, after), media_type="text/event-stream",
                             headers=SSE_HEADERS)


async def account_events(request: Request) -> StreamingResponse:
    ctx = ctx_of(request)
    principal = await authenticate(ctx, request, "retrieve")
    after = last_event_id(request)
    if after is None:
        # The stream starts now: before the response's headers go out (the stream's generator runs only after
        # that, and a client may act as soon as it has them), so whatever happens once it has them is sent.
        after = await ctx.db.read(newest_event_id)
    return StreamingResponse(_follow(request, "account", principal.account_id, after),
                             media_type="text/event-stream", headers=SSE_HEADERS)


async def _follow(request: Request, kind: str, key: str, after: int | None) -> AsyncIterator[bytes]:
    """Subscribe first, then read what was missed up to where the hub is: nothing falls between the two
    (duplicates are skipped)."""
    ctx = ctx_of(request)
    scope = {"job_id": key} if kind == "job" else {"account_id": key}
    async with ctx.hub.follow(kind, key) as subscription:
        # The log up to what the hub has let go (it holds newer events behind an older one not yet committed, and
        # sends them in id order); the hub sends the rest.
        through = ctx.hub.released_through
        if after is not None:
            missed = newest_per_job(await ctx.db.read(
                lambda conn: events_after(conn, after, through_id=through, **scope)))
        else:  # a job's stream without Last-Event-ID starts with the job's current state
            current = await ctx.db.read(lambda conn: latest_event(conn, **scope))
            missed = [current] if current else []
        async for chunk in sse_stream(request, subscription, missed, ends_when_final=kind == "job"):
            yield chunk


routes = [
    Route(f"{API_PREFIX}/video/jobs/{{queue_id}}/events", job_events, methods=["GET"]),
    Route(f"{API_PREFIX}/video/events", account_events, methods=["GET"]),
]
