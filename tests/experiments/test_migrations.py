"""The experiments schema is the migrations' work: empty -> head, head -> base -> head, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from experiments.db import Base, alembic_config, current_revision, downgrade, engine_for, migrate, open_store

TABLES = {"users", "tokens", "experiments", "experiment_resources", "events", "artifacts", "gateways"}


def _head() -> str | None:
    engine = engine_for("sqlite://")
    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def test_upgrade_from_empty_to_head_then_down_to_base_and_up_again(sql_url):
    engine = engine_for(sql_url)
    try:
        assert current_revision(engine) is None and not set(inspect(engine).get_table_names()) & TABLES
        migrate(engine)
        assert current_revision(engine) == _head() == "0002"
        assert set(inspect(engine).get_table_names()) == TABLES | {"alembic_version"}
        columns = {c["name"] for c in inspect(engine).get_columns("tokens")}
        assert {"prefix", "secret_sha256", "created_at", "revoked_at", "last_used_at"} <= columns
        assert "secret" not in columns

        downgrade(engine)
        assert current_revision(engine) is None
        assert not set(inspect(engine).get_table_names()) & TABLES

        migrate(engine)
        assert current_revision(engine) == "0002"
        assert set(inspect(engine).get_table_names()) >= TABLES
    finally:
        engine.dispose()


def test_the_models_are_what_the_migrations_build(sql_url):
    """The ORM models and the migrations agree (Alembic's autogenerate finds nothing to change)."""
    engine = engine_for(sql_url)
    try:
        migrate(engine)
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []
    finally:
        engine.dispose()


def test_first_use_migrates_and_a_second_use_is_a_no_op(sql_url):
    sessions = open_store(sql_url)
    engine = sessions.kw["bind"]
    try:
        assert current_revision(engine) == "0002"
        open_store(sql_url).kw["bind"].dispose()
        assert current_revision(engine) == "0002"
    finally:
        engine.dispose()
