"""The shipped pricing rules (catalog/data/venice-prices-2026-09.json) against Venice's published quotes.

Every published quote of the sample is reproduced exactly; every rule round-trips through `parse_rule`; a refit
from a thinned sample predicts the quotes it did not see; the input-dependent models keep vidgate's own prices.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from decimal import Decimal
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pydantic import ValidationError

from vidgate.catalog.price_rules import PerSecondRule, PriceInputs, parse_rule, price_usd

ROOT = Path(__file__).resolve().parents[2]
VENICE = ROOT.parent / "shared" / "venice-2026-09"
SAMPLE_FILE = VENICE / "video-pricing-sample.json"
CATALOG_FILE = VENICE / "model-catalog-video.json"
PRICES: dict[str, Any] = json.loads(
    (resources.files("vidgate.catalog") / "data" / "venice-prices-2026-09.json").read_text())
RULES: dict[str, dict[str, Any]] = PRICES["models"]
SAMPLE: dict[str, Any] = json.loads(SAMPLE_FILE.read_text())["models"] if SAMPLE_FILE.exists() else {}
needs_sample = pytest.mark.skipif(not SAMPLE, reason=f"{SAMPLE_FILE} is not here")


def _fitter() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fit_venice_prices", ROOT / "tools" / "fit_venice_prices.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _inputs(quote_key: str) -> PriceInputs:
    resolution, duration, audio = quote_key.split("|")
    return PriceInputs(resolution=None if resolution == "-" else resolution,
                       seconds=int(duration.removesuffix("s")), audio=audio == "on")


def _override_keys(rule: dict[str, Any], quote_key: str) -> set[str]:
    resolution, duration, audio = quote_key.split("|")
    res = "*" if resolution == "-" else resolution
    return {f"{res}|{duration}", f"{res}|{duration}|{audio}"} & set(rule.get("overrides", {}))


QUOTES = [(model_id, key, usd) for model_id, entry in sorted(SAMPLE.items())
          for key, usd in sorted((entry.get("quotes") or {}).items())]


# --- the published quotes -----------------------------------------------------------------------------------


@needs_sample
@pytest.mark.parametrize(("model_id", "key", "published"), QUOTES, ids=[f"{m}[{k}]" for m, k, _ in QUOTES])
def test_published_quote_is_reproduced(model_id: str, key: str, published: float) -> None:
    assert price_usd(parse_rule(RULES[model_id]), _inputs(key)) == Decimal(str(published))


@needs_sample
def test_every_model_has_a_rule() -> None:
    assert set(RULES) == set(SAMPLE)
    assert len(RULES) == 132
    assert len(QUOTES) == 2994
    dependent = {m for m, e in SAMPLE.items() if e.get("inputDependent")}
    assert len(dependent) == 7
    assert RULES["topaz-video-upscale"]["kind"] == "upscale"


@needs_sample
def test_the_fitter_rewrites_the_shipped_file() -> None:
    assert _fitter().build(ROOT.parent / "shared") == PRICES


@pytest.mark.parametrize("model_id", sorted(RULES))
def test_rule_round_trips(model_id: str) -> None:
    rule = parse_rule(RULES[model_id])
    assert rule.model_dump(mode="json", exclude_defaults=True) == RULES[model_id]
    assert parse_rule(rule.model_dump(mode="json")) == rule


# --- the rules generalise: refit from a thinned sample, predict what was dropped ---------------------------


@needs_sample
def test_refit_predicts_dropped_durations() -> None:
    """Drop every 3rd inner quote of each row, refit, and predict the dropped quotes.

    Exempt are the published quotes that the full fit itself lists as overrides (half-cent products that Venice's
    floating point rounded down): no rate predicts them. Where thinning leaves a rate interval wide enough to
    take a simpler rate than the full data allow, a prediction can be one cent off; that must stay rare.
    """
    fitter = _fitter()
    thinned = copy.deepcopy(SAMPLE)
    dropped: list[tuple[str, str, float]] = []
    for model_id, entry in thinned.items():
        quotes = entry.get("quotes") or {}
        rows: dict[tuple[str, str], list[tuple[int, str]]] = {}
        for key in quotes:
            resolution, duration, audio = key.split("|")
            rows.setdefault((resolution, audio), []).append((int(duration.removesuffix("s")), key))
        for row in rows.values():
            for index, (_, key) in enumerate(sorted(row)):
                if 0 < index < len(row) - 1 and index % 3 == 1 and not _override_keys(RULES[model_id], key):
                    dropped.append((model_id, key, quotes.pop(key)))
    refit = fitter.fit_rules(thinned, json.loads(CATALOG_FILE.read_text())["models"])
    assert not fitter.misses(thinned, refit)  # the refit still reproduces what it saw
    missed = []
    for model_id, key, published in dropped:
        got = price_usd(parse_rule(refit[model_id]), _inputs(key))
        if got != Decimal(str(published)):
            missed.append((model_id, key, got, published))
    assert len(dropped) > 600
    assert len(missed) <= len(dropped) // 100, missed  # at least 99% predicted exactly
    assert all(abs(got - Decimal(str(published))) == Decimal("0.01") for _, _, got, published in missed), missed


# --- the quote-only fields --------------------------------------------------------------------------------


def test_wan_3_reference_bills_reference_seconds_and_ignores_audio() -> None:
    rule = parse_rule(RULES["wan-3-0-reference-to-video"])
    plain = PriceInputs(resolution="1080p", seconds=5, audio=True)
    assert price_usd(rule, plain) == Decimal("1.04")
    assert price_usd(rule, PriceInputs(resolution="1080p", seconds=5, audio=False)) == Decimal("1.04")
    # 5 s output + 4.2 s of reference video, billed as 5 whole seconds: 10 s at 0.208
    with_reference = PriceInputs(resolution="1080p", seconds=5, audio=True, reference_video_seconds=4.2)
    assert price_usd(rule, with_reference) == Decimal("2.08")
    t2v = parse_rule(RULES["wan-3-0-text-to-video"])
    assert price_usd(t2v, with_reference) == Decimal("1.04")


def test_per_image_amount_follows_reference_image_count() -> None:
    rule = parse_rule(RULES["grok-imagine-1-5-reference-to-video-private"])
    assert isinstance(rule, PerSecondRule) and rule.per_image == Decimal("0.011")
    one = PriceInputs(resolution="480p", seconds=5, audio=True)
    assert price_usd(rule, one) == Decimal("0.47")  # published: 0.092 x 5 + 0.011
    three = PriceInputs(resolution="480p", seconds=5, audio=True, reference_image_count=3)
    assert price_usd(rule, three) == Decimal("0.49")  # 0.46 + 0.033 = 0.493


def test_overrides_apply_only_to_the_published_situation() -> None:
    rule = parse_rule(RULES["minimax-h3-max-turbo-text-to-video"])
    assert price_usd(rule, PriceInputs(resolution="480P", seconds=15, audio=True)) == Decimal("0.22")
    assert price_usd(rule, PriceInputs(resolution="480P", seconds=14, audio=True)) == Decimal("0.21")
    # the same 0.225 with a per-image amount of 0 is not the published quote's situation
    assert price_usd(rule, PriceInputs(resolution="480P", seconds=15, audio=True, reference_image_count=2)) \
        == Decimal("0.23")


def test_resolution_lookup() -> None:
    rule = parse_rule(RULES["veo3.1-full-text-to-video"])
    # no resolution: the most expensive rate (never undercharge)
    assert price_usd(rule, PriceInputs(resolution=None, seconds=4, audio=True)) == Decimal("2.64")
    with pytest.raises(ValueError, match="no price for resolution"):
        price_usd(rule, PriceInputs(resolution="480p", seconds=4, audio=True))
    kling = parse_rule(RULES["kling-2.6-pro-text-to-video"])  # no resolution choice: "*"
    assert price_usd(kling, PriceInputs(resolution=None, seconds=5, audio=False)) == Decimal("0.39")


def test_fixed_rule() -> None:
    rule = parse_rule(RULES["pixverse-v5.6-text-to-video"])
    assert price_usd(rule, PriceInputs(resolution="720p", seconds=8, audio=True)) == Decimal("2.28")
    assert price_usd(rule, PriceInputs(resolution="360p", seconds=8, audio=False)) == Decimal("0.89")
    assert price_usd(rule, PriceInputs(resolution=None, seconds=5, audio=True)) == Decimal("1.9")
    with pytest.raises(ValueError, match="no price for 6s"):
        price_usd(rule, PriceInputs(resolution="720p", seconds=6, audio=True))


# --- vidgate's own rules: upscale and the source-length models keep today's prices -------------------------

TOPAZ = parse_rule(RULES["topaz-video-upscale"])


@pytest.mark.parametrize(("seconds", "height", "factor", "fps", "expected"), [
    (10, 720, 2, 0, "1.00"),  # 1440 output lines: 0.10/s
    (10, 360, 2, 30, "0.13"),  # 720: 0.013/s
    (5.2, 540, 2, 24, "0.15"),  # 1080: 0.025/s, 6 billed seconds
    (5.2, 540, 2, 60, "0.30"),  # above 48 fps: x2
    (3, 1080, 4, 30, "0.30"),
    (0.4, 240, 2, 0, "0.013"),
    (7.5, 1080, 2, 50, "1.60"),
    (12, 480, 4, 60, "2.40"),
    (0, 100, 2, 0, "0.001"),  # the minimum
])
def test_upscale_matches_vidgate_pricing(seconds: float, height: int, factor: int, fps: float,
                                         expected: str) -> None:
    # the values catalog/pricing.py's upscale_price gave before the rules moved here
    inputs = PriceInputs(resolution="2x", seconds=seconds, audio=False, input_height=height, input_fps=fps,
                         upscale_factor=factor)
    assert price_usd(TOPAZ, inputs) == Decimal(expected)


def test_upscale_defaults() -> None:
    # no input height: 1080 assumed; no factor: 2 -> 2160 output lines, 0.10/s
    assert price_usd(TOPAZ, PriceInputs(resolution=None, seconds=10, audio=False)) == Decimal("1.00")
    assert price_usd(TOPAZ, PriceInputs(resolution=None, seconds=10, audio=False, input_height=360)) \
        == Decimal("0.13")


@pytest.mark.parametrize(("model_id", "resolution", "seconds", "expected"), [
    ("wan-2-7-video-to-video", "720p", 8, "0.56"),
    ("wan-2-7-video-to-video", None, 8, "0.80"),  # "*" as before
    ("gemini-omni-flash-1-1-video-to-video", "4k", 10, "2.50"),
    ("gemini-omni-flash-1-1-video-to-video", "360p", 3, "0.09"),
    ("grok-imagine-video-to-video-private", "480p", 5, "0.20"),
    ("happyhorse-1-0-video-to-video", "1080p", 12, "1.20"),
    ("kling-v3-pro-motion-control", None, 7, "0.70"),
    ("kling-v3-standard-motion-control", None, 0, "0.001"),
])
def test_source_length_models_keep_vidgate_prices(model_id: str, resolution: str | None, seconds: int,
                                                  expected: str) -> None:
    rule = parse_rule(RULES[model_id])
    assert price_usd(rule, PriceInputs(resolution=resolution, seconds=seconds, audio=True)) == Decimal(expected)


# --- bad rules --------------------------------------------------------------------------------------------

ROUNDING = {"step": "0.01", "mode": "half_up"}


@pytest.mark.parametrize("data", [
    {"kind": "per_minute", "rates": {"*": "0.1"}, "rounding": ROUNDING},
    {"kind": "per_second", "rates": {"*": "0.1"}},  # no rounding
    {"kind": "per_second", "rates": {"*": "0.1"}, "rounding": ROUNDING, "markup": "1.1"},
    {"kind": "per_second", "rates": {"*": "-0.1"}, "rounding": ROUNDING},
    {"kind": "per_second", "rates": {"*": "NaN"}, "rounding": ROUNDING},
    {"kind": "per_second", "rates": {"*": "ten cents"}, "rounding": ROUNDING},
    {"kind": "per_second", "rates": {}, "rounding": ROUNDING},
    {"kind": "per_second", "rates": {"*": {}}, "rounding": ROUNDING},
    {"kind": "per_second", "rates": {"*": "0.1"}, "rounding": {"step": "0", "mode": "half_up"}},
    {"kind": "per_second", "rates": {"*": "0.1"}, "rounding": {"step": "0.01", "mode": "bankers"}},
    {"kind": "per_second", "rates": {"*": "0.1"}, "rounding": ROUNDING, "overrides": {"720p|5s": "0.5"}},
    {"kind": "per_second", "rates": {"*": "0.1"}, "rounding": ROUNDING, "overrides": {"*|five": "0.5"}},
    {"kind": "per_second", "rates": {"*": "0.1"}, "rounding": ROUNDING, "reference_video": "always"},
    {"kind": "fixed", "prices": {"720p": {"five": "0.5"}}},
    {"kind": "fixed", "prices": {"720p": {}}},
    {"kind": "upscale", "tiers": [{"max_output_height": 720, "per_second": "0.013"}], "rounding": ROUNDING},
    {"kind": "upscale", "rounding": ROUNDING, "tiers": [
        {"max_output_height": 1080, "per_second": "0.025"}, {"max_output_height": 720, "per_second": "0.013"},
        {"max_output_height": None, "per_second": "0.10"}]},
    {"rates": {"*": "0.1"}, "rounding": ROUNDING},  # no kind
])
def test_bad_rule_is_a_validation_error(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        parse_rule(data)
