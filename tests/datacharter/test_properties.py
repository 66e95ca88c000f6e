"""Properties of the charter engine over arbitrary raw windows (hypothesis): whatever the input,

- every published point covers at least k subjects of its dataset;
- no published field is outside the charter's allow-list; no input column besides the values survives;
- no subject, sensor id or other input string appears in the output;
- each input row ends in at most one published group (a roll-up never republishes a finer group's rows);
- the output is a pure function of the input (same input, same points, noise included);
- magnitude tables: every published total meets the charter's owner rules (at least 3 owners, (n, k)
  dominance, p%), whatever the owners, meters and values;
- traffic: no class is ever shown below the small-count threshold, and no mean speed over fewer vehicles.
"""

from __future__ import annotations

import h3
import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datacharter.charter import Charter
from datacharter.engine import DAY_NS, NS, Context, count, daily_total, distinct_count, occupancy, summary

CHARTER = Charter.load()
BASE = 1_795_000_000 // 86_400 * 86_400 * NS  # a UTC midnight
CENTRE = h3.latlng_to_cell(51.2135, 4.3960, 10)
CELLS = sorted(h3.grid_disk(CENTRE, 2))  # 19 neighbouring street cells
OUT_COLUMNS = {"cell", "resolution", "bin", "time"}


def _ctx(subjects: dict[str, int] | None = None) -> Context:
    return Context("test", BASE + 2 * DAY_NS, subjects or {}, b"k" * 32)


@st.composite
def windows(draw, fields: tuple[str, ...], integer: bool = False, n_max: int = 400):
    n = draw(st.integers(0, n_max))
    n_sensors = draw(st.integers(1, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    sensors = np.array([f"sensor-{i}" for i in range(n_sensors)], dtype=object)
    sensor_cell = {s: CELLS[int(rng.integers(len(CELLS)))] for s in sensors}
    pick = sensors[rng.integers(n_sensors, size=n)]
    frame = pd.DataFrame(
        {"t": BASE + rng.integers(0, DAY_NS, size=n), "sensor": pick, "cell": [sensor_cell[s] for s in pick]}
    )
    for f in fields:
        vals = rng.integers(0, 40, size=n) if integer else rng.normal(40, 10, size=n)
        frame[f] = np.where(rng.random(n) < 0.1, np.nan, vals)
    return frame


def _check(points: pd.DataFrame, ds, frame: pd.DataFrame, forbidden: set[str]) -> None:
    assert set(points.columns) - OUT_COLUMNS - {"profile"} <= ds.allowed_fields
    if points.empty:
        return
    assert (points["n_contributors"] >= ds.k).all()
    text = points.astype(str).to_numpy().ravel()
    assert not set(text) & forbidden


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=windows(("laeq", "lamax")))
def test_levels_properties(frame):
    ds = CHARTER.datasets["noise"]
    res = summary(frame, ds, _ctx())
    _check(res.points, ds, frame, set(frame["sensor"]))
    assert res.points.equals(summary(frame, ds, _ctx()).points)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    frame=windows(("cars", "heavy_vehicles", "cyclists", "pedestrians", "speed_mean"), integer=True),
    k=st.integers(1, 60),
)
def test_count_properties(frame, k):
    ds = CHARTER.datasets["traffic"].model_copy(update={"k": k})
    res = count(frame, ds, _ctx())
    _check(res.points, ds, frame, set(frame["sensor"]))
    if not res.points.empty:
        # no count of any class below the charter's 5 is shown, nor a speed over fewer than 5 vehicles
        assert (res.points["n_contributors"] >= ds.small_counts.below).all()
        for f in ("cars", "heavy_vehicles", "cyclists", "pedestrians"):
            shown = res.points[f].dropna() if f in res.points else pd.Series(dtype=float)
            assert (shown >= ds.small_counts.below).all()
        # every counted road user is in at most one published cars total
        if "cars" in res.points:
            assert res.points["cars"].sum() <= frame["cars"].sum()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=windows(("occupied",), integer=True), k=st.integers(1, 12))
def test_occupancy_properties(frame, k):
    frame["occupied"] = frame["occupied"] % 2
    ds = CHARTER.datasets["parking"].model_copy(update={"k": k})
    res = occupancy(frame, ds, _ctx())
    _check(res.points, ds, frame, set(frame["sensor"]))
    if not res.points.empty:
        assert ((res.points["occupancy_mean"] >= 0) & (res.points["occupancy_mean"] <= 1)).all()
        assert (res.points["spaces_max"] >= k).all()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=windows(("total",)), subjects=st.integers(1, 15), n_owners=st.integers(1, 12))
