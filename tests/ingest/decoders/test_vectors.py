"""Every decoder against its test vectors: one YAML file per case under cases/<decoder>/.

A case holds ``topic`` (the full topic as the central broker sees it, ``gw/<gateway>/<native>``),
``payload`` (text) or ``payload_hex`` / ``payload_b64``, optional ``received_at`` and ``tz``, and
either ``readings`` (the exact list the decoder must return) or ``error`` (the DecodeError reason).
Decoders that return more than Readings (``chirpstack``, ``sightings``) also list ``records``: measurement,
sensor (the device key), store, time, tags and fields. They run bound to the demo registry and, for
``sightings``, to a pseudonymiser under a fixed pepper (bytes 0..31), so their pseudonyms are vectors too.
A topic outside ``gw/`` (ChirpStack's ``application/...``) has no gateway.
"""

from __future__ import annotations

import base64
import math
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from ingest.decoders import NAMES, bind
from ingest.decoders._time import parse_time
from ingest.pepper import pseudonym
from smartzone.errors import DecodeError
from smartzone.model import Decoded, Message
from smartzone.registry import Registry
from tests.conftest import REGISTRY

CASES = sorted((Path(__file__).parent / "cases").glob("*/*.yaml"))
DEFAULT_RECEIVED = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
PEPPER = bytes(range(32))
DECODERS = bind(Registry.load(REGISTRY), lambda identifier, t: pseudonym(PEPPER, identifier))


def _message(case: dict) -> Message:
    if "payload_hex" in case:
        payload = bytes.fromhex(case["payload_hex"])
    elif "payload_b64" in case:
        payload = base64.b64decode(case["payload_b64"])
    else:
        payload = case["payload"].encode()
    gateway, native = None, case["topic"]
    if case["topic"].startswith("gw/"):
        _, gateway, native = case["topic"].split("/", 2)
    received = parse_time(case["received_at"]) if "received_at" in case else DEFAULT_RECEIVED
    tz = ZoneInfo(case["tz"]) if "tz" in case else None
    return Message(case["topic"], payload, received, gateway, native, tz)


def test_every_decoder_has_real_and_failure_vectors():
    by_decoder: dict[str, list[dict]] = {}
    for path in CASES:
        by_decoder.setdefault(path.parent.name, []).append(yaml.safe_load(path.read_text()))
    assert set(by_decoder) == set(NAMES) == set(DECODERS)
    for name, cases in by_decoder.items():
        assert any("readings" in c and c.get("source") for c in cases), f"{name}: no documented example"
        assert any("error" in c for c in cases), f"{name}: no failure case"


@pytest.mark.parametrize("path", CASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_vector(path: Path):
    case = yaml.safe_load(path.read_text())
    decode = DECODERS[path.parent.name]
    msg = _message(case)
    if "error" in case:
        with pytest.raises(DecodeError) as info:
            decode(msg)
        assert info.value.reason == case["error"]
        return
    out = decode(msg)
    if type(out) is Decoded:
        assert not out.problems, out.problems
        got_records = [
            {
                "measurement": r.measurement,
                "sensor": r.sensor_key,
                "store": str(r.store),
                "time": r.time,
                "tags": dict(r.tags),
                "fields": dict(r.fields),
            }
            for r in out.records
        ]
        want_records = [
            {**w, "time": parse_time(w["time"]) if "time" in w else msg.received_at} for w in case.get("records", [])
        ]
        assert got_records == want_records
        for g, w in zip(got_records, want_records, strict=True):  # 41 is not 41.0, True is not 1
            assert {k: type(v) for k, v in g["fields"].items()} == {k: type(v) for k, v in w["fields"].items()}
        out = out.readings
    else:
        assert "records" not in case
    got = [{"time": r.time, "sensor": r.sensor_id, "quantity": r.quantity, "value": r.value} for r in out]
    want = [
        {
            "time": parse_time(w["time"]) if "time" in w else msg.received_at,
            "sensor": w["sensor"],
            "quantity": w["quantity"],
            "value": w["value"],
        }
        for w in case["readings"]
    ]
    assert len(got) == len(want), got
    for g, w in zip(got, want, strict=True):
        assert g["time"] == w["time"] and g["time"].tzinfo is not None
        assert (g["sensor"], g["quantity"]) == (w["sensor"], w["quantity"])
        if isinstance(w["value"], float) and not isinstance(g["value"], bool):
            assert math.isclose(g["value"], w["value"], rel_tol=1e-9, abs_tol=1e-9), (g, w)
        else:
            assert g["value"] == w["value"] and type(g["value"]) is type(w["value"]), (g, w)
