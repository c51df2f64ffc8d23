"""The Python SDK against a real vidgate app in this process (httpx's ASGI transport), and the blocking client
against a real `vidgate serve` process tree."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import av
import httpx
import pytest

from tests.conftest import Api, LiveServer
from vidgate.client import (
    AsyncVidgateClient,
    Job,
    JobCanceled,
    JobFailed,
    Queued,
    RetrieveStatus,
    VidgateAPIError,
    VidgateClient,
    WaitTimeout,
)

FAST = {"model": "wan-3-0-text-to-video", "prompt": "A red fox runs through fresh snow at dawn",
        "duration": "2s", "resolution": "480p", "aspect_ratio": "16:9"}
PRIVATE = {**FAST, "model": "grok-imagine-text-to-video-private", "duration": "2s"}
T = TypeVar("T")


class FaultyTransport(httpx.AsyncBaseTransport):
    """The real app, except that the first `faults` requests get `status` with a Retry-After instead; every
    request is recorded, so a test can count what the client sent."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.faults = 0
        self.status = 503
        self.retry_after = "0"
        self.requests: list[httpx.Request] = []

    def fail_next(self, count: int, status: int = 503, retry_after: str = "0") -> None:
        self.faults, self.status, self.retry_after = count, status, retry_after

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.faults:
            self.faults -= 1
            return httpx.Response(self.status, json={"error": "try again"}, headers={"Retry-After": self.retry_after})
        return await self.inner.handle_async_request(request)


@dataclass
class Sdk:
    api: Api
    client: AsyncVidgateClient
    transport: FaultyTransport
    key: str


@pytest.fixture
async def sdk(api: Api) -> AsyncIterator[Sdk]:
    key = await api.new_key(balance_usd=20)
    # The ASGI transport of the test app's own client: the SDK then talks to the same in-process app.
    transport = FaultyTransport(api.client._transport)
    async with AsyncVidgateClient("http://testserver", key, transport=transport) as client:
        yield Sdk(api, client, transport, key)


def probe(data: bytes | Path) -> tuple[float, int, int]:
    """Duration (s), width and height of an MP4."""
    with av.open(io.BytesIO(data) if isinstance(data, bytes) else str(data)) as container:
        stream = container.streams.video[0]
        assert container.duration is not None
        return container.duration / av.time_base, stream.codec_context.width, stream.codec_context.height


# --- Venice's routes --------------------------------------------------------------------------------------


async def test_models_lists_the_video_catalogue_with_its_constraints(sdk: Sdk) -> None:
    models = {m.id: m for m in await sdk.client.models()}
    wan = models["wan-3-0-text-to-video"]
    assert wan.model_type == "text-to-video"
    assert "2s" in wan.durations and "480p" in wan.resolutions and "16:9" in wan.aspect_ratios


async def test_quote_is_the_servers_price(sdk: Sdk) -> None:
    price = await sdk.client.quote(model="wan-2.5-preview-text-to-video", duration="5s", resolution="720p")
    assert price == 0.55


async def test_queue_then_retrieve_gives_the_status_then_the_mp4(sdk: Sdk, tmp_path: Path) -> None:
    queued = await sdk.client.queue(**FAST)
    assert isinstance(queued, Queued) and queued.model == FAST["model"] and queued.download_url is None
    early = await sdk.client.retrieve(queued.model, queued.queue_id)
    assert isinstance(early, RetrieveStatus) and early.status == "PROCESSING"
    assert early.execution_duration_ms is not None and early.execution_duration_ms >= 0

    await sdk.api.run_worker()
    saved = await sdk.client.retrieve(queued.model, queued.queue_id, to=tmp_path / "fox.mp4")
    assert saved == tmp_path / "fox.mp4" and not (tmp_path / "fox.mp4.part").exists()
    duration, width, height = probe(saved)
    assert abs(duration - 2.0) < 0.2 and (width, height) == (854, 480)
    assert await sdk.client.retrieve(queued.model, queued.queue_id) == saved.read_bytes()

    await sdk.client.complete(queued.model, queued.queue_id)
    with pytest.raises(VidgateAPIError) as gone:
        await sdk.client.retrieve(queued.model, queued.queue_id)
    assert gone.value.status == 404


async def test_private_model_video_comes_from_the_signed_link_without_the_key(sdk: Sdk, tmp_path: Path) -> None:
    queued = await sdk.client.queue(**PRIVATE)
    assert queued.download_url and "/video/download/" in queued.download_url
    await sdk.api.run_worker()
    status = await sdk.client.retrieve(queued.model, queued.queue_id)
    assert isinstance(status, RetrieveStatus) and status.status == "COMPLETED"

    saved = await sdk.client.download_url(queued.download_url, tmp_path / "private.mp4")
    assert probe(saved)[1:] == (854, 480)
    link_request = sdk.transport.requests[-1]
    assert "/video/download/" in link_request.url.path and "authorization" not in link_request.headers


