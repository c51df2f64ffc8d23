"""Schema migrations: new data dirs are created by migrating, pre-migration ones are adopted with their rows,
and a database this vidgate cannot run on stops it with the command to run."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from tests.conftest import Api, LiveServer, api_for, free_port, t2v_body
from tests.postgres import PostgresCluster
from vidgate import migrate
from vidgate.db import metadata, open_database, psycopg_url
from vidgate.settings import Settings

CHANGED_SINCE_0001 = {"CREATE TABLE jobs "}  # columns added by 0003
TABLES = ["accounts", "api_keys", "ledger", "jobs", "siwx_nonces", "siwx_challenges", "x402_payments", "consents"]


def vidgate(*args: str, data_dir: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDGATE_")}
    return subprocess.run([sys.executable, "-m", "vidgate", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, env=env, timeout=timeout)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def schema_sql(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [row[0] for row in conn.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL "
                                               "AND name != 'alembic_version' ORDER BY name")]


def table_rows(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of revision 0001's tables, in its columns (later revisions add columns, never change these)."""
    initial = migrate._initial_shape()
    rows = {}
    with sqlite3.connect(path) as conn:
        for table in TABLES:
            columns = ", ".join('"' + column + '"' for column in sorted(initial[table][0]))
            rows[table] = sorted(conn.execute(f"SELECT {columns} FROM {table}").fetchall(), key=repr)
    return rows


def schema_version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("PRAGMA schema_version").fetchone()[0])


def test_a_new_data_dir_is_created_at_the_head_revision(api: Api) -> None:
    url = api.settings.resolved_database_url
    assert migrate.current_revision(url) == migrate.head_revision() == "0004"
    migrate.check_current(url)


