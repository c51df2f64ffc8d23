"""Seedance's Reference, Edit, Extend and Stitch workflows on the R2V models (SPEC §4), end to end over HTTP:
queue with data: URLs, render with the in-process worker, open the MP4 with PyAV and look at what a user would
see; quote each request and check that queue charged exactly that.  Also Kling O3 elements and scene images,
and `bitrate_mode`."""

from __future__ import annotations

import io
import math
import wave
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

from tests.conftest import Api, data_url
from tests.media.factory import make_mp4
from vidgate.catalog.workflows import Counts, check_tags, classify, transition_kind, workflow_issues
from vidgate.engines.encode import AUDIO_RATE, decode_audio

R25 = "seedance-2-5-reference-to-video-basic"
R20 = "seedance-2-0-reference-to-video-basic"
KLING = "kling-o3-pro-reference-to-video"

RED, GREEN, BLUE, YELLOW = (220, 20, 20), (20, 200, 20), (20, 20, 220), (230, 230, 20)
NAMED = {"red": RED, "green": GREEN, "blue": BLUE, "yellow": YELLOW}


# --- inputs ---------------------------------------------------------------------------------------------


def solid_clip(path: Path, colours: list[tuple[int, int, int]], seconds_each: float, *,
               size: tuple[int, int] = (320, 240), fps: int = 24, tone_hz: float | None = None) -> Path:
    """An H.264 MP4 showing each colour in turn for `seconds_each`, with an AAC sine tone when `tone_hz`."""
    w, h = size
    per = round(seconds_each * fps)
    seconds = per * len(colours) / fps
    with av.open(str(path), "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        video.options = {"preset": "ultrafast", "qp": "12"}
        audio = container.add_stream("aac", rate=AUDIO_RATE, layout="stereo") if tone_hz else None
        i = 0
        for colour in colours:
            rgb = np.full((h, w, 3), colour, dtype=np.uint8)
            for _ in range(per):
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts = i
                i += 1
                for packet in video.encode(frame):
                    container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if audio is not None and tone_hz is not None:
            n = round(seconds * AUDIO_RATE)
            mono = (0.3 * np.sin(2 * math.pi * tone_hz * np.arange(n) / AUDIO_RATE)).astype(np.float32)
            samples = np.stack([mono, mono])
            for start in range(0, n, 1024):
                chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start : start + 1024]),
                                                   format="fltp", layout="stereo")
                chunk.sample_rate, chunk.pts, chunk.time_base = AUDIO_RATE, start, Fraction(1, AUDIO_RATE)
                for packet in audio.encode(chunk):
                    container.mux(packet)
            for packet in audio.encode(None):
                container.mux(packet)
    return path


def tone_wav(path: Path, seconds: float, hz: float) -> Path:
    n = round(seconds * 44100)
    samples = (0.3 * 32767 * np.sin(2 * math.pi * hz * np.arange(n) / 44100)).astype(np.int16)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(44100)
        out.writeframes(samples.tobytes())
    return path


def solid_png(path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (400, 300)) -> Path:
    Image.new("RGB", size, rgb).save(path, format="PNG")
    return path


def mp4_url(path: Path) -> str:
    return data_url(path, "video/mp4")


def png_url(path: Path) -> str:
    return data_url(path, "image/png")


# --- outputs --------------------------------------------------------------------------------------------


