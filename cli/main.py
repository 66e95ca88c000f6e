"""The ``smartzone`` command line.

smartzone up [--demo]            start local mosquitto + influxd if missing, the ingest worker (+ simulator)
smartzone ingest                 run the ingest worker against the configured broker and InfluxDB
smartzone simulate               publish the simulated smart zone
smartzone status                 the pipeline's self-metrics from the ops database
smartzone deadletters list       dead letters by reason, and the latest ones
smartzone deadletters replay     re-process pending dead letters (after registering a device, ...)
smartzone registry check         validate the sensor registry file
smartzone chirpstack sync        create/update ChirpStack's gateways, profiles, application, devices
smartzone lorawan loss           per-device LoRaWAN packet loss from the frame counters
smartzone charter check          validate the data charter
smartzone charter explain [ds]   the charter in plain language (all datasets, or one)
smartzone charter run            apply the charter: raw -> open database (--once, or --every 1m)
smartzone charter audit          what the charter job published and suppressed, per window
smartzone api                    serve the open-data API (uvicorn)
smartzone dashboards build       write the Grafana dashboards and provisioning files (--check: drift only)
smartzone dashboards push        create/update the folder, datasources and dashboards in a Grafana
smartzone config show            the effective settings (secrets masked)
smartzone broker users           the broker's password file, ACL and passwords, from the registry and services
                                 (--revoke GW / --rotate GW: take a gateway's credential away, give it a new one)
smartzone gateway render GW      the Raspberry Pi reference gateway's files for one gateway (--out DIR)
smartzone influx init            as InfluxDB's admin: databases, retention policies, one user per service
smartzone gateway selftest       on a gateway: is it ready? (named checks; exit code = the number of failures)
smartzone experiments migrate    upgrade the experiments store (settings.sql_url) to the newest schema
smartzone experiments scheduler  run the experiments scheduler (launches, watches, ends experiments; SIGTERM stops)
smartzone experiments submit|list|status|wait|cancel|extend|logs|results
                                 the experimenter's client of /v1/experiments (token: SMARTZONE_TOKEN)
smartzone tokens create|list|revoke  bearer tokens of the experiments service (the secret is shown once)
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

from cli import wiring
from cli.client import CLIENT_ACTIONS
from cli.client import add_arguments as client_arguments
from smartzone.errors import ConfigurationError, DatabaseNotFound, InfluxError
from smartzone.log import setup_logging
from smartzone.settings import Settings, get_settings
from smartzone.terminal import escape

log = logging.getLogger("smartzone")


def _on_signals(stop: threading.Event) -> None:
    def handler(signum, frame):
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


# -- commands ---------------------------------------------------------------------------------------
def cmd_ingest(settings: Settings, args: argparse.Namespace) -> int:
    from ingest.worker import Worker

    worker = Worker(settings)
    stop = threading.Event()
    _on_signals(stop)
    worker.start()
    log.info(
        "ingest worker %s running: broker %s:%d, InfluxDB %s",
        settings.mqtt.client_id,
        settings.mqtt.host,
        settings.mqtt.port,
        settings.influx.url,
    )
    while not stop.wait(0.5) and worker.fatal is None:
        pass
    worker.stop()
    if worker.fatal is not None:
        raise worker.fatal
    return 0


def cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    from cli.backfill import simulated_past
    from gateways.publisher import Publisher, live
    from gateways.simulator import SimulatedZone

    seed = args.seed if args.seed is not None else settings.simulator.seed
    zone = SimulatedZone(wiring.registry(settings), seed=seed, lorawan_encoding=args.lorawan_encoding)
    if args.backfill:
        result = simulated_past(settings, zone, args.backfill, args.step)
        print(
            f"simulate: backfilled {args.backfill}: messages={result.messages} raw_lines={result.raw_lines} "
            f"pseudonymous_lines={result.pseudo_lines} ops_lines={result.ops_lines} "
            f"dead_letters={result.dead_letters}"
        )
        return 0
    pub = Publisher(
        settings.mqtt.host,
        settings.mqtt.port,
        client_id=args.client_id,
        username=settings.mqtt.username,
        password=settings.mqtt.password.get_secret_value() if settings.mqtt.password else None,
    )
    stop = threading.Event()
    _on_signals(stop)
    started = time.monotonic()
    if args.rounds:
        start = (
            datetime.fromisoformat(args.start)
            if args.start
            else datetime.now(UTC) - timedelta(seconds=args.rounds * args.step)
        )
        n = pub.publish(
            zone.messages(start.astimezone(UTC), args.rounds, args.step, args.shape), rate=args.rate, stop=stop
        )
    else:
        rate = args.rate if args.rate is not None else settings.simulator.rate
        duration = args.duration if args.duration is not None else settings.simulator.duration
        n = pub.publish(live(zone, stop, duration), rate=rate, stop=stop)
    pub.close()
    print(f"simulate: sent={n} acked={pub.acked} seconds={time.monotonic() - started:.1f}")
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from ingest import metrics as m
    from storage.deadletters import DeadLetterStore
    from storage.influx import Influx

    with Influx(settings.influx) as influx:
        if not influx.ping():
            print(f"InfluxDB at {settings.influx.url} is not reachable")
            return 1
        try:
            rows = influx.rows(
                f'SELECT * FROM "{m.INGEST}" WHERE time > now() - 1h '  # noqa: S608 - our names
                f'GROUP BY "{m.WORKER}" ORDER BY time DESC LIMIT 2',
                settings.influx.ops_database,
            )
            reasons = influx.rows(
                f'SELECT last("{m.COUNT}") AS "count" FROM "{m.DEADLETTERS}" '  # noqa: S608 - our names
                f'WHERE time > now() - 1h GROUP BY "{m.WORKER}", "{m.REASON}"',
                settings.influx.ops_database,
            )
        except DatabaseNotFound:
            rows, reasons = [], []
    by_worker: dict[str, list[dict]] = {}
    for r in rows:
        by_worker.setdefault(r[m.WORKER], []).append(r)
    problems: dict[str, dict[str, int]] = {}
    for r in reasons:
        problems.setdefault(r[m.WORKER], {})[r[m.REASON]] = int(r["count"] or 0)
    if not by_worker:
        print("no ingest worker reported in the last hour")
    for worker, (last, *prev) in sorted(by_worker.items()):
        print(status_of(worker, last, prev[0] if prev else None, problems.get(worker, {}), time.time()))
    store = DeadLetterStore(settings.sql_url)
    pending = store.counts()
    store.close()
    print(
        f"dead-letter store: {sum(pending.values())} pending"
        + (": " + ", ".join(f"{escape(k)}={v}" for k, v in sorted(pending.items())) if pending else "")
        + " (all workers, kept whole until replayed: smartzone deadletters list)"
    )
    return 0


def status_of(worker: str, last: dict, prev: dict | None, problems: dict[str, int], now: float) -> str:
    """One worker's last report, explained: what received, decoded, dead-lettered, readings and lines count, and
    why they differ (``ingest.metrics.MEANINGS``)."""
    from ingest import metrics as m

    def n(key: str) -> int:
        return int(last.get(key) or 0)

    def row(label: str, value: object, meaning: str) -> str:
        return f"  {label:<20} {value!s:>10}  {meaning}"

    received, decoded, lettered, readings = n("received"), n("decoded"), n("dead_lettered"), n("readings")
    undecoded = received - decoded
    out = [f"worker {escape(worker)} (last report {now - last['time'] / 1e9:.0f} s ago; counts since it started)"]
    out.append(row("received", received, m.MEANINGS["received"]))
    out.append(row("decoded", decoded, m.MEANINGS["decoded"]))
    out.append(
        row(
            "not decoded",
            undecoded,
            "received - decoded: refused whole (dead letters), or events with nothing to store (a LoRaWAN join)",
        )
    )
    partly = max(0, lettered - undecoded)
    out.append(
        row(
            "dead-lettered",
            lettered,
            m.MEANINGS["dead_lettered"] + (f"; at least {partly} also decoded" if partly else ""),
        )
    )
    if problems:
        out.append(
            "    problems by reason (a dead letter may hold several): "
            + ", ".join(f"{escape(k)}={v}" for k, v in sorted(problems.items()))
        )
    per = f"{readings / decoded:.1f} per decoded message; " if decoded else ""
    out.append(row("readings", readings, per + m.MEANINGS["readings"]))
    for key in m.STATUS_FIELDS:
        if key in ("received", "decoded", "readings", "dead_lettered") or last.get(key) is None:
            continue
        unit = " ms" if key in (m.WRITE_LATENCY_P50, m.WRITE_LATENCY_MAX) else ""
        out.append(row(key.replace("_", " "), f"{last[key]}{unit}", m.MEANINGS[key]))
    if prev is not None:
        dt = (last["time"] - prev["time"]) / 1e9
        if dt > 0:
            out.append(
                f"  rates: {(received - int(prev['received'] or 0)) / dt:.1f} msg/s received, "
                f"{(n('lines_written') - int(prev['lines_written'] or 0)) / dt:.1f} lines/s written"
            )
    return "\n".join(out)


def cmd_deadletters(settings: Settings, args: argparse.Namespace) -> int:
    from storage.deadletters import DeadLetterStore

    store = DeadLetterStore(settings.sql_url)
    try:
        if args.action == "list":
            status = None if args.status == "all" else args.status
            counts = store.counts(status)
            print(
                f"{sum(counts.values())} {args.status} dead letters"
                + ("".join(f"\n  {escape(k):<22} {v}" for k, v in sorted(counts.items())) if counts else "")
            )
            for d in store.entries(reason=args.reason, status=status, limit=args.limit):
                # everything but the id, time and status comes from the network: escaped (smartzone.terminal)
                payload = escape(d.payload[: args.payload_chars])
                print(
                    f"#{d.id} {d.received_at.isoformat()} [{d.status}] {escape(d.reason)} topic={escape(d.topic)}\n"
                    f"    detail: {escape(d.detail)}\n    payload: {payload}"
                    f"{'...' if len(d.payload) > args.payload_chars else ''}"
                )
            return 0
        from datacharter.charter import Charter
        from ingest.replay import replay, replay_writer
        from storage.influx import Influx

        with Influx(settings.influx) as influx:
            writer = replay_writer(settings, influx, store, Charter.load(settings.charter.path))
            result = replay(store, wiring.pipeline(settings), writer, reason=args.reason, ids=args.id or None)
        print(f"replayed={result.replayed} still_failing={result.still_failing} lines_written={result.lines_written}")
        return 0
    finally:
        store.close()


def cmd_registry(settings: Settings, args: argparse.Namespace) -> int:
    reg = wiring.registry(settings)
    print(
        f"{settings.registry}: zone {reg.doc.zone.name!r}, {len(reg.gateways)} gateways, "
        f"{len(reg.sensors)} sensors, {len(reg.cells)} H3 cells at resolution {reg.doc.zone.h3_resolution}"
    )
    unscheduled = sorted(s for s in reg.sensors if reg.interval(s) is None)
    if unscheduled:
        print(
            f"{len(unscheduled)} sensors have no reporting interval (interval, their LoRaWAN profile's or the "
            f"category's reporting_intervals): coverage leaves them out: {', '.join(unscheduled)}"
        )
    return 0


def cmd_config(settings: Settings, args: argparse.Namespace) -> int:
    print(settings.model_dump_json(indent=2))
    return 0


def cmd_chirpstack(settings: Settings, args: argparse.Namespace) -> int:
    try:
        from gateways.chirpstack import ChirpStackError, sync
    except ImportError as exc:
        raise ConfigurationError(
            f"smartzone chirpstack needs chirpstack-api and grpcio ({exc}): pip install chirpstack-api grpcio"
        ) from exc

    try:
        result = sync(settings.chirpstack, wiring.registry(settings), dry_run=args.dry_run, prune=args.prune)
    except ChirpStackError as exc:
        print(f"smartzone: ChirpStack error: {escape(str(exc))}", file=sys.stderr)
        return 1
    print(result.table())
    print(result.summary())
    return 0


def cmd_lorawan(settings: Settings, args: argparse.Namespace) -> int:
    from smartzone.names import parse_duration
    from storage.influx import Influx
    from storage.lorawan import packet_loss

    until = datetime.now(UTC)
    seconds = parse_duration(args.since)
    since = until - timedelta(seconds=seconds) if seconds != float("inf") else datetime(1970, 1, 1, tzinfo=UTC)
    with Influx(settings.influx) as influx:
        devices = packet_loss(influx, settings.influx.ops_database, since, until)
    if not devices:
        print(f"no LoRaWAN uplinks in the last {args.since}")
        return 0
    print(f"{'sensor':36} {'received':>9} {'expected':>9} {'lost':>6} {'loss':>7} {'sessions':>8}")
    for d in devices:
        print(f"{escape(d.sensor):36} {d.received:9d} {d.expected:9d} {d.lost:6d} {d.loss:7.2%} {d.sessions:8d}")
    received, expected = sum(d.received for d in devices), sum(d.expected for d in devices)
    print(
        f"all {len(devices)} devices: {expected - received} of {expected} frames lost "
        f"({(expected - received) / expected:.2%}) in the last {args.since}"
    )
    return 0


def cmd_charter(settings: Settings, args: argparse.Namespace) -> int:
    from datacharter.charter import Charter

    charter = Charter.load(settings.charter.path)
    if args.action == "check":
        from datacharter.noise import spent_epsilon

        for name, ds in charter.datasets.items():
            if ds.noise:  # the budget, by OpenDP's accounting: L bins a day, each noised at up to every level
                n = ds.noise
                spent = spent_epsilon(ds.noise_scale, n.max_bins_per_subject_per_day * len(ds.levels))
                print(
                    f"{name}: noise spends epsilon {spent:g} per subject per day (budget {n.epsilon_per_day:g}); "
                    f"published from a noised count of {ds.noise_threshold:.0f}"
                )
        # which registered sensors each dataset reads (category, placement, fixed or mobile), and which feed none
        from smartzone.registry import Registry

        registry = Registry.load(settings.registry)
        network = {"gateway_health"}  # the network's own data: operations only, never a dataset
        for name, ds in charter.datasets.items():
            taken = sorted(s.id for s in registry.sensors.values() if ds.admits(s))
            print(
                f"{name}: reads {len(taken)} registered sensors ({', '.join(ds.source.categories)}; "
                f"{', '.join(ds.source.placement)})"
            )
        idle = [
            s
            for s in registry.sensors.values()
            if s.category not in network and not any(ds.admits(s) for ds in charter.datasets.values())
        ]
        for s in idle:
            print(
                f"  {s.id} ({s.category}, {s.placement}{', mobile' if s.mobile else ''}) feeds no dataset: "
                "its data is never published"
            )
        print(
            f"{settings.charter.path}: valid charter version {charter.version}, {len(charter.datasets)} datasets "
            f"({', '.join(charter.datasets)}); raw data kept {charter.doc.retention.raw}, pseudonymised "
            f"sightings {charter.doc.retention.pseudonymous}"
        )
        return 0
    if args.action == "explain":
        from datacharter.explain import explain

        if args.dataset and args.dataset not in charter.datasets:
            print(
                f"smartzone: the charter has no dataset {args.dataset!r}; it has: {', '.join(charter.datasets)}. "
                "Anything else is not published.",
                file=sys.stderr,
            )
            return 2
        print(explain(charter, args.dataset))
        return 0
    if args.action == "audit":
        from datacharter.store import CharterStore

        store = CharterStore(settings.sql_url)
        rows = store.audit(args.dataset, args.limit)
        store.close()
        if not rows:
            print("no charter runs recorded yet (smartzone charter run --once)")
            return 0
        print(
            f"{'at (UTC)':19} {'version':11} {'dataset':19} {'window (UTC day)':16} {'readings':>9} "
            f"{'published':>9} {'suppressed':>10} {'deferred':>8} {'coverage (arrived/expected)':>27}  note"
        )
        for r in rows:
            day = datetime.fromtimestamp(r["window_start"] / 1e9, UTC).strftime("%Y-%m-%d")
            note = ("late data, re-processed; " if r["reprocessed"] else "") + (
                "written" if r["written"] else "unchanged"
            )
            if r["late_rows"]:
                note = f"{r['late_rows']} late rows not published (day frozen)"
            elif r.get("content_changed") and not r["reprocessed"]:
                note = "readings rewritten, not published (day frozen)"
            cov = "-"
            if r.get("coverage") is not None:
                cov = f"{r['coverage']:.2f} ({r['arrived_readings']}/{r['expected_readings']})"
                if r["low_coverage"]:
                    note = f"LOW COVERAGE; {note}"
            print(
                f"{r['at']:%Y-%m-%d %H:%M:%S} {r['charter_version']:11} {r['dataset']:19} {day:16} "
                f"{r['readings_in']:9d} {r['groups_published']:9d} {r['groups_suppressed']:10d} "
                f"{r['rows_deferred']:8d} {cov:>27}  {note}"
            )
        return 0
    # run
    from datacharter.job import CharterJob, summary
    from smartzone.names import parse_duration

    job = CharterJob(settings, charter)
    try:
        if args.once:
            now = datetime.fromisoformat(args.now) if args.now else None
            if now is not None and now.tzinfo is None:
                raise ConfigurationError("--now needs a UTC offset (2026-11-25T00:05:00Z)")
            reports = job.run_once(now=now, datasets=args.dataset and [args.dataset])
            for w in reports:
                day = datetime.fromtimestamp(w.start / 1e9, UTC).strftime("%Y-%m-%d")
                c = w.coverage
                cov = (
                    "" if c is None else f"coverage={c.value:.2f}{'(LOW)' if c.low else ''} ({c.arrived}/{c.expected}) "
                )
                print(
                    f"{w.dataset:19} {day} readings={w.readings_in} published={w.published} "
                    f"suppressed={w.suppressed} deferred={w.deferred} {cov}"
                    f"{'written' if w.written else 'unchanged'}{' (late data)' if w.reprocessed else ''}"
                )
            print(f"{summary(reports, charter.version)} -> {settings.charter.open_database}")
            return 0
        stop = threading.Event()
        _on_signals(stop)
        every = parse_duration(args.every or settings.charter.every)
        log.info(
            "charter job running every %.0f s: %s -> %s",
            every,
            settings.influx.raw_database,
            settings.charter.open_database,
        )
        job.run_forever(every, stop)
        return 0
    finally:
        job.close()


def cmd_api(settings: Settings, args: argparse.Namespace) -> int:
    import os

    import uvicorn

    from api.app import create_app, server_options

    host = args.host or settings.api.host
    port = args.port or settings.api.port
    settings = settings.model_copy(update={"api": settings.api.model_copy(update={"host": host, "port": port})})
    settings.public_base_url()  # outside development without api.base_url: a configuration error, now
    options = server_options(settings.api)
    if settings.api.workers > 1:  # worker processes build their app from the same settings (environment)
        os.environ["SMARTZONE_API__HOST"], os.environ["SMARTZONE_API__PORT"] = host, str(port)
        uvicorn.run(
            "api.app:app_from_environment",
            factory=True,
            host=host,
            port=port,
            workers=settings.api.workers,
            log_level=settings.log_level.lower(),
            access_log=False,
            **options,
        )
    else:
        uvicorn.run(
            create_app(settings),
            host=host,
            port=port,
            log_level=settings.log_level.lower(),
            access_log=False,
            **options,
        )
    return 0


def cmd_dashboards(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from dashboards import build
    from datacharter.charter import Charter

    api_url = args.api_url or settings.api.base_url or build.API_URL
    if args.action == "build":
        if args.check:
            stale = build.drift()
            for rel in stale:
                print(f"out of date: dashboards/{rel}")
            if stale:
                print("run `smartzone dashboards build` and commit the result", file=sys.stderr)
            return 1 if stale else 0
        if not args.out:
            if args.api_url:
                raise ConfigurationError(
                    "--api-url builds a deployment's own copy: give --out DIR too (the "
                    "committed dashboards link to the default API URL)"
                )
            changed = build.write()
        else:  # a deployment's own copy: its registry, charter and API URL
            changed = build.write(
                Path(args.out),
                api_url=api_url,
                registry=wiring.registry(settings),
                charter=Charter.load(settings.charter.path),
            )
        where = args.out.rstrip("/") if args.out else "dashboards"
        print("\n".join(f"wrote {where}/{rel}" for rel in changed) or "dashboards are up to date")
        return 0
    try:
        from dashboards.push import PushError, PushPlan, connect, push
    except ModuleNotFoundError as exc:  # the grafana extra is not installed
        raise ConfigurationError(str(exc)) from exc

    g = settings.grafana
    url = args.url or g.url
    token = args.token or (g.token.get_secret_value() if g.token else "")
    if not token:
        raise ConfigurationError("a Grafana token is needed: --token, or SMARTZONE_GRAFANA__TOKEN")
    password = g.influx_password.get_secret_value() if g.influx_password else None
    plan = PushPlan(
        build.FOLDER_UID,
        build.FOLDER_TITLE,
        build.datasources(
            args.influx_url or g.influx_url or settings.influx.url,
            settings.charter.open_database,
            settings.influx.ops_database,
            settings.influx.experiments_database,
            user=g.influx_username,
            password=password,
        ),
        [
            build.with_api_url(b.json(), api_url)
            for b in build.build(wiring.registry(settings), Charter.load(settings.charter.path))
        ],
    )
    try:
        report = push(connect(url, token, verify=g.verify_tls), plan, args.message, rotate_secrets=args.rotate_secrets)
    except PushError as exc:
        print(f"smartzone: Grafana: {exc}", file=sys.stderr)
        return 1
    for verb, items in (("created", report.created), ("updated", report.updated), ("unchanged", report.unchanged)):
        for item in items:
            print(f"{verb:9} {item}")
    print("Grafana already matched: nothing written" if not report.changed() else f"pushed to {url}")
    return 0


def cmd_broker(settings: Settings, args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from cli import broker

    registry = wiring.registry(settings)
    for name in [*args.revoke, *args.rotate]:
        if name not in registry.gateways:
            raise ConfigurationError(f"--revoke/--rotate take gateway ids of the registry: no gateway {name!r}")
    both = set(args.revoke) & set(args.rotate)
    if both:
        raise ConfigurationError(f"revoke or rotate, not both: {', '.join(sorted(both))}")
    secrets_file = Path(args.secrets)
    revoked = (set(broker.revoked(broker.read_secrets(secrets_file))) | set(args.revoke)) - set(args.rotate)
    users = broker.users(
        registry,
        workers=args.workers,
        share_group=settings.mqtt.share_group,
        region_prefix=args.region_prefix,
        revoked=sorted(revoked),
    )
    written = broker.write(Path(args.out), users, os.environ, secrets_file, rotate=args.rotate, revoke=args.revoke)
    for u in users:
        rights = [f"read {t}" for t in u.read] + [f"write {t}" for t in u.write]
        print(f"{u.name:28} {'; '.join(rights)}")
    if revoked:
        print(f"revoked (no login): {', '.join(sorted(revoked))}")
    if written.dynsec is not None:
        print(
            f"wrote {written.dynsec} (the dynamic-security plugin: {broker.EXPERIMENTS} its admin; its other "
            "clients kept); the broker reads it at start: docker compose restart mosquitto after a change of "
            f"{broker.env_name(broker.EXPERIMENTS)}"
        )
    print(
        f"wrote {written.passwd} ({len(users)} users) and {written.acl}; passwords in {written.secrets} "
        f"(0600, variables MQTT_PASSWORD_<USER>): {len(written.generated)} new, "
        f"{len(users) - len(written.generated)} kept"
    )
    if args.revoke or args.rotate:
        print(
            "reload the running broker without a restart: docker compose kill -s HUP mosquitto "
            "(a connected revoked client is disconnected); re-render and install a rotated gateway's files"
        )
    return 0


def cmd_gateway(settings: Settings, args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from cli import broker
    from gateways.render import render

    registry = wiring.registry(settings)
    var = broker.env_name(args.gateway_id)
    password = os.environ.get(var) or broker.read_secrets(Path(args.secrets)).get(var)
    if not password:
        raise ConfigurationError(
            f"no {var} in the environment or in {args.secrets}: run `smartzone broker users` first "
            "(or give --secrets the file it wrote)"
        )
    done = render(registry, args.gateway_id, Path(args.out), password, Path(args.ca) if args.ca else None)
    for warning in done.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for name, mode in sorted(done.files.items()):
        print(f"{mode:04o} {done.folder / name}")
    print(f"rendered {len(done.files)} files for {args.gateway_id}; on the Pi, as root: bash {done.folder}/install.sh")
    return 0


def cmd_influx(settings: Settings, args: argparse.Namespace) -> int:
    import os

    from datacharter.charter import Charter
    from smartzone.errors import Unavailable
    from smartzone.settings import EXAMPLE_SECRET
    from storage.databases import ROLES, provision
    from storage.influx import Influx

    passwords = {}
    for role in ROLES:
        pw = os.environ.get(role.password_env, "")
        if not pw:
            print(f"user {role.user}: skipped ({role.password_env} not set)")
            continue
        if pw == EXAMPLE_SECRET and settings.environment != "development":
            raise ConfigurationError(f"{role.password_env} is the example value {EXAMPLE_SECRET!r}: set a real secret")
        passwords[role.name] = pw
    charter = Charter.load(settings.charter.path)
    deadline = time.monotonic() + args.wait
    with Influx(settings.influx) as admin:
        while True:  # compose starts us when InfluxDB is healthy; its first start restarts it once
            try:
                done = provision(admin, settings, charter.doc.retention, passwords)
                break
            except Unavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)
    print("\n".join(done))
    return 0


def cmd_gateway_selftest(settings: Settings, args: argparse.Namespace) -> int:
    from gateways.agent import selftest

    return selftest.run_args(args)


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from cli.up import up

    return up(settings, demo=args.demo, rate=args.rate, backfill=args.backfill)


def cmd_experiments(settings: Settings, args: argparse.Namespace) -> int:
    if args.action in CLIENT_ACTIONS:
        from cli import client

        return client.run(settings, args)
    from experiments.db import current_revision, engine_for, migrate

    if args.action == "scheduler":
        from experiments.scheduler import Scheduler

        stop = threading.Event()
        _on_signals(stop)
        scheduler = Scheduler(settings)
        log.info(
            "experiments scheduler running: broker %s:%d as %s, store %s, every %g s",
            settings.mqtt.host,
            settings.mqtt.port,
            settings.experiments.broker_username,
            settings.sql_url.split("@")[-1],
            settings.experiments.tick_s,
        )
        scheduler.run(stop)
        return 0
    engine = engine_for(settings.sql_url)
    try:
        migrate(engine)
        print(f"experiments store at revision {current_revision(engine)}")
    finally:
        engine.dispose()
    return 0


def cmd_tokens(settings: Settings, args: argparse.Namespace) -> int:
    from experiments.db import open_store
    from experiments.tokens import TokenError, create_token, list_tokens, revoke

    sessions = open_store(settings.sql_url)
    now = datetime.now(UTC)
    try:
        if args.action == "create":
            if not args.name or not args.role:
                print("smartzone: tokens create needs --name and --role", file=sys.stderr)
                return 2
            try:
                token_id, secret = create_token(sessions, args.name, args.role, now)
            except TokenError as exc:
                print(f"smartzone: {escape(str(exc))}", file=sys.stderr)
                return 2
            print(f"token {token_id} for {escape(args.name)} ({args.role}); the secret, shown only now:")
            print(secret)
            return 0
        if args.action == "list":
            tokens = list_tokens(sessions)
            print(f"{len(tokens)} tokens")
            for t in tokens:
                state = f"revoked {t.revoked_at.isoformat()}" if t.revoked_at else "live"
                used = t.last_used_at.isoformat() if t.last_used_at else "never"
                print(
                    f"  {t.id}  {escape(t.user):<20} {t.role:<12} created {t.created_at.isoformat()}"
                    f"  last used {used}  {state}"
                )
            return 0
        if not args.target:
            print("smartzone: tokens revoke needs a user name or a token id", file=sys.stderr)
            return 2
        n = revoke(sessions, args.target, now)
        print(f"revoked {n} token(s) of {escape(args.target)}")
        return 0 if n else 1
    finally:
        sessions.kw["bind"].dispose()


# -- parser -----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smartzone", description="Smart Zone living-lab data pipeline")
    p.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (default: settings.log_level)")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start local services (if missing) and the ingest worker")
    up.add_argument("--demo", action="store_true", help="also run the simulated smart zone")
    up.add_argument(
        "--rate",
        type=float,
        default=None,
        help="demo: publish at most this many messages per second (default: settings)",
    )
    up.add_argument(
        "--backfill",
        default=None,
        help="demo: first write this much simulated past so the charter job publishes at once "
        "(Nd: N whole UTC days and today so far; 2h: the 2 hours before now)",
    )
    up.set_defaults(func=cmd_up)

    sub.add_parser("ingest", help="run the ingest worker").set_defaults(func=cmd_ingest)

    sim = sub.add_parser("simulate", help="publish the simulated smart zone")
    sim.add_argument("--seed", type=int, default=None)
    sim.add_argument(
        "--rate",
        type=float,
        default=None,
        help="publish at most this many messages per second; 0 = as fast as possible",
    )
    sim.add_argument("--duration", type=float, default=None, help="seconds for live mode; 0 = until Ctrl-C")
    sim.add_argument("--rounds", type=int, default=0, help="batch mode: this many rounds of every sensor")
    sim.add_argument("--step", type=float, default=60.0, help="batch mode: simulated seconds between rounds")
    sim.add_argument(
        "--start", default=None, help="batch mode: ISO time of the first round (default: so the last round is now)"
    )
    sim.add_argument("--shape", default="native", choices=("native", "single", "senml"))
    sim.add_argument("--client-id", default="smartzone-simulator")
    sim.add_argument(
        "--backfill",
        default=None,
        help="write this much simulated past straight into InfluxDB through the ingest pipeline "
        "(Nd: N whole UTC days and today so far; 2h: the 2 hours before now)",
    )
    sim.add_argument(
        "--lorawan-encoding",
        default="json",
        choices=("json", "protobuf", "mixed"),
        help="how the simulated ChirpStack marshals its events ([integration.mqtt] json)",
    )
    sim.set_defaults(func=cmd_simulate)

    sub.add_parser("status", help="pipeline self-metrics").set_defaults(func=cmd_status)

    dl = sub.add_parser("deadletters", help="list or replay dead letters")
    dl.add_argument("action", choices=("list", "replay"))
    dl.add_argument("--reason", default=None)
    dl.add_argument("--status", default="pending", choices=("pending", "replayed", "all"))
    dl.add_argument("--id", type=int, action="append", help="only this letter (repeatable)")
    dl.add_argument("--limit", type=int, default=20)
    dl.add_argument("--payload-chars", type=int, default=200)
    dl.set_defaults(func=cmd_deadletters)

    reg = sub.add_parser("registry", help="sensor registry")
    reg.add_argument("action", choices=("check",))
    reg.set_defaults(func=cmd_registry)

    cs = sub.add_parser(
        "chirpstack",
        help="provision ChirpStack v4 (gateways, device profiles, application, "
        "devices and their keys) from the registry",
    )
    cs.add_argument("action", choices=("sync",))
    cs.add_argument("--dry-run", action="store_true", help="read ChirpStack and show the plan; write nothing")
    cs.add_argument(
        "--prune",
        action="store_true",
        help="delete devices of the application the registry no longer has (default: only report them)",
    )
    cs.set_defaults(func=cmd_chirpstack)

    lw = sub.add_parser("lorawan", help="LoRaWAN network figures from the raw database")
    lw.add_argument("action", choices=("loss",))
    lw.add_argument("--since", default="24h", help="window ending now (InfluxQL duration: 1h, 24h, 7d)")
    lw.set_defaults(func=cmd_lorawan)

    ch = sub.add_parser("charter", help="the data charter: check, explain, run, audit")
    ch.add_argument("action", choices=("check", "explain", "run", "audit"))
    ch.add_argument("dataset", nargs="?", default=None, help="explain/run/audit: only this dataset")
    ch.add_argument("--once", action="store_true", help="run: one pass over everything due, then exit")
    ch.add_argument("--every", default=None, help="run: interval of the service loop (default: charter.every)")
    ch.add_argument(
        "--now",
        default=None,
        help="run --once: the time the pass takes as now (RFC 3339, with an "
        "offset; default: the clock): windows closed before it are published",
    )
    ch.add_argument("--limit", type=int, default=50, help="audit: how many records")
    ch.set_defaults(func=cmd_charter)

    ap = sub.add_parser("api", help="serve the open-data API")
    ap.add_argument("--host", default=None, help="default: api.host")
    ap.add_argument("--port", type=int, default=None, help="default: api.port")
    ap.set_defaults(func=cmd_api)

    db = sub.add_parser("dashboards", help="Grafana dashboards as code: build the JSON, push to a Grafana")
    db.add_argument("action", choices=("build", "push"))
    db.add_argument("--check", action="store_true", help="build: only report files that differ from the code")
    db.add_argument("--url", default=None, help="push: Grafana's URL (default: grafana.url)")
    db.add_argument(
        "--token",
        default=None,
        help="push: a service-account token (default: grafana.token; prefer "
        "SMARTZONE_GRAFANA__TOKEN, the command line is visible to others)",
    )
    db.add_argument(
        "--influx-url",
        default=None,
        help="push: InfluxDB as Grafana reaches it (default: grafana.influx_url, else influx.url)",
    )
    db.add_argument(
        "--api-url",
        default=None,
        help="the open-data API's public URL the dashboards link to "
        "(default: api.base_url, else http://localhost:8000, compose's)",
    )
    db.add_argument(
        "--out",
        default=None,
        help="build: write here instead of dashboards/ (with --api-url, for a deployment's own copy)",
    )
    db.add_argument(
        "--message", default="smartzone dashboards push", help="push: version message of changed dashboards"
    )
    db.add_argument("--rotate-secrets", action="store_true", help="push: re-send the InfluxDB password")
    db.set_defaults(func=cmd_dashboards)

    br = sub.add_parser("broker", help="the central broker's users: password file, ACL and passwords")
    br.add_argument("action", choices=("users",))
    br.add_argument("--workers", type=int, default=2, help="ingest workers: users smartzone-ingest-1 ... -N")
    br.add_argument("--out", default="ingest/broker", help="folder of the password file and ACL (compose mounts it)")
    br.add_argument(
        "--secrets",
        default=".env",
        help="dotenv file the passwords are kept in (made 0600; its other lines are kept): compose's .env",
    )
    br.add_argument("--region-prefix", default="eu868", help="ChirpStack's gateway topic prefix (region_*.toml)")
    br.add_argument(
        "--revoke",
        action="append",
        default=[],
        metavar="GATEWAY",
        help="take a gateway's credential away (out of passwd and ACL until --rotate); repeatable",
    )
    br.add_argument(
        "--rotate", action="append", default=[], metavar="GATEWAY", help="give a gateway a new password; repeatable"
    )
    br.set_defaults(func=cmd_broker)

    gw = sub.add_parser("gateway", help="the Raspberry Pi reference gateway")
    gw_sub = gw.add_subparsers(dest="gateway_command", required=True)
    gr = gw_sub.add_parser("render", help="render one gateway's files from the registry (never into the repository)")
    gr.add_argument("gateway_id", help="a gateway id of the registry")
    gr.add_argument("--out", required=True, help="folder to write into (created)")
    gr.add_argument(
        "--secrets", default=".env", help="dotenv file `smartzone broker users` keeps the passwords in (default .env)"
    )
    gr.add_argument("--ca", default=None, help="the central broker's CA certificate, copied as ca.crt")
    gr.set_defaults(func=cmd_gateway)
    st = gw_sub.add_parser("selftest", help="on the gateway: is it ready? exit code = the number of failed checks")
    from gateways.agent.selftest import add_arguments

    add_arguments(st)
    st.set_defaults(func=cmd_gateway_selftest)

    ix = sub.add_parser("influx", help="InfluxDB set-up, as its admin (influx.username)")
    ix.add_argument("action", choices=("init",))
    ix.add_argument("--wait", type=float, default=60.0, help="seconds to wait for InfluxDB to answer")
    ix.set_defaults(func=cmd_influx)

    ex = sub.add_parser(
        "experiments",
        help="protocol experiments on gateways: submit, wait, results (the REST client); the store, the scheduler",
    )
    ex.add_argument("action", choices=("migrate", "scheduler", *CLIENT_ACTIONS))
    client_arguments(ex)
    ex.set_defaults(func=cmd_experiments)

    tk = sub.add_parser("tokens", help="bearer tokens of the experiments service")
    tk.add_argument("action", choices=("create", "list", "revoke"))
    tk.add_argument("target", nargs="?", default=None, help="revoke: a user name (all its tokens) or a token id")
    tk.add_argument("--name", default=None, help="create: the user the token is for (created if new)")
    tk.add_argument("--role", default=None, choices=("experimenter", "operator"), help="create: the user's role")
    tk.set_defaults(func=cmd_tokens)

    cfg = sub.add_parser("config", help="settings")
    cfg.add_argument("action", choices=("show",))
    cfg.set_defaults(func=cmd_config)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
        setup_logging(args.log_level or settings.log_level)
        return args.func(settings, args)
    except ConfigurationError as exc:
        print(f"smartzone: configuration error: {exc}", file=sys.stderr)
        return 2
    except InfluxError as exc:
        print(f"smartzone: InfluxDB error: {escape(str(exc))}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
