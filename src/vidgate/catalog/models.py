"""The model catalogue: one declarative `ModelSpec` per model, built from Venice's `/models` JSON.

The default catalogue ships in the package (Venice's 2026-08-20 snapshot plus the consent-era Seedance ids);
an operator's catalogue file can add models, replace them, or remove them.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

DEFAULT_CATALOG_FILE = "venice-video-models-2026-08-20.json"
DEFAULT_PROMPT_LIMIT = 2500

# SPEC §9.2: the June-2026 Seedance ids (no longer listed by Venice) that the seed text uses.
CONSENT_ERA_SEEDANCE_IDS = {
    "seedance-2-0-text-to-video": ("Seedance 2.0", "text-to-video", False),
    "seedance-2-0-image-to-video": ("Seedance 2.0", "image-to-video", False),
    "seedance-2-0-reference-to-video": ("Seedance 2.0", "image-to-video", True),
    "seedance-2-0-fast-text-to-video": ("Seedance 2.0 Fast", "text-to-video", False),
    "seedance-2-0-fast-image-to-video": ("Seedance 2.0 Fast", "image-to-video", False),
    "seedance-2-0-fast-reference-to-video": ("Seedance 2.0 Fast", "image-to-video", True),
}
CONSENT_ERA_CREATED = 1776643200  # 2026-04-20, the CAT-APR snapshot they come from


def _consent_era_entries() -> list[dict[str, Any]]:
    entries = []
    for model_id, (name, model_type, takes_audio) in CONSENT_ERA_SEEDANCE_IDS.items():
        is_t2v = model_type == "text-to-video"
        is_r2v = "reference" in model_id
        entries.append(
            {
                "id": model_id,
                "type": "video",
                "created": CONSENT_ERA_CREATED,
                "model_spec": {
                    "privacy": "anonymized",
                    "traits": [],
                    "name": name,
                    "constraints": {
                        "model_type": model_type,
                        "aspect_ratios": (
                            ["21:9", "16:9", "4:3", "1:1", "3:4", "9:16"] if (is_t2v or is_r2v) else []
                        ),
                        "resolutions": ["720p", "480p"],
                        "durations": ["4s", "5s", "8s", "10s", "12s", "15s"],
                        "audio": True,
                        "audio_configurable": True,
                        "audio_input": takes_audio,
                        "per_reference_audio": False,
                        "video_input": False,
                        "prompt_character_limit": 3500,
                    },
                },
            }
        )
    return entries


@dataclass(frozen=True)
class ModelSpec:
    """What one model accepts, read from its catalogue entry."""

    id: str
    entry: dict[str, Any]

    @property
    def constraints(self) -> dict[str, Any]:
        return self.entry["model_spec"]["constraints"]

    @property
    def model_type(self) -> str:
        return self.constraints["model_type"]

    @property
    def name(self) -> str:
        return self.entry["model_spec"].get("name", self.id)

    @property
    def durations(self) -> list[str]:
        return list(self.constraints.get("durations", []))

    @property
    def resolutions(self) -> list[str]:
        return list(self.constraints.get("resolutions", []))

    @property
    def aspect_ratios(self) -> list[str]:
        return list(self.constraints.get("aspect_ratios", []))

    @property
    def has_audio(self) -> bool:
        return bool(self.constraints.get("audio"))

    @property
    def audio_configurable(self) -> bool:
        return bool(self.constraints.get("audio_configurable"))

    @property
    def audio_input(self) -> bool:
        return bool(self.constraints.get("audio_input"))

    @property
    def video_input(self) -> bool:
        return bool(self.constraints.get("video_input"))

    @property
    def prompt_limit(self) -> int:
        return int(self.constraints.get("prompt_character_limit") or DEFAULT_PROMPT_LIMIT)

    @property
    def is_private(self) -> bool:
        """Private (VPS-backed) models answer queue with a `download_url` (SPEC §2.2)."""
        return self.id.endswith("-private")

    @property
    def is_upscale(self) -> bool:
        return self.id == "topaz-video-upscale" or self.entry.get("vidgate", {}).get("engine") == "upscale"

    @property
    def is_text_to_video(self) -> bool:
        return self.model_type == "text-to-video"

    @property
    def is_reference_to_video(self) -> bool:
        return "reference-to-video" in self.id

    @property
    def is_transition(self) -> bool:
        return "transition" in self.id or "first-last-frame" in self.id

    @property
    def is_video_to_video(self) -> bool:
        return self.model_type == "video" and not self.is_upscale

    @property
    def duration_is_auto(self) -> bool:
        """v2v/upscale models take their length from the input (`durations: ["Auto"]`)."""
        return self.durations == ["Auto"]

    @cached_property
    def family(self) -> str:
        """Model family, used for family-wide input limits (Seedance 2.0 vs 2.5, Kling O3, ...)."""
        for prefix in ("seedance-2-5", "seedance-2-0", "kling-o3", "grok-imagine", "topaz"):
            if self.id.startswith(prefix):
                return prefix
        return self.id.split("-")[0]

    @property
    def engine(self) -> str:
        """The engine that renders this model; an operator's catalogue may set `vidgate.engine`."""
        explicit = self.entry.get("vidgate", {}).get("engine")
        if explicit:
            return explicit
        if self.is_upscale:
            return "upscale"
        if self.model_type == "video":
            return "video"
        if self.is_reference_to_video:
            return "reference"
        if self.model_type == "image-to-video":
            return "image"
        return "procedural"

    @property
    def deprecation(self) -> dict[str, Any] | None:
        return self.entry["model_spec"].get("deprecation")

    def public_entry(self) -> dict[str, Any]:
        """The entry as `GET /models` shows it (our own `vidgate` extension key removed)."""
        out = {k: v for k, v in self.entry.items() if k != "vidgate"}
        out.setdefault("object", "model")
        out.setdefault("owned_by", "venice.ai")
        out.setdefault("type", "video")
        return out


