"""Space: the zone, its H3 cells and, for transparency, its sensors.

- ``GET /v1/cells``: the zone's cells (the registry's, at the zone's resolution) and every cell that has
  published points (coarser roll-up cells included), as a GeoJSON FeatureCollection named after the
  nearest street and neighbourhood of the registry's places, with the datasets published there.
- ``GET /v1/zone``: name, city, time zone, resolution, centre, bbox, outline, counts, links.
- ``GET /v1/sensors``, ``GET /v1/sensors/{id}``: what each sensor is and measures, where it is placed (public
  space, private premises, indoors), which datasets its data reaches (exactly those whose charter rules admit it,
  ``Dataset.admits``, the rule the charter job applies), how each of them protects it, and in which cell its data
  is published. A sensor whose data reaches no dataset (an indoor classroom CO2 sensor) says so, and shows no
  cell. Never a data owner or vehicle id of the registry, never a device key (MAC, DevEUI, IEEE address, SenML
  URN, topic), never a gateway, never a latitude or longitude: a fixed sensor is shown by the H3 cell its
  data is published in, a mobile one by the cell size and period its readings are published at. Gateway
  health "sensors" (the gateways reporting on themselves) are not listed: their data is never published.
"""

from __future__ import annotations

import enum
from collections import Counter
from typing import Annotated, Any, Literal

import h3
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from api.deps import state
from api.geometry import bbox, cell_polygon, distance_m, edge_text, hull_polygon
from api.negotiation import GEOJSON, JSON, NOT_ACCEPTABLE, json_response, negotiate
from api.problems import PROBLEM, Problem
from api.rules import protection
from api.store import open_db
from api.timefmt import iso_duration
from api.urls import base_url
from datacharter.charter import Charter, Dataset
from datacharter.explain import explain_dataset
from smartzone.names import parse_duration
from smartzone.quantities import CATEGORIES, QUANTITIES
from smartzone.registry import Place, Registry, Sensor

router = APIRouter(prefix="/v1", tags=["space"])

UNPUBLISHED = ("gateway_health",)  # categories that are the network's own, never published: not listed
PUBLIC_CATEGORIES = tuple(c for c in CATEGORIES if c not in UNPUBLISHED)
Category = enum.Enum("Category", {c: c for c in PUBLIC_CATEGORIES}, type=str)  # type: ignore[misc]  # members from CATEGORIES, not literals
# pseudonymised sightings: which sensors send them, by sighting kind (category, technology or None for any)
_SIGHTINGS = {"wifi": ("pedestrian_flow", "wifi"), "ble": ("pedestrian_flow", "ble"), "vehicle": ("traffic", None)}


# -- response models ------------------------------------------------------------------------------------------
class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class CellProperties(_Model):
    cell: str = Field(examples=["8a1fa4a4e6b7fff"])
    resolution: int = Field(examples=[10])
    name: str | None = Field(examples=["Volkstraat"], description="the nearest street of the registry's places")
    neighbourhood: str | None = Field(examples=["Zuid"])
    datasets: list[str] = Field(examples=[["air_quality", "traffic"]], description="datasets with points here")


class CellFeature(_Model):
    type: Literal["Feature"] = "Feature"
    id: str
    geometry: dict[str, Any]
    properties: CellProperties


class CellCollection(_Model):
    type: Literal["FeatureCollection"] = "FeatureCollection"
    features: list[CellFeature]


class ZoneOut(_Model):
    name: str
    city: str
    timezone: str
    description: str
    h3_resolution: int
    centre: dict[str, Any] = Field(description="GeoJSON Point")
    bbox: list[float] | None = Field(description="[west, south, east, north]")
    outline: dict[str, Any] | None = Field(description="GeoJSON Polygon: the convex hull of the zone's cells")
    cells: int
    gateways: int
    sensors: dict[str, Any]
    datasets: int
    places: dict[str, list[str]]
    links: dict[str, str]


