"""What the bucket holds, as `gc` needs it: every repository's links with their
times, every blob with its time and size, the hosts' use records and origin
marks, the tags' targets and what each linked manifest references. A few
listings of the whole tree (S3: ListObjectsV2, a thousand keys a page), then one
read per tag and per manifest."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from ..backing.distribution import DistributionStore
from ..errors import DigestInvalid, ManifestInvalid, ObjectTooLarge
from ..oci.digest import Digest
from ..oci.mediatypes import MAX_MANIFEST_BYTES, inspect_manifest

__all__ = ["Inventory", "Manifest", "parse_digest", "read_inventory", "read_references"]

_READS_AT_ONCE = 16

T = TypeVar("T")
Key = tuple[str, Digest]  # (repository, digest)


@dataclass(frozen=True)
class Manifest:
    """What a manifest references: its children (an index), its blobs (config
    and layers) and its subject (a referrer)."""

    children: frozenset[Digest]
    blobs: frozenset[Digest]
    subject: Digest | None


@dataclass
class Inventory:
    """What the bucket holds, as gc plans from it; see the module docstring."""

    revisions: dict[Key, float] = field(default_factory=dict)  # -> the link's time
    layers: dict[Key, float] = field(default_factory=dict)
    tags: dict[tuple[str, str], Digest | None] = field(default_factory=dict)  # current target
    tag_history: dict[tuple[str, str], set[Digest]] = field(default_factory=dict)
    blobs: dict[Digest, tuple[float, int]] = field(default_factory=dict)  # time, size
    uses: dict[Key, float] = field(default_factory=dict)
    marks: dict[Key, float] = field(default_factory=dict)  # filled from an origin
    manifests: dict[Digest, Manifest | None] = field(default_factory=dict)  # None: unreadable
    staged: dict[str, float] = field(default_factory=dict)  # staged parts left behind

    @property
    def repositories(self) -> set[str]:
        return {name for name, _ in self.revisions} | {name for name, _ in self.tags}


def parse_digest(text: str | None) -> Digest | None:
    """The digest a key names, or None for a name that is no digest."""
    if text is None:
        return None
    with contextlib.suppress(DigestInvalid):
        return Digest.parse(text)
    return None


async def _each(items: list[T], read: Callable[[T], Awaitable[None]]) -> None:
    turns = asyncio.Semaphore(_READS_AT_ONCE)

    async def one(item: T) -> None:
        async with turns:
            await read(item)

    await asyncio.gather(*(one(item) for item in items))


async def read_inventory(store: DistributionStore) -> Inventory:
    """Raises BackendError."""
    backend, layout = store.backend, store.layout
    found = Inventory()
    for listed in await backend.walk_dated(layout.repositories()):
        entry = layout.repository_entry(listed.name)
        if entry is None:
            continue
        digest = parse_digest(entry.digest)
        if entry.kind == "tag" and entry.tag is not None:
            found.tags[(entry.name, entry.tag)] = None
        elif digest is None:
            continue
        elif entry.kind == "revision":
            found.revisions[(entry.name, digest)] = listed.modified
        elif entry.kind == "layer":
            found.layers[(entry.name, digest)] = listed.modified
        elif entry.kind == "tag-index" and entry.tag is not None:
            found.tag_history.setdefault((entry.name, entry.tag), set()).add(digest)
    for listed in await backend.walk_dated(layout.blobs()):
        blob = parse_digest(layout.blob_of(listed.name))
        if blob is not None:
            found.blobs[blob] = (listed.modified, listed.size)
    for prefix, into in ((layout.use_records(), found.uses), (layout.origin_marks(), found.marks)):
        for listed in await backend.walk_dated(prefix):
            named = layout.manifest_of(listed.name)
            digest = None if named is None else parse_digest(named[1])
            if named is not None and digest is not None:
                into[(named[0], digest)] = listed.modified
    for listed in await backend.walk_dated(layout.staging()):
        found.staged[layout.staging() + listed.name] = listed.modified

    async def tag_target(key: tuple[str, str]) -> None:
        found.tags[key] = await store.tag_target(*key)

    async def manifest(digest: Digest) -> None:
        found.manifests[digest] = await read_references(store, digest)

    await _each(list(found.tags), tag_target)
    await _each(sorted({digest for _, digest in found.revisions}, key=str), manifest)
    return found


async def read_references(store: DistributionStore, digest: Digest) -> Manifest | None:
    """What the manifest `digest` names, from the bucket; None if it is not
    there or is no manifest. Raises BackendError."""
    try:
        data = await store.read_blob(digest, MAX_MANIFEST_BYTES)
    except ObjectTooLarge:
        return None  # no manifest is that large
    return None if data is None else references(data)


def references(data: bytes) -> Manifest | None:
    """What a manifest's bytes name; None if they are no manifest."""
    try:
        info = inspect_manifest(data)
    except ManifestInvalid:
        return None
    return Manifest(
        frozenset(d.digest for d in info.manifests),
        frozenset(d.digest for d in info.blobs if not d.urls),
        None if info.subject is None else info.subject.digest,
    )
