"""Which InfluxDB database holds each store, creating them with their retention policies, and who may use them.

The one mapping from ``smartzone.model.Store`` to database names (from the settings), used by the worker,
backfill, replay, the self-metrics and the charter job. Retention: raw and pseudonymous as the data charter
sets them (the caller passes the charter's ``retention`` section: storage does not read the charter), ops,
open and experiments from the settings. The experiments database (protocol experiments' metrics, state
changes and reported phases) is written by ingest and read by Grafana only: no role of the charter or the
open-data API has a grant on it.

In a deployment with InfluxDB authentication (docker-compose), an admin makes the databases, their retention
policies and one user per service at start-up (``provision``, run by ``smartzone influx init``, compose's
``init`` service); each service then holds only the grants in ``ROLES`` and merely checks that its databases
are there (``ensure_databases``). Without authentication (local development, the tests) the services create
them themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from smartzone.errors import ConfigurationError, Unauthorised
from smartzone.model import Store
from smartzone.settings import Settings
from storage.influx import Influx, quote_ident, quote_string, quote_user

log = logging.getLogger(__name__)

INIT_HINT = "an admin creates them at start-up: `smartzone influx init` (docker-compose's `init` service)"


class CharterRetention(Protocol):
    """The charter's retention section (``Charter.doc.retention``): durations such as ``"30d"``."""

    raw: str
    pseudonymous: str


def databases(settings: Settings) -> dict[Store, str]:
    """Store -> database name."""
    return {
        Store.RAW: settings.influx.raw_database,
        Store.OPS: settings.influx.ops_database,
        Store.PSEUDONYMOUS: settings.influx.pseudonymous_database,
        Store.OPEN: settings.charter.open_database,
        Store.EXPERIMENTS: settings.influx.experiments_database,
    }


def retentions(settings: Settings, charter: CharterRetention) -> dict[Store, str]:
    """Store -> retention duration."""
    return {
        Store.RAW: charter.raw,
        Store.OPS: settings.influx.ops_retention,
        Store.PSEUDONYMOUS: charter.pseudonymous,
        Store.OPEN: settings.charter.open_retention,
        Store.EXPERIMENTS: settings.influx.experiments_retention,
    }


def create_databases(
    influx: Influx, settings: Settings, charter: CharterRetention, stores: Iterable[Store] = tuple(Store)
) -> None:
    """Create the stores' databases with their retention policies (or bring the policies up to date).
    Needs InfluxDB's admin privilege (or authentication off)."""
    names, durations = databases(settings), retentions(settings, charter)
    for store in stores:
        influx.ensure_database(names[store], durations[store])


def ensure_databases(
    influx: Influx, settings: Settings, charter: CharterRetention, stores: Iterable[Store] = tuple(Store)
) -> None:
    """What a service calls at start-up (and when a write finds no database). A service that logs in
    (``influx.username`` set) does not need the admin privilege: when its databases are there (``SHOW
    DATABASES`` lists those it holds a grant on) it leaves them and their retention policies to the init
    step. Otherwise, or without authentication, it creates them; a user that may not gets a
    ``ConfigurationError`` naming the databases and the init step (a wrong password stays ``Unauthorised``)."""
    stores = tuple(stores)
    names = databases(settings)
    if settings.influx.username:
        present = influx.databases()
        missing = [names[s] for s in stores if names[s] not in present]
        if not missing:
            return
    else:
        missing = [names[s] for s in stores]
    try:
        create_databases(influx, settings, charter, stores)
    except Unauthorised as exc:
        if exc.status == 401:
            raise
        raise ConfigurationError(
            f"InfluxDB user {settings.influx.username!r} has no grant on {', '.join(missing)} (missing, or not "
            f"granted to it) and may not create databases: {INIT_HINT}"
        ) from exc


# -- users and grants ---------------------------------------------------------------------------------
Privilege = Literal["READ", "WRITE", "ALL"]


@dataclass(frozen=True)
class Role:
    """One service's InfluxDB user: its default name, the environment variable holding its password (in
    ``.env`` for docker-compose) and its grants. Every database not named gets no privilege."""

    name: str
    user: str
    password_env: str
    grants: tuple[tuple[Store, Privilege], ...]
    why: str


ROLES = (
    Role(
        "ingest",
        "smartzone-ingest",
        "INFLUX_INGEST_PASSWORD",
        ((Store.RAW, "WRITE"), (Store.OPS, "WRITE"), (Store.PSEUDONYMOUS, "WRITE"), (Store.EXPERIMENTS, "WRITE")),
        "writes readings, sightings, experiments' metrics and events and its self-metrics; reads nothing",
    ),
    Role(
        "charter",
        "smartzone-charter",
        "INFLUX_CHARTER_PASSWORD",
        ((Store.RAW, "READ"), (Store.PSEUDONYMOUS, "READ"), (Store.OPEN, "WRITE"), (Store.OPS, "WRITE")),
        "reads raw and pseudonymised data; replaces windows of the open database (DELETE needs only WRITE); "
        "writes its run metrics to ops",
    ),
    Role("api", "smartzone-api", "INFLUX_API_PASSWORD", ((Store.OPEN, "READ"),), "reads the open database only"),
    Role(
        "grafana",
        "grafana",
        "GRAFANA_INFLUX_PASSWORD",
        ((Store.OPEN, "READ"), (Store.OPS, "READ"), (Store.EXPERIMENTS, "READ")),
        "the dashboards: open data, operations and the experiments on the gateways",
    ),
)


def grants(settings: Settings, role: Role) -> dict[str, Privilege | None]:
    """Database -> the role's privilege on it (None: none), for every store's database."""
    names = databases(settings)
    given = {names[store]: priv for store, priv in role.grants}
    return {db: given.get(db) for db in names.values()}


def provision(admin: Influx, settings: Settings, charter: CharterRetention, passwords: Mapping[str, str]) -> list[str]:
    """As InfluxDB's admin: every store's database and retention policy, then each role in ``passwords``
    (role name -> password) as a non-admin user with exactly its grants (others revoked; the password set
    again, so a changed secret takes effect). Idempotent; returns what it did, one line each."""
    create_databases(admin, settings, charter)
    done = [f"database {db}" for db in databases(settings).values()]
    users = {
        row[0]: bool(row[1])
        for res in admin.query("SHOW USERS")
        for series in res.get("series", [])
        for row in series.get("values", [])
    }
    for role in ROLES:
        if role.name not in passwords:
            continue
        user, pw = quote_user(role.user), quote_string(passwords[role.name])
        if role.user in users:
            admin.query(f"SET PASSWORD FOR {user} = {pw}", write=True)
            if users[role.user]:
                admin.query(f"REVOKE ALL PRIVILEGES FROM {user}", write=True)
        else:
            admin.query(f"CREATE USER {user} WITH PASSWORD {pw}", write=True)
        for db, priv in grants(settings, role).items():
            if priv is None:
                admin.query(f"REVOKE ALL ON {quote_ident(db)} FROM {user}", write=True)
            else:
                admin.query(f"GRANT {priv} ON {quote_ident(db)} TO {user}", write=True)
        given = ", ".join(f"{p} {db}" for db, p in grants(settings, role).items() if p)
        done.append(f"user {role.user}: {given}")
    return done
