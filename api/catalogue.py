"""The catalogue: the charter's datasets, described as DCAT-AP (plain JSON or JSON-LD).

``GET /v1/datasets`` lists the published datasets (one per dataset of the charter); ``GET /v1/datasets/{id}``
describes one: licence, publisher, spatial and temporal coverage and resolution, update frequency, the
charter version and its rules in plain language, the published fields with their units, and the
distributions (the observations endpoint, one per format). ``Accept: application/ld+json`` (or
``?format=jsonld``) gives the same as DCAT-AP JSON-LD (``dcat:Catalog`` / ``dcat:Dataset``).

Everything here is built from the charter, the registry and the open database's coverage: change a rule
and the catalogue changes with it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import h3
import orjson
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from api.deps import state
from api.geometry import edge_m, hull_polygon
from api.negotiation import GEOJSON, JSON, JSONLD, NOT_ACCEPTABLE, json_response, negotiate
from api.problems import PROBLEM, Problem
from api.rules import protection
from api.store import open_db, temporal_coverage
from api.timefmt import iso_duration, iso_time
from api.urls import base_url
from api.windows import windows
from datacharter.charter import COVERAGE, POINT_FIELDS, Charter, Dataset, open_field
from datacharter.explain import AGGREGATE_WORDS, counted, explain_dataset
from smartzone.quantities import QUANTITIES
from smartzone.registry import Registry

router = APIRouter(prefix="/v1", tags=["catalogue"])

FREQUENCY = "http://publications.europa.eu/resource/authority/frequency/"
FILE_TYPE = "http://publications.europa.eu/resource/authority/file-type/"
THEME = "http://publications.europa.eu/resource/authority/data-theme/"
IANA = "https://www.iana.org/assignments/media-types/"
GEOJSON_LITERAL = "http://www.opengis.net/ont/geosparql#geoJSONLiteral"
VOCAB = "https://smartzone.example/ns#"  # our terms for the charter's rules (k, epsilon, ...)

LICENCES = {
    "CC-BY-4.0": "https://creativecommons.org/licenses/by/4.0/",
    "CC-BY-SA-4.0": "https://creativecommons.org/licenses/by-sa/4.0/",
    "CC0-1.0": "https://creativecommons.org/publicdomain/zero/1.0/",
    "ODbL-1.0": "https://opendatacommons.org/licenses/odbl/1-0/",
    "ODC-By-1.0": "https://opendatacommons.org/licenses/by/1-0/",
}
# the observations endpoint's formats: (media type, EU file type)
FORMATS = {
    "json": (JSON, "JSON"),
    "csv": ("text/csv", "CSV"),
    "parquet": ("application/vnd.apache.parquet", "PARQUET"),
    "geojson": (GEOJSON, "GEOJSON"),
}
# keywords and EU data themes by source measurement
_WORDS = {
    "air_quality": (["air quality", "air pollution", "particulate matter", "environment"], ["ENVI", "HEAL"]),
    "weather": (["weather", "temperature", "climate", "environment"], ["ENVI"]),
    "noise": (["noise", "sound level", "environment"], ["ENVI", "HEAL"]),
    "traffic": (["traffic", "mobility", "cyclists", "pedestrians"], ["TRAN"]),
    "parking": (["parking", "occupancy", "mobility"], ["TRAN"]),
    "sighting": (["pedestrians", "footfall", "crowd"], ["SOCI", "TRAN"]),
    "pedestrian_flow": (["pedestrians", "footfall", "people counting"], ["SOCI", "TRAN"]),
    "energy": (["energy", "electricity", "energy transition"], ["ENER"]),
}
# method outputs that are not `<source measurement>.<field>` quantities: the vocabulary quantity they count,
# or (unit, description)
_OUTPUT_QUANTITY = {
    "devices": "pedestrian_flow.devices",
    "randomised_devices": "pedestrian_flow.randomised_devices",
    "occupied_spaces": "parking.occupied_spaces",
}
_OUTPUT_UNITS = {
    "occupancy": ("/", "share of the watched spaces that are taken (0 to 1)"),
    "spaces": ("count", "parking spaces watched"),
    "energy_kwh": ("kWh", "energy used in the day"),
    "relative_load": ("/", "hourly power relative to the meter's own mean of the day (1 = its average hour; no kW)"),
}
CONTEXT = {
    "dcat": "http://www.w3.org/ns/dcat#",
    "dct": "http://purl.org/dc/terms/",
    "foaf": "http://xmlns.com/foaf/0.1/",
    "vcard": "http://www.w3.org/2006/vcard/ns#",
    "adms": "http://www.w3.org/ns/adms#",
    "locn": "http://www.w3.org/ns/locn#",
    "owl": "http://www.w3.org/2002/07/owl#",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
    "sz": VOCAB,
    "dqv": "http://www.w3.org/ns/dqv#",
}


# -- response models (the plain JSON; documentation of the OpenAPI schema) -----------------------------------
class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class Links(_Model):
    self: str
    observations: str | None = None
    dcat: str | None = None


class DatasetSummary(_Model):
    id: str = Field(examples=["air_quality"])
    title: str
    description: str = Field(description="the dataset's purpose")
    keywords: list[str]
    licence: str = Field(examples=["https://creativecommons.org/licenses/by/4.0/"])
    links: Links


class CatalogueOut(_Model):
    title: str
    description: str
    publisher: dict[str, Any]
    licence: str
    charter_version: str
    datasets: list[DatasetSummary]
    links: dict[str, str]


class Period(_Model):
    start: str = Field(examples=["2026-11-24T00:00:00Z"])
    end: str = Field(examples=["2026-11-25T00:00:00Z"])


class SpatialResolution(_Model):
    h3_resolution: int = Field(examples=[10])
    edge_length_m: float = Field(examples=[75.9], description="mean edge of an H3 cell at that resolution, metres")
    roll_up: list[int] = Field(description="coarser resolutions a too-small group moves to")


class FieldOut(_Model):
    name: str = Field(examples=["pm2_5_mean"], description="the column of the observations")
    field: str
    aggregate: str
    quantity: str | None = Field(examples=["air_quality.pm2_5"], description="the vocabulary quantity, if any")
    unit: str = Field(examples=["ug/m3"], description="SenML / UCUM symbol")
    description: str


class Distribution(_Model):
    format: str = Field(examples=["csv"])
    media_type: str = Field(examples=["text/csv"])
    access_url: str


class DatasetOut(_Model):
    id: str
    title: str
    description: str
    purpose: str
    keywords: list[str]
    themes: list[str]
    publisher: dict[str, str]
    contact_point: dict[str, str]
    licence: dict[str, str]
    spatial: dict[str, Any] | None = Field(
        description="GeoJSON Polygon: the convex hull of the zone's and the dataset's cells"
    )
    spatial_resolution: SpatialResolution
    temporal_coverage: Period | None = Field(description="null until the dataset has published points")
    temporal_resolution: str = Field(examples=["PT15M"], description="ISO 8601 duration of the finest time bin")
    temporal_roll_up: list[str]
    update_frequency: dict[str, str]
    coverage: dict[str, Any] = Field(
        description="per published UTC day, the share of the readings the sensors should have sent that arrived"
    )
    charter: dict[str, Any]
    fields: list[FieldOut]
    distributions: list[Distribution]
    links: Links


_LIST_EXAMPLE = {
    "title": "Smart Zone open data: Antwerp smart zone (Zuid - Sint-Andries)",
    "charter_version": "2026.12.0",
    "datasets": [
        {
            "id": "air_quality",
            "title": "Air quality at fixed stations",
            "description": "Show where and when the air in the zone is unhealthy, ...",
            "keywords": ["air quality", "smart city", "Antwerp"],
            "licence": "https://creativecommons.org/licenses/by/4.0/",
            "links": {
                "self": "https://data.example.org/v1/datasets/air_quality",
                "observations": "https://data.example.org/v1/datasets/air_quality/observations",
                "dcat": "https://data.example.org/v1/datasets/air_quality?format=jsonld",
            },
        }
    ],
}
_DATASET_EXAMPLE = {
    "id": "pedestrian_flow",
    "title": "Pedestrian flows (WiFi and Bluetooth presence)",
    "licence": {"id": "CC-BY-4.0", "url": "https://creativecommons.org/licenses/by/4.0/"},
    "spatial": {
        "type": "Polygon",
        "coordinates": [[[4.392, 51.208], [4.401, 51.208], [4.401, 51.219], [4.392, 51.208]]],
    },
    "spatial_resolution": {"h3_resolution": 10, "edge_length_m": 75.9, "roll_up": []},
    "temporal_coverage": {"start": "2026-11-24T00:00:00Z", "end": "2026-11-25T00:00:00Z"},
    "temporal_resolution": "PT1H",
    "update_frequency": {"uri": FREQUENCY + "DAILY", "label": "daily, once the UTC day has ended"},
    "charter": {
        "version": "2026.12.0",
        "k": 10,
        "subject": "device",
        "noise": {
            "mechanism": "discrete Laplace",
            "epsilon_per_day": 1.0,
            "max_bins_per_subject_per_day": 4,
            "threshold": 52.0,
        },
    },
    "fields": [
        {
            "name": "devices",
            "field": "devices",
            "aggregate": "count",
            "quantity": "pedestrian_flow.devices",
            "unit": "count",
            "description": "distinct devices seen in the interval",
        }
    ],
    "distributions": [
        {
            "format": "csv",
            "media_type": "text/csv",
            "access_url": "https://data.example.org/v1/datasets/pedestrian_flow/observations?format=csv",
        }
    ],
}
_ERRORS = {404: {"description": "unknown dataset (`parameter`: id)", "content": {PROBLEM: {}}}, **NOT_ACCEPTABLE}
FormatParam = Annotated[
    Literal["json", "jsonld"] | None,
    Query(description="`jsonld` for DCAT-AP JSON-LD, `json` for plain JSON; overrides Accept"),
]


# -- endpoints ----------------------------------------------------------------------------------------------
@router.get(
    "/datasets",
    summary="The published datasets (a DCAT catalogue)",
    response_model=CatalogueOut,
    responses={
        200: {"content": {JSON: {"example": _LIST_EXAMPLE}, JSONLD: {"schema": {"type": "object"}}}},
        **NOT_ACCEPTABLE,
    },
)
def list_datasets(request: Request, format: FormatParam = None) -> Response:
    media = negotiate(request, [JSON, JSONLD], format)
    st = state(request)
    base = base_url(request)
    charter, registry = st.charter, st.registry
    licence = licence_url(charter.doc.licence)
    entries = [_summary(base, name, ds, registry, licence) for name, ds in charter.datasets.items()]
    publisher = {"name": charter.doc.controller, "url": st.settings.api.publisher_url}
    title = f"Smart Zone open data: {registry.doc.zone.name}"
    description = (
        f"Open datasets of the {registry.doc.zone.name}, published under the data charter "
        f"'{charter.doc.title}' version {charter.version}: groups of at least k contributors per H3 cell "
        "and time bin, never an individual, a device or a raw position."
    )
    if media == JSONLD:
        hull = hull_polygon(set(registry.cells))
        body: dict[str, Any] = {
            "@context": CONTEXT,
            "@id": f"{base}/v1/datasets",
            "@type": "dcat:Catalog",
            "dct:title": title,
            "dct:description": description,
            "dct:publisher": _publisher_ld(publisher),
            "dct:license": {"@id": licence, "@type": "dct:LicenseDocument"},
            "foaf:homepage": {"@id": f"{base}/docs"},
            "owl:versionInfo": charter.version,
            "dcat:dataset": [
                {
                    "@id": e["links"]["self"],
                    "@type": "dcat:Dataset",
                    "dct:identifier": e["id"],
                    "dct:title": e["title"],
                    "dct:description": e["description"],
                    "dcat:keyword": e["keywords"],
                    "dct:license": {"@id": licence},
                }
                for e in entries
            ],
        }
        if hull is not None:
            body["dct:spatial"] = {"@type": "dct:Location", "locn:geometry": _geometry_ld(hull)}
    else:
        body = {
            "title": title,
            "description": description,
            "publisher": publisher,
            "licence": licence,
            "charter_version": charter.version,
            "datasets": entries,
            "links": {
                "self": f"{base}/v1/datasets",
                "dcat": f"{base}/v1/datasets?format=jsonld",
                "zone": f"{base}/v1/zone",
                "cells": f"{base}/v1/cells",
                "sensors": f"{base}/v1/sensors",
            },
        }
    return json_response(body, media)


@router.get(
    "/datasets/{id}",
    summary="One dataset: DCAT-AP metadata, the charter's rules, fields and units",
    response_model=DatasetOut,
    responses={
        200: {"content": {JSON: {"example": _DATASET_EXAMPLE}, JSONLD: {"schema": {"type": "object"}}}},
        **_ERRORS,
    },
)
def get_dataset(request: Request, id: str, format: FormatParam = None) -> Response:
    st = state(request)
    ds = st.charter.datasets.get(id)
    if ds is None:
        raise Problem(
            404, "unknown-dataset", f"no dataset {id!r}; the catalogue lists them: /v1/datasets", parameter="id"
        )
    media = negotiate(request, [JSON, JSONLD], format)
    base = base_url(request)
    out = describe(
        base,
        id,
        ds,
        st.charter,
        st.registry,
        st.settings.api.publisher_url,
        coverage=open_db(lambda: temporal_coverage(st.store, id, ds)),
        cells=open_db(lambda: st.store.cells(id)),
        days=None if not ds.coverage_measured else open_db(lambda: windows(st.store, st.settings, id, ds)),
        threshold=st.settings.charter.coverage_threshold,
    )
    return json_response(dataset_ld(out, st.charter) if media == JSONLD else out, media)


# -- building the descriptions --------------------------------------------------------------------------------
def _summary(base: str, name: str, ds: Dataset, registry: Registry, licence: str) -> dict[str, Any]:
    return {
        "id": name,
        "title": ds.title,
        "description": ds.purpose,
        "keywords": keywords(ds, registry),
        "method": ds.method,
        "k": ds.k,
        "spatial_resolution": ds.space.resolution,
        "temporal_resolution": iso_duration(ds.time.bin),
        "licence": licence,
        "links": _links(base, name),
    }


def _links(base: str, name: str) -> dict[str, str]:
    return {
        "self": f"{base}/v1/datasets/{name}",
        "observations": f"{base}/v1/datasets/{name}/observations",
        "dcat": f"{base}/v1/datasets/{name}?format=jsonld",
    }


def keywords(ds: Dataset, registry: Registry) -> list[str]:
    words, _ = _WORDS.get(ds.source.measurement, ([ds.source.measurement.replace("_", " ")], []))
    extra = ["mobile sensing"] if ds.method == "trajectory" else []
    if ds.noise:
        extra.append("differential privacy")
    zone = registry.doc.zone
    out: list[str] = []
    for w in [*words, *extra, "smart city", "IoT", "open data", zone.city, "H3"]:
        if w not in out:
            out.append(w)
    return out


def themes(ds: Dataset) -> list[str]:
    _, codes = _WORDS.get(ds.source.measurement, ([], []))
    return [THEME + c for c in (*codes, "REGI")]


def fields(ds: Dataset) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for f, agg in ds.outputs:
        own = f"{ds.source.measurement}.{f}"
        key = own if own in QUANTITIES else _OUTPUT_QUANTITY.get(f)
        if key is not None:
            q = QUANTITIES[key]
            unit, what = q.unit, q.description
        else:
            unit, what = _OUTPUT_UNITS.get(f, ("/", f.replace("_", " ")))
        out.append(
            {
                "name": open_field(f, agg),
                "field": f,
                "aggregate": agg,
                "quantity": key,
                "unit": unit,
                "description": f"{AGGREGATE_WORDS[agg]} of {what} per cell and time bin",
            }
        )
    for f in POINT_FIELDS:
        out.append(
            {
                "name": f,
                "field": f,
                "aggregate": "count",
                "quantity": None,
                "unit": "count",
                "description": f"{counted(ds)} behind the point (at least k = {ds.k})"
                + (", noised" if ds.noise else ""),
            }
        )
    if ds.coverage_measured:
        out.append(
            {
                "name": COVERAGE,
                "field": COVERAGE,
                "aggregate": "share",
                "quantity": None,
                "unit": "/",
                "description": "how complete the point's UTC day was: the share (0 to 1) of the readings the "
                "dataset's sensors should have sent that arrived",
            }
        )
    return out


def describe(
    base: str,
    name: str,
    ds: Dataset,
    charter: Charter,
    registry: Registry,
    publisher_url: str,
    *,
    coverage: tuple[int, int] | None,
    cells: set[str],
    days: list[dict[str, Any]] | None = None,
    threshold: float = 0.8,
) -> dict[str, Any]:
    """The dataset's plain-JSON DCAT-AP description; ``days``: the coverage of each published day
    (``api.windows``), None for datasets of events."""
    explained = explain_dataset(name, ds, charter)
    doc = charter.doc
    frozen = ds.late_data == "freeze"
    res = ds.space.resolution
    noise = None
    if ds.noise:
        noise = {
            "mechanism": "discrete Laplace (differential privacy)",
            "epsilon_per_day": ds.noise.epsilon_per_day,
            "max_bins_per_subject_per_day": ds.noise.max_bins_per_subject_per_day,
            "delta": ds.noise.delta,
            "scale": ds.noise_scale,
            "threshold": ds.noise_threshold,
        }
    return {
        "id": name,
        "title": ds.title,
        "description": f"{ds.purpose}\n\n{explained}",
        "purpose": ds.purpose,
        "keywords": keywords(ds, registry),
        "themes": themes(ds),
        "publisher": {"name": doc.controller, "url": publisher_url},
        "contact_point": {"name": doc.controller, "email": doc.contact},
        "licence": {"id": doc.licence, "url": licence_url(doc.licence)},
        "spatial": hull_polygon(set(registry.cells) | {c for c in cells if h3.is_valid_cell(c)}),
        "spatial_resolution": {"h3_resolution": res, "edge_length_m": edge_m(res), "roll_up": list(ds.space.roll_up)},
        "temporal_coverage": None
        if coverage is None
        else {"start": iso_time(coverage[0]), "end": iso_time(coverage[1])},
        "temporal_resolution": iso_duration(ds.time.bin),
        "temporal_roll_up": [iso_duration(b) for b in ds.time.roll_up],
        "update_frequency": {
            "uri": FREQUENCY + ("DAILY" if frozen else "CONT"),
            "late_data": ds.late_data,
            "label": "daily: each UTC day is published once, after it has ended, and never changed"
            if frozen
            else "continuous: each time bin is published once it has closed; late readings update their day",
        },
        "charter": {
            "version": charter.version,
            "title": doc.title,
            "method": ds.method,
            "explanation": explained,
            "subject": ds.subject,
            "k": ds.k,
            "levels": [{"h3_resolution": r, "bin": iso_duration(b)} for r, b in ds.levels],
            "noise": noise,
            **protection(name, ds, charter),
            "trim": ds.trim.model_dump() if ds.trim else None,
        },
        "coverage": completeness(ds, days, threshold),
        "fields": fields(ds),
        "distributions": [
            {"format": f, "media_type": mt, "access_url": f"{base}/v1/datasets/{name}/observations?format={f}"}
            for f, (mt, _) in FORMATS.items()
        ],
        "links": _links(base, name),
    }


def completeness(ds: Dataset, days: list[dict[str, Any]] | None, threshold: float) -> dict[str, Any]:
    """How complete each published day is, with what that means (the catalogue's ``coverage``)."""
    if days is None:
        return {
            "measured": False,
            "explanation": "This dataset counts events (devices seen), not readings sent on a schedule: a quiet "
            "street sends nothing, so the share of readings that arrived cannot be measured.",
        }
    step = ds.coverage_step
    return {
        "measured": True,
        "explanation": "Per UTC day, the share of the readings that the dataset's sensors should have sent (each "
        "sensor's reporting interval, while it was installed) that arrived, from 0 to 1, over all the dataset's "
        f"sensors together and rounded to {step:g}. A day below {threshold:g} is low; a low day that can no "
        "longer change (final) is flagged: it will not be completed. Every observation carries its day's "
        "coverage, and ?min_coverage= keeps only days at least that complete.",
        "threshold": threshold,
        "rounded_to": step,
        "days": days,
        "flagged_days": [d["day"] for d in days if d["flagged"]],
    }


def dataset_ld(d: dict[str, Any], charter: Charter) -> dict[str, Any]:
    """The plain description as DCAT-AP JSON-LD."""
    period = d["temporal_coverage"]
    charter_d = d["charter"]
    out: dict[str, Any] = {
        "@context": CONTEXT,
        "@id": d["links"]["self"],
        "@type": "dcat:Dataset",
        "dct:identifier": d["id"],
        "dct:title": d["title"],
        "dct:description": d["description"],
        "dcat:keyword": d["keywords"],
        "dcat:theme": [{"@id": t} for t in d["themes"]],
        "dct:publisher": _publisher_ld(d["publisher"]),
        "dcat:contactPoint": {
            "@type": "vcard:Organization",
            "vcard:fn": d["contact_point"]["name"],
            "vcard:hasEmail": {"@id": f"mailto:{d['contact_point']['email']}"},
        },
        "dct:license": {
            "@id": d["licence"]["url"],
            "@type": "dct:LicenseDocument",
            "dct:identifier": d["licence"]["id"],
        },
        "dct:spatial": {"@type": "dct:Location", "locn:geometry": _geometry_ld(d["spatial"])},
        "dcat:spatialResolutionInMeters": {"@value": d["spatial_resolution"]["edge_length_m"], "@type": "xsd:decimal"},
        "dcat:temporalResolution": {"@value": d["temporal_resolution"], "@type": "xsd:duration"},
        "dct:accrualPeriodicity": {"@id": d["update_frequency"]["uri"]},
        "dct:conformsTo": {
            "@type": "dct:Standard",
            "dct:title": charter.doc.title,
            "owl:versionInfo": charter_d["version"],
            "dct:description": charter_d["explanation"],
        },
        "sz:charterVersion": charter_d["version"],
        "sz:method": charter_d["method"],
        "sz:k": charter_d["k"],
        "sz:subject": charter_d["subject"],
        "sz:h3Resolution": d["spatial_resolution"]["h3_resolution"],
        "dcat:distribution": [
            {
                "@id": x["access_url"],
                "@type": "dcat:Distribution",
                "dct:title": f"{d['title']} ({x['format']})",
                "dcat:accessURL": {"@id": x["access_url"]},
                "dcat:mediaType": {"@id": IANA + x["media_type"]},
                "dct:format": {"@id": FILE_TYPE + FORMATS[x["format"]][1]},
                "dct:license": {"@id": d["licence"]["url"]},
            }
            for x in d["distributions"]
        ],
        "sz:field": [
            {
                "@type": "sz:Field",
                "dct:identifier": f["name"],
                "dct:description": f["description"],
                "sz:unit": f["unit"],
                "sz:aggregate": f["aggregate"],
                **({"sz:quantity": f["quantity"]} if f["quantity"] else {}),
            }
            for f in d["fields"]
        ],
    }
    if period is not None:
        out["dct:temporal"] = {
            "@type": "dct:PeriodOfTime",
            "dcat:startDate": {"@value": period["start"], "@type": "xsd:dateTime"},
            "dcat:endDate": {"@value": period["end"], "@type": "xsd:dateTime"},
        }
    cov = d.get("coverage") or {}
    if cov.get("measured"):  # W3C Data Quality Vocabulary: one completeness measurement per published day
        out["dqv:hasQualityMeasurement"] = [
            {
                "@type": "dqv:QualityMeasurement",
                "dqv:isMeasurementOf": {"@id": VOCAB + "readingCoverage"},
                "dqv:value": {"@value": day["coverage"], "@type": "xsd:decimal"},
                "dct:temporal": {"@value": day["day"], "@type": "xsd:date"},
                "sz:lowCoverage": day["low"],
                "sz:final": day["final"],
            }
            for day in cov["days"]
        ]
        out["sz:coverageExplanation"] = cov["explanation"]
    out["sz:placement"] = charter_d["sources"]["placement"]
    if charter_d["release"] is not None:
        out["sz:release"] = charter_d["release"]["id"]
    noise = charter_d["noise"]
    if noise is not None:
        out["sz:epsilonPerDay"] = noise["epsilon_per_day"]
        out["sz:maxBinsPerSubjectPerDay"] = noise["max_bins_per_subject_per_day"]
        out["sz:noiseThreshold"] = noise["threshold"]
    return out


def _publisher_ld(p: dict[str, str]) -> dict[str, Any]:
    return {"@type": "foaf:Organization", "foaf:name": p["name"], "foaf:homepage": {"@id": p["url"]}}


def _geometry_ld(geometry: dict[str, Any]) -> dict[str, str]:
    return {"@value": orjson.dumps(geometry).decode(), "@type": GEOJSON_LITERAL}


def licence_url(licence: str) -> str:
    """The licence's URL: given as one, a known SPDX id's, else SPDX's page of it."""
    if licence.startswith(("http://", "https://")):
        return licence
    return LICENCES.get(licence, f"https://spdx.org/licenses/{licence}.html")
