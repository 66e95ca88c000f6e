"""Local Mosquitto and InfluxDB for ``smartzone up`` and the test suite: Debian's binaries, loopback only.

Both start from PATH with their data in a folder of ours. Mosquitto runs the configuration we ship
(``ingest/broker/mosquitto.conf``) with its listeners (and their TLS and client-id options), persistence
folder and authentication (password file, ACL, dynamic-security plugin) replaced by one local, loopback-only,
anonymous listener; influxd runs with ``-config /dev/null`` and environment variables.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from smartzone.errors import ConfigurationError

SHIPPED_MOSQUITTO_CONF = Path(__file__).resolve().parent.parent / "ingest" / "broker" / "mosquitto.conf"
_LOCAL_OVERRIDES = (
    "listener",
    "use_username_as_clientid",  # refuses clients without a user name: local brokers are anonymous
    "cafile",
    "certfile",
    "keyfile",
    "tls_version",
    "persistence_location",
    "password_file",
    "acl_file",
    "plugin",  # the dynamic-security plugin (and its plugin_opt_*): authentication, which local brokers lack
    "allow_anonymous",
    "log_dest",
    "protocol",
    "user",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def which(name: str) -> str:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and Path(candidate).exists():
            return candidate
    raise ConfigurationError(f"{name} not found: install it (Debian: apt-get install mosquitto influxdb)")


def local_mosquitto_conf(port: int, data_dir: Path, *, extra: str = "") -> str:
    """The shipped broker configuration, made local: one loopback listener, our folder, no auth (so no
    client id bound to a user name either)."""
    kept = [
        line
        for line in SHIPPED_MOSQUITTO_CONF.read_text().splitlines()
        if not line.strip().startswith(_LOCAL_OVERRIDES)
    ]
    if os.geteuid() == 0:
        # Started as root, mosquitto drops to user "mosquitto", which cannot write our data folder
        # (its persistence autosave then fails with "Permission denied"). Locally, stay who we are.
        kept.append("user root")
    kept += [
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        f"persistence_location {data_dir}/",
        "log_dest stderr",
    ]
    return "\n".join(kept) + "\n" + extra


@dataclass
class Service:
    name: str
    host: str
    port: int
    data_dir: Path
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    def start(self, timeout: float = 15.0) -> Service:
        log = open(self.data_dir / f"{self.name}.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            self.args,
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ConfigurationError(
                    f"{self.name} exited with {self.proc.returncode}; see {self.data_dir / (self.name + '.log')}"
                )
            if self.ready():
                return self
            time.sleep(0.03)
        self.stop()
        raise ConfigurationError(f"{self.name} did not become ready on {self.host}:{self.port} in {timeout}s")

    def ready(self) -> bool:
        return port_open(self.host, self.port)

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


class InfluxService(Service):
    def ready(self) -> bool:
        try:
            return httpx.get(f"http://{self.host}:{self.port}/ping", timeout=0.5).status_code == 204
        except httpx.HTTPError:
            return False

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def mosquitto(data_dir: Path, port: int | None = None, *, extra_conf: str = "") -> Service:
    """A (not yet started) local Mosquitto with the shipped configuration."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    conf = data_dir / "mosquitto.conf"
    conf.write_text(local_mosquitto_conf(port, data_dir, extra=extra_conf))
    return Service("mosquitto", "127.0.0.1", port, data_dir, [which("mosquitto"), "-c", str(conf)])


def influxd(data_dir: Path, port: int | None = None, *, auth: bool = False) -> InfluxService:
    """A (not yet started) local influxd configured by environment variables only."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    rpc = free_port()
    env = {
        "INFLUXDB_HTTP_BIND_ADDRESS": f"127.0.0.1:{port}",
        "INFLUXDB_BIND_ADDRESS": f"127.0.0.1:{rpc}",
        "INFLUXDB_META_DIR": str(data_dir / "meta"),
        "INFLUXDB_DATA_DIR": str(data_dir / "data"),
        "INFLUXDB_DATA_WAL_DIR": str(data_dir / "wal"),
        "INFLUXDB_REPORTING_DISABLED": "true",
        "INFLUXDB_HTTP_LOG_ENABLED": "false",
        "INFLUXDB_DATA_QUERY_LOG_ENABLED": "false",
        "INFLUXDB_HTTP_AUTH_ENABLED": "true" if auth else "false",
        "INFLUXDB_MONITOR_STORE_ENABLED": "false",
    }
    return InfluxService("influxd", "127.0.0.1", port, data_dir, [which("influxd"), "run", "-config", "/dev/null"], env)
