"""The engines that start from the user's media (image-to-video, reference, video-to-video), checked the way a
client would see their output: by opening the MP4 with PyAV and looking at its frames and sound."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

from tests.media.factory import make_wav, prepared_input
from vidgate.engines.base import RenderSpec
from vidgate.engines.encode import AUDIO_RATE, decode_audio
from vidgate.engines.frames import VideoSampler, cover_box, frame_cover, load_image
from vidgate.engines.image_to_video import ImageToVideoEngine, plan_anchors
from vidgate.engines.reference import ReferenceEngine, order_references
from vidgate.engines.video_to_video import VideoToVideoEngine
from vidgate.media.types import ImageInfo, PreparedInput

FAST = {"preset": "ultrafast", "crf": 30, "threads": 2}
SIZE = (320, 180)

RED, GREEN, BLUE = (255, 0, 0), (0, 200, 0), (0, 0, 255)
YELLOW, MAGENTA, CYAN, WHITE, BLACK = (255, 255, 0), (255, 0, 255), (0, 255, 255), (255, 255, 255), (0, 0, 0)
NAMED = {"red": RED, "green": GREEN, "blue": BLUE, "yellow": YELLOW, "magenta": MAGENTA, "cyan": CYAN,
         "white": WHITE, "black": BLACK}


# --- building inputs ----------------------------------------------------------------------------------


def _image(path: Path, colour: tuple[int, int, int] | np.ndarray, size: tuple[int, int] = (400, 300),
           field: str = "image_url", **extra: Any) -> PreparedInput:
    """A PNG (solid `colour`, or the given RGB array) as a RenderSpec input item."""
    img = Image.fromarray(colour, "RGB") if isinstance(colour, np.ndarray) else Image.new("RGB", size, colour)
    img.save(path, format="PNG")
    return prepared_input(path, field, **extra)


def _tone(freq: float, seconds: float) -> np.ndarray:
    t = np.arange(round(seconds * AUDIO_RATE)) / AUDIO_RATE
    mono = (0.3 * np.sin(2 * math.pi * freq * t)).astype(np.float32)
    return np.stack([mono, mono])


def _clip(path: Path, frames: list[np.ndarray], fps: int = 24, *, tone_hz: float | None = None,
          field: str = "video_url", rotation: int = 0) -> PreparedInput:
    """An H.264 MP4 of the given RGB frames (+ an AAC sine tone) as a RenderSpec input item."""
    h, w = frames[0].shape[:2]
    seconds = len(frames) / fps
    with av.open(str(path), "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        video.options = {"preset": "ultrafast", "qp": "10"}
        if rotation:
            video.set_display_rotation(rotation)
        audio = container.add_stream("aac", rate=AUDIO_RATE, layout="stereo") if tone_hz else None
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if audio is not None and tone_hz is not None:
            samples = _tone(tone_hz, seconds)
            for start in range(0, samples.shape[1], 1024):
                chunk = np.ascontiguousarray(samples[:, start : start + 1024])
                aframe = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                aframe.sample_rate, aframe.pts, aframe.time_base = AUDIO_RATE, start, Fraction(1, AUDIO_RATE)
                for packet in audio.encode(aframe):
                    container.mux(packet)
            for packet in audio.encode(None):
                container.mux(packet)
    return prepared_input(path, field)


def _solid_frames(colours: list[tuple[int, int, int]], each: int, size: tuple[int, int] = (192, 144)) -> list:
    w, h = size
    return [np.full((h, w, 3), c, dtype=np.uint8) for c in colours for _ in range(each)]


def _wav(path: Path, seconds: float, field: str = "reference_audio_urls[0]") -> PreparedInput:
    make_wav(path, seconds)  # 440 Hz
    return prepared_input(path, field)


def _spec(inputs: dict[str, list[PreparedInput]], *, prompt: str = "a lighthouse at dusk", duration_s: int = 2,
          size: tuple[int, int] = SIZE, audio: bool = False, model: str = "test-model") -> RenderSpec:
    return RenderSpec(model=model, prompt=prompt, duration_s=duration_s, width=size[0], height=size[1], fps=24,
                      audio=audio, inputs={key: tuple(items) for key, items in inputs.items()})


def _unfetched(field: str, **extra: Any) -> PreparedInput:
    """An image input that is never opened: for checks that only plan (which picture goes where)."""
    return PreparedInput(field=field, path=f"/{field}", mime="image/png", sha256="", size=0,
                         info=ImageInfo(format="PNG", width=1, height=1), **extra)


# --- reading outputs ----------------------------------------------------------------------------------


def _frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def _centre_mean(rgb: np.ndarray) -> np.ndarray:
    """Mean colour of the middle half of the frame (clear of vignette corners and caption band)."""
    h, w = rgb.shape[:2]
    return rgb[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4].reshape(-1, 3).mean(axis=0)


def _colour_name(rgb: np.ndarray) -> str:
    mean = _centre_mean(rgb)
    return min(NAMED, key=lambda n: float(np.sum((mean - np.array(NAMED[n])) ** 2)))


def _streams(path: Path) -> dict[str, Any]:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        return {
            "size": (video.codec_context.width, video.codec_context.height),
            "rate": video.average_rate,
            "frames": sum(1 for _ in container.decode(video=0)),
            "video_s": float(video.duration * video.time_base),
            "audio_s": float(audio.duration * audio.time_base) if audio is not None else None,
        }


def _peak_hz(path: Path, seconds: float) -> float:
    mono = decode_audio(path, seconds).mean(axis=0)
    spectrum = np.abs(np.fft.rfft(mono * np.hanning(len(mono))))
    return float(np.fft.rfftfreq(len(mono), 1 / AUDIO_RATE)[np.argmax(spectrum)])


def _band_energy(path: Path, seconds: float, hz: float, width: float = 20.0) -> float:
    """Share of the audio's energy within `width` Hz of `hz`."""
    mono = decode_audio(path, seconds).mean(axis=0)
    power = np.abs(np.fft.rfft(mono * np.hanning(len(mono)))) ** 2
    freqs = np.fft.rfftfreq(len(mono), 1 / AUDIO_RATE)
    return float(power[np.abs(freqs - hz) <= width].sum() / max(power.sum(), 1e-12))


