"""Smart Zone's Grafana dashboards as code, their provisioning files, and the drift check.

``smartzone dashboards build`` writes every dashboard's JSON model to ``dashboards/json/`` and the
provisioning files to ``dashboards/provisioning/``; ``smartzone dashboards build --check`` (and the test
suite) fails when the committed files differ from what this code builds.

Public dashboards (overview map, air quality, mobility, noise, energy, living lab) read only the open
database, i.e. what the data charter published; the operations dashboard reads the ops database
(pipeline self-metrics, radio metadata, gateway health, charter job runs) and the experiments database (the
phases the gateway agents report, the experiments' state changes as annotations). No datasource for the raw
or pseudonymous databases exists, so nothing the charter keeps private can be shown.

Every query is raw InfluxQL. Rules the query test enforces: columns are aliased to the field they show
(``mean("pm2_5_mean") AS "pm2_5_mean"``) so the unit can be checked; identifiers are quoted; filters on
template variables use regex matches (``"cell" =~ /^$cell$/``), which Grafana fills with an escaped
alternation of the selected values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h3
import yaml
from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import geomap, stat, statetimeline, table, text, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.text import TextMode

from dashboards.panels import (
    EXP,
    OPEN,
    OPS,
    InfluxQL,
    InfluxQLAnnotation,
    Var,
    ref,
    thresholds,
    unit_of,
    unit_override,
)
from datacharter.charter import Charter
from smartzone.model import PHASE_CODES
from smartzone.registry import Registry

HERE = Path(__file__).resolve().parent
JSON_DIR = HERE / "json"
PROVISIONING = HERE / "provisioning"
FOLDER_UID, FOLDER_TITLE = "smartzone", "Smart Zone"
GAZETTEER = "public/gazetteer/smartzone-cells.json"  # mounted into Grafana by docker-compose
REGISTRY = HERE.parent / "gateways" / "registry" / "antwerp.yaml"  # the zone the committed dashboards show
TZ = "Europe/Brussels"
PUBLIC, OPERATIONS = "public", "operations"
# The open-data API as docker-compose publishes it (.env.example SMARTZONE_API_BASE_URL): the default of the
# hidden `api_url` variable every dashboard with open data has. `push --api-url` and `build --api-url` set it.
API_URL = "http://localhost:8000"
_DATASET = re.compile(r'FROM\s+(?:"(\w+)"|/\^\$(\w+)\$/)')  # FROM "noise", or FROM /^$category$/ (a variable)


def open_data_links(dataset: str) -> list[dash.DashboardLink]:
    """A panel's links to the open-data API for ``dataset`` (a name, or ``$var`` for a variable): its
    catalogue entry (DCAT-AP, with the charter's rules in plain language) and its observations over the
    dashboard's time range as CSV, widened to whole bins by the API (``align=outer``)."""
    d = f"${{{dataset[1:]}}}" if dataset.startswith("$") else dataset
    api = "${api_url}/v1/datasets/" + d
    return [
        dash.DashboardLink(f"Dataset {d}: what it is and how the charter protects it")
        .type(model.DashboardLinkType.LINK)
        .url(api)
        .target_blank(True)
        .icon("info")
        .tooltip("The dataset in the open-data catalogue (DCAT-AP): fields, units, k, noise, licence"),
        dash.DashboardLink(f"Download {d} for this time range (CSV)")
        .type(model.DashboardLinkType.LINK)
        .url(
            api + "/observations?from=${__from:date:iso}&to=${__to:date:iso}&align=outer&level=all"
            "&format=csv&limit=1000000"
        )
        .target_blank(True)
        .icon("cloud")
        .tooltip(
            "Every published point of the dataset in the dashboard's time range, all cells and "
            "roll-ups, from the open-data API"
        ),
    ]


@dataclass
class Board:
    """One dashboard: its uid, audience and the SDK builder."""

    uid: str
    audience: str  # PUBLIC (open database only) or OPERATIONS
    builder: dash.Dashboard
    _next: int = field(default=1)
    _api: bool = field(default=False)

    def panel(self, p) -> None:
        """Add a panel; one that shows open datasets links to them in the open-data API."""
        built = p.build()
        if built.datasource is not None and built.datasource.uid == OPEN:
            datasets = sorted({a or f"${b}" for t in built.targets or [] for a, b in _DATASET.findall(t.query)})
            if datasets:
                self._api_variable()
                p = p.links([link for d in datasets for link in open_data_links(d)])
        self.builder.with_panel(p.id(self._next))
        self._next += 1

    def _api_variable(self) -> None:
        if self._api:
            return
        self._api = True
        self.builder.with_variable(
            dash.ConstantVariable("api_url")
            .value(API_URL)
            .description("The open-data API's public URL, for the links to datasets and downloads (hidden).")
        )
        self.builder.link(
            dash.DashboardLink("Open data API")
            .type(model.DashboardLinkType.LINK)
            .url("${api_url}/v1/datasets")
            .target_blank(True)
            .icon("external link")
            .tooltip("The catalogue of open datasets: DCAT-AP metadata, JSON, CSV, Parquet, GeoJSON")
        )

    def row(self, title: str) -> None:
        self.builder.with_row(dash.Row(title).id(self._next))
        self._next += 1

    def json(self) -> dict:
        return json.loads(json.dumps(self.builder.build(), cls=JSONEncoder))


class DashboardZone:
    """What the dashboards need to know about the zone: cells, gateways, datasets and their fields."""

    def __init__(self, registry: Registry, charter: Charter) -> None:
        self.registry, self.charter = registry, charter
        res = registry.doc.zone.h3_resolution
        self.cells = sorted(
            {
                h3.latlng_to_cell(s.position.lat, s.position.lon, res)
                for s in registry.sensors.values()
                if s.position is not None
            }
        )
        parents = {h3.cell_to_parent(c, r) for c in self.cells for r in range(7, res)}
        self.all_cells = sorted(set(self.cells) | parents)
        self.gateways = sorted(registry.gateways)

    def gazetteer(self) -> list[dict]:
        """Cell centres in the worldmap gazetteer format Grafana's geomap reads (key, latitude, longitude)."""
        out = []
        for c in self.all_cells:
            lat, lon = h3.cell_to_latlng(c)
            out.append(
                {
                    "key": c,
                    "latitude": round(lat, 6),
                    "longitude": round(lon, 6),
                    "name": f"H3 res {h3.get_resolution(c)} {c}",
                }
            )
        return out

    def unit(self, measurement: str, column: str) -> str:
        return unit_of(measurement, column, self.charter)


# -- template variables ------------------------------------------------------------------------------
def cell_var(z: DashboardZone) -> Var:
    return Var(
        "cell",
        "Cell",
        "H3 cells of the zone (resolution 10). All also shows the coarser cells the charter rolls small groups up to.",
        options=[(c, c) for c in z.cells],
    )


def gateway_var(z: DashboardZone) -> Var:
    return Var(
        "gateway",
        "Gateway",
        "Gateways of the zone (registry ids).",
        options=[((z.registry.gateways[g].name or g).split(" (")[0].replace(",", " "), g) for g in z.gateways],
    )


def category_var(datasource: str, query: str) -> Var:
    return Var("category", "Category", "Sensor categories / open datasets.", query=query, datasource=datasource)


def _variables(board: Board, *variables: Var) -> None:
    for v in variables:
        board.builder.with_variable(v.build())


def _new(uid: str, title: str, audience: str, description: str, time_from: str, refresh: str, tags: list[str]) -> Board:
    b = (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["smartzone", audience, *tags])
        .time(time_from, "now")
        .refresh(refresh)
        .timezone(TZ)
        .editable()
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .timepicker(dash.TimePicker().refresh_intervals(["30s", "1m", "5m", "15m", "1h"]))
        .link(
            dash.DashboardLink("Smart Zone")
            .type(model.DashboardLinkType.DASHBOARDS)
            .tags(["smartzone"])
            .as_dropdown(True)
            .include_vars(False)
            .keep_time(True)
        )
    )
    return Board(uid, audience, b)


