"""The gateway agent's side of experiments (issue 16, gateways/agent/experiments.py), on real processes.

A real central Mosquitto (the anonymous ``mosquitto`` fixture: the dynamic-security broker is the scheduler's
business), the gateway's local Mosquitto, the agent as a subprocess (``python -m gateways.agent run``) and a small
stdlib HTTP server in this file standing in for the experiments API (``GET .../artifact`` and ``PUT
.../results`` with the contract's upload token and ``X-Smartzone-Gateway`` header; the real router is another
helper's). The suite runs as root, so experiments run as another user (``nobody``), as on a Pi.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import itertools
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateways.agent import config as agent_config
from gateways.agent.experiments import Malformed, Runner, log_tail, proc_start_time, rfc3339_exact, validate
from tests.conftest import wait_for
from tests.gateways.agent_stack import AgentProcess, agent_toml, fake_root, gateway_mosquitto

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox's own user needs root (as on the Pi)")

SANDBOX_USER = "nobody"
PASSWORD = "gateway-secret-7f3a"  # the agent's central password in these tests
IDS = itertools.count(1000)
EXPERIMENT_PYTHON = "/usr/bin/python3"

OK = b"""import os, pathlib, time
pathlib.Path(os.environ["SZX_RESULTS_DIR"], "out.txt").write_text("started %f" % time.time())
print("probe done", flush=True)
"""
CRASH = b"""import sys
print("setting up", flush=True)
print("boom: the radio is gone", file=sys.stderr)
sys.exit(3)
"""
MEMORY = b"""x = bytearray(400 * 2**20)
"""
CPU = b"""while True:
    pass
