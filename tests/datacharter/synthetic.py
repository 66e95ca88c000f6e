"""A seeded synthetic zone for the attacker tests: raw rows in exactly the shapes the charter job reads.

One UTC day (yesterday, so that it is closed and still inside the pseudonymous retention of 48 h) of

- pedestrian sightings (pseudonymous database, measurement ``sighting``): 10 WiFi/BLE probe counters in a
  2 x 5 grid of streets around (51.213, 4.396), each in its own H3 resolution-10 cell, and ~3,000 phones
  with one to three walks a day (2 to 4 neighbouring counters, a few sightings at each), walks starting
  at hour-level habits with morning, lunch and evening peaks. Tags as the sightings decoder writes them
  (category, cell, gateway, sensor, technology, kind, randomised, subject = 16 hex pseudonym), field rssi.
  Planted: a lone night-time passer-by, the only phone anywhere between 03:00 and 05:00, seen at 4 (cell,
  hour) points.
- energy meters (raw database, measurement ``energy``): 40 meters every 15 min (fields ``total``, kWh
  cumulative, and ``power``, W) in 9 buildings. A building's meters share its res-10 cell; ``connections``
  gives how many grid connections each meter stands for (the registry's ``subjects``). Planted: a bakery
  with a single connection, alone in its res-10 cell.
- mobile air quality (raw database, measurements ``air_quality`` without a ``cell`` tag, fields pm2_5 and
  pm10, and ``position``, fields latitude and longitude, source=gps_payload): 6 city vehicles driving a
  common 3.8 km loop in two shifts, and one planted vehicle that drives part of the loop and then a spur
  to the east that nobody else drives.
- planted in the energy data as the second attack round found them: the bakery's meter box holds a BME280
  whose weather rows (27-28 C while the ovens run, 01:00 to 04:45) arrive under the meter's sensor id; and a
  shop with one connection shares its res-10 cell with a block's meter registered as 9 connections, whose
  manager (the meter's owner) reads his own meter.

``registry(city)`` gives the registry the charter job reads: every sensor with its category, placement, owner
(the block's manager), connections, and the vehicle each tracker moves with.

Everything derives from ``seed``; only the day depends on the clock.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

import h3
import numpy as np
import pandas as pd

from ingest.pepper import pseudonym
from smartzone.registry import Registry, RegistryFile
from storage.lineprotocol import line

NS = 1_000_000_000
MINUTE_NS = 60 * NS
HOUR_NS = 3_600 * NS
DAY_NS = 86_400 * NS
RESOLUTION = 10  # the zone's H3 resolution (the registry's zone.h3_resolution): the sensors' cell tag
CENTRE = (51.213, 4.396)
GATEWAY = "gw-synthetic"
ROWS, COLS = 2, 5  # the probe counters: a grid of 2 x 5 streets

# hour-level habits: relative chance that a walk starts in each hour (nobody walks before 06:00)
WALK_HOURS = {
    6: 1,
    7: 3,
    8: 6,
    9: 4,
    10: 3,
    11: 4,
    12: 6,
    13: 5,
    14: 3,
    15: 3,
    16: 4,
    17: 6,
    18: 5,
    19: 4,
    20: 3,
    21: 2,
    22: 1,
}

# the common loop of the city vehicles (a rectangle of streets, ~3.8 km) and the planted vehicle's route:
# the loop's east and north-east streets, then a spur ~1.8 km to the east and back
LOOP = [(51.2085, 4.3895), (51.2175, 4.3895), (51.2175, 4.4025), (51.2085, 4.4025), (51.2085, 4.3895)]
SPUR = [
    (51.2085, 4.4025),
    (51.2175, 4.4025),
    (51.2175, 4.4280),
    (51.2240, 4.4280),
    (51.2175, 4.4280),
    (51.2175, 4.4025),
    (51.2085, 4.4025),
]

# buildings: (name, meters, connections per meter, load profile); the last one lies in another res-8 cell
BUILDINGS = [
    ("cityhall", 12, 1, "office"),
    ("school", 10, 1, "office"),
    ("block-a", 1, 24, "home"),
    ("block-b", 1, 16, "home"),
    ("shop-d", 3, 1, "shop"),
    ("shop-e", 3, 1, "shop"),
    ("homes-f", 4, 1, "home"),
    ("bakery", 1, 1, "shop"),
    ("shop-g", 1, 1, "shop"),
    ("block-g", 1, 9, "home"),
    ("depot", 5, 1, "office"),
]
SINGLE = "bakery"
SHOP, BLOCK = "en-syn-shop-g-1", "en-syn-block-g-1"  # one res-10 cell: 10 connections, two owners
OWNERS = {BLOCK: "manager-g"}  # the block's manager reads his own meter
OVEN_C = (27.0, 28.0)  # the bakery's meter box while the ovens run


def synthetic_day(now: datetime | None = None) -> int:
    """Start (ns) of yesterday, UTC: a closed day, inside the pseudonymous retention (48 h)."""
    now = now or datetime.now(UTC)
    return (int(now.timestamp()) // 86_400 - 1) * DAY_NS


@dataclass(frozen=True)
class Sniffer:
    sensor: str
    cell: str
    row: int
    col: int


@dataclass
class City:
    day: int  # ns, start of the synthetic UTC day
    sniffers: list[Sniffer]
    sightings: pd.DataFrame  # t, sensor, cell, kind, randomised, subject, rssi
    energy: pd.DataFrame  # t, sensor, cell, total, power
    connections: dict[str, int]  # energy meter -> grid connections it stands for (registry ``subjects``)
    air: pd.DataFrame  # t, sensor, pm2_5, pm10 (mobile sensors: no cell)
    indoor: pd.DataFrame  # t, sensor, cell, temperature: the BME280 in the bakery's meter box
    positions: pd.DataFrame  # t, sensor, latitude, longitude
    lone: str  # pseudonym of the lone night-time passer-by
    single_meter: str  # the meter of the building with a single connection
    unique_vehicle: str  # the sensor of the vehicle on a unique route
    meta: dict = field(default_factory=dict)

    @property
    def end(self) -> int:
        return self.day + DAY_NS

    def without(self, *, lone: bool = False, single: bool = False, vehicle: bool = False) -> City:
        """The same city without some of the planted outliers."""
        s, e, a, p = self.sightings, self.energy, self.air, self.positions
        if lone:
            s = s[s["subject"] != self.lone]
        if single:
            e = e[e["sensor"] != self.single_meter]
        if vehicle:
            a = a[a["sensor"] != self.unique_vehicle]
            p = p[p["sensor"] != self.unique_vehicle]
        return dataclasses.replace(
            self,
            sightings=s.reset_index(drop=True),
            energy=e.reset_index(drop=True),
            air=a.reset_index(drop=True),
            positions=p.reset_index(drop=True),
        )

    # -- line protocol, as the ingest worker writes it -------------------------------------------------
    def pseudonymous_lines(self, sightings: pd.DataFrame | None = None) -> list[str]:
        rows = self.sightings if sightings is None else sightings
        return [
            line(
                "sighting",
                {
                    "category": "pedestrian_flow",
                    "cell": r.cell,
                    "gateway": GATEWAY,
                    "sensor": r.sensor,
                    "technology": "wifi",
                    "kind": r.kind,
                    "randomised": "true" if r.randomised else "false",
                    "subject": r.subject,
                },
                {"rssi": int(r.rssi)},
                int(r.t),
            )
            for r in rows.itertuples(index=False)
        ]

    def energy_lines(self, energy: pd.DataFrame | None = None) -> list[str]:
        rows = self.energy if energy is None else energy
        return [
            line(
                "energy",
                {"category": "energy", "cell": r.cell, "gateway": GATEWAY, "sensor": r.sensor, "technology": "wifi"},
                {"total": float(r.total), "power": float(r.power)},
                int(r.t),
            )
            for r in rows.itertuples(index=False)
        ]

    def mobile_lines(self) -> list[str]:
        out = [
            line(
                "air_quality",
                {"category": "air_quality", "sensor": r.sensor, "technology": "lora"},
                {"pm2_5": float(r.pm2_5), "pm10": float(r.pm10)},
                int(r.t),
            )
            for r in self.air.itertuples(index=False)
        ]
        out += [
            line(
                "position",
                {"category": "air_quality", "sensor": r.sensor, "technology": "lora", "source": "gps_payload"},
                {"latitude": float(r.latitude), "longitude": float(r.longitude)},
                int(r.t),
            )
            for r in self.positions.itertuples(index=False)
        ]
        return out

    def indoor_lines(self) -> list[str]:
        return [
            line(
                "weather",
                {"category": "energy", "cell": r.cell, "gateway": GATEWAY, "sensor": r.sensor, "technology": "wifi"},
                {"temperature": float(r.temperature)},
                int(r.t),
            )
            for r in self.indoor.itertuples(index=False)
        ]

    def write(self, influx, raw_db: str, pseudonymous_db: str, *, energy: pd.DataFrame | None = None) -> None:
        """All rows to a real InfluxDB, in the raw and pseudonymous databases (which must exist)."""
        write_lines(influx, pseudonymous_db, self.pseudonymous_lines())
        write_lines(influx, raw_db, self.energy_lines(energy) + self.mobile_lines() + self.indoor_lines())

    def registry(self, extra: list[dict] | None = None) -> Registry:
        """The synthetic zone's registry: what the charter job knows of each sensor."""
        sensors = [
            {
                "id": s.sensor,
                "keys": [s.sensor],
                "gateway": GATEWAY,
                "technology": "wifi",
                "category": "pedestrian_flow",
                "position": _position(s.cell),
            }
            for s in self.sniffers
        ]
        meters = self.energy.drop_duplicates("sensor")
        for sensor, cell in zip(meters["sensor"], meters["cell"], strict=True):
            entry = {
                "id": sensor,
                "keys": [sensor],
                "gateway": GATEWAY,
                "technology": "wifi",
                "category": "energy",
                "placement": "indoor",
                "subjects": self.connections[sensor],
                "position": _position(cell),
            }
            if sensor in OWNERS:
                entry["owner"] = OWNERS[sensor]
            sensors.append(entry)
        for sensor in sorted(set(self.air["sensor"])):
            sensors.append(
                {
                    "id": sensor,
                    "keys": [sensor],
                    "technology": "cellular",
                    "category": "air_quality",
                    "mobile": True,
                    "vehicle": f"vehicle-{sensor.rsplit('-', 1)[-1]}",
                }
            )
        doc = {
            "zone": {"name": "synthetic", "city": "Antwerp", "h3_resolution": RESOLUTION},
            "gateways": [{"id": GATEWAY, "position": {"lat": CENTRE[0], "lon": CENTRE[1]}}],
            "sensors": sensors + (extra or []),
        }
        return Registry(RegistryFile.model_validate(doc))


