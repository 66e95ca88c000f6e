"""``smartzone experiments submit|list|status|wait|cancel|extend|logs|results``: the experimenter's client.

It speaks only the REST API (``/v1/experiments``), like ``iotlab-experiment`` speaks FIT IoT-LAB's: it can
run on a researcher's laptop with nothing but this package. The API's URL comes from ``--api``, else
``SMARTZONE_API_URL``, else the settings' public base URL; the bearer token from ``SMARTZONE_TOKEN``, else
the file ``--token-file`` (default ``~/.config/smartzone/token``), never from the command line (where ``ps``
would show it). An RFC 9457 problem from the API is printed as ``smartzone: <status> <title>: <detail>``.

Exit codes: 0 done; 1 the API refused (4xx) or the experiment ended in Error/Stopped while waited for;
2 bad usage; 3 the API unreachable or failing (5xx); 124 ``wait --timeout`` elapsed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import httpx

from smartzone.errors import ConfigurationError
from smartzone.names import parse_duration
from smartzone.settings import Settings
from smartzone.terminal import escape

FINAL = ("Terminated", "Stopped", "Error")
ORDER = ("Waiting", "toLaunch", "Launching", "Running", "Finishing", "Terminated")
DEFAULT_TOKEN_FILE = Path("~/.config/smartzone/token")
CHUNK = 64 * 1024
TAIL_LINES = 10  # status: the end of a failed gateway's output (the whole tail: `logs`)


class ClientError(Exception):
    """Something to tell the user, with the exit code to leave with."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# -- connection ---------------------------------------------------------------------------------------------
def api_url(settings: Settings, given: str | None) -> str:
    url = given or os.environ.get("SMARTZONE_API_URL") or settings.public_base_url()
    return url.rstrip("/")


def read_token(token_file: Path | None) -> str:
    token = os.environ.get("SMARTZONE_TOKEN", "").strip()
    if token:
        return token
    path = (token_file or DEFAULT_TOKEN_FILE).expanduser()
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ClientError(
            f"no token: set SMARTZONE_TOKEN or put it in {path} ({exc.strerror}); an operator creates one with "
            "`smartzone tokens create --role experimenter --name <you>`",
            2,
        ) from exc
    if not token:
        raise ClientError(f"no token: {path} is empty", 2)
    return token


def problem_message(response: httpx.Response) -> str:
    """``<status> <title>: <detail>`` from an RFC 9457 problem, or the status line and body start."""
    try:
        doc = response.json()
    except ValueError:
        doc = None
    if isinstance(doc, dict) and ("title" in doc or "detail" in doc):
        title = str(doc.get("title", response.reason_phrase))
        detail = str(doc.get("detail", ""))
        return f"{response.status_code} {title}" + (f": {detail}" if detail else "")
    return f"{response.status_code} {response.reason_phrase}: {response.text[:200]}"


class Api:
    """The experiments REST API with a bearer token; every failure becomes a ClientError."""

    def __init__(self, base_url: str, token: str, timeout: float = 30.0, transport: Any = None) -> None:
        self.http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}", "User-Agent": "smartzone-cli"},
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self.http.close()

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            response.read()
            raise ClientError(problem_message(response), 1 if response.status_code < 500 else 3)
        return response

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            return self._check(self.http.request(method, path, **kw))
        except httpx.TransportError as exc:
            raise ClientError(f"cannot reach the API at {self.http.base_url}: {exc}", 3) from exc

    def json(self, method: str, path: str, **kw: Any) -> Any:
        return self.request(method, path, **kw).json()

    @contextmanager
    def stream(self, path: str, **kw: Any) -> Iterator[httpx.Response]:
        try:
            with self.http.stream("GET", path, **kw) as response:
                yield self._check(response)
        except httpx.TransportError as exc:
            raise ClientError(f"cannot reach the API at {self.http.base_url}: {exc}", 3) from exc


