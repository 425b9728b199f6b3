"""Test images and where their content lives, from the project's own layout module."""

from __future__ import annotations

import os
from pathlib import Path

from registry_local.layout import BucketLayout, CacheLayout
from registry_local.oci.digest import Digest
from registry_local.transfer.imagebuild import Image, build_image

__all__ = ["blob_key", "cached_blob", "image_with_layer"]


def image_with_layer(size: int) -> tuple[Image, Digest]:
    """An image with one layer of `size` random bytes (give or take the tar), and
    that layer's digest: the image's largest blob."""
    image = build_image([{"blob.bin": os.urandom(size)}])
    return image, max(image.blobs, key=lambda d: len(image.blobs[d]))


def blob_key(digest: Digest, prefix: str = "") -> str:
    """The bucket key of a blob's data, as distribution's S3 driver writes it."""
    return BucketLayout(prefix).blob_data(digest)


def cached_blob(cache_dir: Path, digest: Digest) -> Path:
    """Where a committed blob lies in a cache dir."""
    return CacheLayout(cache_dir).blob(digest)
