"""From one MQTT message to Points and, for whatever is wrong with it, one dead letter.

The steps, in order: size limit, route (topic filter -> decoder; a topic no route matches is ignored when
``ingest.ignore`` names it, otherwise it is a ``no_route`` dead letter), decode, resolve each device
against the registry, map the field to a quantity (decoder table, then the sensor's own ``fields``),
check type, finiteness, range and time. Good readings become Points (``smartzone.model.Point``: what
storage takes; ``render`` makes them line protocol, through ``storage.lineprotocol``); every problem in the message
becomes part of a single dead letter that keeps the whole payload, so a replay after the cause is
fixed re-processes the message as a whole (re-writing its good readings is idempotent). Each reading and
record stands alone: one that cannot be checked or stored (a value no number type holds, a tag line protocol
cannot carry, even a bug) is a problem of that letter and the others are still written; a record's field
that is NaN or infinite (a radio's snr) is left out of its point and counted (``fields_dropped``). The exception:
a message routed to a private decoder (identifiers of passers-by, see ``ingest.decoders``) is kept as
the decoder's scrubbed copy, with pseudonyms in place of identifiers, whatever went wrong with it.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from paho.mqtt.client import topic_matches_sub

from ingest.decoders import NAMES, Decoder, bind
from smartzone.errors import ConfigurationError, DecodeError
from smartzone.model import DeadLetter, Decoded, FieldValue, Message, Point, Reading, Record, Store, to_ns
from smartzone.quantities import QUANTITIES, Quantity
from smartzone.registry import Registry, SensorInfo
from smartzone.settings import Route, Settings
from storage.lineprotocol import LineProtocolError, TagSet, render_by_store

if TYPE_CHECKING:
    from datacharter.charter import Charter
    from ingest.pepper import Pseudonymiser

log = logging.getLogger(__name__)

_CACHE_MAX = 100_000
# Categories that describe the network itself (device batteries, gateway heartbeats), not the city: they go
# to the ops database with the pipeline's self-metrics and radio metadata (DESIGN.md, Storage).
OPS_CATEGORIES = frozenset({"gateway_health"})
_RECORD_STORES = (Store.RAW, Store.OPS, Store.PSEUDONYMOUS, Store.EXPERIMENTS)  # where a decoder's records may go
_RAW, _OPS, _EXPERIMENTS = Store.RAW, Store.OPS, Store.EXPERIMENTS
_new_point = tuple.__new__  # Point(...) without the Python frame of NamedTuple.__new__ (hot path)
WITHHELD_PAYLOAD = b'{"<withheld>": "the payload could not be scrubbed of identifiers, so it is not kept"}'


@dataclass
class PipelineStats:
    """Counters owned by the thread that runs the pipeline."""

    received: int = 0
    decoded: int = 0  # messages that produced at least one line
    readings: int = 0
    dead_lettered: int = 0
    reasons: Counter = field(default_factory=Counter)  # every problem, by reason (no_route: kept or not)
    ignored: int = 0  # messages on topics of ``ingest.ignore``: acked, not kept
    no_route_not_kept: int = 0  # no_route messages beyond the cap: counted, not kept
    fields_dropped: int = 0  # NaN/infinite record fields left out of their points
    series: Counter = field(default_factory=Counter)  # readings by tag set (one per sensor), cumulative


class Outcome(NamedTuple):  # one per message: a NamedTuple builds in a third of a frozen dataclass's time
    points: list[Point]  # each names its store: raw, ops (operational events) or pseudonymous (sightings)
    letter: DeadLetter | None
    problems: list[DecodeError] = []  # noqa: RUF012 - what the letter says, one by one; never mutated


class _Default(Enum):
    """The default of ``Pipeline.from_settings``'s pseudonymiser (None means none)."""

    PSEUDONYMISER = "the pseudonymiser over the peppers in <data_dir>/peppers"


_K = TypeVar("_K")
_V = TypeVar("_V")
_HOUR_NS = 3_600_000_000_000


def covers(outer: str, inner: str) -> bool:
    """Whether every topic that matches filter ``inner`` matches filter ``outer`` (MQTT 3.1.1 4.7: ``#``
    matches its parent level too, wildcards at the first level never match topics starting with ``$``)."""
    o, i = outer.split("/"), inner.split("/")
    if inner.startswith("$") and o[0] in ("#", "+"):
        return False
    for n, level in enumerate(o):
        if level == "#":
            return True
        if n >= len(i) or i[n] == "#" or (level != "+" and level != i[n]):
            return False
    return len(o) == len(i)


