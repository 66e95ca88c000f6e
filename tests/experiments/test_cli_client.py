"""``smartzone experiments submit|list|status|wait|cancel|extend|logs|results|sample`` against a real API server
(uvicorn on loopback, the experiments store on SQLite, metrics in the real influxd): what the experimenter types
and sees, and its exit codes. The whole chain with the scheduler and the agents: test_end_to_end.py."""

from __future__ import annotations

import io
import socket
import tarfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import uvicorn

from api.app import create_app
from cli import client
from cli.main import build_parser
from experiments import secrets
from experiments.db import Experiment
from experiments.states import transition
from tests.conftest import zone_settings
from tests.experiments.world import hear_all, make_users, set_gateway

T0 = datetime(2026, 12, 2, 17, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory, influxd) -> Iterator[tuple]:
    tmp = tmp_path_factory.mktemp("cli")
    port = _free_port()
    settings = zone_settings(
        tmp / "data",
        influxd.url,
        api={"rate_limit": 1000.0, "rate_burst": 10_000, "base_url": f"http://127.0.0.1:{port}"},
        storage={"sql_url": f"sqlite:///{tmp / 'experiments.db'}"},
    )
    clock = Clock()
    app = create_app(settings, clock=clock)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    sessions = app.state.sz.experiments_store()
    users = make_users(sessions)
    hear_all(sessions, app.state.sz.registry)
    try:
        yield settings, sessions, users, clock, tmp
    finally:
        srv.should_exit = True
        thread.join(10)


def run(server, monkeypatch, *argv: str, who: str = "alice") -> tuple[int, str, str]:
    settings, _, users, _, _ = server
    monkeypatch.setenv("SMARTZONE_TOKEN", users.secrets[who])
    args = build_parser().parse_args(["experiments", *argv])
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    code = client.run(settings, args, out=out)
    return code, out.getvalue(), err.getvalue()


def probe(tmp, text: str = "print('hello')\n") -> str:
    path = tmp / "probe.py"
    path.write_text(text)
    return str(path)


def submit(server, monkeypatch, *extra: str) -> int:
    *_, tmp = server
    code, out, err = run(
        server,
        monkeypatch,
        "submit",
        "--name",
        "rtt",
        "--artifact",
        probe(tmp),
        "--gateways",
        "gw-volkstraat",
        "--radio",
        "ble",
        "--duration",
        "10m",
        "--parameters",
        '{"rate": 2}',
        *extra,
    )
    assert code == 0, err
    return int(out.strip().splitlines()[-1])


def test_submit_list_status_cancel_and_a_conflict_named(server, monkeypatch):
    _, _sessions, _, clock, _ = server
    clock.now = T0
    exp_id = submit(server, monkeypatch, "--start", (T0 + timedelta(hours=2)).isoformat())

    code, out, _ = run(server, monkeypatch, "list", "--state", "Waiting")
    assert code == 0 and f"{exp_id:>6}  Waiting" in out and "gw-volkstraat" in out

    code, out, _ = run(server, monkeypatch, "status", str(exp_id))
    assert code == 0 and f"experiment {exp_id}: rtt  [Waiting]" in out
    assert "gateway gw-volkstraat (ble): nothing reported" in out and "-> Waiting" in out

    # the same gateway and radio, overlapping: the API's 409 problem, printed, exit 1
    code, _, err = run(
        server, monkeypatch, "submit", "--name", "again", "--artifact", probe(server[4]), "--gateways",
        "gw-volkstraat", "--radio", "ble", "--duration", "1h", "--start", (T0 + timedelta(hours=2)).isoformat(),
    )  # fmt: skip
    assert code == 1 and "409" in err and str(exp_id) in err, err

    # another experimenter cannot see it; the operator can
    code, _, err = run(server, monkeypatch, "status", str(exp_id), who="bob")
    assert code == 1 and "403" in err
    assert run(server, monkeypatch, "status", str(exp_id), who="ops")[0] == 0

    code, out, _ = run(server, monkeypatch, "cancel", str(exp_id))
    assert code == 0 and f"experiment {exp_id}: Stopped" in out
    code, _, err = run(server, monkeypatch, "cancel", str(exp_id))
    assert code == 1 and "409" in err


def _set_state(sessions, exp_id: int, path: list[str], reason: str, at: datetime) -> None:
    with sessions.begin() as session:
        exp = session.get(Experiment, exp_id)
        for state in path:
            transition(session, exp, state, "test", reason, at)


def test_wait_reaches_running_fails_fast_on_error_and_times_out(server, monkeypatch):
    _, sessions, _, clock, _ = server
    clock.now = T0 + timedelta(days=1)
    exp_id = submit(server, monkeypatch)  # as soon as possible
    api = client.Api(client.api_url(server[0], None), server[2].secrets["alice"])
    ticks = iter(range(1000))
    try:
        # still Waiting: the timeout (on an injected clock, no real sleeping) gives 124
        out = io.StringIO()
        code = client.wait(
            api, exp_id, "Running", 5.0, out, client.Progress(enabled=False),
            clock=lambda: float(next(ticks)), sleep=lambda s: None,
        )  # fmt: skip
        assert code == 124 and "still Waiting" in out.getvalue()

        _set_state(sessions, exp_id, ["toLaunch", "Launching", "Running"], "agents running", clock.now)
        code, out, _ = run(server, monkeypatch, "wait", str(exp_id), "--state", "Running")
        assert code == 0 and f"experiment {exp_id}: Running" in out

        # waiting for Launching when it is already Running: a later state on the path counts
        assert run(server, monkeypatch, "wait", str(exp_id), "--state", "Launching")[0] == 0

        _set_state(sessions, exp_id, ["Error"], "gw-volkstraat: exit code 3", clock.now)
        progress = io.StringIO()
        code = client.wait(api, exp_id, "Terminated", None, out := io.StringIO(), client.Progress(progress, True))
        assert code == 1 and "Error: gw-volkstraat: exit code 3" in out.getvalue()
        assert "\r" in progress.getvalue() and "experiment" in progress.getvalue()  # the progress line was drawn
    finally:
        api.close()


