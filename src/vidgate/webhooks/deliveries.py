"""The delivery table and its log: claim what is due with a lease, record each attempt, list, redeliver.

Several API nodes send from the same table. A node claims due deliveries by writing its own lease token on them
(`FOR UPDATE SKIP LOCKED` on PostgreSQL, so two nodes never wait on or take the same rows; SQLite has one writer
at a time). Only the token's holder may record the outcome; a node that dies mid-send leaves a lease that runs
out, and the delivery is sent again: at least once, with the same `webhook-id`, which is how receivers drop a
duplicate.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, or_, select, update
from sqlalchemy.engine import Row

from vidgate.consent import iso_time
from vidgate.db import webhook_attempts, webhook_deliveries
from vidgate.pagination import newest_first
from vidgate.webhooks.endpoints import secrets_of
from vidgate.webhooks.outbox import DELIVERED, FAILED, PENDING, is_snapshot

D = webhook_deliveries


@dataclass(frozen=True)
class Claimed:
    """A delivery this node holds (until `lease_expires_at`) and may send."""

    id: str
    account_id: str
    job_id: str | None
    url: str
    event_type: str
    payload: str  # JSON: the event's snapshot before the first attempt, then the exact body sent
    attempts: int
    created_at: float
    token: str
    secret: str


def claim_due(conn: Connection, now: float, limit: int, lease_seconds: float) -> list[Claimed]:
    """Lease up to `limit` deliveries whose next attempt is due, oldest due first, with their signing secrets."""
    rows = conn.execute(
        select(D.c.id, D.c.account_id, D.c.job_id, D.c.url, D.c.event_type, D.c.payload, D.c.attempts,
               D.c.created_at)
        .where(D.c.status == PENDING, D.c.next_attempt_at <= now,
               or_(D.c.lease_expires_at.is_(None), D.c.lease_expires_at < now))
        .order_by(D.c.next_attempt_at, D.c.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if not rows:
        return []
    token = uuid.uuid4().hex
    conn.execute(update(D).where(D.c.id.in_([row.id for row in rows]))
                 .values(lease_token=token, lease_expires_at=now + lease_seconds))
    secrets = secrets_of(conn, {row.account_id for row in rows})
    return [Claimed(row.id, row.account_id, row.job_id, row.url, row.event_type, row.payload,
                    row.attempts, row.created_at, token, secrets[row.account_id]) for row in rows]


def next_wait(attempt: int, retry_seconds: list[float]) -> float | None:
    """After failed attempt number `attempt` (1: the first), the wait before the next; None: no attempt left."""
    return retry_seconds[attempt - 1] if attempt <= len(retry_seconds) else None


@dataclass(frozen=True)
class Outcome:
    """One attempt: what was sent (the body is kept for every retry) and what the receiver answered."""

    body: str
    attempted_at: float
    duration_ms: int
    status_code: int | None
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def record_attempt(conn: Connection, claimed: Claimed, outcome: Outcome, retry_seconds: list[float]) -> str | None:
    """Log the attempt and move the delivery on: DELIVERED, PENDING again after its backoff, or FAILED. The new
    status, or None when this node's lease was lost meanwhile (the attempt is logged all the same: it happened)."""
    conn.execute(insert(webhook_attempts).values(
        delivery_id=claimed.id, attempted_at=outcome.attempted_at, status_code=outcome.status_code,
        error=outcome.error, duration_ms=outcome.duration_ms))
    attempt = claimed.attempts + 1
    values: dict[str, Any] = {
        "attempts": attempt, "payload": outcome.body, "last_status_code": outcome.status_code,
        "last_error": outcome.error, "lease_token": None, "lease_expires_at": None,
    }
    if outcome.delivered:
        values |= {"status": DELIVERED, "delivered_at": outcome.attempted_at, "last_error": None}
    elif (wait := next_wait(attempt, retry_seconds)) is not None:
        values |= {"status": PENDING, "next_attempt_at": outcome.attempted_at + wait}
    else:
        values |= {"status": FAILED}
    held = conn.execute(update(D).where(D.c.id == claimed.id, D.c.lease_token == claimed.token)
                        .values(**values)).rowcount
    return str(values["status"]) if held == 1 else None


# --- the account's view: the log, and redelivery -----------------------------------------------------------


class DeliveryInFlight(Exception):
    """A redelivery asked for while an attempt is being made."""


def redeliver(conn: Connection, account_id: str, delivery_id: str, now: float) -> dict[str, Any] | None:
    """Make the delivery due now (None: no such delivery of this account). Delivered or failed ones are PENDING
    again. A failed redelivery is retried only while the delivery has attempts left in the schedule: redelivering
    a FAILED delivery makes one attempt."""
    row = conn.execute(select(D).where(D.c.id == delivery_id, D.c.account_id == account_id)).first()
    if row is None:
        return None
    if row.status == PENDING and row.lease_expires_at is not None and row.lease_expires_at > now:
        raise DeliveryInFlight(delivery_id)
    conn.execute(update(D).where(D.c.id == delivery_id)
                 .values(status=PENDING, next_attempt_at=now, lease_token=None, lease_expires_at=None))
    return delivery_views(conn, [conn.execute(select(D).where(D.c.id == delivery_id)).one()])[0]


def list_deliveries(conn: Connection, account_id: str, *, limit: int,
                    cursor: tuple[float, str] | None) -> tuple[list[dict[str, Any]], str | None]:
    """The account's deliveries, newest first, after `cursor`, each with its attempts; and the next cursor."""
    page, next_cursor = newest_first(conn, select(D).where(D.c.account_id == account_id), D, limit=limit,
                                     cursor=cursor)
    return delivery_views(conn, page), next_cursor


def delivery_views(conn: Connection, rows: list[Row[Any]]) -> list[dict[str, Any]]:
    attempts: dict[str, list[dict[str, Any]]] = {row.id: [] for row in rows}
    if rows:
        for a in conn.execute(select(webhook_attempts).where(webhook_attempts.c.delivery_id.in_(list(attempts)))
                              .order_by(webhook_attempts.c.id)):
            attempts[a.delivery_id].append({
                "attempted_at": iso_time(a.attempted_at), "status_code": a.status_code, "error": a.error,
                "duration_ms": a.duration_ms,
            })
    views = []
    for row in rows:
        payload = json.loads(row.payload)
        views.append({
            "id": row.id,
            "event_type": row.event_type,
            "job_id": row.job_id,
            "url": row.url,
            "status": row.status.lower(),
            "attempt_count": row.attempts,
            "next_attempt_at": iso_time(row.next_attempt_at) if row.status == PENDING else None,
            "last_status_code": row.last_status_code,
            "last_error": row.last_error,
            "created_at": iso_time(row.created_at),
            "delivered_at": iso_time(row.delivered_at) if row.delivered_at else None,
            "payload": None if is_snapshot(payload) else payload,  # the body as sent; none before a first attempt
            "attempts": attempts[row.id],
        })
    return views