def subscriptions(routes: Sequence[Route], watch: Sequence[str]) -> list[str]:
    """The filters a worker subscribes to: the watched ones and the routes' filters, less every filter
    another one covers (overlapping subscriptions would deliver a message once per subscription)."""
    filters = list(dict.fromkeys([*watch, *(r.filter for r in routes)]))
    return [
        f
        for n, f in enumerate(filters)
        if not any(m != n and covers(g, f) and (m < n or not covers(f, g)) for m, g in enumerate(filters))
    ]


class UnroutedCap:
    """At most ``per_hour`` ``no_route`` dead letters per source (a topic's first two levels: ``gw/<id>``,
    ``application/<id>``) per hour of receipt, so a misconfigured gateway cannot fill the dead-letter store.

    The clock is the messages' receipt time (a fixed window per hour: the newest seen). Memory is bounded:
    at most ``max_sources`` sources are remembered in an hour (topics come from the network).
    """

    def __init__(self, per_hour: int, *, max_sources: int = 10_000) -> None:
        self.per_hour = per_hour
        self.max_sources = max_sources
        self._hour = 0
        self._counts: dict[str, int] = {}

    def admit(self, topic: str, received_ns: int) -> bool:
        hour = received_ns // _HOUR_NS
        if hour > self._hour:
            self._hour = hour
            self._counts.clear()
        source = "/".join(topic.split("/", 2)[:2])
        n = self._counts.get(source, 0)
        if n >= self.per_hour:
            return False
        if n == 0 and len(self._counts) >= self.max_sources:
            return False
        self._counts[source] = n + 1
        if n + 1 == self.per_hour:
            log.warning("no_route dead letters capped source=%r per_hour=%d: more are counted, not kept", source, n + 1)
        return True


