"""Receipt-time journal: a message without device time keeps its first receipt time across redelivery.

A reading that carries no device time is stamped with the time the worker received it. If the
worker dies after writing but before its ack reached the broker, the broker redelivers the message
(with MQTT's DUP flag) and a fresh receipt time would write a second point instead of overwriting
the first. So, before each batch is written, the worker appends ``(message key, receipt time)`` for
the batch to this journal and fsyncs it; a redelivered message looks its key up and reuses the
recorded time.

Keys combine the CRC-32 of topic and payload with the payload length and the *packet id*: the broker redelivers with the
same packet id, while two different messages with the same content (an ESPHome sensor publishing
``50.2`` twice) have different ones. A redelivered message was unacknowledged, so it is among the
last ``receive_maximum`` messages of the session; two generations of ``rotate_at`` (set to that
window) records are kept, on disk and in memory, and packet ids only repeat after 65,535 messages.
In memory a key is remembered as soon as the message arrives (a redelivery after a reconnect can
overtake the batch write); on disk when its batch is written.
"""

from __future__ import annotations

import os
import struct
import zlib
from array import array
from pathlib import Path

_RECORD = struct.Struct("=QQ")


def message_key(topic: bytes, payload: bytes, mid: int) -> int:
    """64 bits: CRC-32 of topic and payload, payload length, packet id. Cheap: it runs per message.

    A wrong match needs the same packet id, length and CRC within the journal's window: a CRC-32
    collision among at most two windows of messages (about 1 in 200,000 for 20,000 messages).
    """
    return (zlib.crc32(payload, zlib.crc32(topic)) << 32) | ((len(payload) & 0xFFFF) << 16) | (mid & 0xFFFF)


class ReceiptJournal:
    def __init__(self, path: Path, rotate_at: int = 10_000) -> None:
        self.path = Path(path)
        self.old_path = self.path.with_suffix(".old")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rotate_at = rotate_at
        self._old: dict[int, int] = self._load(self.old_path)
        self._current: dict[int, int] = self._load(self.path)
        self._on_disk = len(self._current)
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

    def remember(self, key: int, time_ns: int) -> None:
        """Keep the receipt time in memory (network thread, as the message arrives)."""
        self._current[key] = time_ns
        if len(self._current) >= self.rotate_at:
            self._old, self._current = self._current, {}

    def persist(self, flat: list[int]) -> None:
        """Append ``[key, ns, key, ns, ...]`` and fsync (writing thread, before the batch is written)."""
        if not flat:
            return
        self._file.write(array("Q", flat).tobytes())  # native order: the journal never leaves this host
        self._file.flush()
        os.fsync(self._file.fileno())
        self._on_disk += len(flat) // 2
        if self._on_disk >= self.rotate_at:
            self._file.close()
            os.replace(self.path, self.old_path)
            self._file = open(self.path, "ab")  # noqa: SIM115
            self._on_disk = 0

    def close(self) -> None:
        self._file.close()
