"""ChirpStack v4 events through the pipeline: JSON and protobuf alike, every event type, bad events.

The events are built with the chirpstack-api message types and marshalled the two ways ChirpStack
does (``json_format.MessageToJson``: the proto3 JSON mapping; ``SerializeToString``: binary), plus
one JSON document written out by hand in the shape of ChirpStack v4's documented ``up`` event, with
default values left out and a field no version of the package knows.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from chirpstack_api.common import common_pb2
from chirpstack_api.gw import gw_pb2
from chirpstack_api.integration import integration_pb2 as pb
from google.protobuf import json_format

from datacharter.charter import Charter
from ingest.codecs import cayenne_lpp, elsys
from ingest.decoders.chirpstack import IntegrationEvent
from ingest.pipeline import Pipeline
from smartzone.settings import Settings
from tests.ingest.rendered import run

APP = "1de53b8a-8ccc-5d2d-a04a-b8a453e14f91"
ELSYS = "a81758fffe0312ab"  # aq-lora-school-volkstraat (elsys-ers-co2)
LPP_WEATHER = "70b3d57ed0051b01"  # wx-lora-groenplaats (ChirpStack decodes Cayenne LPP)
TRACKER = "70b3d57ed0051a01"  # aq-lora-tracker-1 (mobile, our Cayenne LPP codec)
TIME = datetime(2026, 11, 25, 9, 30, 15, 775023, tzinfo=UTC)
RECEIVED = TIME + timedelta(seconds=2)
NS = 1795599015775023000


@pytest.fixture
def pipeline(registry):
    return Pipeline.from_settings(Settings(), registry, Charter.load(), pseudonymiser=None)


def _info(dev_eui: str) -> pb.DeviceInfo:
    return pb.DeviceInfo(
        tenant_id="52f14cd4-c6f1-4fbd-8f87-4025e1d49242",
        application_id=APP,
        application_name="smart-zone",
        device_name="x",
        dev_eui=dev_eui,
    )


def _uplink(
    dev_eui: str = ELSYS,
    data: bytes = b"",
    f_port: int = 5,
    f_cnt: int = 7,
    gateways=(("b827ebfffe6a0c01", -87, 7.25), ("0016c001ff10a235", -112, -3.5)),
) -> pb.UplinkEvent:
    ev = pb.UplinkEvent(
        deduplication_id="3ac7e3c4-4401-4b8d-9386-a5c902f9202d",
        device_info=_info(dev_eui),
        dev_addr="00189440",
        adr=True,
        dr=5,
        f_cnt=f_cnt,
        f_port=f_port,
        data=data,
    )
    ev.time.FromDatetime(TIME)
    ev.tx_info.frequency = 868_100_000
    lora = ev.tx_info.modulation.lora
    lora.bandwidth, lora.spreading_factor, lora.code_rate = 125_000, 7, gw_pb2.CR_4_5
    for i, (gw, rssi, snr) in enumerate(gateways):
        ev.rx_info.add(gateway_id=gw, uplink_id=100 + i, rssi=rssi, snr=snr, channel=0)
    return ev


def _run(pipeline, dev_eui: str, event: str, message, encoding: str):
    payload = json_format.MessageToJson(message).encode() if encoding == "json" else message.SerializeToString()
    topic = f"application/{APP}/device/{dev_eui}/event/{event}"
    return run(pipeline, pipeline.message(topic, payload, RECEIVED))


def _fields(line: str) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in line.split(" ")[1].split(","))


ELSYS_FRAME = elsys.encode({"weather.temperature": 21.3, "weather.relative_humidity": 41, "air_quality.co2": 612})


@pytest.mark.parametrize("encoding", ["json", "protobuf"])
def test_uplink_readings_and_radio_metadata(pipeline, encoding):
    out = _run(pipeline, ELSYS, "up", _uplink(data=ELSYS_FRAME), encoding)
    assert out.letter is None and not any(ln.startswith("radio") for ln in out.lines)  # radio is ops data
    readings = out.lines
    assert readings == [
        f"weather,category=air_quality,cell=8a1fa4c5ab6ffff,sensor=aq-lora-school-volkstraat,technology=lora "
        f"temperature=21.3,relative_humidity=41.0 {NS}",
        f"air_quality,category=air_quality,cell=8a1fa4c5ab6ffff,sensor=aq-lora-school-volkstraat,technology=lora "
        f"co2=612.0 {NS}",
    ]
    radio = [ln for ln in out.ops_lines if ln.startswith("radio")]
    assert len(radio) == 2
    assert ",modulation=lora,rx_gateway=gw-volkstraat," in radio[0]  # tags in InfluxDB's (sorted) order
    assert ",modulation=lora,rx_gateway=gw-kmska-roof," in radio[1]
    f = _fields(radio[1])
    assert f == {
        "rssi": "-112i",
        "snr": "-3.5",
        "channel": "0i",
        "frequency": "868100000i",
        "dr": "5i",
        "f_cnt": "7i",
        "f_port": "5i",
        "adr": "true",
        "confirmed": "false",
        "n_gateways": "2i",
        "bandwidth": "125000i",
        "spreading_factor": "7i",
        "code_rate": '"4/5"',
    }
    assert radio[0].endswith(f" {NS}")


def test_json_and_protobuf_write_the_same_points(pipeline):
    ev = _uplink(data=ELSYS_FRAME)
    assert _run(pipeline, ELSYS, "up", ev, "json").lines == _run(pipeline, ELSYS, "up", ev, "protobuf").lines


def test_documented_json_shape_with_defaults_left_out_and_unknown_fields(pipeline):
    """ChirpStack v4's ``up`` event as its documentation shows it: fCnt 0 and adr false are absent,
    the time has an explicit offset, and a field from a future version must be ignored."""
    doc = {
        "deduplicationId": "3ac7e3c4-4401-4b8d-9386-a5c902f9202d",
        "time": "2026-11-25T09:30:15.775023242+00:00",
        "deviceInfo": {
            "tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242",
            "tenantName": "ChirpStack",
            "applicationId": APP,
            "applicationName": "smart-zone",
            "deviceProfileId": "cf2aec2f-03e1-4a60-a32c-0faeef5730d8",
            "deviceProfileName": "elsys-ers-co2",
            "deviceName": "aq-lora-school-volkstraat",
            "devEui": ELSYS,
            "deviceClassEnabled": "CLASS_A",
            "tags": {"category": "air_quality"},
        },
        "devAddr": "00189440",
        "dr": 5,
        "fPort": 5,
        "data": base64.b64encode(ELSYS_FRAME).decode(),
        "rxInfo": [
            {
                "gatewayId": "b827ebfffe6a0c01",
                "uplinkId": 4217106255,
                "rssi": -36,
                "snr": 10.5,
                "context": "E3OWOQ==",
                "metadata": {"region_common_name": "EU868", "region_config_id": "eu868"},
                "crcStatus": "CRC_OK",
            }
        ],
        "txInfo": {
            "frequency": 868100000,
            "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 7, "codeRate": "CR_4_5"}},
        },
        "regionConfigId": "eu868",
        "aFieldFromChirpStack5": {"nested": [1, 2]},
    }
    topic = f"application/{APP}/device/{ELSYS}/event/up"
    out = run(pipeline, pipeline.message(topic, orjson.dumps(doc), RECEIVED))
    assert out.letter is None
    radio = next(ln for ln in out.ops_lines if ln.startswith("radio"))
    f = _fields(radio)
    assert (f["f_cnt"], f["adr"], f["confirmed"], f["rssi"], f["snr"]) == ("0i", "false", "false", "-36i", "10.5")
    assert radio.endswith(f" {NS}")  # the event's time, to the microsecond, not the arrival time


@pytest.mark.parametrize("encoding", ["json", "protobuf"])
def test_object_decoded_by_chirpstack(pipeline, encoding):
    frame = cayenne_lpp.encode({"temperature_1": 12.4, "relative_humidity_2": 81.5, "barometric_pressure_3": 1009.3})
    ev = _uplink(LPP_WEATHER, frame, f_port=1)
    ev.object.update(
        {
            "temperatureSensor": {"1": 12.4},
            "humiditySensor": {"2": 81.5},
            "barometer": {"3": 1009.3},
            "digitalOutput": {"4": 1},
        }
    )
    out = _run(pipeline, LPP_WEATHER, "up", ev, encoding)
    assert out.letter is None
    weather = [ln for ln in out.lines if ln.startswith("weather")]
    assert len(weather) == 1
    assert _fields(weather[0]) == {"temperature": "12.4", "relative_humidity": "81.5", "pressure": "1009.3"}


@pytest.mark.parametrize("encoding", ["json", "protobuf"])
def test_gps_in_the_payload_is_the_mobile_device_track(pipeline, encoding):
    frame = cayenne_lpp.encode(
        {
            "temperature_1": 9.5,
            "analog_input_2": 14.2,
            "analog_input_3": 22.75,
            "gps_4_latitude": 51.2135,
            "gps_4_longitude": 4.397,
            "gps_4_altitude": 8.0,
        }
    )
    out = _run(pipeline, TRACKER, "up", _uplink(TRACKER, frame, f_port=1), encoding)
    assert out.letter is None
    by = {ln.split(",")[0]: ln for ln in out.lines}
    assert _fields(by["air_quality"]) == {"pm2_5": "14.2", "pm10": "22.75"}
    assert _fields(by["position"]) == {"latitude": "51.2135", "longitude": "4.397", "altitude": "8.0"}
    assert "source=gps_payload" in by["position"] and "cell=" not in by["position"]


@pytest.mark.parametrize("encoding", ["json", "protobuf"])
def test_status_is_device_health(pipeline, encoding):
    ev = pb.StatusEvent(deduplication_id="x", device_info=_info(ELSYS), margin=7, battery_level=87.5)
    ev.time.FromDatetime(TIME)
    out = _run(pipeline, ELSYS, "status", ev, encoding)
    assert out.letter is None
    assert out.lines == []  # device health is the network's own: ops database
    assert [_fields(ln) for ln in out.ops_lines] == [
        {"link_margin": "7i", "external_power": "false", "battery": "87.5"}
    ]
    assert out.ops_lines[0].startswith("gateway_health,") and out.ops_lines[0].endswith(f" {NS}")


@pytest.mark.parametrize("encoding", ["json", "protobuf"])
def test_location_event(pipeline, encoding):
    ev = pb.LocationEvent(
        device_info=_info(TRACKER),
        location=common_pb2.Location(
            latitude=51.2171, longitude=4.4012, altitude=6.5, accuracy=30, source=common_pb2.GEO_RESOLVER_TDOA
        ),
    )
    ev.time.FromDatetime(TIME)
    out = _run(pipeline, TRACKER, "location", ev, encoding)
    assert out.letter is None and len(out.lines) == 1
    assert out.lines[0].startswith("position,") and "source=geo_resolver_tdoa" in out.lines[0]
    assert _fields(out.lines[0])["latitude"] == "51.2171"


def _ops_events():
    join = pb.JoinEvent(device_info=_info(ELSYS), dev_addr="01020304")
    ack = pb.AckEvent(device_info=_info(ELSYS), acknowledged=True, f_cnt_down=12, queue_item_id="q-1")
    txack = pb.TxAckEvent(device_info=_info(ELSYS), downlink_id=99, f_cnt_down=12, gateway_id="0016c001ff10a235")
    txack.tx_info.frequency = 869_525_000
    log = pb.LogEvent(
        device_info=_info(ELSYS),
        level=pb.ERROR,
        code=pb.UPLINK_CODEC,
        description='codec said "no"\nline two',
        context={"deduplication_id": "x"},
    )
    integration = IntegrationEvent(device_info=_info(ELSYS), integration_name="loracloud", event_type="geoloc")
    return {
        "join": (join, {"dev_addr": '"01020304"', "count": "1i"}),
        "ack": (ack, {"acknowledged": "true", "f_cnt_down": "12i", "queue_item_id": '"q-1"', "count": "1i"}),
        "txack": (txack, {"f_cnt_down": "12i", "downlink_id": "99i", "frequency": "869525000i", "count": "1i"}),
        "log": (log, {"description": r'"codec said \"no\"\\nline two"', "count": "1i"}),
        "integration": (integration, {"integration_name": '"loracloud"', "event_type": '"geoloc"', "count": "1i"}),
    }


@pytest.mark.parametrize("encoding", ["json", "protobuf"])
@pytest.mark.parametrize("event", ["join", "ack", "txack", "log", "integration"])
def test_operational_events_go_to_the_ops_database(pipeline, event, encoding):
    message, want = _ops_events()[event]
    message.time.FromDatetime(TIME)
    out = _run(pipeline, ELSYS, event, message, encoding)
    assert out.letter is None and out.lines == [] and len(out.ops_lines) == 1
    line = out.ops_lines[0]
    assert line.startswith("lorawan_events,") and f",event={event}" in line and line.endswith(f" {NS}")
    assert line.split(" ", 1)[1].rsplit(" ", 1)[0] == ",".join(f"{k}={v}" for k, v in want.items())
    if event == "txack":
        assert ",rx_gateway=gw-kmska-roof" in line
    if event == "log":
        assert ",code=uplink_codec," in line and ",level=error," in line


def test_redelivered_uplink_writes_identical_points(pipeline):
    ev = _uplink(data=ELSYS_FRAME)
    topic = f"application/{APP}/device/{ELSYS}/event/up"
    first = run(pipeline, pipeline.message(topic, ev.SerializeToString(), RECEIVED))
    again = run(pipeline, pipeline.message(topic, ev.SerializeToString(), RECEIVED + timedelta(minutes=3)))
    assert first.lines == again.lines  # same time, tags and fields: InfluxDB keeps one point each


@pytest.mark.parametrize(
    ("topic_eui", "payload", "event", "reason"),
    [
        (ELSYS, b"{not json", "up", "malformed"),
        (ELSYS, b"\xff\xff\xff\xff", "up", "malformed"),
        (ELSYS, b'{"deviceInfo": {"devEui": "0000000000000001"}}', "up", "topic_mismatch"),
        (ELSYS, b'{"applicationID": "123", "devEUI": "AgICAgICAgI="}', "up", "topic_mismatch"),  # ChirpStack v3
        ("0000000000000bad", b'{"deviceInfo": {"devEui": "0000000000000bad"}}', "up", "unknown_device"),
        (ELSYS, b'{"deviceInfo": {"devEui": "a81758fffe0312ab"}}', "downlink", "unknown_event"),
        ("not-an-eui", b"{}", "up", "malformed"),
    ],
)
def test_bad_events_are_dead_lettered(pipeline, topic_eui, payload, event, reason):
    out = run(pipeline, pipeline.message(f"application/{APP}/device/{topic_eui}/event/{event}", payload, RECEIVED))
    assert out.lines == [] and out.letter is not None
    assert out.letter.reason == reason and out.letter.payload == payload


@pytest.mark.parametrize("encoding", ["json", "protobuf"])
def test_undecodable_frame_is_a_dead_letter_but_its_radio_metadata_is_kept(pipeline, encoding):
    out = _run(pipeline, ELSYS, "up", _uplink(data=bytes.fromhex("0100")), encoding)  # temperature cut short
    assert out.letter is not None and out.letter.reason == "wrong_length"
    assert "elsys fPort 5 data 0100" in out.letter.detail
    assert [ln.split(",")[0] for ln in out.ops_lines] == ["radio", "radio"] and out.lines == []


def test_mac_only_uplink_has_radio_metadata_and_no_dead_letter(pipeline):
    out = _run(pipeline, ELSYS, "up", _uplink(data=b"", f_port=0), "protobuf")
    assert out.letter is None and [ln.split(",")[0] for ln in out.ops_lines] == ["radio", "radio"]


def test_out_of_range_value_in_object_is_dead_lettered_the_rest_written(pipeline):
    ev = _uplink(LPP_WEATHER, b"\x01\x67\x00\x00", f_port=1)
    ev.object.update({"temperatureSensor": {"1": 612.0}, "humiditySensor": {"2": 50.0}})
    out = _run(pipeline, LPP_WEATHER, "up", ev, "json")
    assert out.letter is not None and out.letter.reason == "out_of_range"
    assert any(ln.startswith("weather") and "relative_humidity=50.0" in ln for ln in out.lines)


def test_json_fast_path_gives_the_message_the_general_parser_gives(registry):
    """The uplink fast path against ``json_format.ParseDict`` on the simulator's JSON events (every
    device, one to three gateways, ChirpStack-decoded objects), the documented shape, snake_case names
    and shapes the fast path hands over (FSK, a relay)."""
    from gateways.simulator import SimulatedZone
    from ingest.decoders.chirpstack import _uplink_from_json, parse_event

    zone = SimulatedZone(registry, seed=4, lorawan_encoding="json")
    docs = [orjson.loads(e.payload) for e in zone.messages(TIME, rounds=3) if e.topic.endswith("/event/up")]
    assert len(docs) > 20
    docs.append({"deviceInfo": {"devEui": ELSYS}, "f_cnt": 12, "fPort": 5})  # proto field names
    docs.append(
        {
            "deviceInfo": {"devEui": ELSYS},
            "txInfo": {
                "frequency": 868_300_000,
                "modulation": {"fsk": {"frequencyDeviation": 25000, "datarate": 50000}},
            },
        }
    )
    docs.append({"deviceInfo": {"devEui": ELSYS}, "relayRxInfo": {"devEui": "0102030405060708", "rssi": -70}})
    docs.append({"deviceInfo": {"devEui": ELSYS}, "rxInfo": [{"gatewayId": "b827ebfffe6a0c01", "rssi": -70.0}]})
    for doc in docs:
        want = json_format.ParseDict(doc, pb.UplinkEvent(), ignore_unknown_fields=True)
        assert parse_event("up", orjson.dumps(doc)) == want
    assert _uplink_from_json(docs[0]) == json_format.ParseDict(docs[0], pb.UplinkEvent())  # the fast path ran
