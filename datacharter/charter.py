"""The charter document: schema, loading with errors that name the line, and the rules it implies.

A charter is YAML (``datacharter/charter.yaml``). It is validated against the pydantic models below
at load; any problem stops the caller with a ``CharterError`` naming the file, the line and the field.
Deny by default: only the datasets, fields and aggregates named in the file are ever published.

Methods (what a dataset's job does with its raw data):

- ``summary``: levels (air quality, weather, noise) per cell and time bin across fixed sensors;
- ``count``: counts per cell and bin (traffic, people counters), with small counts rolled up;
- ``occupancy``: parking occupancy of areas with at least k spaces;
- ``distinct_count``: distinct pseudonymised devices per cell and bin, with noise;
- ``trajectory``: mobile measurements placed on their vehicle's positions, trips trimmed;
- ``daily_total``: daily kWh per building, merged into a coarser cell below k connections;
- ``profiles``: typical hourly load profiles by MDAV micro-aggregation of k meters.
"""

from __future__ import annotations

import itertools
import re
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from smartzone.errors import ConfigurationError
from smartzone.names import parse_duration
from smartzone.quantities import CATEGORIES, QUANTITIES

if TYPE_CHECKING:
    from smartzone.registry import Sensor

DEFAULT_PATH = Path(__file__).resolve().parent / "charter.yaml"

Method = Literal["summary", "count", "occupancy", "distinct_count", "trajectory", "daily_total", "profiles"]
Aggregate = Literal["mean", "min", "max", "sum", "count", "energy_mean", "p10", "p50", "p90"]
Subject = Literal["sensor", "vehicle", "road_user", "space", "device", "person", "connection"]
Placement = Literal["public_space", "private_premises", "indoor"]
# subjects that are people, their vehicles, homes or businesses: a minimum or maximum of such a dataset is one
# contributor's value (what it did, where it drove), so the charter refuses them there
PERSONAL_SUBJECTS = {"vehicle", "road_user", "space", "device", "person", "connection"}
# outputs that come from the registry, not from contributors' values (a zone's spaces): extremes allowed
REGISTRY_OUTPUTS = {"spaces"}

# Aggregates each method can compute, and for methods whose outputs are not vocabulary fields, the
# outputs it can produce.
METHOD_AGGREGATES: dict[str, set[str]] = {
    "summary": {"mean", "min", "max", "energy_mean", "p10", "p50", "p90"},
    "count": {"sum", "mean"},
    "occupancy": {"mean", "max"},
    "distinct_count": {"count"},
    "trajectory": {"mean", "min", "max", "p10", "p50", "p90"},
    "daily_total": {"sum"},
    "profiles": {"p50"},
}
METHOD_OUTPUTS: dict[str, set[str]] = {
    "occupancy": {"occupancy", "occupied_spaces", "spaces"},
    "distinct_count": {"devices", "randomised_devices"},
    "daily_total": {"energy_kwh"},
    "profiles": {"relative_load"},
}
# Tags and fields every open point carries besides the allow-listed aggregates.
POINT_TAGS = ("cell", "resolution", "bin", "charter_version")
POINT_FIELDS = ("n_contributors",)
# a field every point of a window carries where its coverage is measured (datacharter.coverage): the share of the
# readings the dataset's sensors should have sent that day that arrived
COVERAGE = "coverage"
_ID = re.compile(r"[a-z][a-z0-9_]{0,62}")
_FIELD_ERROR = re.compile(r"(?:Value error, )?field (\w+):")


