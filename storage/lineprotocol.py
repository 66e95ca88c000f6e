"""InfluxDB line protocol, written by hand (as ChirpStack does): exact escaping, no client library.

``measurement[,tag=value...] field=value[,field=value...] timestamp_ns``

Escaping rules (InfluxDB line protocol reference): in measurements, commas and spaces; in tag keys,
tag values and field keys, commas, equals signs and spaces; in string field values, double quotes
and backslashes. Newlines cannot be escaped anywhere and are refused. Tag values may not be empty:
empty tags are left out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ "})
_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_STRING = str.maketrans({'"': r"\"", "\\": "\\\\"})


class LineProtocolError(ValueError):
    """A value that line protocol cannot carry (newline, empty name, non-finite float)."""


def _no_newline(text: str, what: str) -> str:
    if "\n" in text or "\r" in text:
        raise LineProtocolError(f"{what} {text!r} contains a newline")
    if not text:
        raise LineProtocolError(f"{what} is empty")
    if text.endswith("\\"):
        raise LineProtocolError(f"{what} {text!r} ends with a backslash")
    return text


def escape_measurement(name: str) -> str:
    return _no_newline(name, "measurement").translate(_MEASUREMENT)


def escape_key(text: str) -> str:
    """Escape a tag key, tag value or field key."""
    return _no_newline(text, "key").translate(_KEY)


def format_value(value: float | int | bool | str) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise LineProtocolError(f"{value!r} cannot be stored")
        return repr(value)
    if isinstance(value, str):
        if "\n" in value:
            value = value.replace("\n", "\\n")
        return f'"{value.translate(_STRING)}"'
    raise LineProtocolError(f"unsupported field type {type(value).__name__}")


def tag_set(tags: Mapping[str, str | None]) -> str:
    """``,k=v,...`` sorted by key (InfluxDB's preferred order), empty values left out."""
    return "".join(f",{escape_key(k)}={escape_key(v)}" for k, v in sorted(tags.items()) if v)


def line(measurement: str, tags: Mapping[str, str | None], fields: Mapping[str, float | int | bool | str],
         time_ns: int) -> str:
    if not fields:
        raise LineProtocolError("a point needs at least one field")
    fs = ",".join(f"{escape_key(k)}={format_value(v)}" for k, v in fields.items())
    return f"{escape_measurement(measurement)}{tag_set(tags)} {fs} {time_ns}"


def join(lines: Iterable[str]) -> bytes:
    return "\n".join(lines).encode()
