"""The API's only way to InfluxDB: the open database, read-only, by allow-listed names.

``OpenData`` holds the name of one database, the charter's open database, and no other: there is no
parameter through which a request could name the raw, pseudonymous or ops databases. Every query is
built from identifiers that are checked against the charter (dataset ids, their allow-listed fields,
the open points' tags) and quoted; every value goes in as a bound parameter.
"""

from __future__ import annotations

from typing import Any

from datacharter.charter import POINT_TAGS, Charter, Dataset
from smartzone.settings import Settings
from storage.influx import Influx, quote_ident

TAGS = (*POINT_TAGS, "profile")


class OpenData:
    def __init__(self, settings: Settings, charter: Charter, influx: Influx | None = None) -> None:
        self.database = settings.charter.open_database
        self.charter = charter
        self._influx = influx or Influx(settings.influx)

    def close(self) -> None:
        self._influx.close()

    def ping(self) -> bool:
        return self._influx.ping()

    def ready(self) -> bool:
        """InfluxDB answers and the open database exists."""
        try:
            self._influx.query("SHOW MEASUREMENTS LIMIT 1", self.database)
            return True
        except Exception:
            return False

    # -- checked names ---------------------------------------------------------------------------------
    def dataset(self, name: str) -> Dataset:
        """The charter's dataset ``name`` (KeyError otherwise): the only measurements a query may name."""
        return self.charter.datasets[name]

    def measurement(self, name: str) -> str:
        self.dataset(name)
        return quote_ident(name)

    def field(self, dataset: str, name: str) -> str:
        if name not in self.dataset(dataset).allowed_fields:
            raise KeyError(name)
        return quote_ident(name)

    # -- queries ----------------------------------------------------------------------------------------
    def rows(self, q: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self._influx.rows(q, self.database, params)

    def frame(self, q: str, params: dict[str, Any] | None = None):
        return self._influx.frame(q, self.database, params, strings=TAGS)

    def csv_stream(self, q: str, params: dict[str, Any] | None = None):
        return self._influx.csv_stream(q, self.database, params)

    def coverage(self, dataset: str) -> tuple[int, int] | None:
        """(first, last) time of the dataset's published points, ns; None when it has none yet."""
        m = self.measurement(dataset)
        first = self.rows(f'SELECT first("n_contributors") FROM {m}')  # noqa: S608 - checked identifier
        last = self.rows(f'SELECT last("n_contributors") FROM {m}')  # noqa: S608 - checked identifier
        if not first or not last:
            return None
        return int(first[0]["time"]), int(last[0]["time"])

    def cells(self, dataset: str | None = None) -> set[str]:
        """The cells that have published points (of one dataset, or of all)."""
        names = [dataset] if dataset else list(self.charter.datasets)
        out: set[str] = set()
        for name in names:
            m = self.measurement(name)
            for r in self.rows(f'SHOW TAG VALUES FROM {m} WITH KEY = "cell"'):
                out.add(r["value"])
        return out
