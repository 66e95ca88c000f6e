"""The experiments REST API in-process (``TestClient``) on SQLite and PostgreSQL, with the real influxd for
metrics: authentication (401/403), booking errors (409/422), cancel and extend, artifact upload (413/422),
the agent's artifact download and results upload (HMAC token, negative controls), logs, metrics as
CSV/Parquet/JSON, the results tar.gz, and that nothing authenticated is ever cached."""

from __future__ import annotations

import csv
import io
import tarfile
from datetime import UTC, datetime, timedelta

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from experiments.db import Experiment, ExperimentResource
from experiments.secrets import key, upload_token
from experiments.states import transition
from storage.influx import Influx
from storage.lineprotocol import join, line
from tests.conftest import zone_settings
from tests.experiments.world import NOW, SCRIPT, make_users, module_sql_url, reset, set_gateway, wheel

__all__ = ["module_sql_url"]  # the fixture
PROBLEM = "application/problem+json"
LIMIT = 4096


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def env(module_sql_url, tmp_path_factory, influxd):
    tmp = tmp_path_factory.mktemp("api")
    settings = zone_settings(
        tmp / "data",
        influxd.url,
        api={"rate_limit": 1000.0, "rate_burst": 10_000, "base_url": "http://testserver"},
        storage={"sql_url": module_sql_url},
        experiments={"artifact_max_bytes": LIMIT, "results_max_bytes": LIMIT, "max_duration_s": 3600},
    )
    settings = settings.model_copy(
        update={"influx": settings.influx.model_copy(update={"experiments_database": f"exp_{tmp.name[-8:]}x"})}
    )
    clock = Clock()
    app = create_app(settings, clock=clock)
    with TestClient(app) as client:
        sessions = app.state.sz.experiments_store()
        users = make_users(sessions)
        yield client, settings, sessions, users, clock, app


@pytest.fixture
def api(env):
    _, _, sessions, _, clock, app = env
    clock.now = NOW
    reset(sessions, app.state.sz.registry)
    return env


