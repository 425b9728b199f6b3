"""Reading an image out of an OCI image layout or a `docker save` archive.

The result is a Plan: every manifest (small, in memory) and every blob as a
verified file on disk disk, ready to write. An OCI layout is taken as it is,
digests unchanged. A docker-archive holds the config and uncompressed layer
tars; it becomes what the docker engine pushes: gzipped layers under a Docker
schema2 manifest, each layer checked against the config's diff_ids.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..errors import DigestInvalid, ManifestInvalid
from ..oci.digest import Digest
from ..oci.mediatypes import DOCKER_MANIFEST, MAX_MANIFEST_BYTES, inspect_manifest
from .files import SourceError, SourceFiles, copy_verified
from .imagebuild import image_manifest
from .oci_layout import blob_name

__all__ = ["Plan", "plan_import"]

_REF_NAME = "org.opencontainers.image.ref.name"
_CHUNK = 1 << 20


@dataclass
class Plan:
    """An image read from a source: its top manifest's digest, every manifest's bytes,
    and every blob as a verified file."""

    top: Digest
    manifests: dict[Digest, bytes] = field(default_factory=dict)
    blobs: dict[Digest, Path] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.blobs.values())


Notify = Callable[[str], None]


def plan_import(files: SourceFiles, ref: str | None, workdir: Path, notify: Notify) -> Plan:
    """Read and verify the image named `ref` (or the only one) in the source."""
    if files.exists("oci-layout") and files.exists("index.json"):
        return _from_oci_layout(files, ref, workdir, notify)
    if files.exists("manifest.json"):
        return _from_docker_archive(files, ref, workdir, notify)
    raise SourceError("not an OCI image layout nor a docker save archive")


def _json(files: SourceFiles, name: str) -> Any:
    try:
        return json.loads(files.read_bytes(name))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceError(f"{name} is not valid JSON: {exc}") from None


def _choose(entries: list[Any], ref: str | None, names_of: Callable[[Any], list[str]]) -> Any:
    if ref is not None:
        for entry in entries:
            if any(n == ref or n.endswith(f":{ref}") for n in names_of(entry)):
                return entry
        known = sorted({n for e in entries for n in names_of(e)})
        raise SourceError(f"no image {ref!r} in the source; it has: {', '.join(known) or 'none'}")
    if len(entries) == 1 or len({tuple(names_of(e)) for e in entries} - {()}) == 1:
        # One image, maybe under several descriptors (an original and its OCI
        # copy, oci_layout.py): the first is the original.
        return entries[0]
    known = sorted({n for e in entries for n in names_of(e)})
    raise SourceError(
        f"the source holds {len(entries)} images; pick one with --ref: {', '.join(known)}"
    )


def _from_oci_layout(files: SourceFiles, ref: str | None, workdir: Path, notify: Notify) -> Plan:
    index = _json(files, "index.json")
    entries = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(entries, list) or not entries:
        raise SourceError("index.json lists no images")

    def names(entry: Any) -> list[str]:
        annotations = entry.get("annotations") or {}
        return [
            v
            for k, v in annotations.items()
            if k in (_REF_NAME, "io.containerd.image.name") and isinstance(v, str)
        ]

    chosen = _choose(entries, ref, names)
    try:
        plan = Plan(Digest.parse(str(chosen.get("digest"))))
    except DigestInvalid:
        raise SourceError("index.json names an invalid digest") from None
    pending = [plan.top]
    while pending:
        digest = pending.pop()
        data = files.read_bytes(blob_name(digest), MAX_MANIFEST_BYTES)
        if Digest.of(data, digest.algorithm) != digest:
            raise SourceError(f"manifest {digest} does not match its digest")
        try:
            info = inspect_manifest(data)
        except ManifestInvalid as exc:
            raise SourceError(f"manifest {digest}: {exc.message}") from None
        plan.manifests[digest] = data
        pending.extend(c.digest for c in info.manifests if c.digest not in plan.manifests)
        for blob in info.blobs:
            if not blob.urls and blob.digest not in plan.blobs:
                plan.blobs[blob.digest] = _verified_blob(files, blob.digest, workdir)
                notify(f"read {blob.digest}")
    return plan


def _verified_blob(files: SourceFiles, digest: Digest, workdir: Path) -> Path:
    name = blob_name(digest)
    if not files.exists(name):
        raise SourceError(f"blob {digest} is missing from the source")
    path = files.local_path(name)
    if path is not None:  # on disk already: check it in place
        hasher = digest.hasher()
        with path.open("rb") as f:
            while block := f.read(_CHUNK):
                hasher.update(block)
        if not digest.matches(hasher):
            raise SourceError(f"blob {digest} does not match its digest")
        return path
    target = workdir / digest.hex
    if digest.algorithm != "sha256":
        raise SourceError(f"blob {digest}: only sha256 blobs can be read from an archive")
    copy_verified(files, name, target, digest.hex)
    return target


def _from_docker_archive(
    files: SourceFiles, ref: str | None, workdir: Path, notify: Notify
) -> Plan:
    entries = _json(files, "manifest.json")
    if not isinstance(entries, list) or not entries:
        raise SourceError("manifest.json lists no images")
    entry = _choose(entries, ref, lambda e: list(e.get("RepoTags") or []))
    config = files.read_bytes(str(entry.get("Config")))
    try:
        diff_ids = json.loads(config)["rootfs"]["diff_ids"]
    except (ValueError, KeyError, TypeError):
        raise SourceError("the image config has no rootfs.diff_ids") from None
    layer_names = entry.get("Layers") or []
    if len(layer_names) != len(diff_ids):
        raise SourceError("the archive's layers do not match the config's diff_ids")
    layers: list[tuple[Digest, int]] = []
    blobs: dict[Digest, Path] = {}
    for number, (name, diff_id) in enumerate(zip(layer_names, diff_ids, strict=True)):
        target = workdir / f"layer-{number}.tar.gz"
        with files.open(str(name)) as source:
            digest, size = _gzip_layer(source, target, str(diff_id))
        layers.append((digest, size))
        blobs[digest] = target
        notify(f"compressed layer {number + 1}/{len(layer_names)}")
    config_path = workdir / "config.json"
    config_path.write_bytes(config)
    blobs[Digest.of(config)] = config_path
    manifest = image_manifest(config, layers, DOCKER_MANIFEST)
    top = Digest.of(manifest)
    return Plan(top, {top: manifest}, blobs)


class _HashingWriter:
    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.hasher = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        self.size += len(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()


def _gzip_layer(source: IO[bytes], target: Path, diff_id: str) -> tuple[Digest, int]:
    """Gzip a layer tar as the engine pushes it, checking it against its diff_id."""
    first = source.read(_CHUNK)
    with target.open("wb") as out:
        writer = _HashingWriter(out)
        if first[:2] == b"\x1f\x8b":  # compressed already: keep its bytes
            block = first
            while block:
                writer.write(block)
                block = source.read(_CHUNK)
            return Digest("sha256", writer.hasher.hexdigest()), writer.size
        raw = hashlib.sha256()
        with gzip.GzipFile(fileobj=writer, mode="wb", mtime=0) as packed:
            block = first
            while block:
                raw.update(block)
                packed.write(block)
                block = source.read(_CHUNK)
    if f"sha256:{raw.hexdigest()}" != diff_id:
        raise SourceError(f"a layer does not match its diff_id {diff_id}")
    return Digest("sha256", writer.hasher.hexdigest()), writer.size
