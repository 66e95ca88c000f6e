"""What the experiments service refuses, as types: the REST maps each to its HTTP status, the CLI to an exit code.

Every error carries a message for the user (what was wrong and what to do); ``ServiceError.status`` is the
HTTP status the REST answers with, so the mapping is one table, not message matching.
"""

from __future__ import annotations


class ServiceError(Exception):
    """A request the experiments service refuses; ``str(exc)`` says why."""

    status = 400
    kind = "bad-request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Unauthenticated(ServiceError):
    """No bearer token, or one that is unknown, wrong or revoked (401)."""

    status = 401
    kind = "unauthenticated"


class Forbidden(ServiceError):
    """Authenticated, but not allowed: another owner's experiment (403)."""

    status = 403
    kind = "forbidden"


class NotFound(ServiceError):
    """No such experiment (or gateway resource) (404)."""

    status = 404
    kind = "not-found"


class Conflict(ServiceError):
    """The request clashes with the current state: an overlap, an unavailable gateway, a final experiment (409).

    ``experiment`` names the conflicting experiment when there is one."""

    status = 409
    kind = "conflict"

    def __init__(self, detail: str, *, experiment: int | None = None, gateway: str | None = None) -> None:
        super().__init__(detail)
        self.experiment = experiment
        self.gateway = gateway


class TooLarge(ServiceError):
    """A body over its limit: an artifact over ``artifact_max_bytes``, results over ``results_max_bytes`` (413)."""

    status = 413
    kind = "too-large"

    def __init__(self, detail: str, *, limit: int) -> None:
        super().__init__(detail)
        self.limit = limit


class Invalid(ServiceError):
    """Well-formed but unacceptable: a radio the gateway lacks, an unknown gateway or artifact, a duration over
    the maximum, a malformed artifact (422). ``field`` names the part of the request at fault."""

    status = 422
    kind = "invalid"

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.field = field
