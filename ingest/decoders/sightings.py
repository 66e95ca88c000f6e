"""Sightings of passers-by: WiFi/BLE probe sniffers and counting cameras. Identifiers are pseudonymised here.

Topic: ``sightings/<device>`` below the gateway (``gw/<gateway_id>/sightings/<device>`` on the central broker).

Payload: one JSON object::

    {
      "device": "ped-volkstraat-1",           optional string; default: the last topic level
      "time": "2026-05-01T12:00:00Z",         optional; default: the broker receipt time
      "sightings": [                          required array (may be empty: nobody passed)
        {"mac": "AA:BB:CC:DD:EE:FF", "kind": "wifi", "rssi": -71, "time": "2026-05-01T11:59:42.120Z"},
        {"mac": "7a:1f:02:9c:44:10", "kind": "ble"},
        {"vehicle": "1-ABC-123", "kind": "vehicle", "class": "car"}
      ]
    }

- ``device`` is the sensor's gateway-local key in the registry, as for generic JSON; ``time`` (message and
  sighting) is ISO 8601 with an offset or ``Z``, or epoch seconds (milliseconds above 1e11); ISO text without
  an offset is the gateway's local time. A sighting without ``time`` takes the message's.
- ``kind`` is ``wifi`` or ``ble`` with ``mac`` (any common spelling of a 48-bit address: ``AA:BB:..``,
  ``aa-bb-..``, ``aabb.ccdd.eeff``, ``aabbccddeeff``), or ``vehicle`` with ``vehicle`` (a plate or fleet id:
  letters and digits, up to 16 once spaces, ``-`` and ``.`` are removed; case is ignored) and an optional
  ``class`` (``car``, ``heavy_vehicle``, ``bicycle`` ...: lower-case letters, digits, ``_``).
- ``rssi`` (optional): received signal strength in dBm, -130 to 20. NaN or infinity is radio metadata the
  sniffer could not measure, not a bad sighting: the pipeline leaves it out of the point (``seen=1i``) and
  counts it (``fields_dropped``).
- Instead of ``mac``/``vehicle``, ``subject`` may carry an identifier that is already a pseudonym (16 lower-case
  hex digits, with ``randomised`` true/false for wifi/ble): that is how dead letters keep a sighting (below), so
  a dead letter can be replayed once its cause (an unregistered sensor, say) is fixed.

Each sighting becomes one point of measurement ``sighting`` in the *pseudonymous* database, with the sensor's
tags and ``kind``, ``randomised`` (wifi/ble: the locally administered bit of the MAC, set by phones that
randomise their address) or ``class`` (vehicles), and ``subject``, the pseudonym: HMAC-SHA256 of the normalised
identifier under the pepper of the sighting's day (``ingest.pepper``), 16 hex digits. The field is
``rssi`` (integer dBm), or ``seen=1i`` without one::

    sighting,category=pedestrian_flow,cell=..,gateway=gw-volkstraat,sensor=ped-volkstraat-1,technology=wifi,\
kind=wifi,randomised=false,subject=3f9c0a6e5b1d2c47 rssi=-71i 1777636782120000000

The raw MAC or vehicle id is never stored anywhere, nor echoed in an error detail. A dead letter keeps the
payload *scrubbed* (``scrub``): each valid identifier replaced by ``"subject": <pseudonym>`` (plus
``randomised``), or by ``"<unpseudonymisable>"`` when its pepper is destroyed or the worker has none; invalid
identifiers and values that are not what the format allows become ``"<withheld>"``; unknown keys are dropped
(counted under ``"<withheld keys>"``); a payload that is not a JSON object is withheld whole.

Reasons: ``no_pepper`` (the worker has no pepper store: the whole message), ``malformed``, ``missing_device``,
``bad_timestamp``, ``bad_identifier``, ``invalid_value``/``out_of_range`` (rssi, class),
``pepper_destroyed`` (the sighting's day is past the pepper's grace), ``unpseudonymisable`` (a replayed dead
letter whose identifier was withheld). A bad sighting is a partial problem: the others are written.
"""

