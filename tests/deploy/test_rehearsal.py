"""The production rehearsal: docker-compose.yml, run without Docker (issue 14, section 1).

It reads ``docker-compose.yml`` and runs every service that can run here with the local binaries, as compose
configures it: its environment (``${VAR}`` filled from a generated ``.env``, as an operator's), its command,
its mounted files and its healthchecks. Only what cannot be the same outside Docker changes: the services'
host names become 127.0.0.1, their ports free loopback ports, mounted paths the repository's files or a temp
folder (a named volume), and the API listens on 127.0.0.1 rather than 0.0.0.0.

- ``influxdb``: influxd with authentication (a config file with ``auth-enabled = true``, compose's
  ``INFLUXDB_*`` environment); its admin made as the image's first start makes it (``influx ... -execute
  "CREATE USER ... WITH ALL PRIVILEGES"``), then any ``/docker-entrypoint-initdb.d`` script, sourced with
  ``$INFLUX_CMD`` as the image does;
- ``mosquitto``: the shipped ``mosquitto.conf`` with the password file and ACL that ``smartzone broker users``
  writes, and the TLS listener with a throwaway CA and certificate made by the deploy docs' openssl commands;
- ``postgres``: Debian's PostgreSQL 15 (compose runs postgres:15) with compose's role and database, and the
  init scripts compose mounts;
- ``init``, ``ingest-1``, ``ingest-2``, ``charter`` (``charter run``: compose's loop, whose first pass runs at
  start), ``api``, ``experiments`` (the scheduler): ``python -m cli <compose's command>`` with compose's
  environment. The broker loads the dynamic-security plugin as compose configures it (its file written by
  ``smartzone broker users``, its folder writable): the scheduler makes an experiment's broker user there.

A publisher logs in as a gateway over TLS and publishes a simulated hour of yesterday; the readings come out
of the API's ``/v1`` observations. Each InfluxDB user's grants are proven both ways.

ChirpStack, Redis and Grafana cannot run here (no binaries): ``NOT_HERE`` names them. Their broker users are
tested in ``test_broker_users.py``, their configuration by parsing (``tests/core/test_compose.py``).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from cli import services
from gateways.simulator import SimulatedZone
from smartzone.registry import Registry
from tests.conftest import REGISTRY, Postgres, wait_for
from tests.deploy import stack
from tests.deploy.stack import REPO, SERVICES, Client, environment, interpolate, mounts

NOT_HERE = {
    "chirpstack": "ChirpStack v4: no binary here (its broker users: test_broker_users.py)",
    "redis": "ChirpStack's Redis: only ChirpStack uses it",
    "grafana": "Grafana: no binary here (its InfluxDB user's grants are proven below)",
}
RUN_HERE = ("mosquitto", "influxdb", "postgres", "init", "ingest-1", "ingest-2", "charter", "api", "experiments")
GATEWAY = "gw-kloosterstraat"  # the publisher logs in as this gateway
DAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
START = DAY + timedelta(hours=10)  # a simulated hour of yesterday: closed windows, the charter publishes them


def test_every_compose_service_is_rehearsed_or_named():
    assert set(SERVICES) == set(RUN_HERE) | set(NOT_HERE)
    assert all("profiles" in SERVICES[name] for name in NOT_HERE)  # none of them is in the default stack


@dataclass
class Stack:
    tmp: Path
    dotenv: dict[str, str]
    influx_url: str
    broker: stack.Broker
    api_url: str
    postgres: Postgres
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    published: list = field(default_factory=list)  # the simulator's Emitted messages the gateway sent

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")


def _dotenv(tmp: Path) -> dict[str, str]:
    """An operator's .env: every variable compose requires, set to a fresh secret (the ``*_BIND`` and other
    defaulted ones left to compose's defaults); the broker passwords are added by ``smartzone broker users``."""
    env = {}
    for name in sorted(stack.variables()):
        if name.startswith("MQTT_PASSWORD_") or name.endswith("_BIND") or name == "SMARTZONE_API_BASE_URL":
            continue
        env[name] = secrets.token_urlsafe(12) + "'\\"  # a quote and a backslash: quoting must hold
    env["POSTGRES_PASSWORD"] = secrets.token_urlsafe(12)  # it goes into a URL unescaped, as in compose
    path = tmp / ".env"
    path.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    return env


