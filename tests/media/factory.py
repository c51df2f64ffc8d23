"""Build small, real media files for tests (PyAV, Pillow, numpy; no ffmpeg CLI needed).

Every maker writes to the `path` it is given and returns that path, so tests can write
`probe_video(make_mp4(tmp_path / "a.mp4", 3))`.  The API is shared by several test modules; keep it stable:

    make_png(path, w, h)                                -> Path   RGB gradient, PNG
    make_jpeg(path, w, h, quality=90)                   -> Path   RGB gradient, baseline JPEG
    make_image(path, w, h, fmt="WEBP")                  -> Path   any format Pillow can write (WEBP, BMP, TIFF, GIF)
    make_mp4(path, seconds, w=320, h=240, fps=24, audio=False, codec="libx264", faststart=False)
                                                        -> Path   H.264 (or "libx265", "mpeg4") in MP4; AAC audio
    make_mov(path, seconds, w=320, h=240, fps=24, audio=False, codec="libx264")
                                                        -> Path   same, QuickTime container
    make_webm(path, seconds, w=320, h=240, fps=24, audio=False)
                                                        -> Path   VP9 in WebM; Opus audio
    make_wav(path, seconds, sample_rate=44100, channels=1)
                                                        -> Path   16-bit PCM sine, exact length
    make_mp3(path, seconds, sample_rate=44100, channels=1)
                                                        -> Path   MP3 (libmp3lame) sine
    make_large_mp4(path, min_bytes=50 * MiB, w=1280, h=720, fps=24)
                                                        -> Path   a valid H.264 MP4 of at least `min_bytes`
                                                                  (random noise, so it does not compress)
    prepared_input(path, field, frame_index=None, element=None)
                                                        -> PreparedInput   the file as prepare_inputs hands
                                                                  it to the engines (sniffed, hashed, probed)

Frame counts are `round(seconds * fps)`, so the video stream lasts exactly that many frames.
"""

from __future__ import annotations

import hashlib
import math
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from vidgate.media.fetch import SNIFF_BYTES, sniff_mime
from vidgate.media.probe import probe_audio, probe_image, probe_video
from vidgate.media.types import PreparedInput

MiB = 1024 * 1024

__all__ = [
    "MiB",
    "make_image",
    "make_jpeg",
    "make_large_mp4",
    "make_mov",
    "make_mp3",
    "make_mp4",
    "make_png",
    "make_wav",
    "make_webm",
    "prepared_input",
]


# --- images -----------------------------------------------------------------------------------------


def _gradient(w: int, h: int) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None]
    rgb = np.empty((h, w, 3), dtype=np.uint8)
    rgb[..., 0] = x.astype(np.uint8)
    rgb[..., 1] = y.astype(np.uint8)
    rgb[..., 2] = ((x + y) / 2).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


def make_image(path: Path | str, w: int, h: int, fmt: str = "PNG", **save_options: object) -> Path:
    """A w x h RGB gradient image in any format Pillow can write ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")."""
    path = Path(path)
    img = _gradient(w, h)
    if fmt.upper() == "GIF":
        img = img.convert("P")
    img.save(path, format=fmt, **save_options)
    return path


def make_png(path: Path | str, w: int, h: int) -> Path:
    """A w x h RGB PNG."""
    return make_image(path, w, h, "PNG")


def make_jpeg(path: Path | str, w: int, h: int, quality: int = 90) -> Path:
    """A w x h baseline JPEG."""
    return make_image(path, w, h, "JPEG", quality=quality)


# --- audio ------------------------------------------------------------------------------------------


def _sine(seconds: float, sample_rate: int, channels: int, freq: float = 440.0) -> np.ndarray:
    """int16 samples, shape (channels, n)."""
    n = round(seconds * sample_rate)
    t = np.arange(n, dtype=np.float64) / sample_rate
    mono = (0.3 * 32767 * np.sin(2 * math.pi * freq * t)).astype(np.int16)
    return np.repeat(mono[None, :], channels, axis=0)


def make_wav(path: Path | str, seconds: float, sample_rate: int = 44100, channels: int = 1) -> Path:
    """A 16-bit PCM WAV sine tone lasting exactly `seconds` (to the sample)."""
    path = Path(path)
    samples = _sine(seconds, sample_rate, channels)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(samples.T.tobytes())
    return path


