"""An in-process fake of the Grafana HTTP API endpoints that ``dashboards.push`` uses, for contract tests.

Grafana cannot run on the test machines, so this fake follows Grafana's published HTTP API documentation
(https://grafana.com/docs/grafana/latest/developers/http_api/ : folder, data_source, dashboard,
dashboard_versions) for status codes and response bodies:

- ``GET /api/folders/:uid`` (404 ``{"message": "folder not found"}``), ``POST /api/folders`` (409 when the uid
  or title exists), ``PUT /api/folders/:uid`` (412 version-mismatch unless ``overwrite`` or the right version);
- ``GET /api/datasources/uid/:uid`` (``secureJsonFields`` instead of ``secureJsonData``),
  ``POST /api/datasources`` (``{"datasource", "id", "message": "Datasource added", "name"}``, 409 on a
  duplicate uid or name), ``PUT /api/datasources/uid/:uid`` (replaces the object; secrets not sent are kept;
  403 for read-only ones);
- ``GET /api/dashboards/uid/:uid`` (``{"dashboard", "meta"}``), ``POST /api/dashboards/db`` (bumps the version,
  keeps ``message`` in the history; no ``folderUid`` means the root "General" folder),
  ``GET /api/dashboards/uid/:uid/versions``;
- ``GET /api/health`` (no auth) and ``GET /api/frontend/settings``.

Every request is recorded (method, path, headers, JSON body). ``/api`` requests other than health need
``Authorization: Bearer <token>`` (else 401 ``{"message": "Unauthorized"}``); ``viewer_token`` may read but
gets 403 on writes. Unknown paths give 404 ``{"message": "Not found"}``.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

UID_RE = re.compile(r"^[a-zA-Z0-9_-]{1,40}$")
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
GRAFANA_VERSION = "11.3.0"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any  # decoded JSON, or None


class _Reply(Exception):
    """Raised by route handlers to answer with a status and JSON body."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


