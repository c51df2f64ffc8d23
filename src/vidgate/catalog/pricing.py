"""Prices: each model's pricing rule (its catalogue record), an operator's overrides, and `quote(...)`.

The shipped rules reproduce Venice's published `/video/quote` answers of 2026-09-29 (PRICE-SEP; fitted by
`tools/fit_venice_prices.py`, rule kinds in `catalog/price_rules.py`). An operator's price file
(`VIDGATE_PRICE_FILE`, JSON) replaces the rule of the models it names, by exact id or glob pattern, and can add
a markup on top of every price:

    {"models": {"wan-2.5-preview-*": {"kind": "per_second", ...},  "my-model": {...}},
     "markup_percent": 0}

`quote(request, facts, spec, prices)` is a pure function of its arguments.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from vidgate.catalog.models import CatalogError, ModelSpec
from vidgate.catalog.price_rules import PriceInputs, PriceRule, parse_rule, price_usd
from vidgate.catalog.request import MediaFacts, VideoRequest
from vidgate.errors import invalid

MICROS_PER_USD = 1_000_000
MINIMUM_PRICE_USD = Decimal("0.001")  # the OAS x-payment-info minimum


@dataclass(frozen=True)
class PriceTable:
    """The operator's overrides; a model they do not name is priced by its own record."""

    overrides: tuple[tuple[str, PriceRule], ...] = ()
    markup_percent: Decimal = Decimal(0)
    _rules: dict[str, PriceRule] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def load(cls, price_file: Path | None = None) -> PriceTable:
        if price_file is None:
            return cls()
        try:
            data: dict[str, Any] = json.loads(Path(price_file).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CatalogError(f"{price_file}: cannot read the price file: {exc}") from None
        unknown = set(data) - {"models", "markup_percent"}
        if unknown:
            raise CatalogError(f"{price_file}: unknown key(s) {sorted(unknown)}; use models and markup_percent")
        overrides = []
        for pattern, rule in data.get("models", {}).items():
            try:
                overrides.append((pattern, parse_rule(rule)))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise CatalogError(f"{price_file}: the rule for {pattern!r} is invalid: {where}: {first['msg']}") \
                    from None
        return cls(tuple(overrides), Decimal(str(data.get("markup_percent", 0))))

    def rule_for(self, spec: ModelSpec) -> PriceRule:
        """The operator's rule for this model (exact id first, then the first matching glob), else the record's."""
        cached = self._rules.get(spec.id)
        if cached is None:
            exact = next((r for p, r in self.overrides if p == spec.id), None)
            cached = exact or next((r for p, r in self.overrides if fnmatchcase(spec.id, p)), spec.pricing)
            self._rules[spec.id] = cached
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


def billed_output_seconds(req: VideoRequest, facts: MediaFacts, spec: ModelSpec) -> float:
    """The output length a request is priced on: its duration, or its source's for source-matched models."""
    if spec.duration_from_input:
        if facts.source_seconds is not None:
            return math.ceil(facts.source_seconds)
        if req.duration_s is not None:
            return req.duration_s
        if spec.is_upscale:
            if req.media.get("video_url"):
                raise invalid("video_url", "the video at video_url could not be measured; send duration "
                                           "(seconds) and input_height instead")
            raise invalid("duration", "duration (seconds of input video) is required to quote an upscale")
        return 1
    if req.duration == "auto":  # source-matched: billed on the source clip's length (SPEC §4)
        return math.ceil(facts.reference_video_seconds or req.reference_video_total_duration or 0)
    return req.duration_s if req.duration_s is not None else 1  # "1 gen" and other unit durations


def quote(req: VideoRequest, facts: MediaFacts, spec: ModelSpec, table: PriceTable) -> Quote:
    """The price of a validated request in USD (what queue charges and quote answers)."""
    seconds = billed_output_seconds(req, facts, spec)
    reference_s = facts.reference_video_seconds or req.reference_video_total_duration or 0.0
    inputs = PriceInputs(
        resolution=req.resolution,
        seconds=seconds,
        audio=req.audio,
        reference_video_seconds=0.0 if req.duration == "auto" else reference_s,
        reference_image_count=facts.reference_image_count or req.reference_image_count,
        input_height=facts.source_height or req.input_height,
        input_fps=facts.source_fps,
        upscale_factor=req.upscale_factor,
    )
    usd = price_usd(table.rule_for(spec), inputs)
    if table.markup_percent:
        usd = (usd * (1 + table.markup_percent / 100)).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)
    return Quote(max(usd, MINIMUM_PRICE_USD), seconds)
