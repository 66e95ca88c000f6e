"""Absolute URLs of the API's links: built on the configured ``api.base_url``, else on the request's own.

The configured base wins over the request (and so over its Host header); forwarded headers reach the
request's base only through the server's trusted proxies (uvicorn's ``proxy_headers``).
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import Request

from api.deps import state


def base_url(request: Request) -> str:
    """The public URL links are built on: ``api.base_url`` if set, else the request's own."""
    configured = state(request).settings.api.base_url.rstrip("/")
    return configured or str(request.base_url).rstrip("/")


def same_with(request: Request, name: str, value: str) -> str:
    """The request's own URL (on the public base) with query parameter ``name`` set to ``value``."""
    params = [(k, v) for k, v in request.query_params.multi_items() if k != name]
    params.append((name, value))
    return f"{base_url(request)}{request.url.path}?{urlencode(params)}"
