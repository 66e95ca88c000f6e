"""The simulated LoRaWAN service network: what ChirpStack v4's MQTT integration publishes for our devices.

For each LoRaWAN sensor of the registry and each simulator round, one ``up`` event, built with the
chirpstack-api message types and marshalled as ChirpStack does: JSON (proto3 JSON mapping, camelCase,
default values left out) or binary protobuf. The payload is the device's real frame, made by its
codec's ``encode`` (``ingest/codecs``); for device profiles where ChirpStack runs the codec
(``chirpstack_codec: cayenne_lpp``) the event also carries the ``object`` ChirpStack's Cayenne LPP
codec makes (``{"temperatureSensor": {"1": 21.3}, ...}``).

Radio: every LoRa gateway of the registry may hear the uplink. Received power follows a log-distance
path loss (urban exponent 2.8 from 14 dBm EIRP) plus a fixed per-link obstruction loss (buildings,
drawn once per sensor and gateway) and shadowing noise per frame; SNR follows from the noise floor
of a 125 kHz channel. The spreading factor is what ADR would pick for the best link; gateways whose
received power is above the SX1301 sensitivity for it hear the frame, so an uplink is heard by one to
three gateways. About 2 % of frames are lost on air (the frame counter still advanced: a gap) and
about 1 % are delivered twice (the same event published twice, as after a broker redelivery).
Every 30 rounds a device also sends a ``status`` event (battery, link margin); mobile devices send a
``location`` event every 10 rounds and GPS in their payload.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Iterator
from datetime import datetime

from chirpstack_api.common import common_pb2
from chirpstack_api.gw import gw_pb2
from chirpstack_api.integration import integration_pb2 as pb
from google.protobuf import json_format

from ingest.codecs import CODECS
from smartzone.model import to_ns
from smartzone.quantities import QUANTITIES
from smartzone.registry import DeviceProfile, Gateway, Registry, Sensor

ENCODINGS = ("json", "protobuf", "mixed")
LOSS_RATE = 0.02
DUPLICATE_RATE = 0.01
# SX1301 sensitivity at 125 kHz per spreading factor (dBm), and EU868 data rate of each.
SENSITIVITY = {7: -126.5, 8: -129.0, 9: -131.5, 10: -134.0, 11: -136.5, 12: -139.5}
DATA_RATE = {12: 0, 11: 1, 10: 2, 9: 3, 8: 4, 7: 5}
CHANNELS_HZ = (868_100_000, 868_300_000, 868_500_000, 867_100_000, 867_300_000, 867_500_000, 867_700_000, 867_900_000)
NOISE_FLOOR_DBM = -117.0  # thermal noise in 125 kHz plus a 6 dB noise figure


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine), metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * 6_371_000 * math.asin(math.sqrt(a))


def _lpp_object(values: list[tuple[str, object]]) -> dict:
    """ChirpStack's Cayenne LPP ``object`` for our LPP native names (``temperature_1`` ...)."""
    names = {
        "temperature": "temperatureSensor",
        "relative_humidity": "humiditySensor",
        "barometric_pressure": "barometer",
        "luminosity": "illuminanceSensor",
        "analog_input": "analogInput",
        "digital_input": "digitalInput",
        "presence": "presenceSensor",
    }
    out: dict = {}
    for name, value in values:
        kind, _, channel = name.rpartition("_")
        out.setdefault(names.get(kind, kind), {})[channel] = value
    return out


