"""Benchmark: gateway mode (`VIDGATE_UPSTREAMS`) against calling the upstream directly, in the same run.

1. Time-to-video: an upstream vidgate (`--workers 2`, x264 `ultrafast`, rate limits off) and a gateway vidgate
   (`--workers 2`) that routes `wan-2.5-preview-*` to it with `poll_interval_s` 0.5. The same kind of job
   (wan-2.5-preview-text-to-video, 5s, 480p, 16:9, a distinct prompt each) is queued one at a time, alternately
   on the upstream (direct) and on the gateway, and timed from the queue POST until the client holds the whole
   MP4, each side's retrieve polled every 0.1 s. One warm-up job per side, then N measured ones per side.
   Target: median(gateway) ≤ median(direct) · 1.05 + 0.5 s (one poll interval).
2. Relay memory: a minimal fake upstream (this file run with `--fake-upstream`: http.server in a subprocess;
   queue → an id, retrieve → PROCESSING once and then a pre-made file as `video/mp4` with Content-Length, sent
   with sendfile; complete → `{"success": true}`) behind a fresh gateway (`--workers 1`) per size. One 20 MB
   and one 200 MB (random bytes) video is relayed; the worker's peak RSS (`VmHWM`, reset through
   `/proc/<pid>/clear_refs` once the idle worker's RSS is steady, read after the job completed) and the API
   process's peak RSS while the client streams the video from retrieve (reset likewise just before).
   Target: each 200 MB peak within 20 MB of its 20 MB peak (memory does not grow with the video).
3. Retrieve throughput of the 200 MB video from the gateway against the same file straight from the fake
   (same client: `http.client`, 1 MiB `readinto`, nothing kept), median of 3 downloads each.

Every server is a subprocess on a free loopback port with a temporary data dir, torn down with its workers.

Run:  .venv/bin/python bench/gateway_bench.py [--jobs 10]     (or bench/run.py --only gateway)
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from api_bench import (  # noqa: E402
    HOST,
    QUEUE_BODY,
    VidgateServer,
    clean_env,
    free_port,
    percentile,
    server_process,
    vidgate_server,
)

MODEL = QUEUE_BODY["model"]
JOBS = 10
POLL_INTERVAL_S = 0.5  # the gateway's upstream polling
CLIENT_POLL_S = 0.1  # the client's retrieve polling, both sides
TTV_TARGET_SLACK = 0.05
MB = 1_000_000
SIZES_MB = (20, 200)
RSS_TARGET_MB = 20.0
DOWNLOADS = 3
CHUNK = 1 << 20
JOB_TIMEOUT_S = 120.0


def log(message: str) -> None:
    print(f"[gateway_bench] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------------------
# HTTP client helpers (http.client, so the client side costs the same against every server)


def _post(conn: http.client.HTTPConnection, path: str, body: dict[str, Any],
          headers: dict[str, str]) -> http.client.HTTPResponse:
    conn.request("POST", path, body=json.dumps(body).encode(),
                 headers={"Content-Type": "application/json", **headers})
    return conn.getresponse()


def queue(port: int, headers: dict[str, str], body: dict[str, Any]) -> str:
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    try:
        response = _post(conn, "/api/v1/video/queue", body, headers)
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"queue on :{port} answered {response.status}: {data[:500]!r}")
        return json.loads(data)["queue_id"]
    finally:
        conn.close()


def time_to_video(port: int, headers: dict[str, str], body: dict[str, Any]) -> tuple[float, int]:
    """Seconds from the queue POST until the whole MP4 is read from retrieve (polled every 0.1 s), and its size."""
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    try:
        start = time.perf_counter()
        response = _post(conn, "/api/v1/video/queue", body, headers)
        answer = response.read()
        if response.status != 200:
            raise RuntimeError(f"queue on :{port} answered {response.status}: {answer[:500]!r}")
        ask = {"model": body["model"], "queue_id": json.loads(answer)["queue_id"]}
        while True:
            response = _post(conn, "/api/v1/video/retrieve", ask, headers)
            data = response.read()
            if response.getheader("Content-Type", "").startswith("video/mp4"):
                elapsed = time.perf_counter() - start
                if data[4:8] != b"ftyp":
                    raise RuntimeError(f"retrieve on :{port} answered video/mp4 that is not an MP4")
                return elapsed, len(data)
            if response.status != 200 or json.loads(data).get("status") != "PROCESSING":
                raise RuntimeError(f"retrieve on :{port} answered {response.status}: {data[:500]!r}")
            if time.perf_counter() - start > JOB_TIMEOUT_S:
                raise RuntimeError(f"no video from :{port} after {JOB_TIMEOUT_S:.0f} s")
            time.sleep(CLIENT_POLL_S)
    finally:
        conn.close()


def wait_until_video(port: int, headers: dict[str, str], queue_id: str, timeout: float = JOB_TIMEOUT_S) -> None:
    """Poll retrieve until it answers video/mp4, without reading the video (the connection is dropped)."""
    deadline = time.monotonic() + timeout
    while True:
        conn = http.client.HTTPConnection(HOST, port, timeout=60)
        try:
            response = _post(conn, "/api/v1/video/retrieve", {"model": MODEL, "queue_id": queue_id}, headers)
            if response.getheader("Content-Type", "").startswith("video/mp4"):
                return
            data = response.read()
            if response.status != 200 or json.loads(data).get("status") != "PROCESSING":
                raise RuntimeError(f"retrieve on :{port} answered {response.status}: {data[:500]!r}")
        finally:
            conn.close()
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {queue_id} not done after {timeout:.0f} s")
        time.sleep(CLIENT_POLL_S)


def download(port: int, headers: dict[str, str], queue_id: str) -> tuple[int, float]:
    """Stream retrieve's MP4 into a reused buffer (to /dev/null, in effect); (bytes, seconds)."""
    buf = memoryview(bytearray(CHUNK))
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    try:
        start = time.perf_counter()
        response = _post(conn, "/api/v1/video/retrieve", {"model": MODEL, "queue_id": queue_id}, headers)
        if response.status != 200 or not response.getheader("Content-Type", "").startswith("video/mp4"):
            raise RuntimeError(f"retrieve on :{port} answered {response.status}: {response.read()[:500]!r}")
        total = 0
        while n := response.readinto(buf):
            total += n
        return total, time.perf_counter() - start
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------------------------
# /proc


