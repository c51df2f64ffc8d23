"""Schema migrations: Alembic, driven from code. The scripts ship in the package (`vidgate/migrations/`); there is
no alembic.ini, `alembic_config()` builds the configuration.

What happens to a database:

- `upgrade(url)` (`vidgate db upgrade`): an empty database is migrated from nothing to the head revision; one made
  before vidgate had migrations (the tables of revision 0001, no `alembic_version`) is checked to hold exactly
  those tables, stamped 0001 and upgraded; one at an older revision is upgraded; one at the head is left alone.
- `ensure_schema(url)` (every process at start, through `Database.create_schema`): an empty database is created
  by migrating; a pre-migration one is checked and stamped 0001, which writes the version row and touches no
  table (the release before still runs on the file); then `check_current`: at an older revision, or one this
  vidgate does not know, it raises `SchemaError`. Changing existing tables is an operator's step, taken once
  (after a backup), not something whichever of several processes sharing the file starts first does.

Migrations run on a short-lived engine of their own (`migration_engine`), never on `Database`'s connections;
in one transaction that first takes SQLite's write lock (`BEGIN IMMEDIATE`) or a PostgreSQL advisory lock, so
processes starting together migrate one at a time and the later ones find the work done. (Not through
`SqliteDatabase`'s writer thread: its connection enforces foreign keys and is always inside a group commit, where
a batch migration's copy-and-rename cannot run.)

The next revision (after changing `vidgate.db.metadata`)::

    from alembic import command
    from vidgate.migrate import alembic_config
    command.revision(alembic_config("sqlite:////tmp/at-head.db"), "what changed", autogenerate=True,
                     rev_id="0002")

against a database at the head; then write its operations out by hand in the generated file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, inspect, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool, StaticPool

from vidgate.db import psycopg_url

log = logging.getLogger("vidgate.migrate")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
INITIAL_REVISION = "0001"
VERSION_TABLE = "alembic_version"
UPGRADE_COMMAND = "vidgate db upgrade"


class SchemaError(Exception):
    """The database's schema is not one this vidgate can run on (the message says what to do)."""


def _normal_url(db_url: str) -> str:
    if db_url.startswith("postgres"):
        return psycopg_url(db_url)
    return db_url.replace("sqlite+aiosqlite://", "sqlite://")


# Any constant both sides agree on: PostgreSQL's transaction-scoped advisory lock that makes processes starting
# together migrate one at a time (SQLite's BEGIN IMMEDIATE does the same there).
_MIGRATION_LOCK = 0x76696467  # "vidg"


@contextmanager
def _reachable(db_url: str) -> Iterator[None]:
    """A database that cannot be reached at start is an operator's problem, said in one line."""
    try:
        yield
    except OperationalError as exc:
        where = make_url(_normal_url(db_url)).render_as_string(hide_password=True)
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise SchemaError(f"cannot reach the database {where} (VIDGATE_DATABASE_URL): {reason}") from None


def alembic_config(db_url: str | None = None, connection: Connection | None = None) -> Config:
    """Alembic's configuration, built in code: the packaged scripts, and the database (a URL, or an open
    connection that the migrations then run inside, in its transaction)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if db_url is not None:
        config.attributes["url"] = _normal_url(db_url)
        config.set_main_option("sqlalchemy.url", _normal_url(db_url).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@lru_cache(maxsize=1)
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest schema revision this vidgate knows."""
    head = _script().get_current_head()
    assert head is not None, "no migrations found"
    return head


@lru_cache(maxsize=1)
def _known_revisions() -> frozenset[str]:
    return frozenset(script.revision for script in _script().walk_revisions())


def _sqlite_pragmas(*, writing: bool) -> Any:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # SQLAlchemy, not the sqlite3 module, says where transactions begin: so DDL is inside them too.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=15000")
        if writing:
            cursor.execute("PRAGMA journal_mode=WAL")
            # Off while migrating (the default, said out loud): a batch migration rebuilds a table by copying,
            # dropping and renaming it, which enforced foreign keys would refuse or cascade. The pragma cannot
            # change inside a transaction, hence here, on connect.
            cursor.execute("PRAGMA foreign_keys=OFF")
        cursor.close()

    return on_connect


def migration_engine(db_url: str, *, writing: bool = True) -> Engine:
    """An engine for migrating (or, `writing=False`, for reading the revision): not pooled, disposed after use.
    On SQLite every transaction is `BEGIN IMMEDIATE`: the write lock is taken before the version is read."""
    url = _normal_url(db_url)
    connect_args = {"connect_timeout": 5} if url.startswith("postgresql") else {}
    engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas(writing=writing))
        if writing:
            event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
    return engine


