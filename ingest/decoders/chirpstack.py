"""ChirpStack v4 MQTT integration events: ``application/<application_id>/device/<dev_eui>/event/<type>``.

ChirpStack marshals every event as JSON (the proto3 JSON mapping: camelCase, default values left out,
so ``fCnt`` 0 or ``adr`` false are simply absent) or as binary protobuf, by one global setting
(``[integration.mqtt] json``) that the topic does not reveal. Both are parsed into the message types
of the ``chirpstack-api`` package; JSON with ``ignore_unknown_fields`` so that fields a newer ChirpStack
adds do not break us. A payload whose first non-blank byte is ``{`` is JSON: in protobuf that byte
would open field 15 as a group, which none of these messages has.

What each event becomes:

- ``up``: Readings of the device's quantities, at the event's ``time`` (UTC, set by ChirpStack when it
  deduplicated the uplink, so a redelivered event carries the same time and rewrites the same points;
  ChirpStack's own InfluxDB integration stamps arrival time instead). They come from ``object`` when
  ChirpStack's device profile ran a codec, otherwise from ``data`` decoded by our codec
  (``ingest/codecs``) named by the device's registry profile, given the fPort. Plus one ``radio`` point
  in the ops database (link metadata: the operators' and network researchers' data, never published)
  per receiving gateway (``rx_gateway`` tag: the registry's gateway id, or the gateway EUI when it is
  not registered): rssi, snr, channel, frequency, modulation, bandwidth, spreading factor, code rate,
  data rate, f_cnt, f_port, adr, confirmed, n_gateways. A frame our codec cannot decode is a dead
  letter while its radio points are still written (they are what network researchers need).
- ``status``: device health Readings: ``gateway_health.battery`` (unless unavailable),
  ``gateway_health.link_margin`` and ``gateway_health.external_power`` (the pipeline sends the
  ``gateway_health`` category to the ops database).
- ``location``: a ``position`` point (latitude, longitude, altitude, accuracy, source) in the raw
  database: the track of mobile devices. GPS fields in an uplink's payload do the same.
- ``join``, ``ack``, ``txack``, ``log``, ``integration``: a ``lorawan_events`` point in the ops database.

``integration`` events (``IntegrationEvent``, sent by ChirpStack's external integrations) are in
ChirpStack's proto but not in the chirpstack-api 4.20 Python package; the message type is added to the
protobuf pool here from the proto's definition (fields 1-6).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from types import ModuleType
from typing import Any

import orjson
from chirpstack_api.common import common_pb2
from chirpstack_api.gw import gw_pb2
from chirpstack_api.integration import integration_pb2 as pb
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError as ProtobufDecodeError

from ingest.codecs import CODECS
from smartzone.errors import ConfigurationError, DecodeError
from smartzone.model import EPOCH, Decoded, FieldValue, Message, Reading, Record, Store
from smartzone.registry import Registry
from storage.lineprotocol import FieldLayout, Fields, LineProtocolError, TagSet

NAME = "chirpstack"

_EUI = re.compile(r"[0-9a-f]{16}")
# chirpstack-api and protobuf ship no type information: their messages and classes are Any to mypy
Event = Any
_new = tuple.__new__  # Reading(...), Record(...) without the Python frame of NamedTuple.__new__ (hot path)


def _integration_event_class() -> Any:
    """``integration.IntegrationEvent`` as ChirpStack's integration.proto defines it."""
    pool = descriptor_pool.Default()
    try:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName("integration.IntegrationEvent"))
    except KeyError:
        pass
    f = descriptor_pb2.FileDescriptorProto(
        name="smartzone/chirpstack_integration_event.proto",
        package="integration",
        syntax="proto3",
        dependency=[pb.DESCRIPTOR.name, "google/protobuf/timestamp.proto", "google/protobuf/struct.proto"],
    )
    m = f.message_type.add(name="IntegrationEvent")
    T = descriptor_pb2.FieldDescriptorProto
    for number, name, json_name, kind, type_name in (
        (1, "deduplication_id", "deduplicationId", T.TYPE_STRING, None),
        (2, "time", "time", T.TYPE_MESSAGE, ".google.protobuf.Timestamp"),
        (3, "device_info", "deviceInfo", T.TYPE_MESSAGE, ".integration.DeviceInfo"),
        (4, "integration_name", "integrationName", T.TYPE_STRING, None),
        (5, "event_type", "eventType", T.TYPE_STRING, None),
        (6, "object", "object", T.TYPE_MESSAGE, ".google.protobuf.Struct"),
    ):
        field = m.field.add(name=name, number=number, json_name=json_name, type=kind, label=T.LABEL_OPTIONAL)
        if type_name:
            field.type_name = type_name
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("integration.IntegrationEvent"))