# -- progress -----------------------------------------------------------------------------------------------
class Progress:
    """One line on stderr, rewritten in place; silent when stderr is not a terminal (unless forced)."""

    def __init__(self, stream: IO[str] | None = None, enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._width = 0

    def show(self, text: str) -> None:
        if not self.enabled:
            return
        pad = max(0, self._width - len(text))
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._width = len(text)

    def done(self, text: str = "") -> None:
        if self.enabled:
            self.show(text)
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def transfer_line(label: str, done: int, total: int | None, started: float, now: float) -> str:
    rate = done / max(now - started, 1e-3)
    if total:
        return f"{label} {human_bytes(done)} / {human_bytes(total)} ({100 * done / total:.0f}%, {human_bytes(rate)}/s)"
    return f"{label} {human_bytes(done)} ({human_bytes(rate)}/s)"


def _chunks(path: Path, progress: Progress, label: str) -> Iterator[bytes]:
    total, done, started = path.stat().st_size, 0, time.monotonic()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            done += len(chunk)
            progress.show(transfer_line(label, done, total, started, time.monotonic()))
            yield chunk
    progress.done(transfer_line(label, done, total, started, time.monotonic()))


# -- commands -----------------------------------------------------------------------------------------------
def seconds(text: str) -> int:
    """``600``, ``10m``, ``1h30m`` -> seconds."""
    if text.isdigit():
        return int(text)
    try:
        value = parse_duration(text)
    except ConfigurationError as exc:
        raise ClientError(str(exc), 2) from exc
    if value == float("inf"):
        raise ClientError("a duration must be finite", 2)
    return int(value)


def parameters(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    raw = Path(text[1:]).read_text() if text.startswith("@") else text
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise ClientError(f"--parameters: not JSON ({exc})", 2) from exc
    if not isinstance(doc, dict):
        raise ClientError("--parameters: a JSON object, e.g. '{\"rate\": 2}'", 2)
    return doc


def upload_artifact(api: Api, path: Path, progress: Progress) -> dict[str, Any]:
    if not path.is_file():
        raise ClientError(f"--artifact {path}: no such file", 2)
    return dict(
        api.json(
            "POST",
            "/v1/experiments/artifacts",
            params={"filename": path.name},
            content=_chunks(path, progress, f"uploading {path.name}"),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(path.stat().st_size)},
        )
    )


def submit(api: Api, args: argparse.Namespace, out: IO[str], progress: Progress) -> int:
    artifact = upload_artifact(api, Path(args.artifact), progress)
    body: dict[str, Any] = {
        "name": args.name,
        "description": args.description or "",
        "duration": seconds(args.duration),
        "artifact": artifact["sha256"],
        "parameters": parameters(args.parameters),
        "start": None if args.start in (None, "asap") else args.start,
    }
    if args.gateways:
        body["gateways"] = [g.strip() for g in args.gateways.split(",") if g.strip()]
        body["radio"] = args.radio
    else:
        alias: dict[str, Any] = {"count": args.count, "radio": args.radio}
        if args.zone:
            alias["zone"] = args.zone
        body["gateways"] = alias
    exp = api.json("POST", "/v1/experiments", json=body)
    print(
        f"experiment {exp['id']} submitted: {exp['state']}, start {exp.get('start')}, gateways "
        f"{', '.join(r['gateway'] for r in exp.get('resources', []))}",
        file=out,
    )
    print(exp["id"], file=out)
    if args.wait:
        return wait(api, exp["id"], "Terminated", args.timeout, out, progress, interval=2.0)
    return 0


def _row(exp: dict[str, Any]) -> str:
    gws = ",".join(sorted({r["gateway"] for r in exp.get("resources", [])}))
    return (
        f"{exp['id']:>6}  {exp['state']:<10} {escape(str(exp.get('owner', ''))):<14} "
        f"{exp.get('start') or '-'!s:<26} {escape(gws):<30} {escape(exp['name'])}"
    )


def list_experiments(api: Api, args: argparse.Namespace, out: IO[str]) -> int:
    params = {k: v for k, v in (("state", args.state), ("owner", args.owner), ("gateway", args.gateway)) if v}
    doc = api.json("GET", "/v1/experiments", params=params)
    items = doc["data"]
    print(f"{'id':>6}  {'state':<10} {'owner':<14} {'start':<26} {'gateways':<30} name", file=out)
    for exp in items:
        print(_row(exp), file=out)
    return 0


def gateways(api: Api, out: IO[str]) -> int:
    """The gateways experiments can take: radios, whether each can be handed out now (and why not), bookings."""
    doc = api.json("GET", "/v1/experiments/gateways")
    print(f"{'gateway':<22} {'area':<14} {'radios':<28} available", file=out)
    for g in doc["data"]:
        ok = "yes" if g["available"] else f"no: {g['reason']}"
        print(f"{escape(g['id']):<22} {escape(str(g.get('area') or '-')):<14} {','.join(g['radios']):<28} "
              f"{escape(ok)}", file=out)  # fmt: skip
        for b in g["bookings"]:
            who = f"experiment {b['experiment']}" if b["experiment"] is not None else "booked"
            print(f"{'':<22} {b['radio']:<14} {who} ({b['state']}) {b['start']} -> {b['deadline']}", file=out)
    return 0


def status(api: Api, exp_id: int, out: IO[str]) -> int:
    exp = api.json("GET", f"/v1/experiments/{exp_id}")
    print(f"experiment {exp['id']}: {escape(exp['name'])}  [{exp['state']}]", file=out)
    for key in ("owner", "start", "deadline", "started_at", "ended_at", "duration", "artifact"):
        if exp.get(key) is not None:
            print(f"  {key:<11} {escape(str(exp[key]))}", file=out)
    for r in exp.get("resources", []):
        line = f"  gateway {escape(r['gateway'])} ({r['radio']}): {r.get('phase') or 'nothing reported'}"
        if r.get("exit_code") is not None:
            line += f", exit code {r['exit_code']}"
        if r.get("error") and r["error"] != f"exit code {r.get('exit_code')}":
            line += f", {escape(r['error'])}"
        print(line, file=out)
        tail = (r.get("log_tail") or "").rstrip("\n").splitlines()[-TAIL_LINES:]
        if tail and (r.get("phase") in ("failed", "refused") or exp["state"] == "Error"):
            print(f"    last {len(tail)} lines of its output:", file=out)
            for text in tail:
                print(f"    | {escape(text)}", file=out)
    for ev in exp.get("events", [])[-10:]:
        print(
            f"  {ev['time']}  {ev.get('from') or '-'} -> {ev['to']}  by {escape(str(ev.get('actor', '')))}"
            f"  {escape(str(ev.get('reason', '')))}",
            file=out,
        )
    return 0


def _reason(exp: dict[str, Any]) -> str:
    events = exp.get("events") or []
    return str(events[-1].get("reason", "")) if events else ""


def wait(
    api: Api,
    exp_id: int,
    target: str,
    timeout: float | None,
    out: IO[str],
    progress: Progress,
    interval: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Poll until the experiment reaches ``target`` (or a later state on the normal path); fail fast on
    Error or Stopped (exit 1, with the reason); 124 when ``timeout`` seconds pass first."""
    if target not in ORDER and target not in FINAL:
        raise ClientError(f"--state {target}: one of {', '.join(ORDER)}", 2)
    started = clock()
    while True:
        exp = api.json("GET", f"/v1/experiments/{exp_id}")
        state = exp["state"]
        phases = ", ".join(f"{r['gateway']}: {r.get('phase') or '-'}" for r in exp.get("resources", []))
        progress.show(f"experiment {exp_id}: {state} ({phases}) {clock() - started:.0f} s")
        if state == target or (state in ORDER and target in ORDER and ORDER.index(state) >= ORDER.index(target)):
            progress.done()
            print(f"experiment {exp_id}: {state}", file=out)
            return 0
        if state in ("Error", "Stopped"):
            progress.done()
            print(f"experiment {exp_id}: {state}: {escape(_reason(exp))}", file=out)
            return 1
        if timeout is not None and clock() - started >= timeout:
            progress.done()
            print(f"experiment {exp_id}: still {state} after {timeout:.0f} s", file=out)
            return 124
        sleep(interval)


def cancel(api: Api, exp_id: int, out: IO[str]) -> int:
    exp = api.json("POST", f"/v1/experiments/{exp_id}/cancel")
    print(f"experiment {exp_id}: {exp['state']}", file=out)
    return 0


def extend(api: Api, exp_id: int, by: str, out: IO[str]) -> int:
    exp = api.json("POST", f"/v1/experiments/{exp_id}/extend", json={"seconds": seconds(by)})
    print(f"experiment {exp_id}: deadline {exp.get('deadline')}", file=out)
    return 0


def logs(api: Api, exp_id: int, out: IO[str]) -> int:
    for line in api.request("GET", f"/v1/experiments/{exp_id}/logs").text.splitlines():
        print(escape(line), file=out)  # line by line: the logs are the experiment's output, untrusted
    return 0


def download(api: Api, path: str, dest: Path, progress: Progress, params: dict[str, str] | None = None) -> int:
    """Stream ``path`` into ``dest`` (through a .part file: an interrupted download leaves no wrong file)."""
    part = dest.with_name(dest.name + ".part")
    started, done = time.monotonic(), 0
    with api.stream(path, params=params) as response:
        total = int(response.headers["Content-Length"]) if "Content-Length" in response.headers else None
        with part.open("wb") as f:
            for chunk in response.iter_bytes(CHUNK):
                f.write(chunk)
                done += len(chunk)
                progress.show(transfer_line(f"downloading {dest.name}", done, total, started, time.monotonic()))
    part.replace(dest)
    progress.done(transfer_line(f"downloaded {dest.name}", done, total, started, time.monotonic()))
    return done


def results(api: Api, exp_id: int, out_dir: Path, metrics: str | None, out: IO[str], progress: Progress) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    bundle = out_dir / f"experiment-{exp_id}-results.tar.gz"
    n = download(api, f"/v1/experiments/{exp_id}/results", bundle, progress)
    print(f"{bundle} ({human_bytes(n)})", file=out)
    if metrics:
        dest = out_dir / f"experiment-{exp_id}-metrics.{metrics}"
        n = download(api, f"/v1/experiments/{exp_id}/metrics", dest, progress, params={"format": metrics})
        print(f"{dest} ({human_bytes(n)})", file=out)
    return 0


# -- the command line -----------------------------------------------------------------------------------------
CLIENT_ACTIONS = ("submit", "list", "status", "wait", "cancel", "extend", "logs", "results", "sample", "gateways")
SAMPLES = Path(__file__).resolve().parents[1] / "experiments" / "samples"


def sample(name: str | None, out: IO[str]) -> int:
    """Print a shipped sample experiment (a template to copy); without a name, list them."""
    names = sorted(p.stem for p in SAMPLES.glob("*.py"))
    if not name:
        for n in names:
            doc = (SAMPLES / f"{n}.py").read_text().split('"""')[1].strip().splitlines()[0]
            print(f"{n:<16} {doc}", file=out)
        return 0
    if name not in names:
        raise ClientError(f"no sample {name!r}: one of {', '.join(names)}", 2)
    out.write((SAMPLES / f"{name}.py").read_text())
    return 0


def add_arguments(ex: argparse.ArgumentParser) -> None:
    """The client's options on the ``experiments`` parser (the actions share one parser, like the rest of
    ``smartzone``: ``experiments <action> [id] [options]``)."""
    ex.add_argument(
        "id", nargs="?", default=None, help="status|wait|cancel|extend|logs|results: the id; sample: its name"
    )
    ex.add_argument("by", nargs="?", default=None, help="extend: how much longer (600, 10m, 1h)")
    ex.add_argument("--api", default=None, help="the API's URL (default: SMARTZONE_API_URL, else api.base_url)")
    ex.add_argument(
        "--token-file", type=Path, default=None, help=f"default: SMARTZONE_TOKEN, else {DEFAULT_TOKEN_FILE}"
    )
    ex.add_argument("--name", default=None, help="submit: the experiment's name")
    ex.add_argument("--description", default=None)
    ex.add_argument("--artifact", default=None, help="submit: a script (.py) or a wheel (.whl)")
    ex.add_argument("--gateways", default=None, help="submit: gateway ids, comma-separated (or --count)")
    ex.add_argument("--count", type=int, default=1, help="submit: this many gateways with --radio (and --zone)")
    ex.add_argument("--zone", default=None, help="submit: the registry area the gateways are picked in")
    ex.add_argument("--radio", default=None, choices=("ble", "zigbee", "wifi", "lora-experimental"))
    ex.add_argument("--start", default=None, help="submit: RFC 3339 start time, or asap (default)")
    ex.add_argument("--duration", default=None, help="submit: 600, 10m, 1h30m")
    ex.add_argument("--parameters", default=None, help="submit: a JSON object, or @file.json")
    ex.add_argument("--wait", action="store_true", help="submit: then wait until it ends")
    ex.add_argument("--state", default=None, help="list: filter; wait: the state to wait for (default Terminated)")
    ex.add_argument("--owner", default=None, help="list: filter (operators)")
    ex.add_argument("--gateway", default=None, help="list: filter")
    ex.add_argument("--timeout", type=float, default=None, help="wait: give up after this many seconds (exit 124)")
    ex.add_argument("--out", type=Path, default=Path("."), help="results: the directory to write to")
    ex.add_argument("--metrics", default=None, choices=("csv", "parquet"), help="results: also the metrics file")
    ex.add_argument("--progress", action="store_true", help="show progress even when stderr is not a terminal")


def run(settings: Settings, args: argparse.Namespace, out: IO[str] | None = None) -> int:
    out = out or sys.stdout
    progress = Progress(enabled=True if args.progress else None)
    action = args.action
    try:
        if action == "sample":
            return sample(args.id, out)
        if action in ("status", "wait", "cancel", "extend", "logs", "results"):
            if args.id is None or not str(args.id).isdigit():
                raise ClientError(f"experiments {action} needs an experiment id (a number)", 2)
            args.id = int(args.id)
        if action == "submit":
            missing = [
                o
                for o, v in (
                    ("--name", args.name),
                    ("--artifact", args.artifact),
                    ("--duration", args.duration),
                    ("--radio", args.radio),
                )
                if not v
            ]
            if missing:
                raise ClientError(f"experiments submit needs {', '.join(missing)}", 2)
        if action == "extend" and not args.by:
            raise ClientError("experiments extend needs how much longer: extend <id> 10m", 2)
        api = Api(api_url(settings, args.api), read_token(args.token_file))
        try:
            if action == "submit":
                return submit(api, args, out, progress)
            if action == "list":
                return list_experiments(api, args, out)
            if action == "gateways":
                return gateways(api, out)
            if action == "status":
                return status(api, args.id, out)
            if action == "wait":
                return wait(api, args.id, args.state or "Terminated", args.timeout, out, progress)
            if action == "cancel":
                return cancel(api, args.id, out)
            if action == "extend":
                return extend(api, args.id, args.by, out)
            if action == "logs":
                return logs(api, args.id, out)
            return results(api, args.id, args.out, args.metrics, out, progress)
        finally:
            api.close()
    except ClientError as exc:
        print(f"smartzone: {escape(str(exc))}", file=sys.stderr)
        return exc.code
