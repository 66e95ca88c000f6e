r"""InfluxDB line protocol, written by hand (as ChirpStack does): exact escaping, no client library.

The only place in the project that renders line protocol: every stage hands ``smartzone.model.Point``
values to storage, and ``render`` turns one into

``measurement[,tag=value...] field=value[,field=value...] timestamp_ns``

One escaping rule (InfluxDB line protocol reference): in measurements, commas and spaces; in tag keys,
tag values and field keys, commas, equals signs and spaces; in string field values, double quotes and
backslashes. What cannot be escaped is refused with ``LineProtocolError``: a newline, carriage return or
NUL in a measurement, tag key, tag value or field key; one that is empty, or has a backslash at its end or
before a comma, equals sign or space (InfluxDB's parser skips the character after any backslash but
unescapes only ``\,`` ``\=`` ``\ ``: a backslash itself has no escape there); a measurement starting
with ``#`` (a comment line); text that is not valid Unicode (lone surrogates); a non-finite float; a NUL
in a string field value. Newlines and carriage returns in string field values are written as the two
characters ``\n`` / ``\r`` (a batch is one point per line). Empty tag values are left out.

Fast path: escaped measurements and keys are cached, ``TagSet`` holds a tag set rendered once (the
pipeline keeps one per sensor), so rendering a reading is a few dictionary look-ups and one ``repr``, and
``SharedFields`` holds fields several points share, rendered once for all of them (the radio points of one
LoRaWAN uplink: ``FieldSet(own, shared)``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping

from smartzone.model import FieldValue, Point, Store

_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ "})
_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_STRING = str.maketrans({'"': r"\"", "\\": "\\\\", "\n": "\\\\n", "\r": "\\\\r"})
_BACKSLASH = re.compile(r"\\(?=[,= ]|$)")  # a backslash line protocol would read as an escape
_CACHE_MAX = 10_000  # escaped names remembered (bounded: decoders' names come from the network)


class LineProtocolError(ValueError):
    """A value that line protocol cannot carry (newline, empty name, non-finite float)."""


def _check(text: str, what: str) -> str:
    if type(text) is not str:
        raise LineProtocolError(f"{what} {text!r} is not text")
    if not text:
        raise LineProtocolError(f"{what} is empty")
    if "\n" in text or "\r" in text or "\0" in text:
        raise LineProtocolError(f"{what} {text!r} contains a newline, carriage return or NUL")
    if "\\" in text and _BACKSLASH.search(text):
        raise LineProtocolError(f"{what} {text!r} has a backslash at its end or before a comma, '=' or space")
    if not text.isascii():
        _unicode(text, what)
    return text


def _unicode(text: str, what: str) -> None:
    try:
        text.encode()
    except UnicodeEncodeError:
        raise LineProtocolError(f"{what} {text!r} is not valid Unicode") from None


_measurements: dict[str, str] = {}
_keys: dict[str, str] = {}


def _cached(cache: dict[str, str], text: str, escape) -> str:
    escaped = escape(text)
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    cache[text] = escaped
    return escaped


def escape_measurement(name: str) -> str:
    if name[:1] == "#":
        raise LineProtocolError(f"measurement {name!r} starts with '#' (a comment line)")
    return _check(name, "measurement").translate(_MEASUREMENT)


def escape_key(text: str) -> str:
    """Escape a tag key, tag value or field key."""
    return _check(text, "key").translate(_KEY)


def format_value(value: FieldValue) -> str:
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
        if "\0" in value:
            raise LineProtocolError(f"string field {value!r} contains NUL")
        if not value.isascii():
            _unicode(value, "string field")
        return f'"{value.translate(_STRING)}"'
    raise LineProtocolError(f"unsupported field type {type(value).__name__}")


def tag_set(tags: Mapping[str, str | None]) -> str:
    """``,k=v,...`` sorted by key (InfluxDB's preferred order), empty values left out."""
    keys = _keys
    return "".join(f",{keys.get(k) or _cached(keys, k, escape_key)}={keys.get(v) or _cached(keys, v, escape_key)}"
                   for k, v in sorted(tags.items()) if v)


class TagSet(Mapping):
    """A tag set checked and rendered once (empty values left out), for tags many points share.

    A read-only mapping, usable wherever ``Point.tags`` is. Equal and hashed by identity (one C call on the
    hot path, where the pipeline keeps one per sensor): compare contents with ``dict(tags)``. Raises
    ``LineProtocolError`` when built from tags line protocol cannot carry.
    """

    __slots__ = ("_tags", "rendered")
    __hash__ = object.__hash__
    __eq__ = object.__eq__

    def __init__(self, tags: Mapping[str, str | None]) -> None:
        self._tags = {k: v for k, v in sorted(tags.items()) if v}
        self.rendered = tag_set(self._tags)

    def __getitem__(self, key: str) -> str:
        return self._tags[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tags)

    def __len__(self) -> int:
        return len(self._tags)

    def __repr__(self) -> str:
        return f"TagSet({self._tags!r})"


def render(p: Point) -> str:
    """One Point as one line, or ``LineProtocolError``."""
    m = _measurements.get(p.measurement) or _cached(_measurements, p.measurement, escape_measurement)
    tags = p.tags
    ts = tags.rendered if type(tags) is TagSet else tag_set(tags)
    return f"{m}{ts} {field_set(p.fields)} {p.time_ns}"


def field_set(fields: Mapping[str, FieldValue]) -> str:
    """``k=v,...`` in the mapping's order, or ``LineProtocolError``."""
    body = []
    keys = _keys
    for k, v in fields.items():
        ek = keys.get(k) or _cached(keys, k, escape_key)
        tv = type(v)
        if tv is float:
            if v - v != 0.0:  # inf - inf and nan - nan are nan
                raise LineProtocolError(f"{k}={v!r} cannot be stored")
            body.append(f"{ek}={v!r}")
        elif tv is int:
            body.append(f"{ek}={v}i")
        else:
            body.append(f"{ek}={format_value(v)}")
    if not body:
        raise LineProtocolError("a point needs at least one field")
    return ",".join(body)


class SharedFields:
    """Fields that several points share (the radio points of one uplink: its frequency, data rate, frame
    counter ...), rendered once, on first use, by the same rules as any field: see ``FieldSet``."""

    __slots__ = ("fields", "_rendered")

    def __init__(self, fields: Mapping[str, FieldValue]) -> None:
        self.fields = fields
        self._rendered: str | None = None

    def rendered(self) -> str:
        """``k=v,...``, or "" when line protocol cannot carry them (``render`` then says why, point by point)."""
        r = self._rendered
        if r is None:
            try:
                r = field_set(self.fields)
            except LineProtocolError:
                r = ""
            self._rendered = r
        return r


class FieldSet(Mapping[str, FieldValue]):
    """A point's fields: its own (``own``), then those it shares with other points (``shared``, rendered once
    for all of them). A read-only mapping, usable wherever ``Point.fields`` is; an own field hides a shared
    one of the same key."""

    __slots__ = ("own", "shared")

    def __init__(self, own: Mapping[str, FieldValue], shared: SharedFields) -> None:
        self.own = own
        self.shared = shared

    def __getitem__(self, key: str) -> FieldValue:
        own = self.own
        return own[key] if key in own else self.shared.fields[key]

    def __iter__(self) -> Iterator[str]:
        own = self.own
        yield from own
        yield from (k for k in self.shared.fields if k not in own)

    def __len__(self) -> int:
        own = self.own
        return len(own) + sum(1 for k in self.shared.fields if k not in own)

    def __repr__(self) -> str:
        return f"FieldSet({self.own!r}, {self.shared.fields!r})"


def render_by_store(points: Iterable[Point]) -> tuple[dict[Store, list[str]], list[tuple[Point, str]]]:
    """Points as lines per store, and the points line protocol cannot carry, each with the reason.

    The worker's hot path: a point whose measurement and field keys were rendered before, with a ``TagSet``
    (a reading, a radio record) is formatted inline, by the same rules; anything else goes through ``render``.
    """
    out: dict[Store, list[str]] = {}
    bad: list[tuple[Point, str]] = []
    measurements, keys, string = _measurements, _keys, _STRING
    for p in points:
        m, tags, fields, ns, store = p
        ln = None
        em = measurements.get(m)
        if em is not None and type(tags) is TagSet:
            parts: list[str] = []
            ok = True
            shared = ""
            if type(fields) is FieldSet:  # its shared fields are rendered once ("" when render() must say why not)
                own = fields.own
                shared = fields.shared.rendered()
                ok = bool(shared) and own.keys().isdisjoint(fields.shared.fields)
                fields = own
            if ok:
                for k, v in fields.items():
                    ek = keys.get(k)
                    tv = type(v)
                    if ek is None:
                        ok = False
                        break
                    if tv is float and v - v == 0.0:  # finite
                        parts.append(f"{ek}={v!r}")
                    elif tv is int:
                        parts.append(f"{ek}={v}i")
                    elif tv is bool:
                        parts.append(f"{ek}=true" if v else f"{ek}=false")
                    elif tv is str and v.isascii() and "\0" not in v:
                        parts.append(f'{ek}="{v.translate(string)}"')
                    else:  # non-finite, non-ASCII text, another type: render() says what
                        ok = False
                        break
                if ok:
                    if shared:
                        parts.append(shared)
                    if parts:
                        ln = f"{em}{tags.rendered} {','.join(parts)} {ns}"
        if ln is None:
            try:
                ln = render(p)
            except LineProtocolError as exc:
                bad.append((p, str(exc)))
                continue
        lines = out.get(store)
        if lines is None:
            out[store] = [ln]
        else:
            lines.append(ln)
    return out, bad


def line(measurement: str, tags: Mapping[str, str | None], fields: Mapping[str, FieldValue],
         time_ns: int) -> str:
    """``render`` of one point given by its parts."""
    return render(Point(measurement, tags, fields, time_ns))


def join(lines: Iterable[str]) -> bytes:
    return "\n".join(lines).encode()
