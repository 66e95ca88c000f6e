"""The experiments' HMAC key and what it derives: each (experiment, gateway)'s broker password and upload token.

Nothing derived is stored: the API and the scheduler compute the same values from the key, so a restarted
scheduler republishes the same credentials. The key is ``experiments.secret`` or, when unset, 32 random bytes
kept (hex) in ``<data_dir>/experiments/secret`` (0600, made on first use, shared through the data volume).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets as _random
from pathlib import Path

from smartzone.settings import Settings


def key(settings: Settings) -> bytes:
    if settings.experiments.secret is not None:
        return settings.experiments.secret.get_secret_value().encode()
    path = Path(settings.data_dir) / "experiments" / "secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it meanwhile
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(_random.token_hex(32))
    return path.read_text().strip().encode()


def _mac(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def broker_password(key: bytes, exp_id: int, gateway: str) -> str:
    return _mac(key, f"broker:{exp_id}:{gateway}")


def upload_token(key: bytes, exp_id: int, gateway: str) -> str:
    return _mac(key, f"upload:{exp_id}:{gateway}")


def check_upload_token(key: bytes, exp_id: int, gateway: str, token: str) -> bool:
    return hmac.compare_digest(upload_token(key, exp_id, gateway).encode(), token.encode())
