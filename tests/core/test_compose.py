"""docker-compose.yml cannot run here (no Docker engine): parse it and check it against the code. The services
that can run here are run as compose configures them by tests/deploy/test_rehearsal.py."""

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
        "init",
        "ingest-1",
        "ingest-2",
        "charter",
        "api",
        "experiments",
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
    assert "allow_anonymous false" in shipped
    # the password file and ACL are generated (`smartzone broker users`), never committed
    ignored = (REPO / ".gitignore").read_text().split()
    for generated in ("ingest/broker/passwd", "ingest/broker/acl", "ingest/broker/certs/", ".env"):
        assert generated in ignored
    # each listener binds client ids to user names (a per-listener option in Mosquitto 2.0)
    listeners = shipped.split("\nlistener ")[1:]
    assert len(listeners) == 2 and all("use_username_as_clientid true" in block for block in listeners)
    tls = next(b for b in listeners if b.startswith("8883"))
    for option in ("cafile /mosquitto/certs/", "certfile /mosquitto/certs/", "keyfile /mosquitto/certs/"):
        assert option in tls
    assert any(v.startswith("./ingest/broker/certs:/mosquitto/certs") for v in volumes)


def test_influxdb_serves_the_v1_api_with_auth_and_an_init_step():
    influx = SERVICES["influxdb"]
    assert re.fullmatch(r"influxdb:1\.\d+", influx["image"])  # line protocol /write + InfluxQL /query
    assert influx["environment"]["INFLUXDB_HTTP_AUTH_ENABLED"] == "true"
    assert "INFLUXDB_USER" not in influx["environment"]  # the image's user had no grants: the init step makes them
    init = SERVICES["init"]
    assert init["command"] == ["influx", "init"] and init["restart"] == "no"
    assert init["environment"]["SMARTZONE_INFLUX__USERNAME"] == influx["environment"]["INFLUXDB_ADMIN_USER"]
    assert init["depends_on"] == {"influxdb": {"condition": "service_healthy"}}
    for name in ("ingest-1", "ingest-2", "charter", "api"):
        deps = SERVICES[name]["depends_on"]
        assert deps["init"] == {"condition": "service_completed_successfully"}
        assert deps["mosquitto"] == deps["influxdb"] == deps["postgres"] == {"condition": "service_healthy"}
        assert _env(SERVICES[name])["SMARTZONE_INFLUX__USERNAME"] != "admin"


def test_broker_and_influxdb_have_healthchecks_that_log_in():
    mosquitto = " ".join(SERVICES["mosquitto"]["healthcheck"]["test"])
    assert "mosquitto_sub" in mosquitto and "-u healthcheck" in mosquitto and "$$SYS/broker/uptime" in mosquitto
    influx = " ".join(SERVICES["influxdb"]["healthcheck"]["test"])
    assert influx.startswith("CMD-SHELL influx ") and "-username" in influx and "SHOW DATABASES" in influx


def test_registry_and_charter_are_mounted_not_baked(monkeypatch):
    for name in ("init", "ingest-1", "ingest-2", "charter", "api"):
        svc = SERVICES[name]
        env = _env(svc)
        mounts = {v.split(":")[1]: v.split(":")[0] for v in svc["volumes"] if v.endswith(":ro")}
        registry, charter = Path(env["SMARTZONE_REGISTRY"]), Path(env["SMARTZONE_CHARTER__PATH"])
        folder = mounts[str(registry.parent)]
        assert (REPO / folder / registry.name).exists()
        assert (REPO / mounts[str(charter)]).exists()


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
        # its own broker user, whose name is its client id (the broker binds the session to the user)
        assert s.mqtt.username == s.mqtt.client_id == name.replace("ingest-", "smartzone-ingest-")
        from cli.broker import env_name

        assert svc["environment"]["SMARTZONE_MQTT__PASSWORD"].startswith("${" + env_name(s.mqtt.username) + ":?")
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
    assert s.charter.path == Path("/etc/smartzone/charter/charter.yaml")  # mounted from the repository


def test_the_api_serves_on_all_container_interfaces_with_several_workers(monkeypatch):
    svc = SERVICES["api"]
    args = build_parser().parse_args(svc["command"])
    assert args.command == "api"
    monkeypatch.setenv("SMARTZONE_CONFIG", "/nonexistent.toml")
    for k, v in _env(svc).items():
        monkeypatch.setenv(k, v)
    s = Settings()
    assert s.api.host == "0.0.0.0" and s.api.workers == 2
    assert svc["ports"] == [f"${{SMARTZONE_API_BIND:-127.0.0.1}}:{s.api.port}:{s.api.port}"]  # loopback by default
    assert "/readyz" in " ".join(svc["healthcheck"]["test"])


def test_the_broker_loads_the_dynamic_security_plugin_on_a_writable_mount():
    volumes = SERVICES["mosquitto"]["volumes"]
    shipped = (REPO / "ingest/broker/mosquitto.conf").read_text()
    plugin = re.search(r"^plugin (\S+)$", shipped, re.M)
    config = re.search(r"^plugin_opt_config_file (\S+)$", shipped, re.M)
    assert plugin and plugin.group(1) == "/usr/lib/mosquitto_dynamic_security.so"  # where the image has it
    assert config and config.group(1) == "/mosquitto/dynsec/dynamic-security.json"
    # the plugin rewrites its file on every change: its folder is mounted writable (no ":ro")
    assert "./ingest/broker/dynsec:/mosquitto/dynsec" in volumes
    assert "ingest/broker/dynsec/" in (REPO / ".gitignore").read_text().split()  # generated, never committed


