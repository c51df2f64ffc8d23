"""`vidgate catalog sync`: a Venice-compatible server's `/models?type=video` as an operator catalogue file.

For a model this server already has, the listing's facts (durations, resolutions, aspect ratios, audio,
prompt limit, name, deprecation) that differ become an `update` entry; the model keeps its local media
limits, pricing and engine. A model this server lacks becomes a full record built from its listing alone:
its inputs from `model_type`/`audio_input`/`video_input`, the engine that fits its type, and, where the
server answers `/video/quote`, a `fixed` pricing rule with the server's own quote for every
resolution × duration × audio combination (else the default per-second rule, to be reviewed). The file is
meant to be read before it is loaded (`VIDGATE_CATALOG_FILE`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from vidgate.catalog.models import Catalog, ModelSpec

ENGINE_OF_TYPE = {"text-to-video": ("t2v", "procedural"), "image-to-video": ("i2v", "image"),
                  "video": ("v2v", "video")}
DEFAULT_VIDEO_INPUT = {"containers": ["mp4", "webm"], "max_s": 30}
DEFAULT_AUDIO_INPUT = {"containers": ["wav", "mp3"], "max_s": 30, "max_bytes": 15 * 1024 * 1024}
# Used for a new model whose server gives no quotes: review it.
FALLBACK_RULE = {"kind": "per_second", "rates": {"*": "0.10"}, "rounding": {"step": "0.01", "mode": "half_up"}}


class SyncError(Exception):
    """The source server's answer is not a Venice model list."""


@dataclass(frozen=True)
class SyncResult:
    data: dict[str, Any]
    unchanged: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # local models the server does not list


def listing_fields(entry: dict[str, Any]) -> dict[str, Any]:
    """The record fields a `/models` entry determines."""
    spec = entry.get("model_spec") or {}
    constraints = spec.get("constraints") or {}
    audio = "optional" if constraints.get("audio_configurable") else ("native" if constraints.get("audio") else "none")
    fields: dict[str, Any] = {
        "name": spec.get("name") or entry["id"],
        "model_type": constraints.get("model_type", "text-to-video"),
        "created": int(entry.get("created") or 0),
        "privacy": spec.get("privacy", "anonymized"),
        "durations": list(constraints.get("durations") or []),
        "resolutions": list(constraints.get("resolutions") or []),
        "aspect_ratios": list(constraints.get("aspect_ratios") or []),
        "audio": audio,
        "prompt_limit": int(constraints.get("prompt_character_limit") or 2500),
        "per_reference_audio": bool(constraints.get("per_reference_audio")),
    }
    if "uncensored" in spec:
        fields["uncensored"] = spec["uncensored"]
    dep = spec.get("deprecation")
    if isinstance(dep, dict) and dep.get("date"):
        fields["deprecation"] = {"date": dep["date"], "removes_at": dep.get("removesAt"),
                                 "auto_remap": bool(dep.get("autoRemap")), "replacement": dep.get("replacementModelId")}
    return fields


def _differences(known: ModelSpec, fields: dict[str, Any]) -> dict[str, Any]:
    current = known.model_dump(mode="json")
    changed = {k: v for k, v in fields.items() if current.get(k) != v}
    if "resolutions" in changed and known.default_resolution not in changed["resolutions"]:
        changed["default_resolution"] = changed["resolutions"][0] if changed["resolutions"] else None
    if "aspect_ratios" in changed and known.default_aspect_ratio not in changed["aspect_ratios"]:
        ratios = changed["aspect_ratios"]
        changed["default_aspect_ratio"] = ("16:9" if "16:9" in ratios else ratios[0]) if ratios else None
    return changed


def new_record(entry: dict[str, Any], fields: dict[str, Any], pricing: dict[str, Any]) -> dict[str, Any]:
    """A full record for a model known only by its listing."""
    constraints = (entry.get("model_spec") or {}).get("constraints") or {}
    task, engine = ENGINE_OF_TYPE.get(fields["model_type"], ("t2v", "procedural"))
    inputs: dict[str, Any] = {}
    if task == "i2v":
        inputs |= {"image_url": "required", "end_image_url": True}
    if constraints.get("video_input") or task == "v2v":
        inputs["video_url"] = DEFAULT_VIDEO_INPUT
    if constraints.get("audio_input"):
        inputs["audio_url"] = DEFAULT_AUDIO_INPUT
    record = {"id": entry["id"], "task": task, "engine": engine, **fields, "inputs": inputs, "pricing": pricing}
    if fields["durations"] == ["Auto"]:
        record["duration_required"] = False
    if fields["resolutions"]:
        record["default_resolution"] = "720p" if "720p" in fields["resolutions"] else fields["resolutions"][0]
    if fields["aspect_ratios"]:
        ratios = fields["aspect_ratios"]
        record["default_aspect_ratio"] = "16:9" if "16:9" in ratios else ratios[0]
    return record


def sample_quotes(client: httpx.Client, fields: dict[str, Any], model_id: str) -> dict[str, Any] | None:
    """A `fixed` rule of the server's quote for every resolution × duration × audio state (None if it gives none)."""
    prices: dict[str, dict[str, Any]] = {}
    audio_states = [True, False] if fields["audio"] == "optional" else [fields["audio"] != "none"]
    for resolution in fields["resolutions"] or [None]:
        for duration in fields["durations"]:
            if duration == "Auto":
                return None  # priced from the input video: nothing to sample without one
            for audio in audio_states:
                body: dict[str, Any] = {"model": model_id, "duration": duration}
                if resolution:
                    body["resolution"] = resolution
                if fields["audio"] == "optional":
                    body["audio"] = audio
                response = client.post("/video/quote", json=body)
                if response.status_code != 200:
                    return None
                price = str(response.json()["quote"])
                row = prices.setdefault(resolution or "*", {})
                if len(audio_states) == 1:
                    row[duration] = price
                else:
                    row.setdefault(duration, {})["on" if audio else "off"] = price
    return {"kind": "fixed", "prices": prices}


def sync_catalog(client: httpx.Client, local: Catalog, *, quotes: bool = True) -> SyncResult:
    response = client.get("/models", params={"type": "video"})
    response.raise_for_status()
    listed = response.json().get("data")
    if not isinstance(listed, list):
        raise SyncError("GET /models?type=video did not answer a list in `data`")
    models, update, unchanged = [], {}, []
    for entry in listed:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            raise SyncError("a /models entry has no id")
        fields = listing_fields(entry)
        known = local.get(entry["id"])
        if known is not None and known.id == entry["id"]:
            changed = _differences(known, fields)
            if changed:
                update[known.id] = changed
            else:
                unchanged.append(known.id)
            continue
        pricing = (sample_quotes(client, fields, entry["id"]) if quotes else None) or FALLBACK_RULE
        models.append(new_record(entry, fields, pricing))
    remote_ids = {e["id"] for e in listed}
    missing = [spec.id for spec in local if spec.id not in remote_ids]
    data = {"source": f"vidgate catalog sync from {client.base_url}", "models": models, "update": update}
    return SyncResult(data, unchanged, missing)