def _position(cell: str) -> dict[str, float]:
    lat, lon = h3.cell_to_latlng(cell)
    return {"lat": round(lat, 7), "lon": round(lon, 7)}


def write_lines(influx, database: str, lines: list[str], chunk: int = 5000) -> None:
    for i in range(0, len(lines), chunk):
        influx.write(database, "\n".join(lines[i : i + chunk]).encode())


# -- building the city ----------------------------------------------------------------------------------
def build(seed: int = 20261101, n_devices: int = 3000, day: int | None = None) -> City:
    rng = np.random.default_rng(seed)
    day = synthetic_day() if day is None else day
    sniffers = _sniffers()
    sightings, lone = _sightings(rng, day, sniffers, n_devices)
    energy, connections, single = _energy(rng, day)
    air, positions, unique = _vehicles(rng, day)
    indoor = _indoor(rng, day, energy[energy["sensor"] == single])
    return City(day, sniffers, sightings, energy, connections, air, indoor, positions, lone, single, unique)


def _indoor(rng: np.random.Generator, day: int, meter: pd.DataFrame) -> pd.DataFrame:
    """The BME280 in the bakery's meter box: 19-20 C, 27-28 C while the ovens run (01:00 to 04:45)."""
    t = meter["t"].to_numpy()
    hour = (t - day) / HOUR_NS
    ovens = (hour >= 1) & (hour < 5)
    temp = np.where(ovens, rng.uniform(*OVEN_C, len(t)), rng.uniform(19.0, 20.0, len(t)))
    return pd.DataFrame(
        {
            "t": t,
            "sensor": meter["sensor"].to_numpy(),
            "cell": meter["cell"].to_numpy(),
            "temperature": np.round(temp, 2),
        }
    )


