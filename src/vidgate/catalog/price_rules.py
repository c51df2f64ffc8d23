"""Pricing rules: one small declarative rule per model, and `price_usd(rule, inputs)` that evaluates it.

All arithmetic is `Decimal`; a rule's numbers are written as JSON strings so that they stay exact. The shipped
rules (`data/venice-prices-2026-09.json`) are fitted by `tools/fit_venice_prices.py` to Venice's published
`/video/quote` answers of 2026-09-29 and reproduce every one of them.

Kinds (the `kind` field):

- `per_second`: `rates[resolution]` USD per second times the billed seconds, then rounded. A rate is either one
  number (the price does not depend on audio) or `{"on": ..., "off": ...}` (audio on / off). The resolution key
  `"*"` is used for a model without a resolution choice, and for any resolution the rule does not list. Options:
  - `per_image`: USD added per input image (`reference_image_count`; Venice bills one image when it is omitted).
  - `reference_video`: `"bill"` adds the reference clips' total length (whole seconds, rounded up) to the billed
    seconds (Wan 3.0 R2V bills input + output seconds); `"ignore"` (default) does not.
  - `minimum`: the least price after rounding.
  - `overrides`: exact prices for single quotes, `"<resolution>|<n>s"` (or `"<resolution>|<n>s|on"`), used when
    no reference video is sent and one image is billed. Venice computes in binary floating point, so a product
    that is exactly half a cent occasionally rounds down; the fitted rules list those published quotes here.
  For models whose length comes from a source clip (video-to-video, motion control) the caller passes the
  source's length as `seconds`.
- `fixed`: a price per resolution and duration (`prices[resolution]["5s"]`), for models whose price is not
  proportional to the length (Pixverse v5.6: 8 s costs about twice 5 s). Durations not listed are an error.
- `upscale` (Topaz): USD per output second by output height (input height x factor; tiers are
  `max_output_height` inclusive, `null` = no bound), times `high_fps_multiplier` above `high_fps_threshold` fps.
  Billed seconds are the input's seconds rounded up to whole seconds. Without `input_height` the rule assumes
  `default_input_height`, without `upscale_factor` it assumes `default_factor`.

Rounding (`rounding`): the price is rounded to a multiple of `step` with `mode` (`half_up`: .5 goes up).
Venice's quotes are rounded half-up to cents (`{"step": "0.01", "mode": "half_up"}`); vidgate's own rules
(upscale, video-to-video) round half-up to 4 decimals with a minimum of $0.001.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_HALF_EVEN, ROUND_HALF_UP, ROUND_UP, Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

Usd = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]
ANY_RESOLUTION = "*"
_OVERRIDE_KEY = re.compile(r"^(?P<res>[^|]+)\|(?P<seconds>\d+)s(?:\|(?P<audio>on|off))?$")
_DURATION_KEY = re.compile(r"^\d+s$")
_MODES = {"half_up": ROUND_HALF_UP, "half_even": ROUND_HALF_EVEN, "up": ROUND_UP, "down": ROUND_DOWN}


class _Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Rounding(_Rule):
    """Round to a multiple of `step` (USD) with `mode`."""

    step: Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]
    mode: Literal["half_up", "half_even", "up", "down"]

    def apply(self, usd: Decimal) -> Decimal:
        return (usd / self.step).to_integral_value(rounding=_MODES[self.mode]) * self.step


class AudioRates(_Rule):
    """A value that depends on audio: `on` (audio generated) and `off`. One alone serves both states."""

    on: Usd | None = None
    off: Usd | None = None

    @model_validator(mode="after")
    def _one_at_least(self) -> AudioRates:
        if self.on is None and self.off is None:
            raise ValueError("give on, off or both")
        return self

    def pick(self, audio: bool) -> Decimal:
        first, second = (self.on, self.off) if audio else (self.off, self.on)
        value = first if first is not None else second
        assert value is not None  # the validator guarantees one
        return value


ByAudio = Usd | AudioRates


def _by_audio(value: ByAudio, audio: bool) -> Decimal:
    return value.pick(audio) if isinstance(value, AudioRates) else value


def _highest(value: ByAudio) -> Decimal:
    if isinstance(value, AudioRates):
        return max(v for v in (value.on, value.off) if v is not None)
    return value


def _lookup(table: dict[str, Any], resolution: str | None, what: str) -> Any:
    """The entry for a resolution: exact key, else "*", else (no resolution given) the most expensive one."""
    if resolution is not None and resolution in table:
        return table[resolution]
    if ANY_RESOLUTION in table:
        return table[ANY_RESOLUTION]
    if resolution is None:
        if len(table) == 1:
            return next(iter(table.values()))
        return None  # caller picks the most expensive entry (never undercharge)
    raise ValueError(f"{what}: no price for resolution {resolution!r} (priced: {', '.join(table)})")


class PerSecondRule(_Rule):
    kind: Literal["per_second"]
    rates: dict[str, ByAudio] = Field(min_length=1)
    rounding: Rounding
    per_image: Usd | None = None
    reference_video: Literal["ignore", "bill"] = "ignore"
    minimum: Usd | None = None
    overrides: dict[str, Usd] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _override_keys(self) -> PerSecondRule:
        for key in self.overrides:
            match = _OVERRIDE_KEY.match(key)
            if match is None:
                raise ValueError(f"override key {key!r} is not '<resolution>|<n>s' or '<resolution>|<n>s|on|off'")
            if match["res"] not in self.rates:
                raise ValueError(f"override key {key!r} names a resolution without a rate")
        return self


class FixedRule(_Rule):
    kind: Literal["fixed"]
    prices: dict[str, dict[str, ByAudio]] = Field(min_length=1)

    @model_validator(mode="after")
    def _duration_keys(self) -> FixedRule:
        for resolution, by_duration in self.prices.items():
            if not by_duration:
                raise ValueError(f"resolution {resolution!r} lists no durations")
            bad = [key for key in by_duration if not _DURATION_KEY.match(key)]
            if bad:
                raise ValueError(f"duration keys must look like '5s', not {bad}")
        return self


class UpscaleTier(_Rule):
    max_output_height: int | None = Field(gt=0)
    per_second: Usd


class UpscaleRule(_Rule):
    kind: Literal["upscale"]
    tiers: tuple[UpscaleTier, ...] = Field(min_length=1)
    high_fps_threshold: Usd = Decimal(48)
    high_fps_multiplier: Usd = Decimal(2)
    default_input_height: int = Field(default=1080, gt=0)
    default_factor: int = Field(default=2, gt=0)
    rounding: Rounding
    minimum: Usd | None = None

    @model_validator(mode="after")
    def _ordered_tiers(self) -> UpscaleRule:
        heights = [t.max_output_height for t in self.tiers]
        if heights[-1] is not None or None in heights[:-1]:
            raise ValueError("only the last tier, and it must, have max_output_height null (no bound)")
        bounded = [h for h in heights if h is not None]
        if bounded != sorted(set(bounded)):
            raise ValueError("tier heights must increase")
        return self


PriceRule = Annotated[PerSecondRule | FixedRule | UpscaleRule, Field(discriminator="kind")]
_ADAPTER: TypeAdapter[PerSecondRule | FixedRule | UpscaleRule] = TypeAdapter(PriceRule)


def parse_rule(data: dict[str, Any]) -> PriceRule:
    """A rule from its JSON form; raises pydantic.ValidationError on bad data."""
    return _ADAPTER.validate_python(data)


@dataclass(frozen=True)
class PriceInputs:
    """What a price depends on. `seconds` is the output length (for source-length models: the source's)."""

    resolution: str | None
    seconds: float
    audio: bool
    reference_video_seconds: float = 0.0
    reference_image_count: int | None = None
    input_height: float | None = None
    input_fps: float | None = None
    upscale_factor: int | None = None


def _dec(value: float) -> Decimal:
    return Decimal(str(value))


def _finish(usd: Decimal, rounding: Rounding, minimum: Decimal | None) -> Decimal:
    rounded = rounding.apply(usd)
    return max(rounded, minimum) if minimum is not None else rounded


def _per_second(rule: PerSecondRule, inputs: PriceInputs) -> Decimal:
    entry = _lookup(rule.rates, inputs.resolution, "per_second")
    rate = max(_highest(v) for v in rule.rates.values()) if entry is None else _by_audio(entry, inputs.audio)
    seconds = _dec(inputs.seconds)
    reference = _dec(inputs.reference_video_seconds)
    images = 1 if inputs.reference_image_count is None else inputs.reference_image_count
    if rule.overrides and reference == 0 and images == 1 and seconds == seconds.to_integral_value():
        resolution = inputs.resolution if inputs.resolution in rule.rates else ANY_RESOLUTION
        key = f"{resolution}|{int(seconds)}s"
        audio_key = f"{key}|{'on' if inputs.audio else 'off'}"
        override = rule.overrides.get(audio_key, rule.overrides.get(key))
        if override is not None:
            return override
    billed = seconds
    if rule.reference_video == "bill" and reference > 0:
        billed += reference.to_integral_value(rounding=ROUND_CEILING)
    usd = rate * billed
    if rule.per_image is not None:
        usd += rule.per_image * images
    return _finish(usd, rule.rounding, rule.minimum)


def _fixed(rule: FixedRule, inputs: PriceInputs) -> Decimal:
    entry = _lookup(rule.prices, inputs.resolution, "fixed")
    seconds = _dec(inputs.seconds)
    key = f"{int(seconds)}s" if seconds == seconds.to_integral_value() else f"{seconds}s"
    if entry is None:  # no resolution given: the most expensive resolution listing this duration
        candidates = [by_duration[key] for by_duration in rule.prices.values() if key in by_duration]
        if candidates:
            return max(_highest(v) for v in candidates)
        raise ValueError(f"fixed: no price for {key}")
    if key not in entry:
        raise ValueError(f"fixed: no price for {key} (priced: {', '.join(entry)})")
    return _by_audio(entry[key], inputs.audio)


def _upscale(rule: UpscaleRule, inputs: PriceInputs) -> Decimal:
    height = _dec(inputs.input_height) if inputs.input_height else Decimal(rule.default_input_height)
    output_height = height * (inputs.upscale_factor or rule.default_factor)
    per_second = rule.tiers[-1].per_second
    for tier in rule.tiers:
        if tier.max_output_height is None or output_height <= tier.max_output_height:
            per_second = tier.per_second
            break
    if _dec(inputs.input_fps or 0) > rule.high_fps_threshold:
        per_second *= rule.high_fps_multiplier
    billed = _dec(inputs.seconds).to_integral_value(rounding=ROUND_CEILING)
    return _finish(per_second * billed, rule.rounding, rule.minimum)


def price_usd(rule: PriceRule, inputs: PriceInputs) -> Decimal:
    """The price in USD of one request under a rule (pure; Decimal throughout)."""
    if isinstance(rule, PerSecondRule):
        return _per_second(rule, inputs)
    if isinstance(rule, FixedRule):
        return _fixed(rule, inputs)
    return _upscale(rule, inputs)
