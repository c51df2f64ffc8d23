"""The `/video/*` routes: parse, call the catalogue, store and storage, respond. No business logic here."""

from __future__ import annotations

import hashlib
import logging
import re
import time
from pathlib import Path
from typing import Any

import orjson
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from vidgate.accounts.keys import KeyOwner
from vidgate.accounts.ledger import balance_micros
from vidgate.api.auth import authenticate, optional_key_owner
from vidgate.api.context import AppContext
from vidgate.api.http import (
    API_PREFIX,
    JSONResponse,
    StoredVideoResponse,
    VideoFileResponse,
    add_headers,
    read_json_object,
    require_model_field,
    require_string,
)
from vidgate.catalog.models import ModelSpec
from vidgate.catalog.pricing import Quote, quote
from vidgate.catalog.request import JobPayload, MediaFacts, VideoRequest
from vidgate.catalog.validation import validate_queue, validate_quote
from vidgate.consent import check_consent, record_consent
from vidgate.db import SqliteDatabase
from vidgate.engines.registry import ensure_renderable
from vidgate.errors import (
    BadRequest,
    Gone,
    IdempotencyKeyReused,
    InferenceFailed,
    NotFound,
    VidgateError,
    insufficient_balance,
    invalid,
    media_not_found,
)
from vidgate.gateway.service import quote_body
from vidgate.jobs.states import JobStatus, public_error, wire_status
from vidgate.jobs.store import Idempotency, IdempotencyConflict, Job, JobStore, idempotent_replay
from vidgate.jobs.wakeup import notify_workers
from vidgate.storage.base import Storage
from vidgate.webhooks.targets import vetted_target

log = logging.getLogger("vidgate.api")


def ctx_of(request: Request) -> AppContext:
    return request.app.state.ctx


def lookup_model(ctx: AppContext, request: Request, model_id: str) -> ModelSpec:
    spec = ctx.catalog.get(model_id)
    if spec is None:
        if model_id in ctx.catalog.retired:
            # CHANGES §9.4: a removed model that Venice does not remap answers 410 Gone.
            raise Gone(f"Model {model_id} has been removed ({ctx.catalog.retired[model_id]}) and is no longer "
                       "available; GET /api/v1/models lists the models offered")
        raise invalid("model", f"Specified model not found: {model_id}", code="invalid_model")
    headers = {"x-venice-model-id": spec.id, "x-venice-model-name": spec.name}
    if spec.deprecation:
        when = spec.deprecation.removes_at or spec.deprecation.date
        warning = f"{spec.id} is deprecated and will be removed on {when}"
        if spec.deprecation.replacement:
            warning += f"; use {spec.deprecation.replacement}"
        headers["x-venice-model-deprecation-warning"] = warning
        headers["x-venice-model-deprecation-date"] = when
    add_headers(request, headers)
    return spec


def download_url(ctx: AppContext, request: Request, queue_id: str) -> str:
    base = (ctx.settings.public_base_url or str(request.base_url)).rstrip("/")
    return f"{base}/api/v1/video/download/{ctx.signer.token(queue_id)}"


async def quote_video(request: Request) -> JSONResponse:
    ctx = ctx_of(request)
    await optional_key_owner(ctx, request)  # a valid key gets its balance headers here too
    body = await read_json_object(request, ctx.settings.max_body_bytes)
    spec = lookup_model(ctx, request, require_model_field(body))
    req = validate_quote(body, spec)
    facts = MediaFacts()
    if spec.duration_from_input and req.duration_s is None and req.media.get("video_url"):
        # Quote from the video itself: fetch and probe it for its length, height and fps, then drop it.
        prepared, facts = await ctx.prepare_media(req, spec)
        if prepared is not None:
            prepared.discard()
    if spec.engine == "upstream":
        route = ctx.routes[spec.id]
        return JSONResponse({"quote": float(await ctx.gateway.price(route, quote_body(body, req, facts)))})
    return JSONResponse({"quote": quote(req, facts, spec, ctx.prices).as_float()})


IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII, no spaces (as Stripe and the IETF draft)


def idempotency_of(request: Request, body: dict[str, Any]) -> Idempotency | None:
    """The Idempotency-Key header (vidgate extension), with the SHA-256 of the body it names."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise BadRequest("Idempotency-Key header must be 1 to 255 printable ASCII characters without spaces")
    return Idempotency(key, hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest())


def queued_answer(ctx: AppContext, request: Request, spec: ModelSpec, model_echo: str,
                  queue_id: str) -> JSONResponse:
    # The id the client sent (a dotted Wan 3.0 alias included) is echoed (CHANGES §2.2, GUESS).
    response: dict[str, Any] = {"model": model_echo, "queue_id": queue_id}
    if spec.download_url:
        response["download_url"] = download_url(ctx, request, queue_id)
    return JSONResponse(response)


async def replayed(ctx: AppContext, account_id: str, idempotency: Idempotency | None) -> str | None:
    """The job an earlier request with this Idempotency-Key made (None: new key); IdempotencyKeyReused when
    that request's body was another."""
    if idempotency is None:
        return None
    try:
        earlier = await ctx.db.read(lambda conn: idempotent_replay(conn, account_id, idempotency))
    except IdempotencyConflict as conflict:
        raise IdempotencyKeyReused(conflict.key) from None
    return earlier.job_id if earlier else None