class CharterError(ConfigurationError):
    """The charter is invalid: the job must not run."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _duration(v: str) -> str:
    seconds = parse_duration(v)
    if seconds == float("inf") or seconds <= 0:
        raise ValueError(f"{v!r}: give a finite duration such as 15m, 1h, 1d")
    return v


class Pseudonymisation(_Strict):
    method: str
    pepper_rotation: str = "24h"
    identifiers: tuple[Literal["mac", "vehicle"], ...] = ("mac", "vehicle")

    _rotation = field_validator("pepper_rotation")(classmethod(lambda cls, v: _duration(v)))


class Retention(_Strict):
    raw: str
    pseudonymous: str

    _d = field_validator("raw", "pseudonymous")(classmethod(lambda cls, v: _duration(v)))


class Source(_Strict):
    database: Literal["raw", "pseudonymous"]
    measurement: str
    sensors: Literal["fixed", "mobile"] = "fixed"
    # which registered sensors the dataset takes, by the registry's sensor category and placement; deny by
    # default: a sensor of another category (a BME280 in an energy meter's box) or off the public space is
    # never read, and rows of sensors the registry does not know are dropped
    categories: tuple[str, ...] = Field(min_length=1)
    placement: tuple[Placement, ...] = ("public_space",)
    positions: str | None = None  # trajectory: the measurement holding the vehicles' positions
    kinds: tuple[str, ...] = ()  # distinct_count: which sighting kinds count (wifi, ble, vehicle)
    meter_field: str | None = None  # daily_total: the cumulative meter reading (kWh)
    power_field: str | None = None  # profiles: the active power field (W)

    @field_validator("measurement", "positions")
    @classmethod
    def _ident(cls, v: str | None) -> str | None:
        if v is not None and not _ID.fullmatch(v):
            raise ValueError(f"{v!r} is not a measurement name (lower-case letters, digits, _)")
        return v


class Space(_Strict):
    resolution: int = Field(ge=0, le=15)  # the finest H3 resolution published
    roll_up: tuple[int, ...] = ()  # coarser resolutions a too-small group moves to, in order

    @model_validator(mode="after")
    def _coarser(self) -> Space:
        chain = (self.resolution, *self.roll_up)
        if any(b >= a for a, b in itertools.pairwise(chain)) or min(chain) < 0:
            raise ValueError(f"roll_up resolutions must be coarser (smaller) than {self.resolution}, in order")
        return self


class Time(_Strict):
    bin: str  # the shortest time bin published
    roll_up: tuple[str, ...] = ()  # longer bins a too-small group moves to, in order

    @field_validator("bin")
    @classmethod
    def _bin(cls, v: str) -> str:
        return _check_bin(v)

    @field_validator("roll_up")
    @classmethod
    def _bins(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_bin(b) for b in v)

    @model_validator(mode="after")
    def _longer(self) -> Time:
        chain = [parse_duration(b) for b in (self.bin, *self.roll_up)]
        if any(b <= a or b % a for a, b in itertools.pairwise(chain)):
            raise ValueError("time roll_up bins must be longer than the bin and multiples of it, in order")
        return self

    @property
    def chain(self) -> tuple[str, ...]:
        return (self.bin, *self.roll_up)


def _check_bin(v: str) -> str:
    s = _duration(v)
    seconds = parse_duration(s)
    if 86_400 % seconds and seconds % 86_400:
        raise ValueError(f"time bin {v!r} must divide a day (15m, 1h, ...) or be whole days")
    return s


class Noise(_Strict):
    epsilon_per_day: float = Field(gt=0, le=10)  # privacy budget per subject per day
    max_bins_per_subject_per_day: int = Field(ge=1, le=1000)  # contribution bound: later bins are dropped
    delta: float = Field(1e-4, gt=0, lt=0.01)  # chance that a group below k clears the noised threshold

    @property
    def epsilon_per_bin(self) -> float:
        return self.epsilon_per_day / self.max_bins_per_subject_per_day


class SmallCounts(_Strict):
    fields: tuple[str, ...]
    below: int = Field(ge=1)
    # means over counted road users (speed_mean over cars and heavy vehicles): weighted by those counts and
    # published only where their sum reaches ``below`` (rolled up with them otherwise)
    means: dict[str, tuple[str, ...]] = Field(default_factory=dict)


class Dominance(_Strict):
    """The (n, k) dominance rule: the n largest contributors hold at most k percent of a published total."""

    n: int = Field(ge=1, le=10)
    k: float = Field(gt=0, lt=100)


class Magnitude(_Strict):
    """Rules for magnitude tables (sums such as kWh), per data owner (the registry's ``owner`` of each
    sensor), as statistical offices apply them (ESSnet handbook on SDC, tau-ARGUS): a group is published only
    when every rule holds; otherwise its rows roll up or are suppressed."""

    dominance: Dominance | None = None
    # the p% rule: the second largest owner, subtracting its own value from the total, must not estimate the
    # largest within p percent (total - x1 - x2 >= p/100 * x1); with fewer than 3 owners it never holds
    p_percent: float | None = Field(None, gt=0, le=100)
    min_owners: int = Field(3, ge=2)  # distinct owners a published total needs (2 could subtract each other)


class Trim(_Strict):
    seconds: float = Field(0, ge=0)
    metres: float = Field(0, ge=0)


class Dataset(_Strict):
    title: str = Field(min_length=1)
    purpose: str = Field(min_length=10)
    method: Method
    source: Source
    subject: Subject
    space: Space
    time: Time
    k: int = Field(ge=1)
    fields: dict[str, tuple[Aggregate, ...]] = Field(min_length=1)
    noise: Noise | None = None
    small_counts: SmallCounts | None = None
    magnitude: Magnitude | None = None
    # datasets built from the same subjects (kWh totals and load profiles of the same meters) form one
    # release: each of them publishes only the subjects every one of them publishes, so that none can be
    # combined with another to give back what one suppressed
    release: str | None = Field(None, pattern=r"^[a-z][a-z0-9_]{0,62}$")
    # count: fields that count crossings of one line both ways (people in, people out). Who walks in may walk
    # out again, so each crossing is half a person in k: the (in + out) / 2 of a group is at most max(in, out),
    # the fewest people who could have made its crossings. Other counts are different road users, one each.
    crossings: tuple[str, ...] = ()
    # state sensors (parking bays): a sensor's last state holds until it changes, for at most this long
    # (a heartbeat's period and a margin); older, the sensor counts as offline
    state_ttl: str | None = None
    trim: Trim | None = None
    trip_gap: str | None = None
    # what late raw data does to a published day: "reprocess" replaces its points; "freeze" publishes each
    # day once, when it has closed, and never changes it (late rows are counted in the audit). A re-release
    # of a group about people shows, by difference, what the late subjects contributed, so datasets with
    # k > 1, noise or small-count rules must freeze.
    late_data: Literal["reprocess", "freeze"] = "freeze"

    @field_validator("trip_gap", "state_ttl")
    @classmethod
    def _durations(cls, v: str | None) -> str | None:
        return None if v is None else _duration(v)

    def admits(self, sensor: Sensor) -> bool:
        """Whether the dataset may read a registered sensor (``smartzone.registry.Sensor``): its category and
        placement are among the dataset's, and it is fixed or mobile as the dataset's source."""
        return (
            sensor.category in self.source.categories
            and sensor.placement in self.source.placement
            and sensor.mobile == (self.source.sensors == "mobile")
        )

    @property
    def coverage_measured(self) -> bool:
        """Whether the job measures the dataset's coverage (``datacharter.coverage``): not for events (sightings:
        a quiet street sends none, so no reading is ever due)."""
        return self.method != "distinct_count"

    @property
    def coverage_step(self) -> float:
        """The rounding of the dataset's published coverage: 0.1 for datasets about people, 0.01 otherwise."""
        return 0.1 if self.about_people else 0.01

    @property
    def about_people(self) -> bool:
        """Whether the dataset's subjects are people, their vehicles, homes or businesses."""
        return self.subject in PERSONAL_SUBJECTS

    @model_validator(mode="after")
    def _consistent(self) -> Dataset:
        allowed = METHOD_AGGREGATES[self.method]
        for name, aggs in self.fields.items():
            if not aggs:
                raise ValueError(f"field {name}: name at least one aggregate")
            bad = sorted(set(aggs) - allowed)
            if bad:
                raise ValueError(f"field {name}: method {self.method} cannot publish {bad}; it can: {sorted(allowed)}")
            if self.method in METHOD_OUTPUTS:
                if name not in METHOD_OUTPUTS[self.method]:
                    raise ValueError(
                        f"field {name}: method {self.method} publishes only {sorted(METHOD_OUTPUTS[self.method])}"
                    )
            elif f"{self.source.measurement}.{name}" not in QUANTITIES:
                raise ValueError(f"field {name}: {self.source.measurement}.{name} is not a quantity of the vocabulary")
            extremes = sorted({"min", "max"} & set(aggs))
            if extremes and self.about_people and name not in REGISTRY_OUTPUTS:
                raise ValueError(
                    f"field {name}: a {extremes[0]} of a dataset about {self.subject}s is one "
                    "contributor's value; publish percentiles (p10, p50, p90) instead"
                )
        bad_cats = sorted(set(self.source.categories) - set(CATEGORIES))
        if bad_cats:
            raise ValueError(f"source.categories: unknown sensor categories {bad_cats}; known: {', '.join(CATEGORIES)}")
        private = sorted(set(self.source.placement) - {"public_space"})
        if private and self.k < 2:
            raise ValueError(
                f"source.placement: sensors {' or '.join(private)} measure a household or a business: "
                "they never feed a dataset with k = 1"
            )
        if self.crossings and (self.method != "count" or set(self.crossings) - set(self.fields)):
            raise ValueError("crossings: fields of this count dataset that count crossings of a line both ways")
        if self.noise is not None and self.method not in ("distinct_count", "count"):
            raise ValueError("noise applies to counts of people only (methods distinct_count and count)")
        if self.small_counts is not None:
            missing = sorted(set(self.small_counts.fields) - set(self.fields))
            if missing:
                raise ValueError(f"small_counts names fields the dataset does not publish: {missing}")
            if not self.time.roll_up:
                raise ValueError("small_counts needs a time roll_up to move small counts to")
            for mean, over in self.small_counts.means.items():
                if self.fields.get(mean) != ("mean",):
                    raise ValueError(f"small_counts.means: {mean} must be a field published as [mean]")
                if not over or set(over) - set(self.small_counts.fields):
                    raise ValueError(f"small_counts.means: {mean} is weighted by small-count fields only")
        needs = {
            "trajectory": ("positions", "trim", "trip_gap"),
            "daily_total": ("meter_field",),
            "profiles": ("power_field",),
            "distinct_count": ("kinds",),
        }.get(self.method, ())
        for name in needs:
            if not (getattr(self.source, name, None) or getattr(self, name, None)):
                raise ValueError(f"method {self.method} needs {name}")
        if (self.source.database == "pseudonymous") != (self.method == "distinct_count"):
            raise ValueError("pseudonymised sightings (database: pseudonymous) are read by distinct_count only")
        if self.late_data == "reprocess" and (self.k > 1 or self.noise or self.small_counts or self.magnitude):
            raise ValueError(
                "late_data: reprocess would re-release groups about people, and the difference between "
                "two releases reveals the late subjects: use freeze for datasets with k > 1, noise, "
                "small_counts or magnitude rules"
            )
        if (self.method == "occupancy") != (self.state_ttl is not None):
            raise ValueError("state_ttl: occupancy (state sensors), and only it, carries states through bins: give it")
        if self.magnitude is not None and self.method != "daily_total":
            raise ValueError("magnitude rules apply to totals (method daily_total)")
        if self.source.sensors == "mobile" and self.method != "trajectory":
            raise ValueError("mobile sensors have no fixed cell: only method trajectory places their readings")
        return self

    @property
    def levels(self) -> list[tuple[int, str]]:
        """(H3 resolution, bin) in the order a too-small group rolls up: space first, then time."""
        chain = [(r, self.time.bin) for r in (self.space.resolution, *self.space.roll_up)]
        return chain + [(chain[-1][0], b) for b in self.time.roll_up]

    @property
    def noise_scale(self) -> float:
        """The discrete Laplace scale of the dataset's counts (OpenDP-checked against the daily budget)."""
        from datacharter.noise import laplace_scale

        n = self.noise
        assert n is not None, "the dataset has no noise rule"
        return laplace_scale(n.epsilon_per_day, n.max_bins_per_subject_per_day, len(self.levels))

    @property
    def noise_threshold(self) -> float:
        """The noised total (devices + randomised devices: two draws) a group must reach to be published."""
        from datacharter.noise import threshold

        assert self.noise is not None, "the dataset has no noise rule"
        return threshold(self.k, self.noise_scale, self.noise.delta / len(self.levels), draws=2)

    @property
    def outputs(self) -> list[tuple[str, str]]:
        """(field, aggregate) pairs, in charter order."""
        return [(f, a) for f, aggs in self.fields.items() for a in aggs]

    @property
    def allowed_fields(self) -> set[str]:
        """Every field name a published point of this dataset may carry."""
        return {open_field(f, a) for f, a in self.outputs} | set(POINT_FIELDS) | {COVERAGE}

    @property
    def integer_fields(self) -> set[str]:
        """Open fields written as integers (InfluxDB refuses a field whose type changes): counts."""
        out = {"n_contributors", "devices", "randomised_devices"}
        for f, a in self.outputs:
            q = QUANTITIES.get(f"{self.source.measurement}.{f}")
            if a in ("sum", "count") and q is not None and q.kind == "int":
                out.add(open_field(f, a))
        return out


