"""Times and durations as the API writes them: RFC 3339 instants (UTC, ``Z``) and ISO 8601 durations."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd

from smartzone.names import parse_duration


def iso_time(ns: int) -> str:
    """Epoch nanoseconds as RFC 3339 UTC (``2026-11-24T00:00:00Z``)."""
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat().replace("+00:00", "Z")


def iso_times(times: pd.Series) -> np.ndarray:
    """A column of epoch nanoseconds as RFC 3339 UTC strings, whole seconds (vectorised)."""
    return np.datetime_as_string(times.to_numpy(dtype="int64").astype("datetime64[ns]"), unit="s").astype(object) + "Z"


def iso_duration(text: str) -> str:
    """A charter duration (``15m``, ``1h``, ``1d``) as ISO 8601 (``PT15M``, ``PT1H``, ``P1D``)."""
    s = int(parse_duration(text))
    if s % 86_400 == 0:
        return f"P{s // 86_400}D"
    days, s = divmod(s, 86_400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    out = f"P{days}DT" if days else "PT"
    return out + "".join(f"{n}{u}" for n, u in ((hours, "H"), (minutes, "M"), (s, "S")) if n)
