"""SenML JSON packs (RFC 8428, "Sensor Measurement Lists"): a JSON array of records.

Payload (RFC 8428 section 5.1.2):
``[{"bn":"urn:dev:ow:10e2073a01080063:","n":"voltage","u":"V","v":120.1},{"n":"current","u":"A","v":1.2}]``.

Base fields (``bn`` base name, ``bt`` base time, ``bu`` base unit, ``bv`` base value, ``bs`` base
sum) apply to their own record and to every following record until a record sets them again; ``bver``
and ``ut`` are accepted and ignored, and a must-understand label (ending in ``_``, RFC 8428 section 4.4)
rejects the pack as malformed. A record of base fields only yields nothing. A record's name is
``bn + n``, and:

- with a base name, the device key is the base name less one trailing ``:`` or ``/``
  (``urn:dev:ow:10e2073a01080063``, ``2001:db8::2``) and the field is ``n``;
- without one, the device key is the last level of the topic and the field is ``n`` whole;
- a record with no ``n`` (RFC 8428 section 5.1.3 tells measurements apart by unit only) uses its unit
  as the field: ``%RH``, ``%EL``, ``lon`` ... (``UNIT_FIELDS``). A value with neither is malformed.

Time: the resolved time is ``bt + t`` (both default 0). Exactly 0 means "roughly now", the broker
receipt time; below 2**28 it is relative to now (receipt time plus that many seconds, usually
negative); otherwise it is absolute, in seconds since the epoch (never milliseconds).

Values: ``v`` (plus ``bv``) and ``vb`` are readings. ``vs`` (string) and ``vd`` (data) records are
emitted with their raw text so the pipeline dead-letters that one value as invalid and keeps the rest of
the pack. A record with no value but a base value takes the base value; a record with no value at all
(an actuator or base-only record) yields nothing. A sum ``s`` (plus ``bs``) is the integral of the value
over time (unit times seconds): with unit ``W`` it becomes ``energy.total`` in kWh, otherwise it is
emitted under the native name ``<field>_sum``.

Units: for a field ``FIELDS`` maps, the record unit (``u``, else ``bu``) must be the quantity's unit from
``QUANTITIES`` or one we convert (``K`` -> ``Cel``, ``Pa`` -> ``hPa``, ``Wh``/``J`` -> ``kWh``); any other unit
rejects the whole pack (``unit_mismatch``), because a wrong unit is a configuration error on the device.
No unit means the quantity's own unit. Unmapped fields keep their value and unit as sent.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import NamedTuple, TypeGuard

from ingest.decoders._json import load_json
from smartzone.errors import DecodeError
from smartzone.model import EPOCH, Message, Reading
from smartzone.quantities import QUANTITIES

NAME = "senml"

FIELDS = {
    "temperature": "weather.temperature",
    "temp": "weather.temperature",
    "humidity": "weather.relative_humidity",
    "pressure": "weather.pressure",
    "illuminance": "weather.illuminance",
    "co2": "air_quality.co2",
    "pm1": "air_quality.pm1",
    "pm2_5": "air_quality.pm2_5",
    "pm25": "air_quality.pm2_5",
    "pm2.5": "air_quality.pm2_5",
    "pm10": "air_quality.pm10",
    "no2": "air_quality.no2",
    "o3": "air_quality.o3",
    "voc": "air_quality.voc",
    "laeq": "noise.laeq",
    "lamax": "noise.lamax",
    "lamin": "noise.lamin",
    "voltage": "energy.voltage",
    "current": "energy.current",
    "power": "energy.power",
    "energy": "energy.total",
    "battery": "gateway_health.battery",
    "rssi": "gateway_health.rssi",
}

# Field names for records without a name, which SenML tells apart by unit (RFC 8428 section 5.1.3).
UNIT_FIELDS = {
    "Cel": "weather.temperature",
    "%RH": "weather.relative_humidity",
    "hPa": "weather.pressure",
    "lx": "weather.illuminance",
    "ppm": "air_quality.co2",
    "%EL": "gateway_health.battery",
}

# Record labels that are pack bookkeeping, not data: base version, update time.
IGNORED = frozenset({"bver", "ut"})
_VALUE_LABELS = frozenset({"v", "vb", "vs", "vd", "s"})
_BASE_LABELS = frozenset({"bn", "bt", "bu", "bv", "bs"})
_KNOWN_LABELS = frozenset({"bn", "bt", "bu", "bv", "bs", "bver", "n", "u", "v", "vs", "vb", "vd", "s", "t", "ut"})

_ABSENT = object()
_RELATIVE_LIMIT = 2**28  # RFC 8428 section 4.5.3: smaller times are relative to "now"

# (sent unit, vocabulary unit) -> conversion
_CONVERSIONS: dict[tuple[str, str], Callable[[float], float]] = {
    ("K", "Cel"): lambda x: x - 273.15,
    ("Pa", "hPa"): lambda x: x / 100,
    ("Wh", "kWh"): lambda x: x / 1000,
    ("J", "kWh"): lambda x: x / 3_600_000,
    ("µg/m3", "ug/m3"): lambda x: x,
    ("μg/m3", "ug/m3"): lambda x: x,
}
_JOULES_PER_KWH = 3_600_000
_EXACT = 2**53  # integers a float holds exactly
_new = tuple.__new__  # Reading(...) without the Python frame of NamedTuple.__new__ (hot path)


def _is_number(x: object) -> TypeGuard[float | int]:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _text(record: dict, key: str, index: int) -> str | None:
    value = record.get(key)
    if value is not None and not isinstance(value, str):
        raise DecodeError("malformed", f"record {index}: {key!r} must be a string")
    return value


def _number(record: dict, key: str, index: int, reason: str = "malformed") -> float | None:
    value = record.get(key)
    if value is not None and not (_is_number(value) and math.isfinite(value)):
        raise DecodeError(reason, f"record {index}: {key!r} must be a finite number")
    return value


def _device(base_name: str) -> str:
    """The device key of a base name: the name less one trailing ``:`` or ``/`` separator."""
    return base_name[:-1] if base_name[-1] in ":/" else base_name


def _resolve_time(seconds: float, now: datetime) -> datetime:
    try:
        if seconds == 0:
            return now
        if seconds < _RELATIVE_LIMIT:
            return now + timedelta(seconds=seconds)
        return EPOCH + timedelta(seconds=seconds)
    except OverflowError as exc:
        raise DecodeError("bad_timestamp", f"time {seconds!r}: {exc}") from exc


def _convert(value: object, unit: str | None, quantity: str, where: str) -> object:
    """Bring a value of a mapped quantity into the vocabulary's unit, or refuse the pack."""
    expected = QUANTITIES[quantity].unit
    if unit is None or unit == expected:
        return value
    convert = _CONVERSIONS.get((unit, expected))
    if convert is None:
        raise DecodeError("unit_mismatch", f"{where}: unit {unit!r} but {quantity} is in {expected!r}")
    return convert(value) if _is_number(value) else value


