"""GET /models and the catalogue as data: the shipped records, an operator's file, price overrides, startup errors."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.conftest import SHORT_PROMPT, Api, api_for, data_url
from tests.media.factory import make_png
from vidgate.catalog.models import CatalogError, load_catalog
from vidgate.db import jobs
from vidgate.settings import load_settings

SHARED = Path(__file__).resolve().parents[3] / "shared"
SNAPSHOT = SHARED / "venice-2026-09" / "model-catalog-video.json"
SAMPLE = SHARED / "venice-2026-09" / "video-pricing-sample.json"
CONSENT_ERA = ("seedance-2-0-text-to-video", "seedance-2-0-image-to-video", "seedance-2-0-reference-to-video",
               "seedance-2-0-fast-text-to-video", "seedance-2-0-fast-image-to-video",
               "seedance-2-0-fast-reference-to-video")


def write(tmp_path: Path, name: str, data: object) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


async def listing(api: Api) -> dict[str, dict[str, Any]]:
    response = await api.client.get("/api/v1/models", params={"type": "video"})
    assert response.status_code == 200
    return {m["id"]: m for m in response.json()["data"]}


async def test_models_lists_venice_september_catalogue_plus_consent_era_seedance(api: Api) -> None:
    data = await listing(api)
    ids = list(data)
    assert len(ids) == 132 + len(CONSENT_ERA)
    if SNAPSHOT.exists():
        assert set(json.loads(SNAPSHOT.read_text())["models"]) <= set(ids)
    for consent_id in CONSENT_ERA:
        assert ids.index(consent_id) + 1 == ids.index(f"{consent_id}-basic"), "listed next to its -basic id"
    assert all(m["object"] == "model" and m["owned_by"] == "venice.ai" and m["type"] == "video"
               for m in data.values())


@pytest.mark.skipif(not SAMPLE.exists(), reason="needs ../shared/venice-2026-09")
async def test_models_constraints_match_venices_published_fingerprint(api: Api) -> None:
    """PRICE-SEP's fingerprint is [model_type, resolutions, durations, aspect_ratios, audio, configurable, video]
    exactly as Venice's GET /models reports them."""
    data = await listing(api)
    for model_id, published in json.loads(SAMPLE.read_text())["models"].items():
        c = data[model_id]["model_spec"]["constraints"]
        ours = [c["model_type"], c["resolutions"], c["durations"], c["aspect_ratios"], c["audio"],
                c["audio_configurable"], c["video_input"]]
        assert ours == json.loads(published["fingerprint"]), model_id


@pytest.mark.skipif(not SAMPLE.exists(), reason="needs ../shared/venice-2026-09")
@pytest.mark.parametrize("model_id", sorted(json.loads(SAMPLE.read_text())["models"]) if SAMPLE.exists() else [])
async def test_quote_equals_venices_published_quote(api: Api, model_id: str) -> None:
    """Every entry of the published sample, through POST /video/quote, exactly."""
    published = json.loads(SAMPLE.read_text())["models"][model_id]
    audio_configurable = published["audio"]["configurable"]
    for key, usd in published["quotes"].items():
        resolution, duration, audio = key.split("|")
        body: dict[str, Any] = {"model": model_id, "duration": duration}
        if resolution != "-":
            body["resolution"] = resolution
        if audio_configurable:
            body["audio"] = audio == "on"
        response = await api.post("/video/quote", body)
        assert response.status_code == 200, (key, response.text)
        assert Decimal(str(response.json()["quote"])) == Decimal(str(usd)), (key, response.json(), usd)


async def test_charge_equals_quote_for_a_new_model(api: Api) -> None:
    key = await api.new_key(balance_usd=20)
    body = {"model": "gemini-omni-flash-1-1-text-to-video", "prompt": SHORT_PROMPT, "duration": "6s",
            "resolution": "720p", "aspect_ratio": "9:16"}
    price = (await api.post("/video/quote", body)).json()["quote"]
    assert price == 0.7  # Venice's published quote
    queued = await api.post("/video/queue", body, key)
    assert queued.status_code == 200
    balance, ledger_sum = api.balance_and_ledger(await api.account_of(key))
    assert balance == ledger_sum == (20 - 0.7) * 1_000_000


