"""InfluxDB over the HTTP API every generation serves: ``POST /write`` (line protocol) and ``/query`` (InfluxQL).

InfluxDB 1.x serves it natively, 2.x through its v1-compatibility API, 3.x Core natively. Outcomes of
a write (sorted as Telegraf's outputs do, adapted to what influxd 1.6 really answers):

- 204: written (influxd has it in its WAL, fsynced).
- 400: InfluxDB may have written part of the batch; ``BadRequest(400)``: the caller bisects and
  dead-letters the lines it names.
- 404: database not found: ``DatabaseNotFound``; the caller creates the databases.
- 413: body too large: ``BadRequest(413)``: the caller splits the batch.
- 401/403: ``Unauthorised`` (a ``ConfigurationError``): credentials are wrong; retrying cannot help.
- connection errors, 429, 5xx: ``Unavailable(retry_after=...)``.

Queries raise the same types (a query naming a missing database: ``DatabaseNotFound``). Apart from
``Unauthorised`` (a ``ConfigurationError``), every error is an
``InfluxError`` (``smartzone.errors``): callers branch on its type, never on its text.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import logging
import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import httpx

from smartzone.errors import (
    BadRequest,
    ConfigurationError,
    DatabaseNotFound,
    InfluxError,
    Unauthorised,
    Unavailable,
)
from smartzone.names import check_identifier, parse_duration
from smartzone.settings import InfluxSettings

if TYPE_CHECKING:
    import pandas as pd
    from _typeshed import WriteableBuffer

log = logging.getLogger(__name__)

RETENTION_POLICY = "smartzone"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def quote_ident(name: str) -> str:
    """A validated identifier, double-quoted for InfluxQL."""
    return f'"{check_identifier(name)}"'


_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


def quote_user(name: str) -> str:
    """A validated user name (letters, digits, ``_ . -``), double-quoted for InfluxQL."""
    if not _USER.fullmatch(name):
        raise ConfigurationError(f"{name!r} is not a valid InfluxDB user name (letters, digits, _ . - only, max 64)")
    return f'"{name}"'


def quote_string(text: str) -> str:
    """A string literal for InfluxQL statements that cannot bind values (``CREATE USER ... WITH PASSWORD``):
    backslashes and single quotes escaped, control characters refused."""
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ConfigurationError("control characters cannot appear in an InfluxQL string (a password?)")
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Influx:
    """A small synchronous client for one InfluxDB server. Thread-safe (httpx.Client is)."""

    def __init__(self, settings: InfluxSettings) -> None:
        self.settings = settings
        auth = None
        if settings.username:
            password = settings.password.get_secret_value() if settings.password else ""
            auth = httpx.BasicAuth(settings.username, password)
        self._client = httpx.Client(
            base_url=settings.url,
            auth=auth,
            timeout=settings.timeout,
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=4),
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Influx:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- health -----------------------------------------------------------------------------------
    def ping(self, timeout: float = 2.0) -> bool:
        try:
            return self._client.get("/ping", timeout=timeout).status_code == 204
        except httpx.HTTPError:
            return False

    # -- writes -----------------------------------------------------------------------------------
    def write(self, database: str, body: bytes) -> None:
        """Write line protocol (ns precision) or raise an ``InfluxError``."""
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if self.settings.gzip and len(body) > 1024:
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        try:
            r = self._client.post("/write", params={"db": database, "precision": "ns"}, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise Unavailable(None, f"cannot reach InfluxDB at {self.settings.url}: {exc}") from exc
        status = r.status_code
        if status == 204:
            return
        text = _error_text(r)
        raise _error(status, text, _retry_after(r))

    # -- queries ----------------------------------------------------------------------------------
    def query(
        self, q: str, database: str | None = None, params: dict[str, Any] | None = None, *, write: bool = False
    ) -> list[dict[str, Any]]:
        """Run InfluxQL; return the statement results. Values go in ``params`` (bound), never into ``q``."""
        data: dict[str, str] = {"q": q, "epoch": "ns"}
        if database:
            data["db"] = check_identifier(database)
        if params:
            data["params"] = json.dumps(params)
        try:
            # results over loopback: compressing them costs influxd more CPU than the bytes it saves
            r = (
                self._client.post("/query", data=data, headers=_PLAIN)
                if write
                else self._client.get("/query", params=data, headers=_PLAIN)
            )
        except httpx.HTTPError as exc:
            raise Unavailable(None, f"cannot reach InfluxDB at {self.settings.url}: {exc}") from exc
        if r.status_code >= 400 and not r.headers.get("content-type", "").startswith("application/json"):
            raise _error(r.status_code, _error_text(r))
        doc = r.json()
        if "error" in doc:
            raise _error(r.status_code, doc["error"])
        results = doc.get("results", [])
        for res in results:
            if "error" in res:
                raise _error(r.status_code, res["error"])
        return results

    def rows(self, q: str, database: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """A SELECT's rows as dicts (tags of GROUP BY merged in), across all series."""
        out: list[dict[str, Any]] = []
        for res in self.query(q, database, params):
            for series in res.get("series", []):
                tags = series.get("tags", {})
                cols = series["columns"]
                for values in series["values"]:
                    row = dict(zip(cols, values, strict=True))
                    row.update(tags)
                    row["_measurement"] = series.get("name")
                    out.append(row)
        return out

    @contextlib.contextmanager
    def csv_stream(self, q: str, database: str, params: dict[str, Any] | None = None) -> Iterator[io.RawIOBase]:
        """A SELECT's rows as InfluxDB's CSV, as a readable binary stream (read while InfluxDB sends)."""
        data = {"q": q, "epoch": "ns", "db": check_identifier(database)}
        if params:
            data["params"] = json.dumps(params)
        try:
            with self._client.stream("POST", "/query", data=data, headers={"Accept": "application/csv", **_PLAIN}) as r:
                if r.status_code >= 400:
                    r.read()
                    raise _error(r.status_code, _error_text(r))
                yield _ByteStream(r.iter_raw(1 << 20))
        except httpx.HTTPError as exc:
            raise Unavailable(None, f"cannot reach InfluxDB at {self.settings.url}: {exc}") from exc

    def csv(self, q: str, database: str, params: dict[str, Any] | None = None) -> bytes:
        """A SELECT's rows as InfluxDB's CSV (``name,tags,time,...``), unparsed."""
        data = {"q": q, "epoch": "ns", "db": check_identifier(database)}
        if params:
            data["params"] = json.dumps(params)
        try:
            r = self._client.post("/query", data=data, headers={"Accept": "application/csv", **_PLAIN})
        except httpx.HTTPError as exc:
            raise Unavailable(None, f"cannot reach InfluxDB at {self.settings.url}: {exc}") from exc
        if r.status_code >= 400:
            raise _error(r.status_code, _error_text(r))
        return r.content

    def frame(
        self, q: str, database: str, params: dict[str, Any] | None = None, strings: tuple[str, ...] = ()
    ) -> pd.DataFrame:
        """A SELECT's rows as a pandas DataFrame, read from InfluxDB's CSV output (far cheaper to parse
        than JSON). Columns: ``time`` (int ns), then tags (GROUP BY tags too) and fields; the columns named
        in ``strings`` (tags)
        are read as text, never as numbers (a hex pseudonym such as ``1e30...`` is not a float)."""
        import pandas as pd

        body = self.csv(q, database, params)
        if not body.strip():
            return pd.DataFrame()
        df = pd.read_csv(
            io.BytesIO(body), keep_default_na=False, na_values=[""], low_memory=False, dtype=dict.fromkeys(strings, str)
        )
        if "error" in df.columns and len(df.columns) <= 2:
            raise _error(200, str(df["error"].iloc[0]))
        if "tags" in df.columns and df["tags"].notna().any():  # GROUP BY tags: "k=v,k=v" per series
            parsed = {
                t: dict(kv.split("=", 1) for kv in t.split(",") if "=" in kv) for t in df["tags"].dropna().unique()
            }
            for key in sorted({k for d in parsed.values() for k in d}):
                df[key] = df["tags"].map(lambda t, key=key: parsed.get(t, {}).get(key, ""))
        return df.drop(columns=[c for c in ("name", "tags") if c in df.columns])

    def databases(self) -> set[str]:
        """``SHOW DATABASES``: for a user without admin rights, those it holds a privilege on."""
        return {
            row[0]
            for res in self.query("SHOW DATABASES")
            for series in res.get("series", [])
            for row in series.get("values", [])
        }

    def ensure_database(self, database: str, retention: str) -> None:
        """Create the database and its default retention policy, or bring the policy to ``retention``."""
        parse_duration(retention)
        db = quote_ident(database)
        self.query(f"CREATE DATABASE {db}", write=True)
        rp = quote_ident(RETENTION_POLICY)
        existing = {row["name"]: row for row in self.rows(f"SHOW RETENTION POLICIES ON {db}", database)}
        if RETENTION_POLICY in existing:
            self.query(f"ALTER RETENTION POLICY {rp} ON {db} DURATION {retention} DEFAULT", write=True)
        else:
            self.query(f"CREATE RETENTION POLICY {rp} ON {db} DURATION {retention} REPLICATION 1 DEFAULT", write=True)

    def drop_database(self, database: str) -> None:
        self.query(f"DROP DATABASE {quote_ident(database)}", write=True)