async def test_api_errors_carry_status_code_and_message(sdk: Sdk) -> None:
    with pytest.raises(VidgateAPIError) as invalid:
        await sdk.client.queue(**{**FAST, "duration": "7s"})
    assert invalid.value.status == 400 and invalid.value.body["issues"][0]["path"] == ["duration"]

    async with AsyncVidgateClient("http://testserver", "vg_nope", transport=sdk.transport) as stranger:
        with pytest.raises(VidgateAPIError) as refused:
            await stranger.queue(**FAST)
    assert refused.value.status == 401 and refused.value.message == "Authentication failed"

    poor = await sdk.api.new_key(balance_usd=0.01)
    async with AsyncVidgateClient("http://testserver", poor, transport=sdk.transport) as client:
        with pytest.raises(VidgateAPIError) as broke:
            await client.queue(**FAST)
    assert broke.value.status == 402 and broke.value.code == "INSUFFICIENT_BALANCE"


# --- retries ----------------------------------------------------------------------------------------------


async def test_reads_are_retried_after_503_honouring_retry_after(sdk: Sdk) -> None:
    sdk.transport.fail_next(2, status=503, retry_after="0.3")
    started = time.monotonic()
    assert await sdk.client.quote(model="wan-2.5-preview-text-to-video", duration="5s", resolution="720p") == 0.55
    assert time.monotonic() - started >= 0.6, "it waited Retry-After before each retry"
    assert len(sdk.transport.requests) == 3


async def test_retries_stop_after_max_retries_with_the_last_error(sdk: Sdk) -> None:
    sdk.transport.fail_next(10, status=429)
    with pytest.raises(VidgateAPIError) as limited:
        await sdk.client.models()
    assert limited.value.status == 429 and limited.value.retry_after == 0
    assert len(sdk.transport.requests) == 1 + sdk.client.config.max_retries


async def test_a_retry_after_longer_than_max_retry_wait_is_raised_at_once(sdk: Sdk) -> None:
    sdk.transport.fail_next(1, status=429, retry_after="120")
    with pytest.raises(VidgateAPIError) as limited:
        await sdk.client.models()
    assert limited.value.retry_after == 120 and len(sdk.transport.requests) == 1


async def test_queue_without_idempotency_key_is_never_retried(sdk: Sdk) -> None:
    sdk.transport.fail_next(1, status=503)
    with pytest.raises(VidgateAPIError) as busy:
        await sdk.client.queue(**FAST)
    assert busy.value.status == 503 and len(sdk.transport.requests) == 1


async def test_queue_with_idempotency_key_is_retried_and_sends_the_key_each_time(sdk: Sdk) -> None:
    sdk.transport.fail_next(1, status=503)
    queued = await sdk.client.queue(idempotency_key="k-123", **FAST)
    assert queued.queue_id
    assert [r.headers.get("idempotency-key") for r in sdk.transport.requests] == ["k-123", "k-123"]


async def test_other_errors_are_not_retried(sdk: Sdk) -> None:
    sdk.transport.fail_next(1, status=500)
    with pytest.raises(VidgateAPIError) as failed:
        await sdk.client.models()
    assert failed.value.status == 500 and len(sdk.transport.requests) == 1


# --- vidgate's job routes ---------------------------------------------------------------------------------


async def test_wait_follows_the_job_to_the_end_and_saves_the_mp4(sdk: Sdk, tmp_path: Path) -> None:
    queued = await sdk.client.queue(**FAST)
    seen: list[Job] = []
    waiting = asyncio.create_task(sdk.client.wait(queued.queue_id, queued.model, to=tmp_path / "fox.mp4",
                                                  on_update=seen.append, poll_interval=0.05))
    while not seen:  # its first look is before any worker takes the job
        await asyncio.sleep(0.01)
    await sdk.api.run_worker()
    job = await waiting
    assert job.status == "completed" and job.progress == 100 and job.media_available
    assert seen[0].status == "queued" and seen[0].queue_position == 1 and seen[-1] == job
    assert probe(tmp_path / "fox.mp4")[1:] == (854, 480)


