"""``smartzone gateway selftest`` on a complete fake Raspberry Pi: every check passes; then each part is taken
away or broken in turn and exactly its check fails, with its own message.

The fake Pi is a folder standing for its root (``dev/spidev0.0``, ``dev/gpiochip0``, ``proc/net/udp``,
``sys/class/bluetooth/hci0``, the concentrator's ``global_conf.json``, ...) plus real services on loopback:
a Mosquitto as the gateway's local broker, with a fake zigbee2mqtt answering ``health_check``, a fake
Theengs gateway publishing BLE adverts and the Gateway Bridge's retained connection state (protobuf, as the
shipped bridge marshals it); and the central broker of docker-compose.yml (tests/deploy/stack.py: TLS, the
password file and ACL of ``smartzone broker users``), where the gateway logs in as itself.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from chirpstack_api.gw import gw_pb2
from paho.mqtt.enums import CallbackAPIVersion

from cli import services
from cli.main import main as smartzone
from gateways.agent import selftest
from smartzone.registry import Registry
from tests.conftest import REGISTRY
from tests.deploy import stack

GATEWAY = "gw-volkstraat"  # in the demo registry: LoRa (EUI b827ebfffe6a0c01), Zigbee, BLE
EUI = "B827EBFFFE6A0C01"
ETC = "etc/smartzone-gateway"


@pytest.fixture(scope="module")
def central(tmp_path_factory) -> Iterator[stack.Broker]:
    """The production central broker, shared by the module: the checks only log in to it."""
    tmp = tmp_path_factory.mktemp("central")
    b = stack.production_broker(tmp, Registry.load(REGISTRY), tmp / ".env", workers=1)
    try:
        yield b
    finally:
        b.stop()


class Radios:
    """What runs beside the local broker on a Pi: zigbee2mqtt's request/response API, a Theengs gateway
    publishing adverts, the Gateway Bridge's retained ``state/conn``."""

    def __init__(self, port: int, healthy: bool = True) -> None:
        self.healthy, self.answer, self.adverts = healthy, True, True
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fake-radios-{uuid.uuid4().hex[:6]}")
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe("zigbee2mqtt/bridge/request/health_check", 1)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.ready.set()
        self.c.on_message = self._on_request
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert self.ready.wait(10), "the fake radios could not subscribe"
        self.thread = threading.Thread(target=self._adverts, daemon=True)
        self.thread.start()

    def _on_request(self, c, u, m) -> None:
        if not self.answer:
            return
        request = json.loads(m.payload or b"{}")
        body = {"data": {"healthy": self.healthy}, "status": "ok", "transaction": request.get("transaction")}
        c.publish("zigbee2mqtt/bridge/response/health_check", json.dumps(body), 1)

    def _adverts(self) -> None:
        while not self.stop.wait(0.1):
            if self.adverts:
                self.c.publish("home/theengs/BTtoMQTT/C47C8D6A0001", '{"id":"C4:7C:8D:6A:00:01","rssi":-70}')

    def conn_state(self, payload: bytes, eui: str = EUI.lower()) -> None:
        """The Gateway Bridge's retained connection state (it spells the EUI in lower case)."""
        self.c.publish(f"eu868/gateway/{eui}/state/conn", payload, 1, retain=True).wait_for_publish(5)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.c.disconnect()
        self.c.loop_stop()


def online() -> bytes:
    return gw_pb2.ConnState(gateway_id=EUI.lower(), state=gw_pb2.ConnState.ONLINE).SerializeToString()


@dataclass
class FakePi:
    root: Path
    config_path: Path
    local: services.Service
    radios: Radios
    central: stack.Broker
    toml: dict = field(default_factory=dict)

    def write_config(self) -> None:
        def value(v: object) -> str:
            return json.dumps(v)  # TOML's basic strings, integers, floats and arrays read like JSON

        lines = [f"{k} = {value(v)}" for k, v in self.toml.items() if not isinstance(v, dict)]
        for section, table in self.toml.items():
            if isinstance(table, dict):
                lines.append(f"[{section}]")
                lines += [f"{k} = {value(v)}" for k, v in table.items()]
        self.config_path.write_text("\n".join(lines) + "\n")

    def run(self) -> dict:
        self.write_config()
        return selftest.run(selftest.load_config(self.config_path), self.root)

    def at(self, rel: str) -> Path:
        return self.root / rel


