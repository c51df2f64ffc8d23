"""Per-model validation of queue and quote requests: pure functions of (request body, model spec).

Everything that can be checked without fetching media is checked here, and every problem is reported at
once as a zod-style issue whose `path` names the field and whose `expected` lists the allowed values
(`"'5s' | '10s'"`), the form Venice's own docs UI parses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from vidgate.catalog.models import ModelSpec
from vidgate.catalog.request import MEDIA_LIST_FIELDS, MEDIA_URL_FIELDS, VideoRequest
from vidgate.catalog.workflows import Counts, uses_workflows, workflow_issues
from vidgate.errors import InvalidRequest, Issue

SOURCE_MATCHED_DURATIONS = ("-1", "auto", "Auto")
SOURCE_MATCHED_ASPECTS = ("adaptive", "auto")
UPSCALE_FACTORS = (1, 2, 4)
BITRATE_MODES = ("standard", "high")
TASK_TYPES = {"auto": "auto", "reference": "reference", "edit": "edit", "extend": "extend",
              "editing": "edit", "extension": "extend"}
CONSENT_KEYS = ("confirmed_terms_and_privacy", "confirmed_legal_right", "confirmed_screening_acknowledged")
FRAMES_PER_SECOND = 24

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


def _unsupported(path: str, spec: ModelSpec, hint: str = "") -> Issue:
    return Issue(path=[path], code="unrecognized_keys",
                 message=f"{path} is not supported by model {spec.id}{hint}")


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
    """Collects issues for one request so the client sees all its mistakes at once."""

    def __init__(self, body: dict[str, Any], spec: ModelSpec, *, for_quote: bool) -> None:
        self.body = body
        self.spec = spec
        self.for_quote = for_quote
        self.issues: list[Issue] = []

    def add(self, issue: Issue | None) -> None:
        if issue is not None:
            self.issues.append(issue)

    def present(self, name: str) -> bool:
        return self.body.get(name) is not None

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

    # --- fields -------------------------------------------------------------------------------------

    def prompt(self, name: str) -> str:
        spec = self.spec
        value = self.string(name)
        if spec.is_upscale:
            if value:
                self.add(Issue(path=[name], message=f"{name} is not accepted by {spec.id}; omit it"))
            return ""
        if value is None:
            if name == "prompt" and not self.for_quote and name not in self.body:
                self.add(Issue(path=[name], code="invalid_type", expected="string", received="undefined",
                               message="Required"))
            return ""
        if name == "prompt" and not self.for_quote and not value.strip():
            self.add(Issue(path=[name], code="too_small", message="String must contain at least 1 character(s)",
                           extra={"minimum": 1, "type": "string", "inclusive": True}))
        if len(value) > spec.prompt_limit and not self.for_quote:
            self.add(Issue(path=[name], code="too_big",
                           message=f"String must contain at most {spec.prompt_limit} character(s), "
                                   f"got {len(value)}",
                           extra={"maximum": spec.prompt_limit, "type": "string", "inclusive": True}))
        return value

    def duration(self, req: VideoRequest) -> None:
        spec = self.spec
        if spec.duration_is_auto:
            req.duration = "Auto"  # the length comes from the input video; any given value is ignored
            if self.for_quote and self.present("duration"):
                value = normalise_duration(self.body["duration"])
                if isinstance(value, str):
                    req.duration_s = duration_seconds(value)
            return
        if not self.present("duration"):
            self.add(Issue(path=["duration"], code="invalid_type", expected=expected_list(spec.durations),
                           received="undefined", message="Required"))
            return
        value = normalise_duration(self.body["duration"])
        if isinstance(value, str) and value in SOURCE_MATCHED_DURATIONS and self._source_matched_ok():
            req.duration = "auto"
            return
        if value not in spec.durations:
            self.add(_enum_issue("duration", self.body["duration"], spec.durations))
            return
        req.duration = value
        req.duration_s = duration_seconds(value)

    def _source_matched_ok(self) -> bool:
        """Seedance 2.5 R2V edit may match the source clip's length (`duration: "auto"|"-1"`)."""
        if not (self.spec.family == "seedance-2-5" and self.spec.is_reference_to_video):
            return False
        return self._has_reference_video("duration")

    def _has_reference_video(self, path: str) -> bool:
        if self.for_quote:
            if self.body.get("reference_video_total_duration") is None:
                self.add(Issue(path=["reference_video_total_duration"],
                               message=f"reference_video_total_duration is required to quote a source-matched "
                                       f"{path}"))
            return True
        if not self.body.get("reference_video_urls"):
            self.add(Issue(path=["reference_video_urls"],
                           message=f"reference_video_urls is required for a source-matched {path}"))
        return True

    def resolution(self, req: VideoRequest) -> None:
        spec = self.spec
        value = self.string("resolution")
        if value is None:
            if spec.resolutions and not spec.is_upscale:
                req.resolution = "720p" if "720p" in spec.resolutions else spec.resolutions[0]
            return
        if spec.is_upscale:
            if not self.for_quote:
                self.add(Issue(path=["resolution"], message="Use upscale_factor instead of resolution"))
            return
        req.resolution = self.choice("resolution", value, spec.resolutions,
                                     "; this model has one fixed resolution, omit it")

    def aspect_ratio(self, req: VideoRequest) -> None:
        spec = self.spec
        value = self.string("aspect_ratio")
        if value is None:
            if spec.aspect_ratios:
                req.aspect_ratio = "16:9" if "16:9" in spec.aspect_ratios else spec.aspect_ratios[0]
            return
        if value in SOURCE_MATCHED_ASPECTS and spec.family in ("seedance-2-0", "seedance-2-5") \
                and spec.is_reference_to_video:
            self._has_reference_video("aspect_ratio")
            req.aspect_ratio = "adaptive"
            return
        req.aspect_ratio = self.choice("aspect_ratio", value, spec.aspect_ratios,
                                       "; the aspect ratio comes from the input, omit aspect_ratio")

    def choice(self, name: str, value: str, allowed: list[str], hint: str) -> str | None:
        """`value` if it is in the model's list. A model without the list takes none: rejected at queue time,
        tolerated by quote (G-VID: quote accepts aspect_ratio even where queue rejects it)."""
        if not allowed:
            if not self.for_quote:
                self.add(_unsupported(name, self.spec, hint))
            return None
        if value not in allowed:
            self.add(_enum_issue(name, value, allowed))
            return None
        return value

    def audio(self, req: VideoRequest) -> None:
        spec = self.spec
        value = self.body.get("audio")
        req.audio = spec.has_audio
        if value is None:
            return
        if not isinstance(value, bool):
            self.add(Issue(path=["audio"], code="invalid_type", expected="boolean",
                           received=type(value).__name__, message="Expected boolean"))
            return
        if spec.audio_configurable:
            req.audio = value
        elif value != spec.has_audio and not self.for_quote:
            state = "always has" if spec.has_audio else "has no"
            self.add(Issue(path=["audio"],
                           message=f"audio is not configurable for model {spec.id}: it {state} audio; "
                                   "omit audio"))

    def upscale_factor(self, req: VideoRequest) -> None:
        value = self.body.get("upscale_factor")
        if not self.spec.is_upscale:
            if value is not None and not self.for_quote:
                self.add(_unsupported("upscale_factor", self.spec, "; it is for upscale models only"))
            return
        if value is None:
            req.upscale_factor = 2
            return
        if isinstance(value, bool) or value not in UPSCALE_FACTORS:
            self.add(Issue(path=["upscale_factor"], code="invalid_enum_value",
                           expected=expected_list(UPSCALE_FACTORS), received=value,
                           message=f"Invalid enum value. Expected 1 | 2 | 4, received '{value}'"))
            return
        req.upscale_factor = int(value)

    def queue_only_options(self, req: VideoRequest) -> None:
        spec = self.spec
        bitrate = self.string("bitrate_mode")
        if bitrate is not None:
            if spec.family not in ("seedance-2-0", "seedance-2-5"):
                self.add(_unsupported("bitrate_mode", spec, "; it is for Seedance 2.0/2.5 only"))
            elif bitrate not in BITRATE_MODES:
                self.add(_enum_issue("bitrate_mode", bitrate, list(BITRATE_MODES)))
            else:
                req.bitrate_mode = bitrate
        task = self.string("omni_reference_task_type")
        if task is not None:
            if not (spec.family == "seedance-2-5" and spec.is_reference_to_video):
                self.add(_unsupported("omni_reference_task_type", spec,
                                      "; it is for Seedance 2.5 reference-to-video only"))
            elif task not in TASK_TYPES:
                self.add(_enum_issue("omni_reference_task_type", task, list(TASK_TYPES)))
            else:
                req.omni_reference_task_type = TASK_TYPES[task]
        if "consents" in self.body and self.body["consents"] is not None:
            req.consents = self.consents(self.body["consents"])

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

    def accepted_media_fields(self) -> set[str]:
        """Which media fields this model takes (the rest are rejected at queue time)."""
        spec = self.spec
        fields: set[str] = set()
        if spec.model_type == "image-to-video":
            fields |= {"image_url", "end_image_url", "keyframes"}
        if spec.is_reference_to_video:
            fields |= {"reference_image_urls", "reference_video_urls", "image_references", "video_references"}
            if spec.audio_input or spec.constraints.get("per_reference_audio"):
                fields.add("reference_audio_urls")
            if spec.family == "kling-o3" or spec.id.startswith("kling-v3"):
                fields |= {"elements", "scene_image_urls"}
        if spec.audio_input:
            fields.add("audio_url")
        if spec.video_input:
            fields.add("video_url")
        fields |= set(spec.entry.get("vidgate", {}).get("media_fields", []))
        return fields

    def list_limit(self, name: str) -> int:
        family = self.spec.family
        if name == "reference_image_urls":
            return 9 if family == "seedance-2-0" else 30
        if name in ("reference_video_urls", "reference_audio_urls"):
            return 3 if family == "seedance-2-0" else 10
        if name == "reference_document_urls":
            return 1
        return 4  # scene_image_urls, elements

    def media(self, req: VideoRequest) -> None:
        body, spec = self.body, self.spec
        accepted = self.accepted_media_fields()
        for name, kind in MEDIA_URL_FIELDS.items():
            if body.get(name) is None:
                continue
            if name not in accepted:
                if not self.for_quote:
                    self.add(_unsupported(name, spec))
                continue
            issue = check_media_url(body[name], [name], kind)
            self.add(issue)
            if issue is None:
                req.media[name] = body[name]
        for name, kind in MEDIA_LIST_FIELDS.items():
            if body.get(name) is None:
                continue
            if name not in accepted:
                if not self.for_quote:
                    self.add(_unsupported(name, spec))
                continue
            self.url_list(req, name, kind, self.list_limit(name))
        if body.get("elements") is not None and "elements" in accepted:
            self.elements(req)
        elif body.get("elements") is not None and not self.for_quote:
            self.add(_unsupported("elements", spec))
        if body.get("keyframes") is not None and "keyframes" in accepted:
            self.keyframes(req)
        elif body.get("keyframes") is not None and not self.for_quote:
            self.add(_unsupported("keyframes", spec))
        if not self.for_quote:
            self.requiredness(req)

    def url_list(self, req: VideoRequest, name: str, kind: str, limit: int) -> None:
        value = self.body[name]
        if not isinstance(value, list):
            self.add(Issue(path=[name], code="invalid_type", expected="array", received=type(value).__name__,
                           message="Expected array"))
            return
        if len(value) > limit:
            self.add(Issue(path=[name], code="too_big", extra={"maximum": limit, "type": "array"},
                           message=f"{name} has {len(value)} items, the limit for {self.spec.id} is {limit}"))
            return
        ok = True
        for i, item in enumerate(value):
            issue = check_media_url(item, [name, i], kind)
            self.add(issue)
            ok = ok and issue is None
        if ok and value:
            req.media[name] = list(value)

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

    def elements(self, req: VideoRequest) -> None:
        items = self.object_items("elements", 4)
        if items is None:
            return
        for i, element in items:
            self.required_media(element, ["elements", i], "frontal_image_url", "image")
            refs = element.get("reference_image_urls") or []
            if not isinstance(refs, list) or len(refs) > 3:
                self.add(Issue(path=["elements", i, "reference_image_urls"],
                               message="Each element takes 1 to 3 reference images"))
            else:
                for j, ref in enumerate(refs):
                    self.add(check_media_url(ref, ["elements", i, "reference_image_urls", j], "image"))
            if element.get("video_url") is not None:
                self.add(check_media_url(element["video_url"], ["elements", i, "video_url"], "video"))
        req.media["elements"] = [element for _, element in items]

    def keyframes(self, req: VideoRequest) -> None:
        items = self.object_items("keyframes", 10)
        if items is None:
            return
        max_index = (req.duration_s or 0) * FRAMES_PER_SECOND
        seen: set[int] = set()
        for i, frame in items:
            self.required_media(frame, ["keyframes", i], "image_url", "image")
            index = frame.get("frame_index")
            if isinstance(index, bool) or not isinstance(index, int) or index < 0:
                self.add(Issue(path=["keyframes", i, "frame_index"], expected="integer >= 0",
                               message="frame_index must be an integer >= 0"))
                continue
            if req.duration_s is not None and index > max_index:
                self.add(Issue(path=["keyframes", i, "frame_index"],
                               message=f"frame_index {index} is past the end: the limit is duration x 24 = "
                                       f"{max_index}"))
            if index in seen:
                self.add(Issue(path=["keyframes", i, "frame_index"],
                               message=f"frame_index {index} is used twice; each must be unique"))
            seen.add(index)
        req.media["keyframes"] = [frame for _, frame in items]

    def requiredness(self, req: VideoRequest) -> None:
        """Inputs a model cannot work without (SPEC §2.2, §4, §6)."""
        spec, body = self.spec, self.body
        if spec.is_upscale or spec.is_video_to_video:
            if body.get("video_url") is None:
                self.add(Issue(path=["video_url"], message=f"video_url is required for model {spec.id}"))
            return
        if spec.is_reference_to_video:
            refs = ("reference_image_urls", "reference_video_urls", "image_references", "video_references",
                    "elements", "scene_image_urls", "image_url")
            if not any(body.get(r) for r in refs):
                self.add(Issue(path=["reference_image_urls"],
                               message="At least one reference is required for this model"))
            if body.get("reference_audio_urls") and not (
                body.get("reference_image_urls") or body.get("reference_video_urls")
            ):
                self.add(Issue(path=["reference_audio_urls"],
                               message="reference_audio_urls must be paired with at least one reference image "
                                       "or reference video; audio-only references are rejected"))
            if spec.family == "kling-o3":
                self.kling_totals()
            return
        if spec.model_type == "image-to-video" and body.get("image_url") is None and not body.get("keyframes"):
            self.add(Issue(path=["image_url"], message=f"image_url is required for model {spec.id}"))

    def workflow(self, req: VideoRequest) -> None:
        """Seedance R2V (SPEC §4): every `<Image N>`/`<Video N>`/`<Audio N>` tag names an input the request has,
        and an explicit edit/extend task type has a clip to work on (catalog/workflows.py)."""
        if uses_workflows(self.spec.id):
            self.issues += workflow_issues(req.prompt, req.omni_reference_task_type, Counts.of_body(self.body))

    def kling_totals(self) -> None:
        """Kling O3 R2V (G-R2V): frames + elements + scene images <= 7; elements <= 3 with a frame."""
        body = self.body
        frames = sum(1 for f in ("image_url", "end_image_url") if body.get(f))
        elements = len(body.get("elements") or [])
        scenes = len(body.get("scene_image_urls") or [])
        if frames + elements + scenes > 7:
            self.add(Issue(path=["elements"],
                           message=f"first/last frames + elements + scene images total {frames + elements + scenes}"
                                   ", the limit is 7"))
        if frames and elements > 3:
            self.add(Issue(path=["elements"],
                           message=f"with a start or end frame at most 3 elements are allowed, got {elements}"))
        prompt = body.get("prompt") or ""
        for token, count, what in (("Element", elements, "elements"), ("Image", scenes, "scene_image_urls")):
            for m in re.finditer(rf"@{token}(\d+)", prompt):
                n = int(m.group(1))
                if n < 1 or n > count:
                    self.add(Issue(path=["prompt"],
                                   message=f"@{token}{n} refers to {what}[{n - 1}], but {count} were given"))


