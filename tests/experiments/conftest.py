"""Fixtures of the experiments store: a fresh SQL URL on SQLite, and on Debian's PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest


@pytest.fixture
def pg_url(postgres) -> Iterator[str]:
    """A fresh database with its own owner on the session's PostgreSQL (dropped afterwards)."""
    name = f"exp_{uuid.uuid4().hex[:10]}"
    postgres.psql(f"CREATE ROLE {name} LOGIN PASSWORD '{name}'")
    postgres.psql(f"CREATE DATABASE {name} OWNER {name}")
    try:
        yield postgres.url(name, name, name)
    finally:
        postgres.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        postgres.psql(f"DROP ROLE IF EXISTS {name}")


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'experiments.db'}"
    return request.getfixturevalue("pg_url")
