"""Everything of issue 16 running together, for the end-to-end tests (tests/experiments/test_end_to_end.py).

Real processes only: influxd (the session's), the central broker as docker-compose configures it (password
file, ACL, the dynamic-security plugin: ``dynsec_broker``), the ingest worker logged in as
``smartzone-ingest-1``, the API (``smartzone api``), the scheduler (``smartzone experiments scheduler``) with
short timings, the experiments store (SQLite in the stack's data folder, shared by the API and the scheduler
with the experiments key) and two gateways of the demo registry that have a BLE radio, each with its local
Mosquitto and its agent (``python -m gateways.agent run``). The suite runs as root, so the agents run the
experiments as another user (``nobody``), as on a Pi.

The experimenter's side is the CLI client (``cli.client.run``), as a user types it: ``Stack.cli(...)``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import redirect_stderr
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from cli import client, services
from cli.main import build_parser
from experiments.db import open_store
from experiments.tokens import create_token
from gateways.agent.experiments import proc_start_time
from gateways.agent.selftest import MOSQUITTO_PERSISTENCE
from smartzone.settings import Settings
from storage.influx import Influx
from tests.conftest import ComposeBroker, drop_zone_databases, settings_env, wait_for, zone_settings
from tests.gateways.agent_stack import REPO, AgentProcess, IngestProcess, agent_toml, fake_root, gateway_mosquitto

GATEWAYS = ("gw-nationalestraat", "gw-sint-andries")  # both have pi.radios.ble (gateways/registry/antwerp.yaml)
SANDBOX_USER = "nobody"
INGEST_USER = "smartzone-ingest-1"
TIMINGS = {"LAUNCH_LEAD_S": "0", "START_GRACE_S": "20", "FINISH_GRACE_S": "20", "TICK_S": "0.2"}


def experiment_python(folder: Path) -> Path:
    """An interpreter the experiments' user may run, with paho-mqtt: a virtual environment of Debian's python3
    holding a copy of the suite's paho (on a Pi: the agent's venv under /opt, world-readable). The suite's own
    interpreter lives under /root (0700), which ``nobody`` cannot enter."""
    base = "/usr/bin/python3"
    version = subprocess.run(
        [base, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True, check=True
    ).stdout.strip()
    (folder / "bin").mkdir(parents=True)
    os.symlink(base, folder / "bin" / "python3")
    (folder / "pyvenv.cfg").write_text(f"home = {Path(base).parent}\ninclude-system-site-packages = false\n")
    site = folder / "lib" / f"python{version}" / "site-packages"
    site.mkdir(parents=True)
    import paho

    shutil.copytree(Path(paho.__file__).parent, site / "paho", ignore=shutil.ignore_patterns("__pycache__"))
    for p in [folder, *folder.rglob("*")]:
        if not p.is_symlink():
            p.chmod(0o755 if p.is_dir() else 0o644)
    (folder / "bin").chmod(0o755)
    return folder / "bin" / "python3"


@dataclass
class Proc:
    """A ``smartzone`` subprocess with its log."""

    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None

    def start(self) -> Proc:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli", *self.argv], env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO
        )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, text: str, timeout: float = 30.0) -> None:
        def seen() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log()[-3000:]
            return text in self.log()

        assert wait_for(seen, timeout, 0.05), f"{self.argv[0]}: no {text!r} in its log: {self.log()[-3000:]}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@dataclass
class Gateway:
    """One gateway: its local broker and its agent (stopped and started again by the tests)."""

    gid: str
    base: Path
    local: services.Service
    agent: AgentProcess
    state: Path

    def running_pids(self) -> list[int]:
        """The experiments' processes the agent left a state file for and that are still alive."""
        out = []
        for st in self.state.glob("*/state.json"):
            pid = json.loads(st.read_text()).get("pid")
            if pid and alive(pid):
                out.append(pid)
        return out


