"""The simulated zone: deterministic by seed, every category and format, daily patterns a city has."""

from __future__ import annotations

import itertools
import threading
from datetime import UTC, datetime, timedelta
from statistics import correlation, mean
from zoneinfo import ZoneInfo

import pytest

from cli.backfill import window
from gateways.climate import sun_elevation, weather
from gateways.publisher import live
from gateways.simulator import REPORT_S, SimulatedZone, round_of
from smartzone.quantities import CATEGORIES

BRUSSELS = ZoneInfo("Europe/Brussels")


def _at(hour: int) -> datetime:
    return datetime(2026, 11, 24, hour, 0, tzinfo=BRUSSELS)  # a Tuesday


def test_same_seed_same_messages_other_seed_other_values(registry):
    a = list(SimulatedZone(registry, seed=5).messages(_at(8), rounds=3, step=60))
    b = list(SimulatedZone(registry, seed=5).messages(_at(8), rounds=3, step=60))
    c = list(SimulatedZone(registry, seed=6).messages(_at(8), rounds=3, step=60))
    assert [(m.topic, m.payload) for m in a] == [(m.topic, m.payload) for m in b]
    assert [m.payload for m in a] != [m.payload for m in c]
    sniffers = [
        s for s in registry.sensors.values() if s.category == "pedestrian_flow" and s.technology in ("wifi", "ble")
    ]
    lora = [s for s in registry.sensors.values() if s.lorawan is not None]
    esphome = [s for s in registry.sensors.values() if s.format == "esphome"]
    gateway_side = [m for m in a if not m.topic.startswith("application/")]
    # one message per non-LoRa sensor and round (ESPHome: one per entity, LAeq and LAmax), plus a sightings
    # message per sniffer and round
    assert len(gateway_side) == 3 * (len(registry.sensors) - len(lora) + len(esphome) + len(sniffers))
    ups = [m for m in a if m.topic.endswith("/event/up")]
    assert 3 * len(lora) * 0.9 <= len(ups) <= 3 * len(lora) * 1.1  # 2 % lost on air, 1 % heard twice


def test_live_rounds_equal_batch_rounds(registry):
    zone = SimulatedZone(registry, seed=9)
    batch = list(zone.messages(_at(12), rounds=2, step=60))
    one_by_one = list(zone.messages(_at(12), 1, step=60)) + [
        m for m in zone.messages(_at(12).replace(minute=1), 1, step=60, first_round=1)
    ]
    assert [m.payload for m in batch] == [m.payload for m in one_by_one]


def _values(registry, hour: int, quantity: str) -> list[float]:
    msgs = SimulatedZone(registry, seed=1).messages(_at(hour), rounds=10, step=60)
    return [t.value for m in msgs for t in m.truth if t.quantity == quantity]


def test_rush_hour_and_quiet_night(registry):
    assert mean(_values(registry, 8, "traffic.cars")) > 5 * mean(_values(registry, 3, "traffic.cars"))
    assert mean(_values(registry, 17, "noise.laeq")) > mean(_values(registry, 3, "noise.laeq")) + 10
    assert mean(_values(registry, 8, "air_quality.no2")) > mean(_values(registry, 3, "air_quality.no2"))
    assert mean(_values(registry, 13, "pedestrian_flow.devices")) > 5 * mean(
        _values(registry, 4, "pedestrian_flow.devices")
    )
    assert mean(_values(registry, 11, "energy.power")) > mean(_values(registry, 3, "energy.power"))


def test_every_category_and_native_format_is_emitted(registry):
    msgs = list(SimulatedZone(registry, seed=2).messages(_at(10), rounds=1))
    categories = {t.quantity.split(".")[0] for m in msgs for t in m.truth}
    assert categories == set(CATEGORIES)  # every category of the vocabulary
    topics = " ".join(m.topic for m in msgs)
    for marker in ("/zigbee2mqtt/", "/tele/", "/BTtoMQTT/", "/senml/", "/sensor/laeq/state", "/json/", "/event/up"):
        assert marker in topics
    streets = {g.name.split(" (")[0] for g in registry.gateways.values()}
    assert streets == {
        "Volkstraat",
        "Nationalestraat",
        "Kloosterstraat",
        "Graaf van Egmontstraat",
        "Sint-Andriesplaats",
        "KMSKA roof",
    }


