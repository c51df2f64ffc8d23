"""What is kept only for a while: the job event log (live streams and their Last-Event-ID replay) and finished
webhook deliveries (the webhooks' delivery history). Jobs, charges and the ledger are kept for good.

Every API node prunes, once at start and then hourly (`HistoryPruner`); the deletes are idempotent, so nodes
that prune at once only share the work. Each pass deletes in batches, one short transaction each, so writers never
wait long behind it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from sqlalchemy import Connection, delete, select

from vidgate.db import Database, job_events, webhook_deliveries
from vidgate.webhooks.outbox import PENDING

log = logging.getLogger("vidgate.retention")

PRUNE_EVERY_SECONDS = 3600.0
BATCH = 5000


def prune_history(conn: Connection, before: float, limit: int = BATCH) -> int:
    """Delete up to `limit` job events and up to `limit` finished webhook deliveries created before `before`;
    how many rows went. The oldest go first (the lowest event ids, which lead the primary key's order)."""
    old_events = (select(job_events.c.id).where(job_events.c.created_at < before)
                  .order_by(job_events.c.id).limit(limit).scalar_subquery())
    removed = conn.execute(delete(job_events).where(job_events.c.id.in_(old_events))).rowcount
    old_deliveries = (select(webhook_deliveries.c.id)
                      .where(webhook_deliveries.c.status != PENDING, webhook_deliveries.c.created_at < before)
                      .limit(limit).scalar_subquery())
    removed += conn.execute(delete(webhook_deliveries).where(webhook_deliveries.c.id.in_(old_deliveries))).rowcount
    return int(removed)


class HistoryPruner:
    def __init__(self, db: Database, retention_days: float) -> None:
        self.db = db
        self.retention_seconds = retention_days * 86400.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.retention_seconds > 0:
            self._task = asyncio.create_task(self._run(), name="vidgate-retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def prune(self) -> int:
        """One pass: batches until a batch finds less than a full batch; how many rows went."""
        before = time.time() - self.retention_seconds
        total = 0
        while True:
            removed = await self.db.write(lambda conn: prune_history(conn, before))
            total += removed
            if removed < BATCH:
                return total

    async def _run(self) -> None:
        while True:
            try:
                if removed := await self.prune():
                    log.info("retention: removed %d job events and finished webhook deliveries", removed)
            except Exception:  # the database is away, say: try again at the next pass
                log.warning("retention: could not prune the history", exc_info=True)
            await asyncio.sleep(PRUNE_EVERY_SECONDS)
