"""``python bench/run.py api``: the open-data API under load, and its CSV export.

The open database holds 30 days of the simulated zone: the days are written through the ingest
pipeline (decoders, registry, pseudonymiser) into a real influxd by separate processes, and the
charter job publishes them. The API is served by ``smartzone api`` (uvicorn, one worker, settings from
the environment, rate limit raised far above the load). A load generator in a second process (asyncio,
one keep-alive HTTP/1.1 connection per client, latency from the request's first byte sent to the
response's last byte read) measures, at 1 and 32 concurrent clients, the catalogue (``/v1/datasets``)
and a 24 h, 1 h-resolution observation query (a different day per request, cycling over the 30).
Then the CSV export of a full month of the largest dataset, streamed: rows/s, and the API process's
RSS sampled every 20 ms (growth = peak during the export minus RSS just before it), for one week and
for one month; InfluxDB's own CSV rate for the same points is measured in the same run. Medians of
``--repeat`` runs of the measured phases (the data is loaded once). Last line:
``api: p50_ms=<n> p99_ms=<n> rps=<n> export_rows_per_s=<n> rss_growth_mb=<n>`` (the 24 h query at 32
clients; the month's export).
"""

from __future__ import annotations

import argparse
import asyncio
import json
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

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DAYS = 30
LOADERS = 2  # loader processes (this machine has 2 cores; influxd takes the rest)
LOAD_BUDGET_S = 360.0  # if 30 days at step 60 s would take longer, the remaining days use step 120 s
P99_TARGET_MS = 50.0
EXPORT_TARGET = 200_000


