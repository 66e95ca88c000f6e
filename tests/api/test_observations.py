"""Observations: every format, pagination, alignment and resolution rules, caching, against a published day."""

from __future__ import annotations

import io
import itertools
from datetime import timedelta

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.api.conftest import CHARTER, DAY

D0 = DAY.strftime("%Y-%m-%dT%H:%M:%SZ")
D1 = (DAY + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
URL = "/v1/datasets/{}/observations"


def get_all(client, url: str, **params) -> tuple[list[dict], int]:
    """Follow the JSON pages; (rows, pages)."""
    rows, pages = [], 0
    r = client.get(url, params=params)
    while True:
        assert r.status_code == 200, r.text
        doc = r.json()
        rows += doc["observations"]
        pages += 1
        if not doc["links"]["next"]:
            return rows, pages
        assert r.headers["link"] == f'<{doc["links"]["next"]}>; rel="next"'
        r = client.get(doc["links"]["next"])


@pytest.mark.parametrize("dataset", ["noise", "weather", "traffic", "pedestrian_flow", "mobile_air_quality"])
def test_json_is_the_published_points(client, published, dataset):
    from storage.influx import Influx

    rows, _ = get_all(client, URL.format(dataset), **{"from": D0, "to": D1, "limit": 100_000})
    ds = CHARTER.datasets[dataset]
    with Influx(published.influx) as influx:
        q = f'SELECT count("n_contributors") FROM "{dataset}" WHERE "bin" = $b AND "resolution" = $r'  # noqa: S608
        stored = influx.rows(q, published.charter.open_database, {"b": ds.time.bin, "r": str(ds.space.resolution)})
    assert rows and len(rows) == stored[0]["count"]
    for r in rows:
        assert (
            set(r) - {"time", "cell", "h3_resolution", "bin", "charter_version", "n_contributors"} <= ds.allowed_fields
        )
        assert r["n_contributors"] >= ds.k and r["bin"] == ds.time.bin and r["charter_version"] == CHARTER.version
        assert D0 <= r["time"] < D1


def test_pages_reassemble_the_whole_result_exactly(client):
    whole, _ = get_all(client, URL.format("weather"), **{"from": D0, "to": D1, "limit": 100_000})
    paged, pages = get_all(client, URL.format("weather"), **{"from": D0, "to": D1, "limit": 37})
    assert pages == -(-len(whole) // 37) and paged == whole
    keys = [(r["time"], r["cell"]) for r in whole]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


def _csv_pages(client, url: str, params: dict) -> pd.DataFrame:
    parts = []
    r = client.get(url, params=params)
    while True:
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/csv")
        assert r.content.count(b"\r\n") == r.content.count(b"\n")  # RFC 4180 line ends
        parts.append(pd.read_csv(io.BytesIO(r.content), dtype={"cell": str, "charter_version": str}))
        link = r.headers.get("link")
        if not link:
            return pd.concat(parts, ignore_index=True)
        r = client.get(link[1 : link.index(">")])


@pytest.mark.parametrize("limit", [100_000, 41])
def test_csv_and_parquet_read_back_with_pandas_equal_the_json(client, limit):
    params = {"from": D0, "to": D1, "limit": 100_000}
    rows, _ = get_all(client, URL.format("noise"), **params)
    expected = pd.DataFrame(rows)
    got = _csv_pages(client, URL.format("noise"), {**params, "format": "csv", "limit": limit})
    pd.testing.assert_frame_equal(got[expected.columns], expected, check_dtype=False)
    r = client.get(URL.format("noise"), params={**params, "format": "parquet"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(r.content)).to_pandas()
    table["time"] = table["time"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    pd.testing.assert_frame_equal(table[expected.columns], expected, check_dtype=False)


@pytest.mark.parametrize(
    ("dataset", "extra"),
    [("traffic", {}), ("traffic", {"resolution": "1d"}), ("pedestrian_counts", {}), ("pedestrian_flow", {})],
)
def test_counts_are_integers_in_parquet_as_in_json_and_csv(client, dataset, extra):
    """The counts the charter writes as integers (``Dataset.integer_fields``) are int64 columns in Parquet, nullable
    (pedestrian_counts publishes ``people`` where an overhead counter counts, ``people_in``/``people_out`` where a
    line counter counts): 36, not 36.0."""

    ds = CHARTER.datasets[dataset]
    params = {"from": D0, "to": D1, "limit": 100_000, **extra}
    rows, _ = get_all(client, URL.format(dataset), **params)
    assert rows
    r = client.get(URL.format(dataset), params={**params, "format": "parquet"})
    assert r.status_code == 200, r.text
    table = pq.read_table(io.BytesIO(r.content))
    schema = table.schema
    counts = [n for n in schema.names if n in ds.integer_fields]
    assert "n_contributors" in counts and len(counts) > 1, counts
    for name in schema.names:
        if name in counts:
            assert schema.field(name).type == pa.int64(), (name, schema.field(name).type)
        elif name not in ("time", "cell", "h3_resolution", "bin", "charter_version", "profile"):
            assert schema.field(name).type == pa.float64(), name
    # the values equal the JSON's, integers as integers (and missing where JSON omits them)
    got = [{k: v for k, v in row.items() if v is not None} for row in table.to_pylist()]
    for row in got:
        row["time"] = row["time"].strftime("%Y-%m-%dT%H:%M:%SZ")
    assert got == rows
    for row in rows:
        for name in counts:
            assert name not in row or type(row[name]) is int, (name, row)
    if dataset == "pedestrian_counts":  # a count some points lack: an int64 column with nulls
        assert 0 < table.column("people").null_count < table.num_rows
    # CSV writes the same integers
    text = client.get(URL.format(dataset), params={**params, "format": "csv"}).text
    header, first = text.split("\r\n")[:2]
    for name, value in zip(header.split(","), first.split(","), strict=True):
        if name in counts and value:
            assert value == str(rows[0][name]), (name, value)


def test_formats_by_accept_header_and_geojson_polygons(client):
    params = {"from": D0, "to": D1, "limit": 5}
    assert client.get(URL.format("noise"), params=params, headers={"Accept": "text/csv"}).text.startswith("time,")
    r = client.get(URL.format("noise"), params=params, headers={"Accept": "application/geo+json"})
    doc = r.json()
    assert r.headers["content-type"] == "application/geo+json" and doc["type"] == "FeatureCollection"
    feature = doc["features"][0]
    ring = feature["geometry"]["coordinates"][0]
    assert feature["geometry"]["type"] == "Polygon" and ring[0] == ring[-1] and len(ring) == 7
    assert 4.38 < ring[0][0] < 4.41 and 51.20 < ring[0][1] < 51.22  # lon, lat order
    # RFC 7946: an exterior ring is counter-clockwise (positive shoelace area); H3 gives it clockwise
    area2 = sum(a[0] * b[1] - b[0] * a[1] for a, b in itertools.pairwise(ring))
    assert area2 > 0
    r = client.get(URL.format("noise"), params=params, headers={"Accept": "text/html"})
    assert r.status_code == 406 and r.json()["parameter"] == "Accept"
    r = client.get(URL.format("noise"), params={**params, "format": "xml"})
    assert r.status_code == 400 and r.json()["parameter"] == "format"


def test_a_coarser_resolution_is_derived_from_the_published_bins(client):
    hourly, _ = get_all(client, URL.format("traffic"), **{"from": D0, "to": D1, "limit": 100_000})
    daily, _ = get_all(client, URL.format("traffic"), **{"from": D0, "to": D1, "resolution": "1d"})
    assert daily and all(r["bin"] == "1d" for r in daily)
    for d in daily:
        mine = [h for h in hourly if h["cell"] == d["cell"]]
        assert d["cars"] == sum(h["cars"] for h in mine)
        assert d["n_contributors"] == max(h["n_contributors"] for h in mine)
    r = client.get(URL.format("noise"), params={"from": D0, "to": D1, "resolution": "1h", "fields": "laeq_p90"})
    assert r.status_code == 400 and r.json()["parameter"] == "fields"  # a percentile of percentiles: refused
    r = client.get(URL.format("noise"), params={"from": D0, "to": D1, "resolution": "1h"})
    assert r.status_code == 200 and "laeq_p90" not in r.json()["fields"]


def test_align_outer_widens_an_unaligned_window_to_whole_bins(client):
    """What a dashboard link sends (``${__from:date:iso}``): milliseconds, any minute; widened, not refused."""
    exact, _ = get_all(client, URL.format("noise"), **{"from": D0, "to": D1, "limit": 100_000})
    inner_from = (DAY + timedelta(minutes=7, seconds=3, milliseconds=254)).isoformat(timespec="milliseconds")
    inner_to = (DAY + timedelta(hours=23, minutes=50)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    r = client.get(URL.format("noise"), params={"from": inner_from, "to": inner_to})
    assert r.status_code == 400 and r.json()["parameter"] == "from"  # exact is the default
    widened, _ = get_all(
        client, URL.format("noise"), **{"from": inner_from, "to": inner_to, "align": "outer", "limit": 100_000}
    )
    assert widened == exact  # 00:07:03.254 -> 00:00, 23:50 -> 24:00
    hourly, _ = get_all(
        client, URL.format("noise"), **{"from": inner_from, "to": inner_to, "align": "outer", "resolution": "1h"}
    )
    assert {r["time"] for r in hourly} == {(DAY + timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%SZ") for h in range(24)}
    csv = client.get(
        URL.format("noise"),
        params={"from": inner_from, "to": inner_to, "align": "outer", "format": "csv", "limit": 100_000},
    )
    assert csv.status_code == 200 and len(pd.read_csv(io.StringIO(csv.text))) == len(exact)


@pytest.mark.parametrize(
    ("params", "status", "parameter"),
    [
        ({"from": D0, "to": D1, "align": "inner"}, 400, "align"),
        ({"from": D0, "to": D1, "resolution": "5m"}, 400, "resolution"),  # finer than the charter
        ({"from": D0, "to": D1, "resolution": "25m"}, 400, "resolution"),  # not a multiple of 15m
        ({"from": D0.replace("00:00:00", "00:07:00"), "to": D1}, 400, "from"),  # unaligned
        ({"from": D0, "to": D1.replace("00:00:00", "00:20:00")}, 400, "to"),
        ({"from": D0.replace("Z", ""), "to": D1}, 400, "from"),  # no offset
        ({"from": "yesterday", "to": D1}, 400, "from"),
        ({"from": D1, "to": D0}, 400, "to"),  # reversed
        ({"from": "1900-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}, 400, "to"),  # huge range
        ({"from": D0, "to": D1, "cells": "not-a-cell"}, 400, "cells"),
        ({"from": D0, "to": D1, "cells": "8a1fa4c5872ffff", "bbox": "4,51,5,52"}, 400, "cells"),
        ({"from": D0, "to": D1, "bbox": "5,52,4,51"}, 400, "bbox"),
        ({"from": D0, "to": D1, "fields": "sensor"}, 400, "fields"),  # not on the allow-list
        ({"from": D0, "to": D1, "limit": 10**9}, 400, "limit"),
        ({"from": D0, "to": D1, "limit": 0}, 400, "limit"),
        ({"from": D0, "to": D1, "cursor": "garbage!"}, 400, "cursor"),
        ({"from": D0, "to": D1, "level": "raw"}, 400, "level"),
    ],
)
def test_bad_requests_get_a_problem_naming_the_parameter(client, params, status, parameter):
    r = client.get(URL.format("noise"), params=params)
    assert r.status_code == status, r.text
    doc = r.json()
    assert r.headers["content-type"] == "application/problem+json"
    assert doc["status"] == status and doc["parameter"] == parameter and doc["type"].startswith("https://")
    assert "observations" not in doc


def test_unknown_datasets_and_private_categories_are_404(client):
    for name in ("gateway_health", "radio", "sighting", "position", "deadletters"):
        r = client.get(URL.format(name), params={"from": D0, "to": D1})
        assert r.status_code == 404 and r.json()["parameter"] == "id"


def test_cells_and_bbox_select_space(client):
    rows, _ = get_all(client, URL.format("noise"), **{"from": D0, "to": D1, "limit": 100_000})
    cells = sorted({r["cell"] for r in rows})
    some, _ = get_all(client, URL.format("noise"), **{"from": D0, "to": D1, "cells": cells[0], "limit": 100_000})
    assert some and {r["cell"] for r in some} == {cells[0]}
    whole_zone, _ = get_all(
        client, URL.format("noise"), **{"from": D0, "to": D1, "bbox": "4.38,51.20,4.41,51.23", "limit": 100_000}
    )
    assert len(whole_zone) == len(rows)
    elsewhere, _ = get_all(client, URL.format("noise"), **{"from": D0, "to": D1, "bbox": "3.0,50.0,3.1,50.1"})
    assert elsewhere == []


def test_closed_windows_are_immutable_and_etags_give_304(client):
    params = {"from": D0, "to": D1, "limit": 10}
    r = client.get(URL.format("energy"), params=params)  # a frozen dataset, a closed day
    assert r.status_code == 200 and r.headers["cache-control"] == "public, max-age=31536000, immutable"
    again = client.get(URL.format("energy"), params=params, headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and not again.content
    r = client.get(URL.format("noise"), params=params)  # may still change with late data (2-day window)
    assert r.headers["cache-control"] == "public, max-age=60"
    assert client.get(URL.format("noise"), params={**params, "limit": 11}).headers["etag"] != r.headers["etag"]


@pytest.mark.parametrize("dataset", ["energy", "noise", "traffic"])
def test_level_all_is_the_finest_points_and_the_rollups_each_once(client, published, dataset):
    """What a dashboard shows (every level): the finest points and the roll-ups, none twice or missing."""
    params = {"from": D0, "to": D1, "limit": 100_000}
    finest, _ = get_all(client, URL.format(dataset), **params, level="finest")
    rollups, _ = get_all(client, URL.format(dataset), **params, level="rollups")
    both, _ = get_all(client, URL.format(dataset), **params, level="all")
    assert finest or rollups
    if dataset == "energy":  # Volkstraat's 10 meters in their cell; the others too few owners even at res 8
        assert finest and not rollups
    if dataset == "traffic":  # a class below 5 in an hour is rolled up to the day
        assert finest and rollups
    key = lambda r: (r["time"], r["cell"], r["bin"])  # noqa: E731
    assert sorted(map(key, both)) == sorted(map(key, finest + rollups))
    assert len(set(map(key, both))) == len(both)
