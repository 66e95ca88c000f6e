"""The simulated zone's weather: Antwerp's climate by season and hour, with passing weather systems.

A simple climatology, a function of absolute time and the seed only (live rounds and a backfill of the
same minute agree, and the seam between them is smooth):

- Temperature: the monthly mean of Antwerp (KMI normals 1991-2020, rounded), interpolated between
  mid-months, plus a daily cycle (coolest before dawn, warmest mid-afternoon) whose range is the month's
  mean daily range, narrowed under clouds; plus a passing anomaly of a few degrees over days.
- Relative humidity: the monthly mean, lower in the warm afternoon, higher under clouds and in rain.
- Pressure: 1015 hPa plus passing highs and lows; wind speed: the monthly mean at a street-level mast
  (windier in winter and in the afternoon); rain: showers in about 8 % of the hours (more in winter).
- The sun's elevation at the zone, from which illuminance follows (clear-sky illuminance reduced by cloud
  cover, Kasten and Czeplak): 0 lx at night, up to about 100,000 lx on a clear summer noon.

Numbers are what a user of Antwerp's weather expects, not a forecast: good enough to check dashboards,
the charter and the API with honest shapes.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime

LAT, LON = 51.2135, 4.3970  # the zone (Zuid - Sint-Andries)
# monthly normals, January to December
MEAN_T = (3.6, 4.1, 7.0, 10.2, 13.9, 16.8, 18.8, 18.5, 15.4, 11.5, 7.3, 4.3)  # °C
DAILY_RANGE = (5.4, 6.3, 8.1, 10.0, 10.6, 10.6, 10.7, 10.4, 9.1, 7.4, 5.6, 5.0)  # °C, max minus min
MEAN_RH = (87, 83, 78, 72, 72, 73, 73, 75, 80, 85, 88, 89)  # %
MEAN_WIND = (3.9, 3.7, 3.6, 3.2, 3.0, 2.8, 2.8, 2.7, 2.9, 3.2, 3.5, 3.7)  # m/s at a mast in the street canyon
RAIN_HOURS = (0.10, 0.09, 0.08, 0.06, 0.06, 0.06, 0.06, 0.07, 0.07, 0.08, 0.10, 0.10)  # share of wet hours
RAIN_MEAN = (0.9, 0.9, 0.9, 1.1, 1.4, 1.8, 2.0, 2.0, 1.6, 1.2, 1.0, 0.9)  # mm/h in a wet hour
O3_BACKGROUND = (34, 42, 54, 64, 68, 66, 62, 56, 45, 36, 30, 30)  # µg/m³, regional background
_DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class Weather:
    temperature: float  # °C
    relative_humidity: float  # %
    pressure: float  # hPa
    wind_speed: float  # m/s
    rain_rate: float  # mm/h
    illuminance: float  # lx
    sun_elevation: float  # degrees
    cloud: float  # cover, 0 to 1
    ozone_background: float  # µg/m³: regional background plus afternoon photochemistry, before local NO titration


def monthly(table: tuple[float, ...], t: datetime) -> float:
    """``table``'s value at ``t``: the month's normal, interpolated between mid-months (no step at the 1st)."""
    year_start = datetime(t.year, 1, 1, tzinfo=UTC)
    m = (t - year_start).total_seconds() / _DAY_S / 365.25 * 12 - 0.5  # 0 = mid-January
    lo = math.floor(m)
    w = m - lo
    return table[lo % 12] * (1 - w) + table[(lo + 1) % 12] * w


def sun_elevation(t: datetime, lat: float = LAT, lon: float = LON) -> float:
    """The sun's elevation above the horizon in degrees (the Astronomical Almanac's low-precision formulas)."""
    d = (t.timestamp() - 946_728_000) / _DAY_S  # days since J2000.0 (2000-01-01 12:00 UTC)
    g = math.radians(357.529 + 0.98560028 * d)
    q = 280.459 + 0.98564736 * d
    ecl_lon = math.radians(q + 1.915 * math.sin(g) + 0.020 * math.sin(2 * g))
    obliquity = math.radians(23.439 - 0.00000036 * d)
    ra = math.atan2(math.cos(obliquity) * math.sin(ecl_lon), math.cos(ecl_lon))
    dec = math.asin(math.sin(obliquity) * math.sin(ecl_lon))
    sidereal = math.radians((280.46061837 + 360.98564736629 * d + lon) % 360)
    ha = sidereal - ra
    la = math.radians(lat)
    s = math.sin(la) * math.sin(dec) + math.cos(la) * math.cos(dec) * math.cos(ha)
    return math.degrees(math.asin(max(-1.0, min(1.0, s))))


def clear_sky_illuminance(elevation: float) -> float:
    """Horizontal illuminance under a clear sky (lx): direct and diffuse daylight; civil twilight fades to 0."""
    if elevation <= -6:
        return 0.0
    if elevation <= 0:
        return 400.0 * (1 + elevation / 6) ** 2
    s = math.sin(math.radians(elevation))
    return 400.0 + 128_000 * s * math.exp(-0.21 / s) + 17_000 * s**0.5


def _waves(t: datetime, seed: int, what: str) -> float:
    """A smooth anomaly of about unit spread over days: passing weather systems, seeded, of absolute time."""
    r = random.Random(f"{seed}:climate:{what}")
    days = t.timestamp() / _DAY_S
    total = 0.0
    for period in (2.3, 3.7, 5.9, 9.4):
        total += math.sin(2 * math.pi * days / (period * r.uniform(0.9, 1.1)) + r.uniform(0, 2 * math.pi))
    return total / math.sqrt(2.0)  # four waves of amplitude 1: unit standard deviation


def _rain(t: datetime, seed: int) -> float:
    """The rain rate of ``t``'s hour (mm/h): showers come and go by the hour, more often in wet spells."""
    hour = math.floor(t.timestamp() / 3600)
    r = random.Random(f"{seed}:rain:{hour}")
    spell = 1.0 + 0.8 * _waves(t, seed, "wet")  # wet spells: rain is more likely for a few days
    if r.random() >= monthly(RAIN_HOURS, t) * max(0.0, spell):
        return 0.0
    return round(r.expovariate(1 / monthly(RAIN_MEAN, t)), 1)