IntegrationEvent = _integration_event_class()

EVENTS = {
    "up": pb.UplinkEvent,
    "join": pb.JoinEvent,
    "ack": pb.AckEvent,
    "txack": pb.TxAckEvent,
    "log": pb.LogEvent,
    "status": pb.StatusEvent,
    "location": pb.LocationEvent,
    "integration": IntegrationEvent,
}

# Names in a codec-decoded ``object`` (ChirpStack's Cayenne LPP codec, and the names JavaScript codecs
# of the TTN device repository commonly use) -> quantity. The sensor's registry ``fields`` win over
# this table; a trailing ``.<channel>`` (ChirpStack LPP: ``temperatureSensor.3``) is tried without it.
OBJECT_FIELDS = {
    "temperatureSensor": "weather.temperature",
    "humiditySensor": "weather.relative_humidity",
    "barometer": "weather.pressure",
    "illuminanceSensor": "weather.illuminance",
    "temperature": "weather.temperature",
    "humidity": "weather.relative_humidity",
    "pressure": "weather.pressure",
    "light": "weather.illuminance",
    "lux": "weather.illuminance",
    "illuminance": "weather.illuminance",
    "co2": "air_quality.co2",
    "pm1": "air_quality.pm1",
    "pm2_5": "air_quality.pm2_5",
    "pm25": "air_quality.pm2_5",
    "pm10": "air_quality.pm10",
    "no2": "air_quality.no2",
    "o3": "air_quality.o3",
    "tvoc": "air_quality.voc",
    "laeq": "noise.laeq",
    "lamax": "noise.lamax",
    "lamin": "noise.lamin",
    "occupied": "parking.occupied",
    "battery": "gateway_health.battery",
    "batteryVoltage": "gateway_health.battery_voltage",
}
# ChirpStack LPP object parts that are not measurements: actuator states and motion axes.
IGNORED_OBJECT = frozenset({"digitalOutput", "analogOutput", "accelerometer", "gyrometer"})

_CODE_RATES = {v: k[3:].replace("_", "/") for k, v in gw_pb2.CodeRate.items() if k.startswith("CR_") and v}
_LOCATION_SOURCES = {v: k.lower() for k, v in common_pb2.LocationSource.items()}
_LOG_LEVELS = {v: k.lower() for k, v in pb.LogLevel.items()}
_LOG_CODES = {v: k.lower() for k, v in pb.LogCode.items()}

# A radio point's fields: its gateway's reception, then the uplink's (rendered once for all its gateways)
_RADIO_RX = FieldLayout({"rssi": int, "snr": float, "channel": int})
_UPLINK = {"frequency": int, "dr": int, "f_cnt": int, "f_port": int, "adr": bool, "confirmed": bool, "n_gateways": int}
_RADIO_COMMON = FieldLayout(_UPLINK)
_RADIO_LORA = FieldLayout({**_UPLINK, "bandwidth": int, "spreading_factor": int, "code_rate": str})
_RADIO_FSK = FieldLayout({**_UPLINK, "bitrate": int})


def make(registry: Registry) -> Callable[[Message], Decoded]:
    return ChirpStackDecoder(registry).decode


