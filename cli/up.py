"""``smartzone up``: everything needed locally, in one process tree, stopped cleanly by Ctrl-C.

1. Mosquitto and influxd are started from PATH when nothing answers on the configured loopback
   ports, with their data under ``<data_dir>/`` (a remote host is never started, only used).
2. The ingest worker starts, the charter job (every ``charter.every``: raw -> open database) and the
   open-data API (``api.host``:``api.port``, a uvicorn server in a thread).
3. With ``--demo``, the simulated smart zone publishes too; ``--backfill 1d`` first writes a simulated
   past through the ingest pipeline (the whole previous UTC day and today so far), so the charter job has
   a complete closed day to publish at once; the live simulator carries on from its last minute.
4. Every few seconds a line says what flows; ``smartzone status`` and ``smartzone charter audit`` tell more.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from datetime import datetime
from urllib.parse import urlparse

from cli import services
from smartzone.errors import ConfigurationError
from smartzone.names import parse_duration
from smartzone.settings import Settings

log = logging.getLogger(__name__)
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _start_missing(settings: Settings) -> list[services.Service]:
    started: list[services.Service] = []
    m = settings.mqtt
    if not services.port_open(m.host, m.port):
        if m.host not in _LOOPBACK:
            raise ConfigurationError(f"MQTT broker {m.host}:{m.port} is not reachable")
        svc = services.mosquitto(settings.data_dir / "mosquitto", m.port).start()
        started.append(svc)
        print(f"started mosquitto on 127.0.0.1:{m.port} (data and log in {svc.data_dir})")
    url = urlparse(settings.influx.url)
    port = url.port or 8086
    if not services.InfluxService("influxd", url.hostname or "", port, settings.data_dir, []).ready():
        if url.hostname not in _LOOPBACK:
            raise ConfigurationError(f"InfluxDB {settings.influx.url} is not reachable")
        svc = services.influxd(settings.data_dir / "influxdb", port).start()
        started.append(svc)
        print(f"started influxd on 127.0.0.1:{port} (data and log in {svc.data_dir})")
    return started


def up(settings: Settings, *, demo: bool, rate: float | None = None, backfill: str | None = None) -> int:
    from datacharter.job import CharterJob
    from ingest.worker import Worker

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    started = _start_missing(settings)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    worker = Worker(settings)
    sim_thread = charter_thread = api_thread = None
    job = api_server = None
    try:
        backfilled = _backfill_once(settings, worker.registry, backfill) if demo and backfill else None
        job = CharterJob(settings, registry=worker.registry)
        api_server = _api_server(settings, worker.registry)
        charter_thread = threading.Thread(
            target=job.run_forever, args=(parse_duration(settings.charter.every), stop), name="charter", daemon=True
        )
        worker.start()
        if not worker.wait_connected(15):
            raise ConfigurationError(f"ingest worker could not connect to {settings.mqtt.host}:{settings.mqtt.port}")
        if demo:
            sim_args = (settings, worker.registry, rate, stop, backfilled)
            sim_thread = threading.Thread(target=_simulate, args=sim_args, name="simulator", daemon=True)
            sim_thread.start()
        charter_thread.start()
        api_thread = threading.Thread(target=api_server.run, name="api", daemon=True)
        api_thread.start()
        print(
            f"smart zone up: worker {settings.mqtt.client_id}, broker {settings.mqtt.host}:{settings.mqtt.port}, "
            f"InfluxDB {settings.influx.url} database {settings.influx.raw_database}"
            + (", simulator running" if demo else "")
            + f", charter job every {settings.charter.every} -> {settings.charter.open_database}"
            + f", open-data API http://{settings.api.host}:{settings.api.port}/docs"
        )
        print(
            "look, from another terminal: `smartzone status` (self-metrics), `smartzone deadletters list`, "
            "`smartzone charter audit` "
            "(from a checkout: ./dev smartzone status); "
            f"InfluxQL: SHOW MEASUREMENTS ON {settings.influx.raw_database}. Ctrl-C stops everything."
        )
        while not stop.wait(5.0) and worker.fatal is None:
            p, w = worker.pipeline.stats, worker.writer.stats
            print(
                f"received={p.received} readings={p.readings} written_lines={w.lines_written} "
                f"dead_letters={p.dead_lettered} spooled_batches={worker.writer.spooled_batches}",
                flush=True,
            )
    finally:
        stop.set()
        if sim_thread is not None:
            sim_thread.join(10)
        if api_server is not None:
            api_server.should_exit = True
            if api_thread is not None:
                api_thread.join(10)
        if charter_thread is not None and charter_thread.is_alive():
            charter_thread.join(30)
        if job is not None:
            job.close()
        worker.stop()
        for svc in reversed(started):
            svc.stop()
        print("smart zone stopped")
    if worker.fatal is not None:
        raise worker.fatal
    return 0


def _api_server(settings: Settings, registry):
    """A uvicorn server for the open-data API, run in a thread (it installs no signal handlers there)."""
    import uvicorn

    from api.app import create_app, server_options

    config = uvicorn.Config(
        create_app(settings, registry=registry),
        host=settings.api.host,
        port=settings.api.port,
        log_level="warning",
        access_log=False,
        **server_options(settings.api),
    )
    return uvicorn.Server(config)


def _backfill_once(settings: Settings, registry, span: str) -> datetime | None:
    """A simulated past for the demo, only into an empty raw database (a second run must not double it);
    the time of its last round, where the live simulator carries on."""
    from cli.backfill import simulated_past
    from gateways.simulator import SimulatedZone
    from smartzone.errors import DatabaseNotFound
    from storage.influx import Influx

    with Influx(settings.influx) as influx:
        try:
            held = influx.query("SHOW MEASUREMENTS LIMIT 1", settings.influx.raw_database)[0].get("series")
        except DatabaseNotFound:  # no raw database yet
            held = None
        if held:
            print(f"{settings.influx.raw_database} already holds data: no backfill", flush=True)
            return None
    whole_days = parse_duration(span) % 86_400 == 0
    print(
        f"backfilling {span} of simulated data through the ingest pipeline"
        + (" (whole UTC days, and today so far)" if whole_days else "")
        + " ...",
        flush=True,
    )
    done = simulated_past(settings, SimulatedZone(registry, settings.simulator.seed), span)
    print(
        f"backfilled: {done.messages} messages, {done.raw_lines} raw lines, "
        f"{done.pseudo_lines} pseudonymised sightings, up to {done.last:%Y-%m-%d %H:%M} UTC",
        flush=True,
    )
    return done.last


def _simulate(
    settings: Settings, registry, rate: float | None, stop: threading.Event, after: datetime | None = None
) -> None:
    from gateways.publisher import Publisher, live
    from gateways.simulator import SimulatedZone

    rate = rate if rate is not None else settings.simulator.rate
    pub = Publisher(
        settings.mqtt.host,
        settings.mqtt.port,
        client_id="smartzone-demo-simulator",
        username=settings.mqtt.username,
        password=settings.mqtt.password.get_secret_value() if settings.mqtt.password else None,
    )
    try:
        pub.publish(
            live(SimulatedZone(registry, settings.simulator.seed), stop, settings.simulator.duration, after=after),
            rate=rate,
            stop=stop,
        )
    finally:
        pub.close()
        time.sleep(0.1)
