"""The pipeline's checks, message by message (no services needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import h3
import orjson
import pytest

from datacharter.charter import Charter
from ingest.pipeline import Pipeline
from smartzone.settings import Settings
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


@pytest.mark.parametrize("readings, field_text", [
    ({"traffic.speed_mean": 31}, "speed_mean=31.0"),  # an int for a float quantity is stored as float
    ({"traffic.cars": 12}, "cars=12i"),
    ({"traffic.cars": 12.0}, "cars=12i"),  # a whole float for a count is the count
    ({"traffic.cars": 0}, "cars=0i"),
])
def test_values_take_the_quantity_kind(pipeline, readings, field_text):
    assert h3.latlng_to_cell(51.20960, 4.39345, 10) == "8a1fa4c5ab77fff"  # the sensor's registry position
    out = _run(pipeline, readings)
    assert out.letter is None
    assert out.lines == [
        "traffic,category=traffic,cell=8a1fa4c5ab77fff,gateway=gw-egmont,sensor=traffic-egmont-1,technology=wired "
        f"{field_text} {int(NOW.timestamp()) * 10**9}"
    ]


@pytest.mark.parametrize("readings, reason", [
    ({"traffic.cars": 3.5}, "invalid_value"),
    ({"traffic.cars": True}, "invalid_value"),
    ({"traffic.speed_mean": "fast"}, "invalid_value"),
    ({"traffic.speed_mean": -1.0}, "out_of_range"),
    ({"traffic.cars": 10**9}, "out_of_range"),
])
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