def _checked(spec: ModelSpec, body: dict[str, Any], *, for_quote: bool) -> VideoRequest:
    check = _Checker(body, spec, for_quote=for_quote)
    req = VideoRequest(model=spec.id)
    req.prompt = check.prompt("prompt")
    req.negative_prompt = check.prompt("negative_prompt")
    check.duration(req)
    check.resolution(req)
    check.aspect_ratio(req)
    check.audio(req)
    check.upscale_factor(req)
    check.media(req)
    if not for_quote:
        check.queue_only_options(req)
        check.workflow(req)
    if check.issues:
        raise InvalidRequest(check.issues, message=_summary(check.issues))
    return req


def _summary(issues: list[Issue]) -> str:
    """The top-level `error`: generic like Venice's, but naming the first field so humans see it at once."""
    first = issues[0]
    return f"Invalid request parameters: {first.label()}: {first.message}"


def validate_queue(body: dict[str, Any], spec: ModelSpec) -> VideoRequest:
    """Validate a `/video/queue` body against its model; raises InvalidRequest listing every issue."""
    return _checked(spec, body, for_quote=False)


def validate_quote(body: dict[str, Any], spec: ModelSpec) -> VideoRequest:
    """Validate a `/video/quote` body: pricing inputs are checked, other fields are tolerated."""
    req = _checked(spec, body, for_quote=True)
    issues: list[Issue] = []
    for name in ("input_height", "reference_video_total_duration"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            issues.append(Issue(path=[name], code="invalid_type", expected="number >= 0",
                                message=f"{name} must be a number >= 0"))
        elif name == "reference_video_total_duration" and value > 150:
            issues.append(Issue(path=[name], code="too_big", message=f"{name} is {value} s, the limit is 150 s"))
        else:
            setattr(req, name, float(value))
    if issues:
        raise InvalidRequest(issues, message=_summary(issues))
    return req
