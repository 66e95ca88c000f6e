"""Push Smart Zone's Grafana objects (one folder, datasources, dashboards) through Grafana's HTTP API.

``push(api, plan, message)`` makes a Grafana instance match a ``PushPlan``: it reads every object first
(GET) and writes (POST/PUT) only what is missing or differs, so pushing the same plan twice sends no write
at all the second time. It uses ``grafana_client`` (5.x), which maps to these endpoints:

- folder:     ``GET /api/folders/:uid``, ``POST /api/folders``, ``PUT /api/folders/:uid`` (title, overwrite)
- datasource: ``GET /api/datasources/uid/:uid``, ``POST /api/datasources``, ``PUT /api/datasources/uid/:uid``
- dashboard:  ``GET /api/dashboards/uid/:uid``, ``POST /api/dashboards/db`` with
  ``{"dashboard", "folderUid", "overwrite": true, "message"}`` so Grafana keeps a version with the message.

Comparison ignores what the server manages itself: dashboard ``id``/``version``/``iteration``, datasource
``id``/``orgId``/``version``/``typeLogoUrl``/``readOnly``/``secureJsonFields``... and folder metadata.
A dashboard found in another folder is moved into the plan's folder (reported as updated).

Secrets: Grafana never returns ``secureJsonData``, only ``secureJsonFields: {"password": true}``. So a
secret is sent when a datasource is created, or when Grafana reports that field as not set; otherwise it
is not a change. To rotate a password, push with ``rotate_secrets=True``: every datasource that has
``secureJsonData`` is then PUT with its secrets (and reported updated), since we cannot tell if they differ.

Errors (401/403, other refusals, connection refused, timeouts) raise ``PushError`` naming the object and
the HTTP status, never the token. The behaviour is checked by a contract test against a fake that follows
Grafana's published HTTP API (``tests/dashboards/test_push.py``), because Grafana cannot run in CI here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

try:  # the optional extra smartzone[grafana]: a plain install leaves urllib3 alone (pyproject.toml)
    import niquests.exceptions
    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaException, GrafanaTimeoutError, TokenAuth
except ModuleNotFoundError as exc:
    raise ModuleNotFoundError(
        f"pushing to Grafana needs grafana-client ({exc}): pip install 'smartzone[grafana]'", name=exc.name
    ) from exc

__all__ = ["PushError", "PushPlan", "PushReport", "connect", "push"]

UID_RE = re.compile(r"^[a-zA-Z0-9_-]{1,40}$")

# Keys Grafana sets itself: never sent, never compared.
DASHBOARD_SERVER_KEYS = frozenset({"id", "version", "iteration"})
DATASOURCE_SERVER_KEYS = frozenset(
    {"id", "orgId", "version", "typeLogoUrl", "typeName", "readOnly", "secureJsonFields", "apiVersion"}
)
# What Grafana stores for a datasource field the request left out (PUT replaces the whole object).
DATASOURCE_DEFAULTS: dict[str, Any] = {
    "access": "proxy",
    "url": "",
    "user": "",
    "database": "",
    "basicAuth": False,
    "basicAuthUser": "",
    "withCredentials": False,
    "isDefault": False,
    "jsonData": {},
}

T = TypeVar("T")


class PushError(Exception):
    """Grafana refused or could not be reached; ``status`` is the HTTP status (None without a response).

    ``report`` holds what was done before the failure.
    """

    def __init__(self, message: str, *, status: int | None = None, report: PushReport | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.report = report


@dataclass(frozen=True)
class PushPlan:
    """What Grafana should hold: one folder, datasources (API objects) and dashboards (full JSON models).

    Validated on construction (``ValueError``): uids match ``^[a-zA-Z0-9_-]{1,40}$`` and are unique per kind,
    datasources have a name and type, dashboards a uid and title.
    """

    folder_uid: str
    folder_title: str
    datasources: list[dict]
    dashboards: list[dict]

    def __post_init__(self) -> None:
        _check_uid("folder uid", self.folder_uid)
        if not isinstance(self.folder_title, str) or not self.folder_title.strip():
            raise ValueError("folder title must be a non-empty string")
        seen_uids: set[str] = set()
        seen_names: set[str] = set()
        for ds in self.datasources:
            if not isinstance(ds, dict):
                raise ValueError(f"datasource must be a dict, got {type(ds).__name__}")
            uid = _check_uid("datasource uid", ds.get("uid"))
            for key in ("name", "type"):
                if not isinstance(ds.get(key), str) or not ds[key].strip():
                    raise ValueError(f"datasource {uid} needs a non-empty {key!r}")
            if uid in seen_uids:
                raise ValueError(f"duplicate datasource uid {uid!r}")
            if ds["name"] in seen_names:  # Grafana also requires unique names
                raise ValueError(f"duplicate datasource name {ds['name']!r}")
            secure = ds.get("secureJsonData", {})
            if not isinstance(secure, dict) or not all(isinstance(v, str) for v in secure.values()):
                raise ValueError(f"datasource {uid}: secureJsonData must map field names to strings")
            seen_uids.add(uid)
            seen_names.add(ds["name"])
        seen_uids = set()
        for dash in self.dashboards:
            if not isinstance(dash, dict):
                raise ValueError(f"dashboard must be a dict, got {type(dash).__name__}")
            uid = _check_uid("dashboard uid", dash.get("uid"))
            if not isinstance(dash.get("title"), str) or not dash["title"].strip():
                raise ValueError(f"dashboard {uid} needs a non-empty 'title'")
            if uid in seen_uids:
                raise ValueError(f"duplicate dashboard uid {uid!r}")
            seen_uids.add(uid)


@dataclass
class PushReport:
    """Labels such as ``"folder smartzone"``, ``"datasource smartzone-open"``, ``"dashboard smartzone-overview"``."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def changed(self) -> bool:
        return bool(self.created or self.updated)


