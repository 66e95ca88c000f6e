"""The gateway's side of the experiments (issue 16): desired documents in, sandboxed processes, reported state out.

The centre publishes, retained, ``gw/<id>/experiments/desired``: the whole list of experiments this gateway must
run. The :class:`Runner` keeps one :class:`Run` per experiment and moves it through the phases of the contract:

``fetching`` (artifact downloaded over HTTP(S) with the upload token, size and sha256 checked) -> ``waiting``
(until its start, by the local clock) -> ``running`` (a sandboxed process) -> ``stopping`` (SIGTERM to its process
group at the deadline or on cancel, SIGKILL ``kill_grace`` s later) -> ``finished`` | ``failed`` | ``stopped``;
or ``refused`` (malformed entry, unknown radio, oversized, sha256 mismatch). After the end it uploads the results
bundle (tar.gz of ``results/``, ``stdout.log``, ``stderr.log``), retrying with backoff until a 2xx or a 4xx.

Every change is published, retained, on ``gw/<id>/experiments/reported`` (the whole list) and written to
``<state_dir>/<id>/state.json`` (with the process's pid and its start time from ``/proc/<pid>/stat``), so an agent
restarted even after a SIGKILL re-adopts a running process, starts pending ones and still stops them at their
deadline; the last desired document is kept in ``<state_dir>/desired.json`` until the retained one arrives again.
Deadlines are enforced by the local clock alone: the central broker may be gone.

Standard library only (it runs on the Pi from a copy of ``gateways/agent/``).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import json
import logging
import os
import pwd
import re
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateways.agent.config import EXPERIMENT_RADIOS, AgentConfig

log = logging.getLogger("gateways.agent.experiments")

FINAL = frozenset({"finished", "failed", "stopped", "refused"})
LOG_TAIL_BYTES = 2048
TICK_S = 0.2  # how often the runner looks at its processes and clocks (and at once on every change)
BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)  # between artifact downloads / results uploads that failed
PATH = "/usr/local/bin:/usr/bin:/bin"
_FILENAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
SIGNAL_ERRORS = {
    signal.SIGXCPU: "killed by the CPU time limit (cpu_s={cpu_s})",
    signal.SIGXFSZ: "killed by the file size limit (file_bytes={file_bytes})",
    signal.SIGKILL: "killed by SIGKILL (the CPU time hard limit cpu_s={cpu_s}, or the kernel's OOM killer)",
}
# a Python experiment that hits the address-space limit dies of a MemoryError (exit code 1)
MEMORY_SIGNS = ("MemoryError", "Cannot allocate memory", "std::bad_alloc")

WHEEL_LAUNCHER = (
    "import sys\n"
    "from importlib.metadata import distributions\n"
    "sys.path.insert(0, {site!r})\n"
    "eps = [e for d in distributions(path=[{site!r}]) for e in d.entry_points\n"
    "       if e.group == 'smartzone.experiment' and e.name == 'main']\n"
    "if not eps:\n"
    "    sys.exit('the wheel has no entry point [smartzone.experiment] main')\n"
    "sys.exit(eps[0].load()())\n"
)


class Malformed(ValueError):
    """A desired entry the agent cannot run: ``id`` when the entry had a usable one."""

    def __init__(self, reason: str, exp_id: int | None = None) -> None:
        super().__init__(reason)
        self.id = exp_id


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_exact(t: float) -> str:
    """To the microsecond when there is a fraction: an experiment that stops itself at SZX_DEADLINE must not
    stop before the agent's deadline (whole seconds cut it up to a second short)."""
    d = datetime.fromtimestamp(t, UTC)
    return rfc3339(t) if d.microsecond == 0 else d.isoformat(timespec="microseconds")[:-6] + "Z"


def _time(entry: dict[str, Any], key: str, exp_id: int) -> float:
    value = entry.get(key)
    if not isinstance(value, str):
        raise Malformed(f"malformed: {key} {value!r} is not an RFC 3339 time", exp_id)
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise Malformed(f"malformed: {key} {value!r} is not an RFC 3339 time", exp_id) from None
    if t.tzinfo is None:
        raise Malformed(f"malformed: {key} {value!r} has no time zone", exp_id)
    return t.timestamp()


