"""Profile the API server under a benchmark's load with py-spy (`.venv/bin/pip install py-spy`).

Starts `vidgate serve --no-workers` like api_bench does, applies the retrieve or queue load, and samples the
server process with `py-spy record --format raw` (all threads, idle frames left out). Prints where the
samples went: the hottest functions by self time and by inclusive time, per thread kind (event loop thread
vs aiosqlite's connection threads). The raw collapsed stacks are kept for flame graphs.

Run:  .venv/bin/python bench/profile_api.py retrieve  [--seconds 10] [--out /tmp/retrieve.folded]
      .venv/bin/python bench/profile_api.py queue
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import api_bench  # noqa: E402


def py_spy() -> str:
    exe = api_bench.ROOT / ".venv" / "bin" / "py-spy"
    found = str(exe) if exe.exists() else shutil.which("py-spy")
    if not found:
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    return found


def frame_name(frame: str) -> str:
    """`func (path/to/module.py:123)` -> `func (module.py)`; keeps names short and merges line numbers."""
    func, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    if "site-packages" in parts:
        short = "/".join(parts[parts.index("site-packages") + 1:])
    elif "src" in parts:
        short = "/".join(parts[parts.index("src") + 1:])
    else:
        short = Path(path).name
    return f"{func} ({short})"


def summarize(folded: Path, top: int) -> None:
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    per_thread: Counter[str] = Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0]
        frames = [frame_name(f) for f in frames[1:]] or ["(no python frames)"]
        kind = "event loop" if any("uvicorn" in f or "asyncio" in f or "uvloop" in f for f in frames[:3]) else (
            "aiosqlite thread" if any("aiosqlite" in f for f in frames) else thread)
        per_thread[kind] += count
        total += count
        self_time[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    print(f"\n{total} samples (active, all threads)")
    print("\nsamples per thread kind:")
    for kind, n in per_thread.most_common():
        print(f"  {100 * n / total:5.1f}%  {kind}")
    print(f"\ntop {top} by self time:")
    for name, n in self_time.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {name}")
    print(f"\ntop {top} by inclusive time:")
    for name, n in inclusive.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("load", choices=["retrieve", "queue"])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=None, help="default: 32 retrieve, 64 queue")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--out", type=Path, default=None, help="keep the collapsed stacks here")
    parser.add_argument("--gil", action="store_true", help="only samples holding the GIL (where CPU goes)")
    args = parser.parse_args()
    connections = args.connections or (32 if args.load == "retrieve" else 64)
    out = args.out or Path(f"/tmp/vidgate-{args.load}.folded")

    with api_bench.vidgate_server(workers=0) as vg:
        if args.load == "retrieve":
            status, answer = api_bench.request_once(vg.port, "POST", "/api/v1/video/queue", api_bench.QUEUE_BODY,
                                                    vg.auth)
            assert status == 200, answer
            body = {"model": api_bench.QUEUE_BODY["model"], "queue_id": json.loads(answer)["queue_id"]}
            path = "/api/v1/video/retrieve"
        else:
            body, path = api_bench.QUEUE_BODY, "/api/v1/video/queue"
        raw = api_bench.raw_request(vg.port, path, body, vg.auth)
        api_bench.asyncio_load(vg.port, raw, connections, 2.0)  # warm-up
        spy = subprocess.Popen([py_spy(), "record", "--pid", str(vg.server.proc.pid), "--format", "raw",
                                "--threads", "--nonblocking", "--rate", str(args.rate),
                                "--duration", str(int(args.seconds)), "--output", str(out),
                                *(["--gil"] if args.gil else [])],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        result: dict[str, api_bench.LoadResult] = {}
        loader = threading.Thread(target=lambda: result.setdefault(
            "r", api_bench.asyncio_load(vg.port, raw, connections, args.seconds)))
        loader.start()
        loader.join()
        _, err = spy.communicate(timeout=60)
        if spy.returncode != 0:
            print(err.decode(errors="replace"), file=sys.stderr)
    r = result["r"]
    print(f"{args.load}: {r.rps:.0f} req/s under the profiler, p99 {r.percentile_ms(99):.1f} ms "
          f"(statuses {dict(r.statuses)}); stacks in {out}")
    summarize(out, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