def _sniffers() -> list[Sniffer]:
    out = []
    for row in range(ROWS):
        for col in range(COLS):
            lat = CENTRE[0] + (row - (ROWS - 1) / 2) * 0.0018  # ~200 m between parallel streets
            lon = CENTRE[1] + (col - (COLS - 1) / 2) * 0.0026  # ~180 m between counters along a street
            out.append(Sniffer(f"ped-syn-{row * COLS + col + 1}", h3.latlng_to_cell(lat, lon, RESOLUTION), row, col))
    assert len({s.cell for s in out}) == len(out), "each counter must have its own res-10 cell"
    return out


def _mac(rng: np.random.Generator, randomised: bool) -> str:
    octets = rng.integers(0, 256, size=6)
    first = int(octets[0]) & 0xFC  # unicast
    octets[0] = first | 0x02 if randomised else first
    return ":".join(f"{int(o):02X}" for o in octets)


def _sightings(rng: np.random.Generator, day: int, sniffers: list[Sniffer], n: int) -> tuple[pd.DataFrame, str]:
    pepper = rng.bytes(32)
    hours = np.array(list(WALK_HOURS))
    weights = np.array(list(WALK_HOURS.values()), dtype=float)
    weights /= weights.sum()
    popularity = np.array([2 + (0 < s.col < COLS - 1) for s in sniffers], dtype=float)  # the middle is busier
    popularity /= popularity.sum()
    neighbours = [
        [j for j, o in enumerate(sniffers) if j != i and abs(o.row - s.row) <= 1 and abs(o.col - s.col) <= 1]
        for i, s in enumerate(sniffers)
    ]
    rows: list[tuple] = []
    for _ in range(n):
        randomised = bool(rng.random() < 0.3)
        kind = "wifi" if rng.random() < 0.7 else "ble"
        subject = pseudonym(pepper, _mac(rng, randomised))
        rssi0 = int(rng.integers(-90, -55))
        for _walk in range(int(rng.choice([1, 2, 3], p=[0.4, 0.45, 0.15]))):
            t = day + int(rng.choice(hours, p=weights)) * HOUR_NS + int(rng.integers(0, 60 * MINUTE_NS))
            at = int(rng.choice(len(sniffers), p=popularity))
            for stop in range(int(rng.integers(2, 5))):
                if stop:
                    at = int(rng.choice(neighbours[at]))
                    t += int(rng.integers(5, 30)) * MINUTE_NS
                s = sniffers[at]
                for _ in range(int(rng.integers(1, 4))):
                    t += int(rng.integers(15, 90)) * NS
                    if t < day + DAY_NS:
                        rows.append((t, s.sensor, s.cell, kind, randomised, subject, rssi0 + int(rng.integers(-8, 9))))
    # the lone night-time passer-by: alone in the zone from 03:00 to 05:00, seen at 4 (cell, hour) points
    lone = pseudonym(pepper, _mac(rng, False))
    for sniffer, minute in ((0, 185), (0, 192), (1, 220), (5, 250), (6, 275)):
        s = sniffers[sniffer]
        rows.append((day + minute * MINUTE_NS, s.sensor, s.cell, "wifi", False, lone, -70))
    frame = pd.DataFrame(rows, columns=["t", "sensor", "cell", "kind", "randomised", "subject", "rssi"])
    # one sighting per (subject, sensor, ns): InfluxDB would merge duplicates of a series' timestamp anyway
    frame = frame.drop_duplicates(["subject", "sensor", "t"])
    return frame.sort_values(["t", "sensor"], kind="stable").reset_index(drop=True), lone


