"""Cells, zone and sensors against the published day: geometry, names, and no raw identifier or position."""

from __future__ import annotations

import math

import h3
import pytest

from api.store import OpenData
from smartzone.quantities import QUANTITIES
from smartzone.registry import Registry, normalise_key
from tests.api.conftest import CHARTER
from tests.api.test_catalogue import assert_polygon_holds_cells
from tests.conftest import REGISTRY

LISTED = "gateway_health"  # the one category not listed


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.load(REGISTRY)


@pytest.fixture(scope="module")
def features(client) -> dict[str, dict]:
    r = client.get("/v1/cells")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/geo+json")
    body = r.json()
    assert body["type"] == "FeatureCollection"
    return {f["id"]: f for f in body["features"]}


def haversine(lat1, lon1, lat2, lon2) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * 6_371_000 * math.asin(math.sqrt(a))


def nearest(registry, kind, cell) -> str:
    lat, lon = h3.cell_to_latlng(cell)
    places = [p for p in registry.doc.places if p.kind == kind]
    return min(places, key=lambda p: haversine(lat, lon, p.position.lat, p.position.lon)).name


def test_cells_are_the_zones_and_the_published_ones(features, registry, published):
    store = OpenData(published, CHARTER)
    try:
        published_cells = store.cells()
        air = store.cells("air_quality")
    finally:
        store.close()
    assert set(registry.cells) <= set(features)
    assert published_cells <= set(features)
    assert set(features) == set(registry.cells) | published_cells
    assert any(f["properties"]["resolution"] < 10 for f in features.values())  # roll-up cells
    for c in air:
        assert "air_quality" in features[c]["properties"]["datasets"]


def test_cell_geometry_and_names(features, registry):
    streets = {p.name for p in registry.doc.places if p.kind == "street"}
    hoods = {p.name for p in registry.doc.places if p.kind == "neighbourhood"}
    for cell, f in features.items():
        p = f["properties"]
        assert p["cell"] == cell and p["resolution"] == h3.get_resolution(cell)
        ring = f["geometry"]["coordinates"][0]
        assert f["geometry"]["type"] == "Polygon" and ring[0] == ring[-1] and len(ring) == 7
        expected = [v for lat, lon in sorted(h3.cell_to_boundary(cell), key=lambda p: p[1]) for v in (lon, lat)]
        got = [v for x, y in sorted(ring[:-1]) for v in (x, y)]
        assert got == pytest.approx(expected, abs=1e-6)  # lon, lat order
        assert p["name"] in streets and p["neighbourhood"] in hoods
        assert p["name"] == nearest(registry, "street", cell)
        assert p["neighbourhood"] == nearest(registry, "neighbourhood", cell)
        assert set(p["datasets"]) <= set(CHARTER.datasets)
    volkstraat = registry.sensors["aq-volkstraat-1"]
    cell = h3.latlng_to_cell(volkstraat.position.lat, volkstraat.position.lon, 10)
    assert features[cell]["properties"]["name"] == "Volkstraat"


def test_cell_filters(client):
    r = client.get("/v1/cells?dataset=air_quality&resolution=10")
    assert r.status_code == 200
    feats = r.json()["features"]
    assert feats and all(
        "air_quality" in f["properties"]["datasets"] and f["properties"]["resolution"] == 10 for f in feats
    )
    r = client.get("/v1/cells?dataset=nope")
    assert r.status_code == 400 and r.json()["parameter"] == "dataset"
    r = client.get("/v1/cells?resolution=16")
    assert r.status_code == 400 and r.json()["parameter"] == "resolution"
    r = client.get("/v1/cells", headers={"Accept": "text/html"})
    assert r.status_code == 406 and r.headers["content-type"] == "application/problem+json"
    assert (
        client.get("/v1/cells", headers={"Accept": "application/json"})
        .headers["content-type"]
        .startswith("application/json")
    )


def test_zone(client, registry):
    r = client.get("/v1/zone")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    z = r.json()
    doc = registry.doc.zone
    assert (z["name"], z["city"], z["timezone"], z["h3_resolution"]) == (doc.name, "Antwerp", doc.timezone, 10)
    assert z["gateways"] == len(registry.gateways)
    listed = [s for s in registry.sensors.values() if s.category != LISTED]
    assert z["sensors"]["total"] == len(listed) == sum(z["sensors"]["by_category"].values())
    assert z["sensors"]["by_category"]["air_quality"] == sum(1 for s in listed if s.category == "air_quality")
    assert z["cells"] == len(registry.cells)
    assert_polygon_holds_cells(z["outline"], registry.cells)
    west, south, east, north = z["bbox"]
    lon, lat = z["centre"]["coordinates"]
    assert west < lon < east and south < lat < north
    assert z["links"]["cells"] == "http://testserver/v1/cells"
    assert z["links"]["sensors"] == "http://testserver/v1/sensors"
    assert "Volkstraat" in z["places"]["streets"] and "Zuid" in z["places"]["neighbourhoods"]


