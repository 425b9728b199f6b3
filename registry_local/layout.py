"""The only module that builds storage keys and cache paths.

The backing store (an S3 bucket, or a directory for the embedded default) holds
exactly the tree that distribution's storage drivers write, under an optional
root prefix, so a bucket written by `registry:2` is served as it is and what we
write is readable by `registry:2`:

    <prefix>/docker/registry/v2/
        blobs/<alg>/<hex[0:2]>/<hex>/data                     all content, manifests too
        repositories/<name>/
            _layers/<alg>/<hex>/link                           the repository links a blob
            _manifests/revisions/<alg>/<hex>/link              ... a manifest
            _manifests/tags/<tag>/current/link                 what the tag points at now
            _manifests/tags/<tag>/index/<alg>/<hex>/link       every digest it pointed at
            _uploads/<id>/...                                  upload sessions (push)
            _referrers/<alg>/<hex>/<alg>/<hex>/link            registry-local's: a manifest
                                                               whose subject is the first
                                                               digest (OCI 1.1 referrers)

A link's body is the digest, `sha256:<hex>`, with no newline.

`_referrers/` is ours: distribution has no settled referrers layout (its
proposals were never merged), and `registry:2` skips directories starting with
`_` inside a repository when it walks them (catalog, garbage collection), so it
ignores these links. A referrer link's body is the referring manifest's digest.

Beside distribution's tree, under the same prefix, registry-local keeps the
leases hosts coordinate through (fleet/leases.py). `registry:2` and its garbage
collector only walk `docker/registry/v2/`, so they never see them:

    <prefix>/registry-local/
        leases/blobs/<alg>/<hex>                         one host reads this blob
        leases/manifests/<alg>/<hex>                     ... this manifest
        leases/tags/<name>/<tag>                         ... resolves this tag
        staging/blobs/<alg>/<hex>/<start>-<end>          part of a blob the lease holder
                                                         is reading from an origin, staged
                                                         while it fills (16 hex digits each)
        probes/<uuid>                                    conditional-write probe at start
        probes/<uuid>/probe                              how the store lists emptied prefixes
        leases/gc                                        one `registry-local gc` at a time
        uses/<name>/<alg>/<hex>                          a host served this manifest of the
                                                         repository: the object's time is
                                                         the last use noted (retention/)
        origin/<name>/<alg>/<hex>                        the manifest was filled from an
                                                         origin: gc may remove it unused

A lease's body is JSON: the holder's peer URL, its host id, the lease's
time to live and a renewal count.

The cache dir is this host's own, content-addressed and rebuilt from the backing
store whenever it is lost:

    <cache-dir>/
        blobs/<alg>/<hex[0:2]>/<hex>                committed blobs, named by digest;
                                                    mtime = last access (for LRU)
        manifests/<alg>/<hex[0:2]>/<hex>            committed manifests, likewise
        tmp/<pid>.<random>.part                     fills in progress; removed at start
                                                    once the process <pid> is gone
        quarantine/<alg>-<hex>                      blobs `verify --repair` set aside
        uploads/<uuid>/data, info.json              push sessions; kept across restarts
                                                    until they expire
        repositories/<name>/
            _layers/<alg>/<hex>                      marker: the bucket links this blob
            _manifests/<alg>/<hex>                   marker: ... this manifest
            _tags/<tag>                              the tag's digest; mtime = last check

Temp files live outside `blobs/` so a half-written file is never reachable by a
blob path. Names and tags arrive validated (reference.py), so no component built
here can be empty or `..`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from .errors import DigestInvalid
from .oci.digest import Digest

__all__ = ["BucketLayout", "CacheLayout", "RepositoryEntry"]

_V2 = "docker/registry/v2"
_OWN = "registry-local"  # our own keys, outside distribution's tree


@dataclass(frozen=True, slots=True)
class RepositoryEntry:
    """A link in a repository's tree, as BucketLayout.repository_entry reads it."""

    name: str  # the repository
    kind: str  # "layer", "revision", "tag" (its current link) or "tag-index"
    digest: str | None  # "<alg>:<hex>" the key names (None for a tag's current link)
    tag: str | None = None


