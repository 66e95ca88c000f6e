"""The main job: ``smartzone up --demo`` starts mosquitto and influxd, the worker, the simulator and the
charter job, data flows into InfluxDB and, through the charter, into the open database, and SIGINT
(Ctrl-C) stops everything cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import psutil

from cli import services
from smartzone.errors import InfluxError
from smartzone.settings import InfluxSettings
from storage.influx import Influx
from tests.conftest import REPO, count_points, wait_for


def _get(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


def test_up_demo_runs_and_stops_cleanly(tmp_path):
    mqtt_port, influx_port, api_port = services.free_port(), services.free_port(), services.free_port()
    env = {
        **os.environ,
        "SMARTZONE_CONFIG": "/nonexistent.toml",
        "SMARTZONE_DATA_DIR": str(tmp_path / "zone"),
        "SMARTZONE_MQTT__PORT": str(mqtt_port),
        "SMARTZONE_INFLUX__URL": f"http://127.0.0.1:{influx_port}",
        "SMARTZONE_SIMULATOR__RATE": "200",
        "SMARTZONE_INGEST__METRICS_INTERVAL": "1",
        "SMARTZONE_CHARTER__EVERY": "2s",
        "SMARTZONE_API__PORT": str(api_port),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "up", "--demo", "--backfill", "2h"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        influx = Influx(InfluxSettings(url=f"http://127.0.0.1:{influx_port}"))

        def flowing() -> bool:
            try:
                return count_points(influx, "smartzone_raw") > 200
            except InfluxError:  # influxd not up yet
                return False

        assert wait_for(flowing, 60)

        def published() -> bool:
            try:
                rows = influx.rows('SELECT count("n_contributors") FROM "noise"', "smartzone_open")
            except InfluxError:  # the charter job has not created the open database yet
                return False
            return bool(rows) and rows[0]["count"] >= 4  # a 15-minute noise level per sensor cell at least

        assert wait_for(published, 60)
        # the open-data API serves what the charter published
        api = f"http://127.0.0.1:{api_port}"
        assert wait_for(lambda: _get(f"{api}/readyz") == 200, 30)
        r = httpx.get(f"{api}/v1/datasets/noise/observations", params={"format": "csv"}, timeout=10)
        assert r.status_code == 200 and r.text.startswith("time,cell,h3_resolution"), r.text[:300]
        children = psutil.Process(proc.pid).children(recursive=True)
        names = {c.name() for c in children}
        assert {"mosquitto", "influxd"} <= names, names
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        assert "started mosquitto" in out and "started influxd" in out and "smart zone stopped" in out
        time.sleep(0.5)
        assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
        assert (tmp_path / "zone" / "mosquitto" / "mosquitto.conf").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
