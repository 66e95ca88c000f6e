"""Per-gateway credentials and ACL on the real central broker (issue 15, section 4).

Mosquitto 2.0.11 runs the shipped ``mosquitto.conf`` with the password file and ACL that ``smartzone broker
users`` generated. Each gateway logs in as itself (its id; its agent relays its LoRa concentrator's topics
too): it may publish only under ``gw/<its id>/`` and its own ``eu868/gateway/<its EUI>/event|state``, and reads
only its own commands and experiment orders. A credential is revoked and rotated without restarting the broker:
the files are regenerated and the broker gets SIGHUP, which makes Mosquitto reread ``password_file`` and
``acl_file``. Measured here (2.0.11): on that reload a connected client whose user is gone from the password
file is disconnected at once, and its reconnection is refused (CONNACK 0x87); a connected client whose
password changed is also disconnected (the broker checks every connected client's user name and password
against the reread file), so a rotation takes effect at once for the old credential.
"""

from __future__ import annotations

import os
import signal

import pytest

from cli import broker
from cli.main import main
from smartzone.registry import Registry
from tests.conftest import REGISTRY, wait_for
from tests.deploy.stack import Client, production_broker

NOT_AUTHORISED = 0x87
BAD_CREDENTIALS = 0x86
REG = Registry.load(REGISTRY)
A, B = [g for g in REG.doc.gateways if g.eui][:2]  # two LoRa gateways: gw/ and eu868/ prefixes both
PLAIN = next(g for g in REG.doc.gateways if not g.eui)


@pytest.fixture
def mq(tmp_path):
    b = production_broker(tmp_path, REG, tmp_path / ".env")
    clients: list[Client] = []

    def client(user: str, password: str | None = None, **kw) -> Client:
        c = Client(user, b.passwords[user] if password is None else password, b.plain_port, **kw)
        clients.append(c)
        return c

    b.client = client  # type: ignore[attr-defined]
    yield b
    for c in clients:
        c.close()
    b.stop()


def test_a_gateway_cannot_publish_under_another_s_prefixes_nor_read_its_data(mq):
    a, b = mq.client(A.id).connect(), mq.client(B.id).connect()
    worker = mq.client("smartzone-ingest-1").connect()
    network = mq.client(broker.CHIRPSTACK_GATEWAYS).connect()
    worker.subscribe("gw/#")
    network.subscribe("eu868/gateway/+/event/#")
    a.subscribe("gw/#")  # wider than it may read: each message is checked on delivery
    a.subscribe("eu868/#")

    # A's own prefixes go through; B's gw/ and eu868/ prefixes, and B's commands, are refused
    assert a.publish(f"gw/{A.id}/zigbee2mqtt/sensor", "a") == 0
    assert a.publish(f"eu868/gateway/{A.eui}/event/up", "a-up") == 0
    for topic in (
        f"gw/{B.id}/zigbee2mqtt/sensor",
        f"gw/{B.id}/health",
        f"gw/{B.id}/experiments/desired",
        f"eu868/gateway/{B.eui}/event/up",
        f"eu868/gateway/{B.eui}/state/conn",
        f"eu868/gateway/{B.eui}/command/down",
        f"eu868/gateway/{A.eui}/command/down",  # only ChirpStack sends commands
        "application/x/device/y/event/up",
    ):
        assert a.publish(topic, "forged") == NOT_AUTHORISED, topic
    assert a.publish(f"gw/{A.id}/zigbee2mqtt/after", "a2") == 0
    assert worker.wait(lambda: [m.payload for m in worker.messages] == [b"a", b"a2"])
    assert network.wait(lambda: [m.payload for m in network.messages] == [b"a-up"])

    # B's data, B's orders and B's commands never reach A; A's own order and command do
    assert b.publish(f"gw/{B.id}/zigbee2mqtt/sensor", "b-data") == 0
    assert b.publish(f"eu868/gateway/{B.eui}/event/up", "b-up") == 0
    assert network.publish(f"eu868/gateway/{B.eui}/command/down", "b-down") == 0
    assert network.publish(f"eu868/gateway/{A.eui}/command/down", "a-down") == 0
    assert a.wait(lambda: any(m.payload == b"a-down" for m in a.messages))
    assert sorted(m.payload for m in a.messages) == [b"a-down"]  # A's own publishes are not its to read either
    # a gateway without a concentrator has no eu868/ rights at all
    plain = mq.client(PLAIN.id).connect()
    assert plain.publish(f"eu868/gateway/{A.eui}/event/up", "forged") == NOT_AUTHORISED
    assert plain.publish(f"gw/{PLAIN.id}/senml/x", "ok") == 0