@dataclass(frozen=True, slots=True)
class BucketLayout:
    """Keys of distribution's tree under a root prefix ("" for none)."""

    prefix: str = ""

    def _key(self, path: str) -> str:
        root = self.prefix.strip("/")
        return f"{root}/{_V2}/{path}" if root else f"{_V2}/{path}"

    def blob_data(self, digest: Digest) -> str:
        return self._key(f"blobs/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}/data")

    def repositories(self) -> str:
        return self._key("repositories/")

    def repository(self, name: str) -> str:
        return self._key(f"repositories/{name}/")

    def layer_link(self, name: str, digest: Digest) -> str:
        return self._key(f"repositories/{name}/_layers/{digest.algorithm}/{digest.hex}/link")

    def revision_link(self, name: str, digest: Digest) -> str:
        return self._key(
            f"repositories/{name}/_manifests/revisions/{digest.algorithm}/{digest.hex}/link"
        )

    def revisions_dir(self, name: str) -> str:
        return self._key(f"repositories/{name}/_manifests/revisions/")

    def referrers_dir(self, name: str, subject: Digest, algorithm: str | None = None) -> str:
        tail = f"{algorithm}/" if algorithm else ""
        return self._key(f"repositories/{name}/_referrers/{subject.algorithm}/{subject.hex}/{tail}")

    def referrer_link(self, name: str, subject: Digest, referrer: Digest) -> str:
        return self.referrers_dir(name, subject, referrer.algorithm) + f"{referrer.hex}/link"

    def tags_dir(self, name: str) -> str:
        return self._key(f"repositories/{name}/_manifests/tags/")

    def blobs(self) -> str:
        return self._key("blobs/")

    @staticmethod
    def blob_of(key: str) -> str | None:
        """ "<alg>:<hex>" of a key under `blobs()` (<alg>/<xx>/<hex>/data), or None."""
        parts = key.split("/")
        if len(parts) != 4 or parts[3] != "data" or not parts[2].startswith(parts[1]):
            return None
        return f"{parts[0]}:{parts[2]}"

    @staticmethod
    def repository_entry(key: str) -> RepositoryEntry | None:
        """What a key under `repositories()` is: a layer link, a revision link,
        a tag's current or index link (with the repository's name); None for
        anything else (uploads, referrers, keys of other shapes)."""
        head, sep, rest = key.partition("/_")
        if not sep or not head:
            return None
        parts = ("_" + rest).split("/")
        if parts[-1] != "link":
            return None
        if parts[0] == "_layers" and len(parts) == 4:
            return RepositoryEntry(head, "layer", f"{parts[1]}:{parts[2]}")
        if parts[0] != "_manifests":
            return None
        if parts[1] == "revisions" and len(parts) == 5:
            return RepositoryEntry(head, "revision", f"{parts[2]}:{parts[3]}")
        if parts[1] == "tags" and len(parts) == 5 and parts[3] == "current":
            return RepositoryEntry(head, "tag", None, parts[2])
        if parts[1] == "tags" and len(parts) == 7 and parts[3] == "index":
            return RepositoryEntry(head, "tag-index", f"{parts[4]}:{parts[5]}", parts[2])
        return None

    def tag_dir(self, name: str, tag: str) -> str:
        return self._key(f"repositories/{name}/_manifests/tags/{tag}/")

    def tag_current_link(self, name: str, tag: str) -> str:
        return self._key(f"repositories/{name}/_manifests/tags/{tag}/current/link")

    def _own(self, path: str) -> str:
        root = self.prefix.strip("/")
        return f"{root}/{_OWN}/{path}" if root else f"{_OWN}/{path}"

    def blob_lease(self, digest: Digest) -> str:
        return self._own(f"leases/blobs/{digest.algorithm}/{digest.hex}")

    def manifest_lease(self, digest: Digest) -> str:
        return self._own(f"leases/manifests/{digest.algorithm}/{digest.hex}")

    def tag_lease(self, name: str, tag: str) -> str:
        return self._own(f"leases/tags/{name}/{tag}")

    def staging(self) -> str:
        """Where every blob's staged parts are."""
        return self._own("staging/")

    def staged_parts(self, digest: Digest) -> str:
        """The "directory" of a blob's staged parts."""
        return self._own(f"staging/blobs/{digest.algorithm}/{digest.hex}/")

    def staged_part(self, digest: Digest, start: int, end: int) -> str:
        """Bytes [start, end) of a blob, staged (names sort by offset)."""
        return self.staged_parts(digest) + f"{start:016x}-{end:016x}"

    @staticmethod
    def staged_span(name: str) -> tuple[int, int] | None:
        """The [start, end) a staged part's name (under `staged_parts`) holds."""
        start, sep, end = name.partition("-")
        if not sep or len(start) != 16 or len(end) != 16:
            return None
        try:
            return int(start, 16), int(end, 16)
        except ValueError:
            return None

    def gc_lease(self) -> str:
        return self._own("leases/gc")

    def use_record(self, name: str, digest: Digest) -> str:
        return self.use_records() + f"{name}/{digest.algorithm}/{digest.hex}"

    def use_records(self) -> str:
        return self._own("uses/")

    def origin_mark(self, name: str, digest: Digest) -> str:
        return self.origin_marks() + f"{name}/{digest.algorithm}/{digest.hex}"

    def origin_marks(self) -> str:
        return self._own("origin/")

    @staticmethod
    def manifest_of(key: str) -> tuple[str, str] | None:
        """(repository, "<alg>:<hex>") of a key under `use_records` or
        `origin_marks`, or None for a key of another shape."""
        name, _, rest = key.rpartition("/")
        repository, _, algorithm = name.rpartition("/")
        if not repository or not algorithm or not rest:
            return None
        return repository, f"{algorithm}:{rest}"

    def probe(self, token: str) -> str:
        return self._own(f"probes/{token}")

    def probes(self) -> str:
        """Where a backend may write and delete probes of its own."""
        return self._own("probes/")

    @staticmethod
    def is_repository(children: list[str]) -> bool:
        """Whether a directory under repositories/ with these (non-empty)
        children is a repository: one that links a manifest or has a tag."""
        return "_manifests" in children

    @staticmethod
    def tag_of(key: str) -> str | None:
        """The tag whose current link a key under `tags_dir` is, or None: a tag
        exists while its current link does."""
        tag, sep, rest = key.partition("/")
        return tag if sep and rest == "current/link" else None

    def tag_index_link(self, name: str, tag: str, digest: Digest) -> str:
        return self._key(
            f"repositories/{name}/_manifests/tags/{tag}/index/{digest.algorithm}/{digest.hex}/link"
        )


