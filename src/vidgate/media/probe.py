"""Read what an input file really is: image size and format (Pillow), video/audio streams (PyAV).

Probing costs little and does not grow with the file: headers, the container index, and the first
frame are read; the media data itself is not.  Anything that cannot be read, or opens but cannot be
decoded, raises `MediaProbeError` with a reason a person can act on.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import av
from PIL import Image

from vidgate.media.types import AudioInfo, ImageInfo, VideoInfo

# Decompression-bomb guard: refuse images over this many pixels before decoding any of them.
MAX_IMAGE_PIXELS = 100_000_000
# Formats other than JPEG cannot be decoded at reduced size, so a full decode check is only done up to this
# size (64 MB as RGBA); larger ones get Pillow's structural verify() only.
FULL_DECODE_MAX_PIXELS = 16_000_000
# JPEG is decoded at 1/8 scale (libjpeg's DCT scaling): all entropy-coded data is still read, so truncation
# and corruption show up, for a 64th of the memory.
JPEG_DRAFT_SCALE = 8

# Demuxers that FFmpeg uses for still images; a "video" in one of these is a picture with a new name.
_IMAGE_DEMUXERS = {"image2", "apng"}


class MediaProbeError(Exception):
    """An input file that is not a readable image, video or audio file; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- images -----------------------------------------------------------------------------------------


def _register_heif() -> None:
    """Pillow reads HEIC/HEIF only with the pillow-heif plugin; use it when it is installed."""
    try:
        from pillow_heif import register_heif_opener  # type: ignore[import-not-found]
    except ImportError:
        return
    register_heif_opener()


_register_heif()


