"""`LookupBatcher` (PostgreSQL's lookups made together, one statement) with a stand-in for the database: which
lookups share a statement, and that each still gets its own row or its own error."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import bindparam, select

from vidgate.batched_lookups import LookupBatcher, Row
from vidgate.db import PreparedQuery, jobs
from vidgate.errors import DatabaseUnavailable

TABLE = {"a": "row a", "b": "row b", "c": "row c"}


class FakeDatabase:
    """Answers a batch statement from TABLE: `(ordinal, value)` for each id it has. An id "bad" fails the
    statement it is in; `gate` (when set) holds every statement until it is opened."""

    def __init__(self) -> None:
        self.statements: list[list[str]] = []
        self.sql: list[str] = []
        self.gate: asyncio.Event | None = None
        self.down = False

    async def run(self, sql: str, params: dict[str, Any]) -> list[Row]:
        single = sql == "ONE"  # a lone lookup: the plain statement (one id; rows without the ordinal)
        ids: list[str] = [params["id"]] if single else params["id"]
        self.statements.append(ids)
        self.sql.append(sql)
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise DatabaseUnavailable()
        if "bad" in ids:
            raise ValueError("a value the database refuses")
        rows = [(n, TABLE[i]) for n, i in enumerate(ids, 1) if i in TABLE]
        return [row[1:] for row in rows] if single else rows


def batcher(db: FakeDatabase) -> LookupBatcher:
    return LookupBatcher("MANY", ["id"], db.run, "ONE")


async def test_lookups_made_together_share_one_statement_and_each_gets_its_own_row() -> None:
    db = FakeDatabase()
    lookups = batcher(db)
    rows = await asyncio.gather(*(lookups.lookup({"id": i}) for i in ["b", "nope", "a", "c", "a"]))
    assert rows == [("row b",), None, ("row a",), ("row c",), ("row a",)]
    assert db.statements == [["b", "nope", "a", "c", "a"]]


async def a_out_and_b_c_waiting(db: FakeDatabase, lookups: LookupBatcher) -> tuple[
        asyncio.Future[Row | None], list[asyncio.Future[Row | None]]]:
    """Lookup "a" sent and held at the database; "b" and "c" asked for meanwhile."""
    db.gate = asyncio.Event()
    first = asyncio.ensure_future(lookups.lookup({"id": "a"}))
    await asyncio.sleep(0.01)
    later = [asyncio.ensure_future(lookups.lookup({"id": i})) for i in ["b", "c"]]
    await asyncio.sleep(0.01)
    return first, later


async def test_lookups_that_arrive_while_a_statement_is_out_go_together_in_the_next() -> None:
    db = FakeDatabase()
    lookups = batcher(db)
    first, later = await a_out_and_b_c_waiting(db, lookups)
    assert db.statements == [["a"]]  # b and c wait for a's statement
    assert db.gate is not None
    db.gate.set()
    assert await first == ("row a",)
    assert [await f for f in later] == [("row b",), ("row c",)]
    assert db.statements == [["a"], ["b", "c"]]
    assert await lookups.lookup({"id": "c"}) == ("row c",)  # a quiet batcher sends at once again
    assert db.statements[-1] == ["c"]
    assert db.sql == ["ONE", "MANY", "ONE"]  # a lone lookup runs the plain statement, a group the batch one


async def test_a_lookup_the_database_refuses_fails_alone() -> None:
    db = FakeDatabase()
    lookups = batcher(db)
    results = await asyncio.gather(*(lookups.lookup({"id": i}) for i in ["a", "bad", "b"]), return_exceptions=True)
    assert results[0] == ("row a",) and results[2] == ("row b",)
    assert isinstance(results[1], ValueError)
    assert db.statements == [["a", "bad", "b"], ["a"], ["bad"], ["b"]]


async def test_an_unavailable_database_fails_the_whole_group_at_once() -> None:
    db = FakeDatabase()
    db.down = True
    lookups = batcher(db)
    results = await asyncio.gather(*(lookups.lookup({"id": i}) for i in ["a", "b"]), return_exceptions=True)
    assert all(isinstance(r, DatabaseUnavailable) for r in results)
    assert db.statements == [["a", "b"]]  # not retried one by one: they would all wait for the same outage


async def test_a_canceled_lookup_leaves_the_others_theirs() -> None:
    db = FakeDatabase()
    lookups = batcher(db)
    going, waiting = await a_out_and_b_c_waiting(db, lookups)
    going.cancel()  # its client went away while its statement was out
    waiting[0].cancel()  # and this one's before its statement was sent
    assert db.gate is not None
    db.gate.set()
    assert await waiting[1] == ("row c",)
    assert db.statements == [["a"], ["c"]]  # a canceled lookup that had not been sent is not sent
    with pytest.raises(asyncio.CancelledError):
        await going


def test_the_batch_form_never_casts_to_a_length() -> None:
    """A cast to VARCHAR(40) would cut a longer id down to a real one's."""
    query = PreparedQuery(select(jobs.c.id).where(jobs.c.id == bindparam("job_id")))
    assert query.postgres_batch is not None
    sql, names = query.postgres_batch
    assert names == ["job_id"]
    assert "CAST(%(job_id)s AS TEXT[])" in sql and "VARCHAR(40)" not in sql
