"""`GET /metrics`: Prometheus text format (vidgate extension; off with VIDGATE_METRICS_ENABLED=false).

Two kinds of numbers, from two places:

- **This API process** (`vidgate_http_*`, `process_*`, `python_*`): requests by method, route template and
  status, and their latency (api/observe.py). Each API node counts its own; sum them across instances.
- **The whole cluster** (`vidgate_jobs`, `vidgate_queue_*`, `vidgate_render_seconds`,
  `vidgate_engine_errors_total`): read from the database when scraped. Renders and engine errors happen in
  worker processes, possibly on other machines (`vidgate worker` on a GPU host has no HTTP port to scrape), and
  every worker records each job's outcome in the database, in the transaction that ends the job: its status,
  attempts and times, and one more in the running totals of ended jobs (jobs/totals.py). So counting there is
  right whatever the number of workers and API nodes, and survives restarts, where prometheus_client's
  multiprocess mode would only see the workers of one machine, started by one `vidgate serve`. Every API node
  reports the same values: scrape one, or aggregate with `max`, not `sum`.

A scrape reads the totals (one row per engine, final status and render bucket) and the unfinished jobs (through
the (status, created_at) index), so its cost does not grow with the jobs that ended (bench/metrics_bench.py); in a
thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy import Connection, Engine, create_engine, func, select
from sqlalchemy.pool import NullPool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from vidgate.api.observe import RequestStats
from vidgate.db import Database, SqliteDatabase, job_totals, jobs
from vidgate.jobs.states import JobStatus
from vidgate.jobs.totals import NO_BUCKET, RENDER_BUCKETS
from vidgate.jobs.views import PUBLIC_STATUS

log = logging.getLogger("vidgate.api.metrics")

@dataclass(frozen=True)
class JobGroup:
    """Jobs of one engine and status (and, completed, one render bucket: None for the others)."""

    engine: str
    status: str
    bucket: int | None
    jobs: int
    attempts: int
    canceled_queued: int
    oldest: float | None  # created_at of the oldest (unfinished jobs only)
    render_sum: float


def job_stats(conn: Connection) -> list[JobGroup]:
    """The ended jobs' running totals (jobs/totals.py: a small table) and the unfinished jobs grouped by engine
    and status (only they are read from the jobs table, through its (status, created_at) index)."""
    ended = [JobGroup(row.engine, row.status, None if row.bucket == NO_BUCKET else row.bucket, row.jobs,
                      row.attempts, row.canceled_queued, None, row.render_seconds)
             for row in conn.execute(select(job_totals))]
    unfinished = conn.execute(
        select(jobs.c.engine, jobs.c.status, func.count().label("jobs"),
               func.coalesce(func.sum(jobs.c.attempts), 0).label("attempts"),
               func.min(jobs.c.created_at).label("oldest"))
        .where(jobs.c.status.in_([JobStatus.QUEUED.value, JobStatus.PROCESSING.value]))
        .group_by(jobs.c.engine, jobs.c.status))
    return ended + [JobGroup(row.engine, row.status, None, row.jobs, row.attempts, 0, row.oldest, 0.0)
                    for row in unfinished]


def failed_attempts(status: JobStatus, row: JobGroup) -> int:
    """Attempts of these jobs that ended in an error (the engine raised, or its worker was lost).

    Each claim adds an attempt; the attempt still running, or the one that completed, is not an error; every
    earlier one failed. A job canceled while running did not fail its last attempt, one canceled while queued
    again after a failure did. This never decreases as jobs move on, so it is a counter."""
    attempts = int(row.attempts)
    if status in (JobStatus.PROCESSING, JobStatus.COMPLETED):
        return max(0, attempts - int(row.jobs))
    if status is JobStatus.CANCELED:
        return max(0, attempts - (int(row.jobs) - int(row.canceled_queued)))
    return attempts  # QUEUED (every attempt so far failed) and FAILED


class JobStatsReader:
    """Runs `job_stats` off the event loop, one read at a time (concurrent scrapes share it).

    PostgreSQL reads already run in the store's thread pool. SQLite reads run inline on the event loop (they take
    microseconds: db.py), but this one reads the whole table, so it gets a connection of its own in a thread."""

    def __init__(self, db: Database, url: str) -> None:
        self.db = db
        self._engine: Engine | None = None
        if isinstance(db, SqliteDatabase):
            self._engine = create_engine(url, poolclass=NullPool, connect_args={"check_same_thread": False,
                                                                                "timeout": 15})
        self._inflight: asyncio.Future[list[JobGroup]] | None = None

    def _read_sqlite(self) -> list[JobGroup]:
        assert self._engine is not None
        with self._engine.connect() as conn:
            return job_stats(conn)

    async def _read(self) -> list[JobGroup]:
        if self._engine is not None:
            return await asyncio.to_thread(self._read_sqlite)
        return await self.db.read(job_stats)

    async def read(self) -> list[JobGroup]:
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._read())
            self._inflight.add_done_callback(lambda _: setattr(self, "_inflight", None))
        return await asyncio.shield(self._inflight)


class JobStats(Collector):
    """The cluster's job numbers from one `job_stats` result (set before each scrape; None: the read failed)."""

    def __init__(self) -> None:
        self.rows: list[JobGroup] | None = None
        self.now = 0.0

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("vidgate_jobs_stats_up", "1 when the jobs table could be read for this scrape")
        up.add_metric([], 0 if self.rows is None else 1)
        yield up
        if self.rows is None:
            return
        by_state = GaugeMetricFamily("vidgate_jobs", "Jobs by engine and state (queued, running, completed, failed, "
                                     "canceled), cluster-wide", labels=["engine", "state"])
        depth = GaugeMetricFamily("vidgate_queue_depth", "Jobs waiting for a worker, cluster-wide")
        oldest = GaugeMetricFamily("vidgate_queue_oldest_seconds", "Age of the oldest job waiting for a worker "
                                   "(0 when none waits)")
        renders = HistogramMetricFamily("vidgate_render_seconds", "Completed jobs: seconds from first start to "
                                        "completion (retries included), cluster-wide", labels=["engine"])
        errors = CounterMetricFamily("vidgate_engine_errors", "Render attempts that failed (the engine raised or "
                                     "its worker was lost), cluster-wide", labels=["engine"])
        queued, oldest_created = 0, None
        error_counts: dict[str, int] = {}
        states: dict[tuple[str, str], int] = {}
        # Per engine: jobs per render bucket (the last one is above every bound) and the sum of seconds.
        render: dict[str, tuple[list[int], list[float]]] = {}
        for row in self.rows:
            status = JobStatus(row.status)
            key = (row.engine, PUBLIC_STATUS[status])
            states[key] = states.get(key, 0) + int(row.jobs)
            error_counts[row.engine] = error_counts.get(row.engine, 0) + failed_attempts(status, row)
            if status is JobStatus.QUEUED:
                queued += int(row.jobs)
                oldest_created = row.oldest if oldest_created is None else min(oldest_created, row.oldest)
            if row.bucket is not None:
                counts, total = render.setdefault(row.engine, ([0] * (len(RENDER_BUCKETS) + 1), [0.0]))
                counts[int(row.bucket)] += int(row.jobs)
                total[0] += float(row.render_sum)
        for (engine, state), count in sorted(states.items()):
            by_state.add_metric([engine, state], count)
        for engine, (counts, total) in sorted(render.items()):
            cumulative, buckets = 0, []
            for label, count in zip([*(repr(b) for b in RENDER_BUCKETS), "+Inf"], counts, strict=True):
                cumulative += count
                buckets.append((label, float(cumulative)))
            renders.add_metric([engine], buckets, total[0])
        for engine, count in sorted(error_counts.items()):
            errors.add_metric([engine], count)
        depth.add_metric([], queued)
        oldest.add_metric([], max(0.0, self.now - oldest_created) if oldest_created is not None else 0.0)
        yield from (by_state, depth, oldest, renders, errors)


class Metrics:
    """One API process's registry: its request stats, the process collectors, and the cluster's job stats."""

    def __init__(self, db: Database, database_url: str) -> None:
        self.reader = JobStatsReader(db, database_url)
        self.requests = RequestStats()
        self.jobs = JobStats()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.requests)
        self.registry.register(self.jobs)
        # The process's CPU, memory, open files and GC: per registry, so each app of a test run has its own.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def render(self, rows: list[JobGroup] | None, now: float) -> bytes:
        # No await between setting the rows and rendering them: concurrent scrapes cannot mix their rows.
        self.jobs.rows, self.jobs.now = rows, now
        return generate_latest(self.registry)


async def metrics(request: Request) -> Response:
    registry: Metrics = request.app.state.metrics
    try:
        rows: list[JobGroup] | None = await registry.reader.read()
    except Exception:  # the database is down: still answer with what this process knows, and say so
        log.warning("metrics: could not read the jobs table", exc_info=True)
        rows = None
    # The 0.0.4 text format: what every Prometheus version and most other scrapers read.
    return Response(registry.render(rows, time.time()), media_type=CONTENT_TYPE_PLAIN_0_0_4)


routes = [Route("/metrics", metrics, methods=["GET"])]
