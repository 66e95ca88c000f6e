"""The vocabulary of quantities every decoder maps into.

A quantity key is ``<category>.<leaf>``. Storage writes it to the measurement named after the
category and the field named after the leaf, so the unit lives here and never in a Reading: no
Reading can carry a wrong unit. Units are SenML symbols (RFC 8428 / RFC 8798) or, where SenML has
none, UCUM case-sensitive codes (``ug/m3``, ``hPa``, ``km/h``, ``ppb``).

Adding a quantity means adding a row (Home Assistant's and TTN's ``payload.json`` way).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

CATEGORIES: tuple[str, ...] = (
    "air_quality",
    "noise",
    "traffic",
    "parking",
    "pedestrian_flow",
    "energy",
    "weather",
    "gateway_health",
)

Kind = Literal["float", "int", "bool"]


@dataclass(frozen=True, slots=True)
class Quantity:
    key: str
    unit: str
    min: float | None
    max: float | None
    kind: Kind = "float"
    description: str = ""
    category: str = field(init=False)  # the measurement: the part of the key before the dot
    field: str = field(init=False)  # the InfluxDB field: the part after it

    def __post_init__(self) -> None:
        category, _, leaf = self.key.partition(".")
        object.__setattr__(self, "category", category)
        object.__setattr__(self, "field", leaf)


def _q(key: str, unit: str, lo: float | None, hi: float | None, kind: Kind = "float", description: str = ""):
    return Quantity(key, unit, lo, hi, kind, description)


_ROWS: tuple[Quantity, ...] = (
    # air quality
    _q("air_quality.co2", "ppm", 0, 40_000, description="carbon dioxide mole fraction"),
    _q("air_quality.pm1", "ug/m3", 0, 2_000, description="particulate matter below 1 µm"),
    _q("air_quality.pm2_5", "ug/m3", 0, 2_000, description="particulate matter below 2.5 µm"),
    _q("air_quality.pm10", "ug/m3", 0, 2_000, description="particulate matter below 10 µm"),
    _q("air_quality.no2", "ug/m3", 0, 2_000, description="nitrogen dioxide"),
    _q("air_quality.o3", "ug/m3", 0, 2_000, description="ozone"),
    _q("air_quality.voc", "ppb", 0, 100_000, description="total volatile organic compounds"),
    _q("air_quality.voc_index", "/", 0, 500, description="Sensirion VOC index (dimensionless)"),
    # weather (also measured by air-quality and BLE thermometers)
    _q("weather.temperature", "Cel", -50, 70, description="air temperature"),
    _q("weather.relative_humidity", "%RH", 0, 100, description="relative humidity"),
    _q("weather.pressure", "hPa", 800, 1_100, description="barometric pressure"),
    _q("weather.illuminance", "lx", 0, 200_000, description="illuminance"),
    _q("weather.wind_speed", "m/s", 0, 100, description="wind speed"),
    _q("weather.rain_rate", "mm/h", 0, 500, description="precipitation rate"),
    # noise
    _q("noise.laeq", "dB", 0, 194, description="A-weighted equivalent continuous sound level (dB(A))"),
    _q("noise.lamax", "dB", 0, 194, description="A-weighted maximum sound level (dB(A))"),
    _q("noise.lamin", "dB", 0, 194, description="A-weighted minimum sound level (dB(A))"),
    # traffic (Telraam-style classes, counts per reporting interval)
    _q("traffic.cars", "count", 0, 100_000, "int", "cars counted in the interval"),
    _q("traffic.heavy_vehicles", "count", 0, 100_000, "int", "vans, lorries and buses counted"),
    _q("traffic.cyclists", "count", 0, 100_000, "int", "cyclists counted"),
    _q("traffic.pedestrians", "count", 0, 100_000, "int", "pedestrians counted"),
    _q("traffic.speed_mean", "km/h", 0, 250, description="mean vehicle speed"),
    # parking
    _q("parking.occupied", "/", None, None, "bool", "single bay: a vehicle is present"),
    _q("parking.occupied_spaces", "count", 0, 10_000, "int", "zone counter: occupied spaces"),
    _q("parking.free_spaces", "count", 0, 10_000, "int", "zone counter: free spaces"),
    # pedestrian flows (WiFi/BLE probe counters, people counters)
    _q("pedestrian_flow.devices", "count", 0, 1_000_000, "int", "distinct devices seen in the interval"),
    _q(
        "pedestrian_flow.randomised_devices",
        "count",
        0,
        1_000_000,
        "int",
        "distinct devices with a randomised (locally administered) MAC",
    ),
    _q("pedestrian_flow.people", "count", 0, 1_000_000, "int", "people counted crossing a line"),
    _q("pedestrian_flow.people_in", "count", 0, 1_000_000, "int", "people counted crossing a line inwards"),
    _q("pedestrian_flow.people_out", "count", 0, 1_000_000, "int", "people counted crossing a line outwards"),
    # energy
    _q("energy.power", "W", -10_000_000, 10_000_000, description="active power"),
    _q("energy.total", "kWh", 0, 1e12, description="energy meter reading"),
    _q("energy.voltage", "V", 0, 1_000, description="mains voltage"),
    _q("energy.current", "A", 0, 10_000, description="current"),
    _q("energy.power_factor", "/", -1, 1, description="power factor"),
    # device and gateway health
    _q("gateway_health.battery", "%EL", 0, 100, description="battery level"),
    _q("gateway_health.battery_voltage", "V", 0, 60, description="battery voltage"),
    _q("gateway_health.link_quality", "/", 0, 255, "int", "Zigbee link quality indicator (LQI)"),
    _q("gateway_health.rssi", "dBm", -200, 30, description="received signal strength"),
    _q("gateway_health.uptime", "s", 0, 1e10, description="uptime"),
    _q("gateway_health.cpu_temperature", "Cel", -40, 125, description="CPU temperature"),
    _q("gateway_health.cpu_load", "%", 0, 100, description="CPU load"),
    _q("gateway_health.backlog", "count", 0, 1e9, "int", "messages waiting on the gateway"),
    # the gateway agent's heartbeat (gw/<id>/health, gateways/agent/health.py) and status (gw/<id>/status)
    _q("gateway_health.backlog_bytes", "B", 0, 1e13, "int", "bytes of the gateway agent's spool"),
    _q("gateway_health.backlog_age", "s", 0, 1e10, description="age of the oldest message waiting on the gateway"),
    _q("gateway_health.dropped", "count", 0, 1e12, "int", "messages the agent dropped when its spool was full"),
    _q("gateway_health.refused", "count", 0, 1e12, "int", "messages the central broker refused (ACL)"),
    _q("gateway_health.unheard", "count", 0, 1e12, "int", "messages the centre had no reader for yet (resent)"),
    _q("gateway_health.memory_available", "B", 0, 1e13, "int", "memory available (MemAvailable)"),
    _q("gateway_health.memory_used", "%", 0, 100, description="memory in use"),
    _q("gateway_health.disk_free", "B", 0, 1e15, "int", "free space on the spool's file system"),
    _q("gateway_health.clock_synchronised", "/", None, None, "bool", "the gateway's clock is NTP-synchronised"),
    _q("gateway_health.online", "/", None, None, "bool", "the agent's link to the centre: online or last will"),
    _q("gateway_health.zigbee_present", "/", None, None, "bool", "the Zigbee adapter's serial device exists"),
    _q("gateway_health.zigbee_heard_ago", "s", 0, 1e10, description="since the agent last relayed a Zigbee message"),
    _q("gateway_health.ble_present", "/", None, None, "bool", "the Bluetooth controller (hci) exists"),
    _q("gateway_health.ble_heard_ago", "s", 0, 1e10, description="since the agent last relayed a BLE message"),
    _q("gateway_health.lora_present", "/", None, None, "bool", "the LoRa concentrator's SPI device exists"),
    _q("gateway_health.lora_heard_ago", "s", 0, 1e10, description="since the agent last relayed a LoRa event"),
    # the gateway agent's self-test (gw/<id>/selftest, retained): how many of its checks failed
    _q("gateway_health.selftest_failed", "count", 0, 1e6, "int", "checks the gateway's last self-test failed"),
    _q(
        "gateway_health.link_margin",
        "dB",
        -32,
        64,
        "int",
        "LoRaWAN DevStatusAns demodulation margin of the device's last uplink",
    ),
    _q("gateway_health.external_power", "/", None, None, "bool", "the device runs on external power"),
)

QUANTITIES: dict[str, Quantity] = {q.key: q for q in _ROWS}


def _check_vocabulary() -> None:
    fields: set[tuple[str, str]] = set()
    for q in _ROWS:
        if q.category not in CATEGORIES:
            raise ValueError(f"quantity {q.key}: unknown category {q.category}")
        if not q.field.isidentifier() or not q.field.isascii():  # written to line protocol unescaped
            raise ValueError(f"quantity {q.key}: the leaf must be a plain identifier")
        if (q.category, q.field) in fields:
            raise ValueError(f"quantity {q.key}: duplicate field")
        fields.add((q.category, q.field))


_check_vocabulary()
