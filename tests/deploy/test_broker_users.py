"""The broker's users on the real broker (Mosquitto 2.0.11, the shipped mosquitto.conf as compose mounts it,
the password file and ACL written by ``smartzone broker users``).

- No client can take another's session: a gateway that connects with an ingest worker's client id neither
  disconnects the worker nor receives the readings queued for it (issue 14, section 2).
- LoRaWAN (issue 14, section 3; issue 15, section 4: the gateway's own user, its id, covers its EUI's topics):
  each LoRa gateway may publish only its own ``eu868/gateway/<EUI>/event|state`` and read only its own commands;
  ChirpStack's gateway backend reads every gateway's events and state and writes commands; its integration
  keeps its application topics. A refused publish is seen in its MQTT v5 PUBACK (0x87) and by a privileged
  subscriber. Mosquitto grants a wildcard SUBSCRIBE that could match an allowed topic and checks each message
  on delivery, so a refused read is shown by what arrives: a message the subscriber may read, sent after the
  refused one, arrives, and the refused one never does (the broker hands a client its messages in order).
"""

from __future__ import annotations

import pytest

from cli import broker
from smartzone.registry import Registry
from tests.conftest import REGISTRY
from tests.deploy.stack import Client, production_broker

NOT_AUTHORISED = 0x87
REG = Registry.load(REGISTRY)
LORA = [g for g in REG.doc.gateways if g.eui]
TOPIC = "gw/gw-kloosterstraat/senml/aq"
READINGS = [f'[{{"bn":"urn:dev:mac:0024befffe804ff1:","n":"pm10","u":"ug/m3","v":{i}}}]' for i in range(6)]


@pytest.fixture
def mq(tmp_path):
    b = production_broker(tmp_path, REG, tmp_path / ".env")
    clients: list[Client] = []

    def client(user: str, **kw) -> Client:
        c = Client(user, b.passwords[user], b.plain_port, **kw)
        clients.append(c)
        return c

    b.client = client  # type: ignore[attr-defined]
    yield b
    for c in clients:
        c.close()
    b.stop()


def test_generated_password_file_is_mosquittos_pbkdf2_format(mq):
    line = (mq.folder / "passwd").read_text().splitlines()[0]
    user, digest = line.split(":", 1)
    assert digest.startswith(f"$7${broker.PBKDF2_ITERATIONS}$")
    ok = mq.client(user).connect()  # mosquitto 2.0.11 accepts our hashes ...
    assert ok.connack == 0
    wrong = Client(user, "not-the-password", mq.plain_port, client_id="x").connect()
    assert wrong.connack in (0x86, NOT_AUTHORISED)  # ... and only the right password
    wrong.close()
    anonymous = Client("", "", mq.plain_port, client_id="anon")
    anonymous.c.username_pw_set(None)
    assert anonymous.connect().connack != 0  # no anonymous clients
    anonymous.close()
    assert oct((mq.folder / "passwd").stat().st_mode & 0o777) == "0o640"


