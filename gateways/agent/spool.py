"""The agent's disk spool: an append-only log of local messages, fsynced before they are acknowledged.

Records live in segment files named after their first sequence number (``00000000000000000042.seg``). A record
is a header (length, CRC-32, sequence number, receipt time in µs, topic length), the topic and the payload. The
agent appends a batch of messages, fsyncs, and only then acknowledges them to the local broker; it reads them in
order for the central broker and, when the central PUBACK of every record up to sequence ``n`` has arrived,
moves the acknowledged mark (``state.json``) past ``n`` and deletes the segments below it. After a crash the
torn tail of the last segment (a record whose CRC does not match) is cut off and everything from the
acknowledged mark on is sent again: at least once, in order.

The spool is bounded by ``max_bytes``: when a new batch does not fit, the oldest segments are deleted, even
unsent, and the messages lost are counted (``dropped``) and logged. Never silently.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

_HEAD = struct.Struct("<IIQQH")  # record length, crc32 of the rest, seq, stamp_us, topic length
_SUFFIX = ".seg"


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    stamp_us: int  # when the agent received it (µs since the epoch): the reading's receipt time
    topic: str
    payload: bytes


@dataclass
class _Segment:
    first: int  # seq of its first record
    path: Path
    size: int  # durable bytes
    count: int  # records


class Spool:
    def __init__(self, folder: Path, max_bytes: int, *, segment_bytes: int | None = None) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or max(4096, min(16 << 20, max_bytes // 16))
        self.state_path = self.folder / "state.json"
        self._lock = threading.Lock()
        self.dropped = 0  # messages deleted unsent because the budget was full (since the spool was made)
        self.dropped_bytes = 0
        self.acked = 0  # every seq below this reached the centre
        self._load_state()
        self._segments: list[_Segment] = []
        self._next = self.acked
        self._recover()
        self._write_file: BinaryIO | None = None
        self._acks: set[int] = set()
        self._reader: tuple[int, BinaryIO, int] | None = None  # (segment first, file, offset)
        self._read_next = self.acked  # the next seq to hand to the sender
        self._stamps: dict[int, int] = {}  # in-memory stamps of unacked records handed out: backlog age
        self._state_dirty = False

    # -- start-up ------------------------------------------------------------------------------------
    def _load_state(self) -> None:
        try:
            doc = json.loads(self.state_path.read_text())
            self.acked = int(doc.get("acked", 0))
            self.dropped = int(doc.get("dropped", 0))
            self.dropped_bytes = int(doc.get("dropped_bytes", 0))
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError) as exc:  # a torn state file: resend everything spooled
            log.warning("spool state %s unreadable (%s): resending every spooled message", self.state_path, exc)

    def _recover(self) -> None:
        paths = sorted(p for p in self.folder.iterdir() if p.suffix == _SUFFIX and p.stem.isdigit())
        for n, path in enumerate(paths):
            first = int(path.stem)
            data = path.read_bytes()
            off, count, seq = 0, 0, first
            while off + _HEAD.size <= len(data):
                length, crc, rseq, _stamp, tlen = _HEAD.unpack_from(data, off)
                end = off + length
                if length < _HEAD.size + tlen or end > len(data) or rseq != seq:
                    break
                if zlib.crc32(data[off + 8 : end]) != crc:
                    break
                off, count, seq = end, count + 1, seq + 1
            if off < len(data):
                if n != len(paths) - 1:
                    log.warning("spool segment %s is damaged after %d records: the rest is lost", path, count)
                with open(path, "r+b") as f:  # cut the torn tail off (a crash during the last write)
                    f.truncate(off)
                    os.fsync(f.fileno())
            if count == 0:
                path.unlink()
                continue
            self._segments.append(_Segment(first, path, off, count))
            self._next = max(self._next, first + count)
        if self._segments and self.acked < self._segments[0].first:
            self.acked = self._segments[0].first
        if self.acked > self._next:  # the state says more was acked than is spooled (segments deleted)
            self._next = self.acked

    # -- writer side ----------------------------------------------------------------------------------
    def append(self, items: Iterable[tuple[int, str, bytes]]) -> int:
        """Append ``(stamp_us, topic, payload)`` records and fsync them; returns the last seq written + 1.
        Drops the oldest segments first if the batch does not fit in ``max_bytes``."""
        records = []
        for stamp, topic, payload in items:
            t = topic.encode()
            body_len = _HEAD.size + len(t) + len(payload)
            records.append((stamp, t, payload, body_len))
        incoming = sum(r[3] for r in records)
        with self._lock:
            self._make_room(incoming)
            chunk: list[bytes] = []
            seg = self._active(incoming)
            for stamp, t, payload, length in records:
                seq = self._next
                rest = struct.pack("<QQH", seq, stamp, len(t)) + t + payload
                chunk.append(struct.pack("<II", length, zlib.crc32(rest)) + rest)
                self._next += 1
            data = b"".join(chunk)
            f = self._write_file
            assert f is not None
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            seg.size += len(data)
            seg.count += len(records)
            return self._next

    def _active(self, incoming: int) -> _Segment:
        """The segment to append to: the last one while it has room, else a new one."""
        seg = self._segments[-1] if self._segments else None
        fits = seg is not None and (seg.size == 0 or seg.size + incoming <= self.segment_bytes)
        if seg is not None and fits and self._write_file is not None:
            return seg
        if self._write_file is not None:
            self._write_file.close()
            self._write_file = None
        if seg is not None and fits and seg.first + seg.count == self._next:  # after a restart: go on with it
            self._write_file = open(seg.path, "ab")  # noqa: SIM115 - the spool's lifetime
            return seg
        seg = _Segment(self._next, self.folder / f"{self._next:020d}{_SUFFIX}", 0, 0)
        self._segments.append(seg)
        self._write_file = open(seg.path, "ab")  # noqa: SIM115 - the spool's lifetime
        _fsync_dir(self.folder)
        return seg

    def _make_room(self, incoming: int) -> None:
        """Delete the oldest segments until ``incoming`` more bytes fit in ``max_bytes``: counted, logged."""
        total = sum(s.size for s in self._segments)
        while self._segments and total + incoming > self.max_bytes:
            seg = self._segments.pop(0)
            if not self._segments and self._write_file is not None:  # it was the active one
                self._write_file.close()
                self._write_file = None
            end = seg.first + seg.count
            lost = max(0, end - max(self.acked, seg.first))
            if lost:
                self.dropped += lost
                self.dropped_bytes += seg.size
                log.warning(
                    "spool full (max_bytes=%d): dropped the %d oldest unsent messages (seq %d-%d, %d bytes); "
                    "%d dropped in all",
                    self.max_bytes,
                    lost,
                    max(self.acked, seg.first),
                    end - 1,
                    seg.size,
                    self.dropped,
                )
            self.acked = max(self.acked, end)
            self._acks = {a for a in self._acks if a >= self.acked}
            self._advance()
            seg.path.unlink(missing_ok=True)
            total -= seg.size
            self._state_dirty = True
            if self._reader is not None and self._reader[0] == seg.first:
                self._reader[1].close()
                self._reader = None
            self._read_next = max(self._read_next, end)
        if self._state_dirty:
            self._save_state()

    # -- sender side ----------------------------------------------------------------------------------
    def read(self, limit: int) -> list[Entry]:
        """Up to ``limit`` records not yet handed out, oldest first."""
        out: list[Entry] = []
        with self._lock:
            while len(out) < limit and self._read_next < self._next:
                seg = self._segment_of(self._read_next)
                if seg is None:
                    break
                if self._reader is None or self._reader[0] != seg.first:
                    if self._reader is not None:
                        self._reader[1].close()
                    rf: BinaryIO = open(seg.path, "rb")  # noqa: SIM115 - closed when the reader moves on
                    off, seq = 0, seg.first
                    while seq < self._read_next:  # skip to the first record not handed out yet
                        rf.seek(off)
                        off += struct.unpack("<I", rf.read(4))[0]
                        seq += 1
                    self._reader = (seg.first, rf, off)
                first, f, off = self._reader
                want = min(seg.size - off, 4 << 20)
                if want <= 0:
                    break
                f.seek(off)
                data = f.read(want)
                pos = 0
                while pos + _HEAD.size <= len(data) and len(out) < limit:
                    length, _crc, seq, stamp, tlen = _HEAD.unpack_from(data, pos)
                    if pos + length > len(data):
                        break
                    t0 = pos + _HEAD.size
                    out.append(
                        Entry(seq, stamp, data[t0 : t0 + tlen].decode(errors="replace"), data[t0 + tlen : pos + length])
                    )
                    self._stamps[seq] = stamp
                    pos += length
                    self._read_next = seq + 1
                self._reader = (first, f, off + pos)
                if pos == 0:
                    break
        return out

    def rewind(self, seq: int) -> None:
        """Hand out records again from ``seq`` on (the centre had no subscriber for one: resend it and what
        followed it, in order). Records already acknowledged are not handed out again."""
        with self._lock:
            target = max(seq, self.acked)
            if target < self._read_next:
                self._read_next = target
                if self._reader is not None:
                    self._reader[1].close()
                    self._reader = None

    def _segment_of(self, seq: int) -> _Segment | None:
        for seg in self._segments:
            if seg.first <= seq < seg.first + seg.count:
                return seg
        return None

    def ack(self, seqs: Iterable[int]) -> None:
        """The centre has these records: move the mark and delete what lies wholly below it."""
        with self._lock:
            for s in seqs:
                self._stamps.pop(s, None)
                if s >= self.acked:
                    self._acks.add(s)
            before = self.acked
            self._advance()
            if self.acked != before:
                self._state_dirty = True
                while len(self._segments) > 1 and self._segments[1].first <= self.acked:
                    seg = self._segments.pop(0)
                    if self._reader is not None and self._reader[0] == seg.first:
                        self._reader[1].close()
                        self._reader = None
                    seg.path.unlink(missing_ok=True)

    def _advance(self) -> None:
        acks = self._acks
        while self.acked in acks:
            acks.discard(self.acked)
            self.acked += 1

    def save(self) -> None:
        """Persist the acknowledged mark (not fsynced: a lost update only means a resend)."""
        with self._lock:
            if self._state_dirty:
                self._save_state()

    def _save_state(self) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"acked": self.acked, "dropped": self.dropped, "dropped_bytes": self.dropped_bytes}))
        os.replace(tmp, self.state_path)
        self._state_dirty = False

    # -- figures --------------------------------------------------------------------------------------
    def backlog(self) -> int:
        """Messages spooled and not yet acknowledged by the centre."""
        with self._lock:
            return self._next - self.acked

    def size(self) -> int:
        with self._lock:
            return sum(s.size for s in self._segments)

    def oldest_stamp(self) -> int | None:
        """Receipt time (µs) of the oldest unacknowledged message, or None when there is none."""
        with self._lock:
            if self._next == self.acked:
                return None
            if self.acked in self._stamps:
                return self._stamps[self.acked]
            seg = self._segment_of(self.acked)
        if seg is None:
            return None
        with open(seg.path, "rb") as f:  # the mark's record: scan its segment
            off, seq = 0, seg.first
            while True:
                f.seek(off)
                head = f.read(_HEAD.size)
                if len(head) < _HEAD.size:
                    return None
                length, _crc, rseq, stamp, _t = _HEAD.unpack(head)
                if rseq >= self.acked:
                    return stamp
                off += length
                seq += 1

    def close(self) -> None:
        with self._lock:
            if self._write_file is not None:
                self._write_file.close()
                self._write_file = None
            if self._reader is not None:
                self._reader[1].close()
                self._reader = None
            self._save_state()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
