"""``FieldLayout`` / ``Fields``: the fast path renders exactly what the generic path renders, or defers to it."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartzone.model import FieldValue, Point, Store
from storage.lineprotocol import FieldLayout, Fields, LineProtocolError, TagSet, render, render_by_store

TAGS = TagSet({"sensor": "s-1", "rx_gateway": "gw 1"})
OWN = FieldLayout({"rssi": int, "snr": float, "channel": int})
SHARED = FieldLayout({"f,cnt": int, "adr": bool, "code rate": str, "bw={x}": int})


def _point(fields: Fields) -> Point:
    return Point("radio", TAGS, fields, 1_700_000_000_000_000_000, Store.OPS)


def _generic(fields: Mapping[str, FieldValue]) -> str:
    """The same point with its fields as a plain dict: the generic path."""
    return render(Point("radio", TAGS, dict(fields), 1_700_000_000_000_000_000, Store.OPS))


def test_fields_are_a_mapping_of_own_then_shared() -> None:
    shared = Fields(SHARED, (7, True, "4/5", 125))
    f = Fields(OWN, (-87, 7.5, 2), shared)
    assert dict(f) == {
        "rssi": -87,
        "snr": 7.5,
        "channel": 2,
        "f,cnt": 7,
        "adr": True,
        "code rate": "4/5",
        "bw={x}": 125,
    }
    assert f == dict(f) and len(f) == 7 and f["adr"] is True
    with pytest.raises(KeyError):
        f["nope"]


def test_fast_path_equals_generic_path_with_escaped_keys() -> None:
    shared = Fields(SHARED, (7, False, 'a "b"\nc\\', 125))
    points = [_point(Fields(OWN, (-87, 7.5, 2), shared)), _point(Fields(OWN, (-90, -1.25, 0), shared))]
    out, bad = render_by_store(points)
    assert not bad
    assert out[Store.OPS] == [_generic(p.fields) for p in points]
    assert r"f\,cnt=7i" in out[Store.OPS][0] and r"code\ rate=" in out[Store.OPS][0]
    assert "\n" not in "".join(out[Store.OPS])


@pytest.mark.parametrize(
    "own, why",
    [
        ((-87, math.inf, 2), "cannot be stored"),
        ((-87, math.nan, 2), "cannot be stored"),
        ((True, 7.5, 2), None),  # a bool where an int is due: rendered by the generic path, as a bool
        (("-87", 7.5, 2), None),
    ],
)
def test_a_value_that_does_not_fit_goes_the_generic_way(own: tuple, why: str | None) -> None:
    p = _point(Fields(OWN, own))
    out, bad = render_by_store([p])
    if why is None:
        assert out[Store.OPS] == [_generic(p.fields)]
    else:
        assert not out and len(bad) == 1 and why in bad[0][1]


def test_unrepresentable_shared_fields_refuse_every_point_that_shares_them() -> None:
    shared = Fields(SHARED, (7, True, "nul\0", 125))
    points = [_point(Fields(OWN, (-87, 7.5, 2), shared)), _point(Fields(OWN, (-80, 1.0, 1), shared))]
    out, bad = render_by_store(points)
    assert not out and [why for _, why in bad] == ["string field 'nul\\x00' contains NUL"] * 2


def test_an_own_key_hides_the_shared_one() -> None:
    shared = Fields(FieldLayout({"rssi": int, "dr": int}), (1, 5))
    p = _point(Fields(OWN, (-87, 7.5, 2), shared))
    out, bad = render_by_store([p])
    assert not bad and out[Store.OPS] == [_generic(p.fields)]
    assert out[Store.OPS][0].count("rssi=") == 1


def test_layout_refuses_names_line_protocol_cannot_carry() -> None:
    for bad_key in ("a\nb", "", "x\\"):
        with pytest.raises(LineProtocolError):
            FieldLayout({bad_key: int})
    with pytest.raises(LineProtocolError):
        FieldLayout({"x": list})


@given(rssi=st.integers(-200, 20), snr=st.floats(allow_nan=True, allow_infinity=True), text=st.text(max_size=20))
def test_fast_and_generic_agree_for_any_values(rssi: int, snr: float, text: str) -> None:
    shared = Fields(FieldLayout({"code_rate": str}), (text,))
    p = _point(Fields(OWN, (rssi, snr, 1), shared))
    out, bad = render_by_store([p])
    try:
        expected = _generic(p.fields)
    except LineProtocolError as exc:
        assert not out and bad[0][1] == str(exc)
    else:
        assert not bad and out[Store.OPS] == [expected]
