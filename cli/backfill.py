"""A simulated past, written straight into InfluxDB through the ingest pipeline (no broker).

``smartzone simulate --backfill 1d`` and ``smartzone up --demo --backfill 1d`` use it so the charter
job has closed time bins to publish at once (``1d``: the whole previous UTC day and today so far, see
``window``); the charter tests and benchmark load their day of raw
data with it. Every message takes the same path as live data (decoders, registry, checks,
pseudonymisation of identifiers), only the MQTT hop is skipped: each message is "received" at the
instant its round was simulated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gateways.simulator import REPORT_S, SimulatedZone
from ingest.pipeline import Pipeline
from smartzone.errors import ConfigurationError
from smartzone.model import Store
from smartzone.names import parse_duration
from smartzone.settings import Settings
from storage.databases import databases
from storage.influx import Influx
from storage.lineprotocol import join


@dataclass
class Backfilled:
    messages: int = 0
    raw_lines: int = 0
    ops_lines: int = 0
    pseudo_lines: int = 0
    dead_letters: int = 0
    last: datetime | None = None  # the time of the last round written

    def add(self, other: Backfilled) -> None:
        for f in ("messages", "raw_lines", "ops_lines", "pseudo_lines", "dead_letters"):
            setattr(self, f, getattr(self, f) + getattr(other, f))


def backfill(
    zone: SimulatedZone,
    pipeline: Pipeline,
    influx: Influx,
    settings: Settings,
    start: datetime,
    rounds: int,
    step: float = 60.0,
    batch_lines: int = 20_000,
    first_round: int = 0,
) -> Backfilled:
    """Simulate ``rounds`` rounds from ``start`` and write what the pipeline makes of them; ``first_round``
    continues an earlier backfill's noise sequence."""
    out = Backfilled()
    names = databases(settings)
    buffers: dict[Store, list[str]] = {Store.RAW: [], Store.OPS: [], Store.PSEUDONYMOUS: []}
    counted = {Store.RAW: "raw_lines", Store.OPS: "ops_lines", Store.PSEUDONYMOUS: "pseudo_lines"}

    def flush(store: Store) -> None:
        if buffers[store]:
            influx.write(names[store], join(buffers[store]))
            buffers[store].clear()

    for i in range(rounds):
        t = start + timedelta(seconds=i * step)
        received = t + timedelta(milliseconds=200)
        for e in zone.messages(t, 1, step, first_round=first_round + i):
            msg = pipeline.message(e.topic, e.payload, received)
            rendered, letter = pipeline.render(msg, pipeline.process(msg))
            out.messages += 1
            out.dead_letters += letter is not None
            for store, lines in rendered.items():
                setattr(out, counted[store], getattr(out, counted[store]) + len(lines))
                buffers[store] += lines
                if len(buffers[store]) >= batch_lines:
                    flush(store)
    for store in buffers:
        flush(store)
    return out


def window(span: str, now: datetime, step: float = REPORT_S) -> tuple[datetime, int]:
    """(first round's time, number of rounds) of a backfill of ``span`` ending at ``now``.

    ``Nd`` (whole days) means the N whole UTC days before ``now``'s day and that day up to ``now``: every
    day a backfill touches is complete when it closes (the charter freezes a closed day as it is), and the
    live simulator carries on where it stops. Any other span (``2h``, ``90m``) ends at ``now``. Rounds fall
    on whole multiples of ``step`` since the epoch, as live rounds do: the last one at or before ``now``.
    """
    seconds = parse_duration(span)
    if not 0 < seconds < math.inf:
        raise ConfigurationError(f"a backfill spans a positive, finite duration (1d, 2h), not {span!r}")
    if seconds % 86_400 == 0:
        midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        start = midnight - timedelta(seconds=seconds)
    else:
        start = now - timedelta(seconds=seconds)
    first = math.ceil(start.timestamp() / step)
    last = math.floor(now.timestamp() / step)
    return datetime.fromtimestamp(first * step, UTC), last - first + 1


def simulated_past(
    settings: Settings, zone: SimulatedZone, span: str, step: float = REPORT_S, now: datetime | None = None
) -> Backfilled:
    """``span`` of simulated data up to ``now`` (default: the wall clock; see ``window``), through the
    pipeline the worker runs, into InfluxDB. A span of whole days backfills whole UTC days. Without
    ``now`` it catches up with the clock before it returns (a day takes a while), so ``Backfilled.last``
    is the minute the live simulator continues after."""
    from cli import wiring
    from ingest.worker import ensure_databases

    start, rounds = window(span, now or datetime.now(UTC), step)
    out = Backfilled()
    pipeline = wiring.pipeline(settings)
    with Influx(settings.influx) as influx:
        ensure_databases(influx, settings)
        while rounds > 0:
            first = round(start.timestamp() / step)
            done = backfill(zone, pipeline, influx, settings, start, rounds, step, first_round=first)
            out.add(done)
            out.last = start + timedelta(seconds=(rounds - 1) * step)
            if now is not None:
                break
            start = out.last + timedelta(seconds=step)
            rounds = math.floor(datetime.now(UTC).timestamp() / step) - first - rounds + 1
    return out
