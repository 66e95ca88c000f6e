"""BLE advertising scan with a configurable duty cycle: a Smart Zone sample experiment, and a template to copy.

Run by the gateway agent as ``python3 -I ble_scan.py`` with only the ``SZX_*`` environment
(docs/parts/experiments-metrics.md). Python's standard library and paho-mqtt only.

The scan listens ``parameters.window_ms`` out of every ``parameters.interval_ms`` (the LE Set Scan Parameters of
the Bluetooth Core specification, Vol 4 Part E 7.8.10: both from 2.5 ms to 10240 ms, the window no longer than
the interval), so it hears about window/interval of the advertisements on air. Every ``parameters.report_s``
seconds it publishes on ``<SZX_MQTT_PREFIX>metrics`` (the Smart Zone metrics shape): ``advertisements_on_air``
and ``advertisements_seen`` (totals), ``duty_observed`` (seen / on air) beside ``duty_configured``
(window / interval), ``devices_seen`` (distinct addresses heard since the last report), ``devices_seen_total``,
``rssi_mean``, ``rssi_p50``, ``rssi_min``, ``rssi_max`` (dBm, of the advertisements heard since the last report)
and ``malformed`` (lines of the simulated radio it could not read). Every advertisement heard goes to
``$SZX_RESULTS_DIR/seen.csv``; at the end, ``devices.csv`` (per address: count, mean RSSI, name). SIGTERM (the
agent's deadline) or ``SZX_DEADLINE`` stops it: a last report, then exit 0.

The radio (``SZX_RADIO_DEVICE``):
- a path, to a file or a FIFO: a simulated radio. One JSON object per line, one advertisement on air each:
  ``{"t": 12.3456, "addr": "C4:7C:8D:6A:1B:2E", "rssi": -67, "name": "Flower care", "data": "020106..."}``:
  ``t`` the time it was on air in seconds on the simulator's clock (any origin; the scan's windows start at the
  first advertisement's ``t``), ``addr`` the advertiser's address, ``rssi`` in dBm, ``name`` and ``data`` (hex
  advertising data) optional. A regular file is followed as it grows (``tail -f``); a FIFO is reopened when its
  writer closes it. An advertisement is heard when ``(t - t_first) mod interval < window``.
- ``hci0`` (or any name that is not a path): a real controller. Not implemented in this template, because it
  cannot be tested here: a real scan would set the duty cycle with ``btmgmt`` / ``hcitool lescan`` (BlueZ) or
  use ``bleak`` where it is installed. The script exits with status 2 saying so.

Parameters (``SZX_PARAMETERS``, a JSON file): ``window_ms`` (default 30), ``interval_ms`` (default 100),
``report_s`` (default 10).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import stat
import statistics
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

DEFAULTS: dict[str, float] = {"window_ms": 30.0, "interval_ms": 100.0, "report_s": 10.0}
HCI_MIN_MS, HCI_MAX_MS = 2.5, 10240.0  # LE scan interval and window: 0x0004-0x4000 units of 0.625 ms


def _env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None:
        sys.exit(f"{name} is not set: this script runs under the gateway agent (see the SZX_* environment)")
    return value


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Scan:
    def __init__(self, params: dict[str, Any], radio: Path) -> None:
        self.window = float(params["window_ms"])
        self.interval = float(params["interval_ms"])
        self.report_s = float(params["report_s"])
        if not (HCI_MIN_MS <= self.window <= self.interval <= HCI_MAX_MS) or self.report_s <= 0:
            sys.exit(
                f"bad parameters: need {HCI_MIN_MS} <= window_ms <= interval_ms <= {HCI_MAX_MS} and report_s > 0: "
                f"{params}"
            )
        self.radio = radio
        self.exp = _env("SZX_EXPERIMENT_ID")
        self.me = _env("SZX_GATEWAY_ID")
        self.prefix = _env("SZX_MQTT_PREFIX")
        if not self.prefix.endswith("/"):
            self.prefix += "/"
        self.results = Path(_env("SZX_RESULTS_DIR", "results"))
        self.results.mkdir(parents=True, exist_ok=True)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.first_t: float | None = None
        self.on_air = 0
        self.seen = 0
        self.malformed = 0
        self.window_rssi: list[float] = []
        self.window_devices: set[str] = set()
        self.devices: dict[str, list[Any]] = {}  # addr -> [count, rssi sum, name]
        self.csv_file = (self.results / "seen.csv").open("w", newline="")
        self.csv = csv.writer(self.csv_file)
        self.csv.writerow(["t", "addr", "rssi", "name"])
        self.client = self._client()

    def _client(self) -> mqtt.Client:
        client_id = f"exp-{self.exp}-{self.me}"
        try:  # paho-mqtt 2.x; 1.x has no CallbackAPIVersion
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        except AttributeError:
            client = mqtt.Client(client_id=client_id)
        user = os.environ.get("SZX_MQTT_USERNAME", "")
        if user:
            client.username_pw_set(user, os.environ.get("SZX_MQTT_PASSWORD", ""))
        ca = os.environ.get("SZX_MQTT_TLS_CA", "")
        if ca:
            client.tls_set(ca_certs=ca)
        return client

    # -- the simulated radio -------------------------------------------------------------------------
    def heard(self, t: float) -> bool:
        """Whether the scan listens at ``t`` (seconds): inside a window of the duty cycle."""
        if self.first_t is None:
            self.first_t = t
        return ((t - self.first_t) * 1000.0) % self.interval < self.window

    def advertisement(self, line: str) -> None:
        line = line.strip()
        if not line:
            return
        try:
            ad = json.loads(line)
            t, addr, rssi = float(ad["t"]), str(ad["addr"]), float(ad["rssi"])
            name = str(ad.get("name") or "")
        except (ValueError, KeyError, TypeError):
            with self.lock:
                self.malformed += 1
            return
        with self.lock:
            self.on_air += 1
            if not self.heard(t):
                return
            self.seen += 1
            self.window_rssi.append(rssi)
            self.window_devices.add(addr)
            d = self.devices.setdefault(addr, [0, 0.0, ""])
            d[0] += 1
            d[1] += rssi
            d[2] = name or d[2]
            self.csv.writerow([f"{t:.6f}", addr, rssi, name])

    def read_radio(self) -> None:
        """The simulated radio's advertisements, as they come, until stopped."""
        fifo = stat.S_ISFIFO(self.radio.stat().st_mode)
        while not self.stop.is_set():
            with self.radio.open(encoding="utf-8", errors="replace") as f:  # a FIFO blocks here until a writer
                pending = ""
                while not self.stop.is_set():
                    chunk = f.readline()
                    if not chunk:
                        if fifo:
                            break  # the writer closed it: reopen and wait for the next
                        time.sleep(0.05)  # a file: follow it as it grows
                        continue
                    pending += chunk
                    if pending.endswith("\n"):
                        self.advertisement(pending)
                        pending = ""

    # -- reporting -----------------------------------------------------------------------------------
    def report(self) -> dict[str, float]:
        with self.lock:
            rssi, self.window_rssi = self.window_rssi, []
            devices, self.window_devices = self.window_devices, set()
            metrics: dict[str, float] = {
                "advertisements_on_air": self.on_air,
                "advertisements_seen": self.seen,
                "duty_configured": self.window / self.interval,
                "devices_seen": len(devices),
                "devices_seen_total": len(self.devices),
                "malformed": self.malformed,
            }
            if self.on_air:
                metrics["duty_observed"] = self.seen / self.on_air
            if rssi:
                metrics.update(
                    rssi_mean=statistics.fmean(rssi),
                    rssi_p50=statistics.median(rssi),
                    rssi_min=min(rssi),
                    rssi_max=max(rssi),
                )
            self.csv_file.flush()
        units = {k: "dBm" for k in metrics if k.startswith("rssi_")}
        units.update({k: "/" for k in metrics if k.startswith("duty_")})
        doc = {"time": _now_iso(), "metrics": metrics, "units": units}
        self.client.publish(self.prefix + "metrics", json.dumps(doc), qos=1)
        return metrics

    def run(self, deadline: float | None) -> int:
        host, port = _env("SZX_MQTT_HOST", "127.0.0.1"), int(_env("SZX_MQTT_PORT", "1883"))
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        threading.Thread(target=self.read_radio, name="radio", daemon=True).start()
        while not self.stop.wait(self.report_s):
            if deadline is not None and time.time() >= deadline:
                break
            self.report()
        final = self.report()
        with self.lock:
            self.csv_file.close()
            with (self.results / "devices.csv").open("w", newline="") as f:
                out = csv.writer(f)
                out.writerow(["addr", "advertisements", "rssi_mean", "name"])
                for addr, (n, total, name) in sorted(self.devices.items()):
                    out.writerow([addr, n, f"{total / n:.1f}", name])
        (self.results / "summary.json").write_text(json.dumps({"gateway": self.me, "metrics": final}, indent=2))
        time.sleep(0.2)  # let paho send the last report
        self.client.disconnect()
        self.client.loop_stop()
        return 0


def _parameters() -> dict[str, Any]:
    params: dict[str, Any] = dict(DEFAULTS)
    path = os.environ.get("SZX_PARAMETERS", "")
    if path and Path(path).is_file():
        given = json.loads(Path(path).read_text() or "{}")
        if not isinstance(given, dict):
            sys.exit(f"{path}: parameters must be a JSON object")
        params.update({k: v for k, v in given.items() if k in DEFAULTS})
    return params


def _deadline() -> float | None:
    text = os.environ.get("SZX_DEADLINE", "")
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def main() -> int:
    device = os.environ.get("SZX_RADIO_DEVICE", "")
    radio = Path(device)
    if not device or "/" not in device or not radio.exists():
        print(
            f"SZX_RADIO_DEVICE={device!r} is not a simulated radio (a file or FIFO of JSON lines). A real scan of "
            "a controller such as hci0 is not implemented in this template: use BlueZ (btmgmt, hcitool lescan) or "
            "bleak there.",
            file=sys.stderr,
        )
        return 2
    scan = Scan(_parameters(), radio)
    signal.signal(signal.SIGTERM, lambda signum, frame: scan.stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: scan.stop.set())
    return scan.run(_deadline())


if __name__ == "__main__":
    sys.exit(main())
