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
with ``#`` (a comment line); text that is not valid Unicode (lone surrogates); a non-finite float; an
integer outside InfluxDB's int64; a NUL in a string field value. Newlines and carriage returns in string
field values are written as the two characters ``\n`` / ``\r`` (a batch is one point per line). Empty tag
values are left out.

Fast path: escaped measurements and keys are cached, ``TagSet`` holds a tag set rendered once (the
pipeline keeps one per sensor), so rendering a reading is a few dictionary look-ups and one ``repr``, and
``FieldLayout`` fixes a decoder's constant field set (keys checked and escaped once, values rendered by one
format string); its ``Fields`` may share a part with other points, rendered once for all of them (the radio
points of one LoRaWAN uplink).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from smartzone.model import FieldValue, Point, Store

_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ "})
_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_STRING = str.maketrans({'"': r"\"", "\\": "\\\\", "\n": "\\\\n", "\r": "\\\\r"})
_BACKSLASH = re.compile(r"\\(?=[,= ]|$)")  # a backslash line protocol would read as an escape
_CACHE_MAX = 10_000  # escaped names remembered (bounded: decoders' names come from the network)
INT_MIN, INT_MAX = -(2**63), 2**63 - 1  # InfluxDB's integer fields are int64


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


def _cached(cache: dict[str, str], text: str, escape: Callable[[str], str]) -> str:
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
        if not INT_MIN <= value <= INT_MAX:
            raise LineProtocolError(_too_large(value))
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


def _too_large(value: int) -> str:
    return f"an integer of {value.bit_length()} bits is too large for InfluxDB (int64)"


def tag_set(tags: Mapping[str, str | None]) -> str:
    """``,k=v,...`` sorted by key (InfluxDB's preferred order), empty values left out."""
    keys = _keys
    return "".join(
        f",{keys.get(k) or _cached(keys, k, escape_key)}={keys.get(v) or _cached(keys, v, escape_key)}"
        for k, v in sorted(tags.items())
        if v
    )


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
    v: Any  # dispatched on its exact type below (mypy narrows isinstance, not a saved type(v))
    for k, v in fields.items():
        ek = keys.get(k) or _cached(keys, k, escape_key)
        tv = type(v)
        if tv is float:
            if v - v != 0.0:  # inf - inf and nan - nan are nan
                raise LineProtocolError(f"{k}={v!r} cannot be stored")
            body.append(f"{ek}={v!r}")
        elif tv is int:
            if not INT_MIN <= v <= INT_MAX:
                raise LineProtocolError(f"{k}: {_too_large(v)}")
            body.append(f"{ek}={v}i")
        else:
            body.append(f"{ek}={format_value(v)}")
    if not body:
        raise LineProtocolError("a point needs at least one field")
    return ",".join(body)


class FieldLayout:
    """Field keys and their types fixed in advance: a decoder's constant field set (a radio point's rssi, snr,
    channel ...), its keys checked and escaped once, here, and a point's values rendered by one format string.

    ``FieldLayout({"rssi": int, "snr": float})`` (types: int, float, bool, str); ``layout(values, shared)`` makes
    the ``Fields`` of one point. A value that does not fit (another type, a non-finite float, a string with a
    NUL or invalid Unicode) is rendered by the generic path, which refuses it with the reason.
    """

    __slots__ = ("_bools", "_floats", "_ints", "_strs", "_template", "index", "keys", "types")

    def __init__(self, fields: Mapping[str, type]) -> None:
        if not fields:
            raise LineProtocolError("a field layout needs at least one field")
        self.keys: tuple[str, ...] = tuple(fields)
        self.index = {k: i for i, k in enumerate(self.keys)}
        self.types: tuple[type, ...] = tuple(fields.values())
        template = []
        for k, t in fields.items():
            ek = escape_key(k).replace("{", "{{").replace("}", "}}")
            if t is int:
                template.append(f"{ek}={{}}i")
            elif t is float:
                template.append(f"{ek}={{!r}}")
            elif t is bool:
                template.append(f"{ek}={{}}")
            elif t is str:
                template.append(f'{ek}="{{}}"')
            else:
                raise LineProtocolError(f"field {k!r}: unsupported field type {t.__name__}")
        self._template = ",".join(template)
        self._bools = tuple(i for i, t in enumerate(self.types) if t is bool)
        self._floats = tuple(i for i, t in enumerate(self.types) if t is float)
        self._ints = tuple(i for i, t in enumerate(self.types) if t is int)
        self._strs = tuple(i for i, t in enumerate(self.types) if t is str)

    def __call__(self, values: tuple[FieldValue, ...], shared: Fields | None = None) -> Fields:
        return Fields(self, values, shared)

    def render(self, values: tuple[FieldValue, ...]) -> str | None:
        """``k=v,...``, or None when a value does not fit the layout (the generic path then says why)."""
        if tuple(map(type, values)) != self.types:
            return None
        for i in self._floats:
            v = values[i]
            if type(v) is float and v - v != 0.0:  # inf - inf and nan - nan are nan
                return None
        for i in self._ints:  # int64 (INT_MIN, INT_MAX), as literals: no global look-up on the hot path
            if not -0x8000000000000000 <= values[i] <= 0x7FFFFFFFFFFFFFFF:  # type: ignore[operator]  # an int
                return None
        if self._bools or self._strs:
            out = list(values)
            for i in self._bools:
                out[i] = "true" if out[i] else "false"
            for i in self._strs:
                text = out[i]
                if type(text) is not str or "\0" in text or (not text.isascii() and not _encodes(text)):
                    return None
                out[i] = text.translate(_STRING)
            return self._template.format(*out)
        return self._template.format(*values)


