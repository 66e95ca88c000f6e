"""The charter job's memory, in SQL (SQLite by default, PostgreSQL in docker-compose).

- ``charter_watermarks``: per dataset, the end of the last closed window processed;
- ``charter_windows``: per dataset and window, the raw rows seen, the digest of what was published
  and the charter version that published it (late data is found by a growing row count);
- ``charter_audit``: one record per window processed: charter version, window, readings in, groups
  published and suppressed, rows deferred to a later run, whether it was a re-processing, and the late
  rows a frozen day received and did not publish.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    insert,
    select,
    update,
)

from storage.deadletters import make_engine

metadata = MetaData()

watermarks = Table(
    "charter_watermarks", metadata,
    Column("dataset", String(64), primary_key=True),
    Column("until_ns", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
windows = Table(
    "charter_windows", metadata,
    Column("dataset", String(64), primary_key=True),
    Column("window_start", BigInteger, primary_key=True),
    Column("rows_seen", BigInteger, nullable=False),
    Column("points", Integer, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("charter_version", String(32), nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False),
)
audit = Table(
    "charter_audit", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("charter_version", String(32), nullable=False),
    Column("dataset", String(64), nullable=False),
    Column("window_start", BigInteger, nullable=False),
    Column("window_end", BigInteger, nullable=False),
    Column("readings_in", BigInteger, nullable=False),
    Column("groups_published", Integer, nullable=False),
    Column("groups_suppressed", Integer, nullable=False),
    Column("rows_deferred", BigInteger, nullable=False),
    Column("reprocessed", Boolean, nullable=False),
    Column("written", Boolean, nullable=False),  # False: the output was already there, unchanged
    Column("late_rows", BigInteger, nullable=False, default=0),  # late raw rows a frozen day did not publish
)


@dataclass(frozen=True)
class Window:
    rows_seen: int
    points: int
    digest: str
    charter_version: str


class CharterStore:
    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def watermark(self, dataset: str) -> int | None:
        with self.engine.connect() as c:
            return c.execute(select(watermarks.c.until_ns).where(watermarks.c.dataset == dataset)).scalar()

    def window(self, dataset: str, start: int) -> Window | None:
        with self.engine.connect() as c:
            row = c.execute(select(windows).where(windows.c.dataset == dataset,
                                                  windows.c.window_start == start)).first()
        return None if row is None else Window(row.rows_seen, row.points, row.digest, row.charter_version)

    def windows_since(self, dataset: str, start: int) -> dict[int, Window]:
        with self.engine.connect() as c:
            rows = c.execute(select(windows).where(windows.c.dataset == dataset, windows.c.window_start >= start))
            return {r.window_start: Window(r.rows_seen, r.points, r.digest, r.charter_version) for r in rows}

    def record(self, dataset: str, start: int, end: int, *, version: str, readings_in: int, rows_seen: int,
               published: int, suppressed: int, deferred: int, digest: str, reprocessed: bool, written: bool,
               watermark: int | None, late_rows: int = 0) -> None:
        """One transaction: the window's state, its audit record and (when it closed) the watermark."""
        now = datetime.now(UTC)
        with self.engine.begin() as c:
            state = {"rows_seen": rows_seen, "points": published, "digest": digest, "charter_version": version,
                     "processed_at": now}
            n = c.execute(update(windows).where(windows.c.dataset == dataset, windows.c.window_start == start)
                          .values(**state)).rowcount
            if not n:
                c.execute(insert(windows).values(dataset=dataset, window_start=start, **state))
            c.execute(insert(audit).values(at=now, charter_version=version, dataset=dataset, window_start=start,
                                           window_end=end, readings_in=readings_in, groups_published=published,
                                           groups_suppressed=suppressed, rows_deferred=deferred,
                                           reprocessed=reprocessed, written=written, late_rows=late_rows))
            if watermark is not None:
                n = c.execute(update(watermarks).where(watermarks.c.dataset == dataset)
                              .values(until_ns=watermark, updated_at=now)).rowcount
                if not n:
                    c.execute(insert(watermarks).values(dataset=dataset, until_ns=watermark, updated_at=now))

    def audit(self, dataset: str | None = None, limit: int = 50) -> list[dict]:
        q = select(audit).order_by(audit.c.id.desc()).limit(limit)
        if dataset:
            q = q.where(audit.c.dataset == dataset)
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(q)]