def validate(entry: object) -> dict[str, Any]:
    """A desired entry, checked; Malformed (with the id when there is one) otherwise."""
    if not isinstance(entry, dict):
        raise Malformed(f"malformed: an experiment is a JSON object, not {type(entry).__name__}")
    exp_id = entry.get("id")
    if isinstance(exp_id, bool) or not isinstance(exp_id, int) or exp_id <= 0:
        raise Malformed(f"malformed: id {exp_id!r} is not a positive integer")
    art = entry.get("artifact")
    if not isinstance(art, dict):
        raise Malformed("malformed: no artifact object", exp_id)
    url, sha, size, kind = art.get("url"), art.get("sha256"), art.get("size"), art.get("kind")
    filename = art.get("filename", "experiment.py" if kind == "script" else "experiment.whl")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise Malformed(f"malformed: artifact.url {url!r} is not an http(s) URL", exp_id)
    if not isinstance(sha, str) or not _HEX64.fullmatch(sha):
        raise Malformed(f"malformed: artifact.sha256 {sha!r} is not 64 lower-case hex digits", exp_id)
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise Malformed(f"malformed: artifact.size {size!r} is not a byte count", exp_id)
    if kind not in ("script", "wheel"):
        raise Malformed(f"malformed: artifact.kind {kind!r} is not script or wheel", exp_id)
    if not isinstance(filename, str) or not _FILENAME.fullmatch(filename) or ".." in filename:
        raise Malformed(f"malformed: artifact.filename {filename!r} is not a plain file name", exp_id)
    start, deadline = _time(entry, "start", exp_id), _time(entry, "deadline", exp_id)
    if deadline <= start:
        raise Malformed(f"malformed: deadline {entry['deadline']} is not after start {entry['start']}", exp_id)
    radio = entry.get("radio")
    if radio not in EXPERIMENT_RADIOS:
        raise Malformed(f"unknown radio {radio!r} (this agent runs {', '.join(EXPERIMENT_RADIOS)})", exp_id)
    params = entry.get("parameters", {})
    if not isinstance(params, dict):
        raise Malformed("malformed: parameters is not an object", exp_id)
    m = entry.get("mqtt")
    if not isinstance(m, dict) or not all(isinstance(m.get(k), str) for k in ("username", "password", "prefix")):
        raise Malformed("malformed: mqtt needs username, password and prefix strings", exp_id)
    up = entry.get("upload")
    if not isinstance(up, dict) or not isinstance(up.get("url"), str) or not isinstance(up.get("token"), str):
        raise Malformed("malformed: upload needs url and token strings", exp_id)
    if not up["url"].startswith(("http://", "https://")):
        raise Malformed(f"malformed: upload.url {up['url']!r} is not an http(s) URL", exp_id)
    limits = entry.get("limits", {})
    if not isinstance(limits, dict):
        raise Malformed("malformed: limits is not an object", exp_id)
    for key, value in limits.items():
        if key not in ("cpu_s", "memory_bytes", "file_bytes"):
            raise Malformed(f"malformed: limits.{key} is not a known limit", exp_id)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise Malformed(f"malformed: limits.{key} {value!r} is not a positive integer", exp_id)
    return dict(entry, artifact=dict(art, filename=filename), start_ts=start, deadline_ts=deadline)


