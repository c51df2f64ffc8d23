"""probe_image / probe_video / probe_audio: what they report, and how they refuse broken files."""

from __future__ import annotations

import os
import random
import struct
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from tests.media.factory import (
    MiB,
    make_image,
    make_jpeg,
    make_large_mp4,
    make_mov,
    make_mp3,
    make_mp4,
    make_png,
    make_wav,
    make_webm,
)
from vidgate.media.probe import MAX_IMAGE_PIXELS, MediaProbeError, probe_audio, probe_image, probe_video
from vidgate.media.types import AudioInfo, ImageInfo, VideoInfo

MP4_DEMUXER = "mov,mp4,m4a,3gp,3g2,mj2"


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of good files shared by the tests of this module (they only read them)."""
    d = tmp_path_factory.mktemp("media")
    make_mp4(d / "av.mp4", 3, 320, 240, fps=24, audio=True)
    make_mp4(d / "fast.mp4", 3, 320, 240, fps=24, audio=True, faststart=True)
    make_png(d / "still.png", 300, 200)
    return d


def _noise(n: int, seed: int = 7) -> bytes:
    """Deterministic random bytes (so a lucky sync word can never make a test flaky)."""
    return random.Random(seed).randbytes(n)


def _copy_bytes(src: Path, dst: Path, data: bytes | None = None) -> Path:
    dst.write_bytes(src.read_bytes() if data is None else data)
    return dst


def _box(data: bytes, fourcc: bytes) -> tuple[int, int]:
    """(offset, size) of a top-level MP4 box."""
    at = 0
    while at + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[at : at + 8])
        if kind == fourcc:
            return at, size
        at += size
    raise AssertionError(f"no {fourcc!r} box")


# --- images -----------------------------------------------------------------------------------------


def test_png_reports_format_and_size(tmp_path: Path) -> None:
    assert probe_image(make_png(tmp_path / "a.png", 640, 360)) == ImageInfo("PNG", 640, 360)


def test_jpeg_reports_format_and_size(tmp_path: Path) -> None:
    assert probe_image(make_jpeg(tmp_path / "a.jpg", 360, 640)) == ImageInfo("JPEG", 360, 640)


@pytest.mark.parametrize("fmt", ["WEBP", "BMP", "TIFF", "GIF"])
def test_other_image_formats_are_read(tmp_path: Path, fmt: str) -> None:
    path = make_image(tmp_path / f"a.{fmt.lower()}", 50, 40, fmt)
    assert probe_image(path) == ImageInfo(fmt, 50, 40)


def test_truncated_png_is_rejected(tmp_path: Path) -> None:
    data = make_png(tmp_path / "a.png", 640, 360).read_bytes()
    path = _copy_bytes(tmp_path / "a.png", tmp_path / "cut.png", data[: len(data) // 2])
    with pytest.raises(MediaProbeError, match="not a readable image"):
        probe_image(path)


def test_truncated_jpeg_is_rejected(tmp_path: Path) -> None:
    data = make_jpeg(tmp_path / "a.jpg", 1600, 1200).read_bytes()
    path = _copy_bytes(tmp_path / "a.jpg", tmp_path / "cut.jpg", data[: len(data) // 2])
    with pytest.raises(MediaProbeError, match="truncated"):
        probe_image(path)


def test_garbage_bytes_are_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "noise.png"
    path.write_bytes(_noise(50_000))
    with pytest.raises(MediaProbeError, match="not a readable image"):
        probe_image(path)


def test_a_video_is_not_an_image(media: Path) -> None:
    with pytest.raises(MediaProbeError, match="not a readable image"):
        probe_image(media / "av.mp4")


def _png_header_only(path: Path, w: int, h: int) -> Path:
    """A PNG whose IHDR claims w x h but whose pixel data is a few bytes: a decompression bomb's header."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)))
    return path


def test_image_over_the_pixel_limit_is_refused_from_its_header(tmp_path: Path) -> None:
    side = int(MAX_IMAGE_PIXELS**0.5) + 1
    with pytest.raises(MediaProbeError, match="megapixels"):
        probe_image(_png_header_only(tmp_path / "bomb.png", side, side))


def test_huge_decompression_bomb_is_refused(tmp_path: Path) -> None:
    # Past Pillow's own hard limit too (2 x 89.5 MP): still our error, not Pillow's exception.
    with pytest.raises(MediaProbeError):
        probe_image(_png_header_only(tmp_path / "bomb.png", 30_000, 30_000))


