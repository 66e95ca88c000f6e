"""The open-data API: what researchers pull, served only from the charter's output.

``create_app(settings)`` builds the FastAPI application. Routers: ``catalogue`` (datasets, DCAT-AP),
``observations`` (the published points, JSON / CSV / Parquet / GeoJSON, cursor pages), ``space``
(cells, zone, sensors), and ``experiments`` (the authenticated experiments API, issue 16). Health:
``/healthz``, ``/readyz``, ``/metrics`` (Prometheus). The state the
routers read (``api.deps.State``) is put on the app here; no router imports this module.

Around every request: problem details for every error (RFC 9457), a per-client token-bucket rate limit
(429 with Retry-After), a query-string size limit (414), a body size limit (413: the open-data API takes
no bodies; the experiments API under ``/v1/experiments`` takes JSON up to 1 MiB and streams its uploads
under their own limits), CORS for browser clients, gzip. Responses of the experiments API, and of any
request carrying credentials, are never cached: ``Cache-Control: private, no-store``.

No header a client sends is trusted: links are built on the configured public URL
(``Settings.public_base_url``), and the client address the rate limit counts is the TCP peer, or what
``X-Forwarded-For`` says only when the peer is one of ``api.trusted_proxies`` (uvicorn resolves it:
``server_options``). The API documentation (``/docs``, Swagger UI) is served from the installed
``swagger_ui_bundle`` package, so it needs no CDN.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import HTMLResponse, JSONResponse, Response
from swagger_ui_bundle import swagger_ui_path

from api import catalogue, experiments, observations, problems, space
from api.deps import State
from api.store import OpenData
from datacharter.charter import Charter
from experiments.errors import ServiceError
from smartzone.registry import Registry
from smartzone.settings import ApiSettings, Settings

log = logging.getLogger(__name__)
VERSION = "1.0.0"
DOCS_ASSETS = "/docs/assets"  # Swagger UI's scripts and styles, from the installed swagger_ui_bundle


def server_options(api: ApiSettings) -> dict[str, Any]:
    """uvicorn's proxy settings from ``api.trusted_proxies``: X-Forwarded-For and -Proto are read only from
    those peers, and not at all when there are none (uvicorn's own default trusts 127.0.0.1 and
    FORWARDED_ALLOW_IPS; both are overridden here)."""
    return {"proxy_headers": bool(api.trusted_proxies), "forwarded_allow_ips": list(api.trusted_proxies) or ""}


class RateLimiter:
    """A token bucket per client address: ``rate`` requests per second, bursts of ``burst``. The address is
    the ASGI scope's client: the TCP peer, or the forwarded client when the peer is a trusted proxy."""

    def __init__(self, rate: float, burst: int, max_clients: int = 100_000) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, client: str) -> float:
        """0 if the request may go, else the seconds until it may."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(client, (self.burst, now))
            tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)  # clocks never go back
            if tokens >= 1:
                self._buckets[client] = (tokens - 1, now)
                wait = 0.0
            else:
                self._buckets[client] = (tokens, now)
                wait = (1 - tokens) / self.rate
            if len(self._buckets) > self.max_clients:  # forget the idlest clients
                for key, _ in sorted(self._buckets.items(), key=lambda kv: kv[1][1])[: self.max_clients // 10]:
                    del self._buckets[key]
        return wait


class ResponseCache:
    """Whole responses the API allows to be cached (``Cache-Control: public``), kept in memory for as long
    as they say (``max-age``; forever when ``immutable``: closed windows), up to a byte budget, least
    recently used out first. Keyed by path, query and Accept: the only parts of a request a response may
    depend on (links come from the configured base URL, never from Host or X-Forwarded-*). The server
    reuses a response no longer than any client or proxy may."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.size = 0
        self._items: OrderedDict[tuple, tuple[int, list, bytes, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> tuple[int, list, bytes] | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            if item[3] < time.monotonic():
                del self._items[key]
                self.size -= len(item[2])
                return None
            self._items.move_to_end(key)
            return item[:3]

    def put(self, key: tuple, status: int, headers: list, body: bytes, ttl: float) -> None:
        if len(body) > self.budget // 16 or ttl <= 0:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = (status, headers, body, time.monotonic() + ttl)
            self.size += len(body)
            while self.size > self.budget and self._items:
                _, (_, _, old, _) = self._items.popitem(last=False)
                self.size -= len(old)


def _ttl(cache_control: str) -> float:
    """How long a response may be reused, from its Cache-Control (public ones only)."""
    if "public" not in cache_control:
        return 0.0
    if "immutable" in cache_control:
        return float("inf")
    for part in cache_control.split(","):
        name, _, value = part.strip().partition("=")
        if name == "max-age" and value.isdigit():
            return float(value)
    return 0.0


def _private(path: str) -> bool:
    return path == experiments.PREFIX or path.startswith(experiments.PREFIX + "/")


def _upload(method: str, path: str) -> bool:
    parts = path.split("/")  # "", "v1", "experiments", ...
    return (method == "POST" and path == experiments.PREFIX + "/artifacts") or (
        method == "PUT" and len(parts) == 7 and parts[4] == "gateways" and parts[6] == "results"
    )


def _never_stored(send):
    """Mark every response ``Cache-Control: private, no-store`` (and ``Vary: Authorization``): neither this
    server's cache nor any shared cache on the way may keep or reuse it."""

    async def marked(message) -> None:
        if message["type"] == "http.response.start":
            raw = [(k, v) for k, v in message.get("headers", []) if k.lower() not in (b"cache-control", b"expires")]
            raw.append((b"cache-control", experiments.PRIVATE.encode()))
            if not any(k.lower() == b"vary" for k, _ in raw):
                raw.append((b"vary", b"Authorization"))
            message = {**message, "headers": raw}
        await send(message)

    return marked


class Guard:
    """Pure ASGI middleware around every request: size limits (414, 413), the per-client rate limit (429),
    the immutable-response cache, a problem for any unhandled error, and the request metrics."""

    PROBES = ("/healthz", "/readyz", "/metrics")
    JSON_BODY_MAX = 1 << 20  # the experiments API's JSON bodies (uploads: their own limits, streamed)

    def __init__(self, app, *, api, limiter, requests_total, latency, limited, cache) -> None:
        self.app = app
        self.api = api
        self.limiter = limiter
        self.requests_total = requests_total
        self.latency = latency
        self.limited = limited
        self.cache = cache

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = {k.lower(): v for k, v in scope["headers"]}
        path, query = scope["path"], scope["query_string"]
        status = {"code": 500}

        async def send_counted(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        # authenticated responses (the experiments API, anything with credentials) never meet the shared cache
        private = _private(path) or b"authorization" in headers
        if private:
            send_counted = _never_stored(send_counted)
        response = self._refuse(scope, headers, path, query)
        key = (path, query, headers.get(b"accept", b"*/*"))
        if response is None and scope["method"] in ("GET", "HEAD") and not private:
            hit = self.cache.get(key)
            if hit is not None:
                response = self._from_cache(hit, headers)
        if response is not None:
            await response(scope, receive, send_counted)
        else:
            try:
                await self.app(scope, receive, send_counted if private else self._capturing(send_counted, key))
            except Exception:  # a bug must answer as a problem, not a bare 500
                log.exception("request failed: %s", path)
                await problems.problem_response(
                    None, 500, "internal-error", "the server failed to answer; it has been logged"
                )(scope, receive, send_counted)
        route = scope.get("route")
        label = getattr(route, "path", "other") if route is not None else "other"
        self.requests_total.labels(label, str(status["code"])).inc()
        self.latency.labels(label).observe(time.perf_counter() - started)

    def _refuse(self, scope, headers: dict, path: str, query: bytes) -> Response | None:
        api = self.api
        if len(query) > api.max_query_bytes:
            return problems.problem_response(
                None, 414, "query-too-long", f"the query string is over {api.max_query_bytes} bytes"
            )
        if _private(path):
            refused = self._refuse_body(scope, headers, path)
            if refused is not None:
                return refused
        elif headers.get(b"content-length", b"0") not in (b"0", b"") or b"transfer-encoding" in headers:
            return problems.problem_response(
                None, 413, "body-not-accepted", "this API reads query parameters only; send no request body"
            )
        if path in self.PROBES or scope["method"] == "OPTIONS":
            return None
        client = scope["client"][0] if scope.get("client") else "unknown"
        wait = self.limiter.take(client)
        if wait:
            self.limited.inc()
            return problems.problem_response(
                None,
                429,
                "rate-limited",
                f"more than {api.rate_limit:g} requests per second (bursts of {api.rate_burst}) from this client; "
                "retry later",
                headers={"Retry-After": str(max(1, round(wait + 0.5)))},
            )
        return None

    def _refuse_body(self, scope, headers: dict, path: str) -> Response | None:
        """The experiments API takes bodies: uploads stream under their own limits (artifacts, results); a
        JSON body must declare its length, at most ``JSON_BODY_MAX``."""
        if _upload(scope["method"], path):
            return None
        length = headers.get(b"content-length", b"")
        if b"transfer-encoding" in headers or (length and (not length.isdigit() or int(length) > self.JSON_BODY_MAX)):
            return problems.problem_response(
                None,
                413,
                "body-too-large",
                f"a JSON body of at most {self.JSON_BODY_MAX} bytes, with its Content-Length, is accepted here",
            )
        return None

    @staticmethod
    def _from_cache(hit: tuple[int, list, bytes], headers: dict) -> Response:
        status, raw, body = hit
        etag = next((v for k, v in raw if k == b"etag"), None)
        if etag is not None and headers.get(b"if-none-match") == etag:
            kept = [(k, v) for k, v in raw if k in (b"etag", b"cache-control", b"link", b"vary")]
            response = Response(status_code=304)
            response.raw_headers = kept
            return response
        response = Response(body, status_code=status)
        response.raw_headers = list(raw)
        return response

    def _capturing(self, send, key: tuple):
        state: dict = {"keep": False, "parts": []}

        async def capture(message) -> None:
            if message["type"] == "http.response.start":
                raw = message.get("headers", [])
                cache_control = next((v for k, v in raw if k.lower() == b"cache-control"), b"").decode()
                state["ttl"] = _ttl(cache_control)
                state["keep"] = (
                    message["status"] == 200
                    and state["ttl"] > 0
                    and any(k.lower() == b"content-length" for k, _ in raw)
                )  # whole bodies only, not streams
                state["status"], state["headers"] = message["status"], [(k.lower(), v) for k, v in raw]
            elif message["type"] == "http.response.body" and state["keep"]:
                state["parts"].append(message.get("body", b""))
                if not message.get("more_body", False):
                    self.cache.put(key, state["status"], state["headers"], b"".join(state["parts"]), state["ttl"])
            await send(message)

        return capture


def create_app(
    settings: Settings,
    *,
    charter: Charter | None = None,
    registry: Registry | None = None,
    store: OpenData | None = None,
    clock: Callable[[], datetime] | None = None,
) -> FastAPI:
    base_url = settings.public_base_url()  # first: a ConfigurationError outside development when unset
    charter = charter or Charter.load(settings.charter.path)
    registry = registry or Registry.load(settings.registry)
    store = store or OpenData(settings, charter)
    app = FastAPI(
        title="Smart Zone open data",
        version=VERSION,
        description=(
            "Open datasets of the Antwerp smart zone (air quality, noise, traffic, parking, pedestrian flows, "
            "energy, weather), published only as the city's data charter allows: groups of at least k "
            "contributors per H3 cell and time bin, never an individual, a device or a raw position. Each "
            "dataset carries its licence (CC BY 4.0 by default), the charter version and its method."
        ),
        license_info={"name": "CC BY 4.0", "url": "https://creativecommons.org/licenses/by/4.0/"},
        docs_url=None,  # served below from the installed Swagger UI, not a CDN
        redoc_url=None,
        openapi_url="/openapi.json",
        swagger_ui_parameters={"validatorUrl": None},  # no badge from the public validator
    )
    app.state.sz = State(settings, charter, registry, store, base_url)
    if clock is not None:  # the experiments' "now" (tests); default: the wall clock
        app.state.sz.clock = clock
    api = settings.api
    limiter = RateLimiter(api.rate_limit, api.rate_burst)
    metrics = CollectorRegistry()
    requests_total = Counter("smartzone_api_requests", "HTTP requests", ["route", "status"], registry=metrics)
    latency = Histogram(
        "smartzone_api_request_seconds",
        "time to the response headers",
        ["route"],
        registry=metrics,
        buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
    )
    limited = Counter("smartzone_api_rate_limited", "requests refused by the rate limit", registry=metrics)

    app.add_middleware(
        Guard,
        api=api,
        limiter=limiter,
        requests_total=requests_total,
        latency=latency,
        limited=limited,
        cache=ResponseCache(api.cache_bytes),
    )
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=api.cors_origins,
        allow_methods=["GET", "HEAD", "OPTIONS"],
        allow_headers=["Accept", "If-None-Match", "Content-Type"],
        expose_headers=["Link", "ETag", "Retry-After", "Content-Disposition"],
        max_age=3600,
    )
    # FastAPI's exception_handler (it calls add_exception_handler): Starlette types a handler as taking any
    # Exception, FastAPI's decorator takes one of the class it is registered for
    app.exception_handler(problems.Problem)(problems.on_problem)
    app.exception_handler(ServiceError)(experiments.on_service_error)
    app.exception_handler(RequestValidationError)(problems.on_validation)
    app.exception_handler(StarletteHTTPException)(problems.on_http)
    app.exception_handler(Exception)(problems.on_error)

    @app.get("/healthz", tags=["health"], summary="The process answers")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        summary="InfluxDB (the open database) and the registry are reachable",
        responses={503: {"description": "not ready", "content": {problems.PROBLEM: {}}}},
    )
    def readyz() -> Response:
        checks = {"open_database": store.ready(), "registry": bool(registry.sensors)}
        if all(checks.values()):
            return JSONResponse({"status": "ready", "checks": checks})
        return problems.problem_response(None, 503, "not-ready", "a dependency is not reachable", checks=checks)

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics of the API", include_in_schema=False)
    def prometheus() -> Response:
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title}: API documentation",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon-32x32.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    app.include_router(catalogue.router)
    app.include_router(observations.router)
    app.include_router(space.router)
    app.include_router(experiments.router)
    return app


def app_from_environment() -> FastAPI:
    """The app built from the environment's settings (uvicorn's factory for several worker processes)."""
    from smartzone.settings import get_settings

    return create_app(get_settings())
