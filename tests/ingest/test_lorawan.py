"""ChirpStack events end to end: simulator -> real mosquitto -> worker -> real influxd.

The simulated service network publishes what ChirpStack v4's MQTT integration would, in JSON and in
protobuf, with frames lost on air and uplinks delivered twice. Checked: every reading exactly once at
the event's time, one radio point per receiving gateway, device health and operational events in
their databases, packet loss from the frame counters equal to the frames the simulator dropped, and
bad events dead-lettered without stopping the worker.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from gateways.publisher import Publisher
from gateways.simulator import SimulatedZone
from storage.deadletters import DeadLetterStore
from storage.lorawan import packet_loss
from tests.conftest import assert_exactly_once, count_points, expected_count, readings_dbs, wait_for


def _lorawan_messages(registry, encoding: str, rounds: int, seed: int = 11):
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    zone = SimulatedZone(registry, seed=seed, lorawan_encoding=encoding)
    return start, [e for e in zone.messages(start, rounds=rounds, step=60) if e.topic.startswith("application/")]


def _publish(settings, emitted) -> None:
    pub = Publisher("127.0.0.1", settings.mqtt.port)
    pub.publish(emitted)
    assert pub.wait_acked(30)
    pub.close()


def _count(influx, db: str, q: str) -> int:
    rows = influx.rows(q, db)
    return int(rows[0]["count"]) if rows else 0


@pytest.mark.parametrize("encoding", ["json", "protobuf", "mixed"])
def test_chirpstack_events_land_exactly_once(settings, influx, registry, run_worker, encoding):
    worker = run_worker()
    _, emitted = _lorawan_messages(registry, encoding, rounds=60)
    ups = [e for e in emitted if e.topic.endswith("/event/up")]
    distinct_ups = {e.payload for e in ups}
    assert len(ups) > len(distinct_ups), "the simulator delivers some uplinks twice"
    _publish(settings, emitted)
    raw = settings.influx.raw_database
    expected = expected_count(emitted)
    assert wait_for(lambda: worker._acked >= len(emitted), 30)
    assert count_points(influx, readings_dbs(settings)) == expected
    assert assert_exactly_once(influx, readings_dbs(settings), emitted) == expected

    # one radio point per (uplink, receiving gateway); duplicates rewrite the same points
    from chirpstack_api.integration import integration_pb2 as pb
    from google.protobuf import json_format

    def parse(payload: bytes) -> pb.UplinkEvent:
        return (
            json_format.Parse(payload, pb.UplinkEvent()) if payload[:1] == b"{" else pb.UplinkEvent.FromString(payload)
        )

    receptions = sum(len(parse(p).rx_info) for p in distinct_ups)
    ops = settings.influx.ops_database  # radio metadata is ops data, never in the raw database
    assert _count(influx, ops, "SELECT COUNT(rssi) FROM radio") == receptions
    assert _count(influx, raw, "SELECT COUNT(rssi) FROM radio") == 0
    gateways = {r["rx_gateway"] for r in influx.rows("SELECT COUNT(rssi) FROM radio GROUP BY rx_gateway", ops)}
    assert gateways == {"gw-volkstraat", "gw-sint-andries", "gw-kmska-roof"}
    # the mobile tracker's track: GPS from its payload and location events
    assert _count(influx, raw, "SELECT COUNT(latitude) FROM position") > 0
    assert DeadLetterStore(settings.sql_url).counts() == {}


def test_packet_loss_equals_the_frames_lost_on_air(settings, influx, registry, run_worker, monkeypatch, capsys):
    worker = run_worker()
    start, emitted = _lorawan_messages(registry, "protobuf", rounds=120, seed=5)
    _publish(settings, emitted)
    assert wait_for(lambda: worker._acked >= len(emitted), 30)
    # what the simulator dropped: per device, counters between its first and last delivered uplink
    sent: dict[str, set[int]] = {}
    from chirpstack_api.integration import integration_pb2 as pb

    for e in emitted:
        if e.topic.endswith("/event/up"):
            ev = pb.UplinkEvent.FromString(e.payload)
            sent.setdefault(ev.device_info.device_name, set()).add(ev.f_cnt)
    want = {s: (max(c) - min(c) + 1) - len(c) for s, c in sent.items()}
    got = packet_loss(influx, settings.influx.ops_database, start - timedelta(minutes=1), datetime.now(UTC))
    assert {d.sensor: d.lost for d in got} == want
    assert sum(want.values()) > 0, "the seeded run loses some frames"
    overall = sum(d.lost for d in got) / sum(d.expected for d in got)
    assert 0.005 < overall < 0.05, overall  # the simulator loses 2 % of frames (gateways.lorawan.LOSS_RATE)
    # the same figures, as city staff and network researchers see them
    from cli.main import main
    from tests.conftest import settings_env

    for k, v in settings_env(settings).items():
        if k.startswith("SMARTZONE_"):
            monkeypatch.setenv(k, v)
    assert main(["lorawan", "loss", "--since", "4h"]) == 0
    out = capsys.readouterr().out
    lost, expected = sum(d.lost for d in got), sum(d.expected for d in got)
    assert f"all {len(got)} devices: {lost} of {expected} frames lost" in out
    tracker = next(d for d in got if d.sensor == "aq-lora-tracker-1")
    assert any(
        ln.split()[:4] == ["aq-lora-tracker-1", str(tracker.received), str(tracker.expected), str(tracker.lost)]
        for ln in out.splitlines()
    )


def test_operational_events_and_bad_events(settings, influx, registry, run_worker):
    worker = run_worker()
    app = "1de53b8a-8ccc-5d2d-a04a-b8a453e14f91"
    dev = "a81758fffe0312ab"
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    from chirpstack_api.integration import integration_pb2 as pb
    from google.protobuf import json_format

    info = pb.DeviceInfo(dev_eui=dev, device_name="aq-lora-school-volkstraat")
    join = pb.JoinEvent(device_info=info, dev_addr="01020304")
    join.time.FromDatetime(now)
    log = pb.LogEvent(device_info=info, level=pb.WARNING, code=pb.UPLINK_F_CNT_RETRANSMISSION, description="dup")
    log.time.FromDatetime(now + timedelta(seconds=1))
    bad_frame = pb.UplinkEvent(device_info=info, f_cnt=9, f_port=5, data=b"\x99\x00")  # unknown Elsys type
    bad_frame.time.FromDatetime(now + timedelta(seconds=2))
    bad_frame.rx_info.add(gateway_id="b827ebfffe6a0c01", rssi=-90, snr=5.0)
    messages = [
        (f"application/{app}/device/{dev}/event/join", json_format.MessageToJson(join).encode()),
        (f"application/{app}/device/{dev}/event/log", log.SerializeToString()),
        (f"application/{app}/device/{dev}/event/up", bad_frame.SerializeToString()),
        (f"application/{app}/device/{dev}/event/up", b'{"deviceInfo": '),  # truncated JSON
        (f"application/{app}/device/0000000000000bad/event/up", b'{"deviceInfo": {"devEui": "0000000000000bad"}}'),
        (f"application/{app}/device/{dev}/event/up", b"\x0a\xff\xff"),  # broken protobuf
    ]
    pub = Publisher("127.0.0.1", settings.mqtt.port)
    from gateways.simulator import Emitted

    pub.publish([Emitted(t, p, ()) for t, p in messages])
    assert pub.wait_acked(20)
    pub.close()
    assert wait_for(lambda: worker._acked >= len(messages), 20)
    ops = settings.influx.ops_database
    events = Counter(r["event"] for r in influx.rows("SELECT * FROM lorawan_events", ops))
    assert events == {"join": 1, "log": 1}
    assert _count(influx, ops, "SELECT COUNT(rssi) FROM radio") == 1  # kept
    counts = DeadLetterStore(settings.sql_url).counts()
    assert counts == {"unknown_channel": 1, "malformed": 2, "unknown_device": 1}, counts
    assert not worker.stopping.is_set()
