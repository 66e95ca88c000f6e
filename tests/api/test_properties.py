"""Property-based requests to every ``/v1`` endpoint, every parameter, the cursor included: never a server
error, and every refusal is an RFC 9457 problem. Against the app with its real cache and a real influxd
holding a published day (``published``). The schema-driven run (schemathesis) is in ``test_security``;
these strategies aim at the edges a schema cannot describe: cursors (decoded, mutated, re-encoded),
times at the ends of what InfluxDB and Python can hold, and the charter's own names."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import h3
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.app import create_app
from datacharter.charter import open_field
from smartzone.quantities import CATEGORIES
from smartzone.registry import Registry
from tests.api.conftest import CHARTER, DAY
from tests.conftest import REGISTRY

DATASETS = sorted(CHARTER.datasets)
CELLS = sorted(Registry.load(REGISTRY).cells)
FIELDS = sorted({open_field(f, a) for ds in CHARTER.datasets.values() for f, a in ds.outputs} | {"n_contributors"})
RUNS = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)


def rfc3339(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def encode(doc: object) -> str:
    """A cursor as the API writes one (URL-safe base64 of JSON, unpadded), of any document: NaN and
    Infinity are written as Python's json writes them."""
    return base64.urlsafe_b64encode(json.dumps(doc, allow_nan=True).encode()).decode().rstrip("=")


# -- strategies -------------------------------------------------------------------------------------------
EDGE_INTS = st.sampled_from([0, -1, 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), 2**64, 10**30, -(10**30)])
ODD = st.one_of(
    st.integers(),
    EDGE_INTS,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
EDGE_TIMES = [
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+14:00",
    "1677-09-21T00:00:00Z",
    "1677-09-22T00:00:00Z",
    "1969-12-31T00:00:00Z",
    "1970-01-01T00:00:00Z",
    "2262-04-11T00:00:00Z",
    "2262-04-12T00:00:00Z",
    "9999-12-31T00:00:00Z",
    "9999-12-31T23:59:59-23:59",
    "2026-02-30T00:00:00Z",
    "2026-11-24T00:00:00",
    "2026-11-24",
    "2026-11-24T00:00:00.123456789Z",
]
TIMES = st.one_of(
    st.sampled_from([rfc3339(DAY + timedelta(days=d)) for d in (-400, -2, -1, 0, 1, 2, 400)]),
    st.sampled_from(EDGE_TIMES),
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from([UTC, None]),
    ).map(lambda t: t.isoformat()),
    st.text(max_size=40),
)
EDGE_DAYS = [datetime(1, 1, 2), datetime(1677, 9, 21), datetime(1677, 9, 22), datetime(1969, 12, 31)]
EDGE_DAYS += [datetime(2262, 4, 10), datetime(2262, 4, 11), datetime(9999, 12, 20), DAY.replace(tzinfo=None)]


@st.composite
def windows(draw) -> dict[str, str]:
    """A plausible window (a few bins or days long) that starts anywhere, the ends of time included, with
    an offset, or only one of its ends."""
    t0 = draw(st.one_of(st.sampled_from(EDGE_DAYS), st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 20))))
    t0 = t0.replace(tzinfo=UTC) + timedelta(minutes=draw(st.sampled_from([0, 0, 15, 60, -15, 1440])))
    t1 = t0 + draw(st.sampled_from([timedelta(minutes=15), timedelta(hours=1), timedelta(days=1), timedelta(days=7)]))
    offset = draw(st.sampled_from(["Z", "Z", "+00:00", "+14:00", "-23:59"]))
    ends = {"from": t0.strftime("%Y-%m-%dT%H:%M:%S") + offset, "to": t1.strftime("%Y-%m-%dT%H:%M:%S") + offset}
    keep = draw(st.sampled_from([("from", "to"), ("from",), ("to",)]))
    return {k: ends[k] for k in keep}