def test_a_gateway_cannot_take_an_ingest_workers_session(mq):
    """Before use_username_as_clientid, the attacker got the worker's session: 0 of 6 queued readings arrived."""
    worker_id = "smartzone-ingest-1"
    worker = mq.client(worker_id, clean_start=False).connect(session_expiry=3600)
    assert worker.subscribe("$share/ingest/gw/#") == [1]
    worker.close()  # the worker is away (a restart): the broker keeps its session and queues for it

    gateway = mq.client("gw-kloosterstraat").connect()
    for payload in READINGS:
        assert gateway.publish(TOPIC, payload) == 0

    # an attacker logged in as another gateway presents the worker's client id, asking for its session
    attacker = mq.client("gw-egmont", client_id=worker_id, clean_start=False).connect(session_expiry=3600)
    assert attacker.connack == 0 and attacker.session_present is False  # a session of its own, not the worker's
    attacker.subscribe("gw/#")  # granted as a filter; each message is checked against its ACL on delivery

    own = "gw/gw-egmont/experiments/desired"  # the one topic the attacker may read: its marker
    assert attacker.publish(own, "marker") == 0
    assert attacker.wait(lambda: any(m.topic == own for m in attacker.messages))
    assert [m.payload for m in attacker.messages] == [b"marker"]  # none of the worker's readings
    attacker.close()

    # the worker comes back: its session is there with every queued reading
    back = mq.client(worker_id, clean_start=False).connect(session_expiry=3600)
    assert back.session_present is True

    def readings() -> list[str]:  # the worker also reads the attackers' markers (under gw/)
        return [m.payload.decode() for m in back.messages if m.topic == TOPIC]

    assert back.wait(lambda: len(readings()) == len(READINGS)), f"{len(readings())} of {len(READINGS)}"
    assert readings() == READINGS

    # while the worker is connected, the attacker connecting again with its id does not disconnect it
    again = mq.client("gw-egmont", client_id=worker_id).connect()
    assert again.connack == 0
    again.subscribe("gw/#")
    assert gateway.publish(TOPIC, "after") == 0
    assert again.publish(own, "marker") == 0
    assert back.wait(lambda: readings() == [*READINGS, "after"])  # still connected, still receiving
    assert again.wait(lambda: any(m.topic == own for m in again.messages))
    assert [m.payload for m in again.messages] == [b"marker"]
    assert back.disconnects == []


def test_each_lora_gateway_publishes_only_its_own_events_and_reads_only_its_commands(mq):
    assert len(LORA) >= 2
    a, b = LORA[0].eui, LORA[1].eui
    network = mq.client(broker.CHIRPSTACK_GATEWAYS).connect()
    assert network.subscribe("$share/chirpstack/eu868/gateway/+/event/+") == [1]  # as ChirpStack subscribes
    assert network.subscribe("eu868/gateway/+/state/+") == [1]

    gw_a = mq.client(LORA[0].id).connect()
    gw_a.subscribe("eu868/gateway/+/command/#")  # wider than it may read
    gw_a.subscribe("eu868/gateway/+/event/#")
    gw_a.subscribe("application/#")
    # its own events and state go through; another gateway's, commands, and other trees are refused
    assert gw_a.publish(f"eu868/gateway/{a}/event/up", "up-a") == 0
    assert gw_a.publish(f"eu868/gateway/{a}/state/conn", "online-a") == 0
    for topic in (
        f"eu868/gateway/{b}/event/up",
        f"eu868/gateway/{b}/state/conn",
        f"eu868/gateway/{a}/command/down",
        "application/x/device/y/event/up",
        f"gw/{LORA[1].id}/senml/x",
    ):
        assert gw_a.publish(topic, "forged") == NOT_AUTHORISED, topic
    assert gw_a.publish(f"eu868/gateway/{a}/event/stats", "stats-a") == 0  # after the refused ones
    assert network.wait(lambda: len(network.messages) == 3)
    assert sorted(m.payload.decode() for m in network.messages) == ["online-a", "stats-a", "up-a"]

    # another gateway's events, and ChirpStack's commands: each gateway receives only its own commands
    gw_b = mq.client(LORA[1].id).connect()
    gw_b.subscribe("eu868/gateway/+/command/#")
    assert gw_b.publish(f"eu868/gateway/{b}/event/up", "up-b") == 0
    integration = mq.client(broker.CHIRPSTACK).connect()
    assert integration.publish("application/app/device/a81758fffe0312ab/event/up", "{}") == 0
    assert network.publish(f"eu868/gateway/{b}/command/down", "down-b") == 0
    assert network.publish(f"eu868/gateway/{a}/command/down", "down-a") == 0
    assert gw_a.wait(lambda: any(m.payload == b"down-a" for m in gw_a.messages))
    assert gw_b.wait(lambda: any(m.payload == b"down-b" for m in gw_b.messages))
    assert [m.payload for m in gw_a.messages] == [b"down-a"]  # not b's event, b's command, nor application/
    assert [m.payload for m in gw_b.messages] == [b"down-b"]
    assert network.wait(lambda: len(network.messages) == 4)  # up-b reached ChirpStack
    # ChirpStack's gateway backend may not forge events, nor write application topics
    assert network.publish(f"eu868/gateway/{a}/event/up", "forged") == NOT_AUTHORISED
    assert network.publish("application/x/device/y/event/up", "forged") == NOT_AUTHORISED

    # the integration keeps its application topics; the ingest workers read them, not the gateways' radio
    worker = mq.client("smartzone-ingest-2").connect()
    assert worker.subscribe("$share/ingest/application/#") == [1]
    worker.subscribe("eu868/gateway/+/event/+")
    assert integration.publish(f"eu868/gateway/{a}/command/down", "forged") == NOT_AUTHORISED
    assert gw_a.publish(f"eu868/gateway/{a}/event/up", "up-a2") == 0
    assert integration.publish("application/app/device/a81758fffe0312ab/event/up", "event") == 0
    assert worker.wait(lambda: len(worker.messages) >= 1)
    assert [m.payload for m in worker.messages] == [b"event"]
    # a gateway without a concentrator cannot speak for any LoRa gateway; no user is named after an EUI
    plain = mq.client("gw-egmont").connect()
    assert plain.publish(f"eu868/gateway/{a}/event/up", "forged") == NOT_AUTHORISED
    assert a not in mq.passwords and b not in mq.passwords


