"""What an origin that decides access holds, confirmed with the host's own credentials.

The bucket keeps a repository by its name alone: `team/app` filled from one
registry, pushed, or imported is one repository there, whatever registry a
client names with containerd's `?ns=`. When an origin decides who may pull a
repository (`authorize_at_origin`), a client it lets pull `team/app` must get
that origin's `team/app` and nothing else the bucket keeps under the name: so
a manifest or blob found in the bucket is served under such an origin only once
the origin confirms, asked with the host's own credentials, that its repository
holds that digest. A digest names its content for good, so a confirmation is
remembered (bounded, the oldest forgotten first); what this host fetched from
the origin itself is noted without asking.
"""

from __future__ import annotations

from typing import Literal

from ..lru import BoundedDict
from ..oci.digest import Digest
from .mapping import OriginRepo

__all__ = ["Holdings", "Kind"]

Kind = Literal["manifest", "blob"]
_CAPACITY = 200_000  # confirmations remembered


class Holdings:
    """Digests the deciding origins were seen to hold, per repository; see the
    module docstring."""

    def __init__(self, capacity: int = _CAPACITY) -> None:
        self._held: BoundedDict[tuple[str, str, str], bool] = BoundedDict(capacity)

    @staticmethod
    def applies(repo: OriginRepo | None) -> bool:
        """Whether `repo` is served by an origin that decides access."""
        return repo is not None and repo.origin.settings.authorize_at_origin

    def note(self, repo: OriginRepo, digest: Digest) -> None:
        """The origin handed this host the digest for this repository."""
        self._held.put(_key(repo, digest), True)

    async def holds(self, repo: OriginRepo, digest: Digest, kind: Kind) -> bool:
        """Whether the origin's repository holds the digest. Raises BackendError
        when the origin cannot be asked."""
        if self._held.get(_key(repo, digest)):
            return True
        if kind == "blob":
            held = await repo.origin.blob_size(repo.remote, digest) is not None
        else:
            held = await repo.origin.manifest(repo.remote, str(digest)) is not None
        if held:
            self.note(repo, digest)
        return held


def _key(repo: OriginRepo, digest: Digest) -> tuple[str, str, str]:
    return repo.origin.url, repo.remote, str(digest)
