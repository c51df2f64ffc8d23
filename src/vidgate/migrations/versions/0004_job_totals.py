"""Running totals of ended jobs (jobs/totals.py), counted here once for the jobs that ended before: /metrics
reads them instead of grouping the whole jobs table on every scrape.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# jobs/totals.py's RENDER_BUCKETS and CANCELED_WHILE_QUEUED as of this revision (a migration does not change when
# the code does).
RENDER_BUCKETS = (1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
CANCELED_WHILE_QUEUED = "canceled by the client"


def upgrade() -> None:
    totals = op.create_table(
        "job_totals",
        sa.Column("engine", sa.String(40), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("jobs", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.BigInteger(), nullable=False),
        sa.Column("canceled_queued", sa.BigInteger(), nullable=False),
        sa.Column("render_seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("engine", "status", "bucket"),
    )
    assert totals is not None
    jobs = sa.table("jobs", *(sa.column(name) for name in (
        "engine", "status", "attempts", "started_at", "finished_at", "error")))
    seconds = jobs.c.finished_at - jobs.c.started_at
    timed = sa.and_(jobs.c.status == "COMPLETED", jobs.c.started_at.is_not(None), jobs.c.finished_at.is_not(None))
    bucket = sa.case((~timed, -1), *((seconds <= bound, i) for i, bound in enumerate(RENDER_BUCKETS)),
                     else_=len(RENDER_BUCKETS)).label("bucket")
    ended = sa.select(
        jobs.c.engine, jobs.c.status, bucket, sa.func.count(),
        sa.func.coalesce(sa.func.sum(jobs.c.attempts), 0),
        sa.func.sum(sa.case((jobs.c.error == CANCELED_WHILE_QUEUED, 1), else_=0)),
        sa.func.coalesce(sa.func.sum(sa.case((timed, seconds), else_=0.0)), 0.0),
    ).where(jobs.c.status.in_(["COMPLETED", "FAILED", "CANCELED"])).group_by(jobs.c.engine, jobs.c.status, bucket)
    op.execute(totals.insert().from_select(
        ["engine", "status", "bucket", "jobs", "attempts", "canceled_queued", "render_seconds"], ended))


def downgrade() -> None:
    op.drop_table("job_totals")