"""
SLEEP = b"""import time
print("up", flush=True)
time.sleep(600)
"""
PROBE = b"""import json, os, pathlib
params = json.load(open(os.environ["SZX_PARAMETERS"]))
out = {"env": dict(os.environ), "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups()}
for key in ("password_file", "agent_environ", "desired", "state_dir"):
    try:
        path = params[key]
        out[key] = os.listdir(path) if os.path.isdir(path) else open(path, "rb").read().decode("latin-1")
    except OSError as exc:
        out[key + "_error"] = type(exc).__name__
pathlib.Path(os.environ["SZX_RESULTS_DIR"], "probe.json").write_text(json.dumps(out))
# then it tries to have the agent (root) read the password for it: its logs and a result become links to it
for name in ("stdout.log", "stderr.log", os.path.join(os.environ["SZX_RESULTS_DIR"], "pw")):
    if os.path.lexists(name):
        os.remove(name)
    os.symlink(params["password_file"], name)
"""


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the stand-in for the experiments API ----------------------------------------------------------------
class Api:
    """Serves artifacts and takes results bundles as the contract's agent-side endpoints do."""

    def __init__(self) -> None:
        self.artifacts: dict[int, bytes] = {}
        self.results: dict[tuple[int, str], bytes] = {}
        self.tokens: dict[int, str] = {}
        self.refused: list[str] = []
        self.fail: dict[int, list[int]] = {}  # experiment id -> statuses to answer its next PUTs with
        self.puts: dict[int, int] = {}
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _who(self) -> tuple[int, list[str]] | None:
                parts = self.path.strip("/").split("/")  # v1 experiments <id> ...
                try:
                    exp_id = int(parts[2])
                except (IndexError, ValueError):
                    return None
                ok = self.headers.get("Authorization") == f"Bearer {api.tokens.get(exp_id)}"
                if not ok or not self.headers.get("X-Smartzone-Gateway"):
                    api.refused.append(self.path)
                    self.send_response(401)
                    self.end_headers()
                    return None
                return exp_id, parts

            def do_GET(self) -> None:
                who = self._who()
                if who is None:
                    return
                body = api.artifacts[who[0]]
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_PUT(self) -> None:
                who = self._who()
                if who is None:
                    return
                exp_id, parts = who
                body = self.rfile.read(int(self.headers["Content-Length"]))
                api.puts[exp_id] = api.puts.get(exp_id, 0) + 1
                if api.fail.get(exp_id):
                    self.send_response(api.fail[exp_id].pop(0))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                api.results[(exp_id, parts[4])] = body
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bundle(self, exp_id: int, gw: str) -> dict[str, bytes]:
        with tarfile.open(fileobj=io.BytesIO(self.results[(exp_id, gw)]), mode="r:gz") as tar:
            return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def api() -> Iterator[Api]:
    a = Api()
    yield a
    a.server.shutdown()


# -- a gateway: its broker, its agent, a watcher on the centre --------------------------------------------
class Gateway:
    def __init__(self, central_port: int, api: Api, gid: str, **experiments: object) -> None:
        self.gid, self.api, self.central_port = gid, api, central_port
        # as on a Pi: /etc/smartzone-gateway is world-traversable, the password in it 0600
        self.base = Path(tempfile.mkdtemp(prefix="szx-agent-"))
        self.base.chmod(0o755)
        etc = self.base / "etc"
        etc.mkdir(mode=0o755)
        self.local = gateway_mosquitto(self.base / "local").start()
        self.state = self.base / "experiments"
        # the suite's interpreter lives under /root (0700): the experiments' user could not run it (on a Pi the
        # agent's venv is under /opt, world-readable, and the default)
        settings = {"state_dir": str(self.state), "user": SANDBOX_USER, "kill_grace": 2, "python": EXPERIMENT_PYTHON}
        self.config = agent_toml(
            etc / "agent.toml",
            gid,
            self.local.port,
            central_port,
            self.base / "spool",
            password=PASSWORD,
            experiments=settings | experiments,
            radio_devices={"ble": f"{self.base}/simulated-hci0"},
        )
        self.agent = AgentProcess(self.config, fake_root(self.base / "root"), self.base / "agent.log")
        self.messages: list[tuple[str, bytes]] = []
        self.cond = threading.Condition()
        self.watch = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"watch-{gid}", protocol=mqtt.MQTTv5)
        self.watch.on_connect = lambda c, *a: c.subscribe(f"gw/{gid}/#", 1)
        self.watch.on_message = self._on_message
        self.watch.connect("127.0.0.1", central_port)
        self.watch.loop_start()
        self.pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"centre-{gid}", protocol=mqtt.MQTTv5)
        self.pub.connect("127.0.0.1", central_port)
        self.pub.loop_start()

    def _on_message(self, c: Any, u: Any, m: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.messages.append((m.topic, bytes(m.payload)))

    def start(self) -> Gateway:
        self.agent.start()
        self.agent.wait_log("central broker connected")
        return self

    # the centre's side
    def entry(
        self, script: bytes, *, start_in: float = 1.0, duration: float = 30.0, kind: str = "script", **over: Any
    ) -> dict[str, Any]:
        exp_id = next(IDS)
        self.api.artifacts[exp_id] = script
        self.api.tokens[exp_id] = f"token-{exp_id}"
        now = time.time()
        e: dict[str, Any] = {
            "id": exp_id,
            "name": "test",
            "artifact": {
                "url": f"{self.api.url}/v1/experiments/{exp_id}/artifact",
                "sha256": hashlib.sha256(script).hexdigest(),
                "size": len(script),
                "kind": kind,
                "filename": "probe.py",
            },
            "start": rfc3339(now + start_in),
            "deadline": rfc3339(now + start_in + duration),
            "radio": "ble",
            "parameters": {"n": 1},
            "gateways": [self.gid],
            "mqtt": {"username": f"exp-{exp_id}-{self.gid}", "password": f"pw-{exp_id}", "prefix": "p/"},
            "upload": {"url": f"{self.api.url}/v1/experiments/{exp_id}/gateways/{self.gid}/results", "token": ""},
            "limits": {},
        }
        e["upload"]["token"] = self.api.tokens[exp_id]
        for k, v in over.items():
            e[k] = v
        return e

    def desire(self, *entries: dict[str, Any], raw: bytes | None = None) -> None:
        doc = {"version": 1, "generated": rfc3339(time.time()), "experiments": list(entries)}
        payload = raw if raw is not None else json.dumps(doc).encode()
        self.pub.publish(f"gw/{self.gid}/experiments/desired", payload, qos=1, retain=True).wait_for_publish(5)

    # the agent's side, as the centre sees it
    def reports(self) -> list[dict[str, Any]]:
        with self.cond:
            raw = [p for t, p in self.messages if t == f"gw/{self.gid}/experiments/reported"]
        return [json.loads(p) for p in raw]

    def now(self, exp_id: int) -> dict[str, Any] | None:
        for doc in reversed(self.reports()):
            return next((e for e in doc["experiments"] if e["id"] == exp_id), None)
        return None

    def phases(self, exp_id: int) -> list[str]:
        seen: list[str] = []
        for doc in self.reports():
            for e in doc["experiments"]:
                if e["id"] == exp_id and (not seen or seen[-1] != e["phase"]):
                    seen.append(e["phase"])
        return seen

    def wait_phase(self, exp_id: int, *phases: str, timeout: float = 20.0) -> dict[str, Any]:
        ok = wait_for(lambda: (self.now(exp_id) or {}).get("phase") in phases, timeout, 0.05)
        assert ok, (exp_id, phases, self.phases(exp_id), self.agent.log()[-3000:])
        got = self.now(exp_id)
        assert got is not None
        return got

    def wait_uploaded(self, exp_id: int, timeout: float = 20.0) -> dict[str, Any]:
        ok = wait_for(lambda: (self.now(exp_id) or {}).get("results_uploaded") is True, timeout, 0.05)
        assert ok, (self.now(exp_id), self.agent.log()[-3000:])
        return self.api.bundle(exp_id, self.gid)

    def close(self) -> None:
        self.agent.stop()
        for state in self.state.glob("*/state.json"):  # experiments outlive the agent by design: end them here
            pid = json.loads(state.read_text()).get("pid")
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        for c in (self.watch, self.pub):
            c.disconnect()
            c.loop_stop()
        self.local.stop()
        shutil.rmtree(self.base, ignore_errors=True)


GW_IDS = itertools.count(1)


@pytest.fixture
def gateway(mosquitto, api) -> Iterator[Any]:
    made: list[Gateway] = []

    def make(**experiments: object) -> Gateway:
        g = Gateway(mosquitto.port, api, f"gw-x{next(GW_IDS)}", **experiments)
        made.append(g)
        return g.start()

    yield make
    for g in made:
        g.close()


def gone(pid: int) -> bool:
    seen = proc_start_time(pid)
    return seen is None or seen[1] in ("Z", "X")


# -- units -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[experiments]\nkill_grace = -1", "experiments.kill_grace"),
        ('[experiments]\nuser = ""', "experiments.user"),
        ("[experiments]\nmemory_bytes = 0", "experiments.memory_bytes"),
        ("[experiments]\nstate_dir = 3", "experiments.state_dir"),
        ('[experiments]\nsandbox = "yes"', "experiments.sandbox"),
        ('[experiments.radio_devices]\nlorawan = "/dev/spidev0.0"', "experiments.radio_devices.lorawan"),
        ("[selftest]\ninterval = 5", "selftest.interval"),
    ],
)
def test_experiments_config_errors_name_the_key(tmp_path, toml, key):
    path = tmp_path / "agent.toml"
    path.write_text('gateway_id = "gw-a"\n[central]\nhost = "c"\n' + toml + "\n")
    with pytest.raises(agent_config.ConfigError) as err:
        agent_config.load(path)
    assert str(err.value).startswith(key), str(err.value)


