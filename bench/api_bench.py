"""API benchmarks: vidgate's HTTP hot paths, each measured beside a reference in the same run.

1. `bench_retrieve`: POST /api/v1/video/retrieve polling a job that is still PROCESSING, against a bare
   FastAPI POST route served by the same uvicorn settings (`bench/bare_server.py`), same load generator
   (wrk when installed, else the asyncio generator below) and concurrency. Target: throughput ratio >= 0.5.
2. `bench_queue`: sustained POST /api/v1/video/queue into SQLite from 64 concurrent clients. Targets:
   >= 500 req/s, p99 < 100 ms; every response 200 and the set of stored jobs equal to the set of queue_ids
   answered. The bare route's rate at the same concurrency is the reference (for context).
3. `bench_queue_to_start`: with 2 idle render workers, jobs queued one at a time; `started_at - created_at`
   from the jobs table. Target: p50 < 50 ms. Reference: a bare round trip (HTTP POST to the bare route).

Every server is a subprocess (`.venv/bin/vidgate serve ...` on a free loopback port, temporary data dir)
and is torn down, with its workers, whatever happens.

Run:  .venv/bin/python bench/api_bench.py            (or bench/run.py for every benchmark and RESULTS.md)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import math
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
HOST = "127.0.0.1"

QUEUE_BODY = {
    "model": "wan-2.5-preview-text-to-video",
    "prompt": "bench",
    "duration": "5s",
    "resolution": "480p",
    "aspect_ratio": "16:9",
}
# The fastest job a worker can render: 1 s at 480p (a private model, so the answer carries a download_url).
QUICK_JOB_BODY = {
    "model": "grok-imagine-text-to-video-private",
    "prompt": "bench",
    "duration": "1s",
    "resolution": "480p",
    "aspect_ratio": "16:9",
}

RETRIEVE_TARGET_RATIO = 0.5
QUEUE_TARGET_RPS = 500.0
QUEUE_TARGET_P99_MS = 100.0
QUEUE_TO_START_TARGET_P50_MS = 50.0


def log(message: str) -> None:
    print(f"[api_bench] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------------------
# Servers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def vidgate_command() -> list[str]:
    exe = ROOT / ".venv" / "bin" / "vidgate"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("vidgate")
    return [found] if found else [sys.executable, "-m", "vidgate"]


def clean_env(**overrides: str) -> dict[str, str]:
    """The environment without any VIDGATE_* settings from the caller's shell, plus `overrides`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDGATE_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