def _series(
    title: str,
    description: str,
    datasource: str,
    query: str,
    unit: str,
    *,
    width: int = 12,
    height: int = 8,
    th: dash.ThresholdsConfig | None = None,
    alias: str | None = None,
    bars: bool = False,
    stack: bool = False,
    interval: str | None = None,
) -> timeseries.Panel:
    p = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(ref(datasource))
        .with_target(InfluxQL(datasource, query, alias=alias))
        .unit(unit)
        .span(width)
        .height(height)
        .thresholds(th or thresholds())
        .span_nulls(False)
        .legend(
            common_b.VizLegendOptions()
            .show_legend(True)
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.RIGHT)
            .calcs(["mean", "max", "lastNotNull"])
        )
    )
    if th is not None:
        p = p.thresholds_style(common_b.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.DASHED))
    if bars:
        p = p.draw_style(common.GraphDrawStyle.BARS).fill_opacity(70)
    if stack:
        p = p.stacking(common_b.StackingConfig().mode(common.StackingMode.NORMAL))
    if interval:
        p = p.interval(interval)
    return p


def _stat(
    title: str,
    description: str,
    datasource: str,
    query: str,
    unit: str,
    *,
    width: int = 6,
    height: int = 4,
    th: dash.ThresholdsConfig | None = None,
    time_from: str | None = None,
    reduce: str = "lastNotNull",
) -> stat.Panel:
    p = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(ref(datasource))
        .with_target(InfluxQL(datasource, query))
        .unit(unit)
        .span(width)
        .height(height)
        .thresholds(th or thresholds())
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .reduce_options(common_b.ReduceDataOptions().calcs([reduce]).values(False))
    )
    if time_from:
        p = p.time_from(time_from)
    return p


def _table(
    title: str,
    description: str,
    datasource: str,
    query: str,
    unit: str,
    overrides: dict[str, str],
    *,
    width: int = 12,
    height: int = 8,
    th: dash.ThresholdsConfig | None = None,
) -> table.Panel:
    p = (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(ref(datasource))
        .with_target(InfluxQL(datasource, query, table=True))
        .unit(unit)
        .span(width)
        .height(height)
        .thresholds(th or thresholds())
    )
    for column, unit_ in overrides.items():
        p = p.override_by_name(*unit_override(column, unit_))
    return p


# WHO global air quality guidelines 2021 (24-hour guideline values, µg/m³; 99th percentile of days) and the
# annual ones. CO2 has no WHO ambient guideline: 1000 ppm is the usual indoor ventilation guidance
# (EN 16798-1 category II and the Pettenkofer value).
WHO_2021 = {"pm2_5": (15, 5), "pm10": (45, 15), "no2": (25, 10), "o3": (100, 60)}
# WHO Environmental Noise Guidelines for the European Region (2018), road traffic: Lden 53 dB, Lnight 45 dB.
WHO_NOISE_DAY, WHO_NOISE_NIGHT = 53, 45


def who(pollutant: str) -> dash.ThresholdsConfig:
    daily, annual = WHO_2021[pollutant]
    return thresholds("green", (annual, "yellow"), (daily, "red"))


