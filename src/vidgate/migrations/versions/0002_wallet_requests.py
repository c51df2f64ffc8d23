"""Requests in flight per wallet, in the database, so that the x402 concurrency limit holds across API nodes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "wallet_requests",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("wallet", sa.String(100), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_wallet_requests_wallet", "wallet_requests", ["wallet"])


def downgrade() -> None:
    op.drop_index("ix_wallet_requests_wallet", table_name="wallet_requests")
    op.drop_table("wallet_requests")
