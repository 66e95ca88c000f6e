"""The catalogue against the published day: DCAT-AP fields, JSON-LD, content negotiation, problems."""

from __future__ import annotations

import itertools
import json
from datetime import timedelta

import h3
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from datacharter.charter import open_field
from smartzone.quantities import QUANTITIES
from smartzone.registry import Registry
from tests.api.conftest import CHARTER, DAY
from tests.conftest import REGISTRY

BIN = {"15m": "PT15M", "1h": "PT1H", "1d": "P1D"}
CC_BY = "https://creativecommons.org/licenses/by/4.0/"
FREQ = "http://publications.europa.eu/resource/authority/frequency/"
ZULU = "%Y-%m-%dT%H:%M:%SZ"


def inside(point: tuple[float, float], ring: list[list[float]]) -> bool:
    """Ray casting: (lon, lat) strictly inside, or on the edge of, a closed ring."""
    x, y = point
    hit = False
    for (x1, y1), (x2, y2) in itertools.pairwise(ring):
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            hit = not hit
    return hit


def assert_polygon_holds_cells(geometry: dict, cells: set[str]) -> None:
    assert geometry["type"] == "Polygon"
    ring = geometry["coordinates"][0]
    assert len(ring) >= 4 and ring[0] == ring[-1]
    for lon, lat in ring:
        assert 4 < lon < 5 and 51 < lat < 52  # GeoJSON order: lon, lat (Antwerp)
    for c in cells:
        lat, lon = h3.cell_to_latlng(c)
        assert inside((lon, lat), ring), c


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.load(REGISTRY)


@pytest.fixture(scope="module")
def described(client) -> dict[str, dict]:
    """Every dataset's plain description, fetched once."""
    out = {}
    for name in CHARTER.datasets:
        r = client.get(f"/v1/datasets/{name}")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/json")
        out[name] = r.json()
    return out


def test_list_names_every_dataset_with_absolute_links(client):
    r = client.get("/v1/datasets")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert [d["id"] for d in body["datasets"]] == list(CHARTER.datasets)
    assert body["charter_version"] == CHARTER.version and body["licence"] == CC_BY
    for d in body["datasets"]:
        ds = CHARTER.datasets[d["id"]]
        assert d["title"] == ds.title and d["description"] == ds.purpose
        assert {"smart city", "Antwerp"} <= set(d["keywords"])
        assert d["links"] == {
            "self": f"http://testserver/v1/datasets/{d['id']}",
            "observations": f"http://testserver/v1/datasets/{d['id']}/observations",
            "dcat": f"http://testserver/v1/datasets/{d['id']}?format=jsonld",
        }


def test_list_as_jsonld_is_a_dcat_catalog(client):
    for r in (
        client.get("/v1/datasets", headers={"Accept": "application/ld+json"}),
        client.get("/v1/datasets?format=jsonld"),
    ):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/ld+json")
        body = r.json()
        assert body["@type"] == "dcat:Catalog"
        assert body["@context"]["dcat"] == "http://www.w3.org/ns/dcat#"
        assert body["@context"]["dct"] == "http://purl.org/dc/terms/"
        assert [d["dct:identifier"] for d in body["dcat:dataset"]] == list(CHARTER.datasets)
        assert all(d["@type"] == "dcat:Dataset" for d in body["dcat:dataset"])
        assert body["dct:license"]["@id"] == CC_BY


def test_dataset_dcat_fields(described, registry):
    for name, d in described.items():
        ds = CHARTER.datasets[name]
        assert d["id"] == name and d["title"] == ds.title
        assert d["description"].startswith(ds.purpose) and f"(dataset '{name}')" in d["description"]
        assert d["licence"] == {"id": "CC-BY-4.0", "url": CC_BY}
        assert d["publisher"] == {"name": CHARTER.doc.controller, "url": "https://www.antwerpen.be"}
        assert d["contact_point"]["email"] == CHARTER.doc.contact
        assert {"smart city", "Antwerp"} <= set(d["keywords"])
        assert d["temporal_resolution"] == BIN[ds.time.bin]
        assert d["temporal_roll_up"] == [BIN[b] for b in ds.time.roll_up]
        res = d["spatial_resolution"]
        assert res["h3_resolution"] == ds.space.resolution
        assert res["edge_length_m"] == pytest.approx(
            h3.average_hexagon_edge_length(ds.space.resolution, unit="m"), abs=0.1
        )
        freq = "DAILY" if ds.late_data == "freeze" else "CONT"
        assert d["update_frequency"]["uri"] == FREQ + freq
        assert d["charter"]["version"] == CHARTER.version and d["charter"]["k"] == ds.k
        assert d["charter"]["explanation"] in d["description"]
        assert_polygon_holds_cells(d["spatial"], registry.cells)
        # noise (epsilon, threshold, contribution bound) only where the charter adds noise
        assert ("epsilon" in json.dumps(d)) == (name == "pedestrian_flow")
        assert [f["name"] for f in d["fields"]] == [open_field(f, a) for f, a in ds.outputs] + ["n_contributors"] + (
            ["coverage"] if ds.coverage_measured else []
        )
        assert [x["format"] for x in d["distributions"]] == ["json", "csv", "parquet", "geojson"]
        for x in d["distributions"]:
            assert x["access_url"] == f"http://testserver/v1/datasets/{name}/observations?format={x['format']}"


