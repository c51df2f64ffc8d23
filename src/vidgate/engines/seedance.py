"""Seedance's Edit, Extend and Stitch workflows (SPEC §4), rendered by the `reference` engine.

`plan_render` classifies the request (catalog/workflows.py) and puts the result in
`spec.options["workflow"]`; `ReferenceEngine.render` sends edit/extend/stitch here and keeps Reference for
itself.  The clips are re-read from their files, so the timing below is exact whatever the probe rounded.

- **Edit** `Strictly edit <Video N>, …`: the clip re-rendered frame for frame at its own frame rate, so the
  output has exactly the source's frame count and duration; each frame is cover-cropped to the output size
  and graded with the prompt's palette (the prompt-derived change).  Sound: the first `<Audio N>` the prompt
  names replaces the clip's own audio; otherwise the clip's audio is kept (a silent clip stays silent).
- **Extend** `Extend <Video N>, …`: new content at the clip's frame rate, lasting the requested duration.
  Forward, its first frame is the clip's last frame, exactly; from there that picture drifts in a slow
  pan/zoom while the prompt's grade and caption ease in over the first second, and any `<Image N>` the
  prompt names follows in turn (crossfading, each shown exactly at its anchor).  Backward mirrors this: the
  new content ends exactly on the clip's first frame.  The output is only the new content unless the prompt
  says `start with <Video N>` (forward: the clip, untouched, then the new content) or `end with <Video N>`
  (backward: the new content, then the clip).  Sound: the clip's own audio under the clip; under the new
  content the first `<Audio N>` named, else the first reference audio, else the prompt's chord.
- **Stitch** `<Video 1> + <transition> + followed by <Video 2> …`: the clips in the prompt's order, each in
  full and untouched (cover-cropped to the output size), joined by generated transition frames:
  `crossfade` blends the last frame of one clip into the first of the next over STITCH_TRANSITION_SECONDS,
  `black` dips through black over the same time, `cut` adds nothing.  So the output lasts the sum of the
  clips plus 0.5 s per non-cut join.  The frame rate is the clips' own when they share one, else 24 fps
  (clips resampled by timestamp).  Sound: the first `<Audio N>` named over the whole output, else each
  clip's own audio under it (silence under transitions, with short ramps against clicks), else the first
  reference audio, else the prompt's chord.

Every render writes through `Mp4Writer` with `engine.settings(spec)`, so `bitrate_mode: "high"` applies.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image

from vidgate.catalog.workflows import STITCH_TRANSITION_SECONDS, Workflow, audio_inputs
from vidgate.engines.base import ProgressCallback, RenderSpec
from vidgate.engines.encode import AUDIO_RATE, AudioSource, BufferAudio, Mp4Writer, decode_audio
from vidgate.engines.frames import (
    FULL_MOVE_SECONDS,
    EncodingEngine,
    PromptCaption,
    PromptGrade,
    Still,
    VideoSampler,
    crossfade,
    frame_cover,
    motion_rng,
    read_clip_timing,
    smoothstep,
)
from vidgate.engines.procedural import soundtrack
from vidgate.media.types import PreparedInput

EXTEND_EASE_SECONDS = 1.0  # the prompt's grade and caption reach full strength this far into new content
RAMP_SECONDS = 0.01  # fade at the edges of a stitched clip's audio, against clicks
FALLBACK_FPS = Fraction(24)


# --------------------------------------------------------------------------------------------------
# Clips
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    """A reference clip as the render sees it: its exact frame rate and frame count."""

    item: PreparedInput
    fps: Fraction
    frames: int
    has_audio: bool

    @property
    def path(self) -> str:
        return self.item.path

    @property
    def seconds(self) -> float:
        return float(self.frames / self.fps)


def read_clip(item: PreparedInput) -> Clip:
    """Frame rate and frame count from the file's own headers (the probe info is the fallback)."""
    timing = read_clip_timing(item.path, item.info, label=item.field, fallback_fps=FALLBACK_FPS)
    return Clip(item, timing.fps, timing.frames, timing.has_audio)


