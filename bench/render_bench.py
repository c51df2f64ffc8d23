"""Benchmark: the procedural engine against a bare `ffmpeg` libx264 encode of `testsrc2`.

Both sides produce 10 s of 1280x720 @ 24 fps H.264 (yuv420p) with the same preset and CRF, no audio.
The ffmpeg CLI side is the floor (synthetic source, native pipeline); the target is that vidgate's
render, which also synthesises a prompt-derived picture in Python, takes at most 1.5x as long.

Run:  .venv/bin/python bench/render_bench.py
Exits 0 with a message when the ffmpeg CLI is not installed (install: apt-get install -y ffmpeg).
"""

from __future__ import annotations

import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vidgate.engines.base import RenderSpec
from vidgate.engines.procedural import render_procedural

WIDTH, HEIGHT, FPS, DURATION_S = 1280, 720, 24, 10
PRESET, CRF = "veryfast", 23
REPEATS = 3
TARGET_RATIO = 1.5
PROMPT = "A red fox leaping over a frozen river at dawn, cinematic lighting, slow camera pan"


def _cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _timed(fn: Callable[[], None], who: int) -> tuple[float, float]:
    """(wall-clock seconds, CPU seconds) of one call of `fn()`.

    CPU time is taken from getrusage for `who`: RUSAGE_SELF covers the in-process render including
    libx264's threads, RUSAGE_CHILDREN the ffmpeg subprocess once it has been waited for.  It is much
    less sensitive than wall time to other work on a shared machine.
    """
    cpu0, wall0 = _cpu_seconds(who), time.perf_counter()
    fn()
    return time.perf_counter() - wall0, _cpu_seconds(who) - cpu0


def _ffmpeg_cmd(ffmpeg: str, out: Path) -> list[str]:
    """The reference encode: same codec settings as the engine, on ffmpeg's own synthetic source."""
    return [
        ffmpeg,
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS}",
        "-t",
        str(DURATION_S),
        "-an",
        "-c:v",
        "libx264",
        "-preset",
        PRESET,
        "-crf",
        str(CRF),
        "-pix_fmt",
        "yuv420p",
        str(out),
    ]


def measure() -> list[dict[str, Any]]:
    """Run both encodes `REPEATS` times; return result rows (empty if the ffmpeg CLI is missing).

    Each row: name, value, unit, reference, ratio, target, ok.  `ratio` is value / reference and
    `ok` says whether it meets `target` (lower is better for every row here).
    """
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return []
    spec = RenderSpec(
        model="procedural",
        prompt=PROMPT,
        duration_s=DURATION_S,
        width=WIDTH,
        height=HEIGHT,
        fps=FPS,
        audio=False,
    )
    with tempfile.TemporaryDirectory(prefix="vidgate-bench-") as tmp:
        tmp_dir = Path(tmp)
        vid_out = tmp_dir / "procedural.mp4"
        ref_out = tmp_dir / "ffmpeg.mp4"
        cmd = _ffmpeg_cmd(ffmpeg, ref_out)

        def run_ffmpeg() -> None:
            subprocess.run(cmd, check=True)

        def run_vidgate() -> None:
            render_procedural(spec, vid_out, preset=PRESET, crf=CRF)

        # One untimed warm-up each: page cache, lazy imports, font loading.
        run_ffmpeg()
        run_vidgate()
        # Alternate the two so that a burst of load from elsewhere hits both sides alike.
        ref_runs, vid_runs = [], []
        for _ in range(REPEATS):
            ref_runs.append(_timed(run_ffmpeg, resource.RUSAGE_CHILDREN))
            vid_runs.append(_timed(run_vidgate, resource.RUSAGE_SELF))
        ref_s = statistics.median(wall for wall, _ in ref_runs)
        vid_s = statistics.median(wall for wall, _ in vid_runs)
        ref_cpu = statistics.median(cpu for _, cpu in ref_runs)
        vid_cpu = statistics.median(cpu for _, cpu in vid_runs)
        vid_size = vid_out.stat().st_size
        ref_size = ref_out.stat().st_size

    frames = DURATION_S * FPS
    ratio = vid_s / ref_s
    return [
        {
            "name": f"render_{WIDTH}x{HEIGHT}_{DURATION_S}s_s",
            "value": round(vid_s, 3),
            "unit": "s",
            "reference": round(ref_s, 3),
            "ratio": round(ratio, 3),
            "target": TARGET_RATIO,
            "ok": ratio <= TARGET_RATIO,
        },
        {
            "name": f"render_{WIDTH}x{HEIGHT}_{DURATION_S}s_cpu_s",
            "value": round(vid_cpu, 3),
            "unit": "cpu-s",
            "reference": round(ref_cpu, 3),
            "ratio": round(vid_cpu / ref_cpu, 3),
            "target": TARGET_RATIO,
            "ok": vid_cpu / ref_cpu <= TARGET_RATIO,
        },
        {
            "name": "render_fps",
            "value": round(frames / vid_s, 1),
            "unit": "frames/s",
            "reference": round(frames / ref_s, 1),
            "ratio": round(ref_s / vid_s, 3),
            "target": None,
            "ok": True,
        },
        {
            "name": "output_size",
            "value": vid_size,
            "unit": "bytes",
            "reference": ref_size,
            "ratio": round(vid_size / ref_size, 3),
            "target": None,
            "ok": True,
        },
    ]


def main() -> int:
    """Print the benchmark table; exit status 0 also when ffmpeg is missing (nothing to compare)."""
    if shutil.which("ffmpeg") is None:
        print("render_bench: the ffmpeg CLI is not installed; skipping (apt-get install -y ffmpeg).")
        return 0
    print(
        f"render_bench: {DURATION_S} s {WIDTH}x{HEIGHT} @ {FPS} fps, libx264 preset={PRESET} crf={CRF}, "
        f"median of {REPEATS} (reference: ffmpeg CLI on testsrc2)"
    )
    rows = measure()
    header = f"{'name':<28} {'value':>10} {'unit':<9} {'reference':>10} {'ratio':>7} {'target':>7}  ok"
    print(header)
    print("-" * len(header))
    for row in rows:
        target = "" if row["target"] is None else f"≤{row['target']}"
        print(
            f"{row['name']:<28} {row['value']:>10} {row['unit']:<9} {row['reference']:>10} "
            f"{row['ratio']:>7} {target:>7}  {'yes' if row['ok'] else 'NO'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