async def test_generate_sends_an_idempotency_key_and_is_charged_once(sdk: Sdk, tmp_path: Path) -> None:
    account = await sdk.api.account_of(sdk.key)
    before = sdk.api.balance_and_ledger(account)[0]
    sdk.transport.fail_next(1, status=503)  # the first queue is refused: the retry must reuse the same key
    generating = asyncio.create_task(sdk.client.generate(to=tmp_path / "fox.mp4", **FAST))
    await sdk.api.run_worker()
    job = await generating
    keys = [r.headers.get("idempotency-key") for r in sdk.transport.requests if r.url.path.endswith("/queue")]
    assert len(keys) == 2 and keys[0] and keys[0] == keys[1]
    assert before - sdk.api.balance_and_ledger(account)[0] == round(job.price_usd * 1_000_000)
    assert probe(tmp_path / "fox.mp4")[0] == pytest.approx(2.0, abs=0.2)


async def test_the_same_idempotency_key_returns_the_same_job(sdk: Sdk) -> None:
    first = await sdk.client.queue(idempotency_key="fox-1", **FAST)
    again = await sdk.client.queue(idempotency_key="fox-1", **FAST)
    assert again.queue_id == first.queue_id
    assert len((await sdk.client.jobs()).data) == 1, "one job, one charge"
    with pytest.raises(VidgateAPIError) as reused:
        await sdk.client.queue(idempotency_key="fox-1", **{**FAST, "prompt": "another prompt"})
    assert reused.value.status == 422


async def test_jobs_lists_newest_first_filters_and_pages(sdk: Sdk) -> None:
    ids = [(await sdk.client.queue(**{**FAST, "prompt": f"fox {i}"})).queue_id for i in range(3)]
    first = await sdk.client.jobs(limit=2)
    assert [j.queue_id for j in first.data] == ids[::-1][:2] and first.has_more and first.next_cursor
    rest = await sdk.client.jobs(limit=2, cursor=first.next_cursor)
    assert [j.queue_id for j in rest.data] == ids[:1] and not rest.has_more
    assert {j.queue_id for j in (await sdk.client.jobs(status="queued,running")).data} == set(ids)
    assert (await sdk.client.jobs(status=["completed"])).data == ()
    assert (await sdk.client.jobs(model="wan-2.5-preview-text-to-video")).data == ()
    assert [(await sdk.client.job(i)).queue_position for i in ids] == [1, 2, 3]


async def test_another_accounts_job_is_not_found(sdk: Sdk) -> None:
    queued = await sdk.client.queue(**FAST)
    other = await sdk.api.new_key()
    async with AsyncVidgateClient("http://testserver", other, transport=sdk.transport) as stranger:
        for call in (stranger.job(queued.queue_id), stranger.cancel(queued.queue_id)):
            with pytest.raises(VidgateAPIError) as hidden:
                await call
            assert hidden.value.status == 404
        assert (await stranger.jobs()).data == ()


async def test_cancel_refunds_a_queued_job_and_wait_raises_job_canceled(sdk: Sdk) -> None:
    queued = await sdk.client.queue(**FAST)
    canceled = await sdk.client.cancel(queued.queue_id)
    assert canceled.status == "canceled" and canceled.refunded_usd == canceled.price_usd > 0
    with pytest.raises(JobCanceled) as ended:
        await sdk.client.wait(queued.queue_id)
    assert ended.value.job.status == "canceled"
    with pytest.raises(VidgateAPIError) as finished:
        await sdk.client.cancel(queued.queue_id)
    assert finished.value.status == 409 and finished.value.code == "JOB_FINISHED"


async def test_a_failed_job_makes_wait_raise_job_failed_with_its_error(sdk: Sdk) -> None:
    from vidgate.jobs.states import job_error

    queued = await sdk.client.queue(**FAST)
    store = sdk.api.ctx.store
    claim = await store.claim_next("test", 30, 1)
    assert claim is not None and claim.job.id == queued.queue_id
    await store.fail_attempt(queued.queue_id, claim.token, job_error("encoder crashed", "The render failed"),
                             max_attempts=1, retryable=False)
    with pytest.raises(JobFailed) as failed:
        await sdk.client.wait(queued.queue_id)
    job = failed.value.job
    assert job.status == "failed" and job.error is not None and job.refunded_usd == job.price_usd
    assert "encoder crashed" not in str(failed.value), "the operator's detail stays on the server"


async def test_wait_gives_up_after_its_timeout_and_the_job_goes_on(sdk: Sdk) -> None:
    queued = await sdk.client.queue(**FAST)
    with pytest.raises(WaitTimeout) as late:
        await sdk.client.wait(queued.queue_id, timeout=0.3, poll_interval=0.1)
    assert late.value.job.status == "queued"
    assert (await sdk.client.job(queued.queue_id)).status == "queued"


