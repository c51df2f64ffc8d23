"""The event hub: a stream that follows a job gets every event recorded after it began following, even one
recorded before the hub's first read of the log (CI once lost a job's `running` that way), and in id order."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, RootTransaction, create_engine

from tests.conftest import Api
from vidgate.api import eventhub
from vidgate.jobs.events import newest_event_id
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


ON_POSTGRESQL = pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)


@contextlib.contextmanager
def an_older_id_left_open(other_node: Engine, account_id: str) -> Iterator[RootTransaction]:
    """Event n ("job-a") recorded in a transaction left open (yielded), then event n+1 ("job-b") committed."""
    with other_node.connect() as slow:
        transaction = slow.begin()
        record_event(slow, "job-a", "queued", account_id=account_id)
        with other_node.begin() as conn:
            record_event(conn, "job-b", "queued", account_id=account_id)
        yield transaction


@ON_POSTGRESQL
@pytest.mark.parametrize("older_commits", [True, False])
async def test_events_go_out_in_id_order_behind_one_whose_transaction_is_still_running(
        api: Api, older_commits: bool) -> None:
    """PostgreSQL hands out ids at insert and commits in any order: id n+1 can commit while n's transaction runs.
    The hub holds n+1 until n commits (then sends n first) or is rolled back, so that a client that resumes
    from the last id it got misses nothing older."""
    account_id = await api.account_of(await api.new_key())
    other_node = create_engine(api.settings.resolved_database_url)
    try:
        async with api.ctx.hub.follow("account", account_id) as subscription:
            with an_older_id_left_open(other_node, account_id) as transaction:
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(subscription.queue.get(), 0.5)  # n+1 waits behind n
                assert api.ctx.hub.released_through < api.ctx.db.read_now(newest_event_id)
                transaction.commit() if older_commits else transaction.rollback()
            received = [await asyncio.wait_for(subscription.queue.get(), 10)]
            if older_commits:
                received.append(await asyncio.wait_for(subscription.queue.get(), 10))
    finally:
        other_node.dispose()
    assert all(e is not None for e in received)
    assert [e.job_id for e in received if e] == (["job-a", "job-b"] if older_commits else ["job-b"])
    assert [e.id for e in received if e] == sorted(e.id for e in received if e)
    assert api.ctx.hub.released_through == max(e.id for e in received if e)


@ON_POSTGRESQL
async def test_an_older_id_still_uncommitted_when_the_hub_starts_reaches_the_stream(api: Api) -> None:
    account_id = await api.account_of(await api.new_key())
    other_node = create_engine(api.settings.resolved_database_url)
    try:
        with an_older_id_left_open(other_node, account_id) as transaction:  # before anyone follows
            async with api.ctx.hub.follow("account", account_id) as subscription:  # the hub starts past n+1
                newest = api.ctx.db.read_now(newest_event_id)
                # n+1, already in the log, is a starting stream's to read from it: the hub never sends it
                assert api.ctx.hub.released_through == newest
                transaction.commit()
                event = await asyncio.wait_for(subscription.queue.get(), 10)
                assert event is not None and (event.job_id, event.id) == ("job-a", newest - 1)
                for _ in range(50):
                    if api.ctx.hub.released_through == newest:
                        break
                    await asyncio.sleep(0.05)
                assert api.ctx.hub.released_through == newest
    finally:
        other_node.dispose()


@ON_POSTGRESQL
async def test_events_wait_behind_a_transaction_kept_open_only_so_long(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """The snapshot horizon is the whole cluster's: a long transaction anywhere would hold every gap. After
    HOLD_SECONDS the newer events go, and the older one is still sent (late) if it commits."""
    monkeypatch.setattr(eventhub, "HOLD_SECONDS", 0.3)
    account_id = await api.account_of(await api.new_key())
    other_node = create_engine(api.settings.resolved_database_url)
    try:
        async with api.ctx.hub.follow("account", account_id) as subscription:
            with an_older_id_left_open(other_node, account_id) as transaction:
                newer = await asyncio.wait_for(subscription.queue.get(), 10)
                transaction.commit()
            late = await asyncio.wait_for(subscription.queue.get(), 10)
    finally:
        other_node.dispose()
    assert newer is not None and late is not None
    assert [(newer.job_id, late.job_id)] == [("job-b", "job-a")] and late.id < newer.id
