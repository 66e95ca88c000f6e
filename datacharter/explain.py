"""The charter in plain language, for citizens and city staff (``smartzone charter explain``).

The same text is served later by the public pages and the open-data catalogue, so it is built from
the charter itself: change a rule and the explanation changes with it.
"""

from __future__ import annotations

from datacharter.charter import Charter, Dataset
from datacharter.noise import accuracy
from smartzone.names import parse_duration
from smartzone.quantities import QUANTITIES

_SUBJECTS = {
    "sensor": ("sensor", "sensors"),
    "vehicle": ("vehicle", "vehicles"),
    "road_user": ("road user", "road users"),
    "space": ("parking space", "parking spaces"),
    "device": ("phone or other device", "phones or other devices"),
    "person": ("person", "people"),
    "connection": ("grid connection", "grid connections"),
}
_AGG = {"mean": "average", "min": "minimum", "max": "maximum", "sum": "total", "count": "number",
        "energy_mean": "energy-averaged level", "p10": "10th percentile", "p50": "median", "p90": "90th percentile"}
_OUTPUTS = {"energy_kwh": "energy used in the day (kWh)", "devices": "distinct devices seen",
            "randomised_devices": "distinct randomised device addresses seen", "occupancy": "share of spaces taken",
            "occupied_spaces": "occupied spaces", "spaces": "spaces watched"}
_EDGE = {7: "1.4 km", 8: "530 m", 9: "200 m", 10: "76 m", 11: "29 m", 12: "11 m"}


