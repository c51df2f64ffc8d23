"""The model catalogue: one typed, immutable `ModelSpec` record per model, loaded from data.

A record says everything the server does with a model: what the request may carry (allowed values, which
media fields, how many of each), the limits its media must meet once fetched, whether it needs face-media
consent, whether its length comes from a source clip, its pricing rule, and the engine that renders it.
Validation (`catalog/validation.py`), the measured media limits (`media/limits.py`), pricing, consent and
render planning all read these fields; nothing is inferred from a model's id.

The shipped catalogue is `data/catalog.json` (built by `tools/build_catalog.py` from Venice's catalogue of
2026-09-29, reviewed data from then on). An operator's catalogue file (`VIDGATE_CATALOG_FILE`) has the same
shape and is applied on top:

    {"models": [{full record of a new model}, ...],       # add, or replace a shipped model whole
     "update": {"model-id": {"durations": ["5s"], ...}},   # change some fields of a shipped model
     "remove": ["model-id", ...]}

An invalid record is a `CatalogError` at startup naming the model and the field.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vidgate.catalog.price_rules import PriceRule

CATALOG_FILE = "catalog.json"
DEFAULT_PROMPT_LIMIT = 2500

Task = Literal["t2v", "i2v", "r2v", "v2v", "flf", "transition", "motion", "upscale", "multi-angle"]
ModelType = Literal["text-to-video", "image-to-video", "video"]
Container = Literal["mp4", "webm", "matroska", "wav", "mp3"]


class CatalogError(ValueError):
    """A catalogue file that cannot be loaded; the message names the file, the model and the field."""


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ImageLimits(_Record):
    """Geometry and size limits for an image; None means no limit. Aspect bounds are W/H, exclusive."""

    min_short_side: int | None = None
    min_aspect: float | None = None
    max_aspect: float | None = None
    max_bytes: int | None = None


class ClipLimits(_Record):
    """Limits for a list of video or audio clips (or a single one: `max_count` 1)."""

    containers: tuple[Container, ...]
    max_count: int = Field(default=1, ge=1)
    min_s: float | None = None
    max_s: float | None = None
    max_total_s: float | None = None
    max_bytes: int | None = None
    video_codecs: tuple[str, ...] | None = None  # None: any
    audio_codecs: tuple[str, ...] | None = None  # a video clip's audio track; None: any


class Composition(_Record):
    """Totals across a request's visual inputs (Kling O3 R2V: frames + elements + scene images)."""

    max_visual_inputs: int
    max_elements_with_frame: int


class Inputs(_Record):
    """Which media fields a model takes, how many, and the limits their fetched files must meet."""

    image_url: Literal["no", "optional", "required"] = "no"
    end_image_url: bool = False
    keyframes: int = 0  # max keyframes; 0: not accepted
    audio_url: ClipLimits | None = None
    video_url: ClipLimits | None = None  # required when set
    reference_images: int = 0  # max reference_image_urls; 0: not accepted
    reference_videos: ClipLimits | None = None
    reference_audios: ClipLimits | None = None
    reference_documents: int = 0
    elements: int = 0  # Kling O3 elements (each 1-3 reference images)
    scene_images: int = 0
    max_references: int | None = None  # all reference assets together
    # At least one reference is required (R2V); audio alone never counts.
    references_required: bool = False
    # Seedance R2V: `audio_url` is a one-item reference_audio_urls (its limits, its count, `<Audio N>`).
    audio_url_is_reference: bool = False
    # MiniMax H3 R2V: image_url/end_image_url cannot be combined with references.
    frames_exclude_references: bool = False
    composition: Composition | None = None
    images: ImageLimits = ImageLimits()  # every image field
    reference_image_max_bytes: int | None = None  # reference_image_urls only, on top of `images`
    # Published by Venice in /models constraints (reference_image_min_short_side_pixels, ...).
    listed_image_limits: bool = False

    def accepts_references(self) -> bool:
        return bool(self.reference_images or self.reference_videos or self.elements or self.scene_images)


class Deprecation(_Record):
    """Announced removal: sent as the `x-venice-model-deprecation-*` headers until `removes_at`."""

    date: str
    removes_at: str | None = None
    auto_remap: bool = False
    replacement: str | None = None


