"""``python bench/run.py dashboards``: what opening each Grafana dashboard costs InfluxDB.

A month of the simulated zone goes into a real influxd as the API benchmark loads it (30 days through
the ingest pipeline, then the charter job: ``bench/api_bench.load_month``), plus six hours of the ingest
workers' self-metrics (two workers reporting every 5 s in the worker's line format: ``ingest``,
``deadletters``, and ``sensors`` for every sensor series of the raw database). Then each committed
dashboard is opened as Grafana opens it (``dashboards.queries``: variables at their defaults, the
default time range ending now, ``$timeFilter`` and ``$__interval`` from the panel widths): all its
queries are sent to influxd's ``/query`` (POST, as the provisioned datasources do) with six at a time,
the browser's limit of connections per host that Grafana's panels share. Measured per dashboard, medians
of ``--repeat`` opens: the wall time of the whole dashboard, its slowest query (and panel), influxd's CPU
time, and the queries that returned nothing (there should be none). The dashboards are opened at the end of
the loaded month (today 00:10 UTC, after the charter job's run).
Public dashboards are opened again over 30 days (zoomed out) in the same run, for the ratio. The
operations dashboard refreshes every 30 s: its CPU per refresh is also given as a share of one core.

Last line: ``dashboards: overview_ms=<n> slowest_dashboard_ms=<n> zoomed_out_ratio=<n>
ops_refresh_core_pct=<n>``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CONNECTIONS = 6  # a browser's HTTP/1.1 connections per host: Grafana's panels queue behind them
OPS_HOURS = 6
OPS_EVERY_S = 5
WORKERS = ("smartzone-ingest-a", "smartzone-ingest-b")
REASONS = ("malformed_payload", "unknown_device", "out_of_range")


def ops_history(influx, settings, now: datetime) -> int:
    """Six hours of two workers' self-metrics, as ``Worker.report_metrics`` writes them. Returns points."""
    from smartzone.quantities import CATEGORIES

    raw, ops = settings.influx.raw_database, settings.influx.ops_database
    series = []
    for row in influx.rows(f"SHOW SERIES FROM /^({'|'.join(CATEGORIES)})$/", raw):
        series.append(row["key"].split(",", 1)[1])
    reports = OPS_HOURS * 3600 // OPS_EVERY_S
    t0 = int((now - timedelta(hours=OPS_HOURS)).timestamp()) * 10**9
    lines, points = [], 0
    for w, worker in enumerate(WORKERS):
        received = readings = dead = 0
        for i in range(reports):
            ns = t0 + i * OPS_EVERY_S * 10**9 + w * 10**8
            got = 60 + (i * 7 + w) % 13
            received, readings = received + got, readings + got * 2
            new = 1 if i % 97 == w else 0
            dead += new
            lines.append(
                f"ingest,worker={worker} received={received}i,decoded={received - dead}i,"
                f"readings={readings}i,dead_lettered={dead}i,lines_written={readings}i,lines_rejected=0i,"
                f"batches={i}i,batches_spooled=0i,batches_unspooled=0i,spool_files=0i,retries=0i,"
                f"acked={received}i,queue_depth={got % 5}i,backlog_bytes={got * 40}i,"
                f"write_latency_ms_p50={3 + got % 4}.1,write_latency_ms_max={9 + got % 9}.3 {ns}"
            )
            lines += [
                f"deadletters,worker={worker},reason={r} count={dead}i,new={new if k == 0 else 0}i {ns}"
                for k, r in enumerate(REASONS)
            ]
            lines += [
                f"sensors,{tags} readings={1 + (i + j) % 3}i {ns}"
                for j, tags in enumerate(series)
                if (i + j) % len(WORKERS) == w
            ]
            if len(lines) >= 20_000:
                influx.write(ops, "\n".join(lines).encode())
                points += len(lines)
                lines = []
    influx.write(ops, "\n".join(lines).encode())
    return points + len(lines)


class Opener:
    """Sends a dashboard's queries to influxd, six at a time, and times them."""

    def __init__(self, url: str, databases: dict[str, str]) -> None:
        self.url, self.databases = url, databases
        self.pool = ThreadPoolExecutor(CONNECTIONS)
        self.client = httpx.Client(base_url=url, timeout=120, limits=httpx.Limits(max_connections=CONNECTIONS))

    def run(self, datasource: str, query: str) -> tuple[float, int]:
        """(seconds, series returned) of one query."""
        t = time.perf_counter()
        r = self.client.post("/query", data={"db": self.databases[datasource], "q": query, "epoch": "ms"})
        r.raise_for_status()
        series = sum(len(res.get("series", [])) for res in r.json()["results"])
        return time.perf_counter() - t, series

    def variable(self, datasource: str, query: str) -> list[str]:
        r = self.client.post("/query", data={"db": self.databases[datasource], "q": query})
        r.raise_for_status()
        return [
            v[0] if len(v) == 1 else v[1]
            for res in r.json()["results"]
            for s in res.get("series", [])
            for v in s["values"]
        ]

    def open(self, queries) -> tuple[float, float, str, list[str]]:
        """(wall seconds, slowest query seconds, its panel, the panels of queries that returned nothing)."""
        t = time.perf_counter()
        results = list(self.pool.map(lambda q: self.run(q.datasource, q.query), queries))
        wall = time.perf_counter() - t
        slowest = max(range(len(results)), key=lambda i: results[i][0])
        return (
            wall,
            results[slowest][0],
            queries[slowest].panel["title"],
            [q.panel["title"] for q, (_, n) in zip(queries, results, strict=True) if n == 0],
        )

    def close(self) -> None:
        self.pool.shutdown()
        self.client.close()