# -- one rate model, live and backfilled; whole UTC days; the weather of Antwerp -----------------------------
def _hourly(msgs, quantity: str) -> dict[int, float]:
    """Sum of ``quantity`` per UTC hour (hour index since the epoch) of the messages' ground truth."""
    out: dict[int, float] = {}
    for m in msgs:
        for t in m.truth:
            if t.quantity == quantity and t.time_ns is not None:
                h = t.time_ns // 3_600_000_000_000
                out[h] = out.get(h, 0) + t.value
    return out


class _Clock:
    """A clock for ``live``: waiting moves it on at once."""

    def __init__(self, now: datetime) -> None:
        self.now = now.timestamp()

    def time(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.now += seconds
        return False


def test_a_backfill_of_days_is_whole_utc_days():
    now = datetime(2026, 11, 24, 23, 47, 30, tzinfo=UTC)
    start, rounds = window("1d", now)
    # the whole previous UTC day and today up to 23:47: the day the charter freezes first is complete
    assert start == datetime(2026, 11, 23, tzinfo=UTC)
    assert start + timedelta(seconds=(rounds - 1) * REPORT_S) == datetime(2026, 11, 24, 23, 47, tzinfo=UTC)
    assert rounds == 1440 + 23 * 60 + 48
    assert window("2d", now)[0] == datetime(2026, 11, 22, tzinfo=UTC)
    assert window("24h", now)[0] == start  # a day is a day, however it is written
    # shorter spans end at now, on whole minutes as live rounds are
    assert window("2h", now) == (datetime(2026, 11, 24, 21, 48, tzinfo=UTC), 120)
    just_after_midnight = datetime(2026, 11, 25, 0, 0, 10, tzinfo=UTC)
    assert window("1d", just_after_midnight) == (datetime(2026, 11, 24, tzinfo=UTC), 1441)


HOUR_NS = 3_600 * 10**9


@pytest.mark.parametrize(
    "now", [datetime(2026, 11, 24, 16, 30, 20, tzinfo=UTC), datetime(2026, 7, 4, 5, 59, 59, tzinfo=UTC)]
)
def test_the_live_zone_carries_on_where_the_backfill_stopped_at_the_same_rate(registry, now):
    zone = SimulatedZone(registry, seed=3)
    start, rounds = window("1d", now)
    backfilled = list(zone.messages(start, rounds, REPORT_S, first_round=round_of(start)))
    last = start + timedelta(seconds=(rounds - 1) * REPORT_S)
    clock = _Clock(now)
    went_live = list(live(zone, threading.Event(), 3600, after=last, clock=clock.time, wait=clock.wait))
    # the same rate: one round a minute (every sensor once), no gap, no minute twice
    b = sorted({t.time_ns for m in backfilled for t in m.truth if t.time_ns is not None})
    lv = sorted({t.time_ns for m in went_live for t in m.truth if t.time_ns is not None})
    assert lv[0] - b[-1] == 60 * 10**9 and len(lv) == 60 and b == list(range(b[0], b[-1] + 1, 60 * 10**9))
    readings = lambda msgs: sum(len(m.truth) for m in msgs)  # noqa: E731
    assert readings(went_live) / 60 == pytest.approx(readings(backfilled) / rounds, rel=0.05)
    # the hour across the seam changes no more than consecutive hours of the model do (the backfill's own)
    last_hour = sum(
        t.value for m in backfilled for t in m.truth if t.quantity == "traffic.cars" and t.time_ns > b[-1] - HOUR_NS
    )
    first_hour = sum(t.value for m in went_live for t in m.truth if t.quantity == "traffic.cars")
    cars = _hourly(backfilled, "traffic.cars")
    hours = [cars[h] for h in sorted(cars)][1:-1]  # whole hours only
    usual = max(max(x, y) / max(1, min(x, y)) for x, y in itertools.pairwise(hours))
    assert first_hour > 0 and max(first_hour, last_hour) / max(1, min(first_hour, last_hour)) <= usual
    # and the live rounds are the rounds a backfill of those minutes writes, byte for byte
    again = list(zone.messages(last + timedelta(minutes=1), 60, REPORT_S, first_round=round_of(last) + 1))
    assert [m.payload for m in again] == [m.payload for m in went_live]


def test_weather_follows_the_season_and_the_hour_in_antwerp():
    january_nights = [
        weather(datetime(2026, 1, d, 3, tzinfo=UTC), seed).temperature for d in range(1, 32) for seed in (1, 2)
    ]
    july_afternoons = [
        weather(datetime(2026, 7, d, 14, tzinfo=UTC), seed).temperature for d in range(1, 32) for seed in (1, 2)
    ]
    assert max(january_nights) < min(july_afternoons)
    assert 0 < mean(january_nights) < 5 < 20 < mean(july_afternoons) < 28  # Antwerp, not Seville or Oslo
    # the sun: dark at night, bright at a summer noon, brighter in summer than in winter
    assert weather(datetime(2026, 7, 1, 0, tzinfo=UTC)).illuminance == 0
    assert weather(datetime(2026, 12, 21, 17, tzinfo=UTC)).illuminance == 0  # after a December sunset
    assert 15 < sun_elevation(datetime(2026, 12, 21, 11, 40, tzinfo=UTC)) < 16  # 15.3 degrees at noon
    assert 61 < sun_elevation(datetime(2026, 6, 21, 11, 40, tzinfo=UTC)) < 63  # 62.2 degrees at noon
    noon = [weather(datetime(2026, m, d, 12, tzinfo=UTC)).illuminance for m in (6, 12) for d in range(1, 29)]
    assert mean(noon[:28]) > 2 * mean(noon[28:]) and max(noon) > 50_000
    # the day: warmer in the afternoon than before dawn, most days
    warmer = [
        weather(datetime(2026, 4, d, 14, tzinfo=UTC)).temperature
        > weather(datetime(2026, 4, d, 4, tzinfo=UTC)).temperature
        for d in range(1, 31)
    ]
    assert sum(warmer) >= 27
    # rain: some hours of the year, not most; realistic totals
    year = [weather(datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=h)).rain_rate for h in range(0, 24 * 365)]
    wet = sum(1 for r in year if r > 0) / len(year)
    assert 0.04 < wet < 0.12 and 600 < sum(year) < 1100  # Antwerp: about 800 mm a year


