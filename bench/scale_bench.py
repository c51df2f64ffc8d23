"""Scale-out benchmarks: PostgreSQL with several API processes against the embedded SQLite default.

Sections (each measures the compared sides in the same run, alternating, `--rounds` times; values are means):

1. `ingest`: POST /api/v1/video/queue from 64 keep-alive clients for `--duration` s (the asyncio generator of
   `api_bench.py`, clients spread over the API ports), then POST /api/v1/video/retrieve polling a QUEUED job with
   two `wrk -t1 -c16` processes at once (one per API port; both on the one port for a single API). Sides: SQLite
   with one `vidgate serve --no-workers`, PostgreSQL with two (target: PostgreSQL ≥ 0.5 of SQLite's rate); for
   context, PostgreSQL with the load on one of its two processes, and both backends with the clients spread over
   `--accounts` accounts instead of one. No workers: jobs just queue. Every answer must be 200 and every
   queue_id answered stored once. The CPU time of the API processes and of every PostgreSQL process over each
   load run (/proc/<pid>/stat) is divided by the requests served: where a request's CPU goes.
2. `latency`: queue→start with two idle `vidgate worker` processes (VIDGATE_IDLE_POLL_SECONDS=30, so wake-ups
   are measured, not polling): `--jobs` jobs queued one at a time, alternately on PostgreSQL (LISTEN/NOTIFY) and
   SQLite (wake socket), each left to finish, then `--gap` s of pause. `started_at` (jobs table) minus the moment
   the client had the 200 (negative: the job started before the answer reached the client), and minus the row's
   `created_at`. Target: p50 < 50 ms.
3. `million`: retrieve of random existing jobs in a table of `--rows` (1,000,000) rows against one of 1,000
   (target: p50 ratio ≤ 1.2), one API process each. 2,000 sampled jobs each retrieved once (warm-up), then
   `--requests` sequential keep-alive requests of random sampled jobs per table in alternating blocks, each
   after an untimed commit from another connection (a busy server: nothing answered from an idle server's poll
   cache), p50/p99; then `wrk` with a random job per request on the idle servers. The
   tables (one account; of every 1,000 jobs 930 COMPLETED, 48 FAILED, 20 CANCELED, 1 QUEUED, 1 PROCESSING; half
   on a private model, whose retrieve answers JSON) are built once, SQLite by executemany in one transaction,
   PostgreSQL by INSERT ... SELECT generate_series, and cached in `--cache-dir` with the PostgreSQL cluster
   (`tests/postgres.py`'s settings), which is kept there, stopped, between runs (`--fresh` rebuilds).
4. `bare`: `api_bench.bench_retrieve` as it is (an idle SQLite server's retrieve polling against the bare
   endpoint, one `wrk -t1 -c32`), reported only.

Every process (servers, workers, wrk, the PostgreSQL cluster) is stopped on exit, errors included.

Run:  .venv/bin/python bench/scale_bench.py          (about 11 min on 2 cores; bench/RESULTS.md used --rounds 3,
                                                      about 14 min; building the 1M-row tables the first time
                                                      adds ~1-2 min)
      .venv/bin/python bench/scale_bench.py --only latency --only million --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
for _path in (str(BENCH_DIR), str(ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from tests import postgres as pgtest  # noqa: E402

import api_bench  # noqa: E402
import run as bench_run  # noqa: E402
from api_bench import HOST, QUEUE_BODY, QUICK_JOB_BODY, LoadResult, ServerProcess, percentile, row  # noqa: E402

# One secret for every process sharing a database, fixed so that the keys of the cached tables stay valid.
SECRET = "scale-bench-secret-0f3c2a9e5b7d41c8a6e2"
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "vidgate-scale-bench"
SECTIONS = ["ingest", "latency", "million", "bare"]

INGEST_TARGET_RATIO = 0.5
QUEUE_TO_START_TARGET_P50_MS = 50.0
MILLION_TARGET_RATIO = 1.2
BARE_TARGET_RATIO = 0.8

Row = dict[str, Any]


def log(message: str) -> None:
    print(f"[scale_bench] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------------------
# PostgreSQL: one cluster kept under the cache dir (its data survives for the cached 1M-row database)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def cache_lock(cache: Path) -> Iterator[None]:
    """One run at a time per cache dir: a second would stop the first one's cluster (see postgres_cluster)."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"another scale_bench run is using {cache}; wait for it, or pass another --cache-dir") \
                from None
        yield


