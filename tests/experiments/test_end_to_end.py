"""Issue 16 end to end: every part running as a real process (tests/experiments/stack.py), driven through the
CLI client as a network researcher drives it.

Covered elsewhere and not repeated here: the deadline with the central broker down and an agent SIGKILLed
and restarted (tests/gateways/test_experiments_agent.py); wrong sha256 and oversized artifacts (the same, and
tests/experiments/test_api.py); 401/403 (tests/experiments/test_api.py); publishing outside the prefix at the
broker level (tests/experiments/test_dynsec.py).
"""

from __future__ import annotations

import csv
import io
import json
import os
import statistics
import tarfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from experiments.scheduler import exact
from tests.conftest import REPO, assert_exactly_once, count_points, wait_for
from tests.experiments.stack import GATEWAYS, Stack, alive, running_stack

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox's own user needs root (as on the Pi)")

PROBE = REPO / "experiments" / "samples" / "mqtt_rtt_probe.py"
GW_A, GW_B = GATEWAYS


@pytest.fixture(scope="module")
def stack(tmp_path_factory, influxd, dynsec_broker) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("e2e"), influxd, dynsec_broker) as s:
        yield s


def script(tmp: Path, name: str, source: str) -> Path:
    path = tmp / name
    path.write_text(source)
    return path


SLEEPER = """import time
print("sleeping", flush=True)
while True:
    time.sleep(0.2)
"""


# -- 1. submit -> running -> metrics -> terminated -> results ------------------------------------------------
def test_the_rtt_probe_on_two_gateways_from_submit_to_downloaded_results(stack, tmp_path):
    params = json.dumps({"rate": 5, "report_s": 2})
    exp = stack.submit(PROBE, gateways=(GW_A, GW_B), duration=20, name="rtt probe", parameters=params)
    r = stack.cli("wait", str(exp), "--state", "Running", "--timeout", "40")
    assert r.code == 0 and f"experiment {exp}: Running" in r.out, (r, stack.logs())

    # metrics land in the experiments database, from both gateways
    q = f"SELECT * FROM metrics WHERE experiment = '{exp}'"  # noqa: S608 - an int

    def both() -> bool:
        rows = stack.experiments_rows(q)
        return {row["gateway"] for row in rows if row["metric"] == "echoes_received" and row["value"] > 0} == {
            GW_A,
            GW_B,
        }

    assert wait_for(both, 30, 0.5), (stack.experiments_rows(q)[-5:], stack.logs())

    r = stack.cli("status", str(exp))
    assert r.code == 0 and f"experiment {exp}: rtt probe  [Running]" in r.out, r
    assert f"gateway {GW_A} (ble): running" in r.out and f"gateway {GW_B} (ble): running" in r.out, r.out
    assert "Launching -> Running" in r.out, r.out

    r = stack.cli("wait", str(exp), "--timeout", "60")
    assert r.code == 0 and f"experiment {exp}: Terminated" in r.out, (r, stack.logs())

    r = stack.cli("status", str(exp))
    assert "[Terminated]" in r.out and f"gateway {GW_A} (ble): finished, exit code 0" in r.out, r.out
    assert "results uploaded" in r.out, r.out
    r = stack.cli("logs", str(exp))
    assert r.code == 0 and "Running -> Finishing" in r.out and GW_B in r.out, r.out

    r = stack.cli("results", str(exp), "--metrics", "csv", "--out", str(tmp_path))
    assert r.code == 0, r
    bundle = tmp_path / f"experiment-{exp}-results.tar.gz"
    with tarfile.open(bundle) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    assert {"metrics.csv", "events.csv"} <= set(files), sorted(files)
    for gw in (GW_A, GW_B):  # each gateway's bundle: the probe's results and its logs
        wanted = {f"{gw}/results/rtt.csv", f"{gw}/results/summary.json", f"{gw}/stdout.log", f"{gw}/stderr.log"}
        assert wanted <= set(files), sorted(files)
        rtts = list(csv.DictReader(io.StringIO(files[f"{gw}/results/rtt.csv"].decode())))
        assert rtts and {r["peer"] for r in rtts} == {GW_A, GW_B} - {gw}
        assert json.loads(files[f"{gw}/results/summary.json"])["metrics"]["probes_sent"] > 10
    metrics = list(csv.DictReader(io.StringIO(files["metrics.csv"].decode())))
    assert {m["gateway"] for m in metrics} == {GW_A, GW_B} and any(m["metric"] == "rtt_ms_p50" for m in metrics)
    events = files["events.csv"].decode()
    assert "Terminated" in events and "Running" in events
    metrics_file = tmp_path / f"experiment-{exp}-metrics.csv"
    assert metrics_file.read_text().count("\n") > 4

    # the experiments database holds the state changes and the agents' phases
    ev = stack.experiments_rows(f"SELECT * FROM events WHERE experiment = '{exp}'")  # noqa: S608
    assert {"toLaunch", "Launching", "Running", "Finishing", "Terminated"} <= {e["to"] for e in ev}, ev
    assert {e["gateway"] for e in ev} == {GW_A, GW_B}
    rep = stack.experiments_rows(f"SELECT * FROM reported WHERE experiment = '{exp}'")  # noqa: S608
    assert {(p["gateway"], p["phase"]) for p in rep} >= {(g, ph) for g in GATEWAYS for ph in ("running", "finished")}


