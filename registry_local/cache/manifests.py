"""Manifests and tags.

A manifest by digest is immutable: once read from the backing store, verified
and committed to the cache dir, it is served from there for good (and from
memory while it is recent). A tag is mutable: its target is trusted for the tag
TTL, then revalidated against the backing store; if the store fails then, the
last known target is served (stale-if-error) and counted.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ..backing.distribution import DistributionStore
from ..disk.learned import Learned, TagRecord
from ..disk.store import DiskStore
from ..errors import (
    BackendError,
    DigestMismatch,
    ManifestInvalid,
    ManifestUnknown,
    NameUnknown,
    ObjectTooLarge,
)
from ..fleet.coordination import Fleet
from ..lru import BoundedDict
from ..oci.digest import Digest
from ..oci.mediatypes import MAX_MANIFEST_BYTES, ManifestInfo, inspect_manifest
from ..origin.holdings import Holdings
from ..origin.mapping import OriginMap, OriginRepo
from ..retention.records import RetentionRecords
from ..singleflight import SingleFlight
from ..telemetry.logs import error_fields
from ..telemetry.metrics import LookupRecorder, OriginRecorder
from ..telemetry.writes import write_failed
from .links import LinkCache, once_linked

__all__ = ["Manifest", "ManifestCache"]

log = logging.getLogger(__name__)

_MEMO_BYTES = 64 * 1024 * 1024
_TAG_ENTRIES = 100_000


@dataclass(frozen=True, slots=True)
class Manifest:
    """A manifest's digest, its bytes, and what they say (media type, references)."""

    digest: Digest
    data: bytes
    info: ManifestInfo

    @property
    def media_type(self) -> str:
        return self.info.media_type


