"""The gateway agent (gateways/agent/): readings survive the central broker and the gateway going down.

Real processes: a gateway-side mosquitto, the agent (``python -m gateways.agent run``), the central mosquitto of
docker-compose.yml with its generated users and ACL, the ingest worker and influxd. The simulator's messages of
one gateway are published on the gateway's broker under their native topics, as the gateway's radios publish them.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cli import services
from gateways.agent import config as agent_config
from gateways.agent.relay import central_topic, local_topic
from gateways.agent.spool import Spool
from gateways.publisher import Publisher
from gateways.simulator import Emitted, SimulatedZone
from smartzone.registry import Registry
from storage.influx import Influx
from tests.conftest import REGISTRY, stored_readings, wait_for, zone_settings
from tests.deploy.stack import production_broker
from tests.gateways.agent_stack import (
    REPO,
    AgentProcess,
    IngestProcess,
    agent_toml,
    fake_root,
    gateway_mosquitto,
)

GW = "gw-nationalestraat"  # BLE (no device time: receipt time) and WiFi (ESPHome, generic JSON)
HEALTH_SENSOR = f"health-{GW}"


def gateway_messages(n: int, end: datetime, step: float = 1.0) -> list[Emitted]:
    """At least ``n`` of the simulator's messages of GW, under their native (local) topics, device times
    ending before ``end``; without the simulator's own heartbeat sensor (the agent reports health here)."""
    zone = SimulatedZone(Registry.load(REGISTRY))
    end = end.replace(microsecond=0)  # the simulator's rounds start on whole seconds (device times in ms)
    prefix = f"gw/{GW}/"
    per_round = sum(1 for e in zone.messages(end, 1, step) if e.topic.startswith(prefix) and e.truth)
    rounds = n // per_round + 1
    start = end - timedelta(seconds=rounds * step + 1)
    out = []
    for e in zone.messages(start, rounds, step):
        if e.topic.startswith(prefix) and e.truth and all(t.sensor_id != HEALTH_SENSOR for t in e.truth):
            out.append(Emitted(e.topic[len(prefix) :], e.payload, e.truth))
    return out


def delivery(influx: Influx, dbs: tuple[str, ...], emitted: list[Emitted]) -> tuple[int, int, int]:
    """(readings sent, lost, duplicated) for the sensors of ``emitted``: device-timed readings matched on
    (sensor, quantity, time), receipt-timed ones as a multiset of (sensor, quantity, value)."""
    timed: dict[tuple, object] = {}
    untimed: Counter = Counter()
    for e in emitted:
        for t in e.truth:
            if t.time_ns is None:
                untimed[(t.sensor_id, t.quantity, t.value)] += 1
            else:
                timed[(t.sensor_id, t.quantity, t.time_ns)] = t.value
    sensors = {t.sensor_id for e in emitted for t in e.truth}
    stored = [r for r in stored_readings(influx, dbs) if r[0] in sensors]
    got_timed = Counter((s, q, t) for s, q, v, t in stored if (s, q, t) in timed)
    got_untimed = Counter((s, q, v) for s, q, v, t in stored if (s, q, t) not in timed)
    lost = sum(1 for k in timed if k not in got_timed) + sum((untimed - got_untimed).values())
    dup = sum(c - 1 for c in got_timed.values() if c > 1) + sum((got_untimed - untimed).values())
    return len(timed) + sum(untimed.values()), lost, dup