class ModelSpec(_Record):
    """One model: its public listing facts and every rule the server applies to its requests."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    name: str
    aliases: tuple[str, ...] = ()  # other ids that reach this model (the response echoes what was sent)
    family: str = ""
    task: Task
    model_type: ModelType
    created: int = 0
    privacy: Literal["private", "anonymized"] = "anonymized"
    uncensored: bool | None = None
    model_source: str | None = None
    owned_by: str = "venice.ai"

    durations: tuple[str, ...]  # ("Auto",): the length comes from the input video
    duration_required: bool = True
    # `duration: "auto"|"-1"` matches the reference clips' length (Seedance 2.5 R2V edit, SPEC §4).
    source_matched_duration: bool = False
    resolutions: tuple[str, ...] = ()
    default_resolution: str | None = None
    aspect_ratios: tuple[str, ...] = ()
    aspect_ratio_required: bool = False
    default_aspect_ratio: str | None = None
    # `aspect_ratio: "adaptive"|"auto"` takes the reference clip's shape (Seedance R2V).
    source_matched_aspect: bool = False
    audio: Literal["none", "native", "optional"] = "none"
    prompt: Literal["required", "optional", "none"] = "required"
    prompt_limit: int = Field(default=DEFAULT_PROMPT_LIMIT, ge=1)
    upscale_factors: tuple[int, ...] = ()  # upscale models: allowed `upscale_factor` values

    inputs: Inputs = Inputs()
    per_reference_audio: bool = False  # listed as Venice lists it (wan-2-7 R2V); meaning undocumented
    camera_trajectory: bool = False
    # Reference video seconds + output seconds must not exceed this (Wan 3.0: 30 s).
    max_reference_plus_output_s: float | None = None
    # Quote's reference_video_total_duration may not exceed this (the aggregate reference-video limit).
    max_quote_reference_video_s: float = 150
    bitrate_modes: bool = False  # Seedance `bitrate_mode`
    task_types: bool = False  # Seedance 2.5 `omni_reference_task_type`
    workflows: bool = False  # Seedance R2V prompt routing (Edit / Extend / Stitch)
    face_consent: bool = False  # Seedance face-media consent (SPEC §5)
    download_url: bool = False  # queue answers a signed download_url (Grok Imagine private)
    deprecation: Deprecation | None = None

    pricing: PriceRule
    engine: str

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        if self.default_resolution is not None and self.default_resolution not in self.resolutions:
            raise ValueError(f"default_resolution {self.default_resolution!r} is not one of resolutions")
        if self.default_aspect_ratio is not None and self.default_aspect_ratio not in self.aspect_ratios:
            raise ValueError(f"default_aspect_ratio {self.default_aspect_ratio!r} is not one of aspect_ratios")
        if not self.durations:
            raise ValueError("durations must list at least one value")
        if self.task == "upscale" and not self.upscale_factors:
            raise ValueError("an upscale model needs upscale_factors")
        return self

    # --- derived facts --------------------------------------------------------------------------------

    @property
    def has_audio(self) -> bool:
        return self.audio != "none"

    @property
    def audio_configurable(self) -> bool:
        return self.audio == "optional"

    @property
    def duration_from_input(self) -> bool:
        """v2v / upscale / motion models take their length from `video_url` (`durations: ["Auto"]`)."""
        return self.durations == ("Auto",)

    @property
    def is_upscale(self) -> bool:
        return self.task == "upscale"

    def public_entry(self) -> dict[str, Any]:
        """The entry as Venice's `GET /models` shows it."""
        constraints: dict[str, Any] = {
            "model_type": self.model_type,
            "aspect_ratios": list(self.aspect_ratios),
            "resolutions": list(self.resolutions),
            "durations": list(self.durations),
            "audio": self.has_audio,
            "audio_configurable": self.audio_configurable,
            "audio_input": self.inputs.audio_url is not None,
            "per_reference_audio": self.per_reference_audio,
            "video_input": self.inputs.video_url is not None,
        }
        if self.prompt_limit != DEFAULT_PROMPT_LIMIT:
            constraints["prompt_character_limit"] = self.prompt_limit
        images = self.inputs.images
        if self.inputs.listed_image_limits:
            for key, value in (("reference_image_min_short_side_pixels", images.min_short_side),
                               ("reference_image_min_aspect_ratio", images.min_aspect),
                               ("reference_image_max_aspect_ratio", images.max_aspect)):
                if value is not None:
                    constraints[key] = value
        spec: dict[str, Any] = {"privacy": self.privacy, "traits": [], "name": self.name}
        if self.uncensored is not None:
            spec["uncensored"] = self.uncensored
        if self.model_source is not None:
            spec["modelSource"] = self.model_source
        spec["constraints"] = constraints
        if self.deprecation is not None:
            dep: dict[str, Any] = {"autoRemap": self.deprecation.auto_remap, "date": self.deprecation.date}
            if self.deprecation.removes_at:
                dep["removesAt"] = self.deprecation.removes_at
            if self.deprecation.replacement:
                dep["replacementModelId"] = self.deprecation.replacement
            spec["deprecation"] = dep
        return {"id": self.id, "object": "model", "created": self.created, "owned_by": self.owned_by,
                "type": "video", "model_spec": spec}