# -- 4. a crash ----------------------------------------------------------------------------------------------
CRASH = """import sys
print("setting up the radio", flush=True)
print("boom: the radio is gone", file=sys.stderr, flush=True)
sys.exit(3)
"""


def test_a_crashing_experiment_ends_in_error_with_its_exit_code_and_log_tail(stack, tmp_path):
    exp = stack.submit(script(tmp_path, "crash.py", CRASH), gateways=(GW_B,), duration=30)
    r = stack.cli("wait", str(exp), "--timeout", "40")
    why = f"{GW_B} failed, exit code 3: boom: the radio is gone"  # the last line of its output says why
    assert r.code == 1 and f"experiment {exp}: Error: {why}" in r.out, (r, stack.logs())
    r = stack.cli("status", str(exp))
    assert r.code == 0 and "[Error]" in r.out, r
    assert f"gateway {GW_B} (ble): failed, exit code 3\n" in r.out, r.out
    assert "    | setting up the radio\n    | boom: the radio is gone\n" in r.out, r.out  # the log tail
    r = stack.cli("logs", str(exp))
    assert "boom: the radio is gone" in r.out, r.out


# -- 3. cancel and extend -------------------------------------------------------------------------------------
def _pid(stack: Stack, exp: int, gw: str) -> int:
    res = next(r for r in stack.get(exp)["resources"] if r["gateway"] == gw)
    assert res["pid"], res
    return int(res["pid"])


def test_cancel_stops_a_running_experiment_and_its_process(stack, tmp_path):
    exp = stack.submit(script(tmp_path, "sleeper.py", SLEEPER), gateways=(GW_A,), duration=120)
    assert stack.cli("wait", str(exp), "--state", "Running", "--timeout", "30").code == 0, stack.logs()
    pid = _pid(stack, exp, GW_A)
    assert alive(pid)
    r = stack.cli("cancel", str(exp))
    assert r.code == 0 and f"experiment {exp}: Finishing" in r.out, r
    r = stack.cli("wait", str(exp), "--state", "Stopped", "--timeout", "30")
    assert r.code == 0 and f"experiment {exp}: Stopped" in r.out, (r, stack.logs())
    assert not alive(pid), "the experiment's process survived its cancel"
    r = stack.cli("status", str(exp))
    assert f"gateway {GW_A} (ble): stopped" in r.out and "cancelled by alice" in r.out, r.out


def test_extend_runs_past_the_first_deadline_and_stops_at_the_new_one(stack, tmp_path):
    exp = stack.submit(script(tmp_path, "sleeper.py", SLEEPER), gateways=(GW_A,), duration=8)
    assert stack.cli("wait", str(exp), "--state", "Running", "--timeout", "30").code == 0, stack.logs()
    first = datetime.fromisoformat(stack.get(exp)["deadline"])
    r = stack.cli("extend", str(exp), "6")
    new = first + timedelta(seconds=6)
    assert r.code == 0 and f"experiment {exp}: deadline" in r.out, r
    assert datetime.fromisoformat(stack.get(exp)["deadline"]) == new
    pid = _pid(stack, exp, GW_A)
    # past its first deadline (and the agent's kill grace) it still runs
    assert wait_for(lambda: datetime.now(UTC) > first + timedelta(seconds=3), 30, 0.1)
    assert stack.get(exp)["state"] == "Running" and alive(pid), stack.logs()
    r = stack.cli("wait", str(exp), "--timeout", "40")
    assert r.code == 0 and f"experiment {exp}: Terminated" in r.out, (r, stack.logs())
    assert not alive(pid)
    got = stack.get(exp)
    assert datetime.fromisoformat(got["ended_at"]) >= new
    reasons = [e["reason"] for e in got["events"] if e["to"] == "Finishing"]
    assert reasons == [f"deadline {exact(new)} reached"], got["events"]


