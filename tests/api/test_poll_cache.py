"""The retrieve poll's cache (SQLite: key owner and job row kept while `PRAGMA data_version` is unchanged).

Whatever another connection commits must be seen by the very next poll: a key revoked from another process
(the CLI, or a second Database), a balance changed elsewhere, a job finished by a worker, and this process's own
writes (they go through the writer thread's connection, which is not the reader's). On PostgreSQL there is no
cache; the same tests check that the poll answers the same way there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import Connection

from tests.conftest import Api, t2v_body
from vidgate.accounts.keys import revoke_api_key, split_key
from vidgate.accounts.ledger import credit, format_usd, usd_to_micros
from vidgate.db import Database, SqliteDatabase, open_database
from vidgate.settings import Settings

pytestmark = pytest.mark.both_backends


async def queued(api: Api, key: str) -> dict[str, str]:
    response = await api.post("/video/queue", t2v_body(), key)
    assert response.status_code == 200, response.text
    return {"model": response.json()["model"], "queue_id": response.json()["queue_id"]}


async def poll(api: Api, ident: dict[str, str], key: str) -> httpx.Response:
    return await api.post("/video/retrieve", ident, key)


async def polled_twice(api: Api, ident: dict[str, str], key: str) -> httpx.Response:
    """Two polls: the first fills the cache, the second is answered from it (on SQLite)."""
    assert (await poll(api, ident, key)).status_code == 200
    response = await poll(api, ident, key)
    assert response.status_code == 200, response.text
    return response


def elsewhere(settings: Settings, fn: Callable[[Connection], Any]) -> Any:
    """Commit `fn` through a Database of its own: other connections, as another API process would have."""
    other: Database = open_database(settings.resolved_database_url)
    try:
        return other.write_now(fn)
    finally:
        other.dispose()


def key_id(key: str) -> str:
    parts = split_key(key)
    assert parts is not None
    return parts[0]


async def test_a_key_revoked_from_another_connection_is_refused_on_the_next_poll(api: Api) -> None:
    key = await api.new_key()
    ident = await queued(api, key)
    await polled_twice(api, ident, key)

    assert elsewhere(api.settings, lambda conn: revoke_api_key(conn, key_id(key)))

    refused = await poll(api, ident, key)
    assert refused.status_code == 401, refused.text


async def test_a_key_revoked_with_the_cli_is_refused_on_the_next_poll(api: Api) -> None:
    key = await api.new_key()
    ident = await queued(api, key)
    await polled_twice(api, ident, key)

    env = dict(os.environ, VIDGATE_DATA_DIR=str(api.settings.data_dir))
    if api.settings.database_url:
        env["VIDGATE_DATABASE_URL"] = api.settings.database_url
    done = subprocess.run([sys.executable, "-m", "vidgate", "keys", "revoke", key_id(key), "--data-dir",
                           str(api.settings.data_dir)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr

    assert (await poll(api, ident, key)).status_code == 401


async def test_a_balance_changed_elsewhere_is_in_the_next_polls_header(api: Api) -> None:
    key = await api.new_key(balance_usd=50.0)
    account_id = await api.account_of(key)
    ident = await queued(api, key)
    before = (await polled_twice(api, ident, key)).headers["x-venice-balance-usd"]

    elsewhere(api.settings, lambda conn: credit(conn, account_id, usd_to_micros(7), note="top-up elsewhere"))

    after = (await poll(api, ident, key)).headers["x-venice-balance-usd"]
    assert after == format_usd(usd_to_micros(before) + usd_to_micros(7))


async def test_this_processes_own_writes_are_seen_on_the_next_poll(api: Api) -> None:
    """A queue is committed by this process's writer thread: the next poll shows the charged balance."""
    key = await api.new_key(balance_usd=50.0)
    ident = await queued(api, key)
    before = (await polled_twice(api, ident, key)).headers["x-venice-balance-usd"]

    await queued(api, key)

    after = (await poll(api, ident, key)).headers["x-venice-balance-usd"]
    assert usd_to_micros(after) < usd_to_micros(before)


async def test_a_job_finished_by_a_worker_is_seen_on_the_next_poll(api: Api) -> None:
    key = await api.new_key()
    ident = await queued(api, key)
    assert (await polled_twice(api, ident, key)).json()["status"] == "PROCESSING"

    await api.run_worker()  # the worker commits through its own Database, as a worker process does

    done = await poll(api, ident, key)
    assert done.status_code == 200
    assert done.headers["content-type"] == "video/mp4"


async def test_a_cached_key_id_with_another_secret_is_refused(api: Api) -> None:
    key = await api.new_key()
    ident = await queued(api, key)
    await polled_twice(api, ident, key)

    forged = f"vg_{key_id(key)}_{'x' * 40}"
    assert (await poll(api, ident, forged)).status_code == 401
    assert (await poll(api, ident, key)).status_code == 200


async def test_an_idle_poll_runs_no_lookup_and_a_commit_brings_them_back(
    api: Api, db_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if db_backend != "sqlite":
        pytest.skip("the poll cache is SQLite's (PostgreSQL reads every time)")
    db = api.ctx.db
    assert isinstance(db, SqliteDatabase)
    key = await api.new_key()
    account_id = await api.account_of(key)
    ident = await queued(api, key)
    await polled_twice(api, ident, key)

    reads: list[object] = []
    original = SqliteDatabase.read_now

    def counting(self: SqliteDatabase, fn: Callable[[Connection], Any]) -> Any:
        reads.append(fn)
        return original(self, fn)

    monkeypatch.setattr(SqliteDatabase, "read_now", counting)
    await poll(api, ident, key)
    assert reads == []  # key and job from the cache (the execution-time average is cached for 5 s)

    elsewhere(api.settings, lambda conn: credit(conn, account_id, 1, note="a commit"))
    await poll(api, ident, key)
    assert len(reads) == 2  # the key with its balance, and the job, read again
