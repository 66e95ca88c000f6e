"""Validation of the names we put into InfluxQL and line protocol: databases, retention policies, durations.

InfluxQL cannot bind identifiers, so every identifier a query names must first pass here.
"""

from __future__ import annotations

import re

from smartzone.errors import ConfigurationError

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_DURATION = re.compile(r"(?:(\d+)(w|d|h|m|s))+|INF")
_UNIT_S = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}


def check_identifier(name: str) -> str:
    """Return ``name`` if it is a plain identifier (letters, digits, underscore), else raise."""
    if not _IDENTIFIER.fullmatch(name):
        raise ConfigurationError(f"{name!r} is not a valid identifier (letters, digits and _ only, max 64)")
    return name


def parse_duration(text: str) -> float:
    """InfluxQL duration literal (``30d``, ``1h30m``, ``INF``) -> seconds (inf for INF)."""
    if not _DURATION.fullmatch(text):
        raise ConfigurationError(f"{text!r} is not a duration such as 30d, 48h, 1h30m or INF")
    if text == "INF":
        return float("inf")
    return float(sum(int(n) * _UNIT_S[u] for n, u in re.findall(r"(\d+)(w|d|h|m|s)", text)))
