"""Per-model validation of queue and quote requests: pure functions of (request body, model spec).

Everything that can be checked without fetching media is checked here, and every problem is reported at
once as a zod-style issue whose `path` names the field and whose `expected` lists the allowed values
(`"'5s' | '10s'"`), the form Venice's own docs UI parses.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from typing import Any

from vidgate.catalog.models import ModelSpec
from vidgate.catalog.request import MEDIA_LIST_FIELDS, MEDIA_URL_FIELDS, CameraKeyframe, VideoRequest
from vidgate.catalog.workflows import Counts, workflow_issues
from vidgate.errors import InvalidRequest, Issue
from vidgate.webhooks.targets import url_problem

SOURCE_MATCHED_DURATIONS = ("-1", "auto", "Auto")
SOURCE_MATCHED_ASPECTS = ("adaptive", "auto")
BITRATE_MODES = ("standard", "high")
TASK_TYPES = {"auto": "auto", "reference": "reference", "edit": "edit", "extend": "extend",
              "editing": "edit", "extension": "extend"}
CONSENT_KEYS = ("confirmed_terms_and_privacy", "confirmed_legal_right", "confirmed_screening_acknowledged")
FRAMES_PER_SECOND = 24
CAMERA_KEYS = ("time", "azimuth", "elevation", "distance")
CAMERA_POINTS = (2, 12)
MAX_AZIMUTH_TRAVEL = 11520  # 32 turns of total absolute azimuth travel (CHANGES §2.2, GUESS)
ELEMENT_REFERENCE_IMAGES = 3
MAX_SEED = 2**32 - 1
ANON_USER_ID_MAX = 128

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[^;,]*)*)(?P<b64>;base64)?,")
_HTTP_URL = re.compile(r"^https?://[^\s/?#]+[^\s]*$", re.IGNORECASE)


def expected_list(values: Iterable[Any]) -> str:
    """`"'5s' | '10s'"`: the allowed values in single quotes, as Venice writes them."""
    return " | ".join(f"'{v}'" for v in values)


def _enum_issue(path: str, value: Any, allowed: list[str]) -> Issue:
    return Issue(
        path=[path],
        code="invalid_enum_value",
        expected=expected_list(allowed),
        received=value,
        message=f"Invalid enum value. Expected {expected_list(allowed)}, received '{value}'",
    )


def normalise_duration(value: Any) -> Any:
    """Accept bare seconds ("10", 10) as well as "10s" (G-UPS sends bare numbers)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and float(value).is_integer():
        return f"{int(value)}s" if value > 0 else str(int(value))
    if isinstance(value, str) and value.strip().isdigit():
        return f"{int(value.strip())}s"
    return value


def duration_seconds(duration: str) -> int | None:
    """"10s" -> 10; "Auto", "-1", "1 gen" -> None (the length comes from elsewhere)."""
    m = re.fullmatch(r"(\d+)s", duration)
    return int(m.group(1)) if m else None


def check_media_url(value: Any, path: list[str | int], kind: str) -> Issue | None:
    """A media field must be an http(s) URL or a `data:` URL of the right media kind."""
    if not isinstance(value, str):
        return Issue(path=path, code="invalid_type", expected="string", received=type(value).__name__,
                     message="Expected string, received " + type(value).__name__)
    if _HTTP_URL.match(value):
        return None
    m = _DATA_URL.match(value)
    if m:
        mime = (m.group("mime") or "").lower()
        if kind in ("image", "video", "audio") and not mime.startswith(kind + "/"):
            return Issue(path=path, message=f"data URL must have a {kind}/* media type, got '{mime or 'none'}'")
        if not m.group("b64"):
            return Issue(path=path, message="data URL must be base64-encoded (data:<type>;base64,<data>)")
        if len(value) == m.end():
            return Issue(path=path, message="data URL has no data")
        return None
    return Issue(path=path, message="Must be a URL (http/https) or a data URL (data:...)")