def alive(pid: int) -> bool:
    seen = proc_start_time(pid)
    return seen is not None and seen[1] not in ("Z", "X")


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Stack:
    tmp: Path
    broker: ComposeBroker
    settings: Settings
    influx: Influx
    api_url: str
    token: str  # the experimenter "alice"'s
    ingest: IngestProcess
    api: Proc
    scheduler: Proc
    gateways: dict[str, Gateway] = field(default_factory=dict)

    # -- the experimenter's side ------------------------------------------------------------------------
    def cli(self, *argv: str, token: str | None = None) -> Result:
        """``smartzone experiments <argv>`` through the CLI client, as a user runs it (SMARTZONE_TOKEN and
        SMARTZONE_API_URL in the environment); returns the exit code, stdout and stderr."""
        args = build_parser().parse_args(["experiments", *argv])
        out, err = io.StringIO(), io.StringIO()
        saved = {k: os.environ.get(k) for k in ("SMARTZONE_TOKEN", "SMARTZONE_API_URL")}
        os.environ["SMARTZONE_TOKEN"], os.environ["SMARTZONE_API_URL"] = token or self.token, self.api_url
        try:
            with redirect_stderr(err):
                code = client.run(self.settings, args, out)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        return Result(code, out.getvalue(), err.getvalue())

    def submit(self, artifact: Path, *, gateways: tuple[str, ...], duration: int, **kw: str) -> int:
        argv = ["submit", "--name", kw.pop("name", artifact.stem), "--artifact", str(artifact)]
        argv += ["--gateways", ",".join(gateways), "--radio", kw.pop("radio", "ble"), "--duration", str(duration)]
        for k, v in kw.items():
            argv += [f"--{k}", v]
        r = self.cli(*argv)
        assert r.code == 0, (r, self.logs())
        return int(r.out.strip().splitlines()[-1])

    def get(self, exp_id: int) -> dict[str, Any]:
        """The experiment as the API shows it (for conditions; the assertions read the CLI's output)."""
        resp = httpx.get(f"{self.api_url}/v1/experiments/{exp_id}", headers={"Authorization": f"Bearer {self.token}"})
        resp.raise_for_status()
        return dict(resp.json())

    def wait_state(self, exp_id: int, *states: str, timeout: float = 60.0) -> dict[str, Any]:
        got: dict[str, Any] = {}

        def there() -> bool:
            nonlocal got
            got = self.get(exp_id)
            return got["state"] in states

        assert wait_for(there, timeout, 0.2), (exp_id, states, got, self.logs())
        return got

    def logs(self) -> str:
        parts = [f"--- scheduler\n{self.scheduler.log()[-2500:]}", f"--- api\n{self.api.log()[-1500:]}"]
        parts += [f"--- agent {g.gid}\n{g.agent.log()[-2000:]}" for g in self.gateways.values()]
        return "\n".join(parts)

    def experiments_rows(self, query: str) -> list[dict[str, Any]]:
        return list(self.influx.rows(query, self.settings.influx.experiments_database))

    # -- the gateways ----------------------------------------------------------------------------------
    def online(self, gid: str) -> bool | None:
        """What the scheduler last heard of the gateway (table ``gateways``): True online, False offline."""
        from experiments.db import Gateway as GatewayRow

        sessions = open_store(self.settings.sql_url)
        try:
            with sessions() as s:
                row = s.get(GatewayRow, gid)
                return None if row is None else row.online
        finally:
            sessions.kw["bind"].dispose()

    def start_agent(self, gid: str) -> None:
        g = self.gateways[gid]
        g.agent.start()
        g.agent.wait_log("central broker connected", count=g.agent.starts)

    def close(self) -> None:
        for g in self.gateways.values():
            g.agent.stop()
            for st in g.state.glob("*/state.json"):  # experiments outlive their agent by design: end them here
                pid = json.loads(st.read_text()).get("pid")
                if pid:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(pid, signal.SIGKILL)
            g.local.stop()
        self.scheduler.stop()
        self.api.stop()
        self.ingest.stop()
        drop_zone_databases(self.influx, self.settings)
        self.influx.close()
        for g in self.gateways.values():
            shutil.rmtree(g.base, ignore_errors=True)


