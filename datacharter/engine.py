"""The charter applied to one window of raw data: pure, vectorised functions (pandas / numpy).

Every method turns its raw rows into *contributions*: one row per reading with the time ``t`` (ns),
the source cell ``cell`` (H3 at the zone's resolution, or at the charter's for trajectories), the
``subject`` it belongs to (sensor, vehicle, device pseudonym, or the row itself for counts), the
subject's weight ``w`` (how many subjects it stands for: spaces of a zone counter, connections behind
a meter, people in a count) and the values. ``publish`` then walks the charter's levels (finest cell
and bin first, then the roll-ups): groups with at least k subjects are aggregated and published,
the rows of the other groups move to the next, coarser level; what is still too small at the last
level is suppressed. Each row ends in at most one published group, so a roll-up never republishes
what a finer group already showed (no differencing between levels).

Only bins that are closed (ended before ``closed_until``) are published; rows of open bins wait for
a later run. Output: one row per (cell, resolution, bin, time) with the allow-listed aggregates and
``n_contributors``; nothing else of the input survives (no subject, sensor, position or hash).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TypeVar

import h3
import numpy as np
import numpy.typing as npt
import pandas as pd

from datacharter.charter import Dataset, open_field
from datacharter.mdav import mdav
from datacharter.noise import discrete_laplace
from smartzone.names import parse_duration

NS = 1_000_000_000
DAY_NS = 86_400 * NS

# aggregate(rows, keys): the published fields per group (index: the group keys)
Aggregate = Callable[[pd.DataFrame, list[str]], pd.DataFrame]
# check(rows, keys, n): False vetoes a group (index of n: the groups)
Check = Callable[[pd.DataFrame, list[str], pd.Series], pd.Series]
# threshold_fn(n, rows, resolution, bin, cells): whether each group (index of n) is published
ThresholdFn = Callable[[pd.Series, pd.DataFrame, int, str, np.ndarray], pd.Series]


@dataclass
class Result:
    points: pd.DataFrame  # cell, resolution, bin, time, n_contributors, <allow-listed fields>
    readings_in: int = 0
    groups_published: int = 0
    groups_suppressed: int = 0
    rows_deferred: int = 0  # rows of bins still open: a later run publishes them
    published_subjects: set = field(default_factory=set)  # subjects in some published group (a release's check)


@dataclass(frozen=True)
class Context:
    """What a method needs besides its rows: the registry's view of the dataset's sensors."""

    version: str
    closed_until: int  # ns: bins ending after this are not published yet
    subjects: dict[str, int]  # sensor id -> subjects it stands for (registry: connections, spaces)
    noise_key: bytes = b""
    owners: dict[str, str] = field(default_factory=dict)  # sensor id -> its data owner (default: itself)
    vehicles: dict[str, str] = field(default_factory=dict)  # mobile sensor id -> the vehicle it moves with
    cells: dict[str, str] = field(default_factory=dict)  # the dataset's registered sensors -> their cell
    window: tuple[int, int] | None = None  # the UTC day being published (rows before it are look-back only)


def levels(ds: Dataset) -> list[tuple[int, str]]:
    """(H3 resolution, bin) in the order a too-small group rolls up."""
    return ds.levels


def empty_points(ds: Dataset) -> pd.DataFrame:
    cols = ["cell", "resolution", "bin", "time", "n_contributors", *sorted(ds.allowed_fields - {"n_contributors"})]
    return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})


def publish(
    rows: pd.DataFrame,
    ds: Dataset,
    ctx: Context,
    aggregate: Aggregate,
    *,
    k: int | None = None,
    check: Check | None = None,
    threshold_fn: ThresholdFn | None = None,
    population: pd.Series | None = None,
) -> Result:
    """Walk the levels; see the module docstring.

    ``rows`` has ``t``, ``cell`` (H3 strings), ``subject`` (any hashable; integers are fastest), ``w`` and
    the values. At each level the group keys are two integer columns, ``_cell`` (a code into the level's
    cells) and ``_t`` (the bin start, ns). ``aggregate(rows, keys)`` gives the published fields per group;
    ``check(rows, keys, n)`` may veto groups (dominance); ``threshold_fn(n, rows, res, bin, cells)`` may
    replace the plain ``n >= k`` test (noised thresholds; ``cells[code]`` is the H3 string). It is called
    before ``aggregate`` of the same level.

    ``population`` (source cell -> registered subjects, for state sensors) decides publication from who is
    registered, not from who reported: a group is published only where its cell's registered population
    (less the cells a finer level publishes) reaches k and the subjects with a known state in the bin do too;
    a group whose population reaches k but whose known subjects do not (sensors offline) is suppressed, never
    rolled up, so that a coarser group's membership does not change from bin to bin."""
    k = ds.k if k is None else k
    res = Result(empty_points(ds), readings_in=len(rows))
    if rows.empty:
        return res
    out: list[pd.DataFrame] = []
    codes, source_cells = pd.factorize(rows["cell"])
    pending = rows.assign(_src=codes)
    chain = levels(ds)
    # groups are (cell, bin), or (part, cell, bin) where the rows carry ``_part``: several independent tables
    # walked in one pass (the small-count fields of a count dataset, each with its own weights)
    level_keys = ["_cell", "_t"]
    keys = ["_part", *level_keys] if "_part" in rows else level_keys
    for i, (r, b) in enumerate(chain):
        if pending.empty:
            break
        bin_ns = int(parse_duration(b)) * NS
        parent_codes, cells = pd.factorize(np.array([_cell_at(c, r) for c in source_cells], dtype=object))
        t = pending["t"].to_numpy()
        lvl = pending.assign(_cell=parent_codes[pending["_src"].to_numpy()], _t=t // bin_ns * bin_ns)
        closed = (lvl["_t"].to_numpy() + bin_ns) <= ctx.closed_until
        if not closed.all():
            res.rows_deferred += int((~closed).sum())
            lvl = lvl[closed]
        if lvl.empty:
            pending = lvl
            break
        subj = lvl.drop_duplicates([*keys, "subject"])
        n = subj.groupby(keys, sort=True)["w"].sum()
        if n.dtype.kind == "f":  # halves (crossings): whole people only, rounded down
            n = np.floor(n + 1e-9).astype(np.int64)
        ok = threshold_fn(n, lvl, r, b, cells) if threshold_fn else n >= k
        if check is not None:
            ok &= check(lvl, keys, n)
        if population is not None:
            parents = pd.Series(population.to_numpy(), index=[_cell_at(c, r) for c in population.index])
            registered = parents.groupby(level=0).sum()
            stable = registered.reindex(cells[n.index.get_level_values("_cell")]).fillna(0).to_numpy() >= k
            ok &= stable
            dropped = stable & ~ok.to_numpy()  # registered enough, too few known: suppressed here, not rolled up
            if dropped.any():
                gone = pd.MultiIndex.from_arrays([lvl[c].to_numpy() for c in keys]).isin(n.index[dropped])
                res.groups_suppressed += int(dropped.sum())
                lvl = lvl[~gone]
            # the population moving on: the sensors of cells this level publishes leave it
            population = population[registered.reindex(parents.index).to_numpy() < k]
        good = ok[ok].index
        if len(good):
            member = pd.MultiIndex.from_arrays([lvl[c].to_numpy() for c in keys]).isin(good)
            agg = aggregate(lvl[member], keys)
            if "_n" in agg:
                agg = agg.rename(columns={"_n": "n_contributors"})
            else:
                agg["n_contributors"] = n.loc[agg.index].astype(np.int64)
            agg = agg.reset_index()
            agg.insert(0, "cell", cells[agg.pop("_cell").to_numpy()])
            agg.insert(1, "time", agg.pop("_t"))
            agg["resolution"] = r
            agg["bin"] = b
            out.append(agg)
            res.groups_published += len(agg)
            res.published_subjects.update(pd.unique(lvl["subject"].to_numpy()[member]))
            pending = lvl[~member].drop(columns=level_keys)
        else:
            pending = lvl.drop(columns=level_keys)
        if i == len(chain) - 1:
            res.groups_suppressed += int((~ok).sum())
    if out:
        pts = pd.concat(out, ignore_index=True)
        res.points = pts.sort_values(["time", "resolution", "bin", "cell"], kind="stable").reset_index(drop=True)
    return res


# -- aggregates --------------------------------------------------------------------------------------
def _stats(ds: Dataset) -> Aggregate:
    """An aggregate function for the dataset's (field, aggregate) pairs over plain numeric columns."""

    def aggregate(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
        g = rows.groupby(keys, sort=True)
        cols: dict[str, pd.Series] = {}
        for f, a in ds.outputs:
            col = f
            if col not in rows:
                continue
            s = g[col]
            name = open_field(f, a)
            if a == "mean":
                cols[name] = s.mean()
            elif a == "min":
                cols[name] = s.min()
            elif a == "max":
                cols[name] = s.max()
            elif a in ("sum", "count"):
                cols[name] = s.sum(min_count=1)
            elif a == "energy_mean":  # levels in dB average as energies
                e = (10.0 ** (rows[col] / 10.0)).groupby([rows[k] for k in keys], sort=True).mean()
                cols[name] = 10.0 * np.log10(e)
            else:  # p10, p50, p90
                cols[name] = s.quantile(int(a[1:]) / 100.0)
        return pd.DataFrame(cols)

    return aggregate


def _round(points: pd.DataFrame) -> pd.DataFrame:
    """Floats to 4 significant decimals: stable output whatever the summation order."""
    for c in points.columns:
        if points[c].dtype.kind == "f":
            points[c] = points[c].round(4)
    return points


# -- methods ------------------------------------------------------------------------------------------
def summary(frame: pd.DataFrame, ds: Dataset, ctx: Context) -> Result:
    rows = _fixed(frame)
    rows = rows.assign(subject=rows["sensor"], w=1)
    return _finish(publish(rows, ds, ctx, _stats(ds)))


def count(frame: pd.DataFrame, ds: Dataset, ctx: Context) -> Result:
    """Counts per cell and bin. Each counted row is its own subject, weighted by the road users or people it
    counts. Small-count fields are published each on its own, rolled up while below their threshold; a mean
    over counted road users (speed) is weighted by them and follows them (never over fewer than the threshold)."""
    rows = _fixed(frame)
    counted = [f for f in ds.fields if f in rows and _is_count(ds, f)]
    sc = ds.small_counts
    small = set(sc.fields) if sc else set()
    means = dict(sc.means) if sc else {}
    main_fields = [f for f in counted if f not in small]
    keep = [f for f in ds.fields if f not in small and f not in means]
    parts = []
    if keep:
        # people a row stands for: a crossing of a line both ways is half a person (see Dataset.crossings)
        half = pd.Series([0.5 if f in ds.crossings else 1.0 for f in main_fields], index=main_fields, dtype=float)
        total = rows[main_fields].fillna(0).mul(half).sum(axis=1) if main_fields else pd.Series(0, index=rows.index)
        base = rows.assign(subject=np.arange(len(rows)), w=total if ds.crossings else total.astype(np.int64))
        base = base.drop(columns=[f for f in (small | set(means)) if f in base])
        parts.append(publish(base, ds, ctx, _stats(ds.model_copy(update={"fields": {f: ds.fields[f] for f in keep}}))))
    if sc is not None and (small or means):  # small or means: only with small_counts rules
        parts.append(_small_counts(rows, ds, ctx, sorted(small), means, max(ds.k, sc.below)))
    if not parts:
        return _finish(Result(empty_points(ds), readings_in=len(rows)))
    merged = _merge(parts, ds)
    merged.readings_in = len(rows)
    return _finish(merged)


def _small_counts(
    rows: pd.DataFrame, ds: Dataset, ctx: Context, small: list[str], means: dict[str, tuple[str, ...]], k: int
) -> Result:
    """Each small-count field on its own (its count as weight), and each mean over counted road users (weighted
    by them), rolled up while below ``k``: one pass over the levels, one table (``_part``) per field."""
    names = [*small, *sorted(means)]
    stack = []
    for code, f in enumerate(names):
        if f not in rows:
            continue
        if f in means:
            present = [c for c in means[f] if c in rows]
            if not present:
                continue
            w = rows[present].fillna(0).sum(axis=1).to_numpy()
            keep = rows[f].notna().to_numpy() & (w > 0)
        else:
            w = rows[f].to_numpy(dtype=float)
            keep = ~np.isnan(w)
        stack.append(
            pd.DataFrame(
                {
                    "t": rows["t"].to_numpy()[keep],
                    "cell": rows["cell"].to_numpy()[keep],
                    "_part": code,
                    "value": rows[f].to_numpy(dtype=float)[keep],
                    "w": w[keep].astype(np.int64),
                }
            )
        )
    if not stack:
        return Result(empty_points(ds))
    long = pd.concat(stack, ignore_index=True)
    long["subject"] = np.arange(len(long))
    is_mean = np.array([f in means for f in names])

    def aggregate(sel: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
        g = sel.assign(_x=sel["value"] * sel["w"]).groupby(keys, sort=True)[["value", "_x", "w"]].sum()
        mean = is_mean[g.index.get_level_values("_part")]
        return pd.DataFrame({"_v": np.where(mean, g["_x"] / g["w"].where(g["w"] > 0), g["value"])}, index=g.index)

    res = publish(long, ds, ctx, aggregate, k=k)
    pts = res.points
    if pts.empty:
        return Result(empty_points(ds), res.readings_in, 0, res.groups_suppressed, res.rows_deferred)
    keys = ["cell", "resolution", "bin", "time"]
    wide = pts.pivot_table(index=keys, columns="_part", values="_v", aggfunc="first")
    wide.columns = [open_field(names[int(c)], ds.fields[names[int(c)]][0]) for c in wide.columns]
    wide["n_contributors"] = pts.groupby(keys)["n_contributors"].max()
    out = wide.reset_index()
    return Result(out, res.readings_in, len(out), res.groups_suppressed, res.rows_deferred)


def _weighted_mean(name: str) -> Aggregate:
    """The mean of ``name`` weighted by ``w`` (speed over the vehicles counted with it)."""

    def aggregate(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
        g = rows.assign(_x=rows[name] * rows["w"]).groupby(keys, sort=True)
        return pd.DataFrame({open_field(name, "mean"): g["_x"].sum() / g["w"].sum()})

    return aggregate


def _merge(parts: list[Result], ds: Dataset) -> Result:
    keys = ["cell", "resolution", "bin", "time"]
    frames = [p.points for p in parts if not p.points.empty]
    merged = empty_points(ds)
    if frames:
        merged = frames[0]
        for other in frames[1:]:
            merged = merged.merge(other, on=keys, how="outer", suffixes=("", "_r"))
            if "n_contributors_r" in merged:
                merged["n_contributors"] = merged[["n_contributors", "n_contributors_r"]].max(axis=1)
                merged = merged.drop(columns=["n_contributors_r"])
        merged = merged.sort_values(["time", "resolution", "bin", "cell"], kind="stable").reset_index(drop=True)
    return Result(
        merged, parts[0].readings_in, len(merged), sum(p.groups_suppressed for p in parts), parts[0].rows_deferred
    )


def occupancy(frame: pd.DataFrame, ds: Dataset, ctx: Context) -> Result:
    """Parking occupancy of areas with at least k registered spaces.

    Occupancy is a state: a bay sensor reports on change (and a heartbeat), a zone counter its occupied spaces.
    Each sensor's last state holds until its next report, for at most ``state_ttl`` (then the sensor counts as
    offline), so every bin has a time-weighted occupancy per sensor whether or not it reported in the bin.
    Which areas are published is decided from the registered spaces (``ctx.cells`` and ``ctx.subjects``), not
    from who reported: see ``publish``. Rows before ``ctx.window`` are look-back (the state at the day's start)."""
    rows = _fixed(frame)
    n = len(rows)
    col = {
        c: rows[c] if c in rows else pd.Series(np.nan, index=rows.index)
        for c in ("occupied", "occupied_spaces", "free_spaces")
    }
    bay = col["occupied"].astype("float64")
    capacity = rows["sensor"].map(ctx.subjects).fillna(1).astype(float)
    occ, free = col["occupied_spaces"].astype(float), col["free_spaces"].astype(float)
    spaces = np.where(bay.notna(), 1.0, np.where(occ.notna() & free.notna(), occ + free, capacity))
    occupied = np.where(bay.notna(), bay, occ)
    events = pd.DataFrame(
        {
            "t": rows["t"].to_numpy(),
            "sensor": rows["sensor"].to_numpy(),
            "cell": rows["cell"].to_numpy(),
            "occ": occupied,
            "spaces": spaces,
        }
    )
    events = events[~np.isnan(events["occ"].to_numpy(dtype=float))]
    bin_ns = int(parse_duration(ds.time.bin)) * NS
    ttl = int(parse_duration(ds.state_ttl or "0s")) * NS
    start, end = (
        ctx.window
        if ctx.window
        else (
            (int(events["t"].min()) // DAY_NS * DAY_NS, int(events["t"].max()) // DAY_NS * DAY_NS + DAY_NS)
            if len(events)
            else (0, 0)
        )
    )
    in_window = (events["t"] >= start) & (events["t"] < end)
    last_closed = min(end, ctx.closed_until // bin_ns * bin_ns)
    deferred = int((in_window & (events["t"] >= last_closed)).sum())
    spaces_of = pd.Series(ctx.subjects, dtype=float).reindex(list(ctx.cells)).fillna(1.0)
    spaces_of.index = [ctx.cells[s] for s in spaces_of.index]
    population = spaces_of.groupby(level=0).sum() if len(spaces_of) else None
    if events.empty or last_closed <= start:
        return _finish(Result(empty_points(ds), readings_in=n, rows_deferred=deferred))
    per = _state_bins(events[events["t"] < last_closed], start, last_closed, bin_ns, ttl)
    contrib = pd.DataFrame(
        {
            "t": per["_b"].to_numpy(),
            "cell": per["cell"].to_numpy(),
            "sensor": per["sensor"].to_numpy(),
            "subject": per["sensor"].to_numpy(),
            "w": per["spaces"].to_numpy(),
            "occ": per["occ"].to_numpy(),
            "spaces": per["spaces"].to_numpy(),
        }
    )

    def aggregate(sel: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
        g = sel.groupby(keys, sort=True)[["occ", "spaces"]].sum()
        out = pd.DataFrame(index=g.index)
        for f, a in ds.outputs:
            name = open_field(f, a)
            if f == "occupancy":
                out[name] = g["occ"] / g["spaces"]
            elif f == "occupied_spaces":
                out[name] = g["occ"]
            elif f == "spaces":
                out[name] = g["spaces"]
        return out

    result = publish(contrib, ds, ctx, aggregate, population=population)
    result.readings_in = n
    result.rows_deferred = deferred
    return _finish(result)


def _state_bins(events: pd.DataFrame, start: int, end: int, bin_ns: int, ttl: int) -> pd.DataFrame:
    """Per sensor and bin of [start, end): the time-weighted mean state (``occ``, in occupied spaces) over the
    part of the bin where the sensor's state was known (its last report at most ``ttl`` old), and its spaces.
    Bins where it was never known are left out. (numpy: a timeline per sensor of its reports and the bins'
    starts, each point carrying the last report's state forward.)"""
    codes, sensors = pd.factorize(events["sensor"])
    cell_of = events.groupby(codes)["cell"].last().to_numpy()
    grid = np.arange(start, end, bin_ns, dtype=np.int64)
    n_s, n_g = len(sensors), len(grid)
    s_code = np.concatenate([codes, np.repeat(np.arange(n_s), n_g)])
    t = np.concatenate([events["t"].to_numpy(dtype=np.int64), np.tile(grid, n_s)])
    mark = np.concatenate([np.zeros(len(codes), bool), np.ones(n_s * n_g, bool)])
    occ = np.concatenate([events["occ"].to_numpy(dtype=float), np.full(n_s * n_g, np.nan)])
    spaces = np.concatenate([events["spaces"].to_numpy(dtype=float), np.full(n_s * n_g, np.nan)])
    order = np.lexsort((mark, t, s_code))  # a report at a bin's start comes before the bin's mark
    s_code, t, mark, occ, spaces = s_code[order], t[order], mark[order], occ[order], spaces[order]
    pos = np.arange(len(t))
    first = np.r_[True, s_code[1:] != s_code[:-1]]
    group_start = np.maximum.accumulate(np.where(first, pos, 0))
    last = np.maximum.accumulate(np.where(~mark, pos, -1))
    known = last >= group_start  # a report of this sensor came before
    src = np.where(known, last, 0)
    last_t = t[src]
    nxt = np.r_[t[1:], end]
    nxt[np.r_[first[1:], True]] = end  # the last point of each sensor runs to the end
    b = t // bin_ns * bin_ns
    dur = (np.minimum(nxt, np.minimum(b + bin_ns, end)) - np.maximum(t, start)).clip(min=0)
    live = (t >= start) & (t < end) & known & (t - last_t <= ttl) & (dur > 0)
    key = s_code[live] * n_g + (b[live] - start) // bin_ns
    d = dur[live].astype(float)
    total = np.bincount(key, weights=d, minlength=n_s * n_g)
    weighted = np.bincount(key, weights=occ[src][live] * d, minlength=n_s * n_g)
    most = np.full(n_s * n_g, -np.inf)
    np.maximum.at(most, key, spaces[src][live])
    present = np.flatnonzero(total > 0)
    return pd.DataFrame(
        {
            "sensor": sensors.to_numpy()[present // n_g],
            "_b": grid[present % n_g],
            "occ": weighted[present] / total[present],
            "spaces": most[present],
            "cell": cell_of[present // n_g],
        }
    )


def distinct_count(frame: pd.DataFrame, ds: Dataset, ctx: Context) -> Result:
    """Distinct pseudonymised devices per cell and bin; contribution-bounded, noised, thresholded."""
    if frame.empty or "kind" not in frame or "subject" not in frame:
        return _finish(Result(empty_points(ds)))
    rows = frame[frame["kind"].isin(ds.source.kinds) & frame["cell"].astype(bool)]
    n_in = int(frame["kind"].isin(ds.source.kinds).sum())
    subject, uniques = pd.factorize(rows["subject"])
    # the digest of a group's input: the sum of its subjects' 64-bit hashes (order-free)
    hashes = pd.util.hash_pandas_object(pd.Series(uniques), index=False).to_numpy(dtype=np.uint64)
    rows = pd.DataFrame(
        {
            "t": rows["t"].to_numpy(),
            "cell": rows["cell"].to_numpy(),
            "subject": subject,
            "randomised": (rows["randomised"].to_numpy() == "true"),
            "w": 1,
        }
    )
    noise = ds.noise
    if noise is not None and not rows.empty:
        # contribution bound: a subject counts in at most L (cell, bin) pairs per UTC day. Which L: a hash
        # order of its pairs, not the first ones (that would bias evening counts down), fixed for a given
        # subject and pair so that the choice is deterministic
        first_bin = int(parse_duration(ds.time.bin)) * NS
        key = pd.DataFrame({"s": subject, "c": rows["cell"].to_numpy(), "b": rows["t"].to_numpy() // first_bin})
        pairs = key.drop_duplicates(["s", "c", "b"])
        order = pd.util.hash_pandas_object(
            pd.DataFrame({"h": hashes[pairs["s"].to_numpy()], "c": pairs["c"], "b": pairs["b"]}), index=False
        ).to_numpy()
        pairs = pairs.assign(_o=order, _d=pairs["b"] * first_bin // DAY_NS).sort_values(
            ["_o", "s", "c", "b"], kind="stable"
        )
        rank = pairs.groupby(["s", "_d"], sort=False).cumcount()
        allowed = pairs[rank.to_numpy() < noise.max_bins_per_subject_per_day]
        keep = pd.MultiIndex.from_frame(key[["s", "c", "b"]]).isin(pd.MultiIndex.from_frame(allowed[["s", "c", "b"]]))
        rows = rows[keep]
    scale = ds.noise_scale if noise else 0.0
    state: dict[str, tuple[pd.Series, pd.Series]] = {}

    def counts(lvl: pd.DataFrame, index: pd.Index, r: int, b: str, cells: np.ndarray) -> tuple[pd.Series, pd.Series]:
        """(stable, randomised) distinct devices per group, noised when the charter says so. Each
        subject is in exactly one of the two counts, so one group costs one bin of its budget."""
        uniq = lvl.drop_duplicates(["_cell", "_t", "subject"])
        g = uniq.groupby(["_cell", "_t"], sort=True)
        rnd = g["randomised"].sum().astype(np.int64).reindex(index)
        stable = g["randomised"].count().astype(np.int64).reindex(index) - rnd
        if noise:
            digest = (
                pd.Series(hashes[uniq["subject"].to_numpy()], index=uniq.index)
                .groupby([uniq["_cell"], uniq["_t"]], sort=True)
                .sum()
                .reindex(index)
            )
            base = [
                f"{ctx.version}|{ds.source.measurement}|{cells[c]}|{r}|{b}|{t}|{d}"
                for (c, t), d in zip(index, digest.to_numpy(), strict=True)
            ]
            stable = stable + discrete_laplace(ctx.noise_key, [x + "|devices" for x in base], scale)
            rnd = rnd + discrete_laplace(ctx.noise_key, [x + "|randomised" for x in base], scale)
        return stable, rnd

    def threshold_fn(n: pd.Series, lvl: pd.DataFrame, r: int, b: str, cells: np.ndarray) -> pd.Series:
        stable, rnd = counts(lvl, n.index, r, b, cells)
        state["counts"] = (stable.clip(lower=0), rnd.clip(lower=0))
        if not noise:
            return n >= ds.k
        # published only when the true count reaches k and the noised total (two draws, before clipping)
        # clears the threshold a group of k - 1 clears with probability delta / levels (a group not published
        # at one level gets another chance at the next)
        return (n >= ds.k) & ((stable + rnd) >= ds.noise_threshold)

    def aggregate(sel: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
        stable, rnd = state["counts"]
        index = pd.MultiIndex.from_frame(sel[keys].drop_duplicates().sort_values(keys))
        out = pd.DataFrame(index=index)
        if "devices" in ds.fields:
            out["devices"] = stable.reindex(index).astype(np.int64)
        if "randomised_devices" in ds.fields:
            out["randomised_devices"] = rnd.reindex(index).astype(np.int64)
        if noise:  # the exact count would undo the noise: publish the noised total instead
            out["_n"] = (stable + rnd).reindex(index).astype(np.int64)
        return out

    result = publish(rows, ds, ctx, aggregate, threshold_fn=threshold_fn)
    result.readings_in = n_in
    return _finish(result)


def trajectory(frame: pd.DataFrame, positions: pd.DataFrame, ds: Dataset, ctx: Context) -> Result:
    """Mobile readings placed on their vehicle's position, trips trimmed at both ends, k vehicles."""
    n_in = len(frame)
    values = [f for f in ds.fields if f in frame]
    rows = frame[~frame["cell"].astype(bool)] if "cell" in frame else frame
    rows = rows.dropna(subset=values, how="all")
    if rows.empty or positions.empty:
        return _finish(Result(empty_points(ds), readings_in=n_in))
    pos = positions.rename(columns={"latitude": "lat", "longitude": "lon"}).dropna(subset=["lat", "lon"])
    pos = pos.sort_values("t", kind="stable")
    rows = rows.sort_values("t", kind="stable")
    assert ds.trip_gap is not None and ds.trim is not None  # the charter requires both of a trajectory
    gap = int(parse_duration(ds.trip_gap)) * NS
    # trips: a vehicle's positions separated by more than trip_gap; along each, the time and the distance
    # travelled since its start and until its end
    pos = pos.sort_values(["sensor", "t"], kind="stable")
    same = pos["sensor"].eq(pos["sensor"].shift())
    new_trip = ~same | (pos["t"].diff() > gap)
    pos["_trip"] = new_trip.cumsum()
    step = _metres(pos["lat"].shift(), pos["lon"].shift(), pos["lat"], pos["lon"])
    pos["_m"] = np.where(new_trip, 0.0, np.nan_to_num(step))
    pos["_m"] = pos.groupby("_trip")["_m"].cumsum()
    g = pos.groupby("_trip")
    pos["_since_s"] = pos["t"] - g["t"].transform("min")
    pos["_until_s"] = g["t"].transform("max") - pos["t"]
    pos["_until_m"] = g["_m"].transform("max") - pos["_m"]
    placed = pd.merge_asof(
        rows,
        pos.sort_values("t", kind="stable")[["t", "sensor", "lat", "lon", "_m", "_since_s", "_until_s", "_until_m"]],
        on="t",
        by="sensor",
        tolerance=gap,
        direction="nearest",
    )
    placed = placed.dropna(subset=["lat", "lon"])
    trim_ns = int(ds.trim.seconds * NS)
    keep = (
        (placed["_since_s"] >= trim_ns)
        & (placed["_until_s"] >= trim_ns)
        & (placed["_m"] >= ds.trim.metres)
        & (placed["_until_m"] >= ds.trim.metres)
    )
    placed = placed[keep]
    cells = [h3.latlng_to_cell(a, b, ds.space.resolution) for a, b in zip(placed["lat"], placed["lon"], strict=True)]
    sensors = placed["sensor"].to_numpy()
    vehicle = pd.Series(sensors).map(ctx.vehicles).fillna(pd.Series(sensors)).to_numpy()
    rows = pd.DataFrame(
        {"t": placed["t"].to_numpy(), "cell": np.array(cells, dtype=object), "subject": vehicle, "w": 1}
    )  # k counts vehicles: three trackers on one van are one
    for f in values:
        rows[f] = placed[f].to_numpy()
    result = publish(rows, ds, ctx, _over_contributors(ds))
    result.readings_in = n_in
    return _finish(result)


def _over_contributors(ds: Dataset) -> Aggregate:
    """Statistics over contributors, for datasets about people or their vehicles: each contributor's mean in
    the group, top- and bottom-coded to the range of the others (the second smallest to the second largest),
    then the mean and percentiles of those. No published number is one contributor's extreme: a vehicle
    whose readings stand out moves the figures only as far as the next vehicle's."""

    def aggregate(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
        cols: dict[str, pd.Series] = {}
        for f, aggs in ds.fields.items():
            if f not in rows:
                continue
            per = rows.groupby([*keys, "subject"], sort=True)[f].mean().dropna()
            coded = _winsorise(per, keys)
            g = coded.groupby(level=keys, sort=True)
            for a in aggs:
                cols[open_field(f, a)] = g.mean() if a == "mean" else g.quantile(int(a[1:]) / 100.0)
        return pd.DataFrame(cols)

    return aggregate


def _winsorise(per: pd.Series, keys: list[str]) -> pd.Series:
    """Contributors' values (index: keys + subject) clipped to the second smallest and second largest of their
    group; in groups of fewer than 3, every value becomes the group's median."""
    srt = per.sort_values(kind="stable")
    g = srt.groupby(level=keys, sort=False)
    lo, hi = g.nth(1).droplevel("subject"), g.nth(-2).droplevel("subject")
    assert isinstance(per.index, pd.MultiIndex)  # keys + subject
    at = per.index.droplevel("subject")
    size = per.groupby(level=keys).transform("size").to_numpy()
    median = per.groupby(level=keys).transform("median").to_numpy()
    lo_v, hi_v = lo.reindex(at).to_numpy(), hi.reindex(at).to_numpy()
    out = np.clip(per.to_numpy(), np.minimum(lo_v, hi_v), np.maximum(lo_v, hi_v))
    return pd.Series(np.where(size < 3, median, out), index=per.index)


def _metres(lat1: npt.ArrayLike, lon1: npt.ArrayLike, lat2: npt.ArrayLike, lon2: npt.ArrayLike) -> np.ndarray:
    la1, lo1, la2, lo2 = (np.radians(np.asarray(v, dtype=float)) for v in (lat1, lon1, lat2, lon2))
    a = np.sin((la2 - la1) / 2) ** 2 + np.cos(la1) * np.cos(la2) * np.sin((lo2 - lo1) / 2) ** 2
    return 2 * 6_371_000 * np.arcsin(np.sqrt(a))


def _meter_rows(frame: pd.DataFrame, column: str) -> tuple[pd.DataFrame | None, int]:
    """A meter dataset's rows with ``column`` and their UTC day ``_day``; None when it has no such column."""
    rows = _fixed(frame)
    if column not in rows:
        return None, len(rows)
    n_in = len(rows)
    rows = rows.dropna(subset=[column])
    return rows.assign(_day=rows["t"] // DAY_NS * DAY_NS), n_in


def daily_total(frame: pd.DataFrame, ds: Dataset, ctx: Context) -> Result:
    """Daily kWh per building (meter) from its cumulative reading; k connections; magnitude rules per owner."""
    meter = ds.source.meter_field
    assert meter is not None  # the charter requires it of a daily_total
    rows, n_in = _meter_rows(frame, meter)
    if rows is None:
        return _finish(Result(empty_points(ds), readings_in=n_in))
    per = rows.groupby(["sensor", "_day"], sort=True).agg(cell=("cell", "first"), lo=(meter, "min"), hi=(meter, "max"))
    per = per.reset_index()
    sensors = per["sensor"]
    contrib = pd.DataFrame(
        {
            "t": per["_day"].to_numpy(),
            "cell": per["cell"].to_numpy(),
            "subject": sensors.to_numpy(),
            "w": sensors.map(ctx.subjects).fillna(1).astype(np.int64).to_numpy(),
            "owner": sensors.map(ctx.owners).fillna(sensors).to_numpy(),
            "energy_kwh": (per["hi"] - per["lo"]).clip(lower=0).to_numpy(),
        }
    )
    check = None if ds.magnitude is None else lambda lvl, keys, n: magnitude_ok(lvl, keys, n, ds, "energy_kwh")

    def aggregate(sel: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
        return pd.DataFrame({"energy_kwh": sel.groupby(keys, sort=True)["energy_kwh"].sum()})

    result = publish(contrib, ds, ctx, aggregate, check=check)
    result.readings_in = n_in
    return _finish(result)


def magnitude_ok(lvl: pd.DataFrame, keys: list[str], n: pd.Series, ds: Dataset, value: str) -> pd.Series:
    """The charter's magnitude rules per group, over the data owners' totals (``owner`` column): at least
    ``min_owners`` owners; the (n, k) dominance rule; the p% rule (the second largest owner, subtracting its
    own value from the total, must not come within p% of the largest: T - x1 - x2 >= p/100 x1)."""
    m = ds.magnitude
    assert m is not None, "the dataset has no magnitude rules"
    owners = lvl.groupby([*keys, "owner"], sort=True)[value].sum()
    srt = owners.sort_values(ascending=False, kind="stable")
    g = srt.groupby(level=keys, sort=True)
    rank = g.cumcount().to_numpy()
    total = g.sum()
    count = g.size()
    x = [srt[rank == i].droplevel("owner").reindex(total.index, fill_value=0.0) for i in range(2)]
    ok = count >= m.min_owners
    if m.dominance is not None:
        top = srt[rank < m.dominance.n].groupby(level=keys, sort=True).sum().reindex(total.index, fill_value=0.0)
        ok &= top <= m.dominance.k / 100.0 * total
    if m.p_percent is not None:
        ok &= (total - x[0] - x[1]) >= m.p_percent / 100.0 * x[0]
    return ok.reindex(n.index, fill_value=False)


def profiles(frame: pd.DataFrame, ds: Dataset, ctx: Context) -> Result:
    """Typical daily load shapes: each meter-day's hourly power relative to its own daily mean (no kW), MDAV
    groups of at least k similar shapes, and per group the median shape (each hour's median over the group)."""
    power = ds.source.power_field
    assert power is not None  # the charter requires it of profiles
    rows, n_in = _meter_rows(frame, power)
    if rows is None:
        return _finish(Result(empty_points(ds), readings_in=n_in))
    rows = rows.assign(_hour=(rows["t"] - rows["_day"]) // (3600 * NS))
    closed = (rows["_day"] + DAY_NS) <= ctx.closed_until
    deferred = int((~closed).sum())
    rows = rows[closed]
    curves = rows.pivot_table(index=["_day", "sensor"], columns="_hour", values=power, aggfunc="mean")
    curves = curves.reindex(columns=range(24)).dropna()  # complete days only
    level = curves.mean(axis=1)
    shapes = curves[level > 0].div(level[level > 0], axis=0)  # 1.0 = the meter's average hour of the day
    out = []
    published = suppressed = 0
    members_all: set = set()
    for d, block in shapes.groupby(level="_day", sort=True):
        day = int(d)  # type: ignore[call-overload]  # pandas-stubs types groupby keys as tuples; one level's are scalars
        block = block.sort_index(level="sensor")
        sensors = block.index.get_level_values("sensor")
        labels = mdav(block.to_numpy(), ds.k)
        if (labels < 0).all():
            suppressed += 1
            continue
        members_all.update(sensors)
        cells = pd.Series([_cell_at(c, ds.space.resolution) for c in _cells_of(frame, sensors)])
        medians = pd.DataFrame(block.to_numpy()).groupby(labels).median()
        peak = medians.to_numpy().argmax(axis=1)
        order = medians.index[np.lexsort((medians.index.to_numpy(), peak))]
        for rank, g in enumerate(order):  # profile 0: the group whose median peaks earliest in the day
            members = np.flatnonzero(labels == g)
            cell = cells.iloc[members].mode().sort_values().iloc[0]
            for hour in range(24):
                out.append(
                    {
                        "cell": cell,
                        "resolution": ds.space.resolution,
                        "bin": ds.time.bin,
                        "time": day + hour * 3600 * NS,
                        "profile": str(rank),
                        "n_contributors": len(members),
                        "relative_load_p50": float(medians.loc[g, hour]),
                    }
                )
            published += 1
    pts = pd.DataFrame(out) if out else empty_points(ds).assign(profile=pd.Series(dtype=object))
    return _finish(Result(pts, n_in, published * 24, suppressed, deferred, members_all))


def _cells_of(frame: pd.DataFrame, sensors: Iterable[str]) -> list[str]:
    first = frame.drop_duplicates("sensor").set_index("sensor")["cell"]
    return [first.get(s, "") for s in sensors]


@lru_cache(maxsize=1_000_000)
def _cell_at(cell: str, res: int) -> str:
    return cell if not cell or h3.get_resolution(cell) <= res else h3.cell_to_parent(cell, res)


# -- helpers ------------------------------------------------------------------------------------------
def _fixed(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty or "cell" not in frame:
        return frame.iloc[0:0].assign(cell=pd.Series(dtype=object), sensor=pd.Series(dtype=object))
    return frame[frame["cell"].astype(bool)]


def _is_count(ds: Dataset, f: str) -> bool:
    from smartzone.quantities import QUANTITIES

    q = QUANTITIES.get(f"{ds.source.measurement}.{f}")
    return q is not None and q.kind == "int"


def _finish(result: Result) -> Result:
    result.points = _round(result.points)
    return result


def digest(points: pd.DataFrame) -> str:
    """A stable fingerprint of a set of points (idempotence checks, audit)."""
    if points.empty:
        return hashlib.sha256(b"").hexdigest()
    body = points.sort_values(["time", "cell", "resolution", "bin"], kind="stable").to_csv(index=False)
    return hashlib.sha256(body.encode()).hexdigest()


def run(ds: Dataset, frame: pd.DataFrame, positions: pd.DataFrame | None, ctx: Context) -> Result:
    """The dataset's method on one window."""
    if frame.empty:
        return Result(empty_points(ds))
    if ds.method == "trajectory":
        return trajectory(frame, positions if positions is not None else pd.DataFrame(), ds, ctx)
    return METHODS[ds.method](frame, ds, ctx)


_Name = TypeVar("_Name")  # a release's datasets by name (the job's: None for a dataset not in its charter)


def release(
    inputs: dict[_Name, tuple[Dataset, pd.DataFrame, pd.DataFrame | None]], ctx: Context
) -> dict[_Name, Result]:
    """The datasets of one release (built from the same subjects) on one window: each publishes only the
    sensors that every one of them publishes, so that no two can be combined (added, subtracted) into
    something one of them suppressed. Found as a fixed point: run each; the sensors in every publishing
    dataset's published groups are the common set; a dataset that published more runs again on the common set
    only; until every dataset publishes exactly the common set or nothing. (A dataset that already publishes
    the common set keeps its result: the sensors it held back only made it more cautious.)"""
    results = {name: run(ds, frame, positions, ctx) for name, (ds, frame, positions) in inputs.items()}
    first = dict(results)
    for _ in range(sum(len(f) for _, f, _ in inputs.values())):
        published = [set(r.published_subjects) for r in results.values() if r.groups_published]
        if not published:
            break
        common = set.intersection(*published)
        again = [n for n, r in results.items() if r.groups_published and set(r.published_subjects) != common]
        if not again:
            break
        for name in again:
            ds, frame, positions = inputs[name]
            results[name] = run(ds, frame[frame["sensor"].isin(common)], positions, ctx)
    for name, r in results.items():  # what the release held back counts as suppressed; the input is the whole
        r.readings_in = first[name].readings_in
        r.groups_suppressed = max(
            r.groups_suppressed,
            first[name].groups_suppressed,
            int(bool(first[name].published_subjects - r.published_subjects)),
        )
    return results


METHODS = {
    "summary": summary,
    "count": count,
    "occupancy": occupancy,
    "distinct_count": distinct_count,
    "daily_total": daily_total,
    "profiles": profiles,
}
