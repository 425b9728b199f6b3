"""Manifest media types: recognising a manifest, and Accept negotiation.

The rules follow distribution's manifest handler, so engines see the same answers
from us as from `registry:2`:

- a Docker schema2 manifest is served whatever the client accepts;
- an OCI manifest or index (and a legacy schema1 manifest) only to a client that
  lists its type in Accept, otherwise MANIFEST_UNKNOWN;
- a Docker manifest list asked for by tag by a client that does not accept lists
  is answered with its linux/amd64 image manifest; asked for by digest, it is served.

We also treat `*/*` as accepting everything (curl sends it by default).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import DigestInvalid, ManifestInvalid
from .digest import Digest

__all__ = [
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "MANIFEST_MEDIA_TYPES",
    "MAX_MANIFEST_BYTES",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "SCHEMA1",
    "SCHEMA1_SIGNED",
    "Descriptor",
    "ManifestInfo",
    "acceptable",
    "accepts_manifest_lists",
    "inspect_manifest",
    "parse_accept",
]

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

MANIFEST_MEDIA_TYPES = (DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_MANIFEST, OCI_INDEX)
INDEX_TYPES = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})
_KNOWN = frozenset({*MANIFEST_MEDIA_TYPES, SCHEMA1, SCHEMA1_SIGNED})

# distribution refuses manifests above 4 MiB; so do we, on read and on write.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Descriptor:
    """A reference from a manifest to content: a child manifest or a blob."""

    digest: Digest
    size: int
    media_type: str
    platform: dict[str, Any] | None = None
    urls: tuple[str, ...] = ()  # foreign layers live elsewhere: not in this registry


@dataclass(frozen=True, slots=True)
class ManifestInfo:
    """What a manifest is and what it points at."""

    media_type: str
    manifests: tuple[Descriptor, ...]  # children of an index
    blobs: tuple[Descriptor, ...]  # config and layers of an image manifest
    subject: Descriptor | None = None  # OCI 1.1: the manifest this one refers to
    artifact_type: str | None = None  # its artifactType, else its config's media type
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    def platform_child(self, os: str = "linux", architecture: str = "amd64") -> Digest | None:
        """The first child manifest for a platform, or None."""
        for child in self.manifests:
            platform = child.platform or {}
            if platform.get("os") == os and platform.get("architecture") == architecture:
                return child.digest
        return None


def inspect_manifest(data: bytes) -> ManifestInfo:
    """Recognise a manifest; raise ManifestInvalid if it is not one."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestInvalid("manifest is not valid JSON", detail=str(exc)) from None
    if not isinstance(doc, dict):
        raise ManifestInvalid("manifest is not a JSON object")
    media_type = _media_type_of(doc)
    try:
        manifests = tuple(_descriptor(d) for d in _list(doc, "manifests"))
        blobs: list[Descriptor] = []
        if isinstance(doc.get("config"), dict):
            blobs.append(_descriptor(doc["config"]))
        blobs.extend(_descriptor(d) for d in _list(doc, "layers"))
        subject = _descriptor(doc["subject"]) if doc.get("subject") is not None else None
    except DigestInvalid as exc:
        raise ManifestInvalid("manifest references an invalid digest", detail=exc.detail) from None
    if subject is not None and subject.media_type not in MANIFEST_MEDIA_TYPES:
        raise ManifestInvalid("subject is not a manifest", detail={"mediaType": subject.media_type})
    artifact_type = doc.get("artifactType")
    if not isinstance(artifact_type, str) or not artifact_type:
        config = doc.get("config")
        artifact_type = config.get("mediaType") if isinstance(config, dict) else None
    annotations = doc.get("annotations")
    return ManifestInfo(
        media_type,
        manifests,
        tuple(blobs),
        subject,
        artifact_type if isinstance(artifact_type, str) and artifact_type else None,
        {k: v for k, v in annotations.items() if isinstance(v, str)}
        if isinstance(annotations, dict)
        else {},
    )


def _media_type_of(doc: dict[str, Any]) -> str:
    declared = doc.get("mediaType")
    if isinstance(declared, str) and declared in _KNOWN:
        return declared
    if declared is not None and declared not in ("", None):
        raise ManifestInvalid("unsupported manifest media type", detail={"mediaType": declared})
    if doc.get("schemaVersion") == 1:
        return SCHEMA1_SIGNED if "signatures" in doc else SCHEMA1
    # The OCI spec lets mediaType be omitted; distribution then decides by shape.
    if "manifests" in doc:
        return OCI_INDEX
    if "config" in doc or "layers" in doc:
        return OCI_MANIFEST
    raise ManifestInvalid("unrecognised manifest")


def _list(doc: dict[str, Any], field: str) -> list[Any]:
    value = doc.get(field, [])
    if not isinstance(value, list):
        raise ManifestInvalid(f"manifest field {field!r} is not a list")
    return value


def _descriptor(raw: Any) -> Descriptor:
    if not isinstance(raw, dict):
        raise ManifestInvalid("descriptor is not an object")
    digest, size, media_type = raw.get("digest"), raw.get("size"), raw.get("mediaType", "")
    if not isinstance(digest, str) or not isinstance(size, int) or size < 0:
        raise ManifestInvalid("descriptor needs a digest and a size", detail=raw)
    platform = raw.get("platform")
    urls = raw.get("urls")
    return Descriptor(
        Digest.parse(digest),
        size,
        media_type if isinstance(media_type, str) else "",
        platform if isinstance(platform, dict) else None,
        tuple(u for u in urls if isinstance(u, str)) if isinstance(urls, list) else (),
    )


def parse_accept(header_values: Iterable[str]) -> frozenset[str]:
    """Media types from Accept headers, given as several lines or one joined line."""
    types = set()
    for value in header_values:
        for item in value.split(","):
            media_type = item.partition(";")[0].strip().lower()
            if media_type:
                types.add(media_type)
    return frozenset(types)


def acceptable(media_type: str, accepted: frozenset[str]) -> bool:
    """Whether a stored manifest of this type may be served to the client."""
    if media_type in (DOCKER_MANIFEST, DOCKER_MANIFEST_LIST):
        return True
    return media_type in accepted or "*/*" in accepted


def accepts_manifest_lists(accepted: frozenset[str]) -> bool:
    """Whether a client asking by tag may get a Docker manifest list (or needs
    its linux/amd64 image manifest instead)."""
    return DOCKER_MANIFEST_LIST in accepted or "*/*" in accepted