from __future__ import annotations

import contextlib
import math
import re
from datetime import datetime

import orjson

from ingest.decoders._json import load_json
from ingest.decoders._time import parse_time
from ingest.pepper import Pseudonymiser, is_randomised_mac, normalise_mac
from smartzone.errors import DecodeError
from smartzone.model import Decoded, Message, Record, Store
from smartzone.registry import Registry

NAME = "sightings"
MEASUREMENT = "sighting"
STORE = Store.PSEUDONYMOUS

MAC_KINDS = frozenset({"wifi", "ble"})
KINDS = MAC_KINDS | {"vehicle"}
RSSI_MIN, RSSI_MAX = -130, 20
UNPSEUDONYMISABLE = "<unpseudonymisable>"
WITHHELD = "<withheld>"
WITHHELD_KEYS = "<withheld keys>"

_TOP = frozenset({"device", "time", "sightings"})
_KEYS = frozenset({"mac", "vehicle", "subject", "randomised", "kind", "class", "rssi", "time"})
_IDENTIFIERS = ("mac", "vehicle", "subject")
_PLATE = re.compile(r"[A-Z0-9]{1,16}")
_PLATE_SEPARATORS = re.compile(r"[\s.\-]")
_CLASS = re.compile(r"[a-z][a-z0-9_]{0,31}")
_SUBJECT = re.compile(r"[0-9a-f]{16}")
_TIME_TEXT = re.compile(r"[0-9T:.+\-Z ]{1,40}")  # what an ISO 8601 time can be made of (for scrubbing)


def make(registry: Registry, pseudonymiser: Pseudonymiser | None) -> SightingsDecoder:
    return SightingsDecoder(pseudonymiser)


def normalise_vehicle(value: object) -> str | None:
    """``1-abc-123`` -> ``1ABC123``; None when it is not letters and digits (1 to 16 of them)."""
    if not isinstance(value, str):
        return None
    plate = _PLATE_SEPARATORS.sub("", value).upper()
    return plate if _PLATE.fullmatch(plate) else None


