"""The charter in plain language, for citizens and city staff (``smartzone charter explain``).

The same text is served later by the public pages and the open-data catalogue, so it is built from
the charter itself: change a rule and the explanation changes with it. Per dataset it says why the data
is collected, which sensors feed it (category, placement), what is published, what k counts and every
other rule that protects the people behind the numbers, and, in two closing lines, whom the dataset
protects against and what it does not protect against (the residual risks).
"""

from __future__ import annotations

from datacharter.charter import REGISTRY_OUTPUTS, Charter, Dataset, Magnitude
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
# an aggregate in words, as the charter text, the catalogue and the API documentation say it
AGGREGATE_WORDS = {
    "mean": "average",
    "min": "minimum",
    "max": "maximum",
    "sum": "total",
    "count": "number",
    "energy_mean": "energy-averaged level",
    "p10": "10th percentile",
    "p50": "median",
    "p90": "90th percentile",
}
_OUTPUTS = {
    "energy_kwh": "energy used in the day (kWh)",
    "devices": "distinct devices seen",
    "randomised_devices": "distinct randomised device addresses seen",
    "occupancy": "share of spaces taken",
    "occupied_spaces": "occupied spaces",
    "spaces": "spaces watched",
    "relative_load": "hourly power relative to the meter's own average of the day (1.0 = its average hour)",
}
_EDGE = {7: "1.4 km", 8: "530 m", 9: "200 m", 10: "76 m", 11: "29 m", 12: "11 m"}
# the registry's sensor categories and placements, as a citizen would name them
_CATEGORY = {
    "air_quality": "air quality sensors",
    "noise": "sound level meters",
    "traffic": "traffic counters",
    "parking": "parking sensors",
    "pedestrian_flow": "people counters and WiFi/Bluetooth sensors",
    "energy": "energy meters",
    "weather": "weather stations",
    "gateway_health": "gateways",
}
_PLACEMENT = {
    "public_space": "in the street (public space)",
    "private_premises": "on private premises (a shop front, a courtyard, a meter box)",
    "indoor": "indoors (a home, a classroom, a public building)",
}