class Pipeline:
    def __init__(
        self,
        registry: Registry,
        routes: list[Route],
        *,
        max_payload_bytes: int,
        max_future: timedelta,
        max_age: timedelta,
        pseudonymiser: Pseudonymiser | None = None,
        ignore: Sequence[str] = (),
        no_route_keep_bytes: int | None = None,
        no_route_cap: UnroutedCap | None = None,
    ) -> None:
        unknown = sorted({r.decoder for r in routes} - set(NAMES))
        if unknown:
            raise ConfigurationError(f"routes name unknown decoders {unknown}; known: {NAMES}")
        self.registry = registry
        decoders = bind(registry, pseudonymiser)
        self.routes = [(r.filter, r.decoder, decoders[r.decoder]) for r in routes]
        # decoder name -> scrub(msg) -> bytes: what a dead letter keeps of its messages' payloads
        self._scrubbers = {name: dec.scrub for name, dec in decoders.items() if hasattr(dec, "scrub")}
        self.max_payload_bytes = max_payload_bytes
        self.ignore = list(ignore)
        self.no_route_keep_bytes = no_route_keep_bytes  # None: whole payloads
        self.no_route_cap = no_route_cap
        self._ignored: dict[str, bool] = {}
        self.max_future = max_future
        self.max_age = max_age
        self.stats = PipelineStats()
        self._route_cache: dict[str, tuple[str, Decoder] | None] = {}
        self._resolved: dict[tuple[str | None, str], tuple[SensorInfo | None, TagSet | None]] = {}
        self._topics: dict[str, tuple] = {}
        self._record_tags: dict[tuple, TagSet] = {}  # (sensor tags, record tags...) -> merged
        self._tag_sets: dict[str, TagSet] = {}  # rendered -> the one TagSet of registered sensors' tags
        self._max_future_ns = int(max_future.total_seconds() * 1e9)
        self._max_age_ns = int(max_age.total_seconds() * 1e9)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        registry: Registry,
        charter: Charter,
        *,
        pseudonymiser: Pseudonymiser | _Default | None = _Default.PSEUDONYMISER,
        cap_unrouted: bool = False,
    ) -> Pipeline:
        """The pipeline the settings describe: routes and limits from ``[ingest]``, the oldest acceptable
        reading from the charter's raw retention, and (unless given, or None for none) the pseudonymiser
        over the peppers in ``<data_dir>/peppers``. The one way the worker, replay, backfill, benchmarks
        and tests build it. ``cap_unrouted``: the worker's live traffic, whose ``no_route`` dead letters
        are capped (``ingest.no_route_per_hour``); a replay keeps every letter it re-processes."""
        from ingest.pepper import pseudonymiser_for

        ing = settings.ingest
        return cls(
            registry,
            ing.routes,
            max_payload_bytes=ing.max_payload_bytes,
            max_future=timedelta(seconds=ing.max_future),
            max_age=timedelta(seconds=charter.retention_s["raw"]),
            pseudonymiser=(
                pseudonymiser_for(settings, charter) if isinstance(pseudonymiser, _Default) else pseudonymiser
            ),
            ignore=ing.ignore,
            no_route_keep_bytes=ing.no_route_keep_bytes,
            no_route_cap=UnroutedCap(ing.no_route_per_hour) if cap_unrouted else None,
        )

    # -- public -----------------------------------------------------------------------------------
    def message(self, topic: str, payload: bytes, received_at: datetime) -> Message:
        where = self._topics.get(topic)
        if where is None:
            gateway_id, native = None, topic
            if topic.startswith("gw/"):
                parts = topic.split("/", 2)
                if len(parts) == 3:
                    gateway_id, native = parts[1], parts[2]
            where = _cache(self._topics, topic, (gateway_id, native, self.registry.timezone(gateway_id)))
        return Message(topic, payload, received_at, *where)

    def process(self, msg: Message) -> Outcome:
        self.stats.received += 1
        if len(msg.payload) > self.max_payload_bytes:
            return self._reject(
                msg, [DecodeError("oversized", f"{len(msg.payload)} bytes, limit is {self.max_payload_bytes}")]
            )
        route = self._route(msg.topic)
        if route is None:
            return self._unrouted(msg)
        source, decode = route
        try:
            readings = decode(msg)
        except DecodeError as exc:
            return self._reject(msg, [exc])
        except Exception as exc:  # a decoder bug must not crash the worker nor lose the message
            return self._reject(msg, [DecodeError("decoder_error", f"{source}: {type(exc).__name__}: {exc}")])
        if isinstance(readings, Decoded):
            return self._validate(msg, readings.readings, readings.records, readings.problems)
        if not readings:
            return self._reject(msg, [DecodeError("no_readings", f"{source} found no values in the payload")])
        return self._validate(msg, readings)

    def render(self, msg: Message, out: Outcome) -> tuple[dict[Store, list[str]], DeadLetter | None]:
        """``out``'s points as line protocol per store, and its dead letter. A point line protocol cannot
        carry (a decoder's string with a newline or NUL ...) is left out and joins the message's dead letter
        (reason ``unrepresentable``): never a broken or extra line. A point refused only for NaN/infinite
        fields is written without them (counted in ``fields_dropped``)."""
        lines, bad = render_by_store(out.points)
        if not bad:
            return lines, out.letter
        refused = []
        for p, why in bad:
            finite = _finite_fields(p)
            if finite is not None:  # a NaN/infinite snr, altitude ...: the point without it
                more, still = render_by_store([finite])
                if not still:
                    for store, ls in more.items():
                        lines.setdefault(store, []).extend(ls)
                    self.stats.fields_dropped += len(p.fields) - len(finite.fields)
                    continue
            refused.append(DecodeError("unrepresentable", f"{p.measurement}: {why}"))
        if not refused:
            return lines, out.letter
        problems = [*out.problems, *refused]
        if out.letter is not None:
            self.stats.dead_lettered -= 1  # one message, one letter: counted again below
            for problem in out.problems:
                self.stats.reasons[problem.reason] -= 1
        return lines, self._letter(msg, problems)

    # -- internals --------------------------------------------------------------------------------
    def _unrouted(self, msg: Message) -> Outcome:
        """A topic no route matches: ignored (``ingest.ignore``), or a ``no_route`` dead letter that keeps
        at most ``no_route_keep_bytes`` of the payload, unless the cap says this source has had enough."""
        topic = msg.topic
        ignored = self._ignored.get(topic)
        if ignored is None:
            ignored = _cache(self._ignored, topic, any(topic_matches_sub(f, topic) for f in self.ignore))
        if ignored:
            self.stats.ignored += 1
            return Outcome([], None)
        problem = DecodeError("no_route", f"no decoder is configured for topic {topic!r}")
        cap = self.no_route_cap
        if cap is not None and not cap.admit(topic, to_ns(msg.received_at)):
            self.stats.reasons["no_route"] += 1
            self.stats.no_route_not_kept += 1
            return Outcome([], None, [problem])
        keep, size = self.no_route_keep_bytes, len(msg.payload)
        if keep is not None and size > keep:
            problem = DecodeError("no_route", f"{problem.detail}; the first {keep} of {size} payload bytes kept")
            msg = msg._replace(payload=msg.payload[:keep])
        return self._reject(msg, [problem])

    def _route(self, topic: str) -> tuple[str, Decoder] | None:
        try:
            return self._route_cache[topic]
        except KeyError:
            pass
        found = next(((name, dec) for flt, name, dec in self.routes if topic_matches_sub(flt, topic)), None)
        return _cache(self._route_cache, topic, found)

    def _validate(
        self,
        msg: Message,
        readings: Sequence[Reading],
        records: Sequence[Record] = (),
        decode_problems: Sequence[DecodeError] = (),
    ) -> Outcome:
        # The hot path of the worker: keep it to dict look-ups and integer comparisons.
        problems = list(decode_problems)
        points: dict[tuple[str, str, int], tuple[TagSet, dict[str, FieldValue]]] = {}
        received = msg.received_at
        received_ns = to_ns(received)
        gateway_id = msg.gateway_id
        resolved = self._resolved
        ns_of: dict[datetime, int] = {}
        n = 0
        last_sensor: str | None = None
        entry: tuple[SensorInfo | None, TagSet | None] = (None, None)
        for r in readings:
            try:
                if r.sensor_id is not last_sensor:  # packs and multi-value messages repeat one device
                    key = (gateway_id, r.sensor_id)
                    found = resolved.get(key)
                    entry = found if found is not None else self._resolve(key)
                    last_sensor = r.sensor_id
                info, tags = entry
                if info is None or tags is None:
                    problems.append(self._unresolved(r.sensor_id, gateway_id, info))
                    continue
                q = QUANTITIES.get(r.quantity) or QUANTITIES.get(info.fields.get(r.quantity, ""))
                if q is None:
                    problems.append(
                        DecodeError(
                            "unknown_field",
                            f"{r.quantity!r} of {info.id} is not a known quantity and the registry maps it to none",
                        )
                    )
                    continue
                raw = r.value
                tv = type(raw)
                lo, hi = q.min, q.max
                value: FieldValue | None = raw
                if (
                    (tv is float or tv is int)
                    and q.kind != "bool"
                    and lo is not None
                    and hi is not None
                    and lo <= raw <= hi
                ):  # the common case
                    if q.kind == "float":
                        value = float(raw)
                    elif isinstance(raw, float):  # a count sent as 3.0 is 3; as 3.5, _coerce below says why not
                        value = int(raw) if raw.is_integer() else None
                else:  # a bool quantity (no bounds), or out of range, or not a number: _coerce says which
                    value = None
                if value is None:
                    try:
                        value = _coerce(q, r.value)
                    except DecodeError as exc:
                        problems.append(DecodeError(exc.reason, f"{q.key} of {info.id}: {exc.detail}"))
                        continue
                t = r.time
                if t is received:
                    ns = received_ns
                else:
                    seen = ns_of.get(t)
                    if seen is None:
                        seen = ns_of[t] = to_ns(t)
                    ns = seen
                if ns - received_ns > self._max_future_ns or received_ns - ns > self._max_age_ns:
                    problems.append(self._time_problem(t, ns, msg.received_at, received_ns, q.key))
                    continue
                at = (q.category, tags.rendered, ns)  # a str key: hashed in C, once
                group = points.get(at)
                if group is None:
                    points[at] = (tags, {q.field: value})
                else:
                    group[1][q.field] = value
                n += 1
            except Exception as exc:  # a bug must cost this reading, never the message's others
                problems.append(_internal(f"{r.quantity!r} of {r.sensor_id!r}", exc))
        out: list[Point] = []
        series = self.stats.series
        for (m, _, ns), (tags, fields) in points.items():
            out.append(_new_point(Point, (m, tags, fields, ns, _OPS if m in OPS_CATEGORIES else _RAW)))
            series[tags] += len(fields)
        if records:
            self._records(msg, records, out, problems)
        if out:
            self.stats.decoded += 1
            self.stats.readings += n
        letter = self._letter(msg, problems) if problems else None
        return Outcome(out, letter, problems)

    def _records(self, msg: Message, records: Sequence[Record], out: list[Point], problems: list[DecodeError]) -> None:
        """Radio metadata, positions and operational events: resolved, time-checked, made Points."""
        received_ns = to_ns(msg.received_at)
        gateway_id = msg.gateway_id
        resolved, record_tags = self._resolved, self._record_tags
        max_future_ns, max_age_ns = self._max_future_ns, self._max_age_ns
        unknown: set[str] = {p.detail for p in problems if p.reason in ("unknown_device", "bad_identifier")}
        last_key: str | None = None
        last_time: datetime | None = None
        entry: tuple[SensorInfo | None, TagSet | None] = (None, None)
        ns = 0
        for rec in records:  # an uplink's radio records share their device and time: resolved and converted once
            try:
                if rec.store is _EXPERIMENTS:  # an experiment's metric, state change or phase: no sensor behind it
                    self._experiment_record(msg, rec, out, problems)
                    continue
                if rec.sensor_key is not last_key:
                    entry = resolved.get((gateway_id, rec.sensor_key)) or self._resolve((gateway_id, rec.sensor_key))
                    last_key = rec.sensor_key
                info, tags = entry
                if info is None or tags is None:
                    problem = self._unresolved(rec.sensor_key, gateway_id, info)
                    if problem.detail not in unknown:
                        unknown.add(problem.detail)
                        problems.append(problem)
                    continue
                if rec.time is not last_time:
                    ns = to_ns(rec.time)
                    last_time = rec.time
                if ns - received_ns > max_future_ns or received_ns - ns > max_age_ns:
                    problems.append(self._time_problem(rec.time, ns, msg.received_at, received_ns, rec.measurement))
                    continue
                if rec.store not in _RECORD_STORES:
                    known = ", ".join(_RECORD_STORES)
                    problems.append(
                        DecodeError(
                            "decoder_error", f"{rec.measurement} record names no store ({rec.store!r}; known: {known})"
                        )
                    )
                    continue
                rec_tags = rec.tags
                key: tuple | None = None
                if type(rec_tags) is TagSet:  # a decoder's tag set of many points (a radio point's): by identity
                    key = (tags, rec_tags)
                elif rec_tags:
                    key = (tags, *rec_tags.items())
                if key is not None:
                    merged = record_tags.get(key)
                    if merged is None:
                        try:
                            merged = _cache(record_tags, key, TagSet({**rec_tags, **tags}))  # the sensor's win
                        except LineProtocolError as exc:
                            problems.append(DecodeError("bad_identifier", f"{rec.measurement}: {exc}"))
                            continue
                    tags = merged
                out.append(_new_point(Point, (rec.measurement, tags, rec.fields, ns, rec.store)))
            except Exception as exc:  # a bug must cost this record, never the message's others
                problems.append(_internal(f"{rec.measurement} of {rec.sensor_key!r}", exc))

    def _experiment_record(self, msg: Message, rec: Record, out: list[Point], problems: list[DecodeError]) -> None:
        """A record of the experiments store (``ingest.decoders.experiments``): its tags are its own (experiment,
        gateway, metric ...), not a registered sensor's; time-checked like any other."""
        received_ns = to_ns(msg.received_at)
        ns = to_ns(rec.time)
        if ns - received_ns > self._max_future_ns or received_ns - ns > self._max_age_ns:
            problems.append(self._time_problem(rec.time, ns, msg.received_at, received_ns, rec.measurement))
            return
        try:
            tags = TagSet(rec.tags)
        except LineProtocolError as exc:
            problems.append(DecodeError("bad_identifier", f"{rec.measurement}: {exc}"))
            return
        out.append(_new_point(Point, (rec.measurement, tags, rec.fields, ns, _EXPERIMENTS)))

    def _time_problem(self, t: datetime, ns: int, received: datetime, received_ns: int, what: str) -> DecodeError:
        if ns > received_ns:
            return DecodeError(
                "future_timestamp",
                f"{what} at {t.isoformat()} is more than {self.max_future} after receipt ({received.isoformat()})",
            )
        return DecodeError(
            "too_old", f"{what} at {t.isoformat()} is older than the raw retention ({self.max_age}) at receipt"
        )

    def _resolve(self, key: tuple[str | None, str]) -> tuple[SensorInfo | None, TagSet | None]:
        """The sensor behind (gateway id, device key) and its tag set; (info, None) when its tags cannot be
        stored (a gateway id from the topic that line protocol cannot carry: ``_unresolved`` says why)."""
        info = self.registry.resolve(*key)
        tags = None
        if info is not None:  # one TagSet per tag set, kept across cache resets (bounded by the registry)
            try:
                tags = self._tag_set(info, key[0])
            except LineProtocolError:
                return _cache(self._resolved, key, (info, None))
            tags = self._tag_sets.setdefault(tags.rendered, tags)
        return _cache(self._resolved, key, (info, tags))

    def _unresolved(self, key: str, gateway_id: str | None, info: SensorInfo | None) -> DecodeError:
        """Why a device has no tag set: not in the registry, or tags line protocol cannot carry."""
        if info is None:
            return DecodeError("unknown_device", f"device {key!r} on gateway {gateway_id!r} is not in the registry")
        try:
            self._tag_set(info, gateway_id)
        except LineProtocolError as exc:
            return DecodeError("bad_identifier", f"{info.id} on gateway {gateway_id!r}: tags cannot be stored: {exc}")
        return DecodeError("internal_error", f"{info.id} on gateway {gateway_id!r} has no tag set")

    @staticmethod
    def _tag_set(info: SensorInfo, gateway_id: str | None) -> TagSet:
        return TagSet(
            {
                "sensor": info.id,
                "gateway": info.gateway_id or gateway_id,
                "technology": info.technology,
                "category": info.category,
                "cell": info.cell,
            }
        )

    def _reject(self, msg: Message, problems: list[DecodeError]) -> Outcome:
        return Outcome([], self._letter(msg, problems), problems)

    def _letter(self, msg: Message, problems: list[DecodeError]) -> DeadLetter:
        self.stats.dead_lettered += 1
        for p in problems:
            self.stats.reasons[p.reason] += 1
        detail = "; ".join(f"{p.reason}: {p.detail}" for p in problems[:20])
        if len(problems) > 20:
            detail += f"; ... {len(problems) - 20} more"
        return DeadLetter(msg.received_at, msg.topic, self.kept_payload(msg), problems[0].reason, detail)

    def kept_payload(self, msg: Message) -> bytes:
        """The payload a dead letter of ``msg`` keeps: the payload itself, or, for a private decoder's
        message, its scrubbed copy (never the raw identifiers, even when scrubbing fails)."""
        try:
            route = self._route(msg.topic)
            scrub = self._scrubbers.get(route[0]) if route is not None else None
            return msg.payload if scrub is None else scrub(msg)
        except Exception:
            log.exception("scrubbing failed; the dead letter keeps no payload topic=%s", msg.topic)
            return WITHHELD_PAYLOAD


