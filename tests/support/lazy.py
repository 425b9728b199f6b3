"""Lazy pullers, replayed: the requests containerd's stargz and SOCI snapshotters send.

The eStargz image is made the way users make one: a plain image imported into a
real containerd, converted by `ctr-remote image convert --estargz` (Debian's
stargz-snapshotter package), and pushed with `ctr push` into registry-local,
which writes it to the bucket. The replays follow stargz-snapshotter's
fs/remote/resolver.go: a `bytes=0-1` probe, a HEAD for the size, the footer (the
last 51 bytes), the table of contents before it, then chunk reads of several
ranges in one request with `Accept-Encoding: identity`; a 400 makes it fall
back to one range spanning them all. Every chunk is checked against the digest
its table of contents gives, as the snapshotter checks it.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from registry_local.oci.digest import Digest
from registry_local.oci.mediatypes import OCI_MANIFEST
from registry_local.transfer.imagebuild import build_image
from registry_local.transfer.oci_layout import write_oci_layout

from .engines import run_containerd
from .processes import AWS_ENV, _running, free_port, require_tool, sealed_env, serve_argv

__all__ = [
    "Chunk",
    "LazyImage",
    "Replay",
    "StargzLayer",
    "estargz_image",
    "layer_chunks",
    "multipart_parts",
    "push",
    "replay_soci",
    "replay_stargz",
    "soci_index",
]

FOOTER = 51  # bytes of an eStargz footer
TOC_DIGEST = "containerd.io/snapshot/stargz/toc.digest"
CHUNK_SIZE = 64 * 1024  # --estargz-chunk-size: many chunks per file, as lazy pulls want


@dataclass(frozen=True)
class LazyImage:
    """The eStargz image in the bucket: its name, tag, manifest, and layers
    with the digest of each one's table of contents."""

    name: str
    tag: str
    manifest: bytes
    layers: dict[Digest, tuple[int, str]]  # digest -> (size, TOC digest)


@contextmanager
def estargz_image(workdir: Path, endpoint: str, bucket: str) -> Iterator[LazyImage]:
    """Make an eStargz image with containerd and ctr-remote, and push it with
    `ctr push` through registry-local into `bucket` at S3 `endpoint`."""
    ctr, ctr_remote = require_tool("ctr"), require_tool("ctr-remote")
    files = {f"data/file{i}.bin": os.urandom(700_000) for i in range(5)}
    files.update({f"etc/small{i}.txt": b"x" * (i * 100 + 5) for i in range(20)})
    image = build_image([files, {"bin/app": os.urandom(200_000)}], media_type=OCI_MANIFEST)
    layout = workdir / "layout"
    write_oci_layout(layout, image, "v1")
    with tarfile.open(workdir / "layout.tar", "w") as archive:
        archive.add(layout, arcname=".")
    port = free_port()
    env = sealed_env(
        {**AWS_ENV, "REGISTRY_LOCAL_S3_ENDPOINT": endpoint, "REGISTRY_LOCAL_S3_BUCKET": bucket}
    )
    serve = serve_argv(port, "--allow-push", "--cache-dir", str(workdir / "pusher-cache"))
    with (
        run_containerd("http://127.0.0.1:9", workdir) as (socket, _),
        _running(serve, f"http://127.0.0.1:{port}/v2/", env, workdir / "pusher.log"),
    ):
        base = [ctr, "--address", str(socket), "--namespace", "lazy"]
        target = f"127.0.0.1:{port}/lazy/app:esgz"
        source = str(workdir / "layout.tar")
        convert = ["convert", "--estargz", "--oci", "--estargz-chunk-size", str(CHUNK_SIZE)]
        for args in (
            [*base, "images", "import", "--base-name", "localhost/src", source],
            [ctr_remote, *base[1:], "images", *convert, "localhost/src:v1", target],
            [*base, "images", "push", "--plain-http", target],
        ):
            result = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
            assert result.returncode == 0, f"{args}: {result.stdout}{result.stderr}"
        manifest = _get_manifest(f"http://127.0.0.1:{port}", "lazy/app", "esgz")
    doc = json.loads(manifest)
    layers = {
        Digest.parse(layer["digest"]): (layer["size"], layer["annotations"][TOC_DIGEST])
        for layer in doc["layers"]
    }
    yield LazyImage("lazy/app", "esgz", manifest, layers)