# -- loading 30 days -----------------------------------------------------------------------------------------
def _load_days(settings_json: str, days: list[tuple[int, str]], step, pseudo_cutoff_ns: int, q) -> None:
    """Backfill ``days`` (index, ISO start) through the ingest pipeline, as ``cli.backfill`` does, but
    writing the pseudonymous lines itself: sightings older than ``pseudo_cutoff_ns`` would be refused by the
    48 h pseudonymous retention policy, so they are dropped (counted) instead of breaking the write."""
    from datacharter.charter import Charter
    from gateways.simulator import SimulatedZone
    from ingest.pipeline import Pipeline
    from smartzone.registry import Registry
    from smartzone.settings import Settings
    from storage.influx import Influx

    settings = Settings.model_validate_json(settings_json)
    charter = Charter.load(settings.charter.path)
    registry = Registry.load(settings.registry)
    from smartzone.model import Store
    from storage.databases import databases

    names = databases(settings)
    raw_db, ops_db, pseudo_db = names[Store.RAW], names[Store.OPS], names[Store.PSEUDONYMOUS]
    with Influx(settings.influx) as influx:
        pipe = Pipeline.from_settings(settings, registry, charter)
        zone = SimulatedZone(registry, 42)
        for idx, start_iso in days:
            t0 = time.perf_counter()
            day_step = float(step.value)
            rounds = int(86_400 // day_step)
            start = datetime.fromisoformat(start_iso)
            stats = {"messages": 0, "raw": 0, "ops": 0, "pseudo": 0, "pseudo_dropped": 0, "dead_letters": 0}
            buffers: dict[str, list[str]] = {raw_db: [], ops_db: [], pseudo_db: []}

            def flush(db: str, buffers=buffers) -> None:
                if buffers[db]:
                    influx.write(db, "\n".join(buffers[db]).encode())
                    buffers[db].clear()

            for i in range(rounds):
                t = start + timedelta(seconds=i * day_step)
                received = t + timedelta(milliseconds=200)
                for e in zone.messages(t, 1, day_step, first_round=idx * 1440 + i):
                    msg = pipe.message(e.topic, e.payload, received)
                    res, letter = pipe.render(msg, pipe.process(msg))
                    stats["messages"] += 1
                    stats["dead_letters"] += letter is not None
                    every = res.get(Store.PSEUDONYMOUS, [])
                    pseudo = [ln for ln in every if int(ln.rsplit(" ", 1)[1]) >= pseudo_cutoff_ns]
                    stats["pseudo_dropped"] += len(every) - len(pseudo)
                    for db, lines, key in (
                        (raw_db, res.get(Store.RAW), "raw"),
                        (ops_db, res.get(Store.OPS), "ops"),
                        (pseudo_db, pseudo, "pseudo"),
                    ):
                        if lines:
                            stats[key] += len(lines)
                            buffers[db] += lines
                            if len(buffers[db]) >= 20_000:
                                flush(db)
            for db in buffers:
                flush(db)
            stats["reasons"] = dict(pipe.stats.reasons)
            pipe.stats.reasons.clear()
            q.put(("day", idx, day_step, time.perf_counter() - t0, stats))
    q.put(("done", os.getpid(), 0, 0, {}))


def _run_charter(settings_json: str, now_iso: str, q) -> None:
    from datacharter.job import CharterJob
    from smartzone.settings import Settings

    job = CharterJob(Settings.model_validate_json(settings_json))
    t0 = time.perf_counter()
    reports = job.run_once(now=datetime.fromisoformat(now_iso))
    elapsed = time.perf_counter() - t0
    job.close()
    q.put(
        {
            "s": elapsed,
            "windows": len(reports),
            "published": sum(r.published for r in reports),
            "read_s": sum(r.read_s for r in reports),
            "apply_s": sum(r.apply_s for r in reports),
            "rss_mb": psutil.Process().memory_info().rss / 2**20,
        }
    )


def load_month(settings, first_day: datetime, step_s: float) -> dict:
    """30 days through the pipeline (LOADERS spawned processes), then the charter job once."""
    from datacharter.charter import Charter
    from ingest.worker import ensure_databases
    from storage.influx import Influx

    charter = Charter.load(settings.charter.path)
    with Influx(settings.influx) as influx:
        ensure_databases(influx, settings, charter)
        # raw retention is 30 d: the first day's early hours are just older than that now; the load runs
        # under 35 d (the charter job sets 30 d back; the first day's shard ends inside 30 d, nothing is lost)
        influx.ensure_database(settings.influx.raw_database, f"{DAYS + 5}d")
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    step = ctx.Value("d", step_s)
    days = [(i, (first_day + timedelta(days=i)).isoformat()) for i in range(DAYS)]
    per = -(-DAYS // LOADERS)
    cutoff = int((datetime.now(UTC) - timedelta(hours=47)).timestamp()) * 10**9
    t0 = time.perf_counter()
    procs = [
        ctx.Process(
            target=_load_days, args=(settings.model_dump_json(), days[k * per : (k + 1) * per], step, cutoff, q)
        )
        for k in range(LOADERS)
    ]
    for p in procs:
        p.start()
    totals = {"messages": 0, "raw": 0, "ops": 0, "pseudo": 0, "pseudo_dropped": 0, "dead_letters": 0}
    reasons: dict[str, int] = {}
    steps: dict[int, float] = {}
    done = 0
    while done < LOADERS:
        try:
            kind, idx, day_step, _secs, stats = q.get(timeout=30)
        except Exception:
            if any(p.exitcode not in (None, 0) for p in procs):
                for p in procs:
                    p.kill()
                raise SystemExit("a loader process failed (see its traceback above)") from None
            continue
        if kind == "done":
            done += 1
            continue
        steps[idx] = day_step
        for k, v in stats.pop("reasons").items():
            reasons[k] = reasons.get(k, 0) + v
        for k, v in stats.items():
            totals[k] += v
        elapsed = time.perf_counter() - t0
        projected = elapsed / len(steps) * DAYS
        if step.value < 120 and len(steps) >= LOADERS and projected > LOAD_BUDGET_S:
            step.value = 120.0
            print(
                f"  projected {projected:.0f} s for {DAYS} days at step {day_step:.0f} s (over "
                f"{LOAD_BUDGET_S:.0f} s): the remaining days use step 120 s",
                flush=True,
            )
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise SystemExit("a loader process failed")
    load_s = time.perf_counter() - t0
    used = sorted(set(steps.values()))
    print(
        f"loaded {DAYS} days ({first_day.date()} .. {(first_day + timedelta(days=DAYS - 1)).date()}) through the "
        f"ingest pipeline in {load_s:.0f} s ({LOADERS} loader processes; step "
        f"{' / '.join(f'{s:.0f}' for s in used)} s: "
        f"{', '.join(f'{sum(1 for v in steps.values() if v == s)} days at {s:.0f} s' for s in used)}): "
        f"{totals['messages']:,} messages, {totals['raw']:,} raw lines, {totals['pseudo']:,} pseudonymous "
        f"sightings (the last ~47 h only: {totals['pseudo_dropped']:,} older sightings dropped, the pseudonymous "
        f"retention is 48 h), {totals['dead_letters']:,} dead-lettered messages (readings refused: "
        f"{', '.join(f'{k} {v:,}' for k, v in sorted(reasons.items())) or 'none'}; as live, a sighting whose day's "
        "pepper is already destroyed is refused, so pedestrian_flow has the last day only)",
        flush=True,
    )
    now = first_day + timedelta(days=DAYS, minutes=5)
    cq = ctx.Queue()
    job = ctx.Process(target=_run_charter, args=(settings.model_dump_json(), now.isoformat(), cq))
    job.start()
    rep = cq.get(timeout=1800)
    job.join()
    print(
        f"charter job (now = {now.isoformat()}): {rep['windows']} windows, {rep['published']:,} points published "
        f"in {rep['s']:.1f} s (InfluxDB read {rep['read_s']:.1f} s, applying {rep['apply_s']:.1f} s), job RSS "
        f"{rep['rss_mb']:.0f} MB",
        flush=True,
    )
    return {"load_s": load_s, "steps": used, "totals": totals}


def open_rows(settings) -> dict[str, tuple[int, int]]:
    """(all rows, rows at the charter's cell and bin) per dataset of the open database."""
    from datacharter.charter import Charter
    from storage.influx import Influx, quote_ident

    charter = Charter.load(settings.charter.path)
    out = {}
    with Influx(settings.influx) as influx:
        db = settings.charter.open_database
        for name, ds in charter.datasets.items():
            m = quote_ident(name)
            total = influx.rows(f'SELECT count("n_contributors") FROM {m}', db)  # noqa: S608 - checked name
            finest = influx.rows(
                f'SELECT count("n_contributors") FROM {m} WHERE "bin" = $b AND "resolution" = $r',  # noqa: S608
                db,
                {"b": ds.time.bin, "r": str(ds.space.resolution)},
            )
            out[name] = (int(total[0]["count"]) if total else 0, int(finest[0]["count"]) if finest else 0)
    return out


# -- the API process ---------------------------------------------------------------------------------------
def start_api(tmp: Path, influx_url: str, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "SMARTZONE_CONFIG": "/nonexistent.toml",
        "SMARTZONE_DATA_DIR": str(tmp / "api-data"),
        "SMARTZONE_INFLUX__URL": influx_url,
        "SMARTZONE_CHARTER__OPEN_DATABASE": "smartzone_open",
        "SMARTZONE_API__RATE_LIMIT": "1e9",
        "SMARTZONE_API__RATE_BURST": "1000000000",
        "SMARTZONE_API__WORKERS": "1",
        "SMARTZONE_LOG_LEVEL": "WARNING",
    }
    log = open(tmp / "api.log", "wb")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "api", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(
                f"smartzone api exited with {proc.returncode}:\n{(tmp / 'api.log').read_text(errors='replace')[-3000:]}"
            )
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.terminate()
    raise SystemExit("smartzone api did not become ready in 60 s")


# -- the load generator (a second process) --------------------------------------------------------------------
async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, keep-alive) of one HTTP/1.1 response."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(b":")
            headers[k.strip().lower()] = v.strip().lower()
    if b"content-length" in headers:
        body = await reader.readexactly(int(headers[b"content-length"]))
    elif headers.get(b"transfer-encoding") == b"chunked":
        parts = []
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b""):
                    pass
                break
            parts.append((await reader.readexactly(size + 2))[:-2])
        body = b"".join(parts)
    else:
        body = await reader.read()
        return status, body, False
    return status, body, headers.get(b"connection") != b"close"