# -- 5. isolation: the gateway's readings while an experiment misbehaves -----------------------------------
MISBEHAVE = """import json, os, pathlib, sys, threading, time
import paho.mqtt.client as mqtt

params = json.load(open(os.environ["SZX_PARAMETERS"]))
gw, prefix = os.environ["SZX_GATEWAY_ID"], os.environ["SZX_MQTT_PREFIX"]
for _ in range(params["spinners"]):  # all the CPU it may: spinning children
    try:
        if os.fork() == 0:
            while True:
                pass
    except OSError as exc:
        print("fork refused:", exc, flush=True)
acks, done = {}, threading.Event()
def on_publish(c, u, mid, rc, props):
    acks[mid] = rc.value
    done.set()
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="misbehaving", protocol=mqtt.MQTTv5)
c.username_pw_set(os.environ["SZX_MQTT_USERNAME"], os.environ["SZX_MQTT_PASSWORD"])
c.on_publish = on_publish
c.connect(os.environ["SZX_MQTT_HOST"], int(os.environ["SZX_MQTT_PORT"]))
c.loop_start()
# a fake reading on the gateway's own topic, outside its prefix
info = c.publish("gw/%s/%s" % (gw, params["fake_topic"]), params["fake_payload"], qos=1)
done.wait(10)
refused = acks.get(info.mid)
print("fake reading PUBACK", refused, flush=True)
pathlib.Path(os.environ["SZX_RESULTS_DIR"], "fake.json").write_text(json.dumps({"puback": refused}))
n, last = 0, 0.0
while True:  # then it floods under its prefix as fast as it can (bounded only by paho's queue)
    if len(getattr(c, "_out_packet", ())) < 5000:
        c.publish(prefix + "flood/%d" % (n % 64), b"x" * 200, qos=0)
        n += 1
    if time.monotonic() - last > 0.5:
        last = time.monotonic()
        c.publish(prefix + "metrics", json.dumps({"metrics": {"fake_puback": refused, "flooded": n}}), qos=1)
"""


def _paced(stack: Stack, messages, rate: float) -> list[tuple[float, int]]:
    """Publish on GW_A's local broker at ``rate`` (QoS 1); (publish time, raw readings so far incl. this one)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="radios-on-the-gateway", protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", stack.gateways[GW_A].local.port)
    c.loop_start()
    out, total, t0 = [], 0, time.monotonic()
    try:
        for i, e in enumerate(messages):
            wait_for(lambda i=i: time.monotonic() >= t0 + i / rate, 5, 0.002)
            c.publish(e.topic, e.payload, qos=1)
            total += sum(1 for t in e.truth if _raw(t))
            out.append((time.monotonic(), total))
    finally:
        c.loop_stop()
        c.disconnect()
    return out


def _raw(t) -> bool:
    return not t.quantity.startswith("gateway_health.")  # the radio's rssi goes to the ops database


class Watch:
    """Polls the raw database's count every 40 ms: (time, count) to date readings' arrival."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.seen = [(time.monotonic(), self.count())]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def count(self) -> int:
        return count_points(self.stack.influx, self.stack.settings.influx.raw_database)

    def _run(self) -> None:
        while not self.stop.wait(0.04):
            self.seen.append((time.monotonic(), self.count()))

    def latencies(self, sent: list[tuple[float, int]], before: int) -> list[float]:
        out = []
        for t, n in sent:
            arrived = next((s for s, c in self.seen if c - before >= n and s >= t), None)
            assert arrived is not None, f"reading {n} never arrived"
            out.append(arrived - t)
        return out

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


def _run_readings(stack: Stack, messages, rate: float) -> list[float]:
    watch = Watch(stack)
    before = watch.seen[0][1]
    try:
        sent = _paced(stack, messages, rate)
        done = sent[-1][1]
        assert wait_for(lambda: watch.seen[-1][1] - before >= done, 30, 0.05), (watch.seen[-1][1] - before, done)
    finally:
        watch.close()
    return watch.latencies(sent, before)


