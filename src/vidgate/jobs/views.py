"""A job as vidgate's own routes show it (`GET /video/jobs/{id}`, the list, the SSE events, webhooks): one
shape, built in one place, so that polling, streams and webhooks always agree."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select

from vidgate.consent import iso_time
from vidgate.db import jobs
from vidgate.jobs.estimates import Estimate
from vidgate.jobs.states import JobStatus, public_error
from vidgate.jobs.store import Job
from vidgate.pagination import newest_first

# The public names of the states (Venice's own routes say PROCESSING for both of the first two).
PUBLIC_STATUS = {
    JobStatus.QUEUED: "queued", JobStatus.PROCESSING: "running", JobStatus.COMPLETED: "completed",
    JobStatus.FAILED: "failed", JobStatus.CANCELED: "canceled",
}
STATUS_OF_PUBLIC = {name: status for status, name in PUBLIC_STATUS.items()}
WORKER_LOST = "worker lost"


@dataclass(frozen=True)
class JobContext:
    """What a job's view needs beyond its row."""

    estimate: Estimate
    queue_position: int | None = None  # 1: the next to start
    running: int = 1  # jobs running now (how many the queue ahead is shared between)
    download_url: str | None = None


def job_error(job: Job) -> dict[str, Any] | None:
    """Why the job did not finish, and whether sending the same request again could succeed."""
    if job.status is JobStatus.CANCELED:
        return {"code": "CANCELED", "message": "The job was canceled; it was refunded in full", "retryable": True}
    if job.status is not JobStatus.FAILED:
        return None
    public = public_error(job.error)
    if public:  # the engine or upstream refused this request: the same request fails the same way
        return {"code": "REQUEST_REFUSED", "message": public, "retryable": False}
    lost = WORKER_LOST in (job.error or "")
    return {"code": "WORKER_LOST" if lost else "RENDER_FAILED",
            "message": "Inference processing failed; the job was refunded in full", "retryable": True}


def eta_seconds(job: Job, context: JobContext, now: float) -> float | None:
    if job.status is JobStatus.PROCESSING:
        elapsed = now - (job.started_at or now)
        if job.progress >= 0.05:  # measured progress beats history once there is some
            return round(max(0.0, elapsed / job.progress - elapsed), 1)
        return round(max(0.0, context.estimate.run_s - elapsed), 1)
    if job.status is JobStatus.QUEUED:
        ahead = (context.queue_position or 1) - 1
        return round(context.estimate.run_s * (1 + ahead / max(1, context.running)), 1)
    return None


def job_view(job: Job, context: JobContext, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    refunded = job.status in (JobStatus.FAILED, JobStatus.CANCELED)  # every refund is the full price
    view: dict[str, Any] = {
        "queue_id": job.id,
        "model": job.model,
        "status": PUBLIC_STATUS[job.status],
        "cancel_requested": job.cancel_requested and not job.status.is_final,
        "queue_position": context.queue_position if job.status is JobStatus.QUEUED else None,
        "progress": round(100.0 if job.status is JobStatus.COMPLETED else job.progress * 100, 1),
        "eta_seconds": eta_seconds(job, context, now),
        "estimated_run_seconds": round(context.estimate.run_s, 1),
        "price_usd": job.price_micros / 1e6,
        "refunded_usd": job.price_micros / 1e6 if refunded else 0.0,
        "attempts": job.attempts,
        "created_at": iso_time(job.created_at),
        "started_at": iso_time(job.started_at) if job.started_at else None,
        "finished_at": iso_time(job.finished_at) if job.finished_at else None,
        "error": job_error(job),
        "media_available": job.status is JobStatus.COMPLETED and not job.media_deleted,
    }
    if context.download_url:
        view["download_url"] = context.download_url
    return view


def queue_position(conn: Connection, job: Job) -> int | None:
    """1 + the queued jobs created before it (the order workers claim in)."""
    if job.status is not JobStatus.QUEUED:
        return None
    ahead = conn.execute(select(func.count()).select_from(jobs).where(
        jobs.c.status == JobStatus.QUEUED.value, jobs.c.created_at < job.created_at)).scalar_one()
    return int(ahead) + 1


def running_count(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(jobs).where(
        jobs.c.status == JobStatus.PROCESSING.value)).scalar_one())


# --- listing ------------------------------------------------------------------------------------------------


def list_jobs(conn: Connection, account_id: str, *, statuses: list[JobStatus] | None, model: str | None,
              limit: int, cursor: tuple[float, str] | None) -> tuple[list[Job], str | None]:
    """The account's jobs, newest first, after `cursor`; and the next page's cursor."""
    query = select(jobs).where(jobs.c.account_id == account_id)
    if statuses:
        query = query.where(jobs.c.status.in_([s.value for s in statuses]))
    if model:
        query = query.where(jobs.c.model == model)
    page, next_cursor = newest_first(conn, query, jobs, limit=limit, cursor=cursor)
    return [Job.from_row(row) for row in page], next_cursor
