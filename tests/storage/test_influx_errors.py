"""InfluxDB's answers become typed errors (``smartzone.errors``): callers branch on the type, never on text."""

from __future__ import annotations

import pytest

from cli.services import free_port
from smartzone.errors import BadRequest, ConfigurationError, DatabaseNotFound, InfluxError, Unauthorised, Unavailable
from smartzone.settings import InfluxSettings
from storage.influx import Influx, _error


def test_a_missing_database_is_database_not_found_on_write_and_on_query(influx):
    with pytest.raises(DatabaseNotFound) as write:
        influx.write("no_such_db", b"m v=1 1")
    assert write.value.retryable and write.value.status == 404
    with pytest.raises(DatabaseNotFound):
        influx.query('SELECT * FROM "m"', "no_such_db")


def test_a_bad_line_or_query_is_a_bad_request_never_retried(influx, settings):
    influx.query(f'CREATE DATABASE "{settings.influx.raw_database}"', write=True)
    with pytest.raises(BadRequest) as line:
        influx.write(settings.influx.raw_database, b"m v= 1")
    assert line.value.status == 400 and not line.value.retryable
    with pytest.raises(BadRequest) as query:
        influx.query("SELEKT 1", settings.influx.raw_database)
    assert not query.value.retryable and not isinstance(query.value, DatabaseNotFound)


def test_an_unreachable_server_is_unavailable_and_retryable():
    with (
        Influx(InfluxSettings(url=f"http://127.0.0.1:{free_port()}", timeout=1.0)) as down,
        pytest.raises(Unavailable) as err,
    ):
        down.query("SHOW DATABASES")
    assert err.value.retryable and err.value.status is None


@pytest.mark.parametrize(
    ("status", "text", "kind", "retryable"),
    [
        (401, "authorization failed", Unauthorised, None),
        (403, "forbidden", Unauthorised, None),
        (404, "database not found: x", DatabaseNotFound, True),
        (200, "database not found: x", DatabaseNotFound, True),  # influxd 1.x: a query's statement error
        (400, "unable to parse", BadRequest, False),
        (413, "request entity too large", BadRequest, False),
        (429, "too many requests", Unavailable, True),
        (503, "engine closed", Unavailable, True),
    ],
)
def test_every_status_of_the_http_api_has_its_type(status, text, kind, retryable):
    """The v1 HTTP API's documented statuses (the auth and overload cases cannot be provoked on the test
    server, which runs without authentication and limits: checked here against the contract)."""
    err = _error(status, text, retry_after=2.0)
    assert type(err) is kind
    if kind is Unauthorised:  # a configuration error: writers stop, nothing is dead-lettered or retried
        assert isinstance(err, ConfigurationError) and not isinstance(err, InfluxError)
    else:
        assert err.retryable is retryable and err.status == status
        assert err.retry_after == (2.0 if kind is Unavailable else None)
