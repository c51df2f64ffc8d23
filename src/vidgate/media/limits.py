"""Limits on the probed inputs of a request (SPEC §2.2, §4, §6): sizes, durations, formats, codecs.

The request has already passed syntactic validation (`catalog/validation.py`); what is checked here needs
the files themselves.  Every violation is collected and raised as one `InvalidRequest` (400), each issue
naming the field and index (`reference_video_urls[1]`) and carrying the measured value and the limit:

    reference_video_urls[1]: clip is 17.2 s, the limit is 15 s

The limits are data: each model's catalogue record (`ModelSpec.inputs`) carries them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

from vidgate.catalog.models import ClipLimits, ImageLimits, ModelSpec
from vidgate.catalog.request import VideoRequest
from vidgate.catalog.validation import reference_plus_output_issues
from vidgate.errors import InvalidRequest, Issue
from vidgate.media.types import AudioInfo, ImageInfo, Info, MediaFile, VideoInfo

Probed = dict[str, list[tuple[MediaFile, Info]]]

# "MB" in the SPEC is read as 2**20 bytes: the more lenient reading, so a file Venice takes is never refused.
MB = 1024 * 1024
# Container timestamps are rounded (Matroska keeps milliseconds, MP3 frames pad the end), so a clip cut to
# exactly 15 s may measure 15.02 s.  Durations get this much slack: less than one frame at 20 fps.
DURATION_SLACK_S = 0.05

# Pillow's format names; MPO is the multi-picture JPEG that many cameras write.
IMAGE_FORMATS = {"JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF", "GIF", "HEIC", "HEIF"}
IMAGE_FORMATS_TEXT = "JPEG, PNG, WebP, BMP, TIFF, GIF, HEIC/HEIF"

# PyAV demuxer names, and the codecs that make a Matroska file a WebM file.
MP4_DEMUXER = "mov,mp4,m4a,3gp,3g2,mj2"
MATROSKA_DEMUXER = "matroska,webm"
WEBM_VIDEO_CODECS = {"vp8", "vp9", "av1"}
WEBM_AUDIO_CODECS = {"opus", "vorbis"}

_NAMES = {
    "mp4": "MP4/MOV",
    "webm": "WebM",
    "matroska": "Matroska (MKV)",
    "wav": "WAV",
    "mp3": "MP3",
    "h264": "H.264",
    "hevc": "H.265",
    "aac": "AAC",
}


# Kling O3 elements: reference images per element (SPEC §2.2), counted on what was fetched.
MAX_REFS_PER_ELEMENT = 3


# --- the entry point --------------------------------------------------------------------------------


def check_media_limits(spec: ModelSpec, req: VideoRequest, probed: Probed) -> None:
    """Raise one InvalidRequest listing every limit the probed inputs break; return None if all pass.

    The limits are the model record's (`spec.inputs`); counts the body already shows were checked by
    validation, so only what needs the files is checked here.  `probed` maps a request field
    ("reference_video_urls", "elements.frontal_image_url", ...) to its (file, info) pairs in request order;
    each MediaFile.field is the exact label used in messages.
    """
    inputs = spec.inputs
    issues: list[Issue] = []
    for field, items in probed.items():
        for file, info in items:
            if isinstance(info, ImageInfo):
                max_bytes = inputs.reference_image_max_bytes if field == "reference_image_urls" else None
                issues += _image_issues(file, info, inputs.images, max_bytes)
    if inputs.reference_videos is not None:
        issues += _clip_issues(probed.get("reference_video_urls", []), inputs.reference_videos, VideoInfo,
                               "reference_video_urls")
    audio = list(probed.get("reference_audio_urls", []))
    if inputs.audio_url_is_reference:
        # G-SD / CHANGES §2.2: here audio_url is a one-item reference_audio_urls (its count and limits too).
        audio = list(probed.get("audio_url", [])) + audio
    if inputs.reference_audios is not None:
        issues += _clip_issues(audio, inputs.reference_audios, AudioInfo, "reference_audio_urls")
    if inputs.audio_url is not None:
        issues += _clip_issues(probed.get("audio_url", []), inputs.audio_url, AudioInfo, "audio_url")
    if inputs.video_url is not None:
        issues += _clip_issues(probed.get("video_url", []), inputs.video_url, VideoInfo, "video_url")
    issues += _source_matched_duration(req, probed)
    issues += _reference_plus_output(spec, req, probed)
    issues += _element_reference_counts(probed)
    issues = _unique(issues)
    if issues:
        first = issues[0]
        more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
        raise InvalidRequest(issues, message=f"{first.label()}: {first.message}{more}")


# --- checks -----------------------------------------------------------------------------------------


def _image_issues(file: MediaFile, info: ImageInfo, rule: ImageLimits, max_bytes: int | None) -> list[Issue]:
    path = issue_path(file.field)
    issues = []
    if info.format.upper() not in IMAGE_FORMATS:
        issues.append(
            Issue(path, f"image format is {info.format}, accepted: {IMAGE_FORMATS_TEXT}", received=info.format)
        )
    w, h = info.width, info.height
    short = min(w, h)
    if rule.min_short_side is not None and short < rule.min_short_side:
        issues.append(
            Issue(
                path,
                f"image is {w}x{h}: the short side is {short} px, the minimum is {rule.min_short_side} px",
                code="too_small",
                received=short,
                extra={"minimum": rule.min_short_side},
            )
        )
    aspect = w / h if h else 0.0
    too_narrow = rule.min_aspect is not None and aspect <= rule.min_aspect
    too_wide = rule.max_aspect is not None and aspect >= rule.max_aspect
    if too_narrow or too_wide:
        low = "0" if rule.min_aspect is None else _num(rule.min_aspect)
        high = "∞" if rule.max_aspect is None else _num(rule.max_aspect)
        limit = rule.min_aspect if too_narrow else rule.max_aspect
        issues.append(
            Issue(
                path,
                f"image is {w}x{h}: aspect ratio W/H is {_num(aspect, limit)}, it must be strictly between "
                f"{low} and {high}",
                received=round(aspect, 4),
            )
        )
    issues += _size_issue(file, _tightest(min, rule.max_bytes, max_bytes), path)
    return issues


CLIP_NOUNS = {("reference_video_urls", VideoInfo): "clip", ("reference_audio_urls", AudioInfo): "audio clip",
              ("audio_url", AudioInfo): "audio", ("video_url", VideoInfo): "video"}


def _clip_issues(items: Sequence[tuple[MediaFile, Info]], rule: ClipLimits, kind: type, field: str) -> list[Issue]:
    """Count, per-clip format/codec/duration/size, and the total duration of a list of clips."""
    issues = []
    noun = CLIP_NOUNS[(field, kind)]
    if len(items) > rule.max_count:
        issues.append(
            Issue(
                [field],
                f"{len(items)} {noun}s given, the limit is {rule.max_count}",
                code="too_big",
                extra={"maximum": rule.max_count},
            )
        )
    total = 0.0
    for file, info in items:
        path = issue_path(file.field)
        if not isinstance(info, kind):
            expected = "a video" if kind is VideoInfo else "an audio file"
            issues.append(Issue(path, f"expected {expected}, got {type(info).__name__.removesuffix('Info').lower()}"))
            continue
        total += info.duration
        issues += _format_issues(info, rule, path)
        issues += _duration_issues(info.duration, rule, noun, path)
        issues += _size_issue(file, rule.max_bytes, path)
    if rule.max_total_s is not None and len(items) > 1 and total > rule.max_total_s + DURATION_SLACK_S:
        issues.append(
            Issue(
                [field],
                f"{noun}s total {_num(total, rule.max_total_s)} s, the limit is {_num(rule.max_total_s)} s",
                code="too_big",
                received=round(total, 3),
                extra={"maximum": rule.max_total_s},
            )
        )
    return issues


def _format_issues(info: VideoInfo | AudioInfo, rule: ClipLimits, path: list[str | int]) -> list[Issue]:
    issues = []
    kind = _container_kind(info)
    if kind not in rule.containers:
        accepted = ", ".join(_NAMES.get(c, c) for c in sorted(rule.containers, key=list(_NAMES).index))
        issues.append(Issue(path, f"container is {_NAMES.get(kind, kind)}, accepted: {accepted}", received=kind))
    if isinstance(info, VideoInfo):
        if rule.video_codecs is not None and info.video_codec not in rule.video_codecs:
            accepted = ", ".join(_NAMES.get(c, c) for c in sorted(rule.video_codecs))
            issues.append(
                Issue(path, f"video codec is {info.video_codec}, accepted: {accepted}", received=info.video_codec)
            )
        if rule.audio_codecs is not None and info.audio_codec is not None and info.audio_codec not in rule.audio_codecs:
            accepted = ", ".join(_NAMES.get(c, c) for c in sorted(rule.audio_codecs))
            issues.append(
                Issue(path, f"audio codec is {info.audio_codec}, accepted: {accepted}", received=info.audio_codec)
            )
    return issues


def _duration_issues(seconds: float, rule: ClipLimits, noun: str, path: list[str | int]) -> list[Issue]:
    if rule.max_s is not None and seconds > rule.max_s + DURATION_SLACK_S:
        return [
            Issue(
                path,
                f"{noun} is {_num(seconds, rule.max_s)} s, the limit is {_num(rule.max_s)} s",
                code="too_big",
                received=round(seconds, 3),
                extra={"maximum": rule.max_s},
            )
        ]
    if rule.min_s is not None and seconds < rule.min_s - DURATION_SLACK_S:
        return [
            Issue(
                path,
                f"{noun} is {_num(seconds, rule.min_s)} s, the minimum is {_num(rule.min_s)} s",
                code="too_small",
                received=round(seconds, 3),
                extra={"minimum": rule.min_s},
            )
        ]
    return []


def _size_issue(file: MediaFile, max_bytes: int | None, path: list[str | int]) -> list[Issue]:
    if max_bytes is None or file.size <= max_bytes:
        return []
    return [
        Issue(
            path,
            f"file is {_num(file.size / MB, max_bytes / MB)} MB, the limit is {_num(max_bytes / MB)} MB",
            code="too_big",
            received=file.size,
            extra={"maximum": max_bytes},
        )
    ]


SOURCE_MATCHED_SECONDS = (4.0, 30.0)  # SPEC §4: a source-matched output lasts as long as its source, 4–30 s


def _source_matched_duration(req: VideoRequest, probed: Probed) -> list[Issue]:
    """`duration: "auto"|"-1"` copies the source's length, which must itself be a length the model makes."""
    if req.duration != "auto":
        return []
    total = sum(info.duration for _, info in probed.get("reference_video_urls", []) if isinstance(info, VideoInfo))
    low, high = SOURCE_MATCHED_SECONDS
    if low - DURATION_SLACK_S <= total <= high + DURATION_SLACK_S:
        return []
    return [Issue(path=["duration"], received=req.duration,
                  message=f"a source-matched duration needs reference videos of {_num(low)}–{_num(high)} s "
                          f"in total, got {_num(total)} s")]


