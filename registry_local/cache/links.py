"""Which repository may serve which content, as the backing store's links say.

distribution serves a blob or manifest for a repository only if that repository
links it; so do we. A link, once seen, is remembered on disk for good (content
links are only removed by deleting an image, and then the content is gone too);
a missing link is remembered in memory for a short while only, so a push made
through another host shows up within that time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..backing.distribution import DistributionStore
from ..disk.learned import Learned
from ..errors import RegistryError
from ..lru import BoundedDict
from ..oci.digest import Digest
from ..singleflight import SingleFlight

__all__ = ["LinkCache", "once_linked"]

T = TypeVar("T")

_NEGATIVE_ENTRIES = 10_000


class LinkCache:
    """Whether a repository links a blob or manifest: learned links from disk, missing
    ones remembered briefly, one backing-store lookup per question in flight."""

    def __init__(self, store: DistributionStore, learned: Learned, negative_ttl: float) -> None:
        self._store = store
        self._learned = learned
        self._negative_ttl = negative_ttl
        self._absent: BoundedDict[tuple[str, str, Digest], float] = BoundedDict(_NEGATIVE_ENTRIES)
        self._flights: SingleFlight[tuple[str, str, Digest], bool] = SingleFlight()

    def known_blob(self, name: str, digest: Digest) -> bool:
        """Linked for sure, from memory alone (no I/O): the warm path."""
        return self._learned.knows_now(False, name, digest)

    def known_manifest(self, name: str, digest: Digest) -> bool:
        return self._learned.knows_now(True, name, digest)

    async def blob_linked(self, name: str, digest: Digest) -> bool:
        if await self._learned.knows_blob_link(name, digest):
            return True
        return await self._ask("blob", name, digest)

    async def manifest_linked(self, name: str, digest: Digest) -> bool:
        if await self._learned.knows_manifest_link(name, digest):
            return True
        return await self._ask("manifest", name, digest)

    async def _ask(self, kind: str, name: str, digest: Digest) -> bool:
        key = (kind, name, digest)
        expires = self._absent.get(key)
        if expires is not None and expires > time.monotonic():
            return False
        return await self._flights.run(key, lambda: self._look_up(kind, name, digest))

    async def _look_up(self, kind: str, name: str, digest: Digest) -> bool:
        key = (kind, name, digest)
        if kind == "blob":
            linked = await self._store.blob_linked(name, digest)
            if linked:
                await self._learned.remember_blob_link(name, digest)
        else:
            # distribution also finds manifests through a `_layers` link (old buckets).
            linked = await self._store.manifest_linked(name, digest) or (
                await self._store.blob_linked(name, digest)
            )
            if linked:
                await self._learned.remember_manifest_link(name, digest)
        if linked:
            self._absent.pop(key)
        else:
            self._absent.put(key, time.monotonic() + self._negative_ttl)
        return linked

    async def learned_blob(self, name: str, digest: Digest) -> None:
        """This host just linked the blob in the backing store (a push)."""
        await self._learned.remember_blob_link(name, digest)
        self._absent.pop(("blob", name, digest))

    async def learned_manifest(self, name: str, digest: Digest) -> None:
        await self._learned.remember_manifest_link(name, digest)
        self._absent.pop(("manifest", name, digest))

    async def forget_blob(self, name: str, digest: Digest) -> None:
        """This host just removed the link (a delete)."""
        await self._learned.forget_blob_link(name, digest)
        self._absent.put(("blob", name, digest), time.monotonic() + self._negative_ttl)

    async def forget_manifest(self, name: str, digest: Digest) -> None:
        await self._learned.forget_manifest_link(name, digest)
        self._absent.put(("manifest", name, digest), time.monotonic() + self._negative_ttl)

    async def close(self) -> None:
        await self._flights.close()


async def once_linked(
    linked: Awaitable[bool],
    work: Awaitable[T],
    unknown: Callable[[], RegistryError],
    discard: Callable[[T], None] = lambda _: None,
) -> T:
    """`work`'s result, run while the link check `linked` runs too, handed out
    only once the link is confirmed: else `discard` it and raise `unknown()`.
    When `work` fails, an unlinked answer wins (the client hears "unknown", not
    the failure); when the check fails, `work`'s own error wins."""
    check = asyncio.ensure_future(linked)
    try:
        result = await work
    except asyncio.CancelledError:
        check.cancel()
        raise
    except Exception:
        try:
            confirmed = await check
        except Exception:
            confirmed = True
        if not confirmed:
            raise unknown() from None
        raise
    try:
        confirmed = await check
    except BaseException:
        discard(result)
        raise
    if not confirmed:
        discard(result)
        raise unknown()
    return result
