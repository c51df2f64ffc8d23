"""Fit one pricing rule per model to Venice's published `/video/quote` table; write the shipped price file.

    python tools/fit_venice_prices.py [--shared ../shared] [--check]

Reads `venice-2026-09/video-pricing-sample.json` (PRICE-SEP: quotes keyed "<resolution>|<duration>|<on|off>",
USD) and `venice-2026-09/model-catalog-video.json` (CAT-SEP: each model's family and mode), and writes
`src/vidgate/catalog/data/venice-prices-2026-09.json` (rule kinds: `src/vidgate/catalog/price_rules.py`).
The output depends only on the inputs: running it again rewrites the file byte for byte (`--check` only
compares). All arithmetic is exact (fractions); no floats.

How a model's rule is found:

1. Rows. A model's quotes are grouped into rows, one per (resolution, audio on/off): seconds -> price.
   Resolution "-" (no resolution choice) becomes the rule key "*".
2. Rounding. Venice rounds rate x seconds half-up to cents. (Checked: half-up admits a single per-second rate
   for all but 32 of the sample's rows; rounding up admits none for 264 rows and rounding down none for 255.)
   For a row, the rates r with half_up(r * d) == q for every quote (d, q) form an interval
   [max (q - 0.005) / d, min (q + 0.005) / d).
3. Kind, per model, in this order of preference:
   - `per_second` when every row has a rate. If a row's interval is empty only because a product that is
     exactly half a cent was rounded down (Venice computes in binary floating point, so e.g. 0.015 x 15 = 0.225
     is published as 0.22 while 0.015 x 5 = 0.075 is 0.08), the closed interval is used and the quotes that
     went down are kept as `overrides` (exact published prices).
   - `per_second` with `per_image` when a single per-image amount `a` (shared by all rows of the model, and by
     its family's other models of this kind) makes half_up(a + r * d) fit every row: the set of such `a` is an
     interval, computed exactly from every pair of quotes. (Grok Imagine 1.5 image and reference models.)
   - `fixed` (a price per resolution and duration) when the price is not linear in the length but every row
     lists every duration of the model (Pixverse v5.6: 8 s costs about twice 5 s); it generalises nothing.
4. Pooling. Rows that publish the same price wherever both have a quote share one rate: the two audio states
   of a model, and the same (resolution, audio) row of the other models of its family (CAT-SEP `family`).
   Two groups are joined only when they agree on at least two common durations and the joined quotes still
   admit one rate without needing more overrides than before. Pooled rows narrow the interval, so a rate
   predicts the durations one model's row left out with the evidence of its siblings.
5. The rate. From the interval the simplest number is taken: the fewest decimal places, and among those the
   one nearest the middle of the interval (an evidence-neutral choice).
6. Rules a row does not determine: Wan 3.0 reference-to-video bills reference-video seconds on top of the
   output (`reference_video: "bill"`, CHANGES §2.1); its `audio:false` costs the same, which the data confirm.
7. Input-dependent models (no quotes) keep vidgate's own rules: `topaz-video-upscale` the `upscale` kind (tiers
   [[720, 0.013], [1080, 0.025], [null, 0.10]] per output second, x2 above 48 fps, default input height 1080,
   4 decimals half-up, minimum 0.001); video-to-video and motion control `per_second` on the source's seconds
   with vidgate's default per-second table for their resolutions ("*" = 0.10), same rounding and minimum.
8. Check. Every rule is parsed with `parse_rule` and must reproduce every published quote with `price_usd`;
   otherwise the script stops with the quotes it misses.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "src" / "vidgate" / "catalog" / "data" / "venice-prices-2026-09.json"
sys.path.insert(0, str(ROOT / "src"))

from vidgate.catalog.price_rules import PriceInputs, parse_rule, price_usd  # noqa: E402

HALF_CENT = Fraction(1, 200)
MAX_DECIMALS = 8
STRICT, TIES, NONE = 2, 1, 0  # how a set of quotes admits one rate: exactly / with half-cent ties down / not

# vidgate's own rules for the input-dependent models (catalog/pricing.py before this file existed).
VIDGATE_PER_SECOND = {
    "256p": "0.02", "360p": "0.03", "480p": "0.04", "540p": "0.05", "580p": "0.05", "720p": "0.07",
    "768P": "0.07", "1080p": "0.10", "true_1080p": "0.12", "1440p": "0.15", "2K": "0.15",
    "2160p": "0.25", "4k": "0.25", "*": "0.10",
}
VIDGATE_ROUNDING = {"step": "0.0001", "mode": "half_up"}
VIDGATE_MINIMUM = "0.001"
UPSCALE_RULE: dict[str, Any] = {
    "kind": "upscale",
    "tiers": [{"max_output_height": 720, "per_second": "0.013"},
              {"max_output_height": 1080, "per_second": "0.025"},
              {"max_output_height": None, "per_second": "0.10"}],
    "rounding": VIDGATE_ROUNDING,
    "minimum": VIDGATE_MINIMUM,
}

Row = dict[int, Fraction]  # seconds -> published price
RowKey = tuple[str, str, str]  # model, resolution key, "on"/"off"


# --- reading the sample -----------------------------------------------------------------------------------


def rows_of(entry: dict[str, Any]) -> dict[tuple[str, str], Row]:
    """(resolution key, audio) -> {seconds: price} from a sample entry's quotes."""
    rows: dict[tuple[str, str], Row] = {}
    for key, usd in (entry.get("quotes") or {}).items():
        resolution, duration, audio = key.split("|")
        res_key = "*" if resolution == "-" else resolution
        rows.setdefault((res_key, audio), {})[int(duration.removesuffix("s"))] = Fraction(str(usd))
    return rows


