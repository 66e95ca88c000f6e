"""The dead-letter store keeps each letter once, in SQLite and in PostgreSQL (Debian's server, run here).

The worker-level proof (a worker SIGKILLed between committing a batch's letters and acking it) is
``tests/ingest/test_faults.py::test_dead_letters_exactly_once_across_a_kill``.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cli.services import free_port, port_open
from smartzone.model import DeadLetter
from storage.deadletters import DeadLetterStore, letter_key

PG_BIN = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture(scope="module")
def postgresql_url() -> Iterator[str]:
    """A throwaway PostgreSQL server (Debian's ``postgresql`` package) on a free loopback port."""
    if not (PG_BIN / "postgres").exists():
        pytest.skip("Debian's postgresql package is not installed")
    folder = Path(tempfile.mkdtemp(prefix="sz-pg-"))
    os.chmod(folder, 0o777)  # noqa: S103 - a temp folder the server's own user must enter
    data, port = folder / "data", free_port()
    as_user = {"user": "postgres"} if os.geteuid() == 0 else {}  # initdb refuses to run as root
    subprocess.run(
        [PG_BIN / "initdb", "-D", data, "-U", "sz", "--auth=trust"], check=True, capture_output=True, **as_user
    )
    proc = subprocess.Popen(
        [PG_BIN / "postgres", "-D", data, "-p", str(port), "-k", folder, "-h", "127.0.0.1", "-F"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        **as_user,
    )
    try:
        deadline = time.monotonic() + 30
        while not port_open("127.0.0.1", port) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert port_open("127.0.0.1", port), "postgres did not start"
        yield f"postgresql+psycopg://sz@127.0.0.1:{port}/postgres"
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(folder, ignore_errors=True)


def _letters(n: int, at: datetime) -> list[DeadLetter]:
    return [
        DeadLetter(at + timedelta(microseconds=i), "gw/gw-1/json/x", b"{bad", "malformed", "line 1") for i in range(n)
    ]


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path) -> Iterator[DeadLetterStore]:
    url = f"sqlite:///{tmp_path / 'dl.db'}" if request.param == "sqlite" else request.getfixturevalue("postgresql_url")
    s = DeadLetterStore(url)
    try:
        yield s
    finally:
        with s.engine.begin() as c:
            c.exec_driver_sql("DELETE FROM deadletters")
        s.close()


def test_a_letter_stored_twice_is_one_row(store):
    at = datetime(2026, 5, 1, 12, tzinfo=UTC)
    letters = _letters(5, at)
    store.add(letters)
    store.add(letters)  # the same messages redelivered after a crash, their receipt times from the journal
    store.add([*letters[:2], *letters[:2]])  # and twice within one batch
    assert store.counts() == {"malformed": 5}
    # the same content received at another time is another letter (a gateway sending it again)
    store.add(_letters(1, at + timedelta(seconds=1)))
    assert store.counts() == {"malformed": 6}


def test_write_stage_letters_are_keyed_by_database_and_line():
    """A line InfluxDB refuses again after a redelivery is the same letter, whatever the refusal time."""
    line = b"air,sensor=x co2=1i 1"
    first = DeadLetter(datetime(2026, 5, 1, tzinfo=UTC), "influxdb/raw", line, "rejected_by_influxdb", "e", "write")
    again = DeadLetter(datetime(2026, 5, 2, tzinfo=UTC), "influxdb/raw", line, "rejected_by_influxdb", "e", "write")
    other_db = DeadLetter(first.received_at, "influxdb/ops", line, "rejected_by_influxdb", "e", "write")
    assert letter_key(first) == letter_key(again) != letter_key(other_db)


def test_a_store_made_before_keys_gets_the_column(tmp_path):
    """Stores created by an older version have no key column: it is added, old rows are kept."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as c:
        c.execute(
            "CREATE TABLE deadletters (id INTEGER PRIMARY KEY, received_at DATETIME NOT NULL, topic TEXT NOT NULL,"
            " payload BLOB NOT NULL, reason VARCHAR(64) NOT NULL, detail TEXT NOT NULL, stage VARCHAR(16) NOT NULL,"
            " status VARCHAR(16) NOT NULL, attempts INTEGER NOT NULL, updated_at DATETIME NOT NULL)"
        )
        c.execute(
            "INSERT INTO deadletters VALUES (1, '2026-01-01 00:00:00', 't', x'00', 'malformed', '', 'decode',"
            " 'pending', 0, '2026-01-01 00:00:00')"
        )
    store = DeadLetterStore(f"sqlite:///{path}")
    try:
        letters = _letters(2, datetime(2026, 5, 1, tzinfo=UTC))
        store.add(letters)
        store.add(letters)
        assert store.counts() == {"malformed": 3}
    finally:
        store.close()