def test_extend_logs_and_results_with_progress(server, monkeypatch):
    settings, _sessions, _, clock, tmp = server
    clock.now = T0 + timedelta(days=2)
    exp_id = submit(server, monkeypatch)
    code, out, _ = run(server, monkeypatch, "status", str(exp_id))
    first = next(ln for ln in out.splitlines() if ln.strip().startswith("deadline"))

    code, out, _ = run(server, monkeypatch, "extend", str(exp_id), "5m")
    assert code == 0 and "deadline" in out and out.split("deadline ")[1].strip() not in first
    assert run(server, monkeypatch, "extend", str(exp_id), "soon")[0] == 2  # not a duration: usage error

    # the gateway's agent uploads its bundle with the HMAC token of its desired document
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"seq,rtt_ms\n1,12.5\n"
        info = tarfile.TarInfo("results/rtt.csv")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    token = secrets.upload_token(secrets.key(settings), exp_id, "gw-volkstraat")
    r = httpx.put(
        f"{settings.public_base_url()}/v1/experiments/{exp_id}/gateways/gw-volkstraat/results",
        content=buf.getvalue(),
        headers={"Authorization": f"Bearer {token}", "X-Smartzone-Gateway": "gw-volkstraat",
                 "Content-Type": "application/gzip"},
    )  # fmt: skip
    assert r.status_code in (200, 201), r.text

    code, out, _ = run(server, monkeypatch, "logs", str(exp_id))
    assert code == 0 and "Waiting" in out

    dest = tmp / "downloads"
    code, out, err = run(server, monkeypatch, "results", str(exp_id), "--out", str(dest), "--metrics", "csv",
                         "--progress")  # fmt: skip
    assert code == 0, err
    bundle = dest / f"experiment-{exp_id}-results.tar.gz"
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
    assert any(n.startswith("gw-volkstraat/") for n in names) and "events.csv" in names, names
    assert (dest / f"experiment-{exp_id}-metrics.csv").exists()
    assert "downloaded" in err and "%" in err  # the progress lines, forced on
    assert not list(dest.glob("*.part"))


def test_usage_errors_missing_token_and_an_unreachable_api(server, monkeypatch, tmp_path):
    settings = server[0]
    assert run(server, monkeypatch, "status")[0] == 2
    assert run(server, monkeypatch, "status", "abc")[0] == 2
    assert run(server, monkeypatch, "submit", "--name", "x")[0] == 2

    monkeypatch.delenv("SMARTZONE_TOKEN", raising=False)
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    args = build_parser().parse_args(["experiments", "list", "--token-file", str(tmp_path / "none")])
    assert client.run(settings, args, out=io.StringIO()) == 2 and "no token" in err.getvalue()

    (tmp_path / "token").write_text(server[2].secrets["alice"] + "\n")
    args = build_parser().parse_args(["experiments", "list", "--token-file", str(tmp_path / "token")])
    assert client.run(settings, args, out=io.StringIO()) == 0  # the token from the file

    (tmp_path / "token").write_text("szx_00000000_wrong\n")
    err.truncate(0)
    assert client.run(settings, args, out=io.StringIO()) == 1 and "401" in err.getvalue()

    args = build_parser().parse_args(["experiments", "list", "--api", f"http://127.0.0.1:{_free_port()}"])
    monkeypatch.setenv("SMARTZONE_TOKEN", "szx_00000000_x")
    assert client.run(settings, args, out=io.StringIO()) == 3 and "cannot reach" in err.getvalue()


def test_sample_lists_and_prints_the_shipped_templates(server, monkeypatch):
    code, out, _ = run(server, monkeypatch, "sample")
    assert code == 0 and "mqtt_rtt_probe" in out and "ble_scan" in out
    code, out, _ = run(server, monkeypatch, "sample", "mqtt_rtt_probe")
    assert code == 0 and "SZX_MQTT_PREFIX" in out
    compile(out, "mqtt_rtt_probe.py", "exec")
    assert run(server, monkeypatch, "sample", "nope")[0] == 2


def test_gateways_show_radios_availability_and_bookings_without_others_ids(server, monkeypatch):
    _, sessions, _, clock, _ = server
    clock.now = T0 + timedelta(days=3)
    exp_id = submit(server, monkeypatch)
    set_gateway(sessions, "gw-egmont", online=False, status_at=clock.now)
    try:
        code, out, _ = run(server, monkeypatch, "gateways")
        assert code == 0, out
        rows = {ln.split()[0]: ln for ln in out.splitlines()[1:] if ln and not ln.startswith(" ")}
        assert "gw-kmska-roof" not in rows  # no experiment radio: the LoRaWAN service gateway is never offered
        assert "yes" in rows["gw-volkstraat"] and "ble" in rows["gw-volkstraat"]
        assert "no: gateway gw-egmont is offline" in rows["gw-egmont"]
        assert f"experiment {exp_id} (Waiting)" in out  # alice sees her own booking's id

        code, out, _ = run(server, monkeypatch, "gateways", who="bob")
        assert code == 0 and f"experiment {exp_id}" not in out and "booked (Waiting)" in out
        code, out, _ = run(server, monkeypatch, "gateways", who="ops")
        assert f"experiment {exp_id} (Waiting)" in out
    finally:
        set_gateway(sessions, "gw-egmont", online=True, status_at=clock.now)
        run(server, monkeypatch, "cancel", str(exp_id))
