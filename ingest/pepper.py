"""Keyed pseudonyms for identifiers of passers-by (WiFi/BLE probe MACs, vehicle ids), applied at ingestion.

The charter: a MAC address is replaced by HMAC-SHA256 under a secret *pepper* that is rotated every
24 h and then destroyed, truncated to 64 bits. Within one rotation period the same device gets the same
pseudonym (so distinct devices can be counted); across periods it does not (no long-term tracking); once a
period's pepper is destroyed, nobody (the operator included) can test a guessed MAC against a stored
pseudonym any more, which matters because the MAC space is small enough to enumerate.

- ``PepperStore``: one 32-byte random pepper per period (period index = floor(unix time / rotation_s), UTC
  days by default), created on first use as ``<directory>/<index>.pepper`` (mode 0600, folder 0700).
  Creation is atomic and first-writer-wins (a temporary file hard-linked into place), so several workers
  sharing the folder agree on the pepper. A period's pepper is kept ``grace_s`` seconds after the period
  ends (late messages, dead-letter replay), then destroyed: overwritten with zeros and unlinked. On
  copy-on-write file systems and SSDs the overwrite is best effort; the unlink is what counts.
- ``pseudonym(pepper, identifier)``: 16 lower-case hex digits.
- ``Pseudonymiser``: the two together, with a bounded cache, for the ingest pipeline.
- ``pseudonymiser_for(settings, charter)``: the worker's, over ``<data_dir>/peppers``.

Ingest owns this (pseudonymisation happens at ingestion, before anything is stored); the charter job never
touches peppers (they expire here, by the charter's rotation and pseudonymous retention).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import math
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datacharter.charter import Charter
    from smartzone.settings import Settings

PEPPER_BYTES = 32
_SUFFIX = ".pepper"
_SWEEP_EVERY_S = 60.0
_MEMORY_MAX = 64  # peppers held in memory (one per period: two months of daily periods)
_CACHE_MAX = 200_000  # pseudonyms cached by a Pseudonymiser
_STALE_TMP_S = 60.0  # a temporary pepper file this old was left by a crashed process

_MAC = re.compile(
    r"(?:[0-9A-Fa-f]{2}([:-]))(?:[0-9A-Fa-f]{2}\1){4}[0-9A-Fa-f]{2}"  # AA:BB:CC:DD:EE:FF, aa-bb-...
    r"|[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}"  # aabb.ccdd.eeff (Cisco)
    r"|[0-9A-Fa-f]{12}"  # aabbccddeeff
)


def normalise_mac(s: object) -> str | None:
    """``AA:BB:CC:DD:EE:FF`` for any common spelling of a 48-bit MAC address, else None."""
    if not isinstance(s, str):
        return None
    text = s.strip()
    if not _MAC.fullmatch(text):
        return None
    digits = re.sub(r"[^0-9A-Fa-f]", "", text).upper()
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def is_randomised_mac(mac: str) -> bool:
    """True when the locally administered bit (0x02 of the first octet) is set: a randomised address."""
    norm = normalise_mac(mac)
    if norm is None:
        raise ValueError("not a MAC address")
    return bool(int(norm[:2], 16) & 0x02)


def pseudonym(pepper: bytes, identifier: str) -> str:
    """HMAC-SHA256(pepper, identifier) truncated to 64 bits: 16 lower-case hex digits.

    A MAC address is normalised first (``aa-bb-..`` and ``AA:BB:..`` are one device); any other identifier
    is used as given, so callers normalise it (the sightings decoder does for vehicle ids).
    """
    key = normalise_mac(identifier) or identifier
    return hmac.new(pepper, key.encode(), hashlib.sha256).hexdigest()[:16]


class PepperStore:
    """Peppers by rotation period, on disk (shared by the workers of one host) and in a small dict."""

    def __init__(
        self, directory: Path, rotation_s: int = 86_400, *, grace_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        if rotation_s <= 0:
            raise ValueError("rotation_s must be positive")
        if grace_s < 0:
            raise ValueError("grace_s must not be negative")
        self.directory = Path(directory)
        self.rotation_s = int(rotation_s)
        self.grace_s = float(grace_s)
        self._clock = clock
        self._peppers: dict[int, bytes] = {}
        self._lock = threading.Lock()
        self._next_sweep = 0.0
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)

    def period(self, t: datetime) -> int:
        return math.floor(t.timestamp() / self.rotation_s)

    def expired(self, period: int, now: float | None = None) -> bool:
        """True when the period ended more than ``grace_s`` ago: its pepper is (to be) destroyed."""
        now = self._clock() if now is None else now
        return now - (period + 1) * self.rotation_s > self.grace_s

    def pepper(self, t: datetime) -> bytes | None:
        """The pepper of the period holding ``t`` (created on first use), or None once it is destroyed."""
        now = self._clock()
        if now >= self._next_sweep:
            self._next_sweep = now + _SWEEP_EVERY_S
            self.destroy_expired(now)
        p = self.period(t)
        if self.expired(p, now):
            return None
        found = self._peppers.get(p)
        if found is not None:
            return found
        with self._lock:
            found = self._peppers.get(p)
            if found is None:
                found = self._load_or_create(p)
                if found is None:  # being destroyed by another process right now
                    return None
                if len(self._peppers) >= _MEMORY_MAX:
                    del self._peppers[min(self._peppers)]
                self._peppers[p] = found
        return found

    def destroy_expired(self, now: datetime | float | None = None) -> int:
        """Destroy every pepper whose period ended more than ``grace_s`` before ``now``; how many were."""
        now_s = self._clock() if now is None else now.timestamp() if isinstance(now, datetime) else float(now)
        destroyed = 0
        with self._lock:
            for p in [p for p in self._peppers if self.expired(p, now_s)]:
                del self._peppers[p]
            for path in self.directory.iterdir():
                name = path.name
                if name.endswith(_SUFFIX):
                    try:
                        p = int(name[: -len(_SUFFIX)])
                    except ValueError:
                        continue
                    if self.expired(p, now_s) and _shred(path):
                        destroyed += 1
                elif name.startswith(".tmp-"):  # left by a process that died while creating a pepper
                    with contextlib.suppress(FileNotFoundError):
                        if now_s - path.stat().st_mtime > _STALE_TMP_S:
                            _shred(path)
        return destroyed

    # -- internals --------------------------------------------------------------------------------
    def _path(self, period: int) -> Path:
        return self.directory / f"{period}{_SUFFIX}"

    def _load_or_create(self, period: int) -> bytes | None:
        path = self._path(period)
        with contextlib.suppress(FileNotFoundError):
            return _read(path)
        tmp = self.directory / f".tmp-{period}-{os.getpid()}-{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        linked = False
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(PEPPER_BYTES))
                f.flush()
                os.fsync(f.fileno())
            # os.link, unlike os.replace, never overwrites: when another process created the period's
            # pepper meanwhile, we read theirs, so every process uses the same one.
            try:
                os.link(tmp, path)
                linked = True
            except FileExistsError:
                pass
        finally:
            if linked:  # the temporary name shares the pepper's inode: unlink only, never overwrite
                tmp.unlink(missing_ok=True)
            else:
                _shred(tmp)
        _fsync_dir(self.directory)
        return _read(path)


class Pseudonymiser:
    """``identifier, time -> pseudonym`` under the pepper of the time's period; None once it is destroyed."""

    def __init__(self, store: PepperStore) -> None:
        self.store = store
        self._cache: dict[tuple[int, str], str] = {}

    def __call__(self, identifier: str, t: datetime) -> str | None:
        store = self.store
        period = store.period(t)
        if store.expired(period):
            return None
        key = (period, identifier)
        found = self._cache.get(key)
        if found is not None:
            return found
        pepper = store.pepper(t)
        if pepper is None:
            return None
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        found = self._cache[key] = pseudonym(pepper, identifier)
        return found


def pseudonymiser_for(settings: Settings, charter: Charter) -> Pseudonymiser:
    """Pseudonyms under peppers in ``<data_dir>/peppers``, rotated as the charter says and destroyed once
    the pseudonymous retention of their period has passed (a late message gets no pepper: dead letter)."""
    return Pseudonymiser(
        PepperStore(
            settings.data_dir / "peppers", rotation_s=int(charter.pepper_rotation_s), grace_s=charter.pepper_grace_s
        )
    )


def _read(path: Path) -> bytes | None:
    """The pepper in ``path``; None when it is all zeros (caught while another process destroys it)."""
    data = path.read_bytes()
    if len(data) != PEPPER_BYTES:
        raise OSError(f"{path} holds {len(data)} bytes, not a {PEPPER_BYTES}-byte pepper")
    return None if data == bytes(PEPPER_BYTES) else data


def _shred(path: Path) -> bool:
    """Overwrite with zeros, then unlink; False when the file was already gone."""
    try:
        with open(path, "r+b") as f:
            size = os.fstat(f.fileno()).st_size
            f.write(b"\0" * size)
            f.flush()
            os.fsync(f.fileno())
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