def test_experiments_config_defaults(tmp_path):
    path = tmp_path / "agent.toml"
    path.write_text('gateway_id = "gw-a"\n[central]\nhost = "broker.example"\n')
    cfg = agent_config.load(path)
    x = cfg.experiments
    assert (x.user, x.kill_grace, x.mqtt_host, x.mqtt_port) == ("smartzone-exp", 10.0, "broker.example", 8883)
    assert (x.cpu_s, x.memory_bytes, x.file_bytes) == (3600, 256 * 2**20, 100 * 2**20)
    assert cfg.selftest.interval == 6 * 3600
    assert cfg.radio_devices()["ble"] == "hci0"


@pytest.mark.parametrize(
    ("change", "says", "has_id"),
    [
        ({"id": "42"}, "id '42' is not a positive integer", False),
        ({"radio": "lorawan"}, "unknown radio 'lorawan'", True),
        ({"start": "tomorrow"}, "start 'tomorrow' is not an RFC 3339 time", True),
        ({"deadline": "2026-12-02T17:00:00Z"}, "is not after start", True),
        ({"limits": {"cpu_s": -1}}, "limits.cpu_s", True),
        ({"upload": {"url": "file:///etc/passwd", "token": "t"}}, "upload.url", True),
    ],
)
def test_validate_names_what_is_wrong(change, says, has_id):
    entry = {
        "id": 42,
        "artifact": {"url": "https://a/x", "sha256": "0" * 64, "size": 1, "kind": "script", "filename": "p.py"},
        "start": "2026-12-02T17:05:00Z",
        "deadline": "2026-12-02T17:15:00Z",
        "radio": "ble",
        "mqtt": {"username": "u", "password": "p", "prefix": "gw/a/experiments/42/"},
        "upload": {"url": "https://a/r", "token": "t"},
    }
    assert validate(entry)["deadline_ts"] - validate(entry)["start_ts"] == 600
    with pytest.raises(Malformed) as err:
        validate(entry | change)
    assert says in str(err.value)
    assert (err.value.id == 42) is has_id


