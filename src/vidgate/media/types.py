"""What the media layer hands on: fetched files and what probing found in them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
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


Info = ImageInfo | VideoInfo | AudioInfo
# Stored beside the info as "kind", so reading it back builds the same class.
INFO_CLASSES: dict[str, type[Info]] = {"image": ImageInfo, "video": VideoInfo, "audio": AudioInfo}
INFO_KINDS: dict[type[Info], str] = {cls: kind for kind, cls in INFO_CLASSES.items()}
# Payloads stored before "kind" was written: a key only that class has tells which it is.
_LEGACY_KIND_KEYS = (("format", "image"), ("video_codec", "video"), ("codec", "audio"))


def _info_from_json(data: dict[str, Any]) -> Info:
    kind = data.get("kind") or next((kind for key, kind in _LEGACY_KIND_KEYS if key in data), None)
    if kind not in INFO_CLASSES:
        raise ValueError(f"unknown media info with keys {sorted(data)}")
    cls = INFO_CLASSES[kind]
    return cls(**{f.name: data[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class PreparedInput:
    """One input fetched and probed at queue time, as the job stores it and the engines read it."""

    field: str  # exact place in the request: "reference_video_urls[1]", "keyframes[0].image_url", ...
    path: str  # absolute path of the fetched file
    mime: str
    sha256: str
    size: int
    info: Info
    frame_index: int | None = None  # keyframes only: the frame (at 24 fps) the image anchors
    element: int | None = None  # Kling O3 elements only: the element's index in the request

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)  # every field is a JSON value already (the path is a str)
        data["info"] = {"kind": INFO_KINDS[type(self.info)], **data["info"]}
        # Only keyframes and elements carry these, as before they were typed.
        for key in ("frame_index", "element"):
            if data[key] is None:
                del data[key]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PreparedInput:
        return cls(field=data["field"], path=data["path"], mime=data["mime"], sha256=data["sha256"],
                   size=data["size"], info=_info_from_json(data["info"]), frame_index=data.get("frame_index"),
                   element=data.get("element"))


# A request's prepared media by request field group ("image_url", "reference_video_urls", "keyframes",
# "elements.frontal_image_url", ...), each in request order.
Inputs = dict[str, tuple[PreparedInput, ...]]

