"""Contract test of ``dashboards.push`` against Grafana's published HTTP API.

Grafana cannot run on this machine, so ``grafana_fake.FakeGrafana`` serves the endpoints grafana-client calls,
with the status codes and bodies of Grafana's HTTP API documentation, over real HTTP on 127.0.0.1. The tests
assert the exact requests (method, path, body, Authorization header) and the state the fake ends up with:
creation, idempotency (no write on a second push), dashboard versions with messages, datasource secrets,
moves between folders, errors (401/403/409, server down) and plan validation.
The dashboards here are small hand-built models, not those of ``dashboards/build.py``.
"""

from __future__ import annotations

import copy
import socket
from collections.abc import Callable, Iterator

import pytest
from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError

from dashboards.push import PushError, PushPlan, PushReport, connect, push
from tests.dashboards.grafana_fake import FakeGrafana

TOKEN = "glsa_SmartZoneTest_4f9a1c0e"
VIEWER_TOKEN = "glsa_ViewerOnly_77b2d901"
FOLDER = "smartzone"
MESSAGE = "smartzone 0.1.0: initial dashboards"


def influx(uid: str, name: str, db: str, user: str, password: str) -> dict:
    return {
        "uid": uid,
        "name": name,
        "type": "influxdb",
        "access": "proxy",
        "url": "http://influxdb:8086",
        "user": user,
        "jsonData": {"dbName": db, "httpMode": "GET", "version": "InfluxQL"},
        "secureJsonData": {"password": password},
    }