def test_the_experiments_deadline_keeps_its_fraction():
    t = datetime(2026, 12, 2, 17, 15, 0, 870_001, tzinfo=UTC).timestamp()
    assert rfc3339_exact(t) == "2026-12-02T17:15:00.870001Z"  # SZX_DEADLINE: never before the agent's own
    assert rfc3339_exact(float(int(t))) == "2026-12-02T17:15:00Z"


def test_log_tail_keeps_the_end_of_stderr_first(tmp_path):
    (tmp_path / "out").write_bytes(b"o" * 5000 + b"OUT-END")
    (tmp_path / "err").write_bytes(b"Traceback\nValueError: x\n")
    tail = log_tail(tmp_path / "out", tmp_path / "err")
    assert len(tail.encode()) == 2048 and tail.endswith("ValueError: x\n") and "OUT-END" in tail


# -- real processes ------------------------------------------------------------------------------------------
def test_a_script_runs_at_its_start_finishes_and_uploads_its_results(gateway, api):
    gw = gateway()
    e = gw.entry(OK, start_in=2.0)
    gw.desire(e)
    start = datetime.fromisoformat(e["start"]).timestamp()
    done = gw.wait_phase(e["id"], "finished")
    assert done["exit_code"] == 0 and done["error"] == "" and "probe done" in done["log_tail"]
    assert gw.phases(e["id"])[:1] in (["fetching"], ["waiting"])
    assert gw.phases(e["id"])[-3:] == ["waiting", "running", "finished"]
    files = gw.wait_uploaded(e["id"])
    assert set(files) == {"results/out.txt", "stdout.log", "stderr.log"}
    assert files["stdout.log"] == b"probe done\n"
    started = float(files["results/out.txt"].split()[1])
    assert start <= started < start + 3  # at its start, by the agent's clock, not before
    # the centre sees the whole list, retained: a late subscriber gets it at once
    late: list[bytes] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="late")
    c.on_message = lambda c, u, m: late.append(m.payload)
    c.connect("127.0.0.1", gw.central_port)
    c.subscribe(f"gw/{gw.gid}/experiments/reported", 1)
    c.loop_start()
    try:
        assert wait_for(lambda: bool(late), 5)
        assert json.loads(late[-1])["experiments"][0] | {"log_tail": ""} == done | {
            "results_uploaded": True,
            "log_tail": "",
        }
    finally:
        c.loop_stop()
        c.disconnect()
    assert api.refused == []
    # final, uploaded and no longer desired: forgotten, its folder and its credentials gone from the gateway
    gw.desire()
    assert wait_for(lambda: gw.reports()[-1]["experiments"] == [], 10), gw.reports()[-1]
    assert not (gw.state / str(e["id"]) / "run").exists()
    kept = (gw.state / str(e["id"]) / "state.json").read_text()
    assert e["upload"]["token"] not in kept and e["mqtt"]["password"] not in kept