def _volume_paths(service: str, tmp: Path) -> dict[str, Path]:
    """Container path -> where it is here: the repository's file, or a folder for a named volume. A volume
    mounted inside another (the workers' shared ``peppers``) becomes a link, so it is shared as in compose."""
    out: dict[str, Path] = {}
    for target, source in sorted(mounts(service).items(), key=lambda kv: len(kv[0])):
        if source.startswith("./"):
            out[target] = REPO / source[2:]
            continue
        here = tmp / "volumes" / source
        here.mkdir(parents=True, exist_ok=True)
        parent = next((t for t in sorted(out, key=len, reverse=True) if target.startswith(t + "/")), None)
        if parent is not None:
            link = out[parent] / target[len(parent) + 1 :]
            if not link.is_symlink():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(here)
        out[target] = here
    return out


def service_env(s: Stack, name: str) -> dict[str, str]:
    """The environment compose gives the service, with host names, ports and mounted paths made local."""
    env = environment(name, s.dotenv)
    assert env["SMARTZONE_MQTT__HOST"] == "mosquitto" and env["SMARTZONE_MQTT__PORT"] == "1883"
    env["SMARTZONE_MQTT__HOST"], env["SMARTZONE_MQTT__PORT"] = "127.0.0.1", str(s.broker.plain_port)
    assert env["SMARTZONE_INFLUX__URL"] == "http://influxdb:8086"
    env["SMARTZONE_INFLUX__URL"] = s.influx_url
    assert "@postgres/" in env["SMARTZONE_STORAGE__SQL_URL"]
    env["SMARTZONE_STORAGE__SQL_URL"] = env["SMARTZONE_STORAGE__SQL_URL"].replace(
        "@postgres/", f"@127.0.0.1:{s.postgres.port}/"
    )
    if name == "api":
        assert env["SMARTZONE_API__HOST"] == "0.0.0.0"
        env["SMARTZONE_API__HOST"] = "127.0.0.1"
        env["SMARTZONE_API__PORT"] = s.api_url.rsplit(":", 1)[1]
    paths = _volume_paths(name, s.tmp)
    for k, v in env.items():
        for target in sorted(paths, key=len, reverse=True):
            if v == target or v.startswith(target + "/"):
                env[k] = str(paths[target]) + v[len(target) :]
                break
    base = {k: v for k, v in os.environ.items() if not k.startswith("SMARTZONE_")}
    return {**base, **env, "SMARTZONE_CONFIG": "/nonexistent.toml", "PYTHONPATH": str(REPO)}


def _command(name: str) -> list[str]:
    return [sys.executable, "-m", "cli", *SERVICES[name]["command"]]  # the image's ENTRYPOINT is `smartzone`


