"""parse_time: ISO 8601 text or epoch seconds/milliseconds -> aware UTC datetime, or DecodeError."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from ingest.decoders._time import parse_time
from smartzone.errors import DecodeError

BRUSSELS = ZoneInfo("Europe/Brussels")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T10:00:00Z", datetime(2024, 5, 1, 10, 0, tzinfo=UTC)),
        ("2024-05-01T10:00:00.250Z", datetime(2024, 5, 1, 10, 0, 0, 250_000, tzinfo=UTC)),
        ("2024-05-01T12:00:00+02:00", datetime(2024, 5, 1, 10, 0, tzinfo=UTC)),
        (" 2024-05-01T10:00:00+00:00 ", datetime(2024, 5, 1, 10, 0, tzinfo=UTC)),
    ],
)
def test_iso_text_with_zone(text, expected):
    got = parse_time(text)
    assert got == expected
    assert got.tzinfo is UTC


def test_text_without_zone_is_local_time_of_the_given_zone():
    # Brussels is UTC+1 in winter and UTC+2 in summer (CEST).
    assert parse_time("2024-01-15T12:00:00", BRUSSELS) == datetime(2024, 1, 15, 11, 0, tzinfo=UTC)
    assert parse_time("2024-07-15T12:00:00", BRUSSELS) == datetime(2024, 7, 15, 10, 0, tzinfo=UTC)


def test_text_without_zone_and_no_known_zone_is_refused():
    with pytest.raises(DecodeError) as info:
        parse_time("2024-05-01T12:00:00")
    assert info.value.reason == "bad_timestamp"


def test_epoch_seconds_and_milliseconds():
    expected = datetime(2024, 5, 1, 9, 59, tzinfo=UTC)
    assert parse_time(1714557540) == expected
    assert parse_time(1714557540.0) == expected
    assert parse_time(1714557540000) == expected
    assert parse_time(1714557540250) == datetime(2024, 5, 1, 9, 59, 0, 250_000, tzinfo=UTC)


def test_epoch_ignores_the_local_zone():
    assert parse_time(1714557540, BRUSSELS) == datetime(2024, 5, 1, 9, 59, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    [True, False, None, -1, float("nan"), float("inf"), "yesterday", "", "2024-13-01T00:00:00Z", [1714557540]],
)
def test_not_a_time(value):
    with pytest.raises(DecodeError) as info:
        parse_time(value, BRUSSELS)
    assert info.value.reason == "bad_timestamp"