async def queue_video(request: Request) -> JSONResponse:
    ctx = ctx_of(request)
    principal = await authenticate(ctx, request, "queue")
    body = await read_json_object(request, ctx.settings.max_body_bytes)
    spec = lookup_model(ctx, request, require_model_field(body))
    idempotency = idempotency_of(request, body)
    # A retried request answers at once with its job, before any media is fetched or upstream is asked.
    if (earlier := await replayed(ctx, principal.account_id, idempotency)) is not None:
        return queued_answer(ctx, request, spec, str(body["model"]), earlier)
    req = validate_queue(body, spec)
    ensure_renderable(spec, req, ctx.settings.diffusers_models)
    # The webhook target is vetted (SSRF guard) before any work: a gateway job is submitted upstream below.
    webhook_url = await vetted_target(ctx.fetcher, body.get("webhook_url"), field="webhook_url")
    # Media is fetched and checked before the charge, so a bad input costs nothing.
    prepared, facts = await ctx.prepare_media(req, spec)
    try:
        # Seedance face-media consent (SPEC §5): decided before the charge; a 409 lands in the except below.
        grant = await check_consent(ctx.db, ctx.settings, principal.account_id, spec, req, prepared)
        if spec.engine == "upstream":
            price, payload = await submit_upstream(ctx, principal.account_id, spec, body, req, facts)
        else:
            price = quote(req, facts, spec, ctx.prices)
            payload = JobPayload.of(req, prepared.inputs if prepared else {},
                                    str(prepared.directory) if prepared else None, workflows=spec.workflows)
        await record_consent(ctx.db, grant, request.scope.get("state", {}).get("request_id", ""))
        queued = await ctx.store.create_paid_job(
            account_id=principal.account_id, model=spec.id, request=payload.to_json(), engine=spec.engine,
            price_micros=price.micros, private=spec.download_url, resolution=req.resolution,
            idempotency=idempotency,
            webhook_url=webhook_url,
        )
    except BaseException as exc:
        if prepared is not None:
            prepared.discard()
        if isinstance(exc, IdempotencyConflict):  # another request with this key won the race
            raise IdempotencyKeyReused(exc.key) from None
        raise
    if (spec.engine == "upstream" or queued.replayed) and prepared is not None:
        # Upstream: checked here; the upstream fetches the media itself, as the client sent them. Replayed: a
        # concurrent request with the same Idempotency-Key made the job, with its own copy of the media.
        prepared.discard()
    if not queued.replayed:
        notify_workers(ctx.settings.wake_dir)
        ctx.hub.poke()
    return queued_answer(ctx, request, spec, req.model_echo, queued.job_id)


async def submit_upstream(ctx: AppContext, account_id: str, spec: ModelSpec, body: dict[str, Any],
                          req: VideoRequest, facts: MediaFacts) -> tuple[Quote, JobPayload]:
    """Gateway: price from the upstream, check the balance, then submit before answering (gateway/service.py).

    The upstream's own 400/409 reaches the client unchanged, with nothing charged."""
    route = ctx.routes[spec.id]
    usd = await ctx.gateway.price(route, quote_body(body, req, facts))
    price = Quote(usd, 0)
    balance = await ctx.db.read(lambda conn: balance_micros(conn, account_id))
    if (balance or 0) < price.micros:
        raise insufficient_balance()
    await ctx.gateway.check_capacity(ctx.db, route)
    upstream_job = await ctx.gateway.submit(route, body, req.model_echo or spec.id)
    return price, JobPayload.of(req, {}, None, workflows=False).with_upstream(upstream_job)


class KeyAndJob:
    """A poll's API key and job read together (`JobStore.get_with_key_owner`): `authenticate` asks for the key's
    owner through `owner`, and the job read with it is kept here for the route (`read`: it was)."""

    def __init__(self, store: JobStore, queue_id: object) -> None:
        self.store = store
        self.job_id = queue_id if isinstance(queue_id, str) and queue_id else None
        self.job: Job | None = None
        self.read = False

    async def owner(self, key_id: str, digest: str) -> KeyOwner | None:
        assert self.job_id is not None
        owner, self.job = await self.store.get_with_key_owner(self.job_id, key_id, digest)
        self.read = True
        return owner