class _Checker:
    """Collects issues for one request so the client sees all its mistakes at once.

    Each method checks one field against the model's record and returns the field's validated value."""

    def __init__(self, body: dict[str, Any], spec: ModelSpec, *, for_quote: bool) -> None:
        self.body = body
        self.spec = spec
        self.inputs = spec.inputs
        self.for_quote = for_quote
        self.issues: list[Issue] = []

    def add(self, issue: Issue | None) -> None:
        if issue is not None:
            self.issues.append(issue)

    def present(self, name: str) -> bool:
        return self.body.get(name) is not None

    def refuse(self, name: str, hint: str = "", message: str | None = None) -> None:
        """A field this model does not take: rejected at queue time, tolerated by quote (G-VID)."""
        if not self.for_quote:
            self.add(Issue(path=[name], code="unrecognized_keys",
                           message=message or f"{name} is not supported by model {self.spec.id}{hint}"))

    def string(self, name: str) -> str | None:
        value = self.body.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            self.add(Issue(path=[name], code="invalid_type", expected="string",
                           received=type(value).__name__,
                           message=f"Expected string, received {type(value).__name__}"))
            return None
        return value

    def required(self, name: str, expected: str = "string") -> None:
        self.add(Issue(path=[name], code="invalid_type", expected=expected, received="undefined", message="Required"))

    # --- fields -------------------------------------------------------------------------------------

    def prompt(self, name: str) -> str:
        spec = self.spec
        value = self.string(name)
        if spec.prompt == "none":
            if value:
                self.add(Issue(path=[name], message=f"{name} is not accepted by {spec.id}; omit it"))
            return ""
        if value is None:
            if name == "prompt" and spec.prompt == "required" and not self.for_quote and name not in self.body:
                self.required(name)
            return ""
        if name == "prompt" and spec.prompt == "required" and not self.for_quote and not value.strip():
            self.add(Issue(path=[name], code="too_small", message="String must contain at least 1 character(s)",
                           extra={"minimum": 1, "type": "string", "inclusive": True}))
        if len(value) > spec.prompt_limit and not self.for_quote:
            self.add(Issue(path=[name], code="too_big",
                           message=f"String must contain at most {spec.prompt_limit} character(s), "
                                   f"got {len(value)}",
                           extra={"maximum": spec.prompt_limit, "type": "string", "inclusive": True}))
        return value

    def duration(self) -> tuple[str | None, int | None]:
        """(duration, whole seconds); seconds is None when the length comes from a source clip."""
        spec = self.spec
        if spec.duration_from_input:
            # The length comes from the input video; "Auto" or a number of seconds are both accepted (CHANGES
            # §2.3); quote may send the input's seconds to price it.
            if self.for_quote and self.present("duration"):
                value = normalise_duration(self.body["duration"])
                if isinstance(value, str):
                    return "Auto", duration_seconds(value)
            return "Auto", None
        if not self.present("duration"):
            if spec.duration_required:
                self.required("duration", expected_list(spec.durations))
            return None, None
        value = normalise_duration(self.body["duration"])
        if isinstance(value, str) and value in SOURCE_MATCHED_DURATIONS and spec.source_matched_duration:
            self.need_reference_video("duration")
            return "auto", None
        if value not in spec.durations:
            self.add(_enum_issue("duration", self.body["duration"], list(spec.durations)))
            return None, None
        return value, duration_seconds(value)

    def need_reference_video(self, path: str) -> None:
        """A source-matched duration or aspect needs the source clip (or, for quote, its length)."""
        if self.for_quote:
            if self.body.get("reference_video_total_duration") is None:
                self.add(Issue(path=["reference_video_total_duration"],
                               message=f"reference_video_total_duration is required to quote a source-matched "
                                       f"{path}"))
        elif not self.body.get("reference_video_urls"):
            self.add(Issue(path=["reference_video_urls"],
                           message=f"reference_video_urls is required for a source-matched {path}"))

    def resolution(self) -> str | None:
        spec = self.spec
        value = self.string("resolution")
        if spec.is_upscale:
            if value is not None and not self.for_quote:
                self.add(Issue(path=["resolution"], message="Use upscale_factor instead of resolution"))
            return None
        if value is None:
            return spec.default_resolution
        return self.choice("resolution", value, spec.resolutions, "; this model has one fixed resolution, omit it")

    def aspect_ratio(self) -> str | None:
        spec = self.spec
        value = self.string("aspect_ratio")
        if value is None:
            if spec.aspect_ratio_required and spec.aspect_ratios and "aspect_ratio" not in self.body:
                if not self.for_quote:
                    self.required("aspect_ratio", expected_list(spec.aspect_ratios))
                return None
            return spec.default_aspect_ratio
        if value in SOURCE_MATCHED_ASPECTS and spec.source_matched_aspect:
            self.need_reference_video("aspect_ratio")
            return "adaptive"
        return self.choice("aspect_ratio", value, spec.aspect_ratios,
                           "; the aspect ratio comes from the input, omit aspect_ratio")

    def choice(self, name: str, value: str, allowed: tuple[str, ...], hint: str) -> str | None:
        """`value` if it is in the model's list. A model without the list takes none: rejected at queue time,
        tolerated by quote (G-VID: quote accepts aspect_ratio even where queue rejects it)."""
        if not allowed:
            self.refuse(name, hint)
            return None
        if value not in allowed:
            self.add(_enum_issue(name, value, list(allowed)))
            return None
        return value

    def audio(self) -> bool:
        spec = self.spec
        value = self.body.get("audio")
        if value is None:
            return spec.has_audio
        if not isinstance(value, bool):
            self.add(Issue(path=["audio"], code="invalid_type", expected="boolean",
                           received=type(value).__name__, message="Expected boolean"))
            return spec.has_audio
        if spec.audio_configurable:
            return value
        if value != spec.has_audio and not self.for_quote:
            state = "always has" if spec.has_audio else "has no"
            self.add(Issue(path=["audio"],
                           message=f"audio is not configurable for model {spec.id}: it {state} audio; omit audio"))
        return spec.has_audio

    def upscale_factor(self) -> int | None:
        value = self.body.get("upscale_factor")
        factors = self.spec.upscale_factors
        if not factors:
            if value is not None:
                self.refuse("upscale_factor", "; it is for upscale models only")
            return None
        if value is None:
            return 2 if 2 in factors else factors[0]
        if isinstance(value, bool) or value not in factors:
            allowed = " | ".join(str(f) for f in factors)
            self.add(Issue(path=["upscale_factor"], code="invalid_enum_value", expected=expected_list(factors),
                           received=value, message=f"Invalid enum value. Expected {allowed}, received '{value}'"))
            return None
        return int(value)

    def camera_trajectory(self) -> tuple[CameraKeyframe, ...] | None:
        """2–12 keyframes of exactly time/azimuth/elevation/distance (CHANGES §2.2)."""
        if not self.present("camera_trajectory"):
            return None
        if not self.spec.camera_trajectory:
            self.refuse("camera_trajectory", "; it is for multi-angle models only")
            return None
        items = self.object_items("camera_trajectory", CAMERA_POINTS[1])
        if items is None:
            return None
        if len(self.body["camera_trajectory"]) < CAMERA_POINTS[0]:
            self.add(Issue(path=["camera_trajectory"], code="too_small", extra={"minimum": CAMERA_POINTS[0]},
                           message=f"camera_trajectory needs at least {CAMERA_POINTS[0]} keyframes"))
            return None
        points: list[CameraKeyframe] = []
        for i, item in items:
            point = self.camera_keyframe(i, item, points[-1] if points else None)
            if point is not None:
                points.append(point)
        travel = sum(abs(b.azimuth - a.azimuth) for a, b in itertools.pairwise(points))
        if travel > MAX_AZIMUTH_TRAVEL:
            self.add(Issue(path=["camera_trajectory"], code="too_big",
                           message=f"the azimuth travels {travel:g} degrees in total, the limit is "
                                   f"{MAX_AZIMUTH_TRAVEL} (32 turns)"))
        return tuple(points) if len(points) == len(items) else None

    def camera_keyframe(self, i: int, item: dict[str, Any], previous: CameraKeyframe | None) -> CameraKeyframe | None:
        path: list[str | int] = ["camera_trajectory", i]
        extra = sorted(set(item) - set(CAMERA_KEYS))
        if extra:
            self.add(Issue(path=path, code="unrecognized_keys",
                           message=f"Unrecognized key(s) in object: {', '.join(repr(k) for k in extra)}"))
        values: dict[str, float] = {}
        for key in CAMERA_KEYS:
            value = item.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                self.add(Issue(path=[*path, key], code="invalid_type", expected="number",
                               message="Required" if value is None else "Expected number"))
                continue
            values[key] = float(value)
        time_, elevation, distance = values.get("time"), values.get("elevation"), values.get("distance")
        if time_ is not None and not 0 <= time_ <= 1:
            self.add(Issue(path=[*path, "time"], message=f"time must be between 0 and 1, got {time_:g}"))
        elif time_ is not None and previous is not None and time_ <= previous.time:
            self.add(Issue(path=[*path, "time"], message=f"time must increase strictly from one keyframe to the "
                                                         f"next: {time_:g} follows {previous.time:g}"))
        if elevation is not None and not -90 <= elevation <= 90:
            self.add(Issue(path=[*path, "elevation"],
                           message=f"elevation must be between -90 and 90 degrees, got {elevation:g}"))
        if distance is not None and distance <= 0:
            self.add(Issue(path=[*path, "distance"], message=f"distance must be greater than 0, got {distance:g}"))
        if extra or len(values) < len(CAMERA_KEYS):
            return None
        return CameraKeyframe(**values)

    def seed(self) -> int | None:
        """`seed` (vidgate extension, any model): an integer 0 … 2**32 - 1."""
        value = self.body.get("seed")
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
            self.add(Issue(path=["seed"], code="invalid_type", expected=f"integer 0 … {MAX_SEED}", received=value,
                           message=f"seed must be an integer from 0 to {MAX_SEED}"))
            return None
        return value

    def queue_only_options(self) -> dict[str, Any]:
        spec = self.spec
        out: dict[str, Any] = {}
        bitrate = self.string("bitrate_mode")
        if bitrate is not None:
            if not spec.bitrate_modes:
                self.refuse("bitrate_mode", "; it is for Seedance 2.0/2.5 only")
            elif bitrate not in BITRATE_MODES:
                self.add(_enum_issue("bitrate_mode", bitrate, list(BITRATE_MODES)))
            else:
                out["bitrate_mode"] = bitrate
        task = self.string("omni_reference_task_type")
        if task is not None:
            if not spec.task_types:
                self.refuse("omni_reference_task_type", "; it is for Seedance 2.5 reference-to-video only")
            elif task not in TASK_TYPES:
                self.add(_enum_issue("omni_reference_task_type", task, list(TASK_TYPES)))
            else:
                out["omni_reference_task_type"] = TASK_TYPES[task]
        if "consents" in self.body and self.body["consents"] is not None:
            out["consents"] = self.consents(self.body["consents"])
        self.anon_user_id()
        return out

    def anon_user_id(self) -> None:
        """Accepted as Venice accepts it (CHANGES §2.3): at most 128 printable ASCII characters, no `||`."""
        value = self.string("anon_user_id")
        if value is None:
            return
        if len(value) > ANON_USER_ID_MAX or not value.isascii() or not value.isprintable() or "||" in value:
            self.add(Issue(path=["anon_user_id"], code="invalid_string", received=value[:ANON_USER_ID_MAX],
                           message=f"anon_user_id must be at most {ANON_USER_ID_MAX} printable ASCII characters "
                                   "without '||'"))

    def consents(self, value: Any) -> dict[str, Any] | None:
        """`consents.seedance` must be exactly the three booleans, all true (SPEC §5)."""
        if not isinstance(value, dict):
            self.add(Issue(path=["consents"], code="invalid_type", expected="object", message="Expected object"))
            return None
        extra = sorted(set(value) - {"seedance"})
        if extra:
            self.add(Issue(path=["consents"], code="unrecognized_keys",
                           message=f"Unrecognized key(s) in object: {', '.join(repr(k) for k in extra)}"))
        seedance = value.get("seedance")
        if seedance is None:
            return value
        if not isinstance(seedance, dict):
            self.add(Issue(path=["consents", "seedance"], code="invalid_type", expected="object",
                           message="Expected object"))
            return None
        extra = sorted(set(seedance) - set(CONSENT_KEYS))
        if extra:
            self.add(Issue(path=["consents", "seedance"], code="unrecognized_keys",
                           message=f"Unrecognized key(s) in object: {', '.join(repr(k) for k in extra)}"))
        for key in CONSENT_KEYS:
            if seedance.get(key) is not True:
                self.add(Issue(path=["consents", "seedance", key], code="invalid_literal", expected="true",
                               received=seedance.get(key, "undefined"), message="Must be true"))
        return value

    # --- media --------------------------------------------------------------------------------------

    def list_limits(self) -> dict[str, int]:
        """How many items each media field takes on this model (0: not accepted)."""
        inputs = self.inputs
        return {
            "image_url": 0 if inputs.image_url == "no" else 1,
            "end_image_url": int(inputs.end_image_url),
            "audio_url": int(inputs.audio_url is not None),
            "video_url": int(inputs.video_url is not None),
            "reference_image_urls": inputs.reference_images,
            "reference_video_urls": inputs.reference_videos.max_count if inputs.reference_videos else 0,
            "reference_audio_urls": inputs.reference_audios.max_count if inputs.reference_audios else 0,
            "reference_document_urls": inputs.reference_documents,
            "scene_image_urls": inputs.scene_images,
            "elements": inputs.elements,
            "keyframes": inputs.keyframes,
            # Accepted aliases of the reference lists (CHANGES §2.3); their items are not fetched.
            "image_references": inputs.reference_images,
            "video_references": inputs.reference_videos.max_count if inputs.reference_videos else 0,
        }

    def unsupported_message(self, name: str) -> str | None:
        """Venice's own wording where it documents one (CHANGES §9.3.1)."""
        if name == "image_url" and self.spec.task == "t2v":
            return "image_url is not supported for text to video models"
        if name == "reference_document_urls" and self.inputs.accepts_references():
            return "This model does not support reference documents"
        if name == "end_image_url" and self.spec.task == "r2v":
            return "This model does not support end_image_url"
        return None

    def media(self, duration_s: int | None) -> dict[str, Any]:
        body = self.body
        limits = self.list_limits()
        media: dict[str, Any] = {}
        for name in (*MEDIA_URL_FIELDS, *MEDIA_LIST_FIELDS, "elements", "keyframes", "image_references",
                     "video_references"):
            if body.get(name) is None:
                continue
            if not limits[name]:
                self.refuse(name, message=self.unsupported_message(name))
                continue
            if name in MEDIA_URL_FIELDS:
                issue = check_media_url(body[name], [name], MEDIA_URL_FIELDS[name])
                self.add(issue)
                if issue is None:
                    media[name] = body[name]
            elif name in MEDIA_LIST_FIELDS:
                urls = self.url_list(name, MEDIA_LIST_FIELDS[name], limits[name])
                if urls:
                    media[name] = urls
            elif name == "elements":
                media[name] = self.elements(limits[name])
            elif name == "keyframes":
                media[name] = self.keyframes(limits[name], duration_s)
            # image_references / video_references: accepted as Venice accepts them, nothing to fetch.
        if not self.for_quote:
            self.requiredness()
        return {k: v for k, v in media.items() if v is not None}

    def url_list(self, name: str, kind: str, limit: int) -> list[str] | None:
        value = self.body[name]
        if not isinstance(value, list):
            self.add(Issue(path=[name], code="invalid_type", expected="array", received=type(value).__name__,
                           message="Expected array"))
            return None
        if len(value) > limit:
            self.add(Issue(path=[name], code="too_big", extra={"maximum": limit, "type": "array"},
                           message=f"{name} has {len(value)} items, the limit for {self.spec.id} is {limit}"))
            return None
        ok = True
        for i, item in enumerate(value):
            issue = check_media_url(item, [name, i], kind)
            self.add(issue)
            ok = ok and issue is None
        return list(value) if ok and value else None

    def object_items(self, name: str, limit: int) -> list[tuple[int, dict[str, Any]]] | None:
        """The (index, object) items of an array-of-objects field, after its type and count checks."""
        value = self.body[name]
        if not isinstance(value, list):
            self.add(Issue(path=[name], code="invalid_type", expected="array", message="Expected array"))
            return None
        if len(value) > limit:
            self.add(Issue(path=[name], code="too_big", extra={"maximum": limit, "type": "array"},
                           message=f"{name} has {len(value)} items, the limit is {limit}"))
            return None
        items = []
        for i, item in enumerate(value):
            if isinstance(item, dict):
                items.append((i, item))
            else:
                self.add(Issue(path=[name, i], code="invalid_type", expected="object", message="Expected object"))
        return items

    def required_media(self, item: dict[str, Any], parent: list[str | int], name: str, kind: str) -> None:
        path = [*parent, name]
        if item.get(name) is None:
            self.add(Issue(path=path, message="Required"))
        else:
            self.add(check_media_url(item[name], path, kind))

    def elements(self, limit: int) -> list[dict[str, Any]] | None:
        items = self.object_items("elements", limit)
        if items is None:
            return None
        for i, element in items:
            self.required_media(element, ["elements", i], "frontal_image_url", "image")
            refs = element.get("reference_image_urls") or []
            if not isinstance(refs, list) or len(refs) > ELEMENT_REFERENCE_IMAGES:
                self.add(Issue(path=["elements", i, "reference_image_urls"],
                               message=f"Each element takes 1 to {ELEMENT_REFERENCE_IMAGES} reference images"))
            else:
                for j, ref in enumerate(refs):
                    self.add(check_media_url(ref, ["elements", i, "reference_image_urls", j], "image"))
            if element.get("video_url") is not None:
                self.add(check_media_url(element["video_url"], ["elements", i, "video_url"], "video"))
        return [element for _, element in items]

    def keyframes(self, limit: int, duration_s: int | None) -> list[dict[str, Any]] | None:
        items = self.object_items("keyframes", limit)
        if items is None:
            return None
        max_index = (duration_s or 0) * FRAMES_PER_SECOND
        seen: set[int] = set()
        for i, frame in items:
            self.required_media(frame, ["keyframes", i], "image_url", "image")
            index = frame.get("frame_index")
            if isinstance(index, bool) or not isinstance(index, int) or index < 0:
                self.add(Issue(path=["keyframes", i, "frame_index"], expected="integer >= 0",
                               message="frame_index must be an integer >= 0"))
                continue
            if duration_s is not None and index > max_index:
                self.add(Issue(path=["keyframes", i, "frame_index"],
                               message=f"frame_index {index} is past the end: the limit is duration x 24 = "
                                       f"{max_index}"))
            if index in seen:
                self.add(Issue(path=["keyframes", i, "frame_index"],
                               message=f"frame_index {index} is used twice; each must be unique"))
            seen.add(index)
        return [frame for _, frame in items]

    def requiredness(self) -> None:
        """Inputs a model cannot work without, and combinations it refuses (SPEC §2.2, §4, §6; CHANGES §2.2)."""
        spec, body, inputs = self.spec, self.body, self.inputs
        if inputs.video_url is not None and body.get("video_url") is None:
            self.add(Issue(path=["video_url"], message=f"video_url is required for model {spec.id}"))
        if inputs.image_url == "required" and body.get("image_url") is None and not body.get("keyframes"):
            self.add(Issue(path=["image_url"], message=f"image_url is required for model {spec.id}"))
        if not inputs.references_required:
            return
        refs = ("reference_image_urls", "reference_video_urls", "image_references", "video_references",
                "elements", "scene_image_urls", "image_url", "reference_document_urls")
        if not any(body.get(r) for r in refs):
            self.add(Issue(path=["reference_image_urls"],
                           message="At least one reference is required for this model"))
        if body.get("reference_audio_urls") and not (
            body.get("reference_image_urls") or body.get("reference_video_urls")
        ):
            self.add(Issue(path=["reference_audio_urls"],
                           message="reference_audio_urls must be paired with at least one reference image "
                                   "or reference video; audio-only references are rejected"))
        reference_lists = ("reference_image_urls", "reference_video_urls", "reference_audio_urls",
                           "reference_document_urls")
        total = sum(len(body[r]) for r in reference_lists if isinstance(body.get(r), list))
        if inputs.max_references is not None and total > inputs.max_references:
            self.add(Issue(path=["reference_image_urls"], code="too_big", extra={"maximum": inputs.max_references},
                           message=f"{total} reference assets given, the limit is {inputs.max_references} in all"))
        if inputs.frames_exclude_references and any(body.get(f) for f in ("image_url", "end_image_url")) \
                and any(body.get(r) for r in reference_lists):
            field = "image_url" if body.get("image_url") else "end_image_url"
            self.add(Issue(path=[field], message=f"{field} cannot be combined with reference media on model "
                                                 f"{spec.id}"))
        if inputs.composition is not None:
            self.composition_totals(inputs.composition.max_visual_inputs, inputs.composition.max_elements_with_frame)

    def workflow(self, prompt: str, task_type: str | None) -> None:
        """Seedance R2V (SPEC §4): every `<Image N>`/`<Video N>`/`<Audio N>` tag names an input the request has,
        and an explicit edit/extend task type has a clip to work on (catalog/workflows.py)."""
        if self.spec.workflows:
            self.issues += workflow_issues(prompt, task_type, Counts.of_body(self.body))

    def composition_totals(self, max_visual: int, max_elements_with_frame: int) -> None:
        """Kling O3 R2V (G-R2V): frames + elements + scene images <= 7; elements <= 3 with a frame."""
        body = self.body
        frames = sum(1 for f in ("image_url", "end_image_url") if body.get(f))
        elements = len(body.get("elements") or [])
        scenes = len(body.get("scene_image_urls") or [])
        if frames + elements + scenes > max_visual:
            self.add(Issue(path=["elements"],
                           message=f"first/last frames + elements + scene images total {frames + elements + scenes}"
                                   f", the limit is {max_visual}"))
        if frames and elements > max_elements_with_frame:
            self.add(Issue(path=["elements"],
                           message=f"with a start or end frame at most {max_elements_with_frame} elements are "
                                   f"allowed, got {elements}"))
        prompt = body.get("prompt") or ""
        for token, count, what in (("Element", elements, "elements"), ("Image", scenes, "scene_image_urls")):
            for m in re.finditer(rf"@{token}(\d+)", prompt):
                n = int(m.group(1))
                if n < 1 or n > count:
                    self.add(Issue(path=["prompt"],
                                   message=f"@{token}{n} refers to {what}[{n - 1}], but {count} were given"))


