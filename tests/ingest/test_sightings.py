"""Sightings of passers-by: pseudonymised at ingestion, never stored raw, not even in a dead letter.

Pepper store and pseudonyms (no services), the pipeline's lines and scrubbed dead letters, then the
worker end to end against real mosquitto and influxd, with a scan of every database and of the worker's
data folder for the raw identifiers.
"""

from __future__ import annotations

import json
import multiprocessing
import re
import stat
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from datacharter.charter import Charter
from gateways.publisher import Publisher
from gateways.simulator import Emitted, SimulatedZone
from ingest.pepper import PepperStore, Pseudonymiser, is_randomised_mac, normalise_mac, pseudonym
from ingest.pipeline import Pipeline
from smartzone.settings import Settings
from storage.deadletters import DeadLetterStore
from tests.conftest import wait_for
from tests.ingest.rendered import run

NOW = datetime.now(UTC).replace(microsecond=0)
DAY = 86_400
TOPIC = "gw/gw-volkstraat/sightings/ped-volkstraat-1"
STABLE = "F0:18:98:12:34:56"  # an Apple OUI: globally administered
RANDOM = "DA:A1:19:0B:37:5C"  # 0xDA has the locally administered bit
BLE = "3c-22-fb-aa-bb-cc"  # another spelling of 3C:22:FB:AA:BB:CC
VEHICLE = "1-ABC-123"
BAD_MAC = "F0:18:98:77:66"  # five octets
OLD_MAC = "F0:18:98:99:88:77"
BROKEN_MAC = "F0:18:98:55:44:33"
EXTRA_PLATE = "2-XYZ-987"
LATE_MAC = "F0:18:98:11:22:33"
UNKNOWN_MAC = "F0:18:98:44:55:66"
BIG_MAC = "F0:18:98:66:77:88"
IDENTIFIERS = [STABLE, RANDOM, BLE, VEHICLE, BAD_MAC, OLD_MAC, BROKEN_MAC, EXTRA_PLATE, LATE_MAC, UNKNOWN_MAC, BIG_MAC]
HEX16 = re.compile(r"[0-9a-f]{16}")


def _spellings(identifier: str) -> set[str]:
    """Every way the identifier could show up in stored text."""
    digits = re.sub(r"[^0-9A-Za-z]", "", identifier)
    out = {identifier, identifier.upper(), identifier.lower(), digits.upper(), digits.lower()}
    if len(digits) in (10, 12):  # MAC-like: colon and hyphen forms too
        pairs = [digits[i : i + 2] for i in range(0, len(digits), 2)]
        out |= {sep.join(pairs).upper() for sep in ":-"} | {sep.join(pairs).lower() for sep in ":-"}
    return out


def _assert_absent(text: str | bytes, identifiers=IDENTIFIERS, where: str = "") -> None:
    blob = text.decode("latin-1") if isinstance(text, bytes) else text
    for identifier in identifiers:
        for spelling in _spellings(identifier):
            assert spelling not in blob, f"{identifier!r} found as {spelling!r} in {where}"


def _doc(sightings: list, device: str = "ped-volkstraat-1", time: datetime = NOW) -> bytes:
    return orjson.dumps({"device": device, "time": time.isoformat(), "sightings": sightings})


# -- pepper store and pseudonyms ------------------------------------------------------------------------
class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_pseudonyms_are_stable_within_a_period_and_differ_across_periods(tmp_path):
    day = datetime(2026, 5, 1, tzinfo=UTC)
    store = PepperStore(tmp_path / "peppers", grace_s=30 * DAY, clock=Clock(day.timestamp() + 3600))
    p = Pseudonymiser(store)
    morning, evening, next_day = day + timedelta(hours=7), day + timedelta(hours=22), day + timedelta(days=1, hours=7)
    a = p(normalise_mac(STABLE), morning)
    assert HEX16.fullmatch(a)
    assert p(normalise_mac(STABLE), evening) == a  # same UTC day: same pseudonym (distinct devices countable)
    assert p(normalise_mac(STABLE), next_day) != a  # next day: unlinkable
    assert p(normalise_mac(RANDOM), morning) != a
    assert pseudonym(store.pepper(morning), BLE) == pseudonym(store.pepper(morning), "3C:22:FB:AA:BB:CC")
    # a second store on the same folder (another worker) reads the same peppers
    other = Pseudonymiser(PepperStore(tmp_path / "peppers", grace_s=30 * DAY, clock=Clock(day.timestamp())))
    assert other(normalise_mac(STABLE), morning) == a and other(normalise_mac(STABLE), next_day) == p(
        normalise_mac(STABLE), next_day
    )


