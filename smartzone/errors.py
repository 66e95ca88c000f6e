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


class InfluxError(SmartZoneError):
    """InfluxDB refused or could not run a write or a query. The subclass says why; ``status`` is the HTTP
    status when there was a response.

    `retryable` says whether the same request may succeed later (connection error, 5xx, 429, a database
    being created); `retry_after` is the server's Retry-After in seconds when it gave one.
    """

    def __init__(self, status: int | None, message: str, *, retryable: bool, retry_after: float | None = None):
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after


class DatabaseNotFound(InfluxError):
    """The database does not exist (yet): create it, then retry."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(status, message, retryable=True)


class Unauthorised(ConfigurationError):
    """InfluxDB refused the credentials (HTTP 401/403): a configuration error, never retried and never a
    reason to dead-letter data, so it is not an ``InfluxError``: writers stop and tell the operator."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"InfluxDB refused the credentials (HTTP {status}): {message}")
        self.status = status


class BadRequest(InfluxError):
    """InfluxDB refused the request itself (a bad line or query, a body too large): never retried as it is."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(status, message, retryable=False)


class Unavailable(InfluxError):
    """InfluxDB cannot be reached or is overloaded (connection error, 5xx, 429): retry later."""

    def __init__(self, status: int | None, message: str, retry_after: float | None = None) -> None:
        super().__init__(status, message, retryable=True, retry_after=retry_after)
