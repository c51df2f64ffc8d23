"""vidgate's job-control routes, beside Venice's (extensions; documented in /openapi.json and the README):

    GET  /api/v1/video/jobs                      the caller's jobs, newest first (status, model filters; cursor)
    GET  /api/v1/video/jobs/{queue_id}           one job: queued vs running, position, progress, ETA, price, error
    POST /api/v1/video/jobs/{queue_id}/cancel    cancel it (queued: at once; running: within a few seconds)

Authenticated as Venice's routes are; another account's job is 404, as an unknown one.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.routing import Route

from vidgate.api.auth import authenticate
from vidgate.api.context import AppContext
from vidgate.api.http import API_PREFIX, JSONResponse
from vidgate.api.video import ctx_of, download_url
from vidgate.db import SqliteDatabase
from vidgate.errors import Conflict, invalid, media_not_found
from vidgate.jobs.states import JobStatus
from vidgate.jobs.store import Job, JobFinished, cancel_job
from vidgate.jobs.views import (
    PUBLIC_STATUS,
    STATUS_OF_PUBLIC,
    JobContext,
    job_view,
    list_jobs,
    queue_position,
    running_count,
)
from vidgate.pagination import BadCursor, decode_cursor

MAX_PAGE = 100
DEFAULT_PAGE = 20


async def view_of(ctx: AppContext, request: Request, job: Job, *, cached: bool = False) -> dict[str, Any]:
    """The job's public view, with what it needs read now (its queue position, the jobs running, estimates).
    `cached`: the SQLite poll cache was refreshed in this request (see `get_job`)."""

    def counts(conn: Connection) -> tuple[int | None, int]:
        return queue_position(conn, job), running_count(conn)

    if cached and isinstance(ctx.db, SqliteDatabase):
        position, running = ctx.db.read_cached(("job-counts", job.id), counts)
    else:
        position, running = await ctx.db.read(counts)
    link = download_url(ctx, request, job.id) if job.private else None
    context = JobContext(await ctx.estimate(job), position, running, link)
    return job_view(job, context)


async def own_job(ctx: AppContext, request: Request, account_id: str, *, cached: bool = False) -> Job:
    job = await ctx.store.get(request.path_params["queue_id"], cached=cached)
    if job is None or job.account_id != account_id:
        raise media_not_found()
    return job


async def get_job(request: Request) -> JSONResponse:
    """Polled like retrieve, so it reads like retrieve: on SQLite through the poll cache, which any commit
    anywhere empties (an idle server's polls run no lookup; a change is seen on the next poll)."""
    ctx = ctx_of(request)
    cached = isinstance(ctx.db, SqliteDatabase)
    if cached:
        ctx.db.refresh_row_cache()
    principal = await authenticate(ctx, request, "retrieve", cached=cached)
    job = await own_job(ctx, request, principal.account_id, cached=cached)
    return JSONResponse(await view_of(ctx, request, job, cached=cached))


async def cancel(request: Request) -> JSONResponse:
    ctx = ctx_of(request)
    principal = await authenticate(ctx, request, "queue")
    job_id = request.path_params["queue_id"]
    try:
        outcome = await ctx.db.write(lambda conn: cancel_job(conn, job_id, principal.account_id))
    except JobFinished as finished:
        raise Conflict(f"The job is already {PUBLIC_STATUS[finished.status]}; only queued or running jobs can "
                       "be canceled", code="JOB_FINISHED") from None
    if outcome is None:
        raise media_not_found()
    ctx.hub.poke()
    return JSONResponse(await view_of(ctx, request, await own_job(ctx, request, principal.account_id)))


def page_size(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise invalid("limit", f"limit must be a whole number from 1 to {MAX_PAGE}", code="invalid_limit")
    return int(raw)


def cursor_param(raw: str | None) -> tuple[float, str] | None:
    """A list route's `cursor` query parameter (absent: the first page)."""
    if not raw:
        return None
    try:
        return decode_cursor(raw)
    except BadCursor:
        raise invalid("cursor", "cursor is not one this API returned (use next_cursor as given)",
                      code="invalid_cursor") from None


def status_filter(raw: str | None) -> list[JobStatus] | None:
    if not raw:
        return None
    names = [name.strip().lower() for name in raw.split(",") if name.strip()]
    unknown = [name for name in names if name not in STATUS_OF_PUBLIC]
    if unknown:
        raise invalid("status", f"unknown status {unknown[0]!r}; expected any of {', '.join(STATUS_OF_PUBLIC)}",
                      code="invalid_enum_value", expected=" | ".join(STATUS_OF_PUBLIC))
    return [STATUS_OF_PUBLIC[name] for name in names]


async def list_own_jobs(request: Request) -> JSONResponse:
    ctx = ctx_of(request)
    principal = await authenticate(ctx, request, "retrieve")
    params = request.query_params
    limit, statuses = page_size(params.get("limit")), status_filter(params.get("status"))
    model = params.get("model")
    if model:
        known = ctx.catalog.get(model)
        model = known.id if known else model
    cursor = cursor_param(params.get("cursor"))
    found, next_cursor = await ctx.db.read(lambda conn: list_jobs(
        conn, principal.account_id, statuses=statuses, model=model, limit=limit, cursor=cursor))
    data = [await view_of(ctx, request, job) for job in found]
    return JSONResponse({"data": data, "has_more": next_cursor is not None, "next_cursor": next_cursor})


routes = [
    Route(f"{API_PREFIX}/video/jobs", list_own_jobs, methods=["GET"]),
    Route(f"{API_PREFIX}/video/jobs/{{queue_id}}", get_job, methods=["GET"]),
    Route(f"{API_PREFIX}/video/jobs/{{queue_id}}/cancel", cancel, methods=["POST"]),
]
