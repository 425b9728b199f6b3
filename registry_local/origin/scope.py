"""Which registries this cache answers for, by the registry containerd names.

containerd appends `?ns=<registry>` to every request it sends a mirror. With
registry-local as containerd's `_default` mirror every registry's pulls arrive
here, and a registry the cache has nothing for must be refused at once (404),
so that containerd goes to that registry itself without waiting on the bucket,
and so that a name in the bucket is never served for the same name at another
registry (`quay.io/org/app` is not `docker.io/org/app`).

A registry is served when an upstream entry matches it (its origin fills the
bucket), when `--bucket-registries` lists it (the bucket holds its images
without an origin: pushed or imported), or when either says `*` (the default
of `--bucket-registries`: every registry, as before this setting existed). A
request without `ns` (dockerd, podman, skopeo, a pull of the cache's own
address) names no other registry and is always served.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import StoreSettings

__all__ = ["RegistryScope"]

EVERY = "*"


@dataclass(frozen=True)
class RegistryScope:
    """The registries this cache answers for, by containerd's `?ns=`; see the module
    docstring."""

    origins: frozenset[str]  # the upstream entries' `match`
    bucket: frozenset[str]  # --bucket-registries

    @classmethod
    def of(cls, store: StoreSettings) -> RegistryScope:
        return cls(
            frozenset(origin.match for origin in store.upstreams),
            frozenset(store.bucket_registries),
        )

    @property
    def everything(self) -> bool:
        """Every registry is served: no request is refused for its `ns`."""
        return EVERY in self.origins or EVERY in self.bucket

    def serves(self, namespace: str | None) -> bool:
        return (
            namespace is None
            or self.everything
            or namespace in self.origins
            or namespace in self.bucket
        )
