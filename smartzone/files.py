"""Files written whole or not at all, with the mode they must have (secrets 0600), for every stage."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, data: str | bytes, mode: int) -> None:
    """Write ``data`` to ``path`` through a temporary file renamed over it, created with ``mode`` (an
    existing file's old mode does not survive)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.chmod(tmp, mode)  # an existing temporary file keeps its old mode through os.open
    os.replace(tmp, path)
