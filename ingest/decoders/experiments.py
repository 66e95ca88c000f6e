"""Protocol experiments on the gateways: their metrics, the scheduler's state changes, the agents' phases.

Three topics (docs/parts/experiments-metrics.md), each becoming records of the experiments store
(``Store.EXPERIMENTS``, the database ``influx.experiments_database``, never read by the charter or the open-data
API). No sensor of the registry stands behind them: their tags are their own.

- ``gw/<gateway>/experiments/<exp_id>/metrics``, from the experiment's process. Either our shape
  ``{"time": "2026-12-02T17:05:00Z" | 1764695100, "metrics": {"rtt_ms": 12.5, "delivered": 1},
  "units": {"rtt_ms": "ms"}}`` (``time`` optional: the receipt time; ``units`` optional), or a JSON array of
  such objects, or a SenML pack (RFC 8428: a JSON array of records with ``bn``, ``bt``, ``bu``, ``n``, ``u``,
  ``v``, ``vb``, ``t``; the metric is the resolved name ``bn + n``). Each value becomes a point of measurement
  ``metrics``, tags ``experiment``, ``gateway``, ``metric``, ``unit`` (left out when empty), field ``value``
  (float; true/false are 1.0/0.0). A value that is not a number is a problem (``invalid_value``,
  ``not_finite``) of the message's dead letter while its other values are written.
- ``smartzone/experiments/events``, from the scheduler: ``{"experiment": 42, "name": "rtt probe", "gateways":
  ["gw-a"], "from": "Waiting", "to": "toLaunch", "reason": "...", "time": "...Z", ...}`` -> measurement
  ``events``, one point per gateway (none named: one point without the tag), tags ``experiment``, ``gateway``,
  ``to``; fields ``from``, ``reason``, ``name`` and ``text`` (``"<name>: <from> -> <to> (<reason>)"``, the
  dashboard's annotation).
- ``gw/<gateway>/experiments/reported``, from the gateway agent: ``{"version": 1, "time": "...Z",
  "experiments": [{"id": 42, "phase": "running", "exit_code": null, ...}]}`` -> measurement ``reported``, one
  point per experiment, tags ``experiment``, ``gateway``, ``phase``; fields ``running`` (1 when the phase is
  ``running``, else 0), ``phase_code`` (``smartzone.model.PHASE_CODES``: the phase as a number, for a state
  timeline) and ``exit_code`` (integer, left out while there is none).

Times come from the message (or its receipt time, which the worker keeps across redeliveries), never from the
clock at write time, so a redelivered message rewrites the same points (exactly once, like every reading).
Other topics under ``gw/+/experiments/`` (the experiment's own traffic, the desired documents) are not routed
here: ``ingest.ignore`` drops them without dead letters.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime

from ingest.decoders import senml
from ingest.decoders._json import load_json
from ingest.decoders._time import parse_time
from smartzone.errors import DecodeError
from smartzone.model import PHASE_CODES, Decoded, Message, Record, Store

NAME = "experiments"

METRICS, EVENTS, REPORTED = "metrics", "events", "reported"  # the measurements
EVENTS_TOPIC = "smartzone/experiments/events"
_MAX_TEXT = 200  # names, units, phases: longer is a dead letter (tags are series keys)
_MAX_REASON = 2000
_SENML_LABELS = frozenset({"bn", "bt", "bu", "bv", "bs", "bver", "n", "u", "v", "vs", "vb", "vd", "s", "t", "ut"})


def _experiment_id(value: object, what: str) -> str:
    """An experiment id (the SQL integer id) as its tag text."""
    if isinstance(value, str) and value.isdigit() and len(value) <= 18:
        return str(int(value))
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**18:
        return str(value)
    raise DecodeError("malformed", f"{what}: experiment id {value!r} is not a whole number")


def _text(value: object, what: str, limit: int = _MAX_TEXT, *, required: bool = False) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise DecodeError("malformed", f"{what} must be {'non-empty ' if required else ''}text, not {value!r}")
    if len(value) > limit:
        raise DecodeError("malformed", f"{what} is longer than {limit} characters")
    return value


def _time(doc: dict, msg: Message) -> datetime:
    return parse_time(doc["time"]) if doc.get("time") is not None else msg.received_at


def _value(name: str, value: object) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if not isinstance(value, int | float):
        raise DecodeError("invalid_value", f"metric {name!r}: {value!r} is not a number")
    try:
        number = float(value)
    except OverflowError:
        raise DecodeError("invalid_value", f"metric {name!r}: an integer too large for a float") from None
    if not math.isfinite(number):
        raise DecodeError("not_finite", f"metric {name!r}: {value!r}")
    return number


def _is_senml(doc: object) -> bool:
    """A JSON array whose objects carry SenML labels only (our shape's objects have ``metrics``)."""
    return (
        isinstance(doc, list)
        and bool(doc)
        and all(isinstance(r, dict) and "metrics" not in r for r in doc)
        and any(not _SENML_LABELS.isdisjoint(r) for r in doc)
    )


def metrics(msg: Message) -> Decoded:
    parts = msg.native_topic.split("/")  # experiments/<exp_id>/metrics
    gateway = msg.gateway_id or ""
    exp = _experiment_id(parts[1], "topic")
    doc = load_json(msg.payload, (dict, list), "experiment metrics")
    entries: list[tuple[str, str, object, datetime]] = []
    if _is_senml(doc):
        entries = [(r.name, r.unit, r.value, r.time) for r in senml.resolve(doc, msg.received_at)]
    else:
        for i, obj in enumerate(doc if isinstance(doc, list) else [doc]):
            where = f"object {i}" if isinstance(doc, list) else "the object"
            if not isinstance(obj, dict) or not isinstance(obj.get("metrics"), dict):
                raise DecodeError("malformed", f'{where} has no "metrics" object (nor is the payload SenML)')
            units = obj.get("units") or {}
            if not isinstance(units, dict):
                raise DecodeError("malformed", f'{where}: "units" must be an object of metric -> unit')
            t = _time(obj, msg)
            for name, value in obj["metrics"].items():
                entries.append((name, _text(units.get(name), f"unit of {name!r}"), value, t))
    records: list[Record] = []
    problems: list[DecodeError] = []
    for name, unit, value, t in entries:
        try:
            metric = _text(name, "a metric name", required=True)
            tags = {"experiment": exp, "gateway": gateway, "metric": metric, "unit": unit}
            records.append(Record(METRICS, metric, tags, {"value": _value(name, value)}, t, Store.EXPERIMENTS))
        except DecodeError as exc:
            problems.append(exc)
    if not records and not problems:
        raise DecodeError("no_readings", "the message carries no metric")
    return Decoded([], records, problems)


def events(msg: Message) -> Decoded:
    doc = load_json(msg.payload, dict, "an experiment event")
    exp = _experiment_id(doc.get("experiment"), "event")
    gateways = doc.get("gateways") or []
    if not isinstance(gateways, list) or not all(isinstance(g, str) and g for g in gateways):
        raise DecodeError("malformed", f'event: "gateways" must be a list of gateway ids, not {gateways!r}')
    fields = {
        "from": _text(doc.get("from"), "event: from"),
        "reason": _text(doc.get("reason"), "event: reason", _MAX_REASON),
        "name": _text(doc.get("name"), "event: name"),
    }
    to = _text(doc.get("to"), "event: to", required=True)
    # what an annotation of the operations dashboard says: "rtt probe: Launching -> Running (all gateways running)"
    text = f"{fields['name'] or 'experiment ' + exp}: {fields['from'] or '?'} -> {to}"
    fields["text"] = f"{text} ({fields['reason']})" if fields["reason"] else text
    t = _time(doc, msg)
    return Decoded(
        [],
        [
            Record(EVENTS, exp, {"experiment": exp, "gateway": g, "to": to}, fields, t, Store.EXPERIMENTS)
            for g in (gateways or [""])
        ],
    )


def reported(msg: Message) -> Decoded:
    doc = load_json(msg.payload, dict, "an agent's reported experiments")
    listed = doc.get("experiments")
    if not isinstance(listed, list):
        raise DecodeError("malformed", 'reported: "experiments" must be a list')
    t = _time(doc, msg)
    gateway = msg.gateway_id or ""
    records = []
    for i, entry in enumerate(listed):
        if not isinstance(entry, dict):
            raise DecodeError("malformed", f"reported: experiment {i} is not an object")
        exp = _experiment_id(entry.get("id"), f"reported experiment {i}")
        phase = _text(entry.get("phase"), f"reported experiment {exp}: phase", 32, required=True)
        fields: dict[str, int] = {"running": int(phase == "running"), "phase_code": PHASE_CODES.get(phase, 0)}
        code = entry.get("exit_code")
        if code is not None:
            if not isinstance(code, int) or isinstance(code, bool) or not -(2**31) <= code < 2**31:
                raise DecodeError("malformed", f"reported experiment {exp}: exit_code {code!r} is not an integer")
            fields["exit_code"] = code
        tags = {"experiment": exp, "gateway": gateway, "phase": phase}
        records.append(Record(REPORTED, exp, tags, fields, t, Store.EXPERIMENTS))
    return Decoded([], records)


def decode(msg: Message) -> Decoded:
    if msg.topic == EVENTS_TOPIC:
        return events(msg)
    handler = _BY_TOPIC.get(_shape(msg.native_topic)) if msg.gateway_id else None
    if handler is None:
        raise DecodeError("not_a_reading", f"{msg.topic!r} is no experiments topic (metrics, reported, events)")
    return handler(msg)


def _shape(native_topic: str) -> str:
    """``experiments/42/metrics`` -> ``experiments/+/metrics``."""
    parts = native_topic.split("/")
    if len(parts) == 3 and parts[0] == "experiments":
        parts[1] = "+"
    return "/".join(parts)


_BY_TOPIC: dict[str, Callable[[Message], Decoded]] = {
    "experiments/+/metrics": metrics,
    "experiments/reported": reported,
}