def _start(s: Stack, name: str) -> subprocess.Popen:
    log = open(s.tmp / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(
        _command(name),
        env=service_env(s, name),
        cwd=s.tmp,  # not the repository: every path must come from compose's environment
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    s.procs[name] = proc
    return proc


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.HTTPError:
        return None


def _healthcheck(name: str, env: dict[str, str], replace: dict[str, str]) -> subprocess.CompletedProcess:
    """Run the service's compose healthcheck (CMD-SHELL) here, with its port made local."""
    test = SERVICES[name]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    cmd = interpolate(test[1], {})
    for old, new in replace.items():
        assert old in cmd, (old, cmd)
        cmd = cmd.replace(old, new)
    return subprocess.run(["sh", "-c", cmd], env={**os.environ, **env}, capture_output=True, text=True, timeout=30)


def _influxd(tmp: Path, dotenv: dict[str, str]) -> tuple[services.InfluxService, str]:
    env = environment("influxdb", dotenv)
    folder = tmp / "volumes" / "influxdb-data"
    port, rpc = services.free_port(), services.free_port()
    conf = tmp / "influxdb.conf"
    conf.write_text(
        f'reporting-disabled = true\nbind-address = "127.0.0.1:{rpc}"\n'
        f'[meta]\n  dir = "{folder}/meta"\n'
        f'[data]\n  dir = "{folder}/data"\n  wal-dir = "{folder}/wal"\n  query-log-enabled = false\n'
        f'[http]\n  bind-address = "127.0.0.1:{port}"\n  auth-enabled = true\n  log-enabled = false\n'
        "[monitor]\n  store-enabled = false\n"
    )
    influxd_env = {k: v for k, v in env.items() if k.startswith("INFLUXDB_") and "ADMIN" not in k}
    svc = services.InfluxService(
        "influxd", "127.0.0.1", port, tmp, [services.which("influxd"), "run", "-config", str(conf)], influxd_env
    ).start()
    # the image's first start: the admin user, then the init scripts, with its $INFLUX_CMD
    user, pw = env["INFLUXDB_ADMIN_USER"], env["INFLUXDB_ADMIN_PASSWORD"]
    base = f"influx -host 127.0.0.1 -port {port}"
    make_admin = f'{base} -execute "CREATE USER \\"$U\\" WITH PASSWORD \'$P\' WITH ALL PRIVILEGES"'
    pw_escaped = pw.replace("\\", "\\\\").replace("'", "\\'")  # the image leaves quoting to the operator
    subprocess.run(["sh", "-c", make_admin], env={**os.environ, "U": user, "P": pw_escaped}, check=True)
    init = mounts("influxdb").get("/docker-entrypoint-initdb.d")
    if init:
        cmd = f'{base} -username "$U" -password "$P" -execute '
        for script in sorted((REPO / init[2:]).glob("*.sh")):
            subprocess.run(["sh", "-c", f'. "{script}"'], env={**os.environ, **env, "INFLUX_CMD": cmd}, check=True)
    return svc, svc.url


def _postgres(pg: Postgres, dotenv: dict[str, str]) -> None:
    """What the postgres image's first start does with compose's POSTGRES_* environment, then its init scripts."""
    env = environment("postgres", dotenv)
    user, db, pw = env["POSTGRES_USER"], env["POSTGRES_DB"], env["POSTGRES_PASSWORD"]
    pg.psql(f"CREATE ROLE \"{user}\" SUPERUSER LOGIN PASSWORD '{pw}'")  # POSTGRES_USER is the image's superuser
    pg.psql(f'CREATE DATABASE "{db}" OWNER "{user}"')
    init = mounts("postgres")["/docker-entrypoint-initdb.d"]
    for script in sorted((REPO / init[2:]).glob("*.sh")):
        subprocess.run(["sh", str(script)], env=pg.env(**env), check=True, capture_output=True)
    ready = subprocess.run(
        ["sh", "-c", SERVICES["postgres"]["healthcheck"]["test"][1] + f" -h 127.0.0.1 -p {pg.port}"],
        capture_output=True,
    )
    assert ready.returncode == 0, ready


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory, postgres) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("rehearsal")
    dotenv = _dotenv(tmp)
    registry = Registry.load(REGISTRY)
    influxd, influx_url = _influxd(tmp, dotenv)
    # `smartzone broker users` (as the operator runs it before `docker compose up`): passwords into .env
    broker = stack.production_broker(tmp, registry, tmp / ".env")
    dotenv.update(stack.broker.read_secrets(tmp / ".env"))
    _postgres(postgres, dotenv)
    s = Stack(tmp, dotenv, influx_url, broker, f"http://127.0.0.1:{services.free_port()}", postgres)
    try:
        yield s
    finally:
        for proc in s.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)  # the group we started (uvicorn's workers too)
        for proc in s.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        broker.stop()
        influxd.stop()
        pg_env = environment("postgres", dotenv)  # leave the session's PostgreSQL as we found it
        for sql in (
            'DROP DATABASE IF EXISTS "chirpstack" WITH (FORCE)',
            f'DROP DATABASE IF EXISTS "{pg_env["POSTGRES_DB"]}" WITH (FORCE)',
            'DROP ROLE IF EXISTS "chirpstack"',
            f'DROP ROLE IF EXISTS "{pg_env["POSTGRES_USER"]}"',
        ):
            postgres.psql(sql)


def test_healthchecks_pass_as_compose_runs_them(rehearsal):
    s = rehearsal
    env = environment("influxdb", s.dotenv)
    port = s.influx_url.rsplit(":", 1)[1]
    ok = _healthcheck("influxdb", env, {"-port 8086": f"-port {port}"})
    assert ok.returncode == 0, ok
    wrong = _healthcheck("influxdb", {**env, "INFLUXDB_ADMIN_PASSWORD": "wrong"}, {"-port 8086": f"-port {port}"})
    assert wrong.returncode != 0  # the check logs in: a broken auth set-up is unhealthy
    env = environment("mosquitto", s.dotenv)
    ok = _healthcheck("mosquitto", env, {"-p 1883": f"-p {s.broker.plain_port}"})
    assert ok.returncode == 0, ok
    wrong = _healthcheck(
        "mosquitto", {**env, "MQTT_PASSWORD_HEALTHCHECK": "wrong"}, {"-p 1883": f"-p {s.broker.plain_port}"}
    )
    assert wrong.returncode != 0