class Measures(_Model):
    quantity: str = Field(examples=["air_quality.pm2_5"])
    unit: str = Field(examples=["ug/m3"])
    description: str


class Location(_Model):
    mobile: bool
    cell: str | None = Field(description="the H3 cell its data is published in; null for mobile sensors")
    h3_resolution: int | None
    published_as: str


class Rule(_Model):
    id: str
    title: str
    method: str
    subject: str
    k: int
    cell: str | None
    h3_resolutions: list[int]
    bins: list[str] = Field(examples=[["PT15M"]])
    noise: dict[str, Any] | None
    late_data: str
    protection: dict[str, Any] = Field(
        description="how the dataset protects the sensor's data: which sensors it takes (categories, placement), "
        "k and what it counts, magnitude rules per data owner, the release it belongs to, the state "
        "carry, small counts, the extremes policy, and what it protects against and what not"
    )
    explanation: str
    links: dict[str, str]


class SensorOut(_Model):
    id: str = Field(examples=["aq-volkstraat-1"])
    category: str
    technology: str
    model: str
    description: str
    measures: list[Measures]
    placement: str = Field(examples=["public_space"], description="public_space, private_premises or indoor")
    published: bool = Field(description="whether the sensor's data reaches any open dataset")
    publication: str = Field(description="in plain words: which datasets the sensor's data reaches, or none")
    location: Location
    datasets: list[Rule]
    links: dict[str, str]


class SensorList(_Model):
    count: int
    sensors: list[SensorOut]
    links: dict[str, str]


_CELLS_EXAMPLE = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "id": "8a1fa4a4e6b7fff",
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[4.3958, 51.2101], [4.3956, 51.2095], "...", [4.3958, 51.2101]]],
            },
            "properties": {
                "cell": "8a1fa4a4e6b7fff",
                "resolution": 10,
                "name": "Volkstraat",
                "neighbourhood": "Zuid",
                "datasets": ["air_quality", "traffic"],
            },
        }
    ],
}
_SENSOR_EXAMPLE = {
    "id": "aq-volkstraat-1",
    "category": "air_quality",
    "technology": "zigbee",
    "model": "Aqara TVOC + PM kit",
    "description": "",
    "measures": [{"quantity": "air_quality.pm2_5", "unit": "ug/m3", "description": "particulate matter below 2.5 µm"}],
    "placement": "public_space",
    "published": True,
    "publication": "Its data is published in 1 dataset: air_quality.",
    "location": {
        "mobile": False,
        "cell": "8a1fa4a4e6b7fff",
        "h3_resolution": 10,
        "published_as": "H3 cell of about 76 m (resolution 10); its exact position is not published",
    },
    "datasets": [
        {
            "id": "air_quality",
            "title": "Air quality at fixed stations",
            "method": "summary",
            "subject": "sensor",
            "k": 1,
            "cell": "8a1fa4a4e6b7fff",
            "h3_resolutions": [10],
            "bins": ["PT15M"],
            "noise": None,
            "late_data": "reprocess",
            "protection": {
                "k": 1,
                "counts": "sensors",
                "sources": {"categories": ["air_quality"], "placement": ["public_space"], "sensors": "fixed"},
                "magnitude": None,
                "release": None,
                "state_ttl": None,
                "small_counts": None,
                "extremes": {"published": ["pm2_5_min", "pm2_5_max"], "rule": "published: ..."},
                "protects_against": "...",
                "does_not_protect_against": "...",
            },
            "explanation": "Air quality at fixed stations ...",
            "links": {"self": "https://data.example.org/v1/datasets/air_quality"},
        }
    ],
    "links": {"self": "https://data.example.org/v1/sensors/aq-volkstraat-1"},
}


