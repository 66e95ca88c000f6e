"""Experiment artifacts: validated, content-addressed, stored once.

An artifact is what a gateway runs: a Python **script** (``*.py``, UTF-8, compiles) or a **wheel** (PEP 427:
a zip named ``{name}-{version}(-{build})?-{python}-{abi}-{platform}.whl`` holding
``{name}-{version}.dist-info/`` with ``METADATA``, ``WHEEL`` and ``RECORD``, and an entry point
``[smartzone.experiment] main = module:function`` in its ``entry_points.txt``). It is stored at
``<data_dir>/experiments/artifacts/<sha256>`` and recorded in table ``artifacts``; uploading the same bytes
again changes nothing (``created`` is False).

The size limit is ``settings.experiments.artifact_max_bytes``: ``Collector`` takes the body chunk by chunk
and refuses as soon as it is over, so an oversized upload is never held whole.
"""

from __future__ import annotations

import configparser
import hashlib
import io
import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from experiments.db import Artifact, utc
from experiments.errors import Invalid, TooLarge
from smartzone.files import write_atomic
from smartzone.settings import Settings

# PEP 427: {distribution}-{version}(-{build tag})?-{python tag}-{abi tag}-{platform tag}.whl
WHEEL_NAME = re.compile(
    r"(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._]*[A-Za-z0-9])?)-(?P<version>[A-Za-z0-9_.!+]+)"
    r"(?:-(?P<build>\d[A-Za-z0-9_.]*))?-(?P<python>[A-Za-z0-9_.]+)-(?P<abi>[A-Za-z0-9_.]+)-(?P<platform>[A-Za-z0-9_.]+)"
    r"\.whl"
)
ENTRY_POINT_GROUP = "smartzone.experiment"
ENTRY_POINT_NAME = "main"
_ENTRY_POINT = re.compile(
    r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_]\w*)*"
)
_FILENAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+!-]{0,254}")
SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ArtifactInfo:
    sha256: str
    size: int
    kind: str  # "wheel" or "script"
    filename: str
    created_at: datetime


class Collector:
    """A body taken chunk by chunk up to ``limit`` bytes: ``TooLarge`` as soon as it is over."""

    def __init__(self, limit: int, what: str = "artifact") -> None:
        self.limit = limit
        self.what = what
        self._parts: list[bytes] = []
        self.size = 0

    def check_declared(self, content_length: int | None) -> None:
        """Refuse at once when the declared length (Content-Length) is over the limit."""
        if content_length is not None and content_length > self.limit:
            raise self._too_large(content_length)

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            self._parts.clear()
            raise self._too_large(self.size)
        self._parts.append(chunk)

    def data(self) -> bytes:
        return b"".join(self._parts)

    def _too_large(self, size: int) -> TooLarge:
        return TooLarge(
            f"the {self.what} is over the limit of {self.limit} bytes (at least {size} bytes sent)", limit=self.limit
        )


def kind_of(filename: str) -> str:
    """``wheel`` or ``script`` from the file name; ``Invalid`` for any other name."""
    if not _FILENAME.fullmatch(filename):
        raise Invalid(
            f"filename {filename!r}: give a plain file name (letters, digits, '.', '_', '-', '+', '!'; no folders)",
            field="filename",
        )
    if filename.endswith(".whl"):
        return "wheel"
    if filename.endswith(".py"):
        return "script"
    raise Invalid(f"filename {filename!r}: an artifact is a Python script (*.py) or a wheel (*.whl)", field="filename")


def validate(filename: str, data: bytes) -> str:
    """The artifact's kind if ``data`` is a well-formed artifact named ``filename``; ``Invalid`` saying why not."""
    kind = kind_of(filename)
    if not data:
        raise Invalid("the artifact is empty", field="body")
    if kind == "script":
        _validate_script(filename, data)
    else:
        _validate_wheel(filename, data)
    return kind