# -- units -----------------------------------------------------------------------------------------------
def test_topic_mapping_both_ways():
    assert central_topic("gw-a", "zigbee2mqtt/0x00158d0001a2b3c4") == "gw/gw-a/zigbee2mqtt/0x00158d0001a2b3c4"
    assert central_topic("gw-a", "eu868/gateway/0016C001F1500001/event/up") == "eu868/gateway/0016C001F1500001/event/up"
    assert local_topic("gw-a", "gw/gw-a/experiments/desired") is None  # the agent's own (experiments.py)
    assert local_topic("gw-a", "eu868/gateway/0016C001F1500001/command/down") == (
        "eu868/gateway/0016C001F1500001/command/down"
    )
    assert local_topic("gw-a", "gw/gw-b/experiments/desired") is None


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[local]\n[central]\nhost = "c"', "gateway_id"),
        ('gateway_id = "gw-a"\n[central]\nhost = "c"\nport = 70000', "central.port"),
        ('gateway_id = "gw-a"\n[central]\nhost = "c"\n[spool]\nmax_bytes = "1G"', "spool.max_bytes"),
        ('gateway_id = "gw-a"\nlora_eui = "0016c001f1500001"\n[central]\nhost = "c"', "lora_eui"),
        ('gateway_id = "gw-a"\n[central]\nhost = "c"\n[local]\nrelay = ["a/#/b"]', "local.relay[0]"),
        ('gateway_id = "gw-a"\n[central]\nhost = "c"\n[health]\nintervall = 3', "health.intervall"),
        ('gateway_id = "gw-a"\n[local]\nport = 1883', "central.host"),
    ],
)
def test_config_errors_name_the_key(tmp_path, toml, key):
    path = tmp_path / "agent.toml"
    path.write_text(toml + "\n")
    with pytest.raises(agent_config.ConfigError) as err:
        agent_config.load(path)
    assert str(err.value).startswith(key), str(err.value)


def test_config_defaults_follow_the_contract(tmp_path):
    path = tmp_path / "agent.toml"
    path.write_text('gateway_id = "gw-a"\n[central]\nhost = "broker.example"\n')
    cfg = agent_config.load(path)
    assert (cfg.central.port, cfg.central.keepalive, cfg.central.username) == (8883, 30, "gw-a")
    assert (cfg.spool.max_bytes, cfg.health.interval, cfg.selftest.reset_gpio) == (1 << 30, 30.0, 17)


def test_spool_cuts_a_torn_tail_and_resends_from_the_acknowledged_mark(tmp_path):
    spool = Spool(tmp_path, 1 << 20)
    spool.append((1_000 + n, f"t/{n % 3}", b"x" * n) for n in range(10))
    got = spool.read(4)
    spool.ack(e.seq for e in got[:3])  # the 4th was sent, never acknowledged
    spool.close()
    seg = next(tmp_path.glob("*.seg"))
    with seg.open("ab") as f:
        f.write(b"\x40\x00\x00\x00torn")  # a crash in the middle of a write
    again = Spool(tmp_path, 1 << 20)
    entries = again.read(100)
    assert [e.seq for e in entries] == list(range(3, 10))
    assert [(e.stamp_us, e.topic, e.payload) for e in entries[:1]] == [(1_003, "t/0", b"xxx")]
    again.append([(2_000, "t/new", b"y")])
    assert [e.seq for e in again.read(100)] == [10]
    assert again.backlog() == 8


def test_spool_full_drops_the_oldest_counted_and_logged(tmp_path, caplog):
    spool = Spool(tmp_path, 65536, segment_bytes=8192)
    for n in range(40):
        spool.append([(n, "t", bytes(1000))] * 4)  # 160 kB in a 64 kB budget
    assert spool.size() <= 65536
    assert spool.dropped > 0 and spool.dropped + spool.backlog() == 160
    assert [e.seq for e in spool.read(1)] == [160 - spool.backlog()]  # the newest are kept, oldest gone
    assert "spool full" in caplog.text and "dropped" in caplog.text
    spool.close()
    assert json.loads((tmp_path / "state.json").read_text())["dropped"] == spool.dropped