def test_wrong_sha256_and_oversized_artifacts_are_refused(gateway, api):
    gw = gateway(artifact_max_bytes=4096)
    wrong = gw.entry(OK)
    wrong["artifact"]["sha256"] = hashlib.sha256(b"something else").hexdigest()
    big = gw.entry(OK + b"#" * 5000)  # over this gateway's 4 KiB
    longer = gw.entry(OK)
    api.artifacts[longer["id"]] = OK + b"# one more line\n"  # the server sends more than the centre declared
    gw.desire(wrong, big, longer)
    assert "sha256 mismatch" in gw.wait_phase(wrong["id"], "refused")["error"]
    assert "oversized" in gw.wait_phase(big["id"], "refused")["error"]
    assert "oversized" in gw.wait_phase(longer["id"], "refused")["error"]
    assert not (gw.state / str(wrong["id"]) / "run").exists()  # nothing of it was ever run
    assert [p for p in gw.phases(wrong["id"]) if p not in ("fetching", "refused")] == []


def test_a_crash_fails_with_its_exit_code_and_log_tail(gateway):
    gw = gateway()
    e = gw.entry(CRASH, start_in=0.5)
    gw.desire(e)
    got = gw.wait_phase(e["id"], "failed")
    assert got["exit_code"] == 3 and got["error"] == "exit code 3"
    assert "setting up" in got["log_tail"] and "boom: the radio is gone" in got["log_tail"]
    files = gw.wait_uploaded(e["id"])
    assert files["stderr.log"] == b"boom: the radio is gone\n"


def test_memory_and_cpu_limits_kill_and_are_named(gateway):
    gw = gateway()
    mem = gw.entry(MEMORY, start_in=0.5, limits={"memory_bytes": 128 * 2**20})
    cpu = gw.entry(CPU, start_in=0.5, limits={"cpu_s": 1})
    gw.desire(mem, cpu)
    got = gw.wait_phase(mem["id"], "failed")
    assert got["exit_code"] == 1 and "memory limit (memory_bytes=134217728)" in got["error"], got
    assert "MemoryError" in got["log_tail"]
    got = gw.wait_phase(cpu["id"], "failed", timeout=15)
    assert got["exit_code"] == -signal.SIGXCPU and got["error"] == "killed by the CPU time limit (cpu_s=1)", got


def test_cancel_stops_it_and_extend_moves_its_deadline(gateway):
    gw = gateway()
    cancel = gw.entry(SLEEP, start_in=0.5, duration=60)
    extend = gw.entry(SLEEP, start_in=0.5, duration=3)
    gw.desire(cancel, extend)
    pid = gw.wait_phase(cancel["id"], "running")["pid"]
    gw.wait_phase(extend["id"], "running")
    first_deadline = datetime.fromisoformat(extend["deadline"]).timestamp()
    extend["deadline"] = rfc3339(first_deadline + 3)
    gw.desire(extend)  # the cancelled one is no longer desired; the other runs 3 s longer
    got = gw.wait_phase(cancel["id"], "stopped")
    assert got["exit_code"] == -signal.SIGTERM and gone(pid)
    assert wait_for(lambda: time.time() > first_deadline + 1, 10)
    assert gw.now(extend["id"])["phase"] == "running"  # past its first deadline, still running
    got = gw.wait_phase(extend["id"], "finished", timeout=10)
    assert time.time() >= first_deadline + 3 and got["exit_code"] == -signal.SIGTERM
    assert "stopping" in gw.phases(extend["id"])
    gw.wait_uploaded(cancel["id"])  # a cancelled experiment's logs are uploaded too


def test_after_a_sigkill_the_restarted_agent_readopts_and_still_stops_at_the_deadline(gateway):
    gw = gateway()
    e = gw.entry(SLEEP, start_in=0.5, duration=6)
    gw.desire(e)
    pid = gw.wait_phase(e["id"], "running")["pid"]
    gw.agent.kill()
    assert not gone(pid)  # the experiment outlives the agent
    gw.agent.start()
    gw.agent.wait_log(f"experiment={e['id']} resumed phase=running pid={pid} alive=True")
    deadline = datetime.fromisoformat(e["deadline"]).timestamp()
    assert wait_for(lambda: gone(pid), deadline - time.time() + 5, 0.05)
    assert time.time() >= deadline
    got = gw.wait_phase(e["id"], "finished")
    assert got["pid"] == pid and got["exit_code"] is None  # not the new agent's child: status unknown
    gw.wait_uploaded(e["id"])