def proc_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def peak_mb(pid: int) -> float:
    return proc_kb(pid, "VmHWM") * 1024 / MB


def reset_peak(pid: int) -> bool:
    """Set the process's VmHWM to its current RSS (Linux clear_refs 5)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout
    return [int(p) for p in out.split()]


def wait_steady_rss(pid: int, timeout: float = 30.0) -> int:
    """Wait until the (starting) process's RSS stops moving; its RSS in kB."""
    deadline = time.monotonic() + timeout
    last = proc_kb(pid, "VmRSS")
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = proc_kb(pid, "VmRSS")
        if abs(now - last) < 256:
            return now
        last = now
    return last


# --------------------------------------------------------------------------------------------------------------
# The fake upstream (this file with --fake-upstream)


def run_fake_upstream(port: int, files: Path) -> None:
    lock = threading.Lock()
    seen: set[str] = set()
    counter = [0]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def reply_json(self, payload: dict[str, Any], status: int = 200) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self.reply_json({"status": "ok"})
            else:
                self.reply_json({"error": "not found"}, 404)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            route = self.path.removeprefix("/api/v1")
            if route == "/video/quote":
                self.reply_json({"quote": 0.1})
            elif route == "/video/queue":
                with lock:
                    counter[0] += 1
                    queue_id = f"{str(body.get('prompt', '')).split()[-1]}.{counter[0]}"
                self.reply_json({"model": body.get("model"), "queue_id": queue_id})
            elif route == "/video/retrieve":
                queue_id = str(body.get("queue_id", ""))
                with lock:
                    first = queue_id not in seen
                    seen.add(queue_id)
                path = files / queue_id.rsplit(".", 1)[0]
                if not path.is_file():
                    self.reply_json({"error": "Media could not be found."}, 404)
                elif first:
                    self.reply_json({"status": "PROCESSING", "average_execution_time": 1000,
                                     "execution_duration": 10})
                else:
                    self.send_file(path)
            elif route == "/video/complete":
                self.reply_json({"success": True})
            else:
                self.reply_json({"error": "not found"}, 404)

        def send_file(self, path: Path) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(path.stat().st_size))
            self.end_headers()
            try:
                with path.open("rb") as f:
                    self.connection.sendfile(f)
            except (BrokenPipeError, ConnectionResetError):  # a poll that only wanted the headers
                self.close_connection = True

    server = ThreadingHTTPServer((HOST, port), Handler)
    server.daemon_threads = True
    server.serve_forever()


@contextlib.contextmanager
def fake_upstream(files: Path, tmp: Path) -> Iterator[int]:
    port = free_port()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--fake-upstream", str(port), "--files", str(files)]
    with server_process("fake upstream", cmd, port, clean_env(), tmp, tmp / "fake.log"):
        yield port


