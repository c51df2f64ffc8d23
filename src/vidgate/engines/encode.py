"""Writing MP4s: H.264 yuv420p video at a fixed fps, an optional 48 kHz stereo AAC track, written atomically.

Every engine ends here, so every output has the same shape: exactly `frame_count` frames at `fps` (the stream
lasts exactly frames/fps), and audio of exactly the same length when there is audio. The fps is an integer, or a
Fraction for NTSC-style rates (30000/1001) such as an upscaled input keeps.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Protocol

import av
import numpy as np

AUDIO_RATE = 48_000
AUDIO_FRAME_SAMPLES = 1024  # one AAC frame
DEFAULT_X264_THREADS = 8  # fixed, not "auto": libx264's output bytes depend on its thread count
PROGRESS_EVERY_FRAMES = 12


@dataclass(frozen=True)
class EncoderSettings:
    preset: str = "veryfast"
    crf: int = 23
    threads: int = DEFAULT_X264_THREADS
    # Seedance's `bitrate_mode: "high"`: a lower CRF, so the encoder spends more bits on the same picture.
    high_bitrate: bool = False

    @property
    def effective_crf(self) -> int:
        return max(0, self.crf - 6) if self.high_bitrate else self.crf


class AudioSource(Protocol):
    """Planar float32 stereo at AUDIO_RATE, exactly `total_samples` long."""

    total_samples: int

    def samples(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop) as a (2, n) float32 array."""


def audio_frames(source: AudioSource) -> Iterator[av.AudioFrame]:
    """AAC-sized planar frames covering the source exactly."""
    for start in range(0, source.total_samples, AUDIO_FRAME_SAMPLES):
        stop = min(start + AUDIO_FRAME_SAMPLES, source.total_samples)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(source.samples(start, stop), dtype=np.float32), format="fltp", layout="stereo"
        )
        frame.sample_rate = AUDIO_RATE
        frame.pts = start
        frame.time_base = Fraction(1, AUDIO_RATE)
        yield frame


@dataclass
class BufferAudio:
    """An AudioSource over samples already in memory, trimmed or zero-padded to `total_samples`."""

    data: np.ndarray  # (2, n) float32
    total_samples: int

    def samples(self, start: int, stop: int) -> np.ndarray:
        out = np.zeros((2, stop - start), dtype=np.float32)
        have = self.data[:, start:min(stop, self.data.shape[1])]
        out[:, : have.shape[1]] = have
        return out


def decode_audio(path: Path | str, seconds: float, *, start: float = 0.0) -> np.ndarray:
    """Decode an audio (or video) file's first audio stream to 48 kHz stereo float32, `seconds` long from
    `start`, zero-padded when the file is shorter. Returns a (2, n) array."""
    want = round(seconds * AUDIO_RATE)
    skip = round(start * AUDIO_RATE)
    chunks: list[np.ndarray] = []
    got = 0
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return np.zeros((2, want), dtype=np.float32)
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE)
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray())
                got += chunks[-1].shape[1]
            if got >= skip + want:
                break
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray())
    data = np.concatenate(chunks, axis=1) if chunks else np.zeros((2, 0), dtype=np.float32)
    data = data[:, skip : skip + want]
    if data.shape[1] < want:
        data = np.pad(data, ((0, 0), (0, want - data.shape[1])))
    return data.astype(np.float32, copy=False)


def file_audio(path: Path | str, seconds: float) -> BufferAudio:
    """A soundtrack from a user's audio file (background music): trimmed or padded to `seconds`."""
    return BufferAudio(decode_audio(path, seconds), round(seconds * AUDIO_RATE))