def test_pepper_files_are_private_and_destroyed_after_the_grace(tmp_path):
    day = datetime(2026, 5, 1, tzinfo=UTC)
    clock = Clock(day.timestamp() + 600)
    store = PepperStore(tmp_path / "peppers", grace_s=2 * 3600, clock=clock)
    pseudo = Pseudonymiser(store)
    t = day + timedelta(minutes=5)
    pepper = store.pepper(t)
    assert len(pepper) == 32 and store.pepper(t) == pepper
    assert pseudo(normalise_mac(STABLE), t)
    path = tmp_path / "peppers" / f"{int(day.timestamp()) // DAY}.pepper"
    assert path.read_bytes() == pepper
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "peppers").stat().st_mode) == 0o700

    clock.t = day.timestamp() + DAY + 2 * 3600 - 1  # the day ended 2 h - 1 s ago: still within the grace
    assert store.destroy_expired(datetime.fromtimestamp(clock.t, UTC)) == 0 and store.pepper(t) == pepper
    clock.t += 2  # past the grace
    assert pseudo(normalise_mac(STABLE), t) is None
    assert store.destroy_expired(datetime.fromtimestamp(clock.t, UTC)) == 1
    assert store.pepper(t) is None
    assert not path.exists() and list((tmp_path / "peppers").iterdir()) == []
    # a new day gets a new pepper; the destroyed one is never recreated
    assert store.pepper(t + timedelta(days=1)) not in (None, pepper)
    assert store.pepper(t) is None and not path.exists()


def test_pepper_store_sweeps_expired_files_on_its_own(tmp_path):
    day = datetime(2026, 5, 1, tzinfo=UTC)
    clock = Clock(day.timestamp())
    store = PepperStore(tmp_path, rotation_s=3600, grace_s=0, clock=clock)
    for h in range(3):
        store.pepper(day + timedelta(hours=h))
    assert len(list(tmp_path.glob("*.pepper"))) == 3
    clock.t += 2 * 3600 + 61  # two periods ended; the sweep runs at most once a minute, from pepper()
    store.pepper(day + timedelta(hours=2))
    assert sorted(p.name for p in tmp_path.glob("*.pepper")) == [f"{int(day.timestamp()) // 3600 + 2}.pepper"]


def _pepper_in_child(folder: str) -> str:
    return PepperStore(folder, grace_s=DAY).pepper(NOW).hex()


def test_concurrent_processes_agree_on_one_pepper(tmp_path):
    with multiprocessing.get_context("fork").Pool(8) as pool:
        peppers = pool.map(_pepper_in_child, [str(tmp_path)] * 32)
    assert len(set(peppers)) == 1
    assert [p.name for p in tmp_path.iterdir()] == [f"{int(NOW.timestamp()) // DAY}.pepper"]  # no temporary left


def test_mac_normalisation_and_the_randomised_bit():
    for spelling in ("aa:bb:cc:dd:ee:ff", "AA-BB-CC-DD-EE-FF", "aabb.ccdd.eeff", "AABBCCDDEEFF", " aa:bb:cc:dd:ee:ff "):
        assert normalise_mac(spelling) == "AA:BB:CC:DD:EE:FF"
    for bad in ("AA:BB:CC:DD:EE", "AA:BB-CC:DD:EE:FF", "GG:BB:CC:DD:EE:FF", "", 42, None, "AABBCCDDEEFF00"):
        assert normalise_mac(bad) is None
    assert not is_randomised_mac(STABLE) and is_randomised_mac(RANDOM)
    assert is_randomised_mac("02:00:00:00:00:00") and not is_randomised_mac("FD:00:00:00:00:00")


@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32), st.text(min_size=1, max_size=40))
def test_pseudonym_is_16_hex_deterministic_and_keyed(pepper, other, identifier):
    a = pseudonym(pepper, identifier)
    assert HEX16.fullmatch(a) and pseudonym(pepper, identifier) == a
    assume(pepper != other)
    assert pseudonym(other, identifier) != a  # a 64-bit collision has probability 2**-64