# -- real processes ----------------------------------------------------------------------------------------
class Stack:
    """A gateway (its broker, the agent) and the centre (its broker, the ingest worker), all real processes."""

    def __init__(
        self,
        tmp: Path,
        influxd,
        *,
        tls: bool = False,
        max_bytes: int = 1 << 30,
        health: float = 3600,
        share_group: str = "",
    ):
        self.tmp = tmp
        registry = Registry.load(REGISTRY)
        self.central = production_broker(tmp / "central", registry, tmp / "central.env", workers=1)
        self.local = gateway_mosquitto(tmp / "local").start()
        self.settings = zone_settings(
            tmp / "data",
            influxd.url,
            name="agent",
            mqtt={
                "host": "127.0.0.1",
                "port": self.central.plain_port,
                "client_id": "smartzone-ingest-1",
                # one worker: by default a plain subscription, which Mosquitto 2.0 restores after a restart (a
                # shared one it does not: the agent resends what nobody read, see the share-group test)
                "share_group": share_group,
            },
            ingest={"flush_interval": 0.05, "metrics_interval": 0.5},
        )
        self.influx = Influx(self.settings.influx)
        self.worker = IngestProcess(
            self.settings, "smartzone-ingest-1", self.central.passwords["smartzone-ingest-1"], tmp / "worker.log"
        ).start()
        self.spool = tmp / "spool"
        cfg = agent_toml(
            tmp / "agent.toml",
            GW,
            self.local.port,
            self.central.tls_port if tls else self.central.plain_port,
            self.spool,
            password=self.central.passwords[GW],
            ca=self.central.ca if tls else None,
            max_bytes=max_bytes,
            health_interval=health,
        )
        self.agent = AgentProcess(cfg, fake_root(tmp / "root"), tmp / "agent.log").start()
        self.agent.wait_log("local broker connected")

    @property
    def dbs(self) -> tuple[str, ...]:
        return (self.settings.influx.raw_database, self.settings.influx.ops_database)

    def close(self) -> None:
        self.agent.stop()
        self.worker.stop()
        self.local.stop()
        self.central.stop()
        for db in (*self.dbs, self.settings.influx.pseudonymous_database):
            self.influx.drop_database(db)
        self.influx.close()


