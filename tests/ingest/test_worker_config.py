"""Configuration errors stop the worker with a clear message; they are never retried forever."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from cli import services
from cli.main import main
from ingest.worker import Worker
from smartzone.errors import ConfigurationError
from smartzone.settings import InfluxSettings, MqttSettings, PeerSettings, Route, get_settings
from storage.influx import Influx
from tests.conftest import settings_env


@pytest.fixture
def auth_influxd(tmp_path):
    svc = services.influxd(tmp_path / "authd", auth=True).start()
    Influx(InfluxSettings(url=svc.url)).query(
        "CREATE USER admin WITH PASSWORD 'adminpw' WITH ALL PRIVILEGES", write=True
    )
    yield svc
    svc.stop()


def test_wrong_influx_credentials_stop_the_worker(settings, auth_influxd, monkeypatch, capsys):
    s = settings.model_copy(
        update={
            "influx": settings.influx.model_copy(
                update={"url": auth_influxd.url, "username": "admin", "password": SecretStr("wrong")}
            )
        }
    )
    worker = Worker(s)
    with pytest.raises(ConfigurationError, match="HTTP 401"):
        worker.start()
    worker.influx.close()
    # from the command line: exit code 2 and one clear line
    for k, v in settings_env(s).items():
        if k.startswith("SMARTZONE_"):
            monkeypatch.setenv(k, v)
    monkeypatch.setenv("SMARTZONE_INFLUX__USERNAME", "admin")
    monkeypatch.setenv("SMARTZONE_INFLUX__PASSWORD", "wrong")
    assert main(["ingest"]) == 2
    assert "configuration error: InfluxDB refused the credentials (HTTP 401)" in capsys.readouterr().err


def test_unknown_decoder_in_routes_is_refused(settings):
    s = settings.model_copy(
        update={"ingest": settings.ingest.model_copy(update={"routes": [Route(filter="gw/+/x/#", decoder="nope")]})}
    )
    with pytest.raises(ConfigurationError, match="unknown decoders"):
        Worker(s)


def test_failover_peers_are_checked_at_start_up(settings, tmp_path, monkeypatch):
    """``mqtt.peers``: never the worker itself; a password file that cannot be read stops the worker at once;
    credentials default to the peer's client id as username (a broker binding client ids to usernames)."""
    with pytest.raises(ValueError, match="own client id"):
        MqttSettings(client_id="smartzone-ingest-1", peers=[{"client_id": "smartzone-ingest-1"}])
    missing = PeerSettings(client_id="smartzone-ingest-2", password_file=tmp_path / "nope")
    s = settings.model_copy(update={"mqtt": settings.mqtt.model_copy(update={"peers": [missing]})})
    with pytest.raises(ConfigurationError, match="smartzone-ingest-2: cannot read password_file"):
        Worker(s)
    secret = tmp_path / "ingest-2.secret"
    secret.write_text("s3cret\n")
    assert PeerSettings(client_id="smartzone-ingest-2", password_file=secret).credentials() == (
        "smartzone-ingest-2",
        "s3cret",
    )
    assert PeerSettings(client_id="smartzone-ingest-2").credentials() is None  # an anonymous broker
    # from the environment, as docker-compose would pass it
    monkeypatch.setenv("SMARTZONE_MQTT__PEERS", '[{"client_id": "smartzone-ingest-2", "password": "p"}]')
    assert get_settings().mqtt.peers[0].credentials() == ("smartzone-ingest-2", "p")
