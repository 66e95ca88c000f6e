"""A local disk spool for batches InfluxDB could not take in time.

Each batch is one file ``<seq>.lp``: the database name on the first line, line protocol after it.
Written to a temporary name, fsynced, renamed, and the folder fsynced, so a spooled batch survives a
crash and is either whole or absent. Replayed oldest first.
"""

from __future__ import annotations

import os
from pathlib import Path


class Spool:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob("*.tmp"):
            stale.unlink()
        files = self._files()
        self._next = int(files[-1].stem) + 1 if files else 0

    def _files(self) -> list[Path]:
        return sorted(self.folder.glob("*.lp"))

    def __len__(self) -> int:
        return len(self._files())

    def append(self, database: str, body: bytes) -> Path:
        path = self.folder / f"{self._next:012d}.lp"
        self._next += 1
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(database.encode() + b"\n" + body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return path

    def oldest(self) -> tuple[Path, str, bytes] | None:
        files = self._files()
        if not files:
            return None
        raw = files[0].read_bytes()
        database, _, body = raw.partition(b"\n")
        return files[0], database.decode(), body

    @staticmethod
    def remove(path: Path) -> None:
        path.unlink(missing_ok=True)
