"""Real services for the tests: Debian's mosquitto and influxd on free loopback ports in temp folders.

- ``influxd``: one server for the session; each test gets its own databases (``settings``).
- ``mosquitto``: a fresh broker per test, running the configuration we ship (started in ~0.03 s),
  so persistent sessions and queues of one test never reach another.
- ``settings``: Settings pointing at both, a fresh data folder and unique database names.
- ``run_worker``: an in-process worker; ``worker_process``: one in a subprocess (to SIGKILL it).
- ``postgres``: one PostgreSQL server (Debian's ``postgresql`` package) for the session, on a free port.
- ``dynsec_broker``: the central broker exactly as docker-compose configures it (the shipped mosquitto.conf,
  password file, ACL and the dynamic-security plugin's file written by ``smartzone broker users``, TLS), with
  ``.client(user)`` making logged-in MQTT v5 test clients; one per test module (``dynsec_broker_per_test``: one
  per test).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cli import services
from ingest.worker import Worker
from smartzone.quantities import CATEGORIES
from smartzone.registry import Registry
from smartzone.settings import Settings
from storage.influx import Influx

REPO = Path(__file__).resolve().parent.parent
REGISTRY = REPO / "gateways" / "registry" / "antwerp.yaml"


@pytest.fixture(autouse=True)
def _no_smartzone_environment(monkeypatch):
    """Tests build their settings themselves: variables of the developer's shell must not leak in."""
    for key in list(os.environ):
        if key.startswith("SMARTZONE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("SMARTZONE_CONFIG", "/nonexistent.toml")


@pytest.fixture(scope="session")
def influxd(tmp_path_factory) -> Iterator[services.InfluxService]:
    svc = services.influxd(tmp_path_factory.mktemp("influxd")).start()
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def mosquitto(tmp_path) -> Iterator[services.Service]:
    svc = services.mosquitto(tmp_path / "mosquitto", extra_conf=os.environ.get("SZ_TEST_MOSQUITTO_EXTRA", "")).start()
    try:
        yield svc
    finally:
        svc.stop()


def zone_settings(
    data_dir: Path,
    influx_url: str,
    mqtt_port: int | None = None,
    *,
    name: str = "test",
    charter: dict | None = None,
    **sections: dict,
) -> Settings:
    """Settings of one test's own zone: its own databases (raw, ops, pseudonymous, experiments, open) on the
    shared influxd, its own MQTT client id, share group and quick flushes when it has a broker; ``sections`` add
    or replace whole sections."""
    tag = uuid.uuid4().hex[:8]
    extra: dict = {}
    if mqtt_port is not None:  # a worker will run: quick flushes and self-metrics
        extra["ingest"] = {"flush_interval": 0.05, "metrics_interval": 0.5}
        extra["mqtt"] = {
            "host": "127.0.0.1",
            "port": mqtt_port,
            "client_id": f"{name}-ingest-{tag}",
            "share_group": f"g{tag}",
        }
    return Settings(
        data_dir=data_dir,
        registry=REGISTRY,
        influx={
            "url": influx_url,
            "raw_database": f"raw_{tag}",
            "ops_database": f"ops_{tag}",
            "pseudonymous_database": f"pseudo_{tag}",
            "experiments_database": f"exp_{tag}",
        },
        charter={"open_database": f"open_{tag}", **(charter or {})},
        **{**extra, **sections},
    )


@pytest.fixture
def settings(tmp_path, mosquitto, influxd) -> Settings:
    return zone_settings(tmp_path / "data", influxd.url, mosquitto.port)


def drop_zone_databases(client: Influx, s: Settings) -> None:
    """Drop a test zone's five databases (raw, ops, pseudonymous, experiments, open); one a test made
    unreachable is skipped."""
    for db in (
        s.influx.raw_database,
        s.influx.ops_database,
        s.influx.pseudonymous_database,
        s.influx.experiments_database,
        s.charter.open_database,
    ):
        with contextlib.suppress(Exception):
            client.drop_database(db)


@pytest.fixture
def influx(settings) -> Iterator[Influx]:
    client = Influx(settings.influx)
    try:
        yield client
    finally:
        drop_zone_databases(client, settings)
        client.close()


@pytest.fixture
def registry() -> Registry:
    return Registry.load(REGISTRY)


@pytest.fixture
def run_worker(settings) -> Iterator[Callable[..., Worker]]:
    workers: list[Worker] = []

    def start(s: Settings | None = None, registry: Registry | None = None) -> Worker:
        w = Worker(s or settings, registry)
        w.start()
        assert w.wait_connected(10), "worker did not connect and subscribe"
        workers.append(w)
        return w

    yield start
    for w in workers:
        if not w.stopping.is_set():
            w.stop()


def settings_env(s: Settings) -> dict[str, str]:
    """The environment that makes a subprocess ``smartzone`` use these settings."""
    return {
        **os.environ,
        "SMARTZONE_CONFIG": "/nonexistent.toml",
        "SMARTZONE_DATA_DIR": str(s.data_dir),
        "SMARTZONE_REGISTRY": str(s.registry),
        "SMARTZONE_MQTT__PORT": str(s.mqtt.port),
        "SMARTZONE_MQTT__CLIENT_ID": s.mqtt.client_id,
        "SMARTZONE_MQTT__SHARE_GROUP": s.mqtt.share_group,
        "SMARTZONE_INFLUX__URL": s.influx.url,
        "SMARTZONE_INFLUX__RAW_DATABASE": s.influx.raw_database,
        "SMARTZONE_INFLUX__OPS_DATABASE": s.influx.ops_database,
        "SMARTZONE_INFLUX__PSEUDONYMOUS_DATABASE": s.influx.pseudonymous_database,
        "SMARTZONE_INFLUX__EXPERIMENTS_DATABASE": s.influx.experiments_database,
        "SMARTZONE_INGEST__FLUSH_INTERVAL": str(s.ingest.flush_interval),
        "SMARTZONE_INGEST__SPOOL_AFTER": str(s.ingest.spool_after),
        "SMARTZONE_LOG_LEVEL": "INFO",
        "SMARTZONE_MQTT__FAILOVER_AFTER": str(s.mqtt.failover_after),
        # the test brokers are anonymous: the peers' client ids are enough
        "SMARTZONE_MQTT__PEERS": json.dumps([{"client_id": p.client_id} for p in s.mqtt.peers]),
    }


class WorkerProcess:
    def __init__(self, s: Settings, log_path: Path) -> None:
        self.settings = s
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self._subscribed_before = 0

    def start(self) -> WorkerProcess:
        self._subscribed_before = self._subscribed_count() if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "ingest"],
            env=settings_env(self.settings),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        return self

    def wait_subscribed(self, timeout: float = 20.0) -> None:
        """Until the worker's log says the broker acknowledged its subscriptions: publishing earlier
        would be acknowledged to the publisher and dropped (no matching subscriber)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log_path.exists() and self._subscribed_count() > self._subscribed_before:
                return
            assert self.proc is not None and self.proc.poll() is None, self.log_path.read_text()[-3000:]
            time.sleep(0.05)
        raise AssertionError(f"worker did not subscribe: {self.log_path.read_text()[-3000:]}")

    def _subscribed_count(self) -> int:
        return self.log_path.read_text(errors="replace").count("MQTT subscribed")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


@pytest.fixture
def worker_process(tmp_path) -> Iterator[Callable[[Settings], WorkerProcess]]:
    procs: list[WorkerProcess] = []

    def make(s: Settings) -> WorkerProcess:
        p = WorkerProcess(s, tmp_path / f"worker-{len(procs)}.log").start()
        procs.append(p)
        p.wait_subscribed()
        return p

    yield make
    for p in procs:
        if p.proc and p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait(10)


TAGS = ("sensor", "gateway", "technology", "category", "cell")
# Readings live in one measurement per category; radio metadata and positions have their own.
READINGS = "/^(" + "|".join(CATEGORIES) + ")$/"


def readings_dbs(s: Settings) -> tuple[str, str]:
    """Where readings go: the raw database, and ops for the network's own (``gateway_health``)."""
    return s.influx.raw_database, s.influx.ops_database


