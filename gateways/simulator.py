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
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson

from gateways.lorawan import LoraNetwork
from smartzone.model import to_ns
from smartzone.quantities import QUANTITIES
from smartzone.registry import Registry, Sensor

SHAPES = ("native", "single", "senml")


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


def traffic_intensity(h: float, weekday: int) -> float:
    """0..1 share of peak traffic at local hour ``h``."""
    peak = 1.0 if weekday < 5 else 0.55
    return min(1.0, 0.04 + peak * (0.95 * _bump(h, 8.0, 1.1) + 0.85 * _bump(h, 17.5, 1.4))
               + 0.45 * _bump(h, 13.0, 3.0))


def pedestrian_intensity(h: float, weekday: int) -> float:
    weekend = 1.3 if weekday >= 5 else 1.0
    return min(1.0, 0.02 + weekend * (0.6 * _bump(h, 12.5, 1.5) + 0.7 * _bump(h, 17.5, 1.6)
                                      + 0.3 * _bump(h, 20.5, 1.5)))


class Zone:
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

    def messages(self, start: datetime, rounds: int, step: float = 60.0, shape: str = "native",
                 first_round: int = 0) -> Iterator[Emitted]:
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
                        yield self._native(s, t, rng, step)
                continue
            # the benchmark shapes are generic JSON and SenML: LoRaWAN devices speak neither
            values = [(s, q, v) for s in self.sensors if s.lorawan is None
                      for q, v in self.values(s, t, rng, step).items()]
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
        local = t.astimezone(self.tz)
        h = local.hour + local.minute / 60 + local.second / 3600
        wd = local.weekday()
        f = self._factor[s.id]
        tr = traffic_intensity(h, wd)
        ped = pedestrian_intensity(h, wd)
        g = rng.gauss
        temp = 11.0 + 4.5 * math.sin(2 * math.pi * (h - 9) / 24) + g(0, 0.3)
        hum = min(100.0, max(20.0, 78 - 14 * math.sin(2 * math.pi * (h - 9) / 24) + g(0, 1.5)))
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
            if s.format == "senml":
                out["air_quality.no2"] = round(max(1.0, 12 + 48 * tr * f + g(0, 3)), 1)
            if s.format == "zigbee2mqtt":
                out["air_quality.voc"] = round(max(0, 120 + 200 * tr + g(0, 20)))
            if s.format == "chirpstack":
                out["air_quality.pm1"] = round(pm25 * 0.7, 1)
            return out
        if c == "weather":
            return {
                "weather.temperature": round(temp + g(0, 0.2), 2),
                "weather.relative_humidity": round(hum, 1),
                "weather.pressure": round(1013 + 6 * math.sin(t.timestamp() / 86400 / 3) + g(0, 0.3), 1),
            }
        if c == "noise":
            laeq = 44 + 24 * tr * f + g(0, 1.5)
            return {"noise.laeq": round(laeq, 1), "noise.lamax": round(laeq + 9 + abs(g(0, 3)), 1)}
        if c == "traffic":
            scale = step / 300 * f
            cars = max(0, round(tr * 90 * scale + g(0, 2)))
            return {
                "traffic.cars": cars,
                "traffic.heavy_vehicles": max(0, round(cars * 0.08 + g(0, 0.5))),
                "traffic.cyclists": max(0, round(tr * 35 * scale + g(0, 1))),
                "traffic.pedestrians": max(0, round(ped * 60 * scale + g(0, 1))),
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
            if s.format == "chirpstack":  # a people counter: line crossings, both ways
                return {"pedestrian_flow.people_in": max(0, round(ped * 130 * f * step / 300 + g(0, 2))),
                        "pedestrian_flow.people_out": max(0, round(ped * 110 * f * step / 300 + g(0, 2)))}
            devices = max(0, round(ped * 180 * f * step / 300 + g(0, 3)))
            return {"pedestrian_flow.devices": devices,
                    "pedestrian_flow.randomised_devices": max(0, round(devices * 0.7 + g(0, 1)))}
        if c == "energy":
            office = 1.0 if wd < 5 and 7.5 <= h <= 18 else 0.0
            base_kw = {"school": 3, "momu": 8, "library": 4}.get(next((k for k in ("school", "momu", "library")
                                                                        if k in s.id), ""), 2)
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
                out.update({"weather.temperature": round(temp, 1), "weather.relative_humidity": round(hum, 1),
                            "weather.pressure": round(1013 + g(0, 0.5), 1)})
            return out
        if c == "gateway_health":
            return {
                "gateway_health.uptime": float(self._uptime0[s.id] + int(t.timestamp()) % 10_000_000),
                "gateway_health.cpu_temperature": round(48 + 6 * tr + g(0, 0.8), 1),
                "gateway_health.cpu_load": round(min(100.0, max(0.0, 12 + 25 * tr + g(0, 3))), 1),
                "gateway_health.backlog": 0,
            }
        raise ValueError(f"no value model for category {c}")

    # -- native formats -----------------------------------------------------------------------------
    def _native(self, s: Sensor, t: datetime, rng: random.Random, step: float) -> Emitted:
        v = self.values(s, t, rng, step)
        gw = s.gateway or self._nearest_gateway(s)
        key = s.keys[0]
        ns = to_ns(t)
        iso = t.isoformat(timespec="milliseconds").replace("+00:00", "Z")

        def truth(values: dict, time_ns: int | None = ns) -> tuple[Truth, ...]:
            return tuple(_truth(s.id, q, x, time_ns) for q, x in values.items())

        if s.format == "zigbee2mqtt":
            names = {"air_quality.pm2_5": "pm25", "air_quality.pm10": "pm10", "air_quality.co2": "co2",
                     "air_quality.voc": "voc", "weather.temperature": "temperature",
                     "weather.relative_humidity": "humidity", "weather.pressure": "pressure",
                     "parking.occupied": "occupancy"}
            battery = 100 - (int(t.timestamp()) // 86_400 + len(s.id)) % 40
            lqi = 60 + rng.randrange(150)
            doc = {names[q]: x for q, x in v.items()} | {"battery": battery, "linkquality": lqi, "last_seen": iso}
            v = v | {"gateway_health.battery": battery, "gateway_health.link_quality": lqi}
            return Emitted(f"gw/{gw}/zigbee2mqtt/{key}", orjson.dumps(doc), truth(v))
        if s.format == "tasmota":
            local = t.astimezone(self.registry.timezone(gw)).replace(tzinfo=None, microsecond=0)
            doc: dict = {"Time": local.isoformat(), "ENERGY": {
                "TotalStartTime": "2024-01-01T00:00:00", "Total": v["energy.total"], "Yesterday": 1.2,
                "Today": 0.4, "Power": v["energy.power"], "ApparentPower": v["energy.power"],
                "ReactivePower": 0, "Factor": v["energy.power_factor"], "Voltage": v["energy.voltage"],
                "Current": v["energy.current"]}}
            if "weather.temperature" in v:
                doc["BME280"] = {"Temperature": v["weather.temperature"], "Humidity": v["weather.relative_humidity"],
                                 "DewPoint": 5.0, "Pressure": v["weather.pressure"]}
                doc["PressureUnit"] = "hPa"
            doc["TempUnit"] = "C"
            tns = to_ns(local.replace(tzinfo=self.registry.timezone(gw)).astimezone(UTC))
            return Emitted(f"gw/{gw}/tele/{key}/SENSOR", orjson.dumps(doc), truth(v, tns))
        if s.format == "ble_gateway":
            names = {"weather.temperature": "tempc", "weather.relative_humidity": "hum",
                     "air_quality.pm2_5": "pm25", "air_quality.pm10": "pm10", "air_quality.co2": "co2"}
            v = {q: x for q, x in v.items() if q in names}
            rssi = -55 - rng.randrange(40)
            batt = 100 - (int(t.timestamp()) // 86_400) % 50
            doc = {"id": key, "name": f"ATC_{key[-8:].replace(':', '')}", "rssi": rssi, "brand": "Xiaomi",
                   "model": "LYWSD03MMC", "model_id": "LYWSD03MMC_ATC", "type": "THB"}
            doc |= {names[q]: x for q, x in v.items()}
            doc |= {"batt": batt}
            v = v | {"gateway_health.rssi": rssi, "gateway_health.battery": batt}
            mac = key.replace(":", "")
            return Emitted(f"gw/{gw}/home/TheengsGateway/BTtoMQTT/{mac}", orjson.dumps(doc), truth(v, None))
        if s.format == "esphome":
            # ESPHome publishes one topic per sensor entity; the simulator emits LAeq (the headline value).
            return Emitted(f"gw/{gw}/{key}/sensor/laeq/state", f"{v['noise.laeq']:.1f}".encode(),
                           truth({"noise.laeq": v["noise.laeq"]}, None))
        if s.format == "senml":
            units = {"air_quality.pm2_5": ("pm2_5", "ug/m3"), "air_quality.pm10": ("pm10", "ug/m3"),
                     "air_quality.co2": ("co2", "ppm"), "air_quality.no2": ("no2", "ug/m3"),
                     "weather.temperature": ("temperature", "Cel"), "weather.relative_humidity": ("humidity", "%RH")}
            pack = [{"bn": f"{key}:", "bt": t.timestamp()}]
            for j, (q, x) in enumerate(v.items()):
                name, unit = units[q]
                rec = {"n": name, "u": unit, "v": x}
                if j == 0:
                    pack[0].update(rec)
                else:
                    pack.append(rec)
            return Emitted(f"gw/{gw}/senml/{s.id}", orjson.dumps(pack), truth(v))
        if s.format == "generic_json":
            doc = {"device": key, "time": iso, "readings": v}
            return Emitted(f"gw/{gw}/json/{key}", orjson.dumps(doc), truth(v))
        raise ValueError(f"sensor {s.id}: the simulator has no format {s.format!r}")

    def _lorawan(self, s: Sensor, t: datetime, i: int, rng: random.Random, step: float) -> Iterator[Emitted]:
        values = self.values(s, t, rng, step)
        ns = to_ns(t)
        for topic, payload, truth in self.lorawan.events(s, t, i, rng, values):
            yield Emitted(topic, payload, tuple(_truth(s.id, q, x, ns) for q, x in truth))

    def _nearest_gateway(self, s: Sensor) -> str:
        pos = s.position
        return min(self.registry.gateways.values(),
                   key=lambda g: (g.position.lat - pos.lat) ** 2 + (g.position.lon - pos.lon) ** 2).id

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
        return Emitted(f"gw/{gw}/senml/{s.id}", orjson.dumps(pack),
                       tuple(_truth(s.id, q, x, to_ns(t)) for _, q, x, t in rows))
