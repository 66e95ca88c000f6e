"""The experiments service: the operations the REST API (and through it the CLI) performs.

Each function takes the session factory, what it needs of the settings and registry, the acting user and
the clock (``now``) as parameters; errors are the typed ``experiments.errors`` the REST maps to statuses.
Every state change goes through ``experiments.states.transition`` (an event row per change).

Scheduling rules (issue 16): an experiment takes each of its (gateway, radio) pairs for ``[start, deadline)``;
an overlap with an experiment that is not final is a ``Conflict`` naming it. A gateway is handed out only if
the scheduler has heard it (table ``gateways``), it is online and its last self-test did not fail. Its radios
come from the registry (``PiGateway.experiment_radios``): ble, wifi, zigbee, and lora-experimental only where
the registry declares an experimental LoRa radio, never the LoRaWAN service concentrator.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from experiments.db import RADIOS, STATES, Artifact, Event, Experiment, ExperimentResource, Gateway, User, utc
from experiments.errors import Conflict, Forbidden, Invalid, NotFound
from experiments.states import FINAL, transition
from smartzone.registry import Registry
from smartzone.settings import ExperimentSettings

CANCELLABLE_AT_ONCE = ("Waiting", "toLaunch", "Launching")  # never ran: straight to Stopped
START_SLACK = timedelta(seconds=60)  # a start this far in the past is still taken as "now"
MAX_PARAMETERS_BYTES = 64 * 1024
_BOOKING = threading.Lock()  # one booking at a time in this process (PostgreSQL: an advisory lock across them)
_BOOKING_LOCK_KEY = 0x5A16_0016


# -- views --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ResourceView:
    gateway: str
    radio: str
    phase: str | None
    pid: int | None
    exit_code: int | None
    error: str
    log_tail: str
    reported_at: datetime | None
    results_sha256: str | None
    results_size: int | None


@dataclass(frozen=True)
class EventView:
    at: datetime
    actor: str
    from_state: str | None
    to_state: str
    reason: str


@dataclass(frozen=True)
class ExperimentView:
    id: int
    name: str
    description: str
    owner: str
    state: str
    start: datetime | None
    deadline: datetime | None
    duration_s: int
    parameters: dict[str, Any]
    artifact: str | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    resources: tuple[ResourceView, ...] = ()
    events: tuple[EventView, ...] = field(default=())

    @property
    def gateways(self) -> list[str]:
        return [r.gateway for r in self.resources]


@dataclass(frozen=True)
class Alias:
    """Gateways chosen by the service: ``count`` gateways with ``radio``, in ``zone`` (a registry ``area``)."""

    count: int
    radio: str
    zone: str | None = None


@dataclass(frozen=True)
class NewExperiment:
    name: str
    gateways: list[str] | Alias
    duration_s: int
    artifact: str
    radio: str | None = None  # required when gateways is a list
    start: datetime | None = None  # None: as soon as possible
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)


def _view(session: Session, exp: Experiment, *, details: bool = True) -> ExperimentView:
    owner = session.get(User, exp.owner_id)
    resources = session.scalars(
        select(ExperimentResource).where(ExperimentResource.experiment_id == exp.id).order_by(ExperimentResource.id)
    ).all()
    events = (
        session.scalars(select(Event).where(Event.experiment_id == exp.id).order_by(Event.at, Event.id)).all()
        if details
        else []
    )
    return ExperimentView(
        id=exp.id,
        name=exp.name,
        description=exp.description or "",
        owner=owner.name if owner else "",
        state=exp.state,
        start=utc(exp.start),
        deadline=utc(exp.deadline),
        duration_s=exp.duration_s,
        parameters=dict(exp.parameters or {}),
        artifact=exp.artifact_sha256,
        created_at=utc(exp.created_at) or exp.created_at,
        started_at=utc(exp.started_at),
        ended_at=utc(exp.ended_at),
        resources=tuple(
            ResourceView(
                r.gateway,
                r.radio,
                r.phase,
                r.pid,
                r.exit_code,
                r.error or "",
                r.log_tail or "",
                utc(r.reported_at),
                r.results_sha256,
                r.results_size,
            )
            for r in resources
        ),
        events=tuple(EventView(utc(e.at) or e.at, e.actor, e.from_state, e.to_state, e.reason or "") for e in events),
    )


# -- authorisation ------------------------------------------------------------------------------------
def is_operator(user: User) -> bool:
    return user.role == "operator"


def may_read(user: User, exp: Experiment) -> bool:
    """An experiment belongs to its owner and to operators."""
    return is_operator(user) or exp.owner_id == user.id


def _owned(session: Session, user: User, exp_id: int) -> Experiment:
    exp = session.get(Experiment, exp_id)
    if exp is None:
        raise NotFound(f"no experiment {exp_id}")
    if not may_read(user, exp):
        raise Forbidden(f"experiment {exp_id} belongs to another user; only its owner and operators may use it")
    return exp


# -- availability and overlap -------------------------------------------------------------------------
def radios_of(registry: Registry, gateway: str) -> frozenset[str]:
    g = registry.gateways.get(gateway)
    if g is None or g.pi is None:
        return frozenset()
    return g.pi.experiment_radios


def unavailable(session: Session, gateway: str) -> str | None:
    """Why ``gateway`` cannot be handed out now (None: it can): never heard, offline, last self-test failed."""
    row = session.get(Gateway, gateway)
    if row is None or row.online is None:
        return f"gateway {gateway} was never heard (no status from its agent yet)"
    if not row.online:
        since = utc(row.status_at)
        return f"gateway {gateway} is offline" + (f" (since {since.isoformat()})" if since else "")
    if row.selftest_failed:
        detail = f": {row.selftest_detail}" if row.selftest_detail else ""
        return f"gateway {gateway}'s last self-test failed ({row.selftest_failed} checks){detail}"
    return None


def overlapping(
    session: Session, gateway: str, radio: str, start: datetime, deadline: datetime, exclude: int | None = None
) -> Experiment | None:
    """The first experiment, not final, holding (gateway, radio) during part of ``[start, deadline)``."""
    q = (
        select(Experiment)
        .join(ExperimentResource, ExperimentResource.experiment_id == Experiment.id)
        .where(
            ExperimentResource.gateway == gateway,
            ExperimentResource.radio == radio,
            Experiment.state.not_in(sorted(FINAL)),
            Experiment.start < deadline,
            Experiment.deadline > start,
        )
        .order_by(Experiment.start, Experiment.id)
    )
    if exclude is not None:
        q = q.where(Experiment.id != exclude)
    return session.scalars(q).first()


@dataclass(frozen=True)
class Booking:
    experiment: int | None  # None: not shown (another owner's, to an experimenter)
    radio: str
    state: str
    start: datetime
    deadline: datetime


@dataclass(frozen=True)
class GatewayView:
    """One gateway as an experimenter chooses it: where, which radios, whether it can be handed out, booked when."""

    id: str
    name: str
    area: str | None
    radios: list[str]
    available: bool
    reason: str  # why not available ("" when it is)
    online: bool | None
    status_at: datetime | None
    health_at: datetime | None
    selftest_failed: int | None
    selftest_at: datetime | None
    bookings: list[Booking]


def gateways(sessions: sessionmaker[Session], registry: Registry, user: User, now: datetime) -> list[GatewayView]:
    """Every registry gateway that can take experiments (it has experiment radios), with its availability and
    its bookings from ``now`` on (every radio; another owner's experiment id only to operators)."""
    out = []
    with sessions() as session:
        for gid, g in sorted(registry.gateways.items()):
            radios = radios_of(registry, gid)
            if not radios:
                continue
            row = session.get(Gateway, gid)
            reason = unavailable(session, gid) or ""
            q = (
                select(Experiment, ExperimentResource.radio)
                .join(ExperimentResource, ExperimentResource.experiment_id == Experiment.id)
                .where(
                    ExperimentResource.gateway == gid,
                    Experiment.state.not_in(sorted(FINAL)),
                    Experiment.deadline > now,
                )
                .order_by(Experiment.start, Experiment.id)
            )
            bookings = [
                Booking(
                    exp.id if may_read(user, exp) else None,
                    radio,
                    exp.state,
                    utc(exp.start) or now,
                    utc(exp.deadline) or now,
                )
                for exp, radio in session.execute(q).all()
            ]
            out.append(
                GatewayView(
                    id=gid,
                    name=g.name,
                    area=g.area,
                    radios=sorted(radios),
                    available=not reason,
                    reason=reason,
                    online=row.online if row else None,
                    status_at=utc(row.status_at) if row else None,
                    health_at=utc(row.health_at) if row else None,
                    selftest_failed=row.selftest_failed if row else None,
                    selftest_at=utc(row.selftest_at) if row else None,
                    bookings=bookings,
                )
            )
    return out


def _conflict_on(exp: Experiment, gateway: str, radio: str) -> Conflict:
    s, d = utc(exp.start), utc(exp.deadline)
    return Conflict(
        f"gateway {gateway} ({radio}) is taken by experiment {exp.id} ({exp.name!r}) from "
        f"{s.isoformat() if s else '?'} to {d.isoformat() if d else '?'}",
        experiment=exp.id,
        gateway=gateway,
    )


def _lock_bookings(session: Session) -> None:
    """Serialise bookings across processes on PostgreSQL (released at commit)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _BOOKING_LOCK_KEY})


# -- operations ---------------------------------------------------------------------------------------
def _check_request(req: NewExperiment, limits: ExperimentSettings, now: datetime) -> tuple[datetime, datetime]:
    if not req.name.strip() or len(req.name) > 200:
        raise Invalid("name: give 1 to 200 characters", field="name")
    if not isinstance(req.duration_s, int) or req.duration_s <= 0:
        raise Invalid("duration: a positive number of seconds", field="duration")
    if req.duration_s > limits.max_duration_s:
        raise Invalid(
            f"duration: {req.duration_s} s is over the maximum of {limits.max_duration_s} s", field="duration"
        )
    if len(orjson.dumps(req.parameters)) > MAX_PARAMETERS_BYTES:
        raise Invalid(f"parameters: over {MAX_PARAMETERS_BYTES} bytes of JSON", field="parameters")
    start = now if req.start is None else req.start
    if start.tzinfo is None:
        raise Invalid("start: give a time zone (RFC 3339, e.g. 2026-12-02T17:05:00Z)", field="start")
    if start < now - START_SLACK:
        raise Invalid(f"start: {start.isoformat()} is in the past; omit it to start as soon as possible", field="start")
    start = max(start, now)
    return start, start + timedelta(seconds=req.duration_s)


def _choose(
    session: Session, registry: Registry, alias: Alias, start: datetime, deadline: datetime
) -> tuple[list[str], str]:
    if alias.radio not in RADIOS:
        raise Invalid(f"radio {alias.radio!r}: one of {', '.join(RADIOS)}", field="radio")
    if alias.count < 1:
        raise Invalid("gateways.count: at least 1", field="gateways")
    zones = {g.area for g in registry.gateways.values() if g.area}
    if alias.zone is not None and alias.zone not in zones:
        raise Invalid(
            f"zone {alias.zone!r}: not an area of the registry (areas: {', '.join(sorted(zones)) or 'none'})",
            field="gateways",
        )
    candidates = sorted(
        g.id
        for g in registry.gateways.values()
        if alias.radio in radios_of(registry, g.id) and (alias.zone is None or g.area == alias.zone)
    )
    chosen: list[str] = []
    refused: list[str] = []
    for gw in candidates:
        why = unavailable(session, gw)
        if why is None:
            other = overlapping(session, gw, alias.radio, start, deadline)
            if other is not None:
                why = f"{gw} taken by experiment {other.id}"
        if why is None:
            chosen.append(gw)
            if len(chosen) == alias.count:
                return chosen, alias.radio
        else:
            refused.append(why)
    where = f" in zone {alias.zone}" if alias.zone else ""
    if len(candidates) < alias.count:
        raise Invalid(
            f"only {len(candidates)} gateway(s) with radio {alias.radio}{where} exist; {alias.count} asked",
            field="gateways",
        )
    raise Conflict(
        f"only {len(chosen)} of the {len(candidates)} gateways with radio {alias.radio}{where} are free for "
        f"{start.isoformat()} to {deadline.isoformat()}; {alias.count} asked ({'; '.join(refused)})"
    )


def create(
    sessions: sessionmaker[Session],
    registry: Registry,
    limits: ExperimentSettings,
    user: User,
    req: NewExperiment,
    now: datetime,
) -> ExperimentView:
    """Book and record a new experiment (state Waiting); ``Invalid``/``Conflict`` say what stood in the way."""
    start, deadline = _check_request(req, limits, now)
    with _BOOKING, sessions.begin() as session:
        _lock_bookings(session)
        if session.get(Artifact, req.artifact) is None:
            raise Invalid(
                f"artifact {req.artifact!r}: unknown; upload it first (POST /v1/experiments/artifacts)",
                field="artifact",
            )
        if isinstance(req.gateways, Alias):
            gateways, radio = _choose(session, registry, req.gateways, start, deadline)
        else:
            if req.radio is None:
                raise Invalid("radio: give the radio to take on the listed gateways", field="radio")
            radio = req.radio
            if radio not in RADIOS:
                raise Invalid(f"radio {radio!r}: one of {', '.join(RADIOS)}", field="radio")
            gateways = list(dict.fromkeys(req.gateways))
            if not gateways:
                raise Invalid("gateways: name at least one gateway", field="gateways")
            for gw in gateways:
                if gw not in registry.gateways:
                    raise Invalid(f"gateway {gw!r}: not in the registry", field="gateways")
                have = radios_of(registry, gw)
                if radio not in have:
                    offered = ", ".join(sorted(have)) or "none: not an experiment gateway"
                    raise Invalid(
                        f"gateway {gw} has no {radio} radio for experiments (it has: {offered})", field="radio"
                    )
            for gw in gateways:
                why = unavailable(session, gw)
                if why is not None:
                    raise Conflict(why, gateway=gw)
                other = overlapping(session, gw, radio, start, deadline)
                if other is not None:
                    raise _conflict_on(other, gw, radio)
        exp = Experiment(
            name=req.name.strip(),
            description=req.description,
            owner_id=user.id,
            state="Waiting",
            start=start,
            duration_s=req.duration_s,
            deadline=deadline,
            parameters=req.parameters,
            artifact_sha256=req.artifact,
            created_at=now,
        )
        session.add(exp)
        session.flush()
        for gw in gateways:
            session.add(ExperimentResource(experiment_id=exp.id, gateway=gw, radio=radio))
        session.add(
            Event(
                experiment_id=exp.id, at=now, actor=user.name, from_state=None, to_state="Waiting", reason="submitted"
            )
        )
        session.flush()
        return _view(session, exp)


def get(sessions: sessionmaker[Session], user: User, exp_id: int) -> ExperimentView:
    with sessions() as session:
        return _view(session, _owned(session, user, exp_id))


def list_experiments(
    sessions: sessionmaker[Session],
    user: User,
    *,
    state: str | None = None,
    owner: str | None = None,
    gateway: str | None = None,
) -> list[ExperimentView]:
    """Experiments the user may read (an experimenter: theirs; an operator: all), newest first, filtered."""
    if state is not None and state not in STATES:
        raise Invalid(f"state {state!r}: one of {', '.join(STATES)}", field="state")
    if owner is not None and owner != user.name and not is_operator(user):
        raise Forbidden(f"only operators list other users' experiments (you are {user.name})")
    with sessions() as session:
        q = select(Experiment).order_by(Experiment.id.desc())
        if not is_operator(user):
            q = q.where(Experiment.owner_id == user.id)
        if owner is not None:
            q = q.join(User, User.id == Experiment.owner_id).where(User.name == owner)
        if state is not None:
            q = q.where(Experiment.state == state)
        if gateway is not None:
            q = q.where(
                Experiment.id.in_(select(ExperimentResource.experiment_id).where(ExperimentResource.gateway == gateway))
            )
        return [_view(session, e, details=False) for e in session.scalars(q).all()]


def cancel(sessions: sessionmaker[Session], user: User, exp_id: int, now: datetime) -> ExperimentView:
    """Cancel: not yet running -> Stopped; Running -> Finishing (the scheduler stops it and moves it to
    Stopped when the agents report ``stopped``); a final or finishing experiment -> ``Conflict``."""
    with sessions.begin() as session:
        exp = _owned(session, user, exp_id)
        reason = f"cancelled by {user.name}"
        if exp.state in FINAL:
            raise Conflict(f"experiment {exp_id} is {exp.state}, a final state: nothing to cancel", experiment=exp_id)
        if exp.state in CANCELLABLE_AT_ONCE:
            transition(session, exp, "Stopped", user.name, reason, now)
            exp.ended_at = now
        elif exp.state == "Running":
            transition(session, exp, "Finishing", user.name, reason, now)
        else:  # Finishing: already on its way out
            raise Conflict(f"experiment {exp_id} is already Finishing; it stops on its own", experiment=exp_id)
        session.flush()
        return _view(session, exp)


def extend(
    sessions: sessionmaker[Session],
    limits: ExperimentSettings,
    user: User,
    exp_id: int,
    seconds: int,
    now: datetime,
) -> ExperimentView:
    """Move the deadline ``seconds`` later, if nothing else holds its (gateway, radio) pairs then."""
    if not isinstance(seconds, int) or seconds <= 0:
        raise Invalid("seconds: a positive number of seconds", field="seconds")
    with _BOOKING, sessions.begin() as session:
        _lock_bookings(session)
        exp = _owned(session, user, exp_id)
        if exp.state in FINAL or exp.state == "Finishing":
            raise Conflict(f"experiment {exp_id} is {exp.state}: it can no longer be extended", experiment=exp_id)
        if exp.duration_s + seconds > limits.max_duration_s:
            raise Invalid(
                f"seconds: the duration would be {exp.duration_s + seconds} s, over the maximum of "
                f"{limits.max_duration_s} s",
                field="seconds",
            )
        old = utc(exp.deadline)
        assert old is not None and exp.start is not None
        new = old + timedelta(seconds=seconds)
        resources = session.scalars(select(ExperimentResource).where(ExperimentResource.experiment_id == exp.id)).all()
        for r in resources:
            other = overlapping(session, r.gateway, r.radio, old, new, exclude=exp.id)
            if other is not None:
                raise _conflict_on(other, r.gateway, r.radio)
        exp.deadline = new
        exp.duration_s += seconds
        session.flush()
        return _view(session, exp)


def experiment_for_gateway(sessions: sessionmaker[Session], exp_id: int, gateway: str) -> tuple[Experiment, bool]:
    """The experiment and whether ``gateway`` is one of its resources (for the agent's token checks)."""
    with sessions() as session:
        exp = session.get(Experiment, exp_id)
        if exp is None:
            raise NotFound(f"no experiment {exp_id}")
        found = session.scalars(
            select(ExperimentResource.id).where(
                ExperimentResource.experiment_id == exp_id, ExperimentResource.gateway == gateway
            )
        ).first()
        session.expunge(exp)
        return exp, found is not None


def authorised(sessions: sessionmaker[Session], user: User, exp_id: int) -> Experiment:
    """The experiment if ``user`` may read it; ``NotFound`` / ``Forbidden`` otherwise."""
    with sessions() as session:
        exp = _owned(session, user, exp_id)
        session.expunge(exp)
        return exp


def record_results(sessions: sessionmaker[Session], exp_id: int, gateway: str, sha256: str, size: int) -> None:
    """Note a gateway's uploaded results bundle on its resource."""
    with sessions.begin() as session:
        row = session.scalars(
            select(ExperimentResource).where(
                ExperimentResource.experiment_id == exp_id, ExperimentResource.gateway == gateway
            )
        ).first()
        if row is None:
            raise NotFound(f"gateway {gateway} is not part of experiment {exp_id}")
        row.results_sha256 = sha256
        row.results_size = size
