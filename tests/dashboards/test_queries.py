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

import pytest

from dashboards.build import JSON_DIR
from dashboards.macros import TimeRange, Variable, expand, unexpanded
from dashboards.panels import OPS, unit_of
from dashboards.queries import instances, panel_queries, time_range, variables
from datacharter.charter import Charter

CHARTER = Charter.load()
BOARDS = {p.stem: json.loads(p.read_text()) for p in sorted(JSON_DIR.glob("*.json"))}
_FROM = re.compile(r'FROM\s+(?:"(\w+)"|/\^(\w+)\$/)')


def _panels():
    for uid, board in BOARDS.items():
        for panel in board["panels"]:
            if panel["type"] in ("row", "text"):
                continue
            for target in panel.get("targets", []):
                yield pytest.param(uid, panel, target, id=f"{uid}/{panel['id']}:{panel['title']}/{target['refId']}")


def _run(loaded):
    """Variable queries on the loaded databases: the first value of each row (SHOW ... results)."""
    return lambda uid, query: [
        row.get("value") or row.get("name") for row in loaded.influx.rows(query, loaded.database(uid))
    ]


def _time_range(board: dict, panel: dict, loaded) -> TimeRange:
    """As Grafana opens it (the panel's relative time, else the dashboard's range ending now), except that
    operations panels without their own time look at the live window: an operator zoomed on the last
    minutes, the only ones for which the fixture has the worker's self-metrics."""
    if not panel.get("timeFrom") and "operations" in board["tags"] and panel["datasource"]["uid"] == OPS:
        return TimeRange(loaded.live_start, loaded.now)
    return time_range(board, panel, loaded.now)


def _unit(panel: dict, column: str) -> str | None:
    fc = panel["fieldConfig"]
    for o in fc.get("overrides", []):
        m = o["matcher"]
        if (m["id"] == "byName" and m["options"] == column) or (
            m["id"] == "byRegexp" and re.fullmatch(m["options"], column)
        ):
            for p in o["properties"]:
                if p["id"] == "unit":
                    return p["value"]
    return fc["defaults"].get("unit")


@pytest.mark.parametrize(("uid", "panel", "target"), list(_panels()))
def test_panel_query_returns_rows_in_the_declared_unit(loaded, uid, panel, target):
    ds = target["datasource"]["uid"]
    assert ds == panel["datasource"]["uid"]
    tr = _time_range(BOARDS[uid], panel, loaded)
    known = variables(BOARDS[uid], tr, _run(loaded))
    for pq in panel_queries(BOARDS[uid], {**panel, "targets": [target]}, tr, known):
        query = pq.query
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
                if (
                    column == "time"
                    or column in s.get("tags", {})
                    or column in ("sensor", "gateway", "cell", "rx_gateway", "reason")
                ):
                    continue
                field = column.removeprefix("mean_") if column.startswith("mean_") and "(/" in query else column
                assert _unit(panel, column) == unit_of(measurement, field, CHARTER), (
                    f"{column} of {measurement} is in {unit_of(measurement, field, CHARTER)}, the panel says "
                    f"{_unit(panel, column)}"
                )
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

    settings = loaded.settings.model_copy(
        update={"api": loaded.settings.api.model_copy(update={"rate_limit": 1000.0, "rate_burst": 10_000})}
    )
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize(("uid", "panel", "link"), list(_links()))
def test_panel_links_open_the_panels_data_in_the_api(loaded, api, uid, panel, link):
    """Each link of a panel, expanded as Grafana expands it (``${api_url}``, ``${__from:date:iso}``, the
    repeated panel's variable), answers from the open-data API: the dataset's catalogue entry, or its
    observations over the panel's time range as CSV with rows."""
    import io

    import pandas as pd

    tr = _time_range(BOARDS[uid], panel, loaded)
    known = variables(BOARDS[uid], tr, _run(loaded))
    assert known["api_url"].values == ["http://localhost:8000"]
    known["api_url"] = Variable("api_url", ["http://testserver"])
    for scoped in instances(panel, known):
        url = expand(link["url"], tr, variables=scoped)
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


def _annotations():
    for uid, board in BOARDS.items():
        for anno in board.get("annotations", {}).get("list", []):
            yield pytest.param(uid, anno, id=f"{uid}/annotation:{anno['name']}")


@pytest.mark.parametrize(("uid", "anno"), list(_annotations()))
def test_annotation_query_returns_the_text_and_tags_it_names(loaded, uid, anno):
    """Each annotation query, expanded as Grafana expands it over the dashboard's default range, returns rows with
    the columns Grafana reads: its text column (non-empty) and every tag column."""
    board = BOARDS[uid]
    target = anno["target"]
    tr = time_range(board, {}, loaded.now)
    query = expand(target["query"], tr, variables=variables(board, tr, _run(loaded)))
    assert not unexpanded(query), query
    rows = loaded.influx.rows(query, loaded.database(anno["datasource"]["uid"]))
    assert rows, f"no rows: {query}"
    tags = target["tagsColumn"].split(",")
    for row in rows:
        assert isinstance(row[target["textColumn"]], str) and row[target["textColumn"]], row
        assert all(row.get(t) for t in tags), row


def test_the_operations_dashboard_shows_experiments_per_gateway_and_their_state_changes(loaded):
    """The experiments the loaded zone ran (tests/dashboards/conftest.py: experiment 42 on two gateways), as the
    operations dashboard shows them: the phases per gateway over time, and the state changes as annotations."""
    from smartzone.model import PHASE_CODES

    board = BOARDS["smartzone-operations"]
    panel = next(p for p in board["panels"] if p["title"] == "Experiments per gateway")
    assert panel["type"] == "state-timeline" and panel["datasource"]["uid"] == "smartzone-experiments"
    mapped = {int(k): v["text"] for k, v in panel["fieldConfig"]["defaults"]["mappings"][0]["options"].items()}
    assert mapped == {code: phase for phase, code in PHASE_CODES.items()}
    tr = time_range(board, panel, loaded.now)
    known = variables(board, tr, _run(loaded))
    (pq,) = panel_queries(board, panel, tr, known)
    result = loaded.influx.query(pq.query, loaded.database(pq.datasource))
    series = {s["tags"]["gateway"]: s for r in result for s in r.get("series", [])}
    assert set(series) == {"gw-volkstraat", "gw-egmont"}
    for s in series.values():
        assert s["tags"]["experiment"] == "42"
        codes = [v[1] for v in s["values"] if v[1] is not None]
        seen = [mapped[c] for c in codes]
        # the phases in the order the agents reported them (fill(previous) repeats a phase between reports; two
        # reports 3 s apart may share an interval, whose last() keeps the later)
        order = ["fetching", "waiting", "running", "finished"]
        changes = [p for n, p in enumerate(seen) if n == 0 or p != seen[n - 1]]
        assert changes == [p for p in order if p in changes] and changes[-1] == "finished" and "running" in changes
    anno = board["annotations"]["list"][0]
    query = expand(anno["target"]["query"], tr, variables=known)
    texts = sorted({(r["gateway"], r["text"]) for r in loaded.influx.rows(query, loaded.database(EXP_UID))})
    assert ("gw-egmont", "rtt probe: Running -> Terminated (the agents report finished)") in texts
    assert len(texts) == 2 * 3  # three state changes, each on both gateways


EXP_UID = "smartzone-experiments"
