"""The `reference` engine: a cut of the user's reference images and clips, in the prompt's colours.

Every visual reference becomes a *shot*: an image drifts in a slow Ken Burns pan/zoom, a clip plays from
its start (decoded as a stream, looped when its shot is longer than the clip, cut when shorter).  Shots
follow one another with short crossfades and share the duration by weight: a clip's weight is its length,
an image's IMAGE_SHOT_SECONDS.  The whole cut gets a mild grade from the prompt's palette and the prompt
as a caption along the bottom, so the references' own pixels stay plainly visible.

Order: `image_url` (Kling's first frame) opens the video and `end_image_url` (its last frame) closes it,
each shown exactly on that frame under the grade.  Between them come the references the prompt names, in
the order it first names them — `@Element2`, `@Image1` (Kling O3: elements, scene images), `<Image 1>`,
`<Video 2>` (Seedance: reference images, clips) — then the rest in request order: elements (frontal image,
their reference images, their clip), scene images, reference images, reference clips, `video_url`.

Soundtrack (only when the job asks for audio): the reference audio clips (`reference_audio_urls`,
`audio_url`) from the start, and each reference clip's own audio under its shot, summed with headroom and
clipped, over exactly the video's length.  With none of those, the prompt's chord.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import av
import numpy as np
from PIL import Image

from vidgate.engines.base import ProgressCallback, RenderSpec
from vidgate.engines.encode import AUDIO_RATE, AudioSource, BufferAudio, Mp4Writer, decode_audio
from vidgate.engines.frames import (
    FULL_MOVE_SECONDS,
    EncodingEngine,
    PromptCaption,
    PromptGrade,
    Still,
    VideoSampler,
    clip_seconds,
    crossfade,
    frame_cover,
    has_audio,
    motion_rng,
)
from vidgate.engines.procedural import soundtrack
from vidgate.media.types import ImageInfo, PreparedInput, VideoInfo

IMAGE_SHOT_SECONDS = 1.5  # an image's weight when the duration is shared out; a clip's is its own length
FADE_SECONDS = 0.25  # crossfade between shots (shortened for very short shots)
AUDIO_KEYS = ("reference_audio_urls", "audio_url")
# Tokens naming a reference in the prompt: Kling's `@Element1` / `@Image1` and Seedance's `<Image 1>` /
# `<Video 1>` (Seedance's syntax is case-sensitive; Kling's is matched in any case).
_TOKEN = re.compile(r"@(?i:(element|image|video))\s*(\d+)|<(Image|Video) ?(\d+)>")
# Inputs that are not references for this engine (audio is mixed, keyframes belong to image-to-video).
_NOT_VISUAL = {*AUDIO_KEYS, "keyframes", "reference_document_urls"}


@dataclass(frozen=True)
class Reference:
    kind: str  # "image" | "video"
    item: PreparedInput


def _kind(item: PreparedInput) -> str | None:
    if isinstance(item.info, VideoInfo):
        return "video"
    if isinstance(item.info, ImageInfo):
        return "image"
    return None


def _refs(items: Iterable[PreparedInput]) -> list[Reference]:
    return [Reference(kind, item) for item in items if (kind := _kind(item)) is not None]


def order_references(spec: RenderSpec) -> list[Reference]:
    """The visual references in the order the shots show them (see the module docstring)."""
    inputs = spec.inputs
    groups: dict[tuple[str, int], list[Reference]] = {}
    element_keys = [k for k in inputs if k.startswith("elements.")]
    element_ids = sorted({item.element or 0 for k in element_keys for item in inputs[k]})
    for n, element in enumerate(element_ids):
        refs: list[Reference] = []
        for key in ("elements.frontal_image_url", "elements.reference_image_urls",
                    *sorted(k for k in element_keys if k not in ("elements.frontal_image_url",
                                                                  "elements.reference_image_urls"))):
            refs += _refs(item for item in inputs.get(key, ()) if (item.element or 0) == element)
        groups[("element", n)] = refs
    for key in ("scene_image_urls", "reference_image_urls", "reference_video_urls", "video_url"):
        for n, item in enumerate(inputs.get(key, ())):
            groups[(key, n)] = _refs([item])
    known = {"image_url", "end_image_url", "scene_image_urls", "reference_image_urls", "reference_video_urls",
             "video_url", *element_keys, *_NOT_VISUAL}
    for key in inputs:
        if key not in known:
            for n, item in enumerate(inputs[key]):
                groups[(key, n)] = _refs([item])

    image_key = "scene_image_urls" if inputs.get("scene_image_urls") else "reference_image_urls"
    named: list[tuple[str, int]] = []
    for match in _TOKEN.finditer(spec.prompt):
        word = (match.group(1) or match.group(3)).lower()
        n = int(match.group(2) or match.group(4)) - 1
        key = {"element": "element", "image": image_key, "video": "reference_video_urls"}[word]
        if (key, n) in groups and (key, n) not in named:
            named.append((key, n))
    ordered = named + [g for g in groups if g not in named]
    middle = [ref for g in ordered for ref in groups[g]]
    return _refs(inputs.get("image_url", ())[:1]) + middle + _refs(inputs.get("end_image_url", ())[:1])


@dataclass
class _Shot:
    index: int
    ref: Reference
    start: int  # first frame of the shot (crossfades reach a few frames either side)
    length: int
    anchor_end: bool = False  # an image shown exactly on the shot's last frame (Kling's end frame)
    still: Still | None = None
    sampler: VideoSampler | None = None
    seconds: float = 0.0  # a clip's own duration
    fade_in: int = 0  # frames of crossfade from the previous shot, centred on `start`


def _shot_lengths(weights: list[float], frame_count: int) -> list[int]:
    """Whole-frame lengths proportional to `weights`, each at least one frame, summing to frame_count."""
    total = sum(weights)
    bounds = [0]
    acc = 0.0
    k = len(weights)
    for j, w in enumerate(weights[:-1], start=1):
        acc += w
        bound = round(acc / total * frame_count)
        bounds.append(min(max(bound, bounds[-1] + 1), frame_count - (k - j)))
    bounds.append(frame_count)
    return [b - a for a, b in pairwise(bounds)]


def plan_shots(spec: RenderSpec, frame_count: int) -> list[_Shot]:
    """One shot per reference (at most one per frame), with its frames and crossfade."""
    refs = order_references(spec)
    if not refs:
        raise ValueError("the reference engine needs at least one reference image or video")
    refs = refs[:frame_count]
    durations = [clip_seconds(ref.item) if ref.kind == "video" else 0.0 for ref in refs]
    weights = [max(d, 0.5) if ref.kind == "video" else IMAGE_SHOT_SECONDS
               for ref, d in zip(refs, durations, strict=True)]
    lengths = _shot_lengths(weights, frame_count)
    has_end = bool(spec.inputs.get("end_image_url"))
    shots: list[_Shot] = []
    start = 0
    fade = max(0, round(FADE_SECONDS * spec.fps))
    for n, (ref, length, seconds) in enumerate(zip(refs, lengths, durations, strict=True)):
        shot = _Shot(index=n, ref=ref, start=start, length=length, seconds=seconds,
                     anchor_end=has_end and n == len(refs) - 1)
        if shots:
            # Even, so the fade sits symmetrically around the cut; neither shot is ever fully faded away.
            shot.fade_in = min(fade, shots[-1].length // 2, length // 2) // 2 * 2
        shots.append(shot)
        start += length
    return shots


class _Cut:
    """Frame i of the reference cut."""

    def __init__(self, spec: RenderSpec, shots: list[_Shot], stack: ExitStack) -> None:
        self.spec = spec
        self.shots = shots
        for shot in shots:
            if shot.ref.kind == "video":
                shot.sampler = stack.enter_context(VideoSampler(shot.ref.item.path))  # opens on first use
        self.grade = PromptGrade(spec.prompt, spec.width, spec.height, strength=0.2, vignette=0.15)
        self.caption = PromptCaption(spec.prompt, spec.width, spec.height)

    def _shot_frame(self, shot: _Shot, i: int) -> Image.Image:
        local = i - shot.start
        if shot.ref.kind == "image":
            if shot.still is None:  # prepared when first seen, let go when its shot is over (see `frame`)
                rng = motion_rng(self.spec, f"{shot.index}:{shot.ref.item.field}")
                shot.still = Still.from_file(shot.ref.item.path, self.spec.width, self.spec.height, rng)
            amount = (shot.length - 1 - local) if shot.anchor_end else local
            return shot.still.at(amount / max(shot.length, round(FULL_MOVE_SECONDS * self.spec.fps), 1))
        assert shot.sampler is not None
        t = max(local, 0) / self.spec.fps
        if shot.seconds > 0 and t >= shot.seconds:
            t %= shot.seconds  # loop the clip
        return frame_cover(shot.sampler.at(t), self.spec.width, self.spec.height)

    def frame(self, i: int) -> Image.Image:
        shots = self.shots
        k = max(j for j, s in enumerate(shots) if s.start <= i)
        picture = None
        # The crossfade around the cut into shot k (its first half before the cut, its second half after).
        for incoming in (k, k + 1):
            if 0 < incoming < len(shots):
                nxt = shots[incoming]
                half = nxt.fade_in // 2
                if nxt.fade_in and nxt.start - half <= i < nxt.start + half:
                    weight = (i - (nxt.start - half) + 0.5) / nxt.fade_in
                    picture = crossfade(self._shot_frame(shots[incoming - 1], i), self._shot_frame(nxt, i), weight)
                    break
        if picture is None:
            picture = self._shot_frame(shots[k], i)
        # A shot's picture or decoder is let go once the shot (and its fade out) is over.
        for j in range(k):
            if i >= shots[j + 1].start + shots[j + 1].fade_in // 2:
                shots[j].still = None
                if shots[j].sampler is not None:
                    shots[j].sampler.close()
        out = self.grade.apply(picture)
        self.caption.apply(out)
        return out


def reference_soundtrack(spec: RenderSpec, shots: list[_Shot], frame_count: int) -> AudioSource | None:
    """The mix of reference audio and the clips' own audio (see the module docstring), or the prompt's chord."""
    if not spec.audio:
        return None
    seconds = frame_count / spec.fps
    total = round(seconds * AUDIO_RATE)
    mix = np.zeros((2, total), dtype=np.float32)
    tracks = 0
    for key in AUDIO_KEYS:
        for item in spec.inputs.get(key, ()):
            mix += decode_audio(item.path, seconds)
            tracks += 1
    for shot in shots:
        if shot.ref.kind != "video" or not has_audio(shot.ref.item):
            continue
        start = round(shot.start / spec.fps * AUDIO_RATE)
        length = min(round(shot.length / spec.fps * AUDIO_RATE), total - start)
        clip = decode_audio(shot.ref.item.path, min(shot.seconds or seconds, length / AUDIO_RATE))
        if clip.shape[1] == 0:
            continue
        mix[:, start : start + length] += clip[:, np.arange(length) % clip.shape[1]]  # looped with the picture
        tracks += 1
    if tracks == 0:
        return soundtrack(spec)
    if tracks > 1:
        mix *= np.float32(1.0 / math.sqrt(tracks))
    np.clip(mix, -1.0, 1.0, out=mix)
    return BufferAudio(mix, total)


def render_reference(spec: RenderSpec, out_path: Path, progress: ProgressCallback, engine: EncodingEngine) -> None:
    frame_count = spec.duration_s * spec.fps
    if frame_count <= 0:
        raise ValueError("duration_s and fps must be positive")
    shots = plan_shots(spec, frame_count)
    audio = reference_soundtrack(spec, shots, frame_count)
    with (
        ExitStack() as stack,
        Mp4Writer(Path(out_path), spec.width, spec.height, spec.fps, frame_count=frame_count,
                  settings=engine.settings(spec), audio=audio, progress=progress) as mp4,
    ):
        cut = _Cut(spec, shots, stack)
        for i in range(frame_count):
            mp4.write_frame(av.VideoFrame.from_image(cut.frame(i)))


class ReferenceEngine(EncodingEngine):
    """The `reference` engine: the references' images and clips cut together, in the prompt's colours."""

    name = "reference"

    def render(self, spec: RenderSpec, out_path: Path, progress: ProgressCallback) -> None:
        """Render `spec` into an MP4 at `out_path`, reporting progress as a fraction of frames.

        Seedance's Edit, Extend and Stitch workflows (`spec.options["workflow"]`, set by plan_render) are
        rendered by engines/seedance.py; Reference, and every other model's request, here.
        """
        workflow = spec.options.get("workflow") or {}
        if workflow.get("kind") in ("edit", "extend", "stitch"):
            from vidgate.engines.seedance import render_workflow

            render_workflow(spec, out_path, progress, self)
            return
        render_reference(spec, out_path, progress, self)
