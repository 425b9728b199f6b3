"""Writing an image as an OCI image layout directory (image-spec `image-layout.md`).

A layout keeps the image's own manifests, so importing it again gives the same
digests. Tools of the containers/image family (skopeo, podman) read only
OCI-typed manifests from a layout, so a Docker-typed image (schema2 manifest or
manifest list, what `docker push` makes) is also written as OCI-typed copies of
its manifests, converted the way `skopeo copy ... oci:DIR:TAG` converts them
(same config and layers, OCI media types, hence new manifest digests).
index.json names both with the tag, the original first: registry-local's import
takes the original, skopeo the copy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..oci.digest import Digest
from ..oci.mediatypes import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    inspect_manifest,
)
from .imagebuild import Image

__all__ = ["blob_name", "layout_index", "oci_copies", "write_oci_layout"]

REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_FILE = b'{"imageLayoutVersion": "1.0.0"}'


def blob_name(digest: Digest) -> str:
    """Where a layout keeps a blob or manifest, relative to its directory."""
    return f"blobs/{digest.algorithm}/{digest.hex}"


# Docker media types and their OCI counterparts (as containers/image converts them).
_OCI_TYPE = {
    DOCKER_MANIFEST: OCI_MANIFEST,
    DOCKER_MANIFEST_LIST: OCI_INDEX,
    "application/vnd.docker.container.image.v1+json": "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": (
        "application/vnd.oci.image.layer.v1.tar+gzip"
    ),
    "application/vnd.docker.image.rootfs.diff.tar": "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": (
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
    ),
}


def oci_copies(manifests: dict[Digest, bytes], top: Digest) -> tuple[dict[Digest, bytes], Digest]:
    """OCI-typed copies of the Docker-typed manifests under `top` (none if it has
    none), and the digest the top's copy has (`top` itself if it needed none)."""
    copies: dict[Digest, bytes] = {}
    done: dict[Digest, Digest] = {}

    def convert(digest: Digest) -> Digest:
        if digest in done:
            return done[digest]
        doc: dict[str, Any] = json.loads(manifests[digest])
        kind = inspect_manifest(manifests[digest]).media_type
        if kind not in (DOCKER_MANIFEST, DOCKER_MANIFEST_LIST):
            done[digest] = digest
            return digest
        doc["mediaType"] = _OCI_TYPE[kind]
        for descriptor in [doc.get("config") or {}, *doc.get("layers", [])]:
            if descriptor.get("mediaType") in _OCI_TYPE:
                descriptor["mediaType"] = _OCI_TYPE[descriptor["mediaType"]]
        for child in doc.get("manifests", []):
            was = Digest.parse(child["digest"])
            now = convert(was)
            if now != was:
                child.update(digest=str(now), size=len(copies[now]), mediaType=OCI_MANIFEST)
        data = json.dumps(doc, indent=3).encode()
        done[digest] = Digest.of(data)
        copies[done[digest]] = data
        return done[digest]

    return copies, convert(top)


def layout_index(
    manifests: dict[Digest, bytes], top: Digest, tag: str, copy: Digest | None = None
) -> bytes:
    """index.json naming `top` (and its OCI-typed copy, if any) `tag`."""
    entries = [top] if copy is None or copy == top else [top, copy]
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": inspect_manifest(manifests[digest]).media_type,
                "digest": str(digest),
                "size": len(manifests[digest]),
                "annotations": {REF_NAME: tag},
            }
            for digest in entries
        ],
    }
    return json.dumps(index, indent=2).encode()


def write_oci_layout(directory: Path, image: Image, tag: str) -> None:
    """Write every blob and manifest (and OCI-typed copies), and index.json."""
    copies, copy = oci_copies(image.manifests, image.top)
    manifests = {**image.manifests, **copies}
    for digest, data in [*image.blobs.items(), *manifests.items()]:
        path = directory / blob_name(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (directory / "oci-layout").write_bytes(LAYOUT_FILE)
    (directory / "index.json").write_bytes(layout_index(manifests, image.top, tag, copy))
