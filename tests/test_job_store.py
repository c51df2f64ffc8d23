"""The job store as a queue: leases, heartbeats, re-claims, attempts, and money that moves exactly once."""

from __future__ import annotations

import time

import pytest

from tests.conftest import Api, t2v_body
from vidgate.jobs.states import JobStatus, can_transition

pytestmark = pytest.mark.both_backends  # the store suite runs on SQLite and PostgreSQL


async def queued_job(api: Api, key: str) -> str:
    response = await api.post("/video/queue", t2v_body(), key)
    assert response.status_code == 200
    return response.json()["queue_id"]


async def test_claim_takes_the_oldest_queued_job_once(api: Api) -> None:
    key = await api.new_key()
    first, second = await queued_job(api, key), await queued_job(api, key)
    store = api.ctx.store
    a = await store.claim_next("w1", 30, 3)
    b = await store.claim_next("w2", 30, 3)
    assert a and b and a.job.id == first and b.job.id == second
    assert await store.claim_next("w3", 30, 3) is None


async def test_expired_lease_is_claimed_again_and_the_old_worker_cannot_complete(api: Api) -> None:
    key = await api.new_key()
    job_id = await queued_job(api, key)
    store = api.ctx.store
    stale = await store.claim_next("dead-worker", 0.05, 3)
    assert stale is not None
    time.sleep(0.1)
    fresh = await store.claim_next("live-worker", 30, 3)
    assert fresh is not None and fresh.job.id == job_id and fresh.job.attempts == 2
    assert not await store.heartbeat(job_id, stale.token, 30, 0.5), "the stale lease is gone"
    assert not await store.complete(job_id, stale.token, "stale.mp4")
    assert await store.complete(job_id, fresh.token, "fresh.mp4")
    job = await store.get(job_id)
    assert job and job.status is JobStatus.COMPLETED and job.media_key == "fresh.mp4"


async def test_failed_attempts_requeue_then_fail_and_refund_once(api: Api) -> None:
    key = await api.new_key(balance_usd=1)
    job_id = await queued_job(api, key)
    account_id = await api.account_of(key)
    store = api.ctx.store
    for attempt in (1, 2):
        claim = await store.claim_next("w", 30, 3)
        assert claim and claim.job.attempts == attempt
        assert await store.fail_attempt(job_id, claim.token, "boom", max_attempts=3) is JobStatus.QUEUED
    claim = await store.claim_next("w", 30, 3)
    assert claim and claim.job.attempts == 3
    assert await store.fail_attempt(job_id, claim.token, "boom", max_attempts=3) is JobStatus.FAILED
    assert await store.fail_attempt(job_id, claim.token, "boom", max_attempts=3) is None
    assert api.balance_and_ledger(account_id) == (1_000_000, 1_000_000)


async def test_worker_lost_on_the_last_attempt_fails_the_job_and_refunds(api: Api) -> None:
    key = await api.new_key(balance_usd=1)
    job_id = await queued_job(api, key)
    store = api.ctx.store
    assert await store.claim_next("dies", 0.01, 1)
    time.sleep(0.05)
    assert await store.claim_next("next", 30, 1) is None
    job = await store.get(job_id)
    assert job and job.status is JobStatus.FAILED
    retrieve = await api.post("/video/retrieve", {"model": job.model, "queue_id": job_id}, key)
    assert retrieve.status_code == 500
    assert api.balance_and_ledger(await api.account_of(key)) == (1_000_000, 1_000_000)


@pytest.mark.parametrize(
    ("old", "new", "allowed"),
    [
        (JobStatus.QUEUED, JobStatus.PROCESSING, True),
        (JobStatus.PROCESSING, JobStatus.COMPLETED, True),
        (JobStatus.PROCESSING, JobStatus.QUEUED, True),
        (JobStatus.COMPLETED, JobStatus.PROCESSING, False),
        (JobStatus.FAILED, JobStatus.QUEUED, False),
    ],
)
def test_state_machine_transitions(old: JobStatus, new: JobStatus, allowed: bool) -> None:
    assert can_transition(old, new) is allowed