async def test_job_payload_stores_files_not_data_urls(api: Api, tmp_path: Path) -> None:
    image = data_url(make_png(tmp_path / "a.png", 640, 480), "image/png")
    key = await api.new_key()
    body = {"model": "wan-2.6-image-to-video", "prompt": SHORT_PROMPT, "duration": "5s", "resolution": "720p",
            "image_url": image}
    queued = await api.post("/video/queue", body, key)
    assert queued.status_code == 200, queued.text
    stored = api.scalar(select(jobs.c.request_json).where(jobs.c.id == queued.json()["queue_id"]))
    assert "data:" not in stored and len(stored) < 4000
    payload = json.loads(stored)
    assert Path(payload["inputs"]["image_url"][0]["path"]).is_file()
    await api.run_worker()
    got = await api.post("/video/retrieve", {"model": body["model"], "queue_id": queued.json()["queue_id"]}, key)
    assert got.headers["content-type"] == "video/mp4"


# --- an operator's catalogue file -------------------------------------------------------------------------

HOUSE_MODEL = {
    "id": "house-t2v", "name": "House Model", "task": "t2v", "model_type": "text-to-video",
    "durations": ["3s", "6s"], "resolutions": ["360p", "480p"], "default_resolution": "360p",
    "aspect_ratios": ["1:1"], "default_aspect_ratio": "1:1", "audio": "none", "prompt_limit": 100,
    "pricing": {"kind": "per_second", "rates": {"360p": "0.02", "480p": "0.03"},
                "rounding": {"step": "0.01", "mode": "half_up"}},
    "engine": "procedural",
}


async def test_operator_catalogue_adds_updates_and_removes_models(tmp_path: Path) -> None:
    override = {
        "remove": ["veo3-fast-text-to-video"],
        "update": {"wan-2-7-text-to-video": {"durations": ["5s", "7s"]},
                   "kling-2.6-pro-text-to-video": {"deprecation": {"date": "2027-01-15T00:00:00Z",
                                                                    "replacement": "kling-v3-pro-text-to-video"}}},
        "models": [HOUSE_MODEL],
    }
    settings = load_settings(data_dir=tmp_path / "d", catalog_file=write(tmp_path, "catalog.json", override))
    async with api_for(settings) as api:
        data = await listing(api)
        assert "veo3-fast-text-to-video" not in data
        assert data["wan-2-7-text-to-video"]["model_spec"]["constraints"]["durations"] == ["5s", "7s"]
        assert data["house-t2v"]["model_spec"]["name"] == "House Model"
        assert data["kling-2.6-pro-text-to-video"]["model_spec"]["deprecation"]["date"] == "2027-01-15T00:00:00Z"
        house = {"model": "house-t2v", "prompt": "a house", "duration": "6s", "resolution": "480p"}
        assert (await api.post("/video/quote", house)).json() == {"quote": 0.18}
        too_long = await api.post("/video/queue", {**house, "prompt": "x" * 101}, await api.new_key())
        assert too_long.status_code == 400 and too_long.json()["issues"][0]["maximum"] == 100
        key = await api.new_key()
        queued = await api.post("/video/queue", house, key)
        assert queued.status_code == 200
        await api.run_worker()
        got = await api.post("/video/retrieve", {"model": "house-t2v", "queue_id": queued.json()["queue_id"]}, key)
        assert got.headers["content-type"] == "video/mp4"
        deprecated = await api.post("/video/quote", {"model": "kling-2.6-pro-text-to-video", "duration": "5s"})
        assert deprecated.headers["x-venice-model-deprecation-date"] == "2027-01-15T00:00:00Z"
        assert "kling-v3-pro-text-to-video" in deprecated.headers["x-venice-model-deprecation-warning"]
        plain = await api.post("/video/quote", {"model": "kling-v3-pro-text-to-video", "duration": "5s"})
        assert "x-venice-model-deprecation-date" not in plain.headers


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"models": [{**HOUSE_MODEL, "durations": []}]}, "durations"),
        ({"models": [{**HOUSE_MODEL, "audio": "loud"}]}, "audio"),
        ({"models": [{**HOUSE_MODEL, "default_resolution": "720p"}]}, "default_resolution"),
        ({"models": [{**HOUSE_MODEL, "pricing": {"kind": "per_second"}}]}, "pricing"),
        ({"models": [{**HOUSE_MODEL, "colour": "red"}]}, "colour"),
        ({"update": {"wan-2-7-text-to-video": {"prompt_limit": 0}}}, "prompt_limit"),
        ({"update": {"no-such-model": {"durations": ["5s"]}}}, "no-such-model"),
        ({"remove": ["no-such-model"]}, "no-such-model"),
    ],
)
def test_invalid_operator_record_is_an_error_naming_model_and_field(tmp_path: Path, override: dict[str, Any],
                                                                    named: str) -> None:
    with pytest.raises(CatalogError) as caught:
        load_catalog(write(tmp_path, "catalog.json", override))
    assert named in str(caught.value)


