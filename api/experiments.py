"""The experiments REST API (issue 16) under ``/v1/experiments``: book gateways, upload the code, follow the
experiment, download its metrics and results. Reference: docs/parts/experiments-api.md.

Everything here needs a bearer token (``Authorization: Bearer szx_...``, ``smartzone tokens create``):
401 without or with a bad one (``WWW-Authenticate: Bearer``), 403 on another owner's experiment; operators
see all. The gateway's agent fetches the artifact and uploads results with the HMAC upload token of its
desired document plus ``X-Smartzone-Gateway``. Errors are RFC 9457 problems (``experiments.errors`` mapped
by status in ``on_service_error``); no response here is ever cached (``api.app.Guard`` marks them
``Cache-Control: private, no-store``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import tarfile
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session, sessionmaker
from starlette.responses import FileResponse, Response, StreamingResponse

from api import problems
from api.deps import State, state
from experiments import artifacts, service
from experiments.db import RADIOS, User
from experiments.errors import Conflict, Forbidden, Invalid, NotFound, ServiceError, TooLarge, Unauthenticated
from experiments.secrets import check_upload_token, key
from experiments.tokens import authenticate
from smartzone.errors import DatabaseNotFound
from storage.influx import Influx, quote_ident

PREFIX = "/v1/experiments"
GATEWAY_HEADER = "X-Smartzone-Gateway"
REALM = 'Bearer realm="smartzone-experiments"'
PRIVATE = "private, no-store"
TAR_GZ = "application/gzip"
METRICS_MEDIA = {
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
    "json": "application/json",
}
METRICS_COLUMNS = ("time", "gateway", "metric", "unit", "value")

router = APIRouter(prefix=PREFIX, tags=["experiments"])
bearer = HTTPBearer(
    auto_error=False,
    bearerFormat="szx_<id>_<secret>",
    description="A token from `smartzone tokens create` (or, for a gateway's agent, its HMAC upload token).",
)
ExpId = Annotated[int, PathParam(ge=1, le=2**31 - 1, description="the experiment's id")]
GatewayId = Annotated[str, PathParam(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$", description="a registry gateway id")]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no bearer token, or a wrong or revoked one", "content": {problems.PROBLEM: {}}},
    403: {"description": "another owner's experiment", "content": {problems.PROBLEM: {}}},
    404: {"description": "no such experiment", "content": {problems.PROBLEM: {}}},
}


# -- schemas ------------------------------------------------------------------------------------------
class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GatewayAlias(_In):
    """Let the service choose: ``count`` available gateways with ``radio``, in ``zone`` (a registry area)."""

    count: int = Field(description="how many gateways", examples=[2])
    radio: str = Field(description=f"one of {', '.join(RADIOS)}", examples=["ble"])
    zone: str | None = Field(default=None, description="a registry gateway `area`; any when omitted")


class ExperimentCreate(_In):
    name: str = Field(examples=["rtt probe"])
    description: str = ""
    gateways: list[str] | GatewayAlias = Field(
        description="gateway ids of the registry, or an alias `{count, radio, zone}`", examples=[["gw-volkstraat"]]
    )
    radio: str | None = Field(default=None, description="the radio to take when `gateways` is a list", examples=["ble"])
    start: datetime | None = Field(default=None, description="RFC 3339; null or omitted: as soon as possible")
    duration: int = Field(description="seconds, up to experiments.max_duration_s", examples=[600])
    artifact: str = Field(description="the sha256 of an uploaded artifact")
    parameters: dict[str, Any] = Field(default_factory=dict, description="handed to the experiment as JSON")


class ExtendIn(_In):
    seconds: int = Field(description="move the deadline this many seconds later", examples=[300])


class ArtifactOut(BaseModel):
    sha256: str
    size: int
    kind: Literal["wheel", "script"]
    filename: str


class ResourceOut(BaseModel):
    gateway: str
    radio: str
    phase: str | None = Field(description="what the gateway's agent last reported; null: nothing yet")
    pid: int | None
    exit_code: int | None
    error: str
    log_tail: str
    reported_at: datetime | None
    results_uploaded: bool
    results_size: int | None


class EventOut(BaseModel):
    time: datetime
    actor: str
    from_state: str | None = Field(alias="from")
    to_state: str = Field(alias="to")
    reason: str

    model_config = ConfigDict(populate_by_name=True)


class ExperimentOut(BaseModel):
    id: int
    name: str
    description: str
    owner: str
    state: str
    start: datetime | None
    deadline: datetime | None
    duration: int
    gateways: list[str]
    parameters: dict[str, Any]
    artifact: str | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    resources: list[ResourceOut]
    events: list[EventOut]


class ExperimentList(BaseModel):
    data: list[ExperimentOut]
    count: int


class BookingOut(BaseModel):
    experiment: int | None = Field(description="the experiment's id; null: another user's (shown to operators)")
    radio: str
    state: str
    start: datetime
    deadline: datetime


class GatewayOut(BaseModel):
    id: str
    name: str
    area: str | None
    radios: list[str] = Field(description="the radios experiments may take (never the LoRaWAN concentrator)")
    available: bool = Field(description="can be handed out now: online and its last self-test passed")
    reason: str = Field(description="why not available; empty when it is")
    online: bool | None
    status_at: datetime | None
    health_at: datetime | None
    selftest_failed: int | None
    selftest_at: datetime | None
    bookings: list[BookingOut] = Field(description="experiments not final holding one of its radios from now on")


class GatewayList(BaseModel):
    data: list[GatewayOut]
    count: int


class ResultsOut(BaseModel):
    sha256: str
    size: int


def _out(v: service.ExperimentView) -> ExperimentOut:
    return ExperimentOut(
        id=v.id,
        name=v.name,
        description=v.description,
        owner=v.owner,
        state=v.state,
        start=v.start,
        deadline=v.deadline,
        duration=v.duration_s,
        gateways=v.gateways,
        parameters=v.parameters,
        artifact=v.artifact,
        created_at=v.created_at,
        started_at=v.started_at,
        ended_at=v.ended_at,
        resources=[
            ResourceOut(
                gateway=r.gateway,
                radio=r.radio,
                phase=r.phase,
                pid=r.pid,
                exit_code=r.exit_code,
                error=r.error,
                log_tail=r.log_tail,
                reported_at=r.reported_at,
                results_uploaded=r.results_sha256 is not None,
                results_size=r.results_size,
            )
            for r in v.resources
        ],
        events=[
            EventOut.model_validate(
                {"time": e.at, "actor": e.actor, "from": e.from_state, "to": e.to_state, "reason": e.reason}
            )
            for e in v.events
        ],
    )


# -- errors and auth ----------------------------------------------------------------------------------
async def on_service_error(request: Request, exc: Exception) -> Response:
    """An ``experiments.errors.ServiceError`` as an RFC 9457 problem with its status."""
    assert isinstance(exc, ServiceError)
    extra: dict[str, Any] = {}
    headers: dict[str, str] = {}
    if isinstance(exc, Unauthenticated):
        headers["WWW-Authenticate"] = REALM
    if isinstance(exc, Conflict):
        extra |= {k: v for k, v in (("experiment", exc.experiment), ("gateway", exc.gateway)) if v is not None}
    if isinstance(exc, TooLarge):
        extra["limit"] = exc.limit
    parameter = exc.field if isinstance(exc, Invalid) else None
    return problems.problem_response(
        request, exc.status, exc.kind, exc.detail, parameter=parameter, headers=headers, **extra
    )


def _sessions(request: Request) -> sessionmaker[Session]:
    return state(request).experiments_store()


def current_user(request: Request, credentials: Credentials) -> User:
    """The user of the request's bearer token; ``Unauthenticated`` (401) without a valid one."""
    if credentials is None:
        raise Unauthenticated("this needs a bearer token: Authorization: Bearer szx_... (smartzone tokens create)")
    user = authenticate(_sessions(request), credentials.credentials, state(request).clock())
    if user is None:
        raise Unauthenticated("the bearer token is unknown, wrong or revoked")
    return user


