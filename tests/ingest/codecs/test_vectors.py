"""Every LoRaWAN codec against its test vectors, plus round-trip and fuzz properties.

A vector is ``cases/<codec NAME>/<case>.yaml`` with ``source`` (where the frame and its expected
values come from; omitted only for hand-made failure cases, which say in a comment how they were
made), ``f_port``, ``payload_hex`` and either ``readings`` (the exact ordered list of
``{quantity, value}``) or ``error`` (the DecodeError reason).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.codecs import CODECS, bosch_parking, cayenne_lpp, decentlab_dl_pm, elsys, milesight_vs133
from smartzone.errors import DecodeError
from smartzone.quantities import QUANTITIES

CASES = sorted((Path(__file__).parent / "cases").glob("*/*.yaml"))
REASONS = {"wrong_length", "unknown_channel", "unknown_port", "malformed"}


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _same(got: object, want: object) -> bool:
    if isinstance(want, float) and not isinstance(got, bool) and isinstance(got, float):
        return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)
    return type(got) is type(want) and got == want


def _same_values(got: dict, want: dict) -> bool:
    return got.keys() == want.keys() and all(
        math.isclose(got[k], want[k], rel_tol=1e-9, abs_tol=1e-9)
        if isinstance(want[k], float)
        else _same(got[k], want[k])
        for k in want
    )


def test_registry_lists_every_codec_module():
    assert set(CODECS) == {p.name for p in (Path(__file__).parent / "cases").iterdir() if p.is_dir()}
    for name, module in CODECS.items():
        assert name == module.NAME
        assert module.PORTS is None or (isinstance(module.PORTS, frozenset) and module.PORTS)
        assert callable(module.decode) and callable(module.encode)
        assert module.__doc__ and len(module.__doc__) > 200, f"{name}: document the frame layout"


def test_every_codec_has_sourced_examples_and_failure_cases():
    by_codec: dict[str, list[dict]] = {}
    for path in CASES:
        by_codec.setdefault(path.parent.name, []).append(_load(path))
    assert set(by_codec) == set(CODECS)
    for name, cases in by_codec.items():
        real = [c for c in cases if c.get("source") and c.get("readings")]
        assert len(real) >= 2, f"{name}: needs at least two sourced real examples with readings"
        assert any("error" in c for c in cases), f"{name}: no failure case"
        for c in cases:
            assert ("readings" in c) != ("error" in c), c
            assert "error" not in c or c["error"] in REASONS, c


@pytest.mark.parametrize("path", CASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_vector(path: Path):
    case = _load(path)
    codec = CODECS[path.parent.name]
    data = bytes.fromhex(case["payload_hex"])
    if "error" in case:
        with pytest.raises(DecodeError) as info:
            codec.decode(data, case["f_port"])
        assert info.value.reason == case["error"], info.value
        assert info.value.detail
        return
    got = codec.decode(data, case["f_port"])
    want = [(r["quantity"], r["value"]) for r in case["readings"]]
    assert len(got) == len(want), got
    for (gq, gv), (wq, wv) in zip(got, want, strict=True):
        assert gq == wq, (got, want)
        assert _same(gv, wv), (gq, gv, wv)
        if "." in gq:  # a vocabulary key, not a native name: known, and inside its range
            q = QUANTITIES[gq]
            if q.kind == "bool":
                assert isinstance(gv, bool)
            else:
                assert not isinstance(gv, bool)
                assert (q.min is None or gv >= q.min) and (q.max is None or gv <= q.max), (gq, gv)


def test_unknown_port_is_refused_where_ports_are_declared():
    for module in CODECS.values():
        if module.PORTS is not None:
            port = next(p for p in range(1, 224) if p not in module.PORTS)
            with pytest.raises(DecodeError) as info:
                module.decode(b"\x01", port)
            assert info.value.reason == "unknown_port"


def test_lpp_default_quantities():
    assert cayenne_lpp.quantity("temperature_3") == "weather.temperature"
    assert cayenne_lpp.quantity("relative_humidity_2") == "weather.relative_humidity"
    assert cayenne_lpp.quantity("barometric_pressure_1") == "weather.pressure"
    assert cayenne_lpp.quantity("luminosity_7") == "weather.illuminance"
    assert cayenne_lpp.quantity("power_5") == "energy.power"
    for name in ("digital_input_1", "voltage_3", "accelerometer_5_x", "gps_1_latitude", "nonsense", "switch_5"):
        assert cayenne_lpp.quantity(name) is None, name
    for name in ("temperature_1", "current_1", "energy_1", "luminosity_1"):
        assert cayenne_lpp.quantity(name) in QUANTITIES


# --- round trips: decode(encode(x)) == x for x on each field's resolution grid --------------------


def _grid(width: int, signed: bool, divisor: int) -> st.SearchStrategy:
    lo, hi = (-(1 << (8 * width - 1)), (1 << (8 * width - 1)) - 1) if signed else (0, (1 << (8 * width)) - 1)
    raw = st.integers(lo, hi)
    return raw if divisor == 1 else raw.map(lambda r: r / divisor)


@st.composite
def _lpp_values(draw) -> dict:
    records = draw(
        st.lists(
            st.tuples(st.integers(0, 255), st.sampled_from(sorted(cayenne_lpp._TYPES))),
            min_size=1,
            max_size=8,
            unique=True,
        )
    )
    values: dict = {}
    for channel, type_ in records:
        name, axes, signed = cayenne_lpp._TYPES[type_]
        for suffix, width, divisor in axes:
            values[f"{name}_{channel}{suffix}"] = draw(_grid(width, signed, divisor))
    return values


@settings(max_examples=200, deadline=None)
@given(_lpp_values())
def test_lpp_round_trip(values):
    assert _same_values(dict(cayenne_lpp.decode(cayenne_lpp.encode(values), 1)), values)


@st.composite
def _elsys_values(draw) -> dict:
    types = draw(st.lists(st.sampled_from(sorted(elsys._TYPES)), min_size=1, unique=True))
    values: dict = {}
    for type_ in types:
        for name, width, signed, divisor in elsys._TYPES[type_]:
            if name is not None:
                values[name] = draw(_grid(width, signed, divisor))
    if not values:
        values["air_quality.co2"] = draw(_grid(2, False, 1))
    return values


@settings(max_examples=200, deadline=None)
@given(_elsys_values())
def test_elsys_round_trip(values):
    assert _same_values(dict(elsys.decode(elsys.encode(values), 5)), values)


def test_elsys_simulator_subset():
    values = {
        "weather.temperature": -12.3,
        "weather.relative_humidity": 55,
        "air_quality.co2": 1234,
        "gateway_health.battery_voltage": 3.61,
        "noise.lamax": 71,
        "noise.laeq": 48,
    }
    assert _same_values(dict(elsys.decode(elsys.encode(values), 5)), values)


@st.composite
def _dl_pm_values(draw) -> dict:
    values: dict = {}
    blocks = draw(st.sets(st.integers(0, 3), min_size=1))
    if 0 in blocks:
        values["gateway_health.battery_voltage"] = draw(st.integers(2000, 4000)) / 1000
    if 1 in blocks:
        for q in ("air_quality.pm1", "air_quality.pm2_5", "air_quality.pm10"):
            values[q] = draw(st.integers(0, 10_000)) / 10
    if 2 in blocks:  # the device's own words, through the vendor formulas
        values["weather.temperature"] = 175.72 * draw(st.integers(0, 0xFFFF)) / 65536 - 46.85
        values["weather.relative_humidity"] = 125 * draw(st.integers(0, 0xFFFF)) / 65536 - 6
    if 3 in blocks:
        values["weather.pressure"] = draw(st.integers(40_000, 55_000)) * 2 / 100
    return values


@settings(max_examples=200, deadline=None)
@given(_dl_pm_values())
def test_dl_pm_round_trip(values):
    assert _same_values(dict(decentlab_dl_pm.decode(decentlab_dl_pm.encode(values), 1)), values)


def test_dl_pm_simulator_values_within_resolution():
    values = {
        "weather.temperature": 21.37,
        "weather.relative_humidity": 48.2,
        "weather.pressure": 1013.2,
        "air_quality.pm1": 4.2,
        "air_quality.pm2_5": 7.9,
        "air_quality.pm10": 12.3,
        "gateway_health.battery_voltage": 3.3,
    }
    got = dict(decentlab_dl_pm.decode(decentlab_dl_pm.encode(values), 1))
    steps = {"weather.temperature": 175.72 / 65536, "weather.relative_humidity": 125 / 65536, "weather.pressure": 0.02}
    for q, v in values.items():
        assert abs(got[q] - v) <= steps.get(q, 1e-9) / 2 + 1e-9, (q, got[q], v)


@settings(max_examples=50, deadline=None)
@given(st.booleans(), st.sampled_from([None, 1, 2]))
def test_bosch_round_trip(occupied, port):
    values = {"parking.occupied": occupied}
    frame = bosch_parking.encode(values, port)
    assert bosch_parking.decode(frame, port or 1) == [("parking.occupied", occupied)]


@st.composite
def _vs133_values(draw) -> dict:
    values: dict = {}
    keys = [k for k in milesight_vs133._CHANNELS if milesight_vs133._CHANNELS[k][0][0] is not None]
    for key in draw(st.lists(st.sampled_from(keys), min_size=1, unique=True)):
        for name, width in milesight_vs133._CHANNELS[key]:
            values[name] = draw(_grid(width, False, 1))
    return values


@settings(max_examples=200, deadline=None)
@given(_vs133_values())
def test_vs133_round_trip(values):
    assert _same_values(dict(milesight_vs133.decode(milesight_vs133.encode(values), 85)), values)


# --- fuzz: any frame either decodes or raises DecodeError with a stable reason --------------------


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(CODECS)), st.binary(max_size=64), st.integers(1, 223))
def test_any_frame_decodes_or_raises_decode_error(name, data, port):
    module = CODECS[name]
    try:
        readings = module.decode(data, port)
    except DecodeError as exc:
        assert exc.reason in REASONS
        return
    for quantity, value in readings:
        assert isinstance(quantity, str) and isinstance(value, int | float)
        assert "." not in quantity or quantity in QUANTITIES