def test_noise_is_shown_for_pedestrian_flow(described):
    ds = CHARTER.datasets["pedestrian_flow"]
    noise = described["pedestrian_flow"]["charter"]["noise"]
    assert noise["epsilon_per_day"] == ds.noise.epsilon_per_day
    assert noise["max_bins_per_subject_per_day"] == ds.noise.max_bins_per_subject_per_day
    assert noise["threshold"] == pytest.approx(ds.noise_threshold)
    assert all(described[n]["charter"]["noise"] is None for n in CHARTER.datasets if n != "pedestrian_flow")


def test_the_charter_rules_are_all_shown(described):
    for name, d in described.items():
        ds, rules = CHARTER.datasets[name], d["charter"]
        assert "dominance" not in rules  # the old key: the rules are per data owner now (magnitude)
        assert rules["sources"] == {
            "categories": list(ds.source.categories),
            "placement": list(ds.source.placement),
            "sensors": ds.source.sensors,
        }
        assert (rules["magnitude"] is None) == (ds.magnitude is None)
        assert (rules["release"] is None) == (ds.release is None)
        assert (rules["state_ttl"] is None) == (ds.state_ttl is None)
        assert rules["protects_against"] and rules["does_not_protect_against"]
        assert rules["protects_against"] in rules["explanation"]
    energy = described["energy"]["charter"]
    assert energy["magnitude"]["min_owners"] == 3 and energy["magnitude"]["p_percent"] == 10
    assert energy["magnitude"]["dominance"] == {"n": 1, "k": 50}
    assert energy["release"] == {"id": "energy", "with": ["energy_profiles"]}
    assert described["parking"]["charter"]["state_ttl"] == "PT2H"
    assert described["mobile_air_quality"]["charter"]["counts"].startswith("vehicles")
    assert described["energy_profiles"]["charter"]["counts"] == "meters"
    units = {f["name"]: f["unit"] for f in described["energy_profiles"]["fields"]}
    assert units["relative_load_p50"] == "/"


def test_fields_carry_units(described):
    units = {(n, f["name"]): f["unit"] for n, d in described.items() for f in d["fields"]}
    assert units["air_quality", "pm2_5_mean"] == QUANTITIES["air_quality.pm2_5"].unit == "ug/m3"
    assert units["noise", "laeq_energy_mean"] == "dB"
    assert units["weather", "temperature_mean"] == "Cel"
    assert units["pedestrian_flow", "devices"] == "count"
    assert units["energy", "energy_kwh"] == "kWh"
    assert units["parking", "occupancy_mean"] == "/"
    assert all(units[n, "n_contributors"] == "count" for n in described)


def test_temporal_coverage_is_the_published_day(described):
    day = {"start": DAY.strftime(ZULU), "end": (DAY + timedelta(days=1)).strftime(ZULU)}
    assert described["air_quality"]["temporal_coverage"] == day
    assert described["traffic"]["temporal_coverage"] == day
    for d in described.values():  # whatever was published lies in the day
        if d["temporal_coverage"] is not None:
            assert day["start"] <= d["temporal_coverage"]["start"] < d["temporal_coverage"]["end"] <= day["end"]