CurrentUser = Annotated[User, Depends(current_user)]
StateDep = Annotated[State, Depends(state)]
Sessions = Annotated[sessionmaker[Session], Depends(_sessions)]


def _agent(request: Request, sessions: sessionmaker[Session], exp_id: int, credentials: Credentials) -> str | None:
    """The gateway an agent request comes from, its upload token checked; None when it is no agent request."""
    gateway = request.headers.get(GATEWAY_HEADER)
    if gateway is None:
        return None
    if credentials is None:
        raise Unauthenticated("a gateway's request needs its upload token: Authorization: Bearer <token>")
    settings = state(request).settings
    if not check_upload_token(key(settings), exp_id, gateway, credentials.credentials):  # before any look-up
        raise Unauthenticated(f"wrong upload token for experiment {exp_id} on gateway {gateway}")
    _, member = service.experiment_for_gateway(sessions, exp_id, gateway)
    if not member:
        raise Forbidden(f"gateway {gateway} is not part of experiment {exp_id}")
    return gateway


# -- artifacts ----------------------------------------------------------------------------------------
_RAW_BODY = {
    "requestBody": {
        "required": True,
        "description": "the artifact's bytes, as they are (no multipart)",
        "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "application/x-python": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


async def _read_limited(request: Request, collector: artifacts.Collector) -> bytes:
    length = request.headers.get("content-length")
    collector.check_declared(int(length) if length and length.isdigit() else None)
    async for chunk in request.stream():
        collector.add(chunk)  # TooLarge as soon as it is over: the rest is never read
    return collector.data()


@router.post(
    "/artifacts",
    summary="Upload an artifact (a Python script or a wheel), content-addressed by sha256",
    status_code=201,
    response_model=ArtifactOut,
    openapi_extra=_RAW_BODY,
    responses={
        200: {"description": "the same bytes were uploaded before", "model": ArtifactOut},
        413: {"description": "over experiments.artifact_max_bytes", "content": {problems.PROBLEM: {}}},
        422: {
            "description": "malformed: not a compiling UTF-8 script or a valid wheel",
            "content": {problems.PROBLEM: {}},
        },
        401: _ERRORS[401],
    },
)
async def upload_artifact(
    request: Request,
    user: CurrentUser,
    filename: Annotated[str, Query(description="probe.py or name-1.0-py3-none-any.whl: says the kind")],
) -> Response:
    st = state(request)
    artifacts.kind_of(filename)  # a wrong name is refused before the body is read
    data = await _read_limited(request, artifacts.Collector(st.settings.experiments.artifact_max_bytes))
    info, created = await run_in_threadpool(
        artifacts.store, st.experiments_store(), st.settings, filename, data, st.clock()
    )
    body = ArtifactOut(sha256=info.sha256, size=info.size, kind=info.kind, filename=info.filename)  # type: ignore[arg-type]
    return Response(
        body.model_dump_json(),
        status_code=201 if created else 200,
        media_type="application/json",
        headers={"Location": f"{st.base_url}{PREFIX}/artifacts/{info.sha256}"},
    )


# -- experiments --------------------------------------------------------------------------------------
@router.post(
    "",
    summary="Submit an experiment: book gateways and radio for [start, start + duration)",
    status_code=201,
    response_model=ExperimentOut,
    responses={
        401: _ERRORS[401],
        409: {
            "description": "overlap (names the experiment), gateway offline or self-test failed",
            "content": {problems.PROBLEM: {}},
        },
        422: {
            "description": "unknown gateway or artifact, a radio the gateway lacks, duration over the maximum",
            "content": {problems.PROBLEM: {}},
        },
    },
)
def create_experiment(body: ExperimentCreate, user: CurrentUser, st: StateDep, sessions: Sessions) -> Response:
    gateways = (
        service.Alias(body.gateways.count, body.gateways.radio, body.gateways.zone)
        if isinstance(body.gateways, GatewayAlias)
        else body.gateways
    )
    view = service.create(
        sessions,
        st.registry,
        st.settings.experiments,
        user,
        service.NewExperiment(
            name=body.name,
            gateways=gateways,
            duration_s=body.duration,
            artifact=body.artifact,
            radio=body.radio,
            start=body.start,
            description=body.description,
            parameters=body.parameters,
        ),
        st.clock(),
    )
    return Response(
        _out(view).model_dump_json(by_alias=True),
        status_code=201,
        media_type="application/json",
        headers={"Location": f"{st.base_url}{PREFIX}/{view.id}"},
    )


@router.get(
    "",
    summary="List experiments (yours; operators: all)",
    response_model=ExperimentList,
    responses={401: _ERRORS[401], 403: _ERRORS[403]},
)
def list_experiments(
    user: CurrentUser,
    sessions: Sessions,
    state_: Annotated[str | None, Query(alias="state", description="Waiting, Running, ...")] = None,
    owner: Annotated[str | None, Query(description="a user name (operators)")] = None,
    gateway: Annotated[str | None, Query(description="experiments on this gateway")] = None,
) -> ExperimentList:
    views = service.list_experiments(sessions, user, state=state_, owner=owner, gateway=gateway)
    return ExperimentList(data=[_out(v) for v in views], count=len(views))


@router.get(
    "/gateways",
    summary="The gateways experiments can take: radios, availability (status, self-test) and bookings",
    response_model=GatewayList,
    responses={401: _ERRORS[401]},
)
def list_gateways(user: CurrentUser, st: StateDep, sessions: Sessions) -> GatewayList:
    views = service.gateways(sessions, st.registry, user, st.clock())
    data = [
        GatewayOut(
            **{k: v for k, v in vars(g).items() if k != "bookings"},
            bookings=[BookingOut(**vars(b)) for b in g.bookings],
        )
        for g in views
    ]
    return GatewayList(data=data, count=len(data))


@router.get(
    "/{exp_id}",
    summary="An experiment: state, times, resources with phases, exit codes, log tails, events",
    response_model=ExperimentOut,
    responses=_ERRORS,
)
def get_experiment(exp_id: ExpId, user: CurrentUser, sessions: Sessions) -> ExperimentOut:
    return _out(service.get(sessions, user, exp_id))


@router.post(
    "/{exp_id}/cancel",
    summary="Cancel: not yet running -> Stopped; Running -> Finishing (stopped by the scheduler)",
    response_model=ExperimentOut,
    responses={**_ERRORS, 409: {"description": "already final or finishing", "content": {problems.PROBLEM: {}}}},
)
def cancel_experiment(exp_id: ExpId, user: CurrentUser, st: StateDep, sessions: Sessions) -> ExperimentOut:
    return _out(service.cancel(sessions, user, exp_id, st.clock()))


@router.post(
    "/{exp_id}/extend",
    summary="Move the deadline later",
    response_model=ExperimentOut,
    responses={
        **_ERRORS,
        409: {"description": "overlap with a later experiment, or final", "content": {problems.PROBLEM: {}}},
        422: {"description": "the duration would exceed the maximum", "content": {problems.PROBLEM: {}}},
    },
)
def extend_experiment(
    exp_id: ExpId, body: ExtendIn, user: CurrentUser, st: StateDep, sessions: Sessions
) -> ExperimentOut:
    return _out(service.extend(sessions, st.settings.experiments, user, exp_id, body.seconds, st.clock()))


@router.get(
    "/{exp_id}/logs",
    summary="The experiment's events and each gateway's log tail, as text",
    response_class=Response,
    responses={**_ERRORS, 200: {"content": {"text/plain": {}}}},
)
def experiment_logs(exp_id: ExpId, user: CurrentUser, sessions: Sessions) -> Response:
    return Response(_logs_text(service.get(sessions, user, exp_id)), media_type="text/plain; charset=utf-8")


def _logs_text(v: service.ExperimentView) -> str:
    lines = [f"experiment {v.id} {v.name!r} ({v.owner}): {v.state}"]
    for e in v.events:
        lines.append(
            f"{_z(e.at)} {e.actor}: {e.from_state or '-'} -> {e.to_state}" + (f": {e.reason}" if e.reason else "")
        )
    for r in v.resources:
        status = f"phase {r.phase or 'none reported'}"
        if r.exit_code is not None:
            status += f", exit code {r.exit_code}"
        if r.error:
            status += f", error: {r.error}"
        lines.append(f"== {r.gateway} ({r.radio}): {status} ==")
        if r.log_tail:
            lines.append(r.log_tail.rstrip("\n"))
    return "\n".join(lines) + "\n"


def _z(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


# -- metrics ------------------------------------------------------------------------------------------
def metric_rows(st: State, exp_id: int) -> list[tuple[str, str, str, str, float]]:
    """The experiment's metrics (time, gateway, metric, unit, value), oldest first, from the experiments database."""
    influx = Influx(st.settings.influx)
    try:
        value, metrics, experiment = quote_ident("value"), quote_ident("metrics"), quote_ident("experiment")
        tags = ", ".join(quote_ident(t) for t in ("gateway", "metric", "unit"))
        q = f"SELECT {value} FROM {metrics} WHERE {experiment} = $experiment GROUP BY {tags}"  # noqa: S608 - quoted
        rows = influx.rows(q, st.settings.influx.experiments_database, {"experiment": str(exp_id)})
    except DatabaseNotFound:
        rows = []
    finally:
        influx.close()
    out = [
        (
            datetime.fromtimestamp(r["time"] / 1e9, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
            r.get("gateway", ""),
            r.get("metric", ""),
            r.get("unit", ""),
            float(r["value"]),
            r["time"],
        )
        for r in rows
        if r.get("value") is not None
    ]
    out.sort(key=lambda row: (row[5], row[1], row[2]))
    return [row[:5] for row in out]


def metrics_csv(rows: Iterable[tuple[str, str, str, str, float]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(METRICS_COLUMNS)
    writer.writerows(rows)
    return buf.getvalue().encode()


def _metrics_parquet(rows: list[tuple[str, str, str, str, float]]) -> bytes:
    columns: list[tuple[Any, ...]] = list(zip(*rows, strict=True)) if rows else [() for _ in METRICS_COLUMNS]
    table = pa.table(
        {
            "time": pa.array([datetime.fromisoformat(t) for t in columns[0]], pa.timestamp("us", tz="UTC")),
            "gateway": pa.array(columns[1], pa.string()),
            "metric": pa.array(columns[2], pa.string()),
            "unit": pa.array(columns[3], pa.string()),
            "value": pa.array(columns[4], pa.float64()),
        }
    )
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


@router.get(
    "/{exp_id}/metrics",
    summary="The metrics the experiment published (gw/<id>/experiments/<exp_id>/metrics): CSV, Parquet or JSON",
    response_class=Response,
    responses={**_ERRORS, 200: {"content": {m: {} for m in METRICS_MEDIA.values()}}},
)
def experiment_metrics(
    exp_id: ExpId,
    user: CurrentUser,
    st: StateDep,
    sessions: Sessions,
    format: Annotated[Literal["csv", "parquet", "json"], Query(description="csv (default), parquet or json")] = "csv",
) -> Response:
    service.authorised(sessions, user, exp_id)
    rows = metric_rows(st, exp_id)
    if format == "json":
        body = orjson.dumps(
            {"experiment": exp_id, "metrics": [dict(zip(METRICS_COLUMNS, r, strict=True)) for r in rows]}
        )
    elif format == "parquet":
        body = _metrics_parquet(rows)
    else:
        body = metrics_csv(rows)
    disposition = f'attachment; filename="experiment-{exp_id}-metrics.{format}"'
    return Response(body, media_type=METRICS_MEDIA[format], headers={"Content-Disposition": disposition})


# -- results ------------------------------------------------------------------------------------------
def results_dir(st: State, exp_id: int) -> Path:
    return st.settings.data_dir / "experiments" / "results" / str(exp_id)


class _Sink(io.RawIOBase):
    """What tarfile writes, kept until the response generator takes it."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.parts.append(bytes(b))
        return len(b)

    def take(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out


def _results_tar(st: State, v: service.ExperimentView, metrics: bytes) -> Iterator[bytes]:
    sink = _Sink()
    now = st.clock().timestamp()
    with tarfile.open(fileobj=sink, mode="w|gz") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), int(now), 0o644
            tar.addfile(info, io.BytesIO(data))

        add("metrics.csv", metrics)
        events = io.StringIO()
        w = csv.writer(events, lineterminator="\r\n")
        w.writerow(("time", "actor", "from", "to", "reason"))
        w.writerows((_z(e.at), e.actor, e.from_state or "", e.to_state, e.reason) for e in v.events)
        add("events.csv", events.getvalue().encode())
        yield sink.take()
        for r in v.resources:
            bundle = results_dir(st, v.id) / f"{r.gateway}.tar.gz"
            if not bundle.exists():
                continue
            with tarfile.open(bundle, "r:gz") as src:
                for member in src:
                    if not member.isreg():
                        continue
                    f = src.extractfile(member)
                    if f is None:
                        continue
                    info = tarfile.TarInfo(f"{r.gateway}/{member.name.lstrip('./')}")
                    info.size, info.mtime, info.mode = member.size, member.mtime, 0o644
                    tar.addfile(info, f)
                    yield sink.take()
    yield sink.take()


@router.get(
    "/{exp_id}/results",
    summary="Everything of the experiment as a tar.gz: metrics.csv, events.csv, each gateway's bundle under <gateway>/",
    response_class=StreamingResponse,
    responses={**_ERRORS, 200: {"content": {TAR_GZ: {}}}},
)
def experiment_results(exp_id: ExpId, user: CurrentUser, st: StateDep, sessions: Sessions) -> StreamingResponse:
    view = service.get(sessions, user, exp_id)
    metrics = metrics_csv(metric_rows(st, exp_id))
    return StreamingResponse(
        _results_tar(st, view, metrics),
        media_type=TAR_GZ,
        headers={"Content-Disposition": f'attachment; filename="experiment-{exp_id}-results.tar.gz"'},
    )


def check_bundle(path: Path) -> None:
    """A results bundle must be a tar.gz of regular files and folders with relative, safe names."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            for m in tar:
                name = m.name
                if name.startswith("/") or ".." in name.split("/"):
                    raise Invalid(f"results bundle: unsafe member name {name!r}", field="body")
                if not (m.isreg() or m.isdir()):
                    raise Invalid(f"results bundle: {name!r} is not a regular file or folder", field="body")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise Invalid(f"results bundle: not a readable tar.gz ({exc})", field="body") from exc


@router.put(
    "/{exp_id}/gateways/{gateway}/results",
    summary="A gateway's agent uploads its results bundle (tar.gz), with its upload token",
    status_code=201,
    response_model=ResultsOut,
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "the bundle's bytes: a tar.gz of results/ and the logs",
            "content": {
                TAR_GZ: {"schema": {"type": "string", "format": "binary"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        },
        "parameters": [{"name": GATEWAY_HEADER, "in": "header", "required": True, "schema": {"type": "string"}}],
    },
    responses={
        **_ERRORS,
        413: {"description": "over experiments.results_max_bytes", "content": {problems.PROBLEM: {}}},
        422: {"description": "not a tar.gz of plain files", "content": {problems.PROBLEM: {}}},
    },
)
async def upload_results(exp_id: ExpId, gateway: GatewayId, request: Request, credentials: Credentials) -> ResultsOut:
    st = state(request)
    sessions = await run_in_threadpool(st.experiments_store)
    sender = await run_in_threadpool(_agent, request, sessions, exp_id, credentials)
    if sender is None:
        raise Unauthenticated(f"results are uploaded by the gateway's agent: send {GATEWAY_HEADER} and its token")
    if sender != gateway:
        raise Forbidden(f"gateway {sender} cannot upload the results of gateway {gateway}")
    limit = st.settings.experiments.results_max_bytes
    collector = artifacts.Collector(limit, "results bundle")
    length = request.headers.get("content-length")
    collector.check_declared(int(length) if length and length.isdigit() else None)
    folder = results_dir(st, exp_id)
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / f".{gateway}.{os.getpid()}.{id(request)}.part"
    digest = hashlib.sha256()
    size = 0
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        with os.fdopen(fd, "wb") as f:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"the results bundle is over the limit of {limit} bytes", limit=limit)
                digest.update(chunk)
                f.write(chunk)
        if size == 0:
            raise Invalid("results bundle: the body is empty", field="body")
        await run_in_threadpool(check_bundle, part)
        os.replace(part, folder / f"{gateway}.tar.gz")
    finally:
        part.unlink(missing_ok=True)
    await run_in_threadpool(service.record_results, sessions, exp_id, gateway, digest.hexdigest(), size)
    return ResultsOut(sha256=digest.hexdigest(), size=size)


@router.get(
    "/{exp_id}/artifact",
    summary="The experiment's artifact (its agent with the upload token, or its owner / an operator)",
    response_class=FileResponse,
    responses={**_ERRORS, 200: {"content": {"application/octet-stream": {}}}},
)
def experiment_artifact(exp_id: ExpId, request: Request, credentials: Credentials) -> Response:
    st = state(request)
    sessions = st.experiments_store()
    if _agent(request, sessions, exp_id, credentials) is None:
        exp = service.authorised(sessions, current_user(request, credentials), exp_id)
    else:
        exp, _ = service.experiment_for_gateway(sessions, exp_id, request.headers[GATEWAY_HEADER])
    if exp.artifact_sha256 is None:
        raise NotFound(f"experiment {exp_id} has no artifact")
    info = artifacts.get(sessions, exp.artifact_sha256)
    path = artifacts.path_of(st.settings, exp.artifact_sha256)
    if info is None or not path.exists():
        raise NotFound(f"the artifact {exp.artifact_sha256} of experiment {exp_id} is missing from the store")
    return FileResponse(
        path,
        media_type="application/octet-stream",
        filename=info.filename,
        headers={"ETag": f'"{info.sha256}"', "X-Smartzone-Sha256": info.sha256},
    )
