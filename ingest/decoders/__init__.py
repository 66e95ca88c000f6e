"""The decoder registry: one module per source format, listed here and nowhere else.

Each module exports ``NAME`` and ``decode(msg: Message) -> list[Reading]``. ``decode`` raises
``DecodeError(reason, detail)`` when the whole message is unusable. It emits every value it finds:
``Reading.sensor_id`` is the gateway-local device key and ``Reading.quantity`` a vocabulary key, or
the native field name when the module's ``FIELDS`` table has no row for it. The pipeline then
resolves the device, maps leftover names through the registry's per-sensor ``fields``, and checks
types and ranges, so a decoder does not repeat those checks. Routes in the settings choose the
decoder by topic filter.

A decoder that needs the sensor registry (ChirpStack events: the device's codec comes from its
registry entry) exports ``make(registry) -> decode`` instead, and its ``decode`` may return a
``Decoded`` (readings, records such as radio metadata and operational events, and partial problems).

A decoder of identifiers of passers-by (probe sniffers, counting cameras: ``sightings``) is *private*: it
exports ``make(registry, pseudonymiser) -> decoder``, where ``pseudonymiser`` (``ingest.pepper``) may
be None (every message is then refused), and the decoder it returns also has ``scrub(msg) -> bytes``: the
payload with every identifier replaced by its pseudonym, which the pipeline keeps in dead letters instead of
the payload itself, so no raw identifier is ever stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ingest.decoders import (
    ble_gateway,
    chirpstack,
    esphome,
    experiments,
    gateway_agent,
    generic_json,
    senml,
    sightings,
    tasmota,
    zigbee2mqtt,
)
from smartzone.model import Decoded, Message, Reading
from smartzone.registry import Registry

if TYPE_CHECKING:
    from ingest.pepper import Pseudonymiser

Decoder = Callable[[Message], list[Reading] | Decoded]

DECODERS: dict[str, Decoder] = {
    m.NAME: m.decode
    for m in (senml, zigbee2mqtt, tasmota, ble_gateway, esphome, generic_json, gateway_agent, experiments)
}
REGISTRY_DECODERS: dict[str, Callable[[Registry], Decoder]] = {chirpstack.NAME: chirpstack.make}
PRIVATE_DECODERS: dict[str, Callable[[Registry, Pseudonymiser | None], Decoder]] = {sightings.NAME: sightings.make}
NAMES: list[str] = sorted(DECODERS.keys() | REGISTRY_DECODERS.keys() | PRIVATE_DECODERS.keys())


def bind(registry: Registry, pseudonymiser: Pseudonymiser | None = None) -> dict[str, Decoder]:
    """Every decoder, the registry-bound ones bound to ``registry``, the private ones to ``pseudonymiser``."""
    return (
        DECODERS
        | {name: make(registry) for name, make in REGISTRY_DECODERS.items()}
        | {name: make(registry, pseudonymiser) for name, make in PRIVATE_DECODERS.items()}
    )
