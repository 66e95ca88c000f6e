"""A small world for the experiments service tests: a store with users, an artifact and heard gateways,
on SQLite and on PostgreSQL, shared by a module (``module_sql_url``) and reset between tests."""

from __future__ import annotations

import io
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from experiments.db import Gateway, User
from experiments.tokens import create_token
from smartzone.registry import Registry


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_sql_url(request, tmp_path_factory) -> Iterator[str]:
    """A fresh store's URL for a whole module: SQLite, and a database of its own on the session's PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('sql') / 'experiments.db'}"
        return
    postgres = request.getfixturevalue("postgres")
    name = f"expm_{uuid.uuid4().hex[:10]}"
    postgres.psql(f"CREATE ROLE {name} LOGIN PASSWORD '{name}'")
    postgres.psql(f"CREATE DATABASE {name} OWNER {name}")
    try:
        yield postgres.url(name, name, name)
    finally:
        postgres.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        postgres.psql(f"DROP ROLE IF EXISTS {name}")


NOW = datetime(2026, 12, 2, 17, 0, tzinfo=UTC)
SCRIPT = b"import os\nprint('probe', os.environ.get('SZX_GATEWAY_ID'))\n"


def wheel(
    name: str = "probe",
    version: str = "1.0",
    entry: str | None = "[smartzone.experiment]\nmain = probe.run:main\n",
    drop: tuple[str, ...] = (),
    extra: dict[str, bytes] | None = None,
) -> bytes:
    """A wheel's bytes, built by hand (the layout PEP 427 fixes), minus the files in ``drop``."""
    info = f"{name}-{version}.dist-info"
    files = {
        "probe/__init__.py": b"",
        "probe/run.py": b"def main():\n    return 0\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/RECORD": b"",
        **({f"{info}/entry_points.txt": entry.encode()} if entry is not None else {}),
        **(extra or {}),
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for path, data in files.items():
            if path.rsplit("/", 1)[-1] not in drop:
                z.writestr(path, data)
    return buf.getvalue()


@dataclass
class Users:
    alice: User
    bob: User
    ops: User
    secrets: dict[str, str]  # name -> bearer secret


def make_users(sessions: sessionmaker[Session]) -> Users:
    secrets = {}
    for name, role in (("alice", "experimenter"), ("bob", "experimenter"), ("ops", "operator")):
        secrets[name] = create_token(sessions, name, role, NOW)[1]
    with sessions() as session:
        users = {u.name: u for u in session.scalars(select(User)).all()}
        for u in users.values():
            session.expunge(u)
    return Users(users["alice"], users["bob"], users["ops"], secrets)


def hear_all(sessions: sessionmaker[Session], registry: Registry, at: datetime = NOW) -> None:
    """Every registry gateway online with a passed self-test, as the scheduler would record it."""
    with sessions.begin() as session:
        for gw in registry.gateways:
            session.merge(Gateway(id=gw, online=True, status_at=at, selftest_failed=0, selftest_at=at))


def set_gateway(sessions: sessionmaker[Session], gw: str, **values: object) -> None:
    with sessions.begin() as session:
        row = session.get(Gateway, gw)
        if row is None:
            row = Gateway(id=gw)
            session.add(row)
        for k, v in values.items():
            setattr(row, k, v)


def reset(sessions: sessionmaker[Session], registry: Registry) -> None:
    """Forget every experiment and artifact's use; every gateway heard again (users and tokens stay)."""
    from experiments.db import Event, Experiment, ExperimentResource

    with sessions.begin() as session:
        for table in (Event, ExperimentResource, Experiment, Gateway):
            session.query(table).delete()
    hear_all(sessions, registry)
