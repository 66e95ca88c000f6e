"""InfluxDB with authentication: the init step (``storage.databases.provision``, ``smartzone influx init``) makes
the databases and one user per service; a service without the admin privilege never needs CREATE DATABASE."""

from __future__ import annotations

import pytest

from cli import services
from datacharter.charter import Charter
from ingest.worker import STORES, ensure_databases
from smartzone.errors import ConfigurationError, Unauthorised
from smartzone.settings import InfluxSettings, Settings
from storage.databases import ROLES, provision
from storage.influx import Influx
from tests.conftest import REGISTRY

CHARTER = Charter.load()


@pytest.fixture
def auth_influxd(tmp_path):
    svc = services.influxd(tmp_path / "authd", auth=True).start()
    Influx(InfluxSettings(url=svc.url)).query(
        "CREATE USER admin WITH PASSWORD 'adminpw' WITH ALL PRIVILEGES", write=True
    )
    yield svc
    svc.stop()


def _settings(url: str, user: str, password: str) -> Settings:
    return Settings(registry=REGISTRY, influx={"url": url, "username": user, "password": password})


def test_services_log_in_without_admin_and_name_the_init_step_when_a_database_is_missing(auth_influxd):
    admin_settings = _settings(auth_influxd.url, "admin", "adminpw")
    passwords = {r.name: f"{r.name}-pw with ' and \\" for r in ROLES}  # quoting holds
    with Influx(admin_settings.influx) as admin:
        done = provision(admin, admin_settings, CHARTER.doc.retention, passwords)
        assert (
            "user smartzone-ingest: WRITE smartzone_raw, WRITE smartzone_ops, WRITE smartzone_pseudonymous, "
            "WRITE smartzone_experiments" in done
        )
        # the experiments' database: written by ingest, read by Grafana, nobody else (charter, API) has a grant
        rps = admin.rows('SHOW RETENTION POLICIES ON "smartzone_experiments"', "smartzone_experiments")
        assert [r["duration"] for r in rps if r["default"]] == ["2160h0m0s"]  # influx.experiments_retention: 90d
        for user, expected in (
            ("smartzone-ingest", "WRITE"),
            ("grafana", "READ"),
            ("smartzone-charter", "NO PRIVILEGES"),
            ("smartzone-api", "NO PRIVILEGES"),
        ):
            given = {r["database"]: r["privilege"] for r in admin.rows(f'SHOW GRANTS FOR "{user}"', "smartzone_raw")}
            assert given.get("smartzone_experiments", "NO PRIVILEGES") == expected, (user, given)
        assert provision(admin, admin_settings, CHARTER.doc.retention, passwords) == done  # idempotent
        rps = admin.rows('SHOW RETENTION POLICIES ON "smartzone_raw"', "smartzone_raw")
        assert [(r["name"], r["default"]) for r in rps if r["default"]] == [("smartzone", True)]

    ingest = _settings(auth_influxd.url, "smartzone-ingest", passwords["ingest"])
    with Influx(ingest.influx) as client:
        ensure_databases(client, ingest, CHARTER)  # the databases are there: nothing to create, no admin needed
        client.write("smartzone_raw", b"m v=1")
        with pytest.raises(Unauthorised, match="HTTP 403"):
            client.write("smartzone_open", b"m v=1")
    wrong = _settings(auth_influxd.url, "smartzone-ingest", "wrong")
    with Influx(wrong.influx) as client, pytest.raises(Unauthorised, match="HTTP 401"):
        ensure_databases(client, wrong, CHARTER)  # a wrong password stays a credentials error

    with Influx(admin_settings.influx) as admin:
        admin.drop_database("smartzone_pseudonymous")
    with Influx(ingest.influx) as client, pytest.raises(ConfigurationError) as err:
        ensure_databases(client, ingest, CHARTER)
    assert "smartzone_pseudonymous" in str(err.value) and "smartzone influx init" in str(err.value)
    assert [s.value for s in STORES] == ["raw", "ops", "pseudonymous", "experiments"]


def test_a_grant_taken_away_is_revoked_on_the_next_init(auth_influxd):
    admin_settings = _settings(auth_influxd.url, "admin", "adminpw")
    with Influx(admin_settings.influx) as admin:
        provision(admin, admin_settings, CHARTER.doc.retention, {"api": "api-pw"})
        admin.query('GRANT ALL ON "smartzone_raw" TO "smartzone-api"', write=True)  # someone widened it
        admin.query('GRANT ALL PRIVILEGES TO "smartzone-api"', write=True)
        provision(admin, admin_settings, CHARTER.doc.retention, {"api": "new-api-pw"})
        grants = {
            r["database"]: r["privilege"] for r in admin.rows('SHOW GRANTS FOR "smartzone-api"', "smartzone_open")
        }
        users = {r["user"]: r["admin"] for r in admin.rows("SHOW USERS", "smartzone_open")}
    assert grants["smartzone_open"] == "READ" and grants["smartzone_raw"] == "NO PRIVILEGES"
    assert users["smartzone-api"] is False
    with Influx(_settings(auth_influxd.url, "smartzone-api", "api-pw").influx) as old, pytest.raises(Unauthorised):
        old.query("SHOW MEASUREMENTS", "smartzone_open")  # the password was set again
