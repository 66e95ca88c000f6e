"""``agent.toml``: the agent's configuration, read with the standard library's tomllib.

Every error names the key it is about (``central.port: ...``), so the operator knows what to fix.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_GATEWAY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_EUI = re.compile(r"[0-9A-F]{16}")


class ConfigError(ValueError):
    """A configuration the agent cannot run with; the message starts with the key."""


@dataclass(frozen=True)
class Local:
    host: str = "127.0.0.1"
    port: int = 1883
    relay: tuple[str, ...] = ()


@dataclass(frozen=True)
class Central:
    host: str = ""
    port: int = 8883
    ca_file: Path | None = None  # None: plain TCP (tests, a broker on the same host)
    username: str = ""
    password_file: Path | None = None
    keepalive: int = 30


@dataclass(frozen=True)
class Spool:
    dir: Path = Path("/var/lib/smartzone-gateway/spool")
    max_bytes: int = 1 << 30


@dataclass(frozen=True)
class Health:
    interval: float = 30.0


@dataclass(frozen=True)
class SelfTest:
    spi_device: str = "/dev/spidev0.0"
    gpio_chip: str = "gpiochip0"
    reset_gpio: int = 17
    concentrator_conf: str = "/etc/smartzone-gateway/global_conf.json"
    forwarder_port: int = 1700
    zigbee_serial: str = "/dev/ttyUSB0"
    zigbee2mqtt_base_topic: str = "zigbee2mqtt"
    hci: str = "hci0"
    min_disk_free_bytes: int = 536_870_912
    ble_heard_within: float = 300.0
    interval: float = 21600.0  # the agent runs the checks at start and every interval s (gw/<id>/selftest)


# the radios an experiment may ask for, and the device an experiment gets for it (SZX_RADIO_DEVICE) by default
EXPERIMENT_RADIOS = ("ble", "zigbee", "wifi", "lora-experimental")


@dataclass(frozen=True)
class Experiments:
    """``[experiments]``: where and how the agent runs the centre's experiments (docs/parts/gateway-agent.md)."""

    state_dir: Path = Path("/var/lib/smartzone-experiments")
    user: str = "smartzone-exp"  # the experiments' Unix user, when the agent can switch users (root)
    python: str = ""  # the interpreter of experiments; empty: the agent's own (its venv has paho-mqtt)
    cpu_s: int = 3600  # limits when the desired document gives none
    memory_bytes: int = 268_435_456
    file_bytes: int = 104_857_600
    open_files: int = 256
    processes: int = 64
    artifact_max_bytes: int = 67_108_864
    kill_grace: float = 10.0  # SIGTERM at the deadline, SIGKILL this many seconds later
    upload_timeout: float = 60.0  # one HTTP request (artifact download, results upload)
    mqtt_host: str = ""  # SZX_MQTT_HOST/PORT: the central broker by default
    mqtt_port: int = 0
    radio_devices: tuple[tuple[str, str], ...] = ()  # radio -> SZX_RADIO_DEVICE, over the defaults


@dataclass(frozen=True)
class AgentConfig:
    gateway_id: str
    local: Local
    central: Central
    spool: Spool = field(default_factory=Spool)
    health: Health = field(default_factory=Health)
    selftest: SelfTest = field(default_factory=SelfTest)
    lora_eui: str | None = None
    path: Path | None = None
    experiments: Experiments = field(default_factory=Experiments)

    def radio_devices(self) -> dict[str, str]:
        """radio -> the device an experiment on it gets (``SZX_RADIO_DEVICE``)."""
        s = self.selftest
        out = {"ble": s.hci, "zigbee": s.zigbee_serial, "wifi": "wlan0", "lora-experimental": s.spi_device}
        return out | dict(self.experiments.radio_devices)

    def password(self) -> str | None:
        """The central password: the first line of ``central.password_file`` (None without one)."""
        if self.central.password_file is None:
            return None
        try:
            return self.central.password_file.read_text(encoding="utf-8").splitlines()[0].strip()
        except (OSError, IndexError) as exc:
            raise ConfigError(
                f"central.password_file: cannot read a password from {self.central.password_file}: {exc}"
            ) from exc