def facts(data: bytes) -> dict[str, Any]:
    with av.open(io.BytesIO(data)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        return {
            "size": (video.codec_context.width, video.codec_context.height),
            "fps": video.average_rate,
            "frames": sum(1 for _ in container.decode(video=0)),
            "duration": float(video.duration * video.time_base),
            "audio_duration": float(audio.duration * audio.time_base) if audio else None,
        }


def frames(data: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(data)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def centre(rgb: np.ndarray) -> np.ndarray:
    """Mean colour of the middle half of a frame (clear of the vignette and the caption band)."""
    h, w = rgb.shape[:2]
    return rgb[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4].reshape(-1, 3).mean(axis=0)


def colour_name(rgb: np.ndarray) -> str:
    mean = centre(rgb)
    return min(NAMED, key=lambda n: float(np.sum((mean - np.array(NAMED[n])) ** 2)))


def near(frame: np.ndarray, rgb: tuple[int, int, int], tolerance: float = 12) -> bool:
    """The whole frame (caption band and corners included) is within `tolerance` of a solid colour."""
    return float(np.abs(frame.astype(np.int16) - np.array(rgb, dtype=np.int16)).mean()) < tolerance


def peak_hz(data: bytes, tmp_path: Path, seconds: float) -> float:
    path = tmp_path / "peak.mp4"
    path.write_bytes(data)
    mono = decode_audio(path, seconds).mean(axis=0)
    spectrum = np.abs(np.fft.rfft(mono * np.hanning(mono.size)))
    return float(np.fft.rfftfreq(mono.size, 1 / AUDIO_RATE)[int(np.argmax(spectrum))])


# --- the API --------------------------------------------------------------------------------------------


async def render(api: Api, key: str, body: dict[str, Any]) -> tuple[bytes, int]:
    """Queue `body`, render it, and return the MP4 and what the queue charged (micro-USD)."""
    account = await api.account_of(key)
    before = api.balance_and_ledger(account)
    queued = await api.post("/video/queue", body, key)
    assert queued.status_code == 200, queued.text
    after = api.balance_and_ledger(account)
    assert after[0] == after[1], "balance and ledger agree"
    await api.run_worker()
    done = await api.post("/video/retrieve", {"model": body["model"], "queue_id": queued.json()["queue_id"]}, key)
    assert done.headers["content-type"] == "video/mp4", done.text
    return done.content, before[0] - after[0]


async def quoted(api: Api, **body: Any) -> int:
    response = await api.post("/video/quote", body)
    assert response.status_code == 200, response.text
    return round(response.json()["quote"] * 1_000_000)


# --- Edit -----------------------------------------------------------------------------------------------


async def test_edit_keeps_the_source_timing_frames_and_sound(media_api: Api, tmp_path: Path) -> None:
    key = await media_api.new_key()
    source = solid_clip(tmp_path / "src.mp4", [RED, GREEN], 1.5, fps=30, tone_hz=660)  # 90 frames, 3 s
    body = {"model": R25, "prompt": "Strictly edit <Video 1>, changing its colours to a warm sunset palette",
            "duration": "5s", "resolution": "480p", "aspect_ratio": "adaptive",
            "reference_video_urls": [mp4_url(source)]}
    video, charged = await render(media_api, key, body)
    out = facts(video)
    assert out["frames"] == 90 and out["fps"] == 30, out
    assert out["duration"] == pytest.approx(3.0, abs=0.01)
    assert out["size"] == (640, 480), "adaptive: the source's 4:3 at 480p"
    assert out["audio_duration"] == pytest.approx(3.0, abs=0.05)
    assert peak_hz(video, tmp_path, 3.0) == pytest.approx(660, abs=3), "the source's own sound"
    pictures = frames(video)
    assert colour_name(pictures[5]) == "red" and colour_name(pictures[85]) == "green"
    assert colour_name(pictures[44]) == "red" and colour_name(pictures[45]) == "green", "the cut stays on its frame"
    assert not near(pictures[5], (220, 20, 20), 3), "the prompt's grade changed the picture"
    # 5 s of output plus ceil(3 s) of reference video, as the quote prices it.
    assert charged == await quoted(media_api, model=R25, duration="5s", resolution="480p", aspect_ratio="adaptive",
                                   reference_video_total_duration=3.0)


async def test_edit_takes_the_audio_the_prompt_names(media_api: Api, tmp_path: Path) -> None:
    key = await media_api.new_key()
    source = solid_clip(tmp_path / "src.mp4", [BLUE], 2, tone_hz=660)
    music = tone_wav(tmp_path / "music.wav", 3, 440)
    body = {"model": R20, "prompt": "Strictly edit <Video 1>, changing its soundtrack to the melody of <Audio 1>",
            "duration": "4s", "resolution": "480p", "reference_video_urls": [mp4_url(source)],
            "reference_audio_urls": [data_url(music, "audio/wav")]}
    video, _ = await render(media_api, key, body)
    out = facts(video)
    assert out["frames"] == 48 and out["audio_duration"] == pytest.approx(2.0, abs=0.05)
    assert peak_hz(video, tmp_path, 2.0) == pytest.approx(440, abs=3)


async def test_source_matched_duration_and_aspect_on_2_5_edit(media_api: Api, tmp_path: Path) -> None:
    """`duration: "auto"` (or "-1"): the output lasts exactly as long as the source (same frames at the same
    rate); it is billed on ceil(reference_video_total_duration) seconds.  `adaptive`: the source's aspect."""
    key = await media_api.new_key()
    source = solid_clip(tmp_path / "portrait.mp4", [YELLOW, BLUE], 2.25, size=(240, 320))  # 4.5 s, 108 frames
    body = {"model": R25, "prompt": "Strictly edit <Video 1>, changing its sky to violet", "duration": "auto",
            "resolution": "480p", "aspect_ratio": "adaptive", "reference_video_urls": [mp4_url(source)]}
    video, charged = await render(media_api, key, body)
    out = facts(video)
    assert out["size"] == (480, 640), "3:4 like the source"
    assert out["frames"] == 108 and out["duration"] == pytest.approx(4.5, abs=0.01)
    quote = await quoted(media_api, model=R25, duration="auto", resolution="480p", aspect_ratio="adaptive",
                         reference_video_total_duration=4.5)
    assert charged == quote
    assert quote == await quoted(media_api, model=R25, duration="-1", resolution="480p",
                                 reference_video_total_duration=4.5)
    assert quote == await quoted(media_api, model=R25, duration="5s", resolution="480p"), "ceil(4.5 s) = 5 s"


async def test_explicit_task_type_edit_wins_over_the_prompt(media_api: Api, tmp_path: Path) -> None:
    key = await media_api.new_key()
    source = solid_clip(tmp_path / "src.mp4", [GREEN], 2.5)
    body = {"model": R25, "prompt": "<Video 1> at golden hour", "duration": "4s", "resolution": "480p",
            "omni_reference_task_type": "editing", "reference_video_urls": [mp4_url(source)], "audio": False}
    video, _ = await render(media_api, key, body)
    out = facts(video)
    assert out["frames"] == 60 and out["audio_duration"] is None
    assert out["size"] == (854, 480), "an explicit (default) 16:9 crops the 4:3 source"


# --- Extend ---------------------------------------------------------------------------------------------


@pytest.fixture
def red_then_blue(tmp_path: Path) -> Path:
    """2 s at 24 fps: red for the first second, blue for the second."""
    return solid_clip(tmp_path / "rb.mp4", [RED, BLUE], 1.0, tone_hz=660)


async def test_extend_starts_on_the_source_last_frame(media_api: Api, red_then_blue: Path) -> None:
    key = await media_api.new_key()
    body = {"model": R20, "prompt": "Extend <Video 1>, generate the blue light spreading over the sea",
            "duration": "4s", "resolution": "480p", "aspect_ratio": "adaptive",
            "reference_video_urls": [mp4_url(red_then_blue)]}
    video, charged = await render(media_api, key, body)
    out = facts(video)
    assert out["frames"] == 96 and out["duration"] == pytest.approx(4.0, abs=0.01), "only the new 4 s"
    assert out["audio_duration"] == pytest.approx(4.0, abs=0.05)
    pictures = frames(video)
    assert near(pictures[0], BLUE), "the first frame is the source's last frame"
    assert not any(colour_name(p) == "red" for p in pictures), "the source itself is not replayed"
    assert not near(pictures[-1], BLUE, 4), "the prompt's look eases in"
    assert charged == await quoted(media_api, model=R20, duration="4s", resolution="480p",
                                   reference_video_total_duration=2.0)


async def test_extend_backward_ends_on_the_source_first_frame(media_api: Api, red_then_blue: Path) -> None:
    key = await media_api.new_key()
    body = {"model": R20, "prompt": "Extend <Video 1> backward, generate how the red glow began",
            "duration": "4s", "resolution": "480p", "aspect_ratio": "adaptive",
            "reference_video_urls": [mp4_url(red_then_blue)]}
    video, _ = await render(media_api, key, body)
    pictures = frames(video)
    assert len(pictures) == 96
    assert near(pictures[-1], RED), "the last frame is the source's first frame"
    assert not near(pictures[0], RED, 4)
    assert not any(colour_name(p) == "blue" for p in pictures)


async def test_extend_start_with_the_source_prepends_it(media_api: Api, red_then_blue: Path,
                                                        tmp_path: Path) -> None:
    key = await media_api.new_key()
    body = {"model": R25, "prompt": "Extend <Video 1>: start with <Video 1>, then generate a blue dawn",
            "duration": "4s", "resolution": "480p", "aspect_ratio": "adaptive", "omni_reference_task_type": "extension",
            "reference_video_urls": [mp4_url(red_then_blue)]}
    video, charged = await render(media_api, key, body)
    out = facts(video)
    assert out["frames"] == 48 + 96 and out["duration"] == pytest.approx(6.0, abs=0.01), "source + requested"
    assert out["audio_duration"] == pytest.approx(6.0, abs=0.05)
    pictures = frames(video)
    assert near(pictures[0], RED) and near(pictures[23], RED), "the source first, untouched"
    assert near(pictures[47], BLUE) and near(pictures[48], BLUE), "then the new content from its last frame"
    assert peak_hz(video, tmp_path, 2.0) == pytest.approx(660, abs=3), "the source's sound under the source"
    assert charged == await quoted(media_api, model=R25, duration="4s", resolution="480p", aspect_ratio="auto",
                                   reference_video_total_duration=2.0)


async def test_extend_brings_in_the_named_image(media_api: Api, red_then_blue: Path, tmp_path: Path) -> None:
    key = await media_api.new_key()
    body = {"model": R20, "prompt": "Extend <Video 1>, generate the yellow sun of <Image 1> rising",
            "duration": "4s", "resolution": "480p", "aspect_ratio": "adaptive", "audio": False,
            "reference_video_urls": [mp4_url(red_then_blue)],
            "reference_image_urls": [png_url(solid_png(tmp_path / "sun.png", YELLOW))]}
    video, _ = await render(media_api, key, body)
    names = [colour_name(p) for p in frames(video)]
    assert names[0] == "blue" and names[-1] == "yellow"


# --- Stitch ---------------------------------------------------------------------------------------------


@pytest.fixture
def two_clips(tmp_path: Path) -> tuple[Path, Path]:
    return (solid_clip(tmp_path / "one.mp4", [RED], 2, tone_hz=660),
            solid_clip(tmp_path / "two.mp4", [BLUE], 2, tone_hz=440))


def is_blend(frame: np.ndarray) -> bool:
    r, _, b = centre(frame)
    return r > 50 and b > 50


async def test_stitch_with_a_crossfade(media_api: Api, two_clips: tuple[Path, Path]) -> None:
    key = await media_api.new_key()
    body = {"model": R20, "prompt": "<Video 1> + a slow crossfade + followed by <Video 2>, one evening",
            "duration": "4s", "resolution": "480p", "aspect_ratio": "adaptive",
            "reference_video_urls": [mp4_url(p) for p in two_clips]}
    video, charged = await render(media_api, key, body)
    out = facts(video)
    # Both clips in full (48 frames each) and 0.5 s (12 frames) of transition between them.
    assert out["frames"] == 108 and out["duration"] == pytest.approx(4.5, abs=0.01)
    assert out["audio_duration"] == pytest.approx(4.5, abs=0.05)
    pictures = frames(video)
    assert all(near(p, RED) for p in pictures[:48]) and all(near(p, BLUE) for p in pictures[60:])
    blends = [i for i, p in enumerate(pictures) if is_blend(p)]
    assert blends and min(blends) >= 48 and max(blends) < 60 and len(blends) >= 6, blends
    assert charged == await quoted(media_api, model=R20, duration="4s", resolution="480p",
                                   reference_video_total_duration=4.0)


async def test_stitch_with_a_cut_in_the_prompt_order(media_api: Api, two_clips: tuple[Path, Path]) -> None:
    key = await media_api.new_key()
    body = {"model": R25, "prompt": "<Video 2> + hard cut + followed by <Video 1>", "duration": "4s",
            "resolution": "480p", "reference_video_urls": [mp4_url(p) for p in two_clips], "audio": False}
    video, charged = await render(media_api, key, body)
    pictures = frames(video)
    assert len(pictures) == 96
    assert [colour_name(p) for p in pictures] == ["blue"] * 48 + ["red"] * 48
    assert not any(is_blend(p) for p in pictures)
    assert charged == await quoted(media_api, model=R25, duration="4s", resolution="480p", audio=False,
                                   reference_video_total_duration=4.0)


# --- Routing errors and Reference -------------------------------------------------------------------------


async def test_a_tag_naming_a_missing_input_is_a_400(media_api: Api, two_clips: tuple[Path, Path]) -> None:
    key = await media_api.new_key()
    account = await media_api.account_of(key)
    before = media_api.balance_and_ledger(account)
    body = {"model": R20, "prompt": "<Video 1> + crossfade + followed by <Video 3>", "duration": "4s",
            "resolution": "480p", "reference_video_urls": [mp4_url(p) for p in two_clips]}
    response = await media_api.post("/video/queue", body, key)
    assert response.status_code == 400, response.text
    issue = response.json()["issues"][0]
    assert issue["path"] == ["prompt"] and "<Video 3>" in issue["message"] and issue["received"] == "<Video 3>"
    assert "<Video 3>" in response.json()["error"]
    assert media_api.balance_and_ledger(account) == before


async def test_edit_task_type_without_a_clip_is_a_400(media_api: Api, tmp_path: Path) -> None:
    key = await media_api.new_key()
    body = {"model": R25, "prompt": "make it purple", "duration": "4s", "omni_reference_task_type": "edit",
            "reference_image_urls": [png_url(solid_png(tmp_path / "a.png", RED))]}
    response = await media_api.post("/video/queue", body, key)
    assert response.status_code == 400, response.text
    assert response.json()["issues"][0]["path"] == ["omni_reference_task_type"]


async def test_text_with_no_tag_is_a_reference(media_api: Api, tmp_path: Path) -> None:
    key = await media_api.new_key()
    body = {"model": R20, "prompt": "a quiet harbour at dawn", "duration": "4s", "resolution": "480p",
            "aspect_ratio": "4:3", "audio": False,
            "reference_image_urls": [png_url(solid_png(tmp_path / "g.png", GREEN))]}
    video, charged = await render(media_api, key, body)
    out = facts(video)
    assert out["frames"] == 96 and out["size"] == (640, 480)
    assert colour_name(frames(video)[48]) == "green"
    assert charged == await quoted(media_api, model=R20, duration="4s", resolution="480p", audio=False)


# --- bitrate_mode ---------------------------------------------------------------------------------------


async def test_bitrate_mode_high_spends_more_bits_for_the_same_price(media_api: Api, tmp_path: Path) -> None:
    key = await media_api.new_key()
    source = make_mp4(tmp_path / "pattern.mp4", 2, 320, 240)  # a moving gradient: something to spend bits on
    body = {"model": R25, "prompt": "Strictly edit <Video 1>, changing its colours to teal", "duration": "4s",
            "resolution": "480p", "reference_video_urls": [mp4_url(source)], "audio": False}
    standard, standard_charge = await render(media_api, key, {**body, "bitrate_mode": "standard"})
    high, high_charge = await render(media_api, key, {**body, "bitrate_mode": "high"})
    assert facts(standard)["frames"] == facts(high)["frames"] == 48
    assert len(high) > len(standard) * 1.2, (len(high), len(standard))
    assert high_charge == standard_charge == await quoted(media_api, model=R25, duration="4s", resolution="480p",
                                                          audio=False, reference_video_total_duration=2.0)


# --- Kling O3 elements and scene images ---------------------------------------------------------------------


async def test_kling_o3_elements_and_scene_images_appear_where_the_prompt_names_them(media_api: Api,
                                                                                     tmp_path: Path) -> None:
    key = await media_api.new_key()

    def url(name: str, rgb: tuple[int, int, int]) -> str:
        return png_url(solid_png(tmp_path / f"{name}.png", rgb))

    body = {"model": KLING, "prompt": "@Element2 walks into @Image1 at dusk", "duration": "3s",
            "aspect_ratio": "1:1", "audio": False,
            "elements": [{"frontal_image_url": url("e1", RED), "reference_image_urls": [url("e1r", RED)]},
                         {"frontal_image_url": url("e2", GREEN), "reference_image_urls": [url("e2r", GREEN)]}],
            "scene_image_urls": [url("s1", BLUE), url("s2", YELLOW)]}
    video, charged = await render(media_api, key, body)
    names = [colour_name(p) for p in frames(video)]
    first = {name: names.index(name) for name in NAMED}
    assert names[0] == "green", "@Element2 opens the video"
    assert first["green"] < first["blue"] < first["red"] < first["yellow"], first
    assert charged == await quoted(media_api, model=KLING, duration="3s", aspect_ratio="1:1", audio=False)


# --- routing, without rendering -----------------------------------------------------------------------------


@pytest.mark.parametrize(("prompt", "kind", "videos", "extra"), [
    ("Refer to the dress in <Image 1> to generate a runway walk", "reference", (), {}),
    ("Reference the camera move in <Video 1> to generate a chase", "reference", (), {}),
    ("a cat on a sofa", "reference", (), {}),
    ("Strictly edit <Video 2>, changing its sky to purple", "edit", (1,), {}),
    ("Extend <Video 1>, generate a sunset", "extend", (0,), {"direction": "forward", "include_source": False}),
    ("Extend <Video 1> backward, generate the dawn", "extend", (0,), {"direction": "backward"}),
    ("Extend backwards <Video 1>, end with <Video 1>", "extend", (0,), {"direction": "backward",
                                                                       "include_source": True}),
    ("Extend <Video 1>, start with <Video 1>", "extend", (0,), {"start_with_source": True}),
    ("<Video 1> + dissolve + followed by <Video 2> + hard cut + followed by <Video 3>", "stitch", (0, 1, 2),
     {"transitions": ("crossfade", "cut")}),
    ("<Video 2>, followed by <Video 1>", "stitch", (1, 0), {"transition": "crossfade"}),
    ("Refer to <Image 1>, then extend <Video 1>", "reference", (), {}),
    ("strictly edit <video 1>", "reference", (), {}),
])
def test_classify(prompt: str, kind: str, videos: tuple[int, ...], extra: dict[str, Any]) -> None:
    workflow = classify(prompt, None, Counts(images=1, videos=3))
    assert (workflow.kind, workflow.videos) == (kind, videos)
    for name, value in extra.items():
        assert getattr(workflow, name) == value, name


def test_task_type_hint_wins_on_2_5() -> None:
    assert classify("Extend <Video 1>, generate rain", "reference", Counts(videos=1)).kind == "reference"
    edit = classify("the <Video 2> scene at night", "edit", Counts(videos=2))
    assert (edit.kind, edit.videos, edit.explicit) == ("edit", (1,), True)
    assert classify("anything", "auto", Counts(videos=1)).kind == "reference"
    # Missing clips never reach a render: classify falls back to Reference.
    assert classify("Extend <Video 2>", None, Counts(videos=1)).kind == "reference"


@pytest.mark.parametrize(("text", "kind"), [("crossfade", "crossfade"), ("a slow dissolve", "crossfade"),
                                            ("fade", "crossfade"), ("hard cut", "cut"), ("jump cut", "cut"),
                                            ("fade to black", "black"), ("the camera whips", "crossfade")])
def test_transition_kind(text: str, kind: str) -> None:
    assert transition_kind(text) == kind


def test_check_tags() -> None:
    counts = Counts(images=1, videos=2, audio=1)
    assert check_tags("<Image 1> <Video 2> <Audio 1> <video 9> @Image4", counts) == []
    issues = check_tags("<Video 3>, <Video 3>, <Image 2>, <Audio 2>, <Video 0>", counts)
    assert [i.received for i in issues] == ["<Video 3>", "<Image 2>", "<Audio 2>", "<Video 0>"]
    assert "reference_video_urls[2]" in issues[0].message and "only 2" in issues[0].message
    assert workflow_issues("p", "extend", Counts())[0].path == ["omni_reference_task_type"]
    # audio_url counts as reference audio: alone it is <Audio 1>.
    assert Counts.of_body({"audio_url": "data:audio/wav;base64,AA=="}).audio == 1
