"""Content negotiation: the media type a request is answered in (``?format=`` or the Accept header, with
its q-values and wildcards), the 406 problem when none fits, and the JSON response that says it varies
by Accept. The API's one Accept-header parser."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import orjson
from fastapi import Request
from starlette.responses import Response

from api.problems import PROBLEM, Problem

JSON = "application/json"
JSONLD = "application/ld+json"
GEOJSON = "application/geo+json"
NOT_ACCEPTABLE: dict[int | str, dict[str, Any]] = {
    406: {"description": "the Accept header names no media type this resource has", "content": {PROBLEM: {}}}
}


def parse_accept(header: str) -> list[tuple[str, float]]:
    """The media ranges of an Accept header, lower case, each with its q-value (1 when not given, 0 when
    unreadable), in the header's order."""
    ranges: list[tuple[str, float]] = []
    for part in header.split(","):
        bits = [b.strip() for b in part.split(";")]
        if not bits[0]:
            continue
        q = 1.0
        for b in bits[1:]:
            if b.lower().startswith("q="):
                try:
                    q = float(b[2:])
                except ValueError:
                    q = 0.0
        ranges.append((bits[0].lower(), q))
    return ranges


def best_offer(header: str, offers: Sequence[str]) -> str | None:
    """The offer the Accept header prefers (highest q of its most specific matching range; the earlier
    offer on a tie); the first offer for an empty header; None when it accepts none of them."""
    if header in ("", "*/*"):  # most clients: no preference
        return offers[0]
    offers = tuple(offers)
    return _best_cached(header, offers) if len(header) <= 256 else _best(header, offers)


def _best(header: str, offers: tuple[str, ...]) -> str | None:
    quality: dict[str, float] = {}
    for media, weight in parse_accept(header):
        quality[media] = max(weight, quality.get(media, weight))
    if not quality:
        return offers[0]
    best, best_q = None, 0.0
    for offer in offers:
        q: float | None = quality.get(offer)
        if q is None:
            q = quality.get(offer.split("/")[0] + "/*")
            if q is None:
                q = quality.get("*/*")
        if q is not None and q > best_q:
            best, best_q = offer, q
    return best


_best_cached = lru_cache(maxsize=512)(_best)  # clients repeat their Accept header: parse each once


def negotiate(
    request: Request, offers: Sequence[str], fmt: str | None = None, formats: dict[str, str] | None = None
) -> str:
    """The media type to answer with: ``?format=`` if given (looked up in ``formats``), else the best of
    ``offers`` for the Accept header (the first offer when it does not matter); 406 if it accepts none."""
    if fmt is not None:
        return (formats or {"json": JSON, "jsonld": JSONLD})[fmt]
    header = request.headers.get("accept", "").strip()
    best = best_offer(header, offers)
    if best is None:
        raise Problem(
            406,
            "not-acceptable",
            f"Accept: this resource is available as {', '.join(offers)}; the Accept header asks for {header[:200]}",
            parameter="Accept",
            available=list(offers),
        )
    return best


def json_response(body: Any, media: str, status: int = 200) -> Response:
    """``body`` as JSON in the negotiated ``media`` type, ``Vary: Accept``."""
    # the metadata changes at most once per charter run (every minute): clients, proxies and the API's own
    # response cache may reuse it for a minute
    headers = {"Vary": "Accept"}
    if status == 200:
        headers["Cache-Control"] = "public, max-age=60"
    return Response(orjson.dumps(body), status_code=status, media_type=media, headers=headers)
