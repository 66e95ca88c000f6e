"""How complete a published window is: the share of the readings its sensors should have sent that arrived.

Per dataset and window (a UTC day), over the registered sensors the dataset reads (``Dataset.admits``) that
have a reporting interval (``Registry.interval``) and were installed during the window:

- expected, per sensor: the seconds of the window it was installed, up to the end of what is published (the
  whole day once it has closed), divided by its interval;
- arrived, per sensor: its distinct reading times in the window, as the charter job read them;
- coverage = the readings counted / the readings expected, where each sensor counts, per hour (``BUCKET_S``, or
  its interval if longer), at most the readings expected of it in that hour: a sensor that reports more often
  than its interval cannot make up for its own silent hours, nor hide a silent sensor.

Coverage describes the sensor network, never one sensor: it is computed over all the dataset's sensors for
the whole day, and published rounded (``Dataset.coverage_step``): to 0.01 for levels of the environment, to 0.1
for datasets about people (docs/charter/job.md, "Coverage", says why that is enough). Datasets of events
(``Dataset.coverage_measured``: pseudonymised sightings, none on a quiet street) have no coverage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from datacharter.charter import Dataset

NS = 1_000_000_000
BUCKET_S = 3600  # a sensor's readings are counted per hour, each hour at most what is due in it


@dataclass(frozen=True)
class Schedule:
    """When a sensor should report: every ``interval_s`` seconds while installed (``installed``, ``removed``: ns)."""

    interval_s: int
    installed: int | None = None
    removed: int | None = None

    def expected(self, start: int, end: int) -> float:
        """The readings due in [start, end) (ns)."""
        lo = max(start, self.installed) if self.installed is not None else start
        hi = min(end, self.removed) if self.removed is not None else end
        return max(0, hi - lo) / NS / self.interval_s

    def bucket_ns(self) -> int:
        """The span within which the sensor's readings count at most what is due in it: an hour, or its interval
        if longer."""
        return max(BUCKET_S, self.interval_s) * NS

    def counted(self, arrived: dict[int, int], start: int, end: int) -> float:
        """The readings that count, from the readings ``arrived`` per bucket (index from ``start``): per bucket,
        at most the readings due in it."""
        size = self.bucket_ns()
        return sum(
            min(n, self.expected(start + b * size, min(end, start + (b + 1) * size))) for b, n in arrived.items()
        )


@dataclass(frozen=True)
class Coverage:
    expected: int  # readings the dataset's sensors should have sent in the window (rounded)
    arrived: int  # readings that arrived (distinct times per sensor)
    sensors: int  # sensors expected to report in the window
    value: float  # the published share, 0..1, rounded to the dataset's step
    low: bool  # value below the configured threshold


def measure(
    ds: Dataset,
    frame: pd.DataFrame,
    schedules: dict[str, Schedule],
    start: int,
    end: int,
    threshold: float,
) -> Coverage | None:
    """The coverage of the window [start, end) (ns; ``end``: the end of what is published) from the rows the job
    read (``frame``: columns ``t``, ``sensor``), over the sensors of ``schedules`` (the dataset's, with an interval).
    None when the dataset reads events, or no sensor was due to report."""
    if not ds.coverage_measured or end <= start:
        return None
    due = {s: sch.expected(start, end) for s, sch in schedules.items()}
    due = {s: n for s, n in due.items() if n > 0}
    total = sum(due.values())
    if not total:
        return None
    arrived: dict[str, dict[int, int]] = {s: {} for s in due}
    n_arrived = 0
    if not frame.empty and "sensor" in frame:
        rows = frame.loc[(frame["t"] >= start) & (frame["t"] < end) & frame["sensor"].isin(list(due))]
        codes, uniques = pd.factorize(rows["sensor"])
        names = [str(n) for n in uniques]
        times = rows["t"].to_numpy(dtype=np.int64)
        order = np.lexsort((times, codes))  # distinct (sensor, time): a reading written twice counts once
        codes, times = codes[order], times[order]
        first = np.ones(len(codes), dtype=bool)
        first[1:] = (codes[1:] != codes[:-1]) | (times[1:] != times[:-1])
        codes, times = codes[first], times[first]
        n_arrived = len(codes)
        sizes = np.array([schedules[n].bucket_ns() for n in names], dtype=np.int64)
        buckets = (times - start) // sizes[codes] if len(codes) else times
        width = int(buckets.max()) + 1 if len(buckets) else 1
        keys, counts = np.unique(codes.astype(np.int64) * width + buckets, return_counts=True)
        for key, n in zip(keys.tolist(), counts.tolist(), strict=True):
            arrived[names[key // width]][key % width] = n
    counted = sum(schedules[s].counted(arrived[s], start, end) for s in due)
    share = min(1.0, counted / total)
    unit = ds.coverage_step
    value = round(math.floor(share / unit + 0.5) * unit, 2)
    return Coverage(round(total), n_arrived, len(due), value, value < threshold)