def test_serve_refuses_to_start_on_an_invalid_catalogue(tmp_path: Path) -> None:
    bad = write(tmp_path, "catalog.json", {"models": [{**HOUSE_MODEL, "durations": []}]})
    env = {"VIDGATE_CATALOG_FILE": str(bad), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "vidgate", "serve", "--data-dir", str(tmp_path / "d"),
                           "--port", "1"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2
    assert "house-t2v" in done.stderr and "durations" in done.stderr
    assert not (tmp_path / "d").exists(), "nothing is created before the check"


# --- an operator's price file -----------------------------------------------------------------------------


async def test_operator_price_file_overrides_rules_and_adds_markup(tmp_path: Path) -> None:
    prices = {"models": {"wan-2-7-*": {"kind": "per_second", "rates": {"*": "0.5"},
                                       "rounding": {"step": "0.01", "mode": "half_up"}}},
              "markup_percent": 10}
    settings = load_settings(data_dir=tmp_path / "d", price_file=write(tmp_path, "prices.json", prices))
    async with api_for(settings) as api:
        wan = await api.post("/video/quote", {"model": "wan-2-7-text-to-video", "duration": "5s"})
        assert wan.json() == {"quote": 2.75}  # 5 s x $0.50, +10 %
        veo = await api.post("/video/quote", {"model": "veo3-fast-text-to-video", "duration": "8s"})
        async with api_for(load_settings(data_dir=tmp_path / "e")) as plain:
            base = await plain.post("/video/quote", {"model": "veo3-fast-text-to-video", "duration": "8s"})
        assert Decimal(str(veo.json()["quote"])) == (Decimal(str(base.json()["quote"])) * Decimal("1.1")).quantize(
            Decimal("0.0001"))


def test_invalid_price_file_names_the_rule(tmp_path: Path) -> None:
    from vidgate.catalog.pricing import PriceTable

    bad = write(tmp_path, "prices.json", {"models": {"wan-*": {"kind": "per_second", "rates": {"*": "-1"}}}})
    with pytest.raises(CatalogError) as caught:
        PriceTable.load(bad)
    assert "wan-*" in str(caught.value)


# --- quote and listing behaviours kept from before the September catalogue -----------------------------


async def test_models_bad_type_is_400_and_other_types_are_empty(api: Api) -> None:
    bad = await api.client.get("/api/v1/models", params={"type": "bogus"})
    assert bad.status_code == 400
    assert bad.json()["issues"][0]["path"] == ["type"]
    text = await api.client.get("/api/v1/models", params={"type": "text"})
    assert text.json()["data"] == []



async def test_quote_audio_raises_price_on_configurable_models(api: Api) -> None:
    base = {"model": "kling-2.6-pro-text-to-video", "duration": "5s"}
    silent = (await api.post("/video/quote", {**base, "audio": False})).json()["quote"]
    loud = (await api.post("/video/quote", {**base, "audio": True})).json()["quote"]
    assert loud > silent


async def test_quote_tolerates_fields_it_does_not_price(api: Api) -> None:
    body = {"model": "seedance-2-0-image-to-video-basic", "duration": "5s", "resolution": "720p",
            "prompt": "quote", "image_url": "https://example.com/x.png", "aspect_ratio": "16:9", "whatever": 1}
    assert (await api.post("/video/quote", body)).status_code == 200


async def test_quote_invalid_enum_carries_expected_for_docs_ui(api: Api) -> None:
    response = await api.post("/video/quote", {"model": "veo3-fast-text-to-video", "duration": "5s"})
    assert response.status_code == 400
    issue = response.json()["issues"][0]
    assert issue["path"] == ["duration"] and issue["expected"] == "'4s' | '6s' | '8s'"


async def test_quote_source_matched_duration_bills_reference_seconds(api: Api) -> None:
    body = {"model": "seedance-2-5-reference-to-video-basic", "duration": "auto", "resolution": "720p",
            "audio": False}
    missing = await api.post("/video/quote", body)
    assert missing.status_code == 400
    assert missing.json()["issues"][0]["path"] == ["reference_video_total_duration"]
    eight = await api.post("/video/quote", {**body, "reference_video_total_duration": 7.2})
    fixed = await api.post("/video/quote", {"model": body["model"], "duration": "8s", "resolution": "720p",
                                            "audio": False})
    assert eight.json() == fixed.json()