def _validate_script(filename: str, data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Invalid(
            f"script {filename}: not UTF-8 text (byte {exc.start}: {exc.reason}); upload a .py source file",
            field="body",
        ) from exc
    try:
        compile(text, filename, "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise Invalid(f"script {filename}: does not compile: line {exc.lineno}: {exc.msg}", field="body") from exc
    except ValueError as exc:  # e.g. NUL bytes in the source
        raise Invalid(f"script {filename}: does not compile: {exc}", field="body") from exc


def _validate_wheel(filename: str, data: bytes) -> None:
    m = WHEEL_NAME.fullmatch(filename)
    if m is None:
        raise Invalid(
            f"wheel {filename}: not a PEP 427 wheel file name "
            "({name}-{version}-{python}-{abi}-{platform}.whl, e.g. probe-1.0-py3-none-any.whl)",
            field="filename",
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise Invalid(f"wheel {filename}: not a zip archive ({exc})", field="body") from exc
    with archive:
        names = archive.namelist()
        unsafe = [n for n in names if n.startswith("/") or "\\" in n or ".." in n.split("/")]
        if unsafe:
            raise Invalid(f"wheel {filename}: unsafe member path {unsafe[0]!r} (absolute or with '..')", field="body")
        try:
            bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
            raise Invalid(f"wheel {filename}: corrupt zip archive ({exc})", field="body") from exc
        if bad is not None:
            raise Invalid(f"wheel {filename}: corrupt member {bad!r} (CRC mismatch)", field="body")
        dist_info = f"{m['name']}-{m['version']}.dist-info"
        found = {n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".dist-info")}
        if {d.lower() for d in found} != {dist_info.lower()}:
            shown = ", ".join(sorted(found)) or "none"
            raise Invalid(f"wheel {filename}: needs exactly one {dist_info}/ folder (found: {shown})", field="body")
        folder = found.pop()
        missing = [f for f in ("METADATA", "WHEEL", "RECORD") if f"{folder}/{f}" not in names]
        if missing:
            raise Invalid(f"wheel {filename}: {folder}/ lacks {', '.join(missing)}", field="body")
        entry_points = f"{folder}/entry_points.txt"
        hint = f"add to the wheel: [{ENTRY_POINT_GROUP}] {ENTRY_POINT_NAME} = module:function"
        if entry_points not in names:
            raise Invalid(f"wheel {filename}: no {entry_points}; {hint}", field="body")
        parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
        try:
            parser.read_string(archive.read(entry_points).decode("utf-8"))
        except (configparser.Error, UnicodeDecodeError) as exc:
            raise Invalid(f"wheel {filename}: unreadable {entry_points} ({exc})", field="body") from exc
        target = parser.get(ENTRY_POINT_GROUP, ENTRY_POINT_NAME, fallback=None)
        if target is None:
            raise Invalid(f"wheel {filename}: no entry point {ENTRY_POINT_NAME} in [{ENTRY_POINT_GROUP}]; {hint}")
        if not _ENTRY_POINT.fullmatch(target.strip()):
            raise Invalid(
                f"wheel {filename}: entry point {ENTRY_POINT_NAME} = {target.strip()!r} is not module:function",
                field="body",
            )


def directory(settings: Settings) -> Path:
    return settings.data_dir / "experiments" / "artifacts"


def path_of(settings: Settings, sha256: str) -> Path:
    if not SHA256.fullmatch(sha256):
        raise Invalid(f"{sha256!r} is not a sha256 (64 lower-case hex digits)", field="artifact")
    return directory(settings) / sha256


def store(
    sessions: sessionmaker[Session], settings: Settings, filename: str, data: bytes, now: datetime
) -> tuple[ArtifactInfo, bool]:
    """Validate and store an artifact: (its record, whether it is new). The same bytes twice: one file, one row."""
    if len(data) > settings.experiments.artifact_max_bytes:
        raise TooLarge(
            f"the artifact is {len(data)} bytes, over the limit of {settings.experiments.artifact_max_bytes}",
            limit=settings.experiments.artifact_max_bytes,
        )
    kind = validate(filename, data)
    digest = hashlib.sha256(data).hexdigest()
    path = path_of(settings, digest)
    existing = get(sessions, digest)
    if existing is not None and path.exists():
        return existing, False
    if not path.exists() or path.stat().st_size != len(data):
        write_atomic(path, data, 0o644)
    if existing is not None:
        return existing, False
    try:
        with sessions.begin() as session:
            session.add(Artifact(sha256=digest, size=len(data), kind=kind, filename=filename, created_at=now))
    except IntegrityError:  # uploaded at the same moment by someone else: theirs is ours
        again = get(sessions, digest)
        if again is None:
            raise
        return again, False
    return ArtifactInfo(digest, len(data), kind, filename, now), True


def get(sessions: sessionmaker[Session], sha256: str) -> ArtifactInfo | None:
    with sessions() as session:
        row = session.get(Artifact, sha256)
        if row is None:
            return None
        return ArtifactInfo(row.sha256, row.size, row.kind, row.filename, utc(row.created_at) or row.created_at)


def chunks_of(path: Path, size: int = 1 << 16) -> Iterable[bytes]:
    with path.open("rb") as f:
        while block := f.read(size):
            yield block
