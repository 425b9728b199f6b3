"""One conformance suite for every Backend: the directory store and S3 (moto's server
and SeaweedFS, a real S3 implementation)."""

from __future__ import annotations

import asyncio
import os
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from urllib.parse import unquote

import boto3
import pytest

from registry_local.backing.backend import Backend
from registry_local.backing.filesystem import FilesystemBackend
from registry_local.backing.s3 import S3Backend
from registry_local.config import S3Settings
from registry_local.errors import (
    BackendError,
    BackendMisconfigured,
    BackendUnavailable,
    ObjectTooLarge,
)
from registry_local.telemetry.metrics import Metrics

from .support.processes import free_port
from .support.s3proxy import Fault, S3Proxy, key_endswith


@pytest.fixture(params=["filesystem", "moto", "seaweedfs"])
def endpoint(request: pytest.FixtureRequest) -> str | None:
    """The S3 server's endpoint (None for the directory store). A sync fixture:
    the session's S3 server may start here, which blocks, so not on the loop."""
    return None if request.param == "filesystem" else str(request.getfixturevalue(request.param))


@pytest.fixture
async def backend(endpoint: str | None, tmp_path: Path) -> AsyncIterator[Backend]:
    if endpoint is None:
        yield FilesystemBackend(tmp_path / "store")
        return
    bucket = f"conformance-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    async with S3Backend.connect(S3Settings(bucket=bucket, endpoint=endpoint)) as s3:
        yield s3


async def test_absent_objects_are_none(backend: Backend) -> None:
    assert await backend.stat("a/b/data") is None
    assert await backend.read("a/b/data", 100) is None
    assert await backend.open("a/b/data") is None
    assert await backend.list("a/") == []


async def test_write_read_stat(backend: Backend) -> None:
    await backend.write("x/y/link", b"sha256:abc")
    assert await backend.stat("x/y/link") == 10
    assert await backend.read("x/y/link", 100) == b"sha256:abc"
    with pytest.raises(ObjectTooLarge):
        await backend.read("x/y/link", 5)
    await backend.write("x/y/link", b"new")  # overwrite is whole
    assert await backend.read("x/y/link", 100) == b"new"


async def test_conditional_writes_compare_and_set(backend: Backend) -> None:
    """create: only where nothing is; replace: only over the version read."""
    first = await backend.create("leases/a", b'{"n": 1}')
    assert first is not None
    assert await backend.create("leases/a", b'{"n": 2}') is None  # taken already
    assert await backend.read_versioned("leases/a", 100) == (b'{"n": 1}', first)

    second = await backend.replace("leases/a", b'{"n": 3}', first)
    assert second is not None and second != first
    assert await backend.replace("leases/a", b'{"n": 4}', first) is None  # stale version
    assert await backend.read_versioned("leases/a", 100) == (b'{"n": 3}', second)

    await backend.delete("leases/a")
    assert await backend.read_versioned("leases/a", 100) is None
    assert await backend.replace("leases/a", b'{"n": 5}', second) is None  # gone
    assert await backend.create("leases/a", b'{"n": 6}') is not None  # free again


async def test_only_one_of_many_concurrent_creates_wins(backend: Backend) -> None:
    results = await asyncio.gather(*(backend.create("leases/b", b"%d" % i) for i in range(8)))
    assert sum(r is not None for r in results) == 1


async def test_stream_from_offsets(backend: Backend) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    await backend.write("blob/data", data)
    for offset in (0, 1, 65536, len(data) - 1, len(data)):
        stream = await backend.open("blob/data", offset)
        assert stream is not None
        assert stream.size == len(data)
        got = bytearray()
        while chunk := await stream.read(100_000):
            assert len(chunk) <= 100_000
            got += chunk
        await stream.close()
        await stream.close()  # twice is fine
        assert bytes(got) == data[offset:]


async def test_modified_is_when_it_was_written(backend: Backend) -> None:
    assert await backend.modified("x/link") is None
    before = time.time()
    await backend.write("x/link", b"a")
    written = await backend.modified("x/link")
    assert written is not None and before - 5 <= written <= time.time() + 5  # clocks: S3's