# -- endpoints ----------------------------------------------------------------------------------------------
@router.get(
    "/cells",
    summary="The zone's H3 cells as GeoJSON, named after the nearest street",
    response_model=CellCollection,
    responses={
        200: {"content": {GEOJSON: {"example": _CELLS_EXAMPLE}}},
        400: {"description": "unknown dataset or resolution", "content": {PROBLEM: {}}},
        **NOT_ACCEPTABLE,
    },
)
def cells(
    request: Request,
    dataset: Annotated[str | None, Query(description="only the cells where this dataset has points")] = None,
    resolution: Annotated[int | None, Query(ge=0, le=15, description="only cells of this H3 resolution")] = None,
) -> Response:
    media = negotiate(request, [GEOJSON, JSON])
    st = state(request)
    if dataset is not None and dataset not in st.charter.datasets:
        raise Problem(
            400,
            "unknown-dataset",
            f"no dataset {dataset!r}; the catalogue lists them: /v1/datasets",
            parameter="dataset",
        )
    published: dict[str, list[str]] = {}
    for name in st.charter.datasets:
        for c in open_db(lambda name=name: st.store.cells(name)):
            if h3.is_valid_cell(c):
                published.setdefault(c, []).append(name)
    wanted = set(published) | set(st.registry.cells)
    if dataset is not None:
        wanted = {c for c in wanted if dataset in published.get(c, ())}
    if resolution is not None:
        wanted = {c for c in wanted if h3.get_resolution(c) == resolution}
    places = st.registry.doc.places
    features = []
    for c in sorted(wanted, key=lambda c: (h3.get_resolution(c), c)):
        lat, lon = h3.cell_to_latlng(c)
        features.append(
            {
                "type": "Feature",
                "id": c,
                "geometry": cell_polygon(c),
                "properties": {
                    "cell": c,
                    "resolution": h3.get_resolution(c),
                    "name": nearest(places, "street", lat, lon),
                    "neighbourhood": nearest(places, "neighbourhood", lat, lon),
                    "datasets": published.get(c, []),
                },
            }
        )
    return json_response({"type": "FeatureCollection", "features": features}, media)


@router.get(
    "/zone", summary="The smart zone: where it is, what it holds", response_model=ZoneOut, responses=NOT_ACCEPTABLE
)
def zone(request: Request) -> Response:
    media = negotiate(request, [JSON])
    st = state(request)
    registry, base = st.registry, base_url(request)
    z = registry.doc.zone
    zone_cells = set(registry.cells)
    box = bbox(zone_cells)
    centre = None
    if box is not None:
        centre = {"type": "Point", "coordinates": [round((box[0] + box[2]) / 2, 6), round((box[1] + box[3]) / 2, 6)]}
    listed = [s for s in registry.sensors.values() if s.category not in UNPUBLISHED]
    by_category = Counter(s.category for s in listed)
    body = {
        "name": z.name,
        "city": z.city,
        "timezone": z.timezone,
        "description": z.description,
        "h3_resolution": z.h3_resolution,
        "centre": centre,
        "bbox": box,
        "outline": hull_polygon(zone_cells),
        "cells": len(zone_cells),
        "gateways": len(registry.gateways),
        "sensors": {
            "total": len(listed),
            "by_category": {c: by_category[c] for c in PUBLIC_CATEGORIES if by_category[c]},
            "mobile": sum(1 for s in listed if s.mobile),
        },
        "datasets": len(st.charter.datasets),
        "places": {
            "streets": [p.name for p in registry.doc.places if p.kind == "street"],
            "neighbourhoods": [p.name for p in registry.doc.places if p.kind == "neighbourhood"],
        },
        "links": {
            "self": f"{base}/v1/zone",
            "cells": f"{base}/v1/cells",
            "datasets": f"{base}/v1/datasets",
            "sensors": f"{base}/v1/sensors",
        },
    }
    return json_response(body, media)