class FakeGrafana:
    """State (folders, datasources, dashboards, versions) plus a ThreadingHTTPServer on 127.0.0.1:0."""

    def __init__(self, token: str, *, viewer_token: str | None = None) -> None:
        self.token = token
        self.viewer_token = viewer_token
        self.requests: list[Request] = []
        self.folders: dict[str, dict] = {}
        self.datasources: dict[str, dict] = {}  # as GET returns them, minus secrets
        self.secrets: dict[str, dict[str, str]] = {}  # datasource uid -> secureJsonData as stored
        self.dashboards: dict[str, dict] = {}  # uid -> {"dashboard": model, "folderUid": str, "provisioned": bool}
        self.versions: dict[str, list[dict]] = {}  # uid -> history, oldest first
        self._next_id = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> FakeGrafana:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-grafana", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeGrafana:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # --- assertions helpers ------------------------------------------------------------------------

    def writes(self) -> list[Request]:
        return [r for r in self.requests if r.method in WRITE_METHODS]

    def calls(self) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.requests]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    # --- seeding (what someone else did in Grafana's UI), no request recorded -------------------------

    def seed_folder(self, uid: str, title: str) -> dict:
        with self._lock:
            return self._create_folder({"uid": uid, "title": title})

    def seed_datasource(self, ds: dict) -> dict:
        with self._lock:
            return self._create_datasource(dict(ds))["datasource"]

    def seed_dashboard(
        self, dashboard: dict, folder_uid: str = "", message: str = "", provisioned: bool = False
    ) -> dict:
        with self._lock:
            saved = self._save_dashboard({"dashboard": dashboard, "folderUid": folder_uid, "message": message})
            self.dashboards[dashboard["uid"]]["provisioned"] = provisioned
            return saved

    # --- routing -----------------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:
        with self._lock:
            try:
                self._authorize(method, path, headers)
                return 200, self._route(method, path, body)
            except _Reply as reply:
                return reply.status, reply.body

    def _authorize(self, method: str, path: str, headers: dict[str, str]) -> None:
        if path == "/api/health" or not path.startswith("/api/"):
            return
        auth = headers.get("authorization", "")
        if auth == f"Bearer {self.token}":
            return
        if self.viewer_token and auth == f"Bearer {self.viewer_token}":
            if method in WRITE_METHODS:
                raise _Reply(403, {"message": "You'll need additional permissions to perform this action."})
            return
        raise _Reply(401, {"message": "Unauthorized"})

    def _route(self, method: str, path: str, body: Any) -> Any:
        parts = path.strip("/").split("/")
        match method, parts:
            case "GET", ["api", "health"]:
                return {"commit": "fake", "database": "ok", "version": GRAFANA_VERSION}
            case "GET", ["api", "frontend", "settings"]:
                return {"buildInfo": {"version": GRAFANA_VERSION, "commit": "fake", "edition": "Open Source"}}
            case "GET", ["api", "folders", uid]:
                return self._get_folder(uid)
            case "POST", ["api", "folders"]:
                return self._create_folder(_object(body))
            case "PUT", ["api", "folders", uid]:
                return self._update_folder(uid, _object(body))
            case "GET", ["api", "datasources", "uid", uid]:
                return self._get_datasource(uid)
            case "POST", ["api", "datasources"]:
                return self._create_datasource(_object(body))
            case "PUT", ["api", "datasources", "uid", uid]:
                return self._update_datasource(uid, _object(body))
            case "GET", ["api", "dashboards", "uid", uid]:
                return self._get_dashboard(uid)
            case "GET", ["api", "dashboards", "uid", uid, "versions"]:
                if uid not in self.dashboards:
                    raise _Reply(404, {"message": "Dashboard not found"})
                return [dict(v) for v in reversed(self.versions[uid])]
            case "POST", ["api", "dashboards", "db"]:
                return self._save_dashboard(_object(body))
        raise _Reply(404, {"message": "Not found"})

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    # --- folders -----------------------------------------------------------------------------------

    def _get_folder(self, uid: str) -> dict:
        if uid not in self.folders:
            raise _Reply(404, {"message": "folder not found", "status": "not-found"})
        return dict(self.folders[uid])

    def _create_folder(self, body: dict) -> dict:
        title = body.get("title")
        if not isinstance(title, str) or not title.strip():
            raise _Reply(400, {"message": "folder title cannot be empty"})
        uid = body.get("uid") or secrets.token_hex(7)
        if not isinstance(uid, str) or not UID_RE.match(uid):
            raise _Reply(400, {"message": "uid contains illegal characters"})
        if uid in self.folders:
            raise _Reply(409, {"message": "a folder with the same uid already exists"})
        if any(f["title"] == title for f in self.folders.values()):
            raise _Reply(
                409, {"message": "a folder or dashboard in the general folder with the same name already exists"}
            )
        now = _now()
        folder = {
            "id": self._new_id(),
            "uid": uid,
            "title": title,
            "url": f"/dashboards/f/{uid}/{_slug(title)}",
            "hasAcl": False,
            "canSave": True,
            "canEdit": True,
            "canAdmin": True,
            "canDelete": True,
            "createdBy": "admin",
            "created": now,
            "updatedBy": "admin",
            "updated": now,
            "version": 1,
        }
        self.folders[uid] = folder
        return dict(folder)

    def _update_folder(self, uid: str, body: dict) -> dict:
        folder = self._get_folder(uid)
        if not body.get("overwrite") and body.get("version") != folder["version"]:
            raise _Reply(412, {"message": "The folder has been changed by someone else", "status": "version-mismatch"})
        title = body.get("title") or folder["title"]
        folder.update(
            title=title,
            url=f"/dashboards/f/{uid}/{_slug(title)}",
            version=folder["version"] + 1,
            updated=_now(),
        )
        self.folders[uid] = folder
        return dict(folder)

    # --- datasources -------------------------------------------------------------------------------

    def _datasource_view(self, uid: str) -> dict:
        view = json.loads(json.dumps(self.datasources[uid]))
        view["secureJsonFields"] = {k: True for k, v in self.secrets.get(uid, {}).items() if v}
        return view

    def _get_datasource(self, uid: str) -> dict:
        if uid not in self.datasources:
            raise _Reply(404, {"message": "Data source not found"})
        return self._datasource_view(uid)

    def _stored_datasource(self, body: dict, *, id_: int, uid: str, version: int, read_only: bool) -> dict:
        """All fields from the request; those left out get Grafana's zero values (PUT replaces)."""
        for key in ("name", "type"):
            if not isinstance(body.get(key), str) or not body[key]:
                raise _Reply(400, {"message": "bad request data", "messageId": f"datasource.{key}-required"})
        kind = body["type"]
        return {
            "id": id_,
            "uid": uid,
            "orgId": 1,
            "name": body["name"],
            "type": kind,
            "typeName": kind.capitalize(),
            "typeLogoUrl": f"public/app/plugins/datasource/{kind}/img/logo.svg",
            "access": body.get("access") or "proxy",
            "url": body.get("url", ""),
            "user": body.get("user", ""),
            "database": body.get("database", ""),
            "basicAuth": bool(body.get("basicAuth", False)),
            "basicAuthUser": body.get("basicAuthUser", ""),
            "withCredentials": bool(body.get("withCredentials", False)),
            "isDefault": bool(body.get("isDefault", False)),
            "jsonData": body.get("jsonData") or {},
            "version": version,
            "readOnly": read_only,
        }

    def _check_name_free(self, name: Any, uid: str) -> None:
        if any(ds["name"] == name and other != uid for other, ds in self.datasources.items()):
            raise _Reply(409, {"message": "data source with the same name already exists"})

    def _create_datasource(self, body: dict) -> dict:
        uid = body.get("uid") or secrets.token_hex(7)
        if not isinstance(uid, str) or not UID_RE.match(uid):
            raise _Reply(400, {"message": "bad request data"})
        if uid in self.datasources:
            raise _Reply(409, {"message": "data source with the same uid already exists"})
        self._check_name_free(body.get("name"), uid)
        stored = self._stored_datasource(body, id_=self._new_id(), uid=uid, version=1, read_only=False)
        self.datasources[uid] = stored
        self.secrets[uid] = dict(body.get("secureJsonData") or {})
        return {
            "datasource": self._datasource_view(uid),
            "id": stored["id"],
            "message": "Datasource added",
            "name": stored["name"],
        }

    def _update_datasource(self, uid: str, body: dict) -> dict:
        if uid not in self.datasources:
            raise _Reply(404, {"message": "Data source not found"})
        old = self.datasources[uid]
        if old["readOnly"]:
            raise _Reply(403, {"message": "Cannot update read-only data source"})
        if body.get("version") and body["version"] != old["version"]:
            raise _Reply(
                409, {"message": "Datasource has already been updated by someone else. Please reload and try again"}
            )
        self._check_name_free(body.get("name"), uid)
        new_uid = body.get("uid") or uid
        if new_uid != uid:
            raise _Reply(400, {"message": "the fake does not implement changing a datasource's uid"})
        stored = self._stored_datasource(body, id_=old["id"], uid=uid, version=old["version"] + 1, read_only=False)
        self.datasources[uid] = stored
        # Secrets not in the request keep their stored (encrypted) value.
        self.secrets[uid] = {**self.secrets.get(uid, {}), **(body.get("secureJsonData") or {})}
        return {
            "datasource": self._datasource_view(uid),
            "id": stored["id"],
            "message": "Datasource updated",
            "name": stored["name"],
        }

    # --- dashboards --------------------------------------------------------------------------------

    def _get_dashboard(self, uid: str) -> dict:
        if uid not in self.dashboards:
            raise _Reply(404, {"message": "Dashboard not found"})
        entry = self.dashboards[uid]
        model = json.loads(json.dumps(entry["dashboard"]))
        folder = self.folders.get(entry["folderUid"])
        history = self.versions[uid]
        meta = {
            "type": "db",
            "canSave": True,
            "canEdit": True,
            "canAdmin": True,
            "canStar": True,
            "canDelete": True,
            "slug": _slug(model["title"]),
            "url": f"/d/{uid}/{_slug(model['title'])}",
            "expires": "0001-01-01T00:00:00Z",
            "created": history[0]["created"],
            "updated": history[-1]["created"],
            "updatedBy": "admin",
            "createdBy": "admin",
            "version": model["version"],
            "hasAcl": False,
            "isFolder": False,
            "folderId": folder["id"] if folder else 0,
            "folderUid": entry["folderUid"],
            "folderTitle": folder["title"] if folder else "General",
            "folderUrl": folder["url"] if folder else "",
            "provisioned": entry.get("provisioned", False),
            "provisionedExternalId": "",
        }
        return {"dashboard": model, "meta": meta}

    def _save_dashboard(self, body: dict) -> dict:
        model = body.get("dashboard")
        if not isinstance(model, dict):
            raise _Reply(400, {"message": "bad request data"})
        model = json.loads(json.dumps(model))
        title = model.get("title")
        if not isinstance(title, str) or not title.strip():
            raise _Reply(400, {"message": "Dashboard title cannot be empty", "status": "empty-name"})
        uid = model.get("uid") or secrets.token_hex(7)
        if not isinstance(uid, str) or len(uid) > 40:
            raise _Reply(400, {"message": "uid too long, max 40 characters", "status": "uid-too-long"})
        if not UID_RE.match(uid):
            raise _Reply(400, {"message": "uid contains illegal characters", "status": "invalid-uid"})
        folder_uid = body.get("folderUid") or ""  # none given: the dashboard goes to (or moves to) the root
        if folder_uid and folder_uid not in self.folders:
            raise _Reply(400, {"message": "folder not found", "status": "not-found"})
        existing = self.dashboards.get(uid)
        if existing and existing.get("provisioned"):
            raise _Reply(400, {"message": "Cannot save provisioned dashboard", "status": "provisioned-dashboard"})
        if existing and not body.get("overwrite") and model.get("version") != existing["dashboard"]["version"]:
            raise _Reply(
                412, {"message": "The dashboard has been changed by someone else", "status": "version-mismatch"}
            )
        version = existing["dashboard"]["version"] + 1 if existing else 1
        model.update(id=existing["dashboard"]["id"] if existing else self._new_id(), uid=uid, version=version)
        self.dashboards[uid] = {"dashboard": model, "folderUid": folder_uid, "provisioned": False}
        history = self.versions.setdefault(uid, [])
        history.append(
            {
                "id": self._new_id(),
                "dashboardId": model["id"],
                "uid": uid,
                "parentVersion": version - 1,
                "restoredFrom": 0,
                "version": version,
                "created": _now(),
                "createdBy": "admin",
                "message": body.get("message", ""),
            }
        )
        slug = _slug(title)
        return {
            "id": model["id"],
            "uid": uid,
            "url": f"/d/{uid}/{slug}",
            "status": "success",
            "version": version,
            "slug": slug,
        }


def _object(body: Any) -> dict:
    if not isinstance(body, dict):
        raise _Reply(400, {"message": "bad request data"})
    return body


def _handler_for(fake: FakeGrafana) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40 ms delayed-ACK stalls

        def _serve(self) -> None:
            split = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            body: Any = None
            bad_json = False
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    bad_json = True
            with fake._lock:
                fake.requests.append(Request(self.command, split.path, split.query, headers, body))
            if bad_json:
                status, reply = 400, {"message": "bad request data"}
            else:
                status, reply = fake.handle(self.command, split.path, headers, body)
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep pytest output clean

    return Handler