def assert_no_raw_identifier(text: str, registry: Registry) -> None:
    """No device key, gateway EUI or coordinate (4+ decimals) of the registry appears in ``text``. Sensor ids
    are public (some sensors' keys are their ids; ids are removed before the keys are looked for)."""
    scrubbed = text
    for sid in sorted(registry.sensors, key=len, reverse=True):
        scrubbed = scrubbed.replace(sid, "<id>")
    low = scrubbed.lower()
    for s in registry.sensors.values():
        for key in s.keys:
            for form in {key, normalise_key(key), key.replace(":", ""), key.removeprefix("0x")}:
                if form != s.id:
                    assert form.lower() not in low, (s.id, form)
    positions = [s.position for s in registry.sensors.values() if s.position]
    positions += [g.position for g in registry.gateways.values()]
    for p in positions:
        for v in (p.lat, p.lon):
            for digits in (4, 5, 6):
                assert f"{v:.{digits}f}" not in text, v
                truncated = str(math.trunc(v * 10**digits) / 10**digits)
                if len(truncated.split(".")[1]) >= 4:
                    assert truncated not in text, v
    for g in registry.gateways.values():
        assert not g.eui or g.eui not in low


def test_sensors_list(client, registry):
    r = client.get("/v1/sensors")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    body = r.json()
    listed = [s for s in registry.sensors.values() if s.category != LISTED]
    assert body["count"] == len(listed) and [s["id"] for s in body["sensors"]] == [s.id for s in listed]
    assert_no_raw_identifier(r.text, registry)
    assert '"lat"' not in r.text and '"lon"' not in r.text and "gateway" not in r.text
    traffic = client.get("/v1/sensors?category=traffic").json()
    assert traffic["count"] == 4 and {s["category"] for s in traffic["sensors"]} == {"traffic"}
    for bad in ("bogus", "gateway_health"):
        r = client.get(f"/v1/sensors?category={bad}")
        assert r.status_code == 400 and r.json()["parameter"] == "category"


def test_each_sensor(client, registry):
    for s in registry.sensors.values():
        r = client.get(f"/v1/sensors/{s.id}")
        if s.category == LISTED:
            assert r.status_code == 404
            continue
        assert r.status_code == 200, s.id
        assert_no_raw_identifier(r.text, registry)
        d = r.json()
        assert (d["id"], d["category"], d["technology"], d["model"]) == (s.id, s.category, s.technology, s.model)
        quantities = {m["quantity"] for m in d["measures"]}
        assert {k for k in QUANTITIES if k.startswith(s.category + ".")} | set(s.fields.values()) == quantities
        assert all(m["unit"] == QUANTITIES[m["quantity"]].unit for m in d["measures"])
        # exactly the datasets the charter job reads the sensor for: admitted, and of what it sends
        assert [x["id"] for x in d["datasets"]] == reached(s), s.id
        assert d["placement"] == s.placement and d["published"] == bool(d["datasets"])
        for rule in d["datasets"]:
            ds = CHARTER.datasets[rule["id"]]
            assert rule["k"] == ds.k and rule["explanation"].startswith(ds.title)
            assert ("epsilon_per_day" in (rule["noise"] or {})) == (ds.noise is not None)
            prot = rule["protection"]
            assert prot["k"] == ds.k and s.placement in prot["sources"]["placement"]
            assert prot["sources"]["categories"] == list(ds.source.categories)
            assert (prot["magnitude"] is None) == (ds.magnitude is None)
            assert (prot["release"] is None) == (ds.release is None)
            assert (prot["small_counts"] is None) == (ds.small_counts is None)
            assert (prot["state_ttl"] is None) == (ds.state_ttl is None)
            assert prot["protects_against"] and prot["does_not_protect_against"]
            if ds.about_people:  # no raw extreme of a contributor, only registry outputs (spaces)
                assert all(f.startswith("spaces_") for f in prot["extremes"]["published"]), rule["id"]
        loc = d["location"]
        if not d["datasets"]:
            assert loc["cell"] is None and loc["published_as"].startswith("not published")
            assert d["publication"].startswith("Its data is not published in any open dataset")
        elif s.mobile:
            assert loc["cell"] is None and loc["published_as"] == "mobile: published per 200 m cell and hour"
            assert [x["id"] for x in d["datasets"]] == ["mobile_air_quality"]
        else:
            res = max(CHARTER.datasets[x["id"]].space.resolution for x in d["datasets"])
            assert loc["cell"] == h3.latlng_to_cell(s.position.lat, s.position.lon, res)
            for rule in d["datasets"]:
                ds = CHARTER.datasets[rule["id"]]
                assert rule["cell"] == h3.latlng_to_cell(s.position.lat, s.position.lon, ds.space.resolution)


