"""The published windows (UTC days) of a dataset: which are final, and how complete each was.

The charter job measures each window's coverage (``datacharter.coverage``: the share of the readings the
dataset's sensors should have sent that arrived) and flags it ``low`` below ``charter.coverage_threshold``.
A window is final once it can no longer change: a closed day of a frozen dataset, a day beyond the late-data
window of the others. A final window with low coverage is ``flagged``: it will not be completed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from api.store import OpenData
from datacharter.charter import Dataset
from smartzone.names import parse_duration
from smartzone.settings import Settings

NS = 1_000_000_000
DAY_NS = 86_400 * NS


def final_until(settings: Settings, ds: Dataset, now_ns: int | None = None) -> int:
    """The end (ns) of the last day of ``ds`` that can no longer change: days before it are final."""
    now = now_ns if now_ns is not None else int(datetime.now(UTC).timestamp()) * NS
    settle = int(parse_duration(settings.charter.settle)) * NS
    if ds.late_data == "freeze":
        return (now - settle) // DAY_NS * DAY_NS  # days before this one are published and never change
    late = int(parse_duration(settings.charter.late_window)) * NS
    return (now - settle - late) // DAY_NS * DAY_NS


def windows(
    store: OpenData, settings: Settings, name: str, ds: Dataset, start: int | None = None, end: int | None = None
) -> list[dict[str, Any]]:
    """Per published day in [start, end) (the days that overlap it): its coverage, whether it is below the
    threshold (``low``), final, and ``flagged`` (final and low)."""
    final = final_until(settings, ds)
    out = []
    lo = None if start is None else start // DAY_NS * DAY_NS
    for r in store.window_coverage(name, lo, end):
        t = int(r["time"])
        low = bool(r.get("low"))
        is_final = t + DAY_NS <= final
        out.append(
            {
                "day": datetime.fromtimestamp(t / 1e9, UTC).date().isoformat(),
                "coverage": r.get("coverage"),
                "low": low,
                "final": is_final,
                "flagged": low and is_final,
            }
        )
    return out