def open_field(field: str, aggregate: str) -> str:
    """The open database's field name of an aggregate: ``pm2_5_mean``; counts keep their name."""
    return field if aggregate in ("count", "sum") else f"{field}_{aggregate}"


class CharterDoc(_Strict):
    version: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
    title: str
    controller: str
    contact: str
    licence: str = "CC-BY-4.0"
    pseudonymisation: Pseudonymisation
    retention: Retention
    datasets: dict[str, Dataset] = Field(min_length=1)

    @field_validator("datasets")
    @classmethod
    def _ids(cls, v: dict[str, Dataset]) -> dict[str, Dataset]:
        bad = [k for k in v if not _ID.fullmatch(k) or k == "window_coverage"]
        if bad:
            raise ValueError(f"dataset ids must be lower-case identifiers (not window_coverage): {bad}")
        # datasets about people that read the same subjects (same source measurement, same kind of sensor,
        # overlapping categories) can be combined: they must be one release
        for (a, da), (b, db) in itertools.combinations(v.items(), 2):
            sa, sb = da.source, db.source
            same = (sa.database, sa.measurement, sa.sensors) == (sb.database, sb.measurement, sb.sensors) and set(
                sa.categories
            ) & set(sb.categories)
            if same and (da.k > 1 or db.k > 1) and (da.release is None or da.release != db.release):
                raise ValueError(
                    f"datasets {a} and {b} read the same subjects ({sa.database} {sa.measurement}): "
                    "name the same release for both, so that neither gives back what the other "
                    "suppresses"
                )
        return v


