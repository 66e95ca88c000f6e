"""Exceptions that carry data (as aiomqtt's do): callers branch on fields, not on message text."""

from __future__ import annotations


class SmartZoneError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigurationError(SmartZoneError, ValueError):
    """Settings, registry or credentials are wrong: stop and tell the operator; retrying cannot help."""


class DecodeError(SmartZoneError):
    """A payload (or one value in it) cannot become a Reading.

    `reason` is a short stable code (counted and listed by reason), `detail` says what exactly.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class WriteError(SmartZoneError):
    """InfluxDB refused or could not take a write.

    `retryable` says whether the same batch may succeed later (connection error, 5xx, 429);
    `retry_after` is the server's Retry-After in seconds when it gave one.
    """

    def __init__(self, status: int | None, message: str, *, retryable: bool, retry_after: float | None = None):
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