def test_the_gateways_readings_are_unaffected_by_a_misbehaving_experiment(stack, tmp_path):
    from gateways.simulator import Emitted
    from tests.gateways.test_agent import GW, gateway_messages

    assert GW == GW_A
    now = datetime.now(UTC)
    baseline_msgs = gateway_messages(60, now - timedelta(hours=1))
    load_msgs = gateway_messages(60, now)
    rate = 10.0
    base = _run_readings(stack, baseline_msgs, rate)

    fake_time = (now - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    fake = {"device": "ped-nationalestraat-1", "time": fake_time, "readings": {"pedestrian_flow.devices": 4242}}
    params = {"spinners": 2, "fake_topic": "json/ped-nationalestraat-1", "fake_payload": json.dumps(fake)}
    exp = stack.submit(
        script(tmp_path, "misbehave.py", MISBEHAVE), gateways=(GW_A,), duration=60, parameters=json.dumps(params)
    )
    assert stack.cli("wait", str(exp), "--state", "Running", "--timeout", "30").code == 0, stack.logs()
    q = f"SELECT * FROM metrics WHERE experiment = '{exp}'"  # noqa: S608 - an int

    def flooded() -> float:
        return max([r["value"] for r in stack.experiments_rows(q) if r["metric"] == "flooded"], default=0)

    assert wait_for(lambda: flooded() > 1000, 30, 0.2), (stack.experiments_rows(q)[-3:], stack.logs())
    before = flooded()
    load = _run_readings(stack, load_msgs, rate)
    assert stack.get(exp)["state"] == "Running", "the misbehaving experiment stopped before the readings were in"
    assert wait_for(lambda: flooded() > before + 2000, 5, 0.2), "it did not flood all along"
    total_flood = flooded()
    assert stack.cli("cancel", str(exp)).code == 0
    assert stack.cli("wait", str(exp), "--state", "Stopped", "--timeout", "30").code == 0, stack.logs()
    assert stack.cli("results", str(exp), "--out", str(tmp_path)).code == 0
    with tarfile.open(tmp_path / f"experiment-{exp}-results.tar.gz") as tar:
        out = tar.extractfile(f"{GW_A}/stdout.log").read().decode()  # type: ignore[union-attr]
    assert "fake reading PUBACK 135" in out and "fork refused" not in out, out  # it did spin its children

    # exactly once: every reading of both runs in the raw database, nothing else (the fake one neither)
    emitted = [Emitted(e.topic, e.payload, [t for t in e.truth if _raw(t)]) for e in baseline_msgs + load_msgs]
    n = assert_exactly_once(stack.influx, stack.settings.influx.raw_database, emitted)
    puback = [r["value"] for r in stack.experiments_rows(q) if r["metric"] == "fake_puback"]
    assert puback and puback[-1] == 0x87, puback  # the broker refused it: not authorised
    fake_q = "SELECT * FROM pedestrian_flow WHERE devices = 4242"

    mb, ml = statistics.median(base), statistics.median(load)
    print(
        f"\nreadings latency (local publish -> in InfluxDB), {len(base)} messages each at {rate:g}/s: median "
        f"{mb * 1000:.0f} ms baseline, {ml * 1000:.0f} ms beside the experiment flooding {total_flood:.0f} messages "
        f"and spinning 3 processes; max {max(base) * 1000:.0f} / {max(load) * 1000:.0f} ms; {n} readings"
    )
    assert ml <= 3 * mb + 0.05, (mb, ml)

    assert not stack.influx.rows(fake_q, stack.settings.influx.raw_database)

    # negative control: the same publish with the gateway's own credentials arrives. The broker takes the user
    # name as client id (use_username_as_clientid): this login throws the agent out until it reconnects.
    agent = stack.gateways[GW_A].agent
    c = stack.broker.client(GW_A).connect()
    assert c.publish(f"gw/{GW_A}/{params['fake_topic']}", params["fake_payload"]) == 0
    c.close()
    assert wait_for(lambda: bool(stack.influx.rows(fake_q, stack.settings.influx.raw_database)), 10)
    agent.wait_log("central broker connected", count=2, timeout=30)
    assert wait_for(lambda: stack.online(GW_A) is True, 10, 0.1), stack.logs()


# -- 2. refusals: a conflict, an offline gateway (last: it stops an agent) ---------------------------------
def test_a_conflict_and_an_offline_gateway_are_refused_with_409(stack, tmp_path):
    sleeper = script(tmp_path, "sleeper.py", SLEEPER)
    exp = stack.submit(sleeper, gateways=(GW_A,), duration=120, name="holder")
    assert stack.cli("wait", str(exp), "--state", "Running", "--timeout", "30").code == 0, stack.logs()
    argv = ["submit", "--name", "late", "--artifact", str(sleeper), "--radio", "ble", "--duration", "30"]
    r = stack.cli(*argv, "--gateways", GW_A)
    assert r.code == 1 and r.out == "", r
    assert r.err.startswith("smartzone: 409 ") and f"taken by experiment {exp} ('holder')" in r.err, r.err

    # the agent of GW_B stops cleanly: it says offline, the scheduler hears it, the API refuses the gateway
    assert stack.online(GW_B) is True
    assert stack.gateways[GW_B].agent.stop() == 0
    assert wait_for(lambda: stack.online(GW_B) is False, 10, 0.1), stack.logs()
    r = stack.cli(*argv, "--gateways", GW_B)
    assert r.code == 1 and r.err.startswith("smartzone: 409 "), r
    assert f"gateway {GW_B} is offline" in r.err, r.err
    assert stack.cli("cancel", str(exp)).code == 0
