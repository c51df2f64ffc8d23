"""History retention, on SQLite and PostgreSQL: job events and finished webhook deliveries older than the
retention go; newer ones, deliveries still pending, jobs and the ledger stay."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import Connection, func, insert, select

from tests.conftest import Api, t2v_body
from vidgate.db import job_events, jobs, ledger, webhook_deliveries
from vidgate.retention import HistoryPruner

pytestmark = pytest.mark.both_backends

DAY = 86400.0


def delivery(delivery_id: str, account_id: str, status: str, created_at: float) -> dict[str, object]:
    return {"id": delivery_id, "account_id": account_id, "job_id": None, "url": "https://example.invalid/hook",
            "event_type": "video.job.queued", "payload": "{}", "status": status, "attempts": 1,
            "next_attempt_at": created_at, "lease_token": None, "lease_expires_at": None,
            "last_status_code": None, "last_error": None, "created_at": created_at, "delivered_at": None}


async def test_old_history_goes_and_the_rest_stays(api: Api) -> None:
    key = await api.new_key()
    account_id = await api.account_of(key)
    queued = await api.post("/video/queue", t2v_body(), key)  # a job, its charge and its (new) event
    assert queued.status_code == 200
    now = time.time()

    def add_history(conn: Connection) -> None:
        for n, age_days in enumerate((45, 31, 29)):
            conn.execute(insert(job_events).values(job_id=f"old-job-{n}", account_id=account_id, kind="completed",
                                                   created_at=now - age_days * DAY))
        conn.execute(insert(webhook_deliveries), [
            delivery("msg_old_delivered", account_id, "DELIVERED", now - 40 * DAY),
            delivery("msg_old_failed", account_id, "FAILED", now - 40 * DAY),
            delivery("msg_old_pending", account_id, "PENDING", now - 40 * DAY),  # still to be sent: kept
            delivery("msg_new_delivered", account_id, "DELIVERED", now - 1 * DAY),
        ])

    await api.ctx.db.write(add_history)
    assert await HistoryPruner(api.ctx.db, retention_days=30).prune() == 4

    def left(conn: Connection) -> tuple[set[str], set[str], int, int]:
        events = {row.job_id for row in conn.execute(select(job_events.c.job_id))}
        deliveries = {row.id for row in conn.execute(select(webhook_deliveries.c.id))}
        return (events, deliveries, conn.execute(select(func.count()).select_from(jobs)).scalar_one(),
                conn.execute(select(func.count()).select_from(ledger)).scalar_one())

    events, deliveries, job_count, ledger_count = await api.ctx.db.read(left)
    assert events == {"old-job-2", queued.json()["queue_id"]}
    assert deliveries == {"msg_old_pending", "msg_new_delivered"}
    assert job_count == 1 and ledger_count == 2  # the test's credit and the job's charge
    assert await HistoryPruner(api.ctx.db, retention_days=30).prune() == 0


async def test_a_retention_of_zero_keeps_everything(api: Api) -> None:
    pruner = HistoryPruner(api.ctx.db, retention_days=0)
    pruner.start()
    await pruner.stop()
    assert pruner._task is None
