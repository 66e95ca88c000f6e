"""``/v1/datasets/{id}/observations``: the published points of one dataset, in four formats, in pages.

This module validates the request and answers it; ``api.store.ObservationQuery`` builds and runs its
InfluxQL, ``api.formats`` writes the rows.

- Time: ``from`` and ``to`` (RFC 3339, with an offset) must be aligned to ``resolution``, which is the
  charter's bin (the default) or a coarser multiple of it (``1h``, ``1d``); finer than the charter allows,
  unaligned, reversed or longer than ``api.max_range_days``: a 400 problem naming the parameter.
  ``align=outer`` widens an unaligned window to whole bins instead (``from`` rounded down, ``to`` up): what
  a link from a dashboard's time range (``${__from:date:iso}``) needs.
- Space: ``cells`` (H3 indexes) or ``bbox`` (min lon, min lat, max lon, max lat: the published cells whose
  centre is inside); at most ``api.max_cells``.
- ``fields``: a subset of the dataset's allow-listed fields (default: all; ``n_contributors`` always); a row
  is returned only if at least one of the named fields has a value in it.
- Coverage: each row's ``coverage`` is how complete its day was (the share of the readings the dataset's sensors
  should have sent that arrived; ``datacharter.coverage``); ``min_coverage`` keeps only rows of days at least that
  complete. JSON and GeoJSON list the days of the range in ``windows`` (coverage, ``low``, ``final``,
  ``flagged``: final and low); CSV and Parquet name the low days in the ``Low-Coverage-Days`` header.
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
import binascii
import hashlib
import re
from datetime import UTC, datetime
from typing import Annotated, Literal

import h3
import orjson
import pandas as pd
from fastapi import APIRouter, Query, Request
from starlette.responses import Response, StreamingResponse

from api import formats
from api.deps import State, state
from api.geometry import centre
from api.negotiation import negotiate
from api.problems import Problem
from api.store import ObservationQuery, OpenData, open_db
from api.urls import same_with
from api.windows import final_until, windows
from datacharter.charter import Dataset, open_field
from smartzone.names import parse_duration

router = APIRouter(prefix="/v1", tags=["observations"])

NS = 1_000_000_000
DAY_NS = 86_400 * NS
JSON_MAX = 100_000  # JSON and GeoJSON pages are built in memory: at most this many rows
# the media types of the formats, in the order Accept wildcards prefer them (application/x-parquet: an alias)
ACCEPT = {
    "application/json": "json",
    "text/csv": "csv",
    "application/vnd.apache.parquet": "parquet",
    "application/x-parquet": "parquet",
    "application/geo+json": "geojson",
}
OFFERS = tuple(ACCEPT)
_DURATION = re.compile(r"[0-9]{1,4}[mhd]")
_H3 = re.compile(r"[0-9a-f]{15}")
NOT_DERIVABLE = ("p10", "p50", "p90", "energy_mean")  # aggregates that cannot be derived at coarser bins
# the instants InfluxDB can hold (signed 64-bit nanoseconds since 1970), in whole days: windows outside are 400s
FIRST_DAY, LAST_DAY = "1677-09-22", "2262-04-11"
TIME_RANGE = (
    int(datetime.fromisoformat(FIRST_DAY).replace(tzinfo=UTC).timestamp()) * NS,
    int(datetime.fromisoformat(LAST_DAY).replace(tzinfo=UTC).timestamp()) * NS,
)


# -- request validation -------------------------------------------------------------------------------------
def _time(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Problem(
            400,
            "invalid-time",
            f"{name}: {value!r} is not an RFC 3339 time such as 2026-11-24T00:00:00Z",
            parameter=name,
        ) from None
    if t.tzinfo is None:
        raise Problem(400, "invalid-time", f"{name}: give the offset (Z or +01:00): {value!r}", parameter=name)
    return int(t.timestamp()) * NS + t.microsecond * 1000


def _resolution(ds: Dataset, value: str | None) -> tuple[str, int]:
    bin_s = int(parse_duration(ds.time.bin))
    if value is None:
        return ds.time.bin, bin_s * NS
    if not _DURATION.fullmatch(value):
        raise Problem(
            400,
            "invalid-resolution",
            f"resolution: {value!r} is not a duration such as 15m, 1h, 1d",
            parameter="resolution",
        )
    seconds = int(parse_duration(value))
    if seconds < bin_s:
        raise Problem(
            400,
            "resolution-too-fine",
            f"resolution: the charter publishes {ds.time.bin} bins at the finest; {value} is finer",
            parameter="resolution",
            finest=ds.time.bin,
        )
    if seconds % bin_s or (86_400 % seconds and seconds % 86_400):
        raise Problem(
            400,
            "invalid-resolution",
            f"resolution: {value} must be a multiple of {ds.time.bin} that divides a day, or whole days",
            parameter="resolution",
        )
    return value, seconds * NS


def _cells(store: OpenData, dataset: str, cells: str | None, bbox: str | None, max_cells: int) -> list[str] | None:
    if cells is not None and bbox is not None:
        raise Problem(400, "invalid-parameter", "cells: give cells or bbox, not both", parameter="cells")
    if cells is not None:
        out = [c.strip().lower() for c in cells.split(",") if c.strip()]
        bad = [c for c in out if not (_H3.fullmatch(c) and h3.is_valid_cell(c))]
        if bad or not out:
            raise Problem(
                400, "invalid-cell", f"cells: {bad[0] if bad else cells!r} is not an H3 cell index", parameter="cells"
            )
        if len(out) > max_cells:
            raise Problem(400, "too-many-cells", f"cells: at most {max_cells} per request", parameter="cells")
        return sorted(set(out))
    if bbox is not None:
        try:
            lon0, lat0, lon1, lat1 = (float(x) for x in bbox.split(","))
        except ValueError:
            raise Problem(
                400, "invalid-bbox", "bbox: four numbers, min lon, min lat, max lon, max lat", parameter="bbox"
            ) from None
        if not (-180 <= lon0 < lon1 <= 180 and -90 <= lat0 < lat1 <= 90):
            raise Problem(
                400,
                "invalid-bbox",
                "bbox: min lon < max lon in [-180, 180], min lat < max lat in [-90, 90]",
                parameter="bbox",
            )
        inside = sorted(
            c for c in store.cells(dataset) if lat0 <= centre(c)[0] <= lat1 and lon0 <= centre(c)[1] <= lon1
        )
        if len(inside) > max_cells:
            raise Problem(
                400, "too-many-cells", f"bbox: covers {len(inside)} cells, at most {max_cells}", parameter="bbox"
            )
        return inside
    return None


def select_outputs(ds: Dataset, fields: str | None, derived: bool) -> list[tuple[str, str, str]]:
    """(open field, source field, aggregate) of the requested fields, allow-listed, in charter order."""
    available = [(open_field(f, a), f, a) for f, a in ds.outputs]
    if fields is None:
        chosen = [o for o in available if not (derived and o[2] in NOT_DERIVABLE)]
    else:
        names = [x.strip() for x in fields.split(",") if x.strip()]
        known = {o[0]: o for o in available}
        bad = [n for n in names if n not in known and n != "n_contributors"]
        if bad or not names:
            raise Problem(
                400,
                "unknown-field",
                f"fields: {bad[0] if bad else fields!r} is not published in this "
                f"dataset; it has: {', '.join(sorted(known))}",
                parameter="fields",
            )
        chosen = [known[n] for n in dict.fromkeys(names) if n != "n_contributors"]
        if derived:
            refused = [o[0] for o in chosen if o[2] in NOT_DERIVABLE]
            if refused:
                raise Problem(
                    400,
                    "not-derivable",
                    f"fields: {refused[0]} cannot be derived at a resolution coarser than the charter's {ds.time.bin}",
                    parameter="fields",
                )
    return chosen


def _format(request: Request, fmt: str | None) -> str:
    """``format=`` if given, else the format the Accept header prefers (JSON when it does not matter)."""
    return fmt if fmt is not None else ACCEPT[negotiate(request, OFFERS)]


MAX_SKIP = 2**31  # rows at one instant a cursor may skip: far more than a window holds


def _cursor(value: str | None, start: int, end: int) -> tuple[int, int]:
    """The (time, rows to skip at that time) a cursor holds. A cursor this API gave out for this window
    names a time in [from, to) and a small count; anything else (garbage, other types, a time outside the
    window, however large) is a 400 problem, never a query."""
    if value is None:
        return 0, 0
    try:
        doc = orjson.loads(base64.urlsafe_b64decode(value.encode() + b"=" * (-len(value) % 4)))
        t, skip = doc["t"], doc["s"]
        if type(t) is not int or type(skip) is not int or set(doc) != {"t", "s"}:
            raise TypeError
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError, binascii.Error):
        raise Problem(
            400, "invalid-cursor", "cursor: not a cursor this API gave out; follow the Link header", parameter="cursor"
        ) from None
    if not (start <= t < end and 0 <= skip < MAX_SKIP):
        raise Problem(
            400,
            "invalid-cursor",
            "cursor: not a cursor of this window (from, to); follow the Link header of the same request",
            parameter="cursor",
        )
    return t, skip


def _encode_cursor(t: int, skip: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"t": t, "s": skip})).decode().rstrip("=")


# -- the endpoint ---------------------------------------------------------------------------------------------
Fmt = Literal["json", "csv", "parquet", "geojson"]


@router.get(
    "/datasets/{id}/observations",
    summary="Published observations of a dataset",
    response_description="One row per (cell, time bin): the charter's aggregates and n_contributors",
    responses={
        200: {
            "content": {
                "application/json": {
                    "example": {
                        "dataset": "noise",
                        "resolution": "15m",
                        "charter_version": ["2026.12.0"],
                        "fields": ["laeq_energy_mean", "laeq_max"],
                        "observations": [
                            {
                                "time": "2026-11-24T08:00:00Z",
                                "cell": "8a1fa4c5872ffff",
                                "h3_resolution": 10,
                                "bin": "15m",
                                "charter_version": "2026.12.0",
                                "n_contributors": 1,
                                "laeq_energy_mean": 61.2,
                                "laeq_max": 66.0,
                            }
                        ],
                        "links": {"next": None},
                    }
                },
                "text/csv": {
                    "example": "time,cell,h3_resolution,bin,charter_version,n_contributors,laeq_max\r\n"
                    "2026-11-24T08:00:00Z,8a1fa4c5872ffff,10,15m,2026.12.0,1,66.0\r\n"
                },
                "application/vnd.apache.parquet": {},
                "application/geo+json": {},
            }
        },
        400: {"description": "a parameter is invalid (problem details name it)"},
        404: {"description": "no such dataset"},
        406: {"description": "no acceptable format"},
    },
)
def observations(
    request: Request,
    id: str,
    from_: Annotated[
        str | None,
        Query(
            alias="from",
            description="start (RFC 3339, aligned to resolution); default: the last published day",
            examples=["2026-11-24T00:00:00Z"],
            max_length=40,
        ),
    ] = None,
    to: Annotated[
        str | None,
        Query(description="end, exclusive (RFC 3339, aligned)", max_length=40, examples=["2026-11-25T00:00:00Z"]),
    ] = None,
    resolution: Annotated[
        str | None,
        Query(
            description="time resolution: the charter's bin (default) or a coarser multiple (1h, 1d)",
            max_length=8,
            examples=["1h"],
        ),
    ] = None,
    cells: Annotated[str | None, Query(description="comma-separated H3 cells", max_length=3000)] = None,
    bbox: Annotated[
        str | None,
        Query(description="min lon,min lat,max lon,max lat", max_length=120, examples=["4.39,51.20,4.41,51.22"]),
    ] = None,
    fields: Annotated[
        str | None, Query(description="comma-separated published fields (default: all)", max_length=1000)
    ] = None,
    level: Annotated[
        Literal["finest", "rollups", "all"],
        Query(description="finest: the charter's cell and bin; rollups: groups published coarser; all: both"),
    ] = "finest",
    format: Annotated[Fmt | None, Query(description="instead of Accept")] = None,
    limit: Annotated[int | None, Query(ge=1, description="rows per page")] = None,
    cursor: Annotated[str | None, Query(max_length=200, description="from the Link header")] = None,
    align: Annotated[
        Literal["exact", "outer"],
        Query(
            description="exact: from and to must be aligned to the "
            "resolution; outer: widened to whole bins (from rounded "
            "down, to up)"
        ),
    ] = "exact",
    min_coverage: Annotated[
        float | None,
        Query(
            ge=0,
            le=1,
            description="only rows of days at least this complete: the share (0 to 1) of the readings the "
            "dataset's sensors should have sent that day that arrived (column coverage); rows without a "
            "measured coverage are left out",
            examples=[0.9],
        ),
    ] = None,
) -> Response:
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
    for name, t in (("to", end), ("from", start)):
        if not TIME_RANGE[0] <= t <= TIME_RANGE[1]:
            raise Problem(
                400,
                "time-out-of-range",
                f"{name}: the window must lie between {FIRST_DAY} and {LAST_DAY} (UTC), the times InfluxDB holds",
                parameter=name,
            )
    for name, t in (("from", start), ("to", end)):
        if t % res_ns:
            raise Problem(
                400, "unaligned-time", f"{name}: must be aligned to the resolution {res} (UTC)", parameter=name
            )
    if end <= start:
        raise Problem(400, "invalid-range", "to: must be after from", parameter="to")
    if end - start > api.max_range_days * DAY_NS:
        raise Problem(
            400,
            "range-too-large",
            f"to: at most {api.max_range_days} days per request; page through longer periods",
            parameter="to",
        )
    cell_list = _cells(st.store, id, cells, bbox, api.max_cells)
    if cell_list == []:
        cell_list = ["-"]  # a bbox with no published cell: nothing matches
    outputs = select_outputs(ds, fields, res != ds.time.bin)
    cap = api.max_page_size if fmt in ("csv", "parquet") else min(api.max_page_size, JSON_MAX)
    if limit is not None and limit > cap:
        raise Problem(400, "limit-too-large", f"limit: at most {cap} rows per page in {fmt}", parameter="limit")
    limit = limit or min(api.page_size, cap)
    if min_coverage is not None and not ds.coverage_measured:
        raise Problem(
            400,
            "coverage-not-measured",
            f"min_coverage: {id} counts events (sightings), not readings on a schedule: its coverage is not measured",
            parameter="min_coverage",
        )
    chosen = fields is not None
    q = ObservationQuery(
        st.store, id, ds, start, end, res, res_ns, cell_list, outputs, level, chosen=chosen, min_coverage=min_coverage
    )
    position = _cursor(cursor, start, end)
    headers = _cache_headers(st, ds, end)
    if format is None:  # the format came from Accept: shared caches must key on it too
        headers["Vary"] = "Accept"
    days = open_db(lambda: windows(st.store, st.settings, id, ds, start, end)) if q.coverage else None
    if fmt in ("json", "geojson"):
        frames, nxt = [], None
        for frame, after in q.chunks(position, limit):
            frames.append(frame)
            nxt = after
        frame = pd.concat(frames, ignore_index=True) if frames else q.empty()
        link = _next_url(request, nxt)
        body = (
            formats.to_json(id, q, frame, link, days) if fmt == "json" else formats.to_geojson(id, q, frame, link, days)
        )
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        headers["ETag"] = etag
        if link:
            headers["Link"] = f'<{link}>; rel="next"'
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=formats.MEDIA[fmt], headers=headers)
    # CSV and Parquet stream; their ETag is known up front only for windows that can no longer change
    if headers["Cache-Control"].endswith("immutable"):
        key = f"{request.url.path}?{sorted(request.query_params.multi_items())}|{st.charter.version}|{fmt}"
        etag = '"' + hashlib.sha256(key.encode()).hexdigest()[:32] + '"'
        headers["ETag"] = etag
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
    headers["Content-Disposition"] = f'attachment; filename="{id}.{fmt}"'
    flagged = [d["day"] for d in days or () if d["low"]]
    if flagged:  # CSV and Parquet carry no metadata: the days below the coverage threshold in a header
        headers["Low-Coverage-Days"] = ",".join(flagged)
    if fmt == "csv":
        stream = formats.csv_derived(q, position, limit) if q.derived else formats.csv_points(q, position, limit)
    else:
        stream = formats.to_parquet(q, position, limit)
    return StreamingResponse(
        stream, media_type=formats.MEDIA[fmt], headers=headers | _stream_link(request, q, position, limit)
    )


def _default_end(store: OpenData, dataset: str, res_ns: int) -> int:
    cov = store.coverage(dataset)
    if cov is None:
        now = int(datetime.now(UTC).timestamp()) * NS
        return now // res_ns * res_ns
    return (cov[1] // res_ns + 1) * res_ns


def _cache_headers(st: State, ds: Dataset, end: int) -> dict[str, str]:
    if end <= final_until(st.settings, ds):
        return {"Cache-Control": "public, max-age=31536000, immutable"}
    return {"Cache-Control": "public, max-age=60"}


def _next_url(request: Request, nxt: tuple[int, int] | None) -> str | None:
    """This request's URL with the cursor of the next page; None on the last page."""
    return None if nxt is None else same_with(request, "cursor", _encode_cursor(*nxt))


def _stream_link(request: Request, q: ObservationQuery, position: tuple[int, int], limit: int) -> dict[str, str]:
    """A streamed page's next link must be in its headers, before its body: ask where the page ends."""
    nxt = q.next_cursor(position, limit)
    link = _next_url(request, nxt)
    return {"Link": f'<{link}>; rel="next"'} if link else {}
