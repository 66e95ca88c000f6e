"""The batch writer: returns only when a batch is durable, in InfluxDB or in the local spool.

Outcomes (see ``storage.influx``):
- written: done;
- 400/413: bisect; lines InfluxDB refuses on their own become dead letters with its error text,
  the rest is written (writes are idempotent, so re-sending accepted lines is harmless);
- 404: create the databases, retry;
- retryable (connection error, 5xx, 429): back off (honouring Retry-After) and retry; once the
  outage has lasted ``spool_after`` seconds, or the backlog waiting in memory exceeds
  ``max_buffer_bytes``, or the caller is stopping, spool the batch to disk instead;
- 401/403: ``ConfigurationError`` propagates: the worker stops.

While the spool holds anything, new batches go behind it, so InfluxDB receives batches in order.

The writer knows the store -> database mapping (``storage.databases``): ``write_points`` takes Points,
renders them (``storage.lineprotocol``) and writes each store's lines to its database; a Point line
protocol cannot carry becomes a write-stage dead letter (``unrepresentable``). ``write_stores`` takes lines
already rendered per store (the worker renders as messages arrive, to size its batches).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from smartzone.errors import DatabaseNotFound, InfluxError
from smartzone.model import DeadLetter, Point, Store
from storage.deadletters import DeadLetterStore
from storage.influx import Influx
from storage.lineprotocol import join, render_by_store
from storage.spool import Spool

log = logging.getLogger(__name__)

REJECTED = "rejected_by_influxdb"
UNREPRESENTABLE = "unrepresentable"


@dataclass
class WriterStats:
    """Counters owned by the writing thread (read by the metrics reporter)."""

    batches: int = 0
    lines_written: int = 0
    lines_rejected: int = 0
    batches_spooled: int = 0
    batches_unspooled: int = 0
    retries: int = 0
    latencies: list[float] = field(default_factory=list)


class Writer:
    def __init__(
        self,
        influx: Influx,
        database: str | Mapping[Store, str],
        spool: Spool,
        deadletters: DeadLetterStore,
        *,
        spool_after: float,
        max_buffer_bytes: int,
        ensure_databases: Callable[[], None],
        backlog_bytes: Callable[[], int] = lambda: 0,
        stopping: threading.Event | None = None,
    ) -> None:
        self.influx = influx
        # store -> database; a single name is the raw store's (and the default of ``write``)
        self.databases = dict(database) if isinstance(database, Mapping) else {Store.RAW: database}
        self.database = self.databases[Store.RAW]
        self.spool = spool
        self.deadletters = deadletters
        self.spool_after = spool_after
        self.max_buffer_bytes = max_buffer_bytes
        self.ensure_databases = ensure_databases
        self.backlog_bytes = backlog_bytes
        self.stopping = stopping or threading.Event()
        self.stats = WriterStats()
        self._outage_since: float | None = None
        self._spool_count = len(spool)

    @property
    def spooled_batches(self) -> int:
        return self._spool_count

    def write(self, lines: list[str], letters: Sequence[DeadLetter] = (), database: str | None = None) -> None:
        """Make ``lines`` (for ``database``, by default the writer's) and ``letters`` durable; return
        only when they are."""
        if letters:
            self.deadletters.add(letters)
        if not lines:
            return
        self.stats.batches += 1
        if self._spool_count and not self.drain_spool():
            self._to_spool(lines, database)
            return
        delay = 0.1
        while True:
            try:
                self._write_bisect(lines, database)
                self._recovered()
                return
            except InfluxError as exc:
                if isinstance(exc, DatabaseNotFound):
                    self._try(self.ensure_databases)
                self._outage(exc)
                if self._should_spool():
                    self._to_spool(lines, database)
                    return
                wait = exc.retry_after if exc.retry_after is not None else delay
                self.stats.retries += 1
                self.stopping.wait(min(wait, 30.0))
                delay = min(delay * 2, 5.0)

    def write_stores(self, lines: Mapping[Store, list[str]], letters: Sequence[DeadLetter] = ()) -> None:
        """Lines rendered per store, each to its store's database (raw first, with the letters)."""
        self.write(lines.get(Store.RAW, []), letters)
        for store, ls in lines.items():
            if ls and store != Store.RAW:
                self.write(ls, database=self.databases[store])

    def write_points(self, points: Iterable[Point], letters: Sequence[DeadLetter] = ()) -> int:
        """Points, rendered and written to their stores' databases; how many were rendered (the others
        are dead letters)."""
        lines, bad = render_by_store(points)
        if bad:
            now = datetime.now(UTC)
            letters = [
                *letters,
                *(
                    DeadLetter(
                        now,
                        f"influxdb/{self.databases.get(p.store, p.store)}",
                        repr(p).encode(errors="backslashreplace"),
                        UNREPRESENTABLE,
                        why,
                        stage="write",
                    )
                    for p, why in bad
                ),
            ]
        self.write_stores(lines, letters)
        return sum(len(ls) for ls in lines.values())

    def drain_spool(self) -> bool:
        """Replay spooled batches in order; True when the spool is empty afterwards."""
        while (item := self.spool.oldest()) is not None:
            path, database, body = item
            lines = body.decode().split("\n")
            try:
                self._write_bisect(lines, database)
            except InfluxError as exc:
                if isinstance(exc, DatabaseNotFound):
                    self._try(self.ensure_databases)
                self._outage(exc)
                return False
            self.spool.remove(path)
            self._spool_count -= 1
            self.stats.batches_unspooled += 1
            self._recovered()
        self._spool_count = 0
        return True

    # -- internals --------------------------------------------------------------------------------
    def _write_bisect(self, lines: list[str], database: str | None = None) -> None:
        database = database or self.database
        started = time.perf_counter()
        rejected: list[tuple[str, str]] = []
        self._split(lines, database, rejected)
        self.stats.latencies.append(time.perf_counter() - started)
        self.stats.lines_written += len(lines) - len(rejected)
        if rejected:
            self.stats.lines_rejected += len(rejected)
            now = datetime.now(UTC)
            self.deadletters.add(
                DeadLetter(now, f"influxdb/{database}", ln.encode(), REJECTED, err, stage="write")
                for ln, err in rejected
            )
            log.warning(
                "InfluxDB rejected lines database=%s count=%d first_error=%s", database, len(rejected), rejected[0][1]
            )

    def _split(self, lines: list[str], database: str, rejected: list[tuple[str, str]]) -> None:
        try:
            self.influx.write(database, join(lines))
        except InfluxError as exc:
            if exc.retryable:
                raise
            if len(lines) == 1:
                rejected.append((lines[0], exc.message))
                return
            mid = len(lines) // 2
            self._split(lines[:mid], database, rejected)
            self._split(lines[mid:], database, rejected)

    def _to_spool(self, lines: list[str], database: str | None = None) -> None:
        self.spool.append(database or self.database, join(lines))
        self._spool_count += 1
        self.stats.batches_spooled += 1

    def _should_spool(self) -> bool:
        if self.stopping.is_set():
            return True
        if self._outage_since is not None and time.monotonic() - self._outage_since >= self.spool_after:
            return True
        return self.backlog_bytes() > self.max_buffer_bytes

    def _outage(self, exc: InfluxError) -> None:
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.warning("InfluxDB unavailable, holding writes: %s", exc)

    def _recovered(self) -> None:
        if self._outage_since is not None:
            log.info("InfluxDB available again after %.1f s", time.monotonic() - self._outage_since)
            self._outage_since = None

    @staticmethod
    def _try(fn: Callable[[], None]) -> None:
        with contextlib.suppress(InfluxError):
            fn()