class SightingsDecoder:
    def __init__(self, pseudonymiser: Pseudonymiser | None) -> None:
        self.pseudonymiser = pseudonymiser

    # -- decode -------------------------------------------------------------------------------------
    def __call__(self, msg: Message) -> Decoded:
        if self.pseudonymiser is None:
            raise DecodeError(
                "no_pepper", "this worker has no pepper store, so sightings cannot be pseudonymised and none is stored"
            )
        doc = load_json(msg.payload, dict, "a sightings payload")
        unknown = doc.keys() - _TOP
        if unknown:
            raise DecodeError("malformed", f"{len(unknown)} unknown key(s) (allowed: {', '.join(sorted(_TOP))})")
        device = doc.get("device", _topic_device(msg))
        if not isinstance(device, str):
            raise DecodeError("malformed", "'device' must be a string")
        if not device.strip():
            raise DecodeError("missing_device", "no 'device' and no device level in the topic")
        t0 = _time(doc["time"], msg, "the message") if "time" in doc else msg.received_at
        items = doc.get("sightings")
        if not isinstance(items, list):
            raise DecodeError("malformed", "'sightings' must be a JSON array")
        records: list[Record] = []
        problems: list[DecodeError] = []
        for i, item in enumerate(items):
            try:
                records.append(self._sighting(item, i, device, t0, msg))
            except DecodeError as exc:
                problems.append(exc)
        return Decoded([], records, problems)

    def _sighting(self, item: object, i: int, device: str, t0: datetime, msg: Message) -> Record:
        where = f"sighting {i}"
        if not isinstance(item, dict):
            raise DecodeError("malformed", f"{where} is not a JSON object")
        unknown = item.keys() - _KEYS
        if unknown:
            raise DecodeError(
                "malformed", f"{where}: {len(unknown)} unknown key(s) (allowed: {', '.join(sorted(_KEYS))})"
            )
        kind = item.get("kind")
        if not isinstance(kind, str) or kind not in KINDS:
            raise DecodeError("malformed", f"{where}: 'kind' must be one of {', '.join(sorted(KINDS))}")
        t = _time(item["time"], msg, where) if "time" in item else t0
        named = [k for k in _IDENTIFIERS if k in item]
        expected = "mac" if kind in MAC_KINDS else "vehicle"
        if len(named) != 1 or named[0] not in (expected, "subject"):
            raise DecodeError("malformed", f"{where}: a {kind} sighting has exactly one of '{expected}' or 'subject'")
        if "randomised" in item and not (named[0] == "subject" and kind in MAC_KINDS):
            raise DecodeError("malformed", f"{where}: 'randomised' goes only with a wifi/ble 'subject'")
        if "class" in item and kind != "vehicle":
            raise DecodeError("malformed", f"{where}: 'class' goes only with a vehicle")
        tags: dict[str, str] = {}
        if kind == "vehicle" and "class" in item:
            cls = item["class"]
            if not isinstance(cls, str) or not _CLASS.fullmatch(cls):
                raise DecodeError(
                    "invalid_value", f"{where}: 'class' must be a lower-case name such as car or heavy_vehicle"
                )
            tags["class"] = cls
        subject, randomised = self._subject(item, named[0], kind, t, where)
        tags["kind"] = kind
        if randomised is not None:
            tags["randomised"] = "true" if randomised else "false"
        tags["subject"] = subject
        return Record(MEASUREMENT, device, tags, _fields(item, where), t, STORE)

    def _subject(self, item: dict, key: str, kind: str, t: datetime, where: str) -> tuple[str, bool | None]:
        value = item[key]
        if value == UNPSEUDONYMISABLE:
            raise DecodeError(
                "unpseudonymisable",
                f"{where}: the identifier was withheld when the message was "
                "dead-lettered (no pepper for its day) and cannot be recovered",
            )
        if key == "subject":
            if not isinstance(value, str) or not _SUBJECT.fullmatch(value):
                raise DecodeError(
                    "bad_identifier", f"{where}: 'subject' must be a pseudonym (16 lower-case hex digits)"
                )
            if kind not in MAC_KINDS:
                return value, None
            randomised = item.get("randomised")
            if not isinstance(randomised, bool):
                raise DecodeError("malformed", f"{where}: a wifi/ble 'subject' needs 'randomised' true or false")
            return value, randomised
        identifier, randomised = _identifier(key, value)
        if identifier is None:
            what = "a 48-bit MAC address" if key == "mac" else "a vehicle id (letters and digits, at most 16)"
            raise DecodeError("bad_identifier", f"{where}: '{key}' is not {what}")
        if self.pseudonymiser is None:  # __call__ refused the message already
            raise DecodeError("no_pepper", "this worker has no pepper store")
        subject = self.pseudonymiser(identifier, t)
        if subject is None:
            raise DecodeError(
                "pepper_destroyed",
                f"{where}: its time {t.isoformat()} falls in a period whose pepper has been destroyed",
            )
        return subject, randomised

    # -- scrub --------------------------------------------------------------------------------------
    def scrub(self, msg: Message) -> bytes:
        """The payload as a dead letter may keep it: no raw identifier (see the module docstring)."""
        try:
            doc = load_json(msg.payload, dict, "a sightings payload")
        except DecodeError:
            return orjson.dumps(
                {
                    WITHHELD: f"{len(msg.payload)} bytes that are not a JSON object: withheld whole, "
                    "since identifiers in it cannot be located"
                }
            )
        out: dict = {}
        dropped = 0
        t0 = msg.received_at
        if "time" in doc:
            with contextlib.suppress(DecodeError):
                t0 = _time(doc["time"], msg, "the message")
        for key, value in doc.items():
            if key == "device":
                out[key] = value if isinstance(value, str) else WITHHELD
            elif key == "time":
                out[key] = _scrub_time(value)
            elif key == "sightings":
                out[key] = [self._scrub_sighting(x, t0, msg) for x in value] if isinstance(value, list) else WITHHELD
            else:
                dropped += 1
        if dropped:
            out[WITHHELD_KEYS] = dropped
        return orjson.dumps(out)

    def _scrub_sighting(self, item: object, t0: datetime, msg: Message) -> object:
        if not isinstance(item, dict):
            return WITHHELD
        t = t0
        if "time" in item:
            with contextlib.suppress(DecodeError):
                t = _time(item["time"], msg, "")
        named = [k for k in _IDENTIFIERS if k in item]
        out: dict = {}
        dropped = 0
        for key, value in item.items():
            if key in _IDENTIFIERS:
                if len(named) != 1:
                    out[key] = WITHHELD
                elif value == UNPSEUDONYMISABLE:
                    out[key] = value
                elif key == "subject":
                    out[key] = value if isinstance(value, str) and _SUBJECT.fullmatch(value) else WITHHELD
                else:
                    identifier, randomised = _identifier(key, value)
                    subject = None
                    if identifier is not None and self.pseudonymiser is not None:
                        subject = self.pseudonymiser(identifier, t)
                    if identifier is None:
                        out[key] = WITHHELD
                    elif subject is None:
                        out[key] = UNPSEUDONYMISABLE
                    else:
                        out["subject"] = subject
                        if randomised is not None:
                            out["randomised"] = randomised
            elif key == "randomised":
                if "randomised" not in out:
                    out[key] = value if isinstance(value, bool) else WITHHELD
            elif key == "kind":
                out[key] = value if isinstance(value, str) and value in KINDS else WITHHELD
            elif key == "class":
                out[key] = value if isinstance(value, str) and _CLASS.fullmatch(value) else WITHHELD
            elif key == "rssi":
                ok = isinstance(value, int | float) and not isinstance(value, bool) and abs(value) < 1000
                out[key] = value if ok else WITHHELD
            elif key == "time":
                out[key] = _scrub_time(value)
            else:
                dropped += 1
        if dropped:
            out[WITHHELD_KEYS] = dropped
        return out