def _duration(text: str) -> str:
    s = parse_duration(text)
    for unit, n in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if s % n == 0:
            k = int(s // n)
            return f"{k} {unit}s" if k != 1 else f"1 {unit}"
    return f"{int(s)} seconds"


def _area(res: int) -> str:
    return f"hexagonal areas of about {_EDGE.get(res, f'resolution {res}')} across (H3 resolution {res})"


def _fields(ds: Dataset) -> str:
    parts = []
    for f, aggs in ds.fields.items():
        q = QUANTITIES.get(f"{ds.source.measurement}.{f}")
        what = q.description if q else _OUTPUTS.get(f, f.replace("_", " "))
        unit = f" ({q.unit})" if q and q.unit not in what else ""
        parts.append(f"{', '.join(_AGG[a] for a in aggs)} of {what}{unit}")
    return "; ".join(parts)


def explain_dataset(name: str, ds: Dataset, charter: Charter) -> str:
    one, many = _SUBJECTS[ds.subject]
    retention = charter.doc.retention.raw if ds.source.database == "raw" else charter.doc.retention.pseudonymous
    lines = [f"{ds.title} (dataset '{name}')", f"  Why: {ds.purpose}"]
    collected = {
        "distinct_count": "Sensors note the WiFi and Bluetooth signals that phones send. The device address is "
                          "replaced, as soon as it arrives and before anything is stored, by a code made with a "
                          "secret key that changes every day and is then destroyed, so a phone cannot be followed "
                          "from one day to the next. Addresses that phones randomise themselves are counted apart.",
        "trajectory": "Sensors on city vehicles measure the air along their route, with the vehicle's GPS position.",
        "daily_total": "Energy meters report the consumption of buildings.",
        "profiles": "Energy meters report the power that buildings draw through the day.",
        "occupancy": "Parking sensors report whether a bay is taken; zone counters report occupied spaces.",
    }.get(ds.method, "Fixed sensors report measurements every few minutes.")
    lines.append(f"  What is collected: {collected}")
    lines.append(f"  How long the raw data is kept: {_duration(retention)}, then it is deleted automatically.")
    published = f"  What is published: {_fields(ds)}, for {_area(ds.space.resolution)} and periods of " \
                f"{_duration(ds.time.bin)}."
    lines.append(published)
    if ds.method == "profiles":
        lines.append(f"  Typical daily profiles only: meters are grouped with similar ones in groups of at least "
                     f"{ds.k} (micro-aggregation), and only each group's average curve is published.")
    elif ds.k > 1:
        roll = []
        if ds.space.roll_up:
            roll.append("larger areas (" + ", ".join(_EDGE.get(r, str(r)) for r in ds.space.roll_up) + ")")
        if ds.time.roll_up:
            roll.append("longer periods (" + ", ".join(_duration(b) for b in ds.time.roll_up) + ")")
        tail = (" it is merged into " + " and then ".join(roll) + "; if it is still too small, it is not "
                "published at all.") if roll else " it is not published."
        lines.append(f"  Protection: every published number covers at least {ds.k} different {many}. When an area "
                     f"and period has fewer,{tail}")
    elif ds.subject == "sensor":
        lines.append(f"  These measurements are not about people: each {one} is published per area and period.")
    else:
        lines.append(f"  Only totals per area and period are published; single {many} are never recorded.")
    if ds.small_counts:
        lines.append(f"  Counts of {', '.join(ds.small_counts.fields)} below {ds.small_counts.below} are "
                     f"not shown per {_duration(ds.time.bin)}; they are added to the total of the day.")
    if ds.dominance:
        lines.append(f"  No single {one} may make up more than {ds.dominance:.0%} of a published total.")
    if ds.noise:
        scale = ds.noise_scale
        lines.append(f"  Added uncertainty: each count gets random noise (differential privacy, epsilon "
                     f"{ds.noise.epsilon_per_day:g} per {one} per day; a {one} counts in at most "
                     f"{ds.noise.max_bins_per_subject_per_day} periods a day). Counts are off by at most "
                     f"{accuracy(scale):.0f} in 95% of cases, and an area is shown only when its noisy count "
                     f"reaches {ds.noise_threshold:.0f}.")
    if ds.trim:
        lines.append(f"  The first and last {_duration(f'{int(ds.trim.seconds)}s')} and {ds.trim.metres:.0f} m "
                     f"of every trip are left out, so that nobody can see where a vehicle starts or stops.")
    if ds.late_data == "freeze":
        lines.append("  When: each day is published once, after it has ended, and never changed afterwards, so that "
                     "two versions of it cannot be compared to find out about the late arrivals.")
    else:
        lines.append("  When: within minutes; readings that arrive late update the figures of their day.")
    lines.append(f"  Never published: {_never(ds)}.")
    return "\n".join(lines)


def _never(ds: Dataset) -> str:
    base = ["sensor or device identifiers", "exact positions"]
    if ds.method == "distinct_count":
        base = ["device addresses or their codes", "which phone was where", "exact positions"]
    if ds.method == "trajectory":
        base = ["vehicle identities", "routes or GPS positions"]
    if ds.method in ("daily_total", "profiles"):
        base = ["meter identifiers", "the consumption of a single household"]
    return ", ".join(base)


def explain(charter: Charter, dataset: str | None = None) -> str:
    d = charter.doc
    if dataset is not None:
        if dataset not in d.datasets:
            raise KeyError(dataset)
        return explain_dataset(dataset, d.datasets[dataset], charter)
    head = [
        f"{d.title}, version {d.version}",
        f"Responsible: {d.controller} ({d.contact}). Open data licence: {d.licence}.",
        "",
        "What this means: the smart zone's sensors measure the street, and the city publishes what they measure "
        "as open data. Before anything is published, the data is grouped so that it describes groups of people, "
        "never one person. Data that is not listed below is never published.",
        f"Identifiers of passers-by ({', '.join(d.pseudonymisation.identifiers)}) are never stored: they are "
        f"replaced on arrival by codes made with a secret key that is replaced every "
        f"{_duration(d.pseudonymisation.pepper_rotation).removeprefix('1 ')} and then destroyed.",
        "",
    ]
    body = [explain_dataset(name, ds, charter) for name, ds in d.datasets.items()]
    tail = ["", "Not published: gateway and sensor health, radio measurements and dead letters are kept for "
                "operating the network only."]
    return "\n".join(head) + "\n" + "\n\n".join(body) + "\n" + "\n".join(tail)