def make_file(path: Path, size: int) -> None:
    with path.open("wb") as out:
        left = size
        while left > 0:
            n = min(left, 8 * MB)
            out.write(os.urandom(n))
            left -= n


def upstreams_env(name: str, base_url: str, key_env: str, key: str, poll_s: float) -> dict[str, str]:
    config = {name: {"base_url": f"{base_url}/api/v1", "api_key_env": key_env, "models": ["wan-2.5-preview-*"],
                     "poll_interval_s": poll_s}}
    return {"VIDGATE_UPSTREAMS": json.dumps(config), key_env: key, "VIDGATE_X264_PRESET": "ultrafast"}


# --------------------------------------------------------------------------------------------------------------
# 1. Time-to-video


def bench_time_to_video(jobs: int = JOBS) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    times: dict[str, list[float]] = {"direct": [], "gateway": []}
    sizes: list[int] = []
    with vidgate_server(workers=2, env={"VIDGATE_X264_PRESET": "ultrafast"}) as upstream, \
            vidgate_server(workers=2, env=upstreams_env("up", upstream.server.url, "UP_KEY", upstream.key,
                                                        POLL_INTERVAL_S)) as gateway:
        sides: list[tuple[str, VidgateServer]] = [("direct", upstream), ("gateway", gateway)]
        time.sleep(1.0)  # the workers are up and idle
        for i in range(jobs + 1):  # job 0 of each side is a warm-up
            for name, server in sides:  # alternating, so drift hits both sides alike
                body = {**QUEUE_BODY, "prompt": f"a lighthouse on a cliff at dusk, waves, gulls, take {i} {name}"}
                seconds, size = time_to_video(server.port, server.auth, body)
                if i:
                    times[name].append(seconds)
                    sizes.append(size)
                time.sleep(0.2)
    direct, gw = times["direct"], times["gateway"]
    d50, g50 = statistics.median(direct), statistics.median(gw)
    d90, g90 = percentile(direct, 90), percentile(gw, 90)
    allowed = d50 * (1 + TTV_TARGET_SLACK) + POLL_INTERVAL_S
    paired = statistics.median(g - d for g, d in zip(gw, direct, strict=True))
    log(f"time-to-video direct {[round(t, 2) for t in direct]}")
    log(f"time-to-video gateway {[round(t, 2) for t in gw]}")
    log(f"p50 direct {d50:.3f} s, gateway {g50:.3f} s (allowed {allowed:.3f}); p90 {d90:.3f} / {g90:.3f} s; "
        f"median paired overhead {paired:.3f} s; MP4 sizes {min(sizes)}-{max(sizes)} bytes")
    rows = [
        {"name": f"gateway_time_to_video_p50 ({jobs} jobs, 5s 480p, poll {POLL_INTERVAL_S:g} s)",
         "value": round(g50, 3), "unit": "s", "reference": round(d50, 3),
         "ratio": round(g50 / d50, 3), "target": "≤ direct + 0.5 s + 5 %", "ok": g50 <= allowed},
        {"name": "gateway_time_to_video_p90", "value": round(g90, 3), "unit": "s", "reference": round(d90, 3),
         "ratio": round(g90 / d90, 3), "target": "", "ok": True},
        {"name": "gateway_overhead_p50 (gateway − direct)", "value": round(g50 - d50, 3), "unit": "s",
         "reference": round(allowed - d50, 3), "ratio": None, "target": "≤ reference", "ok": g50 <= allowed},
    ]
    return rows, {"direct": direct, "gateway": gw, "paired_overhead_s": paired, "allowed_s": allowed}


# --------------------------------------------------------------------------------------------------------------
# 2 and 3. Relaying big videos