def _cache(cache: dict[_K, _V], key: _K, value: _V) -> _V:
    """Remember ``value`` under ``key`` in a cache that is emptied when it reaches its bound."""
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    cache[key] = value
    return value


def _internal(what: str, exc: Exception) -> DecodeError:
    log.exception("pipeline failure on %s", what)
    return DecodeError("internal_error", f"{what}: {type(exc).__name__}: {exc}")


def _finite_fields(p: Point) -> Point | None:
    """``p`` without its NaN/infinite float fields, or None when it has none (or nothing else)."""
    fields = {k: v for k, v in p.fields.items() if not (type(v) is float and not math.isfinite(v))}
    if not fields or len(fields) == len(p.fields):
        return None
    return p._replace(fields=fields)


def _number(value: int | float) -> str:
    """A number for a detail: as it is, or, for a huge integer, how many digits it has."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    return repr(value)


def _coerce(q: Quantity, value: object) -> float | int | bool:
    """The value in the quantity's kind, or DecodeError(invalid_value | not_finite | out_of_range)."""
    if q.kind == "bool":
        if isinstance(value, bool):
            return value
        raise DecodeError("invalid_value", f"{value!r} is not true/false")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecodeError("invalid_value", f"{value!r} is not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise DecodeError("not_finite", f"{value!r}")
    if q.kind == "int":
        if isinstance(value, float):
            if not value.is_integer():
                raise DecodeError("invalid_value", f"{value!r} is not a whole count")
            value = int(value)
    elif isinstance(value, int) and value.bit_length() > 1023:  # beyond any float: float() would overflow
        raise DecodeError("out_of_range", f"{_number(value)} is outside [{q.min}, {q.max}]")
    else:
        value = float(value)
    if (q.min is not None and value < q.min) or (q.max is not None and value > q.max):
        raise DecodeError("out_of_range", f"{_number(value)} {q.unit} is outside [{q.min}, {q.max}]")
    return value