# -- energy -------------------------------------------------------------------------------------------
def _load(profile: str, hour: np.ndarray) -> np.ndarray:
    """Relative load (0..1) by hour of day for a building type."""
    if profile == "office":
        return 0.15 + 0.85 * ((hour >= 7.5) & (hour < 18.5))
    if profile == "shop":
        return 0.2 + 0.8 * ((hour >= 6) & (hour < 19)) + 0.3 * ((hour >= 4) & (hour < 7))
    return 0.25 + 0.6 * np.exp(-((hour - 7.5) ** 2) / 2) + 0.9 * np.exp(-((hour - 19.5) ** 2) / 4)  # home


def _energy_cells() -> dict[str, str]:
    parent = h3.latlng_to_cell(*CENTRE, 8)
    kids = sorted(h3.cell_to_children(parent, RESOLUTION))
    inside = [b[0] for b in BUILDINGS[:-1] if b[0] != "block-g"]
    step = len(kids) // len(inside)
    cells = {name: kids[i * step] for i, name in enumerate(inside)}
    cells["block-g"] = cells["shop-g"]
    other = sorted(h3.grid_ring(parent, 2))[0]  # the depot: another res-8 cell, ~1 km away
    cells[BUILDINGS[-1][0]] = h3.cell_to_center_child(other, RESOLUTION)
    assert len(set(cells.values())) == len(BUILDINGS) - 1
    return cells