@dataclass(frozen=True, slots=True)
class CacheLayout:
    """Paths under the cache dir."""

    root: Path

    @property
    def blobs_dir(self) -> Path:
        return self.root / "blobs"

    @property
    def manifests_dir(self) -> Path:
        return self.root / "manifests"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    def quarantined(self, digest: Digest) -> Path:
        return self.quarantine_dir / f"{digest.algorithm}-{digest.hex}"

    @property
    def repositories_dir(self) -> Path:
        return self.root / "repositories"

    @property
    def uploads_dir(self) -> Path:
        return self.root / "uploads"

    def upload_dir(self, upload_id: str) -> Path:
        return self.uploads_dir / upload_id

    def blob(self, digest: Digest) -> Path:
        return self.blobs_dir / digest.algorithm / digest.hex[:2] / digest.hex

    def manifest(self, digest: Digest) -> Path:
        return self.manifests_dir / digest.algorithm / digest.hex[:2] / digest.hex

    def digest_of_content_path(self, path: Path) -> Digest | None:
        """The digest a path under blobs/ or manifests/ stands for, or None."""
        for top in (self.blobs_dir, self.manifests_dir):
            with contextlib.suppress(ValueError):
                return self._digest_of(path.relative_to(top).parts)
        return None

    def _digest_of(self, relative: tuple[str, ...]) -> Digest | None:
        if len(relative) != 3 or relative[2][:2] != relative[1]:
            return None
        try:
            return Digest.parse(f"{relative[0]}:{relative[2]}")
        except DigestInvalid:
            return None

    def layer_markers(self, name: str) -> Path:
        return self.repositories_dir / name / "_layers"

    def manifest_markers(self, name: str) -> Path:
        return self.repositories_dir / name / "_manifests"

    def tag_files(self, name: str) -> Path:
        return self.repositories_dir / name / "_tags"

    def layer_marker(self, name: str, digest: Digest) -> Path:
        return self.layer_markers(name) / digest.algorithm / digest.hex

    def manifest_marker(self, name: str, digest: Digest) -> Path:
        return self.manifest_markers(name) / digest.algorithm / digest.hex

    def tag_file(self, name: str, tag: str) -> Path:
        return self.tag_files(name) / tag

    def cached_repository_names(self) -> list[str]:
        """Names of the repositories with markers or tag records, sorted."""
        root = self.repositories_dir
        names = {
            holder.parent.relative_to(root)
            for kind in ("_layers", "_manifests", "_tags")
            for holder in root.rglob(kind)
        }
        # Names never start with "_": a tag record that does (`_tags/_layers`) is no repository.
        return sorted(n.as_posix() for n in names if not any(p.startswith("_") for p in n.parts))
