"""The application's state and the dependencies the routers take from it (``state(request)``).

``create_app`` in ``api.app`` puts one ``State`` on the application; routers read it through ``state``
and never import ``api.app``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fastapi import Request
from sqlalchemy.orm import Session, sessionmaker

from api.store import OpenData
from datacharter.charter import Charter
from experiments.db import open_store
from smartzone.registry import Registry
from smartzone.settings import Settings


@dataclass
class State:
    settings: Settings
    charter: Charter
    registry: Registry
    store: OpenData
    base_url: str  # the public URL links are built on (``Settings.public_base_url``), never a request's Host
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))  # the experiments' "now"
    _sessions: sessionmaker[Session] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def experiments_store(self) -> sessionmaker[Session]:
        """The experiments store (``settings.sql_url``), opened (and migrated) on first use: the open-data
        routes never touch it."""
        with self._lock:
            if self._sessions is None:
                self._sessions = open_store(self.settings.sql_url)
            return self._sessions


def state(request: Request) -> State:
    """The application's ``State`` (settings, charter, registry, the open-data store, the public base URL)."""
    return request.app.state.sz