class Charter:
    """A loaded, valid charter."""

    def __init__(self, doc: CharterDoc, path: Path | None = None, text: str = "") -> None:
        self.doc = doc
        self.path = path
        self.text = text

    @property
    def version(self) -> str:
        return self.doc.version

    @property
    def datasets(self) -> dict[str, Dataset]:
        return self.doc.datasets

    @cached_property
    def retention_s(self) -> dict[str, float]:
        return {
            "raw": parse_duration(self.doc.retention.raw),
            "pseudonymous": parse_duration(self.doc.retention.pseudonymous),
        }

    @property
    def pepper_rotation_s(self) -> float:
        return parse_duration(self.doc.pseudonymisation.pepper_rotation)

    @property
    def pepper_grace_s(self) -> float:
        """How long a period's pepper outlives the period: until the pseudonymous retention ends for the
        period's first sightings; then it is destroyed (late sightings of that period become dead letters)."""
        return max(0.0, self.retention_s["pseudonymous"] - self.pepper_rotation_s)

    @classmethod
    def load(cls, path: Path = DEFAULT_PATH) -> Charter:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CharterError(f"cannot read the charter {path}: {exc}") from exc
        return cls.parse(text, path)

    @classmethod
    def parse(cls, text: str, path: Path | None = None) -> Charter:
        where = str(path or "<charter>")
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f":{mark.line + 1}" if mark is not None else ""
            raise CharterError(f"{where}{at}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
        if not isinstance(raw, dict):
            raise CharterError(f"{where}:1: the charter must be a mapping (version, title, datasets, ...)")
        try:
            doc = CharterDoc.model_validate(raw)
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
                named = _FIELD_ERROR.match(err["msg"])
                if named:  # a dataset rule about one of its fields: point at that field's line
                    loc += ["fields", named.group(1)]
                line = _line_of(node, loc)
                name = ".".join(str(p) for p in loc) or "(document)"
                problems.append(f"{where}:{line}: {name}: {err['msg']}")
            raise CharterError("invalid charter:\n  " + "\n  ".join(problems)) from exc
        return cls(doc, path, text)


def _line_of(node: yaml.Node | None, loc: list) -> int:
    """The 1-based line of the deepest YAML node on ``loc`` (pydantic's error location)."""
    line = 1
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        nxt = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    nxt = value
                    line = key.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            nxt = node.value[part]
        node = nxt
    if node is not None:
        line = node.start_mark.line + 1
    return line