def _energy(rng: np.random.Generator, day: int) -> tuple[pd.DataFrame, dict[str, int], str]:
    cells = _energy_cells()
    times = day + np.arange(96) * 15 * MINUTE_NS
    hour = (times - day) / HOUR_NS
    frames, connections = [], {}
    single = ""
    for name, meters, per_meter, profile in BUILDINGS:
        for m in range(meters):
            sensor = f"en-syn-{name}-{m + 1}"
            connections[sensor] = per_meter
            if name == SINGLE:
                single = sensor
            peak_w = float(rng.uniform(800, 3000)) * per_meter
            power = peak_w * _load(profile, hour) * rng.uniform(0.9, 1.1, size=len(times))
            total = float(rng.uniform(1_000, 50_000)) + np.concatenate([[0.0], np.cumsum(power[:-1] * 0.25 / 1000)])
            frames.append(
                pd.DataFrame(
                    {
                        "t": times,
                        "sensor": sensor,
                        "cell": cells[name],
                        "total": np.round(total, 3),
                        "power": np.round(power, 1),
                    }
                )
            )
    frame = pd.concat(frames, ignore_index=True).sort_values(["t", "sensor"], kind="stable")
    return frame.reset_index(drop=True), connections, single


# -- vehicles -------------------------------------------------------------------------------------------
def _metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    dlat = (b[0] - a[0]) * 111_195.0
    dlon = (b[1] - a[1]) * 111_195.0 * math.cos(math.radians((a[0] + b[0]) / 2))
    return math.hypot(dlat, dlon)


def _along(route: list[tuple[float, float]], s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions at distances ``s`` (m) along a closed polyline, wrapping around."""
    legs = np.array([_metres(a, b) for a, b in itertools.pairwise(route)])
    ends = np.cumsum(legs)
    s = np.mod(s, ends[-1])
    i = np.searchsorted(ends, s, side="right").clip(max=len(legs) - 1)
    frac = (s - (ends[i] - legs[i])) / legs[i]
    a = np.array(route[:-1])[i]
    b = np.array(route[1:])[i]
    return a[:, 0] + frac * (b[:, 0] - a[:, 0]), a[:, 1] + frac * (b[:, 1] - a[:, 1])


def _vehicles(rng: np.random.Generator, day: int) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    every = 30 * NS
    loop_len = sum(_metres(a, b) for a, b in itertools.pairwise(LOOP))
    drives = []  # (sensor, route, start, end, phase in m)
    for v in range(6):
        for shift in (8, 13):
            start = day + shift * HOUR_NS + v * 2 * MINUTE_NS
            drives.append((f"aq-syn-veh-{v + 1}", LOOP, start, start + 3 * HOUR_NS, loop_len * v / 6))
    unique = "aq-syn-veh-7"
    drives.append((unique, SPUR, day + 9 * HOUR_NS + 7 * MINUTE_NS, day + 11 * HOUR_NS, 0.0))
    air, pos = [], []
    for sensor, route, start, end, phase in drives:
        t = np.arange(start, end, every)
        speed = rng.uniform(5.0, 7.0)
        lat, lon = _along(route, phase + speed * (t - start) / NS)
        pos.append(
            pd.DataFrame({"t": t, "sensor": sensor, "latitude": np.round(lat, 6), "longitude": np.round(lon, 6)})
        )
        pm = (12 + 8 * np.exp(-((lat - 51.213) ** 2 + (lon - 4.396) ** 2) / 2e-5) + rng.normal(0, 1.5, len(t))).clip(
            5, 25
        )
        air.append(
            pd.DataFrame({"t": t + 5 * NS, "sensor": sensor, "pm2_5": np.round(pm, 2), "pm10": np.round(1.6 * pm, 2)})
        )
    return (
        pd.concat(air, ignore_index=True).sort_values(["t", "sensor"], kind="stable").reset_index(drop=True),
        pd.concat(pos, ignore_index=True).sort_values(["t", "sensor"], kind="stable").reset_index(drop=True),
        unique,
    )