def test_missing_image_file(tmp_path: Path) -> None:
    with pytest.raises(MediaProbeError, match="not found"):
        probe_image(tmp_path / "nope.png")


# --- video ------------------------------------------------------------------------------------------


def test_mp4_with_audio_reports_everything(media: Path) -> None:
    assert probe_video(media / "av.mp4") == VideoInfo(
        container=MP4_DEMUXER,
        video_codec="h264",
        width=320,
        height=240,
        fps=24.0,
        duration=3.0,
        frames=72,
        audio_codec="aac",
    )


def test_mp4_without_audio_has_no_audio_codec(tmp_path: Path) -> None:
    info = probe_video(make_mp4(tmp_path / "v.mp4", 2, 160, 90, fps=30))
    assert (info.width, info.height, info.fps, info.duration, info.frames) == (160, 90, 30.0, 2.0, 60)
    assert info.audio_codec is None


def test_hevc_mp4(tmp_path: Path) -> None:
    info = probe_video(make_mp4(tmp_path / "v.mp4", 2, 320, 240, fps=25, codec="libx265"))
    assert (info.video_codec, info.fps, info.duration, info.frames) == ("hevc", 25.0, 2.0, 50)


def test_mov_shares_the_mp4_demuxer(tmp_path: Path) -> None:
    info = probe_video(make_mov(tmp_path / "v.mov", 2, audio=True))
    assert (info.container, info.video_codec, info.audio_codec, info.duration) == (MP4_DEMUXER, "h264", "aac", 2.0)


def test_webm(tmp_path: Path) -> None:
    info = probe_video(make_webm(tmp_path / "v.webm", 2, 320, 240, audio=True))
    assert (info.container, info.video_codec, info.audio_codec) == ("matroska,webm", "vp9", "opus")
    assert (info.width, info.height, info.fps) == (320, 240, 24.0)
    assert info.duration == pytest.approx(2.0, abs=0.05)


def test_raw_stream_without_durations_is_measured_from_its_packets(tmp_path: Path) -> None:
    path = tmp_path / "v.h264"
    with av.open(str(path), "w", format="h264") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(50):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 4, np.uint8), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    info = probe_video(path)
    assert (info.container, info.fps) == ("h264", 25.0)
    assert info.duration == pytest.approx(2.0)


