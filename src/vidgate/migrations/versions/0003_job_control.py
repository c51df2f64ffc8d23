"""Job control, live status and webhooks: per-job columns (resolution for estimates, cancel request,
idempotency key and body hash, webhook URL), the job event log, and the webhook endpoint/delivery/attempt tables.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMNs (SQLite does those in place): existing jobs get NULLs and cancel_requested false.
    op.add_column("jobs", sa.Column("resolution", sa.String(20), nullable=True))
    op.add_column("jobs", sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("jobs", sa.Column("idempotency_key", sa.String(255), nullable=True))
    op.add_column("jobs", sa.Column("request_sha256", sa.String(64), nullable=True))
    op.add_column("jobs", sa.Column("webhook_url", sa.Text(), nullable=True))
    op.create_index("ix_jobs_account_created", "jobs", ["account_id", "created_at"])
    op.create_index("uq_jobs_account_idempotency", "jobs", ["account_id", "idempotency_key"], unique=True)
    op.create_table(
        "job_events",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=True),
        sa.Column("job_id", sa.String(40), nullable=False),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_job_events_job", "job_events", ["job_id", "id"])
    op.create_index("ix_job_events_account", "job_events", ["account_id", "id"])
    op.create_table(
        "webhook_endpoints",
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("secret", sa.String(100), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.PrimaryKeyConstraint("account_id"),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("job_id", sa.String(40), nullable=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("event_type", sa.String(40), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.Float(), nullable=False),
        sa.Column("lease_token", sa.String(40), nullable=True),
        sa.Column("lease_expires_at", sa.Float(), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("delivered_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries", ["status", "next_attempt_at"])
    op.create_index("ix_webhook_deliveries_account", "webhook_deliveries", ["account_id", "created_at"])
    op.create_table(
        "webhook_attempts",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=True),
        sa.Column("delivery_id", sa.String(40), nullable=False),
        sa.Column("attempted_at", sa.Float(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_webhook_attempts_delivery_id", "webhook_attempts", ["delivery_id"])


def downgrade() -> None:
    op.drop_table("webhook_attempts")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_endpoints")
    op.drop_table("job_events")
    op.drop_index("uq_jobs_account_idempotency", table_name="jobs")
    op.drop_index("ix_jobs_account_created", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        for column in ("webhook_url", "request_sha256", "idempotency_key", "cancel_requested", "resolution"):
            batch.drop_column(column)
