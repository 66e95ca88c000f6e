"""The sensor registry: which gateway-local device is which sensor, where it is, what it measures.

Loaded from a YAML file the operator edits (``gateways/registry/antwerp.yaml`` is the demo's).
A device is found by its gateway-local key: a zigbee2mqtt friendly name or IEEE address, a BLE MAC,
a Tasmota topic, an ESPHome node name, a SenML base name, a generic-JSON device id. Keys are
looked up on the gateway the message came through first, then among keys valid on any gateway
(BLE tags heard by several gateways).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cached_property
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import h3
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from smartzone.errors import ConfigurationError
from smartzone.quantities import CATEGORIES, QUANTITIES

_ID = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
TECHNOLOGIES = ("ble", "zigbee", "wifi", "lora", "wired", "cellular")
# where a sensor is: in the street (public_space), on private premises (a shop front, a courtyard, a meter box),
# or indoors (a classroom, a flat). A sensor off the public space measures a household or a business: the
# data charter names, per dataset, which placements it takes (deny by default: public space only).
PLACEMENTS = ("public_space", "private_premises", "indoor")
Placement = Literal["public_space", "private_premises", "indoor"]
_MAC = re.compile(r"(?:[0-9A-Fa-f]{2}[:-]?){5}[0-9A-Fa-f]{2}")
_EUI = re.compile(r"[0-9a-f]{16}")  # LoRaWAN DevEUI / JoinEUI / gateway id, as ChirpStack writes them
# the gateway_ID of sx1302_hal's example global_conf.json and a common factory value: an unconfigured concentrator
PLACEHOLDER_EUIS = ("aa555a0000000000", "0101010101010101")
HARDWARE = ("raspberry-pi-4", "raspberry-pi-5")
CONCENTRATORS = ("rak2287", "rak5146")  # SX1302 / SX1303 mPCIe modules on their Pi HAT, SPI
ZIGBEE_ADAPTERS = ("zstack", "zboss")  # zigbee2mqtt's adapter: CC2652 (Z-Stack), nRF52840 (ZBOSS, experimental)


def normalise_key(key: str) -> str:
    """Canonical form of a device key: MAC addresses upper-case with colons, the rest as is."""
    k = key.strip()
    if len(k) == 16 and _EUI.fullmatch(k.lower()):  # a DevEUI: ChirpStack's lower-case hex
        return k.lower()
    if _MAC.fullmatch(k):
        hexdigits = re.sub(r"[:-]", "", k).upper()
        return ":".join(hexdigits[i : i + 2] for i in range(0, 12, 2))
    return k


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Position(_Strict):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class Zone(_Strict):
    name: str
    city: str
    timezone: str = "UTC"
    h3_resolution: int = Field(default=10, ge=0, le=15)
    description: str = ""

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v


def _identifier(v: str, what: str) -> str:
    if not _ID.fullmatch(v):
        raise ValueError(f"{what} {v!r}: use lower-case letters, digits, '-', '_' or '.'")
    return v


def _eui(v: str, what: str) -> str:
    if not _EUI.fullmatch(v):
        raise ValueError(f"{what} {v!r}: 16 lower-case hexadecimal digits (an EUI-64)")
    return v


class CentralBroker(_Strict):
    """Where a gateway's agent reaches the central broker: its TLS listener."""

    host: str = Field(min_length=1, pattern=r"^[A-Za-z0-9.:-]+$")
    port: int = Field(default=8883, ge=1, le=65535)


class Concentrator(_Strict):
    """A LoRa concentrator HAT on the Pi's SPI bus (SX1302 / SX1303), reset through a GPIO line."""

    model: Literal["rak2287", "rak5146"]
    spi_device: str = Field(default="/dev/spidev0.0", pattern=r"^/dev/spidev[0-9]+\.[0-9]+$")
    reset_gpio: int = Field(default=17, ge=0, le=53)
    gpio_chip: str | None = Field(default=None, pattern=r"^gpiochip[0-9]+$")  # default: the hardware's


class ZigbeeAdapter(_Strict):
    """The Zigbee coordinator zigbee2mqtt drives: a CC2652 (``zstack``) or an nRF52840 (``zboss``)."""

    adapter: Literal["zstack", "zboss"]
    serial: str = Field(default="/dev/ttyUSB0", pattern=r"^/dev/[A-Za-z0-9/_.:-]+$")