@router.get(
    "/sensors",
    summary="The zone's sensors: what they measure, where their data is published, which rules apply",
    response_model=SensorList,
    responses=NOT_ACCEPTABLE,
)
def sensors(
    request: Request,
    category: Annotated[Category | None, Query(description="only sensors of this category")] = None,
) -> Response:
    media = negotiate(request, [JSON])
    st = state(request)
    base = base_url(request)
    out = [
        describe_sensor(base, s, st.charter, st.registry)
        for s in st.registry.sensors.values()
        if s.category not in UNPUBLISHED and (category is None or s.category == category.value)
    ]
    query = f"?category={category.value}" if category is not None else ""
    return json_response({"count": len(out), "sensors": out, "links": {"self": f"{base}/v1/sensors{query}"}}, media)


@router.get(
    "/sensors/{id}",
    summary="One sensor: what it measures, where its data is published, which rules apply",
    response_model=SensorOut,
    responses={
        200: {"content": {JSON: {"example": _SENSOR_EXAMPLE}}},
        404: {"description": "unknown sensor (`parameter`: id)", "content": {PROBLEM: {}}},
        **NOT_ACCEPTABLE,
    },
)
def sensor(request: Request, id: str) -> Response:
    st = state(request)
    s = st.registry.sensors.get(id)
    if s is None or s.category in UNPUBLISHED:
        raise Problem(404, "unknown-sensor", f"no sensor {id[:64]!r}; the list is at /v1/sensors", parameter="id")
    media = negotiate(request, [JSON])
    return json_response(describe_sensor(base_url(request), s, st.charter, st.registry), media)


# -- building the answers -------------------------------------------------------------------------------------
def nearest(places: list[Place], kind: str, lat: float, lon: float) -> str | None:
    best = min(
        (p for p in places if p.kind == kind),
        default=None,
        key=lambda p: distance_m(lat, lon, p.position.lat, p.position.lon),
    )
    return best.name if best is not None else None


def measures(s: Sensor) -> list[dict[str, str]]:
    keys = [q.key for q in QUANTITIES.values() if q.category == s.category]
    keys += [k for k in s.fields.values() if k not in keys]
    return [{"quantity": k, "unit": QUANTITIES[k].unit, "description": QUANTITIES[k].description} for k in keys]


def feeds(s: Sensor, charter: Charter) -> list[tuple[str, Dataset]]:
    """The datasets the sensor's data reaches: those that admit it (``Dataset.admits``: its category, placement
    and kind, fixed or mobile; the rule the charter job applies, dropping every other sensor's rows) and that
    read what it sends: the dataset's measurement (its category's, or fields mapped to it) or, for pseudonymised
    sightings, the kinds a dataset counts from the probe sniffers of its technology."""
    out = []
    for name, ds in charter.datasets.items():
        if ds.admits(s) and sends(s, ds):
            out.append((name, ds))
    return out


def sends(s: Sensor, ds: Dataset) -> bool:
    """Whether the sensor sends what the dataset reads (whether or not the dataset admits the sensor)."""
    if ds.source.database == "pseudonymous":
        return any(
            kind in _SIGHTINGS and s.category == _SIGHTINGS[kind][0] and _SIGHTINGS[kind][1] in (None, s.technology)
            for kind in ds.source.kinds
        )
    m = ds.source.measurement
    used = {*ds.fields, ds.source.meter_field, ds.source.power_field}
    return m == s.category or any(
        QUANTITIES[q].category == m and QUANTITIES[q].field in used for q in s.fields.values()
    )


_PLACED = {"public_space": "in the public space", "private_premises": "on private premises", "indoor": "indoors"}


