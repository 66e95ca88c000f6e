"""The decoder registry: one module per source format, listed here and nowhere else.

Each module exports ``NAME`` and ``decode(msg: Message) -> list[Reading]``. ``decode`` raises
``DecodeError(reason, detail)`` when the whole message is unusable. It emits every value it finds:
``Reading.sensor_id`` is the gateway-local device key and ``Reading.quantity`` a vocabulary key, or
the native field name when the module's ``FIELDS`` table has no row for it. The pipeline then
resolves the device, maps leftover names through the registry's per-sensor ``fields``, and checks
types and ranges, so a decoder does not repeat those checks. Routes in the settings choose the
decoder by topic filter.
"""

from __future__ import annotations

from collections.abc import Callable

from ingest.decoders import ble_gateway, esphome, generic_json, senml, tasmota, zigbee2mqtt
from smartzone.model import Message, Reading

Decoder = Callable[[Message], list[Reading]]

DECODERS: dict[str, Decoder] = {
    m.NAME: m.decode for m in (senml, zigbee2mqtt, tasmota, ble_gateway, esphome, generic_json)
}
