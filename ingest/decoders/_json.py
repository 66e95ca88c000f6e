"""JSON payloads for the decoders: orjson on the hot path, one clear error for the rest."""

from __future__ import annotations

import json
from typing import Any

import orjson

from smartzone.errors import DecodeError


def load_json(payload: bytes, shape: type | tuple[type, ...], what: str) -> Any:  # parsed JSON: Any
    """Parse ``payload`` and check its top-level type, or raise ``DecodeError("malformed")``.

    The literals ``NaN`` and ``Infinity`` that hand-written firmware emits are not JSON; orjson refuses
    them, Python's parser takes them, so such a payload is decoded and the pipeline dead-letters the one
    non-finite value (``not_finite``) while keeping the others.
    """
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        try:
            doc = json.loads(payload)
        except (ValueError, RecursionError):
            raise DecodeError("malformed", f"invalid JSON: {exc}") from exc
    if not isinstance(doc, shape):
        names: dict[type, str] = {dict: "object", list: "array"}
        kinds = " or ".join(names[t] for t in (shape if isinstance(shape, tuple) else (shape,)))
        raise DecodeError("malformed", f"{what} must be a JSON {kinds}, not {type(doc).__name__}")
    return doc
