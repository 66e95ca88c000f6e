"""The processes of a gateway and the centre, for the gateway agent's tests and its benchmark.

A gateway-side mosquitto (loopback, persistence saved on every change), the agent as a subprocess with its own
``agent.toml``, the central mosquitto of docker-compose.yml with the generated users and ACL
(tests/deploy/stack.py) and the ingest worker as a subprocess logged in as ``smartzone-ingest-1``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from cli import services
from smartzone.settings import Settings
from tests.conftest import settings_env

REPO = Path(__file__).resolve().parents[2]


def gateway_mosquitto(folder: Path, port: int | None = None) -> services.Service:
    """The gateway's local broker as rendered for the Pi (gateways/raspberry-pi/templates/mosquitto.conf):
    loopback only, anonymous, persistence saved on every change (a SIGKILL loses no queued message or
    session), room for the agent's batches."""
    folder.mkdir(parents=True, exist_ok=True)
    port = port or services.free_port()
    # the shipped (rendered) local broker configuration, with only its port, folder and log moved here
    shipped = (REPO / "gateways/raspberry-pi/templates/mosquitto.conf").read_text()
    moved = {"listener": f"listener {port} 127.0.0.1", "persistence_location": f"persistence_location {folder}/"}
    lines = [moved.get(ln.split(" ", 1)[0], ln) for ln in shipped.splitlines() if not ln.startswith("log_dest")]
    assert all(v in lines for v in moved.values()), "the shipped local broker config changed shape"
    lines.append("log_dest stderr")
    if os.geteuid() == 0:
        lines.append("user root")
    conf = folder / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n")
    return services.Service("mosquitto", "127.0.0.1", port, folder, [services.which("mosquitto"), "-c", str(conf)])


def fake_root(folder: Path) -> Path:
    """A Pi as the agent's health reads it: /proc, /sys, /dev, /etc and a synchronised clock."""
    files = {
        "proc/uptime": "12345.67 40000.00\n",
        "proc/stat": "cpu  100 0 100 800 0 0 0 0 0 0\n",
        "proc/meminfo": "MemTotal:        3884000 kB\nMemFree:  1000000 kB\nMemAvailable:    2942000 kB\n",
        "proc/sys/kernel/osrelease": "6.6.31+rpt-rpi-v8\n",
        "sys/class/thermal/thermal_zone0/temp": "51234\n",
        "etc/os-release": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n',
        "run/systemd/timesync/synchronized": "",
        "dev/ttyUSB0": "",
        "dev/spidev0.0": "",
    }
    for rel, text in files.items():
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    (folder / "sys/class/bluetooth/hci0").mkdir(parents=True, exist_ok=True)
    return folder


def agent_toml(
    path: Path,
    gateway_id: str,
    local_port: int,
    central_port: int,
    spool: Path,
    *,
    password: str | None = None,
    ca: Path | None = None,
    max_bytes: int = 1 << 30,
    health_interval: float = 3600,
    relay: tuple[str, ...] = ("#",),
    lora_eui: str | None = None,
    experiments: dict[str, object] | None = None,
    radio_devices: dict[str, str] | None = None,
) -> Path:
    lines = [f'gateway_id = "{gateway_id}"']
    if lora_eui:
        lines.append(f'lora_eui = "{lora_eui}"')
    lines += ["[local]", 'host = "127.0.0.1"', f"port = {local_port}", f"relay = {json.dumps(list(relay))}"]
    lines += ["[central]", 'host = "127.0.0.1"', f"port = {central_port}", f'username = "{gateway_id}"']
    if password is not None:
        pw = path.parent / "central.password"
        pw.write_text(password + "\n")
        pw.chmod(0o600)
        lines.append(f'password_file = "{pw}"')
    if ca is not None:
        lines.append(f'ca_file = "{ca}"')
    lines += ["[spool]", f'dir = "{spool}"', f"max_bytes = {max_bytes}"]
    lines += ["[health]", f"interval = {health_interval}"]
    x = {"state_dir": str(spool.parent / (spool.name + "-experiments"))} | (experiments or {})
    lines += ["[experiments]"] + [f"{k} = {json.dumps(v)}" for k, v in x.items()]  # JSON scalars are TOML's
    if radio_devices:
        lines += ["[experiments.radio_devices]"] + [f"{k} = {json.dumps(v)}" for k, v in radio_devices.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class AgentProcess:
    config: Path
    root: Path
    log_path: Path
    proc: subprocess.Popen | None = None
    starts: int = field(default=0)

    def start(self) -> AgentProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateways.agent", "run", "--config", str(self.config), "--root", str(self.root)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        self.starts += 1
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, text: str, count: int = 1, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log().count(text) >= count:
                return
            assert self.proc is not None and self.proc.poll() is None, self.log()[-3000:]
            time.sleep(0.05)
        raise AssertionError(f"agent log has no {text!r}: {self.log()[-3000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


@dataclass
class IngestProcess:
    settings: Settings
    user: str
    password: str
    log_path: Path
    proc: subprocess.Popen | None = None

    def start(self) -> IngestProcess:
        env = settings_env(self.settings) | {
            "SMARTZONE_MQTT__USERNAME": self.user,
            "SMARTZONE_MQTT__PASSWORD": self.password,
        }
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "ingest"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.log_path.exists() and "MQTT subscribed" in self.log_path.read_text(errors="replace"):
                return self
            assert self.proc.poll() is None, self.log_path.read_text()[-3000:]
            time.sleep(0.05)
        raise AssertionError(f"worker did not subscribe: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
