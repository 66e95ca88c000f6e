"""The provisioned alert rule "Gateway silent" (dashboards/provisioning/alerting/gateways.yaml).

Grafana cannot run here, so the rule is checked against Grafana's published file-provisioning contract for alert
rules (docs "Use configuration files to provision alerting resources": ``apiVersion: 1``, ``groups[]`` with
``orgId``, ``name``, ``folder``, ``interval``, ``rules[]`` with ``uid``, ``title``, ``condition``, ``data[]``,
``noDataState``, ``execErrState``, ``for``), and its query runs against a real influxd holding heartbeats the way
Grafana runs it (``$timeFilter`` from the query's ``relativeTimeRange``), followed by the rule's reduce (last)
and threshold (< 1) expressions.
"""

from __future__ import annotations

import re
import time
import uuid

import yaml

from dashboards.build import ALERT_RULES, HERE, alert_rules
from smartzone.model import Point, Store
from smartzone.settings import InfluxSettings
from storage.influx import Influx
from storage.lineprotocol import TagSet, render

RULES = yaml.safe_load((HERE / ALERT_RULES).read_text())
DATASOURCES = yaml.safe_load((HERE / "provisioning/datasources/smartzone.yaml").read_text())
_DURATION = re.compile(r"\d+[smhd]")


def test_the_rule_file_follows_grafanas_provisioning_contract():
    assert (HERE / ALERT_RULES).read_text() == alert_rules()  # generated, not edited
    assert RULES["apiVersion"] == 1
    uids = {d["uid"] for d in DATASOURCES["datasources"]}
    (group,) = RULES["groups"]
    assert {"orgId", "name", "folder", "interval", "rules"} <= set(group) and _DURATION.fullmatch(group["interval"])
    (rule,) = group["rules"]
    assert {"uid", "title", "condition", "data", "noDataState", "execErrState", "for"} <= set(rule)
    assert rule["noDataState"] in ("Alerting", "NoData", "OK") and rule["execErrState"] in ("Alerting", "Error", "OK")
    assert _DURATION.fullmatch(rule["for"])
    refs = {d["refId"]: d for d in rule["data"]}
    assert rule["condition"] in refs
    for d in rule["data"]:
        assert d["model"]["refId"] == d["refId"]
        if d["datasourceUid"] == "__expr__":
            assert d["model"]["type"] in ("reduce", "threshold", "math", "resample", "classic_conditions")
            assert d["model"]["expression"] in refs
        else:
            assert d["datasourceUid"] in uids and {"from", "to"} <= set(d["relativeTimeRange"])


def _beats(gateway: str, last_s_ago: float, now_ns: int) -> list[str]:
    """A heartbeat every 30 s for an hour, the last one ``last_s_ago`` seconds before ``now_ns``."""
    tags = TagSet({"gateway": gateway, "sensor": f"health-{gateway}"})
    last = now_ns - int(last_s_ago * 1e9)
    return [
        render(Point("gateway_health", tags, {"uptime": 1000.0 + k}, last - k * 30_000_000_000, Store.OPS))
        for k in range(120)
    ]


def evaluate(influx: Influx, db: str, now_ns: int) -> dict[str, bool]:
    """Gateway -> firing, as Grafana evaluates the rule at ``now_ns`` (InfluxDB's now())."""
    rule = RULES["groups"][0]["rules"][0]
    refs = {d["refId"]: d for d in rule["data"]}
    a = refs["A"]
    span = a["relativeTimeRange"]
    time_filter = f"time >= {now_ns // 1_000_000 - span['from'] * 1000}ms and time <= {now_ns // 1_000_000}ms"
    query = a["model"]["query"].replace("$timeFilter", time_filter)
    assert refs["B"]["model"]["reducer"] == "last"
    (cond,) = refs["C"]["model"]["conditions"]
    assert cond["evaluator"]["type"] == "lt"
    limit = cond["evaluator"]["params"][0]
    out = {}
    for res in influx.query(query, db):
        for series in res.get("series", []):
            last = series["values"][-1][1]
            out[series["tags"]["gateway"]] = last is None or last < limit
    return out


def test_a_gateway_silent_for_5_minutes_fires_one_heard_recently_does_not(influxd):
    db = f"ops_alert_{uuid.uuid4().hex[:8]}"
    influx = Influx(InfluxSettings(url=influxd.url))
    try:
        influx.ensure_database(db, "INF")
        now_ns = time.time_ns()
        lines = _beats("gw-live", 10, now_ns) + _beats("gw-silent", 6 * 60, now_ns) + _beats("gw-quiet", 3 * 60, now_ns)
        influx.write(db, "\n".join(lines).encode())
        assert evaluate(influx, db, time.time_ns()) == {"gw-live": False, "gw-silent": True, "gw-quiet": False}
    finally:
        influx.drop_database(db)
        influx.close()