def stored_readings(influx: Influx, database: str | tuple[str, ...]) -> list[tuple[str, str, object, int]]:
    """Every field value in the database(s) as ``(sensor, quantity, value, time_ns)``."""
    out = []
    databases = (database,) if isinstance(database, str) else database
    rows = [r for db in databases for r in influx.rows(f"SELECT * FROM {READINGS} GROUP BY *", db)]  # noqa: S608
    for row in rows:
        measurement = row["_measurement"]
        for key, value in row.items():
            if key in TAGS or key in ("time", "_measurement") or value is None:
                continue
            out.append((row["sensor"], f"{measurement}.{key}", value, row["time"]))
    return out


def count_points(influx: Influx, database: str | tuple[str, ...]) -> int:
    """How many reading values the database(s) hold (fast: COUNT per measurement)."""
    total = 0
    databases = (database,) if isinstance(database, str) else database
    results = [r for db in databases for r in influx.query(f"SELECT COUNT(*) FROM {READINGS}", db)]  # noqa: S608
    for res in results:
        for series in res.get("series", []):
            total += sum(v for v in series["values"][0][1:] if v)
    return total


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def assert_exactly_once(influx: Influx, database: str | tuple[str, ...], emitted) -> int:
    """Every reading the simulator sent is stored exactly once, and nothing else is. Returns the count.

    Readings with device time are matched on (sensor, quantity, time); readings stamped with the
    receipt time are matched as a multiset of (sensor, quantity, value).
    """
    from collections import Counter

    timed, untimed = {}, Counter()
    for e in emitted:
        for t in e.truth:
            if t.time_ns is None:
                untimed[(t.sensor_id, t.quantity, t.value)] += 1
            else:
                timed[(t.sensor_id, t.quantity, t.time_ns)] = t.value
    stored = stored_readings(influx, database)
    got_timed = {(s, q, t): v for s, q, v, t in stored if (s, q, t) in timed}
    got_untimed = Counter((s, q, v) for s, q, v, t in stored if (s, q, t) not in timed)
    missing = {k: v for k, v in timed.items() if k not in got_timed}
    extra = got_untimed - untimed
    assert not missing, (
        f"{len(missing)} timed readings missing: "
        f"{sorted({(k[0], k[2]) for k in missing})[:10]}; extra: {list(extra.items())[:10]}"
    )
    assert got_timed == timed, "timed readings with wrong values"
    extra = got_untimed - untimed
    lost = untimed - got_untimed
    assert not extra and not lost, (
        f"receipt-time readings: {sum(extra.values())} duplicated/extra, {sum(lost.values())} lost"
    )
    assert len(stored) == len(timed) + sum(untimed.values())
    return len(stored)


