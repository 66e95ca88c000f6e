"""Benchmarks, one command each, figures measured side by side in one run (medians of --repeat runs).

    python bench/run.py ingest [--n 200000] [--senml-n 1000000] [--repeat 3]
    python bench/run.py lorawan [--uplinks 40000] [--generic-n 100000] [--repeat 3]
    python bench/run.py charter [--scale 1] [--repeat 3]
    python bench/run.py pipeline [--rounds 7] [--processes 3] [--before /path/to/older/checkout]

ingest: N readings published as the simulator does (QoS 1) in two shapes, one reading per message
(generic JSON) and SenML packs of 10, into one worker process; sustained readings/s from the first
publish until all are counted in InfluxDB. In the same run, the two ceilings the worker sits between:
(a) MQTT: a paho subscriber on the same broker, same publisher and QoS, that only counts and acks;
(b) database: the same readings as pre-built line protocol posted straight to InfluxDB in batches of
10,000. Services are real (mosquitto with the shipped configuration, influxd) on loopback ports.
The last line is machine-readable:
``ingest: per_message_rps=<n> mqtt_ceiling_rps=<n> senml_rps=<n> db_ceiling_rps=<n> lost=<n> worker_rss_mb=<n>``.

lorawan: ChirpStack v4 ``up`` events of 500 LoRaWAN weather nodes sending Cayenne LPP (temperature,
humidity, pressure), heard by one to three gateways, decoded by our codec from ``data``: uplinks/s end
to end into one worker, once with the events in JSON and once in protobuf, and in the same run the
spine's generic-JSON figure (one reading per message) as the reference. Completion and loss as for
ingest; every uplink also writes one radio point per receiving gateway. Last line:
``lorawan: json_ups=<n> protobuf_ups=<n> generic_rps=<n> lost=<n>``.

charter: one simulated day of the whole zone (every sensor every minute, its passers-by's sightings)
is written through the ingest pipeline into a real influxd by a separate process; then the charter job
runs over that day (--repeat times): readings/s of applying the charter (all datasets, excluding the
InfluxDB read), the read time itself, and the job process's peak RSS. ``--scale n`` runs n copies of the
zone's sensors side by side (a bigger district). Last line:
``charter: readings_per_s=<n> read_s=<n> rss_mb=<n>``.

pipeline: µs of the pipeline alone (process + render) per message kind, optionally side by side with an
older checkout; see ``bench/pipeline_bench.py``.

api: see ``bench/api_bench.py``; dashboards: see ``bench/dashboards_bench.py``; gateway (the gateway agent's
replay after an outage): see ``bench/gateway_bench.py``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psutil
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.ceilings import mqtt_ceiling, publisher_proc  # noqa: E402
from bench.workloads import (  # noqa: E402
    bench_registry,
    lorawan_messages,
    lorawan_registry,
    make_messages,
)
from cli import services  # noqa: E402
from gateways.simulator import SimulatedZone  # noqa: E402
from smartzone.registry import Registry  # noqa: E402
from smartzone.settings import InfluxSettings  # noqa: E402
from storage.influx import Influx  # noqa: E402


def count_points(influx: Influx, db: str, measurements: str = "/.*/") -> int:
    total = 0
    try:
        for res in influx.query(f"SELECT COUNT(*) FROM {measurements}", db):  # noqa: S608 - constants
            for series in res.get("series", []):
                total += sum(v for v in series["values"][0][1:] if v)
    except Exception:
        return 0
    return total


# -- measurements ---------------------------------------------------------------------------------------
def db_ceiling(influx: Influx, db: str, lines: list[str]) -> float:
    influx.ensure_database(db, "30d")
    client = httpx.Client(base_url=influx.settings.url, timeout=60)
    batches = ["\n".join(lines[i : i + 10_000]).encode() for i in range(0, len(lines), 10_000)]
    t0 = time.perf_counter()
    for body in batches:
        r = client.post("/write", params={"db": db, "precision": "ns"}, content=body)
        r.raise_for_status()
    return len(lines) / (time.perf_counter() - t0)


def worker_run(
    port: int,
    influx_url: str,
    db: str,
    registry: Path,
    data: Path,
    messages,
    n_readings: int,
    tag: str,
    influxd_pid: int,
) -> tuple[float, int, float, float, float]:
    """(readings/s, lost, peak RSS MB, worker CPU µs per message, influxd CPU µs per message)."""
    env = {
        **os.environ,
        "SMARTZONE_CONFIG": "/nonexistent.toml",
        "SMARTZONE_DATA_DIR": str(data / tag),
        "SMARTZONE_REGISTRY": str(registry),
        "SMARTZONE_MQTT__PORT": str(port),
        "SMARTZONE_MQTT__CLIENT_ID": f"bench-worker-{tag}",
        "SMARTZONE_MQTT__SHARE_GROUP": f"w{tag}",
        "SMARTZONE_INFLUX__URL": influx_url,
        "SMARTZONE_INFLUX__RAW_DATABASE": db,
        "SMARTZONE_INFLUX__OPS_DATABASE": f"{db}_ops",
        "SMARTZONE_LOG_LEVEL": "INFO",
        "SMARTZONE_INGEST__METRICS_INTERVAL": "0.1",
    }
    log_path = data / f"worker-{tag}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "ingest"], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
        )
    influx = Influx(InfluxSettings(url=influx_url))
    deadline = time.monotonic() + 30
    # publish only once the broker acknowledged the subscriptions: earlier messages match no
    # subscriber and are dropped by the broker
    while time.monotonic() < deadline and "MQTT subscribed" not in log_path.read_text(errors="replace"):
        time.sleep(0.05)
    ps = psutil.Process(proc.pid)
    pi = psutil.Process(influxd_pid)
    cpu0, icpu0 = sum(ps.cpu_times()[:2]), sum(pi.cpu_times()[:2])
    ctx = mp.get_context("fork")
    go, q_pub = ctx.Event(), ctx.Queue()
    pub = ctx.Process(target=publisher_proc, args=(port, messages, go, q_pub))
    pub.start()
    time.sleep(1.0)
    peak = 0.0
    go.set()
    # Completion: the worker's own "acked" counter (messages acknowledged after their durable write),
    # reported every 0.1 s to the tiny ops database. Polling COUNT(*) over the raw database instead
    # would scan it 20 times a second and steal influxd's CPU from the run being measured.
    acked = 0
    last_change, t_done = time.monotonic(), None
    while time.monotonic() - last_change < 20:
        peak = max(peak, ps.memory_info().rss / 2**20)
        now_acked = _acked(influx, f"{db}_ops")
        if now_acked != acked:
            acked, last_change = now_acked, time.monotonic()
        if acked >= len(messages):
            t_done = time.time()
            break
        time.sleep(0.05)
    cpu, icpu = sum(ps.cpu_times()[:2]) - cpu0, sum(pi.cpu_times()[:2]) - icpu0
    t0, _, _, _ = q_pub.get(timeout=600)
    pub.join()
    proc.terminate()
    proc.wait(60)
    # once, at the end: what InfluxDB really holds (the network's own data, device health and LoRaWAN radio
    # metadata, goes to the ops database)
    stored = count_points(influx, db) + count_points(influx, f"{db}_ops", "/^(gateway_health|radio)$/")
    influx.close()
    per_msg = 1e6 / len(messages)
    if t_done is None:
        return 0.0, n_readings - stored, peak, cpu * per_msg, icpu * per_msg
    return n_readings / (t_done - t0), n_readings - stored, peak, cpu * per_msg, icpu * per_msg


def _acked(influx: Influx, ops_db: str) -> int:
    try:
        rows = influx.rows('SELECT last("acked") AS acked FROM "ingest"', ops_db)
    except Exception:
        return 0
    return rows[0]["acked"] if rows else 0


def ingest(args: argparse.Namespace) -> str:
    tmp = Path(tempfile.mkdtemp(prefix="smartzone-bench-"))
    broker = services.mosquitto(tmp / "mosquitto").start()
    influxd = services.influxd(tmp / "influxd").start()
    registry = bench_registry(tmp)
    try:
        single = make_messages(registry, args.n, "single", seed=1)
        packs = make_messages(registry, args.senml_n, "senml", seed=2)
        lines = _lines(registry, single)
        print(
            f"ingest bench: {args.n} readings as {len(single)} messages; {args.senml_n} readings as "
            f"{len(packs)} SenML packs; {args.repeat} runs each",
            flush=True,
        )
        influx = Influx(InfluxSettings(url=influxd.url))
        runs: dict[str, list[float]] = {
            k: []
            for k in (
                "per_message",
                "mqtt",
                "senml",
                "db",
                "rss",
                "cpu_counter",
                "cpu_worker",
                "cpu_influxd",
                "cpu_worker_pack",
            )
        }
        lost = 0
        pid = influxd.proc.pid
        for r in range(args.repeat):
            rate, cpu_counter = mqtt_ceiling(broker.port, single)
            runs["mqtt"].append(rate)
            runs["cpu_counter"].append(cpu_counter)
            runs["db"].append(db_ceiling(influx, f"dbceiling_{r}", lines))
            rps, lost_1, rss_1, cpu_w, cpu_i = worker_run(
                broker.port, influxd.url, f"single_{r}", registry, tmp, single, args.n, f"s{r}", pid
            )
            rps_p, lost_p, rss_p, cpu_wp, _ = worker_run(
                broker.port, influxd.url, f"senml_{r}", registry, tmp, packs, args.senml_n, f"p{r}", pid
            )
            runs["per_message"].append(rps)
            runs["senml"].append(rps_p)
            runs["rss"].append(max(rss_1, rss_p))
            runs["cpu_worker"].append(cpu_w)
            runs["cpu_influxd"].append(cpu_i)
            runs["cpu_worker_pack"].append(cpu_wp)
            lost += lost_1 + lost_p
            print(
                f"run {r + 1}: per_message={rps:,.0f} r/s  mqtt_ceiling={runs['mqtt'][-1]:,.0f} msg/s  "
                f"senml={rps_p:,.0f} r/s  db_ceiling={runs['db'][-1]:,.0f} points/s  "
                f"worker_rss={max(rss_1, rss_p):.0f} MB  lost={lost_1 + lost_p}  | CPU per message: "
                f"counter {cpu_counter:.1f} µs, worker {cpu_w:.1f} µs (+influxd {cpu_i:.1f} µs), "
                f"worker per SenML pack {cpu_wp:.1f} µs",
                flush=True,
            )
        med = {k: statistics.median(v) for k, v in runs.items()}
        print(
            f"medians: per_message={med['per_message']:,.0f} readings/s, mqtt_ceiling={med['mqtt']:,.0f} "
            f"messages/s, senml={med['senml']:,.0f} readings/s, db_ceiling={med['db']:,.0f} points/s"
        )
        print(
            f"ratios: per_message/mqtt_ceiling={med['per_message'] / med['mqtt']:.2f} (target >= 0.80), "
            f"senml/db_ceiling={med['senml'] / med['db']:.2f}, senml target 100,000 r/s: "
            f"{'met' if med['senml'] >= 100_000 else 'missed'}; worker peak RSS {max(runs['rss']):.0f} MB "
            f"(target < 250)"
        )
        print(
            f"CPU per message (medians): count-only subscriber {med['cpu_counter']:.1f} µs, worker "
            f"{med['cpu_worker']:.1f} µs ({med['cpu_worker'] / med['cpu_counter']:.2f}x), influxd "
            f"{med['cpu_influxd']:.1f} µs; worker per SenML pack of 10: {med['cpu_worker_pack']:.1f} µs"
        )
        return (
            f"ingest: per_message_rps={med['per_message']:.0f} mqtt_ceiling_rps={med['mqtt']:.0f} "
            f"senml_rps={med['senml']:.0f} db_ceiling_rps={med['db']:.0f} lost={lost} "
            f"worker_rss_mb={max(runs['rss']):.0f}"
        )
    finally:
        broker.stop()
        influxd.stop()


RADIO_FIELDS = 13  # rssi snr channel frequency dr f_cnt f_port adr confirmed n_gateways bandwidth sf code_rate


def lorawan_bench(args: argparse.Namespace) -> str:
    tmp = Path(tempfile.mkdtemp(prefix="smartzone-bench-"))
    broker = services.mosquitto(tmp / "mosquitto").start()
    influxd = services.influxd(tmp / "influxd").start()
    try:
        lora_reg = lorawan_registry(tmp)
        generic_reg = bench_registry(tmp)
        events = {enc: lorawan_messages(lora_reg, args.uplinks, enc) for enc in ("json", "protobuf")}
        generic = make_messages(generic_reg, args.generic_n, "single", seed=1)
        for enc, (msgs, readings, receptions) in events.items():
            size = statistics.mean(len(p) for _, p, _ in msgs)
            print(
                f"lorawan bench: {len(msgs)} {enc} up events ({size:.0f} bytes each on average), {readings} "
                f"readings, {receptions} gateway receptions",
                flush=True,
            )
        print(
            f"reference: {args.generic_n} generic-JSON readings, one per message; {args.repeat} runs each", flush=True
        )
        runs: dict[str, list[float]] = {"json": [], "protobuf": [], "generic": [], "rss": []}
        lost = 0
        pid = influxd.proc.pid
        for r in range(args.repeat):
            line = f"run {r + 1}:"
            for enc, (msgs, readings, receptions) in events.items():
                values = readings + receptions * RADIO_FIELDS
                rate, lost_1, rss, cpu_w, _ = worker_run(
                    broker.port, influxd.url, f"lora_{enc}_{r}", lora_reg, tmp, msgs, values, f"l{enc[0]}{r}", pid
                )
                ups = rate * len(msgs) / values
                runs[enc].append(ups)
                runs["rss"].append(rss)
                lost += lost_1
                line += f"  {enc}={ups:,.0f} uplinks/s (worker CPU {cpu_w:.0f} µs/uplink, lost {lost_1})"
            rps, lost_g, rss_g, cpu_g, _ = worker_run(
                broker.port, influxd.url, f"generic_{r}", generic_reg, tmp, generic, args.generic_n, f"g{r}", pid
            )
            runs["generic"].append(rps)
            runs["rss"].append(rss_g)
            lost += lost_g
            print(
                f"{line}  generic={rps:,.0f} messages/s (worker CPU {cpu_g:.0f} µs/message, lost {lost_g})", flush=True
            )
        med = {k: statistics.median(v) for k, v in runs.items()}
        print(
            f"medians: json={med['json']:,.0f} uplinks/s, protobuf={med['protobuf']:,.0f} uplinks/s, "
            f"generic JSON={med['generic']:,.0f} messages/s; worker peak RSS {max(runs['rss']):.0f} MB"
        )
        print(
            f"ratios to generic JSON: json {med['json'] / med['generic']:.2f}, protobuf "
            f"{med['protobuf'] / med['generic']:.2f}; protobuf/json {med['protobuf'] / med['json']:.2f}"
        )
        return (
            f"lorawan: json_ups={med['json']:.0f} protobuf_ups={med['protobuf']:.0f} "
            f"generic_rps={med['generic']:.0f} lost={lost}"
        )
    finally:
        broker.stop()
        influxd.stop()


def _lines(registry_path: Path, messages) -> list[str]:
    """The same readings as the worker would write them, pre-built."""
    from smartzone.model import Point
    from smartzone.quantities import QUANTITIES
    from storage.lineprotocol import render

    reg = Registry.load(registry_path)
    infos = {s.id: reg.resolve(s.gateway, s.keys[0]) for s in reg.sensors.values()}
    out = []
    for _topic, _payload, truth in messages:
        for t in truth:
            info = infos[t.sensor_id]
            q = QUANTITIES[t.quantity]
            tags = {
                "sensor": info.id,
                "gateway": info.gateway_id,
                "technology": info.technology,
                "category": info.category,
                "cell": info.cell,
            }
            out.append(render(Point(q.category, tags, {q.field: t.value}, t.time_ns)))
    return out


def _load_day(settings_json: str, start_iso: str) -> None:
    from cli.backfill import backfill
    from datacharter.charter import Charter
    from ingest.pipeline import Pipeline
    from ingest.worker import ensure_databases
    from smartzone.settings import Settings

    settings = Settings.model_validate_json(settings_json)
    charter = Charter.load(settings.charter.path)
    registry = Registry.load(settings.registry)
    with Influx(settings.influx) as influx:
        ensure_databases(influx, settings, charter)
        pipe = Pipeline.from_settings(settings, registry, charter)
        backfill(SimulatedZone(registry, 42), pipe, influx, settings, datetime.fromisoformat(start_iso), 1440)


def scaled_registry(folder: Path, scale: int) -> Path:
    """The demo registry with every non-LoRa sensor copied ``scale`` times a few streets apart."""
    doc = yaml.safe_load((REPO / "gateways" / "registry" / "antwerp.yaml").read_text())
    if scale <= 1:
        path = folder / "zone.yaml"
        path.write_text(yaml.safe_dump(doc))
        return path
    copies = []
    for i in range(1, scale):
        for s in doc["sensors"]:
            if s.get("lorawan") or s.get("mobile"):
                continue
            c = dict(
                s, id=f"{s['id']}-x{i}", keys=[f"{k}-x{i}" if ":" not in k else _shift_mac(k, i) for k in s["keys"]]
            )
            c["position"] = {"lat": s["position"]["lat"] + 0.004 * i, "lon": s["position"]["lon"]}
            if s.get("format") == "senml":
                c["keys"] = [f"urn:dev:mac:0024befffe{i:02x}{k[-4:]}" for k in s["keys"]]
            copies.append(c)
    doc["sensors"] += copies
    path = folder / "zone.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _shift_mac(mac: str, i: int) -> str:
    parts = mac.split(":")
    parts[3] = f"{(int(parts[3], 16) + i) % 256:02X}"
    return ":".join(parts)


def _raw_values(settings, day: datetime) -> tuple[int, int]:
    """(values, points) of the simulated day in the measurements the charter reads."""
    from datacharter.charter import Charter

    charter = Charter.load(settings.charter.path)
    dbs = {"raw": settings.influx.raw_database, "pseudonymous": settings.influx.pseudonymous_database}
    wanted = {
        (ds.source.database, m)
        for ds in charter.datasets.values()
        for m in (ds.source.measurement, ds.source.positions)
        if m
    }
    a, b = int(day.timestamp()) * 10**9, int(day.timestamp() + 86_400) * 10**9 - 1
    values = points = 0
    with Influx(settings.influx) as influx:
        for db, m in sorted(wanted):
            rows = influx.rows(
                f'SELECT count(*) FROM "{m}" WHERE time >= $a AND time <= $b',  # noqa: S608 - measurement names of the simulated zone
                dbs[db],
                {"a": a, "b": b},
            )
            if rows:
                values += sum(v for k, v in rows[0].items() if k.startswith("count_"))
            df = influx.frame(f'SELECT * FROM "{m}" WHERE time >= $a AND time <= $b', dbs[db], {"a": a, "b": b})  # noqa: S608
            points += len(df)
    return values, points


def charter_bench(args: argparse.Namespace) -> str:
    from datacharter.job import CharterJob
    from smartzone.settings import Settings

    now = datetime.now(UTC)
    day = datetime(now.year, now.month, now.day, tzinfo=UTC) - timedelta(days=1)
    with tempfile.TemporaryDirectory(prefix="sz-bench-charter-") as tmp_s:
        tmp = Path(tmp_s)
        influxd = services.influxd(tmp / "influxd").start()
        try:
            registry_path = scaled_registry(tmp, args.scale)
            settings = Settings(data_dir=tmp / "data", registry=registry_path, influx={"url": influxd.url})
            t0 = time.perf_counter()
            loader = mp.get_context("spawn").Process(
                target=_load_day, args=(settings.model_dump_json(), day.isoformat())
            )
            loader.start()
            loader.join()
            if loader.exitcode != 0:
                raise SystemExit("loading the simulated day failed")
            print(
                f"loaded one simulated day of {len(Registry.load(registry_path).sensors)} sensors in "
                f"{time.perf_counter() - t0:.0f} s",
                flush=True,
            )
            values, points = _raw_values(settings, day)
            print(
                f"the day holds {values:,} raw readings (values) in {points:,} points across the measurements "
                "the charter reads",
                flush=True,
            )
            runs: dict[str, list[float]] = {"rps": [], "read": [], "apply": [], "readings": [], "rss": []}
            proc = psutil.Process()
            for r in range(args.repeat):
                # each run starts afresh: its own watermarks, audit and open database
                run_settings = settings.model_copy(
                    update={
                        "storage": settings.storage.model_copy(update={"sql_url": f"sqlite:///{tmp / f'run{r}.db'}"}),
                        "charter": settings.charter.model_copy(update={"open_database": f"open_{r}"}),
                    }
                )
                job = CharterJob(run_settings)
                peak = [proc.memory_info().rss]
                stop = threading.Event()

                def sample(peak=peak, stop=stop) -> None:
                    while not stop.wait(0.01):
                        peak[0] = max(peak[0], proc.memory_info().rss)

                sampler = threading.Thread(target=sample, daemon=True)
                sampler.start()
                reports = job.run_once(now=day + timedelta(days=1, minutes=5))
                stop.set()
                sampler.join()
                job.close()
                readings = values  # every raw value the charter reads, once (two datasets may read one measurement)
                apply_s = sum(x.apply_s for x in reports)
                read_s = sum(x.read_s for x in reports)
                runs["rps"].append(readings / apply_s)
                runs["read"].append(read_s)
                runs["apply"].append(apply_s)
                runs["readings"].append(readings)
                runs["rss"].append(peak[0] / 2**20)
                published = sum(x.published for x in reports)
                print(
                    f"run {r + 1}: {readings:,} readings, apply {apply_s:.3f} s = {readings / apply_s:,.0f} "
                    f"readings/s, read {read_s:.2f} s ({read_s / apply_s:.1f}x the apply time), "
                    f"{published:,} groups published, peak RSS {peak[0] / 2**20:.0f} MB",
                    flush=True,
                )
            med = {k: statistics.median(v) for k, v in runs.items()}
            print(
                f"charter (medians of {args.repeat}): {med['readings']:,.0f} readings in one day, "
                f"{med['rps']:,.0f} readings/s ({points / med['apply']:,.0f} points/s) applying the charter "
                f"({med['rps'] / 500_000:.2f}x the 500,000 "
                f"target, {'met' if med['rps'] >= 500_000 else 'missed'}); InfluxDB read {med['read']:.2f} s "
                f"= {med['readings'] / med['read']:,.0f} readings/s; peak RSS {max(runs['rss']):.0f} MB"
            )
            return f"charter: readings_per_s={med['rps']:.0f} read_s={med['read']:.2f} rss_mb={max(runs['rss']):.0f}"
        finally:
            influxd.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="bench", required=True)
    i = sub.add_parser("ingest")
    i.add_argument("--n", type=int, default=200_000, help="readings, one per message")
    i.add_argument("--senml-n", type=int, default=1_000_000, help="readings in SenML packs of 10")
    i.add_argument("--repeat", type=int, default=3)
    lw = sub.add_parser("lorawan")
    lw.add_argument("--uplinks", type=int, default=40_000, help="ChirpStack up events per encoding")
    lw.add_argument("--generic-n", type=int, default=100_000, help="generic-JSON readings, one per message")
    lw.add_argument("--repeat", type=int, default=3)
    ch = sub.add_parser("charter")
    ch.add_argument("--scale", type=int, default=1, help="copies of the zone's fixed sensors")
    ch.add_argument("--repeat", type=int, default=3)
    ap = sub.add_parser("api", help="the open-data API: latency, requests/s, CSV export (see bench/api_bench.py)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--step", type=float, default=60.0, help="simulated seconds between rounds (60: every minute)")
    ap.add_argument("--dataset", default="air_quality", help="dataset of the 24 h query (at 1 h resolution)")
    ap.add_argument("--requests-1", type=int, default=300, help="measured requests per scenario at 1 client")
    ap.add_argument("--requests-32", type=int, default=2000, help="measured requests per scenario at 32 clients")
    db = sub.add_parser(
        "dashboards", help="what opening each Grafana dashboard costs InfluxDB (see bench/dashboards_bench.py)"
    )
    db.add_argument("--repeat", type=int, default=5)
    db.add_argument("--step", type=float, default=60.0, help="simulated seconds between rounds of the month")
    from bench.pipeline_bench import add_arguments

    add_arguments(
        sub.add_parser(
            "pipeline", help="the pipeline alone: µs of process + render per message kind (see bench/pipeline_bench.py)"
        )
    )
    gw = sub.add_parser("gateway", help="the gateway agent replaying an outage's spool (see bench/gateway_bench.py)")
    gw.add_argument("--n", type=int, default=720_000, help="readings in the spool (one hour at 200 readings/s)")
    gw.add_argument("--live-n", type=int, default=100_000, help="readings of the live MQTT publish reference")
    args = p.parse_args()
    if args.bench == "gateway":
        from bench.gateway_bench import gateway_bench

        print(gateway_bench(args))
        return
    if args.bench == "pipeline":
        from bench.pipeline_bench import pipeline_bench

        print(pipeline_bench(args))
        return
    if args.bench == "dashboards":
        from bench.dashboards_bench import dashboards_bench

        print(dashboards_bench(args))
        return
    if args.bench == "api":
        from bench.api_bench import api_bench

        print(api_bench(args))
        return
    print({"ingest": ingest, "lorawan": lorawan_bench, "charter": charter_bench}[args.bench](args))


if __name__ == "__main__":
    main()
