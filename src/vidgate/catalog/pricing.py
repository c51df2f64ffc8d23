"""Prices: a configurable table, and `quote(request, spec, table)` as a pure function of the three.

Venice publishes no per-model video prices (SPEC §10), so the defaults are ours, chosen so the documented
examples come out right: wan-2.5-preview 10 s 1080p = $0.085, wan-2-7 t2v 5 s 720p = $0.35, and the topaz
upscale tiers ($0.013 / $0.025 / $0.10 per output second by output height, x2 above 48 fps).

An operator's price file (JSON) is merged over the defaults:

    {"default": {"per_second": {"720p": 0.07}, "audio_multiplier": 1.25},
     "models": {"wan-2.5-preview-*": {"per_second": {"1080p": 0.0085}}, "my-model": {"fixed": 0.5}},
     "upscale": {"tiers": [[720, 0.013], [1080, 0.025], [null, 0.10]]}}
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from vidgate.catalog.models import ModelSpec
from vidgate.catalog.request import VideoRequest
from vidgate.errors import invalid

MICROS_PER_USD = 1_000_000
MINIMUM_PRICE_USD = Decimal("0.001")  # the OAS x-payment-info minimum

DEFAULT_PRICE_TABLE: dict[str, Any] = {
    "default": {
        # USD per output second, by resolution; "*" is used by models without a resolution choice.
        "per_second": {
            "256p": 0.02, "360p": 0.03, "480p": 0.04, "540p": 0.05, "580p": 0.05, "720p": 0.07,
            "768P": 0.07, "1080p": 0.10, "true_1080p": 0.12, "1440p": 0.15, "2K": 0.15,
            "2160p": 0.25, "4k": 0.25, "*": 0.10,
        },
        # Applied when a model's audio is optional and the request turns it on.
        "audio_multiplier": 1.25,
    },
    "models": {
        "wan-2.5-preview-*": {"per_second": {"480p": 0.004, "720p": 0.006, "1080p": 0.0085}},
    },
    "upscale": {
        # [max output height (inclusive), USD per output second]; null = no upper bound.
        "tiers": [[720, 0.013], [1080, 0.025], [None, 0.10]],
        "high_fps_threshold": 48,
        "high_fps_multiplier": 2,
        # Quotes without input_height assume this input height (a conservative estimate, G-UPS).
        "default_input_height": 1080,
    },
}


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass(frozen=True)
class PriceTable:
    table: dict[str, Any]
    # Merged rule per model id, computed once: quoting runs on every queue request.
    _rules: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def load(cls, price_file: Path | None = None) -> PriceTable:
        table = DEFAULT_PRICE_TABLE
        if price_file is not None:
            table = _merge(table, json.loads(Path(price_file).read_text()))
        return cls(table)

    def model_rule(self, model_id: str) -> dict[str, Any]:
        """The defaults with the first matching model rule (exact id first, then glob patterns) on top."""
        cached = self._rules.get(model_id)
        if cached is None:
            models: dict[str, Any] = self.table.get("models", {})
            rule = models.get(model_id)
            if rule is None:
                rule = next((r for pattern, r in models.items() if fnmatchcase(model_id, pattern)), {})
            cached = self._rules[model_id] = _merge(self.table["default"], rule)
        return cached


@dataclass(frozen=True)
class Quote:
    usd: Decimal
    billed_seconds: float

    @property
    def micros(self) -> int:
        return int(self.usd * MICROS_PER_USD)

    def as_float(self) -> float:
        return float(self.usd)


def _round(usd: float) -> Decimal:
    value = Decimal(str(usd)).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)
    return max(value, MINIMUM_PRICE_USD)


def upscale_price(table: PriceTable, *, seconds: float, input_height: float, factor: int, fps: float) -> Quote:
    """Topaz pricing: per output second by output-height tier, doubled above 48 fps (SPEC §6)."""
    rules = table.table["upscale"]
    output_height = input_height * factor
    per_second = rules["tiers"][-1][1]
    for max_height, price in rules["tiers"]:
        if max_height is None or output_height <= max_height:
            per_second = price
            break
    if fps > rules["high_fps_threshold"]:
        per_second *= rules["high_fps_multiplier"]
    billed = math.ceil(seconds)
    return Quote(_round(per_second * billed), billed)


def quote(req: VideoRequest, spec: ModelSpec, table: PriceTable) -> Quote:
    """The price of a validated request in USD (what queue charges and quote answers)."""
    if spec.is_upscale:
        if req.duration_s is None:
            if req.media.get("video_url"):
                raise invalid("video_url", "quoting from video_url is not supported by this server yet; "
                                           "send duration (seconds) and input_height instead")
            raise invalid("duration", "duration (seconds of input video) is required to quote an upscale")
        height = req.input_height or table.table["upscale"]["default_input_height"]
        return upscale_price(table, seconds=req.duration_s, input_height=height,
                             factor=req.upscale_factor or 2, fps=req.input_fps or 0)
    rule = table.model_rule(spec.id)
    seconds: float
    if req.duration == "auto":  # source-matched: billed on the source clip's length (SPEC §4)
        seconds = math.ceil(req.reference_video_total_duration or 0)
    elif req.duration_s is not None:
        seconds = req.duration_s
    else:
        seconds = 1  # "1 gen" and other unit durations
    if "fixed" in rule:
        return Quote(_round(rule["fixed"]), seconds)
    per_second_table = rule["per_second"]
    if isinstance(per_second_table, (int, float)):
        per_second = float(per_second_table)
    else:
        key = req.resolution if req.resolution in per_second_table else "*"
        per_second = float(per_second_table.get(key, per_second_table["*"]))
    if spec.audio_configurable and req.audio:
        per_second *= float(rule.get("audio_multiplier", 1.0))
    billed = seconds
    if req.reference_video_total_duration and req.duration != "auto":
        # Reference video is billed as input seconds on top of the output (input+output), SPEC §10.
        billed += math.ceil(req.reference_video_total_duration)
    return Quote(_round(per_second * billed), billed)
