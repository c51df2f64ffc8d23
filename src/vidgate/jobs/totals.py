"""Running totals of ended jobs, by engine, final status and render-time bucket: what /metrics reports about
every job that ever ended (api/metrics.py), kept up as jobs end instead of counted from the jobs table on every
scrape (which took 0.25-0.55 s per 100,000 jobs).

A job ends in exactly two places, `JobStore.complete` and `store._end_and_refund`, and each adds it here in the
transaction that ends it: an ended job is counted once, whichever node ended it, and never again (a final status
has no way out: jobs/states.py). Revision 0004 counted the jobs that had ended before it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from vidgate.db import job_totals
from vidgate.jobs.states import JobStatus

# Seconds from a job's first start to its completion: a CPU stand-in renders in seconds, diffusers in minutes.
# Stored per job as a bucket index: changing these needs a migration that recounts (see 0004's).
RENDER_BUCKETS = (1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
NO_BUCKET = -1  # a job that did not complete, or has no start and finish time
# The reason store.cancel_job records for a job canceled while it waited in the queue (not while running).
CANCELED_WHILE_QUEUED = "canceled by the client"


def render_seconds(status: JobStatus, started_at: float | None, finished_at: float | None) -> float | None:
    if status is not JobStatus.COMPLETED or started_at is None or finished_at is None:
        return None
    return finished_at - started_at


def render_bucket(seconds: float | None) -> int:
    """The index of the first RENDER_BUCKETS bound `seconds` is within (len: above them all)."""
    if seconds is None:
        return NO_BUCKET
    return next((i for i, bound in enumerate(RENDER_BUCKETS) if seconds <= bound), len(RENDER_BUCKETS))


def count_ended(conn: Connection, ended: Any, status: JobStatus) -> None:
    """Add one job that just ended as `status` (`ended`: its engine, attempts, started_at, finished_at and
    error, as the UPDATE that ended it returned them)."""
    seconds = render_seconds(status, ended.started_at, ended.finished_at)
    insert = postgres_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = insert(job_totals).values(
        engine=ended.engine, status=status.value, bucket=render_bucket(seconds), jobs=1,
        attempts=int(ended.attempts or 0), canceled_queued=int(ended.error == CANCELED_WHILE_QUEUED),
        render_seconds=seconds or 0.0,
    )
    added = statement.excluded
    conn.execute(statement.on_conflict_do_update(
        index_elements=[job_totals.c.engine, job_totals.c.status, job_totals.c.bucket],
        set_={"jobs": job_totals.c.jobs + 1, "attempts": job_totals.c.attempts + added.attempts,
              "canceled_queued": job_totals.c.canceled_queued + added.canceled_queued,
              "render_seconds": job_totals.c.render_seconds + added.render_seconds},
    ))