async def test_worker_records_render_progress_as_it_goes(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    import vidgate.worker as worker_module
    from vidgate.engines.procedural import ProceduralEngine

    class HalfwayPause(ProceduralEngine):
        """The real engine, pausing halfway so the test can see progress recorded mid-render."""

        def render(self, spec, out_path, progress):  # type: ignore[no-untyped-def]
            def slow(fraction: float) -> None:
                progress(fraction)
                if 0.4 < fraction < 0.6:
                    time.sleep(1.5)  # longer than a heartbeat interval (lease / 3 = 1 s)

            super().render(spec, out_path, slow)

    monkeypatch.setattr(worker_module, "engine_for", lambda name, **kw: HalfwayPause(preset="ultrafast"))
    key = await api.new_key()
    job_id = await queued_job(api, key)
    seen: set[float] = set()
    render = asyncio.ensure_future(api.run_worker())
    while not render.done():
        job = await api.ctx.store.get(job_id)
        assert job is not None
        seen.add(job.progress)
        await asyncio.sleep(0.1)
    await render
    assert any(0.4 < p < 0.6 for p in seen), seen
    job = await api.ctx.store.get(job_id)
    assert job and job.progress == 1.0


async def test_a_worker_claims_only_the_engines_and_models_it_serves(api: Api) -> None:
    from sqlalchemy import update

    from vidgate.db import jobs
    from vidgate.jobs.store import ClaimScope

    key = await api.new_key()
    gpu_job, cpu_job = await queued_job(api, key), await queued_job(api, key)
    # As if its model were bound to local weights: a diffusers job for one model.
    api.ctx.db.write_now(lambda conn: conn.execute(
        update(jobs).where(jobs.c.id == gpu_job).values(engine="diffusers", model="house-wan")))
    store = api.ctx.store
    cpu_only = ClaimScope(engines=frozenset({"procedural"}), model_engines=frozenset({"diffusers"}))
    other_gpu = ClaimScope(engines=frozenset({"diffusers"}), model_engines=frozenset({"diffusers"}),
                           engine_models=frozenset({"another-model"}))
    this_gpu = ClaimScope(engines=frozenset({"diffusers"}), model_engines=frozenset({"diffusers"}),
                          engine_models=frozenset({"house-wan"}))
    assert await store.claim_next("gpu-1", 30, 3, other_gpu) is None, "a model it has not loaded is left alone"
    claimed = await store.claim_next("cpu", 30, 3, cpu_only)
    assert claimed is not None and claimed.job.id == cpu_job, "the older diffusers job is skipped"
    claimed = await store.claim_next("gpu-0", 30, 3, this_gpu)
    assert claimed is not None and claimed.job.id == gpu_job


async def test_a_finished_job_never_changes_status_again(api: Api) -> None:
    from sqlalchemy import select

    from vidgate.db import jobs
    from vidgate.jobs.states import ALLOWED_TRANSITIONS
    from vidgate.jobs.store import _fail_and_refund, transition

    key = await api.new_key()
    done_id, failed_id = await queued_job(api, key), await queued_job(api, key)
    store = api.ctx.store
    done = await store.claim_next("w", 30, 3)
    failed = await store.claim_next("w", 30, 3)
    assert done and failed
    assert await store.complete(done_id, done.token, "a.mp4")
    assert await store.fail_attempt(failed_id, failed.token, "boom", max_attempts=3, retryable=False) \
        is JobStatus.FAILED
    # Whatever a caller asks, the store's one status change refuses to leave a final status.
    api.ctx.db.write_now(lambda conn: _fail_and_refund(conn, done_id, None, "late failure"))
    for target in JobStatus:
        changed = api.ctx.db.write_now(lambda conn, t=target: conn.execute(
            transition(t, jobs.c.id.in_([done_id, failed_id]))).rowcount)
        assert changed == 0, target
    status = dict(api.ctx.db.read_now(lambda conn: conn.execute(select(jobs.c.id, jobs.c.status)).all()))
    assert status == {done_id: "COMPLETED", failed_id: "FAILED"}
    assert not ALLOWED_TRANSITIONS[JobStatus.COMPLETED] and not ALLOWED_TRANSITIONS[JobStatus.FAILED]