def assert_schema_is_the_metadata(url: str) -> None:
    """Alembic's autogenerate finds nothing between the database and `vidgate.db.metadata`."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    finally:
        engine.dispose()


def test_the_migrated_schema_is_the_metadata(tmp_path: Path) -> None:
    migrated, created = tmp_path / "migrated.db", tmp_path / "created.db"
    migrate.upgrade(sqlite_url(migrated))
    assert_schema_is_the_metadata(sqlite_url(migrated))
    # Revision 0001 is, byte for byte, the DDL `metadata.create_all` wrote before migrations (its tables as
    # they were then): so a pre-migration file can be adopted as 0001.
    initial = tmp_path / "initial.db"
    command.upgrade(migrate.alembic_config(sqlite_url(initial)), migrate.INITIAL_REVISION)
    engine = create_engine(sqlite_url(created))
    metadata.create_all(engine)
    engine.dispose()
    created_sql = {sql.split("(")[0]: sql for sql in schema_sql(created)}
    for sql in schema_sql(initial):
        name = sql.split("(")[0]
        if name in created_sql and name.startswith("CREATE TABLE") and name not in CHANGED_SINCE_0001:
            assert sql == created_sql[name]


async def make_pre_migration_data_dir(settings: Settings) -> tuple[str, str]:
    """A data dir as the release before migrations left it (revision 0001's tables, no `alembic_version`), with
    an account, a key and a queued job; returns the key and the job's queue id. Made by today's code, then
    migrated down to 0001 (rows kept, later columns dropped) and its version row removed."""
    async with api_for(settings) as api:
        key = await api.new_key(balance_usd=20)
        queued = await api.post("/video/queue", t2v_body(), key)
        assert queued.status_code == 200, queued.text
    url = settings.resolved_database_url
    command.downgrade(migrate.alembic_config(url), migrate.INITIAL_REVISION)
    db_file = settings.data_dir / "vidgate.db"
    with sqlite3.connect(db_file) as conn:
        conn.execute("DROP TABLE alembic_version")
    assert migrate.current_revision(url) is None
    return key, queued.json()["queue_id"]


async def test_db_upgrade_adopts_a_pre_migration_data_dir_and_serve_runs_on_it(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    key, queue_id = await make_pre_migration_data_dir(settings)
    db_file = settings.data_dir / "vidgate.db"
    before = table_rows(db_file)
    assert len(before["accounts"]) == len(before["api_keys"]) == len(before["jobs"]) == 1

    upgraded = vidgate("db", "upgrade", data_dir=settings.data_dir)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "before: none" in upgraded.stdout and "after: 0004" in upgraded.stdout
    assert table_rows(db_file) == before, "nothing lost, nothing changed"
    assert migrate.current_revision(settings.resolved_database_url) == "0004"

    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDGATE_")}
    server = LiveServer(data_dir=settings.data_dir, port=free_port(), env=env, workers=0, api_key=key)
    server.start()
    try:
        with server.client() as client:
            old = client.post("/video/retrieve", json={"model": t2v_body()["model"], "queue_id": queue_id})
            assert old.status_code == 200 and old.json()["status"] == "PROCESSING", old.text
            assert client.post("/video/queue", json=t2v_body()).status_code == 200
    finally:
        server.stop()
    assert server.log is not None and "vg_" not in server.log.read_text(), "no new first account"


async def test_a_pre_migration_data_dir_is_adopted_at_start_then_upgraded_by_the_operator(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    key, queue_id = await make_pre_migration_data_dir(settings)
    before = table_rows(settings.data_dir / "vidgate.db")
    url = settings.resolved_database_url
    db = open_database(url)
    try:  # at start: verified and stamped 0001 with no table touched, then refused as older than this vidgate
        with pytest.raises(migrate.SchemaError, match=r"revision 0001, older than this vidgate's 0004: .*"
                                                      r"run `vidgate db upgrade`"):
            db.create_schema()
    finally:
        db.dispose()
    assert migrate.current_revision(url) == "0001"
    assert table_rows(settings.data_dir / "vidgate.db") == before
    migrate.upgrade(url)  # what `vidgate db upgrade` runs
    async with api_for(settings) as api:
        retrieved = await api.post("/video/retrieve", {"model": t2v_body()["model"], "queue_id": queue_id}, key)
        assert retrieved.status_code == 200 and retrieved.json()["status"] == "PROCESSING"
    assert table_rows(settings.data_dir / "vidgate.db") == before


def test_tables_that_are_not_the_initial_schema_are_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    engine = create_engine(sqlite_url(path))
    metadata.create_all(engine)
    engine.dispose()
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE jobs ADD COLUMN surprise TEXT")
        conn.execute("DROP TABLE consents")
    version = schema_version(path)
    for attempt in (migrate.ensure_schema, migrate.upgrade):
        with pytest.raises(migrate.SchemaError, match=r"no table consents; jobs has unexpected columns .*surprise"):
            attempt(sqlite_url(path))
    assert schema_version(path) == version and migrate.current_revision(sqlite_url(path)) is None


def test_db_upgrade_twice_changes_nothing_the_second_time(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = vidgate("db", "upgrade", data_dir=data)
    assert first.returncode == 0, first.stderr
    assert "before: none" in first.stdout and "after: 0004" in first.stdout
    db_file = data / "vidgate.db"
    sql, version = schema_sql(db_file), schema_version(db_file)
    second = vidgate("db", "upgrade", data_dir=data)
    assert second.returncode == 0, second.stderr
    assert "before: 0004" in second.stdout and "already up to date" in second.stdout
    assert schema_sql(db_file) == sql and schema_version(db_file) == version


def test_an_unknown_revision_stops_serve_worker_and_db_upgrade(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    db_file = data / "vidgate.db"
    migrate.upgrade(sqlite_url(db_file))
    with sqlite3.connect(db_file) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0042'")
    for args in (["serve", "--port", str(free_port())], ["worker"], ["db", "upgrade"]):
        result = vidgate(*args, data_dir=data)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        message = " ".join(result.stderr.split())
        assert "does not know schema revision 0042" in message and "upgrade vidgate" in message, message
    assert "listening" not in result.stdout
    with sqlite3.connect(db_file) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0042",)]


def test_an_older_revision_is_not_upgraded_at_start(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "old.db")
    command.upgrade(migrate.alembic_config(url), "0001")
    db = open_database(url)
    try:
        with pytest.raises(migrate.SchemaError, match=r"revision 0001, older than this vidgate's 0004: .*"
                                                      r"run `vidgate db upgrade`"):
            db.create_schema()
    finally:
        db.dispose()
    assert migrate.current_revision(url) == "0001"


def start_together(url: str, processes: int) -> None:
    """`processes` starts at once against one database: none fails, and it ends at the head revision."""
    errors: list[BaseException] = []

    def start() -> None:
        try:
            migrate.ensure_schema(url)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(processes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert migrate.current_revision(url) == migrate.head_revision()


def test_processes_starting_together_create_the_schema_once(tmp_path: Path) -> None:
    start_together(sqlite_url(tmp_path / "race.db"), 6)


def test_on_postgresql_processes_starting_together_migrate_once_to_the_metadata(
        postgres_cluster: PostgresCluster) -> None:
    url = postgres_cluster.empty_database()
    start_together(url, 4)
    assert_schema_is_the_metadata(psycopg_url(url))