RESOLUTIONS = st.one_of(
    st.sampled_from(["15m", "30m", "45m", "1h", "2h", "7h", "1d", "2d", "1m", "0m", "0d", "9999d", "7d"]),
    st.text(max_size=8),
)
CELL_LISTS = st.one_of(
    st.lists(st.sampled_from(CELLS), min_size=1, max_size=5).map(",".join),
    st.sampled_from([h3.latlng_to_cell(51.2, 4.4, r) for r in (0, 7, 9, 10, 15)] + ["8f2830828052d25", ",,"]),
    st.text(max_size=40),
)
BBOXES = st.one_of(
    st.tuples(*[st.floats(allow_nan=True, allow_infinity=True)] * 4).map(lambda b: ",".join(map(str, b))),
    st.sampled_from(["4.39,51.20,4.41,51.22", "-180,-90,180,90", "4.41,51.22,4.39,51.20", "1,2,3", "nan,1,2,3"]),
    st.text(max_size=40),
)
FIELD_LISTS = st.one_of(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=4).map(",".join), st.text(max_size=30))
INTS = st.one_of(st.integers(), EDGE_INTS).map(str)


def _maybe(values: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(values, st.text(max_size=20))


OBSERVATION_PARAMS = st.fixed_dictionaries(
    {},
    optional={
        "resolution": RESOLUTIONS,
        "cells": CELL_LISTS,
        "bbox": BBOXES,
        "fields": FIELD_LISTS,
        "level": _maybe(st.sampled_from(["finest", "rollups", "all"])),
        "format": _maybe(st.sampled_from(["json", "csv", "parquet", "geojson"])),
        "limit": INTS,
        "align": _maybe(st.sampled_from(["exact", "outer"])),
        "min_coverage": st.one_of(
            st.floats(allow_nan=True, allow_infinity=True).map(str), st.sampled_from(["0", "0.5", "1", "1.01", "-0"])
        ),
    },
)
ACCEPTS = st.one_of(
    st.none(),
    st.sampled_from(
        ["text/csv", "application/geo+json", "application/ld+json", "image/png", "*/*;q=0", "text/*;q=abc", ""]
    ),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30),  # what a header can carry
)
IDS = st.one_of(st.sampled_from(DATASETS), st.text(min_size=1, max_size=30)).map(lambda s: quote(s, safe=""))


# -- the app and the checks ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hostile(published) -> Iterator[TestClient]:
    """The app as a server runs it: a bug answers as a 500 problem instead of raising in the test."""
    with TestClient(create_app(published), raise_server_exceptions=False) as c:
        yield c


def _check(client: TestClient, path: str, params: dict | None = None, accept: str | None = None) -> None:
    headers = {"Accept": accept} if accept is not None else {}
    r = client.get(path, params=params, headers=headers)
    assert r.status_code < 500, (path, params, accept, r.status_code, r.text[:500])
    if r.status_code >= 400:
        assert r.headers["content-type"] == "application/problem+json", (path, params, r.headers)
        assert r.json()["status"] == r.status_code


def _valid_cursor(client: TestClient, dataset: str = "noise") -> tuple[dict, dict]:
    """A cursor the API gave out (decoded), and the request it belongs to."""
    params = {"from": rfc3339(DAY), "to": rfc3339(DAY + timedelta(days=1)), "limit": "3"}
    r = client.get(f"/v1/datasets/{dataset}/observations", params=params)
    assert r.status_code == 200, r.text
    nxt = r.json()["links"]["next"]
    assert nxt, "the published day must have more than one page"
    cursor = dict(p.split("=", 1) for p in nxt.split("?", 1)[1].split("&"))["cursor"]
    doc = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    assert set(doc) == {"t", "s"}, doc
    return doc, params


@st.composite
def cursors(draw, valid: dict) -> str:
    """A valid cursor, mutated: odd values in its fields (huge, negative, NaN, other types), shifted times,
    keys dropped or added, or no cursor at all (garbage base64, text)."""
    kind = draw(st.sampled_from(["huge", "fields", "shift", "keys", "base64", "text", "json"]))
    doc: object = dict(valid)
    if kind == "huge":  # the case: a time (or count) far beyond any window
        big = st.one_of(EDGE_INTS, st.integers(min_value=2**62), st.integers(max_value=-(2**62)))
        doc = {**valid, **draw(st.dictionaries(st.sampled_from(["t", "s"]), big, min_size=1))}
    elif kind == "fields":
        doc = {**valid, **draw(st.dictionaries(st.sampled_from(["t", "s"]), ODD, min_size=1))}
    elif kind == "shift":
        step = draw(st.sampled_from([1, 10**9, 900 * 10**9, 86_400 * 10**9, 10**18, 2**62]))
        doc = {"t": valid["t"] + draw(st.integers(-3, 3)) * step, "s": valid["s"] + draw(st.integers(-2, 10**6))}
    elif kind == "keys":
        doc = draw(st.dictionaries(st.sampled_from(["t", "s", "x", "T", ""]), ODD, max_size=4))
    elif kind == "json":
        doc = draw(st.one_of(ODD, st.lists(ODD, max_size=3)))
    if kind == "base64":
        return base64.urlsafe_b64encode(draw(st.binary(max_size=60))).decode().rstrip(draw(st.sampled_from(["=", ""])))
    if kind == "text":
        return draw(st.text(max_size=60))
    return encode(doc)