def test_readings_from_a_gateway_over_tls_come_out_of_the_api(rehearsal):
    s = rehearsal
    started = time.monotonic()
    init = subprocess.run(_command("init"), env=service_env(s, "init"), cwd=s.tmp, capture_output=True, text=True)
    assert init.returncode == 0, init.stderr
    assert "user smartzone-ingest: WRITE smartzone_raw" in init.stdout
    for name in ("ingest-1", "ingest-2", "api"):
        _start(s, name)
    for name in ("ingest-1", "ingest-2"):
        assert wait_for(lambda n=name: "MQTT subscribed" in s.log(n) or s.procs[n].poll() is not None, 30), name
        assert s.procs[name].poll() is None, s.log(name)[-3000:]

    # the gateway logs in over TLS (the CA from the deploy docs' openssl commands) and publishes an hour
    zone = SimulatedZone(Registry.load(REGISTRY), seed=14)
    messages = [m for m in zone.messages(START, rounds=12, step=300) if m.topic.startswith(f"gw/{GATEWAY}/")]
    gw = Client(GATEWAY, s.broker.passwords[GATEWAY], s.broker.tls_port, ca=s.broker.ca).connect()
    try:
        codes = [gw.publish(m.topic, m.payload) for m in messages]
    finally:
        gw.close()
    assert codes and set(codes) == {0}
    s.published = messages
    air = {t for m in messages for t in m.truth if t.quantity.startswith("air_quality.")}
    assert {t.sensor_id for t in air} == {"aq-kloosterstraat-1", "aq-kloosterstraat-2"}

    admin = httpx.Client(base_url=s.influx_url, auth=("admin", s.dotenv["INFLUXDB_ADMIN_PASSWORD"]))

    def stored() -> int:
        r = admin.get("/query", params={"db": "smartzone_raw", "q": "SELECT count(pm10) FROM air_quality"})
        series = r.json()["results"][0].get("series", [])
        return series[0]["values"][0][1] if series else 0

    expected = sum(1 for t in air if t.quantity == "air_quality.pm10")
    assert wait_for(lambda: stored() == expected, 30), (stored(), expected, s.log("ingest-1")[-2000:])

    _start(s, "charter")  # compose's `charter run`: its loop's first pass publishes yesterday's closed windows
    assert wait_for(lambda: _status(f"{s.api_url}/readyz") == 200, 30), s.log("api")[-3000:]
    url = f"{s.api_url}/v1/datasets/air_quality/observations"
    window = {"from": DAY.isoformat(), "to": (DAY + timedelta(days=1)).isoformat()}

    def observations() -> list[dict]:
        r = httpx.get(url, params=window)
        return r.json()["observations"] if r.status_code == 200 else []

    assert wait_for(lambda: len(observations()) > 0, 60), (s.log("charter")[-3000:], s.log("api")[-2000:])
    rows = observations()
    # what the charter publishes for air_quality at k=1: the mean per (cell, 15-minute bin) of what was sent
    registry = Registry.load(REGISTRY)
    sums: dict[tuple[str, str], list[float]] = defaultdict(list)
    for t in air:
        if t.quantity == "air_quality.pm10":
            ns = t.time_ns
            bin_start = datetime.fromtimestamp(ns // 10**9 // 900 * 900, UTC)
            sums[(registry.cell_of(t.sensor_id), bin_start.strftime("%Y-%m-%dT%H:%M:%SZ"))].append(float(t.value))
    got = {(r["cell"], r["time"]): r["pm10_mean"] for r in rows if r.get("pm10_mean") is not None}
    assert set(got) == set(sums)
    for key, values in sums.items():
        assert got[key] == pytest.approx(sum(values) / len(values), rel=1e-3, abs=0.05), key
    assert all(p.poll() is None for p in s.procs.values()), {n: s.log(n)[-1500:] for n in s.procs}
    elapsed = time.monotonic() - started
    print(f"rehearsal: {len(messages)} messages from {GATEWAY} over TLS -> {len(rows)} observations in {elapsed:.1f} s")


def test_a_killed_worker_s_share_goes_to_its_peer_with_compose_s_users_and_acl(rehearsal):
    """Failover as compose configures it (SMARTZONE_MQTT__PEERS, one broker user per worker, the generated
    ACL): ingest-2 is killed and not restarted; ingest-1 takes it out of the share group, and every reading
    the gateway sends after that is written."""
    s = rehearsal
    if "ingest-2" not in s.procs:
        pytest.skip("needs the running stack of test_readings_from_a_gateway_over_tls_come_out_of_the_api")
    admin = httpx.Client(base_url=s.influx_url, auth=("admin", s.dotenv["INFLUXDB_ADMIN_PASSWORD"]))

    def stored() -> int:
        r = admin.get("/query", params={"db": "smartzone_raw", "q": "SELECT count(pm10) FROM air_quality"})
        series = r.json()["results"][0].get("series", [])
        return series[0]["values"][0][1] if series else 0

    before = stored()
    os.killpg(s.procs["ingest-2"].pid, signal.SIGKILL)
    s.procs["ingest-2"].wait(10)
    assert wait_for(lambda: "took ingest peer smartzone-ingest-2 out of share group" in s.log("ingest-1"), 30), s.log(
        "ingest-1"
    )[-3000:]
    zone = SimulatedZone(Registry.load(REGISTRY), seed=15)
    later = START + timedelta(hours=2)
    messages = [m for m in zone.messages(later, rounds=12, step=300) if m.topic.startswith(f"gw/{GATEWAY}/")]
    gw = Client(GATEWAY, s.broker.passwords[GATEWAY], s.broker.tls_port, ca=s.broker.ca).connect()
    try:
        assert {gw.publish(m.topic, m.payload) for m in messages} == {0}
    finally:
        gw.close()
    expected = before + sum(1 for m in messages for t in m.truth if t.quantity == "air_quality.pm10")
    assert wait_for(lambda: stored() == expected, 30), (stored(), expected, s.log("ingest-1")[-2000:])


# (user, password variable) -> what it may do; every other database/operation must be refused with 403
GRANTS = {
    ("smartzone-ingest", "INFLUX_INGEST_PASSWORD"): {
        "write": {"smartzone_raw", "smartzone_ops", "smartzone_pseudonymous"},
        "read": set(),
    },
    ("smartzone-charter", "INFLUX_CHARTER_PASSWORD"): {
        "write": {"smartzone_open", "smartzone_ops"},
        "read": {"smartzone_raw", "smartzone_pseudonymous"},
    },
    ("smartzone-api", "INFLUX_API_PASSWORD"): {"write": set(), "read": {"smartzone_open"}},
    ("grafana", "GRAFANA_INFLUX_PASSWORD"): {"write": set(), "read": {"smartzone_open", "smartzone_ops"}},
}
PROBE_NS = int(DAY.timestamp()) * 10**9  # within every retention policy
PROBE = f"rehearsal_probe v=1 {PROBE_NS}".encode()
DATABASES = ("smartzone_raw", "smartzone_ops", "smartzone_pseudonymous", "smartzone_open")


def test_each_influxdb_user_holds_only_its_grants(rehearsal):
    """Least privilege, both ways: what a user may do works, everything else is HTTP 403 (after the end-to-end
    test, whose services ran as these users: the ingest workers wrote, the charter read and wrote, the API
    read)."""
    s = rehearsal
    if not (s.tmp / "volumes" / "influxdb-data" / "meta").exists():
        pytest.skip("needs the stack")
    init = subprocess.run(_command("init"), env=service_env(s, "init"), cwd=s.tmp, capture_output=True, text=True)
    assert init.returncode == 0, init.stderr  # idempotent: a second `up` runs it again
    # compose gives each service the user the grants are for
    for service, user in (("ingest-1", "smartzone-ingest"), ("charter", "smartzone-charter"), ("api", "smartzone-api")):
        assert environment(service, s.dotenv)["SMARTZONE_INFLUX__USERNAME"] == user
    assert environment("grafana", s.dotenv)["INFLUXDB_READ_USER"] == "grafana"
    for (user, var), may in GRANTS.items():
        c = httpx.Client(base_url=s.influx_url, auth=(user, s.dotenv[var]))
        for db in DATABASES:
            w = c.post("/write", params={"db": db}, content=PROBE)
            assert w.status_code == (204 if db in may["write"] else 403), (user, "write", db, w.text)
            r = c.get("/query", params={"db": db, "q": "SELECT * FROM rehearsal_probe LIMIT 1"})
            assert r.status_code == (200 if db in may["read"] else 403), (user, "read", db, r.text)
        for admin_only in ("CREATE DATABASE x", "SHOW USERS", f'GRANT ALL ON "smartzone_open" TO "{user}"'):
            assert c.post("/query", data={"q": admin_only}).status_code == 403, (user, admin_only)
        # DELETE (the charter job replacing a window) needs WRITE only
        d = c.post(
            "/query",
            data={"db": "smartzone_open", "q": f"DELETE FROM rehearsal_probe WHERE time <= {PROBE_NS}"},  # noqa: S608
        )
        assert d.status_code == (200 if "smartzone_open" in may["write"] else 403), (user, d.text)


def test_the_ports_compose_publishes_are_loopback_unless_the_operator_says():
    published = {name: svc.get("ports", []) for name, svc in SERVICES.items()}
    for name, ports in published.items():
        for p in ports:
            host = interpolate(p, {})
            assert host.startswith("127.0.0.1:"), (name, p)  # the default, without .env
    assert all(not p.endswith(":1883") for p in published["mosquitto"])  # plain MQTT stays inside
    assert [interpolate(p, {"SMARTZONE_MQTT_TLS_BIND": "0.0.0.0"}) for p in published["mosquitto"]] == [
        "0.0.0.0:8883:8883"
    ]


def test_the_experiments_scheduler_gives_an_experiment_its_broker_user(rehearsal):
    """The ``experiments`` service as compose runs it (PostgreSQL store, broker user smartzone-experiments, the
    data volume with the HMAC key): an experiment launched in the store gets its dynamic-security user on the
    compose broker, which may publish only under its prefix (over TLS, as on a gateway); ended, it is deleted."""
    from sqlalchemy import select

    from experiments import secrets
    from experiments.db import Experiment, ExperimentResource, User, open_store, utc
    from experiments.dynsec import user_name
    from experiments.states import transition

    s = rehearsal
    env = service_env(s, "experiments")
    assert env["SMARTZONE_EXPERIMENTS__BROKER_USERNAME"] == "smartzone-experiments"
    proc = _start(s, "experiments")
    assert wait_for(lambda: "MQTT subscribed" in s.log("experiments") or proc.poll() is not None, 30), s.log(
        "experiments"
    )
    assert proc.poll() is None, s.log("experiments")[-3000:]
    sessions = open_store(env["SMARTZONE_STORAGE__SQL_URL"])
    now = datetime.now(UTC)
    with sessions() as db:
        owner = db.scalars(select(User).where(User.name == "rehearsal")).first()
        if owner is None:
            owner = User(name="rehearsal", role="experimenter", created_at=now)
            db.add(owner)
            db.flush()
        exp = Experiment(
            name="rehearsal", description="", owner_id=owner.id, state="Waiting", start=now, duration_s=600,
            deadline=now + timedelta(seconds=600), parameters={}, artifact_sha256=None, created_at=now,
        )  # fmt: skip
        db.add(exp)
        db.flush()
        db.add(ExperimentResource(experiment_id=exp.id, gateway=GATEWAY, radio="ble"))
        db.commit()
        exp_id = exp.id
    key = (s.tmp / "volumes" / "experiments-data" / "experiments" / "secret").read_text().strip().encode()
    user, password = user_name(exp_id, GATEWAY), secrets.broker_password(key, exp_id, GATEWAY)

    def login() -> Client:  # one at a time: the broker binds the session to the user name
        return Client(user, password, s.broker.tls_port, ca=s.broker.ca).connect()

    def logs_in() -> bool:
        c = login()
        c.close()
        return c.connack == 0

    assert wait_for(logs_in, 30), s.log("experiments")[-3000:]
    c = login()
    try:
        assert c.publish(f"gw/{GATEWAY}/experiments/{exp_id}/probe", "ok") == 0
        assert c.publish(f"gw/{GATEWAY}/health", "forged") == 0x87
    finally:
        c.close()
    with sessions() as db:
        e = db.get(Experiment, exp_id)
        transition(db, e, "Error", "rehearsal", "ended by the rehearsal", utc(now) or now)
        db.commit()
    assert wait_for(lambda: not logs_in(), 30), s.log("experiments")[-3000:]
    sessions.kw["bind"].dispose()
