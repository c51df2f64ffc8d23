"""A bucket that becomes unreachable while vidgate runs: requests that need it answer 503 with Retry-After (the
client retries; nothing is lost), not 500, and the node carries on by itself once the bucket is back; a worker
holding a finished video waits for the bucket rather than failing the attempt. And no object outlives its job's
attempt: the upload of a worker that died before completing is removed when the job completes.

vidgate reaches moto's S3 server through a `Gate`, a TCP forwarder on a loopback port of its own: closing it is the
outage (connections refused, open ones cut), opening it again on the same port brings the service back with
everything it held (moto keeps its data in memory, so restarting moto itself would lose the bucket)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import func, select

from tests.conftest import api_for, free_port, t2v_body
from tests.storage.moto import keys_in
from tests.test_delivery import PRIVATE, path_of
from vidgate.db import ledger
from vidgate.errors import ServiceUnavailable
from vidgate.jobs.states import JobStatus
from vidgate.settings import Settings, load_settings
from vidgate.storage import storage_from_settings
from vidgate.storage.s3 import S3Storage
from vidgate.worker import Worker


class Gate:
    """Forwards a loopback port to the S3 server while open; closed, the port refuses connections."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target_port = target_port
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def close(self) -> None:
        """The outage: no new connection gets through, and every open one is cut."""
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            self._listener.close()
            self._listener = None
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def gate(moto_endpoint: str) -> Iterator[Gate]:
    port = urlsplit(moto_endpoint).port
    assert port is not None
    forwarder = Gate(port)
    forwarder.open()
    try:
        yield forwarder
    finally:
        forwarder.close()


@pytest.fixture
def gated_settings(tmp_path: Path, gate: Gate, bucket: str) -> Settings:
    return load_settings(data_dir=tmp_path / "data", x264_preset="ultrafast", lease_seconds=3.0,
                         idle_poll_seconds=0.2, storage_url=f"s3://{bucket}/videos", s3_endpoint_url=gate.endpoint)


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"].isdigit()
    if response.request.method != "HEAD":
        assert response.json()["error"]


async def test_retrieve_and_download_answer_503_while_the_bucket_is_down_then_recover(
        gate: Gate, gated_settings: Settings, s3: Any, bucket: str) -> None:
    async with api_for(gated_settings) as api:
        key = await api.new_key()
        public = (await api.post("/video/queue", t2v_body(), key)).json()
        private = (await api.post("/video/queue", PRIVATE, key)).json()
        await api.run_worker(max_jobs=2)
        assert len(keys_in(s3, bucket)) == 2
        ident = {"model": public["model"], "queue_id": public["queue_id"]}

        gate.close()
        started = time.monotonic()
        assert_unavailable(await api.post("/video/retrieve", ident, key))
        assert_unavailable(await api.client.get(path_of(private["download_url"])))
        assert_unavailable(await api.client.head(path_of(private["download_url"])))
        assert time.monotonic() - started < 30, "an unreachable bucket is noticed in seconds, not minutes"

        gate.open()  # the same node, with nothing restarted, serves the videos again
        video = await api.post("/video/retrieve", ident, key)
        assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
        download = await api.client.get(path_of(private["download_url"]))
        assert download.status_code == 200 and download.headers["content-type"] == "video/mp4"
        assert len(keys_in(s3, bucket)) == 2


def test_storage_calls_raise_service_unavailable_while_the_bucket_is_down(gate: Gate, gated_settings: Settings) -> None:
    storage = storage_from_settings(gated_settings)
    assert isinstance(storage, S3Storage)
    source = storage.scratch_dir() / "a.mp4"
    source.write_bytes(b"x" * 1000)
    storage.put_file("a.mp4", source)
    gate.close()
    again = storage.scratch_dir() / "b.mp4"
    again.write_bytes(b"y" * 1000)
    calls: list[tuple[str, Any]] = [
        ("size", lambda: storage.size("a.mp4")),
        ("exists", lambda: storage.exists("a.mp4")),
        ("keys_with_prefix", lambda: storage.keys_with_prefix("a")),
        ("delete", lambda: storage.delete("a.mp4")),
        ("put_file", lambda: storage.put_file("b.mp4", again)),
        ("iter_range", lambda: b"".join(storage.iter_range("a.mp4", 0, 99))),
    ]
    for name, call in calls:
        with pytest.raises(ServiceUnavailable) as raised:
            call()
        assert raised.value.status_code == 503 and raised.value.headers["Retry-After"].isdigit(), name
    assert again.exists(), "an upload that did not happen keeps its source file"
    gate.open()
    assert storage.size("a.mp4") == 1000 and storage.keys_with_prefix("a") == ["a.mp4"]