def parse_event(event_type: str, payload: bytes) -> Event:
    """The event as its chirpstack-api message, from JSON or protobuf; DecodeError when it is neither."""
    cls = EVENTS.get(event_type)
    if cls is None:
        raise DecodeError("unknown_event", f"event type {event_type!r} is not one of {', '.join(EVENTS)}")
    if payload.lstrip()[:1] == b"{":
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise DecodeError("malformed", f"not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise DecodeError("malformed", "a ChirpStack event is a JSON object")
        if cls is pb.UplinkEvent:
            try:
                return _uplink_from_json(doc)
            except (KeyError, TypeError, ValueError, AttributeError, binascii.Error):
                pass  # anything unusual: the general parser below decides, with its error message
        try:
            return json_format.ParseDict(doc, cls(), ignore_unknown_fields=True)
        except (json_format.ParseError, ValueError, TypeError) as exc:
            raise DecodeError("malformed", f"not a ChirpStack {cls.__name__} in JSON: {exc}") from None
    try:
        return cls.FromString(payload)
    except (ProtobufDecodeError, ValueError) as exc:
        raise DecodeError("malformed", f"neither JSON nor a protobuf {cls.__name__}: {exc}") from None


_UPLINK_SCALARS = (
    ("deduplicationId", "deduplication_id"),
    ("devAddr", "dev_addr"),
    ("adr", "adr"),
    ("dr", "dr"),
    ("fCnt", "f_cnt"),
    ("fPort", "f_port"),
    ("confirmed", "confirmed"),
    ("regionConfigId", "region_config_id"),
)
_RX_SCALARS = (
    ("gatewayId", "gateway_id"),
    ("uplinkId", "uplink_id"),
    ("rssi", "rssi"),
    ("snr", "snr"),
    ("channel", "channel"),
    ("rfChain", "rf_chain"),
    ("board", "board"),
    ("antenna", "antenna"),
)
_UPLINK_KNOWN = frozenset(
    {"deviceInfo", "time", "data", "object", "rxInfo", "txInfo"} | {k for k, _ in _UPLINK_SCALARS}
)
_RX_KNOWN = frozenset(
    {"gwTime", "nsTime", "crcStatus", "context", "metadata", "location"} | {k for k, _ in _RX_SCALARS}
)
_INFO_STRINGS = tuple((f.json_name, f.name) for f in pb.DeviceInfo.DESCRIPTOR.fields if f.type == f.TYPE_STRING)
_INFO_KNOWN = frozenset({"deviceClassEnabled", "tags"} | {k for k, _ in _INFO_STRINGS})
_LORA_FIELDS = (("bandwidth", "bandwidth"), ("spreadingFactor", "spreading_factor"))


def _uplink_from_json(doc: dict) -> pb.UplinkEvent:
    """The common shape of ChirpStack's JSON ``up`` event read straight into an ``UplinkEvent``.

    ``json_format.ParseDict`` walks the message descriptors generically and takes about 140 µs per
    uplink here; this fast path sets the fields the decoder reads directly (about 20 µs). Anything it
    does not know (a relay, a join-server context, FSK modulation, a future field) raises, and the
    caller falls back to ``ParseDict``, so both paths yield the same message; the tests compare them.
    """
    ev = pb.UplinkEvent()
    for key, attr in _UPLINK_SCALARS:
        if key in doc:
            setattr(ev, attr, doc[key])
    info = doc.get("deviceInfo")
    if info is not None:
        di = ev.device_info
        di.SetInParent()
        for key, attr in _INFO_STRINGS:
            if key in info:
                setattr(di, attr, info[key])
        if "deviceClassEnabled" in info:
            di.device_class_enabled = common_pb2.DeviceClass.Value(info["deviceClassEnabled"])
        if "tags" in info:
            di.tags.update(info["tags"])
        if not info.keys() <= _INFO_KNOWN:
            raise KeyError("deviceInfo field outside the fast path")
    if "time" in doc:
        ev.time.FromJsonString(doc["time"])
    if "data" in doc:
        ev.data = base64.b64decode(doc["data"], validate=True)
    if "object" in doc:
        ev.object.update(doc["object"])
    for rx in doc.get("rxInfo", ()):
        if not rx.keys() <= _RX_KNOWN:
            raise KeyError("rxInfo field outside the fast path")
        r = ev.rx_info.add()
        for key, attr in _RX_SCALARS:
            if key in rx:
                setattr(r, attr, rx[key])
        if "gwTime" in rx:
            r.gw_time.FromJsonString(rx["gwTime"])
        if "nsTime" in rx:
            r.ns_time.FromJsonString(rx["nsTime"])
        if "crcStatus" in rx:
            r.crc_status = gw_pb2.CRCStatus.Value(rx["crcStatus"])
        if "context" in rx:
            r.context = base64.b64decode(rx["context"], validate=True)
        if "metadata" in rx:
            r.metadata.update(rx["metadata"])
        if "location" in rx:
            json_format.ParseDict(rx["location"], r.location, ignore_unknown_fields=True)
    tx = doc.get("txInfo")
    if tx is not None:
        if not tx.keys() <= {"frequency", "modulation"}:
            raise KeyError("txInfo field outside the fast path")
        ev.tx_info.frequency = tx.get("frequency", 0)
        mod = tx.get("modulation")
        if mod is not None:
            lora = mod["lora"]  # FSK / LR-FHSS: KeyError, the general parser takes them
            if not mod.keys() <= {"lora"} or not lora.keys() <= {
                "bandwidth",
                "spreadingFactor",
                "codeRate",
                "polarizationInversion",
                "preamble",
                "noCrc",
            }:
                raise KeyError("modulation outside the fast path")
            m = ev.tx_info.modulation.lora
            m.SetInParent()
            for key, attr in _LORA_FIELDS:
                if key in lora:
                    setattr(m, attr, lora[key])
            if "codeRate" in lora:
                cr = lora["codeRate"]
                m.code_rate = cr if isinstance(cr, int) else gw_pb2.CodeRate.Value(cr)
            m.polarization_inversion = lora.get("polarizationInversion", False)
            m.preamble = lora.get("preamble", 0)
            m.no_crc = lora.get("noCrc", False)
    if not doc.keys() <= _UPLINK_KNOWN:
        unknown = doc.keys() - _UPLINK_KNOWN
        # fields of this package's UplinkEvent that the fast path does not fill: let ParseDict do it
        if any(k in _UPLINK_JSON_NAMES for k in unknown):
            raise KeyError("uplink field outside the fast path")
    return ev


# both spellings the proto3 JSON mapping accepts: lowerCamelCase and the proto field name
_UPLINK_JSON_NAMES = frozenset(
    {f.json_name for f in pb.UplinkEvent.DESCRIPTOR.fields} | {f.name for f in pb.UplinkEvent.DESCRIPTOR.fields}
)


def _time(ts: Event) -> datetime:
    return EPOCH + timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)


