"""The charter's protecting rules of a dataset, as data: what the catalogue and the sensor pages show."""

from __future__ import annotations

from typing import Any

from api.timefmt import iso_duration
from datacharter.charter import REGISTRY_OUTPUTS, Charter, Dataset, open_field
from datacharter.explain import counted, partners, risks


def extremes(ds: Dataset) -> dict[str, Any]:
    """Which minima and maxima the dataset publishes, and the rule behind them."""
    published = [open_field(f, a) for f, a in ds.outputs if a in ("min", "max")]
    if ds.method == "trajectory":
        rule = (
            "statistics over contributors: each vehicle's mean in the group, top- and bottom-coded to the range "
            "of the other vehicles (second smallest to second largest), then the mean and percentiles of those; "
            "no minimum or maximum"
        )
    elif ds.about_people:
        rule = "no minimum or maximum of contributors' values: an extreme is one contributor's value"
        registry = [open_field(f, a) for f, a in ds.outputs if a in ("min", "max") and f in REGISTRY_OUTPUTS]
        if registry:
            rule += f" ({', '.join(registry)}: from the registry, not from contributors)"
    else:
        rule = "published: readings of sensors in the public space, not of a person"
    return {"published": published, "rule": rule}


def protection(name: str, ds: Dataset, charter: Charter) -> dict[str, Any]:
    """The charter's rules that protect the people behind a dataset, as data: which sensors it takes, what k
    counts, the magnitude rules, the release, the state carry, small counts, the extremes policy, and the
    residual risks in plain language (``datacharter.explain.risks``). Noise is described by the caller."""
    protects, residual = risks(name, ds, charter)
    m = ds.magnitude
    return {
        "k": ds.k,
        "counts": counted(ds),
        "sources": {
            "categories": list(ds.source.categories),
            "placement": list(ds.source.placement),
            "sensors": ds.source.sensors,
        },
        "magnitude": None
        if m is None
        else {
            "per": "data owner (the registry's owner of each sensor)",
            "min_owners": m.min_owners,
            "dominance": m.dominance.model_dump() if m.dominance else None,
            "p_percent": m.p_percent,
        },
        "release": None if ds.release is None else {"id": ds.release, "with": partners(name, ds, charter)},
        "state_ttl": iso_duration(ds.state_ttl) if ds.state_ttl else None,
        "small_counts": ds.small_counts.model_dump() if ds.small_counts else None,
        "extremes": extremes(ds),
        "protects_against": protects,
        "does_not_protect_against": residual,
    }
