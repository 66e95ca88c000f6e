"""The motivated intruder against the open data of a seeded synthetic zone (``synthetic.py``).

End to end (real influxd): the synthetic day is written to the raw and pseudonymous databases, the charter
job publishes it, and the tests read the open database back, as the API would serve it:

- negative control: 4 known (cell, hour) points single out most phones in the raw pseudonymised sightings;
- the same attack on the open data: no identifier, no per-device row, every published group >= k devices;
- singling out a lone night-time passer-by, a building with a single connection, a vehicle on a unique route;
- two releases of the same day, with and without one subject, compared.

Many-trial statistics use the engine's pure functions (fast): differencing two releases that differ by one
device, with and without noise, against the bound epsilon allows; the accuracy of the noised counts.

Group membership is recomputed by an oracle written here from the charter's rules (first L bins per device
per day, finest level first, rows of published groups leave the roll-up), not taken from the engine.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass

import h3
import numpy as np
import pandas as pd
import pytest

from datacharter import engine
from datacharter.charter import DEFAULT_PATH, POINT_TAGS, Charter, CharterError, Dataset
from datacharter.job import CharterJob, ensure_retention
from datacharter.mdav import mdav
from datacharter.noise import accuracy
from smartzone.names import parse_duration
from smartzone.registry import Registry
from smartzone.settings import Settings
from storage.influx import Influx, quote_ident
from tests.conftest import REGISTRY, zone_settings
from tests.datacharter import synthetic
from tests.datacharter.synthetic import DAY_NS, HOUR_NS, MINUTE_NS, NS

CHARTER = Charter.load()
PED = CHARTER.datasets["pedestrian_flow"]
K = PED.k
L = PED.noise.max_bins_per_subject_per_day
SCALE = PED.noise_scale  # L bins a day at each of the dataset's levels share the daily budget
EPS_BIN = 1 / SCALE  # the loss of one noised group (sensitivity 1)
DELTA = PED.noise.delta
NOISE_LINE = "    noise: {epsilon_per_day: 1.0, max_bins_per_subject_per_day: 4, delta: 1.0e-4}\n"
OPEN_TAGS = ("bin", "cell", "charter_version", "profile", "resolution")


def bin_ns(b: str) -> int:
    return int(parse_duration(b)) * NS


def dp_bound(eps: float, delta: float, trials: int) -> float:
    """The best accuracy a distinguisher can reach against one (eps, delta)-DP release, plus 3 sigma."""
    p = math.exp(eps) / (1 + math.exp(eps)) + delta
    return p + 3 * math.sqrt(p * (1 - p) / trials)


# -- the release: the synthetic day through the real job and influxd ------------------------------------------
@dataclass
class Release:
    settings: Settings
    points: dict[str, pd.DataFrame]  # dataset -> its open points, as read back
    fields: dict[str, set[str]]  # measurement -> field keys of the open database
    tags: dict[str, set[str]]  # measurement -> tag keys of the open database


@dataclass
class AttackedCity:
    city: synthetic.City
    sightings: pd.DataFrame  # the raw pseudonymised sightings, as the job reads them back
    full: Release  # the whole city
    alone: Release  # the whole city but the lone passer-by (pedestrian_flow only)
    first: Release  # without the lone passer-by, the late phone and the single-connection building
    late: Release  # the same databases once the late phone's and the building's rows arrived (+ re-run)
    late_phone: str


def _settings(influxd, folder, key) -> Settings:
    folder.mkdir(parents=True, exist_ok=True)
    return zone_settings(folder, influxd.url, charter={"noise_key_file": key})


def _job(s: Settings, influx: Influx, city: synthetic.City) -> CharterJob:
    return CharterJob(s, registry=city.registry(), influx=influx)


def _read_open(influx: Influx, s: Settings) -> Release:
    db = s.charter.open_database
    points, fields, tags = {}, {}, {}
    for row in influx.rows("SHOW FIELD KEYS", db):
        fields.setdefault(row["_measurement"], set()).add(row["fieldKey"])
    for row in influx.rows("SHOW TAG KEYS", db):
        tags.setdefault(row["_measurement"], set()).add(row["tagKey"])
    for m in fields:
        df = influx.frame(f"SELECT * FROM {quote_ident(m)}", db, strings=OPEN_TAGS)  # noqa: S608 - checked
        points[m] = df.assign(resolution=df["resolution"].astype(int))
    return Release(s, points, fields, tags)


@pytest.fixture(scope="module")
def zone(influxd, tmp_path_factory):
    city = synthetic.build()
    folder = tmp_path_factory.mktemp("attacks")
    key = folder / "noise.key"  # one noise key for every release: the comparisons isolate the data
    key.write_bytes(np.random.default_rng(7).bytes(32))
    key.chmod(0o600)
    with pytest.MonkeyPatch.context() as mp:  # as the ``settings`` fixture: nothing from the shell leaks in
        for name in [n for n in os.environ if n.startswith("SMARTZONE_")]:
            mp.delenv(name)
        mp.setenv("SMARTZONE_CONFIG", "/nonexistent.toml")
        s_full = _settings(influxd, folder / "full", key)
        s_diff = _settings(influxd, folder / "diff", key)
        s_alone = _settings(influxd, folder / "alone", key)
    now = pd.Timestamp(city.end + 10 * MINUTE_NS, unit="ns", tz="UTC").to_pydatetime()
    influx = Influx(s_full.influx)
    try:
        # the whole city
        ensure_retention(influx, s_full, CHARTER)
        city.write(influx, s_full.influx.raw_database, s_full.influx.pseudonymous_database)
        job = _job(s_full, influx, city)
        job.run_once(now=now)
        sightings = job.read(PED, city.day, city.end)[0]
        full = _read_open(influx, s_full)
        job.store.close()
        # the same day without the lone passer-by
        ensure_retention(influx, s_alone, CHARTER)
        synthetic.write_lines(
            influx, s_alone.influx.pseudonymous_database, city.without(lone=True).pseudonymous_lines()
        )
        job = _job(s_alone, influx, city)
        job.run_once(now=now, datasets=["pedestrian_flow"])
        alone = _read_open(influx, s_alone)
        job.store.close()
        # and again without the lone passer-by; one daytime phone and the single-connection building
        # arrive late (after the first release), as buffered data from an offline sensor would
        per_phone = city.sightings.groupby("subject")["cell"].nunique()
        late_phone = str(per_phone[per_phone >= 3].index[0])
        bare = city.without(lone=True, single=True)
        late_rows = bare.sightings[bare.sightings["subject"] == late_phone]
        bare.sightings = bare.sightings[bare.sightings["subject"] != late_phone]
        ensure_retention(influx, s_diff, CHARTER)
        bare.write(influx, s_diff.influx.raw_database, s_diff.influx.pseudonymous_database)
        job = _job(s_diff, influx, city)
        job.run_once(now=now)
        first = _read_open(influx, s_diff)
        synthetic.write_lines(influx, s_diff.influx.pseudonymous_database, city.pseudonymous_lines(late_rows))
        synthetic.write_lines(
            influx,
            s_diff.influx.raw_database,
            city.energy_lines(city.energy[city.energy["sensor"] == city.single_meter]),
        )
        reports = job.run_once(now=now + pd.Timedelta(minutes=1))
        # datasets about people are frozen once published: the late rows are counted, not re-published
        assert not any(r.reprocessed for r in reports)
        late_rows = {a["dataset"]: a["late_rows"] for a in job.store.audit(limit=100) if a["late_rows"]}
        assert {"pedestrian_flow", "energy", "energy_profiles"} <= set(late_rows), late_rows
        late = _read_open(influx, s_diff)
        job.store.close()
        yield AttackedCity(city, sightings, full, alone, first, late, late_phone)
    finally:
        for s in (s_full, s_alone, s_diff):
            for db in (s.influx.raw_database, s.influx.pseudonymous_database, s.charter.open_database):
                influx.drop_database(db)
        influx.close()


# -- the oracle: who is in each published pedestrian group ------------------------------------------------------
def walk(sightings: pd.DataFrame, points: pd.DataFrame, ds: Dataset = PED) -> tuple[dict[tuple, set[str]], pd.Series]:
    """The charter's rules replayed on the raw sightings, given what was published: a device counts in L (cell,
    finest bin) pairs of the UTC day, chosen in a hash order of (device, cell, bin); levels are walked finest first;
    the rows of a published group do not move on to a coarser level. Returns (cell, resolution, bin, time) of each
    published point -> the devices it counts, and per device the number of noised groups (of at least k devices,
    published or not) it was in."""
    finest = bin_ns(ds.time.bin)
    s = sightings[sightings["kind"].isin(ds.source.kinds)]
    rows = s.assign(_b=s["t"] // finest * finest).groupby(["subject", "cell", "_b"], as_index=False)["t"].min()
    device = pd.util.hash_pandas_object(rows["subject"], index=False).to_numpy()
    order = pd.util.hash_pandas_object(
        pd.DataFrame({"h": device, "c": rows["cell"], "b": rows["_b"] // finest}), index=False
    ).to_numpy()
    rows = rows.assign(_o=order).sort_values(["_o", "subject", "cell", "_b"], kind="stable")
    rows = rows[rows.groupby(["subject", rows["_b"] // DAY_NS]).cumcount() < L].drop(columns="_o")
    out: dict[tuple, set[str]] = {}
    measured = []
    for r, b in engine.levels(ds):
        size = bin_ns(b)
        key = pd.Series(
            list(
                zip(
                    [c if h3.get_resolution(c) <= r else h3.cell_to_parent(c, r) for c in rows["cell"]],
                    rows["_b"] // size * size,
                    strict=True,
                )
            ),
            index=rows.index,
            dtype=object,
        )
        distinct = rows.assign(_k=key).drop_duplicates(["_k", "subject"])
        n = distinct.groupby("_k")["subject"].transform("size")
        measured.append(distinct.loc[n >= ds.k, "subject"])  # a group below k is never published, noise or not
        here = points[(points["resolution"] == r) & (points["bin"] == b)]
        taken = key.isin(set(zip(here["cell"], here["time"], strict=True)))
        for (cell, t), group in rows[taken].groupby(key[taken]):
            out[(cell, r, b, t)] = set(group["subject"])
        rows = rows[~taken]
    return out, pd.concat(measured).value_counts()


def members(sightings: pd.DataFrame, points: pd.DataFrame, ds: Dataset = PED) -> dict[tuple, set[str]]:
    return walk(sightings, points, ds)[0]


def four_point_targets(sightings: pd.DataFrame, n: int, seed: int) -> list[tuple[str, list[tuple[str, int]]]]:
    """Up to n phones with at least 4 distinct (cell, hour) points, each with 4 of them (what the attacker knows)."""
    pts = sightings.assign(h=sightings["t"] // HOUR_NS).drop_duplicates(["subject", "cell", "h"])
    by = pts.groupby("subject")[["cell", "h"]].apply(lambda g: list(zip(g["cell"], g["h"], strict=True)))
    rng = np.random.default_rng(seed)
    eligible = sorted(s for s, p in by.items() if len(p) >= 4)
    chosen = rng.choice(eligible, size=min(n, len(eligible)), replace=False)
    return [(s, [by[s][i] for i in rng.choice(len(by[s]), 4, replace=False)]) for s in chosen]


# -- negative control ---------------------------------------------------------------------------------
def test_negative_control_four_points_single_out_most_phones_in_the_raw_sightings(zone):
    raw = zone.sightings
    assert len(raw) == len(zone.city.sightings)  # what the job reads is what was written
    pts = raw.assign(h=raw["t"] // HOUR_NS).drop_duplicates(["subject", "cell", "h"])
    at = pts.groupby(["cell", "h"])["subject"].apply(set).to_dict()
    targets = four_point_targets(raw, 400, seed=1)
    unique = [set.intersection(*(at[p] for p in known)) == {subject} for subject, known in targets]
    rate = float(np.mean(unique))
    print(f"\nraw 4-point uniqueness: {rate:.3f} over {len(targets)} phones")
    assert len(targets) == 400 and rate >= 0.8
    lone = raw[raw["subject"] == zone.city.lone]
    lone_points = set(zip(lone["cell"], lone["t"] // HOUR_NS, strict=True))
    assert len(lone_points) >= 4 and set.intersection(*(at[p] for p in lone_points)) == {zone.city.lone}


# -- what the open database holds ------------------------------------------------------------------------------
def test_the_open_database_holds_only_allow_listed_aggregates_and_no_identifier(zone):
    city, rel = zone.city, zone.full
    assert set(rel.points) == {"pedestrian_flow", "energy", "energy_profiles", "mobile_air_quality"}
    secrets = (
        set(city.sightings["subject"])
        | set(city.sightings["sensor"])
        | set(city.energy["sensor"])
        | set(city.air["sensor"])
        | {synthetic.GATEWAY}
    )
    coords = set(city.positions["latitude"].round(4)) | set(city.positions["longitude"].round(4))  # the 4 decimals
    for name, pts in rel.points.items():
        ds = CHARTER.datasets[name]
        assert rel.fields[name] <= ds.allowed_fields, name
        assert rel.tags[name] <= set(POINT_TAGS) | ({"profile"} if ds.method == "profiles" else set()), name
        assert not pts.empty
        values = {str(v) for c in pts.columns if c != "time" for v in pts[c].dropna().unique()}
        assert not values & secrets, f"{name} publishes an identifier"
        if name == "mobile_air_quality":  # (the synthetic pm levels are 5 to 40 ug/m3: no chance coincidence)
            numbers = pts[sorted(rel.fields[name])].to_numpy(dtype=float).ravel()
            assert not set(np.round(numbers, 4)) & coords, f"{name} publishes a raw position"
        # granularity floors: no finer cell or shorter bin than the charter allows, cells at their resolution
        assert set(pts["bin"]) <= set(ds.time.chain)
        assert pts["resolution"].max() <= ds.space.resolution
        assert all(h3.get_resolution(c) == r for c, r in zip(pts["cell"], pts["resolution"], strict=True))
        assert (pts["charter_version"] == CHARTER.version).all()


# -- the 4-point attack against the open data ----------------------------------------------------------------
def test_the_four_point_attack_on_the_open_data_never_narrows_a_phone_below_k(zone):
    pts = zone.full.points["pedestrian_flow"]
    groups = members(zone.sightings, pts)
    assert len(groups) == len(pts) >= 100  # every published point is explained by the oracle
    sizes = np.array([len(m) for m in groups.values()])
    assert sizes.min() >= K, "a published group counts fewer than k devices"
    # the attacker's candidates for a known (cell, hour) point: the published groups of that cell whose bin
    # overlaps the hour; the target hides among all devices of the group(s) it is in
    targets = four_point_targets(zone.sightings, 400, seed=2)
    cell_of = {(c, r, b, t) for (c, r, b, t) in groups}
    anonymity, found = [], 0
    for subject, known in targets:
        sets = []
        for cell, hour in known:
            start = hour * HOUR_NS
            sets += [
                len(groups[g])
                for g in cell_of
                if g[0] == cell and g[3] < start + HOUR_NS and g[3] + bin_ns(g[2]) > start and subject in groups[g]
            ]
        if sets:
            found += 1
            anonymity.append(min(sets))
    print(
        f"\nopen data: {found}/{len(targets)} targets in some published group; smallest anonymity set "
        f"{min(anonymity)}; median {int(np.median(anonymity))}"
    )
    assert found > len(targets) // 2  # the open data is useful: most walks are counted somewhere
    assert min(anonymity) >= K


def test_the_lone_night_time_passer_by_cannot_be_singled_out(zone):
    city = zone.city
    pts = zone.full.points["pedestrian_flow"]
    groups = members(zone.sightings, pts)
    lone = city.sightings[city.sightings["subject"] == city.lone]
    for cell, t in zip(lone["cell"], lone["t"], strict=True):
        covering = pts[(pts["cell"] == cell) & (pts["time"] <= t) & (pts["time"] + pts["bin"].map(bin_ns) > t)]
        for p in covering.itertuples():  # none expected; a roll-up would have to hold k devices
            assert len(groups[(p.cell, p.resolution, p.bin, p.time)]) >= K
    assert not any(city.lone in m for m in groups.values())
    night = pts[(pts["time"] >= city.day + 3 * HOUR_NS) & (pts["time"] < city.day + 5 * HOUR_NS)]
    assert night.empty
    # with and without him (two databases, two jobs, one noise key): every group he is not in has the same input,
    # hence the same noise, and no group he is in is published, so the two releases must be identical, value for
    # value: his presence changes nothing, not even the noise.
    cols = ["cell", "resolution", "bin", "time", "devices", "randomised_devices", "n_contributors"]
    without = zone.alone.points["pedestrian_flow"]
    assert len(pts) > 50
    pd.testing.assert_frame_equal(
        pts[cols].sort_values(cols).reset_index(drop=True), without[cols].sort_values(cols).reset_index(drop=True)
    )


def test_the_building_with_a_single_connection_is_merged_or_suppressed(zone):
    city = zone.city
    energy = zone.full.points["energy"]
    meter = city.energy[city.energy["sensor"] == city.single_meter]
    kwh = float(meter["total"].max() - meter["total"].min())
    cell = meter["cell"].iloc[0]
    assert city.connections[city.single_meter] == 1
    assert (city.energy.drop_duplicates("sensor")["cell"] == cell).sum() == 1  # alone in its res-10 cell
    assert not (energy["cell"] == cell).any()
    assert not np.isclose(energy["energy_kwh"], kwh, atol=0.01).any()
    covering = energy[
        [h3.cell_to_parent(cell, r) == c for c, r in zip(energy["cell"], energy["resolution"], strict=True)]
    ]
    for p in covering.itertuples():  # merged: at least k connections, and it holds at most half of the total
        assert p.n_contributors >= 10 and kwh <= 0.5 * p.energy_kwh
    # every point: at least k connections, and the raw meters of its cell could indeed supply them
    meters = city.energy.drop_duplicates("sensor")
    for p in energy.itertuples():
        inside = [
            s
            for s, c in zip(meters["sensor"], meters["cell"], strict=True)
            if (c if p.resolution == 10 else h3.cell_to_parent(c, p.resolution)) == p.cell
        ]
        assert 10 <= p.n_contributors <= sum(city.connections[s] for s in inside)
    # typical profiles: MDAV groups of at least 10 meters, shapes only (no kW), none equal to one meter's shape
    profiles = zone.full.points["energy_profiles"]
    assert len(profiles) == 24 * profiles["profile"].nunique() and profiles["profile"].nunique() >= 2
    assert (profiles["n_contributors"] >= 10).all()
    assert zone.full.fields["energy_profiles"] == {"relative_load_p50", "n_contributors"}
    hourly = city.energy.assign(h=(city.energy["t"] - city.day) // HOUR_NS).pivot_table(
        index="sensor", columns="h", values="power", aggfunc="mean"
    )
    shapes = hourly.div(hourly.mean(axis=1), axis=0)
    for _, curve in profiles.sort_values("time").groupby("profile"):
        gap = np.abs(shapes.to_numpy() - curve["relative_load_p50"].to_numpy()).max(axis=1)
        assert gap.min() > 0.01


def test_late_data_of_the_single_connection_is_not_revealed_by_differencing_two_releases(zone):
    """Energy is not noised: a re-release after the single connection's late data would show its exact day by
    difference. The day is frozen once published, so the two releases are equal."""
    city = zone.city
    meter = city.energy[city.energy["sensor"] == city.single_meter]
    kwh = float(meter["total"].max() - meter["total"].min())
    a = zone.first.points["energy"].set_index(["cell", "resolution"])["energy_kwh"]
    b = zone.late.points["energy"].set_index(["cell", "resolution"])["energy_kwh"]
    both = a.index.intersection(b.index)
    assert len(both) >= 1
    diff = (b[both] - a[both]).to_numpy()
    print(f"\nenergy: release B - release A = {sorted(np.round(diff, 3))}; the late meter's day: {kwh:.3f} kWh")
    assert not np.isclose(diff, kwh, atol=0.01).any()
    assert (diff == 0).all()


def test_the_vehicle_on_a_unique_route_is_never_published_at_fine_resolution(zone):
    city = zone.city
    pts = zone.full.points["mobile_air_quality"]
    ds = CHARTER.datasets["mobile_air_quality"]
    pos = city.positions.assign(
        c9=[
            h3.latlng_to_cell(a, b, ds.space.resolution)
            for a, b in zip(city.positions["latitude"], city.positions["longitude"], strict=True)
        ]
    )
    pos["c8"] = [h3.cell_to_parent(c, 8) for c in pos["c9"]]
    own = pos["sensor"] == city.unique_vehicle
    unique = set(pos.loc[own, "c9"]) - set(pos.loc[~own, "c9"])
    assert len(unique) >= 5
    assert not pts[(pts["resolution"] == ds.space.resolution) & pts["cell"].isin(unique)].size
    assert (pts["n_contributors"] >= ds.k).all()
    assert len(pts) > 20
    # independent check: the vehicles whose raw positions fall in a point's cell and bin bound its contributors
    for p in pts.itertuples():
        size = bin_ns(p.bin)
        there = pos[(pos[f"c{p.resolution}"] == p.cell) & (pos["t"] // size * size == p.time)]
        assert ds.k <= p.n_contributors <= there["sensor"].nunique()


# -- differencing: two releases that differ by one device (engine, many trials) ----------------------------------
DAY0 = 1_767_225_600 * NS  # 2026-01-01, any closed day
TRIALS = 2000
CELLS = sorted(h3.grid_disk(h3.latlng_to_cell(*synthetic.CENTRE, 10), 6))  # 127 cells


def _trial_frame(trials: int, background: int, target: np.ndarray, seed: int) -> pd.DataFrame:
    """One group per trial (its own cell and hour), ``background`` devices each, plus the trial's target (a stable
    phone) where ``target`` is True. Devices are distinct across trials, so the contribution bound never binds."""
    rng = np.random.default_rng(seed)
    i = np.repeat(np.arange(trials), background)
    j = np.tile(np.arange(background), trials)
    t0 = DAY0 + (np.arange(trials) // len(CELLS)) * HOUR_NS + 60 * NS
    frame = pd.DataFrame(
        {
            "t": t0[i] + rng.integers(0, 600, len(i)) * NS,
            "cell": np.array(CELLS, dtype=object)[i % len(CELLS)],
            "subject": [f"{a:06x}{b:010x}" for a, b in zip(i, j, strict=True)],
            "kind": "wifi",
            "randomised": np.where(rng.random(len(i)) < 0.3, "true", "false"),
        }
    )
    hit = np.flatnonzero(target)
    extra = pd.DataFrame(
        {
            "t": t0[hit] + 700 * NS,
            "cell": np.array(CELLS, dtype=object)[hit % len(CELLS)],
            "subject": [f"ffff{a:012x}" for a in hit],
            "kind": "wifi",
            "randomised": "false",
        }
    )
    return pd.concat([frame, extra], ignore_index=True).sort_values("t", kind="stable").reset_index(drop=True)


def _release(frame: pd.DataFrame, ds: Dataset, key: bytes, trials: int) -> pd.DataFrame:
    """The published ``devices`` per trial (NaN: not published)."""
    ctx = engine.Context(CHARTER.version, DAY0 + 2 * DAY_NS, {}, key)
    pts = engine.distinct_count(frame, ds, ctx).points
    trial = {
        (c, DAY0 + h * HOUR_NS): h * len(CELLS) + n
        for h in range(trials // len(CELLS) + 1)
        for n, c in enumerate(CELLS)
    }
    out = pd.Series(np.nan, index=range(trials))
    for p in pts[pts["bin"] == ds.time.bin].itertuples():
        out[trial[(p.cell, p.time - (p.time - DAY0) % HOUR_NS)]] = p.devices
    return out


def _differencing(ds: Dataset, *, same_key: bool, trials: int = TRIALS, keys: int = 8) -> tuple[float, float]:
    """The attacker knows release A (the day without the target); release B is the day re-released with or
    without the target (a fair coin). He subtracts the counts of the target's group, published in both, and says
    "present" when B - A >= 1. Returns (accuracy of that rule, accuracy of "present when the count changed")."""
    per_key = trials // keys
    right = changed_right = 0
    for k in range(keys):
        coin = np.random.default_rng(100 + k).random(per_key) < 0.5
        key_a = np.random.default_rng(200 + k).bytes(32)
        key_b = key_a if same_key else np.random.default_rng(300 + k).bytes(32)
        a = _release(_trial_frame(per_key, 80, np.zeros(per_key, bool), seed=k), ds, key_a, per_key)
        b = _release(_trial_frame(per_key, 80, coin, seed=k), ds, key_b, per_key)
        both = a.notna() & b.notna()
        assert both.mean() > 0.95  # the groups are published in both releases
        guess = both & (b - a >= 1)
        right += int((guess == coin).sum())
        changed_right += int(((both & (b != a)) == coin).sum())
    return right / trials, changed_right / trials


def test_differencing_without_noise_finds_the_target():
    noiseless = Charter.parse(DEFAULT_PATH.read_text().replace(NOISE_LINE, "")).datasets["pedestrian_flow"]
    assert noiseless.noise is None and PED.noise is not None
    acc, _ = _differencing(noiseless, same_key=True)
    print(f"\ndifferencing without noise: accuracy {acc:.3f}")
    assert acc >= 0.99


def test_differencing_two_independently_noised_releases_stays_within_the_epsilon_bound():
    acc, acc_changed = _differencing(PED, same_key=False)
    bound = dp_bound(EPS_BIN, DELTA, TRIALS)
    print(
        f"\ndifferencing, independent noise: accuracy {acc:.3f} (changed-rule {acc_changed:.3f}); "
        f"bound {bound:.3f} (e^eps/(1+e^eps) = {math.exp(EPS_BIN) / (1 + math.exp(EPS_BIN)):.3f})"
    )
    assert max(acc, acc_changed) <= bound


def test_a_late_device_is_not_revealed_by_a_re_release(zone):
    """Noise derived from a group's input changes with the input: had the job re-released the day after the late
    phone arrived, the groups it joined (and only those) would change. Datasets about people are frozen once
    published, so the release after the late data is the first release, value for value."""
    for name in ("pedestrian_flow", "energy", "energy_profiles", "mobile_air_quality"):
        a, b = zone.first.points.get(name), zone.late.points.get(name)
        if a is None:
            assert b is None
            continue
        keys = ["cell", "resolution", "bin", "time"]
        assert a.sort_values(keys).reset_index(drop=True).equals(b.sort_values(keys).reset_index(drop=True)), name
    assert len(zone.first.points["pedestrian_flow"]) > 100  # the comparison covers a real release


def test_a_group_of_exactly_k_phones_is_published_with_probability_at_most_delta():
    groups = 24 * len(CELLS) * 8  # 24,384 groups of exactly k phones, one per (cell, hour) over 8 days
    i = np.repeat(np.arange(groups), K)
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(
        {
            "t": DAY0 + (i // len(CELLS)) * HOUR_NS + rng.integers(0, 600, len(i)) * NS,
            "cell": np.array(CELLS, dtype=object)[i % len(CELLS)],
            "subject": [f"{a:016x}" for a in range(len(i))],
            "kind": "wifi",
            "randomised": np.where(rng.random(len(i)) < 0.3, "true", "false"),
        }
    )
    ctx = engine.Context(CHARTER.version, DAY0 + 9 * DAY_NS, {}, rng.bytes(32))
    published = len(engine.distinct_count(frame, PED, ctx).points)
    bound = DELTA + 3 * math.sqrt(DELTA / groups)
    print(f"\ngroups of exactly k published: {published}/{groups} = {published / groups:.1e}; delta {DELTA:.0e}")
    assert published / groups <= bound


# -- accuracy of the noised counts ------------------------------------------------------------------------------
def test_noised_counts_stay_within_the_accuracy_bound(zone):
    bound = accuracy(SCALE, 0.05)
    margin = PED.noise_threshold
    assert margin > K  # the publication threshold is on top of k
    stable = zone.sightings.drop_duplicates("subject").set_index("subject")["randomised"] == "false"
    errors = []  # (true size of the group, error of devices, error of randomised_devices)

    def compare(points: pd.DataFrame) -> None:
        at = points.set_index(["cell", "resolution", "bin", "time"])
        for g, m in members(zone.sightings, points).items():
            n_stable = int(stable[list(m)].sum())
            n_random = len(m) - n_stable
            errors.append((len(m), at.at[g, "devices"] - n_stable, at.at[g, "randomised_devices"] - n_random))

    compare(zone.full.points["pedestrian_flow"])  # the job's release (fixed key) ...
    for seed in range(4):  # ... and the engine's under other keys
        ctx = engine.Context(CHARTER.version, zone.city.end, {}, np.random.default_rng(seed).bytes(32))
        compare(engine.distinct_count(zone.sightings, PED, ctx).points)
    e = np.array(errors, dtype=float)
    clear = e[e[:, 0] >= margin][:, 1:].ravel()  # groups whose true size clears the threshold: no selection bias
    every = e[:, 1:].ravel()  # near the threshold, a published group is one whose noise happened to be high
    print(
        f"\nnoise (scale {SCALE}, 95% accuracy {bound:.2f}): within the bound {(np.abs(clear) <= bound).mean():.3f} "
        f"of {len(clear)} counts of groups >= {margin:.0f} (mean error {clear.mean():+.2f}); "
        f"{(np.abs(every) <= bound).mean():.3f} of all {len(every)} published"
    )
    assert len(clear) >= 500 and (np.abs(clear) <= bound).mean() >= 0.93
    assert abs(clear.mean()) < 1.0  # unbiased
    assert (np.abs(every) <= bound).mean() >= 0.90


def test_no_phone_spends_more_than_the_daily_budget(zone):
    _, measured = walk(zone.sightings, zone.full.points["pedestrian_flow"])
    spent = measured * EPS_BIN
    print(
        f"\nbudget: epsilon spent per phone: max {spent.max():.2f}, "
        f"{(spent > PED.noise.epsilon_per_day).mean():.1%} of phones above {PED.noise.epsilon_per_day}"
    )
    assert spent.max() <= PED.noise.epsilon_per_day + 1e-9


# == the second attack round (2026-12): eight classes of disclosure, each with its negative control ==============
# An independent motivated intruder singled people out of a charter that met the first round's rules. Each test
# below is one class of that attack, run against what the charter publishes now, and (negative control) against
# the raw data or the rule as it was, where the same attack succeeds.

MAGNITUDE_BLOCK = (
    "    magnitude:                  # per data owner (the registry's `owner` of each meter), as "
    "tau-ARGUS applies them\n"
    "      dominance: {n: 1, k: 50}  # no owner above half of a published total\n"
    "      p_percent: 10             # no owner, subtracting its own day, estimates another's within "
    "10%\n      min_owners: 3\n"
)
OLD_TRAFFIC_RULE = (
    "    small_counts:\n      fields: [cars, heavy_vehicles, cyclists, pedestrians]\n      below: 5\n"
    "      means: {speed_mean: [cars, heavy_vehicles]}\n"
)


def _variant(old: str, new: str) -> Charter:
    text = DEFAULT_PATH.read_text()
    assert old in text, "the charter's text changed: update the negative control"
    return Charter.parse(text.replace(old, new))


def _ctx(closed_until: int, **kw) -> engine.Context:
    return engine.Context(CHARTER.version, closed_until, kw.pop("subjects", {}), b"k" * 32, **kw)


def _meters(city: synthetic.City) -> pd.DataFrame:
    """Per meter: its cell, owner and day (kWh), from the raw rows (the oracle)."""
    e = city.energy
    day = e.groupby("sensor").agg(cell=("cell", "first"), lo=("total", "min"), hi=("total", "max"))
    day["kwh"] = day["hi"] - day["lo"]
    day["owner"] = [synthetic.OWNERS.get(s, s) for s in day.index]
    return day


def _energy_members(city: synthetic.City, points: pd.DataFrame) -> dict[tuple, pd.DataFrame]:
    """The meters behind each published energy point: finest level first, published meters leave the roll-up."""
    left = _meters(city)
    out = {}
    for r in sorted(points["resolution"].unique(), reverse=True):
        at = points[points["resolution"] == r]
        parent = pd.Series(
            [c if h3.get_resolution(c) <= r else h3.cell_to_parent(c, r) for c in left["cell"]], index=left.index
        )
        for p in at.itertuples():
            out[(p.cell, r)] = left[parent == p.cell]
        left = left[~parent.isin(set(at["cell"]))]
    return out


# 1. subtraction across datasets built from the same subjects -------------------------------------------------------
def test_energy_and_its_profiles_are_one_release_and_cannot_be_subtracted(zone):
    city, rel = zone.city, zone.full
    energy, profiles = rel.points["energy"], rel.points["energy_profiles"]
    members = _energy_members(city, energy)
    published = set().union(*(set(m.index) for m in members.values()))
    suppressed = set(_meters(city).index) - published
    assert suppressed and len(published) >= 10  # the depot, 5 connections alone in its 530 m cell
    # negative control: profiles in kW of every meter (the old release) minus the published totals give the
    # suppressed meters' day: Σ over meters of the hourly mean power (what Σ n x mean of kW profiles adds up to)
    hourly = city.energy.assign(h=(city.energy["t"] - city.day) // HOUR_NS).groupby(["sensor", "h"])["power"].mean()
    # (a day's meter reading runs from 00:00 to the last reading at 23:45: a quarter of hour 23 is the next day's)
    profile_kwh = (hourly.sum() - 0.25 * hourly.xs(23, level="h").sum()) / 1000
    estimate = profile_kwh - energy["energy_kwh"].sum()
    truth = _meters(city).loc[sorted(suppressed), "kwh"].sum()
    print(
        f"\nsubtraction across datasets: kW profiles - totals = {estimate:.2f} kWh; the suppressed meters' day "
        f"{truth:.2f} kWh"
    )
    assert abs(estimate - truth) <= 0.03 * truth
    # now: the profiles carry no kW (shapes only) and cover exactly the meters the totals published
    assert rel.fields["energy_profiles"] == {"relative_load_p50", "n_contributors"}
    n_profiled = profiles.drop_duplicates("profile")["n_contributors"].sum()
    assert n_profiled == len(published)
    # ... as the job decides it (the engine's own account of who is in each release)
    s = zone.full.settings
    job = _job(s, Influx(s.influx), city)
    try:
        window = (city.day, city.end)
        results = {
            n: job.apply(CHARTER.datasets[n], job.read(CHARTER.datasets[n], *window)[0], None, city.end, window=window)
            for n in ("energy", "energy_profiles")
        }
    finally:
        job.close()
    assert results["energy"].published_subjects == results["energy_profiles"].published_subjects == published


def test_every_pair_of_datasets_that_share_a_source_is_one_release_or_reads_other_sensors(zone):
    registries = [Registry.load(REGISTRY), zone.city.registry()]
    pairs = 0
    for (a, da), (b, db) in itertools.combinations(CHARTER.datasets.items(), 2):
        if (da.source.database, da.source.measurement) != (db.source.database, db.source.measurement):
            continue
        pairs += 1
        shared = {s.id for r in registries for s in r.sensors.values() if da.admits(s) and db.admits(s)}
        about_people = da.k > 1 or db.k > 1
        assert not shared or not about_people or (da.release is not None and da.release == db.release), (a, b)
    assert pairs >= 2  # air quality (fixed stations / vehicles: other sensors), energy (totals / profiles: a release)


# 2. a data owner subtracting its own value -------------------------------------------------------------------------
def test_no_owner_can_subtract_its_own_meter_to_find_another_within_p_percent(zone):
    city = zone.city
    ds = CHARTER.datasets["energy"]
    p = ds.magnitude.p_percent / 100
    meters = _meters(city)
    shop, block = meters.loc[synthetic.SHOP], meters.loc[synthetic.BLOCK]
    assert shop["cell"] == block["cell"] and city.connections[synthetic.SHOP] + city.connections[synthetic.BLOCK] == 10
    # negative control: counting connections and checking dominance per connection (no owner rules), the cell of
    # the shop and the block is published, and the block's manager subtracts his own day: the shop's exact day
    old = _variant(MAGNITUDE_BLOCK, "").datasets["energy"]
    frame = city.energy.assign(t=city.energy["t"])
    ctx = _ctx(city.end, subjects=city.connections, owners=synthetic.OWNERS)
    before = engine.daily_total(frame, old, ctx).points
    cell = before[before["cell"] == shop["cell"]]
    assert len(cell) == 1
    print(
        f"\nowner subtraction, without owner rules: {cell['energy_kwh'].iloc[0] - block['kwh']:.3f} kWh vs the "
        f"shop's {shop['kwh']:.3f}"
    )
    assert abs(cell["energy_kwh"].iloc[0] - block["kwh"] - shop["kwh"]) < 0.01
    # now: no published point lets any owner estimate another within p% (the p% rule, per owner), none has fewer
    # than 3 owners, none is dominated by one owner
    points = zone.full.points["energy"]
    assert not (points["cell"] == shop["cell"]).any()
    worst = math.inf
    for (_c, _r), m in _energy_members(city, points).items():
        owners = m.groupby("owner")["kwh"].sum().sort_values(ascending=False)
        total = owners.sum()
        assert len(owners) >= ds.magnitude.min_owners and owners.iloc[0] <= 0.5 * total
        for own, mine in owners.items():  # each owner subtracts itself; its best guess of the largest other owner
            others = owners.drop(own)
            error = (total - mine - others.iloc[0]) / others.iloc[0]
            worst = min(worst, error)
            assert error >= p, (own, error)
    print(f"owner subtraction, now: the closest any owner gets to another's day is {worst:.1%} (rule: {p:.0%})")


# 3. one member's load in its profile ---------------------------------------------------------------------------------
def test_a_bakerys_night_ovens_do_not_show_in_its_profile():
    city = synthetic.build()
    ds = CHARTER.datasets["energy_profiles"]
    e = city.energy.copy()
    hour = (e["t"] - city.day) // HOUR_NS
    ovens = (e["sensor"] == city.single_meter) & (hour >= 1) & (hour < 5)
    e.loc[ovens, "power"] += 9000.0  # 9 kW of ovens from 01:00 to 05:00
    without = e[e["sensor"] != city.single_meter]
    ctx = _ctx(city.end)
    # negative control: the old profiles (mean kW over the MDAV group): the step at 01:00 times the group's size
    # is the ovens' power
    curves = e.assign(h=hour).pivot_table(index="sensor", columns="h", values="power", aggfunc="mean")
    labels = mdav(curves.to_numpy(), ds.k)
    group = labels[list(curves.index).index(city.single_meter)]
    mean = curves[labels == group].mean()
    step = (mean[1] - mean[0]) * (labels == group).sum()
    print(f"\nprofiles in kW: the step at 01:00 x group size = {step / 1000:.2f} kW (ovens 9.00 kW)")
    assert abs(step - 9000) < 0.1 * 9000
    # now: shapes only, medians; the releases with and without the bakery differ at night by at most ...
    a = engine.profiles(e, ds, ctx).points
    b = engine.profiles(without, ds, ctx).points
    assert set(a.columns) >= {"relative_load_p50"} and "power_mean" not in a.columns

    def night(points: pd.DataFrame) -> np.ndarray:
        at = points[((points["time"] - city.day) // HOUR_NS).between(1, 4)]
        return np.sort(at["relative_load_p50"].to_numpy())

    shift = np.abs(night(a) - night(b)).max() if len(night(a)) == len(night(b)) else np.inf
    shapes = curves.div(curves.mean(axis=1), axis=0)
    base = without.assign(h=(without["t"] - city.day) // HOUR_NS)
    own = shapes.loc[city.single_meter, 1:4].mean() - (
        base.groupby(["sensor", "h"])["power"]
        .mean()
        .unstack()
        .pipe(lambda c: c.div(c.mean(axis=1), axis=0))
        .loc[:, 1:4]
        .median(axis=0)
        .mean()
    )
    print(
        f"profiles as median shapes: the bakery moves the night's published shapes by at most {shift:.3f} of a "
        f"meter's average hour; its own night load is {own:.2f} above the others' ({shift / own:.1%} of it shows)"
    )
    assert shift <= 0.1 * own


# 4. an indoor sensor published alone -------------------------------------------------------------------------------
def test_a_sensor_in_a_meter_box_never_reaches_the_weather(zone):
    city = zone.city
    ds = CHARTER.datasets["weather"]
    # negative control: a dataset that takes any fixed sensor publishes the bakery's box alone, ovens and all
    raw = city.indoor.assign(cell=city.indoor["cell"])
    leaked = engine.summary(raw, ds, _ctx(city.end)).points
    night = leaked[((leaked["time"] - city.day) // HOUR_NS).between(1, 4)]
    assert (night["n_contributors"] == 1).all() and night["temperature_mean"].min() >= synthetic.OVEN_C[0]
    # now: the registry says what the sensor is (an energy meter, indoors); weather takes weather stations in the
    # street only, so nothing of the box is published, and the transparency output agrees
    assert "weather" not in zone.full.points
    meter = city.registry().sensors[city.single_meter]
    assert not ds.admits(meter)
    assert [n for n, d in CHARTER.datasets.items() if d.admits(meter)] == ["energy", "energy_profiles"]
    demo = Registry.load(REGISTRY).sensors["energy-housing-egmont"]
    assert not ds.admits(demo)  # the demo zone's own meter box with a BME280


# 5. when a group appears: publication must not depend on who reported ------------------------------------------------
PARK_CELL = h3.latlng_to_cell(*synthetic.CENTRE, 10)


def _bays(
    day: int, change: tuple[int, int] | None = (12 * 60 + 20, 18 * 60 + 5), drop: float = 0.0, seed: int = 0
) -> pd.DataFrame:
    """Five bays in one res-10 cell: four report every 15 min (periodic), one reports on change and every hour at
    half past (the Bosch way); its car leaves at 12:20 and comes back at 18:05. Every bay reported 10 minutes
    before the day (the job's look-back). ``drop``: share of periodic and heartbeat reports lost (never two in a
    row, so no state is older than the charter's state_ttl)."""
    rng = np.random.default_rng(seed)
    rows = [(day - 10 * MINUTE_NS, f"bay-{b}", True) for b in range(4)] + [
        (day - 10 * MINUTE_NS, "bay-on-change", True)
    ]
    for b in range(4):
        for q in range(96):
            if q % 2 or rng.random() >= drop:
                rows.append((day + q * 15 * MINUTE_NS + (b + 1) * 20 * NS, f"bay-{b}", bool(q % 3)))
    leave, back = change
    for minute in range(30, 1440, 60):  # heartbeats: the current state
        if (minute // 60) % 2 or rng.random() >= drop:
            rows.append((day + minute * MINUTE_NS, "bay-on-change", not leave <= minute < back))
    rows += [(day + leave * MINUTE_NS, "bay-on-change", False), (day + back * MINUTE_NS, "bay-on-change", True)]
    frame = pd.DataFrame(rows, columns=["t", "sensor", "occupied"]).assign(cell=PARK_CELL)
    return frame.sort_values("t", kind="stable").reset_index(drop=True)


def _parking(frame: pd.DataFrame, day: int, ds: Dataset | None = None) -> pd.DataFrame:
    ds = ds or CHARTER.datasets["parking"]
    sensors = sorted(set(frame["sensor"]))
    ctx = _ctx(
        day + DAY_NS,
        subjects=dict.fromkeys(sensors, 1),
        cells=dict.fromkeys(sensors, PARK_CELL),
        window=(day, day + DAY_NS),
    )
    return engine.occupancy(frame, ds, ctx).points


def test_when_a_parking_group_appears_does_not_show_when_one_bay_changed():
    day = DAY0
    frame = _bays(day)
    # negative control: deciding from the bays that reported in each bin, the group (5 bays = k) appears exactly in
    # the bins where the on-change bay reported: its hourly heartbeats and the two bins its car left and came back
    size = bin_ns("15m")
    today = frame[frame["t"] >= day]
    reported = today.assign(b=today["t"] // size * size).groupby("b")["sensor"].nunique()
    shown = set(reported[reported >= CHARTER.datasets["parking"].k].index)
    own = today[today["sensor"] == "bay-on-change"]
    assert shown == set(own["t"] // size * size)
    assert {day + (12 * 60 + 15) * MINUTE_NS, day + 18 * HOUR_NS} <= shown and len(shown) == 26
    # now: states carried, publication from the registered bays: every bin of the day, whoever reported
    pts = _parking(frame, day)
    assert set(pts["time"]) == {day + i * size for i in range(96)} and (pts["resolution"] == 10).all()
    assert (pts["n_contributors"] == 5).all()
    # and the occupancy follows the states (the car's absence is in the data, as an aggregate of 5 bays)
    at = pts.set_index("time")["occupied_spaces_mean"]
    assert at[day + 13 * HOUR_NS] < at[day + 11 * HOUR_NS] or at[day + 13 * HOUR_NS] <= 4


def test_publication_decisions_do_not_depend_on_which_members_reported_in_a_bin():
    day = DAY0
    keys = ["cell", "resolution", "bin", "time"]
    base = _parking(_bays(day), day)[keys]
    for seed in range(5):  # lost heartbeats and periodic reports, other change times: the same groups are published
        change = (
            int(np.random.default_rng(seed).integers(60, 700)),
            int(np.random.default_rng(seed).integers(720, 1400)),
        )
        other = _parking(_bays(day, change=change, drop=0.3, seed=seed), day)[keys]
        pd.testing.assert_frame_equal(base.reset_index(drop=True), other.reset_index(drop=True))
    # the one thing that changes publication is a sensor going offline (no state for longer than state_ttl): then
    # its group is suppressed in those bins, not rolled up with fewer bays
    frame = _bays(day)
    silent = frame[~((frame["sensor"] == "bay-0") & (frame["t"] >= day + 6 * HOUR_NS))]
    pts = _parking(silent, day)
    assert pts["time"].max() < day + 9 * HOUR_NS and (pts["n_contributors"] == 5).all()


# 6 and 7. extremes point at one vehicle; k counts vehicles, not trackers -------------------------------------------
def _drive(
    day: int, sensors: dict[str, float], start_h: float, hours: float, phase: float = 60.0, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Vehicles (sensor -> its PM2.5 level) driving the synthetic loop together (``phase`` m apart)."""
    rng = np.random.default_rng(seed)
    air, pos = [], []
    for i, (sensor, pm) in enumerate(sensors.items()):
        t = np.arange(day + int(start_h * HOUR_NS), day + int((start_h + hours) * HOUR_NS), 30 * NS)
        lat, lon = synthetic._along(synthetic.LOOP, i * phase + 6.0 * (t - t[0]) / NS)
        pos.append(pd.DataFrame({"t": t, "sensor": sensor, "latitude": lat, "longitude": lon}))
        air.append(
            pd.DataFrame(
                {
                    "t": t + 5 * NS,
                    "sensor": sensor,
                    "pm2_5": pm + rng.normal(0, 0.3, len(t)),
                    "pm10": 1.6 * pm + rng.normal(0, 0.3, len(t)),
                }
            )
        )
    return pd.concat(air, ignore_index=True), pd.concat(pos, ignore_index=True)


def test_extremes_of_a_vehicle_dataset_do_not_show_one_vehicles_route():
    ds = CHARTER.datasets["mobile_air_quality"]
    air, pos = _drive(DAY0, {"veh-a": 15.0, "veh-b": 14.0, "veh-c": 88.8}, 4.0, 1.0)
    # negative control: the raw maximum per cell and hour is the one vehicle's 88.8, in every cell of its route
    placed = pos.assign(
        cell=[h3.latlng_to_cell(a, b, 9) for a, b in zip(pos["latitude"], pos["longitude"], strict=True)]
    )
    assert (air[air["sensor"] == "veh-c"]["pm2_5"] > 85).all() and air[air["sensor"] != "veh-c"]["pm2_5"].max() < 20
    assert placed["cell"].nunique() >= 9
    # now: no minimum or maximum at all, and every published figure stays within the other vehicles' range
    with pytest.raises(CharterError, match="one contributor's value"):
        _variant("      pm2_5: [mean, p10, p50, p90]\n", "      pm2_5: [mean, max]\n")
    pts = engine.trajectory(air, pos, ds, _ctx(DAY0 + DAY_NS)).points
    assert len(pts) >= 9 and not {c for c in pts.columns if c.endswith(("_min", "_max"))}
    figures = pts[[c for c in pts.columns if c.startswith("pm2_5_")]].to_numpy()
    print(f"\nextremes: the fleet's raw maximum 88.8; the largest published PM2.5 figure {figures.max():.1f}")
    assert figures.max() < 20


def test_three_trackers_on_one_van_are_one_vehicle():
    ds = CHARTER.datasets["mobile_air_quality"]
    van = {"van-tracker-a": 55.5, "van-tracker-b": 55.5, "van-tracker-c": 55.5}
    air, pos = _drive(DAY0, van, 2.0, 1.0, phase=0.5)
    fleet_air, fleet_pos = _drive(DAY0, {f"veh-{i}": 12.0 + i for i in range(4)}, 9.0, 3.0, phase=300.0, seed=1)
    air, pos = pd.concat([air, fleet_air], ignore_index=True), pd.concat([pos, fleet_pos], ignore_index=True)
    vehicles = {**dict.fromkeys(van, "van-1"), **{f"veh-{i}": f"veh-{i}" for i in range(4)}}
    # negative control: counting trackers, the van alone at 02:00 is "3 contributors" with its own PM2.5
    before = engine.trajectory(air, pos, ds, _ctx(DAY0 + DAY_NS)).points
    night = before[(before["time"] >= DAY0 + 2 * HOUR_NS) & (before["time"] < DAY0 + 3 * HOUR_NS)]
    assert len(night) >= 5 and (night["n_contributors"] == 3).all() and (night["pm2_5_mean"] > 55).all()
    # now: the registry links the trackers to their van; k counts vehicles, and the van is never alone
    pts = engine.trajectory(air, pos, ds, _ctx(DAY0 + DAY_NS, vehicles=vehicles)).points
    hourly = pts[pts["bin"] == "1h"]
    assert not ((hourly["time"] >= DAY0 + 2 * HOUR_NS) & (hourly["time"] < DAY0 + 3 * HOUR_NS)).any()
    figures = pts[[c for c in pts.columns if c.startswith("pm2_5_")]].to_numpy()
    assert len(pts) and figures.max() < 20  # in the day's roll-up the van is coded to the others' range


# 8. one car on a dead-end street ---------------------------------------------------------------------------------
def test_one_car_at_night_on_a_dead_end_street_is_not_published():
    busy, dead_end = h3.latlng_to_cell(*synthetic.CENTRE, 10), h3.latlng_to_cell(51.2175, 4.4025, 10)
    rows = []
    for hour in range(24):
        t = DAY0 + hour * HOUR_NS
        cars = 0 if hour < 6 else 40 + hour
        rows.append((t, "traffic-busy", busy, cars, 2, 3 if hour > 6 else 0, 6, 31.0))
        if hour == 3:
            rows.append((t, "traffic-dead-end", dead_end, 1, 0, 0, 0, 78.4))
    frame = pd.DataFrame(
        rows, columns=["t", "sensor", "cell", "cars", "heavy_vehicles", "cyclists", "pedestrians", "speed_mean"]
    )
    ctx = _ctx(DAY0 + DAY_NS)
    # negative control: the rule as it was (small counts of cyclists and pedestrians only) publishes the car
    old = _variant(OLD_TRAFFIC_RULE, "    small_counts: {fields: [cyclists, pedestrians], below: 5}\n")
    before = engine.count(frame, old.datasets["traffic"], ctx).points
    leak = before[(before["cell"] == dead_end) & (before["bin"] == "1h")]
    assert len(leak) == 1 and leak["cars"].iloc[0] == 1 and leak["speed_mean_mean"].iloc[0] == 78.4
    # now: every class below 5 rolls up to the day (and the dead end's day is still one car: suppressed), and the
    # mean speed is published only over at least 5 vehicles, weighted by them
    ds = CHARTER.datasets["traffic"]
    pts = engine.count(frame, ds, ctx).points
    assert not (pts["cell"] == dead_end).any()
    for f in ("cars", "heavy_vehicles", "cyclists", "pedestrians"):
        assert (pts[f].dropna() >= ds.small_counts.below).all(), f
    speed = pts.dropna(subset=["speed_mean_mean"])
    assert len(speed) and not np.isclose(speed["speed_mean_mean"], 78.4).any()
    vehicles = speed["cars"].fillna(0) + speed["heavy_vehicles"].fillna(0)
    assert (speed["n_contributors"] >= ds.small_counts.below).all()
    assert (vehicles[speed["bin"] == "1h"] >= 0).all()


def test_five_people_crossing_a_line_both_ways_are_not_a_group_of_ten():
    """A people counter counts crossings: five people who walk in and out again are ten crossings, not ten people.
    Each crossing is half a person in k (``crossings``): (in + out) / 2 is at most max(in, out), the fewest people
    who could have made them."""
    door = h3.latlng_to_cell(*synthetic.CENTRE, 10)
    # the counter reports every 15 minutes: five in at 02:00, the same five out at 02:30
    rows = [
        (DAY0 + 2 * HOUR_NS + 15 * MINUTE_NS, "people-counter-door", door, np.nan, 5, 0),
        (DAY0 + 2 * HOUR_NS + 45 * MINUTE_NS, "people-counter-door", door, np.nan, 0, 5),
    ]
    frame = pd.DataFrame(rows, columns=["t", "sensor", "cell", "people", "people_in", "people_out"])
    ds = CHARTER.datasets["pedestrian_counts"]
    ctx = _ctx(DAY0 + DAY_NS)
    # negative control: every crossing counted as a person, the five night walkers publish as a group of 10
    old = ds.model_copy(update={"crossings": ()})
    leak = engine.count(frame, old, ctx).points
    assert len(leak) == 1 and leak["n_contributors"].iloc[0] == 10 and leak["people_in"].iloc[0] == 5
    assert engine.count(frame, ds, ctx).points.empty
    # ten people in and out (twenty crossings) are a group of ten; a one-way counter (people) counts each
    both = frame.assign(people_in=frame["people_in"] * 2, people_out=frame["people_out"] * 2)
    pts = engine.count(both, ds, ctx).points
    assert len(pts) == 1 and pts["people_in"].iloc[0] == 10 and pts["n_contributors"].iloc[0] == 10
    one_way = frame.assign(
        sensor="thermal-counter", people=frame["people_in"] + frame["people_out"], people_in=np.nan, people_out=np.nan
    )
    assert engine.count(one_way, ds, ctx).points["n_contributors"].tolist() == [10]
