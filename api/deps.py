"""The application's state and the dependencies the routers take from it (``state(request)``).

``create_app`` in ``api.app`` puts one ``State`` on the application; routers read it through ``state``
and never import ``api.app``.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from api.store import OpenData
from datacharter.charter import Charter
from smartzone.registry import Registry
from smartzone.settings import Settings


@dataclass
class State:
    settings: Settings
    charter: Charter
    registry: Registry
    store: OpenData
    base_url: str  # the public URL links are built on (``Settings.public_base_url``), never a request's Host


def state(request: Request) -> State:
    """The application's ``State`` (settings, charter, registry, the open-data store, the public base URL)."""
    return request.app.state.sz
