"""The API's only way to InfluxDB: the open database, read-only, by allow-listed names.

``OpenData`` holds the name of one database, the charter's open database, and no other: there is no
parameter through which a request could name the raw, pseudonymous or ops databases. Every query is
built from identifiers that are checked against the charter (dataset ids, their allow-listed fields,
the open points' tags) and quoted; every value goes in as a bound parameter. ``ObservationQuery`` builds
the InfluxQL of one validated observations request (the charter's points, or coarser bins derived from them)
and reads it in pages. ``open_db`` turns a failure of the open database into a 503 problem.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from api.problems import Problem
from datacharter.charter import COVERAGE, POINT_TAGS, Charter, Dataset
from smartzone.names import parse_duration
from smartzone.settings import Settings
from storage.influx import Influx, quote_ident

TAGS = (*POINT_TAGS, "profile")
WINDOW_COVERAGE = "window_coverage"  # the charter job's coverage per dataset and day (datacharter.job)
CHUNK = 10_000  # rows per InfluxDB query when a page streams: memory stays flat whatever the page size
AGG_SQL = {"sum": "sum", "count": "sum", "mean": "mean", "min": "min", "max": "max"}  # coarser bins, per aggregate


class OpenData:
    """The charter's open database, and only it: checked names, bound values."""

    def __init__(self, settings: Settings, charter: Charter, influx: Influx | None = None) -> None:
        self.database = settings.charter.open_database
        self.charter = charter
        self._influx = influx or Influx(settings.influx)

    def close(self) -> None:
        self._influx.close()

    def ping(self) -> bool:
        return self._influx.ping()

    def ready(self) -> bool:
        """InfluxDB answers and the open database exists."""
        try:
            self._influx.query("SHOW MEASUREMENTS LIMIT 1", self.database)
            return True
        except Exception:
            return False

    # -- checked names ---------------------------------------------------------------------------------
    def dataset(self, name: str) -> Dataset:
        """The charter's dataset ``name`` (KeyError otherwise): the only measurements a query may name."""
        return self.charter.datasets[name]

    def measurement(self, name: str) -> str:
        self.dataset(name)
        return quote_ident(name)

    def field(self, dataset: str, name: str) -> str:
        if name not in self.dataset(dataset).allowed_fields:
            raise KeyError(name)
        return quote_ident(name)

    # -- queries ----------------------------------------------------------------------------------------
    def rows(self, q: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self._influx.rows(q, self.database, params)

    def frame(self, q: str, params: dict[str, Any] | None = None):
        return self._influx.frame(q, self.database, params, strings=TAGS)

    def csv_stream(self, q: str, params: dict[str, Any] | None = None):
        return self._influx.csv_stream(q, self.database, params)

    def coverage(self, dataset: str) -> tuple[int, int] | None:
        """(first, last) time of the dataset's published points, ns; None when it has none yet."""
        m = self.measurement(dataset)
        first = self.rows(f'SELECT first("n_contributors") FROM {m}')  # noqa: S608 - checked identifier
        last = self.rows(f'SELECT last("n_contributors") FROM {m}')  # noqa: S608 - checked identifier
        if not first or not last:
            return None
        return int(first[0]["time"]), int(last[0]["time"])

    def window_coverage(self, dataset: str, start: int | None = None, end: int | None = None) -> list[dict[str, Any]]:
        """The charter job's coverage of the dataset's windows (``window_coverage``: time = the UTC day, ``coverage``,
        ``low``), oldest first, within [start, end) when given."""
        self.dataset(dataset)
        where = ['"dataset" = $dataset']
        params: dict[str, Any] = {"dataset": dataset}
        if start is not None:
            where.append("time >= $start")
            params["start"] = start
        if end is not None:
            where.append("time < $end")
            params["end"] = end
        q = f'SELECT "coverage", "low" FROM {quote_ident(WINDOW_COVERAGE)} WHERE {" AND ".join(where)}'  # noqa: S608
        return self.rows(q, params)

    def cells(self, dataset: str | None = None) -> set[str]:
        """The cells that have published points (of one dataset, or of all)."""
        names = [dataset] if dataset else list(self.charter.datasets)
        out: set[str] = set()
        for name in names:
            m = self.measurement(name)
            for r in self.rows(f'SHOW TAG VALUES FROM {m} WITH KEY = "cell"'):
                out.add(r["value"])
        return out


def temporal_coverage(store: OpenData, name: str, ds: Dataset) -> tuple[int, int] | None:
    """(start of the first published bin, end of the last), ns; None when nothing is published yet."""
    span = store.coverage(name)
    if span is None:
        return None
    m = store.measurement(name)
    end = span[1]
    for row in store.rows(f'SELECT last("n_contributors") FROM {m} GROUP BY "bin"'):  # noqa: S608 - checked name
        try:
            b = int(parse_duration(str(row.get("bin") or ds.time.bin))) * 1_000_000_000
        except Exception:  # an unexpected tag: fall back to the dataset's bin
            b = int(parse_duration(ds.time.bin)) * 1_000_000_000
        t = int(row["time"])
        end = max(end, t // b * b + b)
    return span[0], end


def open_db(fn):
    """Call ``fn`` (a query of the open database); a failure answers 503 rather than a bare 500."""
    try:
        return fn()
    except Problem:
        raise
    except Exception as exc:
        raise Problem(
            503,
            "open-database-unavailable",
            "the open database did not answer; retry later",
            headers={"Retry-After": "30"},
        ) from exc


class ObservationQuery:
    """One validated request, and the InfluxQL it runs (identifiers checked, values bound)."""

    def __init__(
        self,
        store: OpenData,
        dataset: str,
        ds: Dataset,
        start: int,
        end: int,
        res: str,
        res_ns: int,
        cells: list[str] | None,
        outputs: list[tuple[str, str, str]],
        level: str,
        *,
        min_coverage: float | None = None,
        chosen: bool = False,
    ) -> None:
        """``chosen``: the request named its fields; then a row is returned only if one of them has a value."""
        self.store, self.dataset, self.ds = store, dataset, ds
        # datasets of events have no coverage; the others' rows carry their window's
        self.coverage = ds.coverage_measured
        self.start, self.end, self.res, self.res_ns = start, end, res, res_ns
        self.cells, self.outputs, self.level = cells, outputs, level
        self.derived = res != ds.time.bin
        self.columns = [
            "time",
            "cell",
            "h3_resolution",
            "bin",
            "charter_version",
            "n_contributors",
            *([COVERAGE] if self.coverage else []),
            *[o[0] for o in outputs],
        ]
        # the counts the charter writes as integers (coarser resolutions sum them: integers still); in every
        # format they stay integers, missing where a point lacks them (a small count moved to a coarser bin)
        counts = ds.integer_fields
        self.integers = [o[0] for o in outputs if o[0] in counts]
        if "profile" in ds.fields or ds.method == "profiles":
            self.columns.insert(4, "profile")
        m = store.measurement(dataset)
        where = ["time >= $start", "time < $end"]
        self.params: dict = {"start": start, "end": end}
        if level == "finest":
            where.append('"bin" = $bin')
            where.append('"resolution" = $h3res')
            self.params.update(bin=ds.time.bin, h3res=str(ds.space.resolution))
        elif level == "rollups":
            where.append('("bin" != $bin OR "resolution" != $h3res)')
            self.params.update(bin=ds.time.bin, h3res=str(ds.space.resolution))
        if cells:
            where.append("(" + " OR ".join(f'"cell" = $c{i}' for i in range(len(cells))) + ")")
            self.params.update({f"c{i}": c for i, c in enumerate(cells)})
        if min_coverage is not None:  # rows of windows at least this complete (unmeasured ones are left out)
            where.append('"coverage" >= $min_coverage')
            self.params["min_coverage"] = float(min_coverage)
        if chosen and outputs:  # a field equals itself only where the point has it (no NaN in InfluxDB)
            named = [store.field(dataset, o) for o, _f, _a in outputs]
            where.append("(" + " OR ".join(f"{f} = {f}" for f in named) + ")")
        self.where = " AND ".join(where)
        tags = '"cell", "resolution", "bin", "charter_version"' + (', "profile"' if "profile" in self.columns else "")
        if self.derived:
            aggs = ", ".join(f"{AGG_SQL[a]}({store.field(dataset, o)}) AS {quote_ident(o)}" for o, _f, a in outputs)
            # names: checked against the charter and quoted; res: matched [0-9]{1,4}[mhd]; values: bound
            cov = ', min("coverage") AS "coverage"' if self.coverage else ""  # the least complete day of the bin
            self.select = (
                f'SELECT max("n_contributors") AS "n_contributors"{cov}{", " + aggs if aggs else ""} '  # noqa: S608
                f"FROM {m} WHERE {{where}} GROUP BY time({res}), {tags} fill(none)"
            )
        else:
            cols = ", ".join(store.field(dataset, o) for o, _f, _a in outputs)
            cov = ', "coverage"' if self.coverage else ""
            self.select = (
                f'SELECT "n_contributors"{cov}{", " + cols if cols else ""}, {tags} '  # noqa: S608 - checked
                f"FROM {m} WHERE {{where}} LIMIT {{limit}} OFFSET {{offset}}"
            )

    def chunks(self, cursor: tuple[int, int], limit: int) -> Iterator[tuple[pd.DataFrame, tuple[int, int] | None]]:
        """Frames of at most CHUNK rows, up to ``limit`` rows in all; with each, the cursor after it (None at
        the end of the result)."""
        t, skip = cursor
        left = limit
        while left > 0:
            want = min(CHUNK, left)
            frame = self._fetch(max(t, self.start), skip, want + 1)
            more = len(frame) > want
            frame = frame.iloc[:want]
            left -= len(frame)
            if frame.empty:
                yield frame, None
                return
            last = int(frame["time"].iloc[-1])
            at_last = int((frame["time"].to_numpy() == last).sum())
            nxt = (last, at_last + (skip if last == t else 0))
            if not more:
                yield frame, None
                return
            yield frame, nxt
            t, skip = nxt

    def next_cursor(self, position: tuple[int, int], limit: int) -> tuple[int, int] | None:
        """The cursor of the row after the page [position, +limit), or None when the page is the last."""
        t, skip = max(position[0], self.start), position[1]
        if self.derived:
            full = self._fetch(t, 0, skip + limit + 1)
            if len(full) <= skip + limit:
                return None
            nxt = int(full["time"].iloc[skip + limit])
            return nxt, skip + limit - int((full["time"].to_numpy() < nxt).sum())
        m = self.store.measurement(self.dataset)
        count = f'SELECT count("n_contributors") FROM {m} WHERE {self.where}'  # noqa: S608 - checked, bound
        rows = self.store.rows(count, dict(self.params, start=t))
        if not rows or int(rows[0]["count"]) <= skip + limit:  # a cheap count first: most pages are the last
            return None
        after = self._fetch(t, skip + limit, 1)
        if after.empty:
            return None
        nxt = int(after["time"].iloc[0])
        rows = self.store.rows(count, dict(self.params, start=t, end=nxt))
        before = int(rows[0]["count"]) if rows else 0
        return nxt, skip + limit - before

    def _fetch(self, t: int, skip: int, n: int) -> pd.DataFrame:
        params = dict(self.params, start=t)
        if not self.derived:
            q = self.select.format(where=self.where, limit=int(n), offset=int(skip))
            frame = self.store.frame(q, params)
        else:
            q = self.select.format(where=self.where)
            frame = self.store.frame(q, params)
            if not frame.empty:
                frame = frame.sort_values(["time", "cell", "resolution"], kind="stable").iloc[skip : skip + n]
        return self._shape(frame)

    def _shape(self, frame: pd.DataFrame) -> pd.DataFrame:
        if frame.empty:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in self.columns})
        frame = frame.rename(columns={"resolution": "h3_resolution"})
        if self.derived:
            frame["bin"] = self.res
            for name, _f, _a in self.outputs:  # a mean of means: no float noise in the output
                if name in frame and frame[name].dtype.kind == "f":
                    frame[name] = frame[name].round(6)
        for c in self.columns:
            if c not in frame:
                frame[c] = np.nan
        frame = frame[self.columns].reset_index(drop=True)
        frame["h3_resolution"] = frame["h3_resolution"].astype(int)
        frame["n_contributors"] = frame["n_contributors"].astype("int64")
        for name in self.integers:  # nullable: a NaN elsewhere in the chunk must not turn 36 into 36.0
            frame[name] = pd.to_numeric(frame[name]).astype("Int64")
        return frame

    def empty(self) -> pd.DataFrame:
        """A frame of no rows with the result's columns."""
        return self._shape(pd.DataFrame())

    def csv_page(self, position: tuple[int, int], limit: int):
        """InfluxDB's own CSV of the page [position, +limit) as it arrives (a context manager of a file-like
        body; the charter's bin only: derived bins are read in ``chunks``)."""
        t, skip = position
        query = self.select.format(where=self.where, limit=int(limit), offset=int(skip))
        return self.store.csv_stream(query, dict(self.params, start=max(t, self.start)))