async def test_stream_of_bounded_ranges(backend: Backend) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    await backend.write("blob/data", data)
    await backend.write("empty/data", b"")
    cases = [(0, 1), (0, 65536), (65536, 131072), (len(data) - 1, len(data) + 10)]
    cases += [(1000, 1000), (len(data), len(data) + 5), (0, len(data) * 2)]
    for offset, end in cases:
        stream = await backend.open("blob/data", offset, end)
        assert stream is not None
        assert stream.size == len(data)
        got = bytearray()
        while chunk := await stream.read(100_000):
            got += chunk
        await stream.close()
        assert bytes(got) == data[offset:end], (offset, end)
    empty = await backend.open("empty/data", 0, 8 << 20)  # S3 answers 416 to this
    assert empty is not None and empty.size == 0
    assert await empty.read(10) == b""
    await empty.close()
    assert await backend.open("absent/data", 0, 100) is None


async def test_list_gives_immediate_children_sorted(backend: Backend) -> None:
    for key in [
        "r/tags/b/current/link",
        "r/tags/a/current/link",
        "r/tags/a/index/x/link",
        "r/tags/c/current/link",
        "r/other",
    ]:
        await backend.write(key, b"1")
    assert await backend.list("r/tags/") == ["a", "b", "c"]
    assert await backend.list("r/") == ["other", "tags"]


async def test_a_child_whose_objects_are_all_deleted_is_not_listed(backend: Backend) -> None:
    """SeaweedFS keeps listing an emptied "directory"; AWS S3 and the listing
    contract do not: a deleted tag must not stay in the tag list."""
    for key in ["r/tags/a/current/link", "r/tags/a/index/x/link", "r/tags/b/current/link"]:
        await backend.write(key, b"1")
    await backend.delete("r/tags/b/current/link")
    assert await backend.list("r/tags/") == ["a"]
    await backend.delete_tree("r/tags/a/")
    assert await backend.list("r/tags/") == []
    assert await backend.list("r/") == []
    await backend.write("r/tags/c/current/link", b"1")  # a new child shows again
    assert await backend.list("r/tags/") == ["c"]


