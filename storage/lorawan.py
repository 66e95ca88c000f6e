"""LoRaWAN packet loss from the frame counters in the ``radio`` measurement.

Every uplink ChirpStack delivered left one ``radio`` point per receiving gateway, with the frame
counter ``f_cnt``. A device numbers its uplinks 0, 1, 2 ... so the counters missing between two
received ones are frames lost on air (or in a backhaul): per device, over a time window,

    expected = sum over sessions of (last f_cnt - first f_cnt + 1),   received = distinct f_cnt,
    lost = expected - received,   loss = lost / expected.

A counter that drops below the first one of the current session starts a new session (the device
rejoined, or was reset, and counts from 0 again): frames before and after are counted separately and
the drop itself is not a loss. A counter that goes back but stays inside the session is a late frame
filling its own gap. Frames
lost before the first received one of the window cannot be seen; neither can a session that lost
everything. The figure is computed when asked, from stored points, so it does not depend on the
order in which events arrived nor on which worker took them, and re-delivered uplinks (same
``f_cnt``) count once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from smartzone.model import to_ns
from storage.influx import Influx


@dataclass(frozen=True, slots=True)
class DeviceLoss:
    sensor: str
    received: int  # distinct frame counters seen
    expected: int  # frames the counters say were sent, from the first seen to the last
    sessions: int  # counter runs (a reset or rejoin starts a new one)

    @property
    def lost(self) -> int:
        return self.expected - self.received

    @property
    def loss(self) -> float:
        return self.lost / self.expected if self.expected else 0.0


def frame_loss(counters: list[int]) -> tuple[int, int, int]:
    """(received, expected, sessions) for one device's frame counters in arrival-time order."""
    if not counters:
        return 0, 0, 0
    received = expected = 0
    sessions = 1
    seen: set[int] = set()
    first = last = counters[0]
    for c in counters:
        if c < first:  # below where this session began: the device rejoined or was reset
            expected += last - first + 1
            received += len(seen)
            seen = set()
            first = last = c
            sessions += 1
        seen.add(c)
        last = max(last, c)
    expected += last - first + 1
    received += len(seen)
    return received, expected, sessions


def packet_loss(influx: Influx, database: str, since: datetime, until: datetime) -> list[DeviceLoss]:
    """Per-device packet loss over ``[since, until)``, from the ops database's ``radio`` points."""
    rows = influx.rows(
        "SELECT f_cnt FROM radio WHERE time >= $since AND time < $until GROUP BY sensor",
        database,
        {"since": to_ns(since), "until": to_ns(until)},
    )
    by_sensor: dict[str, list[int]] = {}
    for row in rows:  # one row per (uplink, gateway), in time order within a series
        counters = by_sensor.setdefault(row["sensor"], [])
        if not counters or counters[-1] != row["f_cnt"]:
            counters.append(row["f_cnt"])
    return [DeviceLoss(sensor, *frame_loss(c)) for sensor, c in sorted(by_sensor.items())]
