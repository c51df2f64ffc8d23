"""Private models: a signed, expiring download_url that needs no auth and that its owner can revoke."""

from __future__ import annotations

import io
from pathlib import Path
from urllib.parse import urlsplit

import av
import pytest

from tests.conftest import Api, api_for, t2v_body
from vidgate.settings import load_settings
from vidgate.storage.signing import DeliveryUrlSigner

pytestmark = pytest.mark.both_backends  # the store suite runs on SQLite and PostgreSQL

PRIVATE = t2v_body(model="grok-imagine-text-to-video-private", duration="2s", resolution="480p")


async def private_job(api: Api) -> tuple[str, dict[str, str], str]:
    key = await api.new_key()
    queued = await api.post("/video/queue", PRIVATE, key)
    assert queued.status_code == 200
    body = queued.json()
    assert set(body) == {"model", "queue_id", "download_url"}
    return key, {"model": body["model"], "queue_id": body["queue_id"]}, body["download_url"]


def path_of(url: str) -> str:
    return urlsplit(url).path


async def test_download_url_streams_the_video_without_auth_once_completed(api: Api) -> None:
    key, ident, url = await private_job(api)
    assert url.startswith("http://testserver/api/v1/video/download/")
    early = await api.client.get(path_of(url))
    assert early.status_code == 404
    await api.run_worker()

    status = await api.post("/video/retrieve", ident, key)
    assert status.headers["content-type"].startswith("application/json")
    assert status.json()["status"] == "COMPLETED"
    assert status.json()["execution_duration"] > 0

    video = await api.client.get(path_of(url))
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(video.content)) as container:
        assert container.streams.video[0].frames == 48
    part = await api.client.get(path_of(url), headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and part.content == video.content[:100]


async def test_delete_revokes_the_link(api: Api) -> None:
    key, ident, url = await private_job(api)
    await api.run_worker()
    revoked = await api.client.delete(path_of(url))
    assert revoked.status_code == 200 and revoked.json() == {"success": True}
    assert (await api.client.get(path_of(url))).status_code == 410
    assert (await api.client.delete(path_of(url))).status_code == 410
    assert (await api.post("/video/retrieve", ident, key)).status_code == 404


async def test_tampered_link_is_403(api: Api) -> None:
    _, _, url = await private_job(api)
    await api.run_worker()
    token = path_of(url).rsplit("/", 1)[1]
    queue_id, expires, signature = token.split(".")
    for forged in (f"{queue_id}.{int(expires) + 3600}.{signature}", f"{queue_id}.{expires}.{signature[:-2]}xx",
                   "not-a-token"):
        response = await api.client.get(f"/api/v1/video/download/{forged}")
        assert response.status_code == 403, forged


async def test_expired_link_is_410(api: Api) -> None:
    _, ident, _ = await private_job(api)
    await api.run_worker()
    expired = DeliveryUrlSigner(api.settings.resolved_secret_key, ttl_seconds=-1).token(ident["queue_id"])
    response = await api.client.get(f"/api/v1/video/download/{expired}")
    assert response.status_code == 410
    assert "expired" in response.json()["error"]


async def test_link_is_valid_for_24_hours() -> None:
    signer = DeliveryUrlSigner("s3cret")
    token = signer.token("job-1", now=1_000_000)
    assert signer.verify(token, now=1_000_000 + 24 * 3600 - 1) == "job-1"


async def test_public_base_url_setting_is_used_for_links(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "d", public_base_url="https://videos.example.org/")
    async with api_for(settings, base_url="http://internal") as api:
        _, _, url = await private_job(api)
    assert url.startswith("https://videos.example.org/api/v1/video/download/")
