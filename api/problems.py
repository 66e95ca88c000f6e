"""Errors as RFC 9457 problem details (``application/problem+json``), naming the bad parameter."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

PROBLEM = "application/problem+json"
TYPES = "https://smartzone.example/problems/"  # each problem type: docs/parts/api.md, "Errors and limits"

TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    409: "Conflict",
    413: "Request too large",
    414: "Query string too long",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
}


class Problem(Exception):
    """A problem to return: ``parameter`` names the query parameter at fault, if any."""

    def __init__(
        self,
        status: int,
        kind: str,
        detail: str,
        *,
        parameter: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.parameter = parameter
        self.headers = headers or {}
        self.extra = extra


def problem_response(
    request: Request | None,
    status: int,
    kind: str,
    detail: str,
    *,
    parameter: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    body: dict[str, Any] = {
        "type": TYPES + kind,
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if request is not None:
        body["instance"] = request.url.path
    if parameter:
        body["parameter"] = parameter
    body.update(extra)
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM, headers=headers)


async def on_problem(request: Request, exc: Problem) -> Response:
    return problem_response(
        request, exc.status, exc.kind, exc.detail, parameter=exc.parameter, headers=exc.headers, **exc.extra
    )


async def on_validation(request: Request, exc: RequestValidationError) -> Response:
    errors = exc.errors()
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("query", "path", "header", "body")]
    parameter = loc[0] if loc else None
    return problem_response(
        request,
        400,
        "invalid-parameter",
        f"{parameter or 'request'}: {first.get('msg', 'invalid')}",
        parameter=parameter,
    )


async def on_http(request: Request, exc: StarletteHTTPException) -> Response:
    kind = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
    return problem_response(request, exc.status_code, kind, str(exc.detail), headers=getattr(exc, "headers", None))


async def on_error(request: Request, exc: Exception) -> Response:
    return problem_response(request, 500, "internal-error", "the server failed to answer; it has been logged")
