"""The experiments scheduler (``smartzone experiments scheduler``, compose service ``experiments``).

Three layers, each testable alone (docs/parts/experiments-scheduler.md):

- ``tick(session, now, cfg)``: the state rules over the SQL store, with the clock as a parameter
  (Waiting -> toLaunch -> Launching -> Running -> Finishing -> Terminated | Stopped | Error); ``desired``:
  each gateway's desired document, computed from SQL; ``wanted_users``: the broker users that must exist.
- ``apply_message(session, topic, payload, now)``: what the gateways say (``gw/<id>/experiments/reported``,
  ``gw/<id>/status``, ``/selftest``, ``/health``) into the tables; a malformed message raises ``BadMessage``
  and changes nothing.
- ``Scheduler``: the MQTT loop (paho v2, MQTT v5, QoS 1). Every ``tick_s``: the queued messages applied, the
  rules run, each new state change (whoever made it: the scheduler or the API) published on
  ``smartzone/experiments/events``, the experiments' broker users created or deleted through the
  dynamic-security plugin, and each gateway's desired document published, retained, when it changed (all of
  them after each connect: a restarted scheduler is harmless).
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.subscribeoptions import SubscribeOptions
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from experiments import secrets
from experiments.db import PHASES, Artifact, Event, Experiment, ExperimentResource, Gateway, User, open_store, utc
from experiments.dynsec import Dynsec, DynsecError, prefix, user_name
from experiments.states import FINAL, transition
from smartzone.settings import Settings

log = logging.getLogger("smartzone.experiments.scheduler")

ACTOR = "scheduler"
ACTIVE = ("toLaunch", "Launching", "Running", "Finishing")  # the experiment's broker users exist
FINAL_PHASES = frozenset({"finished", "failed", "stopped", "refused"})
BAD_PHASES = ("failed", "refused")
UNDER_WAY = frozenset({"running", "stopping", "finished"})  # it has started
EVENTS_TOPIC = "smartzone/experiments/events"
SUBSCRIPTIONS = ("gw/+/experiments/reported", "gw/+/status", "gw/+/selftest", "gw/+/health")
CANCELLED = "cancelled"  # the API's reason when it moves a running experiment to Finishing: "cancelled by <user>"
MEMORY_BYTES = 256 * 1024 * 1024
FILE_BYTES = 100 * 1024 * 1024
LOG_TAIL_CHARS = 4096
EVENT_REPLAY_S = 3600.0  # on start, the state changes of the last hour are published again (idempotent)
_GATEWAY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def exact(t: datetime) -> str:
    """RFC 3339 to the microsecond when there is a fraction: the agent stops at the same instant as the rules
    (``iso`` cut an ASAP experiment's deadline up to a second short, and it 'ended before its deadline')."""
    return iso(t) if t.microsecond == 0 else t.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


@dataclass(frozen=True)
class Config:
    """What the rules and the documents need of the settings (``from_settings``)."""

    launch_lead_s: float = 60.0
    start_grace_s: float = 300.0
    finish_grace_s: float = 120.0
    base_url: str = "http://127.0.0.1:8000"
    key: bytes = b""

    @classmethod
    def from_settings(cls, settings: Settings) -> Config:
        e = settings.experiments
        base = settings.public_base_url()
        return cls(e.launch_lead_s, e.start_grace_s, e.finish_grace_s, base, secrets.key(settings))


@dataclass(frozen=True)
class Action:
    """One state change the rules made."""

    experiment: int
    from_state: str
    to_state: str
    reason: str
    time: datetime


# -- the rules ----------------------------------------------------------------------------------------
def _resources(session: Session, exp_id: int) -> list[ExperimentResource]:
    q = select(ExperimentResource).where(ExperimentResource.experiment_id == exp_id)
    return list(session.scalars(q.order_by(ExperimentResource.gateway)))


def _last_event_to(session: Session, exp_id: int, state: str) -> Event | None:
    q = select(Event).where(Event.experiment_id == exp_id, Event.to_state == state).order_by(Event.id.desc())
    return session.scalars(q.limit(1)).first()


def times(exp: Experiment) -> tuple[datetime, datetime]:
    """(start, deadline); an experiment without a start (as soon as possible) starts when it was created."""
    start = utc(exp.start) or utc(exp.created_at)
    assert start is not None
    deadline = utc(exp.deadline) or start + timedelta(seconds=exp.duration_s)
    return start, deadline


def cancelled_at(session: Session, exp: Experiment) -> datetime | None:
    """When a Finishing experiment was cancelled (the API's reason "cancelled by <user>"); None: its deadline."""
    if exp.state != "Finishing":
        return None
    ev = _last_event_to(session, exp.id, "Finishing")
    return utc(ev.at) if ev is not None and ev.reason.startswith(CANCELLED) else None


def _said(r: ExperimentResource) -> str:
    return f"{r.gateway} reported nothing" if r.phase is None else f"{r.gateway} {r.phase}"


def _failure(r: ExperimentResource) -> str:
    code = "" if r.exit_code is None else f", exit code {r.exit_code}"
    why = r.error
    if r.exit_code is not None and why == f"exit code {r.exit_code}":  # the agent's words for a plain exit
        why = next((ln.strip() for ln in reversed((r.log_tail or "").splitlines()) if ln.strip()), "")
    error = f": {why}" if why else ""
    return f"{r.gateway} {r.phase}{code}{error}"


def next_state(
    session: Session, exp: Experiment, resources: list[ExperimentResource], now: datetime, cfg: Config
) -> tuple[str, str] | None:
    """The state the rules move ``exp`` to now, and why; None: it stays."""
    start, deadline = times(exp)
    state = exp.state
    if state == "Waiting":
        if now >= start - timedelta(seconds=cfg.launch_lead_s):
            return "toLaunch", f"launching {cfg.launch_lead_s:g} s before its start {exact(start)}"
        return None
    if state not in ACTIVE:
        return None
    bad = [r for r in resources if r.phase in BAD_PHASES]
    if bad:
        return "Error", "; ".join(_failure(r) for r in bad)
    if state == "toLaunch":
        heard = [r for r in resources if r.phase is not None]
        if heard:
            return "Launching", ", ".join(f"{r.gateway} {r.phase}" for r in heard)
    if state == "Launching" and resources and all(r.phase in UNDER_WAY for r in resources):
        return "Running", "running on " + ", ".join(
            f"{r.gateway}" + (f" (pid {r.pid})" if r.pid else "") for r in resources
        )
    if state in ("toLaunch", "Launching"):
        if now >= start + timedelta(seconds=cfg.start_grace_s):
            late = [r for r in resources if r.phase not in UNDER_WAY] or resources
            return "Error", f"not running {cfg.start_grace_s:g} s after its start: " + ", ".join(_said(r) for r in late)
        return None
    if state == "Running":
        if now >= deadline:
            return "Finishing", f"deadline {exact(deadline)} reached"
        if resources and all(r.phase in FINAL_PHASES for r in resources):
            return "Finishing", "ended on every gateway before its deadline"
        return None
    # Finishing: after a cancel, until every agent stopped it; after the deadline, until the results are in
    entered = _last_event_to(session, exp.id, "Finishing")
    since = utc(entered.at) if entered is not None else deadline
    assert since is not None
    grace_over = now >= since + timedelta(seconds=cfg.finish_grace_s)
    if entered is not None and entered.reason.startswith(CANCELLED):
        running = [r for r in resources if r.phase not in FINAL_PHASES]
        if not running:
            return "Stopped", f"{entered.reason}: stopped on every gateway"
        if grace_over:
            return "Stopped", f"{entered.reason}; after {cfg.finish_grace_s:g} s: " + ", ".join(
                _said(r) for r in running
            )
        return None
    missing = [r for r in resources if r.phase not in FINAL_PHASES or r.results_sha256 is None]
    if not missing:
        return "Terminated", "ended on every gateway, results uploaded"
    if grace_over:
        why = [_said(r) if r.phase not in FINAL_PHASES else f"{r.gateway} uploaded no results" for r in missing]
        return "Terminated", f"{cfg.finish_grace_s:g} s after the end: " + ", ".join(why)
    return None


def tick(session: Session, now: datetime, cfg: Config) -> list[Action]:
    """Apply the rules to every experiment that is not final; returns the changes (not committed)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    actions: list[Action] = []
    live = select(Experiment).where(Experiment.state.not_in(FINAL)).order_by(Experiment.id)
    for exp in session.scalars(live).all():
        resources = _resources(session, exp.id)
        for _ in range(len(ACTIVE) + 1):  # several steps in one tick when the reports allow it
            step = next_state(session, exp, resources, now, cfg)
            if step is None:
                break
            to_state, reason = step
            from_state = exp.state
            transition(session, exp, to_state, ACTOR, reason, now)
            if to_state == "Running":
                exp.started_at = now
            if to_state in FINAL:
                exp.ended_at = now
            session.flush()
            actions.append(Action(exp.id, from_state, to_state, reason, now))
            log.info("experiment %d: %s -> %s (%s)", exp.id, from_state, to_state, reason)
            if to_state in FINAL:
                break
    return actions


# -- what the gateways must run ------------------------------------------------------------------------
def wanted_users(session: Session) -> set[tuple[int, str]]:
    """(experiment, gateway) of every experiment that is launched and not final: their broker users."""
    q = (
        select(ExperimentResource.experiment_id, ExperimentResource.gateway)
        .join(Experiment, Experiment.id == ExperimentResource.experiment_id)
        .where(Experiment.state.in_(ACTIVE))
    )
    return {(e, g) for e, g in session.execute(q)}


def known_gateways(session: Session) -> set[str]:
    """Every gateway an experiment ever took or whose availability was heard: each gets a desired document."""
    took = set(session.scalars(select(ExperimentResource.gateway).distinct()))
    return took | set(session.scalars(select(Gateway.id)))


def desired(session: Session, now: datetime, cfg: Config) -> dict[str, dict[str, Any]]:
    """Gateway -> its desired document: every launched experiment it takes part in, except one cancelled
    (dropped: the agent stops it) or final. Gateways with nothing to run are absent (publish the empty list)."""
    per_gateway: dict[str, list[dict[str, Any]]] = {}
    live = select(Experiment).where(Experiment.state.in_(ACTIVE)).order_by(Experiment.id)
    for exp in session.scalars(live):
        if cancelled_at(session, exp) is not None:
            continue
        artifact = session.get(Artifact, exp.artifact_sha256) if exp.artifact_sha256 else None
        if artifact is None:
            log.warning("experiment %d has no artifact: left out of the desired documents", exp.id)
            continue
        resources = _resources(session, exp.id)
        start, deadline = times(exp)
        gateways = [r.gateway for r in resources]
        base = f"{cfg.base_url}/v1/experiments/{exp.id}"
        for r in resources:
            per_gateway.setdefault(r.gateway, []).append(
                {
                    "id": exp.id,
                    "name": exp.name,
                    "artifact": {
                        "url": f"{base}/artifact",
                        "sha256": artifact.sha256,
                        "size": artifact.size,
                        "kind": artifact.kind,
                        "filename": artifact.filename,
                    },
                    "start": exact(start),
                    "deadline": exact(deadline),
                    "radio": r.radio,
                    "parameters": exp.parameters or {},
                    "gateways": gateways,
                    "mqtt": {
                        "username": user_name(exp.id, r.gateway),
                        "password": secrets.broker_password(cfg.key, exp.id, r.gateway),
                        "prefix": prefix(exp.id, r.gateway),
                    },
                    "upload": {
                        "url": f"{base}/gateways/{r.gateway}/results",
                        "token": secrets.upload_token(cfg.key, exp.id, r.gateway),
                    },
                    "limits": {"cpu_s": exp.duration_s + 60, "memory_bytes": MEMORY_BYTES, "file_bytes": FILE_BYTES},
                }
            )
    return {gw: document(items, now) for gw, items in per_gateway.items()}


def document(items: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    return {"version": 1, "generated": iso(now), "experiments": items}


def same_document(doc: dict[str, Any]) -> str:
    """A document's content for change detection: everything but when it was generated."""
    return json.dumps({k: v for k, v in doc.items() if k != "generated"}, sort_keys=True)


def event_document(session: Session, ev: Event) -> dict[str, Any]:
    exp = session.get(Experiment, ev.experiment_id)
    owner = session.get(User, exp.owner_id) if exp is not None else None
    return {
        "experiment": ev.experiment_id,
        "name": exp.name if exp is not None else "",
        "owner": owner.name if owner is not None else "",
        "gateways": [r.gateway for r in _resources(session, ev.experiment_id)],
        "from": ev.from_state,
        "to": ev.to_state,
        "reason": ev.reason,
        "actor": ev.actor,
        "time": iso(utc(ev.at) or ev.at),
    }


# -- what the gateways say ------------------------------------------------------------------------------
class BadMessage(ValueError):
    """A message the scheduler cannot use (logged and ignored): nothing was changed."""


def _gateway_row(session: Session, gateway: str) -> Gateway:
    row = session.get(Gateway, gateway)
    if row is None:
        row = Gateway(id=gateway, selftest_detail="")
        session.add(row)
    return row


def _json_object(payload: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadMessage(f"{what}: not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise BadMessage(f"{what}: not a JSON object")
    return doc


def _opt_int(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not -(2**31) <= value < 2**31:
        raise BadMessage(f"{what}: not an integer: {value!r:.40}")
    return value


def apply_reported(session: Session, gateway: str, payload: bytes, now: datetime) -> int:
    """A gateway's reported document into its experiments' resources; returns how many it updated.
    Entries of experiments the gateway does not take part in are ignored (logged)."""
    doc = _json_object(payload, f"{gateway} reported")
    items = doc.get("experiments")
    if not isinstance(items, list):
        raise BadMessage(f"{gateway} reported: 'experiments' must be a list")
    updates = []
    for item in items:  # all checked before anything changes
        if not isinstance(item, dict):
            raise BadMessage(f"{gateway} reported: an entry is not an object")
        exp_id = _opt_int(item.get("id"), f"{gateway} reported id")
        if exp_id is None:
            raise BadMessage(f"{gateway} reported: an entry without an id")
        phase = item.get("phase")
        if phase not in PHASES:
            raise BadMessage(f"{gateway} reported experiment {exp_id}: unknown phase {phase!r:.40}")
        pid = _opt_int(item.get("pid"), f"{gateway} reported pid")
        code = _opt_int(item.get("exit_code"), f"{gateway} reported exit_code")
        error, tail = item.get("error") or "", item.get("log_tail") or ""
        if not isinstance(error, str) or not isinstance(tail, str):
            raise BadMessage(f"{gateway} reported experiment {exp_id}: error and log_tail must be text")
        updates.append((exp_id, phase, pid, code, error[:LOG_TAIL_CHARS], tail[-LOG_TAIL_CHARS:]))
    n = 0
    for exp_id, phase, pid, code, error, tail in updates:
        q = select(ExperimentResource).where(
            ExperimentResource.experiment_id == exp_id, ExperimentResource.gateway == gateway
        )
        r = session.scalars(q).first()
        if r is None:
            log.warning("%s reported experiment %d, which it does not take part in: ignored", gateway, exp_id)
            continue
        r.phase, r.pid, r.exit_code, r.error, r.log_tail, r.reported_at = phase, pid, code, error, tail, now
        n += 1
    return n


def apply_message(session: Session, topic: str, payload: bytes, now: datetime) -> str:
    """One message of ``SUBSCRIPTIONS`` into the tables (not committed); returns what it did."""
    parts = topic.split("/")
    if len(parts) < 3 or parts[0] != "gw" or not _GATEWAY.fullmatch(parts[1]):
        raise BadMessage(f"unexpected topic {topic!r:.120}")
    gateway, rest = parts[1], "/".join(parts[2:])
    if rest == "experiments/reported":
        return f"{gateway}: {apply_reported(session, gateway, payload, now)} experiments reported"
    if rest == "status":
        text = payload.decode(errors="replace").strip()
        if text not in ("online", "offline"):
            raise BadMessage(f"{gateway} status: {text!r:.40} (online or offline expected)")
        row = _gateway_row(session, gateway)
        row.online, row.status_at = text == "online", now
        return f"{gateway} {text}"
    if rest == "selftest":
        doc = _json_object(payload, f"{gateway} selftest")
        failed = _opt_int(doc.get("failed"), f"{gateway} selftest failed")
        checks = doc.get("checks", [])
        if failed is None or not isinstance(checks, list):
            raise BadMessage(f"{gateway} selftest: 'failed' (a number) and 'checks' (a list) expected")
        bad = [c for c in checks if isinstance(c, dict) and c.get("ok") is False]
        detail = "; ".join(f"{c.get('name', '?')}: {c.get('detail', '')}" for c in bad)
        row = _gateway_row(session, gateway)
        row.selftest_failed, row.selftest_at, row.selftest_detail = failed, now, detail[:LOG_TAIL_CHARS]
        return f"{gateway} self-test: {failed} failed"
    if rest == "health":
        _gateway_row(session, gateway).health_at = now
        return f"{gateway} heard"
    raise BadMessage(f"unexpected topic {topic!r:.120}")


# -- the loop --------------------------------------------------------------------------------------------
@dataclass
class Scheduler:
    """The MQTT loop around the rules; ``run(stop)`` until ``stop`` is set (SIGTERM in the CLI)."""

    settings: Settings
    sessions: sessionmaker[Session] | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    dynsec_timeout: float = 5.0

    def __post_init__(self) -> None:
        if self.sessions is None:
            Path(self.settings.data_dir).mkdir(parents=True, exist_ok=True)  # the default SQLite file lives there
            self.sessions = open_store(self.settings.sql_url)
        self.cfg = Config.from_settings(self.settings)
        self.inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self._published: dict[str, str] = {}  # gateway -> its last published desired document (same_document)
        self._users: set[tuple[int, str]] | None = None  # the experiments' users on the broker; None: not listed
        self._no_plugin_until = 0.0
        self._event_cursor: int | None = None
        self._resync = threading.Event()
        self._sub_mid: int | None = None
        self.client = self._make_client()
        self.dynsec = Dynsec(self.client, self.dynsec_timeout)

    def _make_client(self) -> mqtt.Client:
        m, e = self.settings.mqtt, self.settings.experiments
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=e.broker_username, protocol=mqtt.MQTTv5)
        password = e.broker_password or m.password
        if e.broker_password is not None or m.username:
            client.username_pw_set(e.broker_username, password.get_secret_value() if password else None)
        if m.tls:
            client.tls_set(ca_certs=str(m.ca_file) if m.ca_file else None)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if rc.is_failure:
            log.error("broker refused the scheduler's login: %s", rc)
            return
        self._resync.set()  # the loop republishes every desired document and lists the users again
        _, self._sub_mid = client.subscribe([(t, SubscribeOptions(qos=1)) for t in SUBSCRIPTIONS])
        self.dynsec.subscribe()
        self.connected.set()
        log.info("scheduler connected to %s:%d", self.settings.mqtt.host, self.settings.mqtt.port)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, rcs: Any, props: Any = None) -> None:
        if mid == self._sub_mid:
            refused = [t for t, rc in zip(SUBSCRIPTIONS, rcs, strict=False) if rc.is_failure]
            if refused:
                log.error("broker refused the scheduler's subscriptions: %s", ", ".join(refused))
            self.subscribed.set()
            log.info("MQTT subscribed: %s", ", ".join(SUBSCRIPTIONS))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        self.connected.clear()
        self.subscribed.clear()
        log.warning("scheduler disconnected from the broker: %s", rc)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.inbox.put((msg.topic, bytes(msg.payload)))

    # -- one period -----------------------------------------------------------------------------------
    def step(self) -> list[Action]:
        """Apply the inbox, run the rules, publish events, reconcile users, publish desired documents."""
        assert self.sessions is not None
        now = self.clock()
        while True:
            try:
                topic, payload = self.inbox.get_nowait()
            except queue.Empty:
                break
            with self.sessions() as s:
                try:
                    log.debug(apply_message(s, topic, payload, now))
                    s.commit()
                except BadMessage as exc:
                    log.warning("ignored: %s", exc)
                except Exception:
                    log.exception("could not apply a message on %s", topic)
        with self.sessions() as s:
            actions = tick(s, now, self.cfg)
            s.commit()
        if not self.connected.is_set():
            return actions
        if self._resync.is_set():  # (re)connected: state the broker may have lost is sent again
            self._resync.clear()
            self._published.clear()
            self._users = None
        with self.sessions() as s:
            self._publish_events(s, now)
            blocked = self._reconcile_users(s)
            self._publish_desired(s, now, blocked)
        return actions

    def _publish_events(self, s: Session, now: datetime) -> None:
        if self._event_cursor is None:
            older = select(func.max(Event.id)).where(Event.at < now - timedelta(seconds=EVENT_REPLAY_S))
            self._event_cursor = s.scalar(older) or 0
        q = select(Event).where(Event.id > self._event_cursor).order_by(Event.id).limit(500)
        for ev in s.scalars(q):
            info = self.client.publish(EVENTS_TOPIC, json.dumps(event_document(s, ev)), qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                return
            self._event_cursor = ev.id

    def _reconcile_users(self, s: Session) -> set[str]:
        """Create the missing experiment users, delete those of final experiments; returns the gateways whose
        desired document must wait (a user of theirs could not be made)."""
        if self._users is None:
            if time.monotonic() < self._no_plugin_until:
                return set()
            try:
                self._users = self.dynsec.experiment_users()
            except DynsecError as exc:
                log.warning(
                    "no dynamic-security plugin answers (%s): experiments get no broker users; fine only on an "
                    "anonymous development broker; asking again in 60 s",
                    exc,
                )
                self._no_plugin_until = time.monotonic() + 60
                return set()
        blocked: set[str] = set()
        wanted = wanted_users(s)
        for exp_id, gw in sorted(wanted - self._users):
            try:
                self.dynsec.ensure_experiment_user(exp_id, gw, secrets.broker_password(self.cfg.key, exp_id, gw))
                self._users.add((exp_id, gw))
                log.info("broker user %s created", user_name(exp_id, gw))
            except DynsecError as exc:
                log.error("broker user %s: %s", user_name(exp_id, gw), exc)
                blocked.add(gw)
        for exp_id, gw in sorted(self._users - wanted):
            try:
                self.dynsec.remove_experiment_user(exp_id, gw)
                self._users.discard((exp_id, gw))
                log.info("broker user %s deleted", user_name(exp_id, gw))
            except DynsecError as exc:
                log.error("broker user %s not deleted: %s", user_name(exp_id, gw), exc)
        return blocked

    def _publish_desired(self, s: Session, now: datetime, blocked: Iterable[str]) -> None:
        docs = desired(s, now, self.cfg)
        for gw in sorted(known_gateways(s) | set(docs)):
            if gw in blocked:
                continue
            doc = docs.get(gw) or document([], now)
            same = same_document(doc)
            if self._published.get(gw) == same:
                continue
            info = self.client.publish(f"gw/{gw}/experiments/desired", json.dumps(doc), qos=1, retain=True)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                self._published[gw] = same
                log.info("desired of %s: %d experiments", gw, len(doc["experiments"]))

    # -- running ----------------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        m = self.settings.mqtt
        self.client.connect_async(m.host, m.port, keepalive=m.keepalive)
        self.client.loop_start()
        try:
            while not stop.is_set():
                try:
                    self.step()
                except Exception:  # a database outage, ...: logged, the next period tries again
                    log.exception("scheduler period failed")
                stop.wait(self.settings.experiments.tick_s)
        finally:
            self.client.disconnect()
            self.client.loop_stop()
            log.info("scheduler stopped")
