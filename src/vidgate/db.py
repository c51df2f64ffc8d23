"""The database: one SQLAlchemy Core schema, and how the async server runs statements against it, on SQLite
(embedded, the default) or PostgreSQL (many API nodes and workers; `PostgresDatabase` below).

Measured on the embedded default (SQLite, WAL), see bench/RESULTS.md: an async driver that hands every cursor
step to another thread cost ~1.2 ms per indexed lookup and capped queueing at ~250 jobs/s. So statements are
plain synchronous Core, prepared once at import time, and run like this:

- reads run inline on the caller's event loop through one autocommit connection: in WAL mode a point lookup
  never waits for a writer and takes microseconds;
- write transactions run whole on one dedicated writer thread (`BEGIN IMMEDIATE`, so two writers never
  deadlock upgrading a lock, and SQLite's busy-wait for another process blocks that thread, never the event
  loop); those that arrive together share one commit, each in its own savepoint (`_GroupCommitWriter`).

Several processes (the API, the render workers, the CLI) share the file; `busy_timeout` orders their writes.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    false,
    make_url,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql import psycopg as psycopg_dialect
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import Executable

from vidgate.batched_lookups import LookupBatcher, Row, batch_sql
from vidgate.errors import DatabaseUnavailable

T = TypeVar("T")
log = logging.getLogger("vidgate.db")

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
    # Since revision 0003 (job control, estimates, idempotency, webhooks):
    Column("resolution", String(20), nullable=True),  # the estimate of a job's run time is per model and this
    Column("cancel_requested", Boolean, nullable=False, default=False, server_default=false()),
    Column("idempotency_key", String(255), nullable=True),  # the client's Idempotency-Key header
    Column("request_sha256", String(64), nullable=True),  # of the body sent with that key
    Column("webhook_url", Text, nullable=True),
    Index("ix_jobs_claim", "status", "created_at"),
    Index("ix_jobs_model_finished", "model", "status", "finished_at"),
    Index("ix_jobs_account", "account_id"),
    Index("ix_jobs_account_created", "account_id", "created_at"),
    # Same key, same account: one job, whichever API node the retries reach.
    Index("uq_jobs_account_idempotency", "account_id", "idempotency_key", unique=True),
)

job_totals = Table(
    "job_totals",
    metadata,
    # Since revision 0004. Ended jobs counted as they end (jobs/totals.py, in the transaction that ends each),
    # so /metrics reads this small table and the unfinished jobs instead of every job ever run.
    Column("engine", String(40), primary_key=True),
    Column("status", String(20), primary_key=True),  # COMPLETED | FAILED | CANCELED
    Column("bucket", Integer, primary_key=True),  # render-time bucket of completed jobs; -1 for the others
    Column("jobs", BigInteger, nullable=False),
    Column("attempts", BigInteger, nullable=False),
    Column("canceled_queued", BigInteger, nullable=False),  # canceled while waiting in the queue
    Column("render_seconds", Float, nullable=False),  # sum over completed jobs, first start to completion
)

job_events = Table(
    "job_events",
    metadata,
    # What happened to a job, in order: the SSE streams (and their Last-Event-ID resume) and webhooks read these.
    # Written in the transaction that changes the job, so an event exists exactly when its change does.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(40), nullable=False),
    Column("account_id", String(40), nullable=False),
    Column("kind", String(20), nullable=False),  # queued | running | progress | completed | failed | canceled
    Column("created_at", Float, nullable=False),
    Index("ix_job_events_job", "job_id", "id"),
    Index("ix_job_events_account", "account_id", "id"),
)

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    # An account's webhook: where every job event of the account is sent, signed with `secret` (Standard
    # Webhooks, "whsec_..."); per-job `webhook_url`s are signed with the same account secret.
    Column("account_id", String(40), ForeignKey("accounts.id"), primary_key=True),
    Column("url", Text, nullable=True),
    Column("secret", String(100), nullable=False),
    Column("created_at", Float, nullable=False),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(40), primary_key=True),  # the Standard Webhooks message id ("msg_...")
    Column("account_id", String(40), nullable=False),
    Column("job_id", String(40), nullable=True),
    Column("url", Text, nullable=False),
    Column("event_type", String(40), nullable=False),
    Column("payload", Text, nullable=False),
    Column("status", String(20), nullable=False),  # PENDING | DELIVERED | FAILED
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False),
    Column("lease_token", String(40), nullable=True),
    Column("lease_expires_at", Float, nullable=True),
    Column("last_status_code", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("delivered_at", Float, nullable=True),
    Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    Index("ix_webhook_deliveries_account", "account_id", "created_at"),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    # The delivery log: one row per try.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("delivery_id", String(40), nullable=False, index=True),
    Column("attempted_at", Float, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("duration_ms", Integer, nullable=False),
)


siwx_nonces = Table(
    "siwx_nonces",
    metadata,
    # Sign-In-With-X nonces already used, per wallet. The primary key makes "first use wins" atomic across every
    # API process sharing the database; rows are kept until `expires_at` (at least 5.5 minutes).
    Column("wallet", String(100), primary_key=True),
    Column("nonce", String(200), primary_key=True),
    Column("expires_at", Float, nullable=False, index=True),
)

siwx_challenges = Table(
    "siwx_challenges",
    metadata,
    # Nonces this server issued in 402 challenges (so a challenge's nonce can be told from a client's own).
    Column("nonce", String(200), primary_key=True),
    Column("issued_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False, index=True),
)

x402_payments = Table(
    "x402_payments",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("wallet", String(100), nullable=False, index=True),
    Column("network", String(100), nullable=False),
    Column("asset", String(100), nullable=False),
    # EIP-3009 authorization nonce: one payment, credited at most once.
    Column("authorization_nonce", String(100), nullable=False),
    Column("amount_micros", BigInteger, nullable=False),
    Column("status", String(20), nullable=False),  # SETTLING | SETTLED | FAILED
    Column("transaction", String(200), nullable=True),
    Column("error", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("network", "asset", "authorization_nonce", name="uq_x402_payment_nonce"),
)

wallet_requests = Table(
    "wallet_requests",
    metadata,
    # Requests in flight per wallet, counted across every API node (SK-X402: at most 5 at once): a row per
    # request, deleted when its response ends. A node that dies mid-request leaves rows behind; they expire.
    Column("id", String(40), primary_key=True),
    Column("wallet", String(100), nullable=False, index=True),
    Column("expires_at", Float, nullable=False),
)

consents = Table(
    "consents",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("provider", String(40), nullable=False),  # "seedance"
    Column("media_sha256", String(64), nullable=False),
    Column("roles", Text, nullable=False),  # JSON list of face_media_roles
    Column("policy_version", String(40), nullable=False),
    Column("request_id", String(100), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
    Index("ix_consents_account_media", "account_id", "provider", "media_sha256"),
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


class PreparedQuery:
    """A Core statement compiled once to SQL text and run on the raw DB-API cursor of the caller's connection
    (inside its transaction, if it has one).

    For the statements of the two hot paths: the lookups of every polled request (API key, job) and the writes
    of every queued job (debit, ledger entry, job row). SQLAlchemy's per-execution machinery costs ~40 µs a
    statement, the SQL itself ~5 µs (bench/RESULTS.md). The statements are still written in Core, so they stay
    in step with the schema.
    """

    def __init__(self, statement: Executable, *, postgres_only: bool = False) -> None:
        if postgres_only:  # PostgreSQL's SQL only (writing CTEs, say): never run on SQLite
            self.sql, self.param_order = "", []
        else:
            compiled = statement.compile(dialect=sqlite.dialect())
            self.sql = str(compiled)
            self.param_order = list(compiled.positiontup or [])
        # psycopg takes named parameters (`%(name)s`), so the PostgreSQL text needs no ordering.
        postgres = statement.compile(dialect=psycopg_dialect.dialect())
        self.postgres_sql = str(postgres)
        self.columns = [c.key for c in statement.selected_columns] if isinstance(statement, Select) else []
        # A lookup's form for many at once (batched_lookups.py), for the PostgreSQL lookups made together.
        self.postgres_batch = batch_sql(postgres) if isinstance(postgres, SQLCompiler) and self.columns else None

    def _run(self, conn: Connection, params: dict[str, Any]) -> Any:
        driver = conn.connection.driver_connection
        if conn.dialect.name == "postgresql":
            try:
                return driver.execute(self.postgres_sql, params)  # type: ignore[union-attr]
            except psycopg.Error as exc:
                # As SQLAlchemy would have raised it (IntegrityError, OperationalError...), so that callers and
                # PostgresDatabase handle one family of errors, whichever way a statement was run.
                raise DBAPIError.instance(self.postgres_sql, params, exc, psycopg.Error,
                                          connection_invalidated=bool(driver.closed)) from exc  # type: ignore[union-attr]
        if not self.sql:
            raise TypeError(f"a PostgreSQL-only statement run on {conn.dialect.name}")
        return driver.execute(self.sql, [params[name] for name in self.param_order])  # type: ignore[union-attr]

    def first(self, conn: Connection, params: dict[str, Any]) -> dict[str, Any] | None:
        return self.row(self._run(conn, params).fetchone())

    def row(self, values: Any) -> dict[str, Any] | None:
        """A fetched row (a tuple in the statement's column order, or None) as a dict by column name."""
        return dict(zip(self.columns, values, strict=True)) if values is not None else None

    def execute(self, conn: Connection, params: dict[str, Any]) -> int:
        """Run an INSERT/UPDATE; returns the number of rows it touched."""
        return int(self._run(conn, params).rowcount)


class _GroupCommitWriter:
    """The one thread that writes. Transactions that arrive while it is busy are committed together.

    Under load (many clients queueing at once) most of a small SQLite transaction's cost is its BEGIN/COMMIT and
    the WAL pages it rewrites; when N waiting transactions share one commit, the index pages they all touch are
    written once. Each caller's function still runs in its own SAVEPOINT, so one that raises is rolled back alone
    and its caller gets the exception, while the others commit. Results are handed back only after the commit.
    """

    MAX_BATCH = 64

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._queue: queue.SimpleQueue[tuple[Callable[[Connection], Any], Future[Any]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="vidgate-db-writer", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[Connection], T]) -> Future[T]:
        future: Future[T] = Future()
        self._queue.put((fn, future))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _loop(self) -> None:
        conn: Connection | None = None
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                batch = [item] if item[1].set_running_or_notify_cancel() else []
                closing = False
                while len(batch) < self.MAX_BATCH:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        closing = True
                        break
                    # A caller that gave up (its task was cancelled) before we started: skip its work.
                    if nxt[1].set_running_or_notify_cancel():
                        batch.append(nxt)
                if batch:
                    try:
                        if conn is None or conn.closed:
                            conn = self._engine.connect()  # lazily: the database file may not exist yet
                        self._commit(conn, batch)
                    except BaseException as exc:  # never let the writer die: every later write would hang
                        log.exception("database writer: a batch failed unexpectedly")
                        for _, future in batch:
                            if not future.done():
                                future.set_exception(exc)
                if closing:
                    return
        finally:
            if conn is not None:
                conn.close()

    @staticmethod
    def _commit(conn: Connection, batch: list[tuple[Callable[[Connection], Any], Future[Any]]]) -> None:
        outcomes: list[tuple[Future[Any], Any, BaseException | None]] = []
        try:
            with conn.begin():
                if len(batch) == 1:
                    fn, future = batch[0]
                    outcomes.append((future, fn(conn), None))
                else:
                    for fn, future in batch:
                        savepoint = conn.begin_nested()
                        try:
                            result = fn(conn)
                        except Exception as exc:
                            savepoint.rollback()
                            outcomes.append((future, None, exc))
                        else:
                            savepoint.commit()
                            outcomes.append((future, result, None))
        except Exception as exc:  # the transaction itself failed (or a lone function raised): all of it is gone
            for _, future in batch:
                future.set_exception(exc)
            return
        for future, result, error in outcomes:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)