class Radios(_Strict):
    """The Pi's own radios the gateway uses: its Bluetooth adapter (BLE) and WiFi interface, and optionally an
    experimental LoRa radio for protocol experiments (``lora-experimental``: its device path, e.g. an SX1276
    module on ``/dev/spidev1.0`` or a USB one on ``/dev/ttyACM0``), never the LoRaWAN service concentrator."""

    ble: str | None = Field(default=None, pattern=r"^hci[0-9]+$")
    wifi: str | None = Field(default=None, pattern=r"^wlan[0-9]+$")
    lora_experimental: str | None = Field(default=None, alias="lora-experimental", pattern=r"^/dev/[A-Za-z0-9/_.:-]+$")


class PiGateway(_Strict):
    """What the Raspberry Pi reference gateway needs to be rendered (``smartzone gateway render``)."""

    hardware: Literal["raspberry-pi-4", "raspberry-pi-5"]
    central: CentralBroker
    concentrator: Concentrator | None = None
    zigbee: ZigbeeAdapter | None = None
    radios: Radios = Field(default_factory=Radios)

    @property
    def gpio_chip(self) -> str:
        """The GPIO chip of the concentrator's reset line: the Pi 5's header is on ``gpiochip4`` (RP1)."""
        if self.concentrator is not None and self.concentrator.gpio_chip:
            return self.concentrator.gpio_chip
        return "gpiochip4" if self.hardware == "raspberry-pi-5" else "gpiochip0"

    @model_validator(mode="after")
    def _chip(self) -> PiGateway:
        c = self.concentrator
        if c is not None and c.gpio_chip and self.hardware == "raspberry-pi-5" and c.gpio_chip != "gpiochip4":
            raise ValueError(f"concentrator.gpio_chip {c.gpio_chip!r}: a Raspberry Pi 5's header GPIOs are gpiochip4")
        lora = self.radios.lora_experimental
        if c is not None and lora is not None and lora == c.spi_device:
            raise ValueError(
                f"radios.lora-experimental {lora!r} is the LoRaWAN service concentrator's device: experiments "
                "never get the service concentrator; give a separate LoRa radio"
            )
        return self

    @property
    def experiment_radios(self) -> frozenset[str]:
        """The radios protocol experiments may take: ble and wifi (``radios``), zigbee (``zigbee``), and
        lora-experimental only where ``radios.lora-experimental`` declares one (never the concentrator)."""
        out = {name for name in ("ble", "wifi") if getattr(self.radios, name) is not None}
        if self.zigbee is not None:
            out.add("zigbee")
        if self.radios.lora_experimental is not None:
            out.add("lora-experimental")
        return frozenset(out)


class Gateway(_Strict):
    id: str
    name: str = ""
    position: Position
    timezone: str | None = None  # defaults to the zone's
    technologies: tuple[str, ...] = ()
    eui: str | None = None  # LoRa gateways: the gateway id (EUI-64) ChirpStack knows it by
    pi: PiGateway | None = None  # the Raspberry Pi reference gateway's hardware and link (gateway render)
    # the part of the zone the gateway stands in (an experiment may ask for gateways by zone: {count, radio, zone})
    area: str | None = None

    @field_validator("area")
    @classmethod
    def _area(cls, v: str | None) -> str | None:
        return None if v is None else _identifier(v, "gateway area")

    @field_validator("eui")
    @classmethod
    def _gw_eui(cls, v: str | None) -> str | None:
        if v is None:
            return None
        if v.lower() in PLACEHOLDER_EUIS:
            raise ValueError(f"gateway eui {v!r} is a placeholder of an unconfigured concentrator: give its real EUI")
        return _eui(v, "gateway eui")

    @model_validator(mode="after")
    def _pi_matches(self) -> Gateway:
        pi = self.pi
        if pi is None:
            return self
        has = set(self.technologies)
        if ("lora" in has) != (pi.concentrator is not None) or (pi.concentrator is not None) != (self.eui is not None):
            raise ValueError(f"gateway {self.id}: a LoRa gateway (technology lora) needs both eui and pi.concentrator")
        if ("zigbee" in has) != (pi.zigbee is not None):
            raise ValueError(f"gateway {self.id}: a Zigbee gateway (technology zigbee) needs pi.zigbee, and only it")
        if ("ble" in has) != (pi.radios.ble is not None):
            raise ValueError(f"gateway {self.id}: a BLE gateway (technology ble) needs pi.radios.ble, and only it")
        return self

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return _identifier(v, "gateway id")

    @field_validator("technologies")
    @classmethod
    def _techs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [t for t in v if t not in TECHNOLOGIES]
        if bad:
            raise ValueError(f"unknown technologies {bad}; known: {', '.join(TECHNOLOGIES)}")
        return v


