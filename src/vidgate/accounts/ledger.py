"""Accounts and their append-only ledger. Money moves only inside the caller's transaction.

`accounts.balance_micros` is kept equal to the sum of the account's ledger entries: every function that
appends an entry updates it in the same transaction, and nothing else touches either.
"""

from __future__ import annotations

import secrets
import time
from decimal import Decimal

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from vidgate.db import accounts, ledger
from vidgate.errors import insufficient_balance

MICROS = Decimal(1_000_000)


def usd_to_micros(usd: float | Decimal | str) -> int:
    return int((Decimal(str(usd)) * MICROS).to_integral_value())


def micros_to_usd(micros: int) -> float:
    return float(Decimal(micros) / MICROS)


async def create_account(conn: AsyncConnection, label: str = "", wallet_address: str | None = None) -> str:
    account_id = "acct_" + secrets.token_hex(8)
    await conn.execute(
        insert(accounts).values(
            id=account_id, label=label, wallet_address=wallet_address, balance_micros=0, created_at=time.time()
        )
    )
    return account_id


async def append_entry(
    conn: AsyncConnection, account_id: str, amount_micros: int, kind: str, *, job_id: str | None = None,
    note: str = "",
) -> None:
    """Append one ledger entry and move the cached balance by the same amount."""
    await conn.execute(
        insert(ledger).values(
            account_id=account_id, amount_micros=amount_micros, kind=kind, job_id=job_id, note=note,
            created_at=time.time(),
        )
    )
    await conn.execute(
        update(accounts).where(accounts.c.id == account_id).values(
            balance_micros=accounts.c.balance_micros + amount_micros
        )
    )


async def credit(conn: AsyncConnection, account_id: str, amount_micros: int, note: str = "") -> None:
    await append_entry(conn, account_id, amount_micros, "CREDIT", note=note)


async def charge_for_job(conn: AsyncConnection, account_id: str, job_id: str, amount_micros: int) -> None:
    """Take the job's price, or raise 402 INSUFFICIENT_BALANCE (and the caller's transaction rolls back).

    The balance check and the debit are one conditional UPDATE, so concurrent charges can never overdraw.
    """
    result = await conn.execute(
        update(accounts)
        .where(accounts.c.id == account_id, accounts.c.balance_micros >= amount_micros)
        .values(balance_micros=accounts.c.balance_micros - amount_micros)
    )
    if result.rowcount != 1:
        raise insufficient_balance()
    await conn.execute(
        insert(ledger).values(
            account_id=account_id, amount_micros=-amount_micros, kind="CHARGE", job_id=job_id,
            note="video job", created_at=time.time(),
        )
    )


async def refund_job(conn: AsyncConnection, account_id: str, job_id: str, amount_micros: int, note: str) -> None:
    await append_entry(conn, account_id, amount_micros, "REFUND", job_id=job_id, note=note)


async def balance_micros(conn: AsyncConnection, account_id: str) -> int | None:
    return (
        await conn.execute(select(accounts.c.balance_micros).where(accounts.c.id == account_id))
    ).scalar_one_or_none()


async def ledger_sum_micros(conn: AsyncConnection, account_id: str) -> int:
    return int(
        (
            await conn.execute(
                select(func.coalesce(func.sum(ledger.c.amount_micros), 0)).where(ledger.c.account_id == account_id)
            )
        ).scalar_one()
    )


async def find_account(conn: AsyncConnection, ref: str) -> str | None:
    """An account by id or by wallet address (any letter case)."""
    row = (
        await conn.execute(
            select(accounts.c.id).where(
                (accounts.c.id == ref) | (accounts.c.wallet_address == ref.lower())
            )
        )
    ).first()
    return row.id if row else None


async def count_accounts(conn: AsyncConnection) -> int:
    return int((await conn.execute(select(func.count()).select_from(accounts))).scalar_one())