def seconds_of(entry: dict[str, Any]) -> list[int]:
    return [int(d.removesuffix("s")) for d in entry["durations"] if d.endswith("s") and d[:-1].isdigit()]


# --- exact interval arithmetic ----------------------------------------------------------------------------


def rate_interval(row: Row, offset: Fraction = Fraction(0)) -> tuple[Fraction, Fraction]:
    """[lo, hi): the rates r with half_up(offset + r * d) == q for every quote."""
    lo = max((q - HALF_CENT - offset) / d for d, q in row.items())
    hi = min((q + HALF_CENT - offset) / d for d, q in row.items())
    return lo, hi


def feasibility(row: Row, offset: Fraction = Fraction(0)) -> int:
    lo, hi = rate_interval(row, offset)
    return STRICT if lo < hi else TIES if lo == hi else NONE


def simplest(lo: Fraction, hi: Fraction, *, lo_open: bool = False, hi_open: bool = True) -> Fraction:
    """The number with the fewest decimals in the interval; among those, the one nearest its middle."""
    middle = (lo + hi) / 2
    for decimals in range(MAX_DECIMALS + 1):
        step = Fraction(1, 10**decimals)
        first = math.floor(lo / step) + 1 if lo_open else math.ceil(lo / step)
        last = math.ceil(hi / step) - 1 if hi_open else math.floor(hi / step)
        if first <= last:
            best = min(max(round(middle / step), first), last)
            if best - 1 >= first and abs((best - 1) * step - middle) <= abs(best * step - middle):
                best -= 1  # equally near: the smaller
            return best * step
    raise ValueError(f"no number with at most {MAX_DECIMALS} decimals in [{lo}, {hi}]")


def image_fee_interval(row: Row) -> tuple[Fraction, Fraction]:
    """(lo, hi), open: the amounts a for which some rate r gives half_up(a + r * d) == q on every quote."""
    lo, hi = Fraction(0), Fraction(10**6)
    for d_i, q_i in row.items():
        for d_j, q_j in row.items():
            if d_i == d_j:
                continue
            # (q_i - h - a) / d_i < (q_j + h - a) / d_j  <=>  a (d_i - d_j) < (q_j + h) d_i - (q_i - h) d_j
            bound = ((q_j + HALF_CENT) * d_i - (q_i - HALF_CENT) * d_j) / (d_i - d_j)
            if d_i > d_j:
                hi = min(hi, bound)
            else:
                lo = max(lo, bound)
    return lo, hi


def ties_down(row: Row, rate: Fraction, offset: Fraction) -> list[int]:
    """The seconds whose product is exactly half a cent and was published rounded down."""
    return sorted(d for d, q in row.items() if offset + rate * d == q + HALF_CENT)


# --- pooling rows into groups that share a rate -----------------------------------------------------------


@dataclass
class Group:
    members: list[RowKey]
    quotes: Row
    offset: Fraction
    level: int = field(init=False)

    def __post_init__(self) -> None:
        self.level = feasibility(self.quotes, self.offset)


def _joined(a: Group, b: Group) -> Group | None:
    if a.offset != b.offset:
        return None
    common = set(a.quotes) & set(b.quotes)
    if len(common) < 2 or any(a.quotes[d] != b.quotes[d] for d in common):
        return None
    joined = Group(a.members + b.members, {**a.quotes, **b.quotes}, a.offset)
    return joined if joined.level != NONE and joined.level >= min(a.level, b.level) else None


def pool(rows: dict[RowKey, Row], offsets: dict[str, Fraction], families: dict[str, str]) -> dict[RowKey, Group]:
    """Join rows that publish the same prices: a model's two audio states, then a family's same rows."""
    group_of: dict[RowKey, Group] = {key: Group([key], dict(row), offsets[key[0]]) for key, row in rows.items()}
    keys = sorted(rows)
    pairs = [(a, b) for a in keys for b in keys if a < b and a[0] == b[0] and a[1] == b[1]]
    pairs += [(a, b) for a in keys for b in keys
              if a < b and a[0] != b[0] and a[1:] == b[1:] and families[a[0]] == families[b[0]]]
    for a, b in pairs:
        ga, gb = group_of[a], group_of[b]
        if ga is gb:
            continue
        joined = _joined(ga, gb)
        if joined is not None:
            for member in joined.members:
                group_of[member] = joined
    return group_of


