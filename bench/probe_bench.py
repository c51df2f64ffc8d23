"""Benchmark: `probe_video` on a ≥50 MB MP4: time, bytes read and peak memory, none of them growing with the file.

The input is a valid H.264 MP4 of random noise (so it cannot compress below 50 MiB), generated once with
`tests/media/factory.make_large_mp4` and cached in /tmp.  Rows:

- probe_video_50mb_ms:   median wall time of 5 probes (after one warm-up); reference: the `ffprobe` CLI
                         (`-show_format -show_streams`, process start included) when it is installed.
                         Target: well under 1 s.
- probe_video_50mb_read: bytes the process read during one probe (Linux `/proc/self/io` rchar); reference:
                         the file size.  Target: under 20% of it (FFmpeg's stream-info probe reads ~5 MB).
- probe_video_50mb_peak_rss: peak RSS of a fresh process during one probe, over its RSS just before (Linux
                         VmHWM after a clear_refs reset; imports excluded); reference: the file size.
                         Target: under 50% of it.

Run:  .venv/bin/python bench/probe_bench.py
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.media.factory import MiB, make_large_mp4  # noqa: E402

from vidgate.media.probe import probe_video  # noqa: E402

MIN_BYTES = 50 * MiB
CACHE = Path("/tmp/vidgate-probe-bench-50mb.mp4")
REPEATS = 5
TARGET_S = 1.0
TARGET_READ_FRACTION = 0.2
TARGET_RSS_FRACTION = 0.5

# Run in a fresh interpreter, after the imports: Linux's VmHWM (peak RSS) is reset through
# /proc/self/clear_refs, so the peak seen is the probe's own, measured from the RSS just before it.
_RSS_CHILD = """
import sys
import av, numpy, PIL  # imports are not the probe's cost
from vidgate.media.probe import probe_video

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))

with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS")
probe_video(sys.argv[1])
print(status("VmHWM") - before)
"""


def big_mp4() -> Path:
    """The cached ≥50 MiB test file, made on first use (a few seconds)."""
    if not CACHE.exists() or CACHE.stat().st_size < MIN_BYTES:
        tmp = CACHE.with_suffix(".tmp.mp4")
        make_large_mp4(tmp, min_bytes=MIN_BYTES)
        tmp.replace(CACHE)
    return CACHE


def _median_s(fn: Callable[[], Any], repeats: int = REPEATS) -> float:
    fn()  # warm-up: page cache, lazy imports, codec tables
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def _rchar() -> int | None:
    try:
        with open("/proc/self/io") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))
    except (OSError, StopIteration):
        return None


def _bytes_read_by_probe(path: Path) -> int | None:
    before = _rchar()
    probe_video(path)
    after = _rchar()
    return None if before is None or after is None else after - before


def _peak_rss_increase(path: Path) -> int | None:
    if not Path("/proc/self/clear_refs").exists():
        return None
    out = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, str(path)], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return int(out.stdout.strip().splitlines()[-1])


def measure() -> list[dict[str, Any]]:
    """Rows: name, value, unit, reference, ratio, target, ok (same shape as render_bench's)."""
    path = big_mp4()
    size = path.stat().st_size
    probe_s = _median_s(lambda: probe_video(path))
    ffprobe = shutil.which("ffprobe")
    ref_s = None
    if ffprobe is not None:
        cmd = [ffprobe, "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)]
        ref_s = _median_s(lambda: subprocess.run(cmd, check=True, capture_output=True))
    read = _bytes_read_by_probe(path)
    rss = _peak_rss_increase(path)
    rows = [
        {
            "name": "probe_video_50mb_ms",
            "value": round(probe_s * 1000, 1),
            "unit": "ms",
            "reference": None if ref_s is None else round(ref_s * 1000, 1),
            "ratio": None if ref_s is None else round(probe_s / ref_s, 3),
            "target": f"< {TARGET_S * 1000:.0f} ms",
            "ok": probe_s < TARGET_S,
        },
        {
            "name": "probe_video_50mb_read",
            "value": read,
            "unit": "bytes",
            "reference": size,
            "ratio": None if read is None else round(read / size, 3),
            "target": f"< {TARGET_READ_FRACTION:.0%} of the file",
            "ok": read is None or read < size * TARGET_READ_FRACTION,
        },
        {
            "name": "probe_video_50mb_peak_rss",
            "value": rss,
            "unit": "bytes",
            "reference": size,
            "ratio": None if rss is None else round(rss / size, 3),
            "target": f"< {TARGET_RSS_FRACTION:.0%} of the file",
            "ok": rss is None or rss < size * TARGET_RSS_FRACTION,
        },
    ]
    return rows


def main() -> int:
    path = big_mp4()
    print(
        f"probe_bench: probe_video on {path} ({path.stat().st_size / MiB:.1f} MiB, "
        f"{os.cpu_count()} cores), median of {REPEATS} (reference: ffprobe CLI / file size)"
    )
    rows = measure()
    header = f"{'name':<28} {'value':>12} {'unit':<6} {'reference':>12} {'ratio':>7} {'target':<20}  ok"
    print(header)
    print("-" * len(header))
    for row in rows:
        value = "n/a" if row["value"] is None else row["value"]
        reference = "n/a" if row["reference"] is None else row["reference"]
        ratio = "" if row["ratio"] is None else row["ratio"]
        print(
            f"{row['name']:<28} {value:>12} {row['unit']:<6} {reference:>12} {ratio:>7} {row['target']:<20}  "
            f"{'yes' if row['ok'] else 'NO'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