def dashboards_bench(args: argparse.Namespace) -> str:
    from bench.api_bench import DAYS, load_month
    from cli import services
    from dashboards.build import JSON_DIR
    from dashboards.panels import OPEN, OPS
    from dashboards.queries import dashboard_queries
    from smartzone.settings import Settings
    from storage.influx import Influx

    boards = {p.stem: json.loads(p.read_text()) for p in sorted(JSON_DIR.glob("*.json"))}
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    with tempfile.TemporaryDirectory(prefix="sz-bench-dash-") as tmp_s:
        tmp = Path(tmp_s)
        influxd = services.influxd(tmp / "influxd").start()
        try:
            settings = Settings(
                data_dir=tmp / "data",
                registry=REPO / "gateways" / "registry" / "antwerp.yaml",
                influx={"url": influxd.url},
                charter={"path": REPO / "datacharter" / "charter.yaml"},
                storage={"sql_url": f"sqlite:///{tmp / 'charter.db'}"},
            )
            load_month(settings, today - timedelta(days=DAYS), args.step)
            # the dashboards are opened at the end of the loaded month, after the charter job's run (00:05)
            now = today + timedelta(minutes=10)
            with Influx(settings.influx) as influx:
                n = ops_history(influx, settings, now)
            print(
                f"ops history: {n:,} self-metric points ({OPS_HOURS} h of {len(WORKERS)} workers every "
                f"{OPS_EVERY_S} s)",
                flush=True,
            )
            opener = Opener(influxd.url, {OPEN: settings.charter.open_database, OPS: settings.influx.ops_database})
            cpu = psutil.Process(influxd.proc.pid)
            figures: dict[str, dict[str, float]] = {}
            print(f"each dashboard opened {args.repeat} times, {CONNECTIONS} queries at a time (medians):", flush=True)
            print(
                f"  {'dashboard':<24} {'range':>6} {'queries':>7} {'open ms':>8} {'slowest ms':>10} "
                f"{'influxd cpu ms':>14} {'empty':>5}  slowest panel",
                flush=True,
            )
            for uid, board in boards.items():
                ranges = [board["time"]["from"]]
                if "public" in board["tags"] and board["time"]["from"] != "now-30d":
                    ranges.append("now-30d")
                for rng in ranges:
                    b = {**board, "time": {**board["time"], "from": rng}}
                    queries = dashboard_queries(b, now, opener.variable)
                    opener.open(queries)  # warm-up: influxd's caches, the connections
                    walls, slowest, cpus, panels = [], [], [], []
                    for _ in range(args.repeat):
                        c0 = sum(cpu.cpu_times()[:2])
                        wall, slow, panel, empty = opener.open(queries)
                        cpus.append(sum(cpu.cpu_times()[:2]) - c0)
                        walls.append(wall)
                        slowest.append(slow)
                        panels.append(panel)
                    f = {
                        "open_ms": statistics.median(walls) * 1000,
                        "slowest_ms": statistics.median(slowest) * 1000,
                        "cpu_ms": statistics.median(cpus) * 1000,
                        "queries": len(queries),
                        "empty": len(empty),
                    }
                    figures[f"{uid}@{rng}"] = f
                    print(
                        f"  {uid.removeprefix('smartzone-'):<24} {rng.removeprefix('now-'):>6} {len(queries):>7} "
                        f"{f['open_ms']:>8.1f} {f['slowest_ms']:>10.1f} {f['cpu_ms']:>14.0f} {len(empty):>5}  "
                        f"{statistics.mode(panels)}" + (f"; empty: {', '.join(empty)}" if empty else ""),
                        flush=True,
                    )
            opener.close()
        finally:
            influxd.stop()

    def at_default(uid: str) -> dict[str, float]:
        return figures[f"{uid}@{boards[uid]['time']['from']}"]

    slowest_uid = max(boards, key=lambda u: at_default(u)["open_ms"])
    ratios = [
        f["open_ms"] / at_default(key.split("@")[0])["open_ms"]
        for key, f in figures.items()
        if f is not at_default(key.split("@")[0])
    ]
    refresh_s = 30
    ops_pct = at_default("smartzone-operations")["cpu_ms"] / (refresh_s * 10)
    zoom = statistics.median(ratios)
    print(
        f"slowest dashboard at its default range: {slowest_uid} ({at_default(slowest_uid)['open_ms']:.1f} ms); "
        f"public dashboards zoomed out to 30 days take {zoom:.2f}x their default range (median; "
        f"{min(ratios):.2f}..{max(ratios):.2f}); the operations dashboard refreshed every {refresh_s} s keeps "
        f"{ops_pct:.2f} % of one core busy in influxd"
    )
    return (
        f"dashboards: overview_ms={at_default('smartzone-overview')['open_ms']:.1f} "
        f"slowest_dashboard_ms={at_default(slowest_uid)['open_ms']:.1f} zoomed_out_ratio={zoom:.2f} "
        f"ops_refresh_core_pct={ops_pct:.2f}"
    )
