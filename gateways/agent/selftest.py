"""``smartzone gateway selftest``: is this Raspberry Pi ready to carry the zone's radios to the centre?

Shaped like FIT IoT-LAB's gateway autotest (``gateway_code/autotest/autotest.py``): named checks run one
after the other, each lands in ``success`` or ``error``, and the result is ``{"ret": N, "success": [...],
"error": [...]}`` with ``ret`` (and the exit code) the number of failures. Unlike IoT-LAB's bare names, each
error says what is wrong and what to do (``{"check", "problem", "fix"}``); checks that do not apply (no LoRa
EUI, no Zigbee or BLE in the relay list) or whose prerequisite failed are listed under ``skipped`` with why.

``--root DIR`` points every device and file check at a fake root (``DIR/dev/spidev0.0``,
``DIR/sys/class/bluetooth/hci0``, ``DIR/proc/net/udp``, ...) so the whole list runs on any machine; the
network checks talk to the brokers the configuration names. Standard library and paho-mqtt only: it runs
on the Pi from a copy of ``gateways/agent/``.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateways.agent import config as agent_config

REGION_PREFIX = "eu868"  # ChirpStack's gateway topic prefix (gateways/network-server/region_eu868.toml)
PLACEHOLDER_EUIS = ("AA555A0000000000", "0101010101010101")  # sx1302_hal / packet_forwarder examples
MOSQUITTO_PERSISTENCE = "/var/lib/mosquitto"  # the local broker's persistence_location (Debian's default)
TIMESYNC_FLAG = "/run/systemd/timesync/synchronized"  # systemd-timesyncd touches it once synchronised
REPLY_TIMEOUT = 5.0  # seconds for a broker, zigbee2mqtt or a retained state to answer
CONFIG_ERROR = 100  # the exit code when agent.toml cannot be read (more than there are checks)


# -- configuration: agent.toml, read by the agent's own loader (errors name the key) ----------------------
ConfigError = agent_config.ConfigError
SelftestConfig = agent_config.SelfTest


@dataclass(frozen=True)
class Config:
    """What the checks need of agent.toml, flattened."""

    gateway_id: str
    lora_eui: str | None
    local_host: str
    local_port: int
    relay: tuple[str, ...]
    central_host: str
    central_port: int
    ca_file: str | None
    username: str
    password_file: str | None
    keepalive: int
    spool_dir: str
    selftest: SelftestConfig = field(default_factory=SelftestConfig)


def load_config(path: Path) -> Config:
    cfg = agent_config.load(path)
    c = cfg.central
    return Config(
        gateway_id=cfg.gateway_id,
        lora_eui=cfg.lora_eui,
        local_host=cfg.local.host,
        local_port=cfg.local.port,
        relay=cfg.local.relay,
        central_host=c.host,
        central_port=c.port,
        ca_file=str(c.ca_file) if c.ca_file is not None else None,
        username=c.username or cfg.gateway_id,
        password_file=str(c.password_file) if c.password_file is not None else None,
        keepalive=c.keepalive,
        spool_dir=str(cfg.spool.dir),
        selftest=cfg.selftest,
    )


# -- the checks -------------------------------------------------------------------------------------------
class Failed(Exception):
    """A check's failure: what is wrong, and what to do about it."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.problem, self.fix = problem, fix


@dataclass
class Context:
    config: Config
    root: Path

    def at(self, path: str) -> Path:
        """A path of the Pi, under the fake root when there is one."""
        return self.root / path.lstrip("/")

    @property
    def real(self) -> bool:
        return self.root == Path("/")

    def relayed(self, needle: str) -> str | None:
        return next((f for f in self.config.relay if needle in f), None)