class Catalog:
    """The models this server offers, in catalogue order, plus the ids it has retired."""

    def __init__(self, models: list[ModelSpec], retired: dict[str, str] | None = None) -> None:
        self._models: dict[str, ModelSpec] = {}
        self._by_id: dict[str, ModelSpec] = {}
        for spec in models:
            self._models[spec.id] = spec
            self._by_id[spec.id] = spec
            for alias in spec.aliases:
                self._by_id[alias] = spec
        self.retired: dict[str, str] = dict(retired or {})  # id -> when/why, answered 410

    def get(self, model_id: str) -> ModelSpec | None:
        """The model for an id or one of its aliases."""
        return self._by_id.get(model_id)

    def __contains__(self, model_id: str) -> bool:
        return model_id in self._by_id

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    def public_list(self) -> list[dict[str, Any]]:
        return [spec.public_entry() for spec in self._models.values()]

    def with_engine(self, model_ids: set[str], engine: str) -> Catalog:
        """A new catalogue whose `model_ids` are rendered by `engine` (e.g. bound to local weights)."""
        models = [spec.model_copy(update={"engine": engine}) if spec.id in model_ids else spec for spec in self]
        return Catalog(models, self.retired)


def _error_text(source: str, model_id: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "record"
        parts.append(f"{where}: {err['msg']}")
    return f"{source}: model {model_id!r} is invalid: " + "; ".join(parts)


def parse_record(data: Any, source: str) -> ModelSpec:
    """One record from JSON data; a CatalogError naming the model and the field if it is invalid."""
    model_id = data.get("id", "?") if isinstance(data, dict) else "?"
    try:
        return ModelSpec.model_validate(data)
    except ValidationError as exc:
        raise CatalogError(_error_text(source, model_id, exc)) from None


def _read_json(path: Path | str, text: str | None = None) -> dict[str, Any]:
    try:
        data = json.loads(text if text is not None else Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CatalogError(f"{path}: cannot read the catalogue file: {exc}") from None
    if not isinstance(data, dict):
        raise CatalogError(f"{path}: a catalogue file is a JSON object with a \"models\" list")
    return data


def shipped_catalog_data() -> dict[str, Any]:
    text = resources.files("vidgate.catalog").joinpath("data", CATALOG_FILE).read_text()
    return _read_json(CATALOG_FILE, text)


def apply_operator_catalog(base: dict[str, Any], override: dict[str, Any], source: str) -> dict[str, Any]:
    """The shipped records with an operator's `models` / `update` / `remove` applied (raw data, pre-parse)."""
    unknown = set(override) - {"models", "update", "remove", "retired", "source", "generatedAt"}
    if unknown:
        raise CatalogError(f"{source}: unknown top-level key(s) {sorted(unknown)}; use models, update, remove")
    records = {r["id"]: r for r in base["models"]}
    for model_id in override.get("remove", []):
        if model_id not in records:
            raise CatalogError(f"{source}: remove names {model_id!r}, which is not in the catalogue")
        del records[model_id]
    for model_id, fields in override.get("update", {}).items():
        if model_id not in records:
            raise CatalogError(f"{source}: update names {model_id!r}, which is not in the catalogue")
        if not isinstance(fields, dict) or "id" in fields:
            raise CatalogError(f"{source}: update of {model_id!r} must be an object of fields (without id)")
        records[model_id] = {**records[model_id], **fields}
    for record in override.get("models", []):
        if not isinstance(record, dict) or "id" not in record:
            raise CatalogError(f"{source}: every entry of models needs an id")
        records[record["id"]] = record
    retired = {**base.get("retired", {}), **override.get("retired", {})}
    return {"models": list(records.values()), "retired": retired}


def catalog_from_data(data: dict[str, Any], source: str) -> Catalog:
    models = [parse_record(r, source) for r in data.get("models", [])]
    seen: dict[str, str] = {}
    for spec in models:
        for name in (spec.id, *spec.aliases):
            if name in seen:
                raise CatalogError(f"{source}: id {name!r} is used by both {seen[name]!r} and {spec.id!r}")
            seen[name] = spec.id
    return Catalog(models, {k: v for k, v in data.get("retired", {}).items() if k not in seen})


def load_catalog(operator_file: Path | None = None) -> Catalog:
    """The shipped catalogue, with the operator's file applied; raises CatalogError if any record is bad."""
    data = shipped_catalog_data()
    source = CATALOG_FILE
    if operator_file is not None:
        source = str(operator_file)
        data = apply_operator_catalog(data, _read_json(operator_file), source)
    return catalog_from_data(data, source)
