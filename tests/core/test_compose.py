"""docker-compose.yml cannot run here (no Docker engine): parse it and check it against the code."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from cli.main import build_parser
from smartzone.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def _env(service: dict) -> dict[str, str]:
    """The service's environment with ${VAR:?...} placeholders filled like an operator's .env would."""
    return {k: re.sub(r"\$\{[^}]+\}", "s3cret-from-env", str(v)) for k, v in service["environment"].items()}


def test_full_stack_is_described():
    assert {
        "mosquitto",
        "influxdb",
        "postgres",
        "ingest-1",
        "ingest-2",
        "charter",
        "api",
        "chirpstack",
        "redis",
        "grafana",
    } <= set(SERVICES)
    assert SERVICES["chirpstack"]["profiles"] == ["lorawan"] and SERVICES["grafana"]["profiles"] == ["dashboards"]


def test_broker_runs_the_shipped_config_with_persistence():
    volumes = SERVICES["mosquitto"]["volumes"]
    conf = next(v for v in volumes if v.endswith(":/mosquitto/config/mosquitto.conf:ro"))
    shipped = (REPO / conf.split(":")[0]).read_text()
    assert "persistence true" in shipped and "persistence_location /mosquitto/data/" in shipped
    assert any(v.startswith("mosquitto-data:/mosquitto/data") for v in volumes)
    assert "max_queued_messages 2000000" in shipped and "max_inflight_messages 10000" in shipped
    assert "allow_anonymous false" in shipped and (REPO / "ingest/broker/acl").exists()


def test_influxdb_serves_the_v1_api_with_auth():
    influx = SERVICES["influxdb"]
    assert re.fullmatch(r"influxdb:1\.\d+", influx["image"])  # line protocol /write + InfluxQL /query
    assert influx["environment"]["INFLUXDB_HTTP_AUTH_ENABLED"] == "true"
    assert influx["environment"]["INFLUXDB_USER"] == _env(SERVICES["ingest-1"])["SMARTZONE_INFLUX__USERNAME"]


def test_ingest_workers_are_valid_settings_and_commands(monkeypatch):
    commands = set(build_parser()._subparsers._group_actions[0].choices)
    client_ids = set()
    for name in ("ingest-1", "ingest-2"):
        svc = SERVICES[name]
        assert svc["command"][0] in commands
        assert svc["restart"] == "unless-stopped"  # a killed worker comes back and finishes its session
        monkeypatch.setenv("SMARTZONE_CONFIG", "/nonexistent.toml")
        for k, v in _env(svc).items():
            monkeypatch.setenv(k, v)
        s = Settings()  # every variable is a real setting (extra="forbid" would refuse typos in a file)
        assert all(k.startswith("SMARTZONE_") for k in svc["environment"])
        assert s.environment == "production" and s.mqtt.host == "mosquitto" and s.influx.url == "http://influxdb:8086"
        assert s.sql_url.startswith("postgresql+psycopg://")
        client_ids.add(s.mqtt.client_id)
    assert len(client_ids) == 2, "each worker needs its own client id for its persistent session"


def test_the_charter_job_runs_as_a_service_with_its_state_kept(monkeypatch):
    svc = SERVICES["charter"]
    parser = build_parser()
    args = parser.parse_args(svc["command"])
    assert args.command == "charter" and args.action == "run" and not args.once
    monkeypatch.setenv("SMARTZONE_CONFIG", "/nonexistent.toml")
    for k, v in _env(svc).items():
        monkeypatch.setenv(k, v)
    s = Settings()
    assert s.sql_url.startswith("postgresql+psycopg://")  # watermarks and audit survive the container
    assert s.charter.every == "1m"
    # the noise key (<data_dir>/charter/noise.key) is on a named volume: a new container must not draw new noise
    assert any(v.startswith("charter-data:") and v.endswith(str(s.data_dir)) for v in svc["volumes"])
    assert (REPO / s.charter.path).exists()


def test_the_api_serves_on_all_interfaces_with_several_workers(monkeypatch):
    svc = SERVICES["api"]
    args = build_parser().parse_args(svc["command"])
    assert args.command == "api"
    monkeypatch.setenv("SMARTZONE_CONFIG", "/nonexistent.toml")
    for k, v in _env(svc).items():
        monkeypatch.setenv(k, v)
    s = Settings()
    assert s.api.host == "0.0.0.0" and s.api.workers == 2
    assert svc["ports"] == [f"{s.api.port}:{s.api.port}"]
    assert "/readyz" in " ".join(svc["healthcheck"]["test"])


def test_secrets_come_from_the_environment_only():
    text = (REPO / "docker-compose.yml").read_text()
    for line in text.splitlines():
        if re.search(r"PASSWORD\s*:", line):
            assert "${" in line, line
    assert "changethis" not in text


def test_dockerfile_copies_every_package():
    dockerfile = (REPO / "Dockerfile").read_text()
    for pkg in ("smartzone", "ingest", "storage", "datacharter", "api", "gateways", "dashboards"):
        assert f"COPY {pkg} ./{pkg}" in dockerfile


def test_chirpstack_publishes_where_the_workers_read():
    """ChirpStack's configuration (mounted by compose) parses, and its MQTT integration matches our
    route, the broker's ACL and the worker's at-least-once needs. ChirpStack cannot run here: this
    checks the files against the code, not a running ChirpStack."""
    import tomllib

    from paho.mqtt.client import topic_matches_sub

    from smartzone.settings import DEFAULT_ROUTES

    chirp = SERVICES["chirpstack"]
    mount = next(v for v in chirp["volumes"] if v.split(":")[1] == "/etc/chirpstack")
    folder = REPO / mount.split(":")[0]
    conf = tomllib.loads((folder / "chirpstack.toml").read_text())
    region = tomllib.loads((folder / "region_eu868.toml").read_text())
    assert conf["network"]["enabled_regions"] == [r["id"] for r in region["regions"]]
    mqtt = conf["integration"]["mqtt"]
    assert conf["integration"]["enabled"] == ["mqtt"] and mqtt["qos"] == 1 and mqtt["clean_session"] is False
    topic = (
        mqtt["event_topic"]
        .replace("{{application_id}}", "1de53b8a-8ccc-5d2d-a04a-b8a453e14f91")
        .replace("{{dev_eui}}", "a81758fffe0312ab")
    )
    routes = [r for r in DEFAULT_ROUTES if r.decoder == "chirpstack"]
    for event in ("up", "join", "ack", "txack", "log", "status", "location", "integration"):
        assert any(topic_matches_sub(r.filter, topic.replace("{{event}}", event)) for r in routes)
    acl = (REPO / "ingest/broker/acl").read_text()
    assert f"user {mqtt['username']}\ntopic write application/#" in acl
    assert mqtt["server"] == "tcp://$MQTT_BROKER_HOST:1883/" and chirp["environment"]["MQTT_BROKER_HOST"] == "mosquitto"
    for var in ("CHIRPSTACK_DB_PASSWORD", "CHIRPSTACK_API_SECRET", "CHIRPSTACK_MQTT_PASSWORD"):
        assert var in chirp["environment"] and var in (REPO / ".env.example").read_text()
    assert "$CHIRPSTACK_API_SECRET" in conf["api"]["secret"] and conf["api"]["bind"].endswith(":8080")
    init = next(v for v in SERVICES["postgres"]["volumes"] if "docker-entrypoint-initdb.d" in v)
    assert "CREATE DATABASE chirpstack" in (REPO / init.split(":")[0] / "10-chirpstack.sh").read_text()
