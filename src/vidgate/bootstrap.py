"""First start of an empty data dir: one account with a starting balance and an API key, printed once."""

from __future__ import annotations

from vidgate.accounts.keys import create_api_key
from vidgate.accounts.ledger import count_accounts, create_account, credit, usd_to_micros
from vidgate.db import Database
from vidgate.settings import Settings


async def ensure_first_account(db: Database, settings: Settings) -> str | None:
    """Create the first account if there is none; returns its API key, or None if accounts exist."""
    async with db.write() as conn:
        if await count_accounts(conn) > 0:
            return None
        account_id = await create_account(conn, label="default")
        if settings.bootstrap_balance_usd:
            await credit(conn, account_id, usd_to_micros(settings.bootstrap_balance_usd), note="first start")
        _, key = await create_api_key(conn, account_id, settings.resolved_secret_key, label="default")
    return key
