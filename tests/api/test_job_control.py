"""vidgate's job-control extensions through the HTTP API, on SQLite and PostgreSQL: list, status (queued vs
running, position, progress, ETA, price, error), cancel with its refund, and Idempotency-Key on queue."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tests.conftest import Api, t2v_body
from vidgate.api import context
from vidgate.db import jobs, ledger
from vidgate.jobs.estimates import recent_finished
from vidgate.worker import Worker

pytestmark = pytest.mark.both_backends

MODEL = "wan-2.5-preview-text-to-video"


async def get(api: Api, path: str, key: str, **params: Any) -> httpx.Response:
    return await api.client.get(f"/api/v1{path}", params=params, headers={"Authorization": f"Bearer {key}"})


async def queue(api: Api, key: str, **overrides: Any) -> str:
    response = await api.post("/video/queue", t2v_body(**overrides), key)
    assert response.status_code == 200, response.text
    return response.json()["queue_id"]


async def test_queued_jobs_show_their_position_price_and_an_estimate(api: Api) -> None:
    key = await api.new_key()
    first, second = await queue(api, key), await queue(api, key, resolution="720p")
    one = (await get(api, f"/video/jobs/{first}", key)).json()
    two = (await get(api, f"/video/jobs/{second}", key)).json()
    assert one["status"] == two["status"] == "queued"
    assert (one["queue_position"], two["queue_position"]) == (1, 2)
    assert one["progress"] == 0 and one["error"] is None and one["media_available"] is False
    assert one["price_usd"] > 0 and one["refunded_usd"] == 0
    assert one["eta_seconds"] > 0 and two["eta_seconds"] >= one["eta_seconds"]
    assert one["model"] == MODEL and one["queue_id"] == first and one["created_at"].endswith("Z")


async def test_a_running_job_is_running_and_a_finished_one_completed(api: Api) -> None:
    key = await api.new_key()
    job_id = await queue(api, key)
    claim = await api.ctx.store.claim_next("w", 30, 3)
    assert claim is not None
    await api.ctx.store.heartbeat(job_id, claim.token, 30, 0.5)
    running = (await get(api, f"/video/jobs/{job_id}", key)).json()
    assert running["status"] == "running" and running["queue_position"] is None
    assert running["progress"] == 50.0 and running["started_at"] and running["eta_seconds"] is not None
    await api.ctx.store.complete(job_id, claim.token, "x.mp4")
    done = (await get(api, f"/video/jobs/{job_id}", key)).json()
    assert done["status"] == "completed" and done["progress"] == 100 and done["eta_seconds"] is None


async def test_another_accounts_job_is_404_and_unknown_too(api: Api) -> None:
    mine, theirs = await api.new_key(), await api.new_key()
    job_id = await queue(api, theirs)
    for path in (f"/video/jobs/{job_id}", "/video/jobs/00000000-0000-0000-0000-000000000000"):
        response = await get(api, path, mine)
        assert response.status_code == 404
    cancel = await api.client.post(f"/api/v1/video/jobs/{job_id}/cancel", headers={"Authorization": f"Bearer {mine}"})
    assert cancel.status_code == 404
    assert (await get(api, "/video/jobs", mine)).json() == {"data": [], "has_more": False, "next_cursor": None}


async def test_list_filters_and_pages_with_a_cursor(api: Api) -> None:
    key = await api.new_key()
    ids = [await queue(api, key) for _ in range(3)]
    claim = await api.ctx.store.claim_next("w", 30, 3)
    assert claim is not None and claim.job.id == ids[0]
    everything = (await get(api, "/video/jobs", key)).json()
    assert [j["queue_id"] for j in everything["data"]] == ids[::-1] and everything["has_more"] is False
    queued = (await get(api, "/video/jobs", key, status="queued")).json()
    assert [j["queue_id"] for j in queued["data"]] == ids[:0:-1]
    running = (await get(api, "/video/jobs", key, status="running,completed", model=MODEL)).json()
    assert [j["queue_id"] for j in running["data"]] == [ids[0]]
    seen, cursor = [], None
    while True:
        page = (await get(api, "/video/jobs", key, limit=1, **({"cursor": cursor} if cursor else {}))).json()
        seen += [j["queue_id"] for j in page["data"]]
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert seen == ids[::-1]
    for params, field in (({"status": "sleeping"}, "status"), ({"limit": "0"}, "limit"), ({"cursor": "!!"}, "cursor")):
        bad = await get(api, "/video/jobs", key, **params)
        assert bad.status_code == 400 and field in bad.json()["error"], bad.text


async def test_cancel_a_queued_job_refunds_it_at_once(api: Api) -> None:
    key = await api.new_key(balance_usd=10)
    account = await api.account_of(key)
    job_id = await queue(api, key)
    auth = {"Authorization": f"Bearer {key}"}
    canceled = await api.client.post(f"/api/v1/video/jobs/{job_id}/cancel", headers=auth)
    assert canceled.status_code == 200, canceled.text
    view = canceled.json()
    assert view["status"] == "canceled" and view["refunded_usd"] == view["price_usd"]
    assert view["error"]["code"] == "CANCELED"
    assert api.balance_and_ledger(account) == (10_000_000, 10_000_000)
    assert await api.ctx.store.claim_next("w", 30, 3) is None, "a canceled job is never rendered"
    retrieve = await api.post("/video/retrieve", {"model": MODEL, "queue_id": job_id}, key)
    assert retrieve.status_code == 404
    again = await api.client.post(f"/api/v1/video/jobs/{job_id}/cancel", headers=auth)
    assert again.status_code == 409 and again.json()["code"] == "JOB_FINISHED"


async def test_cancel_a_running_job_stops_it_at_the_next_heartbeat_and_refunds(api: Api) -> None:
    key = await api.new_key(balance_usd=10)
    account = await api.account_of(key)
    job_id = await queue(api, key)
    claim = await api.ctx.store.claim_next("w", 30, 3)
    assert claim is not None
    auth = {"Authorization": f"Bearer {key}"}
    view = (await api.client.post(f"/api/v1/video/jobs/{job_id}/cancel", headers=auth)).json()
    assert view["status"] == "running" and view["cancel_requested"] is True
    assert not await api.ctx.store.heartbeat(job_id, claim.token, 30, 0.4), "the worker is told to stop"
    assert not await api.ctx.store.complete(job_id, claim.token, "late.mp4"), "and cannot complete it after"
    done = (await get(api, f"/video/jobs/{job_id}", key)).json()
    assert done["status"] == "canceled" and done["refunded_usd"] == done["price_usd"]
    assert api.balance_and_ledger(account) == (10_000_000, 10_000_000)


async def test_a_canceled_job_whose_worker_died_is_settled_by_the_next_claim(api: Api) -> None:
    key = await api.new_key(balance_usd=10)
    account = await api.account_of(key)
    job_id = await queue(api, key)
    assert await api.ctx.store.claim_next("dying-worker", 0.05, 3) is not None
    await api.client.post(f"/api/v1/video/jobs/{job_id}/cancel", headers={"Authorization": f"Bearer {key}"})
    await asyncio.sleep(0.1)
    assert await api.ctx.store.claim_next("w", 30, 3) is None
    assert (await get(api, f"/video/jobs/{job_id}", key)).json()["status"] == "canceled"
    assert api.balance_and_ledger(account) == (10_000_000, 10_000_000)


async def test_a_video_a_dead_worker_uploaded_is_removed_when_the_next_claim_ends_its_job(
        api: Api, tmp_path: Path) -> None:
    """A worker that dies between its upload and its completion, on the job's last attempt: the next claim fails
    the job (and refunds it), and that worker deletes the upload, which no job will ever point at."""
    key = await api.new_key(balance_usd=10)
    account = await api.account_of(key)
    dead_job = await queue(api, key)
    claim = await api.ctx.store.claim_next("dying-worker", 0.05, 1)
    assert claim is not None and claim.job.id == dead_job
    video = tmp_path / "upload.mp4"
    video.write_bytes(b"\x00" * 1024)
    api.ctx.storage.put_file(f"{dead_job}-{claim.token[:8]}.mp4", video)  # uploaded, then died
    next_job = await queue(api, key)
    await asyncio.sleep(0.1)  # its lease runs out
    worker = Worker(api.settings.model_copy(update={"max_attempts": 1}), name="next-worker")
    await asyncio.wait_for(worker.run(max_jobs=1), 60)
    assert (await get(api, f"/video/jobs/{dead_job}", key)).json()["status"] == "failed"
    assert api.ctx.storage.keys_with_prefix(f"{dead_job}-") == []
    assert (await get(api, f"/video/jobs/{next_job}", key)).json()["status"] == "completed"
    balance, ledger_sum = api.balance_and_ledger(account)
    assert balance == ledger_sum


async def test_an_idempotency_key_makes_one_job_and_one_charge(api: Api) -> None:
    key = await api.new_key(balance_usd=10)
    headers = {"Idempotency-Key": "order-1234"}
    first = await api.post("/video/queue", t2v_body(), key, headers=headers)
    again = await api.post("/video/queue", t2v_body(), key, headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    other = await api.post("/video/queue", t2v_body(prompt="Something else entirely"), key, headers=headers)
    assert other.status_code == 422 and other.json()["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert "order-1234" in other.json()["error"]
    # Keys are per account: another account's identical key is its own job.
    someone = await api.post("/video/queue", t2v_body(), await api.new_key(), headers=headers)
    assert someone.status_code == 200 and someone.json()["queue_id"] != first.json()["queue_id"]
    bad = await api.post("/video/queue", t2v_body(), key, headers={"Idempotency-Key": "has space"})
    assert bad.status_code == 400 and "Idempotency-Key" in bad.json()["error"]


async def test_twenty_concurrent_identical_requests_make_one_job_and_one_charge(api: Api) -> None:
    key = await api.new_key(balance_usd=10)
    account = await api.account_of(key)
    headers = {"Idempotency-Key": "burst-7"}
    answers = await asyncio.gather(*(api.post("/video/queue", t2v_body(), key, headers=headers) for _ in range(20)))
    assert {r.status_code for r in answers} == {200}, [r.text for r in answers if r.status_code != 200]
    assert len({r.json()["queue_id"] for r in answers}) == 1
    assert api.scalar(select(func.count()).select_from(jobs)) == 1
    assert api.scalar(select(func.count()).select_from(ledger).where(ledger.c.kind == "CHARGE")) == 1
    balance, ledger_sum = api.balance_and_ledger(account)
    assert balance == ledger_sum < 10_000_000


async def test_a_models_first_job_is_estimated_from_its_engines_past_jobs(api: Api) -> None:
    key = await api.new_key()
    default_ms = api.settings.default_average_execution_ms
    for _ in range(3):
        await queue(api, key)
    await api.run_worker(max_jobs=3)
    # Another model of the same (procedural) engine, never run here, at another resolution and length.
    other = "wan-2.6-text-to-video"
    body = t2v_body(model=other, resolution="1080p", duration="10s")
    response = await api.post("/video/queue", body, key)
    assert response.status_code == 200, response.text
    queue_id = response.json()["queue_id"]
    status = (await api.post("/video/retrieve", {"model": other, "queue_id": queue_id}, key)).json()
    assert status["average_execution_time"] != default_ms
    small = (await get(api, f"/video/jobs/{(await queue(api, key))}", key)).json()
    big = (await get(api, f"/video/jobs/{queue_id}", key)).json()
    assert big["estimated_run_seconds"] > small["estimated_run_seconds"], "more pixels and seconds take longer"


async def test_polls_that_find_the_estimate_out_of_date_read_the_history_once(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    key = await api.new_key()
    queue_id = await queue(api, key)
    history_reads = 0
    read = api.ctx.db.read
    history_released = asyncio.Event()
    history_released.set()

    async def counting_read(fn: Any) -> Any:
        nonlocal history_reads
        if fn is recent_finished:
            history_reads += 1
            await history_released.wait()
        return await read(fn)

    monkeypatch.setattr(api.ctx.db, "read", counting_read)
    monkeypatch.setattr(context, "EXECUTION_TIME_CACHE_SECONDS", 0.0)  # every poll finds it out of date
    monkeypatch.setattr(api.ctx, "_estimator", None)
    body = {"model": MODEL, "queue_id": queue_id}

    async def polls() -> set[int]:
        answers = await asyncio.gather(*(api.post("/video/retrieve", body, key) for _ in range(20)))
        assert {a.status_code for a in answers} == {200}
        return {a.json()["average_execution_time"] for a in answers}

    assert len(await polls()) == 1 and history_reads == 1  # none built yet: all wait for the one read
    history_released.clear()  # the next read is slow: polls meanwhile answer from the old estimate
    assert len(await polls()) == 1 and history_reads == 2
    history_released.set()
    await asyncio.sleep(0.05)
    assert history_reads == 2


async def test_cancel_stops_a_real_render_within_a_heartbeat_and_nothing_is_stored(api: Api) -> None:
    key = await api.new_key(balance_usd=10)
    account = await api.account_of(key)
    # A long render (10 s of 1080p) so that the cancel lands while the engine is at work.
    job_id = await queue(api, key, duration="10s", resolution="1080p")
    rendering = asyncio.ensure_future(api.run_worker(max_jobs=1, timeout=120))
    auth = {"Authorization": f"Bearer {key}"}
    while (view := (await get(api, f"/video/jobs/{job_id}", key)).json())["progress"] <= 0:
        assert view["status"] in ("queued", "running") and not rendering.done()
        await asyncio.sleep(0.1)
    canceled = await api.client.post(f"/api/v1/video/jobs/{job_id}/cancel", headers=auth)
    assert canceled.json()["cancel_requested"] is True
    await rendering  # the worker gives the job up and returns, long before a full 10 s 1080p render would end
    done = (await get(api, f"/video/jobs/{job_id}", key)).json()
    assert done["status"] == "canceled" and done["progress"] < 100 and done["media_available"] is False
    assert api.balance_and_ledger(account) == (10_000_000, 10_000_000)
    job = await api.ctx.store.get(job_id)
    assert job is not None and job.media_key is None
    assert not any(api.ctx.storage.keys_with_prefix(job_id)), "no video stored for a canceled job"


async def test_a_polled_status_follows_the_queue_as_it_moves(api: Api) -> None:
    key = await api.new_key()
    first, second = await queue(api, key), await queue(api, key)
    assert (await get(api, f"/video/jobs/{second}", key)).json()["queue_position"] == 2
    await api.client.post(f"/api/v1/video/jobs/{first}/cancel", headers={"Authorization": f"Bearer {key}"})
    assert (await get(api, f"/video/jobs/{second}", key)).json()["queue_position"] == 1
    claim = await api.ctx.store.claim_next("w", 30, 3)
    assert claim is not None and claim.job.id == second
    running = (await get(api, f"/video/jobs/{second}", key)).json()
    assert running["status"] == "running" and running["queue_position"] is None
