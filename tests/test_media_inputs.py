"""Media inputs through the public API: fetched and checked before the charge, and really used by the render."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image

from tests.conftest import Api, MediaServer, data_url
from tests.media.factory import make_mp4, make_png, make_wav, prepared_input
from vidgate.catalog.request import JobPayload


def solid_png(path: Path, w: int, h: int, rgb: tuple[int, int, int]) -> Path:
    Image.new("RGB", (w, h), rgb).save(path, format="PNG")
    return path


def frames_rgb(data: bytes, indices: list[int]) -> dict[int, np.ndarray]:
    wanted, out = set(indices), {}
    with av.open(io.BytesIO(data)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                out[i] = frame.to_ndarray(format="rgb24")
            if len(out) == len(wanted):
                break
    return out


def video_facts(data: bytes) -> dict[str, Any]:
    with av.open(io.BytesIO(data)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        return {
            "size": (video.codec_context.width, video.codec_context.height),
            "fps": float(video.average_rate),
            "frames": video.frames,
            "duration": float(video.duration * video.time_base),
            "audio_duration": float(audio.duration * audio.time_base) if audio else None,
        }


async def balance(api: Api, key: str) -> tuple[int, int]:
    return api.balance_and_ledger(await api.account_of(key))


async def render(api: Api, key: str, body: dict[str, Any]) -> bytes:
    queued = await api.post("/video/queue", body, key)
    assert queued.status_code == 200, queued.text
    await api.run_worker()
    done = await api.post("/video/retrieve", {"model": body["model"], "queue_id": queued.json()["queue_id"]}, key)
    assert done.headers["content-type"] == "video/mp4", done.text
    return done.content


async def test_image_to_video_from_a_data_url_starts_on_the_image(media_api: Api, tmp_path: Path) -> None:
    key = await media_api.new_key()
    image = solid_png(tmp_path / "red.png", 640, 480, (220, 20, 20))
    body = {"model": "seedance-2-0-image-to-video-basic", "prompt": "the red wall slowly glows", "duration": "4s",
            "resolution": "480p", "image_url": data_url(image, "image/png"), "audio": False}
    video = await render(media_api, key, body)
    facts = video_facts(video)
    assert facts["size"] == (640, 480), "4:3 image at 480p"
    assert facts["frames"] == 96 and facts["fps"] == 24.0
    first = frames_rgb(video, [0])[0].reshape(-1, 3).mean(axis=0)
    assert first[0] > 180 and first[1] < 60 and first[2] < 60, first


async def test_image_and_end_image_from_the_media_server(media_api: Api, media_server: MediaServer) -> None:
    key = await media_api.new_key()
    solid_png(media_server.root / "start.png", 800, 450, (20, 200, 20))
    solid_png(media_server.root / "end.png", 800, 450, (20, 20, 220))
    body = {"model": "pixverse-c1-transition", "prompt": "green becomes blue", "duration": "3s",
            "resolution": "360p", "aspect_ratio": "16:9", "audio": False,
            "image_url": media_server.url("start.png"), "end_image_url": media_server.url("end.png")}
    video = await render(media_api, key, body)
    frames = frames_rgb(video, [0, 71])
    start, end = frames[0].reshape(-1, 3).mean(axis=0), frames[71].reshape(-1, 3).mean(axis=0)
    assert start[1] > 150 and start[2] < 80, start
    assert end[2] > 150 and end[1] < 80, end


async def test_private_address_is_refused_and_nothing_is_charged(api: Api, media_server: MediaServer) -> None:
    key = await api.new_key(balance_usd=5)
    make_png(media_server.root / "x.png", 640, 480)
    before = await balance(api, key)
    body = {"model": "seedance-2-0-image-to-video-basic", "prompt": "p", "duration": "4s",
            "image_url": media_server.url("x.png")}
    response = await api.post("/video/queue", body, key)
    assert response.status_code == 400
    assert response.json()["issues"][0]["path"] == ["image_url"]
    assert await balance(api, key) == before


async def test_corrupt_media_is_a_400_naming_the_field_and_costs_nothing(media_api: Api, tmp_path: Path) -> None:
    key = await media_api.new_key(balance_usd=5)
    clip = make_mp4(tmp_path / "clip.mp4", 3, 320, 240)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    body = {"model": "wan-2-7-video-to-video", "prompt": "make it noir", "video_url": data_url(broken, "video/mp4")}
    before = await balance(media_api, key)
    response = await media_api.post("/video/queue", body, key)
    assert response.status_code == 400, response.text
    assert response.json()["issues"][0]["path"] == ["video_url"]
    assert await balance(media_api, key) == before
    assert not list((media_api.settings.data_dir / "inputs").glob("*/*")), "no fetched files left behind"


async def test_reference_clip_over_the_seedance_limit_names_index_and_length(media_api: Api, tmp_path: Path) -> None:
    key = await media_api.new_key()
    short = make_mp4(tmp_path / "short.mp4", 3, 320, 240)
    long = make_mp4(tmp_path / "long.mp4", 16, 160, 120, fps=8)
    body = {"model": "seedance-2-0-reference-to-video-basic", "prompt": "Refer to <Video 1>", "duration": "5s",
            "resolution": "480p", "reference_video_urls": [data_url(short, "video/mp4"), data_url(long, "video/mp4")]}
    response = await media_api.post("/video/queue", body, key)
    assert response.status_code == 400, response.text
    issue = next(i for i in response.json()["issues"] if i["path"] == ["reference_video_urls", 1])
    assert "16" in issue["message"] and "15 s" in issue["message"]


async def test_background_music_becomes_the_soundtrack(media_api: Api, tmp_path: Path) -> None:
    key = await media_api.new_key()
    music = make_wav(tmp_path / "tone.wav", 8)  # 440 Hz, longer than the video: trimmed
    body = {"model": "wan-2.5-preview-text-to-video", "prompt": "a quiet lake", "duration": "5s",
            "resolution": "480p", "audio_url": data_url(music, "audio/wav")}
    video = await render(media_api, key, body)
    assert abs(video_facts(video)["audio_duration"] - 5.0) < 0.1
    with av.open(io.BytesIO(video)) as container:
        samples = np.concatenate([f.to_ndarray()[0] for f in container.decode(audio=0)])
    spectrum = np.abs(np.fft.rfft(samples[48000:96000]))
    peak_hz = np.argmax(spectrum) * 48000 / 48000
    assert abs(peak_hz - 440) < 5, peak_hz


async def test_upscale_doubles_the_input_and_is_priced_from_it(media_api: Api, tmp_path: Path) -> None:
    key = await media_api.new_key()
    clip = make_mp4(tmp_path / "in.mp4", 2, 320, 180, fps=30, audio=True)
    body = {"model": "topaz-video-upscale", "video_url": data_url(clip, "video/mp4"), "upscale_factor": 2}
    quoted = await media_api.post("/video/quote", body)
    assert quoted.json() == {"quote": 0.026}, "2 s at 360p output: the <=720p tier, $0.013/s"
    before = (await balance(media_api, key))[0]
    video = await render(media_api, key, body)
    assert before - (await balance(media_api, key))[0] == 26_000
    facts = video_facts(video)
    assert facts["size"] == (640, 360)
    assert facts["fps"] == 30.0 and facts["frames"] == 60
    assert facts["audio_duration"] is not None and abs(facts["audio_duration"] - 2.0) < 0.1


async def test_video_to_video_keeps_the_inputs_length(media_api: Api, tmp_path: Path) -> None:
    key = await media_api.new_key()
    clip = make_mp4(tmp_path / "in.mp4", 3, 320, 240, audio=True)
    body = {"model": "wan-2-7-video-to-video", "prompt": "oil painting", "resolution": "720p",
            "video_url": data_url(clip, "video/mp4")}
    facts = video_facts(await render(media_api, key, body))
    assert facts["size"] == (960, 720)
    assert facts["frames"] == 72 and abs(facts["duration"] - 3.0) < 0.05
    assert facts["audio_duration"] is not None and abs(facts["audio_duration"] - 3.0) < 0.1


# --- the stored job --------------------------------------------------------------------------------------


def _payload(tmp_path: Path) -> JobPayload:
    """A job with one input of each media kind, a keyframe and an element among them."""
    return JobPayload(model="test-model", inputs={
        "keyframes": (prepared_input(make_png(tmp_path / "k.png", 64, 48), "keyframes[0].image_url",
                                     frame_index=24),),
        "elements.video_url": (prepared_input(make_mp4(tmp_path / "c.mp4", 1), "elements[0].video_url",
                                              element=0),),
        "audio_url": (prepared_input(make_wav(tmp_path / "a.wav", 1), "audio_url"),),
    })


def test_job_inputs_come_back_typed_from_the_stored_json(tmp_path: Path) -> None:
    payload = _payload(tmp_path)
    stored = json.loads(json.dumps(payload.to_json()))
    assert JobPayload.from_json(stored) == payload
    assert [items[0]["info"]["kind"] for items in stored["inputs"].values()] == ["image", "video", "audio"]
    assert set(stored["inputs"]["audio_url"][0]) == {"field", "path", "mime", "sha256", "size", "info"}


def test_jobs_stored_before_info_kinds_are_still_read(tmp_path: Path) -> None:
    payload = _payload(tmp_path)
    stored = json.loads(json.dumps(payload.to_json()))
    for items in stored["inputs"].values():
        del items[0]["info"]["kind"]
    assert JobPayload.from_json(stored) == payload