def test_a_wrong_password_is_refused(mq):
    wrong = mq.client(A.id, "not-its-password", client_id="wrong").connect()
    assert wrong.connack in (BAD_CREDENTIALS, NOT_AUTHORISED)
    other = mq.client(A.id, mq.passwords[B.id], client_id="other").connect()  # B's password for A
    assert other.connack in (BAD_CREDENTIALS, NOT_AUTHORISED)


def _regenerate(mq, tmp_path, monkeypatch, *options: str) -> dict[str, str]:
    """`smartzone broker users` over the running broker's files, then SIGHUP: the new secrets."""
    monkeypatch.setenv("SMARTZONE_REGISTRY", str(REGISTRY))
    out, secrets = str(mq.folder), str(tmp_path / ".env")
    assert main(["broker", "users", "--out", out, "--secrets", secrets, *options]) == 0
    os.kill(mq.svc.proc.pid, signal.SIGHUP)
    return broker.read_secrets(tmp_path / ".env")


def _login(mq, user: str, password: str) -> int | None:
    c = Client(user, password, mq.plain_port, client_id=f"probe-{os.urandom(3).hex()}").connect()
    c.close()
    return c.connack


def test_revoke_and_rotate_without_restarting_the_broker(mq, tmp_path, monkeypatch):
    pid = mq.svc.proc.pid
    old = mq.passwords[A.id]
    bystander = mq.client("smartzone-ingest-1").connect()  # stays connected throughout: no restart
    bystander.subscribe("gw/#")
    connected = mq.client(A.id).connect()
    assert connected.publish(f"gw/{A.id}/senml/x", "before") == 0

    # revoke: out of the password file and the ACL; the broker rereads both on SIGHUP
    secrets = _regenerate(mq, tmp_path, monkeypatch, "--revoke", A.id)
    assert broker.env_name(A.id) not in secrets and secrets[broker.REVOKED] == A.id
    assert f"user {A.id}\n" not in (mq.folder / "acl").read_text()
    assert wait_for(lambda: _login(mq, A.id, old) != 0, timeout=10), "the revoked password still logs in"
    assert _login(mq, A.id, old) in (BAD_CREDENTIALS, NOT_AUTHORISED)
    # the connected revoked client is thrown out by the reload (what Mosquitto 2.0.11 does)
    assert connected.wait(lambda: connected.disconnects != [])
    # a later plain run keeps it revoked
    secrets = _regenerate(mq, tmp_path, monkeypatch)
    assert broker.env_name(A.id) not in secrets and _login(mq, A.id, old) in (BAD_CREDENTIALS, NOT_AUTHORISED)

    # rotate: a new password, back in the files; the old one stays refused, the new one logs in
    secrets = _regenerate(mq, tmp_path, monkeypatch, "--rotate", A.id)
    new = secrets[broker.env_name(A.id)]
    assert new != old and not secrets.get(broker.REVOKED)
    assert wait_for(lambda: _login(mq, A.id, new) == 0, timeout=10), "the rotated password is refused"
    assert _login(mq, A.id, old) in (BAD_CREDENTIALS, NOT_AUTHORISED)
    back = mq.client(A.id, new, client_id="back").connect()
    assert back.publish(f"gw/{A.id}/senml/x", "after") == 0

    # rotating a connected gateway's password disconnects the old credential's session at the reload
    b_conn = mq.client(B.id).connect()
    _regenerate(mq, tmp_path, monkeypatch, "--rotate", B.id)
    assert b_conn.wait(lambda: b_conn.disconnects != [])

    assert mq.svc.proc.pid == pid and mq.svc.proc.poll() is None  # the same broker process all along
    assert bystander.disconnects == []
    assert bystander.wait(lambda: [m.payload for m in bystander.messages] == [b"before", b"after"])


def test_revoke_and_rotate_name_registry_gateways_only(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SMARTZONE_REGISTRY", str(REGISTRY))
    assert main(["broker", "users", "--out", "broker", "--revoke", "chirpstack"]) == 2
    assert "gateway ids of the registry" in capsys.readouterr().err
    assert main(["broker", "users", "--out", "broker", "--revoke", A.id, "--rotate", A.id]) == 2
