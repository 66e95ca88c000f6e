"""The pieces every Smart Zone dashboard is made of: InfluxQL targets, datasources, units and panels.

Built on grafana-foundation-sdk's builders (``Dashboard``, ``timeseries.Panel`` ...), which lay panels out
on the grid and serialise them. The SDK has no InfluxDB query type, so ``InfluxQL`` is ours: a raw
InfluxQL target as Grafana's InfluxDB datasource stores it (``rawQuery: true``).

Units come from the vocabulary (``smartzone.quantities``) and the charter: a panel never names a unit by
hand, it names the measurement and field it shows, and ``unit_of`` finds the Grafana unit. The query
test checks the returned columns against the same table.
"""

from __future__ import annotations

from dataclasses import dataclass

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard as model

from datacharter.charter import METHOD_OUTPUTS, POINT_FIELDS, Charter
from smartzone.quantities import QUANTITIES

OPEN = "smartzone-open"  # datasource uid: the charter's open database (what the public may see)
OPS = "smartzone-ops"  # datasource uid: the ops database (pipeline self-metrics, radio, gateway health)
EXP = "smartzone-experiments"  # datasource uid: the experiments database (metrics, state changes, reported phases)
DATASOURCES = {OPEN: "open", OPS: "ops", EXP: "experiments"}

# The vocabulary's units as Grafana unit ids (grafana-foundation-sdk models/units.py).
GRAFANA_UNITS = {
    "ug/m3": "conμgm3",
    "ppm": "ppm",
    "ppb": "conppb",
    "/": "none",
    "Cel": "celsius",
    "%RH": "humidity",
    "hPa": "pressurehpa",
    "lx": "lux",
    "m/s": "velocityms",
    "mm/h": "suffix: mm/h",
    "dB": "dB",
    "count": "short",
    "km/h": "velocitykmh",
    "W": "watt",
    "kWh": "kwatth",
    "V": "volt",
    "A": "amp",
    "%EL": "percent",
    "dBm": "dBm",
    "s": "s",
    "%": "percent",
    "fraction": "percentunit",
    "ms": "ms",
    "bytes": "bytes",
    "B": "bytes",
    "per_s": "cps",
    "per_min": "cpm",
}
# Outputs of charter methods that are not vocabulary fields, and the units they carry.
# relative_load (energy_profiles): a meter's hourly power over its own daily mean, a dimensionless shape
# (1.0 = the meter's average hour), no unit.
OUTPUT_UNITS = {
    "occupancy": "fraction",
    "occupied_spaces": "count",
    "spaces": "count",
    "devices": "count",
    "randomised_devices": "count",
    "energy_kwh": "kWh",
    "relative_load": "/",
    "n_contributors": "count",
}
assert set(OUTPUT_UNITS) >= {o for outs in METHOD_OUTPUTS.values() for o in outs} | set(POINT_FIELDS)

# The ops database's measurements (written by the ingest worker and the charter job) and the units of
# their fields; derived columns (rates, differences) are named here too.
OPS_UNITS: dict[str, dict[str, str]] = {
    "ingest": {
        "received": "count",
        "readings": "count",
        "dead_lettered": "count",
        "lines_written": "count",
        "queue_depth": "count",
        "spool_files": "count",
        "backlog_bytes": "bytes",
        "retries": "count",
        "write_latency_ms_p50": "ms",
        "write_latency_ms_max": "ms",
        "readings_per_s": "per_s",
        "received_per_s": "per_s",
        "lines_rejected": "count",
    },
    "deadletters": {"count": "count", "new": "count"},
    "sensors": {"readings": "count", "readings_per_min": "per_min", "sensors": "count"},
    "charter": {
        "lag_s": "s",
        "published": "count",
        "suppressed": "count",
        "readings_in": "count",
        "written": "count",
        "windows": "count",
    },
    "radio": {"rssi": "dBm", "snr": "dB", "uplinks": "count", "loss": "fraction", "lost": "count", "expected": "count"},
    "lorawan_events": {"count": "count"},
    "gateway_health": {"gateways": "count", "last_seen_s": "s"},
    # the experiments database (ingest.decoders.experiments): the agents' reported phases, as numbers
    "reported": {"phase_code": "/", "running": "count", "exit_code": "/"},
}


