"""Decentlab DL-PM particulate matter, temperature, humidity and barometric pressure sensor.

Source of the layout: Decentlab's decoder ``DL-PM/DL-PM.py`` / ``DL-PM.js`` in
decentlab/decentlab-decoders (protocol version 2), also shipped as TheThingsNetwork/lorawan-devices
``vendor/decentlab/dl-pm.js`` with the vendor's examples in ``dl-pm-codec.yaml``. Big-endian::

    version (1 byte, = 2) | device id (uint16) | flags (uint16) | sensor blocks (uint16 words)

Bit *k* of ``flags`` (LSB first) says block *k* is present; the blocks follow in that order:

== ===== ==================================================================================
k  words values
== ===== ==================================================================================
0  1     battery voltage x/1000 V -> gateway_health.battery_voltage
1  10    PM1.0, PM2.5, PM4, PM10 mass concentration x/10 µg/m³ -> air_quality.pm1, .pm2_5,
         (PM4 skipped), .pm10; typical particle size (nm) and the PM0.5/1/2.5/4/10 number
         concentrations (x/10 per cm³) are skipped: no city indicator uses them (EU and WHO
         limits are mass concentrations of PM2.5 and PM10)
2  2     air temperature 175.72·x/65536 − 46.85 °C -> weather.temperature;
         air humidity 125·x/65536 − 6 % -> weather.relative_humidity (the Sensirion SHT2x formulas)
3  1     barometric pressure 2·x Pa -> weather.pressure (in hPa: x/50)
== ===== ==================================================================================

The device id is an identity, not a reading, and is skipped. A version other than 2 is
``malformed``; a flag bit above 3 is ``unknown_channel``; a frame whose length is not exactly that of
its flagged blocks is ``wrong_length``. Decentlab devices send on fPort 1, but the frame is
self-describing, so any port is accepted.
"""

from __future__ import annotations

from smartzone.errors import DecodeError

NAME = "decentlab_dl_pm"
PORTS: frozenset[int] | None = None

_VERSION = 2
_WORDS = (1, 10, 2, 1)  # words per sensor block, by flag bit
_PM_FIELDS = ((0, "air_quality.pm1"), (1, "air_quality.pm2_5"), (3, "air_quality.pm10"))


def decode(data: bytes, f_port: int) -> list[tuple[str, float | int | bool]]:
    n = len(data)
    if n < 5:
        raise DecodeError("wrong_length", f"{n} bytes: the header alone is 5")
    if data[0] != _VERSION:
        raise DecodeError("malformed", f"offset 0: protocol version {data[0]}, only {_VERSION} is known")
    flags = int.from_bytes(data[3:5], "big")
    if flags >> len(_WORDS):
        raise DecodeError("unknown_channel", f"offset 3: flags 0x{flags:04X} name a sensor block above 3")
    want = 5 + 2 * sum(w for k, w in enumerate(_WORDS) if flags >> k & 1)
    if n != want:
        raise DecodeError("wrong_length", f"{n} bytes, flags 0x{flags:04X} need {want}")
    out: list[tuple[str, float | int | bool]] = []
    pos = 5
    if flags & 1:
        out.append(("gateway_health.battery_voltage", int.from_bytes(data[pos : pos + 2], "big") / 1000))
        pos += 2
    if flags & 2:
        for word, quantity in _PM_FIELDS:
            out.append((quantity, int.from_bytes(data[pos + 2 * word : pos + 2 * word + 2], "big") / 10))
        pos += 20
    if flags & 4:
        t = int.from_bytes(data[pos : pos + 2], "big")
        h = int.from_bytes(data[pos + 2 : pos + 4], "big")
        out.append(("weather.temperature", 175.72 * t / 65536 - 46.85))
        out.append(("weather.relative_humidity", 125 * h / 65536 - 6))
        pos += 4
    if flags & 8:
        out.append(("weather.pressure", int.from_bytes(data[pos : pos + 2], "big") * 2 / 100))
    return out


def _word(value: float) -> bytes:
    raw = round(value)
    if not 0 <= raw <= 0xFFFF:
        raise ValueError(f"{value!r} does not fit a 16-bit word")
    return raw.to_bytes(2, "big")


def encode(values: dict[str, float | int | bool], f_port: int | None = None, device_id: int = 0) -> bytes:
    """Battery voltage, PM1/PM2.5/PM10 (all three), temperature and humidity (both), pressure.

    The skipped fields of the PM block (PM4, particle size, number concentrations) are sent as 0.
    """
    flags = 0
    body = bytearray()
    used = 0
    if "gateway_health.battery_voltage" in values:
        flags |= 1
        body += _word(values["gateway_health.battery_voltage"] * 1000)
        used += 1
    pm = [q for _, q in _PM_FIELDS if q in values]
    if pm:
        if len(pm) != len(_PM_FIELDS):
            raise ValueError("the PM block needs pm1, pm2_5 and pm10")
        flags |= 2
        words: list[float] = [0] * 10
        for word, quantity in _PM_FIELDS:
            words[word] = values[quantity] * 10
        for w in words:
            body += _word(w)
        used += 3
    th = [q for q in ("weather.temperature", "weather.relative_humidity") if q in values]
    if th:
        if len(th) != 2:
            raise ValueError("the temperature block needs temperature and relative humidity")
        flags |= 4
        body += _word((values["weather.temperature"] + 46.85) * 65536 / 175.72)
        body += _word((values["weather.relative_humidity"] + 6) * 65536 / 125)
        used += 2
    if "weather.pressure" in values:
        flags |= 8
        body += _word(values["weather.pressure"] * 50)
        used += 1
    if used != len(values):
        raise ValueError(f"cannot place all of {sorted(values)}")
    return bytes((_VERSION,)) + device_id.to_bytes(2, "big") + flags.to_bytes(2, "big") + bytes(body)
