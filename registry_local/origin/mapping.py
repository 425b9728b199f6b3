"""Origin registries behind the bucket: which one serves a name.

With `--upstream` (or the config file's `upstreams`), a manifest, tag or blob
that the bucket does not have is fetched from an origin registry, once per host
(the same single-flight fill, streamed to every joiner), verified, and written
through to the bucket in distribution's layout, links included, so other hosts
and `registry:2` find it there. This module only routes: the caches
(cache/sources.py decides where a blob comes from; cache/manifests.py fetches
manifests and tags) do the fetching and writing.

A mapping matches a request when its `match` is `*`, equals the registry host
containerd names with `?ns=` (e.g. `docker.io`), or is the first component of
the repository name (`ghcr.io/org/app`): then that component is dropped from
the name asked of the origin. Mappings are tried in order.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from ..backing.backend import ObjectStream
from ..config import OriginSettings
from ..oci.digest import Digest
from .client import Origin, open_origin

__all__ = ["OriginMap", "OriginRepo", "open_origin_map"]


@dataclass(frozen=True)
class OriginRepo:
    """One repository at an origin; also where fills read its blobs (fill/sources.py)."""

    origin: Origin
    remote: str  # the repository's name at the origin

    async def open_blob(
        self, digest: Digest, offset: int = 0, end: int | None = None
    ) -> ObjectStream | None:
        return await self.origin.open_blob(self.remote, digest, offset, end)


class OriginMap:
    """The configured origin mappings, in order: which origin serves a repository name."""

    def __init__(self, origins: Sequence[Origin] = ()) -> None:
        self._origins = list(origins)

    def __bool__(self) -> bool:
        return bool(self._origins)

    def repo_for(self, name: str, namespace: str | None) -> OriginRepo | None:
        """The origin that serves a repository, or None (the bucket alone does)."""
        chosen = self._choose(name, namespace)
        return None if chosen is None else chosen[0]

    def chosen_by_namespace(self, name: str, namespace: str | None) -> bool:
        """Whether containerd's `?ns=` is what picked the repository's origin
        (a mapping of `*`, or one matched by the name's first part, ignores it):
        then answers echo it in `OCI-Namespace`, as the spec asks of a proxy."""
        chosen = self._choose(name, namespace)
        return chosen is not None and chosen[1]

    def _choose(self, name: str, namespace: str | None) -> tuple[OriginRepo, bool] | None:
        """The first mapping that matches, and whether `namespace` made it match."""
        for origin in self._origins:
            match = origin.settings.match
            if match == "*" or match == namespace:
                return OriginRepo(origin, name), match != "*"
            first, sep, rest = name.partition("/")
            if sep and first == match:
                return OriginRepo(origin, rest), False
        return None


@contextlib.asynccontextmanager
async def open_origin_map(settings: Sequence[OriginSettings]) -> AsyncIterator[OriginMap]:
    async with contextlib.AsyncExitStack() as stack:
        origins = [await stack.enter_async_context(open_origin(s)) for s in settings]
        yield OriginMap(origins)