class ManifestCache:
    """Manifests by digest and tags by name, from the cache dir, the backing store or an
    origin registry; see the module docstring."""

    def __init__(
        self,
        store: DistributionStore,
        disk: DiskStore,
        learned: Learned,
        links: LinkCache,
        tag_ttl: float,
        lookup_metrics: LookupRecorder,
        origin_metrics: OriginRecorder,
        origins: OriginMap | None = None,
        fleet: Fleet | None = None,
        records: RetentionRecords | None = None,
        holdings: Holdings | None = None,
    ) -> None:
        self._origins = origins or OriginMap()
        # With access control: what the bucket keeps under a name is served
        # under an origin that decides only once it holds it (origin/holdings.py).
        self._holdings = holdings
        self._fleet = fleet
        self._records = records
        self._store = store
        self._disk = disk
        self._learned = learned
        self._links = links
        self._tag_ttl = tag_ttl
        self._lookup_metrics = lookup_metrics
        self._origin_metrics = origin_metrics
        self._memo: BoundedDict[Digest, Manifest] = BoundedDict(_MEMO_BYTES, lambda m: len(m.data))
        self._tags: BoundedDict[tuple[str, str], TagRecord] = BoundedDict(_TAG_ENTRIES)
        self._content_flights: SingleFlight[Digest, Manifest] = SingleFlight()
        # Keyed by repository too: fetching from an origin also links the
        # manifest into that repository, which a read of the bucket does not.
        self._origin_flights: SingleFlight[tuple[str, Digest], Manifest] = SingleFlight()
        self._tag_flights: SingleFlight[tuple[str, str], Digest | None] = SingleFlight()
        self._list_flights: SingleFlight[str, list[str] | None] = SingleFlight()

    async def by_digest(self, name: str, digest: Digest, namespace: str | None = None) -> Manifest:
        """The manifest, if the repository links it (or its origin registry has
        it), its use noted for `gc`. Raises ManifestUnknown; `namespace` is
        containerd's ?ns=."""
        manifest = await self._by_digest(name, digest, namespace)
        if self._records is not None:
            self._records.served(name, digest)
        return manifest

    async def _by_digest(self, name: str, digest: Digest, namespace: str | None) -> Manifest:
        repo = self._origins.repo_for(name, namespace)
        if repo is None and not self._links.known_manifest(name, digest):
            # The revision link and the manifest's bytes are read together; the
            # manifest is handed out only once the link is confirmed.
            return await once_linked(
                self._links.manifest_linked(name, digest),
                self.content(digest),
                lambda: ManifestUnknown(detail={"digest": str(digest)}),
            )
        # Known here (the warm path: nothing to check), or linked in the bucket.
        if self._links.known_manifest(name, digest) or await self._links.manifest_linked(
            name, digest
        ):
            try:
                manifest = await self.content(digest)
            except ManifestUnknown:
                if repo is None:
                    raise
                # Gone from the bucket since it was learned (gc): ask the origin.
                await self._links.forget_manifest(name, digest)
            else:
                if not await self._vouched(repo, digest):
                    raise ManifestUnknown(detail={"digest": str(digest)})
                return manifest
        assert repo is not None
        origin = repo
        return await self._origin_flights.run(
            (name, digest), lambda: self._fetch_from_origin(origin, name, digest)
        )

    async def by_tag(self, name: str, tag: str, namespace: str | None = None) -> Manifest:
        digest = await self.resolve_tag(name, tag, namespace)
        return await self.by_digest(name, digest, namespace)

    async def content(self, digest: Digest) -> Manifest:
        """A manifest's bytes, from memory, the cache dir, or the backing store."""
        manifest = self._memo.get(digest)
        if manifest is None:
            data = await self._disk.read_manifest(digest)
            if data is not None:
                manifest = Manifest(digest, data, inspect_manifest(data))
                self._memo.put(digest, manifest)
        if manifest is not None:
            self._lookup_metrics.hit("manifest")
            return manifest
        self._lookup_metrics.miss("manifest", joined=self._content_flights.running(digest))
        return await self._content_flights.run(digest, lambda: self._fetch(digest))

    async def _fetch(self, digest: Digest) -> Manifest:
        try:
            data = await self._store.read_blob(digest, MAX_MANIFEST_BYTES)
        except ObjectTooLarge:
            raise ManifestInvalid("manifest larger than 4 MiB") from None
        if data is None:
            raise ManifestUnknown(detail={"digest": str(digest)})
        actual = Digest.of(data, digest.algorithm)
        if actual != digest:
            raise DigestMismatch(str(digest), str(actual))
        manifest = Manifest(digest, data, inspect_manifest(data))
        await self._disk.write_manifest(digest, data)
        self._memo.put(digest, manifest)
        return manifest

    async def resolve_tag(self, name: str, tag: str, namespace: str | None = None) -> Digest:
        """The tag's target, trusted for the TTL. Raises ManifestUnknown."""
        key = (name, tag)
        record = self._tags.get(key)
        if record is None:
            record = await self._learned.tag(name, tag)
            if record is not None:
                self._tags.put(key, record)
        if record is not None and time.time() - record.checked_at < self._tag_ttl:
            self._lookup_metrics.hit("tag")
            return record.digest
        self._lookup_metrics.miss("tag", joined=self._tag_flights.running(key))
        try:
            repo = self._origins.repo_for(name, namespace)
            digest = await self._tag_flights.run(
                key, lambda: self._revalidate(name, tag, record, repo)
            )
        except BackendError as exc:
            if record is None:
                raise
            self._lookup_metrics.stale_served("tag")
            log.warning(
                "serving last known %s:%s, backing store failed: %s",
                name,
                tag,
                exc,
                extra={"repository": name, "tag": tag, **error_fields(exc)},
            )
            return record.digest
        if digest is None:
            raise ManifestUnknown(detail={"tag": tag})
        return digest

    async def _revalidate(
        self, name: str, tag: str, known: TagRecord | None, repo: OriginRepo | None = None
    ) -> Digest | None:
        try:
            digest = None
            if repo is not None:
                digest = await self._tag_from_origin(repo, name, tag)
            if digest is None and not self._decided(repo):
                # No origin, or it does not know the tag: the bucket's (but not
                # under an origin that decides: the name may be another's there).
                digest = await self._store.tag_target(name, tag)
        except BackendError:
            self._lookup_metrics.tag_revalidated("error")
            raise
        if digest is None:
            self._lookup_metrics.tag_revalidated("removed")
            self._tags.pop((name, tag))
            await self._learned.forget_tag(name, tag)
            return None
        changed = known is None or known.digest != digest
        self._lookup_metrics.tag_revalidated("changed" if changed else "unchanged")
        self._tags.put((name, tag), await self._learned.remember_tag(name, tag, digest))
        return digest

    # -- an origin registry behind the bucket (origin/mapping.py) ---------------------

    async def _tag_from_origin(self, repo: OriginRepo, name: str, tag: str) -> Digest | None:
        """The tag's target at the origin, written through to the bucket; None if
        the origin has no such tag. Another host asked the origin less than a TTL
        ago and wrote its answer through: take it from the bucket, so the origin
        is asked about a tag once per TTL. With a fleet, hosts asking at the same
        moment wait for the one that holds the tag's lease."""
        fresh = await self._fresh_tag(name, tag)
        if fresh is not None:
            return fresh
        if self._fleet is None:
            return await self._ask_origin_for_tag(repo, name, tag)
        return await self._fleet.once(
            self._store.layout.tag_lease(name, tag),
            lambda: self._ask_origin_for_tag(repo, name, tag),
            lambda: self._fresh_tag(name, tag),
        )

    async def _fresh_tag(self, name: str, tag: str) -> Digest | None:
        """The bucket's tag, if a host wrote it less than a TTL ago."""
        with contextlib.suppress(BackendError):
            written = await self._store.tag_written(name, tag)
            if written is not None and time.time() - written < self._tag_ttl:
                return await self._store.tag_target(name, tag)
        return None

    async def _ask_origin_for_tag(self, repo: OriginRepo, name: str, tag: str) -> Digest | None:
        try:
            found = await repo.origin.manifest(repo.remote, tag)
        except BackendError as exc:
            # The origin is down: the bucket's tag (a host's last answer), if any.
            digest = await self._store.tag_target(name, tag)
            if digest is None:
                raise
            self._lookup_metrics.stale_served("tag")
            log.warning(
                "origin failed for %s:%s, serving the bucket's tag: %s",
                name,
                tag,
                exc,
                extra={"repository": name, "tag": tag, **error_fields(exc)},
            )
            return digest
        if found is None:
            return None
        data, _, digest = found
        await self._keep_from_origin(name, digest, data, tag)
        self._noted(repo, digest)
        return digest

    async def _fetch_from_origin(self, repo: OriginRepo, name: str, digest: Digest) -> Manifest:
        if self._fleet is None:
            return await self._ask_origin_for_manifest(repo, name, digest)
        return await self._fleet.once(
            self._store.layout.manifest_lease(digest),
            lambda: self._ask_origin_for_manifest(repo, name, digest),
            lambda: self._linked_in_bucket(name, digest),
        )

    async def _linked_in_bucket(self, name: str, digest: Digest) -> Manifest | None:
        """The manifest from the bucket, if another host wrote it and linked it
        into this repository."""
        if not await self._store.manifest_linked(name, digest):
            return None
        manifest = await self._fetch(digest)
        await self._links.learned_manifest(name, digest)
        return manifest

    async def _ask_origin_for_manifest(
        self, repo: OriginRepo, name: str, digest: Digest
    ) -> Manifest:
        found = await repo.origin.manifest(repo.remote, str(digest))
        if found is None:
            raise ManifestUnknown(detail={"digest": str(digest)})
        self._noted(repo, digest)
        return await self._keep_from_origin(name, digest, found[0], None)

    def _decided(self, repo: OriginRepo | None) -> bool:
        """`repo`'s origin decides access, and the cache serves it only what it holds."""
        return self._holdings is not None and Holdings.applies(repo)

    async def _vouched(self, repo: OriginRepo | None, digest: Digest) -> bool:
        """No origin decides `repo`, or the one that does holds the manifest."""
        if repo is None or self._holdings is None or not Holdings.applies(repo):
            return True
        return await self._holdings.holds(repo, digest, "manifest")

    def _noted(self, repo: OriginRepo, digest: Digest) -> None:
        if self._holdings is not None:
            self._holdings.note(repo, digest)

    async def _keep_from_origin(
        self, name: str, digest: Digest, data: bytes, tag: str | None
    ) -> Manifest:
        """Commit a verified manifest from the origin here, then write it (and
        the tag) through to the bucket: content before the links that name it."""
        manifest = Manifest(digest, data, inspect_manifest(data))
        self._origin_metrics.fetched("manifest")
        await self.learned(manifest, name, () if tag is None else (tag,))
        await self._links.learned_manifest(name, digest)
        try:
            await self._store.put_blob(digest, data)
            if self._records is not None:
                await self._records.from_origin(name, digest)
            await self._store.link_manifest(name, digest)
            self._origin_metrics.written_through("manifest")
            if tag is not None:
                await self._store.tag(name, tag, digest)
                self._origin_metrics.written_through("tag")
        except BackendError as exc:
            write_failed(self._origin_metrics, name, digest, exc)
        return manifest

    async def learned(self, manifest: Manifest, name: str, tags: Sequence[str] = ()) -> None:
        """This host just stored the manifest (and tagged it) in the backing store."""
        await self._disk.write_manifest(manifest.digest, manifest.data)
        self._memo.put(manifest.digest, manifest)
        for tag in tags:
            self._tags.put(
                (name, tag), await self._learned.remember_tag(name, tag, manifest.digest)
            )

    async def forget_tag(self, name: str, tag: str) -> None:
        """This host just removed the tag from the backing store."""
        self._tags.pop((name, tag))
        await self._learned.forget_tag(name, tag)

    async def tags(self, name: str, namespace: str | None = None) -> list[str]:
        """All tags of a repository, sorted: the bucket's, or under an origin that
        decides access, the origin's own (the bucket's name may be another
        registry's). Raises NameUnknown."""
        repo = self._origins.repo_for(name, namespace)
        if repo is not None and self._holdings is not None and Holdings.applies(repo):
            tags = await repo.origin.tags(repo.remote)
            if tags is None:
                raise NameUnknown(detail={"name": name})
            return tags
        tags = await self._list_flights.run(name, lambda: self._store.tags(name))
        if tags is None:
            raise NameUnknown(detail={"name": name})
        return tags

    async def close(self) -> None:
        for flights in (
            self._content_flights,
            self._origin_flights,
            self._tag_flights,
            self._list_flights,
        ):
            await flights.close()