@dataclass
class ServerProcess:
    """A server subprocess in its own process group (so its render workers go down with it)."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                status, _ = request_once(self.port, "GET", "/healthz", timeout=2.0)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM (uvicorn shuts down, the supervisor stops its workers), then SIGKILL the whole group."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log(f"{self.name} (pid {self.proc.pid}) ignored SIGTERM for {grace:.0f} s; killing it")
        # The group id is the server's pid (start_new_session): this reaches its workers and nothing else.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # until the killed workers are gone (reaped by init)
            try:
                os.killpg(self.proc.pid, 0)
            except (ProcessLookupError, PermissionError):
                break
            time.sleep(0.02)


@contextlib.contextmanager
def server_process(name: str, cmd: list[str], port: int, env: dict[str, str], cwd: Path,
                   log_path: Path) -> Iterator[ServerProcess]:
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    server = ServerProcess(name, port, proc, log_path)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@dataclass
class VidgateServer:
    server: ServerProcess
    data_dir: Path
    key: str

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def db_path(self) -> Path:
        return self.data_dir / "vidgate.db"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@contextlib.contextmanager
def vidgate_server(workers: int = 0, balance_usd: float = 1_000_000.0,
                   env: dict[str, str] | None = None) -> Iterator[VidgateServer]:
    """`vidgate serve` on a free port with a fresh data dir, rate limits off, and a key with a big balance."""
    with tempfile.TemporaryDirectory(prefix="vidgate-apibench-") as tmp:
        tmp_dir = Path(tmp)
        data_dir = tmp_dir / "data"
        full_env = clean_env(VIDGATE_RATE_LIMIT_QUEUE_PER_MIN="0", VIDGATE_RATE_LIMIT_RETRIEVE_PER_MIN="0",
                             **(env or {}))
        port = free_port()
        cmd = [*vidgate_command(), "serve", "--host", HOST, "--port", str(port), "--data-dir", str(data_dir)]
        cmd += ["--workers", str(workers)] if workers else ["--no-workers"]
        # cwd = the temporary dir, so no stray `.env` changes the settings under test.
        with server_process(f"vidgate serve ({workers} workers)", cmd, port, full_env, tmp_dir,
                            tmp_dir / "server.log") as server:
            created = subprocess.run(
                [*vidgate_command(), "keys", "create", "--data-dir", str(data_dir), "--balance-usd",
                 str(balance_usd), "--label", "bench"],
                env=full_env, cwd=tmp_dir, capture_output=True, text=True, timeout=60, check=False,
            )
            lines = created.stdout.strip().splitlines()
            if created.returncode != 0 or not lines or not lines[-1].startswith("vg_"):
                raise RuntimeError(f"vidgate keys create failed ({created.returncode}): {created.stderr[-2000:]}")
            yield VidgateServer(server, data_dir, lines[-1].strip())


@contextlib.contextmanager
def bare_server() -> Iterator[ServerProcess]:
    with tempfile.TemporaryDirectory(prefix="vidgate-bare-") as tmp:
        port = free_port()
        cmd = [sys.executable, str(BENCH_DIR / "bare_server.py"), "--host", HOST, "--port", str(port)]
        with server_process("bare FastAPI server", cmd, port, clean_env(), Path(tmp),
                            Path(tmp) / "server.log") as server:
            yield server


# --------------------------------------------------------------------------------------------------------------
# Clients


def request_once(port: int, method: str, path: str, body: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        return send(conn, method, path, body, headers)
    finally:
        conn.close()


def send(conn: http.client.HTTPConnection, method: str, path: str, body: dict[str, Any] | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One request on a keep-alive connection; (status, body)."""
    payload = None if body is None else json.dumps(body).encode()
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    conn.request(method, path, body=payload, headers=all_headers)
    response = conn.getresponse()
    return response.status, response.read()