def _get_manifest(base: str, name: str, tag: str) -> bytes:
    import urllib.request

    request = urllib.request.Request(
        f"{base}/v2/{name}/manifests/{tag}", headers={"Accept": OCI_MANIFEST}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        data: bytes = response.read()
    return data


@dataclass(frozen=True)
class Chunk:
    """One chunk of a file in an eStargz layer: its gzip member spans
    [start, end) of the layer; its bytes are `size` from `inner` in it."""

    start: int
    end: int
    inner: int
    size: int
    digest: str

    def check(self, compressed: bytes) -> bool:
        """Whether the chunk's bytes match its digest (a member that does not even
        decompress does not)."""
        try:
            data = gzip.decompress(compressed)[self.inner : self.inner + self.size]
        except (OSError, EOFError, zlib.error):
            return False
        return "sha256:" + hashlib.sha256(data).hexdigest() == self.digest


@dataclass
class StargzLayer:
    """A layer's table of contents, as the snapshotter reads it."""

    size: int
    toc_offset: int = 0
    chunks: list[Chunk] = field(default_factory=list)

    def parse_footer(self, footer: bytes) -> None:
        assert len(footer) == FOOTER and footer[:2] == b"\x1f\x8b", footer[:4]
        assert footer[32:38] == b"STARGZ", footer
        self.toc_offset = int(footer[16:32], 16)

    def parse_toc(self, toc: bytes, toc_digest: str) -> None:
        archive = tarfile.open(fileobj=io.BytesIO(gzip.decompress(toc)))
        member = archive.extractfile("stargz.index.json")
        assert member is not None
        document = member.read()
        assert "sha256:" + hashlib.sha256(document).hexdigest() == toc_digest
        entries = json.loads(document)["entries"]
        starts = sorted({e["offset"] for e in entries if e.get("offset")} | {self.toc_offset})
        file_size = 0  # of the file whose chunks follow (chunk entries carry none)
        for entry in entries:
            if entry["type"] == "reg":
                file_size = entry.get("size", 0)
            if entry["type"] not in ("reg", "chunk") or not entry.get("chunkDigest"):
                continue
            start = entry["offset"]
            end = next(s for s in starts if s > start)
            size = entry.get("chunkSize") or file_size - entry.get("chunkOffset", 0)
            self.chunks.append(
                Chunk(start, end, entry.get("innerOffset", 0), size, entry["chunkDigest"])
            )


def layer_chunks(data: bytes, toc_digest: str, stride: int = 2) -> list[Chunk]:
    """The chunks a replay with this `stride` reads, from the whole layer."""
    layer = StargzLayer(len(data))
    layer.parse_footer(data[-FOOTER:])
    layer.parse_toc(data[layer.toc_offset : len(data) - FOOTER], toc_digest)
    return layer.chunks[::stride]


@dataclass
class Replay:
    """What a replay saw: its chunks checked, and how it had to ask."""

    chunks_checked: int = 0
    requests: int = 0
    statuses: list[int] = field(default_factory=list)
    fell_back: bool = False


async def replay_stargz(
    session: aiohttp.ClientSession,
    url: str,
    toc_digest: str,
    ranges_per_request: int = 4,
    chunks: int | None = None,
    stride: int = 2,
) -> Replay:
    """stargz-snapshotter's reads of one layer at `url` (a blob URL): every
    `stride`th chunk (what a container touches is scattered, so ranges do not
    touch), the first `chunks` of those (all: None), `ranges_per_request` per
    request."""
    replay = Replay()
    status, _, _ = await _ranged(session, url, "bytes=0-1", replay)
    assert status in (200, 206)
    async with session.head(url) as response:
        replay.requests += 1
        layer = StargzLayer(int(response.headers["Content-Length"]))
    status, parts = await _ranges(session, url, [(layer.size - FOOTER, layer.size)], replay)
    assert status == 206
    layer.parse_footer(parts[0][2])
    status, parts = await _ranges(session, url, [(layer.toc_offset, layer.size - FOOTER)], replay)
    assert status == 206
    layer.parse_toc(parts[0][2], toc_digest)
    wanted = layer.chunks[::stride][:chunks]
    for group in _groups(wanted, ranges_per_request):
        status, parts = await _ranges(session, url, [(c.start, c.end) for c in group], replay)
        if status == 400:  # as the snapshotter does: one range spanning them all
            replay.fell_back = True
            span = (min(c.start for c in group), max(c.end for c in group))
            status, parts = await _ranges(session, url, [span], replay)
        assert status == 206, status
        for chunk in group:
            data = _cut(parts, chunk.start, chunk.end)
            assert chunk.check(data), f"chunk at {chunk.start} does not match its digest"
            replay.chunks_checked += 1
    return replay


def _groups(chunks: Sequence[Chunk], size: int) -> Iterator[list[Chunk]]:
    for index in range(0, len(chunks), size):
        yield list(chunks[index : index + size])


def _cut(parts: list[tuple[int, int, bytes]], start: int, end: int) -> bytes:
    """Bytes [start, end) of the layer from the parts of an answer."""
    for first, last, data in parts:
        if first <= start and end <= last:
            return data[start - first : end - first]
    raise AssertionError(f"no part holds bytes {start}-{end}: {[(f, e) for f, e, _ in parts]}")


async def _ranges(
    session: aiohttp.ClientSession, url: str, spans: list[tuple[int, int]], replay: Replay
) -> tuple[int, list[tuple[int, int, bytes]]]:
    header = "bytes=" + ",".join(f"{start}-{end - 1}" for start, end in spans)
    status, _, parts = await _ranged(session, url, header, replay)
    return status, parts


async def _ranged(
    session: aiohttp.ClientSession, url: str, header: str, replay: Replay
) -> tuple[int, dict[str, str], list[tuple[int, int, bytes]]]:
    headers = {"Range": header, "Accept-Encoding": "identity"}
    async with session.get(url, headers=headers) as response:
        replay.requests += 1
        replay.statuses.append(response.status)
        if response.status != 206:
            await response.read()
            return response.status, dict(response.headers), []
        content_type = response.headers.get("Content-Type", "")
        if not content_type.startswith("multipart/byteranges"):
            first, last = _span(response.headers["Content-Range"])
            return 206, dict(response.headers), [(first, last, await response.read())]
        return 206, dict(response.headers), await multipart_parts(response)


async def multipart_parts(response: aiohttp.ClientResponse) -> list[tuple[int, int, bytes]]:
    """The parts of a multipart/byteranges answer: (first byte, end, bytes) each."""
    parts = []
    reader = aiohttp.MultipartReader.from_response(response)
    while (part := await reader.next()) is not None:
        assert isinstance(part, aiohttp.BodyPartReader)
        first, last = _span(part.headers["Content-Range"])
        parts.append((first, last, bytes(await part.read(decode=False))))
    return parts


def _span(content_range: str) -> tuple[int, int]:
    """[first, end) from `bytes first-last/size`."""
    first, _, rest = content_range.removeprefix("bytes ").partition("-")
    return int(first), int(rest.partition("/")[0]) + 1


# -- SOCI ---------------------------------------------------------------------------

SOCI_INDEX = "application/vnd.amazon.soci.index.v1+json"
SOCI_LAYER = "com.amazon.soci.image-layer-digest"
EMPTY = "application/vnd.oci.empty.v1+json"


def soci_index(
    subject: bytes, layers: dict[Digest, bytes], span: int
) -> tuple[bytes, dict[Digest, bytes]]:
    """A SOCI index for the image manifest `subject` and the blobs it needs (the
    empty config, one ztoc per layer). The ztoc here is a JSON stand-in giving
    each span's compressed byte range and digest, as a real ztoc's checkpoints
    give its spans: no tool that builds real ztocs is packaged for this machine,
    and the replay only needs where the spans are."""
    blobs = {Digest.of(b"{}"): b"{}"}
    descriptors = []
    for digest, data in layers.items():
        spans = [
            [start, min(start + span, len(data)), str(Digest.of(data[start : start + span]))]
            for start in range(0, len(data), span)
        ]
        ztoc = json.dumps({"layer": str(digest), "spans": spans}).encode()
        blobs[Digest.of(ztoc)] = ztoc
        descriptors.append(
            {
                "mediaType": "application/octet-stream",
                "digest": str(Digest.of(ztoc)),
                "size": len(ztoc),
                "annotations": {SOCI_LAYER: str(digest)},
            }
        )
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SOCI_INDEX,
        "config": {"mediaType": EMPTY, "digest": str(Digest.of(b"{}")), "size": 2},
        "layers": descriptors,
        "subject": {
            "mediaType": OCI_MANIFEST,
            "digest": str(Digest.of(subject)),
            "size": len(subject),
        },
    }
    return json.dumps(index).encode(), blobs


