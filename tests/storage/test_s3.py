"""S3 storage against moto's server mode on a loopback port: the whole flow through the HTTP API, multipart
uploads, and the startup errors for a missing bucket or an unreachable endpoint."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import api_for, free_port, t2v_body
from tests.storage.moto import keys_in
from tests.test_delivery import PRIVATE, path_of
from vidgate.settings import Settings, load_settings
from vidgate.storage import StorageConfigError, storage_from_settings
from vidgate.storage.s3 import MULTIPART_CHUNK_SIZE, S3Storage
from vidgate.worker import Worker


@pytest.fixture
def s3_settings(tmp_path: Path, moto_endpoint: str, bucket: str) -> Settings:
    return load_settings(data_dir=tmp_path / "data", x264_preset="ultrafast", lease_seconds=3.0,
                         idle_poll_seconds=0.2, storage_url=f"s3://{bucket}/videos", s3_endpoint_url=moto_endpoint)


async def test_video_lands_in_the_bucket_and_is_served_from_it(s3: Any, bucket: str, s3_settings: Settings) -> None:
    async with api_for(s3_settings) as api:
        assert isinstance(api.ctx.storage, S3Storage)
        key = await api.new_key()
        queued = await api.post("/video/queue", t2v_body(), key)
        assert queued.status_code == 200
        ident = {"model": queued.json()["model"], "queue_id": queued.json()["queue_id"]}
        await api.run_worker()

        stored = keys_in(s3, bucket)
        assert len(stored) == 1 and stored[0].startswith(f"videos/{ident['queue_id']}") and stored[0].endswith(".mp4")
        obj = s3.get_object(Bucket=bucket, Key=stored[0])
        assert obj["ContentType"] == "video/mp4"
        data = obj["Body"].read()
        assert len(data) > 1000
        assert not list(s3_settings.media_dir.glob("*.mp4")) and not list((s3_settings.data_dir / "scratch").iterdir())

        full = await api.post("/video/retrieve", ident, key)
        assert full.status_code == 200 and full.headers["content-type"] == "video/mp4"
        assert full.headers["content-length"] == str(len(data))
        assert full.content == data

        part = await api.post("/video/retrieve", ident, key, headers={"Range": "bytes=100-1099"})
        assert part.status_code == 206
        assert part.headers["content-range"] == f"bytes 100-1099/{len(data)}"
        assert part.content == data[100:1100]
        tail = await api.post("/video/retrieve", ident, key, headers={"Range": "bytes=-10"})
        assert tail.status_code == 206 and tail.content == data[-10:]
        beyond = await api.post("/video/retrieve", ident, key, headers={"Range": f"bytes={len(data)}-"})
        assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(data)}"

        done = await api.post("/video/complete", ident, key)
        assert done.status_code == 200 and done.json() == {"success": True}
        assert keys_in(s3, bucket) == []
        assert (await api.post("/video/retrieve", ident, key)).status_code == 404


async def test_delete_media_on_completion_removes_the_object(s3: Any, bucket: str, s3_settings: Settings) -> None:
    async with api_for(s3_settings) as api:
        key = await api.new_key()
        queued = (await api.post("/video/queue", t2v_body(), key)).json()
        ident = {"model": queued["model"], "queue_id": queued["queue_id"]}
        await api.run_worker()
        first = await api.post("/video/retrieve", {**ident, "delete_media_on_completion": True}, key)
        assert first.status_code == 200 and len(first.content) > 1000
        assert keys_in(s3, bucket) == []
        assert (await api.post("/video/retrieve", ident, key)).status_code == 404


async def test_private_download_link_streams_from_s3_and_delete_removes_it(
    s3: Any, bucket: str, s3_settings: Settings
) -> None:
    async with api_for(s3_settings) as api:
        key = await api.new_key()
        queued = (await api.post("/video/queue", PRIVATE, key)).json()
        url = queued["download_url"]
        await api.run_worker()
        [stored] = keys_in(s3, bucket)
        data = s3.get_object(Bucket=bucket, Key=stored)["Body"].read()

        video = await api.client.get(path_of(url))
        assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
        assert video.content == data
        part = await api.client.get(path_of(url), headers={"Range": "bytes=0-99"})
        assert part.status_code == 206 and part.content == data[:100]
        head = await api.client.head(path_of(url))
        assert head.status_code == 200 and head.headers["content-length"] == str(len(data)) and head.content == b""

        revoked = await api.client.delete(path_of(url))
        assert revoked.status_code == 200 and revoked.json() == {"success": True}
        assert keys_in(s3, bucket) == []
        assert (await api.client.get(path_of(url))).status_code == 410


def test_large_put_file_is_a_multipart_upload(s3: Any, bucket: str, s3_settings: Settings) -> None:
    storage = storage_from_settings(s3_settings)
    assert isinstance(storage, S3Storage)
    calls: list[str] = []
    real_call = storage.client._make_api_call

    def spy(operation: str, params: dict[str, Any]) -> Any:
        calls.append(operation)
        return real_call(operation, params)

    storage.client._make_api_call = spy  # type: ignore[method-assign]
    source = storage.scratch_dir() / "big.mp4"
    payload = os.urandom(20 * 1024 * 1024)
    source.write_bytes(payload)
    storage.put_file("big.mp4", source)

    assert not source.exists(), "put_file moves the file: the scratch copy is gone"
    assert calls.count("CreateMultipartUpload") == 1 and calls.count("CompleteMultipartUpload") == 1
    assert calls.count("UploadPart") == -(-len(payload) // MULTIPART_CHUNK_SIZE) > 1
    assert "PutObject" not in calls
    assert keys_in(s3, bucket) == ["videos/big.mp4"]
    assert storage.size("big.mp4") == len(payload) and storage.exists("big.mp4")
    assert b"".join(storage.iter_range("big.mp4", 5, 5 + 3 * 1024 * 1024)) == payload[5:5 + 3 * 1024 * 1024 + 1]
    storage.delete("big.mp4")
    assert not storage.exists("big.mp4") and keys_in(s3, bucket) == []


def test_small_put_file_is_one_put(s3: Any, bucket: str, s3_settings: Settings) -> None:
    storage = storage_from_settings(s3_settings)
    source = storage.scratch_dir() / "small.mp4"
    source.write_bytes(b"x" * 1000)
    storage.put_file("small.mp4", source)
    assert keys_in(s3, bucket) == ["videos/small.mp4"] and storage.size("small.mp4") == 1000
    assert storage.size("absent.mp4") is None


async def test_missing_bucket_is_a_startup_error(tmp_path: Path, moto_endpoint: str) -> None:
    settings = load_settings(data_dir=tmp_path / "data", storage_url="s3://no-such-bucket/videos",
                             s3_endpoint_url=moto_endpoint)
    with pytest.raises(StorageConfigError, match=r"VIDGATE_STORAGE_URL=s3://no-such-bucket/videos.*does not exist"):
        async with api_for(settings):
            pass
    with pytest.raises(StorageConfigError, match="VIDGATE_STORAGE_URL"):
        Worker(settings)


def test_unreachable_endpoint_is_a_startup_error(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings = load_settings(data_dir=tmp_path / "data", storage_url="s3://bucket", s3_endpoint_url=endpoint)
    started = time.monotonic()
    with pytest.raises(StorageConfigError) as error:
        storage_from_settings(settings)
    assert "VIDGATE_STORAGE_URL=s3://bucket" in str(error.value)
    assert f"VIDGATE_S3_ENDPOINT_URL={endpoint}" in str(error.value)
    assert time.monotonic() - started < 20


def test_unknown_storage_scheme_is_a_startup_error(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data", storage_url="gs://bucket")
    with pytest.raises(StorageConfigError, match="VIDGATE_STORAGE_URL"):
        storage_from_settings(settings)