@given(st.binary(min_size=32, max_size=32), st.binary(min_size=6, max_size=6))
def test_pseudonym_of_a_mac_ignores_its_spelling(pepper, raw):
    colon = ":".join(f"{b:02X}" for b in raw)
    assert (
        pseudonym(pepper, colon) == pseudonym(pepper, colon.lower().replace(":", "-")) == pseudonym(pepper, raw.hex())
    )


# -- the pipeline ---------------------------------------------------------------------------------------
@pytest.fixture
def store(tmp_path) -> PepperStore:
    return PepperStore(tmp_path / "peppers", grace_s=30 * DAY)


@pytest.fixture
def pipeline(registry, store) -> Pipeline:
    return Pipeline.from_settings(Settings(), registry, Charter.load(), pseudonymiser=Pseudonymiser(store))


def _run(pipeline: Pipeline, payload: bytes, topic: str = TOPIC):
    return run(pipeline, pipeline.message(topic, payload, NOW))


def test_sightings_become_pseudonymous_lines(pipeline, store):
    seen = NOW - timedelta(seconds=20)
    out = _run(
        pipeline,
        _doc(
            [
                {"mac": STABLE, "rssi": -71, "kind": "wifi", "time": seen.isoformat()},
                {"mac": RANDOM, "rssi": -80.0, "kind": "wifi"},
                {"mac": BLE, "kind": "ble"},
                {"vehicle": VEHICLE, "kind": "vehicle", "class": "car"},
            ]
        ),
    )
    assert out.letter is None and out.lines == [] and out.ops_lines == []
    pepper = store.pepper(NOW)
    sensor = {
        "category": "pedestrian_flow",
        "cell": "8a1fa4c5ab6ffff",
        "gateway": "gw-volkstraat",
        "sensor": "ped-volkstraat-1",
        "technology": "wifi",
    }

    def line(tags: dict, fields: str, ns: int) -> str:  # tags in InfluxDB's (sorted) order
        return "sighting" + "".join(f",{k}={v}" for k, v in sorted({**sensor, **tags}.items())) + f" {fields} {ns}"

    ns = int(NOW.timestamp()) * 10**9
    assert out.pseudo_lines == [
        line(
            {"kind": "wifi", "randomised": "false", "subject": pseudonym(pepper, STABLE)}, "rssi=-71i", ns - 20 * 10**9
        ),
        line({"kind": "wifi", "randomised": "true", "subject": pseudonym(pepper, RANDOM)}, "rssi=-80i", ns),
        line({"kind": "ble", "randomised": "false", "subject": pseudonym(pepper, "3C:22:FB:AA:BB:CC")}, "seen=1i", ns),
        line({"class": "car", "kind": "vehicle", "subject": pseudonym(pepper, "vehicle:1ABC123")}, "seen=1i", ns),
    ]
    _assert_absent("\n".join(out.pseudo_lines), where="lines")
    # "1 abc 123" is the same vehicle; a message without sightings writes nothing and is no error
    again = _run(pipeline, _doc([{"vehicle": "1 abc 123", "kind": "vehicle", "class": "car"}]))
    assert again.pseudo_lines == [out.pseudo_lines[3]]
    empty = _run(pipeline, _doc([]))
    assert empty.letter is None and empty.pseudo_lines == []


def test_a_bad_sighting_is_dead_lettered_scrubbed_and_the_others_written(pipeline, store):
    payload = _doc(
        [
            {"mac": STABLE, "rssi": -71, "kind": "wifi"},
            {"mac": BAD_MAC, "kind": "wifi"},
            {"mac": OLD_MAC, "kind": "ble", "time": (NOW - timedelta(days=31)).isoformat()},
            {"mac": RANDOM, "kind": "wifi", "rssi": 99},
            {"vehicle": EXTRA_PLATE, "kind": "wifi"},
            {"mac": LATE_MAC, "kind": "wifi", "plate": EXTRA_PLATE},
            "F0:18:98:12:34:56",
        ]
    )
    out = _run(pipeline, payload)
    assert len(out.pseudo_lines) == 1 and pseudonym(store.pepper(NOW), STABLE) in out.pseudo_lines[0]
    letter = out.letter
    assert letter.reason == "bad_identifier"
    reasons = re.findall(r"(?:^|; )(\w+): sighting (\d)", letter.detail)
    assert reasons == [
        ("bad_identifier", "1"),
        ("pepper_destroyed", "2"),
        ("out_of_range", "3"),
        ("malformed", "4"),
        ("malformed", "5"),
        ("malformed", "6"),
    ]
    _assert_absent(letter.payload, where="the dead letter's payload")
    _assert_absent(letter.detail, where="the dead letter's detail")
    kept = orjson.loads(letter.payload)["sightings"]
    pepper = store.pepper(NOW)
    assert kept[0] == {"subject": pseudonym(pepper, STABLE), "randomised": False, "rssi": -71, "kind": "wifi"}
    assert kept[1] == {"mac": "<withheld>", "kind": "wifi"}
    assert kept[2]["mac"] == "<unpseudonymisable>"
    assert kept[3] == {"subject": pseudonym(pepper, RANDOM), "randomised": True, "kind": "wifi", "rssi": 99}
    assert kept[5] == {
        "subject": pseudonym(pepper, LATE_MAC),
        "randomised": False,
        "kind": "wifi",
        "<withheld keys>": 1,
    }
    assert kept[6] == "<withheld>"