def raw_request(port: int, path: str, body: dict[str, Any], headers: dict[str, str]) -> bytes:
    """The bytes of an HTTP/1.1 keep-alive POST with a JSON body (what both load generators send)."""
    payload = json.dumps(body).encode()
    lines = [f"POST {path} HTTP/1.1", f"Host: {HOST}:{port}", "Content-Type: application/json",
             f"Content-Length: {len(payload)}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


class _HttpConnection(asyncio.Protocol):
    """A minimal keep-alive HTTP/1.1 client connection (Content-Length bodies only): cheap enough that the
    load generator is not what limits the rate."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is None or self.waiter.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end])
        match = _CONTENT_LENGTH.search(head)
        if match is None:
            self.waiter.set_exception(ConnectionError(f"response without Content-Length: {head[:200]!r}"))
            return
        total = end + 4 + int(match.group(1))
        if len(self.buffer) < total:
            return
        body = bytes(self.buffer[end + 4:total])
        del self.buffer[:total]
        self.waiter.set_result((int(head[9:12]), body))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@dataclass
class LoadResult:
    requests: int
    seconds: float
    latencies_s: list[float]
    statuses: Counter[int]
    bodies: list[bytes] = field(default_factory=list)
    errors: int = 0
    generator: str = "asyncio"

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile_ms(self, p: float) -> float:
        return percentile(self.latencies_s, p) * 1000.0


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100.0 * len(ordered)) - 1)]


async def _load(port: int, raw: bytes, concurrency: int, duration: float, keep_bodies: bool) -> LoadResult:
    loop = asyncio.get_running_loop()
    conns: list[_HttpConnection] = []
    for _ in range(concurrency):
        _, conn = await loop.create_connection(_HttpConnection, HOST, port)
        conns.append(conn)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    bodies: list[bytes] = []
    errors = 0
    start = time.perf_counter()
    deadline = start + duration

    async def client(index: int) -> None:
        nonlocal errors
        conn = conns[index]
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                status, body = await conn.request(raw)
            except ConnectionError:
                errors += 1
                conn.close()
                _, conn = await loop.create_connection(_HttpConnection, HOST, port)
                conns[index] = conn
                continue
            latencies.append(time.perf_counter() - t0)
            statuses[status] += 1
            if keep_bodies:
                bodies.append(body)

    try:
        # Every client stops sending at the deadline but finishes the request it has in flight, so each
        # request sent is counted (the queue benchmark checks every one of them against the database).
        await asyncio.gather(*(client(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - start
    finally:
        for conn in conns:
            conn.close()
    return LoadResult(len(latencies), elapsed, latencies, statuses, bodies, errors)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def asyncio_load(port: int, raw: bytes, concurrency: int, duration: float, keep_bodies: bool = False) -> LoadResult:
    """`concurrency` keep-alive connections, each sending `raw` back to back for `duration` seconds."""
    with asyncio.Runner(loop_factory=_new_loop) as runner:
        return runner.run(_load(port, raw, concurrency, duration, keep_bodies))


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {{\\"requests\\": %d, \\"duration_us\\": %d, \\"status_errors\\": %d, \\"connect_errors\\": %d, " ..
    "\\"read_errors\\": %d, \\"write_errors\\": %d, \\"timeouts\\": %d, \\"p50_us\\": %f, \\"p99_us\\": %f, " ..
    "\\"max_us\\": %f}}\\n",
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


@dataclass
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    generator: str = "wrk"

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile_ms(self, p: float) -> float:
        return {50: self.p50_ms, 99: self.p99_ms}[int(p)]


def wrk_load(port: int, path: str, body: dict[str, Any], headers: dict[str, str], concurrency: int,
             duration: float, threads: int) -> WrkResult:
    wrk = shutil.which("wrk")
    assert wrk is not None
    header_lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="vidgate-wrk-", delete=False) as fh:
        fh.write(WRK_SCRIPT.format(body=json.dumps(body), headers=header_lines))
        script = fh.name
    try:
        cmd = [wrk, f"-t{threads}", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "--timeout", "10s",
               "-s", script, f"http://{HOST}:{port}{path}"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=False)
    finally:
        os.unlink(script)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout[-2000:]} {out.stderr[-2000:]}")
    data = json.loads(line.removeprefix("WRKJSON "))
    return WrkResult(
        requests=data["requests"], seconds=data["duration_us"] / 1e6, p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000, non_2xx=data["status_errors"],
        socket_errors=data["connect_errors"] + data["read_errors"] + data["write_errors"] + data["timeouts"],
    )


def row(name: str, value: float, unit: str, reference: float | None, target: str | None, ok: bool,
        ratio: float | None = None, digits: int = 1) -> dict[str, Any]:
    if ratio is None and reference:
        ratio = value / reference
    return {
        "name": name,
        "value": round(value, digits),
        "unit": unit,
        "reference": None if reference is None else round(reference, digits),
        "ratio": None if ratio is None else round(ratio, 3),
        "target": target,
        "ok": bool(ok),
    }


# --------------------------------------------------------------------------------------------------------------
# 1. Retrieve polling


def bench_retrieve(duration: float = 10.0, connections: int = 32, warmup: float = 2.0,
                   threads: int = 1) -> list[dict[str, Any]]:
    """Poll a PROCESSING job's retrieve vs a bare FastAPI POST route; same generator, same connections."""
    use_wrk = shutil.which("wrk") is not None

    def load(port: int, path: str, body: dict[str, Any], headers: dict[str, str],
             seconds: float) -> WrkResult | LoadResult:
        if use_wrk:
            return wrk_load(port, path, body, headers, connections, seconds, threads)
        return asyncio_load(port, raw_request(port, path, body, headers), connections, seconds)

    with vidgate_server(workers=0) as vg, bare_server() as bare:
        status, answer = request_once(vg.port, "POST", "/api/v1/video/queue", QUEUE_BODY, vg.auth)
        if status != 200:
            raise RuntimeError(f"queue answered {status}: {answer[:500]!r}")
        body = {"model": QUEUE_BODY["model"], "queue_id": json.loads(answer)["queue_id"]}
        status, answer = request_once(vg.port, "POST", "/api/v1/video/retrieve", body, vg.auth)
        if status != 200 or json.loads(answer).get("status") != "PROCESSING":
            raise RuntimeError(f"retrieve answered {status}: {answer[:500]!r}")

        results: dict[str, WrkResult | LoadResult] = {}
        for name, port, path in (("bare", bare.port, "/bare"), ("vidgate", vg.port, "/api/v1/video/retrieve")):
            log(f"retrieve: warming up {name} ({warmup:.0f} s)")
            load(port, path, body, vg.auth, warmup)
            log(f"retrieve: measuring {name} ({duration:.0f} s, {connections} connections)")
            result = load(port, path, body, vg.auth, duration)
            bad = result.non_2xx + result.socket_errors if isinstance(result, WrkResult) else (
                result.errors + sum(n for s, n in result.statuses.items() if s != 200))
            if bad:
                raise RuntimeError(f"retrieve load on {name}: {bad} failed requests")
            log(f"retrieve: {name}: {result.rps:.0f} req/s, p50 {result.percentile_ms(50):.2f} ms, "
                f"p99 {result.percentile_ms(99):.2f} ms ({result.generator})")
            results[name] = result

    vid, ref = results["vidgate"], results["bare"]
    ratio = vid.rps / ref.rps
    generator = f"{vid.generator}, {connections} conns"
    return [
        row(f"retrieve_polling_rps ({generator})", vid.rps, "req/s", ref.rps, f"ratio ≥ {RETRIEVE_TARGET_RATIO}",
            ratio >= RETRIEVE_TARGET_RATIO, ratio=ratio, digits=0),
        row("retrieve_polling_p99", vid.percentile_ms(99), "ms", ref.percentile_ms(99), None, True, digits=2),
    ]


# --------------------------------------------------------------------------------------------------------------
# 2. Queue rate


def bench_queue(duration: float = 10.0, connections: int = 64, warmup: float = 2.0) -> list[dict[str, Any]]:
    """Sustained queueing from `connections` clients; then every 200 must be one stored job and vice versa."""
    with vidgate_server(workers=0) as vg, bare_server() as bare:
        ref_raw = raw_request(bare.port, "/bare", QUEUE_BODY, vg.auth)
        asyncio_load(bare.port, ref_raw, connections, warmup)
        log(f"queue: measuring the bare route ({duration:.0f} s, {connections} clients)")
        ref = asyncio_load(bare.port, ref_raw, connections, duration)
        log(f"queue: bare: {ref.rps:.0f} req/s, p99 {ref.percentile_ms(99):.2f} ms")

        raw = raw_request(vg.port, "/api/v1/video/queue", QUEUE_BODY, vg.auth)
        log(f"queue: warming up vidgate ({warmup:.0f} s)")
        warm = asyncio_load(vg.port, raw, connections, warmup, keep_bodies=True)
        log(f"queue: measuring vidgate ({duration:.0f} s, {connections} clients)")
        res = asyncio_load(vg.port, raw, connections, duration, keep_bodies=True)
        log(f"queue: vidgate: {res.rps:.0f} req/s, p50 {res.percentile_ms(50):.2f} ms, "
            f"p99 {res.percentile_ms(99):.2f} ms, statuses {dict(res.statuses)}")

        answered: set[str] = set()
        n_200 = 0
        for result in (warm, res):
            for body in result.bodies:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    answered.add(json.loads(body)["queue_id"])
            n_200 += result.statuses.get(200, 0)
        total = warm.requests + res.requests
        with contextlib.closing(sqlite3.connect(f"file:{vg.db_path}?mode=ro", uri=True, timeout=30)) as db:
            stored = {r[0] for r in db.execute("SELECT id FROM jobs")}
    all_200 = n_200 == total and not (warm.errors or res.errors)
    consistent = all_200 and len(answered) == n_200 and stored == answered
    log(f"queue: {total} requests, {n_200} answered 200, {len(answered)} distinct queue_ids, "
        f"{len(stored)} jobs stored, match: {consistent}")
    p99 = res.percentile_ms(99)
    return [
        row(f"queue_rps (asyncio, {connections} clients)", res.rps, "req/s", ref.rps, f"≥ {QUEUE_TARGET_RPS:.0f} req/s",
            res.rps >= QUEUE_TARGET_RPS, digits=0),
        row("queue_p99", p99, "ms", ref.percentile_ms(99), f"< {QUEUE_TARGET_P99_MS:.0f} ms",
            p99 < QUEUE_TARGET_P99_MS, digits=2),
        row("queue_jobs_stored (= 200 answers)", len(stored), "jobs", n_200, "equal, all 200", consistent,
            digits=0),
    ]


# --------------------------------------------------------------------------------------------------------------
# 3. Queue-to-start latency


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.002) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def bench_queue_to_start(samples: int = 30, warmup: int = 2, gap: float = 0.3,
                         workers: int = 2) -> list[dict[str, Any]]:
    """Queue one quick job at a time while every worker idles; `started_at - created_at` per job."""
    with bare_server() as bare:
        conn = http.client.HTTPConnection(HOST, bare.port, timeout=10)
        round_trips = []
        for i in range(200 + 20):
            t0 = time.perf_counter()
            status, _ = send(conn, "POST", "/bare", QUEUE_BODY)
            if i >= 20:
                round_trips.append(time.perf_counter() - t0)
            if status != 200:
                raise RuntimeError(f"bare route answered {status}")
        conn.close()
    ref_p50, ref_p99 = percentile(round_trips, 50) * 1000, percentile(round_trips, 99) * 1000
    log(f"queue_to_start: bare round trip p50 {ref_p50:.2f} ms, p99 {ref_p99:.2f} ms")

    delays: list[float] = []
    renders: list[float] = []
    with vidgate_server(workers=workers, env={"VIDGATE_X264_PRESET": "ultrafast"}) as vg:
        wake_dir = vg.data_dir / "wake"
        _wait_for(lambda: wake_dir.is_dir() and len(list(wake_dir.glob("*.sock"))) >= workers, 60,
                  f"{workers} workers to listen")
        time.sleep(0.5)  # let every worker reach its first idle wait
        conn = http.client.HTTPConnection(HOST, vg.port, timeout=30)
        with contextlib.closing(sqlite3.connect(f"file:{vg.db_path}?mode=ro", uri=True, timeout=30)) as db:
            for i in range(warmup + samples):
                status, answer = send(conn, "POST", "/api/v1/video/queue", QUICK_JOB_BODY, vg.auth)
                if status != 200:
                    raise RuntimeError(f"queue answered {status}: {answer[:500]!r}")
                queue_id = json.loads(answer)["queue_id"]
                state: dict[str, Any] = {}

                def finished(job_id: str = queue_id, state: dict[str, Any] = state) -> bool:
                    found = db.execute(
                        "SELECT status, created_at, started_at, finished_at FROM jobs WHERE id = ?", (job_id,)
                    ).fetchone()
                    state["row"] = found
                    return found is not None and found[0] in ("COMPLETED", "FAILED", "CANCELED")

                _wait_for(finished, 60, f"job {queue_id} to finish")
                job_status, created_at, started_at, finished_at = state["row"]
                if job_status != "COMPLETED":
                    raise RuntimeError(f"job {queue_id} ended {job_status}:\n{vg.server.log_tail()}")
                if i >= warmup:
                    delays.append(started_at - created_at)
                    renders.append(finished_at - started_at)
                time.sleep(gap)  # every worker back to its idle wait before the next job
        conn.close()
    p50, p99 = percentile(delays, 50) * 1000, percentile(delays, 99) * 1000
    log(f"queue_to_start: {len(delays)} jobs: p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {max(delays) * 1000:.2f} ms; "
        f"render (1 s 480p, ultrafast) p50 {percentile(renders, 50):.2f} s")
    return [
        row(f"queue_to_start_p50 ({workers} idle workers)", p50, "ms", ref_p50,
            f"< {QUEUE_TO_START_TARGET_P50_MS:.0f} ms", p50 < QUEUE_TO_START_TARGET_P50_MS, digits=2),
        row("queue_to_start_p99", p99, "ms", ref_p99, None, True, digits=2),
    ]


BENCHMARKS: list[Callable[[], list[dict[str, Any]]]] = [bench_retrieve, bench_queue, bench_queue_to_start]


def measure() -> list[dict[str, Any]]:
    """Every API benchmark's rows (same shape as render_bench.measure())."""
    rows: list[dict[str, Any]] = []
    for bench in BENCHMARKS:
        rows.extend(bench())
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description="vidgate API benchmarks")
    parser.add_argument("--only", choices=["retrieve", "queue", "queue_to_start"], action="append")
    args = parser.parse_args()
    chosen = {"retrieve": bench_retrieve, "queue": bench_queue, "queue_to_start": bench_queue_to_start}
    benches = [chosen[name] for name in args.only] if args.only else BENCHMARKS
    for bench in benches:
        for r in bench():
            print(json.dumps(r, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