def relay_once(fake_port: int, name: str, size: int, downloads: int) -> dict[str, Any]:
    """A fresh gateway (1 worker) in front of the fake; relay one video; peaks and download times."""
    env = upstreams_env("fake", f"http://{HOST}:{fake_port}", "FAKE_KEY", "fake", 0.2)
    with vidgate_server(workers=1, env=env) as gateway:
        serve_pid = gateway.server.proc.pid
        deadline = time.monotonic() + 30
        while not (workers := children(serve_pid)):
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway's worker did not start")
            time.sleep(0.1)
        if len(workers) != 1:
            raise RuntimeError(f"expected one worker under pid {serve_pid}, found {workers}")
        worker = workers[0]
        worker_idle_mb = wait_steady_rss(worker) * 1024 / MB
        reset = reset_peak(worker)
        queue_id = queue(gateway.port, gateway.auth, {**QUEUE_BODY, "prompt": f"relay {name}"})
        wait_until_video(gateway.port, gateway.auth, queue_id)
        worker_peak = peak_mb(worker)
        api_idle_mb = proc_kb(serve_pid, "VmRSS") * 1024 / MB
        reset_peak(serve_pid)
        times = []
        for _ in range(downloads):
            got, seconds = download(gateway.port, gateway.auth, queue_id)
            if got != size:
                raise RuntimeError(f"gateway retrieve gave {got} bytes, expected {size}")
            times.append(seconds)
        api_peak = peak_mb(serve_pid)
    result = {"worker_idle_mb": worker_idle_mb, "worker_peak_mb": worker_peak, "api_idle_mb": api_idle_mb,
              "api_peak_mb": api_peak, "reset": reset, "gateway_s": statistics.median(times)}
    log(f"relay {size / MB:.0f} MB: worker idle {worker_idle_mb:.1f} MB peak {worker_peak:.1f} MB; "
        f"API idle {api_idle_mb:.1f} MB peak {api_peak:.1f} MB; gateway downloads {[round(t, 3) for t in times]} s")
    return result


def bench_relay(downloads: int = DOWNLOADS) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    results: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="vidgate-gatewaybench-") as tmp:
        tmp_dir = Path(tmp)
        files = tmp_dir / "files"
        files.mkdir()
        for mb in SIZES_MB:
            make_file(files / f"video-{mb}", mb * MB)
        with fake_upstream(files, tmp_dir) as fake_port:
            for mb in SIZES_MB:
                results[mb] = relay_once(fake_port, f"video-{mb}", mb * MB, downloads)
            big = max(SIZES_MB)
            direct_times = []
            fake_auth = {"Authorization": "Bearer fake"}
            for _ in range(downloads):
                queue_id = queue(fake_port, fake_auth, {**QUEUE_BODY, "prompt": f"direct video-{big}"})
                conn = http.client.HTTPConnection(HOST, fake_port, timeout=60)
                with contextlib.closing(conn):
                    _post(conn, "/api/v1/video/retrieve", {"model": MODEL, "queue_id": queue_id}, fake_auth).read()
                got, seconds = download(fake_port, fake_auth, queue_id)
                if got != big * MB:
                    raise RuntimeError(f"fake retrieve gave {got} bytes")
                direct_times.append(seconds)
    small, large = results[min(SIZES_MB)], results[max(SIZES_MB)]
    gw_mbps = big / large["gateway_s"]
    fake_mbps = big / statistics.median(direct_times)
    log(f"200 MB download: gateway {gw_mbps:.0f} MB/s, fake direct {fake_mbps:.0f} MB/s "
        f"(times {[round(t, 3) for t in direct_times]} s)")
    if not (small["reset"] and large["reset"]):
        log("could not reset VmHWM through clear_refs: the worker peaks include its start-up")
    rows = []
    for who, key in (("worker", "worker_peak_mb"), ("API (client download)", "api_peak_mb")):
        value, reference = large[key], small[key]
        rows.append({"name": f"gateway_relay_{big}mb_peak_rss_{who}", "value": round(value, 1), "unit": "MB",
                     "reference": round(reference, 1), "ratio": round(value / reference, 3),
                     "target": f"≤ {min(SIZES_MB)} MB video's + {RSS_TARGET_MB:g} MB",
                     "ok": value <= reference + RSS_TARGET_MB})
    rows.append({"name": f"gateway_retrieve_{big}mb_throughput", "value": round(gw_mbps, 1), "unit": "MB/s",
                 "reference": round(fake_mbps, 1), "ratio": round(gw_mbps / fake_mbps, 3), "target": "",
                 "ok": True})
    return rows, {"results": results, "fake_mbps": fake_mbps, "gateway_mbps": gw_mbps}


def measure(jobs: int = JOBS) -> list[dict[str, Any]]:
    rows, _ = bench_time_to_video(jobs)
    relay_rows, _ = bench_relay()
    return rows + relay_rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=JOBS, help=f"measured jobs per side (default {JOBS})")
    parser.add_argument("--fake-upstream", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--files", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fake_upstream:
        run_fake_upstream(args.fake_upstream, args.files)
        return 0
    started = time.monotonic()
    rows = measure(args.jobs)
    from run import print_table

    print_table(rows)
    for r in rows:
        print(json.dumps(r, ensure_ascii=False))
    log(f"took {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
