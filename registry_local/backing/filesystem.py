"""A backing store in a local directory: distribution's *filesystem* driver layout.

This is the embedded default when no S3 bucket is configured: the same keys as in
S3, as files under a root directory, so `registry:2` with
`storage.filesystem.rootdirectory` set to the same directory reads it too.
Blocking file work runs in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from ..errors import BackendError, ObjectTooLarge
from .backend import Listed

__all__ = ["FilesystemBackend"]


class FilesystemBackend:
    """Backend over a directory; see backend.Backend for the contract."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def description(self) -> str:
        return f"directory {self.root}"

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if any(part in ("", ".", "..") for part in parts[:-1]) or parts[-1] in (".", ".."):
            raise BackendError("resolve", key, "invalid key")
        return self.root.joinpath(*[p for p in parts if p])

    async def _stat(self, key: str) -> os.stat_result | None:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.stat)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise BackendError("stat", key, exc.strerror or str(exc)) from None

    async def stat(self, key: str) -> int | None:
        found = await self._stat(key)
        return None if found is None else found.st_size

    async def modified(self, key: str) -> float | None:
        found = await self._stat(key)
        return None if found is None else found.st_mtime

    async def read(self, key: str, limit: int) -> bytes | None:
        path = self._path(key)

        def read() -> bytes | None:
            try:
                with path.open("rb") as f:
                    data = f.read(limit + 1)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                return None
            if len(data) > limit:
                raise ObjectTooLarge(key, limit)
            return data

        try:
            return await asyncio.to_thread(read)
        except OSError as exc:
            raise BackendError("read", key, exc.strerror or str(exc)) from None

    async def open(self, key: str, offset: int = 0, end: int | None = None) -> _FileStream | None:
        path = self._path(key)

        def open_at() -> _FileStream | None:
            try:
                f = path.open("rb")
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                return None
            size = os.fstat(f.fileno()).st_size
            start = min(offset, size)
            f.seek(start)
            return _FileStream(f, size, max(start, size if end is None else min(end, size)))

        try:
            return await asyncio.to_thread(open_at)
        except OSError as exc:
            raise BackendError("open", key, exc.strerror or str(exc)) from None

    async def walk(self, prefix: str) -> list[str]:
        return [listed.name for listed in await self.walk_dated(prefix)]

    async def walk_dated(self, prefix: str) -> list[Listed]:
        path = self._path(prefix.rstrip("/"))

        def keys() -> list[Listed]:
            found: list[Listed] = []
            for directory, _, files in os.walk(path):
                relative = Path(directory).relative_to(path)
                for name in files:
                    with contextlib.suppress(FileNotFoundError):  # removed meanwhile
                        stat = os.stat(os.path.join(directory, name))
                        key = (relative / name).as_posix()
                        found.append(Listed(key, stat.st_mtime, stat.st_size))
            return sorted(found)

        try:
            return await asyncio.to_thread(keys)
        except OSError as exc:
            raise BackendError("list", prefix, exc.strerror or str(exc)) from None

    async def list(self, prefix: str) -> list[str]:
        path = self._path(prefix.rstrip("/"))

        def names() -> list[str]:
            # Deleting a key leaves its directories behind: one that holds no
            # file is no child, as on S3.
            try:
                return sorted(e.name for e in os.scandir(path) if not _empty(Path(e.path)))
            except (FileNotFoundError, NotADirectoryError):
                return []

        try:
            return await asyncio.to_thread(names)
        except OSError as exc:
            raise BackendError("list", prefix, exc.strerror or str(exc)) from None

    async def write(self, key: str, data: bytes) -> None:
        path = self._path(key)

        def write() -> None:
            _put(path, lambda out: out.write(data))

        try:
            await asyncio.to_thread(write)
        except OSError as exc:
            raise BackendError("write", key, exc.strerror or str(exc)) from None

    async def create(self, key: str, data: bytes) -> str | None:
        path = self._path(key)

        def create() -> str | None:
            tmp = _staged(path.parent, lambda out: out.write(data))
            try:
                os.link(tmp, path)  # atomic, and refused when the name exists
            except FileExistsError:
                return None
            finally:
                os.unlink(tmp)
            return _version(data)

        try:
            return await asyncio.to_thread(create)
        except OSError as exc:
            raise BackendError("create", key, exc.strerror or str(exc)) from None

    async def replace(self, key: str, data: bytes, version: str) -> str | None:
        path = self._path(key)

        def replace() -> str | None:
            with _locked(path.parent):  # compare and set, against other processes too
                try:
                    current = path.read_bytes()
                except (FileNotFoundError, NotADirectoryError):
                    return None
                if _version(current) != version:
                    return None
                _put(path, lambda out: out.write(data))
            return _version(data)

        try:
            return await asyncio.to_thread(replace)
        except OSError as exc:
            raise BackendError("replace", key, exc.strerror or str(exc)) from None

    async def read_versioned(self, key: str, limit: int) -> tuple[bytes, str] | None:
        data = await self.read(key, limit)
        return None if data is None else (data, _version(data))

    async def write_file(
        self, key: str, path: Path, start: int = 0, end: int | None = None
    ) -> None:
        target = self._path(key)

        def copy() -> None:
            with path.open("rb") as source:
                source.seek(start)
                left = None if end is None else max(0, end - start)
                _put(target, lambda out: _copy(source, out, left))

        try:
            await asyncio.to_thread(copy)
        except OSError as exc:
            raise BackendError("write", key, exc.strerror or str(exc)) from None

    async def compose(self, key: str, sources: Sequence[str]) -> None:
        target = self._path(key)
        paths = [self._path(source) for source in sources]

        def concatenate(out: BinaryIO) -> None:
            for path in paths:
                with path.open("rb") as part:
                    shutil.copyfileobj(part, out, 1 << 20)

        try:
            await asyncio.to_thread(_put, target, concatenate)
        except OSError as exc:
            raise BackendError("compose", key, exc.strerror or str(exc)) from None

    async def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            await asyncio.to_thread(lambda: path.unlink(missing_ok=True))
        except OSError as exc:
            raise BackendError("delete", key, exc.strerror or str(exc)) from None

    async def delete_tree(self, prefix: str) -> None:
        path = self._path(prefix.rstrip("/"))
        try:
            await asyncio.to_thread(shutil.rmtree, path, ignore_errors=False)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise BackendError("delete", prefix, exc.strerror or str(exc)) from None

    async def remove_emptied(self, prefix: str, root: str) -> None:
        top = self._path(root.rstrip("/"))
        path = self._path(prefix.rstrip("/"))

        def remove() -> None:
            directory = path
            while directory != top and directory.is_relative_to(top):
                if not _empty(directory):
                    return
                for below, _, _ in os.walk(directory, topdown=False):
                    try:
                        os.rmdir(below)
                    except OSError as exc:
                        if exc.errno in (errno.ENOENT, errno.ENOTEMPTY):
                            return  # removed meanwhile, or written into: in use
                        raise
                directory = directory.parent

        try:
            await asyncio.to_thread(remove)
        except OSError as exc:
            raise BackendError("delete", prefix, exc.strerror or str(exc)) from None

    async def check(self) -> None:
        def probe() -> None:
            self.root.mkdir(parents=True, exist_ok=True)
            if not os.access(self.root, os.R_OK | os.X_OK):
                raise PermissionError(13, "not readable", str(self.root))

        try:
            await asyncio.to_thread(probe)
        except OSError as exc:
            raise BackendError("check", str(self.root), exc.strerror or str(exc)) from None