def _render(engine: Any, spec: RenderSpec, out: Path) -> Path:
    seen: list[float] = []
    engine.render(spec, out, seen.append)
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)
    return out


# --- shared helpers -----------------------------------------------------------------------------------


def test_cover_box_crops_the_overflow_equally() -> None:
    assert cover_box(400, 300, 16, 9) == pytest.approx((0.0, 37.5, 400.0, 262.5))
    assert cover_box(300, 300, 2, 1) == pytest.approx((0.0, 75.0, 300.0, 225.0))
    assert cover_box(400, 100, 1, 1) == pytest.approx((150.0, 0.0, 250.0, 100.0))


def test_transparent_image_loads_over_black(tmp_path: Path) -> None:
    Image.new("RGBA", (8, 8), (255, 255, 255, 0)).save(tmp_path / "clear.png")
    assert np.asarray(load_image(tmp_path / "clear.png")).max() == 0


def test_sampler_gives_nearest_frame_by_time_and_rewinds(tmp_path: Path) -> None:
    # 10 fps: frame k is solid grey level 20·k, shown from k/10 s.
    frames = [np.full((32, 32, 3), 20 * k, dtype=np.uint8) for k in range(10)]
    item = _clip(tmp_path / "steps.mp4", frames, fps=10)

    def level(sampler: VideoSampler, t: float) -> int:
        return round(float(sampler.at(t).to_ndarray(format="rgb24").mean()) / 20)

    with VideoSampler(item.path) as sampler:
        assert [level(sampler, t) for t in (0.0, 0.04, 0.06, 0.31, 0.5, 5.0)] == [0, 0, 1, 3, 5, 9]
        assert level(sampler, 0.2) == 2  # an earlier time reopens the clip


def test_display_rotation_is_applied(tmp_path: Path) -> None:
    # Stored landscape, left half white; a 90° display rotation shows it portrait with the white half at the bottom.
    rgb = np.zeros((32, 64, 3), dtype=np.uint8)
    rgb[:, :32] = 255
    item = _clip(tmp_path / "rot.mp4", [rgb] * 3, rotation=90)
    with VideoSampler(item.path) as sampler:
        upright = np.asarray(frame_cover(sampler.at(0.0), 32, 64))
    assert upright[:24].mean() < 40 and upright[40:].mean() > 215


# --- image-to-video -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def start_end(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Red start image, blue end image (different aspect ratios), 2 s with audio."""
    tmp = tmp_path_factory.mktemp("i2v")
    inputs = {"image_url": [_image(tmp / "red.png", RED, (400, 300))],
              "end_image_url": [_image(tmp / "blue.png", BLUE, (300, 500), field="end_image_url")]}
    return _render(ImageToVideoEngine(**FAST), _spec(inputs, audio=True), tmp / "out.mp4")


