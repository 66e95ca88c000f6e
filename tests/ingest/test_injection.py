"""Line-protocol injection: no string from the network can write a point it does not describe.

Every string of every decoder's test vectors (tests/ingest/decoders/cases: JSON keys and values, topic
levels; ChirpStack events in JSON and in protobuf, whose radio and event strings reach tags and fields) is
replaced in turn by each line-protocol special: space, comma, equals sign, quotes, a backslash at the end or
before a special, newline, carriage return, NUL, a forged line, a lone surrogate, invalid UTF-8. Then:

- without services: the pipeline never raises; every line it renders is one line that an InfluxDB 1.x
  parser (``parse``: the same scanning and unescaping as influxd's models/points.go) reads back as exactly
  the Point it came from; a Point line protocol cannot carry is left out and the message's dead letter says
  ``unrepresentable``;
- through a real worker, mosquitto and influxd (ChirpStack, JSON and protobuf, where strings reach tags and
  fields): the databases hold exactly the points expected and nothing else, and the worker keeps running.

The codecs (``ingest/codecs``) turn bytes into numbers under their own names: no string of theirs reaches
storage (``test_codecs_put_no_string_in_a_point``).
"""

from __future__ import annotations

import base64
import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
import yaml
from chirpstack_api.integration import integration_pb2 as pb
from google.protobuf import json_format
from paho.mqtt.enums import CallbackAPIVersion

from datacharter.charter import Charter
from ingest import metrics
from ingest.codecs import CODECS
from ingest.decoders.chirpstack import EVENTS
from ingest.pepper import pseudonym
from ingest.pipeline import Pipeline
from smartzone.model import Point, Store
from smartzone.registry import Registry
from smartzone.settings import Settings
from tests.conftest import REGISTRY, wait_for

CASES = sorted((Path(__file__).parent / "decoders" / "cases").glob("*/*.yaml"))
SPECIALS = [
    " ",
    "a b",
    "a,b",
    "a=b",
    'a"b',
    "'",
    "a\\",
    "a\\,b",
    "a\\ b=c",
    "\\\\",
    "a\nb",
    "a\rb",
    "a\0b",
    'x"\nforged,sensor=x value=1i 1\n',
    "x y=1i 2\n#",
    "#comment",
    "é µg/m³",
    "",
]
RAW_SPECIALS = [b"\xff\xfe", b"\\ud800"]  # invalid UTF-8; a JSON escape of a lone surrogate
NOW = datetime(2026, 11, 25, 9, 30, 15, tzinfo=UTC)


# -- an InfluxDB 1.x line parser ------------------------------------------------------------------------------
def _scan(line: str, i: int, stops: str) -> tuple[str, int]:
    """Up to an unescaped stop character: a backslash makes influxd skip the next character, whatever it is."""
    start = i
    while i < len(line) and line[i] not in stops:
        i += 2 if line[i] == "\\" else 1
    return line[start : min(i, len(line))], min(i, len(line))


def _unescape(text: str, chars: str) -> str:
    for c in chars:
        text = text.replace("\\" + c, c)
    return text


def parse(line: str) -> tuple[str, dict[str, str], dict[str, object], int]:
    """One line as influxd reads it; AssertionError for anything it would refuse or read as several points."""
    assert "\n" not in line and line and not line.startswith("#"), repr(line)
    m, i = _scan(line, 0, ", ")
    tags: dict[str, str] = {}
    while i < len(line) and line[i] == ",":
        kv, i = _scan(line, i + 1, ", ")
        k, j = _scan(kv, 0, "=")
        assert j < len(kv), f"tag without '=': {line!r}"
        tags[_unescape(k, ",= ")] = _unescape(kv[j + 1 :], ",= ")
    assert line[i : i + 1] == " ", repr(line)
    i += 1
    fields: dict[str, object] = {}
    while True:
        k, i = _scan(line, i, "=")
        assert line[i : i + 1] == "=", repr(line)
        i += 1
        if line[i : i + 1] == '"':  # a string: to the unescaped closing quote
            j = i + 1
            while line[j] != '"':
                j += 2 if line[j] == "\\" else 1
            value: object = line[i + 1 : j].replace('\\"', '"').replace("\\\\", "\\")
            i = j + 1
        else:
            raw, i = _scan(line, i, ", ")
            value = (
                True
                if raw == "true"
                else False
                if raw == "false"
                else int(raw[:-1])
                if raw.endswith("i")
                else float(raw)
            )
        fields[_unescape(k, ",= ")] = value
        if line[i : i + 1] == ",":
            i += 1
            continue
        break
    assert line[i : i + 1] == " ", repr(line)
    ts = line[i + 1 :]
    assert ts.isdigit(), repr(line)
    return _unescape(m, ", "), tags, fields, int(ts)


def _expected(p: Point) -> tuple[str, dict[str, str], dict[str, object], int]:
    fields = {k: v.replace("\n", "\\n").replace("\r", "\\r") if isinstance(v, str) else v for k, v in p.fields.items()}
    return p.measurement, {k: v for k, v in p.tags.items() if v}, fields, p.time_ns


