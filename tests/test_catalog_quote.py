"""GET /models and POST /video/quote: the catalogue as shipped, operator overrides, and SPEC §10's prices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Api, api_for
from vidgate.settings import load_settings

SHARED_CATALOG = Path(__file__).resolve().parents[2] / "shared" / "venice-video-models-2026-08-20.json"


async def test_models_lists_the_full_catalogue_plus_consent_era_seedance(api: Api) -> None:
    response = await api.client.get("/api/v1/models", params={"type": "video"})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list" and body["type"] == "video"
    ids = [m["id"] for m in body["data"]]
    if SHARED_CATALOG.exists():
        venice_ids = [m["id"] for m in json.loads(SHARED_CATALOG.read_text())["data"]]
        assert set(venice_ids) <= set(ids)
    for consent_id in ("seedance-2-0-text-to-video", "seedance-2-0-image-to-video", "seedance-2-0-reference-to-video",
                       "seedance-2-0-fast-text-to-video", "seedance-2-0-fast-image-to-video",
                       "seedance-2-0-fast-reference-to-video"):
        assert consent_id in ids
        assert ids.index(consent_id) + 1 == ids.index(f"{consent_id}-basic"), "listed next to its -basic id"
    assert len(ids) == 122
    assert all(m["object"] == "model" and m["owned_by"] == "venice.ai" and m["type"] == "video"
               for m in body["data"])


async def test_models_bad_type_is_400_and_other_types_are_empty(api: Api) -> None:
    bad = await api.client.get("/api/v1/models", params={"type": "bogus"})
    assert bad.status_code == 400
    assert bad.json()["issues"][0]["path"] == ["type"]
    text = await api.client.get("/api/v1/models", params={"type": "text"})
    assert text.json()["data"] == []


async def test_operator_catalogue_adds_replaces_and_removes_models(tmp_path: Path) -> None:
    override = {
        "remove": ["sora-2-text-to-video"],
        "data": [
            {"id": "wan-2-7-text-to-video", "model_spec": {"constraints": {"durations": ["5s", "7s"]}}},
            {"id": "house-model", "model_spec": {"name": "House", "constraints": {
                "model_type": "text-to-video", "durations": ["3s"], "resolutions": ["480p"],
                "aspect_ratios": ["1:1"], "audio": False, "audio_configurable": False}}},
        ],
    }
    (tmp_path / "catalog.json").write_text(json.dumps(override))
    settings = load_settings(data_dir=tmp_path / "d", catalog_file=tmp_path / "catalog.json")
    async with api_for(settings) as api:
        client = api.client
        data = {m["id"]: m for m in (await client.get("/api/v1/models?type=video")).json()["data"]}
        assert "sora-2-text-to-video" not in data
        assert data["wan-2-7-text-to-video"]["model_spec"]["constraints"]["durations"] == ["5s", "7s"]
        assert data["wan-2-7-text-to-video"]["model_spec"]["constraints"]["resolutions"] == ["1080p", "720p"]
        assert data["house-model"]["model_spec"]["name"] == "House"
        quote = await client.post("/api/v1/video/quote", json={"model": "wan-2-7-text-to-video", "duration": "7s"})
        assert quote.status_code == 200


@pytest.mark.parametrize(
    ("body", "usd"),
    [
        ({"model": "wan-2.5-preview-text-to-video", "duration": "10s", "resolution": "1080p"}, 0.085),
        ({"model": "wan-2-7-text-to-video", "duration": "5s", "resolution": "720p", "audio": True}, 0.35),
        ({"model": "topaz-video-upscale", "duration": "10", "input_height": 720, "upscale_factor": 2}, 1.00),
        ({"model": "topaz-video-upscale", "duration": "10", "input_height": 480, "upscale_factor": 2}, 0.25),
        ({"model": "topaz-video-upscale", "duration": "10", "input_height": 480, "upscale_factor": 1}, 0.13),
    ],
)
async def test_quote_reproduces_documented_prices(api: Api, body: dict[str, object], usd: float) -> None:
    response = await api.post("/video/quote", body)
    assert response.status_code == 200, response.text
    assert response.json() == {"quote": usd}


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


async def test_operator_price_file_overrides_defaults(tmp_path: Path) -> None:
    (tmp_path / "prices.json").write_text(json.dumps({"models": {"wan-2-7-*": {"fixed": 2.5}}}))
    settings = load_settings(data_dir=tmp_path / "d", price_file=tmp_path / "prices.json")
    async with api_for(settings) as api:
        response = await api.post("/video/quote", {"model": "wan-2-7-text-to-video", "duration": "5s"})
        assert response.json() == {"quote": 2.5}