@pytest.fixture
def stack(tmp_path, influxd):
    made: list[Stack] = []

    def make(**kw) -> Stack:
        s = Stack(tmp_path, influxd, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def publish_in_background(port: int, messages: list[Emitted], rate: float) -> tuple[Publisher, threading.Thread]:
    pub = Publisher("127.0.0.1", port, client_id="zigbee-and-ble-on-the-gateway")
    t = threading.Thread(target=pub.publish, args=(messages, rate), daemon=True)
    t.start()
    return pub, t


def test_central_broker_down_20s_nothing_lost_nothing_duplicated_over_tls(stack):
    """(a) Before the agent stamped its receipt time, a re-sent copy of a BLE reading (no device time) was a
    second point; before the spool, everything published during the outage was lost."""
    s = stack(tls=True, health=1.0)
    s.agent.wait_log("central broker connected")
    messages = gateway_messages(1_500, datetime.now(UTC))
    pub, thread = publish_in_background(s.local.port, messages, rate=60)
    time.sleep(3)
    s.central.stop()  # 20 s outage while the gateway keeps publishing
    time.sleep(20)
    s.central.svc.start()
    thread.join(60)
    assert pub.wait_acked(30)
    pub.close()
    sent = sum(len(e.truth) for e in messages)
    assert wait_for(lambda: delivery(s.influx, s.dbs, messages)[1] == 0, 40), delivery(s.influx, s.dbs, messages)
    time.sleep(1)  # late duplicates would land now
    assert delivery(s.influx, s.dbs, messages) == (sent, 0, 0)
    # the heartbeat and the status landed in the ops database as the gateway's health sensor
    health = s.influx.rows(
        "SELECT * FROM gateway_health WHERE sensor = 'health-gw-nationalestraat'", s.settings.influx.ops_database
    )
    assert any(r.get("online") is True for r in health)
    beats = [r for r in health if r.get("uptime") is not None]
    assert beats and beats[-1]["backlog"] == 0 and beats[-1]["cpu_temperature"] == 51.234
    assert any(r["backlog"] > 0 for r in beats)  # the heartbeat on reconnect, before the replay, had the backlog
    assert beats[-1]["ble_present"] is True and beats[-1]["clock_synchronised"] is True
    soft = s.influx.rows("SELECT * FROM gateway_software", s.settings.influx.ops_database)
    assert soft and soft[-1]["agent"] and soft[-1]["os"] == "Debian GNU/Linux 12 (bookworm)"


def test_after_a_central_restart_nothing_is_lost_while_shared_subscriptions_come_back(stack):
    """Mosquitto 2.0 restores no shared subscription after a restart: until the worker subscribes again, the
    broker acks the agent's replay and delivers it to nobody. Its MQTT v5 PUBACK says so (0x10, no matching
    subscribers): the agent keeps those records and resends them. Before, most of the replay was lost."""
    s = stack(share_group="ingest")
    s.agent.wait_log("central broker connected")
    messages = gateway_messages(1_200, datetime.now(UTC))
    pub, thread = publish_in_background(s.local.port, messages, rate=80)
    time.sleep(2)
    s.central.stop()
    time.sleep(3)
    assert s.worker.proc is not None
    s.worker.proc.send_signal(signal.SIGSTOP)  # the worker comes back after the agent: the race, made certain
    try:
        s.central.svc.start()
        s.agent.wait_log("central broker connected", count=2, timeout=30)
        time.sleep(3)  # the agent replays into a broker where nobody reads the share group yet
    finally:
        s.worker.proc.send_signal(signal.SIGCONT)
    thread.join(60)
    assert pub.wait_acked(30)
    pub.close()
    sent = sum(len(e.truth) for e in messages)
    assert wait_for(lambda: delivery(s.influx, s.dbs, messages)[1] == 0, 40), delivery(s.influx, s.dbs, messages)
    time.sleep(1)  # late duplicates would land now
    assert delivery(s.influx, s.dbs, messages) == (sent, 0, 0)


def test_gateway_broker_and_agent_killed_during_the_outage_nothing_lost(stack):
    """(b) The spool is fsynced before the local broker gets its ack: what the agent had is on disk, what the
    broker had is in its persistence (saved on every change), what the publisher had it re-sends."""
    s = stack()
    s.agent.wait_log("central broker connected")
    messages = gateway_messages(1_200, datetime.now(UTC))
    pub, thread = publish_in_background(s.local.port, messages, rate=60)
    time.sleep(2)
    s.central.stop()
    time.sleep(5)
    s.agent.kill()
    s.local.kill()
    time.sleep(1)
    s.local.start()
    s.agent.start()
    time.sleep(5)
    s.central.svc.start()
    thread.join(60)
    assert pub.wait_acked(30)
    pub.close()
    sent = sum(len(e.truth) for e in messages)
    assert wait_for(lambda: delivery(s.influx, s.dbs, messages)[1] == 0, 40), delivery(s.influx, s.dbs, messages)
    got, lost, dup = delivery(s.influx, s.dbs, messages)
    assert (got, lost) == (sent, 0)
    print(f"killed gateway: {sent} readings, 0 lost, {dup} duplicated")


def test_disk_budget_full_drops_the_oldest_with_a_count_and_a_log_line(stack):
    """(c) A 64 KiB spool and a central broker down from the start: the newest messages reach the centre, the
    oldest are dropped, and the agent says how many (log, state file, heartbeat)."""
    s = stack(max_bytes=65536, health=1.0)
    s.central.stop()
    messages = gateway_messages(900, datetime.now(UTC))
    pub = Publisher("127.0.0.1", s.local.port, client_id="gateway-radios")
    pub.publish(messages)
    assert pub.wait_acked(30)
    pub.close()
    s.agent.wait_log("spool full")
    state = json.loads((s.spool / "state.json").read_text())
    assert state["dropped"] > 0
    s.central.svc.start()
    kept = messages[state["dropped"] :]  # the newest: every one of them arrives, and nothing else
    n = sum(len(e.truth) for e in kept)
    assert wait_for(lambda: delivery(s.influx, s.dbs, kept)[1] == 0, 40), delivery(s.influx, s.dbs, kept)
    time.sleep(1)
    assert delivery(s.influx, s.dbs, kept) == (n, 0, 0)  # a stored reading of a dropped message would be extra
    assert "dropped the" in s.agent.log()

    def reported() -> bool:
        rows = s.influx.rows(
            "SELECT last(dropped) AS dropped FROM gateway_health WHERE sensor = 'health-gw-nationalestraat'",
            s.settings.influx.ops_database,
        )
        return bool(rows) and rows[0]["dropped"] == state["dropped"]

    assert wait_for(reported, 10)


def test_a_200_readings_per_second_publisher_keeps_its_pace_through_an_outage(stack):
    """(d) The agent acknowledges the local broker as soon as a batch is fsynced, outage or not: the gateway's
    publisher is never slowed down."""
    s = stack()
    s.agent.wait_log("central broker connected")
    messages = gateway_messages(1_000, datetime.now(UTC))
    readings = sum(len(e.truth) for e in messages)
    rate = 200 * len(messages) / readings  # messages/s for 200 readings/s
    pub = Publisher("127.0.0.1", s.local.port, client_id="gateway-radios")
    outage = threading.Timer(3, s.central.stop)
    outage.start()
    t0 = time.monotonic()
    pub.publish(messages, rate=rate)
    assert pub.wait_acked(5)
    elapsed = time.monotonic() - t0
    outage.join()
    pub.close()
    achieved = readings / elapsed
    print(f"publisher: {readings} readings in {elapsed:.1f} s = {achieved:.0f} readings/s (target 200)")
    assert achieved >= 190
    s.central.svc.start()
    assert wait_for(lambda: delivery(s.influx, s.dbs, messages)[1] == 0, 40), delivery(s.influx, s.dbs, messages)


def test_commands_are_relayed_down_and_lora_events_keep_their_topic(tmp_path):
    """Central ChirpStack commands of the gateway's EUI -> the same topic locally; local ChirpStack events go up
    under their own topic. The central ``gw/<id>/experiments/desired`` is the agent's own business: it is not
    relayed down (a local client could otherwise read every experiment's credentials), the agent answers it on
    ``gw/<id>/experiments/reported``."""
    eui = "0016C001F1500001"  # agent.toml: upper-case; topics: lower-case, as the Gateway Bridge writes them
    central = services.mosquitto(tmp_path / "central").start()
    local = gateway_mosquitto(tmp_path / "local").start()
    cfg = agent_toml(
        tmp_path / "agent.toml",
        "gw-a",
        local.port,
        central.port,
        tmp_path / "spool",
        relay=(f"eu868/gateway/{eui.lower()}/event/#",),
        lora_eui=eui,
    )
    agent = AgentProcess(cfg, fake_root(tmp_path / "root"), tmp_path / "agent.log").start()
    got: dict[str, list] = {"local": [], "central": []}
    clients = []
    for side, svc, topics in (
        ("local", local, ["experiments/desired", f"eu868/gateway/{eui.lower()}/command/#"]),
        ("central", central, [f"eu868/gateway/{eui.lower()}/event/#", "gw/gw-a/status", "gw/gw-a/experiments/+"]),
    ):
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"watch-{side}", protocol=mqtt.MQTTv5)
        c.on_message = lambda c_, u, m, side=side: got[side].append((m.topic, m.payload, m.retain))
        c.connect("127.0.0.1", svc.port)
        c.loop_start()
        for t in topics:
            c.subscribe(t, 1)
        clients.append(c)
    try:
        agent.wait_log("central broker connected")
        agent.wait_log("local broker connected")
        assert wait_for(lambda: ("gw/gw-a/status", b"online") in [(t, p) for t, p, _ in got["central"]], 10)
        clients[1].publish("gw/gw-a/experiments/desired", b'{"experiment": "x"}', qos=1, retain=True)
        clients[1].publish(f"eu868/gateway/{eui.lower()}/command/down", b"\x01\x02", qos=1)
        clients[0].publish(f"eu868/gateway/{eui.lower()}/event/up", b"\x0a", qos=1)
        assert wait_for(lambda: len(got["local"]) == 1 and len(got["central"]) >= 2, 10), got
        reported = "gw/gw-a/experiments/reported"
        assert wait_for(lambda: any(t == reported for t, _, _ in got["central"]), 10), got
        doc = json.loads(next(p for t, p, _ in reversed(got["central"]) if t == reported))
        assert doc["experiments"] == [] and "not an object with an experiments list" in doc["errors"][0]
        assert [t for t, _, _ in got["local"]] == [f"eu868/gateway/{eui.lower()}/command/down"]
        assert (f"eu868/gateway/{eui.lower()}/command/down", b"\x01\x02") in [(t, p) for t, p, _ in got["local"]]
        assert (f"eu868/gateway/{eui.lower()}/event/up", b"\x0a") in [(t, p) for t, p, _ in got["central"]]
        agent.proc.kill()  # no clean stop: the broker publishes the last will
        agent.proc.wait(10)
        assert wait_for(lambda: ("gw/gw-a/status", b"offline") in [(t, p) for t, p, _ in got["central"]], 60)
    finally:
        for c in clients:
            c.disconnect()
            c.loop_stop()
        agent.stop()
        local.stop()
        central.stop()


