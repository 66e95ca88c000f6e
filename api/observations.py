"""``/v1/datasets/{id}/observations``: the published points of one dataset, in four formats, in pages.

- Time: ``from`` and ``to`` (RFC 3339, with an offset) must be aligned to ``resolution``, which is the
  charter's bin (the default) or a coarser multiple of it (``1h``, ``1d``); finer than the charter allows,
  unaligned, reversed or longer than ``api.max_range_days``: a 400 problem naming the parameter.
  ``align=outer`` widens an unaligned window to whole bins instead (``from`` rounded down, ``to`` up): what
  a link from a dashboard's time range (``${__from:date:iso}``) needs.
- Space: ``cells`` (H3 indexes) or ``bbox`` (min lon, min lat, max lon, max lat: the published cells whose
  centre is inside); at most ``api.max_cells``.
- ``fields``: a subset of the dataset's allow-listed fields (default: all; ``n_contributors`` always).
- At the charter's bin the rows are the published points themselves. At a coarser resolution they are
  derived from them: sums of counts, minimum of minima, maximum of maxima, mean of means, and
  ``n_contributors`` = the largest group in the period (a lower bound of the distinct contributors);
  percentiles and energy means cannot be derived and are refused.
- ``level``: ``finest`` (the charter's cell and bin: the default), ``rollups`` (points the charter
  published at a coarser cell or bin because the finest group was too small) or ``all`` (both: what a
  dashboard shows; a roll-up never repeats a finest point, so sums over ``all`` count each reading once).
- Formats by ``format=`` or ``Accept``: JSON, CSV (RFC 4180), Parquet, GeoJSON (cells as polygons).
- Pages: ``limit`` rows, then a ``Link: <...>; rel="next"`` header (and ``links.next`` in JSON) with an
  opaque ``cursor``; CSV and Parquet stream their rows, in constant memory, up to ``api.max_page_size``.
- Caching: a strong ``ETag`` (``If-None-Match`` gives 304) and ``Cache-Control``: immutable for windows
  that can no longer change (closed days of frozen datasets; days beyond the late-data window of the
  others), a minute otherwise.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, Literal

import h3
import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from fastapi import APIRouter, Query, Request
from starlette.responses import Response, StreamingResponse

from api.problems import Problem
from datacharter.charter import Dataset, open_field
from smartzone.names import parse_duration
from smartzone.quantities import QUANTITIES
from storage.influx import quote_ident

router = APIRouter(prefix="/v1", tags=["observations"])

NS = 1_000_000_000
DAY_NS = 86_400 * NS
CHUNK = 10_000  # rows per InfluxDB query when a page streams: memory stays flat whatever the page size
JSON_MAX = 100_000  # JSON and GeoJSON pages are built in memory: at most this many rows
MEDIA = {"json": "application/json", "csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet",
         "geojson": "application/geo+json"}
ACCEPT = {"application/json": "json", "text/csv": "csv", "application/vnd.apache.parquet": "parquet",
          "application/x-parquet": "parquet", "application/geo+json": "geojson", "*/*": "json",
          "application/*": "json"}
_DURATION = re.compile(r"[0-9]{1,4}[mhd]")
_H3 = re.compile(r"[0-9a-f]{15}")
NOT_DERIVABLE = ("p10", "p50", "p90", "energy_mean")
AGG_SQL = {"sum": "sum", "count": "sum", "mean": "mean", "min": "min", "max": "max"}


# -- request validation -------------------------------------------------------------------------------------
def _time(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Problem(400, "invalid-time", f"{name}: {value!r} is not an RFC 3339 time such as "
                      "2026-11-24T00:00:00Z", parameter=name) from None
    if t.tzinfo is None:
        raise Problem(400, "invalid-time", f"{name}: give the offset (Z or +01:00): {value!r}", parameter=name)
    return int(t.timestamp()) * NS + t.microsecond * 1000


def _resolution(ds: Dataset, value: str | None) -> tuple[str, int]:
    bin_s = int(parse_duration(ds.time.bin))
    if value is None:
        return ds.time.bin, bin_s * NS
    if not _DURATION.fullmatch(value):
        raise Problem(400, "invalid-resolution", f"resolution: {value!r} is not a duration such as 15m, 1h, 1d",
                      parameter="resolution")
    seconds = int(parse_duration(value))
    if seconds < bin_s:
        raise Problem(400, "resolution-too-fine", f"resolution: the charter publishes {ds.time.bin} bins at the "
                      f"finest; {value} is finer", parameter="resolution", finest=ds.time.bin)
    if seconds % bin_s or (86_400 % seconds and seconds % 86_400):
        raise Problem(400, "invalid-resolution", f"resolution: {value} must be a multiple of {ds.time.bin} that "
                      "divides a day, or whole days", parameter="resolution")
    return value, seconds * NS


def _cells(store, dataset: str, cells: str | None, bbox: str | None, max_cells: int) -> list[str] | None:
    if cells is not None and bbox is not None:
        raise Problem(400, "invalid-parameter", "cells: give cells or bbox, not both", parameter="cells")
    if cells is not None:
        out = [c.strip().lower() for c in cells.split(",") if c.strip()]
        bad = [c for c in out if not (_H3.fullmatch(c) and h3.is_valid_cell(c))]
        if bad or not out:
            raise Problem(400, "invalid-cell", f"cells: {bad[0] if bad else cells!r} is not an H3 cell index",
                          parameter="cells")
        if len(out) > max_cells:
            raise Problem(400, "too-many-cells", f"cells: at most {max_cells} per request", parameter="cells")
        return sorted(set(out))
    if bbox is not None:
        try:
            lon0, lat0, lon1, lat1 = (float(x) for x in bbox.split(","))
        except ValueError:
            raise Problem(400, "invalid-bbox", "bbox: four numbers, min lon, min lat, max lon, max lat",
                          parameter="bbox") from None
        if not (-180 <= lon0 < lon1 <= 180 and -90 <= lat0 < lat1 <= 90):
            raise Problem(400, "invalid-bbox", "bbox: min lon < max lon in [-180, 180], min lat < max lat in "
                          "[-90, 90]", parameter="bbox")
        inside = sorted(c for c in store.cells(dataset)
                        if lat0 <= _centre(c)[0] <= lat1 and lon0 <= _centre(c)[1] <= lon1)
        if len(inside) > max_cells:
            raise Problem(400, "too-many-cells", f"bbox: covers {len(inside)} cells, at most {max_cells}",
                          parameter="bbox")
        return inside
    return None


@lru_cache(maxsize=100_000)
def _centre(cell: str) -> tuple[float, float]:
    return h3.cell_to_latlng(cell)


@lru_cache(maxsize=100_000)
def _polygon(cell: str) -> list[list[float]]:
    ring = [[round(lon, 7), round(lat, 7)] for lat, lon in h3.cell_to_boundary(cell)]
    return [*ring, ring[0]]


def _outputs(ds: Dataset, fields: str | None, derived: bool) -> list[tuple[str, str, str]]:
    """(open field, source field, aggregate) of the requested fields, allow-listed, in charter order."""
    available = [(open_field(f, a), f, a) for f, a in ds.outputs]
    if fields is None:
        chosen = [o for o in available if not (derived and o[2] in NOT_DERIVABLE)]
    else:
        names = [x.strip() for x in fields.split(",") if x.strip()]
        known = {o[0]: o for o in available}
        bad = [n for n in names if n not in known and n != "n_contributors"]
        if bad or not names:
            raise Problem(400, "unknown-field", f"fields: {bad[0] if bad else fields!r} is not published in this "
                          f"dataset; it has: {', '.join(sorted(known))}", parameter="fields")
        chosen = [known[n] for n in dict.fromkeys(names) if n != "n_contributors"]
        if derived:
            refused = [o[0] for o in chosen if o[2] in NOT_DERIVABLE]
            if refused:
                raise Problem(400, "not-derivable", f"fields: {refused[0]} cannot be derived at a resolution coarser "
                              f"than the charter's {ds.time.bin}", parameter="fields")
    return chosen


def _format(request: Request, fmt: str | None) -> str:
    if fmt is not None:
        return fmt
    accept = request.headers.get("accept", "*/*")
    for part in accept.split(","):
        media = part.split(";")[0].strip().lower()
        if media in ACCEPT:
            return ACCEPT[media]
    raise Problem(406, "not-acceptable", f"Accept: none of {accept!r} is served; use application/json, text/csv, "
                  "application/vnd.apache.parquet or application/geo+json (or format=)", parameter="Accept")


def _cursor(value: str | None) -> tuple[int, int]:
    if value is None:
        return 0, 0
    try:
        doc = orjson.loads(base64.urlsafe_b64decode(value.encode() + b"=" * (-len(value) % 4)))
        t, skip = int(doc["t"]), int(doc["s"])
        if skip < 0 or t < 0:
            raise ValueError
        return t, skip
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError, base64.binascii.Error):
        raise Problem(400, "invalid-cursor", "cursor: not a cursor this API gave out; follow the Link header",
                      parameter="cursor") from None


def _encode_cursor(t: int, skip: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"t": t, "s": skip})).decode().rstrip("=")


# -- the query -----------------------------------------------------------------------------------------------
class Query_:
    """One validated request, and the InfluxQL it runs (identifiers checked, values bound)."""

    def __init__(self, store, dataset: str, ds: Dataset, start: int, end: int, res: str, res_ns: int,
                 cells: list[str] | None, outputs: list[tuple[str, str, str]], level: str) -> None:
        self.store, self.dataset, self.ds = store, dataset, ds
        self.start, self.end, self.res, self.res_ns = start, end, res, res_ns
        self.cells, self.outputs, self.level = cells, outputs, level
        self.derived = res != ds.time.bin
        self.columns = ["time", "cell", "h3_resolution", "bin", "charter_version", "n_contributors",
                        *[o[0] for o in outputs]]
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
        self.where = " AND ".join(where)
        tags = '"cell", "resolution", "bin", "charter_version"' + (', "profile"' if "profile" in self.columns else "")
        if self.derived:
            aggs = ", ".join(f'{AGG_SQL[a]}({store.field(dataset, o)}) AS {quote_ident(o)}' for o, _f, a in outputs)
            # names: checked against the charter and quoted; res: matched [0-9]{1,4}[mhd]; values: bound
            self.select = (f'SELECT max("n_contributors") AS "n_contributors"{", " + aggs if aggs else ""} '  # noqa: S608
                           f"FROM {m} WHERE {{where}} GROUP BY time({res}), {tags} fill(none)")
        else:
            cols = ", ".join(store.field(dataset, o) for o, _f, _a in outputs)
            self.select = (f'SELECT "n_contributors"{", " + cols if cols else ""}, {tags} '  # noqa: S608 - checked
                           f"FROM {m} WHERE {{where}} LIMIT {{limit}} OFFSET {{offset}}")

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
                frame = frame.sort_values(["time", "cell", "resolution"], kind="stable").iloc[skip: skip + n]
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


# -- the endpoint ---------------------------------------------------------------------------------------------
Fmt = Literal["json", "csv", "parquet", "geojson"]


@router.get(
    "/datasets/{id}/observations",
    summary="Published observations of a dataset",
    response_description="One row per (cell, time bin): the charter's aggregates and n_contributors",
    responses={
        200: {"content": {
            "application/json": {"example": {
                "dataset": "noise", "resolution": "15m", "charter_version": ["2026.12.0"],
                "fields": ["laeq_energy_mean", "laeq_max"],
                "observations": [{"time": "2026-11-24T08:00:00Z", "cell": "8a1fa4c5872ffff", "h3_resolution": 10,
                                  "bin": "15m", "charter_version": "2026.12.0", "n_contributors": 1,
                                  "laeq_energy_mean": 61.2, "laeq_max": 66.0}],
                "links": {"next": None}}},
            "text/csv": {"example": "time,cell,h3_resolution,bin,charter_version,n_contributors,laeq_max\r\n"
                                    "2026-11-24T08:00:00Z,8a1fa4c5872ffff,10,15m,2026.12.0,1,66.0\r\n"},
            "application/vnd.apache.parquet": {},
            "application/geo+json": {}}},
        400: {"description": "a parameter is invalid (problem details name it)"},
        404: {"description": "no such dataset"},
        406: {"description": "no acceptable format"}},
)
def observations(
    request: Request,
    id: str,
    from_: Annotated[str | None, Query(alias="from", description="start (RFC 3339, aligned to resolution); "
                                       "default: the last published day", examples=["2026-11-24T00:00:00Z"],
                                       max_length=40)] = None,
    to: Annotated[str | None, Query(description="end, exclusive (RFC 3339, aligned)", max_length=40,
                                    examples=["2026-11-25T00:00:00Z"])] = None,
    resolution: Annotated[str | None, Query(description="time resolution: the charter's bin (default) or a "
                                            "coarser multiple (1h, 1d)", max_length=8, examples=["1h"])] = None,
    cells: Annotated[str | None, Query(description="comma-separated H3 cells", max_length=3000)] = None,
    bbox: Annotated[str | None, Query(description="min lon,min lat,max lon,max lat", max_length=120,
                                      examples=["4.39,51.20,4.41,51.22"])] = None,
    fields: Annotated[str | None, Query(description="comma-separated published fields (default: all)",
                                        max_length=1000)] = None,
    level: Annotated[Literal["finest", "rollups", "all"], Query(
        description="finest: the charter's cell and bin; rollups: groups published coarser; all: both")] = "finest",
    format: Annotated[Fmt | None, Query(description="instead of Accept")] = None,
    limit: Annotated[int | None, Query(ge=1, description="rows per page")] = None,
    cursor: Annotated[str | None, Query(max_length=200, description="from the Link header")] = None,
    align: Annotated[Literal["exact", "outer"], Query(description="exact: from and to must be aligned to the "
                                                      "resolution; outer: widened to whole bins (from rounded "
                                                      "down, to up)")] = "exact",
) -> Response:
    from api.app import state

    st = state(request)
    api = st.settings.api
    try:
        ds = st.store.dataset(id)
    except KeyError:
        raise Problem(404, "unknown-dataset", f"id: no dataset {id!r}; see /v1/datasets", parameter="id") from None
    fmt = _format(request, format)
    res, res_ns = _resolution(ds, resolution)
    start, end = _time(from_, "from"), _time(to, "to")
    if end is None or start is None:
        last = _default_end(st.store, id, res_ns)
        end = end if end is not None else last
        start = start if start is not None else end - max(DAY_NS, res_ns)
    if align == "outer":
        start, end = start // res_ns * res_ns, -(-end // res_ns) * res_ns
    for name, t in (("from", start), ("to", end)):
        if t % res_ns:
            raise Problem(400, "unaligned-time", f"{name}: must be aligned to the resolution {res} (UTC)",
                          parameter=name)
    if end <= start:
        raise Problem(400, "invalid-range", "to: must be after from", parameter="to")
    if end - start > api.max_range_days * DAY_NS:
        raise Problem(400, "range-too-large", f"to: at most {api.max_range_days} days per request; page through "
                      "longer periods", parameter="to")
    cell_list = _cells(st.store, id, cells, bbox, api.max_cells)
    if cell_list == []:
        cell_list = ["-"]  # a bbox with no published cell: nothing matches
    outputs = _outputs(ds, fields, res != ds.time.bin)
    cap = api.max_page_size if fmt in ("csv", "parquet") else min(api.max_page_size, JSON_MAX)
    if limit is not None and limit > cap:
        raise Problem(400, "limit-too-large", f"limit: at most {cap} rows per page in {fmt}", parameter="limit")
    limit = limit or min(api.page_size, cap)
    q = Query_(st.store, id, ds, start, end, res, res_ns, cell_list, outputs, level)
    position = _cursor(cursor)
    headers = _cache_headers(st, ds, end)
    if fmt in ("json", "geojson"):
        frames, nxt = [], None
        for frame, after in q.chunks(position, limit):
            frames.append(frame)
            nxt = after
        frame = pd.concat(frames, ignore_index=True) if frames else q._shape(pd.DataFrame())
        link = _next_url(request, st, nxt)
        body = _json(id, q, frame, link) if fmt == "json" else _geojson(id, q, frame, link)
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        headers["ETag"] = etag
        if link:
            headers["Link"] = f'<{link}>; rel="next"'
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=MEDIA[fmt], headers=headers)
    # CSV and Parquet stream; their ETag is known up front only for windows that can no longer change
    if headers["Cache-Control"].endswith("immutable"):
        key = f"{request.url.path}?{sorted(request.query_params.multi_items())}|{st.charter.version}|{fmt}"
        etag = '"' + hashlib.sha256(key.encode()).hexdigest()[:32] + '"'
        headers["ETag"] = etag
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
    headers["Content-Disposition"] = f'attachment; filename="{id}.{fmt}"'
    if fmt == "csv":
        stream = _csv(q, position, limit) if q.derived else _csv_arrow(q, position, limit)
    else:
        stream = _parquet(q, position, limit)
    return StreamingResponse(stream, media_type=MEDIA[fmt], headers=headers | _stream_link(request, st, q, position,
                                                                                             limit))


def _default_end(store, dataset: str, res_ns: int) -> int:
    cov = store.coverage(dataset)
    if cov is None:
        now = int(datetime.now(UTC).timestamp()) * NS
        return now // res_ns * res_ns
    return (cov[1] // res_ns + 1) * res_ns


def _cache_headers(st, ds: Dataset, end: int) -> dict[str, str]:
    now = int(datetime.now(UTC).timestamp()) * NS
    settle = int(parse_duration(st.settings.charter.settle)) * NS
    if ds.late_data == "freeze":
        final = (now - settle) // DAY_NS * DAY_NS  # days before this one are published and never change
    else:
        final = (now - settle - int(parse_duration(st.settings.charter.late_window)) * NS) // DAY_NS * DAY_NS
    if end <= final:
        return {"Cache-Control": "public, max-age=31536000, immutable"}
    return {"Cache-Control": "public, max-age=60"}


def _next_url(request: Request, st, nxt: tuple[int, int] | None) -> str | None:
    if nxt is None:
        return None
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
    params.append(("cursor", _encode_cursor(*nxt)))
    base = st.settings.api.base_url.rstrip("/") or str(request.base_url).rstrip("/")
    from urllib.parse import urlencode

    return f"{base}{request.url.path}?{urlencode(params)}"


def _stream_link(request: Request, st, q: Query_, position: tuple[int, int], limit: int) -> dict[str, str]:
    """A streamed page's next link must be in its headers, before its body: ask where the page ends."""
    nxt = q.next_cursor(position, limit)
    link = _next_url(request, st, nxt)
    return {"Link": f'<{link}>; rel="next"'} if link else {}