def connect(url: str, token: str, *, timeout: float = 10.0, verify: bool = True) -> GrafanaApi:
    """A client for the Grafana at ``url`` (``http(s)://host[:port][/sub/path]``) with a Bearer token.

    Sends no request: errors surface on the first call of ``push``. Unlike ``GrafanaApi.from_url`` in
    grafana-client 5.1.4, a sub-path without trailing slash works (``/grafana`` -> ``/grafana/api``).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("Grafana URL must look like http(s)://host[:port][/path]")
    if parts.username or parts.password:
        raise ValueError("the Grafana URL must not carry credentials: pass an API token instead")
    if not isinstance(token, str) or not token or any(c.isspace() for c in token):
        raise ValueError("the Grafana API token must be a non-empty string without whitespace")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    prefix = parts.path.strip("/")
    api = GrafanaApi(
        auth=TokenAuth(token),
        host=host,
        port=parts.port,
        url_path_prefix=f"{prefix}/" if prefix else "",
        protocol=parts.scheme,
        verify=verify,
        timeout=timeout,
    )
    # grafana-client declares url only as "self.url = None" (inferred as None); from_url sets a str the same way
    api.url = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))  # type: ignore[assignment]
    return api


def push(api: GrafanaApi, plan: PushPlan, message: str, *, rotate_secrets: bool = False) -> PushReport:
    """Create or update the plan's folder, then datasources, then dashboards; return what happened.

    ``message`` becomes the version-history message of every dashboard written. ``rotate_secrets=True``
    re-sends every datasource's ``secureJsonData`` (the only way to change a password already set).
    Raises ``PushError`` (with ``.report`` of what was done so far) if Grafana refuses or is unreachable.
    """
    if not isinstance(message, str):
        raise TypeError("message must be a string")
    report = PushReport()
    run = _Runner(api, report)
    _push_folder(run, plan)
    for ds in plan.datasources:
        _push_datasource(run, ds, rotate_secrets)
    for dash in plan.dashboards:
        _push_dashboard(run, dash, plan.folder_uid, message)
    return report


# --- objects -----------------------------------------------------------------------------------------


def _push_folder(run: _Runner, plan: PushPlan) -> None:
    label = f"folder {plan.folder_uid}"
    current = run.get(f"read {label}", run.api.folder.get_folder, plan.folder_uid)
    if current is None:
        run.call(f"create {label}", run.api.folder.create_folder, plan.folder_title, uid=plan.folder_uid)
        run.report.created.append(label)
    elif current.get("title") != plan.folder_title:
        # overwrite=true: no need to send the folder's current version
        run.call(
            f"update {label}", run.api.folder.update_folder, plan.folder_uid, title=plan.folder_title, overwrite=True
        )
        run.report.updated.append(label)
    else:
        run.report.unchanged.append(label)


def _push_datasource(run: _Runner, ds: dict, rotate_secrets: bool) -> None:
    uid = ds["uid"]
    label = f"datasource {uid}"
    wanted = _plain_json({k: v for k, v in ds.items() if k != "secureJsonData" and k not in DATASOURCE_SERVER_KEYS})
    secrets: dict[str, str] = dict(ds.get("secureJsonData") or {})
    current = run.get(f"read {label}", run.api.datasource.get_datasource_by_uid, uid)
    if current is None:
        body = {**wanted, "secureJsonData": secrets} if secrets else wanted
        run.call(f"create {label}", run.api.datasource.create_datasource, body)
        run.report.created.append(label)
        return
    # Secrets cannot be read back: send those Grafana lacks, or all of them when rotating.
    stored = current.get("secureJsonFields") or {}
    to_send = dict(secrets) if rotate_secrets else {k: v for k, v in secrets.items() if not stored.get(k)}
    if _datasource_same(current, wanted) and not to_send:
        run.report.unchanged.append(label)
        return
    if current.get("readOnly"):
        raise PushError(
            f"cannot update {label}: it is read-only in Grafana (provisioned from a file)", report=run.report
        )
    # PUT replaces the whole datasource; secrets left out keep their stored value.
    body = {**wanted, "secureJsonData": to_send} if to_send else wanted
    run.call(f"update {label}", run.api.datasource.update_datasource_by_uid, uid, body)
    run.report.updated.append(label)


def _push_dashboard(run: _Runner, dash: dict, folder_uid: str, message: str) -> None:
    uid = dash["uid"]
    label = f"dashboard {uid}"
    wanted = _plain_json({k: v for k, v in dash.items() if k not in DASHBOARD_SERVER_KEYS})
    current = run.get(f"read {label}", run.api.dashboard.get_dashboard, uid)
    if current is not None:
        meta = current.get("meta") or {}
        model = {k: v for k, v in (current.get("dashboard") or {}).items() if k not in DASHBOARD_SERVER_KEYS}
        if model == wanted and (meta.get("folderUid") or "") == folder_uid:
            run.report.unchanged.append(label)
            return
        if meta.get("provisioned"):
            raise PushError(f"cannot update {label}: it is provisioned from a file in Grafana", report=run.report)
    body = {"dashboard": wanted, "folderUid": folder_uid, "overwrite": True, "message": message}
    run.call(f"{'create' if current is None else 'update'} {label}", run.api.dashboard.update_dashboard, body)
    (run.report.created if current is None else run.report.updated).append(label)


def _datasource_same(current: dict, wanted: dict) -> bool:
    """Fields we set, and fields Grafana would reset to their default on our PUT, are equal."""
    for key in DATASOURCE_DEFAULTS.keys() | wanted.keys():
        have = current.get(key, DATASOURCE_DEFAULTS.get(key))
        if key == "jsonData" and have is None:
            have = {}
        if have != wanted.get(key, DATASOURCE_DEFAULTS.get(key)):
            return False
    return True


# --- plumbing ----------------------------------------------------------------------------------------


class _Runner:
    """Calls grafana-client and turns its exceptions into ``PushError`` without the token."""

    def __init__(self, api: GrafanaApi, report: PushReport) -> None:
        self.api = api
        self.report = report

    def get(self, what: str, fn: Callable[..., T], *args: Any) -> T | None:
        """A GET whose 404 means "missing" (grafana-client raises GrafanaClientError for it)."""
        return self.call(what, fn, *args, missing_ok=True)

    def call(self, what: str, fn: Callable[..., T], *args: Any, missing_ok: bool = False, **kwargs: Any) -> T | None:
        try:
            return fn(*args, **kwargs)
        except GrafanaTimeoutError as exc:
            raise self._error(f"cannot {what}: Grafana at {self._where()} timed out", None) from exc
        except GrafanaException as exc:
            status = exc.status_code or None
            if status == 404 and missing_ok:
                return None
            raise self._error(f"cannot {what}: {_explain(status, exc.response)}", status) from exc
        except niquests.exceptions.RequestException as exc:  # connection refused, DNS, TLS...
            reason = type(exc).__name__
            raise self._error(f"cannot {what}: Grafana at {self._where()} is unreachable ({reason})", None) from exc

    def _where(self) -> str:
        return self.api.client.url.removesuffix("/api")

    def _error(self, message: str, status: int | None) -> PushError:
        auth = self.api.client.auth
        for secret in (getattr(auth, "token", None), getattr(auth, "password", None)):
            if isinstance(secret, str) and secret:
                message = message.replace(secret, "***")
        return PushError(message, status=status, report=self.report)


def _explain(status: int | None, response: object) -> str:
    text = str(response.get("message") or "") if isinstance(response, dict) else ""
    # Grafana's own message, unless it only repeats the status phrase
    detail = f": {text[:200]}" if text and text.lower() not in ("unauthorized", "forbidden") else ""
    if status == 401:
        return f"HTTP 401 Unauthorized{detail} (is the API token valid?)"
    if status == 403:
        return f"HTTP 403 Forbidden{detail} (the token lacks permission; it needs the Editor or Admin role)"
    if status == 409:
        return f"HTTP 409 Conflict{detail} (an object with the same name may exist under another uid)"
    if status is None:
        return f"request failed{detail}"
    return f"HTTP {status}{detail}"


def _plain_json(value: T) -> T:
    """A deep copy with JSON types only (tuples -> lists...), as Grafana will echo it back."""
    return json.loads(json.dumps(value))


def _check_uid(what: str, uid: object) -> str:
    if not isinstance(uid, str) or not UID_RE.match(uid):
        raise ValueError(f"{what} must match {UID_RE.pattern}, got {uid!r}")
    return uid