@pytest.mark.parametrize(
    "payload, reason",
    [
        (
            b'{"device": "ped-volkstraat-1", "sightings": [{"mac": "' + BROKEN_MAC.encode() + b'", "kind": "wifi"}',
            "malformed",
        ),
        (_doc([{"mac": STABLE, "kind": "wifi"}], device="ped-unknown-9"), "unknown_device"),
        (_doc([{"mac": STABLE, "kind": "wifi"}]) + b" " * 70_000, "oversized"),
        (
            orjson.dumps(
                {"device": "ped-volkstraat-1", "sightings": [{"mac": STABLE, "kind": "wifi"}], "note": VEHICLE}
            ),
            "malformed",
        ),
        (_doc([{"mac": STABLE, "kind": "wifi", "time": VEHICLE}]), "bad_timestamp"),
        (
            orjson.dumps(
                {"device": "ped-volkstraat-1", "time": RANDOM, "sightings": [{"mac": STABLE, "kind": "wifi"}]}
            ),
            "bad_timestamp",
        ),
        (_doc([{"mac": STABLE, "kind": "wifi"}], time=NOW + timedelta(hours=1)), "future_timestamp"),
    ],
)
def test_rejected_messages_keep_no_identifier(pipeline, payload, reason):
    out = _run(pipeline, payload)
    assert out.letter.reason == reason and out.pseudo_lines == []
    _assert_absent(out.letter.payload, where=f"{reason} payload")
    _assert_absent(out.letter.detail, where=f"{reason} detail")


def test_without_a_pepper_store_every_message_is_refused_scrubbed(registry):
    pipeline = Pipeline.from_settings(Settings(), registry, Charter.load(), pseudonymiser=None)
    out = _run(pipeline, _doc([{"mac": STABLE, "kind": "wifi", "rssi": -60}, {"vehicle": VEHICLE, "kind": "vehicle"}]))
    assert out.letter.reason == "no_pepper" and out.pseudo_lines == []
    assert orjson.loads(out.letter.payload)["sightings"] == [
        {"mac": "<unpseudonymisable>", "kind": "wifi", "rssi": -60},
        {"vehicle": "<unpseudonymisable>", "kind": "vehicle"},
    ]
    _assert_absent(out.letter.payload)


def test_a_scrubbed_dead_letter_replays_to_the_same_points(pipeline):
    payload = _doc(
        [
            {"mac": STABLE, "rssi": -71, "kind": "wifi"},
            {"mac": RANDOM, "kind": "ble"},
            {"vehicle": VEHICLE, "kind": "vehicle", "class": "heavy_vehicle"},
            {"mac": BAD_MAC, "kind": "wifi"},
        ]
    )
    first = _run(pipeline, payload)
    replayed = _run(pipeline, first.letter.payload)  # what `smartzone deadletters replay` does
    assert replayed.pseudo_lines == first.pseudo_lines and len(first.pseudo_lines) == 3
    assert replayed.letter.reason == "bad_identifier"


def test_a_decoder_crash_keeps_no_identifier(pipeline, monkeypatch):
    decoder = pipeline.routes[[name for _, name, _ in pipeline.routes].index("sightings")][2]
    monkeypatch.setattr(decoder, "_sighting", lambda *a: 1 / 0)
    out = _run(pipeline, _doc([{"mac": STABLE, "kind": "wifi"}]))
    assert out.letter.reason == "decoder_error"
    _assert_absent(out.letter.payload)
    monkeypatch.setattr(decoder, "scrub", lambda msg: 1 / 0)  # even a failing scrub keeps nothing raw
    pipeline._scrubbers["sightings"] = decoder.scrub
    out = _run(pipeline, _doc([{"mac": STABLE, "kind": "wifi"}]))
    assert out.letter.reason == "decoder_error" and b"withheld" in out.letter.payload
    _assert_absent(out.letter.payload)


