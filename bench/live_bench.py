"""Live-status benchmarks (issue 13), each beside a reference in the same run:

1. `bench_sse_fanout`: 1,000 open Server-Sent Events streams (`GET /api/v1/video/events`, one account), then one
   job queued: every stream receives one event. Measured: the time from the queue answer until each stream has
   its event (p50, p99, all). Reference: a bare Starlette SSE route (`bench/bare_sse.py`) that sends one event to
   1,000 open streams when told to, served the same way.
2. `bench_status_route`: `GET /api/v1/video/jobs/{id}` (vidgate's job status, with queue position and estimate)
   against `POST /api/v1/video/retrieve` polling the same PROCESSING job: wrk, same connections, one after the
   other, alternating.

Run:  .venv/bin/python bench/live_bench.py [--streams 1000] [--duration 8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from api_bench import (  # a script beside its siblings
    BENCH_DIR,
    HOST,
    QUEUE_BODY,
    WRK_SCRIPT,
    ServerProcess,
    WrkResult,
    clean_env,
    free_port,
    request_once,
    server_process,
    vidgate_server,
)


def log(message: str) -> None:
    print(f"[live_bench] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def bare_sse_server() -> Iterator[ServerProcess]:
    with tempfile.TemporaryDirectory(prefix="vidgate-bare-sse-") as tmp:
        port = free_port()
        cmd = [sys.executable, str(BENCH_DIR / "bare_sse.py"), "--host", HOST, "--port", str(port)]
        with server_process("bare SSE server", cmd, port, clean_env(), Path(tmp), Path(tmp) / "server.log") as server:
            yield server


async def open_stream(port: int, path: str, headers: dict[str, str]) -> tuple[asyncio.StreamReader, Any]:
    reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 20)
    lines = [f"GET {path} HTTP/1.1", f"Host: {HOST}:{port}", "Accept: text/event-stream",
             *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    writer.write("\r\n".join(lines).encode())
    await writer.drain()
    status = await reader.readline()
    if b" 200 " not in status:
        raise RuntimeError(f"stream refused: {status!r}")
    while (await reader.readline()).strip():
        pass  # response headers
    return reader, writer


async def first_event_at(reader: asyncio.StreamReader) -> float:
    """When the first `event:`/`data:` block (not a comment or `retry:`) arrived."""
    while True:
        line = await reader.readline()
        if not line:
            raise RuntimeError("stream closed before an event")
        if b"data:" in line:
            return time.perf_counter()


async def fanout(port: int, path: str, headers: dict[str, str], streams: int,
                 trigger: Any) -> dict[str, float]:
    opened = await asyncio.gather(*(open_stream(port, path, headers) for _ in range(streams)))
    await asyncio.sleep(1.0)  # every stream is registered with the server's hub before the event
    waiting = [asyncio.ensure_future(first_event_at(reader)) for reader, _ in opened]
    started = time.perf_counter()
    await asyncio.get_running_loop().run_in_executor(None, trigger)
    triggered = time.perf_counter()
    arrived = await asyncio.wait_for(asyncio.gather(*waiting), 60)
    for _, writer in opened:
        writer.close()
    latencies = sorted((t - triggered) * 1000 for t in arrived)
    return {"p50_ms": statistics.median(latencies), "p99_ms": latencies[int(len(latencies) * 0.99) - 1],
            "all_ms": latencies[-1], "trigger_ms": (triggered - started) * 1000}


def bench_sse_fanout(streams: int) -> list[dict[str, Any]]:
    rows = []
    with vidgate_server() as server:
        auth = server.auth

        def queue_one() -> None:
            status, body = request_once(server.port, "POST", "/api/v1/video/queue", QUEUE_BODY, auth)
            assert status == 200, body

        vidgate = asyncio.run(fanout(server.port, "/api/v1/video/events", auth, streams, queue_one))
    with bare_sse_server() as bare:
        def fire() -> None:
            status, body = request_once(bare.port, "POST", "/fire")
            assert status == 200, body

        reference = asyncio.run(fanout(bare.port, "/stream", {}, streams, fire))
    for stat in ("p50_ms", "p99_ms", "all_ms"):
        rows.append({"name": f"sse_fanout_{streams}_{stat}", "value": round(vidgate[stat], 1),
                     "reference": round(reference[stat], 1), "ratio": round(vidgate[stat] / reference[stat], 2)})
    return rows


GET_SCRIPT = WRK_SCRIPT.replace('wrk.method = "POST"', 'wrk.method = "GET"').replace(
    "wrk.body = [==[{body}]==]", "").replace('wrk.headers["Content-Type"] = "application/json"', "")


def wrk(port: int, path: str, headers: dict[str, str], seconds: float, body: dict[str, Any] | None) -> WrkResult:
    header_lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    script_text = (WRK_SCRIPT.format(body=json.dumps(body), headers=header_lines) if body is not None
                   else GET_SCRIPT.format(headers=header_lines))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(script_text)
    try:
        out = subprocess.run([shutil.which("wrk") or "wrk", "-t1", "-c32", f"-d{round(seconds)}s", "--timeout", "10s",
                              "-s", fh.name, f"http://{HOST}:{port}{path}"],
                             capture_output=True, text=True, timeout=seconds + 60, check=False)
    finally:
        os.unlink(fh.name)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {out.stdout[-1000:]} {out.stderr[-1000:]}")
    data = json.loads(line.removeprefix("WRKJSON "))
    return WrkResult(requests=data["requests"], seconds=data["duration_us"] / 1e6, p50_ms=data["p50_us"] / 1000,
                     p99_ms=data["p99_us"] / 1000, non_2xx=data["status_errors"],
                     socket_errors=data["connect_errors"] + data["read_errors"] + data["timeouts"])


def bench_status_route(seconds: float, rounds: int = 2) -> list[dict[str, Any]]:
    with vidgate_server() as server:
        auth = server.auth
        status, body = request_once(server.port, "POST", "/api/v1/video/queue", QUEUE_BODY, auth)
        assert status == 200, body
        queue_id = json.loads(body)["queue_id"]
        ident = {"model": QUEUE_BODY["model"], "queue_id": queue_id}
        wrk(server.port, "/api/v1/video/retrieve", auth, 2, ident)  # warm-up
        status_rps, retrieve_rps = [], []
        for _ in range(rounds):
            got = wrk(server.port, f"/api/v1/video/jobs/{queue_id}", auth, seconds, None)
            assert got.non_2xx == 0, "the status route answered non-2xx"
            status_rps.append(got.rps)
            polled = wrk(server.port, "/api/v1/video/retrieve", auth, seconds, ident)
            assert polled.non_2xx == 0
            retrieve_rps.append(polled.rps)
    value, reference = statistics.median(status_rps), statistics.median(retrieve_rps)
    return [{"name": "status_route_rps (wrk, 32 conns)", "value": round(value), "reference": round(reference),
             "ratio": round(value / reference, 3)}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--only", choices=["sse", "status"])
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    if args.only in (None, "sse"):
        rows += bench_sse_fanout(args.streams)
    if args.only in (None, "status"):
        rows += bench_status_route(args.duration)
    print("| benchmark | vidgate | reference | ratio |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['name']} | {row['value']:,} | {row['reference']:,} | {row['ratio']} |")


if __name__ == "__main__":
    main()
