"""The event hub's start: a stream that follows a job gets every event recorded after it began following, even
one recorded before the hub's first read of the log (CI once lost a job's `running` that way)."""

from __future__ import annotations

import asyncio

from sqlalchemy import create_engine

from tests.conftest import Api
from vidgate.db import job_events
from vidgate.jobs.store import record_event


async def test_an_event_recorded_as_soon_as_a_stream_follows_reaches_it(api: Api) -> None:
    account_id = await api.account_of(await api.new_key())
    # Another process's write: synchronous, so it commits before the hub's task gets a turn on the loop.
    other_node = create_engine(api.settings.resolved_database_url)
    try:
        async with api.ctx.hub.follow("account", account_id) as subscription:
            with other_node.begin() as conn:
                record_event(conn, "job-1", "running", account_id=account_id)
            event = await asyncio.wait_for(subscription.queue.get(), 10)
    finally:
        other_node.dispose()
    assert event is not None and (event.job_id, event.kind) == ("job-1", "running")


async def test_an_event_committed_after_a_newer_one_still_reaches_the_stream(api: Api) -> None:
    # PostgreSQL hands out ids at insert and commits in any order: id n+1 can be read before id n exists.
    account_id = await api.account_of(await api.new_key())
    other_node = create_engine(api.settings.resolved_database_url)

    def insert(event_id: int, job_id: str, kind: str) -> None:
        with other_node.begin() as conn:
            conn.execute(job_events.insert().values(id=event_id, job_id=job_id, account_id=account_id, kind=kind,
                                                    created_at=0.0))

    try:
        async with api.ctx.hub.follow("account", account_id) as subscription:
            insert(12, "job-b", "queued")
            newer = await asyncio.wait_for(subscription.queue.get(), 10)
            insert(11, "job-a", "queued")  # the older id, committed later
            older = await asyncio.wait_for(subscription.queue.get(), 10)
    finally:
        other_node.dispose()
    assert newer is not None and older is not None
    assert [(newer.id, newer.job_id), (older.id, older.job_id)] == [(12, "job-b"), (11, "job-a")]
