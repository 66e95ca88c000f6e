"""The dead-letter store: everything that could not become a written reading, kept whole with its reason.

SQL through SQLAlchemy Core: SQLite (WAL, ``synchronous=FULL``) by default, PostgreSQL in
docker-compose, so several workers can share one store. A letter is ``pending`` until a replay
writes it (``replayed``); a replay that fails again keeps it pending with the new reason.

Exactly once, like readings: each letter has a key (``letter_key``: SHA-256 of its stage, topic, payload,
reason, detail and, for a message's letter, its receipt time, which the receipt journal gives back to a
redelivered message), unique in the table; ``add`` inserts with ``ON CONFLICT DO NOTHING`` (SQLite and
PostgreSQL). A worker that dies after committing a batch's letters but before acking the batch stores
nothing new when the broker redelivers it. Two distinct messages with the same content get different
receipt times, so different keys.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    func,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine, RowMapping
from sqlalchemy.exc import DBAPIError

if TYPE_CHECKING:
    from smartzone.model import DeadLetter

metadata = MetaData()

deadletters = Table(
    "deadletters",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("received_at", DateTime(timezone=True), nullable=False, index=True),
    Column("topic", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("reason", String(64), nullable=False, index=True),
    Column("detail", Text, nullable=False),
    Column("stage", String(16), nullable=False),
    Column("status", String(16), nullable=False, index=True, default="pending"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # NULL in rows stored before keys existed (NULLs never conflict)
    Column("letter_key", String(64), nullable=True, unique=True),
)

PENDING = "pending"
REPLAYED = "replayed"


def letter_key(d: DeadLetter) -> str:
    """The letter's identity: the same letter stored twice (a redelivered message) has the same key.

    A write-stage letter (a line InfluxDB refused) is identified by its database and line (the line holds
    its own time); its ``received_at`` is the time of the refusal, which a retry changes.
    """
    h = hashlib.sha256()
    parts = [d.stage, d.topic, d.reason, d.detail[:4000]]
    if d.stage != "write":
        received = d.received_at.astimezone(UTC) if d.received_at.tzinfo else d.received_at.replace(tzinfo=UTC)
        parts.append(received.isoformat(timespec="microseconds"))
    for part in parts:
        b = part.encode(errors="surrogateescape")
        h.update(len(b).to_bytes(8, "big") + b)
    h.update(d.payload)
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class StoredLetter:
    id: int
    received_at: datetime
    topic: str
    payload: bytes
    reason: str
    detail: str
    stage: str
    status: str
    attempts: int


def make_engine(url: str) -> Engine:
    """An engine for the store; SQLite gets WAL and full fsync so a committed letter survives a crash."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