class _FileStream:
    def __init__(self, file: BinaryIO, size: int, stop: int) -> None:
        self._file = file
        self._left = stop - file.tell()
        self.size = size

    async def read(self, n: int) -> bytes:
        if self._left <= 0:
            return b""
        try:
            chunk = await asyncio.to_thread(self._file.read, min(n, self._left))
        except OSError as exc:
            raise BackendError("read", self._file.name, exc.strerror or str(exc)) from None
        self._left -= len(chunk)
        return chunk

    async def close(self) -> None:
        self._file.close()


def _copy(source: BinaryIO, out: BinaryIO, length: int | None) -> None:
    """Copy `length` bytes of `source` (all that is left when None) to `out`."""
    while length is None or length > 0:
        chunk = source.read(1 << 20 if length is None else min(1 << 20, length))
        if not chunk:
            return
        out.write(chunk)
        if length is not None:
            length -= len(chunk)


def _empty(path: Path) -> bool:
    """A directory with no file anywhere under it (a file is never empty)."""
    if not path.is_dir():
        return False
    return not any(files for _, _, files in os.walk(path))


def _staged(directory: Path, fill: Callable[[BinaryIO], object]) -> str:
    """A durable temp file in `directory` that `fill` wrote, to be renamed or
    linked into place; removed again if anything fails."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def _put(path: Path, fill: Callable[[BinaryIO], object]) -> None:
    """Write `path` whole and atomically: staged beside it, then renamed."""
    tmp = _staged(path.parent, fill)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _version(data: bytes) -> str:
    """An object's version: its content's MD5, as S3 gives a simple PUT's ETag."""
    return '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on a directory (flock), across processes."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
