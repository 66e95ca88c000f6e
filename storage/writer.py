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

A hung InfluxDB (it accepts connections and never answers) costs one request timeout, not one per batch:
an outage is counted from the start of the first failed request, and once a batch has been spooled for
it InfluxDB is *unhealthy*: later batches go straight to the spool, at the rate they arrive, and a
background prober (``GET /ping`` every ``probe_interval`` seconds, ``probe_timeout`` each) watches it.
When a probe answers, the next write (or the idle worker) drains the spool in order, then writes live
again; a drain that fails marks it unhealthy again.

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
        probe_interval: float = 1.0,
        probe_timeout: float = 2.0,
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
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
        self._outage_since: float | None = None
        self._spool_count = len(spool)
        self._healthy = True  # False: InfluxDB is not contacted until a probe answers
        self._answered = threading.Event()  # set by the prober
        self._prober: threading.Thread | None = None
        self._probe_lock = threading.Lock()

    @property
    def spooled_batches(self) -> int:
        return self._spool_count

    @property
    def healthy(self) -> bool:
        """False while InfluxDB is considered down (batches spool without trying it)."""
        return self._healthy

    def write(self, lines: list[str], letters: Sequence[DeadLetter] = (), database: str | None = None) -> None:
        """Make ``lines`` (for ``database``, by default the writer's) and ``letters`` durable; return
        only when they are."""
        if letters:
            self.deadletters.add(letters)
        if not lines:
            return
        self.stats.batches += 1
        if (self._spool_count or not self._healthy) and not self.drain_spool():
            self._to_spool(lines, database)
            return
        delay = 0.1
        while True:
            started = time.monotonic()
            try:
                self._write_bisect(lines, database)
                self._recovered()
                return
            except InfluxError as exc:
                if isinstance(exc, DatabaseNotFound):
                    self._try(self.ensure_databases)
                self._outage(exc, started)
                if self._should_spool():
                    if self._outage_since is not None:
                        self._unhealthy()
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
        """Replay spooled batches in order; True when the spool is empty afterwards. While InfluxDB is
        unhealthy and no probe has answered, returns False at once."""
        if not self._healthy:
            if not self._answered.is_set():
                return False
            self._answered.clear()
            log.info("InfluxDB answers again; draining the spool (%d batches)", self._spool_count)
        while (item := self.spool.oldest()) is not None:
            path, database, body = item
            lines = body.decode().split("\n")
            started = time.monotonic()
            try:
                self._write_bisect(lines, database)
            except InfluxError as exc:
                if isinstance(exc, DatabaseNotFound):
                    self._try(self.ensure_databases)
                self._outage(exc, started)
                self._unhealthy()
                return False
            self.spool.remove(path)
            self._spool_count -= 1
            self.stats.batches_unspooled += 1
            self._recovered()
        self._spool_count = 0
        self._healthy = True
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

    def _outage(self, exc: InfluxError, started: float) -> None:
        """An outage counts from the start of the first request that failed (a hung InfluxDB has
        already cost the request timeout when the error arrives)."""
        if self._outage_since is None:
            self._outage_since = started
            log.warning("InfluxDB unavailable, holding writes: %s", exc)

    def _recovered(self) -> None:
        self._healthy = True
        if self._outage_since is not None:
            log.info("InfluxDB available again after %.1f s", time.monotonic() - self._outage_since)
            self._outage_since = None

    def _unhealthy(self) -> None:
        """Stop contacting InfluxDB from the writing thread; probe it in the background."""
        with self._probe_lock:
            if self._healthy:
                log.warning("InfluxDB marked unhealthy: batches spool straight to disk until it answers a probe")
            self._healthy = False
            self._answered.clear()
            if self._prober is None:
                self._prober = threading.Thread(target=self._probe_loop, name="influx-probe", daemon=True)
                self._prober.start()

    def _probe_loop(self) -> None:
        while True:
            stopping = self.stopping.wait(self.probe_interval)
            with self._probe_lock:
                if stopping or self._healthy:
                    self._prober = None  # under the lock: _unhealthy() starts a new one if needed
                    return
            if not self._answered.is_set() and self.influx.ping(timeout=self.probe_timeout):
                self._answered.set()  # the writing thread drains the spool at its next chance

    @staticmethod
    def _try(fn: Callable[[], None]) -> None:
        with contextlib.suppress(InfluxError):
            fn()