# --- the blocking client, against a real server -----------------------------------------------------------


def test_sync_generate_follows_the_job_and_saves_the_mp4(server: LiveServer, tmp_path: Path) -> None:
    seen: list[str] = []
    with VidgateClient(server.base_url, server.api_key) as client:
        job = client.generate(to=tmp_path / "fox.mp4", on_update=lambda j: seen.append(j.status),
                              poll_interval=0.1, **FAST)
    assert job.status == "completed" and seen[-1] == "completed"
    assert probe(tmp_path / "fox.mp4") == pytest.approx((2.0, 854, 480), abs=0.2)


def within(seconds: float, work: Callable[[], T]) -> T:
    """`work()`, failing the test if it takes longer (an event stream that never ends would hang it)."""
    pool = ThreadPoolExecutor(1)
    try:
        return pool.submit(work).result(timeout=seconds)
    finally:
        pool.shutdown(wait=False)  # not waiting: a hung stream must fail the test, not hang it


def test_events_of_one_job_run_until_it_is_final_and_resume_after_an_id(server: LiveServer) -> None:
    with VidgateClient(server.base_url, server.api_key) as client:
        queued = client.queue(**{**FAST, "duration": "10s"})  # still running when the stream opens
        events = within(60, lambda: list(client.events(queued.queue_id)))
        assert events[-1].event == "completed" and events[-1].job.status == "completed"
        assert "running" in [e.event for e in events]
        ids = [e.id for e in events]
        assert all(i is not None for i in ids) and ids == sorted(ids)
        resumed = within(60, lambda: list(client.events(queued.queue_id, last_event_id=ids[0])))
    # What happened after that id, as the job's newest event (each event carries the job's whole state).
    assert [(e.id, e.event) for e in resumed] == [(ids[-1], "completed")]


async def test_async_events_follow_a_job_over_http(server: LiveServer) -> None:
    async with AsyncVidgateClient(server.base_url, server.api_key) as client:
        queued = await client.queue(**FAST)

        async def follow() -> list[str]:
            return [event.event async for event in client.events(queued.queue_id)]

        kinds = await asyncio.wait_for(follow(), 60)
    assert kinds[-1] == "completed" and kinds.count("completed") == 1


def test_events_of_all_jobs_include_a_new_jobs_progress(server: LiveServer) -> None:
    queued: list[Queued] = []
    with VidgateClient(server.base_url, server.api_key) as client, \
            VidgateClient(server.base_url, server.api_key) as other:

        def follow() -> list[str]:
            mine: list[str] = []
            stream = client.events()
            # Queued once the stream is open (it opens at the first next()), so no event of the job is missed.
            threading.Timer(0.5, lambda: queued.append(other.queue(**FAST))).start()
            for event in stream:
                if queued and event.job.queue_id == queued[0].queue_id:
                    mine.append(event.event)
                    if event.is_final:
                        break
            stream.close()
            return mine

        mine = within(60, follow)
    assert mine[-1] == "completed" and "running" in mine


class CutFirstEventStream(httpx.BaseTransport):
    """Loopback HTTP, except that the first event stream breaks (a network error) right after its first event."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.requests: list[httpx.Request] = []
        self.cut = True

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        response = self.inner.handle_request(request)
        if not (self.cut and request.url.path.endswith("/events")):
            return response
        self.cut = False
        return httpx.Response(response.status_code, headers=response.headers,
                              stream=_BreakAfterFirstData(response.stream))  # type: ignore[arg-type]

    def close(self) -> None:
        self.inner.close()


class _BreakAfterFirstData(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream) -> None:
        self.inner = inner

    def __iter__(self) -> Iterator[bytes]:
        received = b""
        for chunk in self.inner:
            yield chunk
            received += chunk
            if b"data:" in received and received.endswith(b"\n\n"):
                raise httpx.ReadError("connection reset (test)")

    def close(self) -> None:
        self.inner.close()


def test_a_dropped_event_stream_is_reopened_from_the_last_event_id(server: LiveServer) -> None:
    transport = CutFirstEventStream()
    with VidgateClient(server.base_url, server.api_key, transport=transport) as client:
        # Long enough that the job is not yet final when the first stream breaks.
        queued = client.queue(**{**FAST, "duration": "10s"})
        events = within(60, lambda: list(client.events(queued.queue_id)))
    streams = [r for r in transport.requests if r.url.path.endswith("/events")]
    assert len(streams) == 2 and "last-event-id" not in streams[0].headers
    assert streams[1].headers["last-event-id"] == str(events[0].id)
    assert events[-1].event == "completed" and len({e.id for e in events}) == len(events), "none repeated"
