"""Reading an image source's files: a directory, or a tar archive (maybe compressed).

Both give the same four operations, so the OCI-layout and docker-archive readers
are written once. A compressed archive is decompressed to a temporary file first:
tar members of a compressed stream cannot be read out of order cheaply.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import lzma
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Protocol

from ..errors import RegistryLocalError

__all__ = ["SourceError", "SourceFiles", "open_files"]

_CHUNK = 1 << 20


class SourceError(RegistryLocalError):
    """The image source is missing, unreadable or not what it should be."""


class SourceFiles(Protocol):
    """The files of an image source, whether a directory or a tar archive."""

    def exists(self, name: str) -> bool: ...

    def read_bytes(self, name: str, limit: int = 64 << 20) -> bytes: ...

    def open(self, name: str) -> IO[bytes]: ...

    def local_path(self, name: str) -> Path | None:
        """The file itself when it is on disk as is (no copy needed), else None."""


def _clean(name: str) -> str:
    parts = PurePosixPath(name.lstrip("./")).parts
    if not parts or any(p in ("..", "") for p in parts):
        raise SourceError(f"unsafe path in the image source: {name!r}")
    return "/".join(parts)


class _Source:
    """What both kinds of source share: reading a small file whole, bounded."""

    def open(self, name: str) -> IO[bytes]:
        raise NotImplementedError

    def read_bytes(self, name: str, limit: int = 64 << 20) -> bytes:
        with self.open(name) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise SourceError(f"{name} is larger than {limit} bytes")
        return data


class _Directory(_Source):
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, name: str) -> Path:
        return self.root / _clean(name)

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def open(self, name: str) -> IO[bytes]:
        try:
            return self._path(name).open("rb")
        except OSError as exc:
            raise SourceError(f"cannot read {name}: {exc.strerror}") from None

    def local_path(self, name: str) -> Path | None:
        return self._path(name)


class _Archive(_Source):
    def __init__(self, tar: tarfile.TarFile) -> None:
        self._tar = tar
        self._members = {_clean(m.name): m for m in tar.getmembers() if m.name.strip("./")}

    def exists(self, name: str) -> bool:
        member = self._members.get(_clean(name))
        return member is not None and (member.isfile() or member.issym() or member.islnk())

    def open(self, name: str) -> IO[bytes]:
        member = self._members.get(_clean(name))
        if member is None:
            raise SourceError(f"{name} is not in the archive")
        try:
            f = self._tar.extractfile(member)
        except KeyError:
            f = None  # a link to a member that is not there
        if f is None:
            raise SourceError(f"{name} in the archive is not a regular file")
        return f

    def local_path(self, name: str) -> Path | None:
        return None


@contextlib.contextmanager
def open_files(source: Path, workdir: Path) -> Iterator[SourceFiles]:
    """The files of a directory or of a tar archive (plain, gzip or xz)."""
    if source.is_dir():
        yield _Directory(source)
        return
    if not source.is_file():
        raise SourceError(f"{source} is neither a directory nor an archive")
    with source.open("rb") as f:
        magic = f.read(6)
    if magic[:2] == b"\x1f\x8b" or magic[:6] == b"\xfd7zXZ\x00":
        opener = gzip.open if magic[:2] == b"\x1f\x8b" else lzma.open
        plain = workdir / "archive.tar"
        with opener(source, "rb") as packed, plain.open("wb") as out:
            shutil.copyfileobj(packed, out, _CHUNK)
        source = plain
    try:
        tar = tarfile.open(source, mode="r:")
    except tarfile.TarError as exc:
        raise SourceError(f"{source} is not a tar archive: {exc}") from None
    with tar:
        yield _Archive(tar)


def copy_verified(files: SourceFiles, name: str, target: Path, expected: str) -> int:
    """Copy a member to `target`, checking its sha256; the number of bytes."""
    hasher = hashlib.sha256()
    size = 0
    with files.open(name) as source, target.open("wb") as out:
        while block := source.read(_CHUNK):
            hasher.update(block)
            out.write(block)
            size += len(block)
    if hasher.hexdigest() != expected:
        raise SourceError(f"{name} does not match its digest sha256:{expected}")
    return size