def _decoded(path: str) -> Iterator[av.VideoFrame]:
    """The clip's frames in order; a decode error after the first frame ends the clip."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames = container.decode(stream)
        first = True
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                return
            except av.error.InvalidDataError:
                if first:
                    raise
                return
            first = False
            yield frame


def clip_pictures(clip: Clip, width: int, height: int, fps: Fraction | None = None) -> Iterator[Image.Image]:
    """The clip's frames cover-cropped to width×height: exactly `clip.frames` of them at its own rate, or,
    at another `fps`, round(seconds × fps) frames picked by timestamp.  A clip that decodes short repeats its
    last frame to make up the count."""
    if fps is None or fps == clip.fps:
        count, last = 0, None
        for frame in _decoded(clip.path):
            if count >= clip.frames:
                return
            last = frame_cover(frame, width, height)
            count += 1
            yield last
        if last is None:
            raise ValueError(f"{clip.path}: no video frames could be decoded")
        for _ in range(clip.frames - count):
            yield last
        return
    with VideoSampler(clip.path) as sampler:
        for i in range(frame_count_at(clip, fps)):
            yield frame_cover(sampler.at(float(i / fps)), width, height)


def frame_count_at(clip: Clip, fps: Fraction) -> int:
    return clip.frames if fps == clip.fps else max(1, round(clip.seconds * fps))


def first_picture(clip: Clip, width: int, height: int) -> Image.Image:
    for frame in _decoded(clip.path):
        return frame_cover(frame, width, height)
    raise ValueError(f"{clip.path}: no video frames could be decoded")


def last_picture(clip: Clip, width: int, height: int) -> Image.Image:
    """The clip's last frame (the one at index frames-1 as `clip_pictures` counts them)."""
    last = None
    for count, frame in enumerate(_decoded(clip.path), start=1):
        last = frame
        if count >= clip.frames:
            break
    if last is None:
        raise ValueError(f"{clip.path}: no video frames could be decoded")
    return frame_cover(last, width, height)


def _video_item(spec: RenderSpec, index: int) -> PreparedInput:
    items = spec.inputs.get("reference_video_urls", ())
    if not 0 <= index < len(items):
        raise ValueError(f"<Video {index + 1}> is not among the {len(items)} reference clips")
    return items[index]


# --------------------------------------------------------------------------------------------------
# Sound
# --------------------------------------------------------------------------------------------------


def _samples(seconds: float) -> int:
    return round(seconds * AUDIO_RATE)


def _named_audio(spec: RenderSpec, workflow: Workflow) -> PreparedInput | None:
    """The first `<Audio N>` the prompt names (reference_audio_urls, then audio_url)."""
    items = audio_inputs(spec.inputs)
    for index in workflow.audio:
        if 0 <= index < len(items):
            return items[index]
    return None


def _generated_audio(spec: RenderSpec, workflow: Workflow, seconds: float) -> np.ndarray:
    """New sound: the named audio, else the first reference audio, else the prompt's chord."""
    item = _named_audio(spec, workflow) or next(iter(audio_inputs(spec.inputs)), None)
    if item is not None:
        return decode_audio(item.path, seconds)
    chord = soundtrack(replace(spec, duration_s=max(1, math.ceil(seconds)), inputs={}))
    assert chord is not None  # spec.audio is set whenever this is called
    return chord.samples(0, _samples(seconds))


def _buffer(parts: list[np.ndarray]) -> AudioSource:
    mix = np.concatenate(parts, axis=1) if parts else np.zeros((2, 0), dtype=np.float32)
    np.clip(mix, -1.0, 1.0, out=mix)
    return BufferAudio(mix.astype(np.float32, copy=False), mix.shape[1])


def _fit(data: np.ndarray, length: int) -> np.ndarray:
    out = np.zeros((2, length), dtype=np.float32)
    have = data[:, :length]
    out[:, : have.shape[1]] = have
    return out


