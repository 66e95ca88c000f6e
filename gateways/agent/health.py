"""The gateway's heartbeat: what ``gw/<id>/health`` carries, read from the system under ``root``.

Numbers are quantities of the ``gateway_health`` vocabulary (smartzone/quantities.py); the software
versions are text. ``root`` is ``/`` on a Pi and a fake tree in the tests.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from gateways.agent import __version__

# the radios the agent watches: name -> (local topic prefixes that are its traffic, its device under root)
RADIO_TOPICS = {
    "zigbee": ("zigbee2mqtt/",),
    "ble": ("home/",),  # Theengs Gateway: home/<gateway>/BTtoMQTT/<mac>
    "lora": ("eu868/gateway/",),
}


@dataclass
class CpuSample:
    busy: int = 0
    total: int = 0


@dataclass
class Heard:
    """When the agent last relayed a message of each radio (monotonic seconds)."""

    last: dict[str, float] = field(default_factory=dict)

    def saw(self, topic: str, now: float) -> None:
        for radio, prefixes in RADIO_TOPICS.items():
            if topic.startswith(prefixes):
                self.last[radio] = now
                return


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _cpu(root: Path, prev: CpuSample) -> float | None:
    """CPU load (%) since the previous sample, from /proc/stat's first line."""
    text = _read(root / "proc/stat")
    if not text or not text.startswith("cpu "):
        return None
    values = [int(v) for v in text.splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    busy = total - idle
    d_total, d_busy = total - prev.total, busy - prev.busy
    prev.total, prev.busy = total, busy
    if d_total <= 0:
        return None
    return round(100.0 * d_busy / d_total, 1)


def _clock_synchronised(root: Path) -> bool:
    """systemd-timesyncd's flag file, else (on the real root) the kernel's STA_UNSYNC bit (adjtimex)."""
    if (root / "run/systemd/timesync/synchronized").exists():
        return True
    if root != Path("/"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        buf = ctypes.create_string_buffer(256)  # struct timex; modes = 0: read only
        state = libc.adjtimex(buf)
        at = 5 * ctypes.sizeof(ctypes.c_long)  # modes (padded), offset, freq, maxerror, esterror; then status
        status = int.from_bytes(buf.raw[at : at + 4], "little")
    except (OSError, AttributeError):
        return False
    return state != 5 and not status & 0x40  # TIME_ERROR, STA_UNSYNC


def _os_release(root: Path) -> str | None:
    text = _read(root / "etc/os-release") or ""
    for line in text.splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.partition("=")[2].strip().strip('"')
    return None


def _paho_version() -> str:
    try:
        import paho.mqtt

        return str(paho.mqtt.__version__)
    except (ImportError, AttributeError):
        return ""


def collect(
    root: Path,
    *,
    spool_dir: Path,
    backlog: int,
    backlog_bytes: int,
    oldest_stamp_us: int | None,
    dropped: int,
    heard: Heard,
    radio_devices: dict[str, str],
    cpu: CpuSample,
    now: float | None = None,
    monotonic: float | None = None,
) -> dict[str, object]:
    """The heartbeat document. ``now``/``monotonic`` are the clocks (given in tests)."""
    now = time.time() if now is None else now
    monotonic = time.monotonic() if monotonic is None else monotonic
    doc: dict[str, object] = {"time": round(now, 3)}
    uptime = _read(root / "proc/uptime")
    if uptime:
        doc["uptime"] = float(uptime.split()[0])
    temp = _read(root / "sys/class/thermal/thermal_zone0/temp")
    if temp and temp.strip().lstrip("-").isdigit():
        doc["cpu_temperature"] = int(temp) / 1000
    load = _cpu(root, cpu)
    if load is not None:
        doc["cpu_load"] = load
    meminfo = {}
    for line in (_read(root / "proc/meminfo") or "").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            meminfo[key] = int(parts[0]) * 1024
    if "MemTotal" in meminfo and "MemAvailable" in meminfo and meminfo["MemTotal"] > 0:
        doc["memory_available"] = meminfo["MemAvailable"]
        doc["memory_used"] = round(100.0 * (1 - meminfo["MemAvailable"] / meminfo["MemTotal"]), 1)
    with contextlib.suppress(OSError):
        doc["disk_free"] = shutil.disk_usage(spool_dir).free
    doc["backlog"] = backlog
    doc["backlog_bytes"] = backlog_bytes
    doc["backlog_age"] = round(max(0.0, now - oldest_stamp_us / 1e6), 3) if oldest_stamp_us else 0.0
    doc["dropped"] = dropped
    doc["clock_synchronised"] = _clock_synchronised(root)
    radios: dict[str, dict[str, object]] = {}
    for radio, device in radio_devices.items():
        entry: dict[str, object] = {"present": (root / device.lstrip("/")).exists()}
        if radio in heard.last:
            entry["heard_ago"] = round(monotonic - heard.last[radio], 1)
        radios[radio] = entry
    doc["radios"] = radios
    versions = {"agent": __version__, "python": platform.python_version(), "paho_mqtt": _paho_version()}
    osname = _os_release(root)
    if osname:
        versions["os"] = osname
    kernel = _read(root / "proc/sys/kernel/osrelease")
    if kernel:
        versions["kernel"] = kernel.strip()
    doc["versions"] = versions
    return doc


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of a process (this one by default), from /proc/<pid>/status."""
    text = _read(Path(f"/proc/{pid or os.getpid()}/status")) or ""
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0