def test_energy_properties(frame, subjects, n_owners):
    frame["total"] = frame.groupby("sensor")["total"].cumsum().abs()
    ds = CHARTER.datasets["energy"]
    sensors = sorted(frame["sensor"].unique())
    owners = {s: f"owner-{i % n_owners}" for i, s in enumerate(sensors)}
    ctx = Context("test", BASE + 2 * DAY_NS, dict.fromkeys(sensors, subjects), b"k" * 32, owners=owners)
    res = daily_total(frame, ds, ctx)
    _check(res.points, ds, frame, set(frame["sensor"]) | set(owners.values()))
    # the oracle: who is behind each published total (finest level first, published meters leave the roll-up)
    per = (
        frame.dropna(subset=["total"])
        .groupby("sensor")
        .agg(cell=("cell", "first"), lo=("total", "min"), hi=("total", "max"))
    )
    per["kwh"], per["owner"] = per["hi"] - per["lo"], [owners[s] for s in per.index]
    m = ds.magnitude
    for r in sorted(res.points["resolution"].unique(), reverse=True) if not res.points.empty else []:
        at = res.points[res.points["resolution"] == r]
        parent = per["cell"].map(lambda c, r=r: c if h3.get_resolution(c) <= r else h3.cell_to_parent(c, r))
        for p in at.itertuples():
            x = per[parent == p.cell].groupby("owner")["kwh"].sum().sort_values(ascending=False).to_numpy()
            assert abs(x.sum() - p.energy_kwh) <= 1e-3 * max(1.0, x.sum())
            assert len(x) >= m.min_owners
            assert x[: m.dominance.n].sum() <= m.dominance.k / 100 * x.sum() + 1e-9
            assert x.sum() - x[0] - x[1] >= m.p_percent / 100 * x[0] - 1e-9
        per = per[~parent.isin(set(at["cell"]))]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_devices=st.integers(1, 400), n_rows=st.integers(0, 3000), seed=st.integers(0, 2**32 - 1), k=st.integers(1, 30))
def test_distinct_count_properties(n_devices, n_rows, seed, k):
    rng = np.random.default_rng(seed)
    subjects = np.array([f"{rng.integers(2**63):016x}" for _ in range(n_devices)], dtype=object)
    frame = pd.DataFrame(
        {
            "t": BASE + rng.integers(0, DAY_NS, size=n_rows),
            "cell": [CELLS[i] for i in rng.integers(4, size=n_rows)],
            "sensor": "probe-1",
            "subject": subjects[rng.integers(n_devices, size=n_rows)],
            "kind": np.where(rng.random(n_rows) < 0.5, "wifi", "ble"),
            "randomised": np.where(rng.random(n_rows) < 0.6, "true", "false"),
        }
    )
    ds = CHARTER.datasets["pedestrian_flow"].model_copy(update={"k": k})
    res = distinct_count(frame, ds, _ctx())
    _check(res.points, ds, frame, set(subjects) | {"probe-1"})
    # a device counts in at most L bins a day: the published counts cannot hold more than L per device,
    # give or take the noise (each draw within b·ln(n·10⁹) but with probability 10⁻⁹)
    assert _within_contribution_bound(res.points, ds, frame["subject"].nunique())
    assert res.points.equals(distinct_count(frame, ds, _ctx()).points)  # the noise is not re-drawn


def _within_contribution_bound(points: pd.DataFrame, ds, devices: int) -> bool:
    if points.empty:
        return True
    slack = len(points) * ds.noise_scale * np.log(len(points) * 1e9)
    return points["devices"].sum() <= devices * ds.noise.max_bins_per_subject_per_day + slack


def test_the_contribution_bound_holds_where_an_unbounded_count_would_break_it():
    """600 phones seen in every 15-minute bin of a day in one cell: counted in every bin they would add up
    to 600 × 96; bounded, each counts in at most L bins (the property above, with a case that can fail)."""
    phones = [f"{i:016x}" for i in range(600)]
    t = BASE + np.arange(96) * 15 * 60 * NS + 7 * NS
    frame = pd.DataFrame(
        [(ti, CELLS[0], "probe-1", p, "wifi", "true") for ti in t for p in phones],
        columns=["t", "cell", "sensor", "subject", "kind", "randomised"],
    )
    ds = CHARTER.datasets["pedestrian_flow"]
    res = distinct_count(frame, ds, _ctx())
    assert not res.points.empty and _within_contribution_bound(res.points, ds, len(phones))
    # negative control: the same phones, counted in every bin (no contribution bound), break the check
    unbounded = pd.DataFrame({"devices": [len(phones)] * 96, "n_contributors": [len(phones)] * 96})
    assert not _within_contribution_bound(unbounded, ds, len(phones))
