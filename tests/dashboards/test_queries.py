"""Every panel of every committed dashboard shows real data, in the unit it declares.

Each target of each panel in ``dashboards/json`` is expanded as Grafana expands it (template variables
with their options found the way Grafana finds them: custom lists, or the variable's own query run
against InfluxDB; then ``$timeFilter``, ``$__interval`` from the panel's width, interval and the
datasource's minimum), run against the real influxd loaded by the simulator, the ingest worker and the
charter job (``conftest.loaded``), and must return rows. Every value column it returns must carry, in the
panel's field config, the Grafana unit the vocabulary gives that field.
"""

from __future__ import annotations

import json
import math
import re
from datetime import timedelta

import pytest

from dashboards.build import JSON_DIR
from dashboards.macros import TimeRange, Variable, expand, unexpanded
from dashboards.panels import OPEN, OPS, unit_of
from datacharter.charter import Charter

CHARTER = Charter.load()
BOARDS = {p.stem: json.loads(p.read_text()) for p in sorted(JSON_DIR.glob("*.json"))}
MIN_INTERVAL = {OPEN: "15m", OPS: "5s"}  # the datasources' timeInterval (provisioning)
_FROM = re.compile(r'FROM\s+(?:"(\w+)"|/\^(\w+)\$/)')
_DURATION = {"m": 60, "h": 3600, "d": 86400}


def _panels():
    for uid, board in BOARDS.items():
        for panel in board["panels"]:
            if panel["type"] in ("row", "text"):
                continue
            for target in panel.get("targets", []):
                yield pytest.param(uid, panel, target, id=f"{uid}/{panel['id']}:{panel['title']}/{target['refId']}")


def _options(var: dict, loaded, time_range: TimeRange, known: dict[str, Variable]) -> list[str]:
    if var["type"] == "constant":
        return [var["query"]]
    if var["type"] == "custom":
        return [part.split(" : ")[-1].strip() for part in var["query"].split(",")]
    db = loaded.database(var["datasource"]["uid"])
    query = expand(var["query"], time_range, variables=known)
    values = []
    for row in loaded.influx.rows(query, db):
        values.append(row.get("value") or row.get("name"))
    return values


def _variables(board: dict, loaded, time_range: TimeRange) -> dict[str, Variable]:
    """Every variable at its default: All when it includes all, else its current value."""
    out: dict[str, Variable] = {}
    for var in board.get("templating", {}).get("list", []):
        options = _options(var, loaded, time_range, out)
        assert options, f"variable {var['name']} has no options"
        if var.get("includeAll"):
            out[var["name"]] = Variable(var["name"], options, multi=var.get("multi", False), include_all=True,
                                        all_selected=True, all_value=var.get("allValue"))
        elif var["type"] == "constant":
            out[var["name"]] = Variable(var["name"], options)
        else:
            current = var["current"]["value"]
            out[var["name"]] = Variable(var["name"], current if isinstance(current, list) else [current])
    return out


def _time_range(board: dict, panel: dict, loaded) -> TimeRange:
    """The panel's own relative time if it has one; for operations dashboards the live window (an operator
    zoomed on the last minutes); else the dashboard's default range ("now-24h" ... ending now)."""
    if panel.get("timeFrom"):
        return TimeRange(loaded.now - _ago(panel["timeFrom"]), loaded.now)
    if "operations" in board["tags"] and panel["datasource"]["uid"] == OPS:
        return TimeRange(loaded.live_start, loaded.now)
    return TimeRange(loaded.now - _ago(board["time"]["from"].removeprefix("now-")), loaded.now)


def _ago(text: str) -> timedelta:
    return timedelta(seconds=int(text[:-1]) * _DURATION[text[-1]])


def _max_data_points(panel: dict) -> int:
    """Grafana asks for about one point per pixel of the panel's width (a 1920 px wide dashboard)."""
    return panel.get("maxDataPoints") or int(panel["gridPos"]["w"] / 24 * 1920)


def _unit(panel: dict, column: str) -> str | None:
    fc = panel["fieldConfig"]
    for o in fc.get("overrides", []):
        m = o["matcher"]
        if (m["id"] == "byName" and m["options"] == column) or (
                m["id"] == "byRegexp" and re.fullmatch(m["options"], column)):
            for p in o["properties"]:
                if p["id"] == "unit":
                    return p["value"]
    return fc["defaults"].get("unit")


