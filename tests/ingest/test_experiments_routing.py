"""Protocol experiments' metrics, state changes and reported phases (issue 16): the real worker routes them from
the real broker into the experiments database of the real influxd, and nowhere else; the experiment's own traffic
and the desired documents are ignored without dead letters; bad input is a dead letter with its reason; names
with line-protocol specials are escaped; a worker killed before its ack writes each point once; the agent's
self-test becomes a ``gateway_health`` reading."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from cli import services
from gateways.publisher import Publisher
from gateways.simulator import Emitted
from smartzone.settings import Settings
from storage.deadletters import DeadLetterStore
from storage.influx import Influx
from tests.conftest import wait_for

GW = "gw-egmont"  # has a registered health sensor (the self-test's reading); experiments need none


def _with_experiments_db(s: Settings, retention: str = "30d") -> Settings:
    name = f"exp_{uuid.uuid4().hex[:8]}"
    return s.model_copy(
        update={
            "influx": s.influx.model_copy(update={"experiments_database": name, "experiments_retention": retention})
        }
    )


@pytest.fixture
def exp_settings(settings):
    s = _with_experiments_db(settings)
    yield s
    with Influx(s.influx) as client:
        client.drop_database(s.influx.experiments_database)


def _publish(port: int, messages: list[tuple[str, bytes]], client_id: str = "test-exp-publisher") -> None:
    pub = Publisher("127.0.0.1", port, client_id=client_id)
    pub.publish(Emitted(t, p, ()) for t, p in messages)
    assert pub.wait_acked(10)
    pub.close()


def _rows(influx: Influx, s: Settings, measurement: str) -> list[dict]:
    try:
        return influx.rows(f'SELECT * FROM "{measurement}"', s.influx.experiments_database)  # noqa: S608
    except Exception:
        return []


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def test_metrics_events_and_phases_land_in_the_experiments_database_only(exp_settings, influx, run_worker):
    s = exp_settings
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    weird = 'rtt ms,p=1 "quoted"'  # space, comma, equals sign and quotes: escaped by storage.lineprotocol
    messages = [
        (
            f"gw/{GW}/experiments/42/metrics",
            orjson.dumps(
                {"time": _iso(t0), "metrics": {"rtt_ms": 12.5, weird: 3, "delivered": True}, "units": {"rtt_ms": "ms"}}
            ),
        ),
        (  # a list of our objects, epoch seconds
            f"gw/{GW}/experiments/42/metrics",
            orjson.dumps([{"time": t0.timestamp() + 1, "metrics": {"rtt_ms": 13}}]),
        ),
        (  # SenML: the metric is bn + n
            "gw/gw-b/experiments/42/metrics",
            orjson.dumps([{"bn": "probe/", "bt": t0.timestamp() + 2, "n": "rtt_ms", "u": "ms", "v": 14.0}]),
        ),
        (  # one good value, one that is no number: the good one is written, the message is a dead letter
            f"gw/{GW}/experiments/42/metrics",
            orjson.dumps({"time": _iso(t0 + timedelta(seconds=3)), "metrics": {"rtt_ms": 15, "state": "fine"}}),
        ),
        (f"gw/{GW}/experiments/42/metrics", b'{"metrics": [1, 2'),  # malformed
        (f"gw/{GW}/experiments/42/metrics", b'{"rtt_ms": 1}'),  # no metrics object, not SenML
        (f"gw/{GW}/experiments/x/metrics", b'{"metrics": {"rtt_ms": 1}}'),  # not an experiment id
        (f"gw/{GW}/experiments/42/probe/7", b"probe 7"),  # the experiment's own traffic: ignored
        (f"gw/{GW}/experiments/42/echo/gw-b/7", b"\x00\x01"),
        (f"gw/{GW}/experiments/desired", b'{"version": 1, "experiments": []}'),  # the scheduler's: ignored
        (
            f"gw/{GW}/experiments/reported",
            orjson.dumps(
                {
                    "version": 1,
                    "time": _iso(t0),
                    "experiments": [
                        {"id": 42, "phase": "running", "pid": 99, "exit_code": None, "error": ""},
                        {"id": 41, "phase": "failed", "pid": None, "exit_code": 3, "error": "exit 3"},
                    ],
                }
            ),
        ),
        (
            "smartzone/experiments/events",
            orjson.dumps(
                {
                    "experiment": 42,
                    "name": "rtt, probe",
                    "owner": "alice",
                    "gateways": [GW, "gw-b"],
                    "from": "Launching",
                    "to": "Running",
                    "reason": 'all gateways "running"',
                    "actor": "scheduler",
                    "time": _iso(t0),
                }
            ),
        ),
        (f"gw/{GW}/selftest", orjson.dumps({"time": _iso(t0), "failed": 2, "checks": [{"name": "a", "ok": False}]})),
    ]
    worker = run_worker(s)
    _publish(s.mqtt.port, messages)
    assert wait_for(lambda: len(_rows(influx, s, "metrics")) >= 6, 15), _rows(influx, s, "metrics")
    assert wait_for(lambda: len(_rows(influx, s, "events")) >= 2 and len(_rows(influx, s, "reported")) >= 2, 10)
    assert wait_for(lambda: worker.pipeline.stats.received == len(messages) and not worker._unacked, 10)
    ns0 = int(t0.timestamp()) * 10**9

    metrics = sorted((r["time"], r["gateway"], r["metric"], r["unit"], r["value"]) for r in _rows(influx, s, "metrics"))
    assert metrics == sorted(
        [
            (ns0, GW, "delivered", None, 1.0),
            (ns0, GW, "rtt_ms", "ms", 12.5),
            (ns0, GW, weird, None, 3.0),
            (ns0 + 10**9, GW, "rtt_ms", None, 13.0),
            (ns0 + 2 * 10**9, "gw-b", "probe/rtt_ms", "ms", 14.0),
            (ns0 + 3 * 10**9, GW, "rtt_ms", None, 15.0),
        ]
    )
    assert {r["experiment"] for r in _rows(influx, s, "metrics")} == {"42"}
    events = sorted(
        (r["gateway"], r["to"], r["from"], r["name"], r["reason"], r["text"]) for r in _rows(influx, s, "events")
    )
    text = 'rtt, probe: Launching -> Running (all gateways "running")'
    assert events == [
        (g, "Running", "Launching", "rtt, probe", 'all gateways "running"', text) for g in sorted([GW, "gw-b"])
    ]
    reported = sorted(
        (r["experiment"], r["gateway"], r["phase"], r["running"], r["phase_code"], r["exit_code"])
        for r in _rows(influx, s, "reported")
    )
    assert reported == [("41", GW, "failed", 0, 6, 3), ("42", GW, "running", 1, 3, None)]

    # nothing of it anywhere else; the self-test is the gateway's health, in ops
    for db in (s.influx.raw_database, s.influx.pseudonymous_database, s.charter.open_database):
        assert not ({"metrics", "events", "reported"} & _measurements(influx, db)), db
    assert not ({"metrics", "events", "reported"} & _measurements(influx, s.influx.ops_database))
    health = influx.rows('SELECT "selftest_failed", "gateway" FROM "gateway_health"', s.influx.ops_database)
    assert [(r["time"], r["selftest_failed"], r["gateway"]) for r in health] == [(ns0, 2, GW)]

    store = DeadLetterStore(s.sql_url)
    try:
        letters = {(e.topic, e.reason) for e in store.entries(limit=0)}
    finally:
        store.close()
    assert letters == {
        (f"gw/{GW}/experiments/42/metrics", "invalid_value"),
        (f"gw/{GW}/experiments/42/metrics", "malformed"),
        (f"gw/{GW}/experiments/x/metrics", "malformed"),
    }
    assert worker.pipeline.stats.reasons == {"invalid_value": 1, "malformed": 3}  # two malformed payloads, one id
    assert worker.pipeline.stats.ignored == 3  # probe, echo, desired: no dead letter, no no_route


def _measurements(influx: Influx, db: str) -> set[str]:
    try:
        return {r["name"] for r in influx.rows("SHOW MEASUREMENTS", db)}
    except Exception:
        return set()


def test_the_worker_creates_the_experiments_database_with_its_retention(settings, influx, run_worker):
    s = _with_experiments_db(settings, retention="45d")
    try:
        run_worker(s)
        rps = influx.rows(f'SHOW RETENTION POLICIES ON "{s.influx.experiments_database}"', s.influx.raw_database)
        assert [r["duration"] for r in rps if r["default"]] == ["1080h0m0s"]
    finally:
        influx.drop_database(s.influx.experiments_database)


def test_metrics_exactly_once_across_a_kill(settings, worker_process, tmp_path):
    """Metrics stamped at receipt (no ``time``), held unacked while InfluxDB is down, the worker SIGKILLed, then
    redelivered to a new worker: the journal gives each redelivered message its first receipt time, so each
    metric is one point, not two (the pattern of tests/ingest/test_faults.py's dead-letter test)."""
    own = services.influxd(tmp_path / "influxd-own").start()
    try:
        # the worker runs as a process (tests.conftest.settings_env): the experiments database keeps its default
        # name, on an influxd of this test's own
        s = settings.model_copy(
            update={
                "influx": settings.influx.model_copy(update={"url": own.url}),
                "ingest": settings.ingest.model_copy(update={"spool_after": 120.0, "flush_interval": 2.0}),
            }
        )
        good = [
            (f"gw/{GW}/experiments/7/metrics", orjson.dumps({"metrics": {"seq": i, "rtt_ms": 1.5 + i}}))
            for i in range(20)
        ]
        bad = [(f"gw/{GW}/experiments/7/metrics", b"{not json")]  # its letter shows the batch reached the writer
        proc = worker_process(s)
        own.stop()
        _publish(s.mqtt.port, good + bad, client_id="test-exp-once")
        store = DeadLetterStore(s.sql_url)
        try:
            assert wait_for(lambda: sum(store.counts().values()) >= 1, 30)
            proc.kill()
            own.start()
            proc2 = worker_process(s)
            with Influx(s.influx) as influx:
                assert wait_for(lambda: len(_rows(influx, s, "metrics")) >= 2 * len(good), 30)
                time.sleep(1)  # anything more would come now
                rows = _rows(influx, s, "metrics")
                assert len(rows) == 2 * len(good)
                seqs = sorted(r["value"] for r in rows if r["metric"] == "seq")
                assert seqs == [float(i) for i in range(len(good))]
            assert proc2.stop() == 0
            assert store.counts() == {"malformed": 1}
        finally:
            store.close()
    finally:
        own.stop()


def test_phase_codes_cover_the_agents_phases():
    from experiments.db import PHASES
    from smartzone.model import EXPERIMENT_PHASES, PHASE_CODES

    assert EXPERIMENT_PHASES == PHASES and tuple(PHASE_CODES) == PHASES and 0 not in PHASE_CODES.values()