def unit_of(measurement: str, column: str, charter: Charter) -> str:
    """The Grafana unit of a column a query returns from ``measurement`` (open dataset or ops measurement).

    An open column is named after its field (``pm2_5_mean``: the vocabulary's ``air_quality.pm2_5``); an
    ops column after its field or a derived figure in OPS_UNITS; a ``gateway_health`` column after the
    vocabulary's quantity. KeyError for anything else: a panel may only show what we can name a unit for.
    """
    ds = charter.datasets.get(measurement)
    if ds is not None:
        if column in OUTPUT_UNITS:
            return GRAFANA_UNITS[OUTPUT_UNITS[column]]
        for f, a in ds.outputs:
            if column == (f if a in ("count", "sum") else f"{f}_{a}"):
                unit = OUTPUT_UNITS.get(f) or QUANTITIES[f"{ds.source.measurement}.{f}"].unit
                return GRAFANA_UNITS[unit]
        raise KeyError(f"{measurement}.{column} is not a published field")
    units = OPS_UNITS.get(measurement, {})
    if column in units:
        return GRAFANA_UNITS[units[column]]
    q = QUANTITIES.get(f"{measurement}.{column}")
    if q is None:
        raise KeyError(f"{measurement}.{column} has no known unit")
    return GRAFANA_UNITS[q.unit]


class InfluxQLQuery(cogvariants.Dataquery):
    """A raw InfluxQL target of Grafana's InfluxDB datasource."""

    def __init__(self, ref_id: str, datasource: str, query: str, result_format: str, alias: str | None) -> None:
        self.ref_id, self.datasource, self.query = ref_id, datasource, " ".join(query.split())
        self.result_format, self.alias = result_format, alias

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "refId": self.ref_id,
            "datasource": {"type": "influxdb", "uid": self.datasource},
            "query": self.query,
            "rawQuery": True,
            "resultFormat": self.result_format,
        }
        if self.alias:
            out["alias"] = self.alias
        return out


class InfluxQL(cogbuilder.Builder[InfluxQLQuery]):
    def __init__(
        self, datasource: str, query: str, *, ref_id: str = "A", table: bool = False, alias: str | None = None
    ) -> None:
        self._q = InfluxQLQuery(ref_id, datasource, query, "table" if table else "time_series", alias)

    def build(self) -> InfluxQLQuery:
        return self._q


def ref(uid: str) -> model.DataSourceRef:
    return model.DataSourceRef(type_val="influxdb", uid=uid)


def thresholds(base: str = "green", *steps: tuple[float, str]) -> dash.ThresholdsConfig:
    """Absolute thresholds: ``base`` colour below the first step."""
    return (
        dash.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=None, color=base)] + [model.Threshold(value=v, color=c) for v, c in steps])
    )


def unit_override(column: str, unit: str) -> tuple[str, list[model.DynamicConfigValue]]:
    return column, [model.DynamicConfigValue(id_val="unit", value=unit)]


@dataclass(frozen=True)
class Var:
    """A template variable of a dashboard (name, label, how its options are found)."""

    name: str
    label: str
    description: str
    options: list[tuple[str, str]] | None = None  # custom variable: (text, value)
    query: str | None = None  # query variable on ``datasource``
    datasource: str | None = None
    all_value: str | None = ".*"

    def build(self) -> cogbuilder.Builder[model.VariableModel]:
        v: dash.CustomVariable | dash.QueryVariable
        if self.options is not None:
            v = dash.CustomVariable(self.name).values(
                ",".join(f"{text} : {value}" if text != value else value for text, value in self.options)
            )
        else:
            assert self.query is not None and self.datasource is not None, "a query variable needs query and datasource"
            v = (
                dash.QueryVariable(self.name)
                .query(self.query)
                .datasource(ref(self.datasource))
                .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
                .sort(model.VariableSort.ALPHABETICAL_ASC)
            )
        v = v.label(self.label).description(self.description).multi(True).include_all(True)
        if self.all_value:
            v = v.all_value(self.all_value)
        return v.current(model.VariableOption(selected=True, text=["All"], value=["$__all"]))


class InfluxQLAnnotationTarget(model.AnnotationTarget):
    """The target of an annotation query on Grafana's InfluxDB datasource (InfluxQL): the query, and which of the
    columns it returns are the annotation's text and tags (Grafana's ``textColumn`` and ``tagsColumn``, a
    comma-separated list). The SDK's ``AnnotationTarget`` is Grafana's built-in annotation store's: this one
    takes its place and serialises as the InfluxDB datasource stores it."""

    def __init__(self, query: str, text_column: str, tags_columns: list[str]) -> None:
        super().__init__()
        self.query, self.text_column, self.tags_columns = " ".join(query.split()), text_column, tags_columns

    def to_json(self) -> dict[str, object]:
        return {
            "refId": "Anno",
            "query": self.query,
            "rawQuery": True,
            "resultFormat": "table",
            "fromAnnotations": True,
            "textColumn": self.text_column,
            "tagsColumn": ",".join(self.tags_columns),
        }


class InfluxQLAnnotation(cogbuilder.Builder[model.AnnotationTarget]):
    def __init__(self, query: str, *, text_column: str, tags_columns: list[str]) -> None:
        self._t = InfluxQLAnnotationTarget(query, text_column, tags_columns)

    def build(self) -> InfluxQLAnnotationTarget:
        return self._t