# -- the fuzzed messages ------------------------------------------------------------------------------------------
def _paths(doc, path=()):
    """Every string-bearing place in a JSON document: ('key', path) for keys, ('value', path) for string values."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield "key", (*path, k)
            yield from _paths(v, (*path, k))
    elif isinstance(doc, list):
        for n, v in enumerate(doc):
            yield from _paths(v, (*path, n))
    elif isinstance(doc, str):
        yield "value", path


def _replace(doc, where: str, path: tuple, special: str):
    if not path:  # the document is one string
        return special
    doc = copy.deepcopy(doc)
    *parent, last = path
    node = doc
    for p in parent:
        node = node[p]
    if where == "key":
        node[special if special not in node else special + "_"] = node.pop(last)
    else:
        node[last] = special
    return doc


def _payload(case: dict) -> bytes:
    if "payload_hex" in case:
        return bytes.fromhex(case["payload_hex"])
    if "payload_b64" in case:
        return base64.b64decode(case["payload_b64"])
    return case["payload"].encode()


def fuzzed_messages() -> list[tuple[str, str, bytes]]:
    """(case id, topic, payload) for every string place of every vector case and every special."""
    out = []
    for path in CASES:
        case = yaml.safe_load(path.read_text())
        name = f"{path.parent.name}/{path.stem}"
        topic, payload = case["topic"], _payload(case)
        levels = topic.split("/")
        for n in range(1, len(levels)):  # the topic levels after gw/ or application/
            for s in SPECIALS:
                if s and not set(s) & set("+#/\0"):
                    out.append((f"{name} topic[{n}]", "/".join([*levels[:n], s, *levels[n + 1 :]]), payload))
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            continue
        for where, p in _paths(doc):
            for s in SPECIALS:
                out.append((f"{name} {where}{list(p)}={s!r}", topic, orjson.dumps(_replace(doc, where, p, s))))
            for raw in RAW_SPECIALS:
                marker = "\u2603SPECIAL\u2603"
                body = orjson.dumps(_replace(doc, where, p, marker)).replace(marker.encode(), raw)
                out.append((f"{name} {where}{list(p)}={raw!r}", topic, body))
            if topic.startswith("application/"):  # ChirpStack: the same event in protobuf
                event = EVENTS[topic.rsplit("/", 1)[1]]
                for s in SPECIALS:
                    try:
                        message = json_format.ParseDict(_replace(doc, where, p, s), event(), ignore_unknown_fields=True)
                    except (json_format.ParseError, ValueError, TypeError):
                        continue
                    out.append((f"{name} protobuf {where}{list(p)}={s!r}", topic, message.SerializeToString()))
    return out


MESSAGES = fuzzed_messages()


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return Pipeline.from_settings(
        Settings(),
        Registry.load(REGISTRY),
        Charter.load(),
        pseudonymiser=lambda identifier, t: pseudonym(bytes(range(32)), identifier),
    )


def test_the_fuzz_reaches_tags_and_fields():
    """The cases cover the strings that do reach storage: ChirpStack's gateway ids, code rate, log text."""
    assert len(MESSAGES) > 2000
    names = {m[0].split(" ")[0] for m in MESSAGES}
    assert {"chirpstack/code_rate_injection", "chirpstack/doc_up_event_json", "sightings/doc_readme_sightings"} <= names


def test_every_rendered_line_reads_back_as_its_point(pipeline):
    unrepresentable = rendered = 0
    for case, topic, payload in MESSAGES:
        msg = pipeline.message(topic, payload, NOW + timedelta(seconds=2))
        out = pipeline.process(msg)
        lines, letter = pipeline.render(msg, out)
        got = [parse(ln) for store in lines for ln in lines[store]]
        rendered += len(got)
        if len(got) < len(out.points):
            unrepresentable += 1
            assert letter is not None and "unrepresentable" in letter.detail, case
        for store, ls in lines.items():
            assert store in (Store.RAW, Store.OPS, Store.PSEUDONYMOUS, Store.EXPERIMENTS), case
            assert len(ls) == len([p for p in out.points if p.store == store]) or letter is not None, case
        # each line is exactly one of the Points, as influxd reads it back
        want = [_expected(p) for p in out.points]
        for g in got:
            assert g in want, (case, g, want)
    assert rendered > 1000 and unrepresentable > 0  # the fuzz reached storage, and some of it could not go


def test_codecs_put_no_string_in_a_point():
    for codec in CODECS.values():
        for port in (1, 2, 5, 85, 100):
            for frame in (bytes(range(16)), b"\xff" * 12, bytes(64)):
                try:
                    values = codec.decode(frame, port)
                except Exception:  # noqa: S112 - refusing a frame is the codec's right
                    continue
                for name, value in values:
                    assert isinstance(name, str) and name.isascii() and " " not in name and "," not in name
                    assert not isinstance(value, str), (codec.NAME, name, value)


