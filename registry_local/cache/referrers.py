"""OCI 1.1 referrers: the manifests whose `subject` is a given manifest.

Where they are found:

- referrer links registry-local writes beside distribution's tree when a manifest
  with a subject is pushed or imported (layout.py, `_referrers/`), so every host
  sees what any host pushed;
- a scan of the repository's manifest revisions, for manifests with a subject
  that `registry:2` (or another writer) stored without such links. It is
  bounded: at most SCAN_LIMIT revisions, each manifest read once per host (then
  from the cache dir), the revision list re-listed at most once per --tag-ttl;
- for a repository mapped to an origin registry: the origin's referrers API, or
  its referrers tag schema (`<alg>-<hex>`) where it has no API.

Answers are kept for --tag-ttl; a push or delete on this host forgets the
subject's answer at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from ..backing.distribution import DistributionStore
from ..errors import BackendError, DigestMismatch, ManifestInvalid, ManifestUnknown
from ..kept import Kept
from ..oci.digest import Digest
from ..origin.mapping import OriginMap, OriginRepo
from .manifests import Manifest, ManifestCache

__all__ = ["SCAN_LIMIT", "Referrers", "descriptor_of", "subject_of"]

log = logging.getLogger(__name__)

SCAN_LIMIT = 10_000  # manifest revisions scanned per repository
_READS_AT_ONCE = 16
_ANSWERS = 4096
_SCANS = 256

Descriptors = list[dict[str, Any]]
Scan = dict[Digest, set[Digest]]  # subject -> manifests naming it


def descriptor_of(manifest: Manifest) -> dict[str, Any]:
    """The manifest as a referrers index lists it."""
    entry: dict[str, Any] = {
        "mediaType": manifest.media_type,
        "digest": str(manifest.digest),
        "size": len(manifest.data),
    }
    if manifest.info.artifact_type:
        entry["artifactType"] = manifest.info.artifact_type
    if manifest.info.annotations:
        entry["annotations"] = manifest.info.annotations
    return entry


class Referrers:
    """The referrers of a subject manifest, collected as the module docstring says and
    kept for --tag-ttl."""

    def __init__(
        self,
        store: DistributionStore,
        manifests: ManifestCache,
        origins: OriginMap,
        ttl: float,
    ) -> None:
        self._store = store
        self._manifests = manifests
        self._origins = origins
        self._answers: Kept[tuple[str, Digest], Descriptors] = Kept(ttl, _ANSWERS)
        self._scans: Kept[str, Scan] = Kept(ttl, _SCANS)

    async def of(self, name: str, subject: Digest, namespace: str | None = None) -> Descriptors:
        """Descriptors of the manifests referring to `subject`, sorted by digest.
        Raises BackendError."""
        return await self._answers.get(
            (name, subject), lambda: self._collect(name, subject, namespace)
        )

    def forget(self, name: str, subject: Digest) -> None:
        """A referrer of `subject` was pushed or deleted here."""
        self._answers.forget((name, subject))

    async def close(self) -> None:
        await self._answers.close()
        await self._scans.close()

    async def _collect(self, name: str, subject: Digest, namespace: str | None) -> Descriptors:
        repo = self._origins.repo_for(name, namespace)
        if repo is not None:
            return await _from_origin(repo, subject)
        linked, scan = await asyncio.gather(
            self._store.referrers(name, subject),
            self._scans.get(name, lambda: self._scan_now(name)),
        )
        turns = asyncio.Semaphore(_READS_AT_ONCE)

        async def referrer(digest: Digest) -> Manifest | None:
            async with turns:
                try:  # by_digest: a manifest deleted since is not linked any more
                    manifest = await self._manifests.by_digest(name, digest)
                except (ManifestUnknown, ManifestInvalid, DigestMismatch):
                    return None
            found = manifest.info.subject
            return manifest if found is not None and found.digest == subject else None

        candidates = sorted(set(linked) | scan.get(subject, set()), key=str)
        found = await asyncio.gather(*(referrer(d) for d in candidates))
        return [descriptor_of(m) for m in found if m is not None]

    async def _scan_now(self, name: str) -> Scan:
        revisions = await self._store.revisions(name)
        if len(revisions) > SCAN_LIMIT:
            log.warning(
                "%s has %d manifests: looking for referrers among the first %d only",
                name,
                len(revisions),
                SCAN_LIMIT,
                extra={"repository": name},
            )
            revisions = revisions[:SCAN_LIMIT]
        turns = asyncio.Semaphore(_READS_AT_ONCE)

        async def named(digest: Digest) -> Digest | None:
            async with turns:
                return await subject_of(self._manifests, digest)

        scan: Scan = {}
        subjects = await asyncio.gather(*(named(d) for d in revisions))
        for digest, subject in zip(revisions, subjects, strict=True):
            if subject is not None:
                scan.setdefault(subject, set()).add(digest)
        return scan


async def subject_of(manifests: ManifestCache, digest: Digest) -> Digest | None:
    """The subject the manifest names, if any; None too if it cannot be read."""
    try:
        manifest = await manifests.content(digest)
    except (ManifestUnknown, ManifestInvalid, DigestMismatch):
        return None
    return manifest.info.subject.digest if manifest.info.subject else None


async def _from_origin(repo: OriginRepo, subject: Digest) -> Descriptors:
    data = await repo.origin.referrers(repo.remote, subject)
    if data is None:
        return []
    try:
        entries = json.loads(data).get("manifests")
    except (ValueError, AttributeError):
        entries = None
    if not isinstance(entries, list):
        raise BackendError("GET", f"{repo.remote} referrers", "not an image index")
    valid = [e for e in entries if isinstance(e, dict) and isinstance(e.get("digest"), str)]
    return sorted(valid, key=lambda e: str(e["digest"]))