def check_spi(ctx: Context) -> str:
    dev = ctx.at(ctx.config.selftest.spi_device)
    if not dev.exists():
        raise Failed(
            f"no SPI device {dev}: the concentrator cannot be reached",
            "enable SPI (`sudo raspi-config nonint do_spi 0`, or dtparam=spi=on in /boot/firmware/config.txt) and "
            "reboot; check the concentrator HAT is seated; if it sits on another bus, set [selftest] spi_device",
        )
    if not os.access(dev, os.R_OK | os.W_OK):
        raise Failed(f"{dev} is not readable and writable by this user", "run as root, or add the user to group spi")
    return f"{dev} present"


def check_reset_gpio(ctx: Context) -> str:
    st = ctx.config.selftest
    chip = ctx.at(f"/dev/{st.gpio_chip}")
    try:  # opening the character device requests no line: the concentrator is not reset
        os.close(os.open(chip, os.O_RDWR | os.O_CLOEXEC))
        return f"{chip} opens read-write (line {st.reset_gpio} settable with gpioset)"
    except OSError as exc:
        why = exc.strerror
    export = ctx.at("/sys/class/gpio/export")  # the older sysfs interface
    if export.exists() and os.access(export, os.W_OK):
        return f"{export} writable (line {st.reset_gpio} settable through sysfs)"
    raise Failed(
        f"cannot open {chip} ({why}) and no writable {export}: the concentrator's reset line "
        f"{st.reset_gpio} cannot be driven",
        "on a Pi 5 the header's GPIO chip is gpiochip4: set [selftest] gpio_chip; run as root or add the user "
        "to group gpio; `gpioinfo` lists the chips and who holds each line",
    )


def _strip_comments(text: str) -> str:
    """JSON with the C comments sx1302_hal's parser (parson, with comments) accepts: / * * / and //."""
    out, i, n, in_str = [], 0, len(text), False
    while i < n:
        c = text[i]
        if in_str:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 1
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
            out.append(c)
        elif text.startswith("//", i):
            i = text.find("\n", i)
            i = n if i < 0 else i
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


def check_concentrator_eui(ctx: Context) -> str:
    conf = ctx.at(ctx.config.selftest.concentrator_conf)
    render = "render it from the registry (`smartzone gateway render <gateway_id> --out DIR`) and run install.sh"
    try:
        doc = json.loads(_strip_comments(conf.read_text()))
        raw = doc["gateway_conf"]["gateway_ID"]
    except OSError as exc:
        raise Failed(f"cannot read the concentrator configuration {conf}: {exc.strerror}", render) from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise Failed(f"{conf} has no readable gateway_conf.gateway_ID ({exc!s})", render) from exc
    eui = str(raw).upper().removeprefix("0X")
    if eui in PLACEHOLDER_EUIS:
        raise Failed(f"{conf} still has the placeholder EUI {eui}: an unconfigured gateway", render)
    want = ctx.config.lora_eui or ""
    if eui != want:
        raise Failed(
            f"the concentrator's gateway_ID {eui} is not the registry's EUI {want} (agent.toml lora_eui)",
            "re-render and reinstall if the registry is right; if the registry is wrong, read the chip's EUI in "
            "the forwarder's start-up log (`journalctl -b | grep 'concentrator EUI'`), correct the registry's eui "
            "and re-render",
        )
    return f"gateway_ID {eui} = the registry's"


