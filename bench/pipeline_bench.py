"""Pipeline-only microbenchmark: µs of ``process`` + ``render`` per message, by message kind, no services.

    python bench/run.py pipeline [--rounds 7] [--before /path/to/older/worktree]

Kinds: generic JSON (one reading per message), SenML packs of 10, ChirpStack ``up`` events in JSON and in
protobuf (Cayenne LPP decoded by our codec, one to three receiving gateways: one radio point each); the
messages are those of ``bench/run.py ingest`` and ``lorawan``. Each round times every kind once over its
whole message list, after one warm-up pass (the worker runs with warm caches), in the process's CPU time
(``time.process_time``: time lost to other processes on a shared machine is not counted); the figure is
the median of the rounds.

``--before`` times another checkout the same way, side by side: one process per tree and round, trees
alternated (old, new, old, new ...), so that a noisy machine slows both alike; it prints medians per tree
and the ratios new/old. A tree without ``Pipeline.render`` (before the Point contract) rendered inside
``process``, so there ``process`` alone is timed. One tree's run is
``PYTHONPATH=<tree> python bench/pipeline_bench.py --child``: it prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

KINDS = ("generic_json", "senml", "lorawan_json", "lorawan_protobuf")
SIZES = {"generic_json": 20_000, "senml": 50_000, "lorawan_json": 3_000, "lorawan_protobuf": 3_000}


def _child(rounds: int) -> dict[str, list[float]]:
    """Runs in the tree on ``sys.path``: per kind, µs per message of each round."""
    import importlib
    import importlib.util

    # the tree's own workloads; a checkout older than bench/workloads.py kept them in its bench/run.py
    w = importlib.import_module("bench.workloads" if importlib.util.find_spec("bench.workloads") else "bench.run")
    bench_registry, lorawan_messages, lorawan_registry, make_messages = (
        w.bench_registry,
        w.lorawan_messages,
        w.lorawan_registry,
        w.make_messages,
    )
    from ingest.pipeline import Pipeline
    from smartzone.registry import Registry
    from smartzone.settings import DEFAULT_ROUTES

    tmp = Path(tempfile.mkdtemp(prefix="smartzone-pipebench-"))
    generic_reg, lora_reg = bench_registry(tmp), lorawan_registry(tmp)
    raw = {
        "generic_json": (generic_reg, make_messages(generic_reg, SIZES["generic_json"], "single", seed=1)),
        "senml": (generic_reg, make_messages(generic_reg, SIZES["senml"], "senml", seed=2)),
        "lorawan_json": (lora_reg, lorawan_messages(lora_reg, SIZES["lorawan_json"], "json")[0]),
        "lorawan_protobuf": (lora_reg, lorawan_messages(lora_reg, SIZES["lorawan_protobuf"], "protobuf")[0]),
    }
    received = datetime.now(UTC)
    work = {}
    for kind, (reg_path, messages) in raw.items():
        pipe = Pipeline(
            Registry.load(reg_path),
            list(DEFAULT_ROUTES),
            max_payload_bytes=65_536,
            max_future=timedelta(minutes=5),
            max_age=timedelta(days=30),
        )
        msgs = [pipe.message(topic, payload, received) for topic, payload, _ in messages]
        work[kind] = (pipe, msgs)
    results: dict[str, list[float]] = {k: [] for k in KINDS}
    for r in range(rounds + 1):  # round 0 warms the caches
        for kind in KINDS:
            pipe, msgs = work[kind]
            process = pipe.process
            render = getattr(pipe, "render", None)
            if render is None:  # before the Point contract: process rendered the lines itself
                t0 = time.process_time()
                for m in msgs:
                    process(m)
                dt = time.process_time() - t0
            else:
                t0 = time.process_time()
                for m in msgs:
                    render(m, process(m))
                dt = time.process_time() - t0
            if r:
                results[kind].append(dt * 1e6 / len(msgs))
    for kind, (pipe, _msgs) in work.items():  # the runs must be the clean ones the figures claim
        if pipe.stats.dead_lettered:
            raise SystemExit(f"{kind}: {pipe.stats.dead_lettered} dead letters: {dict(pipe.stats.reasons)}")
    return results


def _run_tree(tree: Path, rounds: int) -> dict[str, list[float]]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", "--rounds", str(rounds)],
        env=env,
        cwd=tree,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def pipeline_bench(args: argparse.Namespace) -> str:
    here = Path(__file__).resolve().parent.parent
    trees = {"new": here} if not args.before else {"old": Path(args.before).resolve(), "new": here}
    runs: dict[str, dict[str, list[float]]] = {t: {k: [] for k in KINDS} for t in trees}
    for p in range(args.processes):
        for name, tree in trees.items():  # alternated: old, new, old, new ...
            res = _run_tree(tree, args.rounds)
            for k in KINDS:
                runs[name][k].extend(res[k])
            print(
                f"pass {p + 1} {name}: " + "  ".join(f"{k}={statistics.median(res[k]):.2f}" for k in KINDS), flush=True
            )
    med = {t: {k: statistics.median(v) for k, v in r.items()} for t, r in runs.items()}
    for t in trees:
        print(f"median µs/message {t} ({trees[t]}): " + "  ".join(f"{k}={med[t][k]:.2f}" for k in KINDS))
    if "old" in med:
        ratios = {k: med["new"][k] / med["old"][k] for k in KINDS}
        print("ratios new/old: " + "  ".join(f"{k}={ratios[k]:.3f}" for k in KINDS))
        return "pipeline: " + " ".join(f"{k}_ratio={ratios[k]:.3f}" for k in KINDS)
    return "pipeline: " + " ".join(f"{k}_us={med['new'][k]:.2f}" for k in KINDS)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rounds", type=int, default=7, help="timed rounds per process")
    p.add_argument("--processes", type=int, default=3, help="processes per tree (alternated between trees)")
    p.add_argument("--before", help="another checkout (git worktree) to time side by side")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(_child(args.rounds)))
    else:
        print(pipeline_bench(args))


if __name__ == "__main__":
    main()
