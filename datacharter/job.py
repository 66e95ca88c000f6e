"""The charter job: raw windows in, charter-compliant open points out, incrementally and restart-safe.

For each dataset of the charter, in UTC-day windows:

1. From the dataset's watermark (the end of its last closed window; the first raw data's day on a
   first run) up to now, each window is read from the raw (or pseudonymous) database, given to the
   dataset's method (``datacharter.engine``) and written to the open database: one point per
   (dataset, cell, time bin), tagged with the charter version. Only closed bins (ended ``settle``
   ago) are published; the current day is processed again on the next run.
2. Late data: closed windows within ``late_window`` whose raw content changed since they were processed
   (rows added: the row count grew; readings rewritten with the same timestamp: the count is the same, a
   field's sum is not; one ``count(*), sum(*)`` query per dataset and run, per UTC day) are processed again,
   and only their points are replaced, for datasets the charter lets re-publish (``late_data: reprocess``:
   levels of the environment). Datasets about people (``late_data: freeze``) publish each day once, when it
   has closed, and never change it: a re-release would show, by difference, what the late subjects
   contributed. Their late rows and rewritten readings are counted in the audit.
3. A window's old points are deleted and its new points written only when they differ (a digest):
   re-running over the same input and charter version changes nothing, and noise is never re-drawn.
4. Each window processed leaves an audit record; the watermark moves in the same transaction.
5. Each window says how complete it was (``datacharter.coverage``): the share of the readings its sensors should
   have sent that arrived, in the audit (with both counts), on every point of the window (field ``coverage``)
   and, per dataset and day, in the open database's ``window_coverage`` (``low`` below
   ``charter.coverage_threshold``), which the catalogue and the API read.

The raw data's retention policies come from the charter (``retention``): the job applies them at
start, as the ingest worker does.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from datacharter.charter import COVERAGE, Charter, Dataset
from datacharter.coverage import Coverage, Schedule, measure
from datacharter.engine import DAY_NS, NS, Context, Result, digest, release, run
from datacharter.noise import load_key
from datacharter.store import CharterStore
from smartzone.model import Point, Store
from smartzone.names import parse_duration
from smartzone.quantities import QUANTITIES
from smartzone.registry import Registry
from smartzone.settings import Settings
from storage.databases import databases, ensure_databases
from storage.influx import Influx, quote_ident
from storage.lineprotocol import join, render, render_by_store

log = logging.getLogger(__name__)

# The job's self-metrics in the ops database: one point per dataset and run (read by the operations dashboard).
METRICS = "charter"  # measurement; tags dataset, charter_version
METRICS_FIELDS = ("windows", "readings_in", "published", "suppressed", "written", "lag_s")
# per dataset and window (tag dataset, time = the window's start) in the open database: how complete it was
WINDOW_COVERAGE = "window_coverage"

# tag columns of raw measurements: strings, "" when the point has none
TAGS = (
    "sensor",
    "gateway",
    "technology",
    "category",
    "cell",
    "subject",
    "kind",
    "randomised",
    "class",
    "rx_gateway",
    "modulation",
    "source",
)


@dataclass
class WindowReport:
    dataset: str
    start: int
    end: int
    readings_in: int
    published: int  # the window's points (all of its bins published so far)
    suppressed: int
    deferred: int
    written: bool
    reprocessed: bool
    read_s: float
    apply_s: float
    coverage: Coverage | None = None
    # what this run added: points of bins not published before (the rest of a written window is re-written),
    # and groups suppressed that the window's previous processing had not suppressed
    new_points: int = 0
    new_suppressed: int = 0


@dataclass(frozen=True)
class Content:
    """A raw window's content as one InfluxQL query sums it up, per UTC day: each field's count and, for numbers,
    its sum (booleans: the count of ``true``; strings: the count only, InfluxDB sums no text). Rows added raise
    a count; a reading rewritten with the same timestamp (InfluxDB overwrites it) changes a sum."""

    counts: dict[str, int]
    sums: dict[str, float]

    @property
    def rows(self) -> int:
        """The window's size as ``SELECT count(*)`` measures it: the largest count of any field."""
        return max(self.counts.values(), default=0)

    def dumps(self) -> str:
        return json.dumps({"count": self.counts, "sum": self.sums}, sort_keys=True, separators=(",", ":"))

    @classmethod
    def loads(cls, text: str) -> Content:
        doc = json.loads(text)
        return cls(doc["count"], doc["sum"])

    def same(self, other: Content) -> bool:
        """Equal counts and sums; float sums up to rounding (InfluxDB may add a day's partial sums in another
        order)."""
        if self.counts != other.counts or self.sums.keys() != other.sums.keys():
            return False
        for k, a in self.sums.items():
            b = other.sums[k]
            if isinstance(a, int) and isinstance(b, int):
                if a != b:
                    return False
            elif not math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-9):
                return False
        return True


