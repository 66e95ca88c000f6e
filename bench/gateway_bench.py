"""``python bench/run.py gateway``: the gateway agent replaying its spool to the centre after an outage.

A spool holding ``--n`` readings (default 720,000: one hour of a busy gateway at 200 readings/s, one reading per
message, the simulator's generic-JSON messages of the zone cycled) is written with the agent's own Spool, as the
agent fills it during an outage. Then the agent (``python -m gateways.agent run``, a subprocess) starts with the
central broker up: readings/s from its start until a subscriber on the central broker (QoS 1, acking) has
counted every one, and the agent's peak RSS. In the same run, on the same central broker (mosquitto with the
shipped configuration, loopback) and with the same subscriber, the live reference: ``--live-n`` of the same
messages published by a paho publisher (QoS 1, as the simulator publishes). Last line:
``gateway: replay_rps=<n> live_rps=<n> ratio=<x> hour_replay_s=<n> agent_rss_mb=<n>``.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from bench.ceilings import counter_proc, mqtt_ceiling
from bench.workloads import bench_registry, make_messages
from cli import services
from gateways.agent.spool import Spool

REPO = Path(__file__).resolve().parent.parent
GATEWAY = "bench-gw"


def _local_broker(folder: Path) -> services.Service:
    folder.mkdir(parents=True, exist_ok=True)
    port = services.free_port()
    conf = folder / "mosquitto.conf"
    lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", "persistence false", "log_dest stderr"]
    if os.geteuid() == 0:
        lines.append("user root")
    conf.write_text("\n".join(lines) + "\n")
    return services.Service("mosquitto", "127.0.0.1", port, folder, [services.which("mosquitto"), "-c", str(conf)])


def gateway_bench(args: argparse.Namespace) -> str:
    with tempfile.TemporaryDirectory(prefix="sz-bench-gw-") as tmp_s:
        tmp = Path(tmp_s)
        pool = make_messages(bench_registry(tmp), 20_000, "single", seed=7)
        native = [(t.split("/", 2)[2], p) for t, p, _ in pool]  # as the gateway's radios publish them locally
        central = services.mosquitto(tmp / "central").start()
        local = _local_broker(tmp / "local").start()
        try:
            live_msgs = [
                (f"gw/{GATEWAY}/{t}", p, ()) for t, p in itertools.islice(itertools.cycle(native), args.live_n)
            ]
            live_rps, _ = mqtt_ceiling(central.port, live_msgs)

            spool_dir = tmp / "spool"
            spool = Spool(spool_dir, 4 << 30)
            t0 = time.perf_counter()
            stamp = time.time_ns() // 1000 - 3_600_000_000
            it = itertools.cycle(native)
            left = args.n
            while left:
                k = min(10_000, left)
                batch = []
                for _ in range(k):
                    topic, payload = next(it)
                    stamp += 5_000  # 200 readings/s
                    batch.append((stamp, topic, payload))
                spool.append(batch)
                left -= k
            fill_s = time.perf_counter() - t0
            spool_mb = spool.size() / 1e6
            spool.close()

            conf = tmp / "agent.toml"
            conf.write_text(
                f'gateway_id = "{GATEWAY}"\n[local]\nport = {local.port}\nrelay = ["#"]\n'
                f'[central]\nhost = "127.0.0.1"\nport = {central.port}\n'
                f'[spool]\ndir = "{spool_dir}"\nmax_bytes = {4 << 30}\n[health]\ninterval = 3600\n'
            )
            ctx = mp.get_context("fork")
            ready, q = ctx.Event(), ctx.Queue()
            counter = ctx.Process(target=counter_proc, args=(central.port, args.n, ready, q))
            counter.start()
            ready.wait(10)
            peak = [0]
            log = open(tmp / "agent.log", "wb")  # noqa: SIM115 - closed below
            start = time.time()
            agent = subprocess.Popen(
                [sys.executable, "-m", "gateways.agent", "run", "--config", str(conf)],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            stop = threading.Event()

            def sample() -> None:
                proc = psutil.Process(agent.pid)
                while not stop.wait(0.2):
                    try:
                        peak[0] = max(peak[0], proc.memory_info().rss)
                    except psutil.Error:
                        return

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            _first, last, n, _cpu = q.get(timeout=3600)
            stop.set()
            counter.join()
            agent.terminate()
            agent.wait(60)
            log.close()
        finally:
            local.stop()
            central.stop()
    replay_s = last - start
    replay_rps = n / replay_s
    hour_s = 720_000 / replay_rps
    scaled = "" if args.n >= 720_000 else f" (extrapolated from {args.n:,} readings)"
    print(f"spool: {args.n:,} readings, {spool_mb:.0f} MB, written in {fill_s:.1f} s")
    print(f"replay: {n:,} readings reached the centre in {replay_s:.1f} s = {replay_rps:,.0f} readings/s")
    print(f"live MQTT publish (paho, QoS 1, same broker and subscriber): {live_rps:,.0f} readings/s")
    print(f"ratio replay/live: {replay_rps / live_rps:.2f}")
    print(f"one hour at 200 readings/s (720,000): {hour_s:.0f} s{scaled}; limit 300 s")
    print(f"agent peak RSS: {peak[0] / 1e6:.1f} MB")
    return (
        f"gateway: replay_rps={replay_rps:.0f} live_rps={live_rps:.0f} ratio={replay_rps / live_rps:.2f} "
        f"hour_replay_s={hour_s:.0f} agent_rss_mb={peak[0] / 1e6:.1f}"
    )