def proc_start_time(pid: int) -> tuple[int, str] | None:
    """(start time in clock ticks since boot, state letter) of a process, from /proc/<pid>/stat; None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": the comm may hold spaces and parens
    return int(fields[19]), fields[0]  # field 22 starttime, field 3 state


@dataclass
class Run:
    """One experiment as this agent knows it (persisted in ``<state_dir>/<id>/state.json``)."""

    id: int
    spec: dict[str, Any]
    phase: str = "fetching"
    pid: int | None = None
    pid_start: int | None = None
    deadline: float = 0.0
    exit_code: int | None = None
    error: str = ""
    log_tail: str = ""
    launched: bool = False
    stop_reason: str = ""  # "deadline" | "cancel"
    term_at: float | None = None
    results_uploaded: bool = False
    upload_done: bool = False  # uploaded, refused with a 4xx, or nothing to upload
    forgotten: bool = False  # final, done, and gone from desired: no longer reported
    attempts: int = 0
    retry_at: float = 0.0
    proc: subprocess.Popen | None = field(default=None, repr=False)
    worker: threading.Thread | None = field(default=None, repr=False)

    def reported(self) -> dict[str, object]:
        return {
            "id": self.id,
            "phase": self.phase,
            "pid": self.pid,
            "exit_code": self.exit_code,
            "error": self.error,
            "log_tail": self.log_tail,
            "results_uploaded": self.results_uploaded,
        }

    def persisted(self) -> dict[str, object]:
        skip = ("proc", "worker", "attempts", "retry_at")
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in skip}


class Runner:
    """Runs the experiments of one gateway. ``publish(topic, payload)`` sends retained QoS 1 to the centre."""

    def __init__(
        self,
        cfg: AgentConfig,
        publish: Callable[[str, bytes], object],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.x = cfg.experiments
        self.publish = publish
        self.clock = clock
        self.topic = f"gw/{cfg.gateway_id}/experiments/reported"
        self.dir = self.x.state_dir
        self.runs: dict[int, Run] = {}
        self.errors: list[str] = []  # what was wrong with the last desired document as a whole
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_reported = ""
        self.unusable = ""  # why this gateway cannot run experiments at all (reported as an error)
        self.python = self.x.python or sys.executable
        self.user = self._sandbox_user()

    # -- start, stop, persistence ------------------------------------------------------------------------
    def _sandbox_user(self) -> pwd.struct_passwd | None:
        """The experiments' own user when the agent can switch to it (root); None: they run as the agent."""
        if os.geteuid() != 0:
            log.warning("experiments run as the agent's own user (not root): no separate Unix user")
            return None
        try:
            return pwd.getpwnam(self.x.user)
        except KeyError:
            log.error("experiments.user %r does not exist: experiments are refused until it does", self.x.user)
            return None

    def start(self) -> Runner:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.dir.chmod(0o711)  # the experiments' user walks through to its own run/ folder, lists nothing
        except OSError as exc:
            self.unusable = f"experiments.state_dir {self.dir} is not usable ({exc.strerror}): no experiment runs"
            log.error("%s", self.unusable)
            self._wake.set()
            return self
        for state in sorted(self.dir.glob("*/state.json")):
            try:
                doc = json.loads(state.read_text())
                doc.pop("proc", None)
                run = Run(**{k: v for k, v in doc.items() if k in Run.__dataclass_fields__})
            except (OSError, ValueError, TypeError) as exc:
                log.error("cannot read %s: %s; that experiment is forgotten", state, exc)
                continue
            self.runs[run.id] = run
            if run.phase in ("running", "stopping") and run.pid is not None:
                alive = self._alive(run)
                log.info("experiment=%d resumed phase=%s pid=%d alive=%s", run.id, run.phase, run.pid, alive)
        desired = self.dir / "desired.json"
        if desired.exists():
            with contextlib.suppress(OSError):
                self.desired(desired.read_bytes(), save=False)
        self._thread = threading.Thread(target=self._loop, name="agent-experiments", daemon=True)
        self._thread.start()
        self._wake.set()
        return self

    def stop(self) -> None:
        """Stop the runner; the experiments' processes go on (a restarted agent re-adopts them)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
        with self._lock:
            for run in self.runs.values():
                self._save(run)

    def _save(self, run: Run) -> None:
        folder = self.dir / str(run.id)
        folder.mkdir(exist_ok=True)
        folder.chmod(0o711)
        _write_private(folder / "state.json", json.dumps(run.persisted(), indent=1).encode())

    # -- the desired document ----------------------------------------------------------------------------
    def desired(self, payload: bytes, *, save: bool = True) -> None:
        """A desired document from the centre (or the saved one at start). Never raises."""
        try:
            doc = json.loads(payload)
            if not isinstance(doc, dict) or not isinstance(doc.get("experiments"), list):
                raise ValueError("not an object with an experiments list")
        except ValueError as exc:
            with self._lock:
                self.errors = [f"desired document ignored (the previous one still holds): {exc}"]
            log.error("desired document ignored: %s", exc)
            self._wake.set()
            return
        if self.unusable:
            with self._lock:
                self.errors = [self.unusable]
                self._report()
            return
        if save:
            _write_private(self.dir / "desired.json", bytes(payload))
        with self._lock:
            self._apply(doc["experiments"])
        self._wake.set()

    def _apply(self, entries: list[object]) -> None:
        now = self.clock()
        wanted: set[int] = set()
        errors: list[str] = []
        for n, entry in enumerate(entries):
            try:
                spec = validate(entry)
            except Malformed as exc:
                if exc.id is None:
                    errors.append(f"experiments[{n}]: {exc}")
                    continue
                wanted.add(exc.id)
                run = self.runs.get(exc.id)
                if run is None:
                    run = self.runs[exc.id] = Run(exc.id, {}, phase="refused", error=str(exc), upload_done=True)
                    log.error("experiment=%d refused: %s", exc.id, exc)
                    self._save(run)
                continue
            wanted.add(spec["id"])
            run = self.runs.get(spec["id"])
            if run is None:
                run = self.runs[spec["id"]] = Run(spec["id"], spec, deadline=spec["deadline_ts"])
                log.info("experiment=%d desired start=%s deadline=%s", run.id, spec["start"], spec["deadline"])
            elif run.phase not in FINAL and run.spec:
                if spec["deadline_ts"] != run.deadline:
                    log.info("experiment=%d deadline moved to %s", run.id, spec["deadline"])
                    run.deadline = spec["deadline_ts"]
                run.spec = spec
            run.forgotten = False
            self._save(run)
        self.errors = errors
        for run in self.runs.values():
            if run.id in wanted or run.forgotten:
                continue
            if run.phase not in FINAL:
                self._cancel(run, now)
            elif run.upload_done and not (run.worker and run.worker.is_alive()):
                run.forgotten = True
                run.spec = {}  # its broker password and upload token are of no more use: not kept on disk
                shutil.rmtree(self.dir / str(run.id) / "run", ignore_errors=True)
                self._save(run)

    def _cancel(self, run: Run, now: float) -> None:
        log.info("experiment=%d cancelled by the centre in phase %s", run.id, run.phase)
        if run.phase == "running":
            run.stop_reason = "cancel"
            self._terminate(run, now)
        elif run.phase == "stopping":
            run.stop_reason = "cancel"
        else:  # fetching, waiting: nothing runs
            run.phase = "stopped"
            run.upload_done = True
        self._save(run)

    # -- the loop ----------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(TICK_S)
            self._wake.clear()
            try:
                with self._lock:
                    for run in list(self.runs.values()):
                        self._step(run, self.clock())
                    self._report()
            except Exception:  # one bad experiment (a full disk, a vanished folder) never stops the others
                log.exception("experiments: step failed")

    def _step(self, run: Run, now: float) -> None:
        phase = run.phase
        busy = run.worker is not None and run.worker.is_alive()
        if phase == "fetching" and not busy:
            if now >= run.deadline:
                self._end(run, "failed", error="the artifact was not fetched before the deadline")
            elif now >= run.retry_at:
                run.worker = threading.Thread(target=self._fetch, args=(run,), name=f"fetch-{run.id}", daemon=True)
                run.worker.start()
        elif phase == "waiting":
            if now >= run.deadline:
                self._end(run, "failed", error="not started before its deadline (the agent was down)")
            elif now >= run.spec["start_ts"]:
                self._launch(run)
        elif phase == "running":
            code = self._exited(run)
            if code is not False:
                self._exit(run, code)
            elif now >= run.deadline:
                run.stop_reason = run.stop_reason or "deadline"
                self._terminate(run, now)
        elif phase == "stopping":
            code = self._exited(run)
            if code is not False:
                run.exit_code = code if isinstance(code, int) else None
                self._collect(run)
                self._end(run, "stopped" if run.stop_reason == "cancel" else "finished")
            elif run.term_at is not None and now >= run.term_at + self.x.kill_grace:
                log.warning("experiment=%d still alive %.0f s after SIGTERM: SIGKILL", run.id, self.x.kill_grace)
                self._signal(run, signal.SIGKILL)
                run.term_at = now  # again after another grace, should SIGKILL not be enough (a D-state)
        elif phase in FINAL and run.launched and not run.upload_done and not busy and now >= run.retry_at:
            run.worker = threading.Thread(target=self._upload, args=(run,), name=f"upload-{run.id}", daemon=True)
            run.worker.start()

    def _report(self) -> None:
        items = [r.reported() for r in sorted(self.runs.values(), key=lambda r: r.id) if not r.forgotten]
        body: dict[str, object] = {"version": 1, "experiments": items}
        if self.errors:
            body["errors"] = self.errors
        key = json.dumps(body, sort_keys=True)
        if key == self._last_reported:
            return
        self._last_reported = key
        doc = {"version": 1, "time": rfc3339(self.clock()), **body}
        self.publish(self.topic, json.dumps(doc, separators=(",", ":")).encode())

    def republish(self) -> None:
        """Send the reported list again at the next tick (the centre reconnected)."""
        with self._lock:
            self._last_reported = ""
        self._wake.set()

    def _end(self, run: Run, phase: str, *, error: str = "") -> None:
        run.phase = phase
        if error:
            run.error = error
        if not run.launched:
            run.upload_done = True
        log.info("experiment=%d %s exit_code=%s %s", run.id, phase, run.exit_code, run.error)
        self._save(run)
        self._wake.set()

    # -- fetching ----------------------------------------------------------------------------------------
    def _headers(self, run: Run) -> dict[str, str]:
        return {"Authorization": f"Bearer {run.spec['upload']['token']}", "X-Smartzone-Gateway": self.cfg.gateway_id}

    def _fetch(self, run: Run) -> None:
        art = run.spec["artifact"]
        try:
            data = self._download(run, art["url"], art["size"])
            got = hashlib.sha256(data).hexdigest()
            if got != art["sha256"]:
                raise Malformed(f"sha256 mismatch: the artifact is {got}, the centre said {art['sha256']}")
            self._prepare(run, data)
        except Malformed as exc:
            with self._lock:
                if run.phase == "fetching":  # not cancelled meanwhile
                    self._end(run, "refused", error=str(exc))
            return
        except (OSError, urllib.error.URLError, TimeoutError) as exc:
            with self._lock:
                run.attempts += 1
                run.retry_at = self.clock() + BACKOFF_S[min(run.attempts, len(BACKOFF_S)) - 1]
                run.error = f"artifact download failed (attempt {run.attempts}): {exc}"
                log.warning("experiment=%d %s", run.id, run.error)
            self._wake.set()
            return
        with self._lock:
            if run.phase == "fetching":
                run.phase, run.error, run.attempts = "waiting", "", 0
                log.info("experiment=%d artifact verified (%d bytes): waiting", run.id, art["size"])
                self._save(run)
        self._wake.set()

    def _download(self, run: Run, url: str, size: int) -> bytes:
        limit = self.x.artifact_max_bytes
        if size > limit:
            raise Malformed(f"oversized: the artifact's {size} bytes exceed this gateway's {limit}")
        req = urllib.request.Request(url, headers=self._headers(run))  # noqa: S310 - validate() checked http(s)
        try:
            with urllib.request.urlopen(req, timeout=self.x.upload_timeout) as resp:  # noqa: S310
                declared = resp.headers.get("Content-Length")
                if declared is not None and declared.isdigit() and int(declared) > size:
                    raise Malformed(f"oversized: the server sends {declared} bytes, the centre said {size}")
                data = resp.read(size + 1)
        except urllib.error.HTTPError as exc:
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                raise Malformed(f"artifact download refused: HTTP {exc.code} {exc.reason}") from None
            raise
        if len(data) > size:
            raise Malformed(f"oversized: the artifact is longer than its declared {size} bytes")
        if len(data) < size:
            raise Malformed(f"size mismatch: the artifact has {len(data)} bytes, the centre said {size}")
        return data

    def _prepare(self, run: Run, data: bytes) -> None:
        """The experiment's folder: ``<id>/run`` (its working directory, its user's), the artifact in it."""
        art = run.spec["artifact"]
        folder = self.dir / str(run.id)
        work = folder / "run"
        if work.exists():
            shutil.rmtree(work)
        (work / "results").mkdir(parents=True)
        if art["kind"] == "script":
            (work / art["filename"]).write_bytes(data)
        else:
            try:
                with zipfile.ZipFile(io.BytesIO(data)) as z:
                    for name in z.namelist():
                        if name.startswith("/") or ".." in Path(name).parts:
                            raise Malformed(f"malformed wheel: member {name!r} leaves its folder")
                    z.extractall(work / "site")  # noqa: S202 - every member checked above
            except zipfile.BadZipFile as exc:
                raise Malformed(f"malformed wheel: {exc}") from None
        (work / "parameters.json").write_text(json.dumps(run.spec.get("parameters", {})))
        for name in ("stdout.log", "stderr.log"):
            (work / name).touch()
        for path in [work, *work.rglob("*")]:
            path.chmod(0o700 if path.is_dir() else 0o600)
            if self.user is not None:
                os.chown(path, self.user.pw_uid, self.user.pw_gid)

    # -- the process -------------------------------------------------------------------------------------
    def _limits(self, run: Run) -> dict[str, int]:
        given = run.spec.get("limits", {})
        x = self.x
        return {
            "cpu_s": given.get("cpu_s", x.cpu_s),
            "memory_bytes": given.get("memory_bytes", x.memory_bytes),
            "file_bytes": given.get("file_bytes", x.file_bytes),
        }

    def environment(self, run: Run) -> dict[str, str]:
        """The whole environment of the experiment's process: the contract's SZX_* variables and nothing else."""
        spec, work = run.spec, self.dir / str(run.id) / "run"
        ca = self.cfg.central.ca_file
        return {
            "SZX_EXPERIMENT_ID": str(run.id),
            "SZX_GATEWAY_ID": self.cfg.gateway_id,
            "SZX_RADIO": spec["radio"],
            "SZX_START": spec["start"],
            "SZX_DEADLINE": rfc3339_exact(run.deadline),
            "SZX_PARAMETERS": str(work / "parameters.json"),
            "SZX_RESULTS_DIR": str(work / "results"),
            "SZX_MQTT_HOST": self.x.mqtt_host,
            "SZX_MQTT_PORT": str(self.x.mqtt_port),
            "SZX_MQTT_TLS_CA": str(ca) if ca is not None else "",
            "SZX_MQTT_USERNAME": spec["mqtt"]["username"],
            "SZX_MQTT_PASSWORD": spec["mqtt"]["password"],
            "SZX_MQTT_PREFIX": spec["mqtt"]["prefix"],
            "SZX_RADIO_DEVICE": self.cfg.radio_devices().get(spec["radio"], ""),
            "PATH": PATH,
            "HOME": str(work),
            "LANG": "C.UTF-8",
        }

    def _launch(self, run: Run) -> None:
        if os.geteuid() == 0 and self.user is None:
            self._end(run, "refused", error=f"experiments.user {self.x.user!r} does not exist on this gateway")
            return
        work = self.dir / str(run.id) / "run"
        art = run.spec["artifact"]
        if art["kind"] == "script":
            argv = [self.python, "-I", art["filename"]]
        else:
            argv = [self.python, "-I", "-c", WHEEL_LAUNCHER.format(site=str(work / "site"))]
        limits = self._limits(run)
        rlimits = [
            (resource.RLIMIT_CPU, limits["cpu_s"], limits["cpu_s"] + max(1, int(self.x.kill_grace))),
            (resource.RLIMIT_AS, limits["memory_bytes"], limits["memory_bytes"]),
            (resource.RLIMIT_FSIZE, limits["file_bytes"], limits["file_bytes"]),
            (resource.RLIMIT_NOFILE, self.x.open_files, self.x.open_files),
            (resource.RLIMIT_NPROC, self.x.processes, self.x.processes),
            (resource.RLIMIT_CORE, 0, 0),
        ]
        libc = ctypes.CDLL(None, use_errno=True)

        def sandbox() -> None:  # in the child, after setsid/setgid/setuid, before exec: C calls only
            for which, soft, hard in rlimits:
                resource.setrlimit(which, (soft, hard))
            libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)  # no capability survives the exec
            os.umask(0o077)

        user: dict[str, Any] = {}
        if self.user is not None:
            user = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        try:
            with open(work / "stdout.log", "ab") as out, open(work / "stderr.log", "ab") as err:
                proc = subprocess.Popen(
                    argv,
                    cwd=work,
                    env=self.environment(run),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                    close_fds=True,
                    preexec_fn=sandbox,  # rlimits must be set in the child, before exec
                    **user,
                )
        except (OSError, subprocess.SubprocessError) as exc:
            self._end(run, "failed", error=f"could not start: {exc}")
            return
        started = proc_start_time(proc.pid)
        run.proc, run.pid, run.pid_start = proc, proc.pid, started[0] if started else None
        run.phase, run.launched, run.error = "running", True, ""
        log.info("experiment=%d running pid=%d user=%s", run.id, proc.pid, self.user.pw_name if self.user else "-")
        self._save(run)

    def _alive(self, run: Run) -> bool:
        if run.pid is None:
            return False
        seen = proc_start_time(run.pid)
        return seen is not None and seen[0] == run.pid_start and seen[1] not in ("Z", "X")

    def _exited(self, run: Run) -> int | bool | None:
        """False while it runs; its exit code (negative: a signal) once it ended; None when it is not known
        (a process re-adopted after an agent restart is not this agent's child: it cannot wait() for it)."""
        if run.proc is not None:
            code = run.proc.poll()
            return False if code is None else code
        return False if self._alive(run) else None

    def _signal(self, run: Run, sig: signal.Signals) -> None:
        if run.pid is None or (run.proc is None and not self._alive(run)):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(run.pid, sig)  # its own session: the whole process group

    def _terminate(self, run: Run, now: float) -> None:
        log.info("experiment=%d %s: SIGTERM to process group %s", run.id, run.stop_reason, run.pid)
        self._signal(run, signal.SIGTERM)
        run.phase, run.term_at = "stopping", now
        self._save(run)

    def _exit(self, run: Run, code: int | None) -> None:
        """It ended on its own, before its deadline."""
        run.exit_code = code
        self._collect(run)
        limits = self._limits(run)
        if code == 0:
            self._end(run, "finished")
        elif code is None:
            self._end(run, "finished", error="exit status unknown: it ended while the agent was restarting")
        elif code < 0:
            sig = signal.Signals(-code)
            why = SIGNAL_ERRORS.get(sig, f"killed by signal {sig.name}")
            self._end(run, "failed", error=why.format(**limits))
        elif any(sign in run.log_tail for sign in MEMORY_SIGNS):
            why = f"exit code {code}: the memory limit (memory_bytes={limits['memory_bytes']})"
            self._end(run, "failed", error=why)
        else:
            self._end(run, "failed", error=f"exit code {code}")

    def _collect(self, run: Run) -> None:
        """After the end: the log tail, and nothing of its process group left behind."""
        if run.pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(run.pid, signal.SIGKILL)
        work = self.dir / str(run.id) / "run"
        run.log_tail = log_tail(work / "stdout.log", work / "stderr.log")
        run.proc = None

    # -- results -----------------------------------------------------------------------------------------
    def bundle(self, run: Run) -> bytes:
        """tar.gz of results/, stdout.log and stderr.log (symbolic links kept as links, never followed). Built
        by the experiment's own user: its folder is its to rearrange (a link swapped in mid-walk), so the bundle
        holds only what that user could read anyway, never a file of the agent's."""
        work = self.dir / str(run.id) / "run"
        if self.user is None:
            return make_bundle(work)
        done = subprocess.run(
            [self.python, "-I", "-c", BUNDLER],
            cwd=work,
            env={"PATH": PATH, "LANG": "C.UTF-8"},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=self.x.upload_timeout,
            user=self.user.pw_uid,
            group=self.user.pw_gid,
            extra_groups=[],
            check=False,
        )
        if done.returncode != 0:
            raise OSError(f"building the results bundle failed: {done.stderr.decode(errors='replace')[-500:]}")
        return done.stdout

    def _upload(self, run: Run) -> None:
        try:
            body = self.bundle(run)
            url = run.spec["upload"]["url"]
            req = urllib.request.Request(url, data=body, method="PUT")  # noqa: S310 - validate() checked http(s)
            for k, v in (self._headers(run) | {"Content-Type": "application/gzip"}).items():
                req.add_header(k, v)
            with urllib.request.urlopen(req, timeout=self.x.upload_timeout) as resp:  # noqa: S310
                status = resp.status
        except urllib.error.HTTPError as exc:
            status = exc.code
            if 400 <= status < 500 and status not in (408, 429):
                with self._lock:
                    run.upload_done = True
                    run.error = (run.error + "; " if run.error else "") + f"results upload refused: HTTP {status}"
                    log.error("experiment=%d results upload refused: HTTP %d", run.id, status)
                    self._save(run)
                self._wake.set()
                return
            self._retry_upload(run, f"HTTP {status}")
            return
        except (OSError, urllib.error.URLError, TimeoutError) as exc:
            self._retry_upload(run, str(exc))
            return
        with self._lock:
            run.results_uploaded = run.upload_done = True
            log.info("experiment=%d results uploaded (%d bytes, HTTP %d)", run.id, len(body), status)
            self._save(run)
        self._wake.set()

    def _retry_upload(self, run: Run, why: str) -> None:
        if self._stopping.is_set():
            return  # the next start resumes it
        with self._lock:
            run.attempts += 1
            delay = BACKOFF_S[min(run.attempts, len(BACKOFF_S)) - 1]
            run.retry_at = self.clock() + delay
            log.warning("experiment=%d results upload failed (%s): again in %.0f s", run.id, why, delay)


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """Files, folders and links only (a FIFO or device in results/ is left out), owned by nobody in particular."""
    if not (info.isfile() or info.isdir() or info.issym()):
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def make_bundle(work: Path) -> bytes:
    """The results bundle of the experiment folder ``work`` (see Runner.bundle)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in ("results", "stdout.log", "stderr.log"):
            if (work / name).exists() or (work / name).is_symlink():
                tar.add(work / name, arcname=name, filter=_plain)
    return buf.getvalue()


# make_bundle, run by the experiment's user in its folder: the bundle on stdout
BUNDLER = (
    "import io, sys, tarfile\n"
    "from pathlib import Path\n"
    "def plain(i):\n"
    "    if not (i.isfile() or i.isdir() or i.issym()):\n"
    "        return None\n"
    "    i.uid = i.gid = 0\n"
    "    i.uname = i.gname = ''\n"
    "    return i\n"
    "buf = io.BytesIO()\n"
    "with tarfile.open(fileobj=buf, mode='w:gz') as tar:\n"
    "    for name in ('results', 'stdout.log', 'stderr.log'):\n"
    "        if Path(name).exists() or Path(name).is_symlink():\n"
    "            tar.add(name, arcname=name, filter=plain)\n"
    "sys.stdout.buffer.write(buf.getvalue())\n"
)


def log_tail(stdout: Path, stderr: Path, limit: int = LOG_TAIL_BYTES) -> str:
    """The last ``limit`` bytes of stdout then stderr, stderr first to be kept (it says why a process died).
    Only regular files, never through a link: the experiment owns its folder and could put a link to a file of
    the agent's, or a FIFO, in their place."""
    tails = []
    for path in (stderr, stdout):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            tails.append(b"")
            continue
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                tails.append(b"")
                continue
            f.seek(max(0, st.st_size - limit))
            tails.append(f.read(limit))
    err, out = tails
    out = out[-max(0, limit - len(err)) :] if len(err) < limit else b""
    return (out + err).decode("utf-8", errors="replace")


def _write_private(path: Path, data: bytes) -> None:
    """Atomically, 0600 (it holds the experiment's MQTT password and upload token)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