# -- formats --------------------------------------------------------------------------------------------------
def _iso(times: pd.Series) -> np.ndarray:
    return np.datetime_as_string(times.to_numpy(dtype="int64").astype("datetime64[ns]"), unit="s").astype(object) + "Z"


def _records(frame: pd.DataFrame) -> list[dict]:
    out = frame.assign(time=_iso(frame["time"]) if len(frame) else frame["time"])
    return [{k: v for k, v in r.items() if not (v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)))}
            for r in out.to_dict("records")]


def _json(dataset: str, q: Query_, frame: pd.DataFrame, link: str | None) -> bytes:
    return orjson.dumps({
        "dataset": dataset, "resolution": q.res, "level": q.level,
        "fields": [o[0] for o in q.outputs], "units": _units(q), "observations": _records(frame),
        "links": {"next": link}}, option=orjson.OPT_SERIALIZE_NUMPY)


def _units(q: Query_) -> dict[str, str]:
    out = {}
    for name, f, a in q.outputs:
        quantity = QUANTITIES.get(f"{q.ds.source.measurement}.{f}")
        if quantity is not None and a not in ("count",):
            out[name] = quantity.unit
    return out


def _geojson(dataset: str, q: Query_, frame: pd.DataFrame, link: str | None) -> bytes:
    features = [{"type": "Feature", "id": f"{r['cell']}/{r['time']}",
                 "geometry": {"type": "Polygon", "coordinates": [_polygon(r["cell"])]}, "properties": r}
                for r in _records(frame)]
    return orjson.dumps({"type": "FeatureCollection", "dataset": dataset, "resolution": q.res,
                         "features": features, "links": {"next": link}}, option=orjson.OPT_SERIALIZE_NUMPY)


