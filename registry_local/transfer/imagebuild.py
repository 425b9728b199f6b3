"""Building small, reproducible container images in memory.

Used for the quick start's sample image, and by tests and benchmarks that need
images with given layers. Everything is deterministic: the same arguments give
the same digests.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..oci.digest import Digest
from ..oci.mediatypes import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST

__all__ = [
    "Image",
    "Platform",
    "build_image",
    "build_index",
    "image_manifest",
    "layer_tar_gz",
    "sample_image",
]

_CONFIG_TYPES = {
    DOCKER_MANIFEST: "application/vnd.docker.container.image.v1+json",
    OCI_MANIFEST: "application/vnd.oci.image.config.v1+json",
}
_LAYER_TYPES = {
    DOCKER_MANIFEST: "application/vnd.docker.image.rootfs.diff.tar.gzip",
    OCI_MANIFEST: "application/vnd.oci.image.layer.v1.tar+gzip",
}


@dataclass(frozen=True)
class Platform:
    """An image's OS and architecture, shown as `os/arch`."""

    os: str = "linux"
    architecture: str = "amd64"

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}"


@dataclass
class Image:
    """Content of an image: blobs, manifests, and the digest a tag should name."""

    top: Digest
    media_type: str
    manifests: dict[Digest, bytes] = field(default_factory=dict)
    manifest_types: dict[Digest, str] = field(default_factory=dict)
    blobs: dict[Digest, bytes] = field(default_factory=dict)

    @property
    def top_manifest(self) -> bytes:
        return self.manifests[self.top]


def layer_tar_gz(files: Mapping[str, bytes]) -> tuple[bytes, Digest]:
    """A gzipped tar of the files and the digest of the uncompressed tar (diff ID)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, data in sorted(files.items()):
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size = len(data)
            info.mode = 0o755 if path.endswith(".sh") else 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    # Level 1: layers of random bytes do not compress; keep building them cheap.
    compressed = gzip.compress(tar_bytes, compresslevel=1, mtime=0)
    return compressed, Digest.of(tar_bytes)


def _json(doc: Any) -> bytes:
    return json.dumps(doc, indent=3).encode()


def build_image(
    layers: Sequence[Mapping[str, bytes]],
    platform: Platform = Platform(),
    media_type: str = DOCKER_MANIFEST,
    cmd: Sequence[str] = ("/bin/sh",),
) -> Image:
    """An image manifest with one layer per mapping of path -> file content."""
    blobs: dict[Digest, bytes] = {}
    layer_sizes = []
    diff_ids = []
    for files in layers:
        data, diff_id = layer_tar_gz(files)
        digest = Digest.of(data)
        blobs[digest] = data
        diff_ids.append(str(diff_id))
        layer_sizes.append((digest, len(data)))
    config = _json(
        {
            "architecture": platform.architecture,
            "os": platform.os,
            "created": "1970-01-01T00:00:00Z",
            "config": {"Cmd": list(cmd), "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [
                {"created": "1970-01-01T00:00:00Z", "created_by": "registry-local"} for _ in layers
            ],
        }
    )
    blobs[Digest.of(config)] = config
    manifest = image_manifest(config, layer_sizes, media_type)
    top = Digest.of(manifest)
    return Image(top, media_type, {top: manifest}, {top: media_type}, blobs)


def image_manifest(
    config: bytes, layers: Sequence[tuple[Digest, int]], media_type: str = DOCKER_MANIFEST
) -> bytes:
    """An image manifest over a config and gzipped layers (digest, size), laid out
    as the docker engine writes schema2 manifests (3-space indent)."""
    return _json(
        {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {
                "mediaType": _CONFIG_TYPES[media_type],
                "size": len(config),
                "digest": str(Digest.of(config)),
            },
            "layers": [
                {"mediaType": _LAYER_TYPES[media_type], "size": size, "digest": str(digest)}
                for digest, size in layers
            ],
        }
    )


def build_index(images: Mapping[Platform, Image], media_type: str = DOCKER_MANIFEST_LIST) -> Image:
    """A multi-platform image: an index over one image per platform."""
    if media_type not in (DOCKER_MANIFEST_LIST, OCI_INDEX):
        raise ValueError(f"not an index media type: {media_type}")
    index = _json(
        {
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": [
                {
                    "mediaType": image.media_type,
                    "size": len(image.top_manifest),
                    "digest": str(image.top),
                    "platform": {"architecture": platform.architecture, "os": platform.os},
                }
                for platform, image in images.items()
            ],
        }
    )
    top = Digest.of(index)
    result = Image(top, media_type, {top: index}, {top: media_type})
    for image in images.values():
        result.manifests.update(image.manifests)
        result.manifest_types.update(image.manifest_types)
        result.blobs.update(image.blobs)
    return result


def sample_image() -> Image:
    """The quick start's image: linux/amd64 and linux/arm64, one small layer each."""
    images = {}
    for arch in ("amd64", "arm64"):
        platform = Platform("linux", arch)
        hello = f"Hello from registry-local ({platform}).\n".encode()
        images[platform] = build_image(
            [{"hello.txt": hello, "etc/os-release": b'NAME="registry-local sample"\n'}],
            platform,
            cmd=("/bin/cat", "/hello.txt"),
        )
    return build_index(images)