def test_the_deadline_holds_with_the_central_broker_down(gateway, mosquitto):
    gw = gateway()
    e = gw.entry(SLEEP, start_in=0.5, duration=4)
    gw.desire(e)
    pid = gw.wait_phase(e["id"], "running")["pid"]
    mosquitto.stop()
    deadline = datetime.fromisoformat(e["deadline"]).timestamp()
    assert wait_for(lambda: gone(pid), deadline - time.time() + 5, 0.05)
    assert time.time() >= deadline
    gw.messages.clear()
    mosquitto.start()  # the agent reconnects and reports what happened meanwhile
    got = gw.wait_phase(e["id"], "finished", timeout=20)
    assert got["exit_code"] == -signal.SIGTERM


def test_the_experiment_gets_only_its_environment_and_cannot_read_the_agents_credentials(gateway, api, tmp_path):
    gw = gateway()
    password_file = gw.config.parent / "central.password"
    params = {
        "password_file": str(password_file),
        "agent_environ": f"/proc/{gw.agent.proc.pid}/environ",
        "desired": str(gw.state / "desired.json"),  # every experiment's MQTT password and upload token
        "state_dir": str(gw.state),  # the other experiments' folders: not even listed
    }
    e = gw.entry(PROBE, start_in=0.5, parameters=params)
    gw.desire(e)
    done = gw.wait_phase(e["id"], "finished")
    files = gw.wait_uploaded(e["id"])
    probe = json.loads(files["results/probe.json"])
    # the links it left: kept as links in the bundle, never followed by the agent (log tail, bundle)
    bundle = api.results[(e["id"], gw.gid)]
    with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:gz") as tar:
        links = {m.name: m.linkname for m in tar.getmembers() if m.issym()}
    assert links == {n: str(password_file) for n in ("stdout.log", "stderr.log", "results/pw")}
    assert PASSWORD not in done["log_tail"] and PASSWORD.encode() not in gzip.decompress(bundle)
    nobody = pwd.getpwnam(SANDBOX_USER)
    assert (probe["uid"], probe["gid"], probe["groups"]) == (nobody.pw_uid, nobody.pw_gid, [])
    env = probe["env"]
    assert set(env) - {"PATH", "HOME", "LANG", "LC_CTYPE"} == {
        "SZX_EXPERIMENT_ID",
        "SZX_GATEWAY_ID",
        "SZX_RADIO",
        "SZX_START",
        "SZX_DEADLINE",
        "SZX_PARAMETERS",
        "SZX_RESULTS_DIR",
        "SZX_MQTT_HOST",
        "SZX_MQTT_PORT",
        "SZX_MQTT_TLS_CA",
        "SZX_MQTT_USERNAME",
        "SZX_MQTT_PASSWORD",
        "SZX_MQTT_PREFIX",
        "SZX_RADIO_DEVICE",
    }
    assert env["SZX_MQTT_USERNAME"] == f"exp-{e['id']}-{gw.gid}" and env["SZX_MQTT_PASSWORD"] == f"pw-{e['id']}"
    assert env["SZX_MQTT_PORT"] == str(gw.central_port) and env["SZX_RADIO_DEVICE"].endswith("simulated-hci0")
    assert env["HOME"] == str(gw.state / str(e["id"]) / "run")
    assert env["SZX_DEADLINE"] == e["deadline"]
    text = json.dumps(probe)
    assert PASSWORD not in text and str(password_file) not in json.dumps(env)
    assert probe["password_file_error"] == "PermissionError"
    assert probe["agent_environ_error"] == "PermissionError"
    assert probe["desired_error"] == "PermissionError" and probe["state_dir_error"] == "PermissionError"
    # negative control: the same probe as the agent's own user reads all of it (the probe can see a leak)
    (tmp_path / "results").mkdir()
    (tmp_path / "params.json").write_text(json.dumps(params))
    control = {"SZX_PARAMETERS": str(tmp_path / "params.json"), "SZX_RESULTS_DIR": str(tmp_path / "results")}
    subprocess.run([sys.executable, "-I", "-c", PROBE.decode()], env=control, check=True, cwd=tmp_path)
    leaked = json.loads((tmp_path / "results/probe.json").read_text())
    assert (tmp_path / "stdout.log").read_text().strip() == PASSWORD  # a root reader following its links leaks
    assert leaked["password_file"].strip() == PASSWORD and "agent_environ" in leaked
    assert f"pw-{e['id']}" in leaked["desired"] and str(e["id"]) in leaked["state_dir"]