EMPTY = Content({}, {})


# The stores the charter job reads (raw, pseudonymous) and writes (open, its run metrics in ops): never the
# experiments' database, on which it has no grant.
STORES = (Store.RAW, Store.PSEUDONYMOUS, Store.OPEN, Store.OPS)


def ensure_retention(influx: Influx, settings: Settings, charter: Charter) -> None:
    """The charter job's stores' databases, with the raw and pseudonymous retention policies from the charter
    (``storage.databases``)."""
    ensure_databases(influx, settings, charter.doc.retention, STORES)


class CharterJob:
    def __init__(
        self,
        settings: Settings,
        charter: Charter | None = None,
        registry: Registry | None = None,
        influx: Influx | None = None,
        store: CharterStore | None = None,
    ) -> None:
        self.settings = settings
        self.charter = charter or Charter.load(settings.charter.path)
        self.registry = registry or Registry.load(settings.registry)
        self.influx = influx or Influx(settings.influx)
        self.store = store or CharterStore(settings.sql_url)
        self.dbs = databases(settings)  # store -> database; a dataset's source names its store
        self.open_db = self.dbs[Store.OPEN]
        self.settle_ns = int(parse_duration(settings.charter.settle)) * NS
        self.late_ns = int(parse_duration(settings.charter.late_window)) * NS
        self.noise_key = load_key(settings.charter.noise_key_file or settings.data_dir / "charter" / "noise.key")
        sensors = self.registry.sensors.values()
        self.subjects = {s.id: s.subjects for s in sensors}
        self.owners = {s.id: s.owner_id for s in sensors}
        self.vehicles = {s.id: s.vehicle_id for s in sensors if s.mobile}
        self.cells = {s.id: self.registry.cell_of(s.id) for s in sensors}
        # per dataset, the registered sensors it may read (category, placement, fixed or mobile): deny by default
        self.admitted = {name: {s.id for s in sensors if ds.admits(s)} for name, ds in self.charter.datasets.items()}
        self.threshold = settings.charter.coverage_threshold
        # per dataset, when each of its sensors should report (the registry's intervals; sensors without are left out)
        self.schedules = {
            name: {s: sch for s in ids if (sch := self._schedule(s)) is not None} for name, ids in self.admitted.items()
        }
        self._retention_applied = False
        self._releases: dict[tuple, dict[str | None, Result]] = {}  # the last release computed in this run

    def _schedule(self, sensor_id: str) -> Schedule | None:
        interval = self.registry.interval(sensor_id)
        if interval is None:
            return None
        s = self.registry.sensors[sensor_id]
        ns = lambda t: None if t is None else int(t.timestamp()) * NS  # noqa: E731 - a local conversion
        return Schedule(interval, ns(s.installed), ns(s.removed))

    def close(self) -> None:
        self.influx.close()
        self.store.close()

    # -- running --------------------------------------------------------------------------------------
    def run_once(self, now: datetime | None = None, datasets: list[str] | None = None) -> list[WindowReport]:
        now_ns = int((now or datetime.now(UTC)).timestamp() * 1e9)
        if not self._retention_applied:
            ensure_retention(self.influx, self.settings, self.charter)
            self._retention_applied = True
        closed_until = now_ns - self.settle_ns
        self._releases = {}
        self._purge_letters(now_ns)
        reports: list[WindowReport] = []
        for name, ds in self.charter.datasets.items():
            if datasets and name not in datasets:
                continue
            reports += self._dataset(name, ds, closed_until)
        self._metrics(reports, now_ns, datasets)
        return reports

    def _metrics(self, reports: list[WindowReport], now_ns: int, datasets: list[str] | None) -> None:
        """The run's figures per dataset in the ops database (measurement ``charter``) for the operations
        dashboard: groups published and suppressed, readings in, and the lag of the watermark behind now."""
        points = []
        for name in self.charter.datasets:
            if datasets and name not in datasets:
                continue
            mine = [r for r in reports if r.dataset == name]
            wm = self.store.watermark(name)
            windows, readings_in, published, suppressed, written, lag_s = METRICS_FIELDS
            fields: dict[str, int | float] = {
                windows: len(mine),
                readings_in: sum(r.readings_in for r in mine),
                published: sum(r.published for r in mine),
                suppressed: sum(r.suppressed for r in mine),
                written: sum(r.written for r in mine),
            }
            if wm is not None:
                fields[lag_s] = (now_ns - wm) / 1e9
            points.append(
                Point(METRICS, {"charter_version": self.charter.version, "dataset": name}, fields, now_ns, Store.OPS)
            )
        if points:
            try:
                lines, _ = render_by_store(points)
                for store, ls in lines.items():
                    self.influx.write(self.dbs[store], join(ls))
            except Exception:  # the metrics are for watching; the published data does not depend on them
                log.warning("charter: could not write the run's metrics to %s", self.dbs[Store.OPS], exc_info=True)

    def _purge_letters(self, now_ns: int) -> None:
        """Dead letters of sightings hold pseudonyms (scrubbed payloads, refused lines): the charter's
        pseudonymous retention applies to them too."""
        from storage.deadletters import DeadLetterStore

        cutoff = datetime.fromtimestamp(now_ns / 1e9 - self.charter.retention_s["pseudonymous"], UTC)
        store = DeadLetterStore(self.settings.sql_url)
        try:
            n = store.purge(cutoff, ["gw/%/sightings/%", f"influxdb/{self.dbs[Store.PSEUDONYMOUS]}"])
        finally:
            store.close()
        if n:
            log.info(
                "charter: deleted %d dead letters holding pseudonyms older than %s",
                n,
                self.charter.doc.retention.pseudonymous,
            )

    def run_forever(self, every_s: float, stop: threading.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                log.info("%s", summary(self.run_once(), self.charter.version))
            except Exception:  # InfluxDB away, ... : the next run retries; nothing advanced
                log.exception("charter run failed; retrying in %.0f s", every_s)
            stop.wait(max(0.0, every_s - (time.monotonic() - started)))

    # -- one dataset ------------------------------------------------------------------------------------
    def _dataset(self, name: str, ds: Dataset, closed_until: int) -> list[WindowReport]:
        wm = self.store.watermark(name)
        if wm is None:
            first = self._first_time(ds)
            if first is None:
                return []
            wm = first // DAY_NS * DAY_NS
        reports = []
        frozen = ds.late_data == "freeze"
        # late data in closed windows
        for start, late in self._grown(name, ds, wm, closed_until):
            if frozen:
                self._late_ignored(name, start, late)
            else:
                reports.append(self._window(name, ds, start, closed_until, reprocessed=True))
        # new windows, up to the one holding closed_until (the open day; a frozen dataset waits for its close)
        start = wm
        while start + (DAY_NS if frozen else 0) <= closed_until:
            reports.append(self._window(name, ds, start, closed_until, reprocessed=False))
            start += DAY_NS
        return reports

    def _late_ignored(self, name: str, start: int, late: int) -> None:
        """A frozen day received late rows (``late``) or rewritten readings: count them in the audit (once: the
        window's new content is recorded), publish nothing new."""
        seen = self.store.window(name, start)
        self.store.record(
            name,
            start,
            start + DAY_NS,
            version=seen.charter_version if seen else self.charter.version,
            readings_in=0,
            rows_seen=(seen.rows_seen if seen else 0) + late,
            published=seen.points if seen else 0,
            suppressed=0,
            deferred=0,
            digest=seen.digest if seen else "",
            reprocessed=False,
            written=False,
            watermark=None,
            late_rows=late,
            fingerprint=self._fingerprint(name, start),
            changed=True,
        )
        day = datetime.fromtimestamp(start / 1e9, UTC).date()
        if late:
            log.info("charter: %s %s received %d late rows; the day is frozen, nothing re-published", name, day, late)
        else:
            log.info("charter: %s %s had readings rewritten; the day is frozen, nothing re-published", name, day)

    def _window(self, name: str, ds: Dataset, start: int, closed_until: int, *, reprocessed: bool) -> WindowReport:
        end = start + DAY_NS
        t0 = time.perf_counter()
        frame, positions = self.read(ds, start, end)
        partners = self._partners(ds, start, end, frame)
        t1 = time.perf_counter()
        result = self.apply(ds, frame, positions, closed_until, window=(start, end), partners=partners)
        t2 = time.perf_counter()
        cov = measure(
            ds, self.admit(name, frame), self.schedules.get(name, {}), start, min(end, closed_until), self.threshold
        )
        points = result.points
        if cov is not None and not points.empty:
            points = points.assign(**{COVERAGE: cov.value})  # every point says how complete its window was
        dg = digest(points)
        previous = self.store.window(name, start)
        written = previous is None or previous.digest != dg or previous.points != len(points)
        if written:
            self._replace(name, start, end, points)
            if cov is not None:
                self._publish_coverage(name, start, cov)
        before = previous.points if previous is not None else 0
        before_suppressed = (previous.suppressed or 0) if previous is not None else 0
        closed = end <= closed_until
        self.store.record(
            name,
            start,
            end,
            version=self.charter.version,
            readings_in=result.readings_in,
            rows_seen=rows_seen(frame[frame["t"] >= start]),
            published=len(points),
            suppressed=result.groups_suppressed,
            deferred=result.rows_deferred,
            digest=dg,
            reprocessed=reprocessed,
            written=written,
            watermark=end if closed and not reprocessed else None,
            fingerprint=self._fingerprint(name, start),
            changed=reprocessed,
            coverage=cov,
        )
        return WindowReport(
            name,
            start,
            end,
            result.readings_in,
            len(points),
            result.groups_suppressed,
            result.rows_deferred,
            written,
            reprocessed,
            t1 - t0,
            t2 - t1,
            cov,
            max(0, len(points) - before) if written else 0,
            max(0, result.groups_suppressed - before_suppressed) if written else 0,
        )

    def _publish_coverage(self, name: str, start: int, cov: Coverage) -> None:
        """The window's coverage in the open database (``window_coverage``, tag ``dataset``, time = the day): the
        published share and its flag only; the counts stay in the audit."""
        point = Point(
            WINDOW_COVERAGE,
            {"dataset": name},
            {COVERAGE: cov.value, "low": cov.low, "charter_version": self.charter.version},
            start,
            Store.OPEN,
        )
        self.influx.write(self.open_db, render(point).encode())

    # -- pure part --------------------------------------------------------------------------------------
    def apply(
        self,
        ds: Dataset,
        frame: pd.DataFrame,
        positions: pd.DataFrame | None,
        closed_until: int,
        window: tuple[int, int] | None = None,
        partners: dict[str, pd.DataFrame] | None = None,
    ) -> Result:
        """The dataset's method on a window's rows (only the rows of sensors the dataset admits count); for a
        dataset of a release, together with the release's other datasets (``partners``: their rows, read
        when not given) on the same window. A release is computed once per run and window."""
        name = self._name(ds)
        ctx = self.context(name, closed_until, window)
        frame = self.admit(name, frame)
        if ds.release is None or window is None:
            return run(ds, frame, positions, ctx)
        if partners is None:
            partners = self._partners(ds, *window)
        key = (ds.release, window, closed_until)
        if key not in self._releases:
            inputs: dict[str | None, tuple[Dataset, pd.DataFrame, pd.DataFrame | None]] = {name: (ds, frame, positions)}
            for other, raw in partners.items():
                inputs[other] = (self.charter.datasets[other], self.admit(other, raw), None)
            self._releases = {key: release(inputs, ctx)}  # the last release only: its other datasets come next
        return self._releases[key][name]

    def _partners(self, ds: Dataset, start: int, end: int, own: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
        """The rows of the other datasets of ``ds``'s release on a window: ``own`` (``ds``'s rows) where they read
        the same measurement, else one read per measurement."""
        if ds.release is None:
            return {}
        mine = (ds.source.database, ds.source.measurement)
        frames: dict[tuple, pd.DataFrame] = {} if own is None else {mine: own}
        out = {}
        for other, ods in self.charter.datasets.items():
            if ods.release == ds.release and ods is not ds:
                src = (ods.source.database, ods.source.measurement)
                if src not in frames:
                    frames[src] = self.read(ods, start, end)[0]
                out[other] = frames[src]
        return out

    def context(self, name: str | None, closed_until: int, window: tuple[int, int] | None = None) -> Context:
        admitted = self._admitted(name)
        return Context(
            self.charter.version,
            closed_until,
            self.subjects,
            self.noise_key,
            owners=self.owners,
            vehicles=self.vehicles,
            cells={s: self.cells[s] for s in admitted if self.cells.get(s)},
            window=window,
        )

    def admit(self, name: str | None, frame: pd.DataFrame) -> pd.DataFrame:
        """The rows of the sensors the dataset may read; rows of other or unknown sensors are dropped."""
        if frame.empty or "sensor" not in frame:
            return frame
        return frame[frame["sensor"].isin(self._admitted(name))]

    def _admitted(self, name: str | None) -> set[str]:
        """The sensors the dataset ``name`` may read; none for a dataset not in the charter (``name`` None)."""
        return self.admitted.get(name, set()) if name is not None else set()

    def _name(self, ds: Dataset) -> str | None:
        named = [n for n, d in self.charter.datasets.items() if d is ds] or [
            n for n, d in self.charter.datasets.items() if d == ds
        ]
        return named[0] if named else None

    # -- InfluxDB ---------------------------------------------------------------------------------------
    def read(self, ds: Dataset, start: int, end: int) -> tuple[pd.DataFrame, pd.DataFrame | None]:
        db = self.dbs[Store(ds.source.database)]
        # state datasets read back state_ttl before the window: the state each sensor was in at its start
        lookback = int(parse_duration(ds.state_ttl)) * NS if ds.state_ttl else 0
        frame = self._select(db, ds.source.measurement, start - lookback, end)
        positions = None
        if ds.source.positions:
            positions = self._select(db, ds.source.positions, start - 3600 * NS, end + 3600 * NS)
        return frame, positions

    def _select(self, db: str, measurement: str, start: int, end: int) -> pd.DataFrame:
        q = f"SELECT * FROM {quote_ident(measurement)} WHERE time >= $start AND time < $end"  # noqa: S608 - checked
        df = self.influx.frame(q, db, {"start": start, "end": end - 1}, strings=TAGS)
        return normalise(df)

    def _first_time(self, ds: Dataset) -> int | None:
        db = self.dbs[Store(ds.source.database)]
        m = quote_ident(ds.source.measurement)
        df = self.influx.frame(f"SELECT * FROM {m} LIMIT 1", db)  # noqa: S608 - quote_ident checked it
        if df.empty:
            return None
        return int(df["time"].iloc[0])

    def _counts(self, ds: Dataset, since: int, until: int) -> dict[int, Content]:
        """The raw content (``Content``) of each UTC day in [since, until) that has rows: one request, ``count(*)``
        and ``sum(*)`` per day (InfluxDB 1.6 sums integer and float fields and leaves booleans and strings out),
        and per boolean field of the measurement its count of ``true``."""
        db = self.dbs[Store(ds.source.database)]
        m = quote_ident(ds.source.measurement)
        when = "time >= $a AND time < $b GROUP BY time(1d)"
        booleans = sorted(
            q.key.split(".", 1)[1]
            for q in QUANTITIES.values()
            if q.kind == "bool" and q.key.startswith(f"{ds.source.measurement}.")
        )
        q = ";".join(
            [
                f"SELECT count(*), sum(*) FROM {m} WHERE {when}",  # noqa: S608 - identifiers checked
                *(
                    f"SELECT count({quote_ident(b)}) FROM {m} WHERE {quote_ident(b)} = true AND {when}"  # noqa: S608
                    for b in booleans
                ),
            ]
        )
        results = self.influx.query(q, db, {"a": since, "b": until - 1})
        counts: dict[int, dict[str, int]] = {}
        sums: dict[int, dict[str, float]] = {}
        for i, res in enumerate(results):
            for series in res.get("series", []):
                for values in series["values"]:
                    row = dict(zip(series["columns"], values, strict=True))
                    day = int(row.pop("time"))
                    for k, v in row.items():
                        # a day's columns are those of the whole range: a field without values that day is left
                        # out, so that a day's content does not depend on the range asked
                        if v is None or (k.startswith("count_") and not v) or (i and not v):
                            continue
                        if i:  # a boolean field's count of true
                            sums.setdefault(day, {})[booleans[i - 1]] = int(v)
                        elif k.startswith("count_"):
                            counts.setdefault(day, {})[k.removeprefix("count_")] = int(v)
                        elif k.startswith("sum_"):
                            sums.setdefault(day, {})[k.removeprefix("sum_")] = v
        return {day: Content(c, sums.get(day, {})) for day, c in counts.items()}

    def _grown(self, name: str, ds: Dataset, wm: int, closed_until: int) -> list[tuple[int, int]]:
        """(window, rows gained) of closed windows within the late window whose raw content changed since they
        were processed: rows added (the row count grew, as ``rows_seen`` measured it), or readings rewritten
        with the same timestamp (no fewer rows, another ``Content``: 0 rows gained). Fewer rows (retention)
        are ignored: published data outlives raw data.

        The one query also takes the content of every window this run may process, before any is read
        (``_fingerprint``): a change that lands after it shows at the next run."""
        since = max(0, (closed_until - self.late_ns) // DAY_NS * DAY_NS)
        first = min(since, wm)
        until = closed_until // DAY_NS * DAY_NS + DAY_NS  # the end of the day holding closed_until
        contents = self._counts(ds, first, until)
        self._contents = (name, first, until, contents)
        if since >= wm:
            return []
        seen = self.store.windows_since(name, since)
        out = []
        for s, now in sorted(contents.items()):
            if s >= wm:
                continue
            w = seen.get(s)
            if w is None or now.rows > w.rows_seen:
                out.append((s, now.rows - (w.rows_seen if w else 0)))
            elif w.fingerprint is None:  # processed before contents were recorded: today's content is the baseline
                self.store.set_fingerprint(name, s, now.dumps())
            else:
                before = Content.loads(w.fingerprint)
                if now.rows >= before.rows and not now.same(before):
                    out.append((s, 0))
        return out

    # the content of the windows of the current dataset, as ``_grown`` found it: (dataset, since, until, per day)
    _contents: tuple[str, int, int, dict[int, Content]] | None = None

    def _fingerprint(self, name: str, start: int) -> str | None:
        """The content the window had before it was read (``_grown``'s query), for ``charter_windows``; None when
        not known (then only a grown row count re-processes it)."""
        if self._contents is None:
            return None
        dataset, since, until, contents = self._contents
        if dataset != name or not since <= start < until:
            return None
        return contents.get(start, EMPTY).dumps()

    def _replace(self, dataset: str, start: int, end: int, points: pd.DataFrame) -> None:
        m = quote_ident(dataset)
        q = f"DELETE FROM {m} WHERE time >= {int(start)} AND time < {int(end)}"  # noqa: S608 - identifier, integers
        self.influx.query(q, self.open_db, write=True)
        if not points.empty:
            body = to_lines(dataset, points, self.charter.version, self.charter.datasets[dataset].integer_fields)
            for i in range(0, len(body), 5000):
                self.influx.write(self.open_db, "\n".join(body[i : i + 5000]).encode())


def summary(reports: list[WindowReport], version: str) -> str:
    """One line on what a run did, per dataset: windows processed and written, points new in this run (bins not
    published before) and re-written, groups newly suppressed, and each window's coverage (``!`` below the
    threshold). Only this run's work: a window re-processed with nothing new adds nothing."""
    parts = []
    for name in dict.fromkeys(r.dataset for r in reports):
        mine = [r for r in reports if r.dataset == name]
        written = [r for r in mine if r.written]
        new = sum(r.new_points for r in mine)
        days = " ".join(
            f"{datetime.fromtimestamp(r.start / 1e9, UTC):%Y-%m-%d}={c.value:.2f}{'!' if c.low else ''}"
            for r in mine
            if (c := r.coverage) is not None
        )
        parts.append(
            f"{name}: windows={len(mine)} written={len(written)} new_points={new} "
            f"rewritten_points={sum(r.published for r in written) - new} "
            f"suppressed={sum(r.new_suppressed for r in mine)}" + (f" coverage {days}" if days else "")
        )
    return f"charter {version} run: " + ("; ".join(parts) if parts else "nothing to publish")


def rows_seen(frame: pd.DataFrame) -> int:
    """The window's raw size as ``SELECT count(*)`` measures it (the largest count of any field), so a
    later count that exceeds it means late data."""
    fields = [c for c in frame.columns if c != "t" and c not in TAGS]
    return int(frame[fields].notna().sum().max()) if fields and len(frame) else 0


def normalise(df: pd.DataFrame) -> pd.DataFrame:
    """InfluxDB's CSV rows: ``t`` (int ns), tags as strings ("" when unset), fields as read."""
    if df.empty:
        return pd.DataFrame(
            {"t": pd.Series(dtype=np.int64), "sensor": pd.Series(dtype=object), "cell": pd.Series(dtype=object)}
        )
    df = df.rename(columns={"time": "t"})
    df["t"] = df["t"].astype(np.int64)
    for c in TAGS:
        if c in df:
            df[c] = df[c].fillna("").astype(str)
    for c in ("sensor", "cell"):
        if c not in df:
            df[c] = ""
    return df


def to_points(dataset: str, points: pd.DataFrame, version: str, integers: set[str]) -> list[Point]:
    """Open points (store ``open``): tags bin, cell, charter_version, (profile,) resolution."""
    fields = [c for c in points.columns if c not in ("cell", "resolution", "bin", "time", "profile")]
    out = []
    for r in points.to_dict("records"):
        values = {
            f: int(r[f]) if f in integers else float(r[f]) for f in fields if r[f] is not None and not pd.isna(r[f])
        }
        if not values:
            continue
        tags = {"bin": r["bin"], "cell": r["cell"], "charter_version": version, "resolution": str(int(r["resolution"]))}
        if "profile" in r:
            tags["profile"] = str(r["profile"])
        out.append(Point(dataset, tags, values, int(r["time"]), Store.OPEN))
    return out


def to_lines(dataset: str, points: pd.DataFrame, version: str, integers: set[str]) -> list[str]:
    """Open points as line protocol (``storage.lineprotocol``)."""
    return [render(p) for p in to_points(dataset, points, version, integers)]
