"""Seedance face-media consent through the HTTP API (SPEC §5): the 409, the attestation, dedup by bytes,
revocation, and which models and roles ask."""

from __future__ import annotations

import hashlib
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter
from sqlalchemy import func, select

from tests.conftest import Api, data_url
from tests.test_openapi_contract import assert_matches_schema
from vidgate.db import consents, jobs
from vidgate.media.faces import detect_faces, image_has_face, video_has_face

pytestmark = pytest.mark.both_backends  # the store suite runs on SQLite and PostgreSQL

CONSENTS = {"seedance": {"confirmed_terms_and_privacy": True, "confirmed_legal_right": True,
                         "confirmed_screening_acknowledged": True}}
POLICY_TEXT = (
    "The likeness in any media you upload is your own, or you have explicit, legal consent from any depicted "
    "individual(s). Note: an image may contain more than one face — your attestation covers all of them.\n"
    "You own or have permission to use all media you uploaded for content generation.\n"
    "You agree to the Venice.ai Terms of Service and Privacy Policy. Violations can lead to account suspension "
    "and legal liability.\nNo content is stored by Venice."
)


def needs_consent_body(roles: list[str]) -> dict[str, Any]:
    """SPEC §5's 409 body, word for word."""
    return {
        "error": {"code": "needs_consent", "message": "Seedance consent is required for this request."},
        "consent_flow": "seedance",
        "face_media_roles": roles,
        "consent": {"consent_version": "v2.0", "policy_text": POLICY_TEXT},
        "docs_url": "https://docs.venice.ai/guides/media/seedance-face-consent",
    }


# --- synthetic media ----------------------------------------------------------------------------------------


def shade(rgb: tuple[int, int, int], k: float) -> tuple[int, int, int]:
    return (min(255, int(rgb[0] * k)), min(255, int(rgb[1] * k)), min(255, int(rgb[2] * k)))


