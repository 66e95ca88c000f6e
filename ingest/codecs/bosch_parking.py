"""Bosch Parking Lot Sensor (TPS110, firmware 0.29.x): a single bay's occupancy.

Source of the layout: Bosch's decoder ``vendor/bosch/tpl110-0292.js`` and its examples in
``vendor/bosch/tps110-0292-codec.yaml`` (TheThingsNetwork/lorawan-devices), which follow Bosch's
"Parking Lot Sensor communication interface" description. The fPort names the frame:

===== ================= ======= ==============================================================
fPort frame             bytes   readings
===== ================= ======= ==============================================================
1     parking status    1       bit 0 of byte 0 -> parking.occupied (bool)
2     heartbeat         1 or 2  bit 0 of byte 0 -> parking.occupied; byte 1 (int8 °C, when
                                present) is the sensor's own in-ground temperature: skipped, it
                                is not the air temperature
3     start-up          17      bit 0 of byte 16 -> parking.occupied; debug codes (bytes 0-11),
                                firmware version (12-14) and reset cause (15) are skipped
4     device info       any     skipped: device information, no readings
5     device usage      any     skipped: internal usage statistics
6     debug             any     skipped: timestamped debug codes
===== ================= ======= ==============================================================

The other bits of the status bytes are reserved. Any other fPort is ``unknown_port``; a frame of
another length than the table's is ``wrong_length``.
"""

from __future__ import annotations

from smartzone.errors import DecodeError

NAME = "bosch_parking"
PORTS: frozenset[int] | None = frozenset({1, 2, 3, 4, 5, 6})

# fPort -> (accepted lengths, offset of the occupancy byte); None: no readings on that port.
_LAYOUT: dict[int, tuple[frozenset[int], int] | None] = {
    1: (frozenset({1}), 0),
    2: (frozenset({1, 2}), 0),
    3: (frozenset({17}), 16),
    4: None,
    5: None,
    6: None,
}


def decode(data: bytes, f_port: int) -> list[tuple[str, float | int | bool]]:
    if f_port not in _LAYOUT:
        raise DecodeError("unknown_port", f"fPort {f_port} is not one of {sorted(_LAYOUT)}")
    layout = _LAYOUT[f_port]
    if layout is None:
        return []
    lengths, offset = layout
    if len(data) not in lengths:
        raise DecodeError("wrong_length", f"fPort {f_port}: {len(data)} bytes, expected {sorted(lengths)}")
    return [("parking.occupied", bool(data[offset] & 1))]


def encode(values: dict[str, float | int | bool], f_port: int | None = None) -> bytes:
    """``parking.occupied`` -> a parking status frame (fPort 1, the default) or a heartbeat (fPort 2)."""
    if set(values) != {"parking.occupied"}:
        raise ValueError(f"only parking.occupied can be encoded, not {sorted(values)}")
    port = 1 if f_port is None else f_port
    if port not in (1, 2):
        raise ValueError(f"fPort {port}: only status (1) and heartbeat (2) frames are encoded")
    return bytes((1 if values["parking.occupied"] else 0,))