def test_mp4_cut_in_half_is_rejected(media: Path, tmp_path: Path) -> None:
    data = (media / "av.mp4").read_bytes()  # moov at the end: the cut loses it
    path = _copy_bytes(media / "av.mp4", tmp_path / "cut.mp4", data[: len(data) // 2])
    with pytest.raises(MediaProbeError, match="moov atom missing or corrupt"):
        probe_video(path)


def test_faststart_mp4_cut_in_half_is_rejected(media: Path, tmp_path: Path) -> None:
    data = (media / "fast.mp4").read_bytes()  # moov first: opens, first frame decodes, the tail is gone
    path = _copy_bytes(media / "fast.mp4", tmp_path / "cut.mp4", data[: len(data) // 2])
    with pytest.raises(MediaProbeError, match="truncated"):
        probe_video(path)


def test_faststart_mp4_missing_its_last_bytes_is_rejected(media: Path, tmp_path: Path) -> None:
    data = (media / "fast.mp4").read_bytes()
    path = _copy_bytes(media / "fast.mp4", tmp_path / "cut.mp4", data[:-100])
    with pytest.raises(MediaProbeError, match="truncated"):
        probe_video(path)


def test_mp4_with_its_moov_atom_renamed_is_rejected(media: Path, tmp_path: Path) -> None:
    data = bytearray((media / "av.mp4").read_bytes())
    at, _ = _box(data, b"moov")
    data[at + 4 : at + 8] = b"xxxx"
    path = _copy_bytes(media / "av.mp4", tmp_path / "bad.mp4", bytes(data))
    with pytest.raises(MediaProbeError, match="moov atom missing or corrupt"):
        probe_video(path)


def test_mp4_with_its_moov_atom_overwritten_is_rejected(media: Path, tmp_path: Path) -> None:
    data = bytearray((media / "fast.mp4").read_bytes())
    at, size = _box(data, b"moov")
    data[at + 8 : at + size] = _noise(size - 8)
    path = _copy_bytes(media / "fast.mp4", tmp_path / "bad.mp4", bytes(data))
    with pytest.raises(MediaProbeError, match="moov atom missing or corrupt"):
        probe_video(path)


def test_mp4_whose_media_data_is_garbage_does_not_decode(media: Path, tmp_path: Path) -> None:
    data = bytearray((media / "av.mp4").read_bytes())
    at, size = _box(data, b"mdat")
    data[at + 8 : at + size] = _noise(size - 8)
    path = _copy_bytes(media / "av.mp4", tmp_path / "bad.mp4", bytes(data))
    with pytest.raises(MediaProbeError, match="cannot be decoded"):
        probe_video(path)


def test_garbage_bytes_are_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "noise.mp4"
    path.write_bytes(_noise(100_000))
    with pytest.raises(MediaProbeError, match="not a readable video"):
        probe_video(path)


def test_png_renamed_mp4_is_not_a_video(media: Path, tmp_path: Path) -> None:
    path = _copy_bytes(media / "still.png", tmp_path / "still.mp4")
    with pytest.raises(MediaProbeError, match="PNG image"):
        probe_video(path)


def test_empty_file_is_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    with pytest.raises(MediaProbeError, match="empty"):
        probe_video(path)


def test_audio_only_file_is_not_a_video(tmp_path: Path) -> None:
    with pytest.raises(MediaProbeError, match="no video stream"):
        probe_video(make_wav(tmp_path / "a.wav", 1))


def test_missing_video_file(tmp_path: Path) -> None:
    with pytest.raises(MediaProbeError, match="not found"):
        probe_video(tmp_path / "nope.mp4")


def _bytes_read_by_this_process() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs Linux /proc/self/io")
def test_probing_a_50_mb_video_reads_a_small_part_of_it(tmp_path: Path) -> None:
    path = make_large_mp4(tmp_path / "big.mp4", min_bytes=50 * MiB)
    size = path.stat().st_size
    assert size >= 50 * MiB
    probe_video(path)  # warm-up: lazy imports, codec tables
    before = _bytes_read_by_this_process()
    info = probe_video(path)
    read = _bytes_read_by_this_process() - before
    assert info.video_codec == "h264" and info.frames is not None
    # FFmpeg's stream-info probe reads at most ~5 MB (its probesize), plus the first and last samples.
    assert read < size // 5, f"read {read} of {size} bytes"


# --- audio ------------------------------------------------------------------------------------------


def test_wav_reports_everything(tmp_path: Path) -> None:
    info = probe_audio(make_wav(tmp_path / "a.wav", 3, sample_rate=22050, channels=2))
    assert info == AudioInfo(container="wav", codec="pcm_s16le", duration=3.0, sample_rate=22050, channels=2)


def test_mp3_reports_everything(tmp_path: Path) -> None:
    info = probe_audio(make_mp3(tmp_path / "a.mp3", 3))
    assert (info.container, info.codec, info.sample_rate, info.channels) == ("mp3", "mp3", 44100, 1)
    assert info.duration == pytest.approx(3.0, abs=0.05)


def test_audio_track_of_an_mp4(media: Path) -> None:
    info = probe_audio(media / "av.mp4")
    assert (info.container, info.codec, info.sample_rate, info.channels) == (MP4_DEMUXER, "aac", 48000, 2)
    assert info.duration == pytest.approx(3.0, abs=0.05)


def test_video_without_audio_is_not_audio(tmp_path: Path) -> None:
    with pytest.raises(MediaProbeError, match="no audio stream"):
        probe_audio(make_mp4(tmp_path / "v.mp4", 1))


def test_png_is_not_audio(media: Path) -> None:
    with pytest.raises(MediaProbeError, match="not an audio file"):
        probe_audio(media / "still.png")


def test_garbage_bytes_are_not_audio(tmp_path: Path) -> None:
    path = tmp_path / "noise.mp3"
    path.write_bytes(_noise(20_000))
    with pytest.raises(MediaProbeError):
        probe_audio(path)


def test_heic_image_is_probed(tmp_path: Path) -> None:
    import pillow_heif

    pillow_heif.register_heif_opener()
    path = tmp_path / "photo.heic"
    Image.new("RGB", (400, 300), (10, 200, 30)).save(path, format="HEIF")
    assert probe_image(path) == ImageInfo(format="HEIF", width=400, height=300)
