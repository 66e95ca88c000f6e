"""Absolute URLs of the API's links: built on the configured public URL only (``api.base_url``; in
development by default ``http://<api.host>:<api.port>``, see ``Settings.public_base_url``).

Never on the request's own base: its Host and X-Forwarded-* headers are the client's to choose, and a
response the API caches (closed windows are immutable) would carry an attacker's links to everyone after.
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import Request

from api.deps import state


def base_url(request: Request) -> str:
    """The public URL links are built on (the application's, whatever the request's headers say)."""
    return state(request).base_url


def same_with(request: Request, name: str, value: str) -> str:
    """The request's own URL (on the public base) with query parameter ``name`` set to ``value``."""
    params = [(k, v) for k, v in request.query_params.multi_items() if k != name]
    params.append((name, value))
    return f"{base_url(request)}{request.url.path}?{urlencode(params)}"
