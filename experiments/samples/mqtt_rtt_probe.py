"""MQTT round-trip probe between gateways: a Smart Zone sample experiment, and a template to copy.

Run by the gateway agent as ``python3 -I mqtt_rtt_probe.py`` on every gateway of the experiment, with only the
``SZX_*`` environment (docs/parts/experiments-metrics.md). Python's standard library and paho-mqtt only.

Each instance
- publishes numbered probes on ``<prefix>probe/<seq>`` (``SZX_MQTT_PREFIX`` = ``gw/<me>/experiments/<id>/``) at
  ``parameters.rate`` probes per second;
- subscribes to the probes of the other gateways of the same experiment (``gw/+/experiments/<id>/probe/#``) and
  echoes each one back on its own prefix, ``<prefix>echo/<origin>/<seq>`` (it may publish only there);
- subscribes to the echoes of its own probes (``gw/+/experiments/<id>/echo/<me>/+``) and measures, per peer,
  the round-trip time (``rtt_ms``, on its own monotonic clock: the clocks of the gateways need not agree) and the
  delivery ratio (echoes received / probes that peer should have echoed: those sent after the peer was first
  heard, once they are ``parameters.timeout_s`` old or echoed);
- every ``parameters.report_s`` seconds publishes its metrics on ``<prefix>metrics`` in the Smart Zone metrics
  shape (``{"time", "metrics", "units"}``): the totals (``probes_sent``, ``echoes_sent``, ``echoes_received``,
  ``delivery_ratio``, ``rtt_ms_mean``, ``rtt_ms_p50``, ``rtt_ms_max``, ``peers``) and the same per peer as
  ``<peer>/<metric>``;
- writes every echo it gets to ``$SZX_RESULTS_DIR/rtt.csv`` and, when it stops, ``summary.json``;
- stops cleanly on SIGTERM (the agent's deadline) or at ``SZX_DEADLINE``: a last report, then exit 0.

Parameters (``SZX_PARAMETERS``, a JSON file): ``rate`` (Hz, default 2), ``report_s`` (default 10), ``qos``
(0 or 1, default 1), ``payload_bytes`` (padding of each probe, default 16), ``timeout_s`` (a probe unanswered
this long counts as lost, default 5).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import statistics
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

DEFAULTS: dict[str, float] = {"rate": 2.0, "report_s": 10.0, "qos": 1, "payload_bytes": 16, "timeout_s": 5.0}


def _env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None:
        sys.exit(f"{name} is not set: this script runs under the gateway agent (see the SZX_* environment)")
    return value


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Peer:
    """What this instance knows of one other gateway: when it was first heard and its echoes of our probes."""

    def __init__(self, first_seq: int) -> None:
        self.first_seq = first_seq  # our first probe after we heard it: it was subscribed by then
        self.echoed: dict[int, float] = {}  # seq -> rtt_ms
        self.window: list[float] = []  # rtts since the last report


class Probe:
    def __init__(self, params: dict[str, Any]) -> None:
        self.exp = _env("SZX_EXPERIMENT_ID")
        self.me = _env("SZX_GATEWAY_ID")
        self.prefix = _env("SZX_MQTT_PREFIX")
        if not self.prefix.endswith("/"):
            self.prefix += "/"
        self.rate = float(params["rate"])
        self.report_s = float(params["report_s"])
        self.qos = int(params["qos"])
        self.padding = "x" * int(params["payload_bytes"])
        self.timeout_s = float(params["timeout_s"])
        if self.rate <= 0 or self.report_s <= 0 or self.qos not in (0, 1):
            sys.exit(f"bad parameters: rate and report_s must be > 0, qos 0 or 1: {params}")
        self.results = Path(_env("SZX_RESULTS_DIR", "results"))
        self.results.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.subscribed = threading.Event()
        self.seq = 0
        self.sent_at: dict[int, float] = {}  # seq -> monotonic send time
        self.peers: dict[str, Peer] = {}
        self.echoes_sent = 0
        self.csv_file = (self.results / "rtt.csv").open("w", newline="")
        self.csv = csv.writer(self.csv_file)
        self.csv.writerow(["received", "peer", "seq", "rtt_ms"])
        self.client = self._client()

    # -- MQTT ----------------------------------------------------------------------------------------
    def _client(self) -> mqtt.Client:
        client_id = f"exp-{self.exp}-{self.me}"
        try:  # paho-mqtt 2.x; 1.x has no CallbackAPIVersion (the callbacks below accept both)
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        except AttributeError:
            client = mqtt.Client(client_id=client_id)
        user = os.environ.get("SZX_MQTT_USERNAME", "")
        if user:
            client.username_pw_set(user, os.environ.get("SZX_MQTT_PASSWORD", ""))
        ca = os.environ.get("SZX_MQTT_TLS_CA", "")
        if ca:
            client.tls_set(ca_certs=ca)
        client.on_connect = self._on_connect
        client.on_subscribe = lambda *args: self.subscribed.set()
        client.on_message = self._on_message
        return client

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, rc: Any, *rest: object) -> None:
        if int(getattr(rc, "value", rc)) != 0:
            print(f"MQTT connection refused: {rc}", file=sys.stderr)
            return
        base = f"gw/+/experiments/{self.exp}/"
        client.subscribe([(base + "probe/#", self.qos), (base + f"echo/{self.me}/+", self.qos)])

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        parts = msg.topic.split("/")  # gw/<gw>/experiments/<id>/probe/<seq> | .../echo/<origin>/<seq>
        try:
            sender, kind, seq = parts[1], parts[4], int(parts[-1])
        except (IndexError, ValueError):
            return
        if sender == self.me:
            return  # our own probes come back through the wildcard
        with self.lock:
            if sender not in self.peers:
                self.peers[sender] = Peer(self.seq + 1)
            if kind == "probe":
                self.echoes_sent += 1
                echo = True
            elif kind == "echo" and seq in self.sent_at:
                peer = self.peers[sender]
                if seq in peer.echoed:
                    return  # a QoS 1 duplicate
                rtt = (now - self.sent_at[seq]) * 1000
                peer.echoed[seq] = rtt
                peer.window.append(rtt)
                self.csv.writerow([_now_iso(), sender, seq, f"{rtt:.3f}"])
                echo = False
            else:
                return
        if echo:
            client.publish(f"{self.prefix}echo/{sender}/{seq}", msg.payload, qos=self.qos)

    # -- measuring -----------------------------------------------------------------------------------
    def _peer_metrics(self, name: str, peer: Peer, now: float, window: list[float]) -> dict[str, float]:
        due = [
            s
            for s, t in self.sent_at.items()
            if s >= peer.first_seq and (s in peer.echoed or now - t >= self.timeout_s)
        ]
        out: dict[str, float] = {"echoes_received": len(peer.echoed)}
        if due:
            out["delivery_ratio"] = sum(1 for s in due if s in peer.echoed) / len(due)
        if window:
            out["rtt_ms_mean"] = statistics.fmean(window)
            out["rtt_ms_p50"] = statistics.median(window)
            out["rtt_ms_max"] = max(window)
        return out

    def report(self) -> dict[str, float]:
        now = time.monotonic()
        with self.lock:
            metrics: dict[str, float] = {
                "probes_sent": self.seq,
                "echoes_sent": self.echoes_sent,
                "peers": len(self.peers),
            }
            ratios, window, received = [], [], 0
            for name, peer in sorted(self.peers.items()):
                mine, peer.window = peer.window, []
                per = self._peer_metrics(name, peer, now, mine)
                metrics.update({f"{name}/{k}": v for k, v in per.items()})
                received += len(peer.echoed)
                window += mine
                if "delivery_ratio" in per:
                    ratios.append(per["delivery_ratio"])
            metrics["echoes_received"] = received
            if ratios:
                metrics["delivery_ratio"] = min(ratios)  # the worst link
            if window:
                metrics["rtt_ms_mean"] = statistics.fmean(window)
                metrics["rtt_ms_p50"] = statistics.median(window)
                metrics["rtt_ms_max"] = max(window)
            self.csv_file.flush()
        units = {k: "ms" for k in metrics if k.rsplit("/", 1)[-1].startswith("rtt_ms")}
        units.update({k: "/" for k in metrics if k.endswith("delivery_ratio")})
        doc = {"time": _now_iso(), "metrics": metrics, "units": units}
        self.client.publish(self.prefix + "metrics", json.dumps(doc), qos=1)
        return metrics

    # -- running -------------------------------------------------------------------------------------
    def run(self, deadline: float | None) -> int:
        host, port = _env("SZX_MQTT_HOST", "127.0.0.1"), int(_env("SZX_MQTT_PORT", "1883"))
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        if not self.subscribed.wait(30):
            print("not subscribed within 30 s", file=sys.stderr)
            self.client.loop_stop()
            return 1
        interval = 1.0 / self.rate
        next_probe = next_report = time.monotonic()
        next_report += self.report_s
        while not self.stop.is_set():
            now = time.monotonic()
            if deadline is not None and time.time() >= deadline:
                break
            if now >= next_probe:
                with self.lock:
                    self.seq += 1
                    seq = self.seq
                    self.sent_at[seq] = time.monotonic()
                body = json.dumps({"seq": seq, "from": self.me, "pad": self.padding})
                self.client.publish(f"{self.prefix}probe/{seq}", body, qos=self.qos)
                next_probe += interval
            if now >= next_report:
                self.report()
                next_report += self.report_s
            self.stop.wait(max(0.0, min(next_probe, next_report) - time.monotonic()))
        final = self.report()
        (self.results / "summary.json").write_text(json.dumps({"gateway": self.me, "metrics": final}, indent=2))
        self.csv_file.close()
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
    probe = Probe(_parameters())
    signal.signal(signal.SIGTERM, lambda signum, frame: probe.stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: probe.stop.set())
    return probe.run(_deadline())


if __name__ == "__main__":
    sys.exit(main())