async def _scenario(port: int, paths: list[str], clients: int, n: int, warmup: int, kind: str) -> dict:
    requests = [
        f"GET {p} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json\r\n"
        f"User-Agent: smartzone-bench\r\n\r\n".encode()
        for p in paths
    ]
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(clients)]
    fails: list[str] = []

    def ok(status: int, body: bytes) -> bool:
        if status != 200 or not body:
            return False
        if kind == "observations":
            return b'"observations":[{' in body
        return body.lstrip()[:1] in (b"{", b"[")

    async def phase(total: int, lat: list[float] | None) -> None:
        counter = [0]

        async def client(c: int) -> None:
            reader, writer = conns[c]
            while counter[0] < total:
                i = counter[0]
                counter[0] += 1
                t0 = time.perf_counter()
                writer.write(requests[i % len(requests)])
                status, body, alive = await _response(reader)
                t1 = time.perf_counter()
                if lat is not None:
                    lat.append(t1 - t0)
                    if not ok(status, body):
                        fails.append(f"{status} {body[:200]!r}")
                if not alive:
                    writer.close()
                    reader, writer = conns[c] = await asyncio.open_connection("127.0.0.1", port)

        await asyncio.gather(*(client(c) for c in range(clients)))

    await phase(warmup, None)
    lat: list[float] = []
    cpu0 = sum(os.times()[:2])
    t0 = time.perf_counter()
    await phase(n, lat)
    wall = time.perf_counter() - t0
    cpu = sum(os.times()[:2]) - cpu0
    for _, w in conns:
        w.close()
    return {"lat": lat, "wall": wall, "fails": len(fails), "fail_examples": fails[:3], "client_cpu": cpu}


