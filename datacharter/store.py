"""The charter job's memory, in SQL (SQLite by default, PostgreSQL in docker-compose).

- ``charter_watermarks``: per dataset, the end of the last closed window processed;
- ``charter_windows``: per dataset and window, the raw rows seen, the raw content it was processed from
  (``fingerprint``: per field its count and sum, JSON), the digest of what was published and the charter
  version that published it (late data is found by a growing row count, rewritten readings by a changed
  fingerprint);
- ``charter_audit``: one record per window processed: charter version, window, readings in, groups
  published and suppressed, rows deferred to a later run, whether it was a re-processing, the late
  rows a frozen day received and did not publish, whether the window's raw content had changed
  (``content_changed``: late rows or rewritten readings), and how complete the window was
  (``expected_readings``, ``arrived_readings``, ``coverage``, ``low_coverage``: ``datacharter.coverage``; NULL for
  datasets of events and for records that published nothing).

Databases made before a column existed get it at start-up (``ALTER TABLE ... ADD COLUMN``): ``create_all``
creates missing tables only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateColumn

from datacharter.coverage import Coverage
from storage.deadletters import make_engine

metadata = MetaData()

watermarks = Table(
    "charter_watermarks",
    metadata,
    Column("dataset", String(64), primary_key=True),
    Column("until_ns", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
windows = Table(
    "charter_windows",
    metadata,
    Column("dataset", String(64), primary_key=True),
    Column("window_start", BigInteger, primary_key=True),
    Column("rows_seen", BigInteger, nullable=False),
    Column("points", Integer, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("charter_version", String(32), nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False),
    Column("fingerprint", Text, nullable=True),  # the raw content processed (job.Content); NULL: not known
    Column("suppressed", Integer, nullable=True),  # groups suppressed when it was last processed
)
audit = Table(
    "charter_audit",
    metadata,
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
    # the window's raw content had changed since it was processed (late rows, readings rewritten)
    Column("content_changed", Boolean, nullable=False, default=False, server_default=false()),
    # how complete the window was (datacharter.coverage): readings its sensors should have sent, readings that
    # arrived, the published share and whether it is below the configured threshold
    Column("expected_readings", BigInteger, nullable=True),
    Column("arrived_readings", BigInteger, nullable=True),
    Column("coverage", Float, nullable=True),
    Column("low_coverage", Boolean, nullable=True),
)


@dataclass(frozen=True)
class Window:
    rows_seen: int
    points: int
    digest: str
    charter_version: str
    fingerprint: str | None = None
    suppressed: int | None = None  # None: processed before it was recorded


class CharterStore:
    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        metadata.create_all(self.engine)
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """Columns added to the tables since a database was created (``create_all`` leaves existing tables
        alone): added with their type and server default. Another process adding one at the same time is fine."""
        for table in metadata.sorted_tables:
            have = {c["name"] for c in inspect(self.engine).get_columns(table.name)}
            for column in table.columns:
                if column.name in have:
                    continue
                ddl = CreateColumn(column).compile(dialect=self.engine.dialect)
                try:
                    with self.engine.begin() as c:
                        c.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {ddl}"))
                except DBAPIError:
                    if column.name not in {c["name"] for c in inspect(self.engine).get_columns(table.name)}:
                        raise

    def close(self) -> None:
        self.engine.dispose()

    def watermark(self, dataset: str) -> int | None:
        with self.engine.connect() as c:
            return c.execute(select(watermarks.c.until_ns).where(watermarks.c.dataset == dataset)).scalar()

    def window(self, dataset: str, start: int) -> Window | None:
        with self.engine.connect() as c:
            row = c.execute(
                select(windows).where(windows.c.dataset == dataset, windows.c.window_start == start)
            ).first()
        return (
            None
            if row is None
            else Window(row.rows_seen, row.points, row.digest, row.charter_version, row.fingerprint, row.suppressed)
        )

    def windows_since(self, dataset: str, start: int) -> dict[int, Window]:
        with self.engine.connect() as c:
            rows = c.execute(select(windows).where(windows.c.dataset == dataset, windows.c.window_start >= start))
            return {
                r.window_start: Window(r.rows_seen, r.points, r.digest, r.charter_version, r.fingerprint, r.suppressed)
                for r in rows
            }

    def set_fingerprint(self, dataset: str, start: int, fingerprint: str) -> None:
        """A window processed before fingerprints were recorded: its content now, the baseline of later changes."""
        with self.engine.begin() as c:
            c.execute(
                update(windows)
                .where(windows.c.dataset == dataset, windows.c.window_start == start, windows.c.fingerprint.is_(None))
                .values(fingerprint=fingerprint)
            )

    def record(
        self,
        dataset: str,
        start: int,
        end: int,
        *,
        version: str,
        readings_in: int,
        rows_seen: int,
        published: int,
        suppressed: int,
        deferred: int,
        digest: str,
        reprocessed: bool,
        written: bool,
        watermark: int | None,
        late_rows: int = 0,
        fingerprint: str | None = None,
        changed: bool = False,
        coverage: Coverage | None = None,
    ) -> None:
        """One transaction: the window's state, its audit record and (when it closed) the watermark.
        ``changed``: the window's raw content had changed since it was processed; ``coverage``: how complete it
        was (None: not measured)."""
        now = datetime.now(UTC)
        with self.engine.begin() as c:
            state = {
                "rows_seen": rows_seen,
                "points": published,
                "digest": digest,
                "charter_version": version,
                "processed_at": now,
                "fingerprint": fingerprint,
                "suppressed": suppressed,
            }
            n = c.execute(
                update(windows).where(windows.c.dataset == dataset, windows.c.window_start == start).values(**state)
            ).rowcount
            if not n:
                c.execute(insert(windows).values(dataset=dataset, window_start=start, **state))
            c.execute(
                insert(audit).values(
                    at=now,
                    charter_version=version,
                    dataset=dataset,
                    window_start=start,
                    window_end=end,
                    readings_in=readings_in,
                    groups_published=published,
                    groups_suppressed=suppressed,
                    rows_deferred=deferred,
                    reprocessed=reprocessed,
                    written=written,
                    late_rows=late_rows,
                    content_changed=changed,
                    expected_readings=None if coverage is None else coverage.expected,
                    arrived_readings=None if coverage is None else coverage.arrived,
                    coverage=None if coverage is None else coverage.value,
                    low_coverage=None if coverage is None else coverage.low,
                )
            )
            if watermark is not None:
                n = c.execute(
                    update(watermarks).where(watermarks.c.dataset == dataset).values(until_ns=watermark, updated_at=now)
                ).rowcount
                if not n:
                    c.execute(insert(watermarks).values(dataset=dataset, until_ns=watermark, updated_at=now))

    def audit(self, dataset: str | None = None, limit: int = 50) -> list[dict]:
        q = select(audit).order_by(audit.c.id.desc()).limit(limit)
        if dataset:
            q = q.where(audit.c.dataset == dataset)
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(q)]
