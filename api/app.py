"""The open-data API: what researchers pull, served only from the charter's output.

``create_app(settings)`` builds the FastAPI application. Routers: ``catalogue`` (datasets, DCAT-AP),
``observations`` (the published points, JSON / CSV / Parquet / GeoJSON, cursor pages), ``space``
(cells, zone, sensors). Health: ``/healthz``, ``/readyz``, ``/metrics`` (Prometheus).

Around every request: problem details for every error (RFC 9457), a per-client token-bucket rate limit
(429 with Retry-After), a query-string size limit (414), a body size limit (413: the API takes no
bodies), CORS for browser clients, gzip.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.gzip import GZipMiddleware
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from api import problems
from api.store import OpenData
from datacharter.charter import Charter
from smartzone.registry import Registry
from smartzone.settings import Settings

log = logging.getLogger(__name__)
VERSION = "1.0.0"


@dataclass
class State:
    settings: Settings
    charter: Charter
    registry: Registry
    store: OpenData


class RateLimiter:
    """A token bucket per client address: ``rate`` requests per second, bursts of ``burst``."""

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
            tokens = min(self.burst, tokens + (now - last) * self.rate)
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


def create_app(settings: Settings, *, charter: Charter | None = None, registry: Registry | None = None,
               store: OpenData | None = None) -> FastAPI:
    from api import catalogue, observations, space

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
            "dataset carries its licence (CC BY 4.0 by default), the charter version and its method."),
        license_info={"name": "CC BY 4.0", "url": "https://creativecommons.org/licenses/by/4.0/"},
        docs_url="/docs", redoc_url=None, openapi_url="/openapi.json",
    )
    app.state.sz = State(settings, charter, registry, store)
    api = settings.api
    limiter = RateLimiter(api.rate_limit, api.rate_burst)
    metrics = CollectorRegistry()
    requests_total = Counter("smartzone_api_requests", "HTTP requests", ["route", "status"], registry=metrics)
    latency = Histogram("smartzone_api_request_seconds", "time to the response headers", ["route"],
                        registry=metrics, buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))
    limited = Counter("smartzone_api_rate_limited", "requests refused by the rate limit", registry=metrics)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        started = time.perf_counter()
        route = request.url.path
        if len(request.url.query.encode()) > api.max_query_bytes:
            response = problems.problem_response(request, 414, "query-too-long",
                                                 f"the query string is over {api.max_query_bytes} bytes")
        elif request.headers.get("content-length", "0") not in ("0", "") or "transfer-encoding" in request.headers:
            response = problems.problem_response(request, 413, "body-not-accepted",
                                                 "this API reads query parameters only; send no request body")
        else:
            client = request.client.host if request.client else "unknown"
            wait = limiter.take(client) if route not in ("/healthz", "/readyz", "/metrics") else 0.0
            if wait:
                limited.inc()
                response = problems.problem_response(
                    request, 429, "rate-limited",
                    f"more than {api.rate_limit:g} requests per second (bursts of {api.rate_burst}) from this "
                    "client; retry later", headers={"Retry-After": str(max(1, round(wait + 0.5)))})
            else:
                try:
                    response = await call_next(request)
                except Exception:  # a bug must answer as a problem, not a bare 500
                    log.exception("request failed: %s", request.url)
                    response = problems.problem_response(request, 500, "internal-error",
                                                         "the server failed to answer; it has been logged")
        template = request.scope.get("route")
        label = getattr(template, "path", "other") if template is not None else "other"
        requests_total.labels(label, str(response.status_code)).inc()
        latency.labels(label).observe(time.perf_counter() - started)
        return response

    app.add_middleware(GZipMiddleware, minimum_size=1024)
    app.add_middleware(CORSMiddleware, allow_origins=api.cors_origins, allow_methods=["GET", "HEAD", "OPTIONS"],
                       allow_headers=["Accept", "If-None-Match", "Content-Type"],
                       expose_headers=["Link", "ETag", "Retry-After", "Content-Disposition"], max_age=3600)
    app.add_exception_handler(problems.Problem, problems.on_problem)
    app.add_exception_handler(RequestValidationError, problems.on_validation)
    app.add_exception_handler(StarletteHTTPException, problems.on_http)
    app.add_exception_handler(Exception, problems.on_error)

    @app.get("/healthz", tags=["health"], summary="The process answers")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="InfluxDB (the open database) and the registry are reachable",
             responses={503: {"description": "not ready", "content": {problems.PROBLEM: {}}}})
    def readyz() -> Response:
        checks = {"open_database": store.ready(), "registry": bool(registry.sensors)}
        if all(checks.values()):
            return JSONResponse({"status": "ready", "checks": checks})
        return problems.problem_response(None, 503, "not-ready", "a dependency is not reachable", checks=checks)

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics of the API", include_in_schema=False)
    def prometheus() -> Response:
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    app.include_router(catalogue.router)
    app.include_router(observations.router)
    app.include_router(space.router)
    return app


def app_from_environment() -> FastAPI:
    """The app built from the environment's settings (uvicorn's factory for several worker processes)."""
    from smartzone.settings import get_settings

    return create_app(get_settings())


def state(request: Request) -> State:
    return request.app.state.sz