async def owned_job(request: Request, bucket: str) -> tuple[AppContext, Job, dict[str, Any]]:
    """Authenticate, read the body, and find the caller's job for (model, queue_id).

    Anything but the caller's own job for that model is 404 (SPEC: queue ids are scoped to accounts).
    """
    ctx = ctx_of(request)
    # SQLite: one `PRAGMA data_version` now, and the key and the job come from the process's poll cache unless
    # something was committed since the last poll (then they are read, as before). Polls of an idle server
    # run no lookup; whatever was committed before this request started is seen (db.py, refresh_row_cache).
    # PostgreSQL: the key and the job in one lookup, so the body is read first; its errors still come after
    # the caller's (a 401 before a 400).
    if isinstance(ctx.db, SqliteDatabase):
        ctx.db.refresh_row_cache()
        principal = await authenticate(ctx, request, bucket, cached=True)
        body = await read_json_object(request, ctx.settings.max_body_bytes)
        model = require_string(body, "model")
        job = await ctx.store.get(require_string(body, "queue_id"), cached=True)
    else:
        try:
            body = await read_json_object(request, ctx.settings.max_body_bytes)
        except VidgateError as error:
            await authenticate(ctx, request, bucket)
            raise error from None
        lookup = KeyAndJob(ctx.store, body.get("queue_id"))
        principal = await authenticate(ctx, request, bucket, key_lookup=lookup.owner if lookup.job_id else None)
        model = require_string(body, "model")
        queue_id = require_string(body, "queue_id")
        job = lookup.job if lookup.read else await ctx.store.get(queue_id)
    known = ctx.catalog.get(model)  # a Wan 3.0 dotted alias names the same model
    if job is None or job.account_id != principal.account_id or job.model != (known.id if known else model):
        raise media_not_found()
    return ctx, job, body


async def retrieve_video(request: Request) -> Response:
    ctx, job, body = await owned_job(request, "retrieve")
    delete_after = body.get("delete_media_on_completion", False)
    if not isinstance(delete_after, bool):
        raise invalid("delete_media_on_completion", "Expected boolean", code="invalid_type", expected="boolean")
    if job.status is JobStatus.FAILED:
        message = public_error(job.error)
        raise InferenceFailed(message) if message else InferenceFailed()
    if job.status is JobStatus.CANCELED or job.media_deleted:
        raise media_not_found()
    if job.status is not JobStatus.COMPLETED or job.private:
        finished = job.finished_at if job.status is JobStatus.COMPLETED else time.time()
        return JSONResponse(
            {
                "status": wire_status(job.status),
                "average_execution_time": await ctx.average_execution_ms(job.model),
                "execution_duration": int((finished - job.created_at) * 1000),
            }
        )
    found = await find_video(ctx.storage, job.media_key)
    if found is None:
        raise media_not_found()
    task = None
    if delete_after:
        task = BackgroundTask(delete_after_sending, ctx, job)
    # The MP4 whatever the Accept header says: clients send Accept: application/json and expect bytes.
    return video_response(ctx.storage, job.media_key or "", found, job.id, background=task)


async def find_video(storage: Storage, key: str | None) -> Path | int | None:
    """Where to send a stored MP4 from: its local path (the sendfile fast path), else its size in object
    storage (a HEAD, in a thread); None when it is gone."""
    if not key:
        return None
    path = storage.local_path(key)
    if path is not None:
        return path
    return await run_in_threadpool(storage.size, key)


def video_response(storage: Storage, key: str, found: Path | int, queue_id: str,
                   background: BackgroundTask | None = None) -> Response:
    """The MP4 with Range support, from what `find_video` found."""
    if isinstance(found, Path):
        return VideoFileResponse(found, queue_id, background=background)
    return StoredVideoResponse(storage, key, found, queue_id, background=background)


async def complete_video(request: Request) -> JSONResponse:
    ctx, job, _ = await owned_job(request, "retrieve")
    if job.status in (JobStatus.QUEUED, JobStatus.PROCESSING):
        raise invalid("queue_id", "The video is still processing; call complete after downloading it",
                      code="invalid_state")
    await delete_media(ctx, job)
    return JSONResponse({"success": True})


async def delete_media(ctx: AppContext, job: Job) -> None:
    """The object first, then the mark: should the bucket be away (a 503), the job still names its object, so
    the client's retry deletes it rather than finding it marked and leaving it in the bucket for good."""
    if job.media_key and not job.media_deleted:
        await run_in_threadpool(ctx.storage.delete, job.media_key)
        await ctx.store.mark_media_deleted(job.id)


async def delete_after_sending(ctx: AppContext, job: Job) -> None:
    """`delete_media_on_completion`, once the MP4 is sent. If the bucket is away now, the job keeps its video
    (not marked deleted), so the next retrieve with the flag deletes it: never an object no job names."""
    try:
        await delete_media(ctx, job)
    except Exception:
        log.warning("job %s: could not delete its video after sending it; a later retrieve will", job.id,
                    exc_info=True)


def not_ready() -> NotFound:
    return NotFound("The video is not ready yet; poll /api/v1/video/retrieve until it is COMPLETED.")


routes = [
    Route(f"{API_PREFIX}/video/retrieve", retrieve_video, methods=["POST"]),
    Route(f"{API_PREFIX}/video/queue", queue_video, methods=["POST"]),
    Route(f"{API_PREFIX}/video/quote", quote_video, methods=["POST"]),
    Route(f"{API_PREFIX}/video/complete", complete_video, methods=["POST"]),
]