def _csv_arrow(q: Query_, position: tuple[int, int], limit: int) -> Iterator[bytes]:
    """The published points as CSV, from InfluxDB's CSV as it arrives, through Arrow's streaming reader and
    writer (no pandas): one query for the whole page, constant memory (blocks of about 1 MB)."""
    names = _schema(q, text_time=True).names
    yield (",".join(names) + "\r\n").encode()
    options = pacsv.WriteOptions(include_header=False, quoting_style="none", eol="\r\n")
    # every column typed up front: a streamed block must not infer a type another block contradicts
    types = {c: pa.string() for c in ("cell", "bin", "charter_version", "resolution", "profile")}
    types |= {"time": pa.int64(), "n_contributors": pa.int64()} | {name: pa.float64() for name, _f, _a in q.outputs}
    convert = pacsv.ConvertOptions(column_types=types, strings_can_be_null=True)
    t, skip = position
    query = q.select.format(where=q.where, limit=int(limit), offset=int(skip))
    with q.store.csv_stream(query, dict(q.params, start=max(t, q.start))) as body:
        try:
            reader = pacsv.open_csv(body, read_options=pacsv.ReadOptions(block_size=1 << 20),
                                    convert_options=convert)
        except pa.ArrowInvalid:  # an empty result: no header either
            return
        for batch in reader:
            if batch.num_rows == 0:
                continue
            seconds = pc.cast(pc.divide(batch["time"], NS), pa.int64()).cast(pa.timestamp("s", tz="UTC"))
            columns = {"time": pc.strftime(seconds, format="%Y-%m-%dT%H:%M:%SZ"), "cell": batch["cell"],
                       "h3_resolution": batch["resolution"], "bin": batch["bin"],
                       "charter_version": batch["charter_version"]}
            present = set(batch.schema.names)
            for name in names[5:]:
                columns[name] = batch[name] if name in present else pa.nulls(batch.num_rows)
            out = io.BytesIO()
            pacsv.write_csv(pa.table(columns), out, options)
            yield out.getvalue()


