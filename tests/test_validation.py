"""Per-model validation on /video/queue: every rejection is a 400 DetailedError naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from tests.conftest import Api, t2v_body
from vidgate.db import jobs

PNG_DATA_URL = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


async def job_count(api: Api) -> int:
    return api.scalar(select(func.count()).select_from(jobs))


async def rejected(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    key = await api.new_key()
    before = await job_count(api)
    response = await api.post("/video/queue", body, key)
    assert response.status_code == 400, response.text
    payload = response.json()
    assert isinstance(payload["error"], str)
    assert await job_count(api) == before, "a rejected request stores nothing"
    return payload


def issue_for(payload: dict[str, Any], *path: object) -> dict[str, Any]:
    for issue in payload["issues"]:
        if issue["path"] == list(path):
            return issue
    raise AssertionError(f"no issue for {path}: {payload['issues']}")


async def test_duration_outside_the_models_list_names_allowed_values(api: Api) -> None:
    payload = await rejected(api, t2v_body(model="wan-2-7-text-to-video", duration="7s", resolution="720p"))
    issue = issue_for(payload, "duration")
    assert issue["expected"] == "'5s' | '10s' | '15s'"
    assert issue["received"] == "7s"
    assert payload["details"]["duration"]["_errors"]
    assert "duration" in payload["error"]


async def test_resolution_and_aspect_ratio_outside_lists_are_both_reported(api: Api) -> None:
    payload = await rejected(api, t2v_body(model="wan-2-7-text-to-video", resolution="4k", aspect_ratio="21:9"))
    assert issue_for(payload, "resolution")["expected"] == "'1080p' | '720p'"
    assert issue_for(payload, "aspect_ratio")["expected"] == "'16:9' | '9:16' | '1:1'"


async def test_prompt_over_the_models_limit_is_rejected_at_limit_plus_one(api: Api) -> None:
    key = await api.new_key()
    at_limit = await api.post("/video/queue", t2v_body(model="runway-gen4-5-text", duration="5s",
                                                       resolution=None, prompt="x" * 1000), key)
    assert at_limit.status_code == 200, at_limit.text
    payload = await rejected(api, t2v_body(model="runway-gen4-5-text", duration="5s", resolution=None,
                                           prompt="x" * 1001))
    issue = issue_for(payload, "prompt")
    assert issue["code"] == "too_big" and issue["maximum"] == 1000


async def test_default_prompt_limit_applies_to_negative_prompt(api: Api) -> None:
    payload = await rejected(api, t2v_body(negative_prompt="n" * 2501))
    assert issue_for(payload, "negative_prompt")["maximum"] == 2500


async def test_missing_prompt_and_duration_are_required(api: Api) -> None:
    payload = await rejected(api, {"model": "wan-2.5-preview-text-to-video"})
    assert issue_for(payload, "prompt")["message"] == "Required"
    assert issue_for(payload, "duration")["message"] == "Required"


async def test_empty_prompt_is_rejected(api: Api) -> None:
    payload = await rejected(api, t2v_body(prompt=""))
    assert issue_for(payload, "prompt")["code"] == "too_small"


async def test_aspect_ratio_on_an_image_to_video_model_is_rejected(api: Api) -> None:
    payload = await rejected(api, {"model": "seedance-2-0-image-to-video-basic", "prompt": "p", "duration": "5s",
                                   "aspect_ratio": "16:9", "image_url": PNG_DATA_URL})
    assert "not supported" in issue_for(payload, "aspect_ratio")["message"]


async def test_audio_toggle_on_a_model_without_audio_config_is_rejected(api: Api) -> None:
    payload = await rejected(api, t2v_body(audio=False))  # wan-2.5-preview always has audio
    assert "not configurable" in issue_for(payload, "audio")["message"]


async def test_fields_a_text_to_video_model_does_not_take_are_rejected(api: Api) -> None:
    payload = await rejected(api, t2v_body(image_url=PNG_DATA_URL, upscale_factor=2))
    assert "not supported" in issue_for(payload, "image_url")["message"]
    assert "upscale" in issue_for(payload, "upscale_factor")["message"]


async def test_unknown_model_is_a_400_on_model(api: Api) -> None:
    payload = await rejected(api, t2v_body(model="no-such-model"))
    assert "not found" in issue_for(payload, "model")["message"]


@pytest.mark.parametrize(
    ("body", "error"),
    [({"prompt": "x", "duration": "5s"}, "model is required"), ({"model": 5}, "model must be a string")],
)
async def test_model_field_errors_use_venice_messages(api: Api, body: dict[str, Any], error: str) -> None:
    key = await api.new_key()
    response = await api.post("/video/queue", body, key)
    assert response.status_code == 400
    assert response.json() == {"error": error}


async def test_topaz_requires_video_url_and_rejects_prompt_and_resolution(api: Api) -> None:
    payload = await rejected(api, {"model": "topaz-video-upscale", "prompt": "make it sharp", "resolution": "2x"})
    assert "video_url is required" in issue_for(payload, "video_url")["message"]
    assert "not accepted" in issue_for(payload, "prompt")["message"]
    assert issue_for(payload, "resolution")["message"] == "Use upscale_factor instead of resolution"


async def test_topaz_upscale_factor_must_be_1_2_or_4(api: Api) -> None:
    payload = await rejected(api, {"model": "topaz-video-upscale", "video_url": "https://example.com/a.mp4",
                                   "upscale_factor": 3})
    assert issue_for(payload, "upscale_factor")["expected"] == "'1' | '2' | '4'"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/a.png", "Must be a URL"),
        ("data:image/png,abc", "base64"),
        ("data:video/mp4;base64,AAAA", "image/*"),
        ("data:image/png;base64,", "no data"),
    ],
)
async def test_media_url_syntax_is_checked(api: Api, url: str, message: str) -> None:
    payload = await rejected(api, {"model": "seedance-2-0-image-to-video-basic", "prompt": "p", "duration": "5s",
                                   "image_url": url})
    assert message in issue_for(payload, "image_url")["message"]


async def test_reference_image_count_limit_for_seedance_2_0(api: Api) -> None:
    body = {"model": "seedance-2-0-reference-to-video-basic", "prompt": "p", "duration": "5s",
            "reference_image_urls": [PNG_DATA_URL] * 10}
    payload = await rejected(api, body)
    issue = issue_for(payload, "reference_image_urls")
    assert issue["maximum"] == 9 and "10 items" in issue["message"]


async def test_reference_to_video_needs_at_least_one_reference(api: Api) -> None:
    payload = await rejected(api, {"model": "seedance-2-0-reference-to-video-basic", "prompt": "p",
                                   "duration": "5s"})
    assert payload["issues"][0]["message"] == "At least one reference is required for this model"


async def test_reference_audio_alone_is_rejected(api: Api) -> None:
    payload = await rejected(api, {"model": "seedance-2-0-reference-to-video-basic", "prompt": "p",
                                   "duration": "5s", "reference_audio_urls": ["https://example.com/a.mp3"]})
    assert "paired" in issue_for(payload, "reference_audio_urls")["message"]


async def test_keyframes_must_be_unique_and_within_duration(api: Api) -> None:
    body = {"model": "pixverse-c1-image-to-video", "prompt": "p", "duration": "5s", "image_url": PNG_DATA_URL,
            "keyframes": [{"image_url": PNG_DATA_URL, "frame_index": 0},
                          {"image_url": PNG_DATA_URL, "frame_index": 0},
                          {"image_url": PNG_DATA_URL, "frame_index": 121}]}
    payload = await rejected(api, body)
    assert "used twice" in issue_for(payload, "keyframes", 1, "frame_index")["message"]
    assert "120" in issue_for(payload, "keyframes", 2, "frame_index")["message"]


async def test_kling_o3_prompt_tokens_must_refer_to_given_elements(api: Api) -> None:
    body = {"model": "kling-o3-pro-reference-to-video", "prompt": "@Element2 walks into @Image1",
            "duration": "5s", "elements": [{"frontal_image_url": PNG_DATA_URL}], "scene_image_urls": [PNG_DATA_URL]}
    payload = await rejected(api, body)
    assert "@Element2" in issue_for(payload, "prompt")["message"]


@pytest.mark.parametrize(
    "consents",
    [
        {"seedance": {"confirmed_terms_and_privacy": True, "confirmed_legal_right": True}},
        {"seedance": {"confirmed_terms_and_privacy": True, "confirmed_legal_right": True,
                      "confirmed_screening_acknowledged": False}},
        {"seedance": {"confirmed_terms_and_privacy": True, "confirmed_legal_right": True,
                      "confirmed_screening_acknowledged": True, "consent_version": "v2.0"}},
    ],
)
async def test_consents_must_be_exactly_three_true_booleans(api: Api, consents: dict[str, Any]) -> None:
    body = t2v_body(model="seedance-2-0-text-to-video", duration="5s", resolution="480p", consents=consents)
    payload = await rejected(api, body)
    assert any(i["path"][:2] == ["consents", "seedance"] for i in payload["issues"])


async def test_bitrate_mode_only_on_seedance(api: Api) -> None:
    payload = await rejected(api, t2v_body(bitrate_mode="high"))
    assert "Seedance" in issue_for(payload, "bitrate_mode")["message"]


async def test_media_is_checked_against_the_models_limits_before_any_charge(api: Api) -> None:
    payload = await rejected(api, {"model": "seedance-2-0-image-to-video-basic", "prompt": "p", "duration": "5s",
                                   "image_url": PNG_DATA_URL})
    assert payload["error"] == "image_url: image is 1x1: the short side is 1 px, the minimum is 300 px"
    assert issue_for(payload, "image_url")


async def test_wrong_content_type_and_bad_json(api: Api) -> None:
    key = await api.new_key()
    headers = {"Authorization": f"Bearer {key}"}
    wrong = await api.client.post("/api/v1/video/queue", content=b"model=x",
                                  headers={**headers, "Content-Type": "application/x-www-form-urlencoded"})
    assert wrong.status_code == 400
    assert wrong.json() == {"error": "'Content-Type' must be 'application/json'"}
    bad = await api.client.post("/api/v1/video/queue", content=b"{not json",
                                headers={**headers, "Content-Type": "application/json"})
    assert bad.status_code == 400 and bad.json() == {"error": "Invalid JSON request"}


@pytest.mark.both_backends
async def test_a_nul_character_in_any_string_is_400_naming_the_field_and_nothing_is_queued(api: Api) -> None:
    key = await api.new_key()
    before = await api.ctx.db.read(lambda conn: conn.execute(select(func.count()).select_from(jobs)).scalar_one())
    response = await api.post("/video/queue", {**t2v_body(), "prompt": "a cat\u0000"}, key)
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith("prompt: Must not contain the NUL character")
    nested = await api.post("/video/queue", {**t2v_body(), "reference_image_urls": ["ok", "bad\u0000"]}, key)
    assert nested.status_code == 400 and nested.json()["error"].startswith("reference_image_urls[1]: "), nested.text
    after = await api.ctx.db.read(lambda conn: conn.execute(select(func.count()).select_from(jobs)).scalar_one())
    assert after == before


@pytest.mark.both_backends
@pytest.mark.parametrize("path", ["/api/v1/video/jobs/abc%00", "/api/v1/video/jobs?after=a%00b",
                                  "/api/v1/webhooks/deliveries/x%00"])
async def test_a_nul_character_in_the_url_is_400(api: Api, path: str) -> None:
    key = await api.new_key()
    response = await api.client.get(path, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 400, response.text
    assert response.json() == {"error": "The URL must not contain the NUL character (%00)"}
    assert response.headers["cf-ray"]


async def test_body_over_35_mb_is_413(api: Api) -> None:
    key = await api.new_key()
    huge = b'{"model":"x","prompt":"' + b"a" * (35 * 1024 * 1024) + b'"}'
    response = await api.client.post("/api/v1/video/queue", content=huge,
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json() == {"code": "PAYLOAD_TOO_LARGE", "error": "Request body exceeds the maximum allowed size."}


async def test_bare_second_durations_are_accepted(api: Api) -> None:
    key = await api.new_key()
    response = await api.post("/video/queue", t2v_body(duration="5"), key)
    assert response.status_code == 200, response.text


KLING_O3_R2V = "kling-o3-pro-reference-to-video"


def kling_body(frames: int = 0, elements: int = 0, scenes: int = 0) -> dict[str, Any]:
    body: dict[str, Any] = {"model": KLING_O3_R2V, "prompt": "A walk", "duration": "5s"}
    for field in ("image_url", "end_image_url")[:frames]:
        body[field] = PNG_DATA_URL
    if elements:
        body["elements"] = [{"frontal_image_url": PNG_DATA_URL} for _ in range(elements)]
    if scenes:
        body["scene_image_urls"] = [PNG_DATA_URL] * scenes
    return body


async def test_kling_o3_seven_visual_inputs_ok_eight_rejected(api: Api) -> None:
    key = await api.new_key()
    ok = await api.post("/video/queue", kling_body(frames=2, elements=3, scenes=2), key)
    assert ok.status_code == 200, ok.text
    payload = await rejected(api, kling_body(frames=2, elements=3, scenes=3))
    assert "total 8, the limit is 7" in issue_for(payload, "elements")["message"]


async def test_kling_o3_four_elements_with_a_frame_rejected(api: Api) -> None:
    payload = await rejected(api, kling_body(frames=1, elements=4))
    assert "at most 3 elements" in issue_for(payload, "elements")["message"]


async def test_kling_o3_four_scene_images_ok_five_rejected(api: Api) -> None:
    payload = await rejected(api, kling_body(scenes=5))
    assert issue_for(payload, "scene_image_urls")["maximum"] == 4


async def test_reference_audio_without_image_or_video_is_rejected(api: Api) -> None:
    body = {"model": "seedance-2-0-reference-to-video", "prompt": "A walk", "duration": "5s",
            "reference_audio_urls": ["https://example.com/a.mp3"]}
    payload = await rejected(api, body)
    assert "audio-only references are rejected" in issue_for(payload, "reference_audio_urls")["message"]
