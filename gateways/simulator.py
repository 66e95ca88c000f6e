"""A simulated smart zone: every registered sensor publishes in its native format, as its gateway would.

Values follow the daily life of a city street (rush hours at 08:00 and 17:30, a lunch peak of
pedestrians, quiet nights, buildings that use energy in office hours), in the zone's local time,
with seeded noise: the same seed, start and registry give the same messages, byte for byte.

Each emitted message carries its ground truth: the readings it encodes, so tests can check that
exactly these land in InfluxDB. Readings of formats without device time (BLE gateways, ESPHome) have
``time=None``: the worker stamps them with the receipt time.

Shapes: ``native`` (each sensor in its own software's format: zigbee2mqtt, Tasmota, Theengs BLE
gateway, ESPHome, SenML, generic JSON), ``single`` (one reading per generic-JSON message) and
``senml`` (SenML packs of up to 10 readings); the last two serve the ingest benchmark.

Passers-by (``native`` only): every pedestrian-flow sensor on WiFi or BLE is also a probe sniffer and
publishes, each round, one ``sightings`` message (``ingest/decoders/sightings.py``) with the phones it
saw since the previous round. The phones are a seeded population of ``POPULATION`` devices: each has a
stable WiFi MAC and BLE address from a phone maker's OUI, except the ``RANDOMISED_SHARE`` that
randomise, presenting a new locally administered address every 5 to 15 minutes; some people pass often,
most rarely (Pareto activity weights). Walks start in each minute of wall-clock time at a rate of
``pedestrian_intensity`` x the sensor's busyness, enter at one sniffer and may walk on to the next ones
(sorted south to north) at walking speed; each sniffer on the way catches the phone with probability
``DETECTION``. Everything is a function of the seed and absolute time, so rounds asked for one at a
time (live) and in a batch agree. Sightings carry no ground truth (``truth`` is empty): they are not
readings of the vocabulary.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson

from gateways.climate import Weather, weather
from gateways.lorawan import LoraNetwork
from smartzone.model import EPOCH, to_ns
from smartzone.quantities import QUANTITIES
from smartzone.registry import Registry, Sensor

SHAPES = ("native", "single", "senml")
# One rate model, live and in a backfill: every sensor reports once per REPORT_S seconds of simulated time,
# in rounds at whole multiples of it (round i at i * REPORT_S seconds since the epoch), so a live minute and
# a backfilled minute are the same messages, and counts are drawn over the REPORT_S seconds each report covers.
REPORT_S = 60.0

# passers-by seen by the WiFi/BLE probe sniffers
POPULATION = 3_000  # phones that ever walk through the zone
RANDOMISED_SHARE = 0.6  # phones that randomise their MAC address
ROTATION_S = (300.0, 900.0)  # a randomising phone's new address every 5 to 15 minutes
PASSERS_PER_5MIN = 180  # phones passing one sniffer in 5 minutes at peak intensity, busyness 1 (as ``devices``)
CONTINUE = 0.35  # chance a walker goes on to the next sniffer
DETECTION = 0.85  # chance a sniffer catches a passing phone
WALK_SPEED = (1.0, 1.6)  # m/s
DETOUR = 1.3  # streets are not straight lines
SLOT_S = 60  # walks are drawn per minute of wall-clock time
MAX_SIGHTINGS = 400  # per message: about 35 kB, well under the worker's max_payload_bytes
# OUIs of phone makers (Apple, Samsung, Huawei, Xiaomi, Google, OnePlus): globally administered addresses
_OUIS = (
    (0xF0, 0x18, 0x98),
    (0x3C, 0x22, 0xFB),
    (0xA4, 0x83, 0xE7),
    (0x8C, 0x85, 0x90),
    (0xDC, 0xA6, 0x32),
    (0x5C, 0x0A, 0x5B),
    (0x84, 0x38, 0x35),
    (0x28, 0x6C, 0x07),
    (0x3C, 0x28, 0x6D),
    (0x94, 0x65, 0x2D),
)


@dataclass(frozen=True, slots=True)
class Truth:
    sensor_id: str
    quantity: str
    value: float | int | bool
    time_ns: int | None  # None: no device time, the receipt time applies


def _truth(sensor_id: str, quantity: str, value: float | int | bool, time_ns: int | None) -> Truth:
    """Ground truth in the type InfluxDB will hold: the quantity's kind."""
    if QUANTITIES[quantity].kind == "float":
        value = float(value)
    return Truth(sensor_id, quantity, value, time_ns)