def _loadgen(port: int, scenarios: list[dict], go, q) -> None:
    for sc in scenarios:
        go.wait()  # the parent samples the API's CPU around each scenario
        go.clear()
        res = asyncio.run(_scenario(port, sc["paths"], sc["clients"], sc["n"], sc["warmup"], sc["kind"]))
        q.put((sc["name"], res))


def run_load(port: int, scenarios: list[dict], pids: dict[str, int]) -> dict[str, dict]:
    ctx = mp.get_context("spawn")
    go, q = ctx.Event(), ctx.Queue()
    gen = ctx.Process(target=_loadgen, args=(port, scenarios, go, q))
    gen.start()
    procs = {k: psutil.Process(p) for k, p in pids.items()}
    out = {}
    for sc in scenarios:
        cpu0 = {k: sum(p.cpu_times()[:2]) for k, p in procs.items()}
        go.set()
        name, res = q.get(timeout=600)
        for k, p in procs.items():
            res[f"{k}_cpu"] = sum(p.cpu_times()[:2]) - cpu0[k]  # includes the warm-up: per request below
        res["cpu_requests"] = sc["n"] + sc["warmup"]
        lat = sorted(res.pop("lat"))
        res["p50_ms"] = statistics.median(lat) * 1e3
        res["p99_ms"] = lat[max(0, -(-len(lat) * 99 // 100) - 1)] * 1e3
        res["max_ms"] = lat[-1] * 1e3
        res["rps"] = len(lat) / res["wall"]
        res["n"] = len(lat)
        out[name] = res
    gen.join(60)
    return out


# -- CSV export ------------------------------------------------------------------------------------------------
class RssSampler:
    def __init__(self, pid: int, every: float = 0.02) -> None:
        self.proc = psutil.Process(pid)
        self.every = every
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self._stop.wait(self.every)

    def __enter__(self) -> RssSampler:
        self.before = self.proc.memory_info().rss
        self.peak = self.before
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.before) / 2**20


def export_csv(client: httpx.Client, path: str, api_pid: int) -> dict:
    """One CSV export, following Link rel=next if the month is over max_page_size: rows, seconds, RSS growth."""
    rows = pages = 0
    with RssSampler(api_pid) as rss:
        t0 = time.perf_counter()
        url: str | None = path
        while url:
            with client.stream("GET", url, headers={"Accept-Encoding": "identity"}) as r:
                if r.status_code != 200:
                    raise SystemExit(f"export failed: HTTP {r.status_code}: {r.read()[:300]!r}")
                lines = sum(chunk.count(b"\n") for chunk in r.iter_raw())
                rows += lines - 1  # the header line
                pages += 1
                url = r.links.get("next", {}).get("url")
        secs = time.perf_counter() - t0
    return {
        "rows": rows,
        "s": secs,
        "rows_per_s": rows / secs,
        "rss_growth_mb": rss.growth_mb,
        "rss_before_mb": rss.before / 2**20,
        "rss_peak_mb": rss.peak / 2**20,
        "pages": pages,
    }


def influx_csv(client: httpx.Client, settings, dataset: str, start: int, end: int) -> dict:
    """InfluxDB's own CSV for the same points the API exports (the charter's cell and bin)."""
    from datacharter.charter import Charter, open_field
    from storage.influx import quote_ident

    ds = Charter.load(settings.charter.path).datasets[dataset]
    cols = ", ".join(quote_ident(open_field(f, a)) for f, a in ds.outputs)
    q = (
        f'SELECT "n_contributors", {cols}, "cell", "resolution", "bin", "charter_version" '  # noqa: S608 - checked
        f'FROM {quote_ident(dataset)} WHERE time >= $start AND time < $end AND "bin" = $bin AND "resolution" = $res'
    )
    data = {
        "q": q,
        "db": settings.charter.open_database,
        "epoch": "ns",
        "params": json.dumps({"start": start, "end": end, "bin": ds.time.bin, "res": str(ds.space.resolution)}),
    }
    t0 = time.perf_counter()
    with client.stream(
        "POST",
        f"{settings.influx.url}/query",
        data=data,
        headers={"Accept": "application/csv", "Accept-Encoding": "identity"},
    ) as r:
        r.raise_for_status()
        lines = sum(chunk.count(b"\n") for chunk in r.iter_raw())
    secs = time.perf_counter() - t0
    return {"rows": lines - 1, "s": secs, "rows_per_s": (lines - 1) / secs}


def influx_query_ms(client: httpx.Client, settings, dataset: str, first_day: datetime) -> float:
    """Median time InfluxDB itself takes to answer the 24 h, 1 h-resolution query the API sends (CSV)."""
    from api.observations import select_outputs
    from api.store import ObservationQuery, OpenData
    from datacharter.charter import Charter

    charter = Charter.load(settings.charter.path)
    ds = charter.datasets[dataset]
    store = OpenData(settings, charter)
    times = []
    try:
        for i in range(DAYS):
            start = int((first_day + timedelta(days=i)).timestamp()) * 10**9
            q = ObservationQuery(
                store,
                dataset,
                ds,
                start,
                start + 86_400 * 10**9,
                "1h",
                3_600 * 10**9,
                None,
                select_outputs(ds, None, True),
                "finest",
            )
            data = {
                "q": q.select.format(where=q.where),
                "db": settings.charter.open_database,
                "epoch": "ns",
                "params": json.dumps(q.params),
            }
            t0 = time.perf_counter()
            r = client.post(f"{settings.influx.url}/query", data=data, headers={"Accept": "application/csv"})
            r.raise_for_status()
            times.append(time.perf_counter() - t0)
    finally:
        store.close()
    return statistics.median(times) * 1e3


# -- the benchmark ------------------------------------------------------------------------------------------
def api_bench(args: argparse.Namespace) -> str:
    from cli import services
    from smartzone.settings import Settings

    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    first_day = today - timedelta(days=DAYS)
    with tempfile.TemporaryDirectory(prefix="sz-bench-api-") as tmp_s:
        tmp = Path(tmp_s)
        influxd = services.influxd(tmp / "influxd").start()
        api = None
        try:
            settings = Settings(
                data_dir=tmp / "data",
                registry=REPO / "gateways" / "registry" / "antwerp.yaml",
                influx={"url": influxd.url},
                charter={"path": REPO / "datacharter" / "charter.yaml"},
                storage={"sql_url": f"sqlite:///{tmp / 'charter.db'}"},
            )
            load_month(settings, first_day, args.step)
            counts = open_rows(settings)
            print("open database rows per dataset (all levels / the charter's cell and bin):", flush=True)
            for name, (total, finest) in counts.items():
                note = "  (sightings: the last ~47 h only)" if name == "pedestrian_flow" else ""
                print(f"  {name:<20} {total:>9,} / {finest:>9,}{note}", flush=True)
            big = max(counts, key=lambda k: counts[k][1])
            if counts.get(args.dataset, (0, 0))[1] == 0:
                raise SystemExit(f"{args.dataset} has no published points")

            from api.app import create_app  # noqa: F401 - fail early (and clearly) if a router is missing

            port = services.free_port()
            api = start_api(tmp, influxd.url, port)
            pids = {"api": api.pid, "influxd": influxd.proc.pid}
            api_proc = psutil.Process(api.pid)
            print(
                f"API: smartzone api (uvicorn, 1 worker) pid {api.pid} on 127.0.0.1:{port}, ready; RSS "
                f"{api_proc.memory_info().rss / 2**20:.0f} MB",
                flush=True,
            )

            def day(i: int) -> str:
                return (first_day + timedelta(days=i)).strftime("%Y-%m-%dT%H:%M:%SZ")

            query = [
                f"/v1/datasets/{args.dataset}/observations?from={day(i)}&to={day(i + 1)}&resolution=1h&format=json"
                for i in range(DAYS)
            ]
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
                doc = client.get(query[-1]).json()
                print(
                    f"24 h query: {args.dataset} at 1 h resolution, one of the {DAYS} days per request (json); "
                    f"{len(doc['observations'])} rows for the last day, "
                    f"{len(client.get(query[-1]).content):,} bytes",
                    flush=True,
                )
                cat = client.get("/v1/datasets")
                print(f"catalogue: /v1/datasets, HTTP {cat.status_code}, {len(cat.content):,} bytes", flush=True)
                scenarios = []
                for clients, n in ((1, args.requests_1), (32, args.requests_32)):
                    warm = max(20, 2 * clients)
                    scenarios.append(
                        {
                            "name": f"catalogue@{clients}",
                            "paths": ["/v1/datasets"],
                            "clients": clients,
                            "n": n,
                            "warmup": warm,
                            "kind": "catalogue",
                        }
                    )
                    scenarios.append(
                        {
                            "name": f"query24h@{clients}",
                            "paths": query,
                            "clients": clients,
                            "n": n,
                            "warmup": warm,
                            "kind": "observations",
                        }
                    )
                month = (
                    f"/v1/datasets/{big}/observations?from={day(0)}&to={day(DAYS)}&format=csv"
                    f"&limit={settings.api.max_page_size}"
                )
                week = (
                    f"/v1/datasets/{big}/observations?from={day(DAYS - 7)}&to={day(DAYS)}&format=csv"
                    f"&limit={settings.api.max_page_size}"
                )
                span = (int(first_day.timestamp()) * 10**9, int((first_day + timedelta(days=DAYS)).timestamp()) * 10**9)
                print(
                    f"export: {big} (the largest dataset at the charter's cell and bin), format=csv, "
                    f"limit={settings.api.max_page_size:,}, one week and the full month, streamed",
                    flush=True,
                )
                runs: dict[str, list[float]] = {}
                failures = 0

                def keep(key: str, value: float) -> None:
                    runs.setdefault(key, []).append(value)

                for r in range(args.repeat):
                    res = run_load(port, scenarios, pids)
                    line = []
                    for name, x in res.items():
                        failures += x["fails"]
                        for k in ("p50_ms", "p99_ms", "rps"):
                            keep(f"{name}.{k}", x[k])
                        keep(f"{name}.api_cpu_ms", x["api_cpu"] / x["cpu_requests"] * 1e3)
                        keep(f"{name}.influxd_cpu_ms", x["influxd_cpu"] / x["cpu_requests"] * 1e3)
                        keep(f"{name}.client_cpu_ms", x["client_cpu"] / x["n"] * 1e3)
                        line.append(
                            f"{name} p50 {x['p50_ms']:.1f} ms p99 {x['p99_ms']:.1f} ms {x['rps']:,.0f} r/s"
                            + (f" FAILED {x['fails']}: {x['fail_examples']}" if x["fails"] else "")
                        )
                    wk = export_csv(client, week, api.pid)
                    mo = export_csv(client, month, api.pid)
                    ix = influx_csv(client, settings, big, *span)
                    keep("week.rows_per_s", wk["rows_per_s"])
                    keep("week.rss", wk["rss_growth_mb"])
                    keep("month.rows_per_s", mo["rows_per_s"])
                    keep("month.rss", mo["rss_growth_mb"])
                    keep("influx.rows_per_s", ix["rows_per_s"])
                    keep("influx.query24h_ms", influx_query_ms(client, settings, args.dataset, first_day))
                    if mo["rows"] != ix["rows"]:
                        print(f"  WARNING: the API exported {mo['rows']:,} rows, InfluxDB holds {ix['rows']:,}")
                    print(f"run {r + 1}: " + "; ".join(line), flush=True)
                    print(
                        f"run {r + 1}: export week {wk['rows']:,} rows in {wk['s']:.2f} s = "
                        f"{wk['rows_per_s']:,.0f} rows/s (RSS +{wk['rss_growth_mb']:.1f} MB), month {mo['rows']:,} "
                        f"rows in {mo['s']:.2f} s = {mo['rows_per_s']:,.0f} rows/s (RSS {mo['rss_before_mb']:.0f} "
                        f"-> peak {mo['rss_peak_mb']:.0f} MB, +{mo['rss_growth_mb']:.1f} MB, {mo['pages']} page); "
                        f"InfluxDB CSV {ix['rows']:,} rows in {ix['s']:.2f} s = {ix['rows_per_s']:,.0f} rows/s",
                        flush=True,
                    )
            med = {k: statistics.median(v) for k, v in runs.items()}
            print(
                f"medians of {args.repeat} runs ({args.requests_1} requests at 1 client, {args.requests_32} at 32; "
                f"CPU per request: API process / influxd / load generator):"
            )
            for name in ("catalogue@1", "catalogue@32", "query24h@1", "query24h@32"):
                print(
                    f"  {name:<13} p50 {med[name + '.p50_ms']:7.1f} ms  p99 {med[name + '.p99_ms']:7.1f} ms  "
                    f"{med[name + '.rps']:7,.0f} requests/s  | CPU {med[name + '.api_cpu_ms']:.2f} / "
                    f"{med[name + '.influxd_cpu_ms']:.2f} / {med[name + '.client_cpu_ms']:.2f} ms"
                )
            print(
                f"  InfluxDB alone answers the API's 24 h query (its InfluxQL, CSV, httpx defaults) in "
                f"{med['influx.query24h_ms']:.1f} ms (median; the API's p50 at 1 client: "
                f"{med['query24h@1.p50_ms']:.1f} ms)"
            )
            p99 = med["query24h@32.p99_ms"]
            rate, irate = med["month.rows_per_s"], med["influx.rows_per_s"]
            print(
                f"24 h query at 32 clients: p99 {p99:.1f} ms = {p99 / P99_TARGET_MS:.2f}x the {P99_TARGET_MS:.0f} ms "
                f"target ({'met' if p99 < P99_TARGET_MS else 'missed'}); failures {failures}"
            )
            print(
                f"CSV export of a month: {rate:,.0f} rows/s = {rate / EXPORT_TARGET:.2f}x the {EXPORT_TARGET:,} "
                f"target ({'met' if rate >= EXPORT_TARGET else 'missed'}); InfluxDB itself {irate:,.0f} rows/s "
                f"(API/InfluxDB {rate / irate:.2f}); week {med['week.rows_per_s']:,.0f} rows/s"
            )
            print(
                f"API RSS growth during the export: week +{med['week.rss']:.1f} MB, month +{med['month.rss']:.1f} MB "
                f"(API RSS now {api_proc.memory_info().rss / 2**20:.0f} MB)"
            )
            if failures:
                print(f"WARNING: {failures} requests failed (not 200, or empty)")
            return (
                f"api: p50_ms={med['query24h@32.p50_ms']:.1f} p99_ms={p99:.1f} "
                f"rps={med['query24h@32.rps']:.0f} export_rows_per_s={rate:.0f} "
                f"rss_growth_mb={med['month.rss']:.1f}"
            )
        finally:
            if api is not None and api.poll() is None:
                api.terminate()
                try:
                    api.wait(20)
                except subprocess.TimeoutExpired:
                    api.kill()
            influxd.stop()