def _take(table: dict[str, Any], section: str, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    name = f"{section}.{key}" if section else key
    if key not in table:
        return default
    value = table.pop(key)
    if kind in (int, float) or kind == (int, float):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (kind is int and not isinstance(value, int))
        ):
            raise ConfigError(f"{name}: {value!r} is not {'an integer' if kind is int else 'a number'}")
        return value
    if not isinstance(value, kind):
        want = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ConfigError(f"{name}: {value!r} is not a {want}")
    return value


def _section(doc: dict[str, Any], name: str) -> dict[str, Any]:
    table = doc.pop(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{name}: must be a table ([{name}])")
    return dict(table)


def _no_more(table: dict[str, Any], section: str) -> None:
    if table:
        keys = ", ".join(f"{section}.{k}" if section else k for k in sorted(table))
        raise ConfigError(f"{keys}: unknown key(s)")


def _port(value: int, name: str) -> int:
    if not 1 <= value <= 65535:
        raise ConfigError(f"{name}: {value} is not a TCP port (1-65535)")
    return value


def _filter(f: object, name: str) -> str:
    if not isinstance(f, str) or not f:
        raise ConfigError(f"{name}: {f!r} is not an MQTT topic filter")
    levels = f.split("/")
    for n, level in enumerate(levels):
        if ("#" in level and (level != "#" or n != len(levels) - 1)) or ("+" in level and level != "+"):
            raise ConfigError(f"{name}: {f!r} is not a valid MQTT topic filter")
    return f


def parse(doc: dict[str, Any], path: Path | None = None) -> AgentConfig:
    """The configuration a parsed TOML document describes; ConfigError naming the key otherwise."""
    doc = dict(doc)
    gateway_id = _take(doc, "", "gateway_id", str, None)
    if gateway_id is None:
        raise ConfigError("gateway_id: missing (the registry id of this gateway)")
    if not _GATEWAY_ID.fullmatch(gateway_id):
        raise ConfigError(f"gateway_id: {gateway_id!r} is not a registry gateway id")
    lora_eui = _take(doc, "", "lora_eui", str, None)
    if lora_eui is not None and not _EUI.fullmatch(lora_eui):
        raise ConfigError(f"lora_eui: {lora_eui!r} is not 16 upper-case hexadecimal digits")

    t = _section(doc, "local")
    relay = _take(t, "local", "relay", list, [])
    local = Local(
        host=_take(t, "local", "host", str, "127.0.0.1"),
        port=_port(_take(t, "local", "port", int, 1883), "local.port"),
        relay=tuple(_filter(f, f"local.relay[{n}]") for n, f in enumerate(relay)),
    )
    _no_more(t, "local")

    t = _section(doc, "central")
    host = _take(t, "central", "host", str, None)
    if not host:
        raise ConfigError("central.host: missing (the central broker's host name)")
    ca = _take(t, "central", "ca_file", str, None)
    pw = _take(t, "central", "password_file", str, None)
    central = Central(
        host=host,
        port=_port(_take(t, "central", "port", int, 8883), "central.port"),
        ca_file=Path(ca) if ca else None,
        username=_take(t, "central", "username", str, gateway_id),
        password_file=Path(pw) if pw else None,
        keepalive=_take(t, "central", "keepalive", int, 30),
    )
    if not 5 <= central.keepalive <= 65535:
        raise ConfigError(f"central.keepalive: {central.keepalive} s is outside 5-65535")
    _no_more(t, "central")

    t = _section(doc, "spool")
    spool = Spool(
        dir=Path(_take(t, "spool", "dir", str, str(Spool.dir))),
        max_bytes=_take(t, "spool", "max_bytes", int, Spool.max_bytes),
    )
    if spool.max_bytes < 65536:
        raise ConfigError(f"spool.max_bytes: {spool.max_bytes} is below the minimum of 65536 bytes")
    _no_more(t, "spool")

    t = _section(doc, "health")
    health = Health(interval=float(_take(t, "health", "interval", (int, float), 30)))
    if health.interval <= 0:
        raise ConfigError(f"health.interval: {health.interval} s must be positive")
    _no_more(t, "health")

    t = _section(doc, "selftest")
    d = SelfTest()
    selftest = SelfTest(
        spi_device=_take(t, "selftest", "spi_device", str, d.spi_device),
        gpio_chip=_take(t, "selftest", "gpio_chip", str, d.gpio_chip),
        reset_gpio=_take(t, "selftest", "reset_gpio", int, d.reset_gpio),
        concentrator_conf=_take(t, "selftest", "concentrator_conf", str, d.concentrator_conf),
        forwarder_port=_port(_take(t, "selftest", "forwarder_port", int, d.forwarder_port), "selftest.forwarder_port"),
        zigbee_serial=_take(t, "selftest", "zigbee_serial", str, d.zigbee_serial),
        zigbee2mqtt_base_topic=_take(t, "selftest", "zigbee2mqtt_base_topic", str, d.zigbee2mqtt_base_topic),
        hci=_take(t, "selftest", "hci", str, d.hci),
        min_disk_free_bytes=_take(t, "selftest", "min_disk_free_bytes", int, d.min_disk_free_bytes),
        ble_heard_within=float(_take(t, "selftest", "ble_heard_within", (int, float), d.ble_heard_within)),
        interval=float(_take(t, "selftest", "interval", (int, float), d.interval)),
    )
    if selftest.interval < 60:
        raise ConfigError(f"selftest.interval: {selftest.interval} s is below the minimum of 60 s")
    _no_more(t, "selftest")
    experiments = _experiments(_section(doc, "experiments"), central)
    _no_more(doc, "")
    return AgentConfig(gateway_id, local, central, spool, health, selftest, lora_eui, path, experiments)


def _experiments(t: dict[str, Any], central: Central) -> Experiments:
    d = Experiments()
    s = "experiments"
    devices = _take(t, s, "radio_devices", dict, {})
    for radio, device in devices.items():
        if radio not in EXPERIMENT_RADIOS:
            raise ConfigError(f"{s}.radio_devices.{radio}: not a radio ({', '.join(EXPERIMENT_RADIOS)})")
        if not isinstance(device, str) or not device:
            raise ConfigError(f"{s}.radio_devices.{radio}: {device!r} is not a device name or path")
    e = Experiments(
        state_dir=Path(_take(t, s, "state_dir", str, str(d.state_dir))),
        user=_take(t, s, "user", str, d.user),
        python=_take(t, s, "python", str, d.python),
        cpu_s=_take(t, s, "cpu_s", int, d.cpu_s),
        memory_bytes=_take(t, s, "memory_bytes", int, d.memory_bytes),
        file_bytes=_take(t, s, "file_bytes", int, d.file_bytes),
        open_files=_take(t, s, "open_files", int, d.open_files),
        processes=_take(t, s, "processes", int, d.processes),
        artifact_max_bytes=_take(t, s, "artifact_max_bytes", int, d.artifact_max_bytes),
        kill_grace=float(_take(t, s, "kill_grace", (int, float), d.kill_grace)),
        upload_timeout=float(_take(t, s, "upload_timeout", (int, float), d.upload_timeout)),
        mqtt_host=_take(t, s, "mqtt_host", str, central.host),
        mqtt_port=_port(_take(t, s, "mqtt_port", int, central.port), f"{s}.mqtt_port"),
        radio_devices=tuple(sorted(devices.items())),
    )
    _no_more(t, s)
    if not e.user:
        raise ConfigError(f"{s}.user: empty (the Unix user experiments run as when the agent is root)")
    for key in ("cpu_s", "memory_bytes", "file_bytes", "open_files", "processes", "artifact_max_bytes"):
        if getattr(e, key) <= 0:
            raise ConfigError(f"{s}.{key}: {getattr(e, key)} must be positive")
    for key in ("kill_grace", "upload_timeout"):
        if getattr(e, key) <= 0:
            raise ConfigError(f"{s}.{key}: {getattr(e, key)} s must be positive")
    return e


def load(path: str | Path) -> AgentConfig:
    """Read and check ``agent.toml``."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    return parse(doc, path)
