"""Frame sizes implied by a resolution name and an aspect ratio."""

from __future__ import annotations

# The short side of the frame, in pixels, for every resolution name in the SPEC.
SHORT_SIDE_BY_RESOLUTION: dict[str, int] = {
    "256p": 256,
    "360p": 360,
    "480p": 480,
    "480P": 480,
    "540p": 540,
    "580p": 580,
    "720p": 720,
    "768P": 768,
    "1080p": 1080,
    "1080P": 1080,
    "true_1080p": 1080,
    "1440p": 1440,
    "2K": 1440,
    "2k": 1440,  # Wan 3.0 Pro tiers (lower case, CHANGES §2.2)
    "2160p": 2160,
    "4k": 2160,
}

DEFAULT_RESOLUTION = "720p"
DEFAULT_ASPECT_RATIO = "16:9"


def _even(value: float) -> int:
    """H.264 with yuv420p needs even dimensions; round to the nearest even integer."""
    return max(2, round(value / 2.0) * 2)


def parse_aspect_ratio(aspect_ratio: str) -> tuple[int, int]:
    """'16:9' -> (16, 9). 'auto'/'adaptive' fall back to the default landscape ratio."""
    if aspect_ratio in ("auto", "adaptive"):
        aspect_ratio = DEFAULT_ASPECT_RATIO
    w, _, h = aspect_ratio.partition(":")
    return int(w), int(h)


def frame_size(resolution: str | None, aspect_ratio: str | None) -> tuple[int, int]:
    """Width and height for a resolution and aspect ratio: the resolution fixes the short side.

    720p 16:9 -> 1280x720, 720p 9:16 -> 720x1280, 720p 1:1 -> 720x720, 480p 16:9 -> 854x480.
    """
    short = SHORT_SIDE_BY_RESOLUTION[resolution or DEFAULT_RESOLUTION]
    rw, rh = parse_aspect_ratio(aspect_ratio or DEFAULT_ASPECT_RATIO)
    if rw >= rh:
        return _even(short * rw / rh), short
    return short, _even(short * rh / rw)


def frame_size_like(resolution: str | None, width: int, height: int) -> tuple[int, int]:
    """The frame for a resolution with the aspect of a given picture (image-to-video, video-to-video)."""
    short = SHORT_SIDE_BY_RESOLUTION[resolution or DEFAULT_RESOLUTION]
    if width >= height:
        return _even(short * width / height), short
    return short, _even(short * height / width)