@dataclass
class SociReplay:
    """What a soci-snapshotter replay checked: the spans read and the ztocs fetched."""

    spans_checked: int = 0
    ztocs: int = 0


async def replay_soci(
    session: aiohttp.ClientSession, base: str, name: str, image: Digest, at_once: int = 4
) -> SociReplay:
    """soci-snapshotter's reads: the SOCI index through the referrers API, its
    ztocs, then each layer's spans as ranged GETs, a few at once; every span is
    checked against its digest."""
    replay = SociReplay()
    url = f"{base}/v2/{name}/referrers/{image}"
    async with session.get(url, params={"artifactType": SOCI_INDEX}) as response:
        assert response.status == 200, response.status
        found = await response.json(content_type=None)
    (descriptor,) = [d for d in found["manifests"] if d.get("artifactType") == SOCI_INDEX]
    headers = {"Accept": OCI_MANIFEST}
    async with session.get(
        f"{base}/v2/{name}/manifests/{descriptor['digest']}", headers=headers
    ) as response:
        index = json.loads(await response.read())
    turns = asyncio.Semaphore(at_once)

    async def span(layer: str, start: int, end: int, digest: str) -> None:
        async with (
            turns,
            session.get(
                f"{base}/v2/{name}/blobs/{layer}",
                headers={"Range": f"bytes={start}-{end - 1}", "Accept-Encoding": "identity"},
            ) as response,
        ):
            # A range that is the whole blob may come back as 200 (RFC 9110 allows
            # either; the snapshotters take both).
            assert response.status in (200, 206), response.status
            assert str(Digest.of(await response.read())) == digest
        replay.spans_checked += 1

    for ztoc_descriptor in index["layers"]:
        async with session.get(f"{base}/v2/{name}/blobs/{ztoc_descriptor['digest']}") as response:
            ztoc = json.loads(await response.read())
        replay.ztocs += 1
        layer = ztoc_descriptor["annotations"][SOCI_LAYER]
        await asyncio.gather(*(span(layer, *entry) for entry in ztoc["spans"]))
    return replay


async def push(
    session: aiohttp.ClientSession,
    base: str,
    name: str,
    blobs: dict[Digest, bytes],
    manifest: bytes,
    reference: str,
) -> None:
    """Push blobs and then a manifest, as an engine does (one POST+PUT a blob)."""
    for digest, data in blobs.items():
        async with session.post(f"{base}/v2/{name}/blobs/uploads/") as response:
            assert response.status == 202, response.status
            location = response.headers["Location"]
        async with session.put(f"{location}?digest={digest}", data=io.BytesIO(data)) as response:
            assert response.status == 201, response.status
    headers = {"Content-Type": json.loads(manifest).get("mediaType", OCI_MANIFEST)}
    async with session.put(
        f"{base}/v2/{name}/manifests/{reference}", data=manifest, headers=headers
    ) as response:
        assert response.status == 201, await response.text()
