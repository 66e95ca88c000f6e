"""Cayenne Low Power Payload (LPP), with the extended types of the ElectronicCats CayenneLPP library.

Source of the layout: myDevices' Cayenne LPP (types 0-3, 101-104, 113, 115, 134, 136; IPSO object
id minus 3200) and ElectronicCats/CayenneLPP ``src/CayenneLPP.h`` / ``src/CayenneLPP.cpp`` (sizes,
multipliers and ``getTypeSigned``) for the extended types. A frame is any number of records::

    channel (1 byte) | type (1 byte) | value (size bytes, big-endian)

+------+-----------------------+------+------------------+--------+----------------------------+
| type | native name           | size | step             | signed | default quantity           |
+======+=======================+======+==================+========+============================+
|    0 | digital_input         | 1    | 1                | no     |                            |
|    1 | digital_output        | 1    | 1                | no     |                            |
|    2 | analog_input          | 2    | 0.01             | yes    |                            |
|    3 | analog_output         | 2    | 0.01             | yes    |                            |
|  100 | generic_sensor        | 4    | 1                | no     |                            |
|  101 | luminosity            | 2    | 1 lx             | no     | weather.illuminance        |
|  102 | presence              | 1    | 1                | no     |                            |
|  103 | temperature           | 2    | 0.1 °C           | yes    | weather.temperature        |
|  104 | relative_humidity     | 1    | 0.5 %            | no     | weather.relative_humidity  |
|  113 | accelerometer _x/_y/_z| 3x2  | 0.001 G          | yes    |                            |
|  115 | barometric_pressure   | 2    | 0.1 hPa          | no     | weather.pressure           |
|  116 | voltage               | 2    | 0.01 V           | no     |                            |
|  117 | current               | 2    | 0.001 A          | no     | energy.current             |
|  118 | frequency             | 4    | 1 Hz             | no     |                            |
|  120 | percentage            | 1    | 1 %              | no     |                            |
|  121 | altitude              | 2    | 1 m              | yes    |                            |
|  125 | concentration         | 2    | 1 ppm            | no     |                            |
|  128 | power                 | 2    | 1 W              | no     | energy.power               |
|  130 | distance              | 4    | 0.001 m          | no     |                            |
|  131 | energy                | 4    | 0.001 kWh        | no     | energy.total               |
|  132 | direction             | 2    | 1 °              | no     |                            |
|  133 | unixtime              | 4    | 1 s              | no     |                            |
|  134 | gyrometer _x/_y/_z    | 3x2  | 0.01 °/s         | yes    |                            |
|  135 | colour _r/_g/_b       | 3x1  | 1                | no     |                            |
|  136 | gps _latitude/        | 3+3  | 0.0001 °,        | yes    |                            |
|      | _longitude/_altitude  | +3   | 0.01 m           |        |                            |
|  142 | switch                | 1    | 1                | no     |                            |
+------+-----------------------+------+------------------+--------+----------------------------+

``decode`` returns native names ``<type>_<channel>`` (``<type>_<channel>_<axis>`` for the
multi-value types), because what a channel measures is the device's choice; ``quantity(name)`` gives
the default vocabulary key of a name, ``None`` where the type has no clear quantity (a voltage may be
a battery or the mains, a concentration may be any gas, a digital input anything). Values with a
step of 1 are ``int``, the others ``float``.

Not supported: the non-Arduino polyline type (240, variable length) and vendor extensions outside
the table (RAKwireless' 137/138, ...): their type byte is ``unknown_channel``. Note that the
library's own JavaScript decoder (``decoders/decoder.js``) gives direction (132) one byte while the
C++ encoder writes two; this codec follows the encoder, which is what devices send.
"""

from __future__ import annotations

from smartzone.errors import DecodeError

NAME = "cayenne_lpp"
PORTS: frozenset[int] | None = None