def _reference_plus_output(spec: ModelSpec, req: VideoRequest, probed: Probed) -> list[Issue]:
    """Wan 3.0: measured reference video + requested output within the model's limit (one rule, in validation)."""
    if spec.max_reference_plus_output_s is None or req.duration_s is None:
        return []
    total = sum(info.duration for _, info in probed.get("reference_video_urls", []) if isinstance(info, VideoInfo))
    return reference_plus_output_issues(spec, round(total, 2), req.duration_s) if total else []


def _element_reference_counts(probed: Probed) -> list[Issue]:
    """Kling O3 elements: reference images per element, counted on the fetched inputs (SPEC §2.2)."""
    refs_per_element: dict[int, int] = {}
    for file, _ in probed.get("elements.reference_image_urls", []):
        index = issue_path(file.field)[1]
        if isinstance(index, int):
            refs_per_element[index] = refs_per_element.get(index, 0) + 1
    return [
        Issue(["elements", index, "reference_image_urls"],
              f"{refs} reference images given, the limit is {MAX_REFS_PER_ELEMENT} per element", code="too_big")
        for index, refs in sorted(refs_per_element.items()) if refs > MAX_REFS_PER_ELEMENT
    ]


# --- helpers ----------------------------------------------------------------------------------------


def _container_kind(info: VideoInfo | AudioInfo) -> str:
    """The container as the limits name it: "mp4" (MP4 and MOV share a demuxer), "webm", "matroska", "wav", "mp3"."""
    if info.container == MP4_DEMUXER:
        return "mp4"
    if info.container == MATROSKA_DEMUXER:
        # One demuxer reads both; WebM is the Matroska subset with VP8/VP9/AV1 video and Opus/Vorbis audio.
        if isinstance(info, VideoInfo):
            webm = info.video_codec in WEBM_VIDEO_CODECS and info.audio_codec in (WEBM_AUDIO_CODECS | {None})
        else:
            webm = info.codec in WEBM_AUDIO_CODECS
        return "webm" if webm else "matroska"
    return info.container


_LABEL_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def issue_path(label: str) -> list[str | int]:
    """'elements[0].reference_image_urls[2]' -> ['elements', 0, 'reference_image_urls', 2]."""
    return [int(index) if index else name for name, index in _LABEL_PART.findall(label)]


def _tightest(pick: Callable[[Iterable[float]], float], *values: float | None) -> float | None:
    """The strictest of the limits that are set (`pick` is max for minimums, min for maximums)."""
    present = [v for v in values if v is not None]
    return pick(present) if present else None


def _num(value: float, limit: float | None = None) -> str:
    """A measured number for a message: 1 decimal, or as many as it takes not to read as equal to `limit`."""
    shown = ""
    for places in (1, 2, 3, 4, 6):
        shown = f"{value:.{places}f}".rstrip("0").rstrip(".")
        if limit is None or value == limit or shown != _num(limit):
            break
    return shown


def _unique(issues: list[Issue]) -> list[Issue]:
    """The same file can break the same limit under two rules (audio_url on Seedance R2V): report it once."""
    seen: set[tuple[str, str]] = set()
    out = []
    for issue in issues:
        key = (issue.label(), issue.message)
        if key not in seen:
            seen.add(key)
            out.append(issue)
    return out
