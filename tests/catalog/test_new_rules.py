"""The request fields and rules of Venice's 2026-09-29 catalogue, each at and just past its limit (CHANGES §2, §9)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SHORT_PROMPT, Api, data_url
from tests.media.factory import make_mp4, make_png
from tests.test_media_inputs import frames_rgb, video_facts
from tests.test_validation import issue_for, rejected

MULTI_ANGLE = "minimax-h3-max-multi-angle"


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    return data_url(make_png(tmp_path_factory.mktemp("img") / "still.png", 640, 480), "image/png")


def trajectory(n: int = 2, **changes: Any) -> list[dict[str, float]]:
    points = [{"time": i / (n - 1), "azimuth": 30.0 * i, "elevation": 10.0, "distance": 1.0} for i in range(n)]
    points[-1] = {**points[-1], **changes}
    return points


def multi_angle(image: str, **fields: Any) -> dict[str, Any]:
    return {"model": MULTI_ANGLE, "duration": "5s", "resolution": "480P", "image_url": image, **fields}


async def accepted(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    response = await api.post("/video/queue", body, await api.new_key())
    assert response.status_code == 200, response.text
    return response.json()


# --- camera_trajectory ------------------------------------------------------------------------------------


async def test_camera_trajectory_takes_2_to_12_keyframes(api: Api, image: str) -> None:
    await accepted(api, multi_angle(image, camera_trajectory=trajectory(2)))
    await accepted(api, multi_angle(image, camera_trajectory=trajectory(12)))
    one = await rejected(api, multi_angle(image, camera_trajectory=trajectory(2)[:1]))
    assert "at least 2" in issue_for(one, "camera_trajectory")["message"]
    thirteen = await rejected(api, multi_angle(image, camera_trajectory=trajectory(13)))
    assert issue_for(thirteen, "camera_trajectory")["maximum"] == 12


async def test_camera_time_is_in_0_1_and_strictly_increasing(api: Api, image: str) -> None:
    await accepted(api, multi_angle(image, camera_trajectory=trajectory(3, time=1.0)))
    past = await rejected(api, multi_angle(image, camera_trajectory=trajectory(3, time=1.01)))
    assert "between 0 and 1" in issue_for(past, "camera_trajectory", 2, "time")["message"]
    flat = await rejected(api, multi_angle(image, camera_trajectory=trajectory(3, time=0.5)))
    assert "increase strictly" in issue_for(flat, "camera_trajectory", 2, "time")["message"]


async def test_camera_elevation_and_distance_limits(api: Api, image: str) -> None:
    await accepted(api, multi_angle(image, camera_trajectory=trajectory(2, elevation=90, distance=0.01)))
    await accepted(api, multi_angle(image, camera_trajectory=trajectory(2, elevation=-90)))
    high = await rejected(api, multi_angle(image, camera_trajectory=trajectory(2, elevation=90.5)))
    assert "-90 and 90" in issue_for(high, "camera_trajectory", 1, "elevation")["message"]
    zero = await rejected(api, multi_angle(image, camera_trajectory=trajectory(2, distance=0)))
    assert "greater than 0" in issue_for(zero, "camera_trajectory", 1, "distance")["message"]


async def test_camera_keyframes_have_exactly_four_numeric_keys(api: Api, image: str) -> None:
    extra = await rejected(api, multi_angle(image, camera_trajectory=trajectory(2, fov=40)))
    assert issue_for(extra, "camera_trajectory", 1)["code"] == "unrecognized_keys"
    points = trajectory(2)
    del points[0]["azimuth"]
    missing = await rejected(api, multi_angle(image, camera_trajectory=points))
    assert issue_for(missing, "camera_trajectory", 0, "azimuth")["message"] == "Required"


async def test_camera_azimuth_travel_is_at_most_32_turns(api: Api, image: str) -> None:
    await accepted(api, multi_angle(image, camera_trajectory=trajectory(2, azimuth=11520)))
    too_far = await rejected(api, multi_angle(image, camera_trajectory=trajectory(2, azimuth=11521)))
    assert "32 turns" in issue_for(too_far, "camera_trajectory")["message"]


async def test_multi_angle_needs_an_image_but_no_prompt(api: Api, image: str) -> None:
    await accepted(api, multi_angle(image))  # no prompt, no trajectory: both optional
    body = multi_angle(image)
    del body["image_url"]
    payload = await rejected(api, body)
    assert "image_url is required" in issue_for(payload, "image_url")["message"]
    aspect = await rejected(api, multi_angle(image, aspect_ratio="16:9"))
    assert issue_for(aspect, "aspect_ratio")


async def test_camera_trajectory_is_refused_by_other_models(api: Api) -> None:
    body = {"model": "minimax-h3-max-text-to-video", "prompt": SHORT_PROMPT, "duration": "5s",
            "camera_trajectory": trajectory(2)}
    payload = await rejected(api, body)
    assert "multi-angle" in issue_for(payload, "camera_trajectory")["message"]


async def test_camera_trajectory_moves_the_camera_in_the_video(api: Api, image: str) -> None:
    key = await api.new_key()
    still = await api.post("/video/queue", multi_angle(image, camera_trajectory=trajectory(
        2, azimuth=0, elevation=10, distance=1.0)), key)
    orbit = await api.post("/video/queue", multi_angle(image, camera_trajectory=[
        {"time": 0, "azimuth": -80, "elevation": 40, "distance": 0.9},
        {"time": 1, "azimuth": 80, "elevation": -40, "distance": 0.9}]), key)
    await api.run_worker(max_jobs=2)
    videos = []
    for queued in (still, orbit):
        got = await api.post("/video/retrieve", {"model": MULTI_ANGLE, "queue_id": queued.json()["queue_id"]}, key)
        assert got.headers["content-type"] == "video/mp4"
        assert abs(video_facts(got.content)["duration"] - 5) < 0.1
        videos.append(frames_rgb(got.content, [0, 119]))
    still_frames, orbit_frames = videos
    moved = float(abs(orbit_frames[0].astype(int) - orbit_frames[119].astype(int)).mean())
    held = float(abs(still_frames[0].astype(int) - still_frames[119].astype(int)).mean())
    assert moved > held + 2, (moved, held)


# --- resolutions, aspect ratios, aliases ------------------------------------------------------------------


async def test_new_resolution_values_match_case_sensitively(api: Api) -> None:
    wan = {"model": "wan-3-0-pro-text-to-video", "prompt": SHORT_PROMPT, "duration": "2s", "aspect_ratio": "16:9"}
    await accepted(api, {**wan, "resolution": "2k"})
    upper = await rejected(api, {**wan, "resolution": "2K"})
    assert issue_for(upper, "resolution")["expected"] == "'1080p' | '2k' | '4k'"
    h3 = {"model": "minimax-h3-max-text-to-video", "prompt": SHORT_PROMPT, "duration": "5s", "aspect_ratio": "16:9"}
    await accepted(api, {**h3, "resolution": "1080P"})
    lower = await rejected(api, {**h3, "resolution": "1080p"})
    assert issue_for(lower, "resolution")["expected"] == "'480P' | '768P' | '1080P'"


async def test_wan3_requires_duration_and_aspect_ratio(api: Api) -> None:
    body = {"model": "wan-3-0-text-to-video", "prompt": SHORT_PROMPT}
    payload = await rejected(api, body)
    assert issue_for(payload, "duration")["message"] == "Required"
    assert issue_for(payload, "aspect_ratio")["message"] == "Required"
    adaptive = await rejected(api, {**body, "duration": "5s", "aspect_ratio": "adaptive"})
    assert "adaptive" not in issue_for(adaptive, "aspect_ratio")["expected"]


async def test_wan3_dotted_alias_is_accepted_and_echoed(api: Api) -> None:
    key = await api.new_key()
    body = {"model": "wan-3.0-text-to-video", "prompt": SHORT_PROMPT, "duration": "2s", "aspect_ratio": "16:9",
            "resolution": "480p"}
    queued = await api.post("/video/queue", body, key)
    assert queued.status_code == 200, queued.text
    assert queued.json()["model"] == "wan-3.0-text-to-video"
    canonical = await api.post("/video/quote", {**body, "model": "wan-3-0-text-to-video"})
    assert (await api.post("/video/quote", body)).json() == canonical.json()
    await api.run_worker()
    got = await api.post("/video/retrieve", {"model": "wan-3.0-text-to-video",
                                             "queue_id": queued.json()["queue_id"]}, key)
    assert got.headers["content-type"] == "video/mp4"


async def test_wan3_messages_for_unsupported_inputs(api: Api, image: str) -> None:
    t2v = await rejected(api, {"model": "wan-3-0-text-to-video", "prompt": SHORT_PROMPT, "duration": "5s",
                               "aspect_ratio": "16:9", "image_url": image})
    assert issue_for(t2v, "image_url")["message"] == "image_url is not supported for text to video models"
    r2v = {"model": "wan-3-0-prime-reference-to-video", "prompt": SHORT_PROMPT, "duration": "5s",
           "aspect_ratio": "16:9", "reference_image_urls": [image]}
    end = await rejected(api, {**r2v, "end_image_url": image})
    assert issue_for(end, "end_image_url")["message"] == "This model does not support end_image_url"
    docs = await rejected(api, {**r2v, "reference_document_urls": ["https://example.com/brief.pdf"]})
    assert issue_for(docs, "reference_document_urls")["message"] == "This model does not support reference documents"


async def test_wan3_reference_images_at_most_10(api: Api, image: str) -> None:
    body = {"model": "wan-3-0-reference-to-video", "prompt": SHORT_PROMPT, "duration": "2s",
            "aspect_ratio": "16:9", "resolution": "480p"}
    await accepted(api, {**body, "reference_image_urls": [image] * 10})
    payload = await rejected(api, {**body, "reference_image_urls": [image] * 11})
    assert issue_for(payload, "reference_image_urls")["maximum"] == 10


async def test_unlisted_reference_models_take_4_images(api: Api, image: str) -> None:
    body = {"model": "pixverse-c1-reference-to-video", "prompt": SHORT_PROMPT, "duration": "5s",
            "resolution": "540p", "aspect_ratio": "16:9"}
    await accepted(api, {**body, "reference_image_urls": [image] * 4})
    payload = await rejected(api, {**body, "reference_image_urls": [image] * 5})
    assert issue_for(payload, "reference_image_urls")["maximum"] == 4


async def test_h3_max_reference_refuses_a_start_frame_with_references(api: Api, image: str) -> None:
    body = {"model": "minimax-h3-max-reference-to-video", "prompt": SHORT_PROMPT, "duration": "5s",
            "aspect_ratio": "16:9", "reference_image_urls": [image]}
    await accepted(api, body)
    payload = await rejected(api, {**body, "image_url": image})
    assert "cannot be combined with reference media" in issue_for(payload, "image_url")["message"]


# --- Wan 3.0: reference video + output <= 30 s ------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_5s(tmp_path_factory: pytest.TempPathFactory) -> str:
    return data_url(make_mp4(tmp_path_factory.mktemp("clip") / "ref.mp4", 5, 160, 120), "video/mp4")


async def test_wan3_reference_plus_output_at_most_30s_at_queue(api: Api, clip_5s: str) -> None:
    body = {"model": "wan-3-0-reference-to-video", "prompt": SHORT_PROMPT, "aspect_ratio": "16:9",
            "resolution": "480p", "reference_video_urls": [clip_5s]}
    await accepted(api, {**body, "duration": "25s"})
    payload = await rejected(api, {**body, "duration": "30s"})
    issue = issue_for(payload, "duration")
    assert "Choose an output duration of 25s or less" in issue["message"]


async def test_wan3_quote_reference_limits(api: Api) -> None:
    body = {"model": "wan-3-0-reference-to-video", "duration": "15s", "resolution": "720p"}
    ok = await api.post("/video/quote", {**body, "reference_video_total_duration": 15})
    assert ok.status_code == 200
    over = await api.post("/video/quote", {**body, "reference_video_total_duration": 16})
    assert over.status_code == 400 and over.json()["issues"][0]["path"] == ["reference_video_total_duration"]
    long = await api.post("/video/quote", {**body, "duration": "20s", "reference_video_total_duration": 11})
    assert long.status_code == 400 and "19s or less" in long.json()["issues"][0]["message"]
    # Input seconds are billed on top of the output (G-WAN3a/b): 15 s output + 5 s input = the 20 s price.
    with_video = await api.post("/video/quote", {**body, "reference_video_total_duration": 5})
    twenty = await api.post("/video/quote", {**body, "duration": "20s"})
    assert with_video.json() == twenty.json()


# --- removed and deprecated models ------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["sora-2-text-to-video", "sora-2-pro-image-to-video", "wan-2.1-pro-image-to-video",
                                   "wan-2.2-a14b-text-to-video"])
async def test_removed_models_answer_410(api: Api, model: str) -> None:
    key = await api.new_key()
    for path in ("/video/queue", "/video/quote"):
        response = await api.post(path, {"model": model, "prompt": SHORT_PROMPT, "duration": "4s"}, key)
        assert response.status_code == 410, response.text
        assert model in response.json()["error"] and "removed" in response.json()["error"]
    listed = (await api.client.get("/api/v1/models", params={"type": "video"})).json()["data"]
    assert model not in {m["id"] for m in listed}


async def test_never_listed_model_is_still_a_400(api: Api) -> None:
    response = await api.post("/video/quote", {"model": "no-such-model", "duration": "5s"})
    assert response.status_code == 400



async def test_wan3_standard_reference_takes_one_document(api: Api, image: str) -> None:
    body = {"model": "wan-3-0-reference-to-video", "prompt": SHORT_PROMPT, "duration": "2s", "aspect_ratio": "16:9",
            "resolution": "480p", "reference_image_urls": [image]}
    await accepted(api, {**body, "reference_document_urls": ["https://example.com/brief"]})
    two = await rejected(api, {**body, "reference_document_urls": ["https://example.com/a", "https://example.com/b"]})
    assert issue_for(two, "reference_document_urls")["maximum"] == 1


async def test_video_model_with_its_own_durations_makes_the_requested_length(api: Api, tmp_path: Path) -> None:
    clip = data_url(make_mp4(tmp_path / "src.mp4", 2, 320, 240), "video/mp4")
    body = {"model": "grok-imagine-video-to-video-private", "prompt": SHORT_PROMPT, "duration": "5s",
            "resolution": "480p", "video_url": clip}
    queued = await accepted(api, body)
    await api.run_worker()
    got = await api.client.get(queued["download_url"])
    assert abs(video_facts(got.content)["duration"] - 5) < 0.1


async def test_anon_user_id_is_accepted_up_to_128_printable_ascii_characters(api: Api) -> None:
    body = {"model": "wan-2.5-preview-text-to-video", "prompt": SHORT_PROMPT, "duration": "5s", "resolution": "480p"}
    await accepted(api, {**body, "anon_user_id": "u" * 128})
    for bad in ("u" * 129, "a||b", "caf\u00e9", "tab\there"):
        payload = await rejected(api, {**body, "anon_user_id": bad})
        assert "128 printable ASCII" in issue_for(payload, "anon_user_id")["message"]
