"""PostgreSQL as the queue: concurrent claims never share a job, NOTIFY wakes an idle worker, and a database that
goes away answers 503 with Retry-After (nothing half-written) until it is back, then the node carries on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.conftest import Api, api_for, t2v_body
from tests.postgres import PostgresCluster
from vidgate.db import jobs, ledger, open_database
from vidgate.jobs.states import JobStatus
from vidgate.jobs.store import JobStore
from vidgate.settings import load_settings
from vidgate.worker import Worker

on_postgres = pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)


@on_postgres
async def test_concurrent_workers_on_separate_connections_claim_each_job_once(api: Api) -> None:
    key = await api.new_key()
    queued = set()
    for _ in range(12):
        response = await api.post("/video/queue", t2v_body(), key)
        assert response.status_code == 200
        queued.add(response.json()["queue_id"])
    # Four "worker processes": each its own pool of connections, claiming as fast as it can, all at once.
    databases = [open_database(api.settings.resolved_database_url) for _ in range(4)]
    try:
        async def drain(n: int, store: JobStore) -> list[str]:
            taken = []
            while (claim := await store.claim_next(f"w{n}", 30, 3)) is not None:
                taken.append(claim.job.id)
            return taken

        results = await asyncio.gather(*(drain(n, JobStore(db)) for n, db in enumerate(databases)))
    finally:
        for db in databases:
            db.dispose()
    claimed = [job_id for taken in results for job_id in taken]
    assert sorted(claimed) == sorted(queued), "every job claimed, none twice"


@on_postgres
async def test_notify_wakes_an_idle_worker_long_before_its_next_poll(api: Api) -> None:
    # The worker re-checks only every 120 s on its own; the job is rendered because NOTIFY woke it.
    settings = api.settings.model_copy(update={"idle_poll_seconds": 120.0})
    worker = Worker(settings, name="listener")
    running = asyncio.ensure_future(worker.run(max_jobs=1))
    try:
        await asyncio.sleep(1.0)  # let it find the queue empty and start listening
        key = await api.new_key()
        response = await api.post("/video/queue", t2v_body(), key)
        assert response.status_code == 200
        await asyncio.wait_for(running, 60)
    finally:
        worker.stop()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(running, 10)
    job = await api.ctx.store.get(response.json()["queue_id"])
    assert job is not None and job.status is JobStatus.COMPLETED


@on_postgres
async def test_connections_dropped_by_the_server_cost_a_request_nothing(api: Api) -> None:
    """The event loop's pool (the polled lookups, the one-statement queue) meets connections the server closed
    (a restart, an idle timeout): the statement runs again on a new one, and a queue runs exactly once."""
    key = await api.new_key()
    account_id = await api.account_of(key)
    first = await api.post("/video/queue", t2v_body(), key)
    assert first.status_code == 200
    body = {"model": "wan-2.5-preview-text-to-video", "queue_id": first.json()["queue_id"]}
    assert (await api.post("/video/retrieve", body, key)).status_code == 200
    for _ in range(2):
        await api.ctx.db.write(lambda conn: conn.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
        queued = await api.post("/video/queue", t2v_body(), key)
        assert queued.status_code == 200, queued.text
        retrieved = await api.post("/video/retrieve", body, key)
        assert retrieved.status_code == 200, retrieved.text
    assert api.scalar(select(func.count()).select_from(jobs)) == 3
    assert api.scalar(select(func.count()).select_from(ledger).where(ledger.c.kind == "CHARGE")) == 3
    balance, ledger_sum = api.balance_and_ledger(account_id)
    assert balance == ledger_sum


@pytest.fixture
async def outage_api(own_postgres_cluster: PostgresCluster,
                     tmp_path: Path) -> AsyncIterator[tuple[Api, PostgresCluster]]:
    settings = load_settings(data_dir=tmp_path / "data", x264_preset="ultrafast",
                             database_url=own_postgres_cluster.new_database())
    async with api_for(settings) as api:
        yield api, own_postgres_cluster


async def test_database_down_is_503_with_retry_after_and_the_node_recovers(
        outage_api: tuple[Api, PostgresCluster]) -> None:
    api, cluster = outage_api
    key = await api.new_key()
    account_id = await api.account_of(key)
    first = await api.post("/video/queue", t2v_body(), key)
    assert first.status_code == 200
    queue_id = first.json()["queue_id"]

    cluster.stop("immediate")
    for path, body in (("/video/queue", t2v_body()),
                       ("/video/retrieve", {"model": "wan-2.5-preview-text-to-video", "queue_id": queue_id})):
        response = await api.post(path, body, key)
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"].isdigit()
        assert response.json()["error"]

    # Down long enough that a connection pool's reconnect attempts (1, 2, 4, 8 s apart) would outlast a request's
    # 5 s wait after the restart: the node must not sit out that backoff.
    await asyncio.sleep(12)
    cluster.start()
    again = await api.post("/video/queue", t2v_body(), key)
    assert again.status_code == 200, again.text
    retrieve = await api.post("/video/retrieve",
                              {"model": "wan-2.5-preview-text-to-video", "queue_id": queue_id}, key)
    assert retrieve.status_code == 200
    # What the outage refused left nothing behind: two jobs, two charges, and the balance is the ledger's sum.
    assert api.scalar(select(func.count()).select_from(jobs)) == 2
    assert api.scalar(select(func.count()).select_from(ledger).where(ledger.c.kind == "CHARGE")) == 2
    balance, ledger_sum = api.balance_and_ledger(account_id)
    assert balance == ledger_sum


def test_an_unreachable_database_at_start_is_one_clear_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from vidgate.cli import app

    with contextlib.closing(__import__("socket").socket()) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    result = CliRunner().invoke(app, ["db", "upgrade", "--data-dir", str(tmp_path)],
                                env={"VIDGATE_DATABASE_URL": f"postgresql://vidgate:secret@127.0.0.1:{port}/vidgate"})
    assert result.exit_code == 2
    assert f"cannot reach the database postgresql+psycopg://vidgate:***@127.0.0.1:{port}/vidgate" in result.output
    assert "VIDGATE_DATABASE_URL" in result.output and "secret" not in result.output
