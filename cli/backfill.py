"""A simulated past, written straight into InfluxDB through the ingest pipeline (no broker).

``smartzone simulate --backfill 1d`` and ``smartzone up --demo --backfill 1d`` use it so the charter
job has closed time bins to publish at once; the charter tests and benchmark load their day of raw
data with it. Every message takes the same path as live data (decoders, registry, checks,
pseudonymisation of identifiers), only the MQTT hop is skipped: each message is "received" at the
instant its round was simulated.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gateways.simulator import SimulatedZone
from ingest.pipeline import Pipeline
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


def simulated_past(settings: Settings, zone: SimulatedZone, span: str, step: float = 60.0) -> Backfilled:
    """``span`` (``1d``) of simulated data up to now, through the pipeline the worker runs, into InfluxDB."""
    from cli import wiring
    from ingest.worker import ensure_databases

    rounds = int(parse_duration(span) // step)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=rounds * step)
    with Influx(settings.influx) as influx:
        ensure_databases(influx, settings)
        return backfill(zone, wiring.pipeline(settings), influx, settings, start, rounds, step)