class DeviceProfile(_Strict):
    """A LoRaWAN device profile: how ChirpStack talks to a kind of device, and who decodes its frames.

    ``codec`` names our codec (``ingest/codecs``) for the raw ``data`` of uplinks; ``chirpstack_codec``
    is the codec ChirpStack itself runs (``cayenne_lpp``: ChirpStack's built-in one, whose result
    arrives as the event's ``object``). One of the two decodes the frames.
    """

    name: str
    codec: str | None = None
    chirpstack_codec: Literal["none", "cayenne_lpp"] = "none"
    description: str = ""
    vendor: str = ""
    region: str = "EU868"
    mac_version: str = "LORAWAN_1_0_3"
    regional_parameters_revision: str = "RP002_1_0_3"
    adr_algorithm: str = "default"
    supports_otaa: bool = True
    supports_class_c: bool = False
    uplink_interval: int = Field(default=600, ge=1)  # seconds; ChirpStack marks a device inactive after it

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _identifier(v, "device profile")

    @model_validator(mode="after")
    def _decoded(self) -> DeviceProfile:
        if self.codec is None and self.chirpstack_codec == "none":
            raise ValueError(f"device profile {self.name}: give a codec or a chirpstack_codec")
        return self


class LoraDevice(_Strict):
    """A sensor's LoRaWAN identity. Its DevEUI is its key; its AppKey is a secret kept outside the
    registry (``chirpstack.keys_file``)."""

    device_profile: str
    join_eui: str = "0000000000000000"

    @field_validator("join_eui")
    @classmethod
    def _join_eui(cls, v: str) -> str:
        return _eui(v, "join_eui")


class LoraWan(_Strict):
    """The ChirpStack application the zone's LoRaWAN devices belong to, and their device profiles."""

    application: str = "smart-zone"
    description: str = ""
    device_profiles: list[DeviceProfile] = Field(default_factory=list)


class Sensor(_Strict):
    id: str
    gateway: str | None = None  # None: its keys are valid on any gateway
    keys: tuple[str, ...] = Field(min_length=1)
    technology: str
    category: str
    format: str = ""  # the decoder its messages arrive in (zigbee2mqtt, tasmota, ...): informative
    model: str = ""
    description: str = ""
    position: Position | None = None
    mobile: bool = False
    fields: dict[str, str] = Field(default_factory=dict)  # native field name -> quantity key
    lorawan: LoraDevice | None = None  # LoRaWAN sensors: keys[0] is the DevEUI
    # how many of the charter's subjects one sensor stands for: the connections behind a building's energy
    # meter, the spaces a parking-zone counter watches (the charter's k counts subjects, not sensors)
    subjects: int = Field(default=1, ge=1, le=1_000_000)
    placement: Placement = "public_space"
    # who can read the sensor's own values (a meter's owner: the household, the business, the block's
    # manager): the contributor the charter's magnitude rules protect against and count. Default: the sensor.
    owner: str | None = None
    # mobile sensors: the vehicle (or person) the sensor moves with; k counts vehicles, not trackers.
    # Default: the sensor itself (one tracker, one vehicle).
    vehicle: str | None = None
    # how often the sensor reports, seconds: the readings a day of it should bring (the charter job's coverage).
    # Default: its LoRaWAN device profile's uplink_interval, else the registry's reporting_intervals[category].
    interval: int | None = Field(default=None, ge=1, le=86_400)
    # when the sensor was put up and taken down (UTC; a date means its midnight): outside that span it is not
    # expected to report. Default: always there.
    installed: datetime | None = None
    removed: datetime | None = None

    @field_validator("installed", "removed", mode="before")
    @classmethod
    def _utc(cls, v: object) -> object:
        if isinstance(v, date) and not isinstance(v, datetime):
            return datetime(v.year, v.month, v.day, tzinfo=UTC)
        return v

    @field_validator("installed", "removed")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        return v if v is None or v.tzinfo is not None else v.replace(tzinfo=UTC)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return _identifier(v, "sensor id")

    @field_validator("owner", "vehicle")
    @classmethod
    def _subject_ids(cls, v: str | None) -> str | None:
        return None if v is None else _identifier(v, "owner or vehicle id")

    @property
    def owner_id(self) -> str:
        """The data owner of the sensor's values (the sensor itself when the registry names none)."""
        return self.owner or f"sensor:{self.id}"

    @property
    def vehicle_id(self) -> str:
        """The subject a mobile sensor moves with (the sensor itself when the registry names none)."""
        return self.vehicle or f"sensor:{self.id}"

    @field_validator("technology")
    @classmethod
    def _tech(cls, v: str) -> str:
        if v not in TECHNOLOGIES:
            raise ValueError(f"unknown technology {v!r}; known: {', '.join(TECHNOLOGIES)}")
        return v

    @field_validator("category")
    @classmethod
    def _cat(cls, v: str) -> str:
        if v not in CATEGORIES:
            raise ValueError(f"unknown category {v!r}; known: {', '.join(CATEGORIES)}")
        return v

    @field_validator("fields")
    @classmethod
    def _fields(cls, v: dict[str, str]) -> dict[str, str]:
        bad = {k: q for k, q in v.items() if q not in QUANTITIES}
        if bad:
            raise ValueError(f"fields map to unknown quantities: {bad}")
        return v

    @model_validator(mode="after")
    def _where(self) -> Sensor:
        if self.mobile == (self.position is not None):
            raise ValueError(f"sensor {self.id}: give either a fixed position or mobile: true")
        if (self.technology == "lora") != (self.lorawan is not None):
            raise ValueError(f"sensor {self.id}: LoRa sensors, and only they, need a lorawan section")
        if self.vehicle is not None and not self.mobile:
            raise ValueError(f"sensor {self.id}: only mobile sensors move with a vehicle")
        if self.lorawan is not None:
            if self.gateway is not None:
                raise ValueError(f"sensor {self.id}: a LoRaWAN device is heard by any gateway; leave gateway out")
            _eui(self.keys[0], f"sensor {self.id}: keys[0] (the DevEUI)")
        if self.installed is not None and self.removed is not None and self.removed <= self.installed:
            raise ValueError(f"sensor {self.id}: removed must come after installed")
        return self


