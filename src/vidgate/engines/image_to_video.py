"""The `image` engine: image-to-video from a start image, an optional end image and keyframes.

Every image is an *anchor*: a frame at which it is shown exactly, cover-cropped to the output and without
motion.  `image_url` anchors frame 0, `end_image_url` the last frame, and each keyframe its `frame_index`
(counted at 24 fps).  Away from its anchor an image drifts in a slow Ken Burns pan/zoom (direction and depth
from the spec's hash): it zooms in as the video moves away from its anchor and zooms back out as the video
approaches it.  Between two anchors the picture holds the first image, crossfades across the middle of the
gap, then settles on the second, which is exactly in place on its frame.  A `camera_trajectory` (multi-angle
models) replaces the drift: the camera follows its keyframes, interpolated in time: azimuth pans across,
elevation pans up and down, distance zooms.

Cost per frame: one sub-pixel crop-and-resize of yuv420p planes prepared once (two during a crossfade)
and a blend; no colour conversion.  The soundtrack is `procedural.soundtrack`: the user's `audio_url` when
given, else the prompt's chord, when the job asks for audio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from vidgate.engines.base import ProgressCallback, RenderSpec
from vidgate.engines.encode import Mp4Writer
from vidgate.engines.frames import (
    FULL_MOVE_SECONDS,
    EncodingEngine,
    Still,
    crossfade,
    motion_rng,
    planes_array,
    smoothstep,
)
from vidgate.engines.procedural import soundtrack

KEYFRAME_FPS = 24  # the API counts keyframe `frame_index` at 24 fps, whatever the output's rate
# The crossfade between two anchors runs over this part of the gap between them; before it the first image
# holds, after it the second.
FADE_FROM, FADE_TO = 0.3, 0.7
# Where a job has no image_url or keyframes, the first of these stands in as its start image.
FALLBACK_START_KEYS = ("reference_image_urls", "elements.frontal_image_url", "scene_image_urls")


@dataclass(frozen=True)
class AnchorPlan:
    frame: int
    path: str
    field: str


def plan_anchors(spec: RenderSpec, frame_count: int) -> list[AnchorPlan]:
    """Which image is shown exactly at which frame, sorted by frame.

    Keyframes win over `image_url` on frame 0 and over `end_image_url` on the last frame; a keyframe index
    past the end (the API allows `duration × 24`, one past the last frame) lands on the last frame.
    """
    last = frame_count - 1
    at: dict[int, AnchorPlan] = {}
    for item in spec.inputs.get("keyframes", ()):
        frame = min(last, max(0, round((item.frame_index or 0) * spec.fps / KEYFRAME_FPS)))
        at[frame] = AnchorPlan(frame, item.path, item.field)
    start = spec.inputs.get("image_url", ())
    if not start and not at:
        start = next((spec.inputs[k] for k in FALLBACK_START_KEYS if spec.inputs.get(k)), ())
    if start and 0 not in at:
        at[0] = AnchorPlan(0, start[0].path, start[0].field)
    end = spec.inputs.get("end_image_url", ())
    if end and last not in at:
        at[last] = AnchorPlan(last, end[0].path, end[0].field)
    if not at:
        raise ValueError("image-to-video needs an image: image_url, end_image_url or keyframes")
    return [at[frame] for frame in sorted(at)]


Planes = tuple[Image.Image, Image.Image, Image.Image]
# A camera at distance 1 sees this zoom; nearer zooms in, farther out (to the plain cover crop at most).
CAMERA_BASE_ZOOM = 1.1


def camera_at(points: list[dict[str, Any]], u: float) -> tuple[float, tuple[float, float]]:
    """(zoom, pan) of a camera_trajectory at `u` (0 … 1 of the video), linear between its keyframes."""
    u = min(max(u, points[0]["time"]), points[-1]["time"])
    k = max((j for j, p in enumerate(points) if p["time"] <= u), default=0)
    a, b = points[k], points[min(k + 1, len(points) - 1)]
    span = b["time"] - a["time"]
    w = (u - a["time"]) / span if span > 0 else 0.0
    azimuth, elevation, distance = ((1 - w) * a[key] + w * b[key] for key in ("azimuth", "elevation", "distance"))
    return CAMERA_BASE_ZOOM / distance, (math.sin(math.radians(azimuth)), -elevation / 90)


@dataclass
class _Anchor:
    plan: AnchorPlan
    still: Still | None = None

    @property
    def frame(self) -> int:
        return self.plan.frame


class _Timeline:
    """Frame i of an image-to-video job, from its anchors.

    Frames are asked for in order, so only the images of the current gap (two at most) are held: each is
    prepared when its gap starts and let go when the video has passed it.
    """

    def __init__(self, spec: RenderSpec, frame_count: int) -> None:
        self.spec = spec
        self.frame_count = frame_count
        self.anchors = [_Anchor(plan) for plan in plan_anchors(spec, frame_count)]
        self._span = max(frame_count - 1, round(FULL_MOVE_SECONDS * spec.fps), 1)
        self.camera: list[dict[str, Any]] | None = spec.options.get("camera_trajectory")

    def _view(self, anchor: _Anchor, i: int) -> Planes:
        if anchor.still is None:
            spec, plan = self.spec, anchor.plan
            anchor.still = Still.from_file(plan.path, spec.width, spec.height, motion_rng(spec, plan.field),
                                           yuv=True)
        if self.camera:
            zoom, pan = camera_at(self.camera, i / max(self.frame_count - 1, 1))
            return anchor.still.planes_for(zoom, pan)
        return anchor.still.planes_at(abs(i - anchor.frame) / self._span)

    def _release_before(self, k: int) -> None:
        for anchor in self.anchors[:k]:
            anchor.still = None

    def frame(self, i: int) -> Planes:
        """Frame i as yuv420p planes."""
        anchors = self.anchors
        if i <= anchors[0].frame:
            return self._view(anchors[0], i)
        if i >= anchors[-1].frame:
            self._release_before(len(anchors) - 1)
            return self._view(anchors[-1], i)
        k = max(j for j, a in enumerate(anchors) if a.frame <= i)
        self._release_before(k)
        a, b = anchors[k], anchors[k + 1]
        u = (i - a.frame) / (b.frame - a.frame)
        weight = smoothstep((u - FADE_FROM) / (FADE_TO - FADE_FROM))
        if weight <= 0.0:
            return self._view(a, i)
        if weight >= 1.0:
            return self._view(b, i)
        pa, pb = self._view(a, i), self._view(b, i)
        y, u_, v = (crossfade(x, z, weight) for x, z in zip(pa, pb, strict=True))
        return y, u_, v


def render_image_to_video(spec: RenderSpec, out_path: Path, progress: ProgressCallback,
                          engine: EncodingEngine) -> None:
    frame_count = spec.duration_s * spec.fps
    if frame_count <= 0:
        raise ValueError("duration_s and fps must be positive")
    timeline = _Timeline(spec, frame_count)
    with Mp4Writer(Path(out_path), spec.width, spec.height, spec.fps, frame_count=frame_count,
                   settings=engine.settings(spec), audio=soundtrack(spec), progress=progress) as mp4:
        for i in range(frame_count):
            mp4.write_yuv420p(planes_array(timeline.frame(i)))


class ImageToVideoEngine(EncodingEngine):
    """The `image` engine: the start image (and end image / keyframes) in slow motion, crossfading."""

    name = "image"

    def render(self, spec: RenderSpec, out_path: Path, progress: ProgressCallback) -> None:
        """Render `spec` into an MP4 at `out_path`, reporting progress as a fraction of frames."""
        render_image_to_video(spec, out_path, progress, self)