@contextlib.contextmanager
def postgres_cluster(root: Path) -> Iterator[pgtest.PostgresCluster]:
    """`tests/postgres.py`'s cluster (fsync off, 64 MB shared_buffers), in `root`, reused when it is there
    already; always stopped on exit (its files stay, for the next run)."""
    bin_dir = pgtest.postgres_bin()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL binaries not found (Debian: apt-get install postgresql-15)")
    conf = root / "data" / "postgresql.conf"
    if conf.exists():
        port = int(re.findall(r"^port = (\d+)$", conf.read_text(), re.MULTILINE)[-1])
        if not _port_free(port):
            port = api_bench.free_port()
            with conf.open("a") as fh:
                fh.write(f"port = {port}\n")
        cluster = pgtest.PostgresCluster(bin_dir, root, port=port)
        # A cluster left running by a killed run (its postmaster.pid is there): stop it first.
        with contextlib.suppress(subprocess.CalledProcessError):
            cluster.stop("fast")
    else:
        shutil.rmtree(root, ignore_errors=True)
        root.parent.mkdir(parents=True, exist_ok=True)
        cluster = pgtest.PostgresCluster(bin_dir, root)
        cluster.init()
    log(f"starting PostgreSQL in {root} on port {cluster.port}")
    cluster.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(cluster.url(), connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield cluster
    finally:
        log("stopping PostgreSQL")
        try:
            cluster.stop("fast")
        except subprocess.CalledProcessError:
            cluster.stop("immediate")


def pg_admin(cluster: pgtest.PostgresCluster, sql: str) -> None:
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


def pg_database_exists(cluster: pgtest.PostgresCluster, name: str) -> bool:
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


@contextlib.contextmanager
def scratch_database(cluster: pgtest.PostgresCluster, prefix: str) -> Iterator[str]:
    """An empty database for this run (migrated by `vidgate db upgrade` before use), dropped afterwards."""
    name = f"{prefix}_{os.getpid()}"
    pg_admin(cluster, f"DROP DATABASE IF EXISTS {name}")
    pg_admin(cluster, f"CREATE DATABASE {name}")
    try:
        yield cluster.url(name)
    finally:
        with contextlib.suppress(psycopg.Error):
            pg_admin(cluster, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# --------------------------------------------------------------------------------------------------------------
# Deployments: API processes (and workers) sharing one database


def base_env(db_url: str | None, **extra: str) -> dict[str, str]:
    env = {"VIDGATE_SECRET_KEY": SECRET, "VIDGATE_RATE_LIMIT_QUEUE_PER_MIN": "0",
           "VIDGATE_RATE_LIMIT_RETRIEVE_PER_MIN": "0", **extra}
    if db_url:
        env["VIDGATE_DATABASE_URL"] = db_url
    return api_bench.clean_env(**env)


def vidgate_cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> str:
    out = subprocess.run([*api_bench.vidgate_command(), *args], env=env, cwd=cwd, capture_output=True, text=True,
                         timeout=timeout, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"vidgate {' '.join(args)} failed ({out.returncode}): {out.stderr[-2000:]}")
    return out.stdout


def create_key(data_dir: Path, env: dict[str, str], cwd: Path) -> str:
    lines = vidgate_cli(["keys", "create", "--data-dir", str(data_dir), "--balance-usd", "1000000", "--label",
                         "scale-bench"], env, cwd).strip().splitlines()
    if not lines or not lines[-1].startswith("vg_"):
        raise RuntimeError(f"vidgate keys create printed no key: {lines[-3:]}")
    return lines[-1].strip()


@dataclass
class Deployment:
    """`len(apis)` API processes and `len(workers)` worker processes on one database."""

    name: str
    data_dir: Path
    env: dict[str, str]
    db_url: str | None  # None: SQLite in the data dir
    apis: list[ServerProcess] = field(default_factory=list)
    workers: list[ServerProcess] = field(default_factory=list)
    key: str = ""

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    @property
    def ports(self) -> list[int]:
        return [api.port for api in self.apis]

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """A read with the bench's own connection (sqlite3 `?` placeholders; rewritten for psycopg)."""
        if self.db_url is None:
            uri = f"file:{self.data_dir / 'vidgate.db'}?mode=ro"
            with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=30)) as db:
                return db.execute(sql, params).fetchall()
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            return conn.execute(sql.replace("?", "%s"), params or None).fetchall()  # type: ignore[arg-type]

    @contextlib.contextmanager
    def writer(self) -> Iterator[Callable[[], None]]:
        """A function that commits one small write from the bench's own connection (a no-op UPDATE of the
        accounts: another connection's commit, as the workers and other API processes make all the time)."""
        sql = "UPDATE accounts SET label = label"
        if self.db_url is None:
            with contextlib.closing(sqlite3.connect(self.data_dir / "vidgate.db", isolation_level=None,
                                                    timeout=30)) as db:
                yield lambda: db.execute(sql).close()
            return
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            yield lambda: conn.execute(sql).close()

    def log_tails(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log_tail(1500)}" for p in [*self.apis, *self.workers])


@contextlib.contextmanager
def worker_process(name: str, data_dir: Path, env: dict[str, str], cwd: Path) -> Iterator[ServerProcess]:
    log_path = cwd / f"{name}.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([*api_bench.vidgate_command(), "worker", "--data-dir", str(data_dir)], env=env,
                                cwd=cwd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    worker = ServerProcess(name, 0, proc, log_path)
    try:
        yield worker
    finally:
        worker.stop()


@contextlib.contextmanager
def deployment(name: str, work_dir: Path, db_url: str | None, apis: int, workers: int = 0,
               extra_env: dict[str, str] | None = None, data_dir: Path | None = None,
               key: str | None = None) -> Iterator[Deployment]:
    """Start `apis` API processes (`vidgate serve --no-workers`) and `workers` `vidgate worker` processes on one
    database; a key with a $1,000,000 balance is created unless `key` is given (a cached database's)."""
    data_dir = data_dir or work_dir / "data"
    env = base_env(db_url, **(extra_env or {}))
    dep = Deployment(name, data_dir, env, db_url)
    work_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        # Migrate once, before several processes start on the database (and a cached one built by an older
        # vidgate is brought to this one's schema).
        vidgate_cli(["db", "upgrade", "--data-dir", str(data_dir)], env, work_dir, timeout=600)
        for i in range(apis):
            port = api_bench.free_port()
            cmd = [*api_bench.vidgate_command(), "serve", "--no-workers", "--host", HOST, "--port", str(port),
                   "--data-dir", str(data_dir)]
            dep.apis.append(stack.enter_context(api_bench.server_process(
                f"{name} api{i}", cmd, port, env, work_dir, work_dir / f"api{i}.log")))
        dep.key = key or create_key(data_dir, env, work_dir)
        for i in range(workers):
            dep.workers.append(stack.enter_context(worker_process(f"{name} worker{i}", data_dir, env, work_dir)))
        yield dep