async def test_a_finished_render_waits_out_a_storage_outage_and_completes(
        gate: Gate, gated_settings: Settings, s3: Any, bucket: str) -> None:
    async with api_for(gated_settings) as api:
        key = await api.new_key()
        queue_id = (await api.post("/video/queue", t2v_body(), key)).json()["queue_id"]
        worker = Worker(gated_settings, name="patient")  # made while the bucket is there: it checks at start
        gate.close()
        running = asyncio.ensure_future(worker.run(max_jobs=1))
        try:
            deadline = time.monotonic() + 60
            while (job := await api.ctx.store.get(queue_id)) and job.progress < 1.0:  # rendered: uploading now
                assert time.monotonic() < deadline and not running.done()
                await asyncio.sleep(0.1)
            await asyncio.sleep(2.0)  # an upload or two fails meanwhile
            assert not running.done()
            gate.open()
            await asyncio.wait_for(running, 60)
        finally:
            worker.stop()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(running, 10)
        job = await api.ctx.store.get(queue_id)
        assert job is not None and job.status is JobStatus.COMPLETED and job.attempts == 1, job
        assert keys_in(s3, bucket) == [f"videos/{job.media_key}"]
        assert api.scalar(select(func.count()).select_from(ledger).where(ledger.c.kind == "REFUND")) == 0
        balance, ledger_sum = api.balance_and_ledger(await api.account_of(key))
        assert balance == ledger_sum


async def test_the_upload_of_a_worker_that_died_before_completing_is_removed(
        gated_settings: Settings, s3: Any, bucket: str) -> None:
    async with api_for(gated_settings) as api:
        key = await api.new_key()
        queue_id = (await api.post("/video/queue", t2v_body(), key)).json()["queue_id"]
        # A worker claims the job, uploads its video and dies before it could complete the job: its object has
        # its own attempt's key, which no job row names.
        claim = await api.ctx.store.claim_next("doomed", 0.2, 3)
        assert claim is not None and claim.job.id == queue_id
        source = api.ctx.storage.scratch_dir() / "doomed.mp4"
        source.write_bytes(b"an orphan unless someone removes it")
        await asyncio.to_thread(api.ctx.storage.put_file, f"{queue_id}-{claim.token[:8]}.mp4", source)
        await asyncio.sleep(0.5)  # its lease runs out

        await api.run_worker()
        job = await api.ctx.store.get(queue_id)
        assert job is not None and job.status is JobStatus.COMPLETED and job.attempts == 2
        assert keys_in(s3, bucket) == [f"videos/{job.media_key}"]


async def test_revoking_a_link_while_the_bucket_is_down_is_503_and_the_retry_removes_the_video(
        gate: Gate, gated_settings: Settings, s3: Any, bucket: str) -> None:
    async with api_for(gated_settings) as api:
        key = await api.new_key()
        url = path_of((await api.post("/video/queue", PRIVATE, key)).json()["download_url"])
        await api.run_worker()
        assert len(keys_in(s3, bucket)) == 1

        gate.close()
        assert_unavailable(await api.client.delete(url))
        gate.open()
        retried = await api.client.delete(url)
        assert retried.status_code == 200 and retried.json() == {"success": True}
        assert keys_in(s3, bucket) == [], "the video is gone, not left behind a revoked link"
        assert (await api.client.get(url)).status_code == 410


async def test_completing_while_the_bucket_is_down_is_503_and_the_retry_removes_the_video(
        gate: Gate, gated_settings: Settings, s3: Any, bucket: str) -> None:
    async with api_for(gated_settings) as api:
        key = await api.new_key()
        queued = (await api.post("/video/queue", t2v_body(), key)).json()
        ident = {"model": queued["model"], "queue_id": queued["queue_id"]}
        await api.run_worker()
        assert len(keys_in(s3, bucket)) == 1

        gate.close()
        assert_unavailable(await api.post("/video/complete", ident, key))
        gate.open()
        retried = await api.post("/video/complete", ident, key)
        assert retried.status_code == 200 and retried.json() == {"success": True}
        assert keys_in(s3, bucket) == [], "the video is gone, not left in the bucket of a completed job"