# type -> (native name, ((axis suffix, width, divisor), ...), signed). A divisor of 1 gives an int.
_TYPES: dict[int, tuple[str, tuple[tuple[str, int, int], ...], bool]] = {
    0: ("digital_input", (("", 1, 1),), False),
    1: ("digital_output", (("", 1, 1),), False),
    2: ("analog_input", (("", 2, 100),), True),
    3: ("analog_output", (("", 2, 100),), True),
    100: ("generic_sensor", (("", 4, 1),), False),
    101: ("luminosity", (("", 2, 1),), False),
    102: ("presence", (("", 1, 1),), False),
    103: ("temperature", (("", 2, 10),), True),
    104: ("relative_humidity", (("", 1, 2),), False),
    113: ("accelerometer", (("_x", 2, 1000), ("_y", 2, 1000), ("_z", 2, 1000)), True),
    115: ("barometric_pressure", (("", 2, 10),), False),
    116: ("voltage", (("", 2, 100),), False),
    117: ("current", (("", 2, 1000),), False),
    118: ("frequency", (("", 4, 1),), False),
    120: ("percentage", (("", 1, 1),), False),
    121: ("altitude", (("", 2, 1),), True),
    125: ("concentration", (("", 2, 1),), False),
    128: ("power", (("", 2, 1),), False),
    130: ("distance", (("", 4, 1000),), False),
    131: ("energy", (("", 4, 1000),), False),
    132: ("direction", (("", 2, 1),), False),
    133: ("unixtime", (("", 4, 1),), False),
    134: ("gyrometer", (("_x", 2, 100), ("_y", 2, 100), ("_z", 2, 100)), True),
    135: ("colour", (("_r", 1, 1), ("_g", 1, 1), ("_b", 1, 1)), False),
    136: ("gps", (("_latitude", 3, 10_000), ("_longitude", 3, 10_000), ("_altitude", 3, 100)), True),
    142: ("switch", (("", 1, 1),), False),
}
_SIZES: dict[int, int] = {t: sum(w for _, w, _ in axes) for t, (_, axes, _) in _TYPES.items()}
_BY_NAME: dict[str, int] = {name: t for t, (name, _, _) in _TYPES.items()}

_QUANTITY: dict[str, str] = {
    "temperature": "weather.temperature",
    "relative_humidity": "weather.relative_humidity",
    "barometric_pressure": "weather.pressure",
    "luminosity": "weather.illuminance",
    "current": "energy.current",
    "power": "energy.power",
    "energy": "energy.total",
}


def _split(name: str) -> tuple[str, int, str] | None:
    """``temperature_3`` -> ("temperature", 3, ""); ``gps_1_latitude`` -> ("gps", 1, "_latitude")."""
    parts = name.split("_")
    for i, part in enumerate(parts):
        if part.isdigit() and i > 0:
            type_name = "_".join(parts[:i])
            axis = "_".join(parts[i + 1 :])
            return type_name, int(part), f"_{axis}" if axis else ""
    return None


def quantity(name: str) -> str | None:
    """The default vocabulary key for a native name (``temperature_3`` -> ``weather.temperature``)."""
    try:
        return _QUANTITY_OF[name]  # per value of every uplink: split once per name
    except KeyError:
        pass
    split = _split(name)
    q = None if split is None or split[2] else _QUANTITY.get(split[0])
    if len(_QUANTITY_OF) >= 10_000:  # bounded: decode() names at most 256 channels of each type
        _QUANTITY_OF.clear()
    _QUANTITY_OF[name] = q
    return q


_QUANTITY_OF: dict[str, str | None] = {}


def decode(data: bytes, f_port: int) -> list[tuple[str, float | int | bool]]:
    if not data:
        raise DecodeError("wrong_length", "empty frame")
    out: list[tuple[str, float | int | bool]] = []
    i, n = 0, len(data)
    while i < n:
        if i + 2 > n:
            raise DecodeError("wrong_length", f"offset {i}: channel {data[i]} without a type byte")
        channel, type_ = data[i], data[i + 1]
        spec = _TYPES.get(type_)
        if spec is None:
            raise DecodeError("unknown_channel", f"offset {i + 1}: unknown LPP type {type_} (channel {channel})")
        if i + 2 + _SIZES[type_] > n:
            raise DecodeError("wrong_length", f"offset {i}: type {type_} needs {_SIZES[type_]} bytes, {n - i - 2} left")
        type_name, axes, signed = spec
        pos = i + 2
        for suffix, width, divisor in axes:
            raw = int.from_bytes(data[pos : pos + width], "big", signed=signed)
            out.append((f"{type_name}_{channel}{suffix}", raw if divisor == 1 else raw / divisor))
            pos += width
        i = pos
    return out


def encode(values: dict[str, float | int | bool], f_port: int | None = None) -> bytes:
    """Native names -> an LPP frame, one record per (channel, type) in the order first named.

    A multi-value type needs all its axes (``accelerometer_5_x``, ``_y`` and ``_z``).
    """
    records: dict[tuple[int, int], None] = {}
    for name in values:
        split = _split(name)
        if split is None or split[0] not in _BY_NAME:
            raise ValueError(f"{name!r} is not a Cayenne LPP native name")
        records[(split[1], _BY_NAME[split[0]])] = None
    frame = bytearray()
    for channel, type_ in records:
        type_name, axes, signed = _TYPES[type_]
        if not 0 <= channel <= 255:
            raise ValueError(f"channel {channel} does not fit a byte")
        frame += bytes((channel, type_))
        for suffix, width, divisor in axes:
            key = f"{type_name}_{channel}{suffix}"
            if key not in values:
                raise ValueError(f"{key!r} is missing")
            raw = round(values[key] * divisor)
            try:
                frame += raw.to_bytes(width, "big", signed=signed)
            except OverflowError:
                raise ValueError(f"{key}={values[key]!r} does not fit {width} bytes") from None
    return bytes(frame)
