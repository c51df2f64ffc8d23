"""What the media layer hands on: fetched files and what probing found in them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class MediaFile:
    """One user-supplied input, fetched (or decoded from its data: URL) into a local file."""

    field: str  # where it came from in the request: "image_url", "reference_image_urls[1]", ...
    path: Path  # the bytes, on local disk
    kind: str  # "image" | "video" | "audio" | "document": what the field expects
    mime: str  # sniffed from the bytes (magic numbers), e.g. "image/png", "video/mp4", "audio/mpeg"
    size: int
    sha256: str


@dataclass(frozen=True)
class ImageInfo:
    format: str  # Pillow's format name: "PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "HEIF"
    width: int
    height: int


@dataclass(frozen=True)
class VideoInfo:
    container: str  # PyAV's format name, e.g. "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"
    video_codec: str  # "h264", "hevc", "vp9", ...
    width: int
    height: int
    fps: float
    duration: float  # seconds
    frames: int | None
    audio_codec: str | None  # None when there is no audio stream


@dataclass(frozen=True)
class AudioInfo:
    container: str  # "mp3", "wav", ...
    codec: str  # "mp3", "pcm_s16le", ...
    duration: float  # seconds
    sample_rate: int
    channels: int


def to_json(value: Any) -> Any:
    """Dataclasses (and paths) to plain JSON values, for storing beside the job."""
    if hasattr(value, "__dataclass_fields__"):
        return {k: to_json(v) for k, v in asdict(value).items()}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value