def _udp_bound(ctx: Context, port: int) -> bool:
    """A socket is bound to the local UDP ``port`` (``/proc/net/udp`` and ``udp6``, as ``ss -uln`` reads them)."""
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = ctx.at(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 2 and fields[1].rsplit(":", 1)[-1].upper() == f"{port:04X}":
                return True
    return False


class _Local:
    """A short-lived MQTT client on the gateway's local broker."""

    def __init__(self, ctx: Context) -> None:
        self.cond = threading.Condition()
        self.messages: list[mqtt.MQTTMessage] = []
        self.subacks: set[int] = set()
        self.connected: bool | None = None
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"selftest-{uuid.uuid4().hex[:8]}")
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.connect(ctx.config.local_host, ctx.config.local_port, keepalive=30)
        self.c.loop_start()
        if not self.wait(lambda: self.connected is not None) or not self.connected:
            self.close()
            raise OSError("no CONNACK")

    def _on_connect(self, c: Any, u: Any, flags: Any, rc: Any, props: Any) -> None:
        with self.cond:
            self.connected = not rc.is_failure
            self.cond.notify_all()

    def _on_message(self, c: Any, u: Any, m: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.messages.append(m)
            self.cond.notify_all()

    def _on_subscribe(self, c: Any, u: Any, mid: int, rcs: Any, props: Any) -> None:
        with self.cond:
            self.subacks.add(mid)
            self.cond.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        deadline = time.monotonic() + (REPLY_TIMEOUT if timeout is None else timeout)
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True

    def subscribe(self, topic: str, qos: int = 1) -> None:
        _, mid = self.c.subscribe(topic, qos)
        if not self.wait(lambda: mid in self.subacks):
            raise OSError(f"no SUBACK for {topic}")

    def first(self, match: Callable[[mqtt.MQTTMessage], bool], timeout: float) -> mqtt.MQTTMessage | None:
        found: list[mqtt.MQTTMessage] = []

        def seen() -> bool:
            found[:] = [m for m in self.messages if match(m)]
            return bool(found)

        self.wait(seen, timeout)
        return found[0] if found else None

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def _local(ctx: Context) -> _Local:
    try:
        return _Local(ctx)
    except OSError as exc:
        raise Failed(
            f"the local broker at {ctx.config.local_host}:{ctx.config.local_port} does not answer ({exc})",
            "see the local_broker check",
        ) from exc


def _conn_state(payload: bytes | bytearray) -> str:
    """ChirpStack's ``ConnState`` (gw.proto: ``State state = 2``, OFFLINE = 0, ONLINE = 1) in JSON or protobuf."""
    try:
        return str(json.loads(payload).get("state", "OFFLINE"))
    except (ValueError, AttributeError):
        pass
    i = 0
    while i < len(payload):  # top-level protobuf fields: only the varint field 2 matters
        key, i = _varint(payload, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(payload, i)
            if number == 2:
                return {0: "OFFLINE", 1: "ONLINE"}.get(value, str(value))
        elif wire == 2:
            length, i = _varint(payload, i)
            i += length
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise ValueError(f"protobuf wire type {wire}")
    return "OFFLINE"


def _varint(b: bytes | bytearray, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(b):
            raise ValueError("truncated varint")
        byte = b[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def check_packet_forwarder(ctx: Context) -> str:
    port, eui = ctx.config.selftest.forwarder_port, (ctx.config.lora_eui or "").lower()
    if not _udp_bound(ctx, port):
        raise Failed(
            f"nothing listens on UDP {port}: the ChirpStack Gateway Bridge, the forwarder's peer, is not running",
            "`systemctl status chirpstack-gateway-bridge`; its semtech_udp udp_bind must be 0.0.0.0:"
            f"{port} (= [selftest] forwarder_port, the serv_port_up/down of global_conf.json)",
        )
    topic = f"{REGION_PREFIX}/gateway/+/state/conn"  # the bridge spells the EUI in lower case; match any case
    local = _local(ctx)
    try:
        local.subscribe(topic)
        msg = local.first(lambda m: m.topic.split("/")[2].lower() == eui, REPLY_TIMEOUT)
    finally:
        local.close()
    fix = (
        "the packet forwarder is not sending PULL_DATA to the bridge: `systemctl status` of the forwarder's unit "
        "and its journal (SPI or reset errors: see those checks); global_conf.json must send to 127.0.0.1 "
        f"port {port} up and down"
    )
    if msg is None:
        raise Failed(f"the Gateway Bridge has no connection state for {eui} on the local broker ({topic})", fix)
    try:
        state = _conn_state(msg.payload)
    except ValueError as exc:
        raise Failed(f"cannot read the Gateway Bridge's state on {msg.topic}: {exc}", fix) from exc
    if state != "ONLINE":
        raise Failed(f"the Gateway Bridge marks {eui} {state} ({msg.topic})", fix)
    return f"UDP {port} bound; the Gateway Bridge sees {eui} ONLINE (PULL_DATA received)"


def check_local_broker(ctx: Context) -> str:
    where = f"{ctx.config.local_host}:{ctx.config.local_port}"
    fix = "`systemctl status mosquitto` and `journalctl -u mosquitto`; [local] host and port must be its listener"
    try:
        local = _Local(ctx)
    except OSError as exc:
        raise Failed(f"cannot connect to the local broker at {where} ({exc})", fix) from exc
    topic = f"smartzone/selftest/{uuid.uuid4().hex}"
    token = uuid.uuid4().hex.encode()
    try:
        local.subscribe(topic)
        local.c.publish(topic, token, qos=1)
        got = local.first(lambda m: m.topic == topic and m.payload == token, REPLY_TIMEOUT)
    except OSError as exc:
        raise Failed(
            f"the local broker at {where} accepted the connection but not the subscription ({exc})", fix
        ) from exc
    finally:
        local.close()
    if got is None:
        raise Failed(f"a QoS 1 message to {topic} did not come back within {REPLY_TIMEOUT:.0f} s", fix)
    return f"QoS 1 round trip through {where}"


_CONNACK_FIX = {
    "Bad user name or password": "the password in [central] password_file is not the centre's: ask the operator "
    "for the gateway's password (`smartzone broker users` on the centre), re-render, reinstall",
    "Not authorized": "the centre does not know this user: the gateway must be in the registry and the centre's "
    "broker users regenerated (`smartzone broker users`, then SIGHUP the broker)",
}


def check_central_broker(ctx: Context) -> str:
    cfg = ctx.config
    where = f"{cfg.central_host}:{cfg.central_port}"
    password = None
    if cfg.password_file:
        try:
            password = ctx.at(cfg.password_file).read_text().strip()
        except OSError as exc:
            raise Failed(
                f"cannot read the central password file {ctx.at(cfg.password_file)}: {exc.strerror}",
                "install the rendered central.password (0600, one line) where [central] password_file says",
            ) from exc
    done = threading.Event()
    reason: list[str] = []

    def on_connect(c: Any, u: Any, flags: Any, rc: Any, props: Any) -> None:
        reason.append("" if not rc.is_failure else str(rc))
        done.set()

    # The centre binds the client id to the user name, so this takes over the agent's session for a moment:
    # the agent reconnects by itself and its spool keeps every reading.
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cfg.gateway_id, protocol=mqtt.MQTTv5)
    c.username_pw_set(cfg.username, password)
    c.on_connect = on_connect
    if cfg.ca_file:
        ca = ctx.at(cfg.ca_file)
        try:
            c.tls_set(ca_certs=str(ca))
        except (OSError, ssl.SSLError) as exc:
            raise Failed(
                f"cannot load the centre's CA certificate {ca}: {exc}",
                "install the centre's ca.crt where [central] ca_file says",
            ) from exc
    try:
        c.connect(cfg.central_host, cfg.central_port, keepalive=cfg.keepalive)
    except ssl.SSLCertVerificationError as exc:
        raise Failed(
            f"TLS to {where} failed: {exc.verify_message}",
            "[central] ca_file must be the CA that signed the centre's certificate, and [central] host a name "
            "(or IP) the certificate lists",
        ) from exc
    except (OSError, ssl.SSLError) as exc:
        raise Failed(
            f"cannot reach the central broker at {where} ({exc})",
            "check the uplink (`ping`), DNS, that outgoing TCP to that port is allowed, and [central] host/port",
        ) from exc
    c.loop_start()
    try:
        answered = done.wait(REPLY_TIMEOUT)
    finally:
        c.disconnect()
        c.loop_stop()
    if not answered:
        raise Failed(
            f"the central broker at {where} did not answer the CONNECT within {REPLY_TIMEOUT:.0f} s",
            "a TLS listener on a plain port, or the reverse? [central] port is the centre's 8883 (TLS) listener",
        )
    if reason[0]:
        raise Failed(
            f"the central broker refused user {cfg.username}: {reason[0]}",
            _CONNACK_FIX.get(reason[0], "check [central] username and password_file against the centre's users"),
        )
    return f"CONNACK success as {cfg.username} at {where}" + (" over TLS" if cfg.ca_file else "")


def check_storage(ctx: Context) -> str:
    st, cfg = ctx.config.selftest, ctx.config
    for name, path in (("the agent's spool", cfg.spool_dir), ("the local broker's persistence", MOSQUITTO_PERSISTENCE)):
        folder = ctx.at(path)
        probe = folder / f".selftest-{uuid.uuid4().hex}"
        try:  # write, fsync and remove: a read-only or full filesystem fails here, whatever the permissions say
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, b"x")
                os.fsync(fd)
            finally:
                os.close(fd)
            probe.unlink()
        except OSError as exc:
            raise Failed(
                f"cannot write in {name} folder {folder}: {exc.strerror}",
                "install.sh creates it (`install -d -m 0750 -o <service user> ...`); a read-only SD card "
                "(`mount | grep ' / '`) must be replaced",
            ) from exc
    vfs = os.statvfs(ctx.at(cfg.spool_dir))
    free = vfs.f_bavail * vfs.f_frsize
    if free < st.min_disk_free_bytes:
        raise Failed(
            f"{free / 2**20:.0f} MiB free on the spool's filesystem, below [selftest] min_disk_free_bytes "
            f"({st.min_disk_free_bytes / 2**20:.0f} MiB): the spool will drop its oldest readings",
            "free space (`journalctl --vacuum-size=100M`, old logs in /var/log) or use a larger SD card",
        )
    return f"spool and broker persistence writable; {free / 2**30:.1f} GiB free"


TIME_ERROR = 5  # adjtimex(2): "the clock is not synchronised" (STA_UNSYNC)


def kernel_clock_state() -> int | None:
    """adjtimex(2) with no modes: the kernel's clock state (TIME_OK 0 ... TIME_ERROR 5), the same source as
    ``timedatectl show -p NTPSynchronized`` and whatever keeps time (timesyncd, chrony, ntpd); None when
    unavailable."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        buf = ctypes.create_string_buffer(512)  # struct timex (about 208 bytes on 64-bit); modes = 0: read only
        state = int(libc.adjtimex(buf))
    except (OSError, AttributeError):
        return None
    return state if state >= 0 else None


def check_clock(ctx: Context, kernel: Callable[[], int | None] = kernel_clock_state) -> str:
    flag = ctx.at(TIMESYNC_FLAG)
    if flag.exists():
        return f"{flag} present (systemd-timesyncd synchronised)"
    seen = f"no {flag}"
    if ctx.real:
        state = kernel()
        if state is not None and state != TIME_ERROR:
            return f"the kernel clock is synchronised (adjtimex state {state})"
        seen += ", adjtimex unavailable" if state is None else ", adjtimex says unsynchronised"
    raise Failed(
        f"the clock is not synchronised ({seen}): readings would carry wrong times",
        "`timedatectl timesync-status`; allow outgoing UDP 123 or set NTP= servers in "
        "/etc/systemd/timesyncd.conf; a Pi has no RTC, so it needs the network at boot",
    )


def check_zigbee2mqtt(ctx: Context) -> str:
    st = ctx.config.selftest
    serial = ctx.at(st.zigbee_serial)
    if not serial.exists():
        raise Failed(
            f"no Zigbee adapter at {serial}",
            "plug in the dongle; prefer its stable /dev/serial/by-id/... path in [selftest] zigbee_serial and "
            "zigbee2mqtt's serial.port",
        )
    base = st.zigbee2mqtt_base_topic
    request, response = f"{base}/bridge/request/health_check", f"{base}/bridge/response/health_check"
    transaction = uuid.uuid4().hex[:12]
    local = _local(ctx)
    try:
        local.subscribe(response)
        local.c.publish(request, json.dumps({"transaction": transaction}), qos=1)
        msg = local.first(
            lambda m: m.topic == response and _json(m.payload).get("transaction", transaction) == transaction,
            REPLY_TIMEOUT,
        )
    finally:
        local.close()
    if msg is None:
        raise Failed(
            f"zigbee2mqtt did not answer {request} within {REPLY_TIMEOUT:.0f} s",
            "`systemctl status zigbee2mqtt` and `journalctl -u zigbee2mqtt` (adapter not found, wrong adapter "
            "type: zstack for a CC2652, ember/zboss for others); its mqtt.base_topic must be "
            f"[selftest] zigbee2mqtt_base_topic ({base})",
        )
    body = _json(msg.payload)
    if body.get("status") != "ok" or not (body.get("data") or {}).get("healthy"):
        raise Failed(
            f"zigbee2mqtt reports itself unhealthy: {msg.payload[:200].decode(errors='replace')}",
            "`journalctl -u zigbee2mqtt`; restart it (`systemctl restart zigbee2mqtt`); a CC2652 that keeps "
            "failing may need its coordinator firmware reflashed",
        )
    return f"zigbee2mqtt healthy ({response}), adapter at {serial}"


def _json(payload: bytes | bytearray) -> dict[str, Any]:
    try:
        doc = json.loads(payload)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def check_hci(ctx: Context) -> str:
    hci = ctx.config.selftest.hci
    dev = ctx.at(f"/sys/class/bluetooth/{hci}")
    if not dev.exists():
        raise Failed(
            f"no Bluetooth adapter {hci} ({dev})",
            "the Pi's built-in Bluetooth needs `hciuart`/`bluetooth` running (`systemctl status bluetooth`) and "
            "no dtoverlay=disable-bt in /boot/firmware/config.txt; set [selftest] hci for a USB adapter",
        )
    for state in sorted(dev.glob("rfkill*/state")):  # 1 unblocked, 0 soft-blocked, 2 hard-blocked
        value = state.read_text().strip()
        if value != "1":
            raise Failed(
                f"{hci} is {'hard' if value == '2' else 'soft'}-blocked ({state} = {value}): it cannot be up",
                "`rfkill unblock bluetooth` (a hard block is a switch or the firmware); then `bluetoothctl power on`",
            )
    return f"{dev} present, not rfkill-blocked"


def check_ble_gateway(ctx: Context) -> str:
    topic = ctx.relayed("BTtoMQTT") or "home/+/BTtoMQTT/#"
    within = ctx.config.selftest.ble_heard_within
    local = _local(ctx)
    try:
        local.subscribe(topic, qos=0)
        msg = local.first(lambda m: not m.retain, within)  # a retained message says nothing about now
    finally:
        local.close()
    if msg is None:
        raise Failed(
            f"nothing heard from the BLE gateway on {topic} for {within:.0f} s ([selftest] ble_heard_within)",
            "`systemctl status theengs-gateway` and its journal; its MQTT host/port must be the local broker "
            "and its publish topic home/<name>/BTtoMQTT; no BLE device nearby also gives silence",
        )
    return f"heard on {msg.topic}"


@dataclass(frozen=True)
class Check:
    name: str
    what: str
    run: Callable[[Context], str]
    applies: Callable[[Context], bool] = lambda ctx: True
    needs: tuple[str, ...] = ()


def _lora(ctx: Context) -> bool:
    return ctx.config.lora_eui is not None


def _zigbee(ctx: Context) -> bool:
    return ctx.relayed(ctx.config.selftest.zigbee2mqtt_base_topic + "/") is not None


def _ble(ctx: Context) -> bool:
    return ctx.relayed("BTtoMQTT") is not None


CHECKS = (
    Check("spi", "the concentrator's SPI device is present", check_spi, _lora),
    Check("reset_gpio", "the concentrator's reset line can be driven", check_reset_gpio, _lora),
    Check(
        "concentrator_eui",
        "global_conf.json's gateway_ID is set and is the registry's EUI",
        check_concentrator_eui,
        _lora,
    ),
    Check("local_broker", "a QoS 1 round trip through the local broker", check_local_broker),
    Check(
        "packet_forwarder",
        "the Gateway Bridge listens on UDP 1700 and sees the forwarder ONLINE",
        check_packet_forwarder,
        _lora,
        ("local_broker",),
    ),
    Check("central_broker", "the central broker accepts the gateway's credentials over TLS", check_central_broker),
    Check("storage", "spool and broker persistence writable, disk free above the threshold", check_storage),
    Check("clock", "the clock is synchronised", check_clock),
    Check("zigbee2mqtt", "zigbee2mqtt answers its health_check healthy", check_zigbee2mqtt, _zigbee, ("local_broker",)),
    Check("hci", "the Bluetooth adapter is present and not blocked", check_hci, _ble),
    Check("ble_gateway", "the BLE gateway published recently", check_ble_gateway, _ble, ("local_broker", "hci")),
)


def run(config: Config, root: Path = Path("/"), checks: tuple[Check, ...] = CHECKS) -> dict[str, Any]:
    """Every check, in order: ``{"ret": failures, "success": [names], "error": [{check, problem, fix}],
    "skipped": [{check, reason}], "details": {name: what was seen}}``."""
    ctx = Context(config, root)
    out: dict[str, Any] = {"ret": 0, "success": [], "error": [], "skipped": [], "details": {}}
    failed: set[str] = set()
    for check in checks:
        if not check.applies(ctx):
            out["skipped"].append({"check": check.name, "reason": "not configured on this gateway"})
            continue
        blocked = [n for n in check.needs if n in failed]
        if blocked:
            out["skipped"].append({"check": check.name, "reason": f"needs {', '.join(blocked)}"})
            continue
        try:
            out["details"][check.name] = check.run(ctx)
            out["success"].append(check.name)
        except Failed as exc:
            failed.add(check.name)
            out["error"].append({"check": check.name, "problem": exc.problem, "fix": exc.fix})
    out["ret"] = len(out["error"])
    return out


def render_text(result: dict[str, Any]) -> str:
    """One line per check, in the order they ran, then the counts."""
    lines = {n: f"ok    {n:<17} {result['details'][n]}" for n in result["success"]}
    for e in result["error"]:
        lines[e["check"]] = f"FAIL  {e['check']:<17} {e['problem']}\n      {'':<17} do: {e['fix']}"
    for s in result["skipped"]:
        lines[s["check"]] = f"skip  {s['check']:<17} {s['reason']}"
    out = [lines[c.name] for c in CHECKS if c.name in lines]
    out.append(f"selftest: {len(result['success'])} passed, {result['ret']} failed, {len(result['skipped'])} skipped")
    return "\n".join(out)


def parser(prog: str = "selftest") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="check that this gateway is ready")
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="the agent's agent.toml")
    p.add_argument("--root", default="/", help="a fake root for every device and file check (tests, rehearsals)")
    p.add_argument("--json", action="store_true", help='print {"ret", "success", "error", ...} as JSON')


def main(argv: list[str] | None = None) -> int:
    """Run the checks; the exit code is the number of failures (CONFIG_ERROR: agent.toml unreadable)."""
    args = parser().parse_args(argv)
    return run_args(args)


def run_args(args: argparse.Namespace) -> int:
    try:
        config = load_config(Path(args.config))
    except ConfigError as exc:
        print(f"selftest: configuration error: {exc}", file=sys.stderr)
        return CONFIG_ERROR
    result = run(config, Path(args.root))
    print(json.dumps(result, indent=2) if args.json else render_text(result))
    return int(result["ret"])
