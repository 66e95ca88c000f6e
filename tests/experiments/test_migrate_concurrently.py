"""Several processes opening a fresh store at the same moment (the API, the scheduler and a CLI command at
a deployment's first start) must all succeed: the migration lock makes them take turns."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from experiments.db import current_revision, engine_for
from tests.conftest import wait_for

REPO = Path(__file__).resolve().parents[2]
PROCESSES = 4
# waits for the start file, then migrates: the processes start their upgrades within a few milliseconds
# (mode "unlocked" runs Alembic without the lock: what failed before it, "table ... already exists")
SCRIPT = """
import os, sys, time
from alembic import command
from experiments.db import alembic_config, current_revision, engine_for, migrate
url, go, mode, ready = sys.argv[1:5]
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.001)
engine = engine_for(url)
if mode == "locked":
    migrate(engine)
else:
    command.upgrade(alembic_config(engine), "head")
print(current_revision(engine))
"""


def run_concurrently(url: str, tmp_path: Path, mode: str = "locked") -> list[subprocess.CompletedProcess[str]]:
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, url, str(go), mode, str(tmp_path / f"ready-{i}")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(PROCESSES)
    ]
    # every process imported and waiting: then they all start at once
    ready = lambda: all((tmp_path / f"ready-{i}").exists() for i in range(PROCESSES))  # noqa: E731
    assert wait_for(ready, 60, 0.01)
    go.touch()
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def test_processes_migrating_a_fresh_store_at_once_all_succeed(sql_url, tmp_path):
    results = run_concurrently(sql_url, tmp_path)
    for r in results:
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout.strip() == "0002"
    engine = engine_for(sql_url)
    try:
        assert current_revision(engine) == "0002"
    finally:
        engine.dispose()
