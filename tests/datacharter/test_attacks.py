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

import math
import os
import uuid
from dataclasses import dataclass

import h3
import numpy as np
import pandas as pd
import pytest

from datacharter import engine
from datacharter.charter import DEFAULT_PATH, POINT_TAGS, Charter, Dataset
from datacharter.job import CharterJob, ensure_retention
from datacharter.noise import accuracy
from smartzone.names import parse_duration
from smartzone.registry import Registry
from smartzone.settings import Settings
from storage.influx import Influx, quote_ident
from tests.conftest import REGISTRY
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
class Zone:
    city: synthetic.City
    sightings: pd.DataFrame  # the raw pseudonymised sightings, as the job reads them back
    full: Release  # the whole city
    alone: Release  # the whole city but the lone passer-by (pedestrian_flow only)
    first: Release  # without the lone passer-by, the late phone and the single-connection building
    late: Release  # the same databases once the late phone's and the building's rows arrived (+ re-run)
    late_phone: str


def _settings(influxd, folder, key) -> Settings:
    tag = uuid.uuid4().hex[:8]
    folder.mkdir(parents=True, exist_ok=True)
    return Settings(data_dir=folder, registry=REGISTRY,
                    influx={"url": influxd.url, "raw_database": f"raw_{tag}", "ops_database": f"ops_{tag}",
                            "pseudonymous_database": f"pseudo_{tag}"},
                    charter={"open_database": f"open_{tag}", "noise_key_file": key})


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
        synthetic.write_lines(influx, s_alone.influx.pseudonymous_database,
                              city.without(lone=True).pseudonymous_lines())
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
        synthetic.write_lines(influx, s_diff.influx.raw_database,
                              city.energy_lines(city.energy[city.energy["sensor"] == city.single_meter]))
        reports = job.run_once(now=now + pd.Timedelta(minutes=1))
        # datasets about people are frozen once published: the late rows are counted, not re-published
        assert not any(r.reprocessed for r in reports)
        late_rows = {a["dataset"]: a["late_rows"] for a in job.store.audit(limit=100) if a["late_rows"]}
        assert {"pedestrian_flow", "energy", "energy_profiles"} <= set(late_rows), late_rows
        late = _read_open(influx, s_diff)
        job.store.close()
        yield Zone(city, sightings, full, alone, first, late, late_phone)
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
    order = pd.util.hash_pandas_object(pd.DataFrame({"h": device, "c": rows["cell"], "b": rows["_b"] // finest}),
                                       index=False).to_numpy()
    rows = rows.assign(_o=order).sort_values(["_o", "subject", "cell", "_b"], kind="stable")
    rows = rows[rows.groupby(["subject", rows["_b"] // DAY_NS]).cumcount() < L].drop(columns="_o")
    out: dict[tuple, set[str]] = {}
    measured = []
    for r, b in engine.levels(ds):
        size = bin_ns(b)
        key = pd.Series(list(zip([c if h3.get_resolution(c) <= r else h3.cell_to_parent(c, r) for c in rows["cell"]],
                                 rows["_b"] // size * size, strict=True)), index=rows.index, dtype=object)
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
    secrets = (set(city.sightings["subject"]) | set(city.sightings["sensor"]) | set(city.energy["sensor"])
               | set(city.air["sensor"]) | {synthetic.GATEWAY})
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
            sets += [len(groups[g]) for g in cell_of if g[0] == cell and g[3] < start + HOUR_NS
                     and g[3] + bin_ns(g[2]) > start and subject in groups[g]]
        if sets:
            found += 1
            anonymity.append(min(sets))
    print(f"\nopen data: {found}/{len(targets)} targets in some published group; smallest anonymity set "
          f"{min(anonymity)}; median {int(np.median(anonymity))}")
    assert found > len(targets) // 2  # the open data is useful: most walks are counted somewhere
    assert min(anonymity) >= K


def test_the_lone_night_time_passer_by_cannot_be_singled_out(zone):
    city = zone.city
    pts = zone.full.points["pedestrian_flow"]
    groups = members(zone.sightings, pts)
    lone = city.sightings[city.sightings["subject"] == city.lone]
    for cell, t in zip(lone["cell"], lone["t"], strict=True):
        covering = pts[(pts["cell"] == cell) & (pts["time"] <= t)
                       & (pts["time"] + pts["bin"].map(bin_ns) > t)]
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
    pd.testing.assert_frame_equal(pts[cols].sort_values(cols).reset_index(drop=True),
                                  without[cols].sort_values(cols).reset_index(drop=True))


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
    covering = energy[[h3.cell_to_parent(cell, r) == c for c, r in zip(energy["cell"], energy["resolution"],
                                                                        strict=True)]]
    for p in covering.itertuples():  # merged: at least k connections, and it holds at most half of the total
        assert p.n_contributors >= 10 and kwh <= 0.5 * p.energy_kwh
    # every point: at least k connections, and the raw meters of its cell could indeed supply them
    meters = city.energy.drop_duplicates("sensor")
    for p in energy.itertuples():
        inside = [s for s, c in zip(meters["sensor"], meters["cell"], strict=True)
                  if (c if p.resolution == 10 else h3.cell_to_parent(c, p.resolution)) == p.cell]
        assert 10 <= p.n_contributors <= sum(city.connections[s] for s in inside)
    # typical profiles: MDAV groups of at least 10 meters, shapes only (no kW), none equal to one meter's shape
    profiles = zone.full.points["energy_profiles"]
    assert len(profiles) == 24 * profiles["profile"].nunique() and profiles["profile"].nunique() >= 2
    assert (profiles["n_contributors"] >= 10).all()
    assert zone.full.fields["energy_profiles"] == {"relative_load_p50", "n_contributors"}
    hourly = city.energy.assign(h=(city.energy["t"] - city.day) // HOUR_NS).pivot_table(
        index="sensor", columns="h", values="power", aggfunc="mean")
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
    pos = city.positions.assign(c9=[h3.latlng_to_cell(a, b, ds.space.resolution)
                                    for a, b in zip(city.positions["latitude"], city.positions["longitude"],
                                                    strict=True)])
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
    frame = pd.DataFrame({"t": t0[i] + rng.integers(0, 600, len(i)) * NS,
                          "cell": np.array(CELLS, dtype=object)[i % len(CELLS)],
                          "subject": [f"{a:06x}{b:010x}" for a, b in zip(i, j, strict=True)],
                          "kind": "wifi", "randomised": np.where(rng.random(len(i)) < 0.3, "true", "false")})
    hit = np.flatnonzero(target)
    extra = pd.DataFrame({"t": t0[hit] + 700 * NS, "cell": np.array(CELLS, dtype=object)[hit % len(CELLS)],
                          "subject": [f"ffff{a:012x}" for a in hit], "kind": "wifi", "randomised": "false"})
    return pd.concat([frame, extra], ignore_index=True).sort_values("t", kind="stable").reset_index(drop=True)


def _release(frame: pd.DataFrame, ds: Dataset, key: bytes, trials: int) -> pd.DataFrame:
    """The published ``devices`` per trial (NaN: not published)."""
    ctx = engine.Context(CHARTER.version, DAY0 + 2 * DAY_NS, {}, key)
    pts = engine.distinct_count(frame, ds, ctx).points
    trial = {(c, DAY0 + h * HOUR_NS): h * len(CELLS) + n for h in range(trials // len(CELLS) + 1)
             for n, c in enumerate(CELLS)}
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
    print(f"\ndifferencing, independent noise: accuracy {acc:.3f} (changed-rule {acc_changed:.3f}); "
          f"bound {bound:.3f} (e^eps/(1+e^eps) = {math.exp(EPS_BIN) / (1 + math.exp(EPS_BIN)):.3f})")
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
    frame = pd.DataFrame({"t": DAY0 + (i // len(CELLS)) * HOUR_NS + rng.integers(0, 600, len(i)) * NS,
                          "cell": np.array(CELLS, dtype=object)[i % len(CELLS)],
                          "subject": [f"{a:016x}" for a in range(len(i))], "kind": "wifi",
                          "randomised": np.where(rng.random(len(i)) < 0.3, "true", "false")})
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
    print(f"\nnoise (scale {SCALE}, 95% accuracy {bound:.2f}): within the bound {(np.abs(clear) <= bound).mean():.3f} "
          f"of {len(clear)} counts of groups >= {margin:.0f} (mean error {clear.mean():+.2f}); "
          f"{(np.abs(every) <= bound).mean():.3f} of all {len(every)} published")
    assert len(clear) >= 500 and (np.abs(clear) <= bound).mean() >= 0.93
    assert abs(clear.mean()) < 1.0  # unbiased
    assert (np.abs(every) <= bound).mean() >= 0.90


def test_no_phone_spends_more_than_the_daily_budget(zone):
    _, measured = walk(zone.sightings, zone.full.points["pedestrian_flow"])
    spent = measured * EPS_BIN
    print(f"\nbudget: epsilon spent per phone: max {spent.max():.2f}, "
          f"{(spent > PED.noise.epsilon_per_day).mean():.1%} of phones above {PED.noise.epsilon_per_day}")
    assert spent.max() <= PED.noise.epsilon_per_day + 1e-9
