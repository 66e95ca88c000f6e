"""Line protocol: exact text (as ChirpStack's tests assert), and a round trip through a real influxd."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smartzone.settings import InfluxSettings
from storage.influx import Influx
from storage.lineprotocol import LineProtocolError, format_value, line


def test_exact_text():
    assert line("air_quality", {"sensor": "aq 1", "gateway": "gw,1", "cell": "", "category": "a=b"},
                {"pm2_5": 7.5, "count": 3, "ok": True, "note": 'say "hi" \\ bye'}, 1_700_000_000_000_000_000) == (
        r'air_quality,category=a\=b,gateway=gw\,1,sensor=aq\ 1 pm2_5=7.5,count=3i,ok=true,note="say \"hi\" \\ bye" '
        "1700000000000000000"
    )
    assert line("my measurement,x", {}, {"v": 1.0}, 1) == r"my\ measurement\,x v=1.0 1"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_floats_are_refused(value):
    with pytest.raises(LineProtocolError):
        format_value(value)


@pytest.mark.parametrize("bad", ["a\nb", "ends\\"])
def test_unescapable_names_are_refused(bad):
    with pytest.raises(LineProtocolError):
        line("m", {"t": bad}, {"v": 1.0}, 1)
    with pytest.raises(LineProtocolError):
        line(bad, {}, {"v": 1.0}, 1)


def test_empty_names_are_refused_and_empty_tags_left_out():
    with pytest.raises(LineProtocolError):
        line("", {}, {"v": 1.0}, 1)
    with pytest.raises(LineProtocolError):
        line("m", {}, {}, 1)
    assert line("m", {"cell": "", "sensor": None}, {"v": 1.0}, 1) == "m v=1.0 1"


# Printable text without newlines (line protocol cannot escape them) and without a trailing backslash.
_text = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20).filter(
    lambda s: not s.endswith("\\") and s.strip() == s and s not in ("time",)
)
_SPECIAL = st.sampled_from([",", "=", " ", '"', "\\", "a b", "x,y=z", 'q"uote', "back\\slash", "é µg/m³"])


@pytest.fixture(scope="module")
def roundtrip_db(influxd):
    client = Influx(InfluxSettings(url=influxd.url))
    db = f"lp_{uuid.uuid4().hex[:8]}"
    client.ensure_database(db, "INF")
    yield client, db
    client.drop_database(db)
    client.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    tag_value=st.one_of(_SPECIAL.filter(lambda s: not s.endswith("\\") and s.strip() == s), _text),
    field_key=st.one_of(st.sampled_from(["a b", "x,y", "k=v"]),
                        _text.filter(lambda s: s.isidentifier() and s not in ("s", "n"))),
    str_value=st.one_of(_SPECIAL, st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=30)),
    number=st.floats(allow_nan=False, allow_infinity=False, width=64),
    count=st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
def test_round_trip_through_influxd(roundtrip_db, tag_value, field_key, str_value, number, count):
    client, db = roundtrip_db
    measurement = f"m {uuid.uuid4().hex[:6]},x"
    ts = 1_700_000_000_123_456_789
    client.write(db, line(measurement, {"tag key": tag_value}, {field_key: number, "s": str_value, "n": count},
                          ts).encode())
    # identifiers in queries are double-quoted; escape quotes and backslashes for InfluxQL
    ident = measurement.replace("\\", "\\\\").replace('"', '\\"')
    rows = client.rows(f'SELECT * FROM "{ident}" GROUP BY *', db)  # noqa: S608 - the test's own name
    assert len(rows) == 1
    row = rows[0]
    assert row["tag key"] == tag_value
    assert float(row[field_key]) == number  # InfluxDB's JSON may print a large float without a decimal point
    assert row["s"] == str_value
    assert row["n"] == count
    assert row["time"] == ts