def panel(pid: int, title: str, measurement: str, ds_uid: str) -> dict:
    return {
        "id": pid,
        "type": "timeseries",
        "title": title,
        "gridPos": {"h": 8, "w": 12, "x": 12 * ((pid - 1) % 2), "y": 8 * ((pid - 1) // 2)},
        "datasource": {"type": "influxdb", "uid": ds_uid},
        "fieldConfig": {"defaults": {"unit": "conμgm3"}, "overrides": []},
        "targets": [
            {
                "refId": "A",
                "rawQuery": True,
                "resultFormat": "time_series",
                # InfluxQL shown by Grafana, never executed here
                "query": f'SELECT mean("value") FROM "{measurement}" WHERE $timeFilter GROUP BY time($__interval)',  # noqa: S608
            }
        ],
    }


def dashboard(uid: str, title: str, panels: list[dict]) -> dict:
    return {
        "uid": uid,
        "title": title,
        "tags": ["smartzone"],
        "timezone": "browser",
        "schemaVersion": 39,
        "refresh": "1m",
        "time": {"from": "now-24h", "to": "now"},
        "templating": {"list": []},
        "panels": panels,
    }


def make_plan() -> PushPlan:
    return PushPlan(
        folder_uid=FOLDER,
        folder_title="Smart Zone",
        datasources=[
            influx("smartzone-open", "Smart Zone (open)", "smartzone_open", "grafana_open", "open-secret"),
            influx("smartzone-restricted", "Smart Zone (restricted)", "smartzone", "grafana_ro", "restricted-secret"),
        ],
        dashboards=[
            dashboard(
                "smartzone-overview",
                "Smart Zone overview",
                [panel(1, "PM2.5", "pm25", "smartzone-open"), panel(2, "Noise", "noise_laeq", "smartzone-open")],
            ),
            dashboard("smartzone-air", "Air quality", [panel(1, "NO2", "no2", "smartzone-restricted")]),
            dashboard("smartzone-gateways", "Gateways", [panel(1, "Uplinks", "uplinks", "smartzone-restricted")]),
        ],
    )


def replace(plan: PushPlan, edit: Callable[[dict], None]) -> PushPlan:
    """A deep copy of the plan, edited through a dict view of its fields."""
    fields = copy.deepcopy(plan.__dict__)
    edit(fields)
    return PushPlan(**fields)


ALL_LABELS = [
    "folder smartzone",
    "datasource smartzone-open",
    "datasource smartzone-restricted",
    "dashboard smartzone-overview",
    "dashboard smartzone-air",
    "dashboard smartzone-gateways",
]


@pytest.fixture
def fake() -> Iterator[FakeGrafana]:
    with FakeGrafana(TOKEN, viewer_token=VIEWER_TOKEN) as grafana:
        yield grafana


@pytest.fixture
def api(fake: FakeGrafana) -> GrafanaApi:
    return connect(fake.url, TOKEN, timeout=5)


@pytest.fixture
def pushed(fake: FakeGrafana, api: GrafanaApi) -> PushPlan:
    """Grafana after a first push of the plan; the request log is cleared."""
    plan = make_plan()
    push(api, plan, MESSAGE)
    fake.clear()
    return plan


# --- first push and idempotency ------------------------------------------------------------------------


def test_first_push_into_empty_grafana_creates_everything(fake: FakeGrafana, api: GrafanaApi) -> None:
    plan = make_plan()
    report = push(api, plan, MESSAGE)

    assert report == PushReport(created=ALL_LABELS, updated=[], unchanged=[])
    assert report.changed()
    assert fake.calls() == [
        ("GET", "/api/folders/smartzone"),
        ("POST", "/api/folders"),
        ("GET", "/api/datasources/uid/smartzone-open"),
        ("POST", "/api/datasources"),
        ("GET", "/api/datasources/uid/smartzone-restricted"),
        ("POST", "/api/datasources"),
        ("GET", "/api/dashboards/uid/smartzone-overview"),
        ("POST", "/api/dashboards/db"),
        ("GET", "/api/dashboards/uid/smartzone-air"),
        ("POST", "/api/dashboards/db"),
        ("GET", "/api/dashboards/uid/smartzone-gateways"),
        ("POST", "/api/dashboards/db"),
    ]
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in fake.requests)
    writes = fake.writes()
    assert writes[0].body == {"uid": "smartzone", "title": "Smart Zone"}
    assert [w.body for w in writes[1:3]] == plan.datasources  # with secureJsonData: sent on creation
    for w, dash in zip(writes[3:], plan.dashboards, strict=True):
        assert w.body == {"dashboard": dash, "folderUid": FOLDER, "overwrite": True, "message": MESSAGE}

    # What Grafana now holds, read back through its API.
    assert fake.folders[FOLDER]["title"] == "Smart Zone"
    assert fake.secrets["smartzone-open"] == {"password": "open-secret"}
    ds = api.datasource.get_datasource_by_uid("smartzone-open")
    assert ds["secureJsonFields"] == {"password": True}
    assert "secureJsonData" not in ds
    for dash in plan.dashboards:
        got = api.dashboard.get_dashboard(dash["uid"])
        assert got["meta"]["folderUid"] == FOLDER
        assert got["meta"]["folderTitle"] == "Smart Zone"
        assert {k: v for k, v in got["dashboard"].items() if k not in ("id", "version")} == dash
        versions = api.dashboard_versions.get_dashboard_versions_by_uid(dash["uid"])
        assert [(v["version"], v["message"]) for v in versions] == [(1, MESSAGE)]


def test_second_push_of_same_plan_sends_no_write(fake: FakeGrafana, api: GrafanaApi, pushed: PushPlan) -> None:
    report = push(api, make_plan(), "nothing changed")

    assert fake.writes() == []
    assert {m for m, _ in fake.calls()} == {"GET"}
    assert len(fake.requests) == 6  # one GET per object
    assert report == PushReport(created=[], updated=[], unchanged=ALL_LABELS)
    assert not report.changed()
    assert all(len(v) == 1 for v in fake.versions.values())


def test_server_managed_keys_in_the_plan_are_not_sent_nor_compared(fake: FakeGrafana, api: GrafanaApi) -> None:
    def add_server_keys(f: dict) -> None:
        f["dashboards"][0].update(id=None, version=7, iteration=123)
        f["datasources"][0].update(id=99, orgId=1, version=4, readOnly=False)

    plan = replace(make_plan(), add_server_keys)
    push(api, plan, MESSAGE)
    dash_body = next(w.body for w in fake.writes() if w.path == "/api/dashboards/db")["dashboard"]
    ds_body = next(w.body for w in fake.writes() if w.path == "/api/datasources")
    assert not {"id", "version", "iteration"} & dash_body.keys()
    assert not {"id", "orgId", "version", "readOnly"} & ds_body.keys()

    fake.clear()
    assert not push(api, plan, MESSAGE).changed()
    assert fake.writes() == []


# --- dashboards ----------------------------------------------------------------------------------------


def test_one_changed_panel_title_updates_only_that_dashboard(
    fake: FakeGrafana, api: GrafanaApi, pushed: PushPlan
) -> None:
    plan = replace(pushed, lambda f: f["dashboards"][0]["panels"][0].update(title="PM2.5 (24 h mean)"))
    report = push(api, plan, "Rename the PM2.5 panel")

    writes = fake.writes()
    assert [(w.method, w.path) for w in writes] == [("POST", "/api/dashboards/db")]
    body = writes[0].body
    assert body["message"] == "Rename the PM2.5 panel"
    assert body["folderUid"] == FOLDER
    assert body["overwrite"] is True
    assert body["dashboard"]["uid"] == "smartzone-overview"
    assert body["dashboard"]["panels"][0]["title"] == "PM2.5 (24 h mean)"
    assert report.updated == ["dashboard smartzone-overview"]
    assert report.created == []
    assert sorted(report.unchanged) == sorted(set(ALL_LABELS) - {"dashboard smartzone-overview"})

    history = fake.versions["smartzone-overview"]
    assert [(v["version"], v["message"]) for v in history] == [(1, MESSAGE), (2, "Rename the PM2.5 panel")]
    assert api.dashboard.get_dashboard("smartzone-overview")["dashboard"]["version"] == 2
    assert [len(fake.versions[uid]) for uid in ("smartzone-air", "smartzone-gateways")] == [1, 1]

    fake.clear()
    assert not push(api, plan, "again").changed()  # and the new state is stable
    assert fake.writes() == []


def test_dashboard_changed_by_hand_in_grafana_is_reverted(fake: FakeGrafana, api: GrafanaApi, pushed: PushPlan) -> None:
    fake.dashboards["smartzone-air"]["dashboard"]["refresh"] = "5s"
    report = push(api, pushed, "revert manual edit")
    assert report.updated == ["dashboard smartzone-air"]
    assert fake.dashboards["smartzone-air"]["dashboard"]["refresh"] == "1m"


@pytest.mark.parametrize("other_folder", ["archive", ""], ids=["other-folder", "general-folder"])
def test_dashboard_in_another_folder_is_moved(fake: FakeGrafana, api: GrafanaApi, other_folder: str) -> None:
    plan = make_plan()
    if other_folder:
        fake.seed_folder(other_folder, "Archive")
    fake.seed_dashboard(copy.deepcopy(plan.dashboards[1]), other_folder, "made by hand")
    assert api.dashboard.get_dashboard("smartzone-air")["meta"]["folderUid"] == other_folder

    report = push(api, plan, MESSAGE)

    assert report.updated == ["dashboard smartzone-air"]
    assert "dashboard smartzone-air" not in report.created + report.unchanged
    moves = [
        w.body
        for w in fake.writes()
        if w.path == "/api/dashboards/db" and w.body["dashboard"]["uid"] == "smartzone-air"
    ]
    assert moves == [{"dashboard": plan.dashboards[1], "folderUid": FOLDER, "overwrite": True, "message": MESSAGE}]
    meta = api.dashboard.get_dashboard("smartzone-air")["meta"]
    assert (meta["folderUid"], meta["folderTitle"]) == (FOLDER, "Smart Zone")
    assert [v["message"] for v in fake.versions["smartzone-air"]] == ["made by hand", MESSAGE]


def test_provisioned_dashboard_is_a_clear_error(fake: FakeGrafana, api: GrafanaApi) -> None:
    plan = make_plan()
    fake.seed_folder(FOLDER, "Smart Zone")
    fake.seed_dashboard(dashboard("smartzone-air", "Air quality (file)", []), FOLDER, provisioned=True)
    with pytest.raises(PushError, match=r"dashboard smartzone-air.*provisioned") as err:
        push(api, plan, MESSAGE)
    assert err.value.report is not None
    assert err.value.report.created == [
        "datasource smartzone-open",
        "datasource smartzone-restricted",
        "dashboard smartzone-overview",
    ]


# --- folder --------------------------------------------------------------------------------------------


def test_folder_title_is_updated_in_place(fake: FakeGrafana, api: GrafanaApi) -> None:
    fake.seed_folder(FOLDER, "Old name")
    report = push(api, make_plan(), MESSAGE)

    assert report.updated == ["folder smartzone"]
    folder_writes = [w for w in fake.writes() if w.path.startswith("/api/folders")]
    assert [(w.method, w.path, w.body) for w in folder_writes] == [
        ("PUT", "/api/folders/smartzone", {"title": "Smart Zone", "overwrite": True})
    ]
    assert api.folder.get_folder(FOLDER)["title"] == "Smart Zone"


# --- datasources and secrets ---------------------------------------------------------------------------


def test_changed_datasource_url_is_one_put_without_the_password(
    fake: FakeGrafana, api: GrafanaApi, pushed: PushPlan
) -> None:
    plan = replace(pushed, lambda f: f["datasources"][0].update(url="http://influx.internal:8086"))
    report = push(api, plan, MESSAGE)

    writes = fake.writes()
    assert [(w.method, w.path) for w in writes] == [("PUT", "/api/datasources/uid/smartzone-open")]
    expected = {k: v for k, v in plan.datasources[0].items() if k != "secureJsonData"}
    assert writes[0].body == expected  # the whole object (PUT replaces), no secret
    assert report.updated == ["datasource smartzone-open"]
    assert fake.secrets["smartzone-open"] == {"password": "open-secret"}  # kept by Grafana
    got = api.datasource.get_datasource_by_uid("smartzone-open")
    assert (got["url"], got["version"], got["secureJsonFields"]) == (
        "http://influx.internal:8086",
        2,
        {"password": True},
    )


def test_password_is_only_resent_with_rotate_secrets(fake: FakeGrafana, api: GrafanaApi, pushed: PushPlan) -> None:
    plan = replace(pushed, lambda f: f["datasources"][1]["secureJsonData"].update(password="rotated"))

    report = push(api, plan, MESSAGE)  # a password cannot be compared: not a change
    assert fake.writes() == []
    assert "datasource smartzone-restricted" in report.unchanged
    assert fake.secrets["smartzone-restricted"] == {"password": "restricted-secret"}

    report = push(api, plan, MESSAGE, rotate_secrets=True)
    writes = fake.writes()
    assert [(w.method, w.path) for w in writes] == [
        ("PUT", "/api/datasources/uid/smartzone-open"),
        ("PUT", "/api/datasources/uid/smartzone-restricted"),
    ]
    assert [w.body["secureJsonData"] for w in writes] == [{"password": "open-secret"}, {"password": "rotated"}]
    assert report.updated == ["datasource smartzone-open", "datasource smartzone-restricted"]
    assert fake.secrets["smartzone-restricted"] == {"password": "rotated"}


def test_password_missing_in_grafana_is_sent(fake: FakeGrafana, api: GrafanaApi) -> None:
    plan = make_plan()
    fake.seed_datasource({k: v for k, v in plan.datasources[0].items() if k != "secureJsonData"})
    assert api.datasource.get_datasource_by_uid("smartzone-open")["secureJsonFields"] == {}

    report = push(api, plan, MESSAGE)
    put = [w for w in fake.writes() if w.method == "PUT"]
    assert [(w.path, w.body["secureJsonData"]) for w in put] == [
        ("/api/datasources/uid/smartzone-open", {"password": "open-secret"})
    ]
    assert "datasource smartzone-open" in report.updated
    assert fake.secrets["smartzone-open"] == {"password": "open-secret"}


def test_datasource_field_changed_by_hand_is_reset(fake: FakeGrafana, api: GrafanaApi, pushed: PushPlan) -> None:
    fake.datasources["smartzone-open"]["isDefault"] = True  # a field the plan leaves to Grafana's default
    fake.datasources["smartzone-restricted"]["jsonData"]["httpMode"] = "POST"
    report = push(api, pushed, MESSAGE)
    assert report.updated == ["datasource smartzone-open", "datasource smartzone-restricted"]
    assert fake.datasources["smartzone-open"]["isDefault"] is False
    assert fake.datasources["smartzone-restricted"]["jsonData"]["httpMode"] == "GET"


def test_datasource_name_taken_under_another_uid_is_a_409_error(fake: FakeGrafana, api: GrafanaApi) -> None:
    fake.seed_datasource({"uid": "legacy", "name": "Smart Zone (open)", "type": "influxdb"})
    with pytest.raises(PushError, match=r"create datasource smartzone-open.*409") as err:
        push(api, make_plan(), MESSAGE)
    assert err.value.status == 409
    assert err.value.report is not None and err.value.report.created == ["folder smartzone"]


def test_read_only_datasource_is_a_clear_error(fake: FakeGrafana, api: GrafanaApi) -> None:
    plan = make_plan()
    fake.seed_datasource({**plan.datasources[0], "url": "http://elsewhere:8086"})
    fake.datasources["smartzone-open"]["readOnly"] = True  # provisioned from a file
    with pytest.raises(PushError, match=r"datasource smartzone-open.*read-only"):
        push(api, plan, MESSAGE)
    assert [w.method for w in fake.writes()] == ["POST"]  # the folder only


# --- errors --------------------------------------------------------------------------------------------


def test_wrong_token_is_a_401_push_error_without_the_token(fake: FakeGrafana) -> None:
    bad = "glsa_WrongToken_0000aaaa"
    with pytest.raises(PushError) as err:
        push(connect(fake.url, bad), make_plan(), MESSAGE)
    text = str(err.value)
    assert "401" in text
    assert "folder smartzone" in text
    assert bad not in text and TOKEN not in text
    assert err.value.status == 401
    assert fake.calls() == [("GET", "/api/folders/smartzone")]
    assert fake.requests[0].headers["authorization"] == f"Bearer {bad}"


def test_read_only_token_is_a_403_push_error(fake: FakeGrafana) -> None:
    with pytest.raises(PushError) as err:
        push(connect(fake.url, VIEWER_TOKEN), make_plan(), MESSAGE)
    text = str(err.value)
    assert "403" in text and "create folder smartzone" in text
    assert VIEWER_TOKEN not in text
    assert err.value.status == 403
    assert fake.folders == {}


def test_token_echoed_by_a_server_is_masked(fake: FakeGrafana, api: GrafanaApi, monkeypatch) -> None:
    def refuse(uid: str) -> None:
        raise GrafanaClientError(418, {"message": f"odd proxy rejected Bearer {TOKEN}"}, "Client Error 418")

    monkeypatch.setattr(api.folder, "get_folder", refuse)
    with pytest.raises(PushError, match="HTTP 418") as err:
        push(api, make_plan(), MESSAGE)
    assert TOKEN not in str(err.value)
    assert "Bearer ***" in str(err.value)


def test_server_down_is_a_push_error() -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(PushError, match=r"folder smartzone.*unreachable") as err:
        push(connect(f"http://127.0.0.1:{port}", TOKEN, timeout=3), make_plan(), MESSAGE)
    assert TOKEN not in str(err.value)
    assert err.value.status is None


# --- validation and connect ----------------------------------------------------------------------------


def _edit(fn: Callable[[dict], None]) -> Callable[[], PushPlan]:
    return lambda: replace(make_plan(), fn)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (_edit(lambda f: f.update(folder_uid="smart zone")), "folder uid"),
        (_edit(lambda f: f.update(folder_uid="x" * 41)), "folder uid"),
        (_edit(lambda f: f.update(folder_title="  ")), "folder title"),
        (_edit(lambda f: f["dashboards"][0].pop("uid")), "dashboard uid"),
        (_edit(lambda f: f["dashboards"][0].update(uid="bad/uid")), "dashboard uid"),
        (_edit(lambda f: f["dashboards"][1].pop("title")), "title"),
        (_edit(lambda f: f["dashboards"][1].update(uid="smartzone-overview")), "duplicate dashboard uid"),
        (_edit(lambda f: f["datasources"][1].update(uid="smartzone-open")), "duplicate datasource uid"),
        (_edit(lambda f: f["datasources"][1].update(name="Smart Zone (open)")), "duplicate datasource name"),
        (_edit(lambda f: f["datasources"][0].update(uid="é")), "datasource uid"),
        (_edit(lambda f: f["datasources"][0].pop("type")), "type"),
        (_edit(lambda f: f["datasources"][0].update(secureJsonData={"password": 1})), "secureJsonData"),
    ],
)
def test_invalid_plans_raise_value_error(build: Callable[[], PushPlan], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()


def test_connect_builds_the_api_url_and_rejects_bad_input() -> None:
    assert connect("https://grafana.example.org", TOKEN).client.url == "https://grafana.example.org/api"
    assert connect("http://127.0.0.1:3000/grafana", TOKEN).client.url == "http://127.0.0.1:3000/grafana/api"
    assert connect("http://127.0.0.1:3000/grafana/", TOKEN).client.url == "http://127.0.0.1:3000/grafana/api"
    for url in ("ftp://grafana", "grafana:3000", "http://admin:hunter2@grafana:3000"):
        with pytest.raises(ValueError) as err:
            connect(url, TOKEN)
        assert "hunter2" not in str(err.value)
    for token in ("", "two words", "line\nbreak"):
        with pytest.raises(ValueError, match="token"):
            connect("http://grafana:3000", token)
