"""First start of an empty data dir: one account with a starting balance and an API key, printed once."""

from __future__ import annotations

from sqlalchemy import Connection

from vidgate.accounts.keys import create_api_key
from vidgate.accounts.ledger import count_accounts, create_account, credit, usd_to_micros
from vidgate.db import Database
from vidgate.settings import Settings

BOOTSTRAP_LOCK = 0x76676231  # any constant: a PostgreSQL advisory lock held for the bootstrap transaction


def ensure_first_account(db: Database, settings: Settings) -> str | None:
    """Create the first account if there is none; returns its API key, or None if accounts exist."""
    pepper = settings.resolved_secret_key

    def bootstrap(conn: Connection) -> str | None:
        if conn.dialect.name == "postgresql":
            # API nodes starting together: the first one creates the account, the others then count it.
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({BOOTSTRAP_LOCK})")
        if count_accounts(conn) > 0:
            return None
        account_id = create_account(conn, label="default")
        if settings.bootstrap_balance_usd:
            credit(conn, account_id, usd_to_micros(settings.bootstrap_balance_usd), note="first start")
        return create_api_key(conn, account_id, pepper, label="default")[1]

    return db.write_now(bootstrap)
