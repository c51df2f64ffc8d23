"""Accounts and their append-only ledger. Money moves only inside the caller's transaction.

`accounts.balance_micros` is kept equal to the sum of the account's ledger entries: every function that
appends an entry updates it in the same transaction, and nothing else touches either.
"""

from __future__ import annotations

import secrets
import time
from decimal import Decimal

from sqlalchemy import CTE, ColumnElement, Connection, bindparam, func, insert, literal_column, select, update

from vidgate.db import PreparedQuery, accounts, ledger
from vidgate.errors import insufficient_balance

MICROS = Decimal(1_000_000)
CHARGE = "CHARGE"  # the ledger kind of a job's price
JOB_CHARGE_NOTE = "video job"

# Prepared once: these run in every queue transaction.
_DEBIT_IF_COVERED = PreparedQuery(
    update(accounts)
    .where(accounts.c.id == bindparam("account_id"), accounts.c.balance_micros >= bindparam("amount"))
    .values(balance_micros=accounts.c.balance_micros - bindparam("amount"))
)
_MOVE_BALANCE = (
    update(accounts)
    .where(accounts.c.id == bindparam("account_id"))
    .values(balance_micros=accounts.c.balance_micros + bindparam("amount"))
)
_APPEND = PreparedQuery(insert(ledger).values({c.name: bindparam(c.name) for c in ledger.columns if c.name != "id"}))


def usd_to_micros(usd: float | Decimal | str) -> int:
    return int((Decimal(str(usd)) * MICROS).to_integral_value())


def format_usd(micros: int) -> str:
    """"12.340000": exact, since the ledger counts whole micro-dollars."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), 1_000_000)
    return f"{sign}{whole}.{frac:06d}"


def create_account(conn: Connection, label: str = "", wallet_address: str | None = None) -> str:
    account_id = "acct_" + secrets.token_hex(8)
    conn.execute(
        insert(accounts).values(
            id=account_id, label=label, wallet_address=wallet_address, balance_micros=0, created_at=time.time()
        )
    )
    return account_id


def _entry(conn: Connection, account_id: str, amount_micros: int, kind: str, job_id: str | None, note: str) -> None:
    _APPEND.execute(conn, {"account_id": account_id, "amount_micros": amount_micros, "kind": kind,
                           "job_id": job_id, "note": note, "created_at": time.time()})


def append_entry(
    conn: Connection, account_id: str, amount_micros: int, kind: str, *, job_id: str | None = None, note: str = ""
) -> None:
    """Append one ledger entry and move the cached balance by the same amount."""
    _entry(conn, account_id, amount_micros, kind, job_id, note)
    conn.execute(_MOVE_BALANCE, {"account_id": account_id, "amount": amount_micros})


def credit(conn: Connection, account_id: str, amount_micros: int, note: str = "") -> None:
    append_entry(conn, account_id, amount_micros, "CREDIT", note=note)


def charge_for_job(conn: Connection, account_id: str, job_id: str, amount_micros: int) -> None:
    """Take the job's price, or raise 402 INSUFFICIENT_BALANCE (and the caller's transaction rolls back).

    The balance check and the debit are one conditional UPDATE, so concurrent charges can never overdraw.
    """
    if _DEBIT_IF_COVERED.execute(conn, {"account_id": account_id, "amount": amount_micros}) != 1:
        raise insufficient_balance()
    _entry(conn, account_id, -amount_micros, CHARGE, job_id, JOB_CHARGE_NOTE)


def charge_ctes(*, unless: ColumnElement[bool]) -> tuple[CTE, CTE]:
    """`charge_for_job` as two CTEs of one PostgreSQL statement: `debit` (one row, the account's id, when the
    balance covered `:price_micros` and `unless` is false; none otherwise) and its ledger entry for `:job_id` at
    `:created_at`. For a statement that also stores what was paid for (jobs/store.py); it must write nothing
    when `debit` is empty."""
    debit = (
        update(accounts)
        .where(accounts.c.id == bindparam("account_id"), accounts.c.balance_micros >= bindparam("price_micros"),
               ~unless)
        .values(balance_micros=accounts.c.balance_micros - bindparam("price_micros"))
        .returning(accounts.c.id)
        .cte("debit")
    )
    entry = insert(ledger).from_select(
        ["account_id", "amount_micros", "kind", "job_id", "note", "created_at"],
        # Constants as SQL text: a PreparedQuery passes only the caller's parameters.
        select(debit.c.id, -bindparam("price_micros", type_=ledger.c.amount_micros.type),
               literal_column(f"'{CHARGE}'"), bindparam("job_id", type_=ledger.c.job_id.type),
               literal_column(f"'{JOB_CHARGE_NOTE}'"), bindparam("created_at", type_=ledger.c.created_at.type)),
    ).cte("entry")
    return debit, entry


def refund_job(conn: Connection, account_id: str, job_id: str, amount_micros: int, note: str) -> None:
    append_entry(conn, account_id, amount_micros, "REFUND", job_id=job_id, note=note)


def balance_micros(conn: Connection, account_id: str) -> int | None:
    return conn.execute(select(accounts.c.balance_micros).where(accounts.c.id == account_id)).scalar_one_or_none()


def ledger_sum_micros(conn: Connection, account_id: str) -> int:
    total = select(func.coalesce(func.sum(ledger.c.amount_micros), 0)).where(ledger.c.account_id == account_id)
    return int(conn.execute(total).scalar_one())


def find_account(conn: Connection, ref: str) -> str | None:
    """An account by id or by wallet address (any letter case)."""
    row = conn.execute(
        select(accounts.c.id).where((accounts.c.id == ref) | (accounts.c.wallet_address == ref.lower()))
    ).first()
    return row.id if row else None


def count_accounts(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(accounts)).scalar_one())
