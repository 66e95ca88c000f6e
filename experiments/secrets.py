"""The HMAC key of the experiments service and what it derives: per-(experiment, gateway) broker passwords
and upload tokens. Nothing derived is stored: the API and the scheduler compute the same values from the key.

The key is ``settings.experiments.secret`` or, when unset, ``<data_dir>/experiments/secret``: 32 random
bytes as hex, created 0600 on first use (``smartzone.files.write_atomic``) and shared through the data volume.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets as _random
from pathlib import Path

from smartzone.files import write_atomic
from smartzone.settings import Settings


def key_file(settings: Settings) -> Path:
    return settings.data_dir / "experiments" / "secret"


def key(settings: Settings) -> bytes:
    """The HMAC key: the configured secret, else the key file's (created 0600 with 32 random bytes if absent)."""
    configured = settings.experiments.secret
    if configured is not None and configured.get_secret_value():
        return configured.get_secret_value().encode()
    path = key_file(settings)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        candidate = path.with_name(f"secret.{os.getpid()}.new")
        write_atomic(candidate, _random.token_hex(32), 0o600)
        try:  # two processes creating it at once: the first link wins, both read the winner
            os.link(candidate, path)
        except FileExistsError:
            pass
        finally:
            candidate.unlink(missing_ok=True)
    text = path.read_text().strip()
    if len(text) < 32:
        raise ValueError(f"{path}: the experiments key is too short (expected 64 hex characters)")
    return text.encode()


def _mac(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def broker_password(key: bytes, exp_id: int, gateway: str) -> str:
    """The broker password of user ``exp-<exp_id>-<gateway>``: HMAC-SHA256 hex of ``broker:<exp_id>:<gateway>``."""
    return _mac(key, f"broker:{exp_id}:{gateway}")


def upload_token(key: bytes, exp_id: int, gateway: str) -> str:
    """The token a gateway's agent shows to fetch the artifact and upload results: HMAC of ``upload:...``."""
    return _mac(key, f"upload:{exp_id}:{gateway}")


def check_upload_token(key: bytes, exp_id: int, gateway: str, token: str) -> bool:
    """Whether ``token`` is the upload token of (exp_id, gateway), compared in constant time."""
    return hmac.compare_digest(upload_token(key, exp_id, gateway).encode(), token.encode("utf-8", "replace"))