# -- end to end -------------------------------------------------------------------------------------------
def _publish(port: int, items: list[tuple[str, bytes]]) -> None:
    pub = Publisher("127.0.0.1", port)
    pub.publish(Emitted(t, p, ()) for t, p in items)
    assert pub.wait_acked(10)
    pub.close()


def _influx_dump(influx, database: str) -> str:
    out = []
    for q in ("SHOW MEASUREMENTS", "SHOW SERIES", "SHOW TAG VALUES WITH KEY =~ /.*/", "SELECT * FROM /.*/"):
        out.append(json.dumps(influx.query(q, database)))
    return "\n".join(out)


def _scan_everything(settings, influx, identifiers) -> None:
    for db in (settings.influx.raw_database, settings.influx.ops_database, settings.influx.pseudonymous_database):
        _assert_absent(_influx_dump(influx, db), identifiers, where=f"database {db}")
    store = DeadLetterStore(settings.sql_url)
    try:
        for d in store.entries(status=None, limit=0):
            _assert_absent(d.payload, identifiers, where=f"dead letter {d.id} payload")
            _assert_absent(d.detail + d.topic, identifiers, where=f"dead letter {d.id} detail")
    finally:
        store.close()
    # and every file the worker keeps: the SQLite store (and its WAL), the spool, the receipt journal
    files = [p for p in settings.data_dir.rglob("*") if p.is_file()]
    assert any(p.name.startswith("smartzone.db") for p in files)
    for path in files:
        _assert_absent(path.read_bytes(), identifiers, where=str(path))


def test_worker_writes_sightings_pseudonymised_and_stores_no_identifier_anywhere(settings, influx, run_worker):
    run_worker()
    seen = NOW - timedelta(minutes=2)
    good = _doc(
        [
            {"mac": STABLE, "rssi": -71, "kind": "wifi", "time": seen.isoformat()},
            {"mac": RANDOM, "rssi": -80, "kind": "wifi", "time": seen.isoformat()},
            {"mac": BLE, "kind": "ble"},
            {"vehicle": VEHICLE, "kind": "vehicle", "class": "car"},
        ],
        time=NOW - timedelta(minutes=1),
    )
    cases = {
        "bad_identifier": (
            TOPIC,
            _doc(
                [
                    {"mac": STABLE, "kind": "wifi", "rssi": -66},
                    {"mac": BAD_MAC, "kind": "wifi"},
                    {"vehicle": EXTRA_PLATE, "kind": "vehicle"},
                ]
            ),
        ),
        "pepper_destroyed": (TOPIC, _doc([{"mac": OLD_MAC, "kind": "wifi"}], time=NOW - timedelta(days=31))),
        "malformed": (TOPIC, b'{"device": "ped-volkstraat-1", "sightings": [{"mac": "' + BROKEN_MAC.encode() + b'"'),
        "unknown_device": (
            "gw/gw-volkstraat/sightings/ped-unknown-9",
            _doc([{"mac": UNKNOWN_MAC, "kind": "wifi"}], device="ped-unknown-9"),
        ),
        "oversized": (TOPIC, _doc([{"mac": BIG_MAC, "kind": "wifi"}]) + b" " * 70_000),
        "pepper_destroyed_after_retention": (
            TOPIC,
            _doc([{"mac": LATE_MAC, "kind": "ble"}], time=NOW - timedelta(days=2, hours=1)),
        ),
    }
    _publish(settings.mqtt.port, [(TOPIC, good), *cases.values()])
    pseudo = settings.influx.pseudonymous_database

    def stored():
        return influx.rows('SELECT * FROM "sighting"', pseudo)

    assert wait_for(lambda: len(stored()) >= 6, 15), stored()
    store = DeadLetterStore(settings.sql_url)
    assert wait_for(lambda: sum(store.counts().values()) >= len(cases), 10), store.counts()
    rows = stored()
    pepper = PepperStore(settings.data_dir / "peppers", grace_s=30 * DAY).pepper(NOW)  # the worker's
    by_subject = {r["subject"]: r for r in rows}
    assert set(by_subject) == {pseudonym(pepper, m) for m in (STABLE, RANDOM, BLE)} | {
        pseudonym(pepper, "vehicle:1ABC123"),
        pseudonym(pepper, "vehicle:2XYZ987"),
    }
    assert len(rows) == 6  # STABLE twice: at `seen` and, from the bad_identifier message, at NOW
    assert {(r["kind"], r["randomised"], r["class"], r["rssi"], r["seen"]) for r in rows} == {
        ("wifi", "false", None, -71, None),
        ("wifi", "false", None, -66, None),
        ("wifi", "true", None, -80, None),
        ("ble", "false", None, None, 1),
        ("vehicle", None, "car", None, 1),
        ("vehicle", None, None, None, 1),
    }
    assert all(r["sensor"] == "ped-volkstraat-1" and r["category"] == "pedestrian_flow" for r in rows)
    # nothing of it in the raw database
    assert influx.query("SHOW MEASUREMENTS", settings.influx.raw_database)[0].get("series") is None

    all_letters = store.entries(status=None, limit=0)
    letters = {d.reason: d for d in all_letters}
    store.close()
    # a sighting 2 d 1 h old: its day's pepper lived the charter's 48 h (a day, then a day of grace) and is
    # destroyed, so the sighting cannot be pseudonymised: a scrubbed dead letter like the 31-day-old one
    assert set(letters) == set(cases) - {"pepper_destroyed_after_retention"}, letters
    assert sum(d.reason == "pepper_destroyed" for d in all_letters) == 2
    for reason in ("bad_identifier", "pepper_destroyed", "unknown_device", "oversized"):
        assert letters[reason].payload.startswith(b"{") and b"sightings" in letters[reason].payload
    assert b"<unpseudonymisable>" in letters["pepper_destroyed"].payload
    assert b"<withheld>" in letters["malformed"].payload

    # the pepper folder and files are private
    peppers = settings.data_dir / "peppers"
    assert stat.S_IMODE(peppers.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in peppers.iterdir())
    _scan_everything(settings, influx, IDENTIFIERS)