def overview(z: DashboardZone) -> Board:
    b = _new(
        "smartzone-overview",
        "Smart Zone overview",
        OPERATIONS,
        "The zone at a glance for city staff: latest published air quality, traffic and noise per H3 cell, "
        "and whether the network is alive (sensors, gateways, readings).",
        "now-24h",
        "1m",
        ["overview"],
    )
    recent = "15m"
    b.panel(
        _stat(
            "Active sensors",
            "Sensors whose readings reached InfluxDB in the last 15 minutes (ops "
            "database, `sensors`: written by the ingest workers).",
            OPS,
            'SELECT count("readings") AS "sensors" FROM (SELECT sum("readings") AS "readings" FROM "sensors" '
            'WHERE $timeFilter GROUP BY "sensor")',
            z.unit("sensors", "sensors"),
            th=thresholds("red", (1, "green")),
            time_from=recent,
        )
    )
    b.panel(
        _stat(
            "Gateways online",
            "Gateways that sent a heartbeat (uptime) in the last 15 minutes (ops database, "
            f"`gateway_health`). The registry lists {len(z.gateways)} gateways.",
            OPS,
            'SELECT count("uptime") AS "gateways" FROM (SELECT last("uptime") AS "uptime" FROM '
            '"gateway_health" WHERE $timeFilter GROUP BY "gateway")',
            z.unit("gateway_health", "gateways"),
            th=thresholds("red", (len(z.gateways) - 1, "orange"), (len(z.gateways), "green")),
            time_from=recent,
        )
    )
    b.panel(
        _stat(
            "Readings per minute",
            "Readings written per minute over the last 15 minutes, all sensors (ops database, `sensors`).",
            OPS,
            'SELECT sum("readings") AS "readings_per_min" FROM "sensors" WHERE $timeFilter GROUP BY time(1m) fill(0)',
            z.unit("sensors", "readings_per_min"),
            time_from=recent,
            reduce="mean",
        )
    )
    b.panel(
        _stat(
            "Dead letters (last hour)",
            "Messages kept as dead letters in the last hour, all reasons "
            "(ops database, `deadletters`; see the operations dashboard).",
            OPS,
            'SELECT sum("new") AS "new" FROM "deadletters" WHERE $timeFilter',
            z.unit("deadletters", "new"),
            th=thresholds("green", (1, "orange"), (100, "red")),
            time_from="1h",
            reduce="sum",
        )
    )
    layers = [
        ("air_quality", "pm2_5_mean", "PM2.5", who("pm2_5"), "A"),
        ("traffic", "cars", "Cars per hour", thresholds("green", (300, "yellow"), (600, "red")), "B"),
        (
            "noise",
            "laeq_energy_mean",
            "LAeq",
            thresholds("green", (WHO_NOISE_NIGHT, "yellow"), (WHO_NOISE_DAY, "orange"), (65, "red")),
            "C",
        ),
    ]
    centre_lat, centre_lon = h3.cell_to_latlng(z.cells[len(z.cells) // 2])
    for dataset, column, label, th, ref_id in layers:
        ds = z.charter.datasets[dataset]
        # the charter's own bin only: a roll-up (traffic: a class's small hours summed over the day) is not a rate
        # of that bin, and as the newest point of a cell it would show a day's remainder as an hour
        finest = f" AND \"bin\" = '{ds.time.bin}'" if ds.time.roll_up else ""
        g = (
            geomap.Panel()
            .title(f"Latest {label} by cell")
            .description(
                f"Latest published `{column}` of the open dataset `{dataset}` per H3 cell "
                f"(newest bin in the time range). "
                "Markers sit at cell centres (gazetteer smartzone-cells.json); colour follows the thresholds"
                + (" (WHO 2021 guideline values)" if dataset == "air_quality" else "")
                + "."
            )
            .datasource(ref(OPEN))
            .with_target(
                InfluxQL(
                    OPEN,
                    f'SELECT last("{column}") AS "{column}" FROM "{dataset}" WHERE $timeFilter{finest} GROUP BY "cell"',
                    table=True,
                    ref_id=ref_id,
                )
            )
            .unit(z.unit(dataset, column))
            .thresholds(th)
            .span(8)
            .height(12)
            .view(geomap.MapViewConfig().id("coords").lat(round(centre_lat, 5)).lon(round(centre_lon, 5)).zoom(15))
            .basemap(common_b.MapLayerOptions().type("default").name("Basemap"))
            .layers(
                [
                    common_b.MapLayerOptions()
                    .type("markers")
                    .name(label)
                    .location(
                        common_b.FrameGeometrySource()
                        .mode(common.FrameGeometrySourceMode.LOOKUP)
                        .lookup("cell")
                        .gazetteer(GAZETTEER)
                    )
                    .config(
                        {
                            "showLegend": True,
                            "style": {
                                "color": {"field": column, "fixed": "dark-green"},
                                "opacity": 0.7,
                                "size": {"fixed": 14, "min": 8, "max": 24},
                                "symbol": {"fixed": "img/icons/marker/circle.svg", "mode": "fixed"},
                            },
                        }
                    )
                ]
            )
            .controls(geomap.ControlsOptions().show_zoom(True).mouse_wheel_zoom(False))
        )
        b.panel(g)
    return b


def air_quality(z: DashboardZone) -> Board:
    b = _new(
        "smartzone-air-quality",
        "Air quality",
        PUBLIC,
        "Air quality at the zone's fixed stations as the data charter publishes it (open dataset `air_quality`, "
        "15-minute means per H3 cell), against the WHO 2021 guideline values. For city staff and residents.",
        "now-24h",
        "5m",
        ["air_quality"],
    )
    _variables(b, cell_var(z))
    for pollutant, label in (("pm2_5", "PM2.5"), ("pm10", "PM10"), ("no2", "NO₂")):
        daily, annual = WHO_2021[pollutant]
        col = f"{pollutant}_mean"
        b.panel(
            _series(
                f"{label} by cell",
                f"15-minute mean {label} per H3 cell (open dataset `air_quality`, "
                f"field `{col}`). Thresholds: WHO 2021 annual guideline {annual} µg/m³ (yellow) and 24-hour "
                f"guideline {daily} µg/m³ (red).",
                OPEN,
                f'SELECT mean("{col}") AS "{col}" FROM "air_quality" WHERE $timeFilter AND "cell" =~ /^$cell$/ '
                'GROUP BY time($__interval), "cell" fill(none)',
                z.unit("air_quality", col),
                th=who(pollutant),
                alias="$tag_cell",
            )
        )
    b.panel(
        _series(
            "CO₂ by cell",
            "15-minute mean CO₂ per H3 cell (open dataset `air_quality`, field `co2_mean`). "
            "WHO sets no ambient CO₂ guideline; 1000 ppm (red) is the usual indoor ventilation guidance, "
            "800 ppm (yellow) its comfort class.",
            OPEN,
            'SELECT mean("co2_mean") AS "co2_mean" FROM "air_quality" WHERE $timeFilter AND '
            '"cell" =~ /^$cell$/ '
            'GROUP BY time($__interval), "cell" fill(none)',
            z.unit("air_quality", "co2_mean"),
            th=thresholds("green", (800, "yellow"), (1000, "red")),
            alias="$tag_cell",
        )
    )
    for pollutant, label in (("pm2_5", "PM2.5"), ("no2", "NO₂")):
        col = f"{pollutant}_mean"
        b.panel(
            _series(
                f"Daily mean {label} vs the WHO 24-hour guideline",
                f"Daily mean of the 15-minute {label} "
                f"means per cell (open dataset `air_quality`), days in {TZ}. Bars above the red line exceed "
                f"the WHO 2021 24-hour guideline ({WHO_2021[pollutant][0]} µg/m³).",
                OPEN,
                f'SELECT mean("{col}") AS "{col}" FROM "air_quality" WHERE $timeFilter AND "cell" =~ /^$cell$/ '
                f"GROUP BY time(1d), \"cell\" fill(none) tz('{TZ}')",
                z.unit("air_quality", col),
                th=who(pollutant),
                alias="$tag_cell",
                bars=True,
            )
        )
    b.panel(
        _series(
            "PM2.5 along city-vehicle routes",
            "Hourly PM2.5 measured by city vehicles, per H3 cell of "
            "resolution 9 (open dataset `mobile_air_quality`: trips trimmed by 5 min / 300 m, cells with at "
            "least 3 vehicles): `pm2_5_mean`, the mean over the vehicles of each vehicle's mean in the cell "
            "and hour, and `pm2_5_p90`, their 90th percentile (top-coded to the other vehicles' range; no "
            "minimum or maximum is published, as an extreme is one vehicle's). Hourly bins only (a cell's "
            "day roll-up is in the dataset). Published once a day for the previous day.",
            OPEN,
            'SELECT mean("pm2_5_mean") AS "pm2_5_mean", mean("pm2_5_p90") AS "pm2_5_p90" FROM '
            '"mobile_air_quality" WHERE $timeFilter AND "bin" = \'1h\' GROUP BY time($__interval), "cell" '
            "fill(none)",
            z.unit("mobile_air_quality", "pm2_5_mean"),
            th=who("pm2_5"),
            alias="$col $tag_cell",
            width=24,
            interval="1h",
        )
    )
    return b


def mobility(z: DashboardZone) -> Board:
    b = _new(
        "smartzone-mobility",
        "Mobility",
        PUBLIC,
        "Traffic counts, parking occupancy and pedestrian flows as the data charter publishes them. Datasets "
        "about people are published once a day for the previous (UTC) day, so the default range is a week.",
        "now-7d",
        "15m",
        ["traffic", "parking", "pedestrian_flow"],
    )
    _variables(b, cell_var(z))
    # hourly panels read the hourly bins only: the charter rolls every class below 5 in an hour up to the day, and
    # a day's remainder summed into the midnight hour would read as traffic at midnight
    for column, label in (("cars", "Cars"), ("heavy_vehicles", "Heavy vehicles"), ("cyclists", "Cyclists")):
        b.panel(
            _series(
                f"{label} per hour",
                f"{label} counted per hour and H3 cell (open dataset `traffic`, field "
                f"`{column}`, hourly bins). An hour with fewer than 5 {label.lower()} in a cell has no "
                "value here: the charter rolls it up to the day, and the dataset's daily points hold it.",
                OPEN,
                f'SELECT sum("{column}") AS "{column}" FROM "traffic" WHERE $timeFilter AND "bin" = \'1h\' '
                'AND "cell" =~ /^$cell$/ GROUP BY time($__interval), "cell" fill(none)',
                z.unit("traffic", column),
                alias="$tag_cell",
                bars=True,
                stack=True,
                interval="1h",
                width=8,
            )
        )
    b.panel(
        _series(
            "Mean vehicle speed",
            "Mean speed per hour and cell (open dataset `traffic`, `speed_mean_mean`), "
            "weighted by the cars and heavy vehicles counted and published only over at least 5 of them; "
            "hourly bins only. Red above the zone's 30 km/h limit.",
            OPEN,
            'SELECT mean("speed_mean_mean") AS "speed_mean_mean" FROM "traffic" WHERE $timeFilter AND '
            '"bin" = \'1h\' AND "cell" =~ /^$cell$/ GROUP BY time($__interval), "cell" fill(none)',
            z.unit("traffic", "speed_mean_mean"),
            th=thresholds("green", (30, "red")),
            alias="$tag_cell",
            interval="1h",
        )
    )
    b.panel(
        _series(
            "Parking occupancy by zone",
            "Share of watched spaces occupied, 15-minute means per parking "
            "zone (H3 cell at resolution 10, or the coarser cell the charter rolled small zones up to; open "
            "dataset `parking`, field `occupancy_mean`).",
            OPEN,
            'SELECT mean("occupancy_mean") AS "occupancy_mean" FROM "parking" WHERE $timeFilter AND '
            '"cell" =~ /^$cell$/ GROUP BY time($__interval), "cell" fill(none)',
            z.unit("parking", "occupancy_mean"),
            th=thresholds("green", (0.85, "orange"), (0.95, "red")),
            alias="$tag_cell",
        )
    )
    b.panel(
        _series(
            "Pedestrian flow (distinct devices)",
            "Distinct WiFi/BLE devices seen per hour and cell (open "
            "dataset `pedestrian_flow`: each device counted at most 4 times a day, differential-privacy noise "
            "added, small counts suppressed). An estimate of people passing, not a count.",
            OPEN,
            'SELECT sum("devices") AS "devices" FROM "pedestrian_flow" WHERE $timeFilter AND '
            '"cell" =~ /^$cell$/ '
            'GROUP BY time($__interval), "cell" fill(none)',
            z.unit("pedestrian_flow", "devices"),
            alias="$tag_cell",
            bars=True,
            interval="1h",
        )
    )
    b.panel(
        _series(
            "People counted in and out",
            "People crossing counting lines, in and out, per 15 minutes (open "
            "dataset `pedestrian_counts`, fields `people_in`, `people_out`).",
            OPEN,
            'SELECT sum("people_in") AS "people_in", sum("people_out") AS "people_out" FROM '
            '"pedestrian_counts" WHERE $timeFilter AND "cell" =~ /^$cell$/ GROUP BY time($__interval) '
            "fill(none)",
            z.unit("pedestrian_counts", "people_in"),
            interval="15m",
        )
    )
    return b


def _laeq(group: str, tail: str = "") -> str:
    """LAeq per cell over ``group``: the energy mean (10·log10 of the mean of 10^(L/10)), as levels add."""
    return (
        'SELECT 10 * log10(mean("e")) AS "laeq_energy_mean" FROM (SELECT pow(10, "laeq_energy_mean" / 10) '
        f'AS "e" FROM "noise" WHERE $timeFilter AND "cell" =~ /^$cell$/) GROUP BY {group}, "cell" fill(none)' + tail
    )


def noise(z: DashboardZone) -> Board:
    b = _new(
        "smartzone-noise",
        "Noise",
        PUBLIC,
        "A-weighted sound levels per H3 cell as the data charter publishes them (open dataset `noise`), with the "
        "WHO 2018 guideline values for road traffic noise (Lden 53 dB, Lnight 45 dB).",
        "now-24h",
        "5m",
        ["noise"],
    )
    _variables(b, cell_var(z))
    th = thresholds("green", (WHO_NOISE_NIGHT, "yellow"), (WHO_NOISE_DAY, "orange"), (65, "red"))
    b.panel(
        _series(
            "LAeq by cell",
            "15-minute equivalent continuous A-weighted level per H3 cell (open dataset "
            "`noise`, field `laeq_energy_mean`: the energy mean of the sensors' LAeq). Coarser intervals are "
            "energy means too (10·log10 of the mean of 10^(L/10)).",
            OPEN,
            _laeq("time($__interval)"),
            z.unit("noise", "laeq_energy_mean"),
            th=th,
            alias="$tag_cell",
            width=16,
        )
    )
    b.panel(
        _series(
            "Loudest quarter hours",
            "Highest 15-minute LAeq of any sensor in the cell per interval (open "
            "dataset `noise`, field `laeq_max`): where the energy mean hides a loud spot.",
            OPEN,
            'SELECT max("laeq_max") AS "laeq_max" FROM "noise" WHERE $timeFilter AND "cell" =~ /^$cell$/ '
            'GROUP BY time($__interval), "cell" fill(none)',
            z.unit("noise", "laeq_max"),
            th=thresholds("green", (WHO_NOISE_DAY, "orange"), (70, "red")),
            alias="$tag_cell",
            width=8,
        )
    )
    b.panel(
        _series(
            "Day, evening and night levels",
            f"Energy-mean LAeq per cell in 4-hour periods of local time "
            f"({TZ}): the bars starting at 07:00, 11:00 and 15:00 are the day (07–19), the bar at 19:00 is "
            "the evening (19–23), the bars at 23:00 and 03:00 are the night (23–07), as in the EU "
            "Environmental Noise Directive's Lday/Levening/Lnight. Thresholds: WHO 2018 Lnight 45 dB, "
            "Lden 53 dB (open dataset `noise`).",
            OPEN,
            _laeq("time(4h, 3h)", f" tz('{TZ}')"),
            z.unit("noise", "laeq_energy_mean"),
            th=th,
            alias="$tag_cell",
            bars=True,
            width=24,
        )
    )
    return b


def energy(z: DashboardZone) -> Board:
    b = _new(
        "smartzone-energy",
        "Energy",
        PUBLIC,
        "Energy use of the zone's public buildings, by building group: an H3 cell holding at least k "
        "connections, none of them dominating (open dataset `energy`, daily totals). Published once a day.",
        "now-30d",
        "1h",
        ["energy"],
    )
    _variables(b, cell_var(z))
    b.panel(
        _series(
            "Daily energy use by building group",
            "kWh used per UTC day by each group of buildings (H3 cell; "
            "the charter rolls a cell up to resolution 8 when it holds too few connections). Open dataset "
            "`energy`, field `energy_kwh`.",
            OPEN,
            'SELECT sum("energy_kwh") AS "energy_kwh" FROM "energy" WHERE $timeFilter AND "cell" =~ /^$cell$/ '
            'GROUP BY time(1d), "cell" fill(none)',
            z.unit("energy", "energy_kwh"),
            alias="$tag_cell",
            bars=True,
            width=16,
        )
    )
    b.panel(
        _table(
            "Connections per building group",
            "How many connections each published group holds (open "
            "dataset `energy`, `n_contributors`: the charter publishes a group only with at least k).",
            OPEN,
            'SELECT last("n_contributors") AS "n_contributors", sum("energy_kwh") AS "energy_kwh" FROM "energy" '
            'WHERE $timeFilter AND "cell" =~ /^$cell$/ GROUP BY "cell"',
            z.unit("energy", "n_contributors"),
            {"energy_kwh": z.unit("energy", "energy_kwh")},
            width=8,
        )
    )
    return b


# Use cases of the living lab and the open datasets each puts side by side. The use-case registry (and
# citizens' feedback on it) comes with a later issue; until then these are the zone's standing questions.
USE_CASES = {
    "Schoolstraat (school street)": ("air_quality", "traffic", "noise"),
    "Shopping street footfall": ("pedestrian_flow", "pedestrian_counts", "parking"),
    "Public buildings": ("energy", "weather"),
}


def living_lab(z: DashboardZone) -> Board:
    b = _new(
        "smartzone-living-lab",
        "Living lab",
        PUBLIC,
        "One use case of the living lab at a time: the open datasets it draws on side by side, one panel per "
        "dataset (repeated over the Category variable).",
        "now-7d",
        "15m",
        ["living_lab"],
    )
    names = sorted(USE_CASES)
    b.builder.with_variable(
        dash.CustomVariable("use_case")
        .label("Use case")
        .description("A use case of the living lab.")
        .values(",".join(f"{n} : {'|'.join(USE_CASES[n])}" for n in names))
        .current(model.VariableOption(selected=True, text=names[0], value="|".join(USE_CASES[names[0]])))
    )
    _variables(b, category_var(OPEN, "SHOW MEASUREMENTS WITH MEASUREMENT =~ /^(${use_case:raw})$/"), cell_var(z))
    b.panel(
        text.Panel()
        .title("About the living lab")
        .description("What this dashboard is for.")
        .span(24)
        .height(4)
        .content(
            "Each use case of the Smart Zone living lab draws on several open datasets. Pick a use case: "
            "its datasets appear side by side, with the same cells and time range. Everything shown here is "
            "open data: aggregated per H3 cell by the data charter, never a single person or device."
        )
        .mode(TextMode.MARKDOWN)
    )
    headline = sorted({c for ds in z.charter.datasets.values() for c in _headline(ds)})
    select = "|".join(headline)
    overrides = {c: z.unit(ds_id, c) for ds_id, ds in z.charter.datasets.items() for c in _headline(ds)}
    p = (
        timeseries.Panel()
        .title("$category")
        .description(
            "Means and counts over time of the open dataset `$category` for the selected cells "
            "(open database; one panel "
            "per dataset of the use case, repeated over the Category variable). Units per field come from the "
            "vocabulary."
        )
        .datasource(ref(OPEN))
        .with_target(
            InfluxQL(
                OPEN,
                f"SELECT mean(/^({select})$/) FROM /^$category$/ WHERE $timeFilter AND "
                '"cell" =~ /^$cell$/ GROUP BY time($__interval) fill(none)',
            )
        )
        .unit("short")
        .span(8)
        .height(9)
        .repeat("category")
        .repeat_direction("h")
        .thresholds(thresholds())
    )
    for column, unit in sorted(overrides.items()):
        p = p.override_by_regexp(f"^mean_{column}$", [model.DynamicConfigValue(id_val="unit", value=unit)])
    b.panel(p)
    return b


def _headline(ds) -> list[str]:
    """The fields of an open dataset worth plotting side by side: means and counts."""
    return [f if a in ("count", "sum") else f"{f}_{a}" for f, a in ds.outputs if a in ("mean", "count", "sum")]


def operations(z: DashboardZone) -> Board:
    b = _new(
        "smartzone-operations",
        "Operations",
        OPERATIONS,
        "For the operators: is every reading getting in, where does it get stuck, are gateways and LoRaWAN links "
        "healthy, is the charter job keeping up, which protocol experiments run on which gateway. Reads the ops "
        "and experiments databases.",
        "now-6h",
        "30s",
        ["ops"],
    )
    _variables(b, gateway_var(z), category_var(OPS, 'SHOW TAG VALUES FROM "sensors" WITH KEY = "category"'))
    b.builder.annotation(experiment_events())
    b.row("Ingest")
    b.panel(
        _series(
            "Ingest rate",
            "Readings decoded per second by each ingest worker (ops `ingest`, the derivative "
            "of its cumulative `readings` counter).",
            OPS,
            'SELECT non_negative_derivative(last("readings"), 1s) AS "readings_per_s" FROM "ingest" WHERE '
            '$timeFilter GROUP BY time($__interval), "worker" fill(none)',
            z.unit("ingest", "readings_per_s"),
            alias="$tag_worker",
            width=8,
        )
    )
    b.panel(
        _series(
            "Readings per minute by category",
            "Readings written per minute per sensor category (ops `sensors`).",
            OPS,
            'SELECT sum("readings") AS "readings" FROM "sensors" WHERE $timeFilter AND "category" =~ '
            '/^$category$/ GROUP BY time(1m), "category" fill(0)',
            z.unit("sensors", "readings"),
            alias="$tag_category",
            width=8,
            stack=True,
        )
    )
    b.panel(
        _series(
            "Dead letters by reason",
            "New dead letters per interval, by reason, all workers (ops "
            "`deadletters`, field `new`: what each worker kept since its previous report). `no_route` is a "
            "message on a topic no route matches (a gateway publishing where it should not): counted every "
            "time, kept up to `ingest.no_route_per_hour` per gateway. `smartzone deadletters list` shows them.",
            OPS,
            'SELECT sum("new") AS "new" FROM "deadletters" WHERE $timeFilter GROUP BY time($__interval), '
            '"reason" fill(none)',
            z.unit("deadletters", "new"),
            alias="$tag_reason",
            bars=True,
            stack=True,
            width=8,
            th=thresholds("green", (1, "orange")),
        )
    )
    b.panel(
        _series(
            "Write latency",
            "Median and worst InfluxDB write time per batch, per worker (ops `ingest`).",
            OPS,
            'SELECT median("write_latency_ms_p50") AS "write_latency_ms_p50", max("write_latency_ms_max") AS '
            '"write_latency_ms_max" FROM "ingest" WHERE $timeFilter GROUP BY time($__interval), "worker" '
            "fill(none)",
            z.unit("ingest", "write_latency_ms_max"),
            th=thresholds("green", (500, "orange"), (2000, "red")),
            alias="$col $tag_worker",
            width=8,
        )
    )
    b.panel(
        _series(
            "Queue depth and spool",
            "Messages received but not yet acknowledged (written) and batches "
            "spooled to disk while InfluxDB was unreachable, per worker (ops `ingest`).",
            OPS,
            'SELECT max("queue_depth") AS "queue_depth", max("spool_files") AS "spool_files" FROM "ingest" '
            'WHERE $timeFilter GROUP BY time($__interval), "worker" fill(none)',
            z.unit("ingest", "queue_depth"),
            th=thresholds("green", (1000, "orange")),
            width=8,
        )
    )
    b.panel(
        _series(
            "Backlog",
            "Bytes waiting in the worker's batches and spool (ops `ingest`, `backlog_bytes`).",
            OPS,
            'SELECT max("backlog_bytes") AS "backlog_bytes" FROM "ingest" WHERE $timeFilter '
            'GROUP BY time($__interval), "worker" fill(none)',
            z.unit("ingest", "backlog_bytes"),
            alias="$tag_worker",
            width=8,
        )
    )
    b.row("Gateways")
    b.panel(
        _table(
            "Gateway status, backlog and health",
            "Latest heartbeat of each gateway's agent (ops `gateway_health`, from `gw/<id>/health` every 30 s) "
            "and its status (`gw/<id>/status`: online = true, false = its last will, offline): backlog = "
            "messages waiting in its disk spool for the centre, backlog_age = how old the oldest is, dropped "
            "= messages lost because the spool was full. Last seen: the next table.",
            OPS,
            'SELECT last("online") AS "online", last("backlog") AS "backlog", last("backlog_age") AS '
            '"backlog_age", last("dropped") AS "dropped", last("uptime") AS "uptime", last("cpu_temperature") AS '
            '"cpu_temperature", last("cpu_load") AS "cpu_load" FROM "gateway_health" WHERE $timeFilter AND '
            '"gateway" =~ /^$gateway$/ GROUP BY "gateway"',
            z.unit("gateway_health", "uptime"),
            {
                "online": z.unit("gateway_health", "online"),
                "backlog": z.unit("gateway_health", "backlog"),
                "backlog_age": z.unit("gateway_health", "backlog_age"),
                "dropped": z.unit("gateway_health", "dropped"),
                "cpu_temperature": z.unit("gateway_health", "cpu_temperature"),
                "cpu_load": z.unit("gateway_health", "cpu_load"),
            },
            width=12,
        )
    )
    b.panel(
        _table(
            "Gateway last seen",
            "When each gateway's last heartbeat arrived (the time column; ops `gateway_health`). A gateway "
            "silent for 5 minutes fires the provisioned alert rule `Gateway silent` "
            "(dashboards/provisioning/alerting/gateways.yaml).",
            OPS,
            'SELECT last("uptime") AS "uptime" FROM "gateway_health" WHERE $timeFilter AND "gateway" =~ '
            '/^$gateway$/ GROUP BY "gateway"',
            z.unit("gateway_health", "uptime"),
            {},
            width=12,
        )
    )
    b.panel(
        _series(
            "Gateway CPU temperature",
            "CPU temperature from each gateway's heartbeat (ops `gateway_health`).",
            OPS,
            'SELECT mean("cpu_temperature") AS "cpu_temperature" FROM "gateway_health" WHERE $timeFilter AND '
            '"gateway" =~ /^$gateway$/ GROUP BY time($__interval), "gateway" fill(none)',
            z.unit("gateway_health", "cpu_temperature"),
            th=thresholds("green", (70, "orange"), (80, "red")),
            alias="$tag_gateway",
            width=12,
        )
    )
    b.row("Experiments")
    b.panel(experiments_per_gateway(z))
    b.row("LoRaWAN")
    b.panel(
        _series(
            "RSSI per gateway",
            "Mean received signal strength of LoRaWAN uplinks per receiving gateway (ops "
            "`radio`, from ChirpStack's rx_info).",
            OPS,
            'SELECT mean("rssi") AS "rssi" FROM "radio" WHERE $timeFilter AND "rx_gateway" =~ /^$gateway$/ '
            'GROUP BY time($__interval), "rx_gateway" fill(none)',
            z.unit("radio", "rssi"),
            th=thresholds("red", (-115, "orange"), (-100, "green")),
            alias="$tag_rx_gateway",
            width=8,
        )
    )
    b.panel(
        _series(
            "SNR per gateway",
            "Mean LoRa signal-to-noise ratio per receiving gateway (ops `radio`); below "
            "about -7.5 dB (SF7) to -20 dB (SF12) frames cannot be demodulated.",
            OPS,
            'SELECT mean("snr") AS "snr" FROM "radio" WHERE $timeFilter AND "rx_gateway" =~ /^$gateway$/ '
            'GROUP BY time($__interval), "rx_gateway" fill(none)',
            z.unit("radio", "snr"),
            th=thresholds("red", (-10, "orange"), (0, "green")),
            alias="$tag_rx_gateway",
            width=8,
        )
    )
    b.panel(
        _series(
            "Uplinks per gateway",
            "LoRaWAN uplinks received per interval by each gateway (ops `radio`).",
            OPS,
            'SELECT count("rssi") AS "uplinks" FROM "radio" WHERE $timeFilter AND "rx_gateway" =~ '
            '/^$gateway$/ GROUP BY time($__interval), "rx_gateway" fill(0)',
            z.unit("radio", "uplinks"),
            alias="$tag_rx_gateway",
            width=8,
        )
    )
    loss = (
        'max("f_cnt") - min("f_cnt") + 1 - count(distinct("f_cnt")) AS "lost", (max("f_cnt") - min("f_cnt") + 1 '
        '- count(distinct("f_cnt"))) / (max("f_cnt") - min("f_cnt") + 1) AS "loss"'
    )
    b.panel(
        _table(
            "Links per device and gateway",
            "Per device and receiving gateway over the time range (ops "
            "`radio`): uplinks heard, mean RSSI and SNR, and the frames this gateway missed of those the "
            "device sent between the first and last it heard (lost = last − first frame counter + 1 − "
            "distinct counters heard): pick a gateway to see its packet loss device by device. Totals only, "
            "no time series per device: the trackers on city vehicles would otherwise show where a vehicle "
            "drove.",
            OPS,
            'SELECT count("rssi") AS "uplinks", mean("rssi") AS "rssi", mean("snr") AS "snr", '
            + loss
            + ' FROM "radio" WHERE $timeFilter AND "rx_gateway" =~ /^$gateway$/ GROUP BY "sensor", "rx_gateway"',
            z.unit("radio", "uplinks"),
            {
                "rssi": z.unit("radio", "rssi"),
                "snr": z.unit("radio", "snr"),
                "lost": z.unit("radio", "lost"),
                "loss": z.unit("radio", "loss"),
            },
            th=thresholds("green", (0.01, "orange"), (0.1, "red")),
            width=14,
        )
    )
    b.panel(
        _table(
            "Packet loss per device",
            "Frames of each device the network missed over the time range, whichever "
            "gateway heard the others (ops `radio`): expected = last − first frame counter + 1, lost = "
            "expected − distinct counters received. A device that re-joined in the range (its counter "
            "restarted) shows more loss than it had: `smartzone lorawan` splits sessions.",
            OPS,
            'SELECT max("f_cnt") - min("f_cnt") + 1 AS "expected", '
            + loss
            + ' FROM "radio" WHERE $timeFilter GROUP BY "sensor"',
            z.unit("radio", "loss"),
            {"expected": z.unit("radio", "expected"), "lost": z.unit("radio", "lost")},
            th=thresholds("green", (0.01, "orange"), (0.1, "red")),
            width=10,
        )
    )
    b.row("Data charter")
    b.panel(
        _series(
            "Charter job lag",
            "How far behind the newest closed window each dataset's publication is, per "
            "charter run (ops `charter`, `lag_s`). Datasets about people publish a day once it closed, so "
            "their lag reaches a day by design.",
            OPS,
            'SELECT max("lag_s") AS "lag_s" FROM "charter" WHERE $timeFilter GROUP BY time($__interval), '
            '"dataset" fill(none)',
            z.unit("charter", "lag_s"),
            th=thresholds("green", (90_000, "orange"), (180_000, "red")),
            alias="$tag_dataset",
            width=12,
        )
    )
    b.panel(
        _series(
            "Published vs suppressed groups",
            "Groups (cell × bin) the charter job published and suppressed "
            "(fewer than k contributors, small counts, magnitude rules per owner, held back by a release) per "
            "interval (ops `charter`).",
            OPS,
            'SELECT sum("published") AS "published", sum("suppressed") AS "suppressed" FROM "charter" WHERE '
            "$timeFilter GROUP BY time($__interval) fill(none)",
            z.unit("charter", "published"),
            bars=True,
            stack=True,
            width=12,
        )
    )
    return b


# The phases a gateway agent reports (smartzone.model.PHASE_CODES) and their colours on the state timeline.
PHASE_COLOURS = {
    "fetching": "blue",
    "waiting": "light-blue",
    "running": "green",
    "stopping": "yellow",
    "finished": "dark-green",
    "failed": "red",
    "stopped": "orange",
    "refused": "dark-red",
}
EXPERIMENTS_PER_GATEWAY_QUERY = (
    'SELECT last("phase_code") AS "phase_code" FROM "reported" WHERE $timeFilter AND "gateway" =~ /^$gateway$/ '
    'GROUP BY time($__interval), "gateway", "experiment" fill(previous)'
)
EXPERIMENT_EVENTS_QUERY = (
    'SELECT "text", "to", "gateway", "experiment" FROM "events" WHERE $timeFilter AND "gateway" =~ /^$gateway$/'
)


def experiments_per_gateway(z: DashboardZone) -> statetimeline.Panel:
    """The phases each gateway's agent reported for each experiment, over time (experiments `reported`)."""
    mappings = model.ValueMap(
        {
            str(code): model.ValueMappingResult(text=phase, color=PHASE_COLOURS[phase], index=code - 1)
            for phase, code in PHASE_CODES.items()
        }
    )
    return (
        statetimeline.Panel()
        .title("Experiments per gateway")
        .description(
            "The phase each gateway's agent reported for each protocol experiment (experiments database, "
            "`reported`, from `gw/<id>/experiments/reported`): fetching, waiting, running, stopping, then finished, "
            "failed, stopped or refused. One row per gateway and experiment. The experiments' state changes "
            "(`smartzone/experiments/events`) are the dashboard's purple annotations."
        )
        .datasource(ref(EXP))
        .with_target(InfluxQL(EXP, EXPERIMENTS_PER_GATEWAY_QUERY, alias="$tag_gateway #$tag_experiment"))
        .unit(z.unit("reported", "phase_code"))
        .mappings([mappings])
        .thresholds(thresholds())
        .show_value(common.VisibilityMode.AUTO)
        .merge_values(True)
        .fill_opacity(80)
        .span(24)
        .height(8)
    )


def experiment_events() -> dash.AnnotationQuery:
    """The experiments' state changes (experiments `events`), as annotations: `<name>: <from> -> <to> (<reason>)`,
    tagged with the new state, the gateway and the experiment id."""
    return (
        dash.AnnotationQuery()
        .name("Experiment state changes")
        .datasource(ref(EXP))
        .enable(True)
        .icon_color("purple")
        .target(
            InfluxQLAnnotation(
                EXPERIMENT_EVENTS_QUERY, text_column="text", tags_columns=["to", "gateway", "experiment"]
            )
        )
    )


BOARDS: list[Callable[[DashboardZone], Board]] = [
    overview,
    air_quality,
    mobility,
    noise,
    energy,
    living_lab,
    operations,
]


def build(registry: Registry | None = None, charter: Charter | None = None) -> list[Board]:
    z = DashboardZone(registry or Registry.load(REGISTRY), charter or Charter.load())
    return [make(z) for make in BOARDS]


def datasources(
    influx_url: str,
    open_db: str,
    ops_db: str,
    experiments_db: str = "smartzone_experiments",
    *,
    user: str | None = None,
    password: str | None = None,
) -> list[dict]:
    """The three InfluxQL datasources as Grafana's HTTP API takes them (``smartzone dashboards push``)."""
    out = []
    for uid, name, db, interval in (
        (OPEN, "Smart Zone open data", open_db, "15m"),
        (OPS, "Smart Zone operations", ops_db, "5s"),
        (EXP, "Smart Zone experiments", experiments_db, "5s"),
    ):
        d = {
            "uid": uid,
            "name": name,
            "type": "influxdb",
            "access": "proxy",
            "url": influx_url,
            "jsonData": {"dbName": db, "httpMode": "POST", "version": "InfluxQL", "timeInterval": interval},
        }
        if user:
            d["user"] = user
        if password:
            d["secureJsonData"] = {"password": password}
        out.append(d)
    return out


# A gateway is silent when its agent's heartbeats (every 30 s) stopped: its heartbeats counted per minute over the
# last day (fill(0): a silent minute counts 0, for every gateway heard that day), averaged over the last 5 minutes
# (the current one included). Grafana reduces each gateway's series to its last value; below 0.2 (no heartbeat in
# those 5 minutes) the condition holds, and held for 1 minute the rule fires for that gateway. (An outer time filter
# over a fill(0) subquery returns nothing on InfluxDB 1.6: hence moving_average.)
GATEWAY_SILENT_QUERY = (
    'SELECT moving_average(count("uptime"), 5) AS "beats_per_min" FROM "gateway_health" WHERE $timeFilter '
    'GROUP BY time(1m), "gateway" fill(0)'
)
ALERT_RULES = "provisioning/alerting/gateways.yaml"


def alert_rules() -> str:
    """Grafana alerting file provisioning (``apiVersion: 1``, ``groups``) of the gateways' rules."""
    rule = {
        "uid": "smartzone-gateway-silent",
        "title": "Gateway silent",
        "condition": "C",
        "data": [
            {
                "refId": "A",
                "relativeTimeRange": {"from": 86400, "to": 0},
                "datasourceUid": OPS,
                "model": {"refId": "A", "rawQuery": True, "resultFormat": "time_series", "query": GATEWAY_SILENT_QUERY},
            },
            {
                "refId": "B",
                "datasourceUid": "__expr__",
                "model": {"refId": "B", "type": "reduce", "expression": "A", "reducer": "last"},
            },
            {
                "refId": "C",
                "datasourceUid": "__expr__",
                "model": {
                    "refId": "C",
                    "type": "threshold",
                    "expression": "B",
                    "conditions": [{"evaluator": {"type": "lt", "params": [0.2]}}],
                },
            },
        ],
        "noDataState": "Alerting",  # no gateway heard for a day at all
        "execErrState": "Error",
        "for": "1m",
        "annotations": {
            "summary": "Gateway {{ $labels.gateway }} has sent no heartbeat for 5 minutes",
            "description": "Its agent publishes gw/<id>/health every 30 s. Check the gateway's power and network, "
            "then `smartzone-gateway-agent selftest` on it (docs/parts/gateway-agent.md).",
        },
        "labels": {"severity": "warning", "team": "operations"},
    }
    doc = {
        "apiVersion": 1,
        "groups": [{"orgId": 1, "name": "gateways", "folder": FOLDER_TITLE, "interval": "1m", "rules": [rule]}],
    }
    head = (
        "# Grafana alerting file provisioning: the gateways' alert rules (generated by `smartzone dashboards build`).\n"
    )
    return head + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)


def provisioning_files(boards: list[Board], z: DashboardZone, api_url: str = API_URL) -> dict[str, str]:
    """Relative path -> text of Grafana's file provisioning (datasources, dashboard provider, gazetteer) and
    of the dashboards, linking to the open-data API at ``api_url``."""
    ds_lines = [
        "# Grafana file provisioning: Smart Zone's three InfluxQL datasources (generated by",
        "# `smartzone dashboards build`; do not edit). Values in ${...} come from the Grafana container's",
        "# environment (docker-compose.yml). There is deliberately no datasource for the raw or",
        "# pseudonymous databases.",
        "apiVersion: 1",
        "datasources:",
    ]
    for uid, name, env, interval in (
        (OPEN, "Smart Zone open data", "SMARTZONE_OPEN_DATABASE", "15m"),
        (OPS, "Smart Zone operations", "SMARTZONE_OPS_DATABASE", "5s"),
        (EXP, "Smart Zone experiments", "SMARTZONE_EXPERIMENTS_DATABASE", "5s"),
    ):
        ds_lines += [
            f"  - name: {name}",
            f"    uid: {uid}",
            "    type: influxdb",
            "    access: proxy",
            "    url: ${INFLUXDB_URL}",
            "    user: ${INFLUXDB_READ_USER}",
            "    editable: false",
            "    jsonData:",
            f"      dbName: ${{{env}}}",
            "      httpMode: POST",
            "      version: InfluxQL",
            f"      timeInterval: {interval}",
            "    secureJsonData:",
            "      password: ${INFLUXDB_READ_PASSWORD}",
        ]
    provider = [
        "# Grafana file provisioning: the dashboards in dashboards/json (generated; do not edit).",
        "apiVersion: 1",
        "providers:",
        f"  - name: {FOLDER_UID}",
        f"    folder: {FOLDER_TITLE}",
        f"    folderUid: {FOLDER_UID}",
        "    type: file",
        "    disableDeletion: true",
        "    allowUiUpdates: false",
        "    updateIntervalSeconds: 60",
        "    options:",
        "      path: /var/lib/grafana/dashboards/smartzone",
        "      foldersFromFilesStructure: false",
    ]
    return {
        "provisioning/datasources/smartzone.yaml": "\n".join(ds_lines) + "\n",
        "provisioning/dashboards/smartzone.yaml": "\n".join(provider) + "\n",
        ALERT_RULES: alert_rules(),
        "provisioning/gazetteer/smartzone-cells.json": json.dumps(z.gazetteer(), indent=1) + "\n",
        **{
            f"json/{b.uid}.json": json.dumps(
                with_api_url(b.json(), api_url), indent=2, ensure_ascii=False, sort_keys=True
            )
            + "\n"
            for b in boards
        },
    }


def with_api_url(board: dict, url: str) -> dict:
    """A dashboard's JSON model whose links point to the open-data API at ``url`` (http or https)."""
    if not re.fullmatch(r"https?://[^\s\"'<>]+", url):
        raise ValueError(f"the API URL must be an http(s) URL, got {url!r}")
    out = json.loads(json.dumps(board))
    for var in out.get("templating", {}).get("list", []):
        if var["name"] == "api_url" and var["type"] == "constant":
            var["query"] = url.rstrip("/")
    return out


def outputs(
    registry: Registry | None = None, charter: Charter | None = None, *, api_url: str = API_URL
) -> dict[str, str]:
    z = DashboardZone(registry or Registry.load(REGISTRY), charter or Charter.load())
    return provisioning_files([make(z) for make in BOARDS], z, api_url)


def write(
    root: Path | None = None,
    *,
    api_url: str = API_URL,
    registry: Registry | None = None,
    charter: Charter | None = None,
) -> list[str]:
    """Write every generated file under ``root`` (default: this folder); returns the paths that changed."""
    root = root or HERE
    changed = []
    for rel, content in outputs(registry, charter, api_url=api_url).items():
        path = root / rel
        if not path.exists() or path.read_text() != content:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
            changed.append(rel)
    return changed


def drift(root: Path | None = None) -> list[str]:
    """Generated files whose committed copy differs from what the code builds (or that are missing/stale)."""
    root = root or HERE
    want = outputs()
    out = [rel for rel, content in want.items() if not (root / rel).exists() or (root / rel).read_text() != content]
    out += [
        p.relative_to(root).as_posix()
        for p in (root / "json").glob("*.json")
        if p.relative_to(root).as_posix() not in want
    ]
    return sorted(out)