async def test_emptied_directories_are_removed_up_to_the_root(
    endpoint: str | None, tmp_path: Path
) -> None:
    """What a listing by delimiter shows (registry:2 lists tags so) after the
    objects under a prefix are deleted and remove_emptied has run."""
    backend: Backend
    if endpoint is None:
        backend = FilesystemBackend(tmp_path)

        def raw(prefix: str) -> list[str]:
            return sorted(p.name for p in (tmp_path / prefix).iterdir())

        await _emptied_directories_go(backend, raw)
        return
    bucket = f"emptied-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)

    def listed(prefix: str) -> list[str]:
        page = s3.list_objects_v2(Bucket=bucket, Prefix=prefix, Delimiter="/")
        names = [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        names += [o["Key"] for o in page.get("Contents", [])]
        return sorted(name[len(prefix) :].rstrip("/") for name in names)

    settings = S3Settings(bucket=bucket, endpoint=endpoint)
    async with S3Backend.connect(settings, scratch="own/probes/") as backend:
        await _emptied_directories_go(backend, listed)


async def _emptied_directories_go(backend: Backend, raw: Callable[[str], list[str]]) -> None:
    keys = ["r/tags/a/current/link", "r/tags/a/index/x/1/link", "r/tags/b/current/link"]
    for key in [*keys, "r/keep", "r/x/y/link"]:
        await backend.write(key, b"1")
    await backend.delete_tree("r/tags/a/")
    await backend.remove_emptied("r/tags/a/", "r/")
    assert raw("r/tags/") == ["b"]
    await backend.delete("r/tags/b/current/link")
    await backend.remove_emptied("r/tags/b/current/", "r/")
    assert raw("r/") == ["keep", "x"]  # the root stays, and so does what holds an object
    await backend.remove_emptied("r/x/", "r/")
    assert await backend.read("r/x/y/link", 10) == b"1"
    await backend.remove_emptied("r/gone/", "r/")  # nothing there: nothing to do


@pytest.mark.parametrize(
    ("endpoint", "checks_children"),
    [("moto", False), ("seaweedfs", True)],
    indirect=["endpoint"],
)
async def test_children_are_checked_only_where_the_store_lists_emptied_prefixes(
    endpoint: str, checks_children: bool
) -> None:
    """One probe per backend finds out how the store lists; moto (like AWS S3)
    then costs one LIST per listing, SeaweedFS one more per child."""
    bucket = f"probe-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    metrics = Metrics()
    settings = S3Settings(bucket=bucket, endpoint=endpoint)
    async with S3Backend.connect(settings, metrics.s3, scratch="own/probes/") as s3:
        for key in ["t/a/link", "t/b/link", "t/c/link", "t/d/link"]:
            await s3.write(key, b"1")
        await s3.delete("t/d/link")
        assert await s3.list("t/") == ["a", "b", "c"]  # the probe ran first
        before = metrics.sample("s3_requests", operation="ListObjectsV2", outcome="ok")
        assert await s3.list("t/") == ["a", "b", "c"]
        lists = metrics.sample("s3_requests", operation="ListObjectsV2", outcome="ok") - before
    assert lists == (1 + 4 if checks_children else 1)


async def test_write_file_stores_a_byte_range_of_a_file(backend: Backend, tmp_path: Path) -> None:
    """Whole, a small range (one PutObject) and a range past the multipart
    threshold (parts read from the file as they are sent), from a descriptor's
    path too, as the fleet stages the part of a fill it holds open."""
    data = os.urandom(20 << 20)
    path = tmp_path / "file"
    path.write_bytes(data)
    await backend.write_file("f/whole", path)
    assert await backend.read("f/whole", 32 << 20) == data
    await backend.write_file("f/small", path, 1000, 5000)
    assert await backend.read("f/small", 32 << 20) == data[1000:5000]
    await backend.write_file("f/large", path, 123, 19 << 20)  # S3: a multipart upload
    assert await backend.read("f/large", 32 << 20) == data[123 : 19 << 20]
    with path.open("rb") as held:
        path.unlink()  # the fill's file renamed or gone: its descriptor reads on
        await backend.write_file("f/held", Path(f"/dev/fd/{held.fileno()}"), 5, None)
    assert await backend.read("f/held", 32 << 20) == data[5:]


async def test_compose_joins_objects_into_one_without_moving_them(backend: Backend) -> None:
    first, second, last = os.urandom(5 << 20), os.urandom(5 << 20), os.urandom(1000)
    for key, data in (("staged/0", first), ("staged/1", second), ("staged/2", last)):
        await backend.write(key, data)
    await backend.compose("blobs/whole", ["staged/0", "staged/1", "staged/2"])
    assert await backend.read("blobs/whole", 20 << 20) == first + second + last
    assert await backend.read("staged/1", 20 << 20) == second  # the sources stay
    await backend.compose("blobs/one", ["staged/2"])
    assert await backend.read("blobs/one", 2000) == last


async def test_walk_gives_every_key_below_a_prefix(backend: Backend) -> None:
    for key in ["w/a/current/link", "w/a/index/x/link", "w/b", "other/c"]:
        await backend.write(key, b"1")
    assert await backend.walk("w/") == ["a/current/link", "a/index/x/link", "b"]
    await backend.delete("w/a/index/x/link")
    assert await backend.walk("w/") == ["a/current/link", "b"]
    assert await backend.walk("absent/") == []


async def test_a_dated_walk_gives_each_key_its_time_from_the_listing(backend: Backend) -> None:
    for key in ["d/a/link", "d/b"]:
        await backend.write(key, b"1")
    await backend.write("d/b", b"22")
    dated = await backend.walk_dated("d/")
    assert [(listed.name, listed.size) for listed in dated] == [("a/link", 1), ("b", 2)]
    for listed in dated:
        assert listed.modified == await backend.modified("d/" + listed.name)
    assert await backend.walk_dated("absent/") == []


async def test_check_passes_where_the_store_is_and_fails_where_it_is_not(
    endpoint: str | None, tmp_path: Path
) -> None:
    if endpoint is None:
        await FilesystemBackend(tmp_path / "store").check()
        assert (tmp_path / "store").is_dir()  # made on the first check
        (tmp_path / "plain").write_bytes(b"")
        with pytest.raises(BackendError):  # a root under a plain file cannot be
            await FilesystemBackend(tmp_path / "plain" / "store").check()
        return
    bucket = f"check-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    async with S3Backend.connect(S3Settings(bucket=bucket, endpoint=endpoint)) as s3:
        await s3.check()
    absent = S3Settings(bucket=f"absent-{uuid.uuid4().hex[:12]}", endpoint=endpoint)
    async with S3Backend.connect(absent) as s3:
        with pytest.raises(BackendError):
            await s3.check()


async def test_unreachable_s3_is_unavailable() -> None:
    settings = S3Settings(
        bucket="b", endpoint=f"http://127.0.0.1:{free_port()}", connect_timeout=1, read_timeout=1
    )
    async with S3Backend.connect(settings) as s3:
        with pytest.raises(BackendUnavailable):
            await s3.stat("k")
        with pytest.raises(BackendUnavailable, match=r"127\.0\.0\.1"):
            await s3.read("k", 10)
        with pytest.raises(BackendUnavailable):
            await s3.check()


async def test_missing_bucket_is_an_error_not_absence(moto: str) -> None:
    async with S3Backend.connect(S3Settings(bucket="no-such-bucket", endpoint=moto)) as s3:
        with pytest.raises(BackendError):
            await s3.read("k", 10)


def test_filesystem_refuses_traversing_keys(tmp_path: Path) -> None:
    backend = FilesystemBackend(tmp_path)
    for key in ["../x", "a/../../x", "a//b", "./a"]:
        with pytest.raises(BackendError):
            backend._path(key)


def _bucket_with(moto: str, key: str, data: bytes) -> str:
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=moto, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key=key, Body=data)
    return bucket