def _csv(q: Query_, position: tuple[int, int], limit: int) -> Iterator[bytes]:
    """RFC 4180 rows (CRLF), written by Arrow's CSV writer. Nothing needs quoting: cells are hexadecimal,
    bins and charter versions are checked identifiers, the rest are numbers."""
    schema = _schema(q, text_time=True)
    yield (",".join(schema.names) + "\r\n").encode()  # Arrow would quote the names
    options = pacsv.WriteOptions(include_header=False, quoting_style="none", eol="\r\n")
    for frame, _ in q.chunks(position, limit):
        if frame.empty:
            continue
        out = io.BytesIO()
        pacsv.write_csv(_table(frame, schema), out, options)
        yield out.getvalue()


def _table(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    data = {c.name: frame[c.name] for c in schema}
    if pa.types.is_string(schema.field("time").type):
        data["time"] = _iso(frame["time"]) if len(frame) else frame["time"].astype(str)
    else:
        data["time"] = pd.to_datetime(frame["time"].astype("int64"), utc=True)
    return pa.Table.from_pandas(pd.DataFrame(data), schema=schema, preserve_index=False)


def _schema(q: Query_, text_time: bool = False) -> pa.Schema:
    time = pa.string() if text_time else pa.timestamp("ns", tz="UTC")
    fields = [pa.field("time", time), pa.field("cell", pa.string()),
              pa.field("h3_resolution", pa.int32()), pa.field("bin", pa.string()),
              pa.field("charter_version", pa.string())]
    if "profile" in q.columns:
        fields.append(pa.field("profile", pa.string()))
    fields.append(pa.field("n_contributors", pa.int64()))
    fields += [pa.field(name, pa.int64() if name in q.integers else pa.float64()) for name, _f, _a in q.outputs]
    return pa.schema(fields)


class _Drain(io.RawIOBase):
    """A write-only sink whose bytes are taken out as they come (Parquet row groups stream)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.pos = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.parts.append(bytes(b))
        self.pos += len(b)
        return len(b)

    def tell(self) -> int:
        return self.pos

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def _parquet(q: Query_, position: tuple[int, int], limit: int) -> Iterator[bytes]:
    schema = _schema(q)
    sink = _Drain()
    writer = pq.ParquetWriter(sink, schema, compression="zstd")
    for frame, _ in q.chunks(position, limit):
        if frame.empty:
            continue
        writer.write_table(_table(frame, schema))
        yield sink.take()
    writer.close()
    yield sink.take()
