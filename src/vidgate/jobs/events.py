"""Reading the job event log (`job_events`, written by jobs/store.py in the transaction of each change)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select, func, select
from sqlalchemy.engine import Row

from vidgate.db import job_events

FINAL_KINDS = frozenset({"completed", "failed", "canceled"})


@dataclass(frozen=True)
class JobEvent:
    id: int
    job_id: str
    account_id: str
    kind: str  # queued | running | progress | completed | failed | canceled
    created_at: float

    @property
    def is_final(self) -> bool:
        return self.kind in FINAL_KINDS


def _of(query: Select[Any], job_id: str | None, account_id: str | None) -> Select[Any]:
    """All events, or one job's, or one account's."""
    if job_id is not None:
        query = query.where(job_events.c.job_id == job_id)
    if account_id is not None:
        query = query.where(job_events.c.account_id == account_id)
    return query


def _event(row: Row[Any]) -> JobEvent:
    return JobEvent(row.id, row.job_id, row.account_id, row.kind, row.created_at)


def events_after(conn: Connection, after_id: int, *, job_id: str | None = None, account_id: str | None = None,
                 limit: int = 1000, through_id: int | None = None) -> list[JobEvent]:
    """Events newer than `after_id` (and not newer than `through_id`), oldest first: all of them, or one job's,
    or one account's."""
    query = _of(select(job_events).where(job_events.c.id > after_id), job_id, account_id)
    if through_id is not None:
        query = query.where(job_events.c.id <= through_id)
    return [_event(row) for row in conn.execute(query.order_by(job_events.c.id).limit(limit))]


def events_with_ids(conn: Connection, ids: list[int]) -> list[JobEvent]:
    return [_event(row) for row in conn.execute(select(job_events).where(job_events.c.id.in_(ids)))]


def event_ids_between(conn: Connection, after_id: int, through_id: int) -> list[int]:
    return list(conn.execute(select(job_events.c.id).where(job_events.c.id > after_id,
                                                           job_events.c.id <= through_id)).scalars())


def latest_event(conn: Connection, *, job_id: str | None = None, account_id: str | None = None) -> JobEvent | None:
    query = _of(select(job_events), job_id, account_id)
    row = conn.execute(query.order_by(job_events.c.id.desc()).limit(1)).first()
    return _event(row) if row else None


def newest_event_id(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(job_events.c.id), 0))).scalar_one())


@dataclass(frozen=True)
class Horizon:
    """PostgreSQL's running transactions at one moment (`pg_current_snapshot()`): every transaction id below
    `oldest_running` had ended; every one from `next_id` on had not started."""

    oldest_running: int
    next_id: int


def transaction_horizon(conn: Connection) -> Horizon | None:
    """Now's horizon on PostgreSQL; None on SQLite, whose writers commit one at a time, in id order."""
    if conn.dialect.name != "postgresql":
        return None
    row = conn.exec_driver_sql(
        "SELECT pg_snapshot_xmin(s)::text::bigint, pg_snapshot_xmax(s)::text::bigint "
        "FROM pg_current_snapshot() AS s").one()
    return Horizon(int(row[0]), int(row[1]))