def decode(msg: Message) -> list[Reading]:
    pack = load_json(msg.payload, list, "a SenML pack")
    topic_device = msg.native_topic.rstrip("/").rpartition("/")[2]

    base_name: str | None = None
    base_time = 0.0
    base_unit: str | None = None
    base_value: float | None = None
    base_sum: float | None = None
    readings: list[Reading] = []
    times: dict[float, datetime] = {}  # a pack's records usually share a few times
    device: str | None = None
    gateway_id = msg.gateway_id
    for i, record in enumerate(pack):
        if not isinstance(record, dict):
            raise DecodeError("malformed", f"record {i} is not a JSON object")
        # Base fields carry forward until a later record sets them again. Most records of a pack have
        # none (just n, v, maybe u and t): one C-speed set test skips the five look-ups.
        if not _BASE_LABELS.isdisjoint(record):
            if "bn" in record:
                base_name = _text(record, "bn", i)
                device = _device(base_name) if base_name else topic_device
            if "bt" in record:
                base_time = _number(record, "bt", i, "bad_timestamp") or 0.0
            if "bu" in record:
                base_unit = _text(record, "bu", i)
            if "bv" in record:
                base_value = _number(record, "bv", i)
            if "bs" in record:
                base_sum = _number(record, "bs", i)

        if not _KNOWN_LABELS.issuperset(record):
            for label in record:
                if label.endswith("_"):  # RFC 8428 section 4.4: must-understand labels we do not know
                    raise DecodeError("malformed", f"record {i}: unsupported must-understand label {label!r}")
        get = record.get
        name = get("n")
        if type(name) is not str:
            name = _text(record, "n", i) or ""  # absent (""), or not a string (malformed)
        unit = get("u")
        if type(unit) is not str:
            unit = _text(record, "u", i) or base_unit
        field = name or unit
        if not field:
            if _VALUE_LABELS.isdisjoint(record):
                continue  # a record of base fields only, such as {"bn": "urn:dev:ow:10e2073a01080063:"}
            raise DecodeError("malformed", f"record {i} has a value but neither a name nor a unit")
        if device is None:  # no base name so far
            device = topic_device
        if not device:
            raise DecodeError("missing_device", f"record {i}: no base name and no topic level to name the device")

        seconds = base_time
        if "t" in record:
            t = record["t"]
            if (type(t) is float and t - t == 0.0) or (type(t) is int and -_EXACT < t < _EXACT):  # the common case
                seconds += t
            else:  # anything else: _number says what is wrong with it
                seconds += _number(record, "t", i, "bad_timestamp") or 0.0
        time = times.get(seconds)
        if time is None:
            time = times[seconds] = _resolve_time(seconds, msg.received_at)
        quantity = FIELDS.get(name) if name else UNIT_FIELDS.get(field)

        has_value = True
        value = get("v", _ABSENT)
        if value is not _ABSENT:
            if base_value is not None and _is_number(value):
                value = base_value + value
        elif "vb" in record:
            value = record["vb"]
        elif "vs" in record:
            value = record["vs"]
        elif "vd" in record:
            value = record["vd"]
        elif base_value is not None and "s" not in record:
            value = base_value
        else:
            has_value = False
        if has_value:
            if quantity is not None and unit is not None:
                value = _convert(value, unit, quantity, f"record {i} ({base_name or ''}{name})")
            readings.append(_new(Reading, (time, device, quantity or field, value, gateway_id, NAME)))

        if "s" in record:
            total = record["s"]
            if base_sum is not None and _is_number(total):
                total = base_sum + total
            if unit == "W" and _is_number(total):
                readings.append(Reading(time, device, "energy.total", total / _JOULES_PER_KWH, msg.gateway_id, NAME))
            else:
                readings.append(Reading(time, device, f"{field}_sum", total, msg.gateway_id, NAME))
    return readings