def wait_for_workers(dep: Deployment, count: int, timeout: float = 60) -> None:
    """Until `count` workers sleep on their wake-up source (a wake socket, or a LISTEN connection)."""
    def listening() -> bool:
        if dep.db_url is None:
            wake = dep.data_dir / "wake"
            return wake.is_dir() and len(list(wake.glob("*.sock"))) >= count
        rows = dep.query("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                         "AND query ILIKE 'LISTEN%'")
        return rows[0][0] >= count

    api_bench._wait_for(listening, timeout, f"{count} workers of {dep.name} to listen", interval=0.05)
    time.sleep(0.5)  # every worker at its idle wait


# --------------------------------------------------------------------------------------------------------------
# CPU accounting: where a request's CPU goes (the API processes, the PostgreSQL server's processes)

_TICK = os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # fields from `state` on: ppid is [1], utime [11], stime [12]


def cpu_seconds(pid: int) -> float:
    fields = _proc_stat(pid)
    return (int(fields[11]) + int(fields[12])) / _TICK if fields else 0.0


def postgres_pids(cluster: pgtest.PostgresCluster) -> list[int]:
    """The postmaster and its children (backends, WAL writer, checkpointer...)."""
    try:
        postmaster = int((cluster.data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _proc_stat(int(entry))
            if fields and fields[1] == str(postmaster):
                children.append(int(entry))
    return [postmaster, *children]


@dataclass
class CpuMeter:
    """CPU seconds used between `start()` and `stop()` by the API processes and by PostgreSQL (if given)."""

    api_pids: list[int]
    cluster: pgtest.PostgresCluster | None = None
    api_s: float = 0.0
    db_s: float = 0.0
    _api0: dict[int, float] = field(default_factory=dict)
    _db0: dict[int, float] = field(default_factory=dict)

    def start(self) -> CpuMeter:
        self._api0 = {pid: cpu_seconds(pid) for pid in self.api_pids}
        self._db0 = {pid: cpu_seconds(pid) for pid in postgres_pids(self.cluster)} if self.cluster else {}
        return self

    def stop(self) -> CpuMeter:
        self.api_s = sum(cpu_seconds(pid) - t0 for pid, t0 in self._api0.items())
        if self.cluster is not None:  # a backend started during the window counts from zero
            self.db_s = sum(cpu_seconds(pid) - self._db0.get(pid, 0.0) for pid in postgres_pids(self.cluster))
        return self


# --------------------------------------------------------------------------------------------------------------
# Load generators


async def _multi_load(targets: list[tuple[int, bytes]], concurrency: int, duration: float,
                      keep_bodies: bool) -> LoadResult:
    """api_bench's asyncio generator, with client i on targets[i % len(targets)]."""
    loop = asyncio.get_running_loop()
    conns: list[api_bench._HttpConnection] = []
    for i in range(concurrency):
        _, conn = await loop.create_connection(api_bench._HttpConnection, HOST, targets[i % len(targets)][0])
        conns.append(conn)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    bodies: list[bytes] = []
    errors = 0
    start = time.perf_counter()
    deadline = start + duration

    async def client(index: int) -> None:
        nonlocal errors
        port, raw = targets[index % len(targets)]
        conn = conns[index]
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                status, body = await conn.request(raw)
            except ConnectionError:
                errors += 1
                conn.close()
                _, conn = await loop.create_connection(api_bench._HttpConnection, HOST, port)
                conns[index] = conn
                continue
            latencies.append(time.perf_counter() - t0)
            statuses[status] += 1
            if keep_bodies:
                bodies.append(body)

    try:
        await asyncio.gather(*(client(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - start
    finally:
        for conn in conns:
            conn.close()
    return LoadResult(len(latencies), elapsed, latencies, statuses, bodies, errors)


def multi_load(targets: list[tuple[int, bytes]], concurrency: int, duration: float,
               keep_bodies: bool = False) -> LoadResult:
    with asyncio.Runner(loop_factory=api_bench._new_loop) as runner:
        return runner.run(_multi_load(targets, concurrency, duration, keep_bodies))


WRK_RANDOM_BODIES = """
local bodies = {{
{bodies}
}}
request = function()
  return wrk.format(nil, nil, nil, bodies[math.random(#bodies)])
end
"""


@dataclass
class WrkTotal:
    rps: float
    p50_ms: float  # the largest of the processes' (wrk reports each process's own distribution)
    p99_ms: float
    requests: int
    bad: int


def wrk_many(ports: list[int], path: str, bodies: list[dict[str, Any]], headers: dict[str, str],
             connections_each: int, duration: float) -> WrkTotal:
    """One `wrk -t1 -c<connections_each>` per entry of `ports`, all at once; their rates added. With several
    bodies, each request takes one at random."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed")
    header_lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    script_text = api_bench.WRK_SCRIPT.format(body=json.dumps(bodies[0]), headers=header_lines)
    if len(bodies) > 1:
        script_text += WRK_RANDOM_BODIES.format(bodies=",\n".join(f"[==[{json.dumps(b)}]==]" for b in bodies))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="vidgate-wrk-", delete=False) as fh:
        fh.write(script_text)
        script = fh.name
    procs: list[subprocess.Popen[str]] = []
    try:
        for port in ports:
            cmd = [wrk, "-t1", f"-c{connections_each}", f"-d{max(1, round(duration))}s", "--timeout", "10s",
                   "-s", script, f"http://{HOST}:{port}{path}"]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        outputs = [p.communicate(timeout=duration + 60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        os.unlink(script)
    total = WrkTotal(0.0, 0.0, 0.0, 0, 0)
    for p, (stdout, stderr) in zip(procs, outputs, strict=True):
        line = next((ln for ln in stdout.splitlines() if ln.startswith("WRKJSON ")), None)
        if p.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed ({p.returncode}): {stdout[-2000:]} {stderr[-2000:]}")
        data = json.loads(line.removeprefix("WRKJSON "))
        total.requests += data["requests"]
        total.rps += data["requests"] / (data["duration_us"] / 1e6)
        total.p50_ms = max(total.p50_ms, data["p50_us"] / 1000)
        total.p99_ms = max(total.p99_ms, data["p99_us"] / 1000)
        total.bad += (data["status_errors"] + data["connect_errors"] + data["read_errors"] + data["write_errors"]
                      + data["timeouts"])
    return total


# --------------------------------------------------------------------------------------------------------------
# 1. Ingest and retrieve polling: PostgreSQL x2 API processes against SQLite x1


@dataclass
class Side:
    """One way of loading a deployment: its API ports in use, and the accounts (keys) the clients spread over."""

    label: str
    dep: Deployment
    ports: list[int]
    keys: list[str]
    cluster: pgtest.PostgresCluster | None = None

    def meter(self) -> CpuMeter:
        return CpuMeter([api.proc.pid for api in self.dep.apis], self.cluster).start()


def bench_ingest(duration: float, rounds: int, cluster: pgtest.PostgresCluster, work: Path, clients: int = 64,
                 connections: int = 32, warmup: float = 2.0, accounts: int = 8) -> list[Row]:
    with contextlib.ExitStack() as stack:
        pg_url = stack.enter_context(scratch_database(cluster, "scale_ingest"))
        sq = stack.enter_context(deployment("sqlite", work / "ingest-sqlite", None, apis=1))
        pg = stack.enter_context(deployment("postgres", work / "ingest-postgres", pg_url, apis=2))
        many = {dep.name: [dep.key, *(create_key(dep.data_dir, dep.env, work) for _ in range(accounts - 1))]
                for dep in (sq, pg)}
        # The headline sides use one account, as api_bench does; the last two spread the clients over `accounts`.
        sides = [Side("sqlite_1api", sq, sq.ports, [sq.key]), Side("postgres_2api", pg, pg.ports, [pg.key], cluster),
                 Side("postgres_1api", pg, pg.ports[:1], [pg.key], cluster)]
        queue_sides = [*sides, Side(f"sqlite_1api_{accounts}acct", sq, sq.ports, many["sqlite"]),
                       Side(f"postgres_2api_{accounts}acct", pg, pg.ports, many["postgres"], cluster)]
        # CPU µs per request: (API processes, PostgreSQL), per side, per round.
        cpu: dict[tuple[str, str], list[tuple[float, float]]] = {}
        answered: dict[str, set[str]] = {"sqlite": set(), "postgres": set()}
        n_requests: Counter[str] = Counter()
        n_200: Counter[str] = Counter()
        n_errors: Counter[str] = Counter()

        def queue_round(side: Side, seconds: float, record: bool = True) -> LoadResult:
            # Client i sends on targets[i % len]: every (key, port) pair gets 64 / len(targets) clients.
            targets = [(p, api_bench.raw_request(p, "/api/v1/video/queue", QUEUE_BODY,
                                                 {"Authorization": f"Bearer {key}"}))
                       for key in side.keys for p in side.ports]
            meter = side.meter()
            res = multi_load(targets, clients, seconds, keep_bodies=True)
            meter.stop()
            if record:
                cpu.setdefault(("queue", side.label), []).append(
                    (meter.api_s / res.requests * 1e6, meter.db_s / res.requests * 1e6))
            n_requests[side.dep.name] += res.requests
            n_200[side.dep.name] += res.statuses.get(200, 0)
            n_errors[side.dep.name] += res.errors
            for body in res.bodies:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    answered[side.dep.name].add(json.loads(body)["queue_id"])
            return res

        queue: dict[str, list[LoadResult]] = {s.label: [] for s in queue_sides}
        for side in queue_sides:
            log(f"ingest: warming up {side.label} ({warmup:.0f} s)")
            queue_round(side, warmup, record=False)
        for r in range(rounds):
            for side in (queue_sides if r % 2 == 0 else queue_sides[::-1]):
                res = queue_round(side, duration)
                queue[side.label].append(res)
                api_us, db_us = cpu[("queue", side.label)][-1]
                log(f"ingest round {r + 1}: {side.label}: {res.rps:,.0f} req/s, p50 {res.percentile_ms(50):.1f} ms, "
                    f"p99 {res.percentile_ms(99):.1f} ms, statuses {dict(res.statuses)}, errors {res.errors}; "
                    f"CPU per request: API {api_us:.0f} µs, PostgreSQL {db_us:.0f} µs")

        # Retrieve polling: a job that stays QUEUED (no workers), 2 wrk processes of connections/2 each.
        bodies: dict[str, dict[str, Any]] = {}
        for dep in (sq, pg):
            status, answer = api_bench.request_once(dep.ports[0], "POST", "/api/v1/video/queue", QUEUE_BODY, dep.auth)
            if status != 200:
                raise RuntimeError(f"{dep.name}: queue answered {status}: {answer[:300]!r}")
            queue_id = json.loads(answer)["queue_id"]
            answered[dep.name].add(queue_id)
            n_requests[dep.name] += 1
            n_200[dep.name] += 1
            bodies[dep.name] = {"model": QUEUE_BODY["model"], "queue_id": queue_id}

        def poll_round(side: Side, seconds: float, record: bool = True) -> WrkTotal:
            ports = side.ports if len(side.ports) == 2 else side.ports * 2
            meter = side.meter()
            res = wrk_many(ports, "/api/v1/video/retrieve", [bodies[side.dep.name]], side.dep.auth,
                           connections // 2, seconds)
            meter.stop()
            if record:
                cpu.setdefault(("retrieve", side.label), []).append(
                    (meter.api_s / res.requests * 1e6, meter.db_s / res.requests * 1e6))
            if res.bad:
                raise RuntimeError(f"retrieve on {side.label}: {res.bad} failed requests\n{side.dep.log_tails()}")
            return res

        polls: dict[str, list[WrkTotal]] = {s.label: [] for s in sides}
        for side in sides:
            log(f"polling: warming up {side.label} ({warmup:.0f} s)")
            poll_round(side, warmup, record=False)
        for r in range(rounds):
            for side in (sides if r % 2 == 0 else sides[::-1]):
                res = poll_round(side, duration)
                polls[side.label].append(res)
                api_us, db_us = cpu[("retrieve", side.label)][-1]
                log(f"polling round {r + 1}: {side.label}: {res.rps:,.0f} req/s, p50 {res.p50_ms:.2f} ms, "
                    f"p99 {res.p99_ms:.2f} ms; CPU per request: API {api_us:.0f} µs, PostgreSQL {db_us:.0f} µs")

        stored = {dep.name: {r[0] for r in dep.query("SELECT id FROM jobs")} for dep in (sq, pg)}

    consistent = {name: n_200[name] == n_requests[name] and not n_errors[name] and len(answered[name]) == n_200[name]
                  and stored[name] == answered[name] for name in answered}
    for name in answered:
        log(f"ingest check {name}: {n_requests[name]} requests, {n_200[name]} answered 200, "
            f"{len(answered[name])} queue_ids, {len(stored[name])} jobs stored: {consistent[name]}")

    def q_rps(label: str) -> float:
        return statistics.fmean(r.rps for r in queue[label])

    def q_p99(label: str) -> float:
        return statistics.fmean(r.percentile_ms(99) for r in queue[label])

    def p_rps(label: str) -> float:
        return statistics.fmean(r.rps for r in polls[label])

    target = f"ratio ≥ {INGEST_TARGET_RATIO}"
    sq_q, pg_q, sq_p, pg_p = q_rps("sqlite_1api"), q_rps("postgres_2api"), p_rps("sqlite_1api"), p_rps("postgres_2api")
    many_sq, many_pg = f"sqlite_1api_{accounts}acct", f"postgres_2api_{accounts}acct"
    out = [
        row(f"ingest_queue_rps PG 2 APIs vs SQLite 1 API (asyncio, {clients} clients, 1 account)", pg_q, "req/s",
            sq_q, target, pg_q / sq_q >= INGEST_TARGET_RATIO, digits=0),
        row("ingest_queue_p99 PG 2 APIs vs SQLite 1 API", q_p99("postgres_2api"), "ms", q_p99("sqlite_1api"), None,
            True, digits=1),
        row("ingest_queue_rps PG 1 API vs SQLite 1 API (context)", q_rps("postgres_1api"), "req/s", sq_q, None,
            True, digits=0),
        row(f"ingest_queue_rps PG 2 APIs vs SQLite 1 API, {accounts} accounts (context)", q_rps(many_pg), "req/s",
            q_rps(many_sq), None, True, digits=0),
        row(f"ingest_queue_p99 PG 2 APIs vs SQLite 1 API, {accounts} accounts (context)", q_p99(many_pg), "ms",
            q_p99(many_sq), None, True, digits=1),
        row("ingest_jobs_stored PG (= 200 answers; SQLite checked the same)", len(stored["postgres"]), "jobs",
            n_200["postgres"], "equal, all 200", all(consistent.values()), digits=0),
        row(f"retrieve_polling_rps PG 2 APIs vs SQLite 1 API (2 wrk x {connections // 2} conns)", pg_p, "req/s",
            sq_p, target, pg_p / sq_p >= INGEST_TARGET_RATIO, digits=0),
        row("retrieve_polling_p99 PG 2 APIs vs SQLite 1 API", max(r.p99_ms for r in polls["postgres_2api"]), "ms",
            max(r.p99_ms for r in polls["sqlite_1api"]), None, True, digits=2),
        row("retrieve_polling_rps PG 1 API vs SQLite 1 API (context)", p_rps("postgres_1api"), "req/s", sq_p, None,
            True, digits=0),
    ]
    for kind, pg_label, sq_label in (("queue", "postgres_2api", "sqlite_1api"),
                                     ("queue", many_pg, many_sq),
                                     ("retrieve", "postgres_2api", "sqlite_1api")):
        pg_api, pg_db = (statistics.fmean(c[i] for c in cpu[(kind, pg_label)]) for i in (0, 1))
        sq_api = statistics.fmean(c[0] for c in cpu[(kind, sq_label)])
        what = f", {accounts} accounts" if pg_label == many_pg else ""
        out.append(row(f"cpu_per_{kind}{what}: PG 2 APIs (API processes + PostgreSQL) vs SQLite (API)",
                       pg_api + pg_db, "µs", sq_api, None, True, digits=0))
        out[-1]["name"] += f" [API {pg_api:,.0f} + PG {pg_db:,.0f}]"
    return out


# --------------------------------------------------------------------------------------------------------------
# 2. Queue-to-start latency with idle workers


def bench_latency(cluster: pgtest.PostgresCluster, work: Path, samples: int = 30, warmup: int = 2,
                  gap: float = 0.5, workers: int = 2) -> list[Row]:
    env = {"VIDGATE_IDLE_POLL_SECONDS": "30", "VIDGATE_X264_PRESET": "ultrafast"}
    from_200: dict[str, list[float]] = {"postgres": [], "sqlite": []}
    from_created: dict[str, list[float]] = {"postgres": [], "sqlite": []}
    with contextlib.ExitStack() as stack:
        pg_url = stack.enter_context(scratch_database(cluster, "scale_latency"))
        pg = stack.enter_context(deployment("postgres", work / "latency-postgres", pg_url, 1, workers, env))
        sq = stack.enter_context(deployment("sqlite", work / "latency-sqlite", None, 1, workers, env))
        for dep in (pg, sq):
            wait_for_workers(dep, workers)
        for i in range(warmup + samples):
            for dep in ((pg, sq) if i % 2 == 0 else (sq, pg)):
                # A new connection each time: uvicorn closes a keep-alive connection idle for 5 s (a render).
                with contextlib.closing(http.client.HTTPConnection(HOST, dep.ports[0], timeout=30)) as conn:
                    conn.connect()
                    status, answer = api_bench.send(conn, "POST", "/api/v1/video/queue", QUICK_JOB_BODY, dep.auth)
                    answered_at = time.time()
                if status != 200:
                    raise RuntimeError(f"{dep.name}: queue answered {status}: {answer[:300]!r}")
                queue_id = json.loads(answer)["queue_id"]
                state: dict[str, Any] = {}

                def finished(job_id: str = queue_id, dep: Deployment = dep, state: dict[str, Any] = state) -> bool:
                    rows = dep.query("SELECT status, created_at, started_at FROM jobs WHERE id = ?", (job_id,))
                    state["row"] = rows[0] if rows else None
                    return bool(rows) and rows[0][0] in ("COMPLETED", "FAILED", "CANCELED")

                api_bench._wait_for(finished, 60, f"{dep.name} job {queue_id} to finish", interval=0.02)
                job_status, created_at, started_at = state["row"]
                if job_status != "COMPLETED":
                    raise RuntimeError(f"{dep.name} job {queue_id} ended {job_status}:\n{dep.log_tails()}")
                if i >= warmup:
                    from_200[dep.name].append(started_at - answered_at)
                    from_created[dep.name].append(started_at - created_at)
                time.sleep(gap)  # both workers back at their idle wait
    rows: list[Row] = []
    for name in ("postgres", "sqlite"):
        ms = [d * 1000 for d in from_200[name]]
        created = [d * 1000 for d in from_created[name]]
        log(f"latency {name}: from 200 p50 {percentile(ms, 50):.2f} ms p90 {percentile(ms, 90):.2f} ms "
            f"min {min(ms):.2f} max {max(ms):.2f}; from created_at p50 {percentile(created, 50):.2f} ms "
            f"p90 {percentile(created, 90):.2f} ms max {max(created):.2f}")
    target = f"< {QUEUE_TO_START_TARGET_P50_MS:.0f} ms"
    for source, values in (("from the 200", from_200), ("from created_at", from_created)):
        pg_ms, sq_ms = ([d * 1000 for d in values[name]] for name in ("postgres", "sqlite"))
        for p in (50, 90):
            value, reference = percentile(pg_ms, p), percentile(sq_ms, p)
            ok = value < QUEUE_TO_START_TARGET_P50_MS and reference < QUEUE_TO_START_TARGET_P50_MS
            r = row(f"queue_to_start_p{p} PG (NOTIFY) vs SQLite (socket), {workers} idle workers, {source}",
                    value, "ms", reference, target if p == 50 else None, ok if p == 50 else True, digits=2)
            if source == "from the 200":
                r["ratio"] = None  # two numbers near zero (a job may start before its 200 reaches the client)
            rows.append(r)
    return rows


# --------------------------------------------------------------------------------------------------------------
# 3. Retrieve with 1,000,000 stored jobs against 1,000

COLUMNS = ["id", "account_id", "model", "status", "request_json", "engine", "price_micros", "private", "created_at",
           "started_at", "finished_at", "execution_ms", "attempts", "lease_owner", "lease_token", "lease_expires_at",
           "progress", "error", "media_key", "media_deleted", "download_revoked"]
# Of every 1,000 jobs: 1 QUEUED, 1 PROCESSING, 48 FAILED, 20 CANCELED, 930 COMPLETED; half on a private model
# (retrieve answers them with JSON, not the video), half on a public one.


def job_status(i: int) -> str:
    k = i % 1000
    return "QUEUED" if k == 0 else "PROCESSING" if k == 1 else "FAILED" if k < 50 else \
        "CANCELED" if k < 70 else "COMPLETED"


PG_STATUS = ("CASE WHEN mod(i, 1000) = 0 THEN 'QUEUED' WHEN mod(i, 1000) = 1 THEN 'PROCESSING' "
             "WHEN mod(i, 1000) < 50 THEN 'FAILED' WHEN mod(i, 1000) < 70 THEN 'CANCELED' ELSE 'COMPLETED' END")


def job_templates(cache: Path) -> list[dict[str, Any]]:
    """Two real rows (a public and a private model's job, as `vidgate serve` stores them), kept in the cache."""
    path = cache / "job_templates.json"
    if path.exists():
        return json.loads(path.read_text())
    with tempfile.TemporaryDirectory(prefix="vidgate-scale-tpl-") as tmp, \
            deployment("template", Path(tmp), None, apis=1) as dep:
        for body in (QUEUE_BODY, QUICK_JOB_BODY):
            status, answer = api_bench.request_once(dep.ports[0], "POST", "/api/v1/video/queue", body, dep.auth)
            if status != 200:
                raise RuntimeError(f"queue answered {status}: {answer[:300]!r}")
        rows = dep.query("SELECT model, engine, price_micros, private, request_json FROM jobs ORDER BY private")
    templates = [dict(zip(["model", "engine", "price_micros", "private", "request_json"], r, strict=True))
                 for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(templates))
    return templates


def sqlite_rows(n: int, account_id: str, templates: list[dict[str, Any]], now: float) -> Iterator[tuple[Any, ...]]:
    for i in range(n):
        t = templates[i % 2]
        status = job_status(i)
        created = now - (n - i) * 0.5
        started = None if status in ("QUEUED", "CANCELED") else created + 2.0
        final = status in ("COMPLETED", "FAILED", "CANCELED")
        finished = created + 32.0 + i % 60 if final else None
        yield (
            str(uuid.uuid4()), account_id, t["model"], status, t["request_json"], t["engine"], t["price_micros"],
            t["private"], created, started, finished,
            int((finished - created) * 1000) if status == "COMPLETED" and finished else None,
            0 if status == "QUEUED" else 1,
            "bench-worker" if status == "PROCESSING" else None, uuid.uuid4().hex if status == "PROCESSING" else None,
            now + 30.0 if status == "PROCESSING" else None,
            1.0 if status == "COMPLETED" else 0.0,
            "render failed: bench" if status == "FAILED" else None,
            f"videos/{i}.mp4" if status == "COMPLETED" else None, 0, 0,
        )


@dataclass
class StoredTable:
    name: str  # sqlite_1k, ...
    data_dir: Path
    db_url: str | None
    key: str
    rows: int


def build_sqlite(cache: Path, n: int, templates: list[dict[str, Any]]) -> StoredTable:
    data_dir = cache / f"sqlite-{n}"
    ready = data_dir / "READY.json"
    name = f"sqlite_{n:,}"
    if ready.exists():
        return StoredTable(name, data_dir, None, json.loads(ready.read_text())["key"], n)
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    env = base_env(None)
    vidgate_cli(["db", "upgrade", "--data-dir", str(data_dir)], env, data_dir)
    key = create_key(data_dir, env, data_dir)
    t0 = time.perf_counter()
    with contextlib.closing(sqlite3.connect(data_dir / "vidgate.db", isolation_level=None)) as db:
        account_id = db.execute("SELECT account_id FROM api_keys").fetchone()[0]
        db.execute("BEGIN")
        db.executemany(f"INSERT INTO jobs ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                       sqlite_rows(n, account_id, templates, time.time()))
        db.execute("COMMIT")
        db.execute("ANALYZE")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        count = db.execute("SELECT count(*) FROM jobs").fetchone()[0]
    log(f"built {name}: {count:,} jobs in {time.perf_counter() - t0:.1f} s "
        f"({(data_dir / 'vidgate.db').stat().st_size / 1e6:.0f} MB)")
    ready.write_text(json.dumps({"key": key, "rows": count}))
    return StoredTable(name, data_dir, None, key, n)


def build_postgres(cluster: pgtest.PostgresCluster, cache: Path, n: int,
                   templates: list[dict[str, Any]]) -> StoredTable:
    db_name = f"jobs_{n}"
    data_dir = cache / f"postgres-{n}"
    ready = data_dir / "READY.json"
    url = cluster.url(db_name)
    name = f"postgres_{n:,}"
    if ready.exists() and pg_database_exists(cluster, db_name):
        return StoredTable(name, data_dir, url, json.loads(ready.read_text())["key"], n)
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    pg_admin(cluster, f"DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")
    pg_admin(cluster, f"CREATE DATABASE {db_name}")
    env = base_env(url)
    vidgate_cli(["db", "upgrade", "--data-dir", str(data_dir)], env, data_dir)
    key = create_key(data_dir, env, data_dir)
    t0 = time.perf_counter()
    pub, priv = templates
    with psycopg.connect(url, autocommit=True) as conn:
        account_id = conn.execute("SELECT account_id FROM api_keys").fetchone()[0]  # type: ignore[index]
        pick = "CASE WHEN mod(i, 2) = 0 THEN %(a_{0})s ELSE %(b_{0})s END"
        params: dict[str, Any] = {"n": n, "account": account_id, "now": time.time()}
        for col in ("model", "engine", "price_micros", "private", "request_json"):
            params[f"a_{col}"], params[f"b_{col}"] = pub[col], priv[col]
        params["a_private"], params["b_private"] = bool(pub["private"]), bool(priv["private"])
        sql = f"""
            INSERT INTO jobs ({', '.join(COLUMNS)})
            SELECT gen_random_uuid()::text, %(account)s, {pick.format('model')}, st, {pick.format('request_json')},
                   {pick.format('engine')}, {pick.format('price_micros')}, {pick.format('private')}, created,
                   CASE WHEN st IN ('QUEUED', 'CANCELED') THEN NULL ELSE created + 2 END,
                   CASE WHEN st IN ('QUEUED', 'PROCESSING') THEN NULL ELSE created + 32 + mod(i, 60) END,
                   CASE WHEN st = 'COMPLETED' THEN ((32 + mod(i, 60)) * 1000)::int END,
                   CASE WHEN st = 'QUEUED' THEN 0 ELSE 1 END,
                   CASE WHEN st = 'PROCESSING' THEN 'bench-worker' END,
                   CASE WHEN st = 'PROCESSING' THEN md5(i::text) END,
                   CASE WHEN st = 'PROCESSING' THEN %(now)s + 30 END,
                   CASE WHEN st = 'COMPLETED' THEN 1.0 ELSE 0.0 END,
                   CASE WHEN st = 'FAILED' THEN 'render failed: bench' END,
                   CASE WHEN st = 'COMPLETED' THEN 'videos/' || i || '.mp4' END,
                   false, false
            FROM (SELECT i, {PG_STATUS} AS st, %(now)s - (%(n)s - i) * 0.5 AS created
                  FROM generate_series(0, %(n)s - 1) AS i) AS g
        """
        conn.execute(sql, params)  # type: ignore[arg-type]
        conn.execute("VACUUM ANALYZE jobs")
        conn.execute("CHECKPOINT")
        count = conn.execute("SELECT count(*) FROM jobs").fetchone()[0]  # type: ignore[index]
        size = conn.execute("SELECT pg_total_relation_size('jobs')").fetchone()[0]  # type: ignore[index]
    log(f"built {name}: {count:,} jobs in {time.perf_counter() - t0:.1f} s ({size / 1e6:.0f} MB with indexes)")
    ready.write_text(json.dumps({"key": key, "rows": count}))
    return StoredTable(name, data_dir, url, key, n)


def sample_jobs(dep: Deployment, count: int) -> list[dict[str, Any]]:
    """Random jobs that retrieve answers with JSON (queued, processing, or completed on the private model)."""
    flag = "private = 1" if dep.db_url is None else "private"
    rows = dep.query(f"SELECT model, id FROM jobs WHERE status IN ('QUEUED', 'PROCESSING') OR "
                     f"(status = 'COMPLETED' AND {flag}) ORDER BY random() LIMIT ?", (count,))
    return [{"model": m, "queue_id": i} for m, i in rows]


def bench_million(duration: float, rounds: int, cluster: pgtest.PostgresCluster | None, work: Path, cache: Path,
                  rows_big: int = 1_000_000, rows_small: int = 1_000, requests: int = 3000, block: int = 250,
                  connections: int = 32) -> list[Row]:
    templates = job_templates(cache)
    tables = [build_sqlite(cache, rows_small, templates), build_sqlite(cache, rows_big, templates)]
    if cluster is not None:
        tables += [build_postgres(cluster, cache, rows_small, templates),
                   build_postgres(cluster, cache, rows_big, templates)]
    seq: dict[str, list[float]] = {t.name: [] for t in tables}
    loads: dict[str, list[WrkTotal]] = {t.name: [] for t in tables}
    with contextlib.ExitStack() as stack:
        deps: dict[str, Deployment] = {}
        for t in tables:
            deps[t.name] = stack.enter_context(deployment(t.name, work / f"million-{t.name}", t.db_url, apis=1,
                                                          data_dir=t.data_dir, key=t.key))
        samples = {name: sample_jobs(dep, 2000) for name, dep in deps.items()}
        rng = random.Random(12)

        def sequential(name: str, count: int, out: list[float] | None, in_order: bool = False) -> None:
            """`count` retrieves one after the other on one keep-alive connection, opened first (uvicorn drops
            a connection idle for 5 s, as ours are while the other servers take their turn). Before each one
            (untimed) another connection commits a write, as on a busy server: so no retrieve is answered from
            what an idle server may keep (SQLite's poll cache, emptied by any commit), and each one looks its
            key and job up in the table."""
            dep, jobs = deps[name], samples[name]
            with contextlib.closing(http.client.HTTPConnection(HOST, dep.ports[0], timeout=30)) as conn, \
                    dep.writer() as touch:
                conn.connect()
                for i in range(count):
                    body = jobs[i] if in_order else rng.choice(jobs)
                    touch()
                    t0 = time.perf_counter()
                    status, answer = api_bench.send(conn, "POST", "/api/v1/video/retrieve", body, dep.auth)
                    elapsed = time.perf_counter() - t0
                    if status != 200:
                        raise RuntimeError(f"{name}: retrieve answered {status}: {answer[:300]!r}")
                    if out is not None:
                        out.append(elapsed)

        for name in deps:  # every sampled job once: the measured requests then find their pages cached
            log(f"million: warming up {name} ({len(samples[name])} requests, each sampled job once)")
            warm = list(samples[name])
            rng.shuffle(warm)
            samples[name], all_jobs = warm, samples[name]
            sequential(name, len(warm), None, in_order=True)
            samples[name] = all_jobs
        names = list(deps)
        for b in range(max(1, requests // block)):
            for name in (names if b % 2 == 0 else names[::-1]):
                sequential(name, block, seq[name])
        for name in names:
            log(f"million: {name}: sequential p50 {percentile(seq[name], 50) * 1000:.3f} ms, "
                f"p99 {percentile(seq[name], 99) * 1000:.3f} ms ({len(seq[name])} requests)")
        for r in range(rounds):
            for name in (names if r % 2 == 0 else names[::-1]):
                res = wrk_many([deps[name].ports[0]] * 2, "/api/v1/video/retrieve", samples[name][:500],
                               deps[name].auth, connections // 2, duration)
                if res.bad:
                    raise RuntimeError(f"{name}: {res.bad} failed retrieves under wrk")
                loads[name].append(res)
                log(f"million round {r + 1}: {name}: {res.rps:,.0f} req/s, p50 {res.p50_ms:.2f} ms, "
                    f"p99 {res.p99_ms:.2f} ms")

    out: list[Row] = []
    for backend in ("sqlite", "postgres"):
        small, big = f"{backend}_{rows_small:,}", f"{backend}_{rows_big:,}"
        if big not in seq:
            continue
        p50_big, p50_small = percentile(seq[big], 50) * 1000, percentile(seq[small], 50) * 1000
        p99_big, p99_small = percentile(seq[big], 99) * 1000, percentile(seq[small], 99) * 1000
        rps_big = statistics.fmean(r.rps for r in loads[big])
        rps_small = statistics.fmean(r.rps for r in loads[small])
        out += [
            row(f"retrieve_p50 {backend}, {rows_big:,} vs {rows_small:,} jobs (sequential)", p50_big, "ms",
                p50_small, f"ratio ≤ {MILLION_TARGET_RATIO}", p50_big / p50_small <= MILLION_TARGET_RATIO, digits=3),
            row(f"retrieve_p99 {backend}, {rows_big:,} vs {rows_small:,} jobs (sequential)", p99_big, "ms",
                p99_small, None, True, digits=3),
            row(f"retrieve_rps {backend}, {rows_big:,} vs {rows_small:,} jobs (2 wrk x {connections // 2}, "
                "random jobs, idle server)", rps_big, "req/s", rps_small, None, True, digits=0),
        ]
    return out


# --------------------------------------------------------------------------------------------------------------
# 4. The existing idle-SQLite retrieve vs bare measurement


def bench_bare(duration: float) -> list[Row]:
    rows = api_bench.bench_retrieve(duration=duration)
    first = rows[0]
    ratio = first["ratio"]
    first["name"] = "retrieve_polling_rps SQLite idle vs bare (api_bench, wrk 1 x 32 conns)"
    first["target"] = f"ratio ≥ {BARE_TARGET_RATIO}"
    first["ok"] = ratio is not None and ratio >= BARE_TARGET_RATIO
    rows[1]["name"] = "retrieve_polling_p99 SQLite idle vs bare"
    return rows


# --------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=SECTIONS, action="append", help="run only these sections (repeatable)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each load run (default 10)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per load comparison (default 2)")
    parser.add_argument("--accounts", type=int, default=8,
                        help="accounts the clients spread over in the context rows of `ingest` (default 8)")
    parser.add_argument("--jobs", type=int, default=30, help="measured jobs per side for `latency` (default 30)")
    parser.add_argument("--gap", type=float, default=0.5, help="pause after each `latency` job (default 0.5 s)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the big table (default 1,000,000)")
    parser.add_argument("--requests", type=int, default=3000, help="sequential retrieves per table (default 3000)")
    parser.add_argument("--no-postgres-million", action="store_true", help="`million` on SQLite only")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE,
                        help=f"where the built tables and the PostgreSQL cluster are kept (default {DEFAULT_CACHE})")
    parser.add_argument("--fresh", action="store_true", help="delete the cache first (rebuild the big tables)")
    args = parser.parse_args(argv)
    sections = args.only or SECTIONS

    # SIGTERM (a killed run) unwinds like Ctrl-C, so every `finally` stops its processes and the cluster.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with cache_lock(args.cache_dir):
        rows, errors = run_sections(args, sections)
    print(bench_run.markdown_table(rows))
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    return 1 if errors else 0


def run_sections(args: argparse.Namespace, sections: list[str]) -> tuple[list[Row], list[str]]:
    if args.fresh:
        bin_dir = pgtest.postgres_bin()
        if bin_dir is not None and (args.cache_dir / "pg" / "data" / "postmaster.pid").exists():
            cluster = pgtest.PostgresCluster(bin_dir, args.cache_dir / "pg")
            with contextlib.suppress(subprocess.CalledProcessError):
                cluster.stop("immediate")  # left running by a killed run
        for entry in args.cache_dir.iterdir():
            if entry.name != "lock":
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()

    rows: list[Row] = []
    errors: list[str] = []
    needs_pg = any(s in sections for s in ("ingest", "latency")) or (
        "million" in sections and not args.no_postgres_million)
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vidgate-scale-")))
        cluster = stack.enter_context(postgres_cluster(args.cache_dir / "pg")) if needs_pg else None
        plan: list[tuple[str, Callable[[], list[Row]]]] = []
        if cluster is not None:
            pg = cluster
            plan += [("ingest", lambda: bench_ingest(args.duration, args.rounds, pg, work, accounts=args.accounts)),
                     ("latency", lambda: bench_latency(pg, work, samples=args.jobs, gap=args.gap))]
        plan += [
            ("million", lambda: bench_million(args.duration, args.rounds,
                                              None if args.no_postgres_million else cluster, work, args.cache_dir,
                                              rows_big=args.rows, requests=args.requests)),
            ("bare", lambda: bench_bare(args.duration)),
        ]
        for name, fn in plan:
            if name not in sections:
                continue
            log(f"--- {name}")
            t0 = time.perf_counter()
            try:
                rows.extend(fn())
            except Exception as exc:
                import traceback

                traceback.print_exc()
                errors.append(f"{name}: {type(exc).__name__}: {str(exc)[:500]}")
            log(f"--- {name} took {time.perf_counter() - t0:.0f} s")
    return rows, errors


if __name__ == "__main__":
    sys.exit(main())
