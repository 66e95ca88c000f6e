"""A real influxd loaded the way production loads it, for the dashboards' query tests.

- Yesterday (UTC) of the simulated zone through the ingest pipeline (raw, ops and pseudonymous
  databases), published by the charter job, so every open dataset has a closed day;
- some 15 seconds of live traffic through a real Mosquitto and a real ingest worker, with some bad
  messages, so the ops database holds the worker's self-metrics, per-sensor counts, heartbeats, radio
  metadata and dead letters of *now*;
- a second charter run at the current time, so the job's own metrics are recent too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from cli import services
from cli.backfill import backfill
from datacharter.charter import Charter
from datacharter.job import CharterJob
from gateways.publisher import Publisher
from gateways.simulator import Emitted, SimulatedZone
from ingest.pipeline import Pipeline
from ingest.worker import Worker, ensure_databases
from smartzone.registry import Registry
from smartzone.settings import Settings
from storage.influx import Influx
from tests.conftest import REGISTRY, drop_zone_databases, wait_for, zone_settings

NOW = datetime.now(UTC)
LIVE_ROUNDS = 5
DAY = datetime(NOW.year, NOW.month, NOW.day, tzinfo=UTC) - timedelta(days=1)
BAD = [
    ("gw/gw-volkstraat/zigbee2mqtt/aq-volkstraat-1", b"{not json"),
    ("gw/gw-volkstraat/zigbee2mqtt/no-such-device", b'{"pm25": 12}'),
    ("gw/gw-egmont/json/no-such-device", b'{"temperature": 1e400}'),  # routed, but nobody's
]


EXPERIMENT_PHASES = ("fetching", "waiting", "running", "running", "finished")  # one per live round


def experiment_messages(i: int) -> list[tuple[str, bytes]]:
    """Live round ``i`` of experiment 42 on two gateways: the agents' reported phases and, when the phase changes,
    the scheduler's state change (the operations dashboard's panel and annotations read them)."""
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    phase = EXPERIMENT_PHASES[i % len(EXPERIMENT_PHASES)]
    out = [
        (
            f"gw/{gw}/experiments/reported",
            orjson.dumps(
                {
                    "version": 1,
                    "time": now,
                    "experiments": [{"id": 42, "phase": phase, "exit_code": 0 if i == 4 else None}],
                }
            ),
        )
        for gw in ("gw-volkstraat", "gw-egmont")
    ]
    states = {"fetching": "Launching", "waiting": "Launching", "running": "Running", "finished": "Terminated"}
    before = "toLaunch" if i == 0 else states[EXPERIMENT_PHASES[i - 1]]
    if states[phase] != before:
        event = {
            "experiment": 42,
            "name": "rtt probe",
            "gateways": ["gw-volkstraat", "gw-egmont"],
            "from": before,
            "to": states[phase],
            "reason": f"the agents report {phase}",
            "time": now,
        }
        out.append(("smartzone/experiments/events", orjson.dumps(event)))
    return out


@dataclass
class Loaded:
    settings: Settings
    influx: Influx
    now: datetime  # after the live traffic
    day: datetime  # the published day
    live_start: datetime  # when the live traffic began

    def database(self, datasource_uid: str) -> str:
        from dashboards.panels import EXP, OPEN, OPS

        return {
            OPEN: self.settings.charter.open_database,
            OPS: self.settings.influx.ops_database,
            EXP: self.settings.influx.experiments_database,
        }[datasource_uid]


@pytest.fixture(scope="session")
def loaded(tmp_path_factory, influxd) -> Iterator[Loaded]:
    tmp = tmp_path_factory.mktemp("dashboards")
    broker = services.mosquitto(tmp / "mosquitto").start()
    settings = zone_settings(tmp / "data", influxd.url, broker.port, name="dash")
    exp_db = f"exp_{settings.mqtt.share_group}"  # the zone's own experiments database (zone_settings names four)
    settings = settings.model_copy(
        update={"influx": settings.influx.model_copy(update={"experiments_database": exp_db})}
    )
    charter = Charter.load()
    registry = Registry.load(REGISTRY)
    influx = Influx(settings.influx)
    worker = None
    try:
        ensure_databases(influx, settings, charter)
        pipe = Pipeline.from_settings(settings, registry, charter)
        backfill(SimulatedZone(registry, 11), pipe, influx, settings, DAY, 1440)
        job = CharterJob(settings, charter, registry, influx)
        job.run_once(now=DAY + timedelta(days=1, minutes=5))

        worker = Worker(settings, registry)
        worker.start()
        assert worker.wait_connected(10)
        # live traffic over ~15 s (rounds stamped now, 3 s apart), bad messages in the middle
        live_start = datetime.now(UTC)
        zone = SimulatedZone(registry, 12)
        pub = Publisher("127.0.0.1", broker.port, client_id=f"dash-sim-{settings.mqtt.share_group}")
        sent = 0
        for i in range(LIVE_ROUNDS):
            batch = list(zone.messages(datetime.now(UTC), 1, step=3, first_round=2000 + i))
            if i == LIVE_ROUNDS // 2:
                batch += [Emitted(t, p, ()) for t, p in BAD]
            batch += [Emitted(t, p, ()) for t, p in experiment_messages(i)]
            sent += pub.publish(batch)
            time.sleep(3)
        assert pub.wait_acked(30)
        pub.close()
        assert wait_for(lambda: worker._acked >= sent, 30), "the worker did not take every message"

        def reports() -> int:
            rows = influx.rows("SELECT count(readings) FROM ingest", settings.influx.ops_database)
            return rows[0]["count"] if rows else 0

        before = reports()
        assert wait_for(lambda: reports() >= before + 3, 10), "the worker reports its metrics"
        worker.stop()
        worker = None
        job.run_once()  # the current run: charter metrics of now
        job.store.close()
        yield Loaded(settings, influx, datetime.now(UTC), DAY, live_start)
    finally:
        if worker is not None:
            worker.stop()
        drop_zone_databases(influx, settings)
        influx.drop_database(exp_db)
        influx.close()
        broker.stop()
