"""The experiments store: SQLAlchemy 2 ORM models and the Alembic migrations that create them.

SQLite by default (``settings.sql_url``), PostgreSQL in docker-compose. The schema is owned by the
migrations in ``experiments/migrations/versions`` (no ``alembic.ini``: ``migrate`` configures Alembic in
code); ``open_store`` upgrades to head on first use, ``smartzone experiments migrate`` does it explicitly.
Times are stored in UTC; SQLite hands them back naive, ``utc`` reads both.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
logging.getLogger("alembic").setLevel(logging.WARNING)  # its INFO lines (plugins, DDL mode) are noise here

ROLES = ("experimenter", "operator")
STATES = ("Waiting", "toLaunch", "Launching", "Running", "Finishing", "Terminated", "Stopped", "Error")
RADIOS = ("ble", "zigbee", "wifi", "lora-experimental")
ARTIFACT_KINDS = ("wheel", "script")
# what a gateway's agent reports of one experiment (gw/<id>/experiments/reported, docs/parts/experiments.md)
PHASES = ("fetching", "waiting", "running", "stopping", "finished", "failed", "stopped", "refused")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def utc(value: datetime | None) -> datetime | None:
    """A stored time as an aware UTC datetime (SQLite returns naive UTC)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint(_one_of("role", ROLES), name="ck_users_role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Token(Base):
    """A bearer token: only the SHA-256 of the secret is stored; ``prefix`` (public) finds the row."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Artifact(Base):
    __tablename__ = "artifacts"
    __table_args__ = (CheckConstraint(_one_of("kind", ARTIFACT_KINDS), name="ck_artifacts_kind"),)

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(10))
    filename: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Experiment(Base):
    __tablename__ = "experiments"
    __table_args__ = (CheckConstraint(_one_of("state", STATES), name="ck_experiments_state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    state: Mapped[str] = mapped_column(String(12), index=True)
    start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    duration_s: Mapped[int] = mapped_column(Integer)
    deadline: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    artifact_sha256: Mapped[str | None] = mapped_column(ForeignKey("artifacts.sha256"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)  # Running
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)  # a final state


class ExperimentResource(Base):
    """One (gateway, radio) an experiment takes, and what that gateway's agent last reported of it."""

    __tablename__ = "experiment_resources"
    __table_args__ = (
        CheckConstraint(_one_of("radio", RADIOS), name="ck_experiment_resources_radio"),
        CheckConstraint(f"phase IS NULL OR {_one_of('phase', PHASES)}", name="ck_experiment_resources_phase"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), index=True)
    gateway: Mapped[str] = mapped_column(String(100), index=True)
    radio: Mapped[str] = mapped_column(String(20))
    phase: Mapped[str | None] = mapped_column(String(12), nullable=True)  # None: nothing reported yet
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str] = mapped_column(Text, default="", server_default="")
    log_tail: Mapped[str] = mapped_column(Text, default="", server_default="")
    reported_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    results_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the uploaded tar.gz
    results_size: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Event(Base):
    """One state change of an experiment: when, who, from, to, why."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(100))
    from_state: Mapped[str | None] = mapped_column(String(12), nullable=True)
    to_state: Mapped[str] = mapped_column(String(12))
    reason: Mapped[str] = mapped_column(Text, default="")


class Gateway(Base):
    """A gateway's availability as the scheduler last heard it: status (online/offline) and self-test."""

    __tablename__ = "gateways"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    online: Mapped[bool | None] = mapped_column(Boolean, nullable=True)  # None: never heard
    status_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    health_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    selftest_failed: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: no self-test heard
    selftest_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    selftest_detail: Mapped[str] = mapped_column(Text, default="", server_default="")


def _sqlite_foreign_keys(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def engine_for(url: str) -> Engine:
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_foreign_keys)
    return engine


def alembic_config(engine: Engine) -> Config:
    """Alembic configured in code (no alembic.ini); env.py takes the engine from ``attributes``."""
    from alembic.config import Config  # imported on use: the API's start-up does not pay for Alembic

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


MIGRATION_LOCK_KEY = 0x5A16_0001  # PostgreSQL advisory lock: one migrating process at a time


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """Hold the store's migration lock: two processes upgrading a fresh store at once take turns (the second
    finds it at head and does nothing). PostgreSQL: a session advisory lock; SQLite: ``flock`` on a file
    beside the database (``<db>.migrate.lock``); an in-memory SQLite database needs none."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
                conn.commit()
        return
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    lock = Path(database).with_name(Path(database).name + ".migrate.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the store to ``revision`` under the migration lock (safe from several processes at once)."""
    with _migration_lock(engine):
        from alembic import command

        command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    from alembic import command

    command.downgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def open_store(url: str) -> sessionmaker[Session]:
    """A session factory on ``url``, its schema upgraded to head first (a no-op when it is)."""
    engine = engine_for(url)
    migrate(engine)
    return sessionmaker(engine, expire_on_commit=False)