class Resolved(NamedTuple):
    """One resolved SenML record (RFC 8428 section 4.6): the full name ``bn + n``, its unit (``u``, else
    ``bu``; "" for none), its value (``v`` plus ``bv``, ``vb``, ``vs`` or ``vd`` as sent) and its time."""

    name: str
    unit: str
    value: object
    time: datetime


def resolve(pack: object, received_at: datetime) -> list[Resolved]:
    """A SenML pack as resolved records, without the vocabulary's mapping (``decode`` maps names to quantities
    and devices; the experiments' metrics keep the names as sent). Base fields, times and must-understand labels
    as ``decode`` reads them; a record with no value (base fields only, or a sum alone) yields nothing.
    Raises ``DecodeError("malformed" | "bad_timestamp")``."""
    if not isinstance(pack, list):
        raise DecodeError("malformed", "a SenML pack must be a JSON array")
    base_name, base_unit, base_time, base_value = "", "", 0.0, None
    out: list[Resolved] = []
    for i, record in enumerate(pack):
        if not isinstance(record, dict):
            raise DecodeError("malformed", f"record {i} is not a JSON object")
        for label in record:
            if isinstance(label, str) and label.endswith("_"):
                raise DecodeError("malformed", f"record {i}: unsupported must-understand label {label!r}")
        if "bn" in record:
            base_name = _text(record, "bn", i) or ""
        if "bu" in record:
            base_unit = _text(record, "bu", i) or ""
        if "bt" in record:
            base_time = _number(record, "bt", i, "bad_timestamp") or 0.0
        if "bv" in record:
            base_value = _number(record, "bv", i)
        name = base_name + (_text(record, "n", i) or "")
        unit = _text(record, "u", i) or base_unit
        if "v" in record:
            value = record["v"]
            if base_value is not None and _is_number(value):
                value = base_value + value
        elif "vb" in record:
            value = record["vb"]
        elif "vs" in record:
            value = record["vs"]
        elif "vd" in record:
            value = record["vd"]
        elif base_value is not None and "s" not in record and "n" in record:
            value = base_value
        else:
            continue
        if not name:
            raise DecodeError("malformed", f"record {i} has a value but no name (bn + n)")
        seconds = base_time + (_number(record, "t", i, "bad_timestamp") or 0.0)
        out.append(Resolved(name, unit, value, _resolve_time(seconds, received_at)))
    return out