def face_picture(w: int, h: int, *, skin: tuple[int, int, int] = (224, 180, 150),
                 background: tuple[int, int, int] = (70, 90, 110), dx: float = 0.0) -> Image.Image:
    """A flat, photo-like portrait: hair, skin-toned oval with shaded eye sockets (white eyes, dark irises),
    eyebrows, a shaded nose and a mouth, softened by a blur. The Haar cascade finds it at any size ≥ ~300 px,
    across skin tones and backgrounds, after JPEG compression."""
    column = np.linspace(0.8, 1.2, h, dtype=np.float32)[:, None, None]
    base = np.clip(np.array(background, dtype=np.float32)[None, None, :] * column, 0, 255)
    img = Image.fromarray(np.broadcast_to(base, (h, w, 3)).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    cx, cy = w / 2 + dx * w, h / 2
    fw = min(w, h) * 0.45
    fh = fw * 1.3
    d.ellipse([cx - fw * 0.55, cy - fh * 0.62, cx + fw * 0.55, cy + fh * 0.2], fill=(50, 35, 25))  # hair
    d.rectangle([cx - fw * 0.2, cy + fh * 0.3, cx + fw * 0.2, cy + fh * 0.8], fill=shade(skin, 0.85))  # neck
    d.ellipse([cx - fw / 2, cy - fh / 2, cx + fw / 2, cy + fh / 2], fill=skin)
    lit = shade(skin, 1.15)  # light from the front: forehead and nose bridge
    d.ellipse([cx - fw * 0.3, cy - fh * 0.42, cx + fw * 0.3, cy - fh * 0.2], fill=lit)
    d.rectangle([cx - fw * 0.05, cy - fh * 0.2, cx + fw * 0.05, cy + fh * 0.05], fill=lit)
    ey, ew, eh = cy - fh * 0.08, fw * 0.16, fw * 0.07
    for side in (-1, 1):
        x = cx + side * fw * 0.2
        d.ellipse([x - ew * 1.1, ey - eh * 1.6, x + ew * 1.1, ey + eh * 1.4], fill=shade(skin, 0.75))  # socket
        d.ellipse([x - ew * 0.6, ey - eh * 0.6, x + ew * 0.6, ey + eh * 0.6], fill=(240, 240, 235))
        d.ellipse([x - eh * 0.6, ey - eh * 0.6, x + eh * 0.6, ey + eh * 0.6], fill=(60, 40, 35))
        d.line([x - ew * 0.8, ey - eh * 2.3, x + ew * 0.8, ey - eh * 2.5], fill=(50, 35, 25),
               width=max(2, int(fw * 0.035)))
    ny = cy + fh * 0.1
    d.polygon([(cx, ey), (cx - fw * 0.07, ny), (cx + fw * 0.07, ny)], fill=shade(skin, 0.9))
    for side in (-1, 1):
        x0, x1 = sorted((cx + side * fw * 0.09, cx + side * fw * 0.03))
        d.ellipse([x0, ny - fw * 0.02, x1, ny + fw * 0.02], fill=shade(skin, 0.55))  # nostrils
    my = cy + fh * 0.25
    d.chord([cx - fw * 0.16, my - fw * 0.05, cx + fw * 0.16, my + fw * 0.06], 0, 180, fill=(150, 60, 60))
    return img.filter(ImageFilter.GaussianBlur(fw * 0.012))


def landscape_picture(w: int, h: int) -> Image.Image:
    """Sky, sun, two ranges of hills and a field: no face."""
    sky = np.linspace([90, 140, 210], [200, 220, 240], h, dtype=np.float32)
    img = Image.fromarray(np.broadcast_to(sky[:, None, :], (h, w, 3)).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    d.ellipse([w * 0.7, h * 0.1, w * 0.8, h * 0.1 + w * 0.1], fill=(250, 240, 180))
    xs = np.linspace(0, w, 60)
    far = [(float(x), float(h * (0.55 + 0.06 * np.sin(x / w * 7)))) for x in xs]
    near = [(float(x), float(h * (0.7 + 0.05 * np.sin(x / w * 4 + 1)))) for x in xs]
    d.polygon([*far, (w, h), (0, h)], fill=(80, 110, 90))
    d.polygon([*near, (w, h), (0, h)], fill=(60, 130, 50))
    return img.filter(ImageFilter.GaussianBlur(2))


def save(img: Image.Image, path: Path, fmt: str = "PNG", **options: Any) -> Path:
    img.save(path, format=fmt, **options)
    return path


def face_png(tmp_path: Path, name: str = "face.png", w: int = 512, h: int = 512, **kwargs: Any) -> Path:
    return save(face_picture(w, h, **kwargs), tmp_path / name)


def clip(path: Path, pictures: list[Image.Image], fps: int = 8) -> Path:
    """An H.264 MP4 showing `pictures` one frame each."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = pictures[0].size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast"}
        stream.time_base = Fraction(1, fps)
        for i, picture in enumerate(pictures):
            frame = av.VideoFrame.from_image(picture)
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def png_url(path: Path) -> str:
    return data_url(path, "image/png")


def i2v(image: Path, **extra: Any) -> dict[str, Any]:
    body = {"model": "seedance-2-0-image-to-video", "prompt": "she smiles", "duration": "4s", "resolution": "480p",
            "image_url": png_url(image) if image.suffix == ".png" else data_url(image, "image/jpeg")}
    body.update(extra)
    return body


def r2v(images: list[Path] | None = None, videos: list[Path] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "seedance-2-0-reference-to-video", "prompt": "Refer to the references",
                            "duration": "5s", "resolution": "480p"}
    if images:
        body["reference_image_urls"] = [png_url(p) for p in images]
    if videos:
        body["reference_video_urls"] = [data_url(p, "video/mp4") for p in videos]
    body.update(extra)
    return body


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def list_consents(api: Api, key: str) -> list[dict[str, Any]]:
    response = await api.client.get("/api/v1/consents", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def delete_consent(api: Api, key: str, consent_id: str) -> Any:
    return await api.client.delete(f"/api/v1/consents/{consent_id}", headers={"Authorization": f"Bearer {key}"})


def job_count(api: Api, account_id: str) -> int:
    return api.scalar(select(func.count()).select_from(jobs).where(jobs.c.account_id == account_id))


async def queue(api: Api, key: str, body: dict[str, Any]) -> Any:
    return await api.post("/video/queue", body, key)


# --- the detector itself ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(512, 512), (640, 360), (360, 640), (1600, 1200)])
def test_the_synthetic_portrait_is_a_face_and_the_landscape_is_not(size: tuple[int, int]) -> None:
    assert detect_faces(np.asarray(face_picture(*size))) == 1
    assert detect_faces(np.asarray(face_picture(*size, skin=(120, 80, 55), background=(200, 200, 190)))) == 1
    assert detect_faces(np.asarray(landscape_picture(*size))) == 0
    assert detect_faces(np.zeros((size[1], size[0], 3), np.uint8)) == 0


def test_image_and_video_helpers(tmp_path: Path) -> None:
    assert image_has_face(save(face_picture(600, 400), tmp_path / "f.jpg", "JPEG", quality=70))
    assert not image_has_face(save(landscape_picture(600, 400), tmp_path / "l.jpg", "JPEG", quality=70))
    # The face only shows in the last two thirds of the clip: the first frame alone would miss it.
    frames = [landscape_picture(480, 360)] * 8 + [face_picture(480, 360, dx=0.01 * (i % 4)) for i in range(16)]
    assert video_has_face(clip(tmp_path / "late.mp4", frames))
    assert not video_has_face(clip(tmp_path / "none.mp4", [landscape_picture(480, 360)] * 24))


# --- the API ------------------------------------------------------------------------------------------------


async def test_face_asks_for_consent_with_the_exact_409_and_charges_nothing(media_api: Api, tmp_path: Path) -> None:
    key = await media_api.new_key()
    account = await media_api.account_of(key)
    before = media_api.balance_and_ledger(account)
    response = await queue(media_api, key, i2v(face_png(tmp_path)))
    assert response.status_code == 409, response.text
    assert response.json() == needs_consent_body(["image"])
    assert_matches_schema("/video/queue", "post", response)
    assert media_api.balance_and_ledger(account) == before
    assert job_count(media_api, account) == 0
    assert await list_consents(media_api, key) == []
    assert not list((media_api.settings.data_dir / "inputs").glob("*/*")), "the fetched inputs are discarded"


async def test_consent_is_recorded_and_the_same_bytes_pass_later_but_not_a_resize(
    media_api: Api, tmp_path: Path
) -> None:
    key = await media_api.new_key()
    account = await media_api.account_of(key)
    face = face_png(tmp_path)
    assert (await queue(media_api, key, i2v(face))).status_code == 409

    granted = await queue(media_api, key, i2v(face, consents=CONSENTS))
    assert granted.status_code == 200, granted.text
    assert set(granted.json()) == {"model", "queue_id"}
    [attestation] = await list_consents(media_api, key)
    assert attestation["provider"] == "seedance"
    assert attestation["media_sha256"] == sha256_of(face)
    assert attestation["face_media_roles"] == ["image"]
    assert attestation["policy_version"] == "v2.0"
    assert attestation["request_id"] == granted.headers["cf-ray"]
    assert attestation["id"] and attestation["created_at"].endswith("Z")

    again = await queue(media_api, key, i2v(face))  # same bytes, no consents: attested already
    assert again.status_code == 200, again.text
    assert len(await list_consents(media_api, key)) == 1
    assert job_count(media_api, account) == 2

    resized = save(Image.open(face).resize((480, 480)), tmp_path / "resized.png")
    response = await queue(media_api, key, i2v(resized))
    assert response.status_code == 409 and response.json()["face_media_roles"] == ["image"]
    reencoded = save(Image.open(face), tmp_path / "face.jpg", "JPEG", quality=92)
    response = await queue(media_api, key, i2v(reencoded))
    assert response.status_code == 409 and response.json()["face_media_roles"] == ["image"]
    assert job_count(media_api, account) == 2


async def test_attestations_belong_to_one_account(media_api: Api, tmp_path: Path) -> None:
    owner, other = await media_api.new_key(), await media_api.new_key()
    face = face_png(tmp_path)
    assert (await queue(media_api, owner, i2v(face, consents=CONSENTS))).status_code == 200
    response = await queue(media_api, other, i2v(face))
    assert response.status_code == 409, "another account's attestation does not cover this one"
    assert await list_consents(media_api, other) == []


async def test_a_mix_of_attested_and_new_face_media_lists_only_the_new_roles(media_api: Api, tmp_path: Path) -> None:
    key = await media_api.new_key()
    known = face_png(tmp_path, "known.png")
    new = face_png(tmp_path, "new.png", skin=(170, 120, 90), background=(150, 160, 140))
    scenery = save(landscape_picture(640, 480), tmp_path / "scenery.png")
    assert (await queue(media_api, key, i2v(known, consents=CONSENTS))).status_code == 200

    # Image-to-video: the attested start image is not listed, the new end image is.
    response = await queue(media_api, key, i2v(known, end_image_url=png_url(new)))
    assert response.status_code == 409, response.text
    assert response.json() == needs_consent_body(["end_image"])

    # Reference-to-video: attested bytes pass in any role; a new face among the references asks again, and the
    # roles are listed once each (distinct), however many inputs share them.
    assert (await queue(media_api, key, r2v([known, scenery]))).status_code == 200
    response = await queue(media_api, key, r2v([known, new, scenery, new]))
    assert response.status_code == 409, response.text
    assert response.json()["face_media_roles"] == ["reference_image"]
    assert_matches_schema("/video/queue", "post", response)

    granted = await queue(media_api, key, r2v([known, new, scenery], consents=CONSENTS))
    assert granted.status_code == 200, granted.text
    recorded = await list_consents(media_api, key)
    assert [(c["media_sha256"], c["face_media_roles"]) for c in recorded] == [
        (sha256_of(known), ["image"]), (sha256_of(new), ["reference_image"])
    ], "only the new face medium is recorded; the face-free one never is"


async def test_the_same_new_face_in_two_roles_is_one_attestation_with_both(media_api: Api, tmp_path: Path) -> None:
    key = await media_api.new_key()
    face = face_png(tmp_path)
    response = await queue(media_api, key, i2v(face, end_image_url=png_url(face)))
    assert response.status_code == 409 and response.json()["face_media_roles"] == ["image", "end_image"]
    assert (await queue(media_api, key, i2v(face, end_image_url=png_url(face), consents=CONSENTS))).status_code == 200
    [attestation] = await list_consents(media_api, key)
    assert attestation["face_media_roles"] == ["image", "end_image"]


async def test_face_free_media_never_asks_and_records_nothing(media_api: Api, tmp_path: Path) -> None:
    key = await media_api.new_key()
    scenery = save(landscape_picture(640, 480), tmp_path / "scenery.png")
    assert (await queue(media_api, key, i2v(scenery))).status_code == 200
    assert (await queue(media_api, key, i2v(scenery, consents=CONSENTS))).status_code == 200
    assert await list_consents(media_api, key) == []


@pytest.mark.parametrize("model", ["seedance-2-0-image-to-video-basic", "seedance-2-0-fast-image-to-video-basic"])
async def test_basic_ids_never_ask(media_api: Api, tmp_path: Path, model: str) -> None:
    key = await media_api.new_key()
    response = await queue(media_api, key, i2v(face_png(tmp_path), model=model))
    assert response.status_code == 200, response.text
    assert await list_consents(media_api, key) == []


async def test_fast_ids_ask_too(media_api: Api, tmp_path: Path) -> None:
    key = await media_api.new_key()
    response = await queue(media_api, key, i2v(face_png(tmp_path), model="seedance-2-0-fast-image-to-video"))
    assert response.status_code == 409 and response.json()["face_media_roles"] == ["image"]
    response = await queue(media_api, key, r2v([face_png(tmp_path)], model="seedance-2-0-fast-reference-to-video"))
    assert response.status_code == 409 and response.json()["face_media_roles"] == ["reference_image"]


async def test_text_to_video_never_asks(media_api: Api) -> None:
    key = await media_api.new_key()
    body = {"model": "seedance-2-0-text-to-video", "prompt": "a portrait of a smiling woman", "duration": "5s",
            "resolution": "480p", "aspect_ratio": "16:9"}
    assert (await queue(media_api, key, body)).status_code == 200


async def test_revoking_asks_again_and_only_the_owner_can_revoke(media_api: Api, tmp_path: Path) -> None:
    owner, other = await media_api.new_key(), await media_api.new_key()
    face = face_png(tmp_path)
    assert (await queue(media_api, owner, i2v(face, consents=CONSENTS))).status_code == 200
    [attestation] = await list_consents(media_api, owner)

    stolen = await delete_consent(media_api, other, attestation["id"])
    assert stolen.status_code == 404
    assert await list_consents(media_api, owner) == [attestation]
    assert (await queue(media_api, owner, i2v(face))).status_code == 200, "still attested"

    revoked = await delete_consent(media_api, owner, attestation["id"])
    assert revoked.status_code == 200 and revoked.json() == {"success": True}
    assert await list_consents(media_api, owner) == []
    response = await queue(media_api, owner, i2v(face))
    assert response.status_code == 409 and response.json() == needs_consent_body(["image"])
    assert (await delete_consent(media_api, owner, attestation["id"])).status_code == 404, "already revoked"
    assert (await delete_consent(media_api, owner, "consent_nope")).status_code == 404

    assert (await queue(media_api, owner, i2v(face, consents=CONSENTS))).status_code == 200
    [fresh] = await list_consents(media_api, owner)
    assert fresh["id"] != attestation["id"] and fresh["media_sha256"] == attestation["media_sha256"]


async def test_consent_endpoints_need_a_key(media_api: Api) -> None:
    assert (await media_api.client.get("/api/v1/consents",
                                       headers={"Authorization": "Bearer vg_bad"})).status_code == 401
    assert (await media_api.client.delete("/api/v1/consents/x",
                                          headers={"Authorization": "Bearer vg_bad"})).status_code == 401


async def test_a_face_in_a_sampled_frame_of_a_reference_video_asks(media_api: Api, tmp_path: Path) -> None:
    key = await media_api.new_key()
    account = await media_api.account_of(key)
    before = media_api.balance_and_ledger(account)
    scenery = landscape_picture(480, 360)
    # 3 s at 8 fps; the face appears after the first second.
    video = clip(tmp_path / "ref.mp4", [scenery] * 8 + [face_picture(480, 360, dx=0.01 * (i % 3)) for i in range(16)])
    response = await queue(media_api, key, r2v(videos=[video]))
    assert response.status_code == 409, response.text
    assert response.json() == needs_consent_body(["reference_video"])
    assert_matches_schema("/video/queue", "post", response)
    assert media_api.balance_and_ledger(account) == before

    plain = clip(tmp_path / "plain.mp4", [scenery] * 24)
    assert (await queue(media_api, key, r2v(videos=[plain]))).status_code == 200
    granted = await queue(media_api, key, r2v(videos=[video, plain], consents=CONSENTS))
    assert granted.status_code == 200, granted.text
    [attestation] = await list_consents(media_api, key)
    assert attestation["media_sha256"] == sha256_of(video)
    assert attestation["face_media_roles"] == ["reference_video"]


async def test_invalid_consents_are_a_400_before_any_face_check(media_api: Api, tmp_path: Path) -> None:
    key = await media_api.new_key()
    partial = {"seedance": {"confirmed_terms_and_privacy": True, "confirmed_legal_right": True}}
    response = await queue(media_api, key, i2v(face_png(tmp_path), consents=partial))
    assert response.status_code == 400
    assert media_api.scalar(select(func.count()).select_from(consents)) == 0


async def test_store_dedups_attestations_and_scopes_them_by_policy_version(media_api: Api, tmp_path: Path) -> None:
    from vidgate.consent import PROVIDER, Medium, attested_sha256s, record_attestations
    from vidgate.media.types import MediaFile

    key = await media_api.new_key()
    account = await media_api.account_of(key)
    file = MediaFile("image_url", tmp_path / "x.png", "image", "image/png", 1, "ab" * 32)
    medium = Medium(file.sha256, ("image",), file)
    db = media_api.ctx.db
    first = await db.write(lambda conn: record_attestations(conn, account, PROVIDER, [medium, medium], "v2.0", "r1"))
    again = await db.write(lambda conn: record_attestations(conn, account, PROVIDER, [medium], "v2.0", "r2"))
    assert len(first) == 1 and again == [], "one row per bytes, even from two requests"
    assert db.read_now(lambda conn: attested_sha256s(conn, account, PROVIDER, [file.sha256], "v2.0")) == {file.sha256}
    assert db.read_now(lambda conn: attested_sha256s(conn, account, PROVIDER, [file.sha256], "v3.0")) == set(), \
        "an attestation under an older policy version does not cover the current one"
