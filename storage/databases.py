"""Which InfluxDB database holds each store, and creating them with their retention policies.

The one mapping from ``smartzone.model.Store`` to database names (from the settings), used by the worker,
backfill, replay, the self-metrics and the charter job. Retention: raw and pseudonymous as the data charter
sets them (the caller passes the charter's ``retention`` section: storage does not read the charter), ops
and open from the settings.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from smartzone.model import Store
from smartzone.settings import Settings
from storage.influx import Influx


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
    }


def retentions(settings: Settings, charter: CharterRetention) -> dict[Store, str]:
    """Store -> retention duration."""
    return {
        Store.RAW: charter.raw,
        Store.OPS: settings.influx.ops_retention,
        Store.PSEUDONYMOUS: charter.pseudonymous,
        Store.OPEN: settings.charter.open_retention,
    }


def ensure_databases(
    influx: Influx, settings: Settings, charter: CharterRetention, stores: Iterable[Store] = tuple(Store)
) -> None:
    """Create the stores' databases with their retention policies (or bring the policies up to date)."""
    names, durations = databases(settings), retentions(settings, charter)
    for store in stores:
        influx.ensure_database(names[store], durations[store])
