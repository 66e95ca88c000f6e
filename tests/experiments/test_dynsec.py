"""The experiments' broker users through Mosquitto's dynamic-security plugin, on the broker as compose runs it
(Mosquitto 2.0.11: shipped mosquitto.conf, password file, ACL, the plugin's file from ``smartzone broker users``).

An experiment's user may publish only under ``gw/<gateway>/experiments/<id>/``: outside it the broker refuses
the publish (MQTT v5 PUBACK 0x87) and a subscriber that may read everything receives nothing; the negative
control is the same publish by the gateway's own user, which is delivered. Deleted, it can no longer log in.
"""

from __future__ import annotations

import base64
import json
import subprocess
import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cli import broker, services
from experiments.dynsec import Dynsec, DynsecError, parse_user, user_name
from smartzone.registry import Registry
from tests.conftest import REGISTRY, wait_for

NOT_AUTHORISED = 0x87
GW, OTHER = "gw-kloosterstraat", "gw-egmont"
MARK = "--end--"


@pytest.fixture(scope="module")
def admin(dynsec_broker):
    """The scheduler's connection: user smartzone-experiments, the plugin's admin."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=broker.EXPERIMENTS, protocol=mqtt.MQTTv5)
    c.username_pw_set(broker.EXPERIMENTS, dynsec_broker.passwords[broker.EXPERIMENTS])
    ready = threading.Event()
    d = Dynsec(c, timeout=5)

    def on_connect(client, userdata, flags, rc, props):
        d.subscribe()
        ready.set()

    c.on_connect = on_connect
    c.connect("127.0.0.1", dynsec_broker.port)
    c.loop_start()
    assert ready.wait(10)
    assert wait_for(lambda: _answers(d), 5, 0.05)
    yield d
    c.disconnect()
    c.loop_stop()


def _answers(d: Dynsec) -> bool:
    try:
        d.list_clients()
        return True
    except DynsecError:
        return False


def _login(b, user: str, password: str) -> int:
    c = b.client(user, password, client_id=f"login-{user}")
    c.connect()
    code = c.connack
    c.close()
    return code


def test_the_admin_file_has_the_plugin_s_format_and_logs_in(dynsec_broker, tmp_path):
    """``smartzone broker users`` writes the plugin's file as ``mosquitto_ctrl dynsec init`` does (base64 salt
    and PBKDF2-SHA512 hash, iterations), and the plugin accepts it on its own: a broker with no password file."""
    ours = json.loads((dynsec_broker.folder / "dynsec" / "dynamic-security.json").read_text())
    subprocess.run(
        ["mosquitto_ctrl", "dynsec", "init", str(tmp_path / "init.json"), "admin", "pw"],
        check=True,
        capture_output=True,
    )
    theirs = json.loads((tmp_path / "init.json").read_text())
    mine, ref = ours["clients"][0], theirs["clients"][0]
    assert mine["username"] == broker.EXPERIMENTS
    assert set(ref) - {"textName"} <= set(mine)
    assert len(base64.b64decode(mine["password"])) == len(base64.b64decode(ref["password"])) == 64
    assert len(base64.b64decode(mine["salt"])) == len(base64.b64decode(ref["salt"]))
    assert set(theirs["defaultACLAccess"]) == set(ours["defaultACLAccess"])
    control = {(a["acltype"], a["topic"]) for a in ours["roles"][0]["acls"]}
    assert ("publishClientSend", "$CONTROL/dynamic-security/#") in control
    assert ("subscribePattern", "$CONTROL/dynamic-security/#") in control

    # only the plugin authenticates here: its file alone decides who logs in
    folder = tmp_path / "alone"
    folder.mkdir()
    (folder / "dynamic-security.json").write_text(json.dumps(ours))
    port = services.free_port()
    plugin = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"
    conf = folder / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous false\nplugin {plugin}\n"
        f"plugin_opt_config_file {folder / 'dynamic-security.json'}\nlog_dest stderr\nuser root\n"
    )
    svc = services.Service("mosquitto", "127.0.0.1", port, folder, [services.which("mosquitto"), "-c", str(conf)])
    svc.start()
    try:
        from tests.deploy.stack import Client

        pw = dynsec_broker.passwords[broker.EXPERIMENTS]
        for password, ok in ((pw, True), ("wrong", False)):
            c = Client(broker.EXPERIMENTS, password, port).connect()
            assert (c.connack == 0) is ok, c.connack
            c.close()
    finally:
        svc.stop()


def test_an_experiment_user_publishes_only_under_its_prefix(dynsec_broker, admin):
    b = dynsec_broker
    admin.ensure_experiment_user(7, GW, "exp-secret-7")
    watcher = b.client("smartzone-ingest-1", client_id="watcher-7").connect()  # reads gw/#
    assert watcher.subscribe("gw/#") == [1]
    exp = b.client(user_name(7, GW), "exp-secret-7").connect()
    assert exp.connack == 0
    assert exp.publish(f"gw/{GW}/experiments/7/metrics", '{"metrics": {"rtt_ms": 1}}') == 0
    # outside its prefix: the service's own topics, another gateway's prefix, another experiment's
    for topic in (f"gw/{GW}/senml/forged", f"gw/{OTHER}/experiments/7/metrics", f"gw/{GW}/experiments/8/metrics"):
        assert exp.publish(topic, "forged") == NOT_AUTHORISED, topic
    assert exp.publish(f"gw/{GW}/experiments/7/end", MARK) == 0
    assert watcher.wait(lambda: any(m.payload == MARK.encode() for m in watcher.messages))
    got = [m.topic for m in watcher.messages]
    assert got == [f"gw/{GW}/experiments/7/metrics", f"gw/{GW}/experiments/7/end"]
    # negative control: the gateway's own user may publish there, and it is delivered
    gw = b.client(GW, client_id=f"{GW}-control").connect()
    assert gw.publish(f"gw/{GW}/senml/forged", "real") == 0
    assert watcher.wait(lambda: f"gw/{GW}/senml/forged" in [m.topic for m in watcher.messages])


def test_an_experiment_reads_its_own_traffic_on_every_gateway_and_nothing_else(dynsec_broker, admin):
    b = dynsec_broker
    admin.ensure_experiment_user(9, GW, "a9")
    admin.ensure_experiment_user(9, OTHER, "b9")
    reader = b.client(user_name(9, GW), "a9").connect()
    reader.subscribe("gw/+/experiments/9/#")
    # Mosquitto 2.0.11 grants the SUBSCRIBE (its reason code is 1 here) and checks each message on delivery:
    # the readings never arrive, what is sent after them under experiment 9 does (delivery is in order)
    reader.subscribe("gw/#")
    peer = b.client(user_name(9, OTHER), "b9").connect()
    gw = b.client(OTHER, client_id=f"{OTHER}-9").connect()
    assert gw.publish(f"gw/{OTHER}/senml/aq", "a reading") == 0
    assert gw.publish(f"gw/{OTHER}/experiments/8/probe", "another experiment") == 0
    assert peer.publish(f"gw/{OTHER}/experiments/9/probe", "ping") == 0
    assert reader.wait(lambda: any(m.payload == b"ping" for m in reader.messages))
    assert {m.payload for m in reader.messages} == {b"ping"}  # (twice: both subscriptions match)


def test_create_is_idempotent_and_deleted_users_cannot_log_in(dynsec_broker, admin):
    b = dynsec_broker
    name = admin.ensure_experiment_user(11, GW, "first")
    assert name == "exp-11-gw-kloosterstraat" and parse_user(name) == (11, GW)
    assert admin.ensure_experiment_user(11, GW, "second") == name  # again: the password updated, no error
    assert _login(b, name, "first") != 0 and _login(b, name, "second") == 0
    assert admin.get_client(name)["roles"] == [{"rolename": name}]
    assert (11, GW) in admin.experiment_users()
    admin.remove_experiment_user(11, GW)
    assert _login(b, name, "second") != 0
    assert (11, GW) not in admin.experiment_users()
    admin.remove_experiment_user(11, GW)  # already gone: fine
    with pytest.raises(DynsecError, match="Client not found"):  # the broker's own message
        admin.add_client_role("exp-nobody", "exp-nobody")


def test_the_plugin_saves_its_clients_and_broker_users_keeps_them(dynsec_broker, admin, tmp_path):
    admin.ensure_experiment_user(12, GW, "kept")
    path = dynsec_broker.folder / "dynsec" / "dynamic-security.json"
    assert wait_for(lambda: user_name(12, GW) in path.read_text(), 5, 0.05)
    # `smartzone broker users` run again over the saved file: the admin rewritten, the experiment's client kept
    users = broker.users(Registry.load(REGISTRY))
    out = tmp_path / "again"
    (out / "dynsec").mkdir(parents=True)
    (out / "dynsec" / "dynamic-security.json").write_text(path.read_text())
    broker.write(out, users, {}, dynsec_broker.folder.parent / ".env")
    again = json.loads((out / "dynsec" / "dynamic-security.json").read_text())
    names = [c["username"] for c in again["clients"]]
    assert names.count(broker.EXPERIMENTS) == 1 and user_name(12, GW) in names
    assert [r["rolename"] for r in again["roles"]].count(broker.DYNSEC_ADMIN_ROLE) == 1


def test_no_answer_is_a_clear_error(mosquitto):
    """A broker without the plugin (the anonymous development broker) never answers: a timeout naming why."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="no-plugin", protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", mosquitto.port)
    c.loop_start()
    try:
        d = Dynsec(c, timeout=0.5)
        d.subscribe()
        with pytest.raises(DynsecError, match="no answer from the dynamic-security plugin"):
            d.list_clients()
    finally:
        c.disconnect()
        c.loop_stop()