# --- fitting ----------------------------------------------------------------------------------------------


def _kind(model_rows: dict[tuple[str, str], Row], durations: list[int]) -> str:
    if all(feasibility(row) != NONE for row in model_rows.values()):
        return "per_second"
    lo, hi = _fee_range(model_rows.values())
    if lo < hi:
        return "per_image"
    if all(sorted(row) == sorted(durations) for row in model_rows.values()):
        return "fixed"
    raise ValueError(f"no rule kind fits rows {sorted(model_rows)}")


def _fee_range(rows: Any) -> tuple[Fraction, Fraction]:
    lo, hi = Fraction(0), Fraction(10**6)
    for row in rows:
        row_lo, row_hi = image_fee_interval(row)
        lo, hi = max(lo, row_lo), min(hi, row_hi)
    return lo, hi


def _dec(value: Fraction) -> str:
    """A fraction with a finite decimal expansion, as a plain decimal string."""
    text = str(Decimal(value.numerator) / Decimal(value.denominator))
    if Decimal(text) != Decimal(value.numerator) / Decimal(value.denominator) or "E" in text:
        raise ValueError(f"{value} has no short decimal form")
    return text


def _by_audio(values: dict[str, Any]) -> Any:
    """One value when the audio states agree (or only one is priced), else {"on": ..., "off": ...}."""
    distinct = {json.dumps(v, sort_keys=True) for v in values.values()}
    if len(distinct) == 1:
        return next(iter(values.values()))
    return {audio: values[audio] for audio in ("on", "off") if audio in values}


def _resolution_keys(entry: dict[str, Any]) -> list[str]:
    return list(entry["resolutions"]) or ["*"]