def build_root(root: Path, central: stack.Broker) -> None:
    """The Pi's files, as install.sh leaves them and the kernel shows them."""
    for rel in ("dev/spidev0.0", "dev/gpiochip0", "dev/ttyUSB0", "run/systemd/timesync/synchronized"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).touch()
    (root / ETC).mkdir(parents=True)
    (root / ETC / "global_conf.json").write_text(
        "/* Generated by `smartzone gateway render gw-volkstraat`: edit the registry, not this file. */\n"
        + json.dumps({"SX130x_conf": {"spidev_path": "/dev/spidev0.0"}, "gateway_conf": {"gateway_ID": EUI}})
    )
    shutil.copy(central.ca, root / ETC / "ca.crt")
    (root / ETC / "central.password").write_text(central.passwords[GATEWAY] + "\n")
    (root / ETC / "central.password").chmod(0o600)
    for rel in ("var/lib/smartzone-gateway/spool", "var/lib/mosquitto"):
        (root / rel).mkdir(parents=True)
    (root / "proc/net").mkdir(parents=True)
    # /proc/net/udp (its first columns) with the Gateway Bridge bound to 0.0.0.0:1700 (0x06A4), and a
    # forwarder's socket sending to it
    (root / "proc/net/udp").write_text(
        "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "  101: 00000000:06A4 00000000:0000 07 00000000:00000000 00:00000000 00000000   999        0 23456\n"
        "  102: 0100007F:D431 0100007F:06A4 01 00000000:00000000 00:00000000 00000000     0        0 23457\n"
    )
    hci = root / "sys/class/bluetooth/hci0/rfkill0"
    hci.mkdir(parents=True)
    (hci / "state").write_text("1\n")


@pytest.fixture
def pi(tmp_path, central) -> Iterator[FakePi]:
    local = services.mosquitto(tmp_path / "local").start()
    radios = Radios(local.port)
    radios.conn_state(online())
    build_root(tmp_path / "root", central)
    toml = {
        "gateway_id": GATEWAY,
        "lora_eui": EUI,
        "local": {
            "host": "127.0.0.1",
            "port": local.port,
            "relay": [
                "zigbee2mqtt/#",
                "home/+/BTtoMQTT/#",
                f"eu868/gateway/{EUI}/event/#",
                f"eu868/gateway/{EUI}/state/#",
                "experiments/+/metrics/#",
            ],
        },
        "central": {
            "host": "127.0.0.1",
            "port": central.tls_port,
            "ca_file": f"/{ETC}/ca.crt",
            "username": GATEWAY,
            "password_file": f"/{ETC}/central.password",
            "keepalive": 30,
        },
        "spool": {"dir": "/var/lib/smartzone-gateway/spool", "max_bytes": 1 << 30},
        "health": {"interval": 30},
        "selftest": {
            "spi_device": "/dev/spidev0.0",
            "gpio_chip": "gpiochip0",
            "reset_gpio": 17,
            "concentrator_conf": f"/{ETC}/global_conf.json",
            "forwarder_port": 1700,
            "zigbee_serial": "/dev/ttyUSB0",
            "zigbee2mqtt_base_topic": "zigbee2mqtt",
            "hci": "hci0",
            "min_disk_free_bytes": 1 << 20,
            "ble_heard_within": 2,
        },
    }
    fake = FakePi(tmp_path / "root", tmp_path / "agent.toml", local, radios, central, toml)
    fake.write_config()
    try:
        yield fake
    finally:
        radios.close()
        local.stop()


ALL = [c.name for c in selftest.CHECKS]


def test_a_complete_fake_pi_passes_every_check(pi):
    result = pi.run()
    assert result["error"] == [], result["error"]
    assert result["success"] == ALL
    assert result["ret"] == 0 and result["skipped"] == []
    assert "B827EBFFFE6A0C01" in result["details"]["concentrator_eui"]
    assert "ONLINE" in result["details"]["packet_forwarder"]
    assert "over TLS" in result["details"]["central_broker"]


