"""The canonical model that flows through every stage.

- ``Message``: one MQTT message as the worker received it, before decoding.
- ``Reading``: one value of one quantity from one sensor at one instant.
- ``DeadLetter``: input that could not become Readings, kept whole with the reason.
- ``Record``: a decoder's point that is not a Reading (radio metadata, positions, events, sightings).
- ``Store`` and ``Point``: what every stage hands to storage. A Point names its logical store (raw, ops,
  pseudonymous, open, experiments); which database that is, and how a Point becomes line protocol, is storage's business
  (``storage.databases``, ``storage.lineprotocol``): the model knows no database.

Immutable plain types inside; pydantic only at the edges (settings, registry file, API). ``Message``
and ``Reading`` are NamedTuples rather than frozen dataclasses: one of each is built per message and
per value on the worker's hot path, and a frozen dataclass takes 0.67 µs to build against 0.26 µs
(measured here).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import NamedTuple
from zoneinfo import ZoneInfo

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def to_ns(t: datetime) -> int:
    """Aware datetime -> integer nanoseconds since the epoch (exact to the microsecond)."""
    return (t - EPOCH) // _US * 1000


class Message(NamedTuple):
    """One MQTT message. ``received_at`` is set once by the worker (and kept across redelivery)."""

    topic: str
    payload: bytes
    received_at: datetime
    gateway_id: str | None = None  # from gw/<gateway_id>/...
    native_topic: str = ""  # the topic below gw/<gateway_id>/, as the gateway software published it
    tz: ZoneInfo | None = None  # the gateway's time zone, from the registry (Tasmota reports local time)


class Reading(NamedTuple):
    """One quantity from one sensor at one instant.

    Decoders fill ``sensor_id`` with the gateway-local device key they saw (zigbee2mqtt friendly
    name or IEEE address, BLE MAC, Tasmota topic, SenML base name ...) and ``quantity`` with a key
    of ``smartzone.quantities.QUANTITIES``, or with the native field name when they have no
    mapping for it. The ingest pipeline then resolves both against the sensor registry, so every
    Reading that reaches storage names a registered sensor and a known quantity.
    """

    time: datetime  # aware, UTC: device time, else broker receipt; set once, in the decoder
    sensor_id: str
    quantity: str
    value: float | int | bool
    gateway_id: str | None = None
    source: str = ""  # decoder NAME


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Input that could not be written, kept whole so it can be replayed once the cause is fixed."""

    received_at: datetime
    topic: str
    payload: bytes
    reason: str  # stable code: malformed, unknown_device, unknown_field, out_of_range, ...
    detail: str
    stage: str = "decode"  # decode | write
    extra: dict[str, str] = field(default_factory=dict)


class Store(StrEnum):
    """Where a Point belongs (the charter's data classes), not a database name."""

    RAW = "raw"  # readings, positions: personal-data-free but unpublished, kept for the raw retention
    OPS = "ops"  # the network itself: radio metadata, device health, operational events, self-metrics
    PSEUDONYMOUS = "pseudonymous"  # sightings of passers-by, identifiers already pseudonymised
    OPEN = "open"  # what the charter job publishes
    EXPERIMENTS = "experiments"  # protocol experiments' metrics, state changes and phases: never read by the charter


FieldValue = float | int | bool | str

# The phases a gateway agent reports for an experiment (``gw/<id>/experiments/reported``; the same as
# ``experiments.db.PHASES``, which a test holds equal). The experiments store keeps each as a number too
# (``PHASE_CODES``, 0 for a phase not listed here), which the operations dashboard's state timeline maps back.
EXPERIMENT_PHASES = ("fetching", "waiting", "running", "stopping", "finished", "failed", "stopped", "refused")
PHASE_CODES = {phase: n for n, phase in enumerate(EXPERIMENT_PHASES, start=1)}


class Point(NamedTuple):
    """One point for storage: measurement, tags, fields, integer nanoseconds since the epoch, and its store.

    Tags and fields are plain mappings of text (and field values); nothing here is escaped: storage renders
    (``storage.lineprotocol``) and refuses what line protocol cannot carry. Empty tag values are left out.
    A NamedTuple for the same reason as Reading: one is built per point on the worker's hot path.
    """

    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, FieldValue]
    time_ns: int
    store: Store = Store.RAW


class Record(NamedTuple):
    """A point that is not a Reading of the vocabulary: radio metadata, a device's position, an
    operational event. The decoder owns its measurement and field set; the pipeline resolves
    ``sensor_key`` against the registry (an unregistered device is a dead letter, as for Readings),
    adds the sensor's tags, checks the time and makes it a Point of the ``store`` it names: raw, ops
    (operational events) or pseudonymous (sightings of passers-by, identifiers already pseudonymised).
    Tags and fields are plain values, never line-protocol text.
    """

    measurement: str
    sensor_key: str  # the device key, as in Reading.sensor_id
    tags: Mapping[str, str]  # extra tags: {"rx_gateway": "gw-1"} or {}
    fields: Mapping[str, FieldValue]  # {"rssi": -87, "snr": 7.5}
    time: datetime
    store: Store = Store.RAW


class Decoded(NamedTuple):
    """What a decoder returns when a message carries more than Readings (ChirpStack events).

    ``problems`` are DecodeErrors about part of the message (an undecodable frame of an uplink whose
    radio metadata is still good): they join the message's dead letter while the rest is written.
    """

    readings: list[Reading]
    records: list[Record]
    problems: list = []  # noqa: RUF012 - a NamedTuple default, never mutated