def fit_rules(sample: dict[str, Any], catalog: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """model id -> rule JSON for every model of the sample (its `models` mapping)."""
    families = {model_id: entry.get("family") or model_id for model_id, entry in catalog.items()}
    quoted = {m: e for m, e in sample.items() if not e.get("inputDependent")}
    model_rows = {m: rows_of(e) for m, e in quoted.items()}
    kinds = {m: _kind(rows, seconds_of(quoted[m])) for m, rows in model_rows.items()}

    # One per-image amount per family (when the family's models of that kind admit one), else per model.
    offsets: dict[str, Fraction] = {m: Fraction(0) for m in quoted}
    fee_models = sorted(m for m, k in kinds.items() if k == "per_image")
    for family in sorted({families[m] for m in fee_models}):
        members = [m for m in fee_models if families[m] == family]
        lo, hi = _fee_range(row for m in members for row in model_rows[m].values())
        sets = [members] if lo < hi else [[m] for m in members]
        for models in sets:
            lo, hi = _fee_range(row for m in models for row in model_rows[m].values())
            fee = simplest(lo, hi, lo_open=True, hi_open=True)
            for m in models:
                offsets[m] = fee

    linear = {(m, res, audio): row for m in quoted if kinds[m] != "fixed"
              for (res, audio), row in model_rows[m].items()}
    group_of = pool(linear, offsets, families)
    fitted: dict[int, tuple[Fraction, list[int]]] = {}
    for group in {id(g): g for g in group_of.values()}.values():
        lo, hi = rate_interval(group.quotes, group.offset)
        rate = simplest(lo, hi, hi_open=group.level == STRICT)
        fitted[id(group)] = (rate, ties_down(group.quotes, rate, group.offset))

    rules: dict[str, dict[str, Any]] = {}
    for model_id, entry in sorted(sample.items()):
        if entry.get("inputDependent"):
            rules[model_id] = _vidgate_rule(entry, catalog[model_id])
        elif kinds[model_id] == "fixed":
            rules[model_id] = _fixed_rule(entry, model_rows[model_id])
        else:
            rules[model_id] = _per_second_rule(model_id, entry, catalog[model_id], model_rows[model_id],
                                               offsets[model_id], group_of, fitted)
    return rules


def _per_second_rule(model_id: str, entry: dict[str, Any], cat: dict[str, Any],
                     rows: dict[tuple[str, str], Row], offset: Fraction, group_of: dict[RowKey, Group],
                     fitted: dict[int, tuple[Fraction, list[int]]]) -> dict[str, Any]:
    offered = set(seconds_of(entry))
    rates: dict[str, Any] = {}
    overrides: dict[str, str] = {}
    for res in _resolution_keys(entry):
        per_audio = {audio: fitted[id(group_of[(model_id, res, audio)])] for (r, audio) in rows if r == res}
        if not per_audio:
            raise ValueError(f"{model_id}: no quotes for resolution {res}")
        by_audio = {audio: (_dec(rate), downs) for audio, (rate, downs) in per_audio.items()}
        flat = len({json.dumps(v) for v in by_audio.values()}) == 1
        rates[res] = _by_audio({audio: rate for audio, (rate, _) in by_audio.items()}) if flat else \
            {audio: by_audio[audio][0] for audio in ("on", "off") if audio in by_audio}
        for audio, (rate_text, downs) in by_audio.items():
            for seconds in downs:
                if seconds in offered:
                    published = Fraction(rate_text) * seconds + offset - HALF_CENT
                    key = f"{res}|{seconds}s" if flat else f"{res}|{seconds}s|{audio}"
                    overrides[key] = _dec(published)
    rule: dict[str, Any] = {"kind": "per_second", "rates": rates, "rounding": {"step": "0.01", "mode": "half_up"}}
    if offset:
        rule["per_image"] = _dec(offset)
    if (cat.get("family") or "").startswith("wan-3-0") and cat["video"]["mode"] == "r2v":
        rule["reference_video"] = "bill"
    if overrides:
        rule["overrides"] = dict(sorted(overrides.items(), key=lambda kv: _override_order(kv[0], rates)))
    return rule


def _override_order(key: str, rates: dict[str, Any]) -> tuple[int, int, str]:
    res, seconds, *audio = key.split("|")
    return list(rates).index(res), int(seconds.removesuffix("s")), "".join(audio)


def _fixed_rule(entry: dict[str, Any], rows: dict[tuple[str, str], Row]) -> dict[str, Any]:
    prices: dict[str, Any] = {}
    for res in _resolution_keys(entry):
        prices[res] = {f"{d}s": _by_audio({audio: _dec(row[d]) for (r, audio), row in rows.items() if r == res})
                       for d in seconds_of(entry)}
    return {"kind": "fixed", "prices": prices}


def _vidgate_rule(entry: dict[str, Any], cat: dict[str, Any]) -> dict[str, Any]:
    if cat["video"]["mode"] == "upscale":
        return UPSCALE_RULE
    rates = {res: VIDGATE_PER_SECOND[res] for res in entry["resolutions"]}
    rates["*"] = VIDGATE_PER_SECOND["*"]
    return {"kind": "per_second", "rates": rates, "rounding": VIDGATE_ROUNDING, "minimum": VIDGATE_MINIMUM}


# --- checking and writing ---------------------------------------------------------------------------------


def misses(sample: dict[str, Any], rules: dict[str, dict[str, Any]]) -> list[str]:
    """Published quotes a rule does not reproduce, as "model key: got X, published Y"."""
    out = []
    for model_id, entry in sample.items():
        rule = parse_rule(rules[model_id])
        for key, usd in (entry.get("quotes") or {}).items():
            got = price_usd(rule, inputs_for(key))
            if got != Decimal(str(usd)):
                out.append(f"{model_id} {key}: got {got}, published {usd}")
    return out


def inputs_for(quote_key: str) -> PriceInputs:
    """The PriceInputs of one published quote (no reference media, default image count)."""
    resolution, duration, audio = quote_key.split("|")
    return PriceInputs(resolution=None if resolution == "-" else resolution,
                       seconds=int(duration.removesuffix("s")), audio=audio == "on")


def build(shared: Path) -> dict[str, Any]:
    sample_doc = json.loads((shared / "venice-2026-09" / "video-pricing-sample.json").read_text())
    catalog = json.loads((shared / "venice-2026-09" / "model-catalog-video.json").read_text())["models"]
    rules = fit_rules(sample_doc["models"], catalog)
    missed = misses(sample_doc["models"], rules)
    if missed:
        raise SystemExit("rules miss published quotes:\n" + "\n".join(missed))
    return {
        "source": "Pricing rules fitted by tools/fit_venice_prices.py to the answers of Venice's "
                  f"{sample_doc['source']} as published in veniceai/api-docs data/video-pricing.json (a sample "
                  "of it: shared/venice-2026-09/video-pricing-sample.json); the 7 input-dependent models keep "
                  "vidgate's own rules. Rule kinds: src/vidgate/catalog/price_rules.py.",
        "generatedAt": sample_doc["generatedAt"],
        "models": rules,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--check", action="store_true", help="only compare with the shipped file")
    args = parser.parse_args()
    text = json.dumps(build(args.shared), indent=1) + "\n"
    if args.check:
        same = OUTPUT.exists() and OUTPUT.read_text() == text
        print("up to date" if same else f"{OUTPUT} differs from a fresh fit")
        raise SystemExit(0 if same else 1)
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