def _flatten(prefix: str, value: Any, out: list[tuple[str, Any]]) -> None:
    """A decoded JSON object's leaves as (dotted path, value): the pipeline checks every value."""
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _flatten(f"{prefix}.{i}", v, out)
    else:
        out.append((prefix, value))


class ChirpStackDecoder:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        unknown = sorted({p.codec for p in registry.device_profiles.values() if p.codec} - set(CODECS))
        if unknown:
            raise ConfigurationError(f"registry device profiles name unknown codecs {unknown}; known: {sorted(CODECS)}")
        self._gateway_ids = {eui: g.id for eui, g in registry.lora_gateways.items()}
        self._radio_tags: dict[tuple[str, str], Mapping[str, str]] = {}
        # one handler per event type, by ChirpStack's name for it (the topic's last level)
        self._handlers = {
            "up": self._up,
            "status": self._status,
            "location": self._location,
            "join": self._join,
            "ack": self._ack,
            "txack": self._txack,
            "log": self._log,
            "integration": self._integration,
        }

    def decode(self, msg: Message) -> Decoded:
        levels = msg.topic.split("/")
        if len(levels) != 6 or levels[0] != "application" or levels[2] != "device" or levels[4] != "event":
            raise DecodeError("malformed", f"{msg.topic!r} is not application/<id>/device/<dev_eui>/event/<type>")
        dev_eui, event_type = levels[3].lower(), levels[5]
        if not _EUI.fullmatch(dev_eui):
            raise DecodeError("malformed", f"DevEUI {levels[3]!r} in the topic is not 16 hexadecimal digits")
        event = parse_event(event_type, msg.payload)
        info = event.device_info
        if info.dev_eui.lower() != dev_eui:
            raise DecodeError(
                "topic_mismatch",
                f"the event's deviceInfo.devEui {info.dev_eui!r} is not the "
                f"topic's {dev_eui!r} (a ChirpStack v3 event, or a mixed-up one)",
            )
        sensor = self.registry.resolve(None, dev_eui)
        if sensor is None:
            raise DecodeError(
                "unknown_device",
                f"LoRaWAN device {dev_eui} ({info.device_name or 'no name'}, "
                f"profile {info.device_profile_name or '?'}) is not in the registry",
            )
        t = _time(event.time) if event.HasField("time") else None
        return self._handlers[event_type](msg, event, dev_eui, sensor.id, t)

    # -- events -------------------------------------------------------------------------------------
    def _up(self, msg: Message, ev: pb.UplinkEvent, dev_eui: str, sensor_id: str, t: datetime | None) -> Decoded:
        if t is None:  # ChirpStack always sets it; else the first gateway's time, else receipt
            rx0 = ev.rx_info[0] if ev.rx_info else None
            if rx0 is not None and rx0.HasField("gw_time"):
                t = _time(rx0.gw_time)
            elif rx0 is not None and rx0.HasField("ns_time"):
                t = _time(rx0.ns_time)
            else:
                t = msg.received_at
        readings: list[Reading] = []
        records = self._radio(ev, dev_eui, t)
        problems: list[DecodeError] = []
        position: dict[str, float] = {}
        values: list[tuple[str, Any]] = []  # JSON or codec values: the pipeline checks each
        if ev.HasField("object") and len(ev.object.fields):
            _flatten("", json_format.MessageToDict(ev.object), values)
            values = self._object_names(sensor_id, values)
        elif ev.data and ev.f_port:
            profile = self.registry.device_profile(sensor_id)
            codec = CODECS.get(profile.codec) if profile is not None and profile.codec else None
            if codec is None:
                problems.append(
                    DecodeError(
                        "no_codec",
                        f"device {sensor_id}: its device profile names no codec and ChirpStack sent no decoded object",
                    )
                )
            else:
                try:
                    values = self._codec_names(sensor_id, codec, codec.decode(ev.data, ev.f_port))
                except DecodeError as exc:
                    problems.append(
                        DecodeError(exc.reason, f"{codec.NAME} fPort {ev.f_port} data {ev.data.hex()}: {exc.detail}")
                    )
        for name, value in values:
            axis = _gps_axis(name)
            if axis is not None:
                if isinstance(value, int | float) and not isinstance(value, bool):
                    position[axis] = float(value)
                continue
            readings.append(_new(Reading, (t, dev_eui, name, value, None, NAME)))
        if "latitude" in position and "longitude" in position:
            try:
                records.append(_position(dev_eui, t, position, "gps_payload"))
            except DecodeError as exc:
                problems.append(exc)
        return Decoded(readings, records, problems)

    def _radio(self, ev: pb.UplinkEvent, dev_eui: str, t: datetime) -> list[Record]:
        tx = ev.tx_info
        mod = tx.modulation
        kind = mod.WhichOneof("parameters") or "unknown"
        common: tuple[int | bool, ...] = (
            tx.frequency,
            ev.dr,
            ev.f_cnt,
            ev.f_port,
            ev.adr,
            ev.confirmed,
            len(ev.rx_info),
        )
        if kind == "lora":
            lora = mod.lora
            code_rate = _CODE_RATES.get(lora.code_rate, lora.code_rate_legacy or "")
            shared = Fields(_RADIO_LORA, (*common, lora.bandwidth, lora.spreading_factor, code_rate))
        elif kind == "fsk":
            shared = Fields(_RADIO_FSK, (*common, mod.fsk.datarate))
        else:
            shared = Fields(_RADIO_COMMON, common)
        radio_tags = self._radio_tags
        records = []
        for rx in ev.rx_info:  # the uplink's fields (shared) are rendered once for all its receiving gateways
            gw = rx.gateway_id
            tags = radio_tags.get((gw, kind)) or self._radio_tag_set(gw, kind)
            fields = Fields(_RADIO_RX, (rx.rssi, round(rx.snr, 2), rx.channel), shared)
            records.append(_new(Record, ("radio", dev_eui, tags, fields, t, Store.OPS)))
        return records

    def _radio_tag_set(self, gateway_id: str, kind: str) -> Mapping[str, str]:
        """A radio point's own tags, one ``TagSet`` per gateway and modulation (the pipeline merges it with the
        device's once); a plain mapping when line protocol cannot carry them (the pipeline then says why)."""
        gw = gateway_id.lower()
        tags = {"rx_gateway": self._gateway_ids.get(gw) or gw, "modulation": kind}
        try:
            tag_set: Mapping[str, str] = TagSet(tags)
        except LineProtocolError:
            return tags
        if len(self._radio_tags) >= 10_000:  # bounded: gateway ids come from the network
            self._radio_tags.clear()
        self._radio_tags[(gateway_id, kind)] = tag_set
        return tag_set

    def _object_names(self, sensor_id: str, values: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        fields = self.registry.sensors[sensor_id].fields
        out = []
        for name, value in values:
            head, _, rest = name.partition(".")
            if head in IGNORED_OBJECT:
                continue
            if head == "gpsLocation" and rest.count(".") == 1:  # ChirpStack LPP: gpsLocation.<ch>.<axis>
                out.append((f"gps_{rest.split('.')[0]}_{rest.split('.')[1]}", value))
                continue
            q = fields.get(name) or OBJECT_FIELDS.get(name) or OBJECT_FIELDS.get(_strip_channel(name))
            out.append((q or name, value))
        return out

    def _codec_names(
        self, sensor_id: str, codec: ModuleType, values: list[tuple[str, float | int | bool]]
    ) -> list[tuple[str, Any]]:
        fields = self.registry.sensors[sensor_id].fields
        default = getattr(codec, "quantity", None)
        return [(fields.get(n) or (default(n) if default else None) or n, v) for n, v in values]

    def _status(self, msg: Message, ev: Event, dev_eui: str, sensor_id: str, t: datetime | None) -> Decoded:
        t = t or msg.received_at
        readings = [
            Reading(t, dev_eui, "gateway_health.link_margin", ev.margin, None, NAME),
            Reading(t, dev_eui, "gateway_health.external_power", ev.external_power_source, None, NAME),
        ]
        if not ev.battery_level_unavailable and not ev.external_power_source:
            readings.append(Reading(t, dev_eui, "gateway_health.battery", round(ev.battery_level, 2), None, NAME))
        return Decoded(readings, [])

    def _location(self, msg: Message, ev: Event, dev_eui: str, sensor_id: str, t: datetime | None) -> Decoded:
        loc = ev.location
        if not (-90 <= loc.latitude <= 90 and -180 <= loc.longitude <= 180):
            raise DecodeError("out_of_range", f"location {loc.latitude}, {loc.longitude} is not on Earth")
        pos = {
            "latitude": loc.latitude,
            "longitude": loc.longitude,
            "altitude": loc.altitude,
            "accuracy": round(loc.accuracy, 3),
        }
        return Decoded(
            [], [_position(dev_eui, t or msg.received_at, pos, _LOCATION_SOURCES.get(loc.source, "unknown"))]
        )

    def _ops(
        self,
        msg: Message,
        dev_eui: str,
        event: str,
        fields: dict[str, FieldValue],
        t: datetime | None,
        tags: dict[str, str] | None = None,
    ) -> Decoded:
        return Decoded(
            [],
            [
                Record(
                    "lorawan_events", dev_eui, {"event": event, **(tags or {})}, fields, t or msg.received_at, Store.OPS
                )
            ],
        )

    def _join(self, msg: Message, ev: Event, dev_eui: str, sensor_id: str, t: datetime | None) -> Decoded:
        return self._ops(msg, dev_eui, "join", {"dev_addr": ev.dev_addr or "", "count": 1}, t)

    def _ack(self, msg: Message, ev: Event, dev_eui: str, sensor_id: str, t: datetime | None) -> Decoded:
        return self._ops(
            msg,
            dev_eui,
            "ack",
            {
                "acknowledged": ev.acknowledged,
                "f_cnt_down": ev.f_cnt_down,
                "queue_item_id": ev.queue_item_id,
                "count": 1,
            },
            t,
        )

    def _txack(self, msg: Message, ev: Event, dev_eui: str, sensor_id: str, t: datetime | None) -> Decoded:
        gw = ev.gateway_id.lower()
        tags = {"rx_gateway": self._gateway_ids.get(gw) or gw}
        return self._ops(
            msg,
            dev_eui,
            "txack",
            {"f_cnt_down": ev.f_cnt_down, "downlink_id": ev.downlink_id, "frequency": ev.tx_info.frequency, "count": 1},
            t,
            tags,
        )

    def _log(self, msg: Message, ev: Event, dev_eui: str, sensor_id: str, t: datetime | None) -> Decoded:
        tags = {"level": _LOG_LEVELS.get(ev.level, "info"), "code": _LOG_CODES.get(ev.code, "unknown")}
        return self._ops(msg, dev_eui, "log", {"description": ev.description[:1000], "count": 1}, t, tags)

    def _integration(self, msg: Message, ev: Event, dev_eui: str, sensor_id: str, t: datetime | None) -> Decoded:
        return self._ops(
            msg,
            dev_eui,
            "integration",
            {"integration_name": ev.integration_name[:200], "event_type": ev.event_type[:200], "count": 1},
            t,
        )


def _strip_channel(name: str) -> str:
    head, dot, tail = name.rpartition(".")
    return head if dot and tail.isdigit() else name


def _gps_axis(name: str) -> str | None:
    if name.startswith("gps_"):
        axis = name.rpartition("_")[2]
        if axis in ("latitude", "longitude", "altitude"):
            return axis
    return None


def _position(dev_eui: str, t: datetime, pos: dict[str, float], source: str) -> Record:
    if not (-90 <= pos["latitude"] <= 90 and -180 <= pos["longitude"] <= 180):
        raise DecodeError("out_of_range", f"position {pos['latitude']}, {pos['longitude']} is not on Earth")
    return Record("position", dev_eui, {"source": source}, {k: float(v) for k, v in pos.items()}, t)
