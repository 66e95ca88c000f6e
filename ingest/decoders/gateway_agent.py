"""The gateway agent's own topics: its heartbeat ``gw/<id>/health``, its status ``gw/<id>/status`` and its
self-test ``gw/<id>/selftest``.

Heartbeat (gateways/agent/health.py): a JSON object with ``time`` (epoch seconds, the gateway's clock), numbers
that are ``gateway_health`` quantities under their leaf name (``uptime``, ``cpu_temperature``, ``backlog`` ...),
``clock_synchronised`` (true/false), ``radios`` (``{"zigbee": {"present": true, "heard_ago": 12.5}, ...}``,
each becoming ``<radio>_present`` and ``<radio>_heard_ago``) and ``versions`` (text: the agent's, Python's,
paho-mqtt's, the OS's), which becomes one ``gateway_software`` record in the ops database. Status: ``online``
(published retained on connect) or ``offline`` (its last will, or said on a clean stop), the quantity
``gateway_health.online`` at receipt time. Self-test (retained, ``{"time": "...Z", "failed": 0, "checks":
[{"name": ..., "ok": true, "detail": ...}]}``): the quantity ``gateway_health.selftest_failed`` (how many checks
failed; counted from ``checks`` when ``failed`` is missing) at its ``time``. The device key is the gateway id:
the registry's health sensor of the gateway (``keys: [<gateway id>]``, category ``gateway_health``) owns the
readings.
"""

from __future__ import annotations

from ingest.decoders._json import load_json
from ingest.decoders._time import parse_time
from smartzone.errors import DecodeError
from smartzone.model import Decoded, Message, Reading, Record, Store

NAME = "gateway_agent"

_NOT_QUANTITIES = frozenset({"time", "radios", "versions"})
_MAX_TEXT = 200


def decode(msg: Message) -> list[Reading] | Decoded:
    gateway = msg.gateway_id
    if gateway is None:
        raise DecodeError("not_a_reading", f"{msg.topic!r} is not under gw/<gateway_id>/")
    if msg.native_topic == "status":
        state = msg.payload.strip().decode(errors="replace")
        if state not in ("online", "offline"):
            raise DecodeError("invalid_value", f"gateway status {state[:40]!r} is neither online nor offline")
        return [Reading(msg.received_at, gateway, "gateway_health.online", state == "online", gateway, NAME)]
    if msg.native_topic == "selftest":
        doc = load_json(msg.payload, dict, "gateway self-test")
        failed = doc.get("failed")
        if failed is None and isinstance(doc.get("checks"), list):  # counted from the checks when not given
            failed = sum(1 for c in doc["checks"] if isinstance(c, dict) and c.get("ok") is False)
        if failed is None:
            raise DecodeError("malformed", 'gateway self-test has neither "failed" nor "checks"')
        t = parse_time(doc["time"]) if doc.get("time") is not None else msg.received_at
        return [Reading(t, gateway, "gateway_health.selftest_failed", failed, gateway, NAME)]
    if msg.native_topic != "health":
        raise DecodeError("not_a_reading", f"gateway agent topic {msg.native_topic!r} carries no health")
    doc = load_json(msg.payload, dict, "gateway health")
    t = parse_time(doc["time"]) if "time" in doc else msg.received_at
    readings = [
        Reading(t, gateway, f"gateway_health.{k}", v, gateway, NAME) for k, v in doc.items() if k not in _NOT_QUANTITIES
    ]
    radios = doc.get("radios")
    if isinstance(radios, dict):
        for radio, state in radios.items():
            if isinstance(state, dict):
                for k, v in state.items():
                    readings.append(Reading(t, gateway, f"gateway_health.{radio}_{k}", v, gateway, NAME))
    records = []
    versions = doc.get("versions")
    if isinstance(versions, dict):
        fields = {
            str(k)[:64]: v[:_MAX_TEXT] for k, v in versions.items() if isinstance(v, str) and str(k).isidentifier()
        }
        if fields:
            records.append(Record("gateway_software", gateway, {}, fields, t, Store.OPS))
    return Decoded(readings, records)