@contextlib.contextmanager
def running_stack(tmp: Path, influxd: services.InfluxService, broker: ComposeBroker) -> Iterator[Stack]:
    data = tmp / "data"
    settings = zone_settings(
        data,
        influxd.url,
        name="e2e",
        mqtt={"host": "127.0.0.1", "port": broker.port, "client_id": INGEST_USER, "share_group": ""},
        ingest={"flush_interval": 0.05, "metrics_interval": 0.5},
    )
    influx = Influx(settings.influx)
    api_port = services.free_port()
    sessions = open_store(settings.sql_url)  # migrated once here, before the API and the scheduler start
    now = datetime.now(UTC)
    _, secret = create_token(sessions, "alice", "experimenter", now)
    sessions.kw["bind"].dispose()
    env = settings_env(settings) | {
        "SMARTZONE_API__PORT": str(api_port),
        "SMARTZONE_API__RATE_LIMIT": "1000",
        "SMARTZONE_API__RATE_BURST": "1000",
    }
    api = Proc(["api"], env, tmp / "api.log")
    sched_env = env | {f"SMARTZONE_EXPERIMENTS__{k}": v for k, v in TIMINGS.items()}
    sched_env |= {
        "SMARTZONE_MQTT__HOST": "127.0.0.1",
        "SMARTZONE_EXPERIMENTS__BROKER_PASSWORD": broker.passwords["smartzone-experiments"],
    }
    scheduler = Proc(["experiments", "scheduler"], sched_env, tmp / "scheduler.log")
    ingest = IngestProcess(settings, INGEST_USER, broker.passwords[INGEST_USER], tmp / "ingest.log")
    stack = Stack(tmp, broker, settings, influx, f"http://127.0.0.1:{api_port}", secret, ingest, api, scheduler)
    bases: list[Path] = []
    try:
        ingest.start()
        api.start()
        scheduler.start()
        pybase = Path(tempfile.mkdtemp(prefix="szx-python-"))
        bases.append(pybase)
        pybase.chmod(0o755)
        python = experiment_python(pybase / "venv")
        for gid in GATEWAYS:
            base = Path(tempfile.mkdtemp(prefix=f"szx-{gid}-"))  # not pytest's 0700 folders: nobody walks in
            bases.append(base)
            base.chmod(0o755)
            (base / "etc").mkdir(mode=0o755)
            local = gateway_mosquitto(base / "local").start()
            state = base / "experiments"
            cfg = agent_toml(
                base / "etc" / "agent.toml",
                gid,
                local.port,
                broker.port,
                base / "spool",
                password=broker.passwords[gid],
                health_interval=5,
                experiments={"state_dir": str(state), "user": SANDBOX_USER, "kill_grace": 2, "python": str(python)},
                radio_devices={"ble": f"{base}/simulated-hci0"},
            )
            root = fake_root(base / "root")
            for folder in (str(base / "spool"), MOSQUITTO_PERSISTENCE):  # the self-test writes in both, on the Pi
                (root / folder.lstrip("/")).mkdir(parents=True, exist_ok=True)
            agent = AgentProcess(cfg, root, base / "agent.log")
            stack.gateways[gid] = Gateway(gid, base, local, agent, state)
            stack.start_agent(gid)
        scheduler.wait_log("MQTT subscribed")
        scheduler.wait_log(f"desired of {GATEWAYS[-1]}")  # it heard both agents (status: a desired document each)
        assert wait_for(lambda: _up(stack.api_url), 30, 0.1), api.log()[-3000:]
        yield stack
    finally:
        stack.close()
        for b in bases:
            shutil.rmtree(b, ignore_errors=True)


def _up(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{url}/openapi.json", timeout=2).status_code == 200
    return False
