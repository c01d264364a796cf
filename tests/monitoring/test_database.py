"""Engines and migrations on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

from monitoring.database import (
    VERSION_TABLE,
    Base,
    alembic_config,
    make_engine,
    normalise_url,
    upgrade_schema,
)

PROJECT = Path(__file__).resolve().parents[2]


def test_postgres_urls_use_psycopg_3() -> None:
    for url in ("postgresql://u@h/db", "postgres://u@h/db"):
        assert normalise_url(url).drivername == "postgresql+psycopg"
    assert normalise_url("postgresql+psycopg2://u@h/db").drivername == "postgresql+psycopg2"
    assert normalise_url("sqlite:///x.db").drivername == "sqlite"


def test_sqlite_engine_creates_the_folder_and_uses_wal(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/a/b/log.db")
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 5000
    assert (tmp_path / "a" / "b" / "log.db").exists()
    engine.dispose()


def test_migrations_create_the_tables_and_match_the_models(engine: Engine) -> None:
    inspector = inspect(engine)
    tables = {"predictions", "ground_truth", "deleted_customers", VERSION_TABLE}
    assert tables <= set(inspector.get_table_names())
    indexed = {i["column_names"][0] for i in inspector.get_indexes("predictions")}
    assert {"request_id", "customer_hash", "created_at"} <= indexed
    unique = inspector.get_unique_constraints("ground_truth")
    assert [u["column_names"] for u in unique] == [["customer_hash", "observed_date"]]
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"version_table": VERSION_TABLE, "compare_type": True}
        )
        assert compare_metadata(context, Base.metadata) == []


def test_upgrade_is_idempotent(engine: Engine) -> None:
    upgrade_schema(engine)
    upgrade_schema(engine)
    with engine.connect() as connection:
        versions = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).all()
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert versions == [(head,)]


def test_workers_starting_together_migrate_once(database_url: str) -> None:
    """Three processes upgrade the same empty database at once; all succeed."""
    code = "import sys; from monitoring.database import upgrade_schema; upgrade_schema(sys.argv[1])"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", code, database_url],
            cwd=PROJECT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outcomes = [(worker.wait(timeout=60), worker.stderr) for worker in workers]
    for returncode, stderr in outcomes:
        assert returncode == 0, stderr.read() if stderr else ""
    engine = make_engine(database_url)
    try:
        assert {"predictions", "ground_truth"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
