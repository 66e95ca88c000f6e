"""The simulated zone: deterministic by seed, every category and format, daily patterns a city has."""

from __future__ import annotations

from datetime import datetime
from statistics import mean
from zoneinfo import ZoneInfo

from gateways.simulator import SimulatedZone
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
