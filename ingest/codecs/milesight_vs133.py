"""Milesight VS133 AI ToF people counter: people crossing up to four lines, people in regions.

Source of the layout: Milesight's ``VS_Series/VS133/VS133_Decoder.js`` and the payload table and
examples of ``VS_Series/VS133/README.md`` (Milesight-IoT/SensorDecoders); the ``0xFF`` device
records are Milesight's common ones (e.g. ``WS_Series/WS302/WS302_Decoder.js``). A frame is a
sequence of ``channel id (1 byte) | channel type (1 byte) | data`` records, data little-endian:

==== ==== ===== ======================================================================================
id   type bytes readings
==== ==== ===== ======================================================================================
0x05 0xCC 4     line 1 period in (uint16), out (uint16) -> pedestrian_flow.people_in, .people_out
0x08 0xCC 4     line 2 period in, out -> native ``line_2_period_in``, ``line_2_period_out``
0x0B 0xCC 4     line 3 -> native ``line_3_period_in``, ``line_3_period_out``
0x0E 0xCC 4     line 4 -> native ``line_4_period_in``, ``line_4_period_out``
0x03 0xD2 4     line 1 total in (uint32): skipped, like every line's running totals (ids 0x04,
     0x06, 0x07, 0x09, 0x0A, 0x0C, 0x0D): counters since the last reset, whose per-interval
     differences the period counts already carry
0x0F 0xE3 4     people now in regions 1-4 (uint8 each) -> native ``region_1_count`` ... ``region_4_count``
0x10 0xE4 5     region (uint8), average and maximum dwell time (uint16 each): skipped, the vendor
                documents no unit
0xFF 0x01 1     protocol version; 0x09 hardware version (2); 0x0A firmware version (2); 0x0B power on
                (1); 0x0F LoRaWAN class (1); 0x16 serial number (8); 0xFE reset (1); 0xFF TSL version
                (2): skipped, device information
==== ==== ===== ======================================================================================

Line 1 is taken as the site's counting line; lines 2-4 are native names the registry maps. Any
other (id, type) pair is ``unknown_channel`` (Milesight's decoder silently stops there); a record cut
short is ``wrong_length``. Milesight sends on fPort 85 by default, but the port is configurable, so
any port is accepted.
"""

from __future__ import annotations

from smartzone.errors import DecodeError

NAME = "milesight_vs133"
PORTS: frozenset[int] | None = None

# (id, type) -> ((name or None when skipped, width), ...)
_CHANNELS: dict[tuple[int, int], tuple[tuple[str | None, int], ...]] = {
    (0x05, 0xCC): (("pedestrian_flow.people_in", 2), ("pedestrian_flow.people_out", 2)),
    (0x08, 0xCC): (("line_2_period_in", 2), ("line_2_period_out", 2)),
    (0x0B, 0xCC): (("line_3_period_in", 2), ("line_3_period_out", 2)),
    (0x0E, 0xCC): (("line_4_period_in", 2), ("line_4_period_out", 2)),
    **{(cid, 0xD2): ((None, 4),) for cid in (0x03, 0x04, 0x06, 0x07, 0x09, 0x0A, 0x0C, 0x0D)},
    (0x0F, 0xE3): (("region_1_count", 1), ("region_2_count", 1), ("region_3_count", 1), ("region_4_count", 1)),
    (0x10, 0xE4): ((None, 5),),
    (0xFF, 0x01): ((None, 1),),
    (0xFF, 0x09): ((None, 2),),
    (0xFF, 0x0A): ((None, 2),),
    (0xFF, 0x0B): ((None, 1),),
    (0xFF, 0x0F): ((None, 1),),
    (0xFF, 0x16): ((None, 8),),
    (0xFF, 0xFE): ((None, 1),),
    (0xFF, 0xFF): ((None, 2),),
}
_SIZES: dict[tuple[int, int], int] = {k: sum(w for _, w in fields) for k, fields in _CHANNELS.items()}


def decode(data: bytes, f_port: int) -> list[tuple[str, float | int | bool]]:
    if not data:
        raise DecodeError("wrong_length", "empty frame")
    out: list[tuple[str, float | int | bool]] = []
    i, n = 0, len(data)
    while i < n:
        if i + 2 > n:
            raise DecodeError("wrong_length", f"offset {i}: channel 0x{data[i]:02X} without a type byte")
        key = (data[i], data[i + 1])
        fields = _CHANNELS.get(key)
        if fields is None:
            raise DecodeError("unknown_channel", f"offset {i}: unknown channel 0x{key[0]:02X} type 0x{key[1]:02X}")
        if i + 2 + _SIZES[key] > n:
            raise DecodeError(
                "wrong_length", f"offset {i}: channel 0x{key[0]:02X} needs {_SIZES[key]} bytes, {n - i - 2} left"
            )
        pos = i + 2
        for name, width in fields:
            if name is not None:
                out.append((name, int.from_bytes(data[pos : pos + width], "little")))
            pos += width
        i = pos
    return out


def encode(values: dict[str, float | int | bool], f_port: int | None = None) -> bytes:
    """Period in/out counts of any line (both of a line) and the four region counts (all four)."""
    frame = bytearray()
    used = 0
    for (cid, ctype), fields in _CHANNELS.items():
        named = [name for name, _ in fields if name is not None]
        present = [name for name in named if name in values]
        if not present:
            continue
        if len(present) != len(named):
            raise ValueError(f"channel 0x{cid:02X} needs all of {named}")
        frame += bytes((cid, ctype))
        for name, width in fields:
            value = 0 if name is None else values[name]  # a skipped field is sent as 0
            raw = value
            if isinstance(raw, float):
                raw = round(raw)
            try:
                frame += int(raw).to_bytes(width, "little")
            except OverflowError:
                raise ValueError(f"{name}={value!r} does not fit {width} bytes") from None
        used += len(present)
    if used != len(values):
        raise ValueError(f"cannot place all of {sorted(values)}")
    return bytes(frame)