def test_image_to_video_stream_shape(start_end: Path) -> None:
    s = _streams(start_end)
    assert s["size"] == SIZE
    assert s["rate"] == Fraction(24)
    assert s["frames"] == 48
    assert s["video_s"] == pytest.approx(2.0, abs=0.05)
    assert s["audio_s"] == pytest.approx(2.0, abs=0.05)


def test_image_to_video_starts_on_the_start_image_and_ends_on_the_end_image(start_end: Path) -> None:
    frames = _frames(start_end)
    assert _colour_name(frames[0]) == "red"
    assert _colour_name(frames[-1]) == "blue"
    assert frames[0].reshape(-1, 3).mean(axis=0) == pytest.approx(RED, abs=12)  # the whole frame, edge to edge
    assert frames[-1].reshape(-1, 3).mean(axis=0) == pytest.approx(BLUE, abs=12)
    middle = _centre_mean(frames[24])
    assert middle[0] > 60 and middle[2] > 60  # crossfading


def test_start_image_is_cover_cropped_around_its_centre(tmp_path: Path) -> None:
    # A portrait image in thirds (red, white, blue) in a landscape frame: only the white middle fits.
    rgb = np.zeros((600, 200, 3), dtype=np.uint8)
    rgb[:200], rgb[200:400], rgb[400:] = RED, WHITE, BLUE
    out = _render(ImageToVideoEngine(**FAST), _spec({"image_url": [_image(tmp_path / "tall.png", rgb)]},
                                                    duration_s=1), tmp_path / "out.mp4")
    first = _frames(out)[0]
    assert first.reshape(-1, 3).mean(axis=0) == pytest.approx(WHITE, abs=12)