class DeadLetterStore:
    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        for attempt in range(5):
            try:
                metadata.create_all(self.engine)
                break
            except DBAPIError:  # another worker created the table between our check and our CREATE
                if attempt == 4:
                    raise
                time.sleep(0.1 * (attempt + 1))
        self._add_key_column()
        dialect = self.engine.dialect.name
        self._insert: postgresql.Insert | sqlite.Insert
        if dialect == "postgresql":
            self._insert = postgresql.insert(deadletters).on_conflict_do_nothing(index_elements=["letter_key"])
        elif dialect == "sqlite":
            self._insert = sqlite.insert(deadletters).on_conflict_do_nothing(index_elements=["letter_key"])
        else:  # pragma: no cover - we ship SQLite and PostgreSQL
            raise ValueError(f"dead-letter store: unsupported database {dialect!r} (SQLite or PostgreSQL)")

    def _add_key_column(self) -> None:
        """A store created before letters had keys gets the column and its unique index (old rows keep NULL).
        Another worker doing the same at the same moment is fine."""
        if "letter_key" in {c["name"] for c in inspect(self.engine).get_columns("deadletters")}:
            return
        for ddl in (
            "ALTER TABLE deadletters ADD COLUMN letter_key VARCHAR(64)",
            "CREATE UNIQUE INDEX IF NOT EXISTS deadletters_letter_key ON deadletters (letter_key)",
        ):
            try:
                with self.engine.begin() as conn:
                    conn.execute(text(ddl))
            except DBAPIError:
                if "letter_key" not in {c["name"] for c in inspect(self.engine).get_columns("deadletters")}:
                    raise

    def close(self) -> None:
        self.engine.dispose()

    def add(self, letters: Iterable[DeadLetter]) -> int:
        """Store letters (``smartzone.model.DeadLetter``) in one transaction, each at most once (its
        ``letter_key``); return how many were given."""
        now = datetime.now(UTC)
        rows = [
            {
                "received_at": d.received_at,
                "topic": d.topic,
                "payload": d.payload,
                "reason": d.reason,
                "detail": d.detail[:4000],
                "stage": d.stage,
                "status": PENDING,
                "attempts": 0,
                "updated_at": now,
                "letter_key": letter_key(d),
            }
            for d in letters
        ]
        if rows:
            with self.engine.begin() as conn:
                conn.execute(self._insert, rows)
        return len(rows)

    def entries(
        self,
        *,
        reason: str | None = None,
        status: str | None = PENDING,
        limit: int = 100,
        ids: Iterable[int] | None = None,
    ) -> list[StoredLetter]:
        q = select(deadletters).order_by(deadletters.c.id)
        if reason:
            q = q.where(deadletters.c.reason == reason)
        if status:
            q = q.where(deadletters.c.status == status)
        if ids is not None:
            q = q.where(deadletters.c.id.in_(list(ids)))
        if limit:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            return [_letter(row) for row in conn.execute(q).mappings()]

    def iter_pending(
        self, *, reason: str | None = None, ids: Iterable[int] | None = None, chunk: int = 1000
    ) -> Iterator[list[StoredLetter]]:
        """Pending letters in id order, a chunk at a time (bounded memory for large replays)."""
        last = 0
        wanted = list(ids) if ids is not None else None
        while True:
            q = (
                select(deadletters)
                .where(deadletters.c.status == PENDING, deadletters.c.id > last)
                .order_by(deadletters.c.id)
                .limit(chunk)
            )
            if reason:
                q = q.where(deadletters.c.reason == reason)
            if wanted is not None:
                q = q.where(deadletters.c.id.in_(wanted))
            with self.engine.connect() as conn:
                batch = [_letter(row) for row in conn.execute(q).mappings()]
            if not batch:
                return
            last = batch[-1].id
            yield batch

    def counts(self, status: str | None = PENDING) -> dict[str, int]:
        q = select(deadletters.c.reason, func.count()).group_by(deadletters.c.reason)
        if status:
            q = q.where(deadletters.c.status == status)
        with self.engine.connect() as conn:
            return {reason: n for reason, n in conn.execute(q)}

    def mark_replayed(self, ids: Iterable[int]) -> None:
        ids = list(ids)
        if ids:
            with self.engine.begin() as conn:
                conn.execute(
                    update(deadletters)
                    .where(deadletters.c.id.in_(ids))
                    .values(status=REPLAYED, attempts=deadletters.c.attempts + 1, updated_at=datetime.now(UTC))
                )

    def purge(self, older_than: datetime, topic_patterns: Iterable[str]) -> int:
        """Delete letters received before ``older_than`` whose topic matches one of the SQL LIKE patterns
        (letters that hold pseudonyms may be kept no longer than the pseudonymous data itself)."""
        patterns = list(topic_patterns)
        if not patterns:
            return 0
        with self.engine.begin() as conn:
            return conn.execute(
                delete(deadletters).where(
                    deadletters.c.received_at < older_than, or_(*(deadletters.c.topic.like(p) for p in patterns))
                )
            ).rowcount

    def mark_failed(self, letter_id: int, reason: str, detail: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(deadletters)
                .where(deadletters.c.id == letter_id)
                .values(
                    reason=reason,
                    detail=detail[:4000],
                    attempts=deadletters.c.attempts + 1,
                    updated_at=datetime.now(UTC),
                )
            )


def _letter(row: RowMapping) -> StoredLetter:
    received = row["received_at"]
    if received.tzinfo is None:  # SQLite keeps no zone; we only ever store UTC
        received = received.replace(tzinfo=UTC)
    return StoredLetter(
        id=row["id"],
        received_at=received,
        topic=row["topic"],
        payload=bytes(row["payload"]),
        reason=row["reason"],
        detail=row["detail"],
        stage=row["stage"],
        status=row["status"],
        attempts=row["attempts"],
    )
