"""check_media_limits: each limit accepts a file exactly at it and rejects one just past it.

Most tests build MediaFile/…Info values directly: the limits only read what probing reported.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.media.factory import make_mp3, make_mp4, make_png, make_wav
from vidgate.catalog.models import ModelSpec, load_catalog
from vidgate.catalog.request import VideoRequest
from vidgate.errors import InvalidRequest
from vidgate.media.limits import MB, check_media_limits, issue_path
from vidgate.media.probe import probe_audio, probe_image, probe_video
from vidgate.media.types import AudioInfo, ImageInfo, MediaFile, VideoInfo

MP4 = "mov,mp4,m4a,3gp,3g2,mj2"
MKV = "matroska,webm"
CATALOG = load_catalog()

SD20_R2V = "seedance-2-0-reference-to-video"  # consent-era id: its catalogue entry has no image constraints
SD20_R2V_BASIC = "seedance-2-0-reference-to-video-basic"
SD20_FAST_R2V = "seedance-2-0-fast-reference-to-video"
SD25_R2V = "seedance-2-5-reference-to-video-basic"
SD20_I2V = "seedance-2-0-image-to-video"
MINIMAX_I2V = "minimax-h3-image-to-video"  # catalogue: short side >= 256, W/H in (0.4, 2.5)
HAPPYHORSE_R2V = "happyhorse-1-0-reference-to-video"  # catalogue: short side >= 400
VEO_I2V = "veo3-fast-image-to-video"  # no image constraints at all
KLING_O3_R2V = "kling-o3-pro-reference-to-video"
TOPAZ = "topaz-video-upscale"
WAN_V2V = "wan-2-7-video-to-video"
WAN_I2V = "wan-2-7-image-to-video"  # takes audio_url


# --- building inputs --------------------------------------------------------------------------------

Item = tuple[MediaFile, ImageInfo | VideoInfo | AudioInfo]


def _file(field: str, kind: str, size: int) -> MediaFile:
    return MediaFile(field=field, path=Path("/nonexistent"), kind=kind, mime="", size=size, sha256="0" * 64)


def image(field: str, w: int = 1024, h: int = 768, fmt: str = "PNG", size: int = 100_000) -> Item:
    return _file(field, "image", size), ImageInfo(format=fmt, width=w, height=h)


def video(
    field: str,
    seconds: float = 5.0,
    *,
    container: str = MP4,
    codec: str = "h264",
    audio: str | None = None,
    size: int = 1_000_000,
) -> Item:
    info = VideoInfo(
        container=container,
        video_codec=codec,
        width=1280,
        height=720,
        fps=24.0,
        duration=seconds,
        frames=round(seconds * 24),
        audio_codec=audio,
    )
    return _file(field, "video", size), info


def audio(
    field: str, seconds: float = 5.0, *, container: str = "wav", codec: str = "pcm_s16le", size: int = 500_000
) -> Item:
    info = AudioInfo(container=container, codec=codec, duration=seconds, sample_rate=44100, channels=1)
    return _file(field, "audio", size), info


def clips(maker, field: str, *seconds: float, **kwargs) -> list[Item]:  # type: ignore[no-untyped-def]
    return [maker(f"{field}[{i}]", s, **kwargs) for i, s in enumerate(seconds)]


def check(model: str, *items: Item | list[Item]) -> None:
    """Run check_media_limits on `items`, grouped by field the way the fetch layer groups them."""
    probed: dict[str, list[Item]] = {}
    media: dict[str, object] = {}
    for entry in items:
        for file, info in entry if isinstance(entry, list) else [entry]:
            key = re.sub(r"\[\d+\]", "", file.field)
            probed.setdefault(key, []).append((file, info))
            top = key.split(".")[0]
            media.setdefault(top, []).append(f"https://example.com/{file.field}")  # type: ignore[union-attr]
    spec = CATALOG.get(model)
    assert isinstance(spec, ModelSpec), model
    check_media_limits(spec, VideoRequest(model=model, media=media), probed)


def rejected(model: str, *items: Item | list[Item]) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        check(model, *items)
    return caught.value


def only_issue(error: InvalidRequest) -> tuple[list[str | int], str]:
    assert len(error.issues) == 1, [i.as_dict() for i in error.issues]
    return error.issues[0].path, error.issues[0].message


# --- Seedance reference videos ----------------------------------------------------------------------


@pytest.mark.parametrize("model", [SD20_R2V, SD20_R2V_BASIC, SD20_FAST_R2V])
def test_seedance_2_0_clip_of_15_s_is_accepted(model: str) -> None:
    check(model, clips(video, "reference_video_urls", 15.0))


def test_seedance_2_0_clip_past_15_s_is_rejected_with_index_and_values() -> None:
    error = rejected(SD20_R2V, clips(video, "reference_video_urls", 3.0, 15.5))
    # With 2.0's per-clip limit equal to its total, the second clip also takes the total past 15 s.
    assert [(i.path, i.message) for i in error.issues] == [
        (["reference_video_urls", 1], "clip is 15.5 s, the limit is 15 s"),
        (["reference_video_urls"], "clips total 18.5 s, the limit is 15 s"),
    ]
    assert error.message == "reference_video_urls[1]: clip is 15.5 s, the limit is 15 s (and 1 more)"
    assert error.status_code == 400


def test_seedance_2_0_clip_17_2_s_message() -> None:
    _, message = only_issue(rejected(SD20_R2V, clips(video, "reference_video_urls", 17.2)))
    assert message == "clip is 17.2 s, the limit is 15 s"


def test_seedance_clip_of_2_s_is_accepted_and_shorter_is_rejected() -> None:
    check(SD20_R2V, clips(video, "reference_video_urls", 2.0))
    path, message = only_issue(rejected(SD20_R2V, clips(video, "reference_video_urls", 1.9)))
    assert path == ["reference_video_urls", 0]
    assert message == "clip is 1.9 s, the minimum is 2 s"


def test_seedance_2_0_clips_totalling_15_s_are_accepted() -> None:
    check(SD20_R2V, clips(video, "reference_video_urls", 5.0, 5.0, 5.0))


def test_seedance_2_0_clips_totalling_16_s_are_rejected() -> None:
    path, message = only_issue(rejected(SD20_R2V, clips(video, "reference_video_urls", 8.0, 8.0)))
    assert path == ["reference_video_urls"]
    assert message == "clips total 16 s, the limit is 15 s"


def test_seedance_2_0_takes_3_clips_not_4() -> None:
    check(SD20_R2V, clips(video, "reference_video_urls", 3.0, 3.0, 3.0))
    path, message = only_issue(rejected(SD20_R2V, clips(video, "reference_video_urls", 3.0, 3.0, 3.0, 3.0)))
    assert path == ["reference_video_urls"]
    assert message == "4 clips given, the limit is 3"


def test_seedance_2_5_clip_of_30_s_is_accepted_and_30_5_s_rejected() -> None:
    check(SD25_R2V, clips(video, "reference_video_urls", 30.0))
    path, message = only_issue(rejected(SD25_R2V, clips(video, "reference_video_urls", 30.5)))
    assert path == ["reference_video_urls", 0]
    assert message == "clip is 30.5 s, the limit is 30 s"


def test_seedance_2_5_clips_total_30_s_ok_31_s_rejected() -> None:
    check(SD25_R2V, clips(video, "reference_video_urls", 10.0, 10.0, 10.0))
    path, message = only_issue(rejected(SD25_R2V, clips(video, "reference_video_urls", 10.0, 10.0, 11.0)))
    assert path == ["reference_video_urls"]
    assert message == "clips total 31 s, the limit is 30 s"


def test_seedance_2_5_takes_10_clips_not_11() -> None:
    check(SD25_R2V, clips(video, "reference_video_urls", *[2.0] * 10))
    error = rejected(SD25_R2V, clips(video, "reference_video_urls", *[2.0] * 11))
    assert only_issue(error) == (["reference_video_urls"], "11 clips given, the limit is 10")


def test_seedance_clip_of_50_mb_is_accepted_and_one_byte_more_rejected() -> None:
    check(SD20_R2V, video("reference_video_urls[0]", size=50 * MB))
    path, message = only_issue(rejected(SD20_R2V, video("reference_video_urls[0]", size=50 * MB + 1)))
    assert path == ["reference_video_urls", 0]
    assert message == "file is 50.000001 MB, the limit is 50 MB"


@pytest.mark.parametrize("codec", ["h264", "hevc"])
@pytest.mark.parametrize("audio_codec", [None, "aac", "mp3"])
def test_seedance_clip_codecs_accepted(codec: str, audio_codec: str | None) -> None:
    check(SD25_R2V, video("reference_video_urls[0]", codec=codec, audio=audio_codec))


def test_seedance_clip_in_webm_is_rejected() -> None:
    error = rejected(SD20_R2V, video("reference_video_urls[0]", container=MKV, codec="vp9", audio="opus"))
    messages = [i.message for i in error.issues]
    assert "container is WebM, accepted: MP4/MOV" in messages
    assert "video codec is vp9, accepted: H.264, H.265" in messages
    assert "audio codec is opus, accepted: AAC, MP3" in messages


def test_seedance_clip_with_av1_in_mp4_is_rejected() -> None:
    _, message = only_issue(rejected(SD20_R2V, video("reference_video_urls[0]", codec="av1")))
    assert message == "video codec is av1, accepted: H.264, H.265"


# --- Seedance reference audio -----------------------------------------------------------------------


def _with_ref_image() -> Item:
    return image("reference_image_urls[0]")


def test_seedance_2_0_audio_of_15_s_ok_15_5_s_rejected() -> None:
    check(SD20_R2V, _with_ref_image(), clips(audio, "reference_audio_urls", 15.0))
    path, message = only_issue(rejected(SD20_R2V, _with_ref_image(), clips(audio, "reference_audio_urls", 15.5)))
    assert path == ["reference_audio_urls", 0]
    assert message == "audio clip is 15.5 s, the limit is 15 s"


def test_seedance_audio_of_2_s_ok_1_5_s_rejected() -> None:
    check(SD20_R2V, _with_ref_image(), clips(audio, "reference_audio_urls", 2.0))
    _, message = only_issue(rejected(SD20_R2V, _with_ref_image(), clips(audio, "reference_audio_urls", 1.5)))
    assert message == "audio clip is 1.5 s, the minimum is 2 s"


def test_seedance_2_0_audio_total_15_s_ok_16_s_rejected() -> None:
    check(SD20_R2V, _with_ref_image(), clips(audio, "reference_audio_urls", 7.5, 7.5))
    path, message = only_issue(rejected(SD20_R2V, _with_ref_image(), clips(audio, "reference_audio_urls", 8, 8)))
    assert path == ["reference_audio_urls"]
    assert message == "audio clips total 16 s, the limit is 15 s"


def test_seedance_2_0_takes_3_audio_clips_not_4() -> None:
    check(SD20_R2V, _with_ref_image(), clips(audio, "reference_audio_urls", 3, 3, 3))
    error = rejected(SD20_R2V, _with_ref_image(), clips(audio, "reference_audio_urls", 3, 3, 3, 3))
    assert only_issue(error) == (["reference_audio_urls"], "4 audio clips given, the limit is 3")


def test_seedance_2_5_audio_30_s_ok_31_s_rejected_and_total_30_s() -> None:
    check(SD25_R2V, _with_ref_image(), clips(audio, "reference_audio_urls", 30))
    check(SD25_R2V, _with_ref_image(), clips(audio, "reference_audio_urls", 15, 15))
    error = rejected(SD25_R2V, _with_ref_image(), clips(audio, "reference_audio_urls", 31))
    assert only_issue(error) == (["reference_audio_urls", 0], "audio clip is 31 s, the limit is 30 s")
    error = rejected(SD25_R2V, _with_ref_image(), clips(audio, "reference_audio_urls", 15, 16))
    assert only_issue(error) == (["reference_audio_urls"], "audio clips total 31 s, the limit is 30 s")


def test_seedance_2_5_takes_10_audio_clips_not_11() -> None:
    check(SD25_R2V, _with_ref_image(), clips(audio, "reference_audio_urls", *[2] * 10))
    error = rejected(SD25_R2V, _with_ref_image(), clips(audio, "reference_audio_urls", *[2] * 11))
    assert only_issue(error) == (["reference_audio_urls"], "11 audio clips given, the limit is 10")


def test_seedance_audio_of_15_mb_ok_and_one_byte_more_rejected() -> None:
    check(SD20_R2V, _with_ref_image(), audio("reference_audio_urls[0]", size=15 * MB))
    error = rejected(SD20_R2V, _with_ref_image(), audio("reference_audio_urls[0]", size=15 * MB + 1))
    assert only_issue(error) == (["reference_audio_urls", 0], "file is 15.000001 MB, the limit is 15 MB")


def test_seedance_audio_must_be_wav_or_mp3() -> None:
    check(SD20_R2V, _with_ref_image(), audio("reference_audio_urls[0]", container="mp3", codec="mp3"))
    error = rejected(SD20_R2V, _with_ref_image(), audio("reference_audio_urls[0]", container="ogg", codec="vorbis"))
    assert only_issue(error) == (["reference_audio_urls", 0], "container is ogg, accepted: WAV, MP3")


def test_reference_audio_with_a_reference_video_is_accepted() -> None:
    check(SD20_R2V, clips(video, "reference_video_urls", 5), clips(audio, "reference_audio_urls", 5))


def test_seedance_r2v_audio_url_counts_as_reference_audio() -> None:
    # G-SD: audio_url on Seedance R2V is a one-item reference_audio_urls, so it joins the 15 s total.
    check(SD20_R2V, _with_ref_image(), audio("audio_url", 7), clips(audio, "reference_audio_urls", 8))
    error = rejected(SD20_R2V, _with_ref_image(), audio("audio_url", 8), clips(audio, "reference_audio_urls", 8))
    assert only_issue(error) == (["reference_audio_urls"], "audio clips total 16 s, the limit is 15 s")


# --- images -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", [SD20_I2V, SD20_R2V, SD25_R2V, SD20_R2V_BASIC])
def test_seedance_image_short_side_300_ok_299_rejected(model: str) -> None:
    field = "image_url" if "image-to-video" in model else "reference_image_urls[0]"
    check(model, image(field, 300, 600))
    path, message = only_issue(rejected(model, image(field, 299, 600)))
    assert path == issue_path(field)
    assert message == "image is 299x600: the short side is 299 px, the minimum is 300 px"


@pytest.mark.parametrize("model", [SD20_I2V, SD25_R2V])
def test_seedance_image_aspect_2_49_ok_2_5_rejected(model: str) -> None:
    field = "image_url" if "image-to-video" in model else "reference_image_urls[0]"
    check(model, image(field, 747, 300))  # 2.49
    path, message = only_issue(rejected(model, image(field, 750, 300)))  # 2.5
    assert path == issue_path(field)
    assert message == "image is 750x300: aspect ratio W/H is 2.5, it must be strictly between 0.4 and 2.5"


def test_seedance_image_aspect_0_41_ok_0_4_rejected() -> None:
    check(SD20_I2V, image("end_image_url", 410, 1000))
    _, message = only_issue(rejected(SD20_I2V, image("end_image_url", 400, 1000)))
    assert message == "image is 400x1000: aspect ratio W/H is 0.4, it must be strictly between 0.4 and 2.5"


def test_aspect_just_past_the_limit_shows_enough_digits() -> None:
    _, message = only_issue(rejected(SD20_I2V, image("image_url", 2501, 1000)))
    assert "W/H is 2.501," in message


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "HEIC", "HEIF", "MPO"])
def test_accepted_image_formats(fmt: str) -> None:
    check(SD20_R2V, image("reference_image_urls[0]", fmt=fmt))
    check(VEO_I2V, image("image_url", fmt=fmt))


@pytest.mark.parametrize("fmt", ["ICO", "AVIF", "PSD", "PPM"])
def test_other_image_formats_are_rejected(fmt: str) -> None:
    path, message = only_issue(rejected(VEO_I2V, image("image_url", fmt=fmt)))
    assert path == ["image_url"]
    assert message == f"image format is {fmt}, accepted: JPEG, PNG, WebP, BMP, TIFF, GIF, HEIC/HEIF"


def test_model_without_image_constraints_takes_any_geometry() -> None:
    check(VEO_I2V, image("image_url", 64, 16), image("end_image_url", 10, 100))


def test_catalogue_short_side_minimax_256() -> None:
    check(MINIMAX_I2V, image("image_url", 256, 256))
    _, message = only_issue(rejected(MINIMAX_I2V, image("image_url", 256, 255)))
    assert message == "image is 256x255: the short side is 255 px, the minimum is 256 px"


def test_catalogue_aspect_range_minimax() -> None:
    check(MINIMAX_I2V, image("image_url", 1245, 500))  # 2.49
    _, message = only_issue(rejected(MINIMAX_I2V, image("image_url", 1250, 500)))
    assert "W/H is 2.5" in message


def test_catalogue_short_side_happyhorse_400() -> None:
    check(HAPPYHORSE_R2V, image("reference_image_urls[0]", 400, 4000))  # no aspect limit in its entry
    refs = [image("reference_image_urls[0]", 400, 400), image("reference_image_urls[1]", 399, 400)]
    error = rejected(HAPPYHORSE_R2V, refs)
    assert only_issue(error)[0] == ["reference_image_urls", 1]


def test_seedance_2_5_reference_image_of_30_mb_ok_one_byte_more_rejected() -> None:
    check(SD25_R2V, image("reference_image_urls[0]", size=30 * MB))
    error = rejected(SD25_R2V, image("reference_image_urls[0]", size=30 * MB + 1))
    assert only_issue(error) == (["reference_image_urls", 0], "file is 30.000001 MB, the limit is 30 MB")


def test_seedance_2_0_reference_images_have_no_size_limit_here() -> None:
    check(SD20_R2V, image("reference_image_urls[0]", size=40 * MB))


def test_seedance_2_5_first_frame_has_no_30_mb_limit() -> None:
    check("seedance-2-5-image-to-video-basic", image("image_url", size=40 * MB))


# --- audio_url --------------------------------------------------------------------------------------


def test_audio_url_of_30_s_ok_31_s_rejected() -> None:
    check(WAN_I2V, image("image_url"), audio("audio_url", 30))
    error = rejected(WAN_I2V, image("image_url"), audio("audio_url", 31))
    assert only_issue(error) == (["audio_url"], "audio is 31 s, the limit is 30 s")


def test_audio_url_of_15_mb_ok_one_byte_more_rejected() -> None:
    check(WAN_I2V, audio("audio_url", size=15 * MB))
    error = rejected(WAN_I2V, audio("audio_url", size=15 * MB + 1))
    assert only_issue(error) == (["audio_url"], "file is 15.000001 MB, the limit is 15 MB")


def test_audio_url_must_be_wav_or_mp3() -> None:
    check(WAN_I2V, audio("audio_url", container="mp3", codec="mp3"))
    error = rejected(WAN_I2V, audio("audio_url", container=MP4, codec="aac"))
    assert only_issue(error) == (["audio_url"], "container is MP4/MOV, accepted: WAV, MP3")


def test_duration_slack_absorbs_timestamp_rounding() -> None:
    # A clip cut to exactly 30 s can measure a few ms more (MP3 framing, millisecond time bases).
    check(WAN_I2V, audio("audio_url", 30.04))
    _, message = only_issue(rejected(WAN_I2V, audio("audio_url", 30.1)))
    assert message == "audio is 30.1 s, the limit is 30 s"


# --- Kling O3 ---------------------------------------------------------------------------------------


def element(i: int, refs: int = 1) -> list[Item]:
    items = [image(f"elements[{i}].frontal_image_url")]
    items += [image(f"elements[{i}].reference_image_urls[{j}]") for j in range(refs)]
    return items


def test_kling_o3_three_refs_per_element_ok_four_rejected() -> None:
    check(KLING_O3_R2V, element(0, refs=3))
    error = rejected(KLING_O3_R2V, element(0, refs=1) + element(1, refs=4))
    assert only_issue(error) == (
        ["elements", 1, "reference_image_urls"],
        "4 reference images given, the limit is 3 per element",
    )


def test_element_image_issue_paths_are_nested() -> None:
    items = [image("elements[0].frontal_image_url"), image("elements[0].reference_image_urls[1]", fmt="ICO")]
    error = rejected(KLING_O3_R2V, items)
    issue = error.issues[0]
    assert issue.path == ["elements", 0, "reference_image_urls", 1]
    assert issue.label() == "elements[0].reference_image_urls[1]"
    details = error.body()["details"]
    assert details["elements"]["0"]["reference_image_urls"]["1"]["_errors"] == [issue.message]


def test_keyframe_images_get_the_image_checks() -> None:
    error = rejected(SD20_I2V, image("keyframes[3].image_url", 200, 200))
    assert only_issue(error)[0] == ["keyframes", 3, "image_url"]


# --- topaz and video-to-video -----------------------------------------------------------------------


def test_topaz_input_of_300_s_ok_301_s_rejected() -> None:
    check(TOPAZ, video("video_url", 300))
    error = rejected(TOPAZ, video("video_url", 301))
    assert only_issue(error) == (["video_url"], "video is 301 s, the limit is 300 s")


@pytest.mark.parametrize(
    ("container", "codec", "audio_codec"),
    [(MP4, "h264", "aac"), (MP4, "prores", None), (MKV, "vp9", "opus"), (MKV, "vp8", "vorbis"), (MKV, "av1", None)],
)
def test_topaz_takes_mp4_mov_and_webm(container: str, codec: str, audio_codec: str | None) -> None:
    check(TOPAZ, video("video_url", 10, container=container, codec=codec, audio=audio_codec))


@pytest.mark.parametrize(("container", "codec", "shown"), [(MKV, "h264", "Matroska (MKV)"), ("avi", "mpeg4", "avi")])
def test_topaz_rejects_other_containers(container: str, codec: str, shown: str) -> None:
    error = rejected(TOPAZ, video("video_url", 10, container=container, codec=codec))
    assert only_issue(error) == (["video_url"], f"container is {shown}, accepted: MP4/MOV, WebM")


def test_video_to_video_input_of_30_s_ok_31_s_rejected() -> None:
    check(WAN_V2V, video("video_url", 30))
    check(WAN_V2V, video("video_url", 12, container=MKV, codec="vp9"))
    error = rejected(WAN_V2V, video("video_url", 31))
    assert only_issue(error) == (["video_url"], "video is 31 s, the limit is 30 s")


def test_video_to_video_rejects_matroska() -> None:
    _, message = only_issue(rejected(WAN_V2V, video("video_url", 5, container=MKV, codec="h264")))
    assert message == "container is Matroska (MKV), accepted: MP4/MOV, WebM"


def test_wrong_kind_of_info_is_reported_not_crashed() -> None:
    error = rejected(TOPAZ, (video("video_url")[0], ImageInfo("PNG", 10, 10)))
    assert only_issue(error) == (["video_url"], "expected a video, got image")


# --- all together -----------------------------------------------------------------------------------


def test_every_violation_is_listed_in_one_error() -> None:
    error = rejected(
        SD20_R2V,
        image("reference_image_urls[0]", 299, 600),
        clips(video, "reference_video_urls", 10.0, 17.2),
        clips(audio, "reference_audio_urls", 1.0),
    )
    labels = [f"{i.label()}: {i.message}" for i in error.issues]
    assert labels == [
        "reference_image_urls[0]: image is 299x600: the short side is 299 px, the minimum is 300 px",
        "reference_video_urls[1]: clip is 17.2 s, the limit is 15 s",
        "reference_video_urls: clips total 27.2 s, the limit is 15 s",
        "reference_audio_urls[0]: audio clip is 1 s, the minimum is 2 s",
    ]
    assert error.message == f"{labels[0]} (and 3 more)"
    body = error.body()
    assert [issue["path"] for issue in body["issues"]] == [
        ["reference_image_urls", 0],
        ["reference_video_urls", 1],
        ["reference_video_urls"],
        ["reference_audio_urls", 0],
    ]


def test_nothing_to_check_passes() -> None:
    check(SD20_R2V)
    check(TOPAZ)


def test_issue_path_parses_labels() -> None:
    assert issue_path("image_url") == ["image_url"]
    assert issue_path("reference_video_urls[1]") == ["reference_video_urls", 1]
    assert issue_path("elements[0].reference_image_urls[2]") == ["elements", 0, "reference_image_urls", 2]


# --- with real files --------------------------------------------------------------------------------


def _real(field: str, path: Path, kind: str) -> Item:
    probe = {"image": probe_image, "video": probe_video, "audio": probe_audio}[kind]
    return _file(field, kind, path.stat().st_size), probe(path)


def test_real_files_at_the_limits_pass(tmp_path: Path) -> None:
    check(
        SD20_R2V,
        _real("reference_image_urls[0]", make_png(tmp_path / "ref.png", 300, 300), "image"),
        _real("reference_video_urls[0]", make_mp4(tmp_path / "a.mp4", 15, 160, 90, audio=True), "video"),
        _real("reference_audio_urls[0]", make_wav(tmp_path / "a.wav", 15), "audio"),
    )
    check(WAN_I2V, _real("audio_url", make_mp3(tmp_path / "a.mp3", 30), "audio"))


def test_real_clip_past_the_limit_is_rejected(tmp_path: Path) -> None:
    error = rejected(SD20_R2V, _real("reference_video_urls[0]", make_mp4(tmp_path / "a.mp4", 15.5, 160, 90), "video"))
    assert only_issue(error) == (["reference_video_urls", 0], "clip is 15.5 s, the limit is 15 s")


@pytest.mark.parametrize(("seconds", "ok"), [(3.9, False), (4.0, True), (30.0, True), (30.2, False)])
def test_source_matched_duration_needs_a_4_to_30_second_source(seconds: float, ok: bool) -> None:
    spec = load_catalog().get("seedance-2-5-reference-to-video-basic")
    assert spec is not None
    req = VideoRequest(model=spec.id, duration="auto")
    clip = MediaFile("reference_video_urls[0]", Path("/x.mp4"), "video", "video/mp4", 1000, "0" * 64)
    info = VideoInfo("mov,mp4,m4a,3gp,3g2,mj2", "h264", 320, 240, 24.0, seconds, None, None)
    if ok:
        check_media_limits(spec, req, {"reference_video_urls": [(clip, info)]})
        return
    with pytest.raises(InvalidRequest) as raised:
        check_media_limits(spec, req, {"reference_video_urls": [(clip, info)]})
    issue = next(i for i in raised.value.issues if i.path == ["duration"])
    assert f"{seconds:g} s" in issue.message
