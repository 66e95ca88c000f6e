"""Receipt-time journal: a message without device time keeps its first receipt time across redelivery.

A reading that carries no device time is stamped with the time the worker received it. If the
worker dies after writing but before its ack reached the broker, the broker redelivers the message
(with MQTT's DUP flag) and a fresh receipt time would write a second point instead of overwriting
the first. So, before each batch is written, the worker appends ``(message key, receipt time)`` for
the batch to this journal and fsyncs it; a redelivered message looks its key up and reuses the
recorded time. Keys are 64-bit BLAKE2b digests of topic and payload. Two generations of
``rotate_at`` records are kept, on disk and in memory, which covers far more than the broker's
in-flight window.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

_RECORD = struct.Struct("<QQ")


def message_key(topic: bytes, payload: bytes) -> int:
    h = hashlib.blake2b(topic, digest_size=8)
    h.update(b"\0")
    h.update(payload)
    return int.from_bytes(h.digest(), "little")


class ReceiptJournal:
    def __init__(self, path: Path, rotate_at: int = 100_000) -> None:
        self.path = Path(path)
        self.old_path = self.path.with_suffix(".old")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rotate_at = rotate_at
        self._old: dict[int, int] = self._load(self.old_path)
        self._current: dict[int, int] = self._load(self.path)
        self._file = open(self.path, "ab")  # noqa: SIM115 - kept open for the worker's lifetime

    @staticmethod
    def _load(path: Path) -> dict[int, int]:
        if not path.exists():
            return {}
        raw = path.read_bytes()
        raw = raw[: len(raw) - len(raw) % _RECORD.size]  # a torn last record is ignored
        return dict(_RECORD.iter_unpack(raw))

    def get(self, key: int) -> int | None:
        """The receipt time (ns) recorded for this message key, if any."""
        t = self._current.get(key)
        return t if t is not None else self._old.get(key)

    def record(self, entries: list[tuple[int, int]]) -> None:
        """Append and fsync; called before the batch that holds these messages is written."""
        if not entries:
            return
        self._file.write(b"".join(_RECORD.pack(k, t) for k, t in entries))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._current.update(entries)
        if len(self._current) >= self.rotate_at:
            self._file.close()
            os.replace(self.path, self.old_path)
            self._old, self._current = self._current, {}
            self._file = open(self.path, "ab")  # noqa: SIM115

    def close(self) -> None:
        self._file.close()
