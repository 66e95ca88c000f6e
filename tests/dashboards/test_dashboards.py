"""The committed dashboards: in step with the code, consistent, provisioned, and showing nothing private."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import h3
import pytest
import yaml

from dashboards import build
from dashboards.panels import DATASOURCES, EXP, OPEN, OPS, OPS_UNITS
from datacharter.charter import Charter
from smartzone.registry import Registry
from tests.conftest import REGISTRY

REPO = Path(__file__).resolve().parents[2]
CHARTER = Charter.load()
BOARDS = {p.stem: json.loads(p.read_text()) for p in sorted(build.JSON_DIR.glob("*.json"))}
PROVISIONED = yaml.safe_load((build.PROVISIONING / "datasources" / "smartzone.yaml").read_text())
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]


def _panels(board: dict) -> list[dict]:
    return [p for p in board["panels"] if p["type"] != "row"]


def _uids(obj) -> set[str]:
    """Every datasource uid referenced anywhere in a dashboard (panels, targets, variables)."""
    out = set()
    if isinstance(obj, dict):
        ds = obj.get("datasource")
        if isinstance(ds, dict) and "uid" in ds:
            out.add(ds["uid"])
        for v in obj.values():
            out |= _uids(v)
    elif isinstance(obj, list):
        for v in obj:
            out |= _uids(v)
    return out


def _queries(board: dict) -> list[str]:
    qs = [t["query"] for p in _panels(board) for t in p.get("targets", [])]
    return qs + [v["query"] for v in board.get("templating", {}).get("list", []) if v["type"] == "query"]


def test_committed_files_are_what_the_code_builds():
    assert build.drift() == [], "run `smartzone dashboards build` and commit"


def test_drift_is_detected(tmp_path):
    for rel, content in build.outputs().items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(content)
    assert build.drift(tmp_path) == []
    p = tmp_path / "json" / "smartzone-noise.json"
    p.write_text(p.read_text().replace("LAeq by cell", "LAeq per cell"))
    (tmp_path / "json" / "smartzone-old.json").write_text("{}")
    assert build.drift(tmp_path) == ["json/smartzone-noise.json", "json/smartzone-old.json"]


def test_cli_check_fails_on_drift_and_build_repairs(tmp_path, monkeypatch):
    from cli.main import main

    monkeypatch.setattr(build, "HERE", tmp_path)
    assert main(["dashboards", "build", "--check"]) == 1  # nothing written yet: everything is missing
    assert main(["dashboards", "build"]) == 0
    assert main(["dashboards", "build", "--check"]) == 0


def test_every_dashboard_the_issue_names_exists():
    assert set(BOARDS) == {
        "smartzone-overview",
        "smartzone-air-quality",
        "smartzone-mobility",
        "smartzone-noise",
        "smartzone-energy",
        "smartzone-living-lab",
        "smartzone-operations",
    }


def test_uids_ids_and_schema():
    uids = [b["uid"] for b in BOARDS.values()]
    assert len(set(uids)) == len(uids) and all(re.fullmatch(r"[a-z0-9-]{1,40}", u) for u in uids)
    for b in BOARDS.values():
        assert b["schemaVersion"] >= 36 and b["title"] and b["description"]
        ids = [p["id"] for p in b["panels"]]
        assert len(set(ids)) == len(ids), f"{b['uid']}: duplicate panel ids"
        assert b["time"]["from"].startswith("now-") and b["time"]["to"] == "now" and b["refresh"]
        assert b["timezone"] == build.TZ and "smartzone" in b["tags"]


def test_panels_do_not_overlap_on_the_grid():
    for b in BOARDS.values():
        taken: dict[tuple[int, int], str] = {}
        for p in b["panels"]:
            g = p["gridPos"]
            assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, f"{b['uid']}/{p['title']} off the grid"
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    assert (x, y) not in taken, f"{b['uid']}: {p['title']!r} overlaps {taken[(x, y)]!r}"
                    taken[(x, y)] = p["title"]


def test_every_panel_says_what_it_shows_in_which_unit():
    for b in BOARDS.values():
        for p in _panels(b):
            if p["type"] == "text":
                assert p["options"]["content"]
                continue
            where = f"{b['uid']}/{p['title']}"
            assert len(p["description"]) > 40, where
            assert re.search(r"`\$?\w+`", p["description"]), f"{where}: name the dataset or measurement"
            assert p["fieldConfig"]["defaults"].get("unit"), where
            assert p["fieldConfig"]["defaults"]["thresholds"]["steps"], where
            assert p["targets"] and all(t["rawQuery"] and t["query"] for t in p["targets"]), where


def test_template_variables_category_cell_gateway():
    names = {v["name"] for b in BOARDS.values() for v in b.get("templating", {}).get("list", [])}
    assert {"category", "cell", "gateway", "use_case"} <= names
    registry = Registry.load(REGISTRY)
    for b in BOARDS.values():
        for v in b.get("templating", {}).get("list", []):
            if v["name"] == "cell":
                cells = [part.split(" : ")[-1] for part in v["query"].split(",")]
                assert all(h3.is_valid_cell(c) for c in cells)
            if v["name"] == "gateway":
                assert {part.split(" : ")[-1] for part in v["query"].split(",")} == set(registry.gateways)
            if v["type"] == "query":
                assert v["datasource"]["uid"] in DATASOURCES


def test_datasources_referenced_are_provisioned_influxql():
    provisioned = {d["uid"]: d for d in PROVISIONED["datasources"]}
    assert set(provisioned) == {OPEN, OPS, EXP}
    for d in provisioned.values():
        assert d["type"] == "influxdb" and d["jsonData"]["version"] == "InfluxQL" and not d["editable"]
    for b in BOARDS.values():
        assert _uids(b) <= set(provisioned), b["uid"]


def test_public_dashboards_read_only_published_data():
    """Public dashboards: the open datasource only, measurements that are charter datasets. Operations:
    ops measurements (and the open database). Nowhere a database-qualified name or a private measurement."""
    datasets = set(CHARTER.datasets)
    for b in BOARDS.values():
        audience = "public" if "public" in b["tags"] else "operations"
        assert audience in b["tags"]
        if audience == "public":
            assert _uids(b) == {OPEN}, b["uid"]
        for q in _queries(b):
            assert not re.search(r'"\w+"\s*\.\s*"?\w+"?\s*\.', q), f"database-qualified name in {q}"
            assert not re.search(r"\b(sighting|position|subject|smartzone_raw|smartzone_pseudonymous)\b", q), q
            assert re.match(r"^(SELECT|SHOW) ", q), q
            for a, m in re.findall(r'FROM\s+(?:"(\w+)"|/\^(\w+)\$/)', q):
                name = a or m
                assert name in datasets | set(OPS_UNITS) | {"sensors"}, f"{b['uid']}: {name}"
                if audience == "public":
                    assert name in datasets, f"{b['uid']} reads {name}"


def test_no_per_device_time_series():
    """Radio metadata per device would trace the trackers on city vehicles: only totals per device."""
    ops = BOARDS["smartzone-operations"]
    for p in _panels(ops):
        for t in p.get("targets", []):
            if '"sensor"' in t["query"]:
                assert p["type"] == "table" and "time(" not in t["query"], p["title"]


def test_air_quality_thresholds_are_the_who_2021_guidelines():
    board = BOARDS["smartzone-air-quality"]
    by_title = {p["title"]: p for p in _panels(board)}
    for title, (daily, annual) in (("PM2.5 by cell", (15, 5)), ("PM10 by cell", (45, 15)), ("NO₂ by cell", (25, 10))):
        steps = [s["value"] for s in by_title[title]["fieldConfig"]["defaults"]["thresholds"]["steps"]]
        assert steps == [None, annual, daily], title
        assert by_title[title]["fieldConfig"]["defaults"]["unit"] == "conμgm3"


def test_gazetteer_covers_every_cell_the_dashboards_name():
    gaz = json.loads((build.PROVISIONING / "gazetteer" / "smartzone-cells.json").read_text())
    keys = {g["key"] for g in gaz}
    assert all({"key", "latitude", "longitude"} <= set(g) for g in gaz)
    for b in BOARDS.values():
        for v in b.get("templating", {}).get("list", []):
            if v["name"] == "cell":
                assert {part.split(" : ")[-1] for part in v["query"].split(",")} <= keys


def test_compose_provisions_grafana_from_these_files():
    g = COMPOSE["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in g["volumes"]}
    assert mounts["/etc/grafana/provisioning/datasources"] == "./dashboards/provisioning/datasources"
    assert mounts["/etc/grafana/provisioning/dashboards"] == "./dashboards/provisioning/dashboards"
    provider = yaml.safe_load((build.PROVISIONING / "dashboards" / "smartzone.yaml").read_text())["providers"][0]
    assert mounts[provider["options"]["path"]] == "./dashboards/json"
    assert provider["folderUid"] == build.FOLDER_UID
    assert mounts["/usr/share/grafana/" + build.GAZETTEER] == "./dashboards/provisioning/gazetteer/smartzone-cells.json"
    home = g["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(provider["options"]["path"]) and Path(home).stem in BOARDS
    # every ${VAR} of the datasource file is in Grafana's environment; database names are the settings'
    text = (build.PROVISIONING / "datasources" / "smartzone.yaml").read_text()
    assert set(re.findall(r"\$\{(\w+)\}", text)) <= set(g["environment"])
    from smartzone.settings import Settings

    defaults = Settings()
    assert g["environment"]["SMARTZONE_OPEN_DATABASE"] == defaults.charter.open_database
    assert g["environment"]["SMARTZONE_OPS_DATABASE"] == defaults.influx.ops_database
    assert g["environment"]["SMARTZONE_EXPERIMENTS_DATABASE"] == defaults.influx.experiments_database
    # compose's `init` service makes Grafana's user (storage.databases.ROLES) from the same password variable
    from storage.databases import ROLES

    grafana = next(r for r in ROLES if r.name == "grafana")
    assert g["environment"]["INFLUXDB_READ_USER"] == grafana.user
    assert g["environment"]["INFLUXDB_READ_PASSWORD"].startswith("${" + grafana.password_env)
    assert grafana.password_env in COMPOSE["init"]["environment"]


def test_influxdb_init_creates_a_read_only_grafana_user(influxd, tmp_path):
    """The init step (``smartzone influx init``) against the real influxd: READ on the open, ops and experiments
    databases, nothing else (the production rehearsal proves it with authentication on)."""
    from smartzone.settings import InfluxSettings, Settings
    from storage.databases import provision
    from storage.influx import Influx

    settings = Settings(
        influx={
            "url": influxd.url,
            "ops_database": "ops_init_test",
            "raw_database": "raw_init_test",
            "pseudonymous_database": "pseudo_init_test",
            "experiments_database": "exp_init_test",
        },
        charter={"open_database": "open_init_test"},
    )
    ix = Influx(InfluxSettings(url=influxd.url))
    try:
        provision(ix, settings, Charter.load().doc.retention, {"grafana": "pw-for-the-test"})
        users = {r["user"]: r["admin"] for r in ix.rows("SHOW USERS", "open_init_test")}
        assert users.get("grafana") is False
        grants = {r["database"]: r["privilege"] for r in ix.rows('SHOW GRANTS FOR "grafana"', "open_init_test")}
        assert {db: p for db, p in grants.items() if p != "NO PRIVILEGES"} == {
            "open_init_test": "READ",
            "ops_init_test": "READ",
            "exp_init_test": "READ",
        }
    finally:
        ix.query('DROP USER "grafana"', write=True)
        for db in ("open_init_test", "ops_init_test", "raw_init_test", "pseudo_init_test", "exp_init_test"):
            ix.drop_database(db)
        ix.close()


@pytest.mark.parametrize("uid", sorted(BOARDS))
def test_sdk_reads_the_committed_json(uid):
    """grafana-foundation-sdk parses each dashboard back (its model of Grafana's dashboard schema)."""
    from grafana_foundation_sdk.models.dashboard import Dashboard

    d = Dashboard.from_json(BOARDS[uid])
    assert d.uid == uid and len(d.panels or []) == len(BOARDS[uid]["panels"])


def test_every_open_data_panel_links_to_its_dataset_in_the_api():
    """A panel that shows an open dataset links to its catalogue entry and to a CSV of the time range; the
    dashboard links to the catalogue; all through the hidden ``api_url`` variable."""
    linked = 0
    for uid, board in BOARDS.items():
        api_vars = [v for v in board["templating"]["list"] if v["name"] == "api_url"]
        for p in _panels(board):
            if p.get("datasource", {}).get("uid") != OPEN:
                assert not p.get("links"), (uid, p["title"])
                continue
            datasets = {m for t in p["targets"] for m in re.findall(r'FROM "(\w+)"', t["query"])} or {"${category}"}
            urls = sorted(link["url"] for link in p["links"])
            assert urls == sorted(
                u
                for d in datasets
                for u in (
                    f"${{api_url}}/v1/datasets/{d}",
                    f"${{api_url}}/v1/datasets/{d}/observations?from=${{__from:date:iso}}&to=${{__to:date:iso}}"
                    "&align=outer&level=all&format=csv&limit=1000000",
                )
            ), (uid, p["title"])
            assert all(link["targetBlank"] and link["title"] for link in p["links"])
            linked += 1
        if any(p.get("links") for p in _panels(board)):
            assert api_vars == [{**api_vars[0], "type": "constant", "hide": 2, "query": build.API_URL}]
            assert {"title": "Open data API", "url": "${api_url}/v1/datasets"}.items() <= board["links"][-1].items()
        else:
            assert not api_vars
    assert linked >= 20


def test_api_url_is_set_per_deployment_and_validated(tmp_path):
    noise = BOARDS["smartzone-noise"]
    moved = build.with_api_url(noise, "https://data.example.org/")
    assert [v["query"] for v in moved["templating"]["list"] if v["name"] == "api_url"] == ["https://data.example.org"]
    assert noise["templating"] != moved["templating"]  # a copy: the committed model is untouched
    for bad in ("javascript:alert(1)", "ftp://x", "http://a b", 'http://x"><script>'):
        with pytest.raises(ValueError, match="http"):
            build.with_api_url(noise, bad)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "dashboards",
            "build",
            "--api-url",
            "https://data.example.org",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    written = json.loads((tmp_path / "json" / "smartzone-noise.json").read_text())
    assert written == build.with_api_url(noise, "https://data.example.org")
    assert build.drift() == []  # the committed copy is left alone
    refused = subprocess.run(
        [sys.executable, "-m", "cli.main", "dashboards", "build", "--api-url", "https://data.example.org"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
    )
    assert refused.returncode != 0 and "--out" in refused.stderr and build.drift() == []


def test_cli_pushes_the_real_dashboards_idempotently(monkeypatch, capsys):
    """``smartzone dashboards push`` with the committed dashboards into the fake Grafana (the contract of
    Grafana's HTTP API, tests/dashboards/grafana_fake.py): everything created, then nothing written; a
    changed dashboard is one POST with the version message."""
    from cli.main import main
    from tests.dashboards.grafana_fake import FakeGrafana

    token = "glsa_cli_test_0123456789"
    monkeypatch.setenv("SMARTZONE_GRAFANA__INFLUX_USERNAME", "grafana")
    monkeypatch.setenv("SMARTZONE_GRAFANA__INFLUX_PASSWORD", "reader-secret")
    monkeypatch.setenv("SMARTZONE_API__BASE_URL", "https://data.example.org")  # where the links point
    with FakeGrafana(token) as fake:
        args = ["dashboards", "push", "--url", fake.url, "--token", token, "--influx-url", "http://influxdb:8086"]
        assert main(args) == 0
        out = capsys.readouterr().out
        assert out.count("created") == 1 + 3 + len(BOARDS), out
        posted = {r.body["dashboard"]["uid"]: r.body for r in fake.writes() if r.path == "/api/dashboards/db"}
        assert set(posted) == set(BOARDS)
        assert all(b["folderUid"] == build.FOLDER_UID and b["overwrite"] for b in posted.values())
        assert posted["smartzone-noise"]["dashboard"]["panels"] == BOARDS["smartzone-noise"]["panels"]
        assert posted["smartzone-noise"]["dashboard"] == build.with_api_url(
            BOARDS["smartzone-noise"], "https://data.example.org"
        )
        ds = {r.body["uid"]: r.body for r in fake.writes() if r.path == "/api/datasources"}
        assert ds[OPEN]["jsonData"]["dbName"] == "smartzone_open" and ds[OPS]["jsonData"]["dbName"] == "smartzone_ops"
        assert ds[EXP]["jsonData"]["dbName"] == "smartzone_experiments"
        assert ds[OPEN]["secureJsonData"] == {"password": "reader-secret"} and ds[OPEN]["user"] == "grafana"
        assert "reader-secret" not in out and token not in out
        fake.clear()
        assert main(args) == 0
        assert fake.writes() == [] and "nothing written" in capsys.readouterr().out
        monkeypatch.setattr(build, "WHO_NOISE_NIGHT", 44)  # a changed threshold: the two dashboards using it
        assert main([*args, "--message", "noise: WHO night value"]) == 0
        writes = fake.writes()
        assert [(r.method, r.path) for r in writes] == [("POST", "/api/dashboards/db")] * 2
        assert {r.body["dashboard"]["uid"] for r in writes} == {"smartzone-noise", "smartzone-overview"}
        assert all(r.body["message"] == "noise: WHO night value" for r in writes)
        assert main(["dashboards", "push", "--url", fake.url, "--token", "wrong-token"]) == 1
        assert "401" in capsys.readouterr().err
