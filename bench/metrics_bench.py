"""What observation costs on the retrieve path: Prometheus request metrics (target: under 5 % of retrieve polling
throughput), and, for the record, the access log.

1. `bench_retrieve_cost`: three `vidgate serve --no-workers` at once, identical but for
   - `off`:     VIDGATE_METRICS_ENABLED=false VIDGATE_ACCESS_LOG=false (no observation middleware at all)
   - `metrics`: VIDGATE_METRICS_ENABLED=true  VIDGATE_ACCESS_LOG=false
   - `metrics+log`: both on (one JSON line per request, to the server's log file)
   each polled with `wrk` on `POST /api/v1/video/retrieve` for a QUEUED job (the same request as api_bench's
   retrieve benchmark), in rounds that rotate the order (off, metrics, metrics+log; then metrics, metrics+log,
   off; ...), so drift on a busy machine falls on every configuration alike. Two measures of the cost:
   - throughput: 1 - the median over rounds of (req/s with it) / (req/s of `off` in the same round);
   - CPU per request: the server process's CPU time (utime + stime from /proc) over the requests it answered,
     with it / without it - 1. Other processes on the machine change how much CPU the server gets (so its req/s)
     far more than what each request costs it, so this one is the steadier measure on a shared machine.
2. `bench_middleware_cost`: the middleware alone, in process: a no-op ASGI app called directly, bare and wrapped
   (metrics only), 200,000 calls each; microseconds per request. Not disturbed by the load generator.
3. `bench_scrape_cost`: what one /metrics scrape costs (`job_stats` + rendering) with 100,000 and 1,000,000 ended
   jobs and 1,000 unfinished ones in a SQLite file, against the full-table read scrapes made before revision 0004.

Run:  .venv/bin/python bench/metrics_bench.py [--rounds 4] [--duration 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from api_bench import QUEUE_BODY, request_once, row, vidgate_server, wrk_load


def log(message: str) -> None:
    print(f"[metrics_bench] {message}", file=sys.stderr, flush=True)

TARGET_COST = 0.05
CONFIGS = {
    "off": {"VIDGATE_METRICS_ENABLED": "false", "VIDGATE_ACCESS_LOG": "false"},
    "metrics": {"VIDGATE_METRICS_ENABLED": "true", "VIDGATE_ACCESS_LOG": "false"},
    "metrics+log": {"VIDGATE_METRICS_ENABLED": "true", "VIDGATE_ACCESS_LOG": "true"},
}


def bench_retrieve_cost(rounds: int = 4, duration: float = 5.0, connections: int = 32,
                        warmup: float = 2.0) -> list[dict[str, Any]]:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    with contextlib.ExitStack() as stack:
        servers = {name: stack.enter_context(vidgate_server(workers=0, env=env)) for name, env in CONFIGS.items()}
        bodies = {}
        for name, vg in servers.items():
            status, answer = request_once(vg.port, "POST", "/api/v1/video/queue", QUEUE_BODY, vg.auth)
            if status != 200:
                raise RuntimeError(f"{name}: queue answered {status}: {answer[:300]!r}")
            bodies[name] = {"model": QUEUE_BODY["model"], "queue_id": json.loads(answer)["queue_id"]}
            metrics_status, _ = request_once(vg.port, "GET", "/metrics")
            expected = 404 if name == "off" else 200
            if metrics_status != expected:
                raise RuntimeError(f"{name}: /metrics answered {metrics_status}, expected {expected}")

        def poll(name: str, seconds: float) -> tuple[float, float]:
            """(req/s, server CPU µs per request) of one wrk run."""
            vg = servers[name]
            cpu_before = cpu_seconds(vg.server.proc.pid)
            result = wrk_load(vg.port, "/api/v1/video/retrieve", bodies[name], vg.auth, connections, seconds, 1)
            cpu = cpu_seconds(vg.server.proc.pid) - cpu_before
            if result.non_2xx or result.socket_errors:
                raise RuntimeError(f"{name}: {result.non_2xx} non-2xx, {result.socket_errors} socket errors")
            return result.rps, cpu / result.requests * 1e6

        for name in servers:
            log(f"metrics: warming up {name} ({warmup:.0f} s)")
            poll(name, warmup)
        names = list(servers)
        rates: dict[str, list[float]] = {name: [] for name in names}
        cpu_us: dict[str, list[float]] = {name: [] for name in names}
        for i in range(rounds):
            order = names[i % len(names):] + names[:i % len(names)]
            for name in order:
                rps, us = poll(name, duration)
                rates[name].append(rps)
                cpu_us[name].append(us)
            log(f"metrics: round {i + 1}/{rounds}: " + ", ".join(
                f"{n} {rates[n][-1]:.0f} req/s {cpu_us[n][-1]:.0f} µs CPU/req" for n in names))

    off, off_cpu = rates["off"], statistics.median(cpu_us["off"])
    rows = []
    for name in ("metrics", "metrics+log"):
        ratio = statistics.median(on / base for on, base in zip(rates[name], off, strict=True))
        cpu = statistics.median(cpu_us[name])
        cpu_cost = cpu / off_cpu - 1
        log(f"metrics: {name}: median {statistics.median(rates[name]):.0f} req/s vs off "
            f"{statistics.median(off):.0f} req/s (throughput cost {(1 - ratio) * 100:.1f} %); "
            f"{cpu:.1f} µs CPU/request vs {off_cpu:.1f} (CPU cost {cpu_cost * 100:.1f} %)")
        target = f"cost < {TARGET_COST * 100:.0f} %" if name == "metrics" else None
        label = f"(wrk, {connections} conns, {rounds}x{duration:.0f} s)"
        rows.append(row(f"retrieve_rps_with_{name} {label}", statistics.median(rates[name]), "req/s",
                        statistics.median(off), target, 1 - ratio < TARGET_COST if target else True, ratio=ratio,
                        digits=0))
        rows.append(row(f"retrieve_cpu_per_request_with_{name}", cpu, "µs", off_cpu, target,
                        cpu_cost < TARGET_COST if target else True, digits=1))
    return rows


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat fields 14 and 15, in clock ticks)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_middleware_cost(calls: int = 200_000) -> list[dict[str, Any]]:
    """Per-request cost of ObserveMiddleware (metrics on, access log off) around a no-op app."""
    from vidgate.api.observe import ObserveMiddleware, RequestStats

    start = {"type": "http.response.start", "status": 200, "headers": []}
    body = {"type": "http.response.body", "body": b"{}"}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["endpoint"] = app  # what the router leaves in the scope
        await send(start)
        await send(body)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        return None

    observed = ObserveMiddleware(app, RequestStats(), log_requests=False, routes=[])
    observed.templates = {app: "/api/v1/video/retrieve"}

    async def run(target: Any) -> float:
        t0 = time.perf_counter()
        for _ in range(calls):
            await target({"type": "http", "method": "POST", "path": "/api/v1/video/retrieve",
                          "state": {"request_id": "0123456789abcdef-VGT"}}, receive, send)
        return (time.perf_counter() - t0) / calls * 1e6

    async def both() -> tuple[float, float]:
        bare, wrapped = [], []
        for _ in range(3):  # alternate, keep the best of each (the least disturbed by the rest of the machine)
            bare.append(await run(app))
            wrapped.append(await run(observed))
        return min(bare), min(wrapped)

    bare_us, wrapped_us = asyncio.run(both())
    added = wrapped_us - bare_us
    log(f"middleware: bare {bare_us:.2f} µs/call, observed {wrapped_us:.2f} µs/call: +{added:.2f} µs per request")
    return [row("observe_middleware_added_us (metrics on, log off; in process)", added, "µs", None, None, True,
                digits=2)]


def old_job_stats(conn: Any) -> list[Any]:
    """The reference: what a scrape read before the running totals (revision 0004), one GROUP BY over every job
    row, by engine, status and render bucket."""
    from sqlalchemy import and_, case, func, select

    from vidgate.db import jobs
    from vidgate.jobs.totals import RENDER_BUCKETS

    seconds = jobs.c.finished_at - jobs.c.started_at
    completed = and_(jobs.c.status == "COMPLETED", jobs.c.started_at.is_not(None), jobs.c.finished_at.is_not(None))
    bucket = case((~completed, None), *((seconds <= bound, i) for i, bound in enumerate(RENDER_BUCKETS)),
                  else_=len(RENDER_BUCKETS)).label("bucket")
    return list(conn.execute(select(
        jobs.c.engine, jobs.c.status, bucket, func.count().label("jobs"),
        func.coalesce(func.sum(jobs.c.attempts), 0).label("attempts"),
        func.min(jobs.c.created_at).label("oldest"),
        func.sum(case((completed, seconds), else_=0.0)).label("render_sum"),
    ).group_by(jobs.c.engine, jobs.c.status, bucket)))


def fill_jobs(conn: Any, *, size: int, unfinished: int, now: float, rng: Any) -> None:
    """`size` ended jobs and `unfinished` queued or running ones, straight into the jobs table."""
    from sqlalchemy import insert

    from vidgate.db import accounts, jobs

    request = json.dumps({"prompt": "x" * 400})
    conn.execute(insert(accounts).values(id="bench", label="", balance_micros=0, created_at=now))
    for start in range(0, size + unfinished, 100_000):
        rows = []
        for i in range(start, min(start + 100_000, size + unfinished)):
            status = (rng.choice(["COMPLETED"] * 8 + ["FAILED", "CANCELED"]) if i < size else
                      rng.choice(["QUEUED", "PROCESSING"]))
            rows.append({
                "id": str(uuid.uuid4()), "account_id": "bench", "model": "m", "status": status,
                "request_json": request, "engine": rng.choice(["procedural", "image", "diffusers"]),
                "price_micros": 1, "private": False, "created_at": now - 1000, "started_at": now - 900,
                "finished_at": now - 900 + rng.random() * 300 if i < size else None,
                "attempts": rng.randint(1, 3), "progress": 0.0, "media_deleted": False,
                "download_revoked": False, "cancel_requested": False})
        conn.execute(insert(jobs), rows)


def bench_scrape_cost(sizes: tuple[int, ...] = (100_000, 1_000_000), unfinished: int = 1_000,
                      scrapes: int = 5) -> list[dict[str, Any]]:
    """A SQLite file filled at revision 0003 (before the totals) with `size` ended jobs (80 % completed, the rest
    failed or canceled; 400-byte requests) and `unfinished` queued or running ones, then upgraded (0004 counts
    the ended jobs once). One scrape now (`job_stats` + rendering) against the old full-table read."""
    from alembic import command

    from vidgate import migrate
    from vidgate.api.metrics import Metrics
    from vidgate.db import open_database

    results = []
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="vidgate-scrape-") as tmp:
            url = f"sqlite:///{tmp}/vidgate.db"
            command.upgrade(migrate.alembic_config(url), "0003")
            db = open_database(url)

            db.write_now(functools.partial(fill_jobs, size=size, unfinished=unfinished, now=time.time(),
                                           rng=random.Random(7)))
            t0 = time.perf_counter()
            command.upgrade(migrate.alembic_config(url), "head")
            log(f"scrape: {size:,} ended jobs: upgrade to 0004 (counting them) took {time.perf_counter() - t0:.1f} s")
            metrics = Metrics(db, url)
            now_ms, old_ms = [], []
            for _ in range(scrapes):
                t0 = time.perf_counter()
                metrics.render(metrics.reader._read_sqlite(), time.time())
                now_ms.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                with metrics.reader._engine.connect() as conn:  # type: ignore[union-attr]
                    old = old_job_stats(conn)
                old_ms.append((time.perf_counter() - t0) * 1000)
            new_total = sum(r.jobs for r in metrics.reader._read_sqlite())
            assert new_total == sum(r.jobs for r in old) == size + unfinished, (new_total, size)
            db.dispose()
        log(f"scrape: {size:,} ended + {unfinished:,} unfinished jobs: {', '.join(f'{t:.1f}' for t in now_ms)} ms "
            f"per scrape; the old full-table read {', '.join(f'{t:.0f}' for t in old_ms)} ms")
        results.append(row(f"metrics_scrape_ms ({size:,} ended + {unfinished:,} unfinished jobs, SQLite) vs the "
                           "full-table read before 0004", min(now_ms), "ms", min(old_ms), None, True, digits=1))
    return results


def measure() -> list[dict[str, Any]]:
    return [*bench_middleware_cost(), *bench_scrape_cost(), *bench_retrieve_cost()]


def main() -> int:
    parser = argparse.ArgumentParser(description="what metrics and the access log cost on retrieve polling")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    for r in [*bench_middleware_cost(), *bench_scrape_cost(),
              *bench_retrieve_cost(rounds=args.rounds, duration=args.duration)]:
        print(json.dumps(r, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