async def test_s3_over_tls_trusts_what_botocore_trusts(
    moto: str, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reads (a presigned GET on a session of our own) and every other call
    (botocore's) trust the same certificates: AWS_CA_BUNDLE, else the default."""
    cert, key = certificate
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    proxy = await S3Proxy(moto).start(tls=tls)
    try:
        settings = S3Settings(bucket=_bucket_with(moto, "k", b"hello"), endpoint=proxy.url)
        monkeypatch.setenv("AWS_CA_BUNDLE", str(cert))
        async with S3Backend.connect(settings) as s3:
            assert await s3.read("k", 10) == b"hello"
            assert await s3.stat("k") == 5
        monkeypatch.delenv("AWS_CA_BUNDLE")
        monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
        async with S3Backend.connect(settings) as s3:
            with pytest.raises(BackendUnavailable, match="certificate"):
                await s3.read("k", 10)
            with pytest.raises(BackendUnavailable, match=r"certificate|SSL"):
                await s3.stat("k")
    finally:
        await proxy.close()


async def test_s3_errors_on_reads_mean_what_botocore_says_they_mean(
    moto: str, s3proxy: S3Proxy
) -> None:
    settings = S3Settings(bucket=_bucket_with(moto, "k", bytes(100)), endpoint=s3proxy.url)
    async with S3Backend.connect(replace(settings, attempts=1)) as s3:
        s3proxy.add(Fault(key_endswith("k"), times=1, status=403, code="AccessDenied"))
        with pytest.raises(BackendMisconfigured, match="access denied"):
            await s3.read("k", 1000)
        s3proxy.add(Fault(key_endswith("k"), times=1, status=500, code="InternalError"))
        with pytest.raises(BackendUnavailable, match="500 InternalError"):
            await s3.read("k", 1000)
        # Back-pressure is waited out, whatever the attempts for failures.
        s3proxy.add(Fault(key_endswith("k"), times=1, status=503, code="SlowDown"))
        assert await s3.read("k", 1000) == bytes(100)
        assert await s3.read("absent", 10) is None
        assert await s3.read("k", 1000) == bytes(100)
        # A store answering a ranged read with the whole object: refused, not
        # taken for the bytes from the offset on.
        s3proxy.add(Fault(key_endswith("k"), times=1, drop_range=True))
        with pytest.raises(BackendError, match="ignored the Range header"):
            await s3.open("k", 10)


async def test_reads_are_signed_again_for_the_region_s3_names(
    moto: str, s3proxy: S3Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    """botocore follows "the bucket is in another region" for its own calls; a
    presigned read is signed again for the region S3 names, and so is every
    read after it, with one warning that says how to configure it."""
    settings = S3Settings(bucket=_bucket_with(moto, "k", b"hello"), endpoint=s3proxy.url)
    moved = {"x-amz-bucket-region": "eu-west-1"}
    async with S3Backend.connect(settings) as s3:
        s3proxy.add(
            Fault(key_endswith("k"), times=1, status=301, code="PermanentRedirect", headers=moved)
        )
        assert await s3.read("k", 10) == b"hello"
        assert await s3.read("k", 10) == b"hello"
    regions = ["/eu-west-1/" in unquote(r.query) for r in s3proxy.requests if r.key.endswith("/k")]
    assert regions == [False, True, True]
    assert "set --s3-region eu-west-1" in caplog.text