def _identifier(key: str, value: object) -> tuple[str | None, bool | None]:
    """(what is pseudonymised, randomised flag) of a ``mac`` or ``vehicle`` value; (None, None) if invalid."""
    if key == "mac":
        mac = normalise_mac(value)
        return (mac, is_randomised_mac(mac)) if mac else (None, None)
    plate = normalise_vehicle(value)
    return (f"vehicle:{plate}", None) if plate else (None, None)


def _fields(item: dict, where: str) -> dict[str, int | float]:
    if "rssi" not in item:
        return {"seen": 1}
    rssi = item["rssi"]
    if isinstance(rssi, bool) or not isinstance(rssi, int | float):
        raise DecodeError("invalid_value", f"{where}: 'rssi' must be a number (dBm)")
    if isinstance(rssi, float):
        if not math.isfinite(rssi):  # the pipeline leaves it out of the point (seen=1i) and counts it
            return {"seen": 1, "rssi": rssi}
        rssi = round(rssi)
    if not RSSI_MIN <= rssi <= RSSI_MAX:
        raise DecodeError("out_of_range", f"{where}: rssi {rssi} dBm is outside [{RSSI_MIN}, {RSSI_MAX}]")
    return {"rssi": rssi}


def _time(value: object, msg: Message, where: str) -> datetime:
    try:
        return parse_time(value, msg.tz)
    except DecodeError:  # parse_time's detail echoes the value, which may be anything
        raise DecodeError(
            "bad_timestamp",
            f"{where}: 'time' is neither ISO 8601 with a zone (or a gateway time zone) nor epoch seconds",
        ) from None


def _scrub_time(value: object) -> object:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return value if isinstance(value, str) and _TIME_TEXT.fullmatch(value) else WITHHELD


def _topic_device(msg: Message) -> str:
    levels = msg.native_topic.strip("/").split("/")
    return levels[-1] if len(levels) >= 2 else ""
