"""Time parsing shared by the decoders: everything ends as an aware UTC datetime."""

from __future__ import annotations

import math
from datetime import UTC, datetime, tzinfo

from smartzone.errors import DecodeError

_MS_THRESHOLD = 1e11  # epoch numbers above this are milliseconds (1e11 s is the year 5138)


def parse_time(value: object, local_tz: tzinfo | None = None) -> datetime:
    """ISO 8601 text or epoch seconds/milliseconds -> aware UTC datetime.

    Text without a zone is local time of ``local_tz`` (Tasmota's ``Time``); without ``local_tz`` it is
    an error, because guessing the zone would shift readings by hours.
    """
    if isinstance(value, bool):
        raise DecodeError("bad_timestamp", f"{value!r} is not a time")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise DecodeError("bad_timestamp", f"{value!r} is not a time")
        seconds = value / 1000 if value > _MS_THRESHOLD else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise DecodeError("bad_timestamp", f"{value!r}: {exc}") from exc
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            t = datetime.fromisoformat(text)
        except ValueError as exc:
            raise DecodeError("bad_timestamp", f"{value!r} is not ISO 8601") from exc
        if t.tzinfo is None:
            if local_tz is None:
                raise DecodeError("bad_timestamp", f"{value!r} has no time zone and none is known")
            t = t.replace(tzinfo=local_tz)
        return t.astimezone(UTC)
    raise DecodeError("bad_timestamp", f"{value!r} is not a time")