def _duration(text: str) -> str:
    s = parse_duration(text)
    for unit, n in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if s % n == 0:
            k = int(s // n)
            return f"{k} {unit}s" if k != 1 else f"1 {unit}"
    return f"{int(s)} seconds"


def _period(text: str) -> str:
    """A roll-up period as the end of a sentence: "day", "hour", "period of 2 hours"."""
    d = _duration(text)
    return d.removeprefix("1 ") if d.startswith("1 ") else f"period of {d}"


def _area(res: int) -> str:
    return f"hexagonal areas of about {_EDGE.get(res, f'resolution {res}')} across (H3 resolution {res})"


def _join(items: list[str], word: str = "and") -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {word} {items[-1]}"


def _words(field: str) -> str:
    return field.replace("_", " ")


def _fields(ds: Dataset) -> str:
    parts = []
    for f, aggs in ds.fields.items():
        q = QUANTITIES.get(f"{ds.source.measurement}.{f}")
        what = q.description if q else _OUTPUTS.get(f, _words(f))
        unit = f" ({q.unit})" if q and q.unit not in what else ""
        parts.append(f"{', '.join(AGGREGATE_WORDS[a] for a in aggs)} of {what}{unit}")
    return "; ".join(parts)


def counted(ds: Dataset) -> str:
    """What the dataset's k counts, in words: "vehicles (trackers on the same vehicle count once)"."""
    many = _SUBJECTS[ds.subject][1]
    if ds.method == "profiles":
        return "meters"
    return {
        "vehicle": "vehicles (trackers on the same vehicle count once)",
        "space": "parking spaces registered in the area",
        "connection": "grid connections (a meter counts for the connections registered behind it)",
    }.get(ds.subject, many)


def partners(name: str, ds: Dataset, charter: Charter) -> list[str]:
    """The other datasets of the dataset's release (built from the same subjects)."""
    if ds.release is None:
        return []
    return [n for n, d in charter.datasets.items() if d.release == ds.release and n != name]


def _sources(ds: Dataset) -> str:
    cats = _join([_CATEGORY.get(c, _words(c)) for c in ds.source.categories], "or")
    where = _join([_PLACEMENT[p] for p in ds.source.placement], "or")
    moving = "on city vehicles" if ds.source.sensors == "mobile" else "at fixed places"
    text = f"only registered {cats} {moving}, placed {where}."
    off = [p for p in ("public_space", "private_premises", "indoor") if p not in ds.source.placement]
    if off:
        text += (
            f" Sensors {_join([_PLACEMENT[p].split(' (')[0] for p in off], 'or')} measure a household or a "
            "business: they are never read for this dataset."
        )
    else:
        text += (
            f" Sensors indoors or on private premises measure a household or a business: this dataset takes "
            f"them because it never publishes fewer than {ds.k} {counted(ds).split(' (')[0]} together."
        )
    return text + (
        " Sensors of other kinds (a weather sensor in an energy meter's box) and sensors the register "
        "does not know are never read."
    )


def _magnitude(m: Magnitude) -> str:
    rules = [f"it has at least {m.min_owners} different owners"]
    if m.dominance is not None:
        d = m.dominance
        who = "no single owner makes" if d.n == 1 else f"the {d.n} largest owners together make"
        rules.append(f"{who} up more than {d.k:g}% of it")
    if m.p_percent is not None:
        rules.append(
            f"no owner, subtracting their own consumption from the total, could estimate another "
            f"owner's to within {m.p_percent:g}%"
        )
    return (
        "  Owners: totals are also checked per data owner (whoever can read a meter's own values: a household, "
        "a business, a building's manager), who counts once however many meters and connections they have. "
        f"A total is published only when {_join(rules)}. Otherwise it is merged into a larger area, or not "
        "published."
    )


def _extremes(ds: Dataset) -> str | None:
    one, many = _SUBJECTS[ds.subject]
    if not ds.about_people:
        return None
    if ds.method == "trajectory":
        return (
            f"  Statistics over {many}, never one {one}'s value: each {one}'s average in the area and hour "
            f"counts once, limited to the range of the other {many} (from the second smallest to the second "
            f"largest), and the published average and percentiles are taken over these. No minimum or maximum "
            f"is published: the extreme of a group is one {one}'s, and would show where it drove."
        )
    registry = sorted({f for f, aggs in ds.fields.items() if {"min", "max"} & set(aggs)} & REGISTRY_OUTPUTS)
    tail = (
        f" (the {_join([_OUTPUTS.get(f, _words(f)) for f in registry])} come from the register, not from anyone's use)"
        if registry
        else ""
    )
    return f"  No minimum or maximum is published: the extreme of a group is one {one}'s own value{tail}."


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
    lines.append(f"  Which sensors: {_sources(ds)}")
    lines.append(f"  How long the raw data is kept: {_duration(retention)}, then it is deleted automatically.")
    published = (
        f"  What is published: {_fields(ds)}, for {_area(ds.space.resolution)} and periods of {_duration(ds.time.bin)}."
    )
    lines.append(published)
    if ds.method == "profiles":
        lines.append(
            f"  Shapes only: each meter's hourly power is divided by its own average of the day (1.0 = the "
            f"meter's average hour), so no kW or kWh is published and no profile adds up to a building's "
            f"consumption. Meters with similar shapes are grouped, at least {ds.k} meters to a group "
            f"(micro-aggregation, MDAV), and per group only the median of each hour over its meters is "
            f"published. A group that cannot be formed publishes no profile."
        )
    elif ds.k > 1:
        roll = []
        if ds.space.roll_up:
            roll.append("larger areas (" + ", ".join(_EDGE.get(r, str(r)) for r in ds.space.roll_up) + ")")
        if ds.time.roll_up:
            roll.append("longer periods (" + ", ".join(_duration(b) for b in ds.time.roll_up) + ")")
        tail = (
            (
                " it is merged into " + " and then ".join(roll) + "; if it is still too small, it is not "
                "published at all."
            )
            if roll
            else " it is not published."
        )
        lines.append(
            f"  Protection: every published number covers at least {ds.k} different {many}. When an area "
            f"and period has fewer,{tail}"
        )
        if ds.subject == "vehicle":
            lines.append(f"  Counting: k counts {counted(ds)}, not sensors.")
        elif ds.subject == "connection":
            lines.append(f"  Counting: k counts {counted(ds)}; the owner rules below count who can read a meter.")
    elif ds.subject == "sensor":
        lines.append(
            f"  These measurements are not about people: each {one} in the public space is published per "
            f"area and period."
        )
    else:
        lines.append(f"  Only totals per area and period are published; single {many} are never recorded.")
    if ds.state_ttl:
        lines.append(
            f"  States carried: parking sensors report when a bay changes (and now and then to say they are "
            f"alive), so a bay's last state holds until it changes, for at most {_duration(ds.state_ttl)}; "
            f"after that the sensor counts as offline. Whether an area is published is decided from the "
            f"{many} registered in it, not from the sensors that happened to report: an area with enough "
            f"registered {many} but too few known in a period is left out for that period, never merged "
            f"into a larger one, so that a larger area's figure never changes with who reported."
        )
    if ds.small_counts:
        sc = ds.small_counts
        classes = _join([_words(f) for f in sc.fields])
        later = [_period(b) for b in ds.time.roll_up]
        lines.append(
            f"  Small counts: counts of {classes} below {sc.below} in a period of "
            f"{_duration(ds.time.bin)} are not shown for that period: each of them is added to the "
            f"figure of the {_join(later, 'or')} (one car at night can be one person); if it is still "
            f"below {sc.below}, it is not shown."
        )
        for mean, over in sc.means.items():
            q = QUANTITIES.get(f"{ds.source.measurement}.{mean}")
            what = q.description if q else _words(mean)
            lines.append(
                f"  The {what} is weighted by the {_join([_words(f) for f in over])} it averages, and shown "
                f"only where they number at least {sc.below}; otherwise it moves with them to the "
                f"{_join(later, 'or')}, and is never an average over fewer than {sc.below} vehicles."
            )
    if ds.magnitude:
        lines.append(_magnitude(ds.magnitude))
    others = partners(name, ds, charter)
    if others:
        lines.append(
            f"  One release with {_join([repr(o) for o in others])} (the same meters): each publishes only "
            f"the meters that all of them publish, so that they cannot be combined (added or subtracted) "
            f"to give back a meter that one of them left out."
        )
    extremes = _extremes(ds)
    if extremes:
        lines.append(extremes)
    if ds.noise:
        scale = ds.noise_scale
        lines.append(
            f"  Added uncertainty: each count gets random noise (differential privacy, epsilon "
            f"{ds.noise.epsilon_per_day:g} per {one} per day; a {one} counts in at most "
            f"{ds.noise.max_bins_per_subject_per_day} periods a day). Counts are off by at most "
            f"{accuracy(scale):.0f} in 95% of cases, and an area is shown only when its noisy count "
            f"reaches {ds.noise_threshold:.0f}."
        )
    if ds.trim:
        lines.append(
            f"  The first and last {_duration(f'{int(ds.trim.seconds)}s')} and {ds.trim.metres:.0f} m "
            f"of every trip are left out, so that nobody can see where a vehicle starts or stops."
        )
    if ds.late_data == "freeze":
        lines.append(
            "  When: each day is published once, after it has ended, and never changed afterwards, so that "
            "two versions of it cannot be compared to find out about the late arrivals."
        )
    else:
        lines.append("  When: within minutes; readings that arrive late update the figures of their day.")
    lines.append(f"  Never published: {_never(ds)}.")
    protects, residual = risks(name, ds, charter)
    lines.append(f"  Protects against: {protects}")
    lines.append(f"  Does not protect against: {residual}")
    return "\n".join(lines)


def risks(name: str, ds: Dataset, charter: Charter) -> tuple[str, str]:
    """(whom the dataset protects against, what it does not protect against): the residual risks."""
    one, many = _SUBJECTS[ds.subject]
    k = ds.k
    if ds.method == "summary" and k == 1:
        return (
            "nothing personal is at stake: only sensors in the public space feed it, and each measures the "
            "street, not a person; sensors indoors or on private premises are never read.",
            "it publishes single public-space sensors (k = 1): anyone can read the level in one sensor's area "
            "and period, and a very local source next to a sensor (a barbecue, an idling van, a loud party) "
            "shows in it as it is.",
        )
    if ds.method == "trajectory":
        middle = "the middle vehicle's average" if k % 2 else "the average of the two middle vehicles"
        return (
            f"a reader following one vehicle: the ends of its trips are cut, every area and hour has at least "
            f"{k} vehicles (trackers on one vehicle count once), and no published figure is one vehicle's "
            f"extreme.",
            f"in a group of only {k} vehicles the median is {middle} (limited to the others' range); which "
            f"areas have data shows where city vehicles drove and when, and someone who knows a vehicle's "
            f"rounds knows it was among them.",
        )
    if ds.method == "count" and ds.small_counts:
        b = ds.small_counts.below
        return (
            f"singling out a lone road user from a count: every class below {b} in a period moves to a longer "
            f"one, and no average speed covers fewer than {b} vehicles.",
            f"a neighbour who sees the street knows who passed and is among the counted; a longer period's "
            f"count of {b} or more still includes the lone night-time passer-by.",
        )
    if ds.method == "count":
        halves = (
            (
                f" ({_join([_words(f) for f in ds.crossings])} count a crossing as half a {one}: who walks in "
                f"may walk out again)"
            )
            if ds.crossings
            else ""
        )
        return (
            f"singling out one {one} from a count: a count is shown only when it covers at least {k} {many}{halves}.",
            f"someone who watched the place knows who was among the counted; counts of {k} or more are exact; "
            f"a {one} who passes a one-way counter twice counts twice.",
        )
    if ds.method == "occupancy":
        return (
            f"telling when one bay's car arrived or left: an area has at least {k} registered spaces, and whether "
            f"it is published does not depend on which sensors reported.",
            "an area that is full (or empty) says that every one of its bays is taken (or free); a neighbour who "
            "watches a bay sees the area's figure move when that car leaves; a missing period says the area's "
            "sensors were offline.",
        )
    if ds.method == "distinct_count":
        n = ds.noise
        guard = (
            (
                f" (differential privacy: epsilon {n.epsilon_per_day:g} per {one} per day; an area is shown only "
                f"when its noisy count reaches {ds.noise_threshold:.0f})"
            )
            if n
            else ""
        )
        return (
            f"learning whether one {one} was in an area at a time{guard}, and following a phone from one day to "
            "the next (the daily keys are destroyed).",
            "the guarantee is per day: over many days the privacy losses add up (epsilon per day times the days); "
            "the size of a crowd, which is what is published, is exact to within the noise.",
        )
    if ds.method == "daily_total":
        m = ds.magnitude
        rules = []
        if m is not None:
            rules.append(f"at least {m.min_owners} owners")
            if m.dominance is not None:
                rules.append(f"none above {m.dominance.k:g}%")
            if m.p_percent is not None:
                rules.append(f"no estimate of another's within {m.p_percent:g}%")
        owners = f" ({', '.join(rules)})" if rules else ""
        release = (
            f"; combining the totals with {_join([repr(o) for o in partners(name, ds, charter)])}"
            if partners(name, ds, charter)
            else ""
        )
        alone = f"at least {k} {many}" + (f" of at least {m.min_owners} owners" if m is not None else "")
        margin = (
            f"another's to within a margin of at least {m.p_percent:g}%"
            if m is not None and m.p_percent is not None
            else "another's from a small total"
        )
        return (
            f"a data owner (a household, a business, a block manager reading his own meter) subtracting their "
            f"own consumption from a total to learn another's{owners}; a building published alone ({alone})"
            f"{release}.",
            f"an owner who knows their own value still learns the others' consumption together, and can estimate "
            f"{margin}; a total's change from one day to the next is the group's change.",
        )
    if ds.method == "profiles":
        release = (
            f"; combining the profiles with {_join([repr(o) for o in partners(name, ds, charter)])} (the same "
            "meters in both, or in neither)"
            if partners(name, ds, charter)
            else ""
        )
        return (
            f"learning a household's or a business's consumption (shapes only, no kW), or its own daily routine "
            f"(medians over at least {k} meters){release}.",
            "a member whose shape differs from its group moves the median at most to its neighbours' values; a "
            "group's median says what a typical member's day looks like (when its homes wake up, cook, sleep), "
            "which is true of every member close to it.",
        )
    return (
        f"singling out one {one}: every published number covers at least {k} {many}.",
        f"someone who knows all but one of a group's {many} learns the last one's value.",
    )


def _never(ds: Dataset) -> str:
    base = ["sensor or device identifiers", "exact positions"]
    if ds.method == "distinct_count":
        base = ["device addresses or their codes", "which phone was where", "exact positions"]
    if ds.method == "trajectory":
        base = ["vehicle identities", "routes or GPS positions"]
    if ds.method in ("daily_total", "profiles"):
        base = ["meter identifiers", "the consumption of a single household"]
    if ds.method == "profiles":
        base.append("power in kW or energy in kWh")
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
        "Each dataset reads only the sensors it names, by kind and by place: sensors indoors or on private "
        "premises (a classroom, a home, a meter box) measure a household or a business, and never feed a dataset "
        "that publishes single sensors. Who counts is who could recognise their own value: a vehicle, not the "
        "trackers on it; the owner of a meter, however many meters they have.",
        "",
    ]
    body = [explain_dataset(name, ds, charter) for name, ds in d.datasets.items()]
    tail = [
        "",
        "Not published: gateway and sensor health, radio measurements and dead letters are kept for "
        "operating the network only.",
    ]
    return "\n".join(head) + "\n" + "\n\n".join(body) + "\n" + "\n".join(tail)
