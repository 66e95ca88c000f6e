"""The pipeline's checks, message by message (no services needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import h3
import orjson
import pytest
import yaml

from datacharter.charter import Charter
from ingest.pipeline import Pipeline
from smartzone.registry import Registry
from smartzone.settings import Settings
from tests.conftest import REGISTRY
from tests.ingest.rendered import run

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def pipeline(registry) -> Pipeline:
    return Pipeline.from_settings(Settings(), registry, Charter.load(), pseudonymiser=None)


def _run(pipeline, readings: dict, time: datetime | None = NOW):
    doc = {"device": "traffic-egmont-1", "readings": readings}
    if time:
        doc["time"] = time.isoformat()
    return run(pipeline, pipeline.message("gw/gw-egmont/json/traffic-egmont-1", orjson.dumps(doc), NOW))


@pytest.mark.parametrize(
    "readings, field_text",
    [
        ({"traffic.speed_mean": 31}, "speed_mean=31.0"),  # an int for a float quantity is stored as float
        ({"traffic.cars": 12}, "cars=12i"),
        ({"traffic.cars": 12.0}, "cars=12i"),  # a whole float for a count is the count
        ({"traffic.cars": 0}, "cars=0i"),
    ],
)
def test_values_take_the_quantity_kind(pipeline, readings, field_text):
    out = _run(pipeline, readings)
    assert out.letter is None
    assert out.lines == [
        "traffic,category=traffic,cell=8a1fa4c5ab77fff,gateway=gw-egmont,sensor=traffic-egmont-1,technology=wired "
        f"{field_text} {int(NOW.timestamp()) * 10**9}"
    ]


@pytest.mark.parametrize("resolution", [10, 8])
def test_a_reading_lands_in_the_cell_of_its_registry_position(tmp_path, resolution):
    """The cell tag comes from the registry's position of the sensor at the zone's resolution, not from
    anything the message says; a mobile sensor gets no cell at all."""
    doc = yaml.safe_load(REGISTRY.read_text())
    doc["zone"]["h3_resolution"] = resolution
    moved = (51.2200, 4.4000)  # the sensor moved a kilometre north-east: another cell at every resolution here
    sensor = next(s for s in doc["sensors"] if s["id"] == "traffic-egmont-1")
    old = (sensor["position"]["lat"], sensor["position"]["lon"])
    sensor["position"] = {"lat": moved[0], "lon": moved[1]}
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(doc))
    pipeline = Pipeline.from_settings(Settings(), Registry.load(path), Charter.load(), pseudonymiser=None)
    out = _run(pipeline, {"traffic.cars": 3})
    (point,) = out.points
    assert point.tags["cell"] == h3.latlng_to_cell(*moved, resolution)
    assert h3.get_resolution(point.tags["cell"]) == resolution
    assert point.tags["cell"] != h3.latlng_to_cell(*old, resolution)
    assert f",cell={point.tags['cell']}," in out.lines[0]


def test_a_mobile_sensor_has_no_cell(pipeline, registry):
    mobile = next(s for s in registry.sensors.values() if s.mobile)
    info = registry.resolve(mobile.gateway, mobile.keys[0])
    assert info is not None and info.cell == ""
    assert "cell" not in pipeline._tag_set(info, mobile.gateway)


@pytest.mark.parametrize(
    "readings, reason",
    [
        ({"traffic.cars": 3.5}, "invalid_value"),
        ({"traffic.cars": True}, "invalid_value"),
        ({"traffic.speed_mean": "fast"}, "invalid_value"),
        ({"traffic.speed_mean": -1.0}, "out_of_range"),
        ({"traffic.cars": 10**9}, "out_of_range"),
    ],
)
def test_bad_values_are_refused_with_a_reason(pipeline, readings, reason):
    out = _run(pipeline, readings)
    assert out.lines == [] and out.letter.reason == reason


def test_one_bad_value_keeps_the_others_and_the_whole_payload(pipeline):
    out = _run(pipeline, {"traffic.cars": 4, "traffic.speed_mean": 9999.0, "traffic.cyclists": 2})
    assert len(out.lines) == 1 and "cars=4i,cyclists=2i" in out.lines[0]
    assert out.letter.reason == "out_of_range" and b"9999" in out.letter.payload


def test_receipt_time_used_without_device_time(pipeline):
    out = _run(pipeline, {"traffic.cars": 4}, time=None)
    assert out.lines[0].endswith(f" {int(NOW.timestamp()) * 10**9}")


def test_device_time_bounds(pipeline):
    assert _run(pipeline, {"traffic.cars": 4}, NOW + timedelta(minutes=4)).letter is None
    assert _run(pipeline, {"traffic.cars": 4}, NOW + timedelta(minutes=6)).letter.reason == "future_timestamp"
    assert _run(pipeline, {"traffic.cars": 4}, NOW - timedelta(days=29)).letter is None
    assert _run(pipeline, {"traffic.cars": 4}, NOW - timedelta(days=31)).letter.reason == "too_old"


def test_registry_field_map_and_decoder_crash(pipeline, monkeypatch):
    # noise sensors map the native ESPHome object id "laeq" through the registry's fields
    out = run(pipeline, pipeline.message("gw/gw-volkstraat/noise-volkstraat-1/sensor/laeq/state", b"61.5", NOW))
    assert out.letter is None and "noise,category=noise" in out.lines[0] and "laeq=61.5" in out.lines[0]

    # a decoder bug becomes a dead letter, not a crash
    def broken(msg):
        raise KeyError("boom")

    monkeypatch.setattr(pipeline, "routes", [("gw/+/json/#", "generic_json", broken)])
    pipeline._route_cache.clear()
    out = _run(pipeline, {"traffic.cars": 4})
    assert out.letter.reason == "decoder_error" and "KeyError" in out.letter.detail