def test_simulated_probe_sniffers_land_pseudonymised(settings, influx, registry, run_worker):
    run_worker()
    brussels = ZoneInfo("Europe/Brussels")
    start = (NOW.astimezone(brussels) - timedelta(days=1)).replace(hour=12, minute=0, second=0)  # within 48 h
    zone = SimulatedZone(registry, seed=3)
    emitted = [e for e in zone.messages(start, rounds=5, step=60) if "/sightings/" in e.topic]
    docs = [orjson.loads(e.payload) for e in emitted]
    macs = {s["mac"] for d in docs for s in d["sightings"]}
    n = sum(len(d["sightings"]) for d in docs)
    assert n > 50 and len(macs) > 30
    randomised = sum(is_randomised_mac(s["mac"]) for d in docs for s in d["sightings"])
    assert 0.4 < randomised / n < 0.8
    _publish(settings.mqtt.port, [(e.topic, e.payload) for e in emitted])
    pseudo = settings.influx.pseudonymous_database

    def count() -> int:
        res = influx.query('SELECT COUNT("rssi") FROM "sighting"', pseudo)[0]
        return res["series"][0]["values"][0][1] if res.get("series") else 0

    assert wait_for(lambda: count() >= n, 20), (count(), n)
    assert count() == n
    assert DeadLetterStore(settings.sql_url).counts() == {}
    _scan_everything(settings, influx, sorted(macs)[:200])


def test_a_non_finite_rssi_is_left_out_and_the_sighting_counted(pipeline, store):
    # The sniffer could not measure the signal: the sighting still happened. Before, it was dropped whole as a
    # not_finite dead letter (one passer-by fewer in the counts); now only the rssi is left out, and counted.
    payload = (
        b'{"device": "ped-volkstraat-1", "time": "%s", "sightings": [{"mac": "%s", "kind": "wifi", "rssi": NaN}, \
{"mac": "%s", "kind": "wifi", "rssi": -Infinity}]}'
        % (NOW.isoformat().encode(), STABLE.encode(), RANDOM.encode())
    )
    out = _run(pipeline, payload)
    assert out.letter is None
    pepper = store.pepper(NOW)
    assert len(out.pseudo_lines) == 2
    for line, mac in zip(out.pseudo_lines, (STABLE, RANDOM), strict=True):
        assert f"subject={pseudonym(pepper, mac)}" in line and " seen=1i " in line and "rssi" not in line
    assert pipeline.stats.fields_dropped == 2