def _checked(spec: ModelSpec, body: dict[str, Any], *, for_quote: bool) -> tuple[_Checker, dict[str, Any]]:
    check = _Checker(body, spec, for_quote=for_quote)
    echo = body.get("model") if isinstance(body.get("model"), str) else spec.id
    values: dict[str, Any] = {"model": spec.id, "model_echo": echo}
    values["prompt"] = check.prompt("prompt")
    values["negative_prompt"] = check.prompt("negative_prompt")
    values["duration"], values["duration_s"] = check.duration()
    values["resolution"] = check.resolution()
    values["aspect_ratio"] = check.aspect_ratio()
    values["audio"] = check.audio()
    values["upscale_factor"] = check.upscale_factor()
    values["media"] = check.media(values["duration_s"])
    values["camera_trajectory"] = check.camera_trajectory()
    values["seed"] = check.seed()
    if not for_quote:
        values |= check.queue_only_options()
        check.workflow(values["prompt"], values.get("omni_reference_task_type"))
    return check, values


def _raise_if_any(issues: list[Issue]) -> None:
    if issues:
        raise InvalidRequest(issues, message=_summary(issues))


def _summary(issues: list[Issue]) -> str:
    """The top-level `error`: generic like Venice's, but naming the first field so humans see it at once."""
    first = issues[0]
    return f"Invalid request parameters: {first.label()}: {first.message}"