def publication(s: Sensor, fed: list[str], charter: Charter) -> str:
    """In plain words: which datasets the sensor's data reaches, or why it reaches none."""
    if fed:
        return f"Its data is published in {len(fed)} dataset{'s' if len(fed) > 1 else ''}: {', '.join(fed)}."
    # the datasets that would take it but for where it is placed
    refused = [
        name
        for name, ds in charter.datasets.items()
        if sends(s, ds)
        and s.category in ds.source.categories
        and s.mobile == (ds.source.sensors == "mobile")
        and s.placement not in ds.source.placement
    ]
    text = "Its data is not published in any open dataset."
    if refused:
        places = sorted({p for n in refused for p in charter.datasets[n].source.placement}, key=list(_PLACED).index)
        text += (
            f" It is placed {_PLACED[s.placement]}, and the datasets of what it measures ({', '.join(refused)}) "
            f"take sensors {' or '.join(_PLACED[p] for p in places)} only"
        )
        text += (
            ": a sensor off the public space measures a household or a business."
            if s.placement != "public_space"
            else "."
        )
    return text


def _cell_at(s: Sensor, res: int, zone_res: int) -> str | None:
    """The sensor's cell at ``res``, never finer than the zone's resolution; None for mobile sensors."""
    if s.position is None:
        return None
    return h3.latlng_to_cell(s.position.lat, s.position.lon, min(res, zone_res))


def _period(b: str) -> str:
    seconds = int(parse_duration(b))
    for unit, n in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds % n == 0:
            k = seconds // n
            return unit if k == 1 else f"{k} {unit}s"
    return f"{seconds} seconds"


def describe_sensor(base: str, s: Sensor, charter: Charter, registry: Registry) -> dict[str, Any]:
    zone_res = registry.doc.zone.h3_resolution
    fed = feeds(s, charter)
    rules = []
    for name, ds in fed:
        noise = None
        if ds.noise:
            noise = {
                "epsilon_per_day": ds.noise.epsilon_per_day,
                "max_bins_per_subject_per_day": ds.noise.max_bins_per_subject_per_day,
                "threshold": ds.noise_threshold,
            }
        rules.append(
            {
                "id": name,
                "title": ds.title,
                "method": ds.method,
                "subject": ds.subject,
                "k": ds.k,
                "cell": _cell_at(s, ds.space.resolution, zone_res),
                "h3_resolutions": [ds.space.resolution, *ds.space.roll_up],
                "bins": [iso_duration(b) for b in ds.time.chain],
                "noise": noise,
                "late_data": ds.late_data,
                "protection": protection(name, ds, charter),
                "explanation": explain_dataset(name, ds, charter),
                "links": {
                    "self": f"{base}/v1/datasets/{name}",
                    "observations": f"{base}/v1/datasets/{name}/observations",
                },
            }
        )
    location: dict[str, Any]
    if not fed:
        location = {
            "mobile": s.mobile,
            "cell": None,
            "h3_resolution": None,
            "published_as": "not published: its data reaches no open dataset",
        }
    elif s.mobile:
        ways = sorted(
            {(ds.space.resolution, ds.time.bin) for _, ds in fed}, key=lambda rb: (-rb[0], parse_duration(rb[1]))
        )
        how = " or ".join(f"per {edge_text(r)} cell and {_period(b)}" for r, b in ways)
        location = {
            "mobile": True,
            "cell": None,
            "h3_resolution": None,
            "published_as": f"mobile: published {how}" if how else "mobile: not published",
        }
    else:
        res = min(max(ds.space.resolution for _, ds in fed), zone_res)
        location = {
            "mobile": False,
            "cell": _cell_at(s, res, zone_res),
            "h3_resolution": res,
            "published_as": f"H3 cell of about {edge_text(res)} (resolution {res}); its exact position "
            "is not published",
        }
    return {
        "id": s.id,
        "category": s.category,
        "technology": s.technology,
        "model": s.model,
        "description": s.description,
        "measures": measures(s),
        "placement": s.placement,
        "published": bool(fed),
        "publication": publication(s, [n for n, _ in fed], charter),
        "location": location,
        "datasets": rules,
        "links": {"self": f"{base}/v1/sensors/{s.id}"},
    }