class LoraNetwork:
    """Uplinks of the zone's LoRaWAN devices as ChirpStack events (topic, payload, readings)."""

    def __init__(self, registry: Registry, seed: int, encoding: str = "json") -> None:
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}")
        self.registry = registry
        self.encoding = encoding
        self.gateways: list[Gateway] = [g for g in registry.doc.gateways if g.eui]
        app = registry.doc.lorawan.application
        self.application_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"smartzone:application:{app}"))
        r = random.Random(f"{seed}:lorawan")
        self.sensors = [s for s in registry.sensors.values() if s.lorawan is not None]
        self._obstruction = {
            (s.id, g.id): r.choice((0.0, 0.0, 8.0, 15.0, 25.0, 40.0)) for s in self.sensors for g in self.gateways
        }
        self._fcnt0 = {s.id: r.randrange(0, 5_000) for s in self.sensors}
        self._offset = {s.id: r.randrange(30) for s in self.sensors}

    # -- events -------------------------------------------------------------------------------------
    def events(
        self, s: Sensor, t: datetime, i: int, rng: random.Random, values: dict[str, float | int | bool]
    ) -> Iterator[tuple[str, bytes, list[tuple[str, float | int | bool]]]]:
        """(topic, payload, truth) of what ChirpStack publishes for ``s`` in round ``i``.

        ``truth`` holds (quantity, value) pairs as storage will hold them; an empty list for a frame
        lost on air. ``values`` are the sensor's simulated quantities for the round.
        """
        profile = self.registry.device_profile(s.id)
        assert profile is not None, f"sensor {s.id}: not a registered LoRaWAN device"
        dev_eui = s.keys[0]
        position = self._position(s, i)
        f_cnt = self._fcnt0[s.id] + i
        lost = rng.random() < LOSS_RATE
        duplicate = rng.random() < DUPLICATE_RATE
        frame, f_port, truth, obj = self._frame(s, profile, values, position)
        ev = pb.UplinkEvent(
            deduplication_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            device_info=self._device_info(s, profile),
            dev_addr=f"{int(dev_eui[-8:], 16) & 0x01FFFFFF | 0x26000000:08x}",
            adr=True,
            f_cnt=f_cnt,
            f_port=f_port,
            confirmed=False,
            data=frame,
        )
        ev.time.FromNanoseconds(to_ns(t))
        if obj is not None:
            ev.object.update(obj)
        self._radio(ev, s, position, rng, t)
        if not lost:
            topic = f"application/{self.application_id}/device/{dev_eui}/event/up"
            payload = self._marshal(ev, s, i)
            yield topic, payload, truth
            if duplicate:
                yield topic, payload, truth
        if (i + self._offset[s.id]) % 30 == 0:
            battery = round(99.5 - (i // 60 + len(s.id)) % 40, 1)  # a level in [60, 99.5] %
            margin = max(-20, min(30, round(ev.rx_info[0].snr) + 10)) if ev.rx_info else 0
            st = pb.StatusEvent(
                deduplication_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                device_info=ev.device_info,
                margin=margin,
                battery_level=battery,
            )
            st.time.FromNanoseconds(to_ns(t))
            yield (
                f"application/{self.application_id}/device/{dev_eui}/event/status",
                self._marshal(st, s, i),
                [
                    ("gateway_health.link_margin", margin),
                    ("gateway_health.external_power", False),
                    ("gateway_health.battery", battery),
                ],
            )
        if s.mobile and i % 10 == 0:
            loc = pb.LocationEvent(
                deduplication_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                device_info=ev.device_info,
                location=common_pb2.Location(
                    latitude=position[0],
                    longitude=position[1],
                    altitude=8.0,
                    accuracy=25.0,
                    source=common_pb2.GEO_RESOLVER_TDOA,
                ),
            )
            loc.time.FromNanoseconds(to_ns(t))
            yield f"application/{self.application_id}/device/{dev_eui}/event/location", self._marshal(loc, s, i), []

    def _marshal(self, ev, s: Sensor, i: int) -> bytes:
        encoding = self.encoding
        if encoding == "mixed":  # not something one ChirpStack does: both paths in one run, for tests
            encoding = ("json", "protobuf")[(i + self._offset[s.id]) % 2]
        if encoding == "json":
            return json_format.MessageToJson(ev, indent=None).encode()
        return ev.SerializeToString()

    def _device_info(self, s: Sensor, profile: DeviceProfile) -> pb.DeviceInfo:
        app = self.registry.doc.lorawan.application
        return pb.DeviceInfo(
            tenant_id="52f14cd4-c6f1-4fbd-8f87-4025e1d49242",
            tenant_name="City of Antwerp",
            application_id=self.application_id,
            application_name=app,
            device_profile_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"smartzone:profile:{profile.name}")),
            device_profile_name=profile.name,
            device_name=s.id,
            dev_eui=s.keys[0],
            tags={"category": s.category},
        )

    # -- payload ------------------------------------------------------------------------------------
    def _frame(self, s: Sensor, profile: DeviceProfile, values: dict, position: tuple[float, float]):
        """(frame bytes, fPort, truth, ChirpStack object or None) for the device's codec."""
        codec = CODECS[profile.codec or profile.chirpstack_codec]
        native = _codec_input(codec.NAME, s, values, position)
        f_port = _PORTS.get(codec.NAME, 1)
        frame = codec.encode(native, f_port)
        decoded = codec.decode(frame, f_port)
        truth = []
        for name, value in decoded:
            q = s.fields.get(name) or (codec.quantity(name) if hasattr(codec, "quantity") else None) or name
            if q in QUANTITIES:
                if QUANTITIES[q].kind == "float":
                    value = float(value)
                truth.append((q, value))
        obj = _lpp_object(decoded) if profile.chirpstack_codec == "cayenne_lpp" else None
        return frame, f_port, truth, obj

    # -- radio --------------------------------------------------------------------------------------
    def _position(self, s: Sensor, i: int) -> tuple[float, float]:
        if s.position is not None:
            return s.position.lat, s.position.lon
        # mobile: city vehicles looping between the KMSKA and the Groenplaats, one lap per 40 rounds, each
        # a quarter lap behind the one before (tracker-1, tracker-2, ...)
        lag = 10 * (int(s.id.rsplit("-", 1)[-1]) - 1 if s.id.rsplit("-", 1)[-1].isdigit() else 0)
        a = 2 * math.pi * ((i + lag) % 40) / 40
        return 51.2135 + 0.0040 * math.sin(a), 4.3970 + 0.0045 * math.cos(a)

    def _radio(
        self, ev: pb.UplinkEvent, s: Sensor, position: tuple[float, float], rng: random.Random, t: datetime
    ) -> None:
        links = []
        for g in self.gateways:
            d = max(10.0, distance_m(*position, g.position.lat, g.position.lon))
            rssi = 14 - (40 + 28 * math.log10(d)) - self._obstruction[(s.id, g.id)] + rng.gauss(0, 3)
            links.append((rssi, g))
        links.sort(key=lambda x: -x[0])
        best = links[0][0]
        sf = next((sf for sf in range(7, 13) if best - SENSITIVITY[sf] >= 10), 12)
        heard = [(rssi, g) for rssi, g in links if rssi >= SENSITIVITY[sf]][:3] or links[:1]
        ev.dr = DATA_RATE[sf]
        channel = rng.randrange(len(CHANNELS_HZ))
        ev.tx_info.frequency = CHANNELS_HZ[channel]
        lora = ev.tx_info.modulation.lora
        lora.bandwidth, lora.spreading_factor, lora.code_rate = 125_000, sf, gw_pb2.CR_4_5
        for rssi, g in heard:
            rx = ev.rx_info.add(
                gateway_id=g.eui,
                uplink_id=rng.getrandbits(31),
                rssi=round(rssi),
                snr=round(max(-20.0, min(13.5, rssi - NOISE_FLOOR_DBM + rng.gauss(0, 1))), 1),
                channel=channel,
                crc_status=gw_pb2.CRC_OK,
            )
            rx.gw_time.FromNanoseconds(to_ns(t))
            rx.location.latitude, rx.location.longitude = g.position.lat, g.position.lon