class Mp4Writer:
    """Frames in, MP4 out. Use as a context manager; the file appears at `out_path` only when complete.

        with Mp4Writer(out, 1280, 720, 24, frame_count=240, audio=source, progress=cb) as mp4:
            for frame in frames:
                mp4.write_rgb(frame)          # or write_yuv420p(planes) / write_frame(av.VideoFrame)
    """

    def __init__(
        self, out_path: Path, width: int, height: int, fps: int | Fraction, *, frame_count: int,
        settings: EncoderSettings | None = None, audio: AudioSource | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> None:
        if width % 2 or height % 2 or width <= 0 or height <= 0:
            raise ValueError(f"yuv420p needs positive even dimensions, got {width}x{height}")
        if frame_count <= 0 or fps <= 0:
            raise ValueError("frame_count and fps must be positive")
        self.out_path = Path(out_path)
        self.width, self.height, self.fps = width, height, fps
        self.frame_count = frame_count
        self.settings = settings or EncoderSettings()
        self.audio = audio
        self.progress = progress or (lambda _f: None)
        self.tmp_path = self.out_path.with_name(f".{self.out_path.name}.{os.getpid()}.part")
        self.written = 0
        self._audio_frames: Iterator[av.AudioFrame] | None = None
        self._audio_sent = 0

    def __enter__(self) -> Mp4Writer:
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        # The temp name has no .mp4 suffix, so the format is explicit. faststart puts the moov atom first so
        # players can start before the download ends.
        self.container = av.open(str(self.tmp_path), "w", format="mp4", options={"movflags": "+faststart"})
        video = self.container.add_stream("libx264", rate=self.fps)
        video.width, video.height, video.pix_fmt = self.width, self.height, "yuv420p"
        video.codec_context.time_base = 1 / Fraction(self.fps)
        video.options = {"preset": self.settings.preset, "crf": str(self.settings.effective_crf)}
        # Frame threading (what the ffmpeg CLI uses) is much faster than PyAV's default slice threading for
        # libx264; a fixed count keeps the bytes the same on every machine.
        video.codec_context.thread_type = "FRAME"
        video.codec_context.thread_count = self.settings.threads
        self.video = video
        self.audio_stream = None
        if self.audio is not None:
            self.audio_stream = self.container.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
            self.audio_stream.codec_context.time_base = Fraction(1, AUDIO_RATE)
            self._audio_frames = audio_frames(self.audio)
        return self

    def write_frame(self, frame: av.VideoFrame) -> None:
        if self.written >= self.frame_count:
            raise ValueError(f"more than the {self.frame_count} frames announced")
        if frame.format.name != "yuv420p" or frame.width != self.width or frame.height != self.height:
            frame = frame.reformat(width=self.width, height=self.height, format="yuv420p")
        frame.pts = self.written
        frame.time_base = self.video.codec_context.time_base
        for packet in self.video.encode(frame):
            self.container.mux(packet)
        self.written += 1
        self._feed_audio(self.written * AUDIO_RATE // self.fps)
        if self.written % PROGRESS_EVERY_FRAMES == 0 and self.written < self.frame_count:
            self.progress(self.written / self.frame_count)

    def write_rgb(self, rgb: np.ndarray) -> None:
        """An (height, width, 3) uint8 RGB frame."""
        self.write_frame(av.VideoFrame.from_ndarray(rgb, format="rgb24"))

    def write_yuv420p(self, planes: np.ndarray) -> None:
        """A (height * 3 / 2, width) uint8 array: the Y plane, then U and V, as PyAV's yuv420p ndarray."""
        self.write_frame(av.VideoFrame.from_ndarray(planes, format="yuv420p"))

    def _feed_audio(self, target_samples: int) -> None:
        """Keep audio in step with video so the muxer's interleaving queue stays short."""
        if self.audio_stream is None or self._audio_frames is None:
            return
        while self._audio_sent < target_samples:
            frame = next(self._audio_frames, None)
            if frame is None:
                return
            self._audio_sent += frame.samples
            for packet in self.audio_stream.encode(frame):
                self.container.mux(packet)

    def _finish(self) -> None:
        if self.written != self.frame_count:
            raise ValueError(f"wrote {self.written} frames, {self.frame_count} were announced")
        for packet in self.video.encode(None):
            self.container.mux(packet)
        if self.audio_stream is not None and self.audio is not None:
            self._feed_audio(self.audio.total_samples)
            for packet in self.audio_stream.encode(None):
                self.container.mux(packet)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        complete = False
        try:
            if exc_type is None:
                self._finish()
                complete = True
        finally:
            self.container.close()
            if complete:
                os.replace(self.tmp_path, self.out_path)
            else:
                self.tmp_path.unlink(missing_ok=True)
        self.progress(1.0)