def test_the_experiments_scheduler_is_a_service_sharing_the_api_s_data(monkeypatch):
    from cli.broker import EXPERIMENTS, env_name

    svc = SERVICES["experiments"]
    args = build_parser().parse_args(svc["command"])
    assert (args.command, args.action) == ("experiments", "scheduler")
    assert svc["depends_on"]["mosquitto"] == {"condition": "service_healthy"}
    assert svc["depends_on"]["init"] == {"condition": "service_completed_successfully"}
    monkeypatch.setenv("SMARTZONE_CONFIG", "/nonexistent.toml")
    for k, v in _env(svc).items():
        monkeypatch.setenv(k, v)
    s = Settings()
    assert s.experiments.broker_username == EXPERIMENTS and s.sql_url.startswith("postgresql+psycopg://")
    assert svc["environment"]["SMARTZONE_EXPERIMENTS__BROKER_PASSWORD"].startswith("${" + env_name(EXPERIMENTS) + ":?")
    # production: the artifact and upload URLs need the API's public URL, the same the API's links use
    assert svc["environment"]["SMARTZONE_API__BASE_URL"] == SERVICES["api"]["environment"]["SMARTZONE_API__BASE_URL"]
    # the HMAC key (<data_dir>/experiments/secret) is on the volume the API mounts too
    data = f"experiments-data:{s.data_dir}"
    assert data in svc["volumes"] and data in SERVICES["api"]["volumes"]


def test_secrets_come_from_the_environment_only():
    text = (REPO / "docker-compose.yml").read_text()
    for line in text.splitlines():
        if re.search(r"PASSWORD\s*:", line):
            assert "${" in line, line
    assert "changethis" not in text


def test_env_example_says_truthfully_what_refuses_the_example_secrets(monkeypatch):
    """Compose refuses only unset or empty variables (${VAR:?}); our services refuse "changethis" outside
    development, for their own passwords."""
    example = (REPO / ".env.example").read_text()
    assert (
        "docker compose refuses to start" not in example and "only refuses a variable that is unset or empty" in example
    )
    values = dict(line.split("=", 1) for line in example.splitlines() if line and not line.startswith("#"))
    filled = {
        k: re.sub(r"\$\{(\w+)[^}]*\}", lambda m: values.get(m.group(1), "changethis"), str(v))
        for k, v in SERVICES["ingest-1"]["environment"].items()
    }
    monkeypatch.setenv("SMARTZONE_CONFIG", "/nonexistent.toml")
    for k, v in filled.items():
        monkeypatch.setenv(k, v)
    import pytest

    with pytest.raises(ValueError, match="example value 'changethis'"):
        Settings()


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
    from cli import broker
    from smartzone.registry import Registry

    users = {u.name: u for u in broker.users(Registry.load(REPO / "gateways/registry/antwerp.yaml"))}
    assert mqtt["username"] == broker.CHIRPSTACK and "application/#" in users[broker.CHIRPSTACK].write
    assert mqtt["server"] == "tcp://$MQTT_BROKER_HOST:1883/" and chirp["environment"]["MQTT_BROKER_HOST"] == "mosquitto"
    for var in ("CHIRPSTACK_DB_PASSWORD", "CHIRPSTACK_API_SECRET"):
        assert var in chirp["environment"] and var in (REPO / ".env.example").read_text()
    # its gateway backend: its own broker user, the topic prefix the generated ACL uses, events it may read
    backend = region["regions"][0]["gateway"]["backend"]["mqtt"]
    assert backend["username"] == broker.CHIRPSTACK_GATEWAYS and backend["share_name"] == broker.CHIRPSTACK_SHARE
    gateway_users = broker.users(
        Registry.load(REPO / "gateways/registry/antwerp.yaml"), region_prefix=backend["topic_prefix"]
    )
    assert (
        f"{backend['topic_prefix']}/gateway/+/command/#"
        in next(u for u in gateway_users if u.name == backend["username"]).write
    )
    for var, user in (("CHIRPSTACK_MQTT_PASSWORD", mqtt), ("CHIRPSTACK_GATEWAYS_MQTT_PASSWORD", backend)):
        assert user["password"] == f"${var}"
        assert chirp["environment"][var] == "${" + broker.env_name(user["username"]) + ":?run smartzone broker users}"
    assert "$CHIRPSTACK_API_SECRET" in conf["api"]["secret"] and conf["api"]["bind"].endswith(":8080")
    init = next(v for v in SERVICES["postgres"]["volumes"] if "docker-entrypoint-initdb.d" in v)
    assert "CREATE DATABASE chirpstack" in (REPO / init.split(":")[0] / "10-chirpstack.sh").read_text()


def test_the_image_copies_every_packaged_package_and_the_licence():
    """The image builds the wheel from what the Dockerfile copies: a package left out builds silently
    (hatchling skips it) and the image then has no `smartzone` command (cli/ was missing once)."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    copied: set[str] = set()
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            copied.update(part.rstrip("/") for part in line.split()[1:-1])
    assert set(packages) <= copied, f"not copied into the image: {sorted(set(packages) - copied)}"
    assert {"pyproject.toml", "README.md", *project["project"]["license-files"]} <= copied