# fPort each codec's frames use in the simulator (the vendors' documented uplink ports).
_PORTS = {"cayenne_lpp": 1, "elsys": 5, "decentlab_dl_pm": 1, "bosch_parking": 1, "milesight_vs133": 85}


def _codec_input(codec: str, s: Sensor, v: dict, position: tuple[float, float]) -> dict:
    """The simulated quantities of a sensor, in the names its codec's ``encode`` takes."""
    if codec == "cayenne_lpp":
        if s.mobile:  # the tracker: its registry maps these channels
            return {
                "temperature_1": v["weather.temperature"],
                "analog_input_2": v["air_quality.pm2_5"],
                "analog_input_3": v["air_quality.pm10"],
                "gps_4_latitude": round(position[0], 4),
                "gps_4_longitude": round(position[1], 4),
                "gps_4_altitude": 8.0,
            }
        out = {
            "temperature_1": v["weather.temperature"],
            "relative_humidity_2": v["weather.relative_humidity"],
            "barometric_pressure_3": v["weather.pressure"],
        }
        if "weather.illuminance" in v:
            out["luminosity_4"] = v["weather.illuminance"]
        return out
    wanted = _CODEC_QUANTITIES[codec]
    return {q: v[q] for q in wanted if q in v}


_CODEC_QUANTITIES = {
    "elsys": ("weather.temperature", "weather.relative_humidity", "air_quality.co2"),
    "decentlab_dl_pm": ("air_quality.pm1", "air_quality.pm2_5", "air_quality.pm10"),
    "bosch_parking": ("parking.occupied",),
    "milesight_vs133": ("pedestrian_flow.people_in", "pedestrian_flow.people_out"),
}