def _encode_audio(stream: av.AudioStream, container: av.container.OutputContainer, samples: np.ndarray) -> None:
    """Feed int16 (channels, n) samples through `stream`'s encoder in its frame size."""
    channels, total = samples.shape
    layout = "mono" if channels == 1 else "stereo"
    chunk = stream.codec_context.frame_size or 1152
    pts = 0
    for start in range(0, total, chunk):
        part = np.ascontiguousarray(samples[:, start : start + chunk].T.reshape(1, -1))
        frame = av.AudioFrame.from_ndarray(part, format="s16", layout=layout)
        frame.sample_rate = stream.codec_context.sample_rate
        frame.pts = pts
        frame.time_base = Fraction(1, frame.sample_rate)
        pts += part.shape[1] // channels
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def make_mp3(path: Path | str, seconds: float, sample_rate: int = 44100, channels: int = 1) -> Path:
    """An MP3 (libmp3lame, 128 kb/s) sine tone.  MP3 framing may add a few ms of padding."""
    path = Path(path)
    with av.open(str(path), "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=sample_rate, layout="mono" if channels == 1 else "stereo")
        stream.bit_rate = 128_000
        _encode_audio(stream, container, _sine(seconds, sample_rate, channels))
    return path


# --- video ------------------------------------------------------------------------------------------


def _pattern_frame(i: int, w: int, h: int) -> np.ndarray:
    """A cheap moving gradient (rgb24), different on every frame."""
    x = (np.arange(w, dtype=np.uint16)[None, :] + 4 * i) % 256
    y = np.arange(h, dtype=np.uint16)[:, None] % 256
    rgb = np.empty((h, w, 3), dtype=np.uint8)
    rgb[..., 0] = x
    rgb[..., 1] = y
    rgb[..., 2] = (x + y) // 2 % 256
    return rgb


def _write_video(
    path: Path,
    seconds: float,
    w: int,
    h: int,
    fps: int,
    *,
    container_format: str,
    codec: str,
    audio_codec: str | None,
    container_options: dict[str, str] | None = None,
    codec_options: dict[str, str] | None = None,
    frames: list[np.ndarray] | None = None,
) -> Path:
    n_frames = round(seconds * fps)
    with av.open(str(path), "w", format=container_format, options=container_options or {}) as container:
        video = container.add_stream(codec, rate=fps)
        video.width, video.height = w, h
        video.pix_fmt = "yuv420p"
        video.options = codec_options or {}
        audio = None
        if audio_codec is not None:
            audio = container.add_stream(audio_codec, rate=48000, layout="stereo")
        for i in range(n_frames):
            rgb = frames[i % len(frames)] if frames else _pattern_frame(i, w, h)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if audio is not None:
            _encode_audio(audio, container, _sine(seconds, 48000, 2))
    return path


_FAST_OPTIONS = {
    "libx264": {"preset": "ultrafast"},
    "libx265": {"preset": "ultrafast", "x265-params": "log-level=error"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8"},
}


def make_mp4(
    path: Path | str,
    seconds: float,
    w: int = 320,
    h: int = 240,
    fps: int = 24,
    audio: bool = False,
    codec: str = "libx264",
    faststart: bool = False,
) -> Path:
    """An MP4 of `round(seconds * fps)` frames: H.264 by default ("libx265" or "mpeg4" also work), AAC audio.

    `faststart=True` puts the moov atom before the media data (as web uploads usually have it); by default
    it comes last, so cutting the file short loses it.
    """
    return _write_video(
        Path(path),
        seconds,
        w,
        h,
        fps,
        container_format="mp4",
        codec=codec,
        audio_codec="aac" if audio else None,
        container_options={"movflags": "+faststart"} if faststart else None,
        codec_options=_FAST_OPTIONS.get(codec),
    )


def make_mov(
    path: Path | str,
    seconds: float,
    w: int = 320,
    h: int = 240,
    fps: int = 24,
    audio: bool = False,
    codec: str = "libx264",
) -> Path:
    """Like make_mp4, in a QuickTime (.mov) container."""
    return _write_video(
        Path(path),
        seconds,
        w,
        h,
        fps,
        container_format="mov",
        codec=codec,
        audio_codec="aac" if audio else None,
        codec_options=_FAST_OPTIONS.get(codec),
    )


def make_webm(
    path: Path | str,
    seconds: float,
    w: int = 320,
    h: int = 240,
    fps: int = 24,
    audio: bool = False,
) -> Path:
    """A VP9 WebM (realtime encoder settings), with Opus audio when `audio`."""
    return _write_video(
        Path(path),
        seconds,
        w,
        h,
        fps,
        container_format="webm",
        codec="libvpx-vp9",
        audio_codec="libopus" if audio else None,
        codec_options=_FAST_OPTIONS["libvpx-vp9"],
    )


def make_large_mp4(
    path: Path | str,
    min_bytes: int = 50 * MiB,
    w: int = 1280,
    h: int = 720,
    fps: int = 24,
) -> Path:
    """A valid H.264 MP4 of at least `min_bytes`: random noise encoded near-losslessly, so size ~ frame count.

    A few random frames are cycled; x264's ultrafast preset references only the previous frame, so every
    frame still costs about its raw size.  Takes a few seconds for 50 MiB.
    """
    path = Path(path)
    rng = np.random.default_rng(1234)
    pool = [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for _ in range(8)]
    # Raw yuv420p is 1.5 bytes/pixel; qp 4 keeps nearly all of the noise.  Aim at the raw size, then check.
    n_frames = math.ceil(min_bytes / (w * h * 1.5))
    while True:
        _write_video(
            path,
            n_frames / fps,
            w,
            h,
            fps,
            container_format="mp4",
            codec="libx264",
            audio_codec=None,
            codec_options={"preset": "ultrafast", "qp": "4"},
            frames=pool,
        )
        size = path.stat().st_size
        if size >= min_bytes:
            return path
        n_frames = math.ceil(n_frames * min_bytes * 1.1 / max(size, 1))


# --- engine inputs ----------------------------------------------------------------------------------------


PROBES = {"image": probe_image, "video": probe_video, "audio": probe_audio}


def prepared_input(path: Path | str, field: str, *, frame_index: int | None = None,
                   element: int | None = None) -> PreparedInput:
    """`path` as `prepare_inputs` hands it to the engines: its mime sniffed, its bytes hashed, probed."""
    path = Path(path).resolve()
    data = path.read_bytes()
    mime = sniff_mime(data[:SNIFF_BYTES]) or "application/octet-stream"
    info = PROBES[mime.split("/")[0]](path)
    return PreparedInput(field=field, path=str(path), mime=mime, sha256=hashlib.sha256(data).hexdigest(),
                         size=len(data), info=info, frame_index=frame_index, element=element)
