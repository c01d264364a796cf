"""Alembic environment: migrates the connection `upgrade_schema` hands over.

Run from code (`monitoring.database.upgrade_schema`), not from an alembic.ini; without a
connection in ``config.attributes`` it falls back to DATABASE_URL, so `alembic` commands
built on `monitoring.database.alembic_config()` also work.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from monitoring.database import VERSION_TABLE, Base, make_engine

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _database_url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from core.settings import get_settings

    return get_settings().database_url


def run_offline() -> None:
    """Emit the SQL instead of running it (`alembic upgrade --sql`), for a DBA to apply."""
    context.configure(
        url=_database_url(),
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_database_url())
    try:
        with engine.begin() as own:
            _run(own)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