def test_dataset_as_jsonld(client):
    r = client.get("/v1/datasets/air_quality", headers={"Accept": "application/ld+json"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/ld+json")
    d = r.json()
    ctx = d["@context"]
    for prefix in ("dcat", "dct", "foaf", "vcard", "locn"):
        assert prefix in ctx
    assert d["@type"] == "dcat:Dataset" and d["@id"] == "http://testserver/v1/datasets/air_quality"
    assert d["dct:license"]["@id"] == CC_BY
    assert d["dct:temporal"]["@type"] == "dct:PeriodOfTime"
    assert d["dct:temporal"]["dcat:startDate"]["@value"] == DAY.strftime(ZULU)
    geometry = json.loads(d["dct:spatial"]["locn:geometry"]["@value"])
    assert geometry["type"] == "Polygon"
    assert d["dcat:temporalResolution"]["@value"] == "PT15M"
    assert d["dcat:spatialResolutionInMeters"]["@value"] == pytest.approx(75.9, abs=0.1)
    assert d["dct:accrualPeriodicity"]["@id"] == FREQ + "CONT"
    assert d["dct:conformsTo"]["owl:versionInfo"] == CHARTER.version
    assert d["dcat:contactPoint"]["vcard:hasEmail"]["@id"] == f"mailto:{CHARTER.doc.contact}"
    media = {x["dcat:mediaType"]["@id"].rsplit("/", 1)[1] for x in d["dcat:distribution"]}
    assert media == {"json", "csv", "vnd.apache.parquet", "geo+json"}
    assert all(
        x["dcat:accessURL"]["@id"].startswith("http://testserver/v1/datasets/air_quality/observations")
        for x in d["dcat:distribution"]
    )
    assert "sz:epsilonPerDay" not in d
    pf = client.get("/v1/datasets/pedestrian_flow?format=jsonld").json()
    assert pf["sz:epsilonPerDay"] == 1.0 and pf["dct:accrualPeriodicity"]["@id"] == FREQ + "DAILY"


@pytest.mark.parametrize(
    ("accept", "media"),
    [
        ("*/*", "application/json"),
        ("application/*", "application/json"),
        ("text/html,application/xhtml+xml,*/*;q=0.8", "application/json"),
        ("application/ld+json;q=1, application/json;q=0.5", "application/ld+json"),
        ("application/json, application/ld+json;q=0.9", "application/json"),
    ],
)
def test_accept(client, accept, media):
    r = client.get("/v1/datasets/noise", headers={"Accept": accept})
    assert r.status_code == 200 and r.headers["content-type"].startswith(media)
    assert "Accept" in r.headers["vary"]


@pytest.mark.parametrize("path", ["/v1/datasets", "/v1/datasets/noise"])
def test_not_acceptable(client, path):
    for accept in ("text/html", "application/json;q=0, text/csv"):
        r = client.get(path, headers={"Accept": accept})
        assert r.status_code == 406
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["status"] == 406


def test_problems(client):
    r = client.get("/v1/datasets/no_such_dataset")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["parameter"] == "id" and r.json()["type"].endswith("/unknown-dataset")
    r = client.get("/v1/datasets/noise?format=xml")
    assert r.status_code == 400 and r.json()["parameter"] == "format"


class EmptyStore:
    """An open database with nothing published yet."""

    def coverage(self, dataset):
        return None

    def cells(self, dataset=None):
        return set()

    def measurement(self, name):
        return f'"{name}"'

    def rows(self, q, params=None):
        return []

    def window_coverage(self, dataset, start=None, end=None):
        return []


class DownStore(EmptyStore):
    def coverage(self, dataset):
        raise ConnectionError("influxd is down")


def test_nothing_published_yet_and_configured_base_url(published):
    settings = published.model_copy(
        update={"api": published.api.model_copy(update={"base_url": "https://data.example.org/"})}
    )
    with TestClient(create_app(settings, charter=CHARTER, store=EmptyStore())) as c:
        d = c.get("/v1/datasets/air_quality").json()
        assert d["temporal_coverage"] is None and d["coverage"]["days"] == []
        assert d["links"]["self"] == "https://data.example.org/v1/datasets/air_quality"
        ld = c.get("/v1/datasets/air_quality?format=jsonld").json()
        assert "dct:temporal" not in ld and ld["@id"] == "https://data.example.org/v1/datasets/air_quality"
    with TestClient(create_app(settings, charter=CHARTER, store=DownStore())) as c:
        r = c.get("/v1/datasets/air_quality")
        assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"


def test_openapi_documents_the_catalogue(client):
    spec = client.get("/openapi.json").json()
    ok = spec["paths"]["/v1/datasets/{id}"]["get"]["responses"]["200"]["content"]
    assert {"application/json", "application/ld+json"} <= set(ok)
    assert "example" in ok["application/json"]