# -- the properties -------------------------------------------------------------------------------------------
def test_a_crafted_cursor_is_a_400_not_a_500(hostile):
    """The issue's case: a valid cursor with a huge time."""
    valid, params = _valid_cursor(hostile)
    for t in (10**30, 2**63, 2**64, -(2**63), valid["t"] + 10**18):
        r = hostile.get("/v1/datasets/noise/observations", params={**params, "cursor": encode({**valid, "t": t})})
        assert r.status_code == 400, (t, r.status_code, r.text[:300])
        assert r.json()["parameter"] == "cursor" and r.headers["content-type"] == "application/problem+json"
    follow = hostile.get("/v1/datasets/noise/observations", params={**params, "cursor": encode(valid)})
    assert follow.status_code == 200 and follow.json()["observations"]  # the real one still pages on


@RUNS
@given(data=st.data())
def test_mutated_cursors_never_give_a_server_error(hostile, data):
    valid, params = _valid_cursor(hostile, data.draw(st.sampled_from(["noise", "parking"])))
    cursor = data.draw(cursors(valid))
    fmt = data.draw(st.sampled_from(["json", "csv", "parquet", "geojson"]))
    _check(hostile, "/v1/datasets/noise/observations", {**params, "cursor": cursor, "format": fmt})


@RUNS
@given(
    dataset=IDS,
    window=st.one_of(windows(), st.fixed_dictionaries({}, optional={"from": TIMES, "to": TIMES})),
    params=OBSERVATION_PARAMS,
    accept=ACCEPTS,
    cursor=st.none() | st.text(max_size=40),
)
def test_observations_never_give_a_server_error(hostile, dataset, window, params, accept, cursor):
    params = {**window, **params}
    if cursor is not None:
        params["cursor"] = cursor
    _check(hostile, f"/v1/datasets/{dataset}/observations", params, accept)


@RUNS
@given(
    dataset=IDS,
    fmt=st.none() | _maybe(st.sampled_from(["json", "jsonld"])),
    accept=ACCEPTS,
    cat=st.none() | _maybe(st.sampled_from(CATEGORIES)),
    res=st.none() | INTS,
    cell_dataset=st.none() | IDS,
    sensor=st.one_of(st.sampled_from(sorted(Registry.load(REGISTRY).sensors)), st.text(min_size=1, max_size=40)).map(
        lambda s: quote(s, safe="")
    ),
)
def test_catalogue_and_space_never_give_a_server_error(hostile, dataset, fmt, accept, cat, res, cell_dataset, sensor):
    only = {"format": fmt} if fmt is not None else {}
    _check(hostile, "/v1/datasets", only, accept)
    _check(hostile, f"/v1/datasets/{dataset}", only, accept)
    cells = {k: v for k, v in (("dataset", cell_dataset), ("resolution", res)) if v is not None}
    _check(hostile, "/v1/cells", cells, accept)
    _check(hostile, "/v1/zone", None, accept)
    _check(hostile, "/v1/sensors", {"category": cat} if cat is not None else None, accept)
    _check(hostile, f"/v1/sensors/{sensor}", None, accept)


@pytest.mark.parametrize(
    "window",
    [
        {"from": "2262-04-11T00:00:00Z", "to": "2262-04-12T00:00:00Z"},
        {"from": "0001-01-01T00:00:00+14:00", "to": "0001-01-01T00:00:00Z"},
        {"to": "0001-01-01T00:00:00Z"},
        {"from": "9999-12-31T00:00:00Z", "to": "9999-12-31T23:59:59-23:59", "align": "outer"},
    ],
)
def test_windows_beyond_what_influxdb_holds_are_a_400(hostile, window):
    """Found by the properties above (500s before): times InfluxDB cannot hold are refused, naming the end."""
    r = hostile.get("/v1/datasets/noise/observations", params=window)
    assert r.status_code == 400, r.text
    assert r.json()["type"].endswith("/time-out-of-range") and r.json()["parameter"] in ("from", "to")
