"""From a queued request to a RenderSpec: the output's size, length and inputs, decided per engine."""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict
from typing import Any

from vidgate.catalog.request import JobPayload
from vidgate.catalog.workflows import STITCH_TRANSITION_SECONDS, Counts, Workflow, classify
from vidgate.engines.base import RenderSpec
from vidgate.media.geometry import frame_size, frame_size_like
from vidgate.media.types import ImageInfo, Info, VideoInfo

FPS = 24
SOURCE_MATCHED_ASPECTS = ("adaptive", "auto")


def _first_info(request: JobPayload, *keys: str) -> Info | None:
    for key in keys:
        items = request.inputs.get(key)
        if items:
            return items[0].info
    return None


def _source_video(request: JobPayload) -> VideoInfo | None:
    info = _first_info(request, "video_url")
    return info if isinstance(info, VideoInfo) else None


def _reference_clips(request: JobPayload) -> list[VideoInfo]:
    # Every reference_video_urls input was probed as a video; the filter only narrows the type.
    return [item.info for item in request.inputs.get("reference_video_urls", ()) if isinstance(item.info, VideoInfo)]


def _even(value: float) -> int:
    return max(2, round(value / 2) * 2)


def plan_render(engine: str, request: JobPayload) -> RenderSpec:
    """Size, duration and fps of the output for `engine`, from the request and its probed inputs."""
    duration = request.duration_s or 5
    audio = request.audio
    aspect = request.aspect_ratio
    size: tuple[int, int] | None = None
    fps = FPS
    options: dict[str, Any] = {"bitrate_mode": request.bitrate_mode}
    if request.camera_trajectory:
        options["camera_trajectory"] = [asdict(point) for point in request.camera_trajectory]
    if request.upstream is not None:
        options["upstream"] = asdict(request.upstream)
    if engine == "upscale":
        source = _source_video(request)
        width, height, seconds = (source.width, source.height, source.duration) if source else (640, 360, 1)
        factor = request.upscale_factor or 2
        size = (_even(width * factor), _even(height * factor))
        duration = max(1, math.ceil(seconds))
        options["upscale_factor"] = factor
    elif engine == "video":
        source = _source_video(request)
        if source:
            size = frame_size_like(request.resolution, source.width, source.height)
            # A model with its own durations (Grok Imagine v2v) makes that length; `Auto` ones the source's.
            duration = request.duration_s or max(1, math.ceil(source.duration))
            if request.duration_s:
                options["length_from_request"] = True
            # Video-to-video keeps the input's sound, whether or not the model generates audio of its own.
            audio = source.audio_codec is not None
    elif engine in ("image", "reference", "diffusers"):
        if aspect is None or aspect in SOURCE_MATCHED_ASPECTS:
            info = _first_info(request, "reference_video_urls", "video_url", "image_url", "keyframes",
                               "reference_image_urls", "elements.frontal_image_url", "scene_image_urls")
            if isinstance(info, (ImageInfo, VideoInfo)):
                size = frame_size_like(request.resolution, info.width, info.height)
        if request.duration == "auto":
            duration = max(1, math.ceil(sum(clip.duration for clip in _reference_clips(request))))
        options["task_type"] = request.omni_reference_task_type
        if engine == "reference" and request.workflows:
            workflow = classify(request.prompt, request.omni_reference_task_type, Counts.of_inputs(request.inputs))
            options["workflow"] = workflow.to_json()
            if workflow.kind != "reference":
                duration, fps, clip_size = _plan_workflow(workflow, request, duration, options)
                if aspect is None or aspect in SOURCE_MATCHED_ASPECTS:
                    size = clip_size
    if size is None:
        size = frame_size(request.resolution, aspect if aspect not in SOURCE_MATCHED_ASPECTS else None)
    return RenderSpec(
        model=request.model, prompt=request.prompt, negative_prompt=request.negative_prompt,
        duration_s=duration, width=size[0], height=size[1], fps=fps, audio=audio,
        seed=request.seed if request.seed is not None else derived_seed(request),
        options=options, inputs=request.inputs,
    )


def derived_seed(request: JobPayload) -> int:
    """A request without `seed` gets one from what it asks for, so the same request gives the same video."""
    parts = [request.model, request.prompt, request.negative_prompt, str(request.duration), str(request.resolution),
             str(request.aspect_ratio), *(item.sha256 for items in request.inputs.values() for item in items)]
    return int.from_bytes(hashlib.sha256("\x00".join(parts).encode()).digest()[:4], "big")


def _plan_workflow(workflow: Workflow, request: JobPayload, duration: int,
                   options: dict[str, Any]) -> tuple[int, int, tuple[int, int]]:
    """Seedance Edit / Extend / Stitch (engines/seedance.py): (duration, fps, source-matched size).

    The engine re-reads the clips for exact timing; these are the whole-second length and nominal rate the
    job is planned with.  Edit lasts as long as its clip (whatever `duration` says: it keeps the source's
    timing); Extend lasts the requested duration (the reference clips' total for `"auto"`), plus the clip
    when the prompt keeps it; Stitch lasts its clips plus STITCH_TRANSITION_SECONDS per non-cut join.  A
    source-matched aspect (`adaptive`/`auto`, or none) is the edited/extended clip's, or the first stitched one's.
    """
    clips = _reference_clips(request)
    source = clips[workflow.videos[0]]
    fps = max(1, round(float(source.fps or FPS)))
    size = frame_size_like(request.resolution, source.width, source.height)
    if workflow.kind == "edit":
        duration = max(1, math.ceil(source.duration))
    elif workflow.kind == "extend":
        options["extend_seconds"] = duration
        if workflow.include_source:
            duration += max(1, math.ceil(source.duration))
    else:
        stitched = [clips[i] for i in workflow.videos]
        joins = sum(1 for kind in workflow.transitions if kind != "cut")
        duration = max(1, math.ceil(sum(c.duration for c in stitched) + joins * STITCH_TRANSITION_SECONDS))
        if len({c.fps for c in stitched}) > 1:
            fps = FPS
    return duration, fps, size