def expected_count(emitted) -> int:
    """Distinct readings: a duplicated LoRaWAN uplink carries the same timed readings twice."""
    timed = {(t.sensor_id, t.quantity, t.time_ns) for e in emitted for t in e.truth if t.time_ns is not None}
    return len(timed) + sum(1 for e in emitted for t in e.truth if t.time_ns is None)


# -- PostgreSQL ---------------------------------------------------------------------------------------
@dataclass
class Postgres:
    """A running PostgreSQL server: superuser ``postgres`` over the Unix socket in ``socket_dir`` (trust),
    passwords (scram-sha-256) over TCP on ``127.0.0.1:port``."""

    bin: Path
    data: Path
    socket_dir: Path
    port: int
    as_user: list[str]  # the prefix that runs a command as the server's (non-root) user

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "PGHOST": str(self.socket_dir), "PGPORT": str(self.port), **extra}

    def psql(self, sql: str, user: str = "postgres", db: str = "postgres") -> str:
        out = subprocess.run(
            [*self.as_user, str(self.bin / "psql"), "-v", "ON_ERROR_STOP=1", "-qAt", "-U", user, "-d", db, "-c", sql],
            env=self.env(),
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout

    def url(self, user: str, password: str, db: str) -> str:
        return f"postgresql+psycopg://{user}:{password}@127.0.0.1:{self.port}/{db}"


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """PostgreSQL from Debian's ``postgresql`` package (``./dev`` installs it), in a temp folder on a free
    port. As root, the server runs as the ``postgres`` user (it refuses to run as root)."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin): apt-get install postgresql")
    as_user: list[str] = []
    root = tempfile.mkdtemp(prefix="smartzone-pg-")  # not under pytest's 0700 tmp: the server's user reads it
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    data, sockets = Path(root) / "data", Path(root)
    port = services.free_port()
    subprocess.run(
        [
            *as_user,
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
    )
    log = Path(root) / "postgres.log"
    subprocess.run(
        [
            *as_user,
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(log),
            "-w",
            "-t",
            "30",
            "-o",
            f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield Postgres(bin_dir, data, sockets, port, as_user)
    finally:
        subprocess.run(
            [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


# -- the central broker as compose configures it ------------------------------------------------------
@dataclass
class ComposeBroker:
    """A running ``tests.deploy.stack.Broker`` (password file, ACL, dynamic security) and its test clients."""

    broker: Any  # tests.deploy.stack.Broker
    clients: list = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.broker.plain_port

    @property
    def passwords(self) -> dict[str, str]:
        return self.broker.passwords

    @property
    def folder(self) -> Path:
        return self.broker.folder

    def client(self, user: str, password: str | None = None, **kw: Any) -> Any:
        """A paho MQTT v5 client (tests.deploy.stack.Client), not yet connected, closed at teardown."""
        from tests.deploy.stack import Client

        c = Client(user, self.passwords[user] if password is None else password, self.port, **kw)
        self.clients.append(c)
        return c

    def close(self) -> None:
        for c in self.clients:
            with contextlib.suppress(Exception):
                c.close()
        self.broker.stop()


def _compose_broker(tmp: Path) -> ComposeBroker:
    from tests.deploy.stack import production_broker

    return ComposeBroker(production_broker(tmp, Registry.load(REGISTRY), tmp / ".env"))


@pytest.fixture(scope="module")
def dynsec_broker(tmp_path_factory) -> Iterator[ComposeBroker]:
    b = _compose_broker(tmp_path_factory.mktemp("dynsec-broker"))
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def dynsec_broker_per_test(tmp_path) -> Iterator[ComposeBroker]:
    b = _compose_broker(tmp_path / "dynsec-broker")
    try:
        yield b
    finally:
        b.close()