def test_a_malformed_desired_document_is_reported_and_the_agent_keeps_running(gateway):
    gw = gateway()
    good = gw.entry(SLEEP, start_in=0.5, duration=60)
    gw.desire(good)
    pid = gw.wait_phase(good["id"], "running")["pid"]
    gw.desire(raw=b"{not json")
    assert wait_for(lambda: any("desired document ignored" in " ".join(d.get("errors", [])) for d in gw.reports()), 10)
    assert gw.now(good["id"])["phase"] == "running" and not gone(pid)  # the previous document still holds
    bad_radio = gw.entry(OK, radio="lorawan-service")
    gw.desire(good, bad_radio, {"id": "x"}, [1, 2], gw.entry(OK, start="soon"))
    got = gw.wait_phase(bad_radio["id"], "refused")
    assert got["error"].startswith("unknown radio 'lorawan-service'")
    last = gw.reports()[-1]
    assert any("experiments[2]: malformed: id 'x'" in x for x in last["errors"])
    assert any("experiments[3]: malformed: an experiment is a JSON object" in x for x in last["errors"])
    assert gw.now(good["id"])["phase"] == "running" and gw.agent.proc.poll() is None
    assert "Traceback" not in gw.agent.log()


def test_the_agent_publishes_its_selftest_retained_at_start(gateway):
    gw = gateway()
    topic = f"gw/{gw.gid}/selftest"
    assert wait_for(lambda: any(t == topic for t, _ in gw.messages), 20), gw.agent.log()[-2000:]
    doc = json.loads(next(p for t, p in gw.messages if t == topic))
    names = [c["name"] for c in doc["checks"]]
    assert {"local_broker", "central_broker", "storage", "clock"} <= set(names)
    assert doc["failed"] == sum(1 for c in doc["checks"] if not c["ok"])
    central = next(c for c in doc["checks"] if c["name"] == "central_broker")
    assert central["ok"] and "connected" in central["detail"]
    local = next(c for c in doc["checks"] if c["name"] == "local_broker")
    assert local["ok"] and "connected" in local["detail"]
    assert not [t for t, _ in gw.messages if "selftest/" in t]  # nothing of the self-test relayed up
    assert datetime.fromisoformat(doc["time"]).tzinfo is not None
    # retained: the scheduler, subscribing later, reads the last result at once
    got: list[bytes] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="late-selftest")
    c.on_message = lambda c, u, m: got.append(m.payload)
    c.connect("127.0.0.1", gw.central_port)
    c.subscribe(topic, 1)
    c.loop_start()
    try:
        assert wait_for(lambda: bool(got), 5)
    finally:
        c.loop_stop()
        c.disconnect()