def reached(s) -> list[str]:
    """The datasets a sensor's data reaches, from the charter's own rule: admitted, and sending what it reads."""
    out = []
    for name, ds in CHARTER.datasets.items():
        if not ds.admits(s):
            continue
        if ds.source.database == "pseudonymous":  # probe sniffers of the sighting kinds it counts
            sends = s.category == "pedestrian_flow" and s.technology in ds.source.kinds
        else:
            sends = ds.source.measurement == s.category or any(
                q.split(".")[0] == ds.source.measurement and q.split(".")[1] in ds.fields for q in s.fields.values()
            )
        if sends:
            out.append(name)
    return out


def test_sensors_reach_only_the_datasets_that_admit_them(client, registry):
    # the housing block's box also holds a BME280: its weather rows are never read, so weather is not listed
    egmont = client.get("/v1/sensors/energy-housing-egmont").json()
    assert [x["id"] for x in egmont["datasets"]] == ["energy", "energy_profiles"]
    assert egmont["placement"] == "private_premises"
    rules = {x["id"]: x["protection"] for x in egmont["datasets"]}
    assert rules["energy"]["magnitude"] == {
        "per": "data owner (the registry's owner of each sensor)",
        "min_owners": 3,
        "dominance": {"n": 1, "k": 50.0},
        "p_percent": 10.0,
    }
    assert rules["energy"]["release"] == {"id": "energy", "with": ["energy_profiles"]}
    assert rules["energy_profiles"]["release"] == {"id": "energy", "with": ["energy"]}
    assert rules["energy_profiles"]["counts"] == "meters"
    assert "moves the median at most to its neighbours' values" in rules["energy_profiles"]["does_not_protect_against"]
    assert "block manager" in rules["energy"]["protects_against"]
    assert "housing-egmont-manager" not in client.get("/v1/sensors").text  # owners are never shown
    # an indoor classroom CO2 sensor feeds nothing, and says so
    school = client.get("/v1/sensors/aq-lora-school-volkstraat").json()
    assert school["datasets"] == [] and school["published"] is False and school["placement"] == "indoor"
    assert school["location"]["cell"] is None
    assert school["publication"].startswith("Its data is not published in any open dataset. It is placed indoors")
    # trackers: k counts vehicles; statistics over vehicles, no extremes
    tracker = client.get("/v1/sensors/aq-lora-tracker-1").json()
    prot = tracker["datasets"][0]["protection"]
    assert prot["counts"].startswith("vehicles") and prot["extremes"]["published"] == []
    assert "city-van-1" not in client.get("/v1/sensors").text  # vehicles are never shown
    parking = client.get("/v1/sensors/parking-lora-bay-volkstraat-1").json()["datasets"][0]["protection"]
    assert parking["state_ttl"] == "PT2H" and parking["extremes"]["published"] == ["spaces_max"]
    traffic = client.get("/v1/sensors/traffic-volkstraat-1").json()["datasets"][0]["protection"]
    assert traffic["small_counts"]["below"] == 5 and traffic["small_counts"]["means"] == {
        "speed_mean": ["cars", "heavy_vehicles"]
    }
    for s in registry.sensors.values():
        if s.placement != "public_space":
            assert all(CHARTER.datasets[n].k > 1 for n in reached(s)), s.id


def test_sensor_rules(client):
    aq = client.get("/v1/sensors/aq-volkstraat-1").json()
    assert [x["id"] for x in aq["datasets"]] == ["air_quality"] and aq["location"]["h3_resolution"] == 10
    assert aq["datasets"][0]["bins"] == ["PT15M"] and aq["datasets"][0]["noise"] is None
    probe = client.get("/v1/sensors/ped-volkstraat-1").json()
    rules = {x["id"]: x for x in probe["datasets"]}
    assert set(rules) == {"pedestrian_flow", "pedestrian_counts"}
    assert rules["pedestrian_flow"]["noise"]["epsilon_per_day"] == 1.0
    counter = client.get("/v1/sensors/ped-lora-groenplaats-1").json()
    assert [x["id"] for x in counter["datasets"]] == ["pedestrian_counts"]
    meter = client.get("/v1/sensors/energy-momu").json()
    assert {x["id"]: x["h3_resolutions"][0] for x in meter["datasets"]} == {"energy": 10, "energy_profiles": 7}


def test_unknown_sensor(client):
    for sid in ("no-such-sensor", "health-gw-volkstraat"):
        r = client.get(f"/v1/sensors/{sid}")
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
        assert r.json()["parameter"] == "id"
    r = client.get("/v1/sensors/aq-volkstraat-1", headers={"Accept": "text/html"})
    assert r.status_code == 406
