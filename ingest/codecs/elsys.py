"""Elsys generic payload (ERS, ERS CO2, ERS Sound, ERS Eye, ERS VOC, EMS, ELT...).

Source of the layout: Elsys' payload decoder ``elsys.js`` (peter@elsys.se, as shipped in
TheThingsNetwork/lorawan-devices ``vendor/elsys/elsys.js``), whose table follows the Elsys
"Generic payload" document. A frame is a sequence of ``type (1 byte) | data`` records, big-endian:

==== =========================== ===== ===================================================
type field                        bytes reading
==== =========================== ===== ===================================================
0x01 temperature                 2     int16 / 10 °C -> weather.temperature
0x02 humidity                    1     uint8 % -> weather.relative_humidity
0x03 acceleration x, y, z        3     skipped: the device's own tilt/shake (int8, 63 = 1 g)
0x04 light                       2     uint16 lx -> weather.illuminance
0x05 motion                      1     uint8 PIR triggers -> native ``motion``
0x06 CO2                         2     uint16 ppm -> air_quality.co2
0x07 VDD                         2     uint16 mV -> gateway_health.battery_voltage (V)
0x08 analog input 1              2     uint16 mV -> native ``analog1`` (mV)
0x09 GPS                         6     skipped: position is device metadata, and the decoder
                                       gives no scaling for the two 24-bit words
0x0A pulse input 1               2     uint16 pulses since last frame -> native ``pulse1``
0x0B pulse input 1 absolute      4     uint32 -> native ``pulse1_absolute``
0x0C external temperature        2     int16 / 10 °C -> native ``external_temperature``
0x0D external digital input      1     uint8 -> native ``digital``
0x0E external distance           2     uint16 mm -> native ``distance`` (mm)
0x0F accelerometer motion count  1     skipped: vibration events of the device itself
0x10 IR temperature internal,    2+2   int16 / 10 °C each -> native ``ir_internal_temperature``,
     external                          ``ir_external_temperature``
0x11 occupancy                   1     uint8 (0 free, 1 pending, 2 occupied) -> native ``occupancy``
0x12 water leak                  1     uint8 -> native ``waterleak``
0x13 Grid-EYE                    65    skipped: an 8x8 thermal image, not a reading
0x14 pressure                    4     uint32 / 1000 hPa -> weather.pressure
0x15 sound peak, average         1+1   uint8 dB(A) each -> noise.lamax, noise.laeq
0x16 pulse input 2               2     uint16 -> native ``pulse2``
0x17 pulse input 2 absolute      4     uint32 -> native ``pulse2_absolute``
0x18 analog input 2              2     uint16 mV -> native ``analog2`` (mV)
0x19 external temperature 2      2     int16 / 10 °C -> native ``external_temperature2`` (may repeat)
0x1A external digital input 2    1     uint8 -> native ``digital2``
0x1B external analog             4     int32 µV (load cell) -> native ``analog_uv`` (µV)
0x1C TVOC                        2     uint16 ppb -> air_quality.voc
0x3D debug                       4     skipped: vendor debug word
==== =========================== ===== ===================================================

Native names keep the vendor's unit (said above): what an external input measures depends on what
is wired to it, and the registry maps it. ERS Sound's "peak" is the highest A-weighted level of the
interval, hence ``noise.lamax``. Any other type byte is ``unknown_channel`` (Elsys' own decoder
silently stops there); a record cut short is ``wrong_length``. Elsys devices use a configurable
fPort (5 by default; the vendor's examples use 1), so any port is accepted.
"""

from __future__ import annotations

from smartzone.errors import DecodeError

NAME = "elsys"
PORTS: frozenset[int] | None = None