class Catalog:
    """The set of models this server offers, in catalogue order."""

    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self._models: dict[str, ModelSpec] = {}
        for entry in entries:
            self._models[entry["id"]] = ModelSpec(entry["id"], entry)

    def get(self, model_id: str) -> ModelSpec | None:
        return self._models.get(model_id)

    def __contains__(self, model_id: str) -> bool:
        return model_id in self._models

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    def public_list(self) -> list[dict[str, Any]]:
        return [spec.public_entry() for spec in self._models.values()]


def _default_entries() -> list[dict[str, Any]]:
    text = resources.files("vidgate.catalog").joinpath("data", DEFAULT_CATALOG_FILE).read_text()
    entries: list[dict[str, Any]] = json.loads(text)["data"]
    ids = [e["id"] for e in entries]
    consent = _consent_era_entries()
    # Put each consent-era id next to its `-basic` sibling, so listings group them.
    for extra in consent:
        sibling = f"{extra['id']}-basic"
        at = ids.index(sibling) if sibling in ids else len(ids) - 1
        entries.insert(at, extra)
        ids.insert(at, extra["id"])
    return entries


def merge_operator_catalog(entries: list[dict[str, Any]], override: dict[str, Any]) -> list[dict[str, Any]]:
    """Apply an operator's catalogue file: `{"data": [entries to add or replace], "remove": [ids]}`.

    A replacing entry may be partial: its `model_spec.constraints` keys are merged over the original's.
    """
    result = {e["id"]: copy.deepcopy(e) for e in entries}
    for model_id in override.get("remove", []):
        result.pop(model_id, None)
    for new in override.get("data", []):
        old = result.get(new["id"])
        if old is None:
            merged = copy.deepcopy(new)
            merged.setdefault("type", "video")
            merged.setdefault("created", 0)
            merged.setdefault("model_spec", {}).setdefault("privacy", "anonymized")
            merged["model_spec"].setdefault("traits", [])
            merged["model_spec"].setdefault("name", new["id"])
        else:
            merged = copy.deepcopy(old)
            for key, value in new.items():
                if key == "model_spec":
                    spec = merged.setdefault("model_spec", {})
                    for skey, svalue in value.items():
                        if skey == "constraints":
                            spec.setdefault("constraints", {}).update(svalue)
                        else:
                            spec[skey] = svalue
                else:
                    merged[key] = value
        result[new["id"]] = merged
    return list(result.values())


def load_catalog(operator_file: Path | None = None) -> Catalog:
    entries = _default_entries()
    if operator_file is not None:
        entries = merge_operator_catalog(entries, json.loads(Path(operator_file).read_text()))
    return Catalog(entries)