def weather(t: datetime, seed: int = 42) -> Weather:
    """The zone's weather at ``t`` (any time zone; the daily cycle follows the sun, i.e. UTC + 20 min here)."""
    t = t.astimezone(UTC)
    solar_h = (t.hour + t.minute / 60 + t.second / 3600 + LON / 15) % 24  # local mean solar time
    rain = _rain(t, seed)
    cloud = min(1.0, max(0.05, 0.6 + 0.25 * _waves(t, seed, "cloud") + (0.3 if rain else 0.0)))
    # coolest at 05:00, warmest at 15:00 solar time (a two-harmonic daily cycle); clouds narrow the range
    x = 2 * math.pi * (solar_h - 15) / 24
    cycle = (math.cos(x) + 0.25 * math.cos(2 * x + 0.6)) / 1.2
    amplitude = monthly(DAILY_RANGE, t) / 2 * (1.25 - 0.6 * cloud)
    temperature = monthly(MEAN_T, t) + 2.5 * _waves(t, seed, "temperature") + amplitude * cycle
    humidity = monthly(MEAN_RH, t) - 2.5 * amplitude * cycle + 10 * (cloud - 0.6) + (8 if rain else 0)
    wind = monthly(MEAN_WIND, t) * (1 + 0.25 * math.cos(2 * math.pi * (solar_h - 14) / 24))
    wind *= max(0.2, 1 + 0.35 * _waves(t, seed, "wind"))
    elevation = sun_elevation(t)
    lux = clear_sky_illuminance(elevation) * (1 - 0.75 * cloud**3.4)
    # ozone: the regional background, made by sunlight through the afternoon (it lags the sun by ~2 h)
    lagged = sun_elevation(datetime.fromtimestamp(t.timestamp() - 7200, UTC))
    ozone = monthly(O3_BACKGROUND, t) * (0.55 + 0.7 * max(0.0, math.sin(math.radians(lagged))) * (1.2 - 0.6 * cloud))
    return Weather(
        temperature=temperature,
        relative_humidity=min(100.0, max(25.0, humidity)),
        pressure=1015.0 + 8.0 * _waves(t, seed, "pressure") - (3.0 if rain else 0.0),
        wind_speed=wind,
        rain_rate=rain,
        illuminance=lux,
        sun_elevation=elevation,
        cloud=cloud,
        ozone_background=ozone,
    )
