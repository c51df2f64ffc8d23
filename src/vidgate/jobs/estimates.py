"""How long a job will take, learned from the jobs this server finished.

A job's work is its output seconds times its megapixels; each engine renders at some seconds of wall time per
unit of work on this server's hardware. The estimate for a job is, from the most to the least specific history
available: the median of the same model at the same resolution (scaled by duration), the same model at any
resolution, the same engine at any model; with no history of the engine, its prior below. So the first job of a
new model gets an estimate from its engine's speed, and the first job on a new server one from the prior.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, select

from vidgate.db import jobs
from vidgate.jobs.states import JobStatus

# Seconds of wall time per unit of work (output second x megapixel) before this server has measured an engine:
# the CPU engines as measured on a 2-core VM (a 5 s 480p clip in about 2.4 s), the others as typical.
PRIOR_SECONDS_PER_UNIT = {
    "procedural": 1.2, "image": 1.2, "reference": 1.2, "video": 1.2,
    "upscale": 8.0,  # Real-ESRGAN on a CPU
    "diffusers": 40.0,  # open video models on one GPU, a few dozen steps
    "upstream": 25.0,  # a hosted provider, queue included
}
HISTORY = 500  # the most recent completed jobs learned from
MIN_SAMPLES = 3  # fewer than this many similar jobs: go one level less specific
_HEIGHT = re.compile(r"(\d+)")
_NAMED_HEIGHTS = {"2k": 1440, "4k": 2160}


def megapixels(resolution: str | None) -> float:
    """A 16:9 frame of the resolution's height (`480p` -> 0.41 MP); unknown: 720p's."""
    name = (resolution or "").lower()
    height = _NAMED_HEIGHTS.get(name)
    if height is None:
        found = _HEIGHT.search(name)
        height = int(found.group(1)) if found else 720
    return height * height * 16 / 9 / 1e6


def work_units(duration_s: float | None, resolution: str | None) -> float:
    return max(1.0, duration_s or 5.0) * megapixels(resolution)


@dataclass(frozen=True)
class Finished:
    """One completed job, as the estimates need it."""

    model: str
    engine: str
    resolution: str | None
    duration_s: float | None
    total_s: float  # queued -> finished (what Venice's average_execution_time measures)
    run_s: float  # started -> finished

    @property
    def work(self) -> float:
        return work_units(self.duration_s, self.resolution)


def recent_finished(conn: Connection, limit: int = HISTORY) -> list[Finished]:
    # Newest first by created_at: the (status, created_at) index serves it without sorting the whole history.
    rows = conn.execute(
        select(jobs.c.model, jobs.c.engine, jobs.c.resolution, jobs.c.request_json, jobs.c.created_at,
               jobs.c.started_at, jobs.c.finished_at)
        .where(jobs.c.status == JobStatus.COMPLETED.value)
        .order_by(jobs.c.status, jobs.c.created_at.desc())
        .limit(limit)
    )
    finished = []
    for row in rows:
        if row.finished_at is None or row.started_at is None:
            continue
        duration = json.loads(row.request_json).get("duration_s")
        finished.append(Finished(
            row.model, row.engine, row.resolution, float(duration) if isinstance(duration, int | float) else None,
            total_s=max(0.0, row.finished_at - row.created_at), run_s=max(0.0, row.finished_at - row.started_at)))
    return finished


@dataclass(frozen=True)
class Estimate:
    run_s: float  # rendering alone
    total_s: float  # from queueing to done, as past jobs went (includes their wait in the queue)


class Estimator:
    def __init__(self, history: Iterable[Finished], default_s: float) -> None:
        self.history = list(history)
        self.default_s = default_s

    def estimate(self, model: str, engine: str, resolution: str | None, duration_s: float | None) -> Estimate:
        work = work_units(duration_s, resolution)
        for similar in (
            [f for f in self.history if f.model == model and f.resolution == resolution],
            [f for f in self.history if f.model == model],
            [f for f in self.history if f.engine == engine],
        ):
            if len(similar) >= MIN_SAMPLES:
                run_rate = statistics.median(f.run_s / f.work for f in similar)
                total_rate = statistics.median(f.total_s / f.work for f in similar)
                return Estimate(run_rate * work, max(run_rate, total_rate) * work)
        prior = PRIOR_SECONDS_PER_UNIT.get(engine)
        if prior is None:
            return Estimate(self.default_s, self.default_s)
        return Estimate(prior * work, prior * work)