def test_the_agent_imports_only_the_standard_library_and_paho():
    """The agent installs on a Pi with ``pip install paho-mqtt`` and a copy of gateways/agent/."""
    code = (
        "import sys; import gateways.agent.__main__, gateways.agent.relay, gateways.agent.config; "
        "print(sorted({m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert set(eval(out.stdout)) <= {"__main__", "_distutils_hack", "gateways", "paho"}, out.stdout  # noqa: S307 - our own repr


def test_a_copy_resent_with_the_agents_stamp_is_one_point(settings, run_worker, influx):
    """The worker takes the agent's receipt time (``smartzone-received``): a BLE reading (no device time) sent
    twice, as the agent re-sends after an outage, is one point. Before, each copy got its own receipt time: two
    points. A stamp the pipeline could not accept (a Pi whose clock is not set) gives way to the worker's time."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    run_worker()
    topic = "gw/gw-nationalestraat/home/TheengsGateway/BTtoMQTT/A4C138000002"
    payload = b'{"id":"A4:C1:38:00:00:02","tempc":21.5,"hum":50.0}'
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="agent-like", protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", settings.mqtt.port)
    c.loop_start()
    stamp_us = (time.time_ns() - 5_000_000_000) // 1000
    for stamp in (stamp_us, stamp_us, 1_000_000):  # the same copy twice, then one stamped in 1970
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = ("smartzone-received", str(stamp))
        c.publish(topic, payload, qos=1, properties=props).wait_for_publish(5)
    c.loop_stop()
    c.disconnect()
    q = "SELECT temperature FROM weather WHERE sensor = 'wx-nationalestraat-1'"

    def rows() -> list:
        return influx.rows(q, settings.influx.raw_database)

    assert wait_for(lambda: len(rows()) >= 2, 10)
    time.sleep(0.5)
    got = rows()
    assert len(got) == 2, got
    assert got[0]["time"] == stamp_us * 1000  # the agent's time
    assert got[1]["time"] > time.time_ns() - 60_000_000_000  # the worker's own


def test_replay_is_oldest_first_and_in_order_per_topic(tmp_path):
    """Messages spooled while the centre was down reach it oldest first, each topic in the order published."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    central = services.mosquitto(tmp_path / "central").start()
    got: list[tuple[str, int]] = []
    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="watch", protocol=mqtt.MQTTv5)
    watcher.on_message = lambda c, u, m: got.append((m.topic, int(m.payload)))
    subscribed = threading.Event()
    watcher.on_subscribe = lambda *a: subscribed.set()
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    # the watcher's session exists before the agent can publish anything: nothing is published unseen
    watcher.connect("127.0.0.1", central.port, clean_start=False, properties=props)
    watcher.loop_start()
    watcher.subscribe("gw/gw-a/zigbee2mqtt/#", 1)
    assert subscribed.wait(10)
    watcher.disconnect()
    watcher.loop_stop()
    central.stop()
    local = gateway_mosquitto(tmp_path / "local").start()
    cfg = agent_toml(tmp_path / "agent.toml", "gw-a", local.port, central.port, tmp_path / "spool")
    agent = AgentProcess(cfg, fake_root(tmp_path / "root"), tmp_path / "agent.log").start()
    try:
        agent.wait_log("local broker connected")
        pub = Publisher("127.0.0.1", local.port, client_id="radios")
        sent = [(f"zigbee2mqtt/dev{n % 7}", n) for n in range(3_000)]
        pub.publish(Emitted(t, str(n).encode(), ()) for t, n in sent)  # the centre is down
        assert pub.wait_acked(30)
        pub.close()
        central.start()
        watcher.connect("127.0.0.1", central.port, clean_start=False, properties=props)
        watcher.loop_start()
        assert wait_for(lambda: len({n for _, n in got}) == len(sent), 30), len(got)
        firsts: dict[str, int] = {}
        per_topic: dict[str, list[int]] = {}
        for topic, n in got:
            firsts.setdefault(topic, n)
            per_topic.setdefault(topic, []).append(n)
        assert all(ns == sorted(ns) for ns in per_topic.values())  # in order per topic
        assert sorted(firsts.values()) == list(range(7))  # and the oldest of each came first
    finally:
        watcher.loop_stop()
        agent.stop()
        local.stop()
        central.stop()