class Place(_Strict):
    """A named place of the zone: a street or a neighbourhood. Cells are named after the nearest ones."""

    name: str = Field(min_length=1)
    kind: Literal["street", "neighbourhood"]
    position: Position


class RegistryFile(_Strict):
    zone: Zone
    gateways: list[Gateway]
    sensors: list[Sensor]
    lorawan: LoraWan = Field(default_factory=LoraWan)
    places: list[Place] = Field(default_factory=list)
    # how often sensors of a category report, seconds, unless a sensor (``interval``) or its LoRaWAN device
    # profile says otherwise: what the charter job's coverage expects
    reporting_intervals: dict[str, int] = Field(default_factory=dict)

    @field_validator("reporting_intervals")
    @classmethod
    def _intervals(cls, v: dict[str, int]) -> dict[str, int]:
        bad = sorted(set(v) - set(CATEGORIES))
        if bad:
            raise ValueError(f"reporting_intervals: unknown categories {bad}; known: {', '.join(CATEGORIES)}")
        wrong = sorted(k for k, s in v.items() if not 1 <= s <= 86_400)
        if wrong:
            raise ValueError(f"reporting_intervals: {wrong}: give seconds between 1 and 86400")
        return v


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of the YAML node at a pydantic error location (the deepest node that exists)."""
    line = None
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            node = None
    if node is not None:
        line = node.start_mark.line + 1
    return line


def _located(exc: ValidationError, path: Path) -> str:
    """One line per validation error: ``line N: gateways.0.pi.hardware: <message>``."""
    try:
        root = yaml.compose(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        root = None
    out = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        line = _line_of(root, loc)
        where = ".".join(str(p) for p in loc) or "(top)"
        out.append(f"  line {line if line is not None else '?'}: {where}: {err['msg']}")
    return "\n".join(out)


@dataclass(frozen=True, slots=True)
class SensorInfo:
    """A resolved sensor as the pipeline needs it: everything for the tag set, precomputed."""

    id: str
    gateway_id: str | None
    technology: str
    category: str
    cell: str  # H3 cell at the zone's resolution, "" for mobile sensors
    fields: dict[str, str]


class Registry:
    """The loaded registry with its look-up index. Immutable; reload by loading the file again."""

    def __init__(self, doc: RegistryFile, path: Path | None = None) -> None:
        self.doc = doc
        self.path = path
        self.gateways = {g.id: g for g in doc.gateways}
        self.sensors = {s.id: s for s in doc.sensors}
        self._zone_tz = ZoneInfo(doc.zone.timezone)
        self._timezones: dict[str | None, ZoneInfo] = {
            g.id: ZoneInfo(g.timezone) if g.timezone else self._zone_tz for g in doc.gateways
        }
        self._index: dict[tuple[str | None, str], SensorInfo] = {}
        self._sensor_cells: dict[str, str] = {}
        problems: list[str] = []
        if len(self.gateways) != len(doc.gateways):
            problems.append("duplicate gateway ids")
        if len(self.sensors) != len(doc.sensors):
            problems.append("duplicate sensor ids")
        for s in doc.sensors:
            if s.gateway is not None and s.gateway not in self.gateways:
                problems.append(f"sensor {s.id}: unknown gateway {s.gateway!r}")
            info = SensorInfo(
                id=s.id,
                gateway_id=s.gateway,
                technology=s.technology,
                category=s.category,
                cell=h3.latlng_to_cell(s.position.lat, s.position.lon, doc.zone.h3_resolution) if s.position else "",
                fields=dict(s.fields),
            )
            for key in s.keys:
                k = (s.gateway, normalise_key(key))
                if k in self._index:
                    problems.append(f"sensor {s.id}: key {key!r} already belongs to {self._index[k].id}")
                self._index[k] = info
        self.device_profiles = {p.name: p for p in doc.lorawan.device_profiles}
        if len(self.device_profiles) != len(doc.lorawan.device_profiles):
            problems.append("duplicate device profile names")
        self.lora_gateways = {g.eui: g for g in doc.gateways if g.eui}
        if len(self.lora_gateways) != len([g for g in doc.gateways if g.eui]):
            problems.append("duplicate gateway euis")
        for s in doc.sensors:
            if s.lorawan is not None and s.lorawan.device_profile not in self.device_profiles:
                problems.append(f"sensor {s.id}: unknown device profile {s.lorawan.device_profile!r}")
        if problems:
            raise ConfigurationError(f"registry {path or ''}: " + "; ".join(problems))

    @classmethod
    def load(cls, path: Path) -> Registry:
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigurationError(f"cannot read registry {path}: {exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigurationError(f"registry {path} is not valid YAML: {exc}") from exc
        try:
            return cls(RegistryFile.model_validate(raw), Path(path))
        except ValidationError as exc:
            raise ConfigurationError(f"registry {path}:\n" + _located(exc, path)) from exc

    def resolve(self, gateway_id: str | None, key: str) -> SensorInfo | None:
        """The sensor behind a gateway-local device key, or None if nobody registered it."""
        return (
            self._index.get((gateway_id, key))
            or self._index.get((None, key))
            or (self._index.get((gateway_id, normalise_key(key))) or self._index.get((None, normalise_key(key))))
        )

    def device_profile(self, sensor_id: str) -> DeviceProfile | None:
        """The LoRaWAN device profile of a registered sensor, or None for other technologies."""
        sensor = self.sensors.get(sensor_id)
        if sensor is None or sensor.lorawan is None:
            return None
        return self.device_profiles[sensor.lorawan.device_profile]

    def timezone(self, gateway_id: str | None) -> ZoneInfo:
        return self._timezones.get(gateway_id, self._zone_tz)

    def cell_of(self, sensor_id: str) -> str:
        """The H3 cell (at the zone's resolution) of a registered fixed sensor; "" for mobile or unknown ones."""
        s = self.sensors.get(sensor_id)
        if s is None or s.position is None:
            return ""
        return self._sensor_cells.setdefault(
            sensor_id, h3.latlng_to_cell(s.position.lat, s.position.lon, self.doc.zone.h3_resolution)
        )

    def interval(self, sensor_id: str) -> int | None:
        """How often a registered sensor reports (seconds): its own ``interval``, else its LoRaWAN device profile's
        ``uplink_interval``, else the registry's ``reporting_intervals`` of its category; None when nothing says."""
        s = self.sensors.get(sensor_id)
        if s is None:
            return None
        if s.interval is not None:
            return s.interval
        profile = self.device_profile(sensor_id)
        if profile is not None:
            return profile.uplink_interval
        return self.doc.reporting_intervals.get(s.category)

    @cached_property
    def cells(self) -> set[str]:
        return {info.cell for info in self._index.values() if info.cell}
