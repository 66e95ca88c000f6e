"""The InfluxQL a dashboard sends when it is opened, as Grafana builds it from the JSON model.

Used by the query tests (every panel returns rows in its unit) and by the dashboards benchmark (what a
dashboard costs InfluxDB). For each panel and target: the template variables at their defaults (custom
lists, constants, or the variable's own query run on its datasource, All selected where the variable
includes all), the time range (the panel's relative ``timeFrom`` or the dashboard's), one query per value
of a repeated panel, and ``$timeFilter``/``$__interval`` from the panel's width, its minimum interval or
the datasource's (``dashboards.macros``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from dashboards.macros import TimeRange, Variable, expand
from dashboards.panels import EXP, OPEN, OPS

MIN_INTERVAL = {OPEN: "15m", OPS: "5s", EXP: "5s"}  # the datasources' timeInterval (provisioning, push)
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

# (datasource uid, query) -> the values of the first column (SHOW ... results), for query variables
RunVariableQuery = Callable[[str, str], list[str]]


@dataclass(frozen=True)
class PanelQuery:
    """One query a dashboard sends: its panel, target, datasource and the expanded InfluxQL."""

    panel: dict
    target: dict
    datasource: str
    variables: dict[str, Variable]  # with the repeated panel's variable set to this instance's value
    query: str


def ago(text: str) -> timedelta:
    """A Grafana relative time (``24h``, ``now-7d``) as a duration."""
    text = text.removeprefix("now-")
    return timedelta(seconds=int(text[:-1]) * _SECONDS[text[-1]])


def time_range(board: dict, panel: dict, now: datetime) -> TimeRange:
    """The panel's own relative time if it has one, else the dashboard's default range, ending ``now``."""
    return TimeRange(now - ago(panel.get("timeFrom") or board["time"]["from"]), now)


def max_data_points(panel: dict) -> int:
    """Grafana asks for about one point per pixel of the panel's width (a 1920 px wide dashboard)."""
    return panel.get("maxDataPoints") or int(panel["gridPos"]["w"] / 24 * 1920)


def options(var: dict, tr: TimeRange, known: dict[str, Variable], run: RunVariableQuery) -> list[str]:
    """A variable's options: its custom list or constant, or its query's results on its datasource."""
    if var["type"] == "constant":
        return [var["query"]]
    if var["type"] == "custom":
        return [part.split(" : ")[-1].strip() for part in var["query"].split(",")]
    return run(var["datasource"]["uid"], expand(var["query"], tr, variables=known))


def variables(board: dict, tr: TimeRange, run: RunVariableQuery) -> dict[str, Variable]:
    """Every variable of the dashboard at its default: All when it includes all, else its current value."""
    out: dict[str, Variable] = {}
    for var in board.get("templating", {}).get("list", []):
        values = options(var, tr, out, run)
        if not values:
            raise ValueError(f"variable {var['name']} has no options")
        if var.get("includeAll"):
            out[var["name"]] = Variable(
                var["name"],
                values,
                multi=var.get("multi", False),
                include_all=True,
                all_selected=True,
                all_value=var.get("allValue"),
            )
        elif var["type"] == "constant":
            out[var["name"]] = Variable(var["name"], values)
        else:
            current = var["current"]["value"]
            out[var["name"]] = Variable(var["name"], current if isinstance(current, list) else [current])
    return out


def instances(panel: dict, known: dict[str, Variable]) -> Iterator[dict[str, Variable]]:
    """The variables of each instance of a panel: a repeated panel has one per value of its variable."""
    repeat = panel.get("repeat")
    if not repeat:
        yield known
        return
    for value in known[repeat].values:
        yield {**known, repeat: Variable(repeat, [value])}


def panel_queries(board: dict, panel: dict, tr: TimeRange, known: dict[str, Variable]) -> Iterator[PanelQuery]:
    """The expanded queries of one panel over ``tr``."""
    for target in panel.get("targets", []):
        ds = target["datasource"]["uid"]
        for scoped in instances(panel, known):
            query = expand(
                target["query"],
                tr,
                variables=scoped,
                max_data_points=max_data_points(panel),
                min_interval=panel.get("interval") or MIN_INTERVAL[ds],
            )
            yield PanelQuery(panel, target, ds, scoped, query)


def dashboard_queries(board: dict, now: datetime, run: RunVariableQuery) -> list[PanelQuery]:
    """Every query the dashboard sends when opened at its default time range ending ``now``."""
    default = TimeRange(now - ago(board["time"]["from"]), now)
    known = variables(board, default, run)
    return [
        q
        for p in board["panels"]
        if p["type"] not in ("row", "text")
        for q in panel_queries(board, p, time_range(board, p, now), known)
    ]