def _ramped(data: np.ndarray) -> np.ndarray:
    n = min(_samples(RAMP_SECONDS), data.shape[1] // 2)
    if n > 0:
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
        data = data.copy()
        data[:, :n] *= ramp
        data[:, -n:] *= ramp[::-1]
    return data


# --------------------------------------------------------------------------------------------------
# Edit
# --------------------------------------------------------------------------------------------------


def render_edit(spec: RenderSpec, workflow: Workflow, out_path: Path, progress: ProgressCallback,
                engine: EncodingEngine) -> None:
    clip = read_clip(_video_item(spec, workflow.videos[0]))
    seconds = clip.seconds
    audio = None
    if spec.audio:
        named = _named_audio(spec, workflow)
        if named is not None:
            audio = BufferAudio(decode_audio(named.path, seconds), _samples(seconds))
        elif clip.has_audio:
            audio = BufferAudio(decode_audio(clip.path, seconds), _samples(seconds))
    grade = PromptGrade(spec.prompt, spec.width, spec.height)
    with Mp4Writer(Path(out_path), spec.width, spec.height, clip.fps, frame_count=clip.frames,
                   settings=engine.settings(spec), audio=audio, progress=progress) as mp4:
        for picture in clip_pictures(clip, spec.width, spec.height):
            mp4.write_frame(av.VideoFrame.from_image(grade.apply(picture)))


# --------------------------------------------------------------------------------------------------
# Extend
# --------------------------------------------------------------------------------------------------


class _NewContent:
    """Frame j of an extension: anchored pictures in a slow pan/zoom, crossfading from one to the next.

    Anchors sit at evenly spaced frames; the source frame is the first anchor (forward) or the last
    (backward) and is shown exactly, unmoved and ungraded, on its frame.  The prompt's grade and caption
    ease in with the distance from the source frame.
    """

    def __init__(self, spec: RenderSpec, source: Image.Image, images: list[str], frames: int, fps: Fraction,
                 backward: bool) -> None:
        self.spec, self.frames, self.backward = spec, frames, backward
        w, h = spec.width, spec.height
        stills = [Still(source, w, h, **_motion(spec, "source"))]
        for n, path in enumerate(images):
            stills.append(Still.from_file(path, w, h, motion_rng(spec, f"extend:{n}")))
        if backward:
            stills.reverse()
        last = frames - 1
        k = len(stills)
        self.anchors = [(round(n * last / (k - 1)) if k > 1 else (last if backward else 0), still)
                        for n, still in enumerate(stills)]
        self.span = max(last, round(FULL_MOVE_SECONDS * float(fps)), 1)
        self.ease = max(1, min(last, round(EXTEND_EASE_SECONDS * float(fps))))
        self.grade = PromptGrade(spec.prompt, w, h)
        self.caption = PromptCaption(spec.prompt, w, h)
        self.source_frame = last if backward else 0

    def _view(self, n: int, j: int) -> Image.Image:
        frame, still = self.anchors[n]
        return still.at(abs(j - frame) / self.span)

    def picture(self, j: int) -> Image.Image:
        anchors = self.anchors
        if j <= anchors[0][0]:
            picture = self._view(0, j)
        elif j >= anchors[-1][0]:
            picture = self._view(len(anchors) - 1, j)
        else:
            k = max(n for n, (frame, _) in enumerate(anchors) if frame <= j)
            a, b = anchors[k][0], anchors[k + 1][0]
            weight = smoothstep(((j - a) / (b - a) - 0.3) / 0.4)
            picture = crossfade(self._view(k, j), self._view(k + 1, j), weight)
        amount = smoothstep(abs(j - self.source_frame) / self.ease)
        if amount <= 0.0:
            return picture
        styled = self.grade.apply(picture)
        self.caption.apply(styled)
        return crossfade(picture, styled, amount)


def _motion(spec: RenderSpec, salt: str) -> dict[str, Any]:
    rng = motion_rng(spec, salt)
    angle = float(rng.uniform(0, 2 * math.pi))
    reach = float(rng.uniform(0.4, 1.0))
    return {"zoom": float(rng.uniform(1.08, 1.2)), "pan": (reach * math.cos(angle), reach * math.sin(angle))}


def extend_seconds(spec: RenderSpec) -> float:
    value = spec.options.get("extend_seconds")
    return float(value) if isinstance(value, (int, float)) and value > 0 else float(spec.duration_s)


def render_extend(spec: RenderSpec, workflow: Workflow, out_path: Path, progress: ProgressCallback,
                  engine: EncodingEngine) -> None:
    clip = read_clip(_video_item(spec, workflow.videos[0]))
    backward = workflow.direction == "backward"
    fps = clip.fps
    new_frames = max(1, round(extend_seconds(spec) * fps))
    source_frames = clip.frames if workflow.include_source else 0
    w, h = spec.width, spec.height
    anchor = first_picture(clip, w, h) if backward else last_picture(clip, w, h)
    refs = spec.inputs.get("reference_image_urls", ())
    images = [refs[index].path for index in workflow.images if 0 <= index < len(refs)]
    content = _NewContent(spec, anchor, images, new_frames, fps, backward)
    audio = None
    if spec.audio:
        new = _fit(_generated_audio(spec, workflow, float(new_frames / fps)), _samples(float(new_frames / fps)))
        parts = [new]
        if source_frames:
            src_len = _samples(clip.seconds)
            src = _fit(decode_audio(clip.path, clip.seconds), src_len) if clip.has_audio \
                else np.zeros((2, src_len), dtype=np.float32)
            parts = [new, src] if backward else [src, new]
        audio = _buffer(parts)

    def frames() -> Iterator[Image.Image]:
        if source_frames and not backward:
            yield from clip_pictures(clip, w, h)
        for j in range(new_frames):
            yield content.picture(j)
        if source_frames and backward:
            yield from clip_pictures(clip, w, h)

    with Mp4Writer(Path(out_path), w, h, fps, frame_count=source_frames + new_frames,
                   settings=engine.settings(spec), audio=audio, progress=progress) as mp4:
        for picture in frames():
            mp4.write_frame(av.VideoFrame.from_image(picture))


# --------------------------------------------------------------------------------------------------
# Stitch
# --------------------------------------------------------------------------------------------------


def transition_frames(kind: str, fps: Fraction) -> int:
    return 0 if kind == "cut" else max(2, round(STITCH_TRANSITION_SECONDS * fps))


def _transition(kind: str, a: Image.Image, b: Image.Image, count: int) -> Iterator[Image.Image]:
    """The generated frames between the last frame `a` of one clip and the first frame `b` of the next."""
    if kind == "black":
        black = Image.new("RGB", a.size, (0, 0, 0))
        for t in range(count):
            u = (t + 1) / (count + 1) * 2  # 0 … 2: into black, then out of it
            yield crossfade(a, black, u) if u <= 1 else crossfade(black, b, u - 1)
        return
    for t in range(count):
        yield crossfade(a, b, smoothstep((t + 1) / (count + 1)))


def stitch_fps(clips: list[Clip]) -> Fraction:
    rates = {clip.fps for clip in clips}
    return rates.pop() if len(rates) == 1 else FALLBACK_FPS


def render_stitch(spec: RenderSpec, workflow: Workflow, out_path: Path, progress: ProgressCallback,
                  engine: EncodingEngine) -> None:
    clips = [read_clip(_video_item(spec, index)) for index in workflow.videos]
    fps = stitch_fps(clips)
    kinds = list(workflow.transitions) + ["crossfade"] * (len(clips) - 1 - len(workflow.transitions))
    counts = [frame_count_at(clip, fps) for clip in clips]
    gaps = [transition_frames(kind, fps) for kind in kinds[: len(clips) - 1]]
    total = sum(counts) + sum(gaps)
    w, h = spec.width, spec.height
    audio = None
    if spec.audio:
        audio = _stitch_audio(spec, workflow, clips, counts, gaps, fps, total)

    def frames() -> Iterator[Image.Image]:
        previous: Image.Image | None = None
        for n, clip in enumerate(clips):
            pictures = clip_pictures(clip, w, h, fps)
            first = next(pictures)
            if previous is not None:
                yield from _transition(kinds[n - 1], previous, first, gaps[n - 1])
            yield first
            previous = first
            for picture in pictures:
                yield picture
                previous = picture  # the last one starts the next transition

    with Mp4Writer(Path(out_path), w, h, fps, frame_count=total, settings=engine.settings(spec), audio=audio,
                   progress=progress) as mp4:
        for picture in frames():
            mp4.write_frame(av.VideoFrame.from_image(picture))


def _stitch_audio(spec: RenderSpec, workflow: Workflow, clips: list[Clip], counts: list[int], gaps: list[int],
                  fps: Fraction, total: int) -> AudioSource:
    seconds = float(total / fps)
    length = _samples(seconds)
    named = _named_audio(spec, workflow)
    if named is not None or not any(clip.has_audio for clip in clips):
        return BufferAudio(_fit(_generated_audio(spec, workflow, seconds), length), length)
    mix = np.zeros((2, length), dtype=np.float32)
    frame = 0
    for n, clip in enumerate(clips):
        start = _samples(float(frame / fps))
        clip_s = float(counts[n] / fps)
        if clip.has_audio:
            part = _ramped(_fit(decode_audio(clip.path, clip_s), _samples(clip_s)))[:, : length - start]
            mix[:, start : start + part.shape[1]] += part
        frame += counts[n] + (gaps[n] if n < len(gaps) else 0)
    return BufferAudio(mix, length)


# --------------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------------


def render_workflow(spec: RenderSpec, out_path: Path, progress: ProgressCallback, engine: EncodingEngine) -> None:
    """Render an edit, extend or stitch job (`spec.options["workflow"]`)."""
    workflow = Workflow.from_json(spec.options.get("workflow"))
    if not workflow.videos:
        raise ValueError(f"the {workflow.kind} workflow needs a reference clip")
    if workflow.kind == "edit":
        render_edit(spec, workflow, out_path, progress, engine)
    elif workflow.kind == "extend":
        render_extend(spec, workflow, out_path, progress, engine)
    elif workflow.kind == "stitch":
        render_stitch(spec, workflow, out_path, progress, engine)
    else:
        raise ValueError(f"no Seedance workflow named {workflow.kind!r}")
