"""Pushing as a client does, and looking at what a push left in the bucket."""

from __future__ import annotations

import io
import json

import aiohttp
import boto3
from multidict import CIMultiDictProxy

from registry_local.transfer.imagebuild import Image

__all__ = ["bucket_keys", "error_code", "push_image", "send", "send_seeing_all"]


def bucket_keys(endpoint: str, bucket: str) -> set[str]:
    """Every object key in the bucket."""
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    return {
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for item in page.get("Contents", [])
    }


def error_code(body: bytes) -> str:
    """The code of the first error in an OCI error envelope."""
    return str(json.loads(body)["errors"][0]["code"])


async def send(
    method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request: status, headers, body."""
    status, all_headers, body = await send_seeing_all(method, url, data, headers)
    return status, dict(all_headers), body


async def send_seeing_all(
    method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, CIMultiDictProxy[str], bytes]:
    """As `send`, with every value of a header sent more than once."""
    body = io.BytesIO(data) if data is not None else None  # large bodies: stream, not bytes
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, data=body, headers=headers or {}) as response,
    ):
        return response.status, CIMultiDictProxy(response.headers.copy()), await response.read()


async def push_image(
    base: str, name: str, tag: str, image: Image, auth: dict[str, str] | None = None
) -> None:
    """Push like an engine: each blob in one POST+PUT, manifests children first;
    `auth`: an Authorization header for every request."""
    auth = auth or {}
    for digest, data in image.blobs.items():
        status, headers, _ = await send("POST", f"{base}/v2/{name}/blobs/uploads/", None, auth)
        assert status == 202
        location = f"{headers['Location']}?digest={digest}"
        status, _, body = await send("PUT", location, data, auth)
        assert status == 201, body
    for digest, data in sorted(image.manifests.items(), key=lambda kv: kv[0] == image.top):
        reference = tag if digest == image.top else str(digest)
        status, _, body = await send(
            "PUT",
            f"{base}/v2/{name}/manifests/{reference}",
            data,
            {"Content-Type": image.manifest_types[digest], **auth},
        )
        assert status == 201, body
