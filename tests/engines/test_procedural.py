"""The procedural engine's output, checked the way a client would: by opening the MP4 with PyAV."""

from __future__ import annotations

import hashlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from vidgate.engines.base import RenderSpec
from vidgate.engines.procedural import ProceduralEngine, render_procedural
from vidgate.media.geometry import frame_size

PROMPT = "A red fox runs through fresh snow at dawn"
# ultrafast keeps the suite quick; the encoder settings are not what these tests are about.
FAST = {"preset": "ultrafast", "crf": 30}


def _spec(prompt: str = PROMPT, *, duration_s: int = 1, size: tuple[int, int] = (320, 240),
          audio: bool = False, seed: int = 0) -> RenderSpec:
    width, height = size
    return RenderSpec(model="test-model", prompt=prompt, duration_s=duration_s, width=width, height=height,
                      fps=24, audio=audio, seed=seed)


def _render(tmp_path: Path, spec: RenderSpec, name: str = "out.mp4") -> Path:
    out = tmp_path / name
    render_procedural(spec, out, **FAST)
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stream_seconds(stream: av.stream.Stream) -> float:
    assert stream.duration is not None and stream.time_base is not None
    return float(stream.duration * stream.time_base)


def _mean_rgb(path: Path) -> np.ndarray:
    """Mean RGB colour over all frames of the video."""
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24").reshape(-1, 3).mean(axis=0) for f in container.decode(video=0)]
    return np.mean(frames, axis=0)


@pytest.fixture(scope="module")
def with_audio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 s 360p 16:9 render with audio, shared by the container-level checks."""
    return _render(tmp_path_factory.mktemp("audio"), _spec(duration_s=2, size=frame_size("360p", "16:9"),
                                                           audio=True))


def test_video_stream_properties(with_audio: Path) -> None:
    with av.open(str(with_audio)) as container:
        assert container.format.name.split(",")[0] in ("mov", "mp4")
        video = container.streams.video[0]
        assert video.codec_context.name == "h264"
        assert video.codec_context.pix_fmt == "yuv420p"
        assert (video.codec_context.width, video.codec_context.height) == (640, 360)
        assert video.average_rate == Fraction(24)
        assert _stream_seconds(video) == pytest.approx(2.0, abs=0.05)
        assert sum(1 for _ in container.decode(video=0)) == 48


def test_audio_stream_present_and_matches_video(with_audio: Path) -> None:
    with av.open(str(with_audio)) as container:
        assert len(container.streams.audio) == 1
        audio = container.streams.audio[0]
        assert audio.codec_context.name == "aac"
        assert audio.rate == 48_000
        assert audio.codec_context.layout.nb_channels == 2
        video_s = _stream_seconds(container.streams.video[0])
        assert _stream_seconds(audio) == pytest.approx(video_s, abs=0.05)
        assert container.duration is not None
        assert container.duration / 1e6 == pytest.approx(2.0, abs=0.05)
        samples = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    # Decoded length (the encoder pads the last AAC frame) and content: a tone, not silence, not clipped.
    assert samples.shape[0] == 2
    assert samples.shape[1] / 48_000 == pytest.approx(2.0, abs=0.05)
    rms = float(np.sqrt(np.mean(samples**2)))
    assert 0.02 < rms < 0.5
    assert float(np.abs(samples).max()) <= 1.0


def test_no_audio_stream_when_audio_is_false(tmp_path: Path) -> None:
    out = _render(tmp_path, _spec(audio=False))
    with av.open(str(out)) as container:
        assert len(container.streams.audio) == 0
        assert len(container.streams.video) == 1
        assert _stream_seconds(container.streams.video[0]) == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize(
    ("resolution", "aspect", "duration_s"),
    [("720p", "16:9", 1), ("360p", "9:16", 1), ("256p", "1:1", 2)],
)
def test_frame_sizes_and_duration(tmp_path: Path, resolution: str, aspect: str, duration_s: int) -> None:
    width, height = frame_size(resolution, aspect)
    out = _render(tmp_path, _spec(duration_s=duration_s, size=(width, height)))
    with av.open(str(out)) as container:
        video = container.streams.video[0]
        assert (video.codec_context.width, video.codec_context.height) == (width, height)
        assert video.average_rate == 24
        assert _stream_seconds(video) == pytest.approx(duration_s, abs=0.05)
        first = next(container.decode(video=0))
        assert (first.width, first.height) == (width, height)


def test_same_spec_gives_identical_bytes(tmp_path: Path) -> None:
    spec = _spec(audio=True, size=frame_size("256p", "16:9"))
    a = _render(tmp_path, spec, "a.mp4")
    b = _render(tmp_path, spec, "b.mp4")
    assert _sha256(a) == _sha256(b)


def test_default_encoder_settings_are_deterministic(tmp_path: Path) -> None:
    # The production defaults (veryfast, multi-threaded libx264) must be deterministic too.
    spec = _spec(size=frame_size("256p", "16:9"))
    engine = ProceduralEngine()
    engine.render(spec, tmp_path / "a.mp4", lambda _f: None)
    engine.render(spec, tmp_path / "b.mp4", lambda _f: None)
    assert _sha256(tmp_path / "a.mp4") == _sha256(tmp_path / "b.mp4")


def test_seed_changes_the_output(tmp_path: Path) -> None:
    a = _render(tmp_path, _spec(seed=1), "a.mp4")
    b = _render(tmp_path, _spec(seed=2), "b.mp4")
    assert _sha256(a) != _sha256(b)


def test_different_prompts_give_different_colours(tmp_path: Path) -> None:
    a = _mean_rgb(_render(tmp_path, _spec("A red fox runs through fresh snow at dawn"), "a.mp4"))
    b = _mean_rgb(_render(tmp_path, _spec("Neon city at night, rain on glass"), "b.mp4"))
    assert float(np.abs(a - b).max()) > 15.0, (a, b)


def test_frames_change_over_time(tmp_path: Path) -> None:
    out = _render(tmp_path, _spec(duration_s=2))
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24").astype(np.int16) for f in container.decode(video=0)]
    assert float(np.abs(frames[0] - frames[-1]).mean()) > 5.0


def test_progress_is_monotonic_and_reaches_one(tmp_path: Path) -> None:
    seen: list[float] = []
    ProceduralEngine(**FAST).render(_spec(duration_s=2), tmp_path / "out.mp4", seen.append)
    assert len(seen) >= 3
    assert seen == sorted(seen)
    assert all(0.0 <= f <= 1.0 for f in seen)
    assert seen[-1] == 1.0


def test_engine_name() -> None:
    assert ProceduralEngine.name == "procedural"


def test_failed_render_leaves_no_file(tmp_path: Path) -> None:
    def explode(_fraction: float) -> None:
        raise RuntimeError("cancelled")

    out = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="cancelled"):
        render_procedural(_spec(duration_s=2), out, explode, **FAST)
    assert list(tmp_path.iterdir()) == []


def test_odd_dimensions_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        render_procedural(_spec(size=(321, 240)), tmp_path / "out.mp4", **FAST)


@pytest.mark.parametrize("prompt", ["", "x" * 400, "日本語のプロンプト 🦊", "supercalifragilistic" * 10])
def test_awkward_prompts_render(tmp_path: Path, prompt: str) -> None:
    out = _render(tmp_path, _spec(prompt, size=frame_size("256p", "9:16")))
    with av.open(str(out)) as container:
        assert _stream_seconds(container.streams.video[0]) == pytest.approx(1.0, abs=0.05)
