"""Every model of the shipped catalogue can be queued and renders an MP4 of its requested length and size.

The request for each model is built from its record alone (shortest duration, smallest resolution, the inputs
the record requires), so a record that promises something its engine cannot do fails here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Api, data_url
from tests.media.factory import make_mp4, make_png
from tests.test_media_inputs import video_facts
from vidgate.catalog.models import ModelSpec, load_catalog
from vidgate.media.geometry import SHORT_SIDE_BY_RESOLUTION

CATALOG = load_catalog()
IMAGE_SIZE = (720, 480)  # meets every model's image limits (short side >= 400, ratio 1.5)
SOURCE_SECONDS, SOURCE_SIZE = 2, (320, 240)


def shortest_duration(spec: ModelSpec) -> tuple[str | None, int]:
    seconds = {d: int(m.group(1)) for d in spec.durations if (m := re.fullmatch(r"(\d+)s", d))}
    if not seconds:
        return None, SOURCE_SECONDS
    best = min(seconds, key=seconds.__getitem__)
    return best, seconds[best]


def request_for(spec: ModelSpec, image: str, video: str) -> dict[str, Any]:
    body: dict[str, Any] = {"model": spec.id}
    if spec.prompt != "none":
        body["prompt"] = "A lighthouse on a cliff at dusk, waves below"
    duration, _ = shortest_duration(spec)
    if duration:
        body["duration"] = duration
    if spec.resolutions and not spec.is_upscale:
        body["resolution"] = min(spec.resolutions, key=SHORT_SIDE_BY_RESOLUTION.__getitem__)
    if spec.aspect_ratios:
        body["aspect_ratio"] = "16:9" if "16:9" in spec.aspect_ratios else spec.aspect_ratios[0]
    if spec.inputs.image_url == "required":
        body["image_url"] = image
    elif spec.inputs.references_required:
        body["reference_image_urls"] = [image]
    if spec.inputs.video_url is not None:
        body["video_url"] = video
    return body


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder: Path = tmp_path_factory.mktemp("inputs")
    image = data_url(make_png(folder / "still.png", *IMAGE_SIZE), "image/png")
    video = data_url(make_mp4(folder / "clip.mp4", SOURCE_SECONDS, *SOURCE_SIZE), "video/mp4")
    return image, video


def expected_short_side(spec: ModelSpec, body: dict[str, Any]) -> int:
    if spec.is_upscale:
        return min(SOURCE_SIZE) * 2
    return SHORT_SIDE_BY_RESOLUTION[body.get("resolution") or "720p"]


@pytest.mark.parametrize("spec", list(CATALOG), ids=lambda s: s.id)
async def test_model_queues_and_renders(api: Api, media: tuple[str, str], spec: ModelSpec) -> None:
    key = await api.new_key(balance_usd=100)
    body = request_for(spec, *media)
    quoted = await api.post("/video/quote", body)
    assert quoted.status_code == 200, quoted.text
    queued = await api.post("/video/queue", body, key=key)
    assert queued.status_code == 200, queued.text
    await api.run_worker(max_jobs=1, timeout=120)
    retrieve_body = {"model": spec.id, "queue_id": queued.json()["queue_id"]}
    if spec.download_url:
        got = await api.client.get(queued.json()["download_url"])
    else:
        got = await api.post("/video/retrieve", retrieve_body, key=key)
    assert got.status_code == 200 and got.headers["content-type"] == "video/mp4", got.text[:300]
    facts = video_facts(got.content)
    _, seconds = shortest_duration(spec)
    assert abs(facts["duration"] - seconds) < 0.1
    assert min(facts["size"]) == expected_short_side(spec, body)
    assert (facts["audio_duration"] is not None) == (spec.has_audio and spec.engine != "video")