def auth(users, name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {users.secrets[name]}"}


def upload(client, users, data=SCRIPT, filename="probe.py", who="alice"):
    return client.post(
        "/v1/experiments/artifacts",
        params={"filename": filename},
        content=data,
        headers={**auth(users, who), "Content-Type": "application/octet-stream"},
    )


def submit(client, users, who="alice", **body):
    sha = upload(client, users, who=who).json()["sha256"]
    doc = {
        "name": "rtt probe",
        "gateways": ["gw-volkstraat"],
        "radio": "ble",
        "start": (NOW + timedelta(hours=1)).isoformat(),
        "duration": 600,
        "artifact": sha,
        **body,
    }
    return client.post("/v1/experiments", json=doc, headers=auth(users, who))


def test_without_or_with_a_bad_token_it_is_401_with_www_authenticate(api):
    client, _, _, users, _, _ = api
    for headers in ({}, {"Authorization": "Bearer szx_00000000_nope"}, {"Authorization": "Basic YTpi"}):
        r = client.get("/v1/experiments", headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["content-type"] == PROBLEM and r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["status"] == 401
    assert client.post("/v1/experiments/artifacts?filename=p.py", content=SCRIPT).status_code == 401
    assert client.get("/v1/experiments", headers=auth(users, "alice")).status_code == 200  # control


def test_submit_get_list_cancel_and_another_owner_is_403(api):
    client, _, _, users, _, _ = api
    r = submit(client, users, parameters={"peers": 2})
    assert r.status_code == 201, r.text
    exp = r.json()
    assert r.headers["location"] == f"http://testserver/v1/experiments/{exp['id']}"
    assert (exp["state"], exp["owner"], exp["gateways"], exp["parameters"]) == (
        "Waiting",
        "alice",
        ["gw-volkstraat"],
        {"peers": 2},
    )
    assert exp["events"][0]["to"] == "Waiting" and exp["resources"][0]["phase"] is None
    url = f"/v1/experiments/{exp['id']}"
    assert client.get(url, headers=auth(users, "alice")).json()["id"] == exp["id"]
    assert client.get(url, headers=auth(users, "ops")).status_code == 200
    for path in ("", "/logs", "/metrics", "/results", "/artifact"):
        r = client.get(url + path, headers=auth(users, "bob"))
        assert r.status_code == 403 and r.headers["content-type"] == PROBLEM, path
    assert client.post(url + "/cancel", headers=auth(users, "bob")).status_code == 403
    assert client.get("/v1/experiments", headers=auth(users, "bob")).json() == {"data": [], "count": 0}
    listed = client.get("/v1/experiments", params={"gateway": "gw-volkstraat"}, headers=auth(users, "ops")).json()
    assert [e["id"] for e in listed["data"]] == [exp["id"]]
    assert client.get("/v1/experiments", params={"state": "Nope"}, headers=auth(users, "ops")).status_code == 422
    assert client.get("/v1/experiments/9999", headers=auth(users, "ops")).status_code == 404

    cancelled = client.post(url + "/cancel", headers=auth(users, "alice"))
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "Stopped"
    assert cancelled.json()["events"][-1]["reason"] == "cancelled by alice"
    again = client.post(url + "/cancel", headers=auth(users, "alice"))
    assert again.status_code == 409 and "final state" in again.json()["detail"]
    logs = client.get(url + "/logs", headers=auth(users, "alice"))
    assert logs.headers["content-type"].startswith("text/plain")
    assert "alice: Waiting -> Stopped: cancelled by alice" in logs.text and "== gw-volkstraat (ble)" in logs.text


def test_booking_errors_are_409_and_422_problems(api):
    client, _, sessions, users, _, _ = api
    first = submit(client, users).json()
    clash = submit(client, users, who="bob")
    assert clash.status_code == 409 and clash.json()["experiment"] == first["id"]
    assert f"taken by experiment {first['id']}" in clash.json()["detail"]
    set_gateway(sessions, "gw-sint-andries", online=False)
    off = submit(client, users, gateways=["gw-sint-andries"])
    assert off.status_code == 409 and "gw-sint-andries is offline" in off.json()["detail"]
    set_gateway(sessions, "gw-nationalestraat", selftest_failed=1, selftest_detail="wlan0: no link")
    failed = submit(client, users, gateways=["gw-nationalestraat"])
    assert failed.status_code == 409 and "self-test failed (1 checks): wlan0: no link" in failed.json()["detail"]
    for body, parameter, text in (
        ({"gateways": ["gw-egmont"]}, "radio", "no ble radio"),
        ({"gateways": ["gw-nowhere"]}, "gateways", "not in the registry"),
        ({"duration": 3601}, "duration", "over the maximum"),
        ({"artifact": "f" * 64}, "artifact", "unknown"),
        ({"gateways": {"count": 4, "radio": "zigbee"}}, "gateways", "only 3 gateway(s)"),
    ):
        r = submit(client, users, who="bob", **body)
        assert r.status_code == 422 and r.json()["parameter"] == parameter and text in r.json()["detail"], body
    alias = submit(
        client, users, who="bob", gateways={"count": 1, "radio": "zigbee", "zone": "sint-andries"}, radio=None
    )
    assert alias.status_code == 201 and alias.json()["gateways"] == ["gw-kloosterstraat"]


def test_extend_and_cancel_a_running_experiment(api):
    client, _, sessions, users, clock, _ = api
    exp = submit(client, users).json()
    url = f"/v1/experiments/{exp['id']}"
    later = submit(client, users, who="bob", start=(NOW + timedelta(hours=1, minutes=15)).isoformat()).json()
    r = client.post(url + "/extend", json={"seconds": 300}, headers=auth(users, "alice"))
    assert r.status_code == 200 and r.json()["duration"] == 900
    assert datetime.fromisoformat(r.json()["deadline"]) == NOW + timedelta(hours=1, minutes=15)
    clash = client.post(url + "/extend", json={"seconds": 1}, headers=auth(users, "alice"))
    assert clash.status_code == 409 and clash.json()["experiment"] == later["id"]
    with sessions.begin() as session:
        e = session.get(Experiment, exp["id"])
        for s in ("toLaunch", "Launching", "Running"):
            transition(session, e, s, "scheduler", "test", NOW)
    clock.now = NOW + timedelta(hours=1, minutes=1)
    r = client.post(url + "/cancel", headers=auth(users, "ops"))
    assert r.status_code == 200 and r.json()["state"] == "Finishing"
    assert r.json()["events"][-1] | {"time": None} == {
        "time": None,
        "actor": "ops",
        "from": "Running",
        "to": "Finishing",
        "reason": "cancelled by ops",
    }
    assert client.post(url + "/extend", json={"seconds": 1}, headers=auth(users, "alice")).status_code == 409


def test_artifact_upload_created_then_existing_oversized_and_malformed(api):
    client, _, _, users, _, _ = api
    first = upload(client, users, wheel(), "probe-1.0-py3-none-any.whl")
    assert first.status_code in (200, 201) and first.json()["kind"] == "wheel"
    again = upload(client, users, wheel(), "probe-1.0-py3-none-any.whl")
    assert again.status_code == 200 and again.json() == first.json()
    fresh = upload(client, users, SCRIPT + f"# {datetime.now(UTC).isoformat()}\n".encode())
    assert fresh.status_code == 201 and fresh.json()["kind"] == "script"
    big = upload(client, users, b"#" * (LIMIT + 1))
    assert big.status_code == 413 and big.json()["limit"] == LIMIT
    # no Content-Length (chunked): refused while streaming
    chunked = client.post(
        "/v1/experiments/artifacts?filename=probe.py",
        content=iter([b"#" * 1000] * 10),
        headers=auth(users, "alice"),
    )
    assert chunked.status_code == 413
    bad = upload(client, users, b"def (:\n")
    assert bad.status_code == 422 and "does not compile" in bad.json()["detail"]
    kind = upload(client, users, SCRIPT, "probe.sh")
    assert kind.status_code == 422 and kind.json()["parameter"] == "filename"
    wrong = upload(client, users, wheel(), "probe.py")
    assert wrong.status_code == 422 and "not UTF-8" in wrong.json()["detail"]


def _bundle(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_the_agent_fetches_the_artifact_and_uploads_results_with_its_token(api):
    client, settings, sessions, users, _, _ = api
    exp = submit(client, users, gateways=["gw-volkstraat", "gw-sint-andries"]).json()
    k = key(settings)
    token = upload_token(k, exp["id"], "gw-volkstraat")
    agent = {"Authorization": f"Bearer {token}", "X-Smartzone-Gateway": "gw-volkstraat"}
    url = f"/v1/experiments/{exp['id']}"

    art = client.get(url + "/artifact", headers=agent)
    assert art.status_code == 200 and art.content == SCRIPT
    assert client.get(url + "/artifact", headers=auth(users, "alice")).content == SCRIPT
    wrong = {**agent, "Authorization": f"Bearer {upload_token(k, exp['id'], 'gw-sint-andries')}"}
    assert client.get(url + "/artifact", headers=wrong).status_code == 401
    outsider = {
        "Authorization": f"Bearer {upload_token(k, exp['id'], 'gw-egmont')}",
        "X-Smartzone-Gateway": "gw-egmont",
    }
    assert client.get(url + "/artifact", headers=outsider).status_code == 403

    bundle = _bundle({"results/rtt.csv": b"seq,rtt_ms\n1,12.5\n", "stdout.log": b"started\n"})
    put = url + "/gateways/gw-volkstraat/results"
    assert client.put(put, content=bundle, headers=wrong).status_code == 401  # another gateway's token
    assert client.put(put, content=bundle, headers=auth(users, "alice")).status_code == 401  # users cannot
    other = url + "/gateways/gw-sint-andries/results"
    assert client.put(other, content=bundle, headers=agent).status_code == 403  # not its own gateway
    assert client.put(put, content=b"#" * (LIMIT + 1), headers=agent).status_code == 413
    assert client.put(put, content=b"not a tarball", headers=agent).status_code == 422
    with sessions() as session:
        row = session.query(ExperimentResource).filter_by(experiment_id=exp["id"], gateway="gw-volkstraat").one()
        assert row.results_sha256 is None  # nothing refused was recorded
    ok = client.put(put, content=bundle, headers=agent)  # the right token: accepted
    assert ok.status_code == 201 and ok.json()["size"] == len(bundle)
    stored = settings.data_dir / "experiments" / "results" / str(exp["id"]) / "gw-volkstraat.tar.gz"
    assert stored.read_bytes() == bundle
    got = client.get(url, headers=auth(users, "alice")).json()
    assert [(r["gateway"], r["results_uploaded"]) for r in got["resources"]] == [
        ("gw-volkstraat", True),
        ("gw-sint-andries", False),
    ]


def test_metrics_as_csv_parquet_json_and_the_results_tarball(api):
    client, settings, _, users, _, _ = api
    exp = submit(client, users).json()
    other = submit(client, users, radio="wifi").json()  # its metrics must not leak into the first's
    db = settings.influx.experiments_database
    t0 = int(NOW.timestamp()) * 10**9
    points = [
        line(
            "metrics",
            {"experiment": str(exp["id"]), "gateway": "gw-volkstraat", "metric": "rtt_ms", "unit": "ms"},
            {"value": 12.5},
            t0,
        ),
        line(
            "metrics",
            {"experiment": str(exp["id"]), "gateway": "gw-volkstraat", "metric": "rtt_ms", "unit": "ms"},
            {"value": 14.0},
            t0 + 10**9,
        ),
        line(
            "metrics",
            {"experiment": str(exp["id"]), "gateway": "gw-volkstraat", "metric": "delivered"},
            {"value": 1.0},
            t0,
        ),
        line(
            "metrics",
            {"experiment": str(other["id"]), "gateway": "gw-volkstraat", "metric": "rtt_ms", "unit": "ms"},
            {"value": 99.0},
            t0,
        ),
    ]
    with Influx(settings.influx) as influx:
        influx.ensure_database(db, "30d")
        influx.write(db, join(points))
    url = f"/v1/experiments/{exp['id']}"
    r = client.get(url + "/metrics", headers=auth(users, "alice"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows == [
        ["time", "gateway", "metric", "unit", "value"],
        ["2026-12-02T17:00:00.000000Z", "gw-volkstraat", "delivered", "", "1.0"],
        ["2026-12-02T17:00:00.000000Z", "gw-volkstraat", "rtt_ms", "ms", "12.5"],
        ["2026-12-02T17:00:01.000000Z", "gw-volkstraat", "rtt_ms", "ms", "14.0"],
    ]
    table = pq.read_table(io.BytesIO(client.get(url + "/metrics?format=parquet", headers=auth(users, "alice")).content))
    assert table.column("value").to_pylist() == [1.0, 12.5, 14.0]
    assert str(table.schema.field("time").type) == "timestamp[us, tz=UTC]"
    doc = client.get(url + "/metrics?format=json", headers=auth(users, "alice")).json()
    assert [m["value"] for m in doc["metrics"]] == [1.0, 12.5, 14.0]
    assert client.get(url + "/metrics?format=xml", headers=auth(users, "alice")).status_code == 400

    token = upload_token(key(settings), exp["id"], "gw-volkstraat")
    client.put(
        url + "/gateways/gw-volkstraat/results",
        content=_bundle({"results/rtt.csv": b"seq,rtt_ms\n1,12.5\n", "stderr.log": b""}),
        headers={"Authorization": f"Bearer {token}", "X-Smartzone-Gateway": "gw-volkstraat"},
    )
    client.post(url + "/cancel", headers=auth(users, "alice"))
    res = client.get(url + "/results", headers=auth(users, "alice"))
    assert res.status_code == 200 and res.headers["content-type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(res.content), mode="r:gz") as tar:
        names = tar.getnames()
        assert names == ["metrics.csv", "events.csv", "gw-volkstraat/results/rtt.csv", "gw-volkstraat/stderr.log"]
        metrics = tar.extractfile("metrics.csv").read().decode()
        events = tar.extractfile("events.csv").read().decode()
        rtt = tar.extractfile("gw-volkstraat/results/rtt.csv").read()
    assert metrics == r.text
    assert events.splitlines()[1:] == [
        "2026-12-02T17:00:00Z,alice,,Waiting,submitted",
        "2026-12-02T17:00:00Z,alice,Waiting,Stopped,cancelled by alice",
    ]
    assert rtt == b"seq,rtt_ms\n1,12.5\n"


def test_authenticated_responses_are_never_cached(api):
    client, _, _, users, _, _ = api
    exp = submit(client, users).json()
    url = f"/v1/experiments/{exp['id']}"
    for path in ("", "/logs", "/metrics"):
        r = client.get(url + path, headers=auth(users, "alice"))
        assert r.status_code == 200 and r.headers["cache-control"] == "private, no-store", path
    refused = client.get(url, headers=auth(users, "bob"))  # right after alice's 200: not served from a cache
    assert refused.status_code == 403 and refused.headers["cache-control"] == "private, no-store"
    assert client.get(url).status_code == 401
    # the open data keeps its public caching (negative control), and a request with credentials skips it
    public = client.get("/v1/datasets")
    assert public.status_code == 200 and public.headers["cache-control"].startswith("public")
    with_auth = client.get("/v1/datasets", headers=auth(users, "alice"))
    assert with_auth.headers["cache-control"] == "private, no-store"


def test_json_bodies_are_bounded_and_the_openapi_documents_the_routes(api):
    client, _, _, users, _, _ = api
    huge = client.post(
        "/v1/experiments",
        content=b"{" + b" " * (2 << 20) + b"}",
        headers={**auth(users, "alice"), "Content-Type": "application/json"},
    )
    assert huge.status_code == 413
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/v1/experiments",
        "/v1/experiments/artifacts",
        "/v1/experiments/{exp_id}",
        "/v1/experiments/{exp_id}/cancel",
        "/v1/experiments/{exp_id}/extend",
        "/v1/experiments/{exp_id}/logs",
        "/v1/experiments/{exp_id}/metrics",
        "/v1/experiments/{exp_id}/results",
        "/v1/experiments/{exp_id}/artifact",
        "/v1/experiments/{exp_id}/gateways/{gateway}/results",
    ):
        assert path in paths, path
        for op in paths[path].values():
            assert op["summary"], path
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
