"""The database: one SQLAlchemy Core schema (SQLite embedded, PostgreSQL for scale-out) and its engines.

SQLite specifics live here and nowhere else: WAL, a busy timeout so the API and worker processes can share
the file, and `BEGIN IMMEDIATE` for write transactions so two writers never deadlock upgrading a read lock.
Reads use a separate autocommit engine, which WAL lets run beside a writer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

metadata = MetaData()

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("label", String(200), nullable=False, default=""),
    # Lower-cased wallet address for accounts created by Sign-In-With-X.
    Column("wallet_address", String(100), unique=True, nullable=True),
    # The sum of this account's ledger entries, kept in the same transaction as every entry.
    Column("balance_micros", BigInteger, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False, index=True),
    # HMAC-SHA256(secret_key, key secret), hex. The secret itself is never stored.
    Column("secret_hash", String(64), nullable=False),
    Column("label", String(200), nullable=False, default=""),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
)

ledger = Table(
    "ledger",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False, index=True),
    Column("amount_micros", BigInteger, nullable=False),
    Column("kind", String(20), nullable=False),  # CREDIT | CHARGE | REFUND | TOP_UP
    Column("job_id", String(40), nullable=True),
    Column("note", Text, nullable=False, default=""),
    Column("created_at", Float, nullable=False),
    # A job is charged at most once and refunded at most once.
    UniqueConstraint("job_id", "kind", name="uq_ledger_job_kind"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("model", String(120), nullable=False),
    Column("status", String(20), nullable=False),
    Column("request_json", Text, nullable=False),
    Column("engine", String(40), nullable=False),
    Column("price_micros", BigInteger, nullable=False),
    Column("private", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    Column("execution_ms", Integer, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("lease_owner", String(100), nullable=True),
    Column("lease_token", String(40), nullable=True),
    Column("lease_expires_at", Float, nullable=True),
    Column("progress", Float, nullable=False, default=0.0),
    Column("error", Text, nullable=True),
    Column("media_key", String(200), nullable=True),
    Column("media_deleted", Boolean, nullable=False, default=False),
    Column("download_revoked", Boolean, nullable=False, default=False),
    Index("ix_jobs_claim", "status", "created_at"),
    Index("ix_jobs_model_finished", "model", "status", "finished_at"),
    Index("ix_jobs_account", "account_id"),
)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin (see _sqlite_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """Two engines over one database: `write()` for transactions, `read()` for autocommit reads."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.write_engine: AsyncEngine = create_async_engine(url, pool_size=4, max_overflow=4)
            self.read_engine: AsyncEngine = create_async_engine(url, pool_size=8, max_overflow=8)
            for engine in (self.write_engine, self.read_engine):
                event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(self.write_engine.sync_engine, "begin", _sqlite_begin)
        else:
            self.write_engine = create_async_engine(url, pool_size=10, max_overflow=10)
            self.read_engine = self.write_engine
        # SQLite has one writer at a time; queueing writers here instead of in SQLite's busy handler
        # (which sleeps and retries) keeps write latency low under many concurrent requests.
        self._write_lock = asyncio.Lock() if self.is_sqlite else None

    async def create_schema(self) -> None:
        async with self.write_engine.begin() as conn:
            await conn.run_sync(metadata.create_all)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: committed when the block ends, rolled back if it raises."""
        if self._write_lock is None:
            async with self.write_engine.begin() as conn:
                yield conn
            return
        async with self._write_lock, self.write_engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.read_engine.connect() as conn:
            yield conn

    async def dispose(self) -> None:
        await self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            await self.read_engine.dispose()
