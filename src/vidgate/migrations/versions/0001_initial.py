"""The initial schema: the tables `metadata.create_all` made before vidgate used migrations.

Written out operation by operation (not read from `vidgate.db.metadata`), so this revision stays what it is
when the metadata changes: a later change is a later revision.

Revision ID: 0001
Revises:
Create Date: 2026-10-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("wallet_address", sa.String(100), nullable=True),
        sa.Column("balance_micros", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("wallet_address"),
    )
    op.create_table(
        "siwx_challenges",
        sa.Column("nonce", sa.String(200), nullable=False),
        sa.Column("issued_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("nonce"),
    )
    op.create_index("ix_siwx_challenges_expires_at", "siwx_challenges", ["expires_at"])
    op.create_table(
        "siwx_nonces",
        sa.Column("wallet", sa.String(100), nullable=False),
        sa.Column("nonce", sa.String(200), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("wallet", "nonce"),
    )
    op.create_index("ix_siwx_nonces_expires_at", "siwx_nonces", ["expires_at"])
    op.create_table(
        "x402_payments",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("wallet", sa.String(100), nullable=False),
        sa.Column("network", sa.String(100), nullable=False),
        sa.Column("asset", sa.String(100), nullable=False),
        sa.Column("authorization_nonce", sa.String(100), nullable=False),
        sa.Column("amount_micros", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("transaction", sa.String(200), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("network", "asset", "authorization_nonce", name="uq_x402_payment_nonce"),
    )
    op.create_index("ix_x402_payments_wallet", "x402_payments", ["wallet"])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("revoked_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
    )
    op.create_index("ix_api_keys_account_id", "api_keys", ["account_id"])
    op.create_table(
        "consents",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("provider", sa.String(40), nullable=False),
        sa.Column("media_sha256", sa.String(64), nullable=False),
        sa.Column("roles", sa.Text(), nullable=False),
        sa.Column("policy_version", sa.String(40), nullable=False),
        sa.Column("request_id", sa.String(100), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("revoked_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
    )
    op.create_index("ix_consents_account_media", "consents", ["account_id", "provider", "media_sha256"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("model", sa.String(120), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("request_json", sa.Text(), nullable=False),
        sa.Column("engine", sa.String(40), nullable=False),
        sa.Column("price_micros", sa.BigInteger(), nullable=False),
        sa.Column("private", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("execution_ms", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(100), nullable=True),
        sa.Column("lease_token", sa.String(40), nullable=True),
        sa.Column("lease_expires_at", sa.Float(), nullable=True),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("media_key", sa.String(200), nullable=True),
        sa.Column("media_deleted", sa.Boolean(), nullable=False),
        sa.Column("download_revoked", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
    )
    op.create_index("ix_jobs_claim", "jobs", ["status", "created_at"])
    op.create_index("ix_jobs_model_finished", "jobs", ["model", "status", "finished_at"])
    op.create_index("ix_jobs_account", "jobs", ["account_id"])
    op.create_table(
        "ledger",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=True),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("amount_micros", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("job_id", sa.String(40), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "kind", name="uq_ledger_job_kind"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
    )
    op.create_index("ix_ledger_account_id", "ledger", ["account_id"])


def downgrade() -> None:
    for index, table in [("ix_ledger_account_id", "ledger"), ("ix_jobs_account", "jobs"),
                         ("ix_jobs_model_finished", "jobs"), ("ix_jobs_claim", "jobs"),
                         ("ix_consents_account_media", "consents"), ("ix_api_keys_account_id", "api_keys"),
                         ("ix_x402_payments_wallet", "x402_payments"), ("ix_siwx_nonces_expires_at", "siwx_nonces"),
                         ("ix_siwx_challenges_expires_at", "siwx_challenges")]:
        op.drop_index(index, table_name=table)
    for table in ["ledger", "jobs", "consents", "api_keys", "x402_payments", "siwx_nonces", "siwx_challenges",
                  "accounts"]:
        op.drop_table(table)
