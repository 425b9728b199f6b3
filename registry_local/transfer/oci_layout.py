"""Writing an image as an OCI image layout directory (image-spec `image-layout.md`)."""

from __future__ import annotations

import json
from pathlib import Path

from .imagebuild import Image

__all__ = ["write_oci_layout"]


def write_oci_layout(directory: Path, image: Image, tag: str) -> None:
    """Write every blob and manifest, and an index.json naming the top one `tag`."""
    blobs = directory / "blobs"
    for digest, data in [*image.blobs.items(), *image.manifests.items()]:
        path = blobs / digest.algorithm / digest.hex
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (directory / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": image.media_type,
                "digest": str(image.top),
                "size": len(image.top_manifest),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (directory / "index.json").write_text(json.dumps(index))