def _sqlite_file_missing(db_url: str) -> bool:
    url = make_url(_normal_url(db_url))
    if not url.drivername.startswith("sqlite"):
        return False
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return False
    return not Path(database).exists()


def current_revision(db_url: str) -> str | None:
    """The database's schema revision; None for an empty database or one from before migrations."""
    if _sqlite_file_missing(db_url):
        return None  # not created by looking
    engine = migration_engine(db_url, writing=False)
    try:
        with _reachable(db_url), engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def _unknown(revision: str) -> SchemaError:
    return SchemaError(f"this vidgate does not know schema revision {revision} (its newest is {head_revision()}): "
                       "a newer vidgate migrated this database; upgrade vidgate")


def check_current(db_url: str) -> None:
    """Raise SchemaError unless the database is at this vidgate's head revision."""
    current, head = current_revision(db_url), head_revision()
    if current == head:
        return
    if current is None:
        raise SchemaError(f"the database has no schema revision (it is new, or from before migrations): "
                          f"run `{UPGRADE_COMMAND}`")
    if current in _known_revisions():
        raise SchemaError(f"the database is at schema revision {current}, older than this vidgate's {head}: "
                          f"back up the data dir, then run `{UPGRADE_COMMAND}`")
    raise _unknown(current)


def upgrade(db_url: str) -> str:
    """Migrate the database to the head revision (see the module docstring); returns the revision it is at."""
    _migrate(db_url, to_head=True)
    return head_revision()


def ensure_schema(db_url: str) -> None:
    """What a process does at start: create a new database, adopt a pre-migration one as 0001, then insist on the
    head revision (SchemaError otherwise). At the head already (every start but the first) it only reads."""
    if current_revision(db_url) == head_revision():
        return
    _migrate(db_url, to_head=False)
    check_current(db_url)


def _migrate(db_url: str, *, to_head: bool) -> None:
    engine = migration_engine(db_url)
    try:
        # One transaction for the look, the stamp and the DDL; on SQLite, BEGIN IMMEDIATE holds the write lock
        # from before the look, so a second process starting at the same moment waits and then finds it done.
        with _reachable(db_url), engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
            heads = MigrationContext.configure(conn).get_current_heads()
            for revision in heads:
                if revision not in _known_revisions():
                    raise _unknown(revision)
            config = alembic_config(db_url, connection=conn)
            if not heads:
                tables = set(inspect(conn).get_table_names()) - {VERSION_TABLE}
                if not tables:
                    log.info("creating the database schema (revision %s)", head_revision())
                    command.upgrade(config, "head")
                    return
                _verify_initial_schema(conn, db_url)
                command.stamp(config, INITIAL_REVISION)
                log.warning("the database predates schema migrations; its tables match revision %s, recorded as "
                            "that revision", INITIAL_REVISION)
            if to_head:
                command.upgrade(config, "head")
    finally:
        engine.dispose()


def _shape(conn: Connection) -> dict[str, tuple[frozenset[str], frozenset[str]]]:
    """Each table's column names and index names."""
    inspector = inspect(conn)
    return {
        table: (frozenset(c["name"] for c in inspector.get_columns(table)),
                frozenset(str(i["name"]) for i in inspector.get_indexes(table)))
        for table in inspector.get_table_names() if table != VERSION_TABLE
    }


@lru_cache(maxsize=1)
def _initial_shape() -> dict[str, tuple[frozenset[str], frozenset[str]]]:
    """The tables revision 0001 creates, read off an in-memory database migrated to it."""
    engine = create_engine("sqlite://", poolclass=StaticPool)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config("sqlite://", connection=conn), INITIAL_REVISION)
            return _shape(conn)
    finally:
        engine.dispose()


def _verify_initial_schema(conn: Connection, db_url: str) -> None:
    """A database without a revision may be adopted as 0001 only if it holds 0001's tables, columns and indexes
    (what `metadata.create_all` made before migrations); anything else is refused, never guessed at."""
    found, problems = _shape(conn), []
    for table, (columns, indexes) in sorted(_initial_shape().items()):
        if table not in found:
            problems.append(f"no table {table}")
            continue
        have_columns, have_indexes = found[table]
        if missing := sorted(columns - have_columns):
            problems.append(f"{table} lacks columns {', '.join(missing)}")
        if extra := sorted(have_columns - columns):
            problems.append(f"{table} has unexpected columns {', '.join(extra)}")
        if missing := sorted(indexes - have_indexes):
            problems.append(f"{table} lacks indexes {', '.join(missing)}")
    if problems:
        where = make_url(_normal_url(db_url)).render_as_string(hide_password=True)
        raise SchemaError(f"{where} has tables but no schema revision, and they are not vidgate's initial schema "
                          f"({'; '.join(problems)}): not touching it")