def other_ca(pi: FakePi) -> None:
    """A CA that did not sign the centre's certificate."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=not-the-centre"]
        + ["-keyout", str(pi.root / "other.key"), "-out", str(pi.at(f"{ETC}/ca.crt"))],
        check=True,
        capture_output=True,
    )


def gateway_id(value: str) -> Callable[[FakePi], None]:
    def edit(pi: FakePi) -> None:
        conf = pi.at(f"{ETC}/global_conf.json")
        conf.write_text(conf.read_text().replace(EUI, value))

    return edit


def selftest_key(key: str, value: object) -> Callable[[FakePi], None]:
    def edit(pi: FakePi) -> None:
        pi.toml["selftest"][key] = value

    return edit


# (check that must fail, how to break its part, a phrase of its message)
BREAKS = {
    "spi-missing": ("spi", lambda pi: pi.at("dev/spidev0.0").unlink(), "no SPI device"),
    "gpio-chip-missing": ("reset_gpio", lambda pi: pi.at("dev/gpiochip0").unlink(), "reset line 17"),
    "eui-placeholder": ("concentrator_eui", gateway_id("AA555A0000000000"), "placeholder EUI AA555A0000000000"),
    "eui-placeholder-0101": ("concentrator_eui", gateway_id("0101010101010101"), "placeholder EUI 0101010101010101"),
    "eui-not-the-registrys": ("concentrator_eui", gateway_id("0016C001F1500001"), "is not the registry's EUI"),
    "concentrator-conf-missing": (
        "concentrator_eui",
        lambda pi: pi.at(f"{ETC}/global_conf.json").unlink(),
        "cannot read the concentrator configuration",
    ),
    "bridge-not-bound": (
        "packet_forwarder",
        lambda pi: pi.at("proc/net/udp").write_text(pi.at("proc/net/udp").read_text().replace(":06A4 0", ":06A5 0")),
        "nothing listens on UDP 1700",
    ),
    "forwarder-offline": (
        "packet_forwarder",
        lambda pi: pi.radios.conn_state(b'{"gatewayId":"b827ebfffe6a0c01","state":"OFFLINE"}'),
        "marks b827ebfffe6a0c01 OFFLINE",
    ),
    "forwarder-never-seen": (
        "packet_forwarder",
        lambda pi: pi.radios.conn_state(b""),  # an empty retained message deletes the retained state
        "has no connection state",
    ),
    "local-broker-down": ("local_broker", lambda pi: pi.local.stop(), "cannot connect to the local broker"),
    "central-wrong-password": (
        "central_broker",
        lambda pi: pi.at(f"{ETC}/central.password").write_text("not-the-password\n"),
        "refused user gw-volkstraat",
    ),
    "central-other-ca": ("central_broker", other_ca, "TLS to 127.0.0.1"),
    "central-password-missing": (
        "central_broker",
        lambda pi: pi.at(f"{ETC}/central.password").unlink(),
        "cannot read the central password file",
    ),
    "spool-missing": (
        "storage",
        lambda pi: pi.at("var/lib/smartzone-gateway/spool").rmdir(),
        "cannot write in the agent's spool folder",
    ),
    "persistence-not-a-folder": (
        "storage",
        lambda pi: (pi.at("var/lib/mosquitto").rmdir(), pi.at("var/lib/mosquitto").write_text("")),
        "the local broker's persistence folder",
    ),
    "disk-full": ("storage", selftest_key("min_disk_free_bytes", 1 << 62), "below [selftest] min_disk_free_bytes"),
    "clock-unsynchronised": (
        "clock",
        lambda pi: pi.at("run/systemd/timesync/synchronized").unlink(),
        "the clock is not synchronised",
    ),
    "zigbee-dongle-missing": ("zigbee2mqtt", lambda pi: pi.at("dev/ttyUSB0").unlink(), "no Zigbee adapter"),
    "zigbee2mqtt-silent": (
        "zigbee2mqtt",
        lambda pi: setattr(pi.radios, "answer", False),
        "zigbee2mqtt did not answer zigbee2mqtt/bridge/request/health_check",
    ),
    "zigbee2mqtt-unhealthy": ("zigbee2mqtt", lambda pi: setattr(pi.radios, "healthy", False), "unhealthy"),
    "hci-missing": ("hci", lambda pi: shutil.rmtree(pi.at("sys/class/bluetooth/hci0")), "no Bluetooth adapter hci0"),
    "hci-soft-blocked": (
        "hci",
        lambda pi: pi.at("sys/class/bluetooth/hci0/rfkill0/state").write_text("0\n"),
        "soft-blocked",
    ),
    "ble-silent": ("ble_gateway", lambda pi: setattr(pi.radios, "adverts", False), "nothing heard from the BLE"),
}
# a check whose prerequisite failed is skipped, not failed: one broken part, one error
DEPENDENTS = {"local_broker": {"packet_forwarder", "zigbee2mqtt", "ble_gateway"}, "hci": {"ble_gateway"}}


@pytest.mark.parametrize("case", list(BREAKS))
def test_breaking_one_part_fails_only_its_check_with_its_message(pi, case, monkeypatch):
    monkeypatch.setattr(selftest, "REPLY_TIMEOUT", 1.5)
    check, breaks, phrase = BREAKS[case]
    breaks(pi)
    result = pi.run()
    assert [e["check"] for e in result["error"]] == [check], result["error"]
    error = result["error"][0]
    assert phrase in error["problem"], error
    assert error["fix"], "every error says what to do"
    skipped = {s["check"] for s in result["skipped"]}
    assert skipped == DEPENDENTS.get(check, set())
    assert set(result["success"]) == set(ALL) - {check} - skipped
    assert result["ret"] == 1


def test_every_check_has_a_break():
    assert {check for check, _, _ in BREAKS.values()} == set(ALL)


def test_json_output_and_exit_code_is_the_number_of_failures(pi, capsys, monkeypatch):
    monkeypatch.setattr(selftest, "REPLY_TIMEOUT", 1.5)
    pi.at("dev/spidev0.0").unlink()
    pi.at("run/systemd/timesync/synchronized").unlink()
    args = ["--config", str(pi.config_path), "--root", str(pi.root), "--json"]
    assert selftest.main(args) == 2
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"ret", "success", "error", "skipped", "details"}
    assert out["ret"] == 2
    assert [e["check"] for e in out["error"]] == ["spi", "clock"]
    assert all(set(e) == {"check", "problem", "fix"} for e in out["error"])
    assert out["success"] == [n for n in ALL if n not in ("spi", "clock")]
    # the main command line runs the same function; without --json it prints a line per check
    assert smartzone(["gateway", "selftest", "--config", str(pi.config_path), "--root", str(pi.root)]) == 2
    text = capsys.readouterr().out
    assert "FAIL  spi" in text and "do: enable SPI" in text and "ok    local_broker" in text
    assert text.rstrip().endswith("selftest: 9 passed, 2 failed, 0 skipped")


def test_radios_the_gateway_lacks_are_skipped(pi):
    del pi.toml["lora_eui"]
    pi.toml["local"]["relay"] = ["experiments/+/metrics/#"]
    result = pi.run()
    assert result["ret"] == 0
    assert result["success"] == ["local_broker", "central_broker", "storage", "clock"]
    assert {s["check"] for s in result["skipped"]} == set(ALL) - set(result["success"])


def test_a_configuration_error_names_the_key(tmp_path, capsys):
    conf = tmp_path / "agent.toml"
    conf.write_text('lora_eui = "B827EBFFFE6A0C01"\n[central]\nhost = "c"\n')
    assert selftest.main(["--config", str(conf)]) == selftest.CONFIG_ERROR
    assert "gateway_id: missing" in capsys.readouterr().err
    conf.write_text('gateway_id = "gw-a"\n[central]\nhost = "c"\n[selftest]\nreset_gpio = "17"\n')
    assert selftest.main(["--config", str(conf)]) == selftest.CONFIG_ERROR
    assert "selftest.reset_gpio: '17' is not an integer" in capsys.readouterr().err


def test_on_the_real_root_the_clock_is_the_kernels(tmp_path):
    """Without --root the clock check asks the kernel (adjtimex), as timedatectl's NTPSynchronized does."""
    config = selftest.SelftestConfig()
    ctx = selftest.Context(
        selftest.Config("gw-a", None, "127.0.0.1", 1883, (), "c", 8883, None, "gw-a", None, 30, "/x", config),
        Path("/"),
    )
    if not Path(selftest.TIMESYNC_FLAG).exists():
        with pytest.raises(selftest.Failed, match="adjtimex says unsynchronised"):
            selftest.check_clock(ctx, kernel=lambda: selftest.TIME_ERROR)
        assert "adjtimex state 0" in selftest.check_clock(ctx, kernel=lambda: 0)
    state = selftest.kernel_clock_state()  # the real system call answers here too
    assert state is None or 0 <= state <= 5


def test_comments_in_global_conf_are_not_json():
    text = '/* header */ {"url": "http://x//y", // line\n "gateway_ID": "AB" /* tail */}'
    assert json.loads(selftest._strip_comments(text)) == {"url": "http://x//y", "gateway_ID": "AB"}


def test_the_gateway_command_holds_render_and_selftest():
    """One `gateway` group holds both (a second `add_parser("gateway")` silently replaced the first once)."""
    from cli.main import build_parser

    parser = build_parser()
    assert parser.parse_args(["gateway", "render", "gw-x", "--out", "o"]).gateway_command == "render"
    assert parser.parse_args(["gateway", "selftest", "--config", "a.toml"]).gateway_command == "selftest"