def test_ozone_falls_where_traffic_makes_no2_and_peaks_in_the_afternoon(registry):
    zone = SimulatedZone(registry, seed=4)
    day = datetime(2026, 6, 16, tzinfo=UTC)  # a Tuesday in June
    msgs = list(zone.messages(day, 24 * 4, 900))
    station = "aq-kloosterstraat-1"
    by_time: dict[int, dict[str, float]] = {}
    for m in msgs:
        for t in m.truth:
            if t.sensor_id == station and t.quantity in ("air_quality.o3", "air_quality.no2"):
                by_time.setdefault(t.time_ns, {})[t.quantity] = t.value
    o3 = [v["air_quality.o3"] for _, v in sorted(by_time.items())]
    no2 = [v["air_quality.no2"] for _, v in sorted(by_time.items())]
    assert correlation(o3, no2) < -0.3  # NO from traffic eats ozone: anticorrelated
    hour = lambda i: i // 4  # noqa: E731
    afternoon = mean(x for i, x in enumerate(o3) if 12 <= hour(i) < 17)
    assert afternoon > mean(x for i, x in enumerate(o3) if hour(i) < 5) and afternoon > mean(
        x for i, x in enumerate(o3) if 6 <= hour(i) < 9
    )
    # a sound level meter publishes LAeq and LAmax of each interval (ESPHome: one topic each); LAmax is above
    first = list(zone.messages(day, 1, 60))
    laeq = {m.topic.split("/")[2]: float(m.payload) for m in first if m.topic.endswith("/sensor/laeq/state")}
    lamax = {m.topic.split("/")[2]: float(m.payload) for m in first if m.topic.endswith("/sensor/lamax/state")}
    assert len(laeq) == 3 and laeq.keys() == lamax.keys() and all(lamax[k] > laeq[k] for k in laeq)