def wheel(module: str, source: str) -> bytes:
    """A minimal PEP 427 wheel with the contract's entry point ``[smartzone.experiment] main``."""
    info = "probe-1.0.dist-info"
    files = {
        f"{module}.py": source,
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: probe\nVersion: 1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/entry_points.txt": f"[smartzone.experiment]\nmain = {module}:main\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{n},,\n" for n in files) + f"{info}/RECORD,,\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return buf.getvalue()


def test_a_wheel_runs_its_entry_point_and_uploads_are_retried_until_2xx_not_after_a_4xx(gateway, api):
    gw = gateway()
    source = (
        "import os, pathlib\n"
        "def main():\n"
        "    pathlib.Path(os.environ['SZX_RESULTS_DIR'], 'w.txt').write_text('wheel')\n"
    )
    e = gw.entry(wheel("szx_probe", source), start_in=0.5, kind="wheel")
    e["artifact"]["filename"] = "probe-1.0-py3-none-any.whl"
    api.fail[e["id"]] = [503, 502]  # the API is briefly unwell: retried with backoff (1 s, 2 s)
    refused = gw.entry(OK, start_in=0.5)
    api.fail[refused["id"]] = [403]  # a 4xx is final: not retried
    gw.desire(e, refused)
    assert gw.wait_phase(e["id"], "finished")["exit_code"] == 0
    assert gw.wait_uploaded(e["id"])["results/w.txt"] == b"wheel"
    assert api.puts[e["id"]] == 3
    assert wait_for(lambda: "results upload refused: HTTP 403" in gw.now(refused["id"])["error"], 10)
    time.sleep(1.5)  # a retry would have come by now
    assert api.puts[refused["id"]] == 1 and gw.now(refused["id"])["results_uploaded"] is False
    assert gw.now(refused["id"])["phase"] == "finished"


def test_the_runner_keeps_time_by_the_clock_it_is_given(api):
    """The runner in-process with a clock an hour ahead of the wall's, moved by hand: it starts the experiment
    when that clock reaches the start and stops it when it reaches the deadline, whatever the wall says."""
    base = Path(tempfile.mkdtemp(prefix="szx-clock-"))
    base.chmod(0o755)
    cfg = agent_config.parse(
        {
            "gateway_id": "gw-clock",
            "central": {"host": "127.0.0.1", "port": 1883},
            "experiments": {
                "state_dir": str(base / "x"),
                "user": SANDBOX_USER,
                "python": EXPERIMENT_PYTHON,
                "kill_grace": 1,
            },
        }
    )
    now = [time.time() + 3600.0]
    sent: list[dict[str, Any]] = []
    runner = Runner(cfg, lambda topic, payload: sent.append(json.loads(payload)), clock=lambda: now[0]).start()

    def phase() -> str | None:
        return sent[-1]["experiments"][0]["phase"] if sent and sent[-1]["experiments"] else None

    exp_id = next(IDS)
    api.artifacts[exp_id], api.tokens[exp_id] = SLEEP, f"token-{exp_id}"
    entry = {
        "id": exp_id,
        "artifact": {
            "url": f"{api.url}/v1/experiments/{exp_id}/artifact",
            "sha256": hashlib.sha256(SLEEP).hexdigest(),
            "size": len(SLEEP),
            "kind": "script",
            "filename": "sleep.py",
        },
        "start": rfc3339(now[0] + 10),
        "deadline": rfc3339(now[0] + 20),
        "radio": "ble",
        "mqtt": {"username": "u", "password": "p", "prefix": "gw/gw-clock/experiments/1/"},
        "upload": {"url": f"{api.url}/v1/experiments/{exp_id}/gateways/gw-clock/results", "token": api.tokens[exp_id]},
    }
    try:
        runner.desired(json.dumps({"version": 1, "experiments": [entry]}).encode())
        assert wait_for(lambda: phase() == "waiting", 10), sent
        time.sleep(1.0)  # the wall moves on, the runner's clock does not: still waiting
        assert phase() == "waiting" and sent[-1]["time"] == rfc3339(now[0])
        now[0] += 10
        assert wait_for(lambda: phase() == "running", 5), sent
        pid = sent[-1]["experiments"][0]["pid"]
        time.sleep(0.5)
        assert phase() == "running"
        now[0] += 10
        assert wait_for(lambda: phase() == "finished", 5), sent
        assert sent[-1]["experiments"][0]["exit_code"] == -signal.SIGTERM and gone(pid)
        assert wait_for(lambda: sent[-1]["experiments"][0]["results_uploaded"], 10), sent[-1]
    finally:
        runner.stop()
        for state in (base / "x").glob("*/state.json"):
            with contextlib.suppress(ProcessLookupError, TypeError):
                os.killpg(json.loads(state.read_text())["pid"], signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)
