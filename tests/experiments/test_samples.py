"""The sample experiments shipped as templates (experiments/samples/), each run as the gateway agent runs it: a
real process, ``python -I <file>``, with only the SZX_* environment, against the real Mosquitto. The metrics they
publish are read back from the broker in the Smart Zone metrics shape.

The BLE scan runs against its simulated radio (a file and a FIFO of JSON lines): a real controller cannot be
used here."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import REPO, wait_for

SAMPLES = REPO / "experiments" / "samples"


class Metrics:
    """Every metrics document published under ``gw/+/experiments/<exp>/metrics``, by gateway."""

    def __init__(self, port: int, exp: int) -> None:
        self.docs: dict[str, list[dict]] = {}
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-metrics-{exp}")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(f"gw/+/experiments/{exp}/metrics", qos=1)
        self.client.loop_start()
        assert self.subscribed.wait(10)

    def _on_message(self, client, userdata, msg) -> None:
        doc = json.loads(msg.payload)
        with self.lock:
            self.docs.setdefault(msg.topic.split("/")[1], []).append(doc)

    def last(self, gateway: str) -> dict:
        with self.lock:
            docs = self.docs.get(gateway) or [{"metrics": {}}]
            return docs[-1]["metrics"]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _run(
    sample: str, tmp: Path, port: int, exp: int, gateway: str, parameters: dict, radio: str = ""
) -> subprocess.Popen:
    """The sample as the agent runs it: isolated mode, its own working directory, the SZX_* environment only."""
    work = tmp / f"{gateway}-run"
    (work / "results").mkdir(parents=True)
    (work / "parameters.json").write_text(json.dumps(parameters))
    env = {
        "SZX_EXPERIMENT_ID": str(exp),
        "SZX_GATEWAY_ID": gateway,
        "SZX_RADIO": "ble",
        "SZX_START": "2026-12-02T17:00:00Z",
        "SZX_DEADLINE": "2099-01-01T00:00:00Z",
        "SZX_PARAMETERS": str(work / "parameters.json"),
        "SZX_RESULTS_DIR": str(work / "results"),
        "SZX_MQTT_HOST": "127.0.0.1",
        "SZX_MQTT_PORT": str(port),
        "SZX_MQTT_TLS_CA": "",
        "SZX_MQTT_USERNAME": "",
        "SZX_MQTT_PASSWORD": "",
        "SZX_MQTT_PREFIX": f"gw/{gateway}/experiments/{exp}/",
        "SZX_RADIO_DEVICE": radio,
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(work),
        "LANG": "C.UTF-8",
    }
    with (work / "stdout.log").open("wb") as out, (work / "stderr.log").open("wb") as err:
        cmd = [sys.executable, "-I", str(SAMPLES / sample)]
        return subprocess.Popen(cmd, cwd=work, env=env, stdout=out, stderr=err)


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(15)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen]]:
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def test_rtt_probe_between_two_gateways_on_loopback(mosquitto, tmp_path, procs):
    exp = 4242
    metrics = Metrics(mosquitto.port, exp)
    params = {"rate": 20, "report_s": 0.5, "timeout_s": 1.0, "qos": 1}
    try:
        procs += [_run("mqtt_rtt_probe.py", tmp_path, mosquitto.port, exp, g, params) for g in ("gw-a", "gw-b")]

        def measured(gw: str, peer: str) -> bool:
            m = metrics.last(gw)
            return m.get(f"{peer}/echoes_received", 0) >= 20 and "delivery_ratio" in m and m.get("rtt_ms_mean", 0) > 0

        assert wait_for(lambda: measured("gw-a", "gw-b") and measured("gw-b", "gw-a"), 30), (
            metrics.docs,
            [(tmp_path / f"{g}-run" / "stderr.log").read_text() for g in ("gw-a", "gw-b")],
        )
        for gw, peer in (("gw-a", "gw-b"), ("gw-b", "gw-a")):
            m = metrics.last(gw)
            assert m["delivery_ratio"] == 1.0 and m[f"{peer}/delivery_ratio"] == 1.0, m  # loopback loses nothing
            assert 0 < m["rtt_ms_p50"] <= m["rtt_ms_max"] < 1000 and m["peers"] == 1
            assert m["probes_sent"] >= 20 and m["echoes_sent"] >= 20
        doc = metrics.docs["gw-a"][-1]
        assert doc["units"]["rtt_ms_mean"] == "ms" and doc["units"]["delivery_ratio"] == "/" and "time" in doc
        assert [_stop(p) for p in procs] == [0, 0]  # SIGTERM: a last report, results, exit 0
    finally:
        metrics.close()
    for gw, peer in (("gw-a", "gw-b"), ("gw-b", "gw-a")):
        results = tmp_path / f"{gw}-run" / "results"
        rows = (results / "rtt.csv").read_text().splitlines()
        assert rows[0] == "received,peer,seq,rtt_ms" and len(rows) > 20
        assert all(r.split(",")[1] == peer and float(r.split(",")[3]) > 0 for r in rows[1:])
        summary = json.loads((results / "summary.json").read_text())
        assert summary["gateway"] == gw and summary["metrics"]["echoes_received"] == len(rows) - 1


def _advertisements(n: int, devices: int, seed: int) -> list[str]:
    """``n`` advertisements of ``devices`` advertisers at random instants over n/10 simulated seconds."""
    rnd = random.Random(seed)
    span = n / 10
    ads = [
        {"t": 1000.0 + rnd.uniform(0, span), "addr": f"AA:BB:CC:00:00:{i % devices:02X}", "rssi": -40 - i % 50}
        for i in range(n)
    ]
    ads.sort(key=lambda a: a["t"])
    ads[0]["name"] = "first"
    return [json.dumps(a) + "\n" for a in ads]


def test_ble_scan_hears_window_over_interval_of_the_simulated_advertisements(mosquitto, tmp_path, procs):
    exp = 4343
    n, devices = 4000, 40
    metrics = Metrics(mosquitto.port, exp)
    file_radio = tmp_path / "radio.jsonl"
    file_radio.write_text("".join(_advertisements(n, devices, 1)) + "not json\n")
    fifo_radio = tmp_path / "radio.fifo"
    os.mkfifo(fifo_radio)
    try:
        procs.append(
            _run(
                "ble_scan.py",
                tmp_path,
                mosquitto.port,
                exp,
                "gw-file",
                {"window_ms": 30, "interval_ms": 100, "report_s": 0.3},
                str(file_radio),
            )
        )
        procs.append(
            _run(
                "ble_scan.py",
                tmp_path,
                mosquitto.port,
                exp,
                "gw-fifo",
                {"window_ms": 10, "interval_ms": 100, "report_s": 0.3},
                str(fifo_radio),
            )
        )

        def feed() -> None:
            with fifo_radio.open("w") as f:  # blocks until the scan opens it
                f.writelines(_advertisements(n, devices, 2))

        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        assert wait_for(
            lambda: (
                metrics.last("gw-file").get("advertisements_on_air") == n
                and metrics.last("gw-fifo").get("advertisements_on_air") == n
            ),
            30,
        ), (metrics.last("gw-file"), metrics.last("gw-fifo"))
        writer.join(5)
        assert [_stop(p) for p in procs] == [0, 0]
    finally:
        metrics.close()
    for gw, duty in (("gw-file", 0.3), ("gw-fifo", 0.1)):
        m = metrics.last(gw)  # the final report, sent on SIGTERM
        assert m["duty_configured"] == pytest.approx(duty)
        assert m["duty_observed"] == pytest.approx(duty, abs=0.03), m  # binomial sd ~0.007 at n=4000
        assert m["advertisements_seen"] == pytest.approx(duty * n, rel=0.1)
        results = tmp_path / f"{gw}-run" / "results"
        seen = (results / "seen.csv").read_text().splitlines()
        assert len(seen) - 1 == m["advertisements_seen"]
        devices_csv = (results / "devices.csv").read_text().splitlines()
        assert len(devices_csv) - 1 == m["devices_seen_total"] <= devices
    assert metrics.last("gw-file")["devices_seen_total"] == devices  # 100 advertisements each: all heard
    assert metrics.last("gw-file")["malformed"] == 1 and metrics.last("gw-fifo")["malformed"] == 0
    # the reports between: RSSI statistics of what was heard, in dBm
    with_rssi = [d for d in metrics.docs["gw-file"] if "rssi_mean" in d["metrics"]]
    assert with_rssi and all(-89 <= d["metrics"]["rssi_min"] <= d["metrics"]["rssi_max"] <= -40 for d in with_rssi)
    assert with_rssi[0]["units"]["rssi_mean"] == "dBm"


def test_ble_scan_refuses_a_real_controller_it_cannot_drive(mosquitto, tmp_path):
    proc = _run("ble_scan.py", tmp_path, mosquitto.port, 4444, "gw-real", {}, "hci0")
    assert proc.wait(15) == 2
    assert "not implemented in this template" in (tmp_path / "gw-real-run" / "stderr.log").read_text()


def test_the_samples_need_nothing_but_the_standard_library_and_paho():
    import ast

    allowed = set(sys.stdlib_module_names) | {"paho"}
    for sample in SAMPLES.glob("*.py"):
        tree = ast.parse(sample.read_text())
        imported = {
            (a.name if isinstance(node, ast.Import) else node.module or "").split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for a in node.names
        }
        assert imported <= allowed, (sample.name, imported - allowed)