def _encodes(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


class Fields(Mapping[str, FieldValue]):
    """A point's fields as values of a ``FieldLayout``, then, optionally, fields it shares with other points
    (``shared``: the uplink-wide part of its radio points, rendered once for all of them). A read-only mapping,
    usable wherever ``Point.fields`` is; a key of its own hides a shared one (rendered by the generic path)."""

    __slots__ = ("_rendered", "data", "layout", "shared")

    def __init__(self, layout: FieldLayout, values: tuple[FieldValue, ...], shared: Fields | None = None) -> None:
        self.layout = layout
        self.data = values  # not ``values``: that is the Mapping method
        self.shared = shared
        self._rendered: str | None = None

    def rendered(self) -> str:
        """``k=v,...`` (its own, then the shared), or "" when the generic path must render (and refuse) it."""
        r = self._rendered
        if r is None:
            r = self.layout.render(self.data) or ""
            shared = self.shared
            if r and shared is not None:
                tail = shared._rendered
                if tail is None:  # the first of the points that share it
                    tail = shared.rendered()
                ok = tail and shared.shared is None and self.layout.index.keys().isdisjoint(shared.layout.keys)
                r = f"{r},{tail}" if ok else ""
            self._rendered = r
        return r

    def __getitem__(self, key: str) -> FieldValue:
        i = self.layout.index.get(key)
        if i is not None:
            return self.data[i]
        if self.shared is None:
            raise KeyError(key)
        return self.shared[key]

    def __iter__(self) -> Iterator[str]:
        own = self.layout.index
        yield from self.layout.keys
        if self.shared is not None:
            yield from (k for k in self.shared if k not in own)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"Fields({dict(self)!r})"


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
        if em is None or type(tags) is not TagSet:
            pass
        elif type(fields) is Fields:  # a fixed layout, rendered by one format string ("" when it cannot be)
            body = fields.rendered()
            if body:
                ln = f"{em}{tags.rendered} {body} {ns}"
        else:
            parts: list[str] = []
            v: Any  # dispatched on its exact type below (mypy narrows isinstance, not a saved type(v))
            for k, v in fields.items():
                ek = keys.get(k)
                tv = type(v)
                if ek is None:
                    break
                if tv is float and v - v == 0.0:  # finite
                    parts.append(f"{ek}={v!r}")
                elif tv is int and -0x8000000000000000 <= v <= 0x7FFFFFFFFFFFFFFF:  # int64, as literals
                    parts.append(f"{ek}={v}i")
                elif tv is bool:
                    parts.append(f"{ek}=true" if v else f"{ek}=false")
                elif tv is str and v.isascii() and "\0" not in v:
                    parts.append(f'{ek}="{v.translate(string)}"')
                else:  # non-finite, beyond int64, non-ASCII text, another type: render() says what
                    break
            else:
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


def line(measurement: str, tags: Mapping[str, str], fields: Mapping[str, FieldValue], time_ns: int) -> str:
    """``render`` of one point given by its parts."""
    return render(Point(measurement, tags, fields, time_ns))


def join(lines: Iterable[str]) -> bytes:
    return "\n".join(lines).encode()