def test_single_image_moves(tmp_path: Path) -> None:
    yy, xx = np.mgrid[0:300, 0:400]
    checker = np.where(((xx // 25 + yy // 25) % 2 == 0)[..., None], 230, 30).astype(np.uint8).repeat(3, axis=2)
    out = _render(ImageToVideoEngine(**FAST), _spec({"image_url": [_image(tmp_path / "c.png", checker)]}),
                  tmp_path / "out.mp4")
    frames = _frames(out)
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 20


def test_keyframe_appears_on_its_frame(tmp_path: Path) -> None:
    inputs = {"image_url": [_image(tmp_path / "red.png", RED)],
              "keyframes": [_image(tmp_path / "green.png", GREEN, field="keyframes[0].image_url", frame_index=24),
                            _image(tmp_path / "blue.png", BLUE, field="keyframes[1].image_url", frame_index=48)]}
    out = _render(ImageToVideoEngine(**FAST), _spec(inputs), tmp_path / "out.mp4")
    frames = _frames(out)
    assert len(frames) == 48
    assert [_colour_name(frames[i]) for i in (0, 24, 47)] == ["red", "green", "blue"]
    assert frames[24].reshape(-1, 3).mean(axis=0) == pytest.approx(GREEN, abs=12)


def test_keyframe_anchors() -> None:
    spec = _spec({"image_url": [_unfetched("start")], "end_image_url": [_unfetched("end")],
                  "keyframes": [_unfetched("k0", frame_index=0), _unfetched("k2", frame_index=48),
                                _unfetched("k1", frame_index=10)]})
    # 48 frames: index 48 (one past the end, allowed by the API) is the last frame, and keyframes win over
    # image_url and end_image_url.
    assert [(a.frame, a.path) for a in plan_anchors(spec, 48)] == [(0, "/k0"), (10, "/k1"), (47, "/k2")]


def test_image_to_video_without_audio_has_no_audio_track(tmp_path: Path) -> None:
    out = _render(ImageToVideoEngine(**FAST), _spec({"image_url": [_image(tmp_path / "r.png", RED)]},
                                                    duration_s=1), tmp_path / "out.mp4")
    assert _streams(out)["audio_s"] is None


def test_image_to_video_plays_audio_url(tmp_path: Path) -> None:
    inputs = {"image_url": [_image(tmp_path / "r.png", RED)], "audio_url": [_wav(tmp_path / "a.wav", 3, "audio_url")]}
    out = _render(ImageToVideoEngine(**FAST), _spec(inputs, audio=True), tmp_path / "out.mp4")
    assert _peak_hz(out, 2.0) == pytest.approx(440, abs=3)


def test_image_to_video_is_deterministic(tmp_path: Path) -> None:
    spec = _spec({"image_url": [_image(tmp_path / "r.png", RED)],
                  "end_image_url": [_image(tmp_path / "b.png", BLUE, field="end_image_url")]}, duration_s=1)
    a = _render(ImageToVideoEngine(**FAST), spec, tmp_path / "a.mp4")
    b = _render(ImageToVideoEngine(**FAST), spec, tmp_path / "b.mp4")
    assert a.read_bytes() == b.read_bytes()


# --- reference ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_cut(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A red image, a blue image and a 1 s clip (yellow, then magenta) with a 1 kHz tone; a 440 Hz reference
    audio clip; 3 s with audio."""
    tmp = tmp_path_factory.mktemp("ref")
    inputs = {
        "reference_image_urls": [_image(tmp / "red.png", RED, field="reference_image_urls[0]"),
                                 _image(tmp / "blue.png", BLUE, field="reference_image_urls[1]")],
        "reference_video_urls": [_clip(tmp / "bars.mp4", _solid_frames([YELLOW, MAGENTA], 12), tone_hz=1000,
                                       field="reference_video_urls[0]")],
        "reference_audio_urls": [_wav(tmp / "tone.wav", 3)],
    }
    return _render(ReferenceEngine(**FAST), _spec(inputs, duration_s=3, audio=True), tmp / "out.mp4")


def test_reference_stream_shape(reference_cut: Path) -> None:
    s = _streams(reference_cut)
    assert s["size"] == SIZE
    assert s["rate"] == Fraction(24)
    assert s["frames"] == 72
    assert s["video_s"] == pytest.approx(3.0, abs=0.05)
    assert s["audio_s"] == pytest.approx(3.0, abs=0.05)


def test_every_reference_appears_in_the_cut(reference_cut: Path) -> None:
    seen = {_colour_name(f) for f in _frames(reference_cut)}
    assert {"red", "blue", "yellow", "magenta"} <= seen


def test_reference_audio_and_clip_audio_are_mixed(reference_cut: Path) -> None:
    assert _peak_hz(reference_cut, 3.0) == pytest.approx(440, abs=3)  # plays throughout
    assert _band_energy(reference_cut, 3.0, 440) > 0.3
    assert _band_energy(reference_cut, 3.0, 1000) > 0.05  # the clip's own tone, under its shot


def test_prompt_names_the_shot_order(tmp_path: Path) -> None:
    red = _image(tmp_path / "red.png", RED, field="reference_image_urls[0]")
    blue = _image(tmp_path / "blue.png", BLUE, field="reference_image_urls[1]")
    clip = _clip(tmp_path / "green.mp4", _solid_frames([GREEN], 24), field="reference_video_urls[0]")
    spec = _spec({"reference_image_urls": [red, blue], "reference_video_urls": [clip]},
                 prompt="Refer to <Video 1>, then the car in <Image 2>", audio=False)
    assert [r.item.field for r in order_references(spec)] == [
        "reference_video_urls[0]", "reference_image_urls[1]", "reference_image_urls[0]"]
    out = _render(ReferenceEngine(**FAST), spec, tmp_path / "out.mp4")
    frames = _frames(out)
    # Shares by weight: the 1 s clip 12 frames, each image (1.5 s) 18.
    assert [_colour_name(frames[i]) for i in (2, 20, 42)] == ["green", "blue", "red"]
    assert _streams(out)["audio_s"] is None


def test_kling_elements_scene_images_and_frames_order() -> None:
    spec = _spec({
        "image_url": [_unfetched("first")],
        "end_image_url": [_unfetched("last")],
        "elements.frontal_image_url": [_unfetched("e1.front", element=0), _unfetched("e2.front", element=1)],
        "elements.reference_image_urls": [_unfetched("e2.ref", element=1), _unfetched("e1.ref", element=0)],
        "scene_image_urls": [_unfetched("scene1"), _unfetched("scene2")],
    }, prompt="@Image2 at night, @Element2 walks towards @Element1")
    assert [r.item.field for r in order_references(spec)] == [
        "first", "scene2", "e2.front", "e2.ref", "e1.front", "e1.ref", "scene1", "last"]


def test_kling_first_and_last_frames_open_and_close_the_cut(tmp_path: Path) -> None:
    inputs = {"image_url": [_image(tmp_path / "r.png", RED)],
              "elements.frontal_image_url": [_image(tmp_path / "g.png", GREEN, field="elements[0].frontal_image_url",
                                                    element=0)],
              "end_image_url": [_image(tmp_path / "b.png", BLUE, field="end_image_url")]}
    out = _render(ReferenceEngine(**FAST), _spec(inputs), tmp_path / "out.mp4")
    frames = _frames(out)
    assert [_colour_name(frames[i]) for i in (0, 24, 47)] == ["red", "green", "blue"]


def test_short_clip_loops_to_fill_its_shot(tmp_path: Path) -> None:
    clip = _clip(tmp_path / "c.mp4", _solid_frames([CYAN, YELLOW], 6), field="reference_video_urls[0]")  # 0.5 s
    out = _render(ReferenceEngine(**FAST), _spec({"reference_video_urls": [clip]}, duration_s=1),
                  tmp_path / "out.mp4")
    names = [_colour_name(f) for f in _frames(out)]
    assert names[0:6] == ["cyan"] * 6 and names[12:18] == ["cyan"] * 6 and names[18:24] == ["yellow"] * 6


def test_reference_without_reference_audio_gets_the_prompt_chord(tmp_path: Path) -> None:
    out = _render(ReferenceEngine(**FAST), _spec({"reference_image_urls": [_image(tmp_path / "r.png", RED)]},
                                                 duration_s=1, audio=True), tmp_path / "out.mp4")
    s = _streams(out)
    assert s["audio_s"] == pytest.approx(1.0, abs=0.05)
    assert np.abs(decode_audio(out, 1.0)).max() > 0.01


# --- video-to-video -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def restyled(tmp_path_factory: pytest.TempPathFactory) -> tuple[PreparedInput, Path]:
    """A 1.5 s 30 fps input, left half white and right half black, whose right half turns grey at 0.5 s;
    with a 440 Hz tone.  Rendered at 24 fps."""
    tmp = tmp_path_factory.mktemp("v2v")
    frames = []
    for i in range(45):
        rgb = np.zeros((240, 320, 3), dtype=np.uint8)
        rgb[:, :160] = 255
        if i >= 15:
            rgb[:, 160:] = 128
        frames.append(rgb)
    source = _clip(tmp / "in.mp4", frames, fps=30, tone_hz=440)
    spec = _spec({"video_url": [source]}, duration_s=2, size=(320, 240), audio=True)
    return source, _render(VideoToVideoEngine(**FAST), spec, tmp / "out.mp4")


def test_video_to_video_keeps_the_input_duration_at_24_fps(restyled: tuple[PreparedInput, Path]) -> None:
    s = _streams(restyled[1])
    assert s["size"] == (320, 240)
    assert s["rate"] == Fraction(24)
    assert s["frames"] == 36  # round(1.5 s × 24), not the 2 s the spec rounded up to
    assert s["video_s"] == pytest.approx(1.5, abs=0.05)
    assert s["audio_s"] == pytest.approx(1.5, abs=0.05)


def test_video_to_video_keeps_the_input_audio(restyled: tuple[PreparedInput, Path]) -> None:
    assert _peak_hz(restyled[1], 1.5) == pytest.approx(440, abs=3)


def test_video_to_video_picture_follows_the_input(restyled: tuple[PreparedInput, Path]) -> None:
    source, out = restyled
    frames = _frames(out)
    first = frames[0].astype(int)
    left, right = first[60:180, 40:120].mean(), first[60:180, 200:280].mean()
    assert left > 180 and right < 50  # still bright left, dark right
    # The right half turns grey at 0.5 s: frame 11 (0.458 s) is before, frame 13 (0.542 s) after.
    assert frames[11][60:180, 200:280].mean() < 50
    assert 70 < frames[13][60:180, 200:280].mean() < 180
    # ... and it is restyled, not a copy.
    with VideoSampler(source.path) as sampler:
        original = sampler.at(0.0).to_ndarray(format="rgb24").astype(int)
    assert np.abs(original - first).mean() > 8


def test_video_to_video_of_a_silent_input_is_silent(tmp_path: Path) -> None:
    source = _clip(tmp_path / "in.mp4", _solid_frames([RED], 24))
    out = _render(VideoToVideoEngine(**FAST), _spec({"video_url": [source]}, duration_s=1, audio=True),
                  tmp_path / "out.mp4")
    s = _streams(out)
    assert s["audio_s"] is None and s["frames"] == 24
    assert _colour_name(_frames(out)[12]) == "red"
