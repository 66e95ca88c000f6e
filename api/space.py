"""Space: the zone, its H3 cells and, for transparency, its sensors.

- ``GET /v1/cells``: the zone's cells (the registry's, at the zone's resolution) and every cell that has
  published points (coarser roll-up cells included), as a GeoJSON FeatureCollection named after the
  nearest street and neighbourhood of the registry's places, with the datasets published there.
- ``GET /v1/zone``: name, city, time zone, resolution, centre, bbox, outline, counts, links.
- ``GET /v1/sensors``, ``GET /v1/sensors/{id}``: what each sensor is and measures, in which cell its data is
  published and under which of the charter's rules. Never a device key (MAC, DevEUI, IEEE address, SenML
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

from api.app import state
from api.catalogue import (
    GEOJSON,
    JSON,
    NOT_ACCEPTABLE,
    base_url,
    bbox,
    cell_polygon,
    distance_m,
    edge_text,
    hull_polygon,
    iso_duration,
    json_response,
    negotiate,
    open_db,
)
from api.problems import PROBLEM, Problem
from datacharter.charter import Charter, Dataset
from datacharter.explain import explain_dataset
from smartzone.names import parse_duration
from smartzone.quantities import CATEGORIES, QUANTITIES
from smartzone.registry import Place, Registry, Sensor

router = APIRouter(prefix="/v1", tags=["space"])

UNPUBLISHED = ("gateway_health",)  # categories that are the network's own, never published: not listed
PUBLIC_CATEGORIES = tuple(c for c in CATEGORIES if c not in UNPUBLISHED)
Category = enum.Enum("Category", {c: c for c in PUBLIC_CATEGORIES}, type=str)
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
    explanation: str
    links: dict[str, str]


class SensorOut(_Model):
    id: str = Field(examples=["aq-volkstraat-1"])
    category: str
    technology: str
    model: str
    description: str
    measures: list[Measures]
    location: Location
    datasets: list[Rule]
    links: dict[str, str]


class SensorList(_Model):
    count: int
    sensors: list[SensorOut]
    links: dict[str, str]


_CELLS_EXAMPLE = {"type": "FeatureCollection", "features": [{
    "type": "Feature", "id": "8a1fa4a4e6b7fff",
    "geometry": {"type": "Polygon", "coordinates": [[[4.3958, 51.2101], [4.3956, 51.2095], "...",
                                                     [4.3958, 51.2101]]]},
    "properties": {"cell": "8a1fa4a4e6b7fff", "resolution": 10, "name": "Volkstraat", "neighbourhood": "Zuid",
                   "datasets": ["air_quality", "traffic"]}}]}
_SENSOR_EXAMPLE = {
    "id": "aq-volkstraat-1", "category": "air_quality", "technology": "zigbee", "model": "Aqara TVOC + PM kit",
    "description": "", "measures": [{"quantity": "air_quality.pm2_5", "unit": "ug/m3",
                                     "description": "particulate matter below 2.5 µm"}],
    "location": {"mobile": False, "cell": "8a1fa4a4e6b7fff", "h3_resolution": 10,
                 "published_as": "H3 cell of about 76 m (resolution 10); its exact position is not published"},
    "datasets": [{"id": "air_quality", "title": "Air quality at fixed stations", "method": "summary",
                  "subject": "sensor", "k": 1, "cell": "8a1fa4a4e6b7fff", "h3_resolutions": [10], "bins": ["PT15M"],
                  "noise": None, "late_data": "reprocess", "explanation": "Air quality at fixed stations ...",
                  "links": {"self": "https://data.example.org/v1/datasets/air_quality"}}],
    "links": {"self": "https://data.example.org/v1/sensors/aq-volkstraat-1"},
}


# -- endpoints ----------------------------------------------------------------------------------------------
@router.get("/cells", summary="The zone's H3 cells as GeoJSON, named after the nearest street",
            response_model=CellCollection,
            responses={200: {"content": {GEOJSON: {"example": _CELLS_EXAMPLE}}},
                       400: {"description": "unknown dataset or resolution", "content": {PROBLEM: {}}},
                       **NOT_ACCEPTABLE})
def cells(request: Request,
          dataset: Annotated[str | None, Query(description="only the cells where this dataset has points")] = None,
          resolution: Annotated[int | None, Query(ge=0, le=15, description="only cells of this H3 resolution")] = None,
          ) -> Response:
    media = negotiate(request, [GEOJSON, JSON])
    st = state(request)
    if dataset is not None and dataset not in st.charter.datasets:
        raise Problem(400, "unknown-dataset", f"no dataset {dataset!r}; the catalogue lists them: /v1/datasets",
                      parameter="dataset")
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
        features.append({"type": "Feature", "id": c, "geometry": cell_polygon(c), "properties": {
            "cell": c, "resolution": h3.get_resolution(c), "name": nearest(places, "street", lat, lon),
            "neighbourhood": nearest(places, "neighbourhood", lat, lon), "datasets": published.get(c, [])}})
    return json_response({"type": "FeatureCollection", "features": features}, media)


@router.get("/zone", summary="The smart zone: where it is, what it holds", response_model=ZoneOut,
            responses=NOT_ACCEPTABLE)
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
        "name": z.name, "city": z.city, "timezone": z.timezone, "description": z.description,
        "h3_resolution": z.h3_resolution, "centre": centre, "bbox": box, "outline": hull_polygon(zone_cells),
        "cells": len(zone_cells), "gateways": len(registry.gateways),
        "sensors": {"total": len(listed), "by_category": {c: by_category[c] for c in PUBLIC_CATEGORIES
                                                          if by_category[c]},
                    "mobile": sum(1 for s in listed if s.mobile)},
        "datasets": len(st.charter.datasets),
        "places": {"streets": [p.name for p in registry.doc.places if p.kind == "street"],
                   "neighbourhoods": [p.name for p in registry.doc.places if p.kind == "neighbourhood"]},
        "links": {"self": f"{base}/v1/zone", "cells": f"{base}/v1/cells", "datasets": f"{base}/v1/datasets",
                  "sensors": f"{base}/v1/sensors"},
    }
    return json_response(body, media)


@router.get("/sensors", summary="The zone's sensors: what they measure, where their data is published, which rules "
            "apply", response_model=SensorList, responses=NOT_ACCEPTABLE)
def sensors(request: Request,
            category: Annotated[Category | None, Query(description="only sensors of this category")] = None,
            ) -> Response:
    media = negotiate(request, [JSON])
    st = state(request)
    base = base_url(request)
    out = [describe_sensor(base, s, st.charter, st.registry) for s in st.registry.sensors.values()
           if s.category not in UNPUBLISHED and (category is None or s.category == category.value)]
    query = f"?category={category.value}" if category is not None else ""
    return json_response({"count": len(out), "sensors": out, "links": {"self": f"{base}/v1/sensors{query}"}}, media)


@router.get("/sensors/{id}", summary="One sensor: what it measures, where its data is published, which rules apply",
            response_model=SensorOut,
            responses={200: {"content": {JSON: {"example": _SENSOR_EXAMPLE}}},
                       404: {"description": "unknown sensor (`parameter`: id)", "content": {PROBLEM: {}}},
                       **NOT_ACCEPTABLE})
def sensor(request: Request, id: str) -> Response:
    st = state(request)
    s = st.registry.sensors.get(id)
    if s is None or s.category in UNPUBLISHED:
        raise Problem(404, "unknown-sensor", f"no sensor {id[:64]!r}; the list is at /v1/sensors", parameter="id")
    media = negotiate(request, [JSON])
    return json_response(describe_sensor(base_url(request), s, st.charter, st.registry), media)


# -- building the answers -------------------------------------------------------------------------------------
def nearest(places: list[Place], kind: str, lat: float, lon: float) -> str | None:
    best = min((p for p in places if p.kind == kind), default=None,
               key=lambda p: distance_m(lat, lon, p.position.lat, p.position.lon))
    return best.name if best is not None else None


def measures(s: Sensor) -> list[dict[str, str]]:
    keys = [q.key for q in QUANTITIES.values() if q.category == s.category]
    keys += [k for k in s.fields.values() if k not in keys]
    return [{"quantity": k, "unit": QUANTITIES[k].unit, "description": QUANTITIES[k].description} for k in keys]


def feeds(s: Sensor, charter: Charter) -> list[tuple[str, Dataset]]:
    """The datasets the sensor's data may go into: those reading its category, or fields it measures, from
    sensors of its kind (fixed or mobile); sightings for the probe sniffers of the kinds a dataset counts."""
    mapped = [QUANTITIES[k] for k in s.fields.values()]
    out = []
    for name, ds in charter.datasets.items():
        if s.mobile != (ds.source.sensors == "mobile"):
            continue
        if ds.source.database == "pseudonymous":
            hit = any(kind in _SIGHTINGS and s.category == _SIGHTINGS[kind][0]
                      and _SIGHTINGS[kind][1] in (None, s.technology) for kind in ds.source.kinds)
        else:
            m = ds.source.measurement
            hit = m == s.category or any(q.category == m and q.field in ds.fields for q in mapped)
        if hit:
            out.append((name, ds))
    return out


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
    rules = []
    for name, ds in feeds(s, charter):
        noise = None
        if ds.noise:
            noise = {"epsilon_per_day": ds.noise.epsilon_per_day,
                     "max_bins_per_subject_per_day": ds.noise.max_bins_per_subject_per_day,
                     "threshold": ds.noise_threshold}
        rules.append({
            "id": name, "title": ds.title, "method": ds.method, "subject": ds.subject, "k": ds.k,
            "cell": _cell_at(s, ds.space.resolution, zone_res),
            "h3_resolutions": [ds.space.resolution, *ds.space.roll_up],
            "bins": [iso_duration(b) for b in ds.time.chain], "noise": noise, "late_data": ds.late_data,
            "explanation": explain_dataset(name, ds, charter),
            "links": {"self": f"{base}/v1/datasets/{name}", "observations": f"{base}/v1/datasets/{name}/observations"},
        })
    if s.mobile:
        ways = sorted({(ds.space.resolution, ds.time.bin) for _, ds in feeds(s, charter)},
                      key=lambda rb: (-rb[0], parse_duration(rb[1])))
        how = " or ".join(f"per {edge_text(r)} cell and {_period(b)}" for r, b in ways)
        location = {"mobile": True, "cell": None, "h3_resolution": None,
                    "published_as": f"mobile: published {how}" if how else "mobile: not published"}
    else:
        res = min(max((ds.space.resolution for _, ds in feeds(s, charter)), default=zone_res), zone_res)
        location = {"mobile": False, "cell": _cell_at(s, res, zone_res), "h3_resolution": res,
                    "published_as": f"H3 cell of about {edge_text(res)} (resolution {res}); its exact position "
                                    "is not published"}
    return {"id": s.id, "category": s.category, "technology": s.technology, "model": s.model,
            "description": s.description, "measures": measures(s), "location": location, "datasets": rules,
            "links": {"self": f"{base}/v1/sensors/{s.id}"}}