# -- through the worker ---------------------------------------------------------------------------------------------
def _chirpstack_messages() -> list[tuple[str, bytes]]:
    """Distinct-time ChirpStack events (JSON and protobuf) with specials in every string that reaches storage."""
    app, eui = "1de53b8a-8ccc-5d2d-a04a-b8a453e14f91", "a81758fffe0312ab"
    out = []
    n = 0
    for s in SPECIALS:
        for encoding in ("json", "protobuf"):
            n += 1
            t = NOW - timedelta(minutes=n)
            up = pb.UplinkEvent(
                device_info=pb.DeviceInfo(dev_eui=eui, device_name=s),
                dev_addr=s,
                f_cnt=n,
                f_port=5,
                data=bytes.fromhex("0100d50229060264"),
            )
            up.time.FromDatetime(t)
            lora = up.tx_info.modulation.lora
            lora.bandwidth, lora.spreading_factor, lora.code_rate_legacy = 125_000, 7, s
            up.rx_info.add(gateway_id="b827ebfffe6a0c01", rssi=-87, snr=7.25)
            up.rx_info.add(gateway_id=s, rssi=-90, snr=1.5)  # an unregistered gateway: its id becomes a tag
            log = pb.LogEvent(device_info=pb.DeviceInfo(dev_eui=eui), description=s, context={"k": s})
            log.time.FromDatetime(t)
            join = pb.JoinEvent(device_info=pb.DeviceInfo(dev_eui=eui), dev_addr=s)
            join.time.FromDatetime(t)
            txack = pb.TxAckEvent(device_info=pb.DeviceInfo(dev_eui=eui), gateway_id=s, f_cnt_down=n)
            txack.time.FromDatetime(t)
            for event, message in (("up", up), ("log", log), ("join", join), ("txack", txack)):
                payload = (
                    json_format.MessageToJson(message).encode() if encoding == "json" else message.SerializeToString()
                )
                out.append((f"application/{app}/device/{eui}/event/{event}", payload))
    return out


def _stored(influx, database: str) -> set[tuple]:
    out = set()
    for res in influx.query("SHOW MEASUREMENTS", database):
        for series in res.get("series", []):
            for (name,) in series["values"]:
                if name in (metrics.INGEST, metrics.DEADLETTERS, metrics.SENSORS):
                    continue
                q = 'SELECT * FROM "{}" GROUP BY *'.format(name.replace("\\", "\\\\").replace('"', '\\"'))  # noqa: S608 - a name influxd listed
                for row in influx.rows(q, database):
                    tags = {
                        k: v
                        for k, v in row.items()
                        if k not in ("time", "_measurement") and isinstance(v, str) and v != "" and k in _TAG_KEYS
                    }
                    fields = {
                        k: v
                        for k, v in row.items()
                        if k not in ("time", "_measurement") and k not in _TAG_KEYS and v is not None
                    }
                    out.add((name, tuple(sorted(tags.items())), _norm(fields), row["time"]))
    return out


_TAG_KEYS = {
    "sensor",
    "gateway",
    "technology",
    "category",
    "cell",
    "rx_gateway",
    "modulation",
    "event",
    "level",
    "code",
    "source",
    "kind",
    "randomised",
    "subject",
    "class",
}


def _norm(fields: dict) -> tuple:
    return tuple(
        sorted(
            (k, float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v) for k, v in fields.items()
        )
    )


def test_the_worker_stores_exactly_the_expected_points(settings, influx, run_worker):
    messages = _chirpstack_messages()
    offline = Pipeline.from_settings(settings, Registry.load(REGISTRY), Charter.load(), pseudonymiser=None)
    want: dict[Store, set[tuple]] = {Store.RAW: set(), Store.OPS: set(), Store.PSEUDONYMOUS: set()}
    letters = 0
    for topic, payload in messages:
        msg = offline.message(topic, payload, datetime.now(UTC))
        lines, letter = offline.render(msg, offline.process(msg))
        letters += letter is not None
        for store, ls in lines.items():
            for ln in ls:
                m, tags, fields, ns = parse(ln)
                want[store].add((m, tuple(sorted(tags.items())), _norm(fields), ns))
    assert letters and want[Store.OPS] and want[Store.RAW]

    worker = run_worker()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", settings.mqtt.port)
    client.loop_start()
    try:
        for topic, payload in messages:
            client.publish(topic, payload, qos=1).wait_for_publish(5)
    finally:
        client.loop_stop()
        client.disconnect()
    assert wait_for(lambda: worker._acked >= len(messages), 30), (worker._acked, len(messages))
    assert worker.fatal is None and not worker.stopping.is_set()
    dbs = {
        Store.RAW: settings.influx.raw_database,
        Store.OPS: settings.influx.ops_database,
        Store.PSEUDONYMOUS: settings.influx.pseudonymous_database,
    }
    for store, db in dbs.items():
        got = _stored(influx, db) if want[store] else set()
        assert got == want[store], (store, sorted(got ^ want[store])[:5])
    # what could not be stored is in the dead-letter store with its reason, none refused by InfluxDB
    reasons = dict(worker.deadletters.counts())
    assert "rejected_by_influxdb" not in reasons and reasons.get("unrepresentable", 0) > 0, reasons
