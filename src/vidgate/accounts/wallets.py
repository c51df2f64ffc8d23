"""Wallet sign-in state in the database: used nonces, issued challenge nonces, requests in flight, wallet
accounts, the wallet's ledger as x402 transactions. Plain synchronous Core functions taking a `Connection` (see db.py).

Nonces live in the database, not in process memory, so "first use wins" holds across every API process that
shares it: the primary key (wallet, nonce) makes the insert the atomic test-and-set.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Connection, cast, delete, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from vidgate.accounts.ledger import create_account
from vidgate.db import accounts, jobs, ledger, siwx_challenges, siwx_nonces, wallet_requests

PRUNE_EVERY = 64  # delete expired nonce rows on one call in this many
_calls = itertools.count()

# How ledger kinds read in the x402 transaction history (SK-X402: TOP_UP | CHARGE | REFUND). A manual CREDIT
# (the CLI) is money in, which Venice lists as TOP_UP too ("or a manual credit by Venice support").
TRANSACTION_TYPES = {"TOP_UP": "TOP_UP", "CREDIT": "TOP_UP", "CHARGE": "CHARGE", "REFUND": "REFUND"}


@dataclass(frozen=True)
class WalletAccount:
    account_id: str
    balance_micros: int


def _upsert(conn: Connection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def _prune_now() -> bool:
    return next(_calls) % PRUNE_EVERY == 0


def consume_nonce(conn: Connection, wallet: str, nonce: str, now: float, ttl: float) -> bool:
    """Mark `nonce` used by `wallet` until now + ttl. False when it is already used (and not yet expired).

    An expired row left behind (pruning is occasional) is taken over, so the answer never depends on when the
    last prune ran.
    """
    if _prune_now():
        conn.execute(delete(siwx_nonces).where(siwx_nonces.c.expires_at < now))
    statement = _upsert(conn)(siwx_nonces).values(wallet=wallet, nonce=nonce, expires_at=now + ttl)
    statement = statement.on_conflict_do_update(
        index_elements=[siwx_nonces.c.wallet, siwx_nonces.c.nonce],
        set_={"expires_at": statement.excluded.expires_at},
        where=siwx_nonces.c.expires_at < now,
    ).returning(siwx_nonces.c.nonce)  # an INSERT's rowcount is not reported by every driver (psycopg: -1)
    return conn.execute(statement).first() is not None


def enter_wallet_request(conn: Connection, wallet: str, limit: int, now: float, ttl: float) -> str | None:
    """Count a request in flight for `wallet` (until it leaves, or now + ttl should its node die); None when
    `limit` are in flight already. The count and the insert are serialised per wallet: by SQLite's one writer,
    and on PostgreSQL by a transaction-scoped advisory lock on the wallet."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(func.hashtext(wallet))))
    mine = wallet_requests.c.wallet == wallet
    conn.execute(delete(wallet_requests).where(mine, wallet_requests.c.expires_at < now))
    in_flight = conn.execute(select(func.count()).select_from(wallet_requests).where(mine)).scalar_one()
    if in_flight >= limit:
        return None
    request_id = uuid.uuid4().hex
    conn.execute(insert(wallet_requests).values(id=request_id, wallet=wallet, expires_at=now + ttl))
    return request_id


def leave_wallet_request(conn: Connection, request_id: str) -> None:
    conn.execute(delete(wallet_requests).where(wallet_requests.c.id == request_id))


def record_challenge(conn: Connection, nonce: str, now: float, ttl: float) -> None:
    """Remember a nonce this server put in a 402 challenge (`siwx_challenges`), until now + ttl."""
    if _prune_now():
        conn.execute(delete(siwx_challenges).where(siwx_challenges.c.expires_at < now))
    conn.execute(insert(siwx_challenges).values(nonce=nonce, issued_at=now, expires_at=now + ttl))


def find_wallet_account(conn: Connection, address: str) -> WalletAccount | None:
    """The account of a wallet (address already normalised: EVM lower-case, Solana as is), if it has one."""
    row = conn.execute(
        select(accounts.c.id, accounts.c.balance_micros).where(accounts.c.wallet_address == address)
    ).first()
    return WalletAccount(row.id, row.balance_micros) if row else None


def wallet_account(conn: Connection, address: str) -> WalletAccount:
    """The wallet's account, created with a zero balance on its first sign-in.

    Run inside a write transaction: on SQLite that is `BEGIN IMMEDIATE`, so look-up-then-insert is atomic even
    across processes.
    """
    found = find_wallet_account(conn, address)
    if found is not None:
        return found
    return WalletAccount(create_account(conn, label="x402 wallet", wallet_address=address), 0)


def sign_in(conn: Connection, address: str, nonce: str, now: float, ttl: float) -> WalletAccount | None:
    """Consume the nonce and return the wallet's account (creating it); None if the nonce was used already."""
    if not consume_nonce(conn, address, nonce, now, ttl):
        return None
    return wallet_account(conn, address)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def wallet_transactions(
    conn: Connection, account_id: str, limit: int, offset: int
) -> tuple[list[dict[str, Any]], bool]:
    """A page of the account's ledger, newest first, as x402 transactions; and whether more follow.

    `balanceAfter` is the running sum of the ledger up to each entry (the cached balance equals the full sum).
    """
    # A sum of BIGINTs is NUMERIC on PostgreSQL (a Decimal): cast back to an integer of micro-dollars.
    running = cast(func.sum(ledger.c.amount_micros).over(order_by=ledger.c.id), BigInteger).label("balance_after")
    entries = (
        select(ledger.c.id, ledger.c.amount_micros, ledger.c.kind, ledger.c.job_id, ledger.c.created_at, running)
        .where(ledger.c.account_id == account_id)
        .subquery()
    )
    rows = conn.execute(
        select(entries, jobs.c.model)
        .outerjoin(jobs, jobs.c.id == entries.c.job_id)
        .order_by(entries.c.id.desc())
        .limit(limit + 1)
        .offset(offset)
    ).all()
    page = [
        {
            "id": f"ledger_{row.id}",
            "amount": row.amount_micros / 1_000_000,
            "balanceAfter": row.balance_after / 1_000_000,
            "type": TRANSACTION_TYPES.get(row.kind, row.kind),
            "createdAt": _iso(row.created_at),
            "requestId": row.job_id,
            "modelId": row.model,
        }
        for row in rows[:limit]
    ]
    return page, len(rows) > limit