def validate_queue(body: dict[str, Any], spec: ModelSpec) -> VideoRequest:
    """Validate a `/video/queue` body against its model; raises InvalidRequest listing every issue."""
    check, values = _checked(spec, body, for_quote=False)
    _raise_if_any(check.issues + webhook_url_issues(body))
    return VideoRequest(**values)


def webhook_url_issues(body: dict[str, Any]) -> list[Issue]:
    """`webhook_url` (vidgate extension, README "Webhooks"): where this job's events are sent. Its shape is
    checked here, with the rest of the body, before any media is fetched or an upstream is asked; its address
    when the job is stored (webhooks/targets.py `vetted_target`). The job carries it, not the render request."""
    value = body.get("webhook_url")
    problem = None if value is None else url_problem(value)
    return [] if problem is None else [Issue(path=["webhook_url"], message=problem)]


def validate_quote(body: dict[str, Any], spec: ModelSpec) -> VideoRequest:
    """Validate a `/video/quote` body: pricing inputs are checked, other fields are tolerated."""
    check, values = _checked(spec, body, for_quote=True)
    issues = check.issues
    limits = {"input_height": None, "reference_video_total_duration": spec.max_quote_reference_video_s,
              "reference_image_count": spec.inputs.reference_images or None}
    for name, maximum in limits.items():
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            issues.append(Issue(path=[name], code="invalid_type", expected="number >= 0",
                                message=f"{name} must be a number >= 0"))
        elif maximum is not None and value > maximum:
            issues.append(Issue(path=[name], code="too_big", extra={"maximum": maximum},
                                message=f"{name} is {value:g}, the limit for {spec.id} is {maximum:g}"))
        else:
            values[name] = int(value) if name == "reference_image_count" else float(value)
    reference_s = values.get("reference_video_total_duration")
    if spec.max_reference_plus_output_s and reference_s and values["duration_s"]:
        issues += reference_plus_output_issues(spec, reference_s, values["duration_s"])
    _raise_if_any(issues)
    return VideoRequest(**values)


def reference_plus_output_issues(spec: ModelSpec, reference_s: float, output_s: int) -> list[Issue]:
    """Wan 3.0: reference video + output <= 30 s; the message names the longest output allowed (G-WAN3a)."""
    limit = spec.max_reference_plus_output_s
    if limit is None or reference_s + output_s <= limit + 1e-9:
        return []
    room = int(limit - reference_s)
    return [Issue(path=["duration"], code="too_big", received=f"{output_s}s",
                  extra={"maximum": max(room, 0)},
                  message=f"Reference video ({reference_s:g}s) plus output duration ({output_s}s) exceeds "
                          f"{limit:g}s. Choose an output duration of {max(room, 0)}s or less")]