@dataclass(frozen=True, slots=True)
class Emitted:
    topic: str
    payload: bytes
    truth: tuple[Truth, ...]


def _bump(h: float, centre: float, width: float) -> float:
    d = min(abs(h - centre), 24 - abs(h - centre))
    return math.exp(-0.5 * (d / width) ** 2)


def _distance_m(a: Sensor, b: Sensor) -> float:
    if a.position is None or b.position is None:
        return 300.0
    lat = math.radians((a.position.lat + b.position.lat) / 2)
    dy = (a.position.lat - b.position.lat) * 111_320
    dx = (a.position.lon - b.position.lon) * 111_320 * math.cos(lat)
    return math.hypot(dx, dy)


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _iso_ms(ms: int) -> str:
    return (EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def round_of(t: datetime) -> int:
    """The index of the round at ``t`` or the last one before it (round i is at i * REPORT_S since the epoch)."""
    return math.floor(t.timestamp() / REPORT_S)


def round_time(i: int) -> datetime:
    return datetime.fromtimestamp(i * REPORT_S, UTC)


def traffic_intensity(h: float, weekday: int) -> float:
    """0..1 share of peak traffic at local hour ``h``."""
    peak = 1.0 if weekday < 5 else 0.55
    return min(1.0, 0.04 + peak * (0.95 * _bump(h, 8.0, 1.1) + 0.85 * _bump(h, 17.5, 1.4)) + 0.45 * _bump(h, 13.0, 3.0))


def pedestrian_intensity(h: float, weekday: int) -> float:
    weekend = 1.3 if weekday >= 5 else 1.0
    return min(
        1.0, 0.02 + weekend * (0.6 * _bump(h, 12.5, 1.5) + 0.7 * _bump(h, 17.5, 1.6) + 0.3 * _bump(h, 20.5, 1.5))
    )


class SimulatedZone:
    """The simulated zone for one registry; ``messages`` yields what the gateways publish."""

    def __init__(self, registry: Registry, seed: int = 42, lorawan_encoding: str = "json") -> None:
        self.registry = registry
        self.seed = seed
        self.lorawan = LoraNetwork(registry, seed, lorawan_encoding)
        self.tz = ZoneInfo(registry.doc.zone.timezone)
        self.sensors = list(registry.sensors.values())
        # fixed per-sensor character: street busyness, building size, bias
        r = random.Random(seed)
        self._factor = {s.id: 0.6 + 0.8 * r.random() for s in self.sensors}
        self._uptime0 = {s.id: r.randrange(3_600, 2_000_000) for s in self.sensors}
        # probe sniffers (not the LoRaWAN people counters), south to north: the order walkers pass them in
        self._probes = sorted(
            (
                s
                for s in self.sensors
                if s.category == "pedestrian_flow" and s.lorawan is None and s.technology in ("wifi", "ble")
            ),
            key=lambda s: (s.position.lat, s.position.lon) if s.position else (0.0, 0.0),
        )
        self._probe_index = {s.id: j for j, s in enumerate(self._probes)}
        self._legs = [_distance_m(a, b) * DETOUR for a, b in zip(self._probes, self._probes[1:], strict=False)]
        self._max_walk_s = sum(self._legs) / WALK_SPEED[0] + SLOT_S
        self._slots: dict[int, list[tuple[int, int, int, int]]] = {}  # slot -> (probe, time ms, phone, rssi)
        self._phones: list[tuple[bool, float, float, bytes, bytes]] | None = None
        self._phone_weights: list[float] = []
        self._sky: tuple[datetime, Weather] | None = None

    def messages(
        self, start: datetime, rounds: int, step: float = 60.0, shape: str = "native", first_round: int = 0
    ) -> Iterator[Emitted]:
        """``rounds`` rounds, ``step`` seconds apart from ``start``; in each, every sensor reports once.

        Round ``i`` draws its noise from ``(seed, i)``: a live zone asks for one round at a time with
        ``first_round=i`` and gets the same values a batch run would.
        """
        if shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}")
        pending: dict[str, list] = {}  # senml: readings of each sensor waiting for a full pack
        for k in range(rounds):
            i = first_round + k
            t = start + timedelta(seconds=k * step)
            rng = random.Random(f"{self.seed}:{i}")
            if shape == "native":
                for s in self.sensors:
                    if s.lorawan is not None:
                        yield from self._lorawan(s, t, i, rng, step)
                    else:
                        yield from self._native(s, t, rng, step)
                        if s.id in self._probe_index:
                            yield from self._sightings(s, t, step)
                continue
            # the benchmark shapes are generic JSON and SenML: LoRaWAN devices speak neither
            values = [
                (s, q, v) for s in self.sensors if s.lorawan is None for q, v in self.values(s, t, rng, step).items()
            ]
            if shape == "single":
                yield from self._single(values, t)
                continue
            for s, q, v in values:
                rows = pending.setdefault(s.id, [])
                rows.append((s, q, v, t))
                if len(rows) == 10:
                    yield self._senml_pack(rows)
                    rows.clear()
        for rows in pending.values():
            if rows:
                yield self._senml_pack(rows)

    # -- values -------------------------------------------------------------------------------------
    def values(self, s: Sensor, t: datetime, rng: random.Random, step: float) -> dict[str, float | int | bool]:
        """What sensor ``s`` reports at ``t`` for the ``step`` seconds since its previous report: levels are
        what it measures at ``t``; counts are drawn from Poisson processes over the interval (rates per
        second), so the sum over an hour does not depend on how often a sensor reports."""
        local = t.astimezone(self.tz)
        h = local.hour + local.minute / 60 + local.second / 3600
        wd = local.weekday()
        f = self._factor[s.id]
        tr = traffic_intensity(h, wd)
        ped = pedestrian_intensity(h, wd)
        g = rng.gauss
        wx = self._weather(t)
        if s.placement == "indoor":  # a heated room: a building's climate, not the street's
            temp = 20.5 + 1.5 * _bump(h, 15, 4) + g(0, 0.2)
            hum = min(70.0, max(25.0, 48 + 0.3 * (wx.relative_humidity - 80) + g(0, 1.5)))
        else:
            temp = wx.temperature + g(0, 0.3)
            hum = min(100.0, max(20.0, wx.relative_humidity + g(0, 1.5)))
        c = s.category
        if c == "air_quality":
            pm25 = max(0.5, 7 + 5 * tr * f + 3 * _bump(h, 21, 2) + g(0, 1.2))
            out = {
                "air_quality.pm2_5": round(pm25, 1),
                "air_quality.pm10": round(pm25 * 1.6 + abs(g(0, 1)), 1),
                "air_quality.co2": round(415 + 60 * tr * f + g(0, 4)),
                "weather.temperature": round(temp, 2),
                "weather.relative_humidity": round(hum, 1),
            }
            if s.format == "senml":  # a street air station: NO2 from traffic, O3 made by sunlight, eaten by NO
                no2 = max(1.0, 12 + 48 * tr * f + g(0, 3))
                out["air_quality.no2"] = round(no2, 1)
                titrated = wx.ozone_background * math.exp(-max(0.0, no2 - 10) / 60)
                out["air_quality.o3"] = round(max(1.0, titrated + g(0, 1.5)), 1)
            if s.format == "zigbee2mqtt":
                out["air_quality.voc"] = round(max(0, 120 + 200 * tr + g(0, 20)))
            if s.format == "chirpstack":
                out["air_quality.pm1"] = round(pm25 * 0.7, 1)
            if s.placement == "indoor":  # a classroom or reading room: people breathe
                busy = 1.0 if wd < 5 and 8.5 <= h <= 16.5 else 0.0
                out["air_quality.co2"] = round(450 + 650 * busy * f * _bump(h, 11.5, 2.5) + g(0, 10))
            return out
        if c == "weather":
            out = {
                "weather.temperature": round(temp + g(0, 0.2), 2),
                "weather.relative_humidity": round(hum, 1),
                "weather.pressure": round(wx.pressure + g(0, 0.2), 1),
            }
            if s.lorawan is not None:  # an LPP weather node with a light sensor (LPP luminosity: up to 65,535 lx)
                out["weather.illuminance"] = min(65_535, round(wx.illuminance * (1 + g(0, 0.03))))
            elif s.format == "generic_json":  # an all-in-one station on a mast: wind, rain and light too
                out["weather.wind_speed"] = round(max(0.0, wx.wind_speed * (1 + g(0, 0.3))), 1)
                out["weather.rain_rate"] = round(max(0.0, wx.rain_rate * (1 + g(0, 0.15))), 1)
                out["weather.illuminance"] = round(wx.illuminance * (1 + g(0, 0.03)))
            return out
        if c == "noise":
            laeq = 44 + 24 * tr * f + g(0, 1.5)
            return {"noise.laeq": round(laeq, 1), "noise.lamax": round(laeq + 9 + abs(g(0, 3)), 1)}
        if c == "traffic":
            per_s = tr * f / 300  # at peak, 90 cars, 35 cyclists and 60 pedestrians in 5 minutes (busyness 1)
            cars = _poisson(rng, 90 * per_s * step)
            return {
                "traffic.cars": cars,
                "traffic.heavy_vehicles": _poisson(rng, 7 * per_s * step),
                "traffic.cyclists": _poisson(rng, 35 * per_s * step),
                "traffic.pedestrians": _poisson(rng, 60 * ped * f / 300 * step),
                "traffic.speed_mean": round(max(5.0, 34 - 14 * tr + g(0, 1.5)), 1),
            }
        if c == "parking":
            p = min(0.98, 0.35 + 0.55 * _bump(h, 14, 4.5) + 0.1 * (wd >= 5))
            if s.format in ("zigbee2mqtt", "chirpstack"):  # a single bay
                return {"parking.occupied": rng.random() < p}
            capacity = 40 if "egmont" in s.id else 25
            occ = min(capacity, max(0, round(capacity * p + g(0, 1.5))))
            return {"parking.occupied_spaces": occ, "parking.free_spaces": capacity - occ}
        if c == "pedestrian_flow":
            per_s = ped * f / 300
            if s.format == "chirpstack":  # a people counter: line crossings, both ways
                return {
                    "pedestrian_flow.people_in": _poisson(rng, 130 * per_s * step),
                    "pedestrian_flow.people_out": _poisson(rng, 110 * per_s * step),
                }
            if s.technology == "wired":  # an overhead people counter: people crossing its line, either way
                return {"pedestrian_flow.people": _poisson(rng, 200 * per_s * step)}
            devices = _poisson(rng, 180 * per_s * step)
            return {
                "pedestrian_flow.devices": devices,
                "pedestrian_flow.randomised_devices": sum(rng.random() < 0.7 for _ in range(devices)),
            }
        if c == "energy":
            office = 1.0 if wd < 5 and 7.5 <= h <= 18 else 0.0
            base_kw = {"school": 3, "momu": 8, "library": 4}.get(
                next((k for k in ("school", "momu", "library") if k in s.id), ""), 2
            )
            kw = base_kw * (1 + 3 * office * f) + 2 * _bump(h, 19, 1.5) + abs(g(0, 0.2))
            hours = (t - datetime(2024, 1, 1, tzinfo=UTC)).total_seconds() / 3600
            total = 10_000 * f + hours * base_kw * 1.8
            out = {
                "energy.total": round(total, 3),
                "energy.power": round(kw * 1000),
                "energy.voltage": round(230 + g(0, 1.5)),
                "energy.current": round(kw * 1000 / 230 / 3, 3),
                "energy.power_factor": round(min(1.0, 0.9 + g(0, 0.02)), 2),
            }
            if "housing" in s.id:
                out.update(
                    {
                        "weather.temperature": round(temp, 1),
                        "weather.relative_humidity": round(hum, 1),
                        "weather.pressure": round(wx.pressure + g(0, 0.5), 1),
                    }
                )
            return out
        if c == "gateway_health":
            return {
                "gateway_health.uptime": float(self._uptime0[s.id] + int(t.timestamp()) % 10_000_000),
                "gateway_health.cpu_temperature": round(48 + 6 * tr + 0.4 * (wx.temperature - 10) + g(0, 0.8), 1),
                "gateway_health.cpu_load": round(min(100.0, max(0.0, 12 + 25 * tr + g(0, 3))), 1),
                "gateway_health.backlog": 0,
            }
        raise ValueError(f"no value model for category {c}")

    def _weather(self, t: datetime) -> Weather:
        """The zone's weather at ``t`` (one sky for every sensor of a round)."""
        if self._sky is None or self._sky[0] != t:
            self._sky = (t, weather(t, self.seed))
        return self._sky[1]

    # -- native formats -----------------------------------------------------------------------------
    def _native(self, s: Sensor, t: datetime, rng: random.Random, step: float) -> list[Emitted]:
        v = self.values(s, t, rng, step)
        gw = s.gateway or self._nearest_gateway(s)
        key = s.keys[0]
        ns = to_ns(t)
        iso = t.isoformat(timespec="milliseconds").replace("+00:00", "Z")

        def truth(values: dict, time_ns: int | None = ns) -> tuple[Truth, ...]:
            return tuple(_truth(s.id, q, x, time_ns) for q, x in values.items())

        if s.format == "zigbee2mqtt":
            names = {
                "air_quality.pm2_5": "pm25",
                "air_quality.pm10": "pm10",
                "air_quality.co2": "co2",
                "air_quality.voc": "voc",
                "weather.temperature": "temperature",
                "weather.relative_humidity": "humidity",
                "weather.pressure": "pressure",
                "parking.occupied": "occupancy",
            }
            battery = 100 - (int(t.timestamp()) // 86_400 + len(s.id)) % 40
            lqi = 60 + rng.randrange(150)
            doc: dict[str, object] = {names[q]: x for q, x in v.items()}
            doc |= {"battery": battery, "linkquality": lqi, "last_seen": iso}
            v = v | {"gateway_health.battery": battery, "gateway_health.link_quality": lqi}
            return [Emitted(f"gw/{gw}/zigbee2mqtt/{key}", orjson.dumps(doc), truth(v))]
        if s.format == "tasmota":
            local = t.astimezone(self.registry.timezone(gw)).replace(tzinfo=None, microsecond=0)
            doc = {
                "Time": local.isoformat(),
                "ENERGY": {
                    "TotalStartTime": "2024-01-01T00:00:00",
                    "Total": v["energy.total"],
                    "Yesterday": 1.2,
                    "Today": 0.4,
                    "Power": v["energy.power"],
                    "ApparentPower": v["energy.power"],
                    "ReactivePower": 0,
                    "Factor": v["energy.power_factor"],
                    "Voltage": v["energy.voltage"],
                    "Current": v["energy.current"],
                },
            }
            if "weather.temperature" in v:
                doc["BME280"] = {
                    "Temperature": v["weather.temperature"],
                    "Humidity": v["weather.relative_humidity"],
                    "DewPoint": 5.0,
                    "Pressure": v["weather.pressure"],
                }
                doc["PressureUnit"] = "hPa"
            doc["TempUnit"] = "C"
            tns = to_ns(local.replace(tzinfo=self.registry.timezone(gw)).astimezone(UTC))
            return [Emitted(f"gw/{gw}/tele/{key}/SENSOR", orjson.dumps(doc), truth(v, tns))]
        if s.format == "ble_gateway":
            names = {
                "weather.temperature": "tempc",
                "weather.relative_humidity": "hum",
                "air_quality.pm2_5": "pm25",
                "air_quality.pm10": "pm10",
                "air_quality.co2": "co2",
            }
            v = {q: x for q, x in v.items() if q in names}
            rssi = -55 - rng.randrange(40)
            batt = 100 - (int(t.timestamp()) // 86_400) % 50
            doc = {
                "id": key,
                "name": f"ATC_{key[-8:].replace(':', '')}",
                "rssi": rssi,
                "brand": "Xiaomi",
                "model": "LYWSD03MMC",
                "model_id": "LYWSD03MMC_ATC",
                "type": "THB",
            }
            doc |= {names[q]: x for q, x in v.items()}
            doc |= {"batt": batt}
            v = v | {"gateway_health.rssi": rssi, "gateway_health.battery": batt}
            mac = key.replace(":", "")
            return [Emitted(f"gw/{gw}/home/TheengsGateway/BTtoMQTT/{mac}", orjson.dumps(doc), truth(v, None))]
        if s.format == "esphome":
            # ESPHome publishes one topic per sensor entity: LAeq and LAmax of the interval
            return [
                Emitted(f"gw/{gw}/{key}/sensor/{q.split('.')[1]}/state", f"{x:.1f}".encode(), truth({q: x}, None))
                for q, x in v.items()
            ]
        if s.format == "senml":
            units = {
                "air_quality.pm2_5": ("pm2_5", "ug/m3"),
                "air_quality.pm10": ("pm10", "ug/m3"),
                "air_quality.co2": ("co2", "ppm"),
                "air_quality.no2": ("no2", "ug/m3"),
                "air_quality.o3": ("o3", "ug/m3"),
                "weather.temperature": ("temperature", "Cel"),
                "weather.relative_humidity": ("humidity", "%RH"),
            }
            pack: list[dict[str, object]] = [{"bn": f"{key}:", "bt": t.timestamp()}]
            for j, (q, x) in enumerate(v.items()):
                name, unit = units[q]
                rec: dict[str, object] = {"n": name, "u": unit, "v": x}
                if j == 0:
                    pack[0].update(rec)
                else:
                    pack.append(rec)
            return [Emitted(f"gw/{gw}/senml/{s.id}", orjson.dumps(pack), truth(v))]
        if s.format == "generic_json":
            doc = {"device": key, "time": iso, "readings": v}
            return [Emitted(f"gw/{gw}/json/{key}", orjson.dumps(doc), truth(v))]
        raise ValueError(f"sensor {s.id}: the simulator has no format {s.format!r}")

    def _lorawan(self, s: Sensor, t: datetime, i: int, rng: random.Random, step: float) -> Iterator[Emitted]:
        values = self.values(s, t, rng, step)
        ns = to_ns(t)
        for topic, payload, truth in self.lorawan.events(s, t, i, rng, values):
            yield Emitted(topic, payload, tuple(_truth(s.id, q, x, ns) for q, x in truth))

    # -- passers-by -----------------------------------------------------------------------------------
    def _sightings(self, s: Sensor, t: datetime, step: float) -> Iterator[Emitted]:
        """The phones sniffer ``s`` saw in (t - step, t], in as few messages as fit (usually one)."""
        j = self._probe_index[s.id]
        end_ms = to_ns(t) // 1_000_000
        start_ms = end_ms - round(step * 1000)
        seen = sorted(
            (ms, phone, rssi)
            for first in range(
                (start_ms - round(self._max_walk_s * 1000)) // 1000 // SLOT_S, end_ms // 1000 // SLOT_S + 1
            )
            for k, ms, phone, rssi in self._slot(first)
            if k == j and start_ms < ms <= end_ms
        )
        kind = s.technology
        rows = [
            {"mac": self._mac(phone, kind, ms), "kind": kind, "rssi": rssi, "time": _iso_ms(ms)}
            for ms, phone, rssi in seen
        ]
        gw = s.gateway or self._nearest_gateway(s)
        key = s.keys[0]
        iso = t.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        for c in range(0, max(1, len(rows)), MAX_SIGHTINGS):
            doc = {"device": key, "time": iso, "sightings": rows[c : c + MAX_SIGHTINGS]}
            yield Emitted(f"gw/{gw}/sightings/{key}", orjson.dumps(doc), ())

    def _slot(self, slot: int) -> list[tuple[int, int, int, int]]:
        """Sightings (probe, time in ms, phone, rssi) of the walks that start in minute ``slot``."""
        found = self._slots.get(slot)
        if found is not None:
            return found
        if self._phones is None:
            self._populate()
        rng = random.Random(f"{self.seed}:walks:{slot}")
        t0 = slot * SLOT_S
        local = datetime.fromtimestamp(t0, self.tz)
        ped = pedestrian_intensity(local.hour + local.minute / 60, local.weekday())
        cum, total = self._phone_weights, self._phone_weights[-1]
        share = 1 / (1 + CONTINUE)  # walks entering at a sniffer; the others come from its neighbours
        out = []
        for j, s in enumerate(self._probes):
            lam = ped * PASSERS_PER_5MIN * self._factor[s.id] * SLOT_S / 300 * share
            for _ in range(_poisson(rng, lam)):
                phone = bisect.bisect_right(cum, rng.random() * total)
                ms = t0 * 1000 + rng.randrange(SLOT_S * 1000)
                speed = rng.uniform(*WALK_SPEED)
                way = rng.choice((-1, 1))
                k = j
                while True:
                    if rng.random() < DETECTION:
                        out.append((k, ms, phone, max(-100, min(-35, round(rng.gauss(-72, 9))))))
                    nxt = k + way
                    if not 0 <= nxt < len(self._probes) or rng.random() >= CONTINUE:
                        break
                    ms += round(self._legs[min(k, nxt)] / speed * 1000)
                    k = nxt
        if len(self._slots) >= 4096:
            self._slots.clear()
        self._slots[slot] = out
        return out

    def _populate(self) -> None:
        r = random.Random(f"{self.seed}:phones")
        phones, weights, acc = [], [], 0.0
        for _ in range(POPULATION):
            wifi = bytes(r.choice(_OUIS)) + r.randbytes(3)
            ble = bytes(r.choice(_OUIS)) + r.randbytes(3)
            rotation = r.uniform(*ROTATION_S)
            phones.append((r.random() < RANDOMISED_SHARE, rotation, r.uniform(0, rotation), wifi, ble))
            acc += r.paretovariate(1.2)  # a few regulars, many occasional passers-by
            weights.append(acc)
        self._phones, self._phone_weights = phones, weights

    def _mac(self, phone: int, kind: str, ms: int) -> str:
        assert self._phones is not None  # phone numbers come from _slot, which populates them
        randomised, rotation, phase, wifi, ble = self._phones[phone]
        if randomised:
            epoch = math.floor((ms / 1000 + phase) / rotation)
            raw = hashlib.blake2b(f"{self.seed}:{phone}:{kind}:{epoch}".encode(), digest_size=6).digest()
            raw = bytes([(raw[0] & 0xFC) | 0x02]) + raw[1:]  # locally administered, unicast
        else:
            raw = wifi if kind == "wifi" else ble
        return ":".join(f"{b:02X}" for b in raw)

    def _nearest_gateway(self, s: Sensor) -> str:
        pos = s.position
        assert pos is not None, f"sensor {s.id}: a mobile sensor has no nearest gateway"
        return min(
            self.registry.gateways.values(),
            key=lambda g: (g.position.lat - pos.lat) ** 2 + (g.position.lon - pos.lon) ** 2,
        ).id

    # -- benchmark shapes ---------------------------------------------------------------------------
    def _single(self, values: list, t: datetime) -> Iterator[Emitted]:
        iso = t.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        ns = to_ns(t)
        for s, q, x in values:
            gw = s.gateway or self._nearest_gateway(s)
            key = s.keys[0]
            doc = {"device": key, "time": iso, "readings": {q: x}}
            yield Emitted(f"gw/{gw}/json/{key}", orjson.dumps(doc), (_truth(s.id, q, x, ns),))

    def _senml_pack(self, rows: list) -> Emitted:
        """One SenML pack of a sensor's readings: base name and base time, times relative to it."""
        s, t0 = rows[0][0], rows[0][3]
        gw = s.gateway or self._nearest_gateway(s)
        pack = []
        for j, (_, q, x, t) in enumerate(rows):
            rec = {"n": q, "v": x}
            if j == 0:
                rec = {"bn": f"{s.keys[0]}:", "bt": t0.timestamp(), **rec}
            elif t != t0:
                rec["t"] = (t - t0).total_seconds()
            pack.append(rec)
        return Emitted(
            f"gw/{gw}/senml/{s.id}", orjson.dumps(pack), tuple(_truth(s.id, q, x, to_ns(t)) for _, q, x, t in rows)
        )
