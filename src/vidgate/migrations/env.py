"""Alembic's environment for vidgate's migrations, loaded by `vidgate.migrate` (there is no alembic.ini).

`vidgate.migrate` hands over an open connection in `config.attributes["connection"]`, inside the transaction it
holds (on SQLite a `BEGIN IMMEDIATE`, so one process migrates at a time and the version check, the stamp and the
DDL commit together). Without one (a `Config` built by `vidgate.migrate.alembic_config` and passed to an
`alembic.command` by hand, e.g. to write the next revision), this connects to the configured URL itself.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from vidgate.db import metadata

config = context.config


def configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        # Autogenerate (`alembic.command.revision(..., autogenerate=True)`) diffs against the live metadata;
        # the revisions themselves spell their operations out.
        target_metadata=metadata,
        # SQLite cannot ALTER most things: batch mode rebuilds the table (copy, drop, rename) instead.
        render_as_batch=connection.dialect.name == "sqlite",
        # SQLite's DDL is transactional once the driver stops committing on its own (see vidgate.migrate);
        # PostgreSQL's is anyway.
        transactional_ddl=True,
    )


def run_migrations_offline() -> None:
    """Write the SQL out instead of running it (`alembic.command.upgrade(config, "head", sql=True)`)."""
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    context.configure(url=url, target_metadata=metadata, literal_binds=True,
                      render_as_batch=str(url).startswith("sqlite"), dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        configure(connection)
        with context.begin_transaction():  # inside the caller's transaction: the caller commits
            context.run_migrations()
        return
    from vidgate.migrate import migration_engine

    engine = migration_engine(config.attributes.get("url") or config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.connect() as connection:
            configure(connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