def _unavailable(exc: DBAPIError) -> bool:
    """A lost or refused connection (the server is down, restarting or unreachable), as opposed to an error in
    the statement: the request gets a 503 with Retry-After, not a 500."""
    return exc.connection_invalidated or (isinstance(exc, InterfaceError | OperationalError) and not _contended(exc))


def _contended(exc: DBAPIError) -> bool:
    """PostgreSQL gave up one of two transactions that wanted the same rows (deadlock, serialization): the
    loser was rolled back and can simply run again."""
    return getattr(exc.orig, "sqlstate", None) in ("40001", "40P01")


class Database(ABC):
    """Where the stores run their statements: `read` for one autocommit read, `write` for one transaction that
    is committed whole or rolled back. The stores (jobs/store.py, accounts/...) are SQLAlchemy Core on the
    schema above and run unchanged on either implementation; what differs is how statements reach the server.

    - `SqliteDatabase`, the embedded default: reads inline, writes on one thread with group commit.
    - `PostgresDatabase` (`VIDGATE_DATABASE_URL=postgresql://...`), for many API nodes and workers: a
      connection pool and a thread pool; the queue claims with `FOR UPDATE SKIP LOCKED` and queued jobs wake
      workers with `NOTIFY` (jobs/wakeup.py).
    """

    url: str
    dialect: str

    def create_schema(self) -> None:
        """Bring a new database to this vidgate's schema, or check an existing one is at it: see
        `vidgate.migrate.ensure_schema` (SchemaError when it is not, and an operator must act). Alembic runs on
        `migrate`'s own short-lived engine, apart from this object's connections."""
        from vidgate import migrate

        migrate.ensure_schema(self.url)

    @abstractmethod
    def announce_job(self, conn: Connection) -> None:
        """Called inside the transaction that queues a job, so that listening workers wake when it commits."""

    @abstractmethod
    def read_now(self, fn: Callable[[Connection], T]) -> T:
        """Run a read-only function from synchronous code."""

    @abstractmethod
    async def read(self, fn: Callable[[Connection], T]) -> T: ...

    @abstractmethod
    async def lookup(self, query: PreparedQuery, params: dict[str, Any]) -> dict[str, Any] | None:
        """One row of a prepared single-statement read, or None: the lookups every polled request makes (its API
        key, its job), which take the shortest way to the database each implementation has."""

    @abstractmethod
    async def write_one(self, query: PreparedQuery, params: dict[str, Any]) -> int:
        """One prepared statement as a transaction of its own; the number of rows it wrote. Its row locks are
        held only while the server runs it, never across a round trip to this process. Should the connection
        be lost, it is run once more on a new one, so it must be safe to run twice (say, it inserts a fixed
        primary key: a second run after a first that committed fails with IntegrityError)."""

    @abstractmethod
    def write_now(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn(conn)` as one transaction from synchronous code (the CLI): committed, or rolled back if it
        raises."""

    @abstractmethod
    async def write(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn(conn)` as one transaction: committed, or rolled back if it raises."""

    @abstractmethod
    def dispose(self) -> None: ...

    async def aclose(self) -> None:
        """`dispose`, from the event loop that used this database (which may hold connections bound to it)."""
        self.dispose()


def open_database(url: str) -> Database:
    """The database a URL names: `sqlite:///file.db` or `postgresql://user:password@host:port/name`."""
    scheme = url.split("://", 1)[0]
    if scheme.startswith("sqlite"):
        return SqliteDatabase(url)
    if scheme.startswith("postgres"):
        return PostgresDatabase(url)
    raise ValueError(f"unsupported database URL scheme {scheme!r}: use sqlite:///path/to/file.db or "
                     "postgresql://user:password@host:port/database")


class SqliteDatabase(Database):
    """Runs reads inline and write transactions on a dedicated thread (see the module docstring)."""

    dialect = "sqlite"
    ROW_CACHE_MAX = 10_000

    def __init__(self, url: str) -> None:
        url = url.replace("sqlite+aiosqlite://", "sqlite://")
        self.url = url
        # One connection each, used by one thread each: the event loop reads, the writer thread writes.
        connect_args = {"check_same_thread": False, "timeout": 15}
        self._read_engine = create_engine(url, poolclass=StaticPool, connect_args=connect_args)
        self._write_engine = create_engine(url, poolclass=StaticPool, connect_args=connect_args)
        for engine in (self._read_engine, self._write_engine):
            event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(self._write_engine, "begin", _sqlite_begin)
        self._reader: Connection | None = None
        self._reader_raw: Any = None  # its sqlite3.Connection
        self._version_cursor: Any = None
        self._reader_generation = 0
        self._writer = _GroupCommitWriter(self._write_engine)
        # The poll cache (refresh_row_cache / read_cached): rows as of `_row_cache_version`.
        self._row_cache: dict[Hashable, Any] = {}
        self._row_cache_version: tuple[int, int, int] | None = None

    def announce_job(self, conn: Connection) -> None:
        """Nothing here: SQLite's workers share this machine and are woken by `jobs.wakeup.notify_workers`."""

    def _read_connection(self) -> Connection:
        if self._reader is None or self._reader.closed:
            self._reader = self._read_engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            self._reader_raw = self._reader.connection.driver_connection
            self._version_cursor = self._reader_raw.cursor()  # reused: one cursor object less per poll
            # A new connection counts data_version from its own start: the cache's version must not match it.
            self._reader_generation += 1
        return self._reader

    def refresh_row_cache(self) -> None:
        """Make `read_cached` answer as of now: empty the cache if anything was committed since the last call.

        `PRAGMA data_version` (~4 µs, a lookup is ~5 µs plus building its row) changes whenever another
        connection commits: another process (API, worker, CLI) or this process's writer thread, whose
        connection is not the reader's. The read connection's own changes (it should make none) are seen through
        its `total_changes`. Every entry was read after the check that set the current version, so it is at
        least that new; a request that refreshes once at its start and then reads through the cache sees
        everything committed before it started."""
        self._read_connection()
        version = (self._reader_generation, self._version_cursor.execute("PRAGMA data_version").fetchone()[0],
                   self._reader_raw.total_changes)
        if version != self._row_cache_version:
            self._row_cache.clear()
            self._row_cache_version = version

    def read_cached(self, key: Hashable, fn: Callable[[Connection], T]) -> T:
        """`fn(conn)`'s result for `key`, from this process's poll cache or read now and kept (a None is not
        kept: unknown keys and jobs cost a lookup each time, and cannot fill the cache). Only for immutable
        results, after `refresh_row_cache()` in the same request. The read and the store happen with no await
        between them, so no refresh can slip in and file an older row under a newer version."""
        try:
            return self._row_cache[key]  # type: ignore[no-any-return]
        except KeyError:
            pass
        value = self.read_now(fn)
        if value is not None:
            if len(self._row_cache) >= self.ROW_CACHE_MAX:
                self._row_cache.clear()  # bounded: many pollers at once just read more often
            self._row_cache[key] = value
        return value

    def read_now(self, fn: Callable[[Connection], T]) -> T:
        """Microseconds on SQLite WAL, so it runs on the caller's thread (the event loop)."""
        return fn(self._read_connection())

    async def read(self, fn: Callable[[Connection], T]) -> T:
        return self.read_now(fn)

    async def lookup(self, query: PreparedQuery, params: dict[str, Any]) -> dict[str, Any] | None:
        return query.first(self._read_connection(), params)

    async def write_one(self, query: PreparedQuery, params: dict[str, Any]) -> int:
        return await self.write(lambda conn: query.execute(conn, params))

    def write_now(self, fn: Callable[[Connection], T]) -> T:
        return self._writer.submit(fn).result()

    async def write(self, fn: Callable[[Connection], T]) -> T:
        return await asyncio.wrap_future(self._writer.submit(fn))

    def dispose(self) -> None:
        self._writer.close()
        if self._reader is not None:
            self._reader.close()
        self._read_engine.dispose()
        self._write_engine.dispose()


JOBS_CHANNEL = "vidgate_jobs"  # NOTIFY'd in every transaction that queues a job (jobs/wakeup.py listens)


def psycopg_url(url: str) -> str:
    """The SQLAlchemy URL for psycopg 3, whatever driver (or none) the operator wrote."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    """The same database as a plain libpq URI (for psycopg's own connections: the workers' LISTEN)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresDatabase(Database):
    """A pool of psycopg connections, used from a pool of threads so that the event loop never waits on the
    network. Every call is retried once on a fresh connection when its pooled one died (the server restarted:
    SQLAlchemy then drops the whole pool), and again when PostgreSQL rolled it back as a deadlock or
    serialization loser. A commit whose answer was lost is never retried: its outcome is unknown, so the
    request gets a 503 and the client decides (a queued job may then exist; it is charged exactly once).

    `lookup` (the API key and the job of every poll) and `write_one` (queueing a job) skip the threads:
    psycopg's async connections, from a `psycopg_pool.AsyncConnectionPool` opened on the event loop that first
    asks, awaited on that loop. A thread hand-off costs more than the statement itself (~210 against ~140 µs CPU
    per read under load, bench/RESULTS.md). Lookups of one query that are asked for together go as one statement
    (batched_lookups.py).
    """

    dialect = "postgresql"
    POOL_SIZE = 10
    CONTENTION_RETRIES = 5

    def __init__(self, url: str) -> None:
        self.url = psycopg_url(url)
        pooling: dict[str, Any] = {
            "pool_size": self.POOL_SIZE, "max_overflow": self.POOL_SIZE, "pool_timeout": 10,
            # Fail fast when the server is away: a request waits at most this long before its 503.
            "connect_args": {"connect_timeout": 5},
        }
        self.engine = create_engine(self.url, **pooling)
        # Reads on connections that are autocommit for good: no BEGIN, no reset round trip when returned.
        self._read_engine = create_engine(self.url, isolation_level="AUTOCOMMIT", pool_reset_on_return=None,
                                          **pooling)
        self._threads = ThreadPoolExecutor(max_workers=2 * self.POOL_SIZE, thread_name_prefix="vidgate-pg")
        self._lookup_pool: AsyncConnectionPool | None = None
        self._lookup_loop: asyncio.AbstractEventLoop | None = None
        self._batchers: dict[PreparedQuery, LookupBatcher] = {}  # the lookup pool's loop's
        self._closing: set[asyncio.Future[None]] = set()  # lookup pools dropped while the server was away

    def announce_job(self, conn: Connection) -> None:
        conn.exec_driver_sql(f"NOTIFY {JOBS_CHANNEL}")

    def _run(self, fn: Callable[[Connection], T], *, transaction: bool) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                if not transaction:
                    with self._read_engine.connect() as conn:
                        return fn(conn)
                with self.engine.connect() as conn:
                    trans = conn.begin()
                    try:
                        result = fn(conn)
                    except BaseException:
                        if trans.is_active:
                            trans.rollback()
                        raise
                    try:
                        trans.commit()
                    except DBAPIError as exc:
                        if _unavailable(exc):  # the commit's answer was lost: do not run it again
                            self._drop_connections()
                            raise DatabaseUnavailable() from exc
                        raise
                    return result
            except DBAPIError as exc:
                if _contended(exc) and attempt <= self.CONTENTION_RETRIES:
                    continue
                if _unavailable(exc):
                    self._drop_connections()
                    if attempt == 1:
                        continue  # likely a pooled connection from before a restart: once more, on a new one
                    raise DatabaseUnavailable() from exc
                raise

    def _drop_connections(self) -> None:
        """Forget every pooled connection (the server went away, so they are all dead); new ones are made on
        demand. Connections in use elsewhere are closed when returned."""
        self.engine.dispose()
        self._read_engine.dispose()

    def read_now(self, fn: Callable[[Connection], T]) -> T:
        return self._run(fn, transaction=False)

    async def read(self, fn: Callable[[Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._threads, lambda: self._run(fn, transaction=False))

    async def lookup(self, query: PreparedQuery, params: dict[str, Any]) -> dict[str, Any] | None:
        if query.postgres_batch is None:
            return query.row(await self._on_loop(query.postgres_sql, params, fetch="one"))
        await self._lookups()  # this loop's pool, and its batchers
        batcher = self._batchers.get(query)
        if batcher is None:
            sql, names = query.postgres_batch
            batcher = self._batchers[query] = LookupBatcher(sql, names, self._rows_on_loop, query.postgres_sql)
        return query.row(await batcher.lookup(params))

    async def write_one(self, query: PreparedQuery, params: dict[str, Any]) -> int:
        return int(await self._on_loop(query.postgres_sql, params, fetch="count"))

    async def _rows_on_loop(self, sql: str, params: dict[str, Any]) -> list[Row]:
        return list(await self._on_loop(sql, params, fetch="all"))

    async def _on_loop(self, sql: str, params: dict[str, Any], *, fetch: Literal["one", "all", "count"]) -> Any:
        """Run one statement on an autocommit connection of the event loop's pool: its first row, all its rows,
        or its row count. Retried once when the connection was lost (see `write_one`)."""
        for attempt in (1, 2):
            pool = await self._lookups()
            try:
                async with pool.connection() as conn:
                    cursor = await conn.execute(sql, params)
                    if fetch == "count":
                        return cursor.rowcount
                    return await (cursor.fetchone() if fetch == "one" else cursor.fetchall())
            except PoolTimeout as exc:  # no connection within the timeout: the server is away
                self._drop_lookup_pool(pool)
                raise DatabaseUnavailable() from exc
            except psycopg.OperationalError as exc:
                # The pool drops a connection returned broken; the others from before a restart are checked.
                await pool.check()
                if attempt == 2:
                    raise DatabaseUnavailable() from exc
            except psycopg.Error as exc:  # as SQLAlchemy would raise it: IntegrityError, ...
                raise DBAPIError.instance(sql, params, exc, psycopg.Error) from exc
        raise AssertionError("unreachable")

    def _drop_lookup_pool(self, pool: AsyncConnectionPool) -> None:
        """Let the next request open a fresh pool. One that could not connect waits ever longer between its
        attempts (1, 2, 4, 8 ... s): once the server is back, requests must not wait for its next one."""
        if self._lookup_pool is pool:
            self._lookup_pool = None
            closing = asyncio.ensure_future(pool.close())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    async def _lookups(self) -> AsyncConnectionPool:
        """The lookup pool of the running event loop (a pool's connections and tasks belong to one loop; a
        process has one, tests may have several in turn)."""
        loop = asyncio.get_running_loop()
        if self._lookup_pool is not None and self._lookup_loop is loop:
            return self._lookup_pool
        pool = AsyncConnectionPool(libpq_url(self.url), min_size=1, max_size=self.POOL_SIZE, timeout=5, open=False,
                                   kwargs={"autocommit": True, "connect_timeout": 5})
        await pool.open()
        if self._lookup_pool is not None and self._lookup_loop is loop:  # another request opened one meanwhile
            await pool.close()
            return self._lookup_pool
        self._lookup_loop, self._lookup_pool, self._batchers = loop, pool, {}
        return pool

    def write_now(self, fn: Callable[[Connection], T]) -> T:
        return self._run(fn, transaction=True)

    async def write(self, fn: Callable[[Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._threads, lambda: self._run(fn, transaction=True))

    def dispose(self) -> None:
        self._threads.shutdown(wait=True)
        self.engine.dispose()
        self._read_engine.dispose()

    async def aclose(self) -> None:
        pool, self._lookup_pool = self._lookup_pool, None
        if self._lookup_loop is asyncio.get_running_loop():
            if pool is not None:
                await pool.close()
            if self._closing:
                await asyncio.wait(self._closing)
        self.dispose()
