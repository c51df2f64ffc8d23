"""Job events -> webhook deliveries, in the transaction that records the event (jobs/store.py `record_event`).

A delivery row exists exactly when its event does: no event is lost between a commit and a dispatcher, and no
table of "events handled so far" is needed. Each target gets its own row (its own message id): the job's
`webhook_url` and the account's endpoint URL, once when they are the same URL.

What a delivery carries is decided here, at event time: a snapshot of the job as this event left it. The
dispatcher renders it into the public job view (jobs/views.py, the JSON of `GET /video/jobs/{id}`) when it first
sends it, and keeps that body for every retry. Snapshotting now, not reading the job when sending, is what makes a
`video.job.queued` that is retried for an hour still say "queued", not whatever the job has become since. The
view is rendered later because part of it (the run time estimate, the download link) needs the API's context,
which the workers that record most events do not have.

`progress` events get no webhook: a render reports progress every few seconds, too chatty for a webhook (the SSE
stream has them).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, bindparam, func, select

from vidgate.db import PreparedQuery, jobs, webhook_deliveries, webhook_endpoints
from vidgate.jobs.states import JobStatus
from vidgate.webhooks.signing import new_message_id

EVENT_TYPES = {kind: f"video.job.{kind}" for kind in ("queued", "running", "completed", "failed", "canceled")}
PENDING, DELIVERED, FAILED = "PENDING", "DELIVERED", "FAILED"

# What the job view reads; the rest of the row (the request, leases, keys) stays out of the snapshot.
SNAPSHOT_COLUMNS = ("id", "account_id", "model", "status", "engine", "price_micros", "private", "created_at",
                    "started_at", "finished_at", "execution_ms", "attempts", "progress", "error", "media_deleted",
                    "download_revoked", "resolution", "cancel_requested")
_FLAGS = ("private", "media_deleted", "download_revoked", "cancel_requested")

# One indexed lookup per event when nobody listens (the queue's hot path): the job and its account's endpoint.
_TARGETS = PreparedQuery(
    select(*(jobs.c[name] for name in SNAPSHOT_COLUMNS), jobs.c.request_json, jobs.c.webhook_url,
           webhook_endpoints.c.url.label("endpoint_url"))
    .select_from(jobs.outerjoin(webhook_endpoints, webhook_endpoints.c.account_id == jobs.c.account_id))
    .where(jobs.c.id == bindparam("job_id"))
)
_INSERT = PreparedQuery(webhook_deliveries.insert().values(
    {c.name: bindparam(c.name) for c in webhook_deliveries.columns if c.name != "delivered_at"}))


def queue_deliveries(conn: Connection, job_id: str, kind: str, now: float) -> int:
    """Queue the webhooks of one job event, inside the caller's transaction; how many were queued."""
    event_type = EVENT_TYPES.get(kind)
    if event_type is None:
        return 0
    row = _TARGETS.first(conn, {"job_id": job_id})
    if row is None:
        return 0
    targets = list(dict.fromkeys(url for url in (row["webhook_url"], row["endpoint_url"]) if url))
    if not targets:
        return 0
    job = {name: row[name] for name in SNAPSHOT_COLUMNS}
    for flag in _FLAGS:
        job[flag] = bool(job[flag])
    duration = json.loads(row["request_json"]).get("duration_s")
    position = None
    if job["status"] == JobStatus.QUEUED.value:
        position = 1 + conn.execute(select(func.count()).select_from(jobs).where(
            jobs.c.status == JobStatus.QUEUED.value, jobs.c.created_at < job["created_at"])).scalar_one()
    running = conn.execute(select(func.count()).select_from(jobs).where(
        jobs.c.status == JobStatus.PROCESSING.value)).scalar_one()
    snapshot = json.dumps({"type": event_type, "at": now, "job": job, "duration_s": duration,
                           "queue_position": position, "running": int(running)})
    for url in targets:
        _INSERT.execute(conn, {
            "id": new_message_id(), "account_id": job["account_id"], "job_id": job_id, "url": url,
            "event_type": event_type, "payload": snapshot, "status": PENDING, "attempts": 0,
            "next_attempt_at": now, "lease_token": None, "lease_expires_at": None, "last_status_code": None,
            "last_error": None, "created_at": now,
        })
    announce()
    return len(targets)


def is_snapshot(payload: dict[str, Any]) -> bool:
    """A payload not sent yet (see the module docstring); once sent it is the body itself."""
    return "job" in payload and "data" not in payload


# --- waking this process's dispatchers ---------------------------------------------------------------------
# Deliveries queued in this process (an API request, a worker run in-process) wake its dispatchers at once;
# those queued by other processes are found by polling (`webhook_poll_seconds`).

_listeners: list[Callable[[], None]] = []
_lock = threading.Lock()


def subscribe(callback: Callable[[], None]) -> None:
    """`callback` is called on whatever thread queued deliveries (the database writer): it must be thread-safe
    and return at once."""
    with _lock:
        _listeners.append(callback)


def unsubscribe(callback: Callable[[], None]) -> None:
    with _lock:
        if callback in _listeners:
            _listeners.remove(callback)


def announce() -> None:
    with _lock:
        listeners = tuple(_listeners)
    for callback in listeners:
        callback()