# type -> ((name or None when skipped, width, signed, divisor), ...); divisor 1 gives an int.
_TYPES: dict[int, tuple[tuple[str | None, int, bool, int], ...]] = {
    0x01: (("weather.temperature", 2, True, 10),),
    0x02: (("weather.relative_humidity", 1, False, 1),),
    0x03: ((None, 1, True, 1), (None, 1, True, 1), (None, 1, True, 1)),
    0x04: (("weather.illuminance", 2, False, 1),),
    0x05: (("motion", 1, False, 1),),
    0x06: (("air_quality.co2", 2, False, 1),),
    0x07: (("gateway_health.battery_voltage", 2, False, 1000),),
    0x08: (("analog1", 2, False, 1),),
    0x09: ((None, 3, False, 1), (None, 3, False, 1)),
    0x0A: (("pulse1", 2, False, 1),),
    0x0B: (("pulse1_absolute", 4, False, 1),),
    0x0C: (("external_temperature", 2, True, 10),),
    0x0D: (("digital", 1, False, 1),),
    0x0E: (("distance", 2, False, 1),),
    0x0F: ((None, 1, False, 1),),
    0x10: (("ir_internal_temperature", 2, True, 10), ("ir_external_temperature", 2, True, 10)),
    0x11: (("occupancy", 1, False, 1),),
    0x12: (("waterleak", 1, False, 1),),
    0x13: ((None, 65, False, 1),),
    0x14: (("weather.pressure", 4, False, 1000),),
    0x15: (("noise.lamax", 1, False, 1), ("noise.laeq", 1, False, 1)),
    0x16: (("pulse2", 2, False, 1),),
    0x17: (("pulse2_absolute", 4, False, 1),),
    0x18: (("analog2", 2, False, 1),),
    0x19: (("external_temperature2", 2, True, 10),),
    0x1A: (("digital2", 1, False, 1),),
    0x1B: (("analog_uv", 4, True, 1),),
    0x1C: (("air_quality.voc", 2, False, 1),),
    0x3D: ((None, 4, False, 1),),
}
_SIZES: dict[int, int] = {t: sum(f[1] for f in fields) for t, fields in _TYPES.items()}


def decode(data: bytes, f_port: int) -> list[tuple[str, float | int | bool]]:
    if not data:
        raise DecodeError("wrong_length", "empty frame")
    out: list[tuple[str, float | int | bool]] = []
    i, n = 0, len(data)
    while i < n:
        type_ = data[i]
        fields = _TYPES.get(type_)
        if fields is None:
            raise DecodeError("unknown_channel", f"offset {i}: unknown Elsys type 0x{type_:02X}")
        if i + 1 + _SIZES[type_] > n:
            raise DecodeError(
                "wrong_length", f"offset {i}: type 0x{type_:02X} needs {_SIZES[type_]} bytes, {n - i - 1} left"
            )
        pos = i + 1
        for name, width, signed, divisor in fields:
            if name is not None:
                raw = int.from_bytes(data[pos : pos + width], "big", signed=signed)
                out.append((name, raw if divisor == 1 else raw / divisor))
            pos += width
        i = pos
    return out


def encode(values: dict[str, float | int | bool], f_port: int | None = None) -> bytes:
    """Any named field of the table above -> an Elsys frame, records in type order.

    A record with two named fields (sound, IR temperature) needs both; skipped fields are sent as 0.
    """
    frame = bytearray()
    used = 0
    for type_, fields in _TYPES.items():
        named = [f[0] for f in fields if f[0] is not None]
        present = [name for name in named if name in values]
        if not present:
            continue
        if len(present) != len(named):
            raise ValueError(f"type 0x{type_:02X} needs all of {named}")
        frame.append(type_)
        for name, width, signed, divisor in fields:
            value = 0 if name is None else values[name]  # a skipped field is sent as 0
            raw = round(value * divisor)
            try:
                frame += raw.to_bytes(width, "big", signed=signed)
            except OverflowError:
                raise ValueError(f"{name}={value!r} does not fit {width} bytes") from None
        used += len(present)
    if used != len(values):
        raise ValueError(f"cannot place {sorted(set(values) - {f[0] for fs in _TYPES.values() for f in fs})}")
    return bytes(frame)