_PLAIN = {"Accept-Encoding": "identity"}


class _ByteStream(io.RawIOBase):
    """A readable stream over an iterator of byte blocks (an HTTP body as it arrives)."""

    def __init__(self, blocks: Iterable[bytes]) -> None:
        self._blocks = iter(blocks)
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: WriteableBuffer) -> int:
        while not self._buffer:
            try:
                self._buffer = next(self._blocks)
            except StopIteration:
                return 0
        view = memoryview(b)
        n = min(len(view), len(self._buffer))
        view[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


def _error(status: int, text: str, retry_after: float | None = None) -> InfluxError | Unauthorised:
    """The typed error for an InfluxDB answer. influxd 1.x names a missing database only in its text (on a
    query, with HTTP 200 or 404); this is the one place that reads it."""
    if status in (401, 403):
        return Unauthorised(status, text)
    if status == 404 or text.startswith("database not found"):
        return DatabaseNotFound(status, text)
    if status == 429 or status >= 500:
        return Unavailable(status, text, retry_after)
    return BadRequest(status, text)


def _error_text(r: httpx.Response) -> str:
    try:
        doc = r.json()
        if isinstance(doc, dict) and "error" in doc:
            return str(doc["error"])
    except ValueError:
        pass
    return r.text.strip()[:2000]