def test_broker_users_command_keeps_passwords_other_lines_and_secrecy(tmp_path, monkeypatch, capsys):
    """`smartzone broker users`: one user per gateway (a LoRa gateway's EUI topics are its own user's), worker and
    service; passwords from the
    environment, else kept from the secrets file, else generated; the secrets file stays 0600 and keeps the
    operator's other lines; the example secret is refused."""
    from cli.main import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SMARTZONE_REGISTRY", str(REGISTRY))
    dotenv = tmp_path / ".env"
    dotenv.write_text("POSTGRES_PASSWORD=mine\n")
    monkeypatch.setenv("MQTT_PASSWORD_GW_EGMONT", "from-the-environment")
    assert main(["broker", "users", "--workers", "3", "--out", "broker"]) == 0
    first = broker.read_secrets(dotenv)
    assert first["POSTGRES_PASSWORD"] == "mine" and first["MQTT_PASSWORD_GW_EGMONT"] == "from-the-environment"
    expected = {"smartzone-ingest-1", "smartzone-ingest-2", "smartzone-ingest-3", "chirpstack", "healthcheck"}
    expected.add(broker.EXPERIMENTS)
    expected |= {broker.CHIRPSTACK_GATEWAYS, *(g.id for g in REG.doc.gateways)}
    assert {broker.env_name(u) for u in expected} <= set(first)
    users = {line.split(":", 1)[0] for line in (tmp_path / "broker" / "passwd").read_text().splitlines()}
    assert users == expected and "from-the-environment" not in (tmp_path / "broker" / "passwd").read_text()
    assert oct(dotenv.stat().st_mode & 0o777) == "0o600"
    acl = (tmp_path / "broker" / "acl").read_text()
    assert "user gw-egmont\ntopic read gw/gw-egmont/experiments/desired\ntopic write gw/gw-egmont/#\n" in acl
    assert "pattern" not in acl  # explicit per user, deny by default

    monkeypatch.delenv("MQTT_PASSWORD_GW_EGMONT")
    assert main(["broker", "users", "--workers", "3", "--out", "broker"]) == 0  # again: nothing changes
    assert broker.read_secrets(dotenv) == first
    assert f"0 new, {len(expected)} kept" in capsys.readouterr().out.splitlines()[-1]
    monkeypatch.setenv("MQTT_PASSWORD_HEALTHCHECK", "changethis")
    assert main(["broker", "users", "--out", "broker"]) == 2  # a configuration error, said plainly
    assert "example value 'changethis'" in capsys.readouterr().err