def _queries(panel: dict, target: dict, variables: dict[str, Variable]):
    """(variables, query) per instance of the panel: repeated panels run once per value."""
    repeat = panel.get("repeat")
    if not repeat:
        yield variables, target["query"]
        return
    for value in variables[repeat].values:
        yield {**variables, repeat: Variable(repeat, [value])}, target["query"]


@pytest.mark.parametrize(("uid", "panel", "target"), list(_panels()))
def test_panel_query_returns_rows_in_the_declared_unit(loaded, uid, panel, target):
    ds = target["datasource"]["uid"]
    assert ds == panel["datasource"]["uid"]
    time_range = _time_range(BOARDS[uid], panel, loaded)
    variables = _variables(BOARDS[uid], loaded, time_range)
    for instance_vars, raw in _queries(panel, target, variables):
        query = expand(raw, time_range, variables=instance_vars, max_data_points=_max_data_points(panel),
                       min_interval=panel.get("interval") or MIN_INTERVAL[ds])
        assert not unexpanded(query), f"macros left in {query}"
        measurements = {a or b for a, b in _FROM.findall(query)}
        assert len(measurements) == 1, query
        measurement = measurements.pop()
        result = loaded.influx.query(query, loaded.database(ds))
        series = [s for r in result for s in r.get("series", [])]
        assert series, f"no rows: {query}"
        values = 0
        for s in series:
            for i, column in enumerate(s["columns"]):
                if column == "time" or column in s.get("tags", {}) or column in ("sensor", "gateway", "cell",
                                                                                   "rx_gateway", "reason"):
                    continue
                field = column.removeprefix("mean_") if column.startswith("mean_") and "(/" in query else column
                assert _unit(panel, column) == unit_of(measurement, field, CHARTER), (
                    f"{column} of {measurement} is in {unit_of(measurement, field, CHARTER)}, the panel says "
                    f"{_unit(panel, column)}")
                for row in s["values"]:
                    v = row[i]
                    if v is not None:
                        assert isinstance(v, int | float) and math.isfinite(v), (column, v)
                        values += 1
        assert values, f"only nulls: {query}"


def _links():
    for uid, board in BOARDS.items():
        for panel in board["panels"]:
            for link in panel.get("links", []):
                yield pytest.param(uid, panel, link, id=f"{uid}/{panel['id']}:{panel['title']}/{link['title']}")


@pytest.fixture(scope="module")
def api(loaded):
    """The open-data API (in-process) on the loaded open database."""
    from fastapi.testclient import TestClient

    from api.app import create_app

    settings = loaded.settings.model_copy(update={"api": loaded.settings.api.model_copy(
        update={"rate_limit": 1000.0, "rate_burst": 10_000})})
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize(("uid", "panel", "link"), list(_links()))
def test_panel_links_open_the_panels_data_in_the_api(loaded, api, uid, panel, link):
    """Each link of a panel, expanded as Grafana expands it (``${api_url}``, ``${__from:date:iso}``, the
    repeated panel's variable), answers from the open-data API: the dataset's catalogue entry, or its
    observations over the panel's time range as CSV with rows."""
    import io

    import pandas as pd

    time_range = _time_range(BOARDS[uid], panel, loaded)
    variables = _variables(BOARDS[uid], loaded, time_range)
    assert variables["api_url"].values == ["http://localhost:8000"]
    variables["api_url"] = Variable("api_url", ["http://testserver"])
    for instance_vars, url in _queries(panel, {"query": link["url"]}, variables):
        url = expand(url, time_range, variables=instance_vars)
        assert not unexpanded(url) and url.startswith("http://testserver/v1/datasets/"), url
        r = api.get(url)
        assert r.status_code == 200, (url, r.text)
        dataset = url.removeprefix("http://testserver/v1/datasets/").split("/")[0].split("?")[0]
        assert dataset in CHARTER.datasets
        if "/observations" in url:
            assert r.headers["content-type"].startswith("text/csv")
            rows = pd.read_csv(io.StringIO(r.text))
            assert len(rows) and "cell" in rows and "n_contributors" in rows, url
        else:
            assert r.json()["id"] == dataset
