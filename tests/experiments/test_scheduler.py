"""The experiments scheduler: its rules state by state with the clock as a parameter (SQLite and PostgreSQL),
the gateways' messages into the tables, and its MQTT loop on the broker as compose runs it (password file,
ACL, dynamic security): users created at launch and deleted when final, desired documents retained and
republished only on change, events published, malformed reports ignored."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from cli import broker
from experiments import secrets
from experiments.db import Artifact, Event, Experiment, ExperimentResource, Gateway, User, open_store
from experiments.dynsec import user_name
from experiments.scheduler import (
    EVENTS_TOPIC,
    BadMessage,
    Config,
    Scheduler,
    apply_message,
    desired,
    exact,
    tick,
    wanted_users,
)
from experiments.states import transition
from smartzone.settings import Settings
from tests.conftest import REGISTRY, wait_for

T0 = datetime(2026, 12, 2, 17, 0, tzinfo=UTC)
START = T0 + timedelta(minutes=5)
CFG = Config(launch_lead_s=60, start_grace_s=300, finish_grace_s=120, base_url="https://api.example", key=b"k" * 32)
GW, GW2 = "gw-kloosterstraat", "gw-egmont"
SHA = "ab" * 32


def _store(url: str):
    return open_store(url)


def _experiment(sessions, *, gateways=(GW,), start=START, duration=600, state="Waiting", name="rtt probe") -> int:
    with sessions() as s:
        owner = s.scalars(select(User).where(User.name == "alice")).first()
        if owner is None:
            owner = User(name="alice", role="experimenter", created_at=T0)
            s.add(owner)
        if s.get(Artifact, SHA) is None:
            s.add(Artifact(sha256=SHA, size=1234, kind="script", filename="probe.py", created_at=T0))
        s.flush()
        exp = Experiment(
            name=name,
            description="",
            owner_id=owner.id,
            state=state,
            start=start,
            duration_s=duration,
            deadline=start + timedelta(seconds=duration),
            parameters={"interval_s": 1},
            artifact_sha256=SHA,
            created_at=T0,
        )
        s.add(exp)
        s.flush()
        for gw in gateways:
            s.add(ExperimentResource(experiment_id=exp.id, gateway=gw, radio="ble"))
        s.commit()
        return exp.id


def _report(sessions, exp_id: int, gateway: str, phase: str, **kw) -> None:
    with sessions() as s:
        r = s.scalars(
            select(ExperimentResource).where(
                ExperimentResource.experiment_id == exp_id, ExperimentResource.gateway == gateway
            )
        ).one()
        r.phase = phase
        for k, v in kw.items():
            setattr(r, k, v)
        s.commit()


def _tick(sessions, now: datetime) -> list[tuple[int, str, str]]:
    with sessions() as s:
        actions = tick(s, now, CFG)
        s.commit()
    return [(a.experiment, a.to_state, a.reason) for a in actions]


def _exp(sessions, exp_id: int) -> Experiment:
    with sessions() as s:
        return s.get(Experiment, exp_id)


# -- the rules ----------------------------------------------------------------------------------------
def test_launch_run_finish_terminate_with_the_clock(sql_url):
    sessions = _store(sql_url)
    e = _experiment(sessions, gateways=(GW, GW2))
    assert _tick(sessions, START - timedelta(seconds=61)) == []  # before the launch lead
    assert [a[1] for a in _tick(sessions, START - timedelta(seconds=60))] == ["toLaunch"]
    assert _tick(sessions, START - timedelta(seconds=59)) == []  # nobody reported yet
    _report(sessions, e, GW, "fetching")
    assert [(a[1], a[2]) for a in _tick(sessions, START - timedelta(seconds=50))] == [("Launching", f"{GW} fetching")]
    _report(sessions, e, GW, "running", pid=41)
    assert _tick(sessions, START) == []  # one gateway running is not the experiment running
    _report(sessions, e, GW2, "running", pid=42)
    now = START + timedelta(seconds=2)
    assert [a[1] for a in _tick(sessions, now)] == ["Running"]
    assert _exp(sessions, e).started_at is not None
    deadline = START + timedelta(seconds=600)
    assert _tick(sessions, deadline - timedelta(seconds=1)) == []
    assert [a[1] for a in _tick(sessions, deadline)] == ["Finishing"]
    _report(sessions, e, GW, "finished", exit_code=0, results_sha256="cd" * 32, results_size=10)
    _report(sessions, e, GW2, "finished", exit_code=0)
    assert _tick(sessions, deadline + timedelta(seconds=5)) == []  # GW2's results not uploaded yet
    _report(sessions, e, GW2, "finished", results_sha256="ef" * 32, results_size=10)
    assert [(a[1], a[2]) for a in _tick(sessions, deadline + timedelta(seconds=6))] == [
        ("Terminated", "ended on every gateway, results uploaded")
    ]
    done = _exp(sessions, e)
    assert done.ended_at is not None and done.state == "Terminated"
    with sessions() as s:
        events = s.scalars(select(Event).where(Event.experiment_id == e).order_by(Event.id)).all()
    assert [(ev.from_state, ev.to_state, ev.actor) for ev in events] == [
        ("Waiting", "toLaunch", "scheduler"),
        ("toLaunch", "Launching", "scheduler"),
        ("Launching", "Running", "scheduler"),
        ("Running", "Finishing", "scheduler"),
        ("Finishing", "Terminated", "scheduler"),
    ]


def test_after_the_finish_grace_it_terminates_naming_what_is_missing(sql_url):
    sessions = _store(sql_url)
    e = _experiment(sessions, state="Running")
    deadline = START + timedelta(seconds=600)
    assert [a[1] for a in _tick(sessions, deadline)] == ["Finishing"]
    _report(sessions, e, GW, "stopping")
    assert _tick(sessions, deadline + timedelta(seconds=119)) == []
    [(_, to, reason)] = _tick(sessions, deadline + timedelta(seconds=120))
    assert to == "Terminated" and reason == f"120 s after the end: {GW} stopping"


def test_a_failed_gateway_puts_it_in_error_with_exit_code_and_error(sql_url):
    sessions = _store(sql_url)
    e = _experiment(sessions, gateways=(GW, GW2), state="Launching")
    _report(sessions, e, GW, "running")
    _report(sessions, e, GW2, "failed", exit_code=3, error="Traceback: ZeroDivisionError")
    [(_, to, reason)] = _tick(sessions, START + timedelta(seconds=3))
    assert to == "Error" and reason == f"{GW2} failed, exit code 3: Traceback: ZeroDivisionError"
    assert _exp(sessions, e).ended_at is not None
    e2 = _experiment(sessions, state="toLaunch")
    _report(sessions, e2, GW, "refused", error="sha256 mismatch")
    assert _tick(sessions, START)[0][1:] == ("Error", f"{GW} refused: sha256 mismatch")
    # the agent says only "exit code N" for a plain exit: the last line of the output says why
    e3 = _experiment(sessions, state="Running")
    _report(sessions, e3, GW, "failed", exit_code=3, error="exit code 3", log_tail="setting up\nboom: no radio\n\n")
    assert _tick(sessions, START)[0][1:] == ("Error", f"{GW} failed, exit code 3: boom: no radio")


def test_not_running_after_the_start_grace_is_an_error(sql_url):
    sessions = _store(sql_url)
    _experiment(sessions, gateways=(GW, GW2), state="toLaunch")
    assert _tick(sessions, START + timedelta(seconds=299)) == []
    [(_, to, reason)] = _tick(sessions, START + timedelta(seconds=300))
    assert to == "Error"
    assert reason == f"not running 300 s after its start: {GW2} reported nothing, {GW} reported nothing"
    e2 = _experiment(sessions, state="toLaunch")
    _report(sessions, e2, GW, "waiting")
    steps = _tick(sessions, START + timedelta(seconds=300))
    assert [a[1] for a in steps] == ["Launching", "Error"]
    assert steps[-1][2] == f"not running 300 s after its start: {GW} waiting"


def test_cancelled_it_leaves_desired_and_stops_when_the_agents_say_so(sql_url):
    sessions = _store(sql_url)
    e = _experiment(sessions, state="Running")
    with sessions() as s:
        assert [x["id"] for x in desired(s, START, CFG)[GW]["experiments"]] == [e]
        transition(s, s.get(Experiment, e), "Finishing", "alice", "cancelled by alice", START + timedelta(seconds=10))
        s.commit()
        assert desired(s, START, CFG) == {}  # dropped: the agent stops it now
        assert wanted_users(s) == {(e, GW)}  # its user lives until it is final
    _report(sessions, e, GW, "stopping")
    assert _tick(sessions, START + timedelta(seconds=20)) == []
    _report(sessions, e, GW, "stopped")
    assert _tick(sessions, START + timedelta(seconds=21)) == [
        (e, "Stopped", "cancelled by alice: stopped on every gateway")
    ]
    with sessions() as s:
        assert wanted_users(s) == set()


def test_a_cancelled_experiment_whose_agent_is_silent_stops_after_the_grace(sql_url):
    sessions = _store(sql_url)
    e = _experiment(sessions, state="Running")
    with sessions() as s:
        transition(s, s.get(Experiment, e), "Finishing", "bob", "cancelled by bob", START)
        s.commit()
    _report(sessions, e, GW, "running")
    assert _tick(sessions, START + timedelta(seconds=119)) == []
    assert _tick(sessions, START + timedelta(seconds=120))[0][1:] == (
        "Stopped",
        f"cancelled by bob; after 120 s: {GW} running",
    )


def test_ended_everywhere_before_the_deadline_goes_to_finishing(sql_url):
    sessions = _store(sql_url)
    e = _experiment(sessions, state="Running")
    _report(sessions, e, GW, "finished", exit_code=0, results_sha256="aa" * 32)
    assert [a[1] for a in _tick(sessions, START + timedelta(seconds=30))] == ["Finishing", "Terminated"]


def test_desired_documents_from_sql(tmp_path):
    sessions = _store(f"sqlite:///{tmp_path / 'x.db'}")
    waiting = _experiment(sessions)  # not launched: not desired
    e = _experiment(sessions, gateways=(GW, GW2), state="Launching", name="two")
    done = _experiment(sessions, state="Error")
    with sessions() as s:
        docs = desired(s, START, CFG)
    assert set(docs) == {GW, GW2}
    [item] = docs[GW]["experiments"]
    assert item["id"] == e and waiting != e != done
    assert docs[GW]["version"] == 1 and docs[GW]["generated"] == "2026-12-02T17:05:00Z"
    assert item["artifact"] == {
        "url": f"https://api.example/v1/experiments/{e}/artifact",
        "sha256": SHA,
        "size": 1234,
        "kind": "script",
        "filename": "probe.py",
    }
    assert (item["start"], item["deadline"]) == ("2026-12-02T17:05:00Z", "2026-12-02T17:15:00Z")
    # an ASAP experiment's times have fractions: the agent gets them exactly, not cut to the second before
    assert exact(START + timedelta(microseconds=870_001)) == "2026-12-02T17:05:00.870001Z"
    assert item["gateways"] == sorted([GW, GW2]) and item["radio"] == "ble" and item["parameters"] == {"interval_s": 1}
    assert item["mqtt"] == {
        "username": f"exp-{e}-{GW}",
        "password": secrets.broker_password(CFG.key, e, GW),
        "prefix": f"gw/{GW}/experiments/{e}/",
    }
    assert item["upload"] == {
        "url": f"https://api.example/v1/experiments/{e}/gateways/{GW}/results",
        "token": secrets.upload_token(CFG.key, e, GW),
    }
    assert docs[GW2]["experiments"][0]["mqtt"]["password"] != item["mqtt"]["password"]  # per gateway
    assert set(item["limits"]) == {"cpu_s", "memory_bytes", "file_bytes"}


# -- what the gateways say --------------------------------------------------------------------------
def test_reported_status_selftest_and_health_into_the_tables(tmp_path):
    sessions = _store(f"sqlite:///{tmp_path / 'x.db'}")
    e = _experiment(sessions, state="toLaunch")
    now = START
    doc = {
        "version": 1,
        "time": "2026-12-02T17:05:01Z",
        "experiments": [
            {"id": e, "phase": "running", "pid": 1234, "exit_code": None, "error": "", "log_tail": "x" * 9000},
            {"id": 999, "phase": "running"},  # not this gateway's: ignored
        ],
    }
    with sessions() as s:
        assert (
            apply_message(s, f"gw/{GW}/experiments/reported", json.dumps(doc).encode(), now)
            == f"{GW}: 1 experiments reported"
        )
        apply_message(s, f"gw/{GW}/status", b"online", now)
        apply_message(
            s,
            f"gw/{GW}/selftest",
            json.dumps(
                {
                    "time": "x",
                    "failed": 1,
                    "checks": [
                        {"name": "spi", "ok": False, "detail": "no /dev/spidev0.0"},
                        {"name": "disk", "ok": True},
                    ],
                }
            ).encode(),
            now,
        )
        apply_message(s, f"gw/{GW2}/health", b"{}", now)
        s.commit()
    with sessions() as s:
        r = s.scalars(select(ExperimentResource).where(ExperimentResource.experiment_id == e)).one()
        assert (r.phase, r.pid, r.exit_code, len(r.log_tail)) == ("running", 1234, None, 4096)
        g = s.get(Gateway, GW)
        assert g.online is True and g.selftest_failed == 1 and g.selftest_detail == "spi: no /dev/spidev0.0"
        assert s.get(Gateway, GW2).health_at is not None and s.get(Gateway, GW2).online is None


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        (f"gw/{GW}/experiments/reported", b"not json"),
        (f"gw/{GW}/experiments/reported", b"[1, 2]"),
        (f"gw/{GW}/experiments/reported", b'{"experiments": {"id": 1}}'),
        (f"gw/{GW}/experiments/reported", b'{"experiments": [{"id": "1", "phase": "running"}]}'),
        (f"gw/{GW}/experiments/reported", b'{"experiments": [{"id": 1, "phase": "dancing"}]}'),
        (f"gw/{GW}/experiments/reported", b'{"experiments": [{"id": 1, "phase": "running", "pid": 1e99}]}'),
        (f"gw/{GW}/experiments/reported", b'{"experiments": [{"id": 1, "phase": "running", "error": 5}]}'),
        (f"gw/{GW}/experiments/reported", b"\xff\xfe"),
        (f"gw/{GW}/status", b"maybe"),
        (f"gw/{GW}/selftest", b'{"failed": "none"}'),
        ("gw/../experiments/reported", b"{}"),
        (f"gw/{GW}/elsewhere", b"{}"),
    ],
)
def test_malformed_messages_change_nothing(tmp_path, topic, payload):
    sessions = _store(f"sqlite:///{tmp_path / 'x.db'}")
    e = _experiment(sessions, state="toLaunch")
    with sessions() as s:
        # a valid entry first: a malformed one later in the same document must not let it through
        if topic.endswith("reported") and payload.startswith(b'{"experiments": ['):
            payload = payload.replace(b'[{"id": 1,', f'[{{"id": {e}, "phase": "failed"}}, {{"id": 1,'.encode())
        with pytest.raises(BadMessage):
            apply_message(s, topic, payload, START)
        s.commit()
    with sessions() as s:
        assert s.scalars(select(ExperimentResource)).one().phase is None
        assert s.scalars(select(Gateway)).all() == []


# -- the loop on the broker as compose runs it ------------------------------------------------------
class Clock:
    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t


def _settings(tmp_path, b) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        registry=REGISTRY,
        mqtt={"host": "127.0.0.1", "port": b.port},
        experiments={
            "broker_password": b.passwords[broker.EXPERIMENTS],
            "secret": "the-hmac-key",
            "launch_lead_s": 60,
            "tick_s": 0.05,
        },
        api={"base_url": "https://api.example"},
    )


@pytest.fixture
def running(tmp_path, dynsec_broker):
    """A scheduler on the compose broker with a movable clock, started but stepped by the test."""
    settings = _settings(tmp_path, dynsec_broker)
    sessions = _store(f"sqlite:///{tmp_path / 'sched.db'}")
    clock = Clock(START - timedelta(seconds=120))
    made = []

    def start() -> Scheduler:
        sch = Scheduler(settings, sessions, clock, dynsec_timeout=5)
        sch.client.connect("127.0.0.1", dynsec_broker.port)
        sch.client.loop_start()
        assert sch.connected.wait(10) and sch.subscribed.wait(10)
        made.append(sch)
        return sch

    yield start, sessions, clock, settings
    for sch in made:
        sch.client.disconnect()
        sch.client.loop_stop()


def test_the_loop_launches_runs_and_ends_an_experiment(running, dynsec_broker, caplog):
    start, sessions, clock, settings = running
    b = dynsec_broker
    e = _experiment(sessions, gateways=(GW,), name="loop")
    key = secrets.key(settings)
    exp_user, exp_pw = user_name(e, GW), secrets.broker_password(key, e, GW)
    watcher = b.client("smartzone-ingest-2", client_id=f"watch-{e}").connect()  # reads gw/# and the events
    watcher.subscribe(f"gw/{GW}/experiments/desired")
    watcher.subscribe(EVENTS_TOPIC)

    def desired_docs() -> list[dict]:
        return [json.loads(m.payload) for m in watcher.messages if m.topic.endswith("/desired")]

    def mine(doc: dict) -> list[dict]:
        return [x for x in doc["experiments"] if x["id"] == e]

    def events() -> list[tuple[str, str]]:
        return [
            (d["from"], d["to"])
            for d in (json.loads(m.payload) for m in watcher.messages if m.topic == EVENTS_TOPIC)
            if d["experiment"] == e
        ]

    sch = start()
    sch.step()  # Waiting: nothing to launch, no user
    assert _login(b, exp_user, exp_pw) != 0
    clock.t = START - timedelta(seconds=60)
    sch.step()  # toLaunch: the user made, then the desired document, then the event
    assert _exp(sessions, e).state == "toLaunch"
    assert _login(b, exp_user, exp_pw) == 0
    assert watcher.wait(lambda: any(mine(d) for d in desired_docs()))
    assert watcher.wait(lambda: ("Waiting", "toLaunch") in events())
    ev = next(json.loads(m.payload) for m in watcher.messages if m.topic == EVENTS_TOPIC)
    assert ev["owner"] == "alice" and ev["gateways"] == [GW] and ev["actor"] == "scheduler" and ev["name"] == "loop"
    n_desired = len(desired_docs())
    sch.step()
    sch.step()  # nothing changed: nothing republished
    # a late subscriber gets it retained
    late = b.client(GW, client_id=f"{GW}-late-{e}").connect()  # the gateway's own user reads its desired
    late.subscribe(f"gw/{GW}/experiments/desired")
    assert late.wait(lambda: bool(late.messages)) and late.messages[0].retain
    assert mine(json.loads(late.messages[0].payload))[0]["mqtt"]["password"] == exp_pw
    assert len(desired_docs()) == n_desired
    with sessions() as s:  # extended: a new deadline, republished once
        x = s.get(Experiment, e)
        x.deadline = START + timedelta(seconds=900)
        s.commit()
    sch.step()
    sch.step()
    assert watcher.wait(lambda: len(desired_docs()) == n_desired + 1)
    assert mine(desired_docs()[-1])[0]["deadline"] == "2026-12-02T17:20:00Z"

    # the agent reports (as the gateway), a malformed report in between is logged and ignored
    caplog.set_level(logging.WARNING, "smartzone.experiments.scheduler")
    late.publish(f"gw/{GW}/experiments/reported", b"{ not json")
    report = {"version": 1, "time": "x", "experiments": [{"id": e, "phase": "running", "pid": 7}]}
    late.publish(f"gw/{GW}/experiments/reported", json.dumps(report))
    assert wait_for(lambda: sch.inbox.qsize() >= 2, 5, 0.02)
    clock.t = START + timedelta(seconds=1)
    sch.step()
    assert _exp(sessions, e).state == "Running"
    assert "ignored: gw-kloosterstraat reported: not JSON" in caplog.text
    assert watcher.wait(lambda: events()[-2:] == [("toLaunch", "Launching"), ("Launching", "Running")])

    # the deadline, then the agent's final report and its upload: Terminated, the user deleted, desired emptied
    clock.t = START + timedelta(seconds=900)
    sch.step()
    report["experiments"][0].update(phase="finished", exit_code=0)
    late.publish(f"gw/{GW}/experiments/reported", json.dumps(report))
    assert wait_for(lambda: sch.inbox.qsize() >= 1, 5, 0.02)
    _report(sessions, e, GW, "finished", results_sha256="12" * 32)  # what the API's upload sets
    clock.t += timedelta(seconds=1)
    sch.step()
    assert _exp(sessions, e).state == "Terminated"
    assert _login(b, exp_user, exp_pw) != 0  # deleted when final
    assert watcher.wait(lambda: desired_docs()[-1]["experiments"] == [])
    assert watcher.wait(lambda: events()[-2:] == [("Running", "Finishing"), ("Finishing", "Terminated")])

    # a restarted scheduler republishes every desired document (the same content) and recreates nothing
    before = len(desired_docs())
    sch.client.disconnect()
    sch2 = start()
    sch2.step()
    assert watcher.wait(lambda: len(desired_docs()) == before + 1)
    assert desired_docs()[-1]["experiments"] == []
    assert sch2._users == set()


def test_the_command_stops_cleanly_on_sigterm(tmp_path, dynsec_broker):
    """``smartzone experiments scheduler`` as compose runs it: logs in as smartzone-experiments, subscribes,
    and exits 0 on SIGTERM."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTZONE_")}
    env |= {
        "SMARTZONE_CONFIG": "/nonexistent.toml",
        "SMARTZONE_DATA_DIR": str(tmp_path / "data"),
        "SMARTZONE_REGISTRY": str(REGISTRY),
        "SMARTZONE_MQTT__PORT": str(dynsec_broker.port),
        "SMARTZONE_EXPERIMENTS__BROKER_PASSWORD": dynsec_broker.passwords[broker.EXPERIMENTS],
        "SMARTZONE_EXPERIMENTS__TICK_S": "0.1",
    }
    log = tmp_path / "scheduler.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "experiments", "scheduler"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        assert wait_for(lambda: "MQTT subscribed" in log.read_text() or proc.poll() is not None, 20), log.read_text()
        assert proc.poll() is None, log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, log.read_text()
        assert "scheduler stopped" in log.read_text()
        assert "Traceback" not in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def _login(b, user: str, password: str) -> int:
    c = b.client(user, password, client_id=f"login-{user}-{len(b.clients)}")
    c.connect()
    code = c.connack
    c.close()
    return code
