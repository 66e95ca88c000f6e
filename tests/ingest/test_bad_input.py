"""Bad input: each case ends in the dead-letter store with its reason, the worker keeps going, and a
replay after the cause is fixed (the device registered) writes the readings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from time import time_ns

import orjson
import pytest
import yaml

from cli.main import main
from gateways.publisher import Publisher
from gateways.simulator import Emitted
from ingest.replay import replay
from smartzone.registry import Registry
from storage.deadletters import DeadLetterStore
from tests.conftest import REGISTRY, settings_env, stored_readings, wait_for

NOW = datetime.now(UTC).replace(microsecond=0)


def _json(device: str, readings: dict, time: datetime | None = NOW) -> bytes:
    doc = {"device": device, "readings": readings}
    if time is not None:
        doc["time"] = time.isoformat()
    return orjson.dumps(doc)


TOPIC = "gw/gw-egmont/json/traffic-egmont-1"
CASES = {
    "malformed": (TOPIC, b'{"device": "traffic-egmont-1", "readings": {'),
    "unknown_device": ("gw/gw-egmont/json/counter-new-1", _json("counter-new-1", {"traffic.cars": 17})),
    "unknown_field": (TOPIC, _json("traffic-egmont-1", {"flux_capacitor": 1.21})),
    "out_of_range": (TOPIC, _json("traffic-egmont-1", {"traffic.speed_mean": 900.0})),
    "not_finite": (TOPIC, b'{"device": "traffic-egmont-1", "readings": {"traffic.speed_mean": NaN}}'),
    "future_timestamp": (TOPIC, _json("traffic-egmont-1", {"traffic.cars": 4}, NOW + timedelta(days=1))),
    "too_old": (TOPIC, _json("traffic-egmont-1", {"traffic.cars": 4}, NOW - timedelta(days=60))),
    "oversized": (TOPIC, _json("traffic-egmont-1", {"traffic.cars": 4}) + b" " * 70_000),
    "invalid_value": (TOPIC, _json("traffic-egmont-1", {"traffic.cars": "many"})),
}


def _publish(port: int, items: list[tuple[str, bytes]]) -> None:
    pub = Publisher("127.0.0.1", port)
    pub.publish(Emitted(t, p, ()) for t, p in items)
    assert pub.wait_acked(10)
    pub.close()


def test_every_bad_input_is_dead_lettered_with_its_reason(settings, influx, run_worker, tmp_path, monkeypatch, capsys):
    worker = run_worker()
    _publish(settings.mqtt.port, list(CASES.values()))
    # a good message after all the bad ones still lands: the worker is alive
    good = _json("traffic-egmont-1", {"traffic.cars": 12}, NOW - timedelta(minutes=5))
    mixed = _json("traffic-egmont-1", {"traffic.cyclists": 3, "flux_capacitor": 2.0}, NOW - timedelta(minutes=10))
    _publish(settings.mqtt.port, [(TOPIC, good), (TOPIC, mixed)])
    db = settings.influx.raw_database
    assert wait_for(lambda: len(stored_readings(influx, db)) >= 2, 15)
    stored = {(s, q, v) for s, q, v, _ in stored_readings(influx, db)}
    assert stored == {("traffic-egmont-1", "traffic.cars", 12), ("traffic-egmont-1", "traffic.cyclists", 3)}
    assert worker.fatal is None and not worker.stopping.is_set()

    store = DeadLetterStore(settings.sql_url)
    assert wait_for(lambda: sum(store.counts().values()) == len(CASES) + 1, 10), store.counts()
    letters = store.entries(limit=100)
    by_reason = {d.reason: d for d in letters}
    assert set(by_reason) == set(CASES)  # the mixed message's letter is unknown_field too
    for reason, (topic, payload) in CASES.items():
        d = [x for x in letters if x.reason == reason and x.payload == payload]
        assert len(d) == 1, reason
        assert d[0].topic == topic and d[0].detail, reason  # whole payload kept, with a reason and detail
    assert "oversized" in by_reason and "70" in by_reason["oversized"].detail

    # counted: the worker's self-metrics in the ops database, by reason
    worker.report_metrics()
    rows = influx.rows('SELECT last("count") AS n FROM "deadletters" GROUP BY "reason"', settings.influx.ops_database)
    counted = {r["reason"]: r["n"] for r in rows}
    assert counted["unknown_field"] == 2 and counted["unknown_device"] == 1 and counted["oversized"] == 1

    # listable from the command line
    for k, v in settings_env(settings).items():
        if k.startswith("SMARTZONE_"):
            monkeypatch.setenv(k, v)
    assert main(["deadletters", "list", "--limit", "50"]) == 0
    out = capsys.readouterr().out
    assert f"{len(CASES) + 1} pending dead letters" in out
    for reason in CASES:
        assert reason in out

    # replay once the device is registered: its reading lands, the rest stays pending
    doc = yaml.safe_load(REGISTRY.read_text())
    doc["sensors"].append(
        {
            "id": "counter-new-1",
            "gateway": "gw-egmont",
            "keys": ["counter-new-1"],
            "technology": "wifi",
            "category": "traffic",
            "format": "generic_json",
            "position": {"lat": 51.2095, "lon": 4.3934},
        }
    )
    new_registry = tmp_path / "registry.yaml"
    new_registry.write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("SMARTZONE_REGISTRY", str(new_registry))
    assert main(["deadletters", "replay", "--reason", "unknown_device"]) == 0
    assert "replayed=1 still_failing=0" in capsys.readouterr().out
    stored = {(s, q, v) for s, q, v, _ in stored_readings(influx, db)}
    assert ("counter-new-1", "traffic.cars", 17) in stored
    assert "unknown_device" not in store.counts()
    assert store.counts()["unknown_field"] == 2

    # replaying the rest changes nothing: they still fail, with their reasons kept
    result = replay(store, worker.pipeline, worker.writer)
    assert result.replayed == 0 and result.still_failing == len(CASES)
    assert set(store.counts()) == set(CASES) - {"unknown_device"}
    store.close()


@pytest.mark.parametrize(
    "registry_text, message",
    [
        (
            "zone: {name: x, city: y}\ngateways: []\nsensors: [{id: a, keys: [k], technology: laser, category: noise, "
            "mobile: true}]\n",
            "unknown technology",
        ),
        (
            "zone: {name: x, city: y}\ngateways: []\nsensors: [{id: a, keys: [k], technology: ble, category: noise}]\n",
            "either a fixed position or mobile",
        ),
        ("zone: {name: x, city: y, timezone: Mars/Olympus}\ngateways: []\nsensors: []\n", "unknown time zone"),
        ("zone: [\n", "not valid YAML"),
    ],
)
def test_bad_registry_is_a_clear_configuration_error(tmp_path: Path, registry_text, message):
    from smartzone.errors import ConfigurationError

    path = tmp_path / "r.yaml"
    path.write_text(registry_text)
    with pytest.raises(ConfigurationError, match=message):
        Registry.load(path)


def test_pipeline_dead_letters_a_topic_no_route_matches(registry):
    # Replays and direct callers go through the same code as the worker (which also watches gw/# for them).
    from datacharter.charter import Charter
    from ingest.pipeline import Pipeline
    from smartzone.settings import Settings
    from tests.ingest.rendered import run

    p = Pipeline.from_settings(Settings(), registry, Charter.load(), pseudonymiser=None)
    out = run(p, p.message("gw/gw-egmont/unknown-software/thing", b"42", NOW))
    assert out.lines == [] and out.letter is not None and out.letter.reason == "no_route"
    assert p.stats.reasons == {"no_route": 1}


# -- topics no route matches ---------------------------------------------------------------------------
CHIRPSTACK_APP = "1de53b8a-8ccc-5d2d-a04a-b8a453e14f91"
UNROUTED = {
    "gw/gw-egmont/nothing/routes/here": b'{"temperature": 21.5}',
    f"application/{CHIRPSTACK_APP}/device/a81758fffe0312ab/event/up/extra": b'{"deduplicationId": "x"}',
}


def _ops_rows(influx, settings, q: str) -> list[dict]:
    return influx.rows(q, settings.influx.ops_database)


def test_a_topic_no_route_matches_is_a_counted_dead_letter(settings, influx, run_worker):
    # A gateway publishing where no route listens: today acked by the broker and dropped unseen. The worker
    # watches gw/# and application/# (ingest.watch), so such a message is a no_route dead letter, capped
    # per gateway and hour (here 2, so the third from gw-egmont is counted, not kept), with a bounded payload;
    # topics that belong to other software (ingest.ignore) are acked and dropped without a letter.
    s = settings.model_copy(
        update={"ingest": settings.ingest.model_copy(update={"no_route_per_hour": 2, "no_route_keep_bytes": 64})}
    )
    worker = run_worker(s)
    long_payload = b"x" * 1000
    good = _json("traffic-egmont-1", {"traffic.cars": 12}, NOW - timedelta(minutes=5))
    _publish(
        s.mqtt.port,
        [
            *UNROUTED.items(),
            ("gw/gw-egmont/nothing/routes/again", long_payload),
            ("gw/gw-egmont/nothing/routes/third", b"3"),  # over gw-egmont's cap of 2 this hour
            ("gw/gw-egmont/experiments/desired", b'{"run": []}'),  # ignored: the experiments service's
            ("gw/gw-egmont/tele/plug-1/STATE", b'{"POWER": "ON"}'),  # ignored: Tasmota's state, not a reading
            (TOPIC, good),
        ],
    )
    db = s.influx.raw_database
    assert wait_for(lambda: len(stored_readings(influx, db)) == 1, 15)  # the routed message is unaffected
    store = DeadLetterStore(s.sql_url)
    assert wait_for(lambda: store.counts().get("no_route") == 3, 10), store.counts()
    letters = {d.topic: d for d in store.entries(reason="no_route")}
    assert set(letters) == {*UNROUTED, "gw/gw-egmont/nothing/routes/again"}
    for topic, payload in UNROUTED.items():
        assert letters[topic].payload == payload and topic in letters[topic].detail
    cut = letters["gw/gw-egmont/nothing/routes/again"]
    assert cut.payload == long_payload[:64] and "the first 64 of 1000 payload bytes kept" in cut.detail
    assert set(store.counts()) == {"no_route"}
    store.close()

    # counted, so the operations dashboard ("Dead letters by reason") shows the misconfiguration: every one
    assert wait_for(lambda: worker.pipeline.stats.received == 7, 10)
    worker.report_metrics()
    rows = _ops_rows(influx, s, 'SELECT last("count") AS n FROM "deadletters" GROUP BY "reason"')
    assert {r["reason"]: r["n"] for r in rows} == {"no_route": 4}
    (ingest,) = _ops_rows(influx, s, 'SELECT last("no_route_not_kept") AS c, last("ignored") AS i FROM "ingest"')
    assert (ingest["c"], ingest["i"]) == (1, 2)


def test_a_resumed_session_holds_no_overlapping_subscriptions(settings, influx, run_worker):
    # A worker of an earlier version subscribed to the routes' filters only; its persistent session keeps them.
    # Resumed by a worker that also watches gw/#, each reading must still arrive once, not once per filter.
    old = settings.model_copy(update={"ingest": settings.ingest.model_copy(update={"watch": []})})
    run_worker(old).stop()
    worker = run_worker(settings)  # same client id: the broker resumes the session
    good = _json("traffic-egmont-1", {"traffic.cars": 12}, NOW - timedelta(minutes=5))
    _publish(settings.mqtt.port, [(TOPIC, good), ("gw/gw-egmont/nothing/routes/here", b"1")])
    store = DeadLetterStore(settings.sql_url)
    # the broker sends a message's copies before the next message: once the second is in, all of the first are
    assert wait_for(lambda: store.counts().get("no_route") == 1, 10), store.counts()
    store.close()
    assert worker.pipeline.stats.received == 2
    assert worker.pipeline.stats.readings == 1


def test_no_route_cap_counts_per_source_and_hour_of_receipt(registry):
    # The cap's clock is the receipt time the worker gives each message: a parameter here.
    from datacharter.charter import Charter
    from ingest.pipeline import Pipeline
    from smartzone.settings import Settings

    s = Settings(ingest={"no_route_per_hour": 2})
    p = Pipeline.from_settings(s, registry, Charter.load(), pseudonymiser=None, cap_unrouted=True)
    hour = datetime(2026, 12, 1, 10, tzinfo=UTC)

    def letters(topic: str, at: datetime, n: int = 3) -> int:
        return sum(p.process(p.message(topic, b"{}", at)).letter is not None for _ in range(n))

    assert letters("gw/gw-egmont/a/b", hour) == 2
    assert letters("gw/gw-egmont/other", hour + timedelta(minutes=59)) == 0  # same source, same hour
    assert letters("gw/gw-volkstraat/a/b", hour) == 2  # another gateway has its own allowance
    assert letters("gw/gw-egmont/a/b", hour + timedelta(hours=1)) == 2  # a new hour
    assert p.stats.reasons["no_route"] == 12 and p.stats.no_route_not_kept == 6 and p.stats.dead_lettered == 6
    # without the cap (a replay of stored letters): every one is kept
    q = Pipeline.from_settings(s, registry, Charter.load(), pseudonymiser=None)
    assert sum(q.process(q.message("gw/gw-egmont/a/b", b"{}", hour)).letter is not None for _ in range(5)) == 5


def test_subscriptions_never_overlap():
    from ingest.pipeline import covers, subscriptions
    from smartzone.settings import DEFAULT_ROUTES, Route

    # the scheduler's state changes are the one route outside the watched prefixes
    assert subscriptions(DEFAULT_ROUTES, ["gw/#", "application/#"]) == [
        "gw/#",
        "application/#",
        "smartzone/experiments/events",
    ]
    assert subscriptions(DEFAULT_ROUTES, []) == [r.filter for r in DEFAULT_ROUTES]
    routes = [Route(filter="gw/+/json/#", decoder="generic_json"), Route(filter="other/+", decoder="senml")]
    assert subscriptions(routes, ["gw/+/#", "gw/#"]) == ["gw/#", "other/+"]
    assert covers("a/#", "a") and covers("+/b", "a/b") and not covers("a/+", "a/#") and not covers("#", "$SYS/x")


# -- each reading stands alone -------------------------------------------------------------------------
def test_each_reading_stands_alone(settings, influx, run_worker):
    # Before: a 401-digit number for a float quantity raised OverflowError, and a gateway id ending in a
    # backslash a LineProtocolError, out of the pipeline: the whole message was an internal_error letter and
    # its good readings were lost. Now the good ones are written and the letter names the bad one precisely.
    worker = run_worker()
    huge = b"1" * 401
    at = (NOW - timedelta(minutes=3)).isoformat().encode()
    mixed = b'{"device": "traffic-egmont-1", "time": "%s", "readings": {"traffic.speed_mean": %s, "traffic.cars": 7}}'
    ble = b'{"id": "A4:C1:38:00:00:01", "tempc": 21.5}'  # wx-volkstraat-1: registered without a gateway
    bad_gateway = "gw/gw-volkstraat\\/home/TheengsGateway/BTtoMQTT/A4C138000001"
    _publish(
        settings.mqtt.port,
        [(TOPIC, mixed % (at, huge)), (bad_gateway, ble), ("gw/gw-volkstraat/home/TheengsGateway/BTtoMQTT/x", ble)],
    )
    raw = settings.influx.raw_database
    assert wait_for(lambda: len(stored_readings(influx, raw)) == 2, 15), stored_readings(influx, raw)
    stored = {(s, q, v) for s, q, v, _ in stored_readings(influx, raw)}
    assert stored == {("traffic-egmont-1", "traffic.cars", 7), ("wx-volkstraat-1", "weather.temperature", 21.5)}
    store = DeadLetterStore(settings.sql_url)
    assert wait_for(lambda: sum(store.counts().values()) == 2, 10), store.counts()
    letters = {d.topic: d for d in store.entries()}
    big = letters[TOPIC]
    assert big.reason == "out_of_range" and "traffic.speed_mean" in big.detail and "401 digits" in big.detail
    assert big.payload == mixed % (at, huge)  # kept whole: a replay re-processes the message
    bad = letters[bad_gateway]
    assert bad.reason == "bad_identifier" and "gw-volkstraat\\\\'" in bad.detail and "backslash" in bad.detail
    store.close()
    assert "internal_error" not in worker.pipeline.stats.reasons


def test_an_integer_influxdb_cannot_hold_is_refused_alone(settings, influx, tmp_path):
    # InfluxDB's integers are int64: such a point is a dead letter saying so, its batch-mates are written.
    from smartzone.model import Point, Store
    from storage.spool import Spool
    from storage.writer import Writer

    store = DeadLetterStore(settings.sql_url)
    raw = settings.influx.raw_database
    influx.query(f'CREATE DATABASE "{raw}"', write=True)
    writer = Writer(
        influx, raw, Spool(tmp_path / "spool"), store, spool_after=1, max_buffer_bytes=1 << 20,
        ensure_databases=lambda: None,
    )  # fmt: skip
    ns = time_ns()
    points = [
        Point("lorawan_events", {"sensor": "s1"}, {"count": 1, "f_cnt_down": 2**64 + 1}, ns, Store.RAW),
        Point("lorawan_events", {"sensor": "s2"}, {"count": 1}, ns, Store.RAW),
    ]
    assert writer.write_points(points) == 1
    assert [r["sensor"] for r in influx.rows('SELECT * FROM "lorawan_events" GROUP BY *', raw)] == ["s2"]
    (letter,) = store.entries()
    assert letter.reason == "unrepresentable" and "too large for InfluxDB (int64)" in letter.detail
    store.close()


# -- NaN and infinity in LoRaWAN radio metadata ---------------------------------------------------------
def test_nan_radio_metadata_is_left_out_of_its_point(settings, influx, run_worker):
    # An uplink whose gateway reported a NaN or infinite snr: its readings and radio points are written, the
    # radio points without snr (counted as fields_dropped), and no dead letter; before, the radio points were
    # refused whole ("unrepresentable") and the message became a dead letter.
    from google.protobuf import json_format

    from tests.ingest.test_chirpstack import APP, ELSYS, ELSYS_FRAME, _uplink

    worker = run_worker()
    topic = f"application/{APP}/device/{ELSYS}/event/up"
    ev = _uplink(data=ELSYS_FRAME, gateways=(("b827ebfffe6a0c01", -87, float("nan")), ("0016c001ff10a235", -90, 2.5)))
    ev.time.FromDatetime(NOW - timedelta(minutes=2))
    inf = _uplink(data=ELSYS_FRAME, f_cnt=8, gateways=(("b827ebfffe6a0c01", -88, float("inf")),))
    inf.time.FromDatetime(NOW - timedelta(minutes=1))
    json_inf = json_format.MessageToJson(inf).encode()
    assert b'"Infinity"' in json_inf  # the proto3 JSON mapping's spelling
    _publish(settings.mqtt.port, [(topic, ev.SerializeToString()), (topic, json_inf)])
    ops = settings.influx.ops_database
    q = 'SELECT "rssi", "snr", "f_cnt" FROM "radio" GROUP BY "rx_gateway"'
    assert wait_for(lambda: len(influx.rows(q, ops)) == 3, 15), influx.rows(q, ops)
    radio = sorted((r["rx_gateway"], r["f_cnt"], r["rssi"], r["snr"]) for r in influx.rows(q, ops))
    assert radio == [
        ("gw-kmska-roof", 7, -90, 2.5),
        ("gw-volkstraat", 7, -87, None),
        ("gw-volkstraat", 8, -88, None),
    ]
    assert len(stored_readings(influx, settings.influx.raw_database)) == 6  # 3 readings per uplink
    assert DeadLetterStore(settings.sql_url).counts() == {}
    assert worker.pipeline.stats.fields_dropped == 2
    worker.report_metrics()
    (row,) = influx.rows('SELECT last("fields_dropped") AS n FROM "ingest"', ops)
    assert row["n"] == 2


# -- reading dead letters safely ------------------------------------------------------------------------
def test_deadletters_list_escapes_control_characters(tmp_path):
    # Payloads, topics and details are whatever the network sent: printed raw, ESC sequences drive the
    # terminal (clear it, retitle it, hide lines) and bidi overrides reorder what the operator reads.
    import subprocess
    import sys

    from smartzone.model import DeadLetter
    from tests.conftest import REPO, zone_settings

    s = zone_settings(tmp_path / "data", "http://127.0.0.1:9")
    store = DeadLetterStore(s.sql_url)
    hostile = b"\x1b]0;owned\x07\x1b[2J\x1b[1A#1 fake line\r\n\xc2\x9b31m \xe2\x80\xaetxt.exe\x7f"
    store.add([DeadLetter(NOW, "gw/gw-egmont/\x1b[31mred/\u202eevil", hostile, "no_route", "topic '\x1b[31m'")])
    store.close()
    env = settings_env(s)
    out = subprocess.run(
        [sys.executable, "-m", "cli", "deadletters", "list"], env=env, cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    for raw in ("\x1b", "\x07", "\r", "\x7f", "\x9b", "\u202e"):
        assert raw not in out, repr(raw)
    assert "payload: \\x1b]0;owned\\x07\\x1b[2J\\x1b[1A#1 fake line\\r\\n\\x9b31m \\u202etxt.exe\\x7f" in out
    assert "topic=gw/gw-egmont/\\x1b[31mred/\\u202eevil" in out and "detail: topic '\\x1b[31m'" in out
    assert out.count("\n") == 5  # the counts (2 lines), then one letter in three lines: no forged line
