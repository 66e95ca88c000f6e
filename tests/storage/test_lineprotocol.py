"""Line protocol: exact text (as ChirpStack's tests assert), and a round trip through a real influxd."""

from __future__ import annotations

import re
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smartzone.model import Point, Store
from smartzone.settings import InfluxSettings
from storage.influx import Influx
from storage.lineprotocol import LineProtocolError, TagSet, format_value, line, render_by_store


def test_exact_text():
    assert line(
        "air_quality",
        {"sensor": "aq 1", "gateway": "gw,1", "cell": "", "category": "a=b"},
        {"pm2_5": 7.5, "count": 3, "ok": True, "note": 'say "hi" \\ bye'},
        1_700_000_000_000_000_000,
    ) == (
        r'air_quality,category=a\=b,gateway=gw\,1,sensor=aq\ 1 pm2_5=7.5,count=3i,ok=true,note="say \"hi\" \\ bye" '
        "1700000000000000000"
    )
    assert line("my measurement,x", {}, {"v": 1.0}, 1) == r"my\ measurement\,x v=1.0 1"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_floats_are_refused(value):
    with pytest.raises(LineProtocolError):
        format_value(value)


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\0b", "ends\\", "a\\,b", "a\\ b", "a\\=b", "\ud800"])
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


def test_points_render_by_store_and_refuse_what_they_cannot_carry():
    good = Point("m", TagSet({"sensor": "s 1", "cell": ""}), {"v": 1.5, "n": 2, "ok": False, "s": 'x"\n'}, 7, Store.OPS)
    bad = Point("m", {"sensor": "evil\nm v=1i 1"}, {"v": 1.0}, 8)
    lines, refused = render_by_store([good, bad, good._replace(fields={"v": float("nan")})])
    assert lines == {Store.OPS: ['m,sensor=s\\ 1 v=1.5,n=2i,ok=false,s="x\\"\\\\n" 7']}
    assert [p.time_ns for p, _ in refused] == [8, 7]
    assert dict(TagSet({"b": "2", "a": "1", "c": ""})) == {"a": "1", "b": "2"} and len(TagSet({"a": "1", "b": ""})) == 1


# Printable text without newlines (line protocol cannot escape them) and without a backslash InfluxDB would
# read as an escape (at the end, or before a comma, '=' or space).
_text = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20).filter(
    lambda s: not re.search(r"\\(?=[,= ]|$)", s) and s.strip() == s and s not in ("time",)
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
    field_key=st.one_of(
        st.sampled_from(["a b", "x,y", "k=v"]), _text.filter(lambda s: s.isidentifier() and s not in ("s", "n"))
    ),
    str_value=st.one_of(_SPECIAL, st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=30)),
    number=st.floats(allow_nan=False, allow_infinity=False, width=64),
    count=st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
def test_round_trip_through_influxd(roundtrip_db, tag_value, field_key, str_value, number, count):
    client, db = roundtrip_db
    measurement = f"m {uuid.uuid4().hex[:6]},x"
    ts = 1_700_000_000_123_456_789
    client.write(
        db, line(measurement, {"tag key": tag_value}, {field_key: number, "s": str_value, "n": count}, ts).encode()
    )
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