def _check_image(path: Path) -> tuple[str, int, int]:
    """(format, width, height), after the pixel limit, a structural verify and a (reduced) decode."""
    with Image.open(path) as img:  # reads the header only
        fmt = img.format or "UNKNOWN"
        width, height = img.size
        if width <= 0 or height <= 0:
            raise MediaProbeError(f"image has no pixels ({width}x{height})")
        if width * height > MAX_IMAGE_PIXELS:
            raise MediaProbeError(
                f"image is {width}x{height} ({width * height / 1e6:.0f} megapixels), "
                f"the limit is {MAX_IMAGE_PIXELS // 1_000_000} megapixels"
            )
        img.verify()  # structure and checksums (PNG: every chunk's CRC up to IEND), no pixel decoding
    with Image.open(path) as img:  # verify() leaves the image unusable: open again to decode
        if fmt in ("JPEG", "MPO"):
            img.draft("RGB", (max(1, width // JPEG_DRAFT_SCALE), max(1, height // JPEG_DRAFT_SCALE)))
            img.load()
        elif width * height <= FULL_DECODE_MAX_PIXELS:
            img.load()
    return fmt, width, height


def probe_image(path: Path | str) -> ImageInfo:
    """Format and size of an image, after checking that it decodes.

    Raises MediaProbeError for unreadable, truncated or corrupt images and for images over
    MAX_IMAGE_PIXELS (checked from the header, before anything is decoded).
    """
    path = Path(path)
    try:
        # We refuse large images ourselves, from the header; Pillow's warning for images between its own
        # threshold (89.5 MP) and ours would only be noise.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            fmt, width, height = _check_image(path)
    except MediaProbeError:
        raise
    except Image.DecompressionBombError as exc:
        raise MediaProbeError(f"image is too large to decode safely ({exc})") from None
    except FileNotFoundError:
        raise MediaProbeError("file not found") from None
    except Image.UnidentifiedImageError:
        raise MediaProbeError("not a readable image (unrecognised format)") from None
    except Exception as exc:  # Pillow's plugins raise OSError, SyntaxError, ValueError, EOFError, zlib.error, ...
        raise MediaProbeError(f"not a readable image ({_short(exc)})") from None
    return ImageInfo(format=fmt, width=width, height=height)


# --- video and audio --------------------------------------------------------------------------------


def _short(exc: BaseException) -> str:
    """An exception's message without FFmpeg's trailing file name."""
    text = str(getattr(exc, "strerror", None) or exc).strip()
    return text.rstrip(".") or type(exc).__name__


def _sniff(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(16)
    except OSError:
        return b""


def _open_failure(path: Path, what: str, a_what: str) -> MediaProbeError:
    """Why FFmpeg could not open the file, in words: look at the first bytes for the usual cases."""
    head = _sniff(path)
    if not path.exists():
        return MediaProbeError("file not found")
    if not head:
        return MediaProbeError(f"not a readable {what} (the file is empty)")
    if head[4:8] == b"ftyp":
        return MediaProbeError(f"not a readable {what} (moov atom missing or corrupt)")
    image = _image_kind(head)
    if image:
        return MediaProbeError(f"not {a_what}: the file is a {image} image")
    return MediaProbeError(f"not a readable {what} (unrecognised or corrupt data)")


def _image_kind(head: bytes) -> str | None:
    if head.startswith(b"\x89PNG"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head.startswith(b"BM"):
        return "BMP"
    return None


def _open(path: Path, what: str, a_what: str) -> av.container.InputContainer:
    """Open with FFmpeg (headers and stream info only); refuse still images and files without streams."""
    try:
        container = av.open(str(path), mode="r", metadata_errors="ignore")
    except (av.FFmpegError, OSError, ValueError):
        raise _open_failure(path, what, a_what) from None
    fmt = container.format.name
    if fmt.endswith("_pipe") or fmt in _IMAGE_DEMUXERS:
        container.close()
        kind = _image_kind(_sniff(path)) or fmt.removesuffix("_pipe").upper()
        raise MediaProbeError(f"not {a_what}: the file is a {kind} image")
    if not container.streams:
        container.close()
        raise _open_failure(path, what, a_what)
    return container


def _codec_name(stream: av.stream.Stream) -> str:
    """FFmpeg's codec name ("h264", "mp3"), not the decoder's ("mp3float", "libdav1d")."""
    ctx = stream.codec_context
    if ctx is None or ctx.codec is None:
        raise MediaProbeError(f"unsupported codec in the {stream.type} stream (no decoder for it)")
    return ctx.codec.canonical_name


def _rate(stream: av.video.stream.VideoStream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return 0.0


def _duration(path: Path, container: av.container.InputContainer, stream: av.stream.Stream) -> float:
    """Seconds: the stream's own duration, else the container's, else the last packet's end.

    The last case (raw streams, some live recordings have no duration in any header) walks the packets
    without decoding them, in a second handle on the file, so `container` stays at the start for decoding.
    Packets without timestamps (raw H.264) count as one frame each at the stream's frame rate.
    """
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    end = None
    untimed = 0
    try:
        with av.open(str(path), mode="r", metadata_errors="ignore") as walker:
            for packet in walker.demux(walker.streams[stream.index]):
                if packet.size and packet.pts is None:
                    untimed += 1
                elif packet.pts is not None:
                    packet_end = packet.pts + (packet.duration or 0)
                    end = packet_end if end is None else max(end, packet_end)
    except av.FFmpegError as exc:
        raise MediaProbeError(f"not a readable file (reading packets failed: {_short(exc)})") from None
    if end is not None and stream.time_base:
        return float((end - (stream.start_time or 0)) * stream.time_base)
    rate = _rate(stream) if stream.type == "video" else 0.0
    return untimed / rate if rate else 0.0


def _decode_first_frame(container: av.container.InputContainer, stream: av.stream.Stream, what: str) -> None:
    """Decode one frame: proves the codec data is usable, for the cost of a single frame."""
    stream.codec_context.thread_count = 1  # frame threading would make the decoder wait for several packets
    try:
        for _ in container.decode(stream):
            return
    except (av.FFmpegError, ValueError) as exc:
        raise MediaProbeError(f"the {what} opens but cannot be decoded ({_short(exc)})") from None
    raise MediaProbeError(f"the {what} opens but has no decodable frames")


def _check_complete(path: Path, container: av.container.InputContainer, streams: list[av.stream.Stream]) -> None:
    """MP4/MOV: the index says where every sample lives; read each stream's last sample to see it is there.

    A cut-short upload whose moov atom comes first opens fine and even decodes its first frame; only the
    tail shows the loss.  One seek and one packet per stream, whatever the file size.
    """
    if "mp4" not in container.format.name:
        return
    size = path.stat().st_size
    for stream in streams:
        if not stream.duration:
            continue
        try:
            container.seek((stream.start_time or 0) + stream.duration, stream=stream, any_frame=True, backward=True)
            packet = next(container.demux(stream), None)
        except av.FFmpegError:
            packet = None
        intact = (
            packet is not None
            and packet.size > 0
            and not packet.is_corrupt
            and (packet.pos is None or packet.pos < 0 or packet.pos + packet.size <= size)
        )
        if not intact:
            raise MediaProbeError("the file is truncated: its index points past the end of the data")


def probe_video(path: Path | str) -> VideoInfo:
    """Container, codecs, size, fps, duration and frame count of a video file.

    Raises MediaProbeError when the file is not a video, cannot be opened (missing or corrupt moov atom,
    garbage), is cut short, or its first video frame does not decode.
    """
    path = Path(path)
    container = _open(path, "video", "a video")
    with container:
        video = next((s for s in container.streams if s.type == "video"), None)
        if video is None:
            raise MediaProbeError("not a video: the file has no video stream")
        audio = next((s for s in container.streams if s.type == "audio"), None)
        ctx = video.codec_context
        if not ctx.width or not ctx.height:
            raise MediaProbeError("not a readable video (the video stream has no frame size)")
        info = VideoInfo(
            container=container.format.name,
            video_codec=_codec_name(video),
            width=ctx.width,
            height=ctx.height,
            fps=_rate(video),
            duration=_duration(path, container, video),
            frames=video.frames or None,
            audio_codec=_codec_name(audio) if audio is not None else None,
        )
        _decode_first_frame(container, video, "video")
        _check_complete(path, container, [s for s in (video, audio) if s is not None])
    return info


def probe_audio(path: Path | str) -> AudioInfo:
    """Container, codec, duration, sample rate and channels of the first audio stream.

    Raises MediaProbeError when the file has no audio stream, cannot be opened or does not decode.
    """
    path = Path(path)
    container = _open(path, "audio file", "an audio file")
    with container:
        audio = next((s for s in container.streams if s.type == "audio"), None)
        if audio is None:
            raise MediaProbeError("not an audio file: the file has no audio stream")
        ctx = audio.codec_context
        info = AudioInfo(
            container=container.format.name,
            codec=_codec_name(audio),
            duration=_duration(path, container, audio),
            sample_rate=ctx.sample_rate or 0,
            channels=ctx.channels or 0,
        )
        _decode_first_frame(container, audio, "audio")
        _check_complete(path, container, [audio])
    return info


__all__ = ["MAX_IMAGE_PIXELS", "MediaProbeError", "probe_audio", "probe_image", "probe_video"]
