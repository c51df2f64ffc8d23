"""queue → retrieve → complete, through the public HTTP API, with the MP4 opened by PyAV."""

from __future__ import annotations

import io

import av
import pytest

from tests.conftest import Api, t2v_body


def probe(data: bytes) -> dict[str, object]:
    with av.open(io.BytesIO(data)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        return {
            "width": video.codec_context.width,
            "height": video.codec_context.height,
            "fps": float(video.average_rate),
            "codec": video.codec_context.name,
            "pix_fmt": video.codec_context.pix_fmt,
            "duration": float(video.duration * video.time_base),
            "frames": video.frames,
            "audio": audio.codec_context.name if audio else None,
        }


async def queue_and_render(api: Api, key: str, **overrides: object) -> str:
    response = await api.post("/video/queue", t2v_body(**overrides), key)
    assert response.status_code == 200, response.text
    queue_id = response.json()["queue_id"]
    await api.run_worker()
    return queue_id


async def test_full_flow_produces_the_requested_video_and_complete_deletes_it(api: Api) -> None:
    key = await api.new_key()
    queued = await api.post("/video/queue", t2v_body(duration="5s", resolution="480p", aspect_ratio="16:9"), key)
    assert queued.status_code == 200
    body = queued.json()
    assert set(body) == {"model", "queue_id"}
    assert body["model"] == "wan-2.5-preview-text-to-video"
    ident = {"model": body["model"], "queue_id": body["queue_id"]}

    pending = await api.post("/video/retrieve", ident, key)
    assert pending.status_code == 200
    assert pending.headers["content-type"].startswith("application/json")
    status = pending.json()
    assert status["status"] == "PROCESSING"
    # A fresh server's first job: estimated from the engine's prior speed, not the configured default.
    assert 0 < status["average_execution_time"] < api.settings.default_average_execution_ms
    assert isinstance(status["execution_duration"], int) and status["execution_duration"] >= 0

    await api.run_worker()

    done = await api.post("/video/retrieve", ident, key, headers={"Accept": "application/json"})
    assert done.status_code == 200
    assert done.headers["content-type"] == "video/mp4"
    assert int(done.headers["content-length"]) == len(done.content)
    info = probe(done.content)
    assert (info["width"], info["height"]) == (854, 480)
    assert info["fps"] == 24.0
    assert info["frames"] == 5 * 24
    assert info["duration"] == pytest.approx(5.0, abs=0.05)
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert info["audio"] == "aac"

    again = await api.post("/video/retrieve", ident, key)
    assert again.content == done.content, "retrieve repeats until complete"

    completed = await api.post("/video/complete", ident, key)
    assert completed.status_code == 200
    assert completed.json() == {"success": True}

    gone = await api.post("/video/retrieve", ident, key)
    assert gone.status_code == 404
    assert gone.json() == {"error": "Media could not be found. Request may be invalid, expired, or deleted."}


@pytest.mark.parametrize(
    ("aspect_ratio", "resolution", "size"),
    [("9:16", "720p", (720, 1280)), ("1:1", "720p", (720, 720)), ("16:9", "720p", (1280, 720))],
)
async def test_frame_size_follows_resolution_and_aspect_ratio(
    api: Api, aspect_ratio: str, resolution: str, size: tuple[int, int]
) -> None:
    key = await api.new_key()
    body = t2v_body(model="wan-2.6-text-to-video", duration="5s", resolution="720p", aspect_ratio=aspect_ratio,
                    audio=False)
    queue_id = await queue_and_render(api, key, **body)
    done = await api.post("/video/retrieve", {"model": "wan-2.6-text-to-video", "queue_id": queue_id}, key)
    info = probe(done.content)
    assert (info["width"], info["height"]) == size
    assert info["audio"] is None, "audio:false on a configurable model gives no audio track"


async def test_retrieve_supports_range_requests(api: Api) -> None:
    key = await api.new_key()
    queue_id = await queue_and_render(api, key)
    ident = {"model": "wan-2.5-preview-text-to-video", "queue_id": queue_id}
    full = await api.post("/video/retrieve", ident, key)
    part = await api.post("/video/retrieve", ident, key, headers={"Range": "bytes=100-1099"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 100-1099/{len(full.content)}"
    assert part.content == full.content[100:1100]


async def test_delete_media_on_completion_serves_once_then_404(api: Api) -> None:
    key = await api.new_key()
    queue_id = await queue_and_render(api, key)
    ident = {"model": "wan-2.5-preview-text-to-video", "queue_id": queue_id}
    first = await api.post("/video/retrieve", {**ident, "delete_media_on_completion": True}, key)
    assert first.status_code == 200 and first.headers["content-type"] == "video/mp4"
    probe(first.content)
    second = await api.post("/video/retrieve", ident, key)
    assert second.status_code == 404
    assert list(api.settings.media_dir.glob("*.mp4")) == []


async def test_another_accounts_queue_id_is_not_found(api: Api) -> None:
    owner, stranger = await api.new_key(), await api.new_key()
    queued = await api.post("/video/queue", t2v_body(), owner)
    ident = {"model": "wan-2.5-preview-text-to-video", "queue_id": queued.json()["queue_id"]}
    for path in ("/video/retrieve", "/video/complete"):
        response = await api.post(path, ident, stranger)
        assert response.status_code == 404, path
        assert response.json()["error"].startswith("Media could not be found")


async def test_wrong_model_for_the_job_is_not_found(api: Api) -> None:
    key = await api.new_key()
    queued = await api.post("/video/queue", t2v_body(), key)
    ident = {"model": "wan-2.6-text-to-video", "queue_id": queued.json()["queue_id"]}
    assert (await api.post("/video/retrieve", ident, key)).status_code == 404
    assert (await api.post("/video/complete", ident, key)).status_code == 404


async def test_unknown_queue_id_is_not_found(api: Api) -> None:
    key = await api.new_key()
    ident = {"model": "wan-2.5-preview-text-to-video", "queue_id": "00000000-0000-0000-0000-000000000000"}
    assert (await api.post("/video/retrieve", ident, key)).status_code == 404


async def test_same_request_renders_the_same_bytes(api: Api) -> None:
    key = await api.new_key()
    first = await queue_and_render(api, key, duration="5s")
    second = await queue_and_render(api, key, duration="5s")
    a = await api.post("/video/retrieve", {"model": "wan-2.5-preview-text-to-video", "queue_id": first}, key)
    b = await api.post("/video/retrieve", {"model": "wan-2.5-preview-text-to-video", "queue_id": second}, key)
    assert a.content == b.content
