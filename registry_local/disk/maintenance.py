"""`verify` and `prune`: checking and trimming a cache dir, beside a running server.

Both work on the files alone, so they are safe while a server uses the same
cache dir: a blob they remove or set aside is, for the server, a file that
vanished, which it forgets and fetches again when next asked. A file the server
is sending stays readable to it until closed. Fills in progress live in tmp/
and are never touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..layout import CacheLayout
from ..oci.digest import Digest

__all__ = ["PruneReport", "VerifyReport", "prune", "verify"]

_CHUNK = 1 << 20


def _content(layout: CacheLayout) -> Iterator[tuple[Digest, Path]]:
    for top in (layout.blobs_dir, layout.manifests_dir):
        for directory, _, files in os.walk(top):
            for name in files:
                path = Path(directory) / name
                digest = layout.digest_of_content_path(path)
                if digest is not None:
                    yield digest, path


@dataclass
class VerifyReport:
    """What `verify` did: files and bytes checked, the bad digests, and where `repair`
    moved bad files."""

    checked: int = 0
    bytes: int = 0
    bad: list[Digest] = field(default_factory=list)
    quarantined: list[Path] = field(default_factory=list)


def verify(root: Path, repair: bool, on_file: Callable[[Digest, bool], None]) -> VerifyReport:
    """Re-hash every committed blob and manifest; with `repair`, move the bad ones
    to quarantine/ so they are fetched again."""
    layout = CacheLayout(root)
    report = VerifyReport()
    for digest, path in _content(layout):
        hasher = hashlib.new(digest.algorithm)
        try:
            with path.open("rb") as f:
                while block := f.read(_CHUNK):
                    hasher.update(block)
                    report.bytes += len(block)
        except FileNotFoundError:
            continue  # evicted meanwhile
        report.checked += 1
        good = digest.matches(hasher)
        on_file(digest, good)
        if good:
            continue
        report.bad.append(digest)
        if repair:
            target = layout.quarantined(digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                os.replace(path, target)
                report.quarantined.append(target)
    return report


@dataclass
class PruneReport:
    """What `prune` did: bytes held before and after, and how many files it removed."""

    before: int = 0
    after: int = 0
    removed: int = 0


def prune(root: Path, target: int) -> PruneReport:
    """Remove least recently used blobs (by mtime, which the server keeps as the
    last access) until the cache holds at most `target` bytes; manifests last."""
    layout = CacheLayout(root)
    files = []
    for _, path in _content(layout):
        with contextlib.suppress(FileNotFoundError):
            st = path.stat()
            manifest = path.is_relative_to(layout.manifests_dir)
            files.append((manifest, st.st_mtime, st.st_size, path))
    report = PruneReport(before=sum(f[2] for f in files))
    used = report.before
    for _, _, size, path in sorted(files):
        if used <= target:
            break
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            used -= size
            report.removed += 1
    report.after = used
    return report
