"""An origin registry behind the bucket: misses fill S3 from it, once.

The origin is Debian's docker-registry (the CNCF registry) on a directory, with
htpasswd auth, or behind a bearer-token gate (tests/support/tokens.py). A
counting proxy (tests/support/s3proxy.py relays any HTTP) sits in front of it,
so tests see every request the origin got, and can take it down.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from registry_local.backing.opening import open_store
from registry_local.cli import _parser
from registry_local.config import OriginSettings, StoreSettings, load
from registry_local.origin.mapping import OriginMap, OriginRepo, open_origin_map
from registry_local.server.state import BLOBS
from registry_local.transfer.imagebuild import Image, build_image

from .support.harness import StartCache, fetch, htpasswd_origin, pull_image, s3_settings, seed
from .support.processes import run_docker_registry
from .support.s3proxy import Fault, S3Proxy, key_endswith
from .support.tokens import TokenGate

USER, PASSWORD = "puller", "s3cret-pass"


@dataclass
class Origin:
    proxy: S3Proxy  # counts what the origin was asked; faults take it down
    image: object
    tag_digest: str

    def gets(self) -> Counter[str]:
        return Counter(r.key for r in self.proxy.requests if r.method == "GET")


@pytest.fixture
def image() -> Image:
    return build_image([{"a.bin": os.urandom(300 * 1024)}, {"b.txt": b"from the origin"}])


@pytest.fixture
async def origin(tmp_path: Path, image: Image) -> AsyncIterator[Origin]:
    async with htpasswd_origin(tmp_path, image, USER, PASSWORD) as url:
        proxy = await S3Proxy(url).start()
        try:
            yield Origin(proxy, image, str(image.top))
        finally:
            await proxy.close()


def _store(moto: str, bucket: str, url: str, password: str = PASSWORD) -> StoreSettings:
    return s3_settings(moto, bucket, upstreams=(OriginSettings(url, "*", USER, password),))


async def test_a_cold_pull_fills_disk_and_the_bucket_once_and_other_hosts_read_the_bucket(
    start_cache: StartCache, tmp_path: Path, moto: str, bucket: str, origin: Origin, image: Image
) -> None:
    store = _store(moto, bucket, origin.proxy.url)
    first = await start_cache(tmp_path / "host-1", store)

    pulls = await asyncio.gather(*(pull_image(first.url, "team/app", "v1") for _ in range(5)))
    await first[BLOBS].settled()

    expected = {str(d): data for d, data in [*image.blobs.items(), *image.manifests.items()]}
    assert all(pull == expected for pull in pulls)
    blob_gets = {k: n for k, n in origin.gets().items() if "/blobs/" in k}
    assert sorted(blob_gets.values()) == [1] * len(image.blobs)  # each blob once, 5 clients
    async with open_store(s3_settings(moto, bucket)) as s3:  # written through, links too
        for digest, data in image.blobs.items():
            assert await s3.read_blob(digest, 1 << 30) == data
            assert await s3.blob_linked("team/app", digest)
        for digest in image.manifests:
            assert await s3.manifest_linked("team/app", digest)
        assert str(await s3.tag_target("team/app", "v1")) == origin.tag_digest
    metrics = first.metrics
    assert metrics.sample("origin_fetches", kind="blob") == len(image.blobs)
    assert metrics.sample("origin_written", kind="blob") == len(image.blobs)

    origin.proxy.requests.clear()
    second = await start_cache(tmp_path / "host-2", store)  # another host, same bucket
    assert await pull_image(second.url, "team/app", "v1") == expected
    assert origin.proxy.requests == []  # the bucket had it all, the tag fresh


async def test_a_broken_origin_body_resumes_from_the_byte_reached(
    start_cache: StartCache, moto: str, bucket: str, origin: Origin, image: Image
) -> None:
    layer = max(image.blobs, key=lambda d: len(image.blobs[d]))
    origin.proxy.add(Fault(lambda m, key: key.endswith(str(layer)), times=1, reset_at=100_000))
    cache = await start_cache(store=_store(moto, bucket, origin.proxy.url))

    pulled = await pull_image(cache.url, "team/app", "v1")

    assert pulled[str(layer)] == image.blobs[layer]
    gets = [r for r in origin.proxy.requests if r.key.endswith(str(layer)) and r.method == "GET"]
    assert len(gets) == 2 and 0 < gets[1].span[0] <= 100_000  # resumed, not from zero
    assert cache.metrics.sample("fill_retries") == 1


async def test_an_origin_that_ignores_range_is_resumed_by_skipping(
    start_cache: StartCache, moto: str, bucket: str, origin: Origin, image: Image
) -> None:
    layer = max(image.blobs, key=lambda d: len(image.blobs[d]))
    origin.proxy.add(Fault(lambda m, key: key.endswith(str(layer)), times=1, reset_at=100_000))
    # Every later request for the layer reaches the origin without its Range.
    origin.proxy.add(Fault(lambda m, key: key.endswith(str(layer)), drop_range=True))
    cache = await start_cache(store=_store(moto, bucket, origin.proxy.url))

    pulled = await pull_image(cache.url, "team/app", "v1")

    assert pulled[str(layer)] == image.blobs[layer]
    gets = [r for r in origin.proxy.requests if r.key.endswith(str(layer)) and r.method == "GET"]
    assert len(gets) == 2 and 0 < gets[1].span[0] <= 100_000  # asked to resume...
    assert cache.metrics.sample("fill_retries") == 1  # ...got it all, skipped the start


async def test_one_manifest_from_the_bucket_and_from_an_origin_at_once_links_both(
    start_cache: StartCache,
    direct_store: StoreSettings,
    s3proxy: S3Proxy,
    bucket: str,
    origin: Origin,
    image: Image,
) -> None:
    await seed(direct_store, "team/app", "v1", image)  # the bucket has team/app
    upstream = OriginSettings(origin.proxy.url, "mirror", USER, PASSWORD)
    cache = await start_cache(store=s3_settings(s3proxy.url, bucket, upstreams=(upstream,)))
    top = image.top
    # Hold the bucket's read of the manifest while the same digest is asked for
    # in mirror/team/app, which the bucket does not link: an origin fetch.
    held = Fault(key_endswith(f"/{top.hex}/data"), times=1, gate_at=0)
    s3proxy.add(held)
    from_bucket = asyncio.create_task(fetch(f"{cache.url}/v2/team/app/manifests/{top}"))
    await held.reached.wait()

    # It must not wait for the held bucket read (a timeout here is the failure).
    status, _, body = await asyncio.wait_for(
        fetch(f"{cache.url}/v2/mirror/team/app/manifests/{top}"), timeout=30
    )
    held.gate.set()

    assert (status, body) == (200, image.manifests[top])
    assert (await from_bucket)[0] == 200
    async with open_store(s3_settings(s3proxy.url, bucket)) as s3:
        assert await s3.manifest_linked("mirror/team/app", top)  # written through


async def test_known_tags_are_served_while_the_origin_is_down(
    start_cache: StartCache, tmp_path: Path, moto: str, bucket: str, origin: Origin, image: Image
) -> None:
    store = _store(moto, bucket, origin.proxy.url)
    first = await start_cache(tmp_path / "host-1", store, tag_ttl=0)
    expected = await pull_image(first.url, "team/app", "v1")
    await first[BLOBS].settled()
    origin.proxy.add(Fault(lambda method, key: True, status=503, code="Unavailable"))

    assert await pull_image(first.url, "team/app", "v1") == expected  # its last answer
    second = await start_cache(tmp_path / "host-2", store, tag_ttl=0)
    assert await pull_image(second.url, "team/app", "v1") == expected  # the bucket's tag
    assert second.metrics.sample("stale_served", kind="tag") >= 1

    status, _, body = await fetch(f"{second.url}/v2/team/app/manifests/never-pushed")
    assert status == 503 and b"UNAVAILABLE" in body  # unknown tag, origin down: say so


async def test_wrong_credentials_are_a_clear_error(
    start_cache: StartCache, tmp_path: Path, moto: str, bucket: str, origin: Origin
) -> None:
    cache = await start_cache(store=_store(moto, bucket, origin.proxy.url, password="wrong"))

    status, _, body = await fetch(f"{cache.url}/v2/team/app/manifests/v1")

    assert status == 503
    assert b"refused registry-local's credentials" in body
    assert f"upstream registry at {origin.proxy.url}".encode() in body  # names the origin
    assert PASSWORD.encode() not in body and b"wrong" not in body


async def test_bearer_tokens_are_fetched_once_per_scope_and_429_is_waited_out(
    start_cache: StartCache, tmp_path: Path, moto: str, bucket: str, image: Image
) -> None:
    root = tmp_path / "origin"
    await seed(StoreSettings(s3=None, fs_root=root), "team/app", "v1", image)
    async with run_docker_registry(tmp_path, fs_root=root) as registry:
        gate = await TokenGate(registry, USER, PASSWORD).start()
        proxy = await S3Proxy(gate.url).start()
        try:
            layer = max(image.blobs, key=lambda d: len(image.blobs[d]))
            proxy.add(Fault(lambda m, key: key.endswith(str(layer)), times=1, status=429))
            cache = await start_cache(store=_store(moto, bucket, proxy.url))

            pulled = await pull_image(cache.url, "team/app", "v1")
            await cache[BLOBS].settled()
        finally:
            await proxy.close()
            await gate.close()
    assert pulled[str(layer)] == image.blobs[layer]
    assert gate.tokens_issued == {"repository:team/app:pull": 1}
    layer_gets = [r for r in proxy.requests if r.key.endswith(str(layer)) and r.method == "GET"]
    assert len(layer_gets) == 2  # throttled once, then served


async def test_containerd_namespaces_and_name_prefixes_pick_the_origin() -> None:
    settings = [
        OriginSettings("http://127.0.0.1:1", "docker.io"),
        OriginSettings("http://127.0.0.1:2", "ghcr.io"),
    ]
    async with open_origin_map(settings) as origins:  # routing asks nothing of them
        hub, ghcr = (origins.repo_for("x", "docker.io"), origins.repo_for("x", "ghcr.io"))
        assert hub is not None and ghcr is not None and hub.origin is not ghcr.origin

        assert origins.repo_for("library/alpine", "docker.io") == OriginRepo(
            hub.origin, "library/alpine"
        )
        assert origins.repo_for("ghcr.io/org/app", None) == OriginRepo(ghcr.origin, "org/app")
        assert origins.repo_for("org/app", "ghcr.io") == OriginRepo(ghcr.origin, "org/app")
        assert origins.repo_for("library/alpine", None) is None  # pushed here: the bucket alone
        # Only a match by `?ns=` is echoed in OCI-Namespace.
        assert origins.chosen_by_namespace("org/app", "ghcr.io")
        assert not origins.chosen_by_namespace("ghcr.io/org/app", "quay.io")  # by name
        assert not origins.chosen_by_namespace("org/app", "quay.io")  # none chosen
    async with open_origin_map([OriginSettings("http://127.0.0.1:1", "*")]) as origins:
        assert not origins.chosen_by_namespace("org/app", "docker.io")
    assert not OriginMap()


def test_upstream_settings_come_from_flags_env_and_the_config_file(tmp_path: Path) -> None:

    creds = tmp_path / "creds"
    creds.write_text("robot:pa:ss\n")
    config = tmp_path / "config.yml"
    config.write_text(
        "upstreams:\n  - match: ghcr.io\n    url: http://127.0.0.1:7001\n"
        f"    credentials_file: {creds}\n"
    )
    args = _parser().parse_args(
        ["serve", "--config", str(config), "--upstream", "http://127.0.0.1:7000"]
    )
    env = {"REGISTRY_LOCAL_UPSTREAM_USERNAME": "hub", "REGISTRY_LOCAL_UPSTREAM_PASSWORD": "pw"}
    upstreams = load(args, env).store.upstreams

    assert [(u.match, u.url, u.username, u.password) for u in upstreams] == [
        ("ghcr.io", "http://127.0.0.1:7001", "robot", "pa:ss"),
        ("*", "http://127.0.0.1:7000", "hub", "pw"),
    ]
    assert "pa:ss" not in repr(upstreams)


def test_only_the_commands_that_use_an_origin_take_its_options(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("upstreams:\n  - match: ghcr.io\n    url: http://127.0.0.1:7001\n")
    warm = _parser().parse_args(
        ["warm", "--config", str(config), "--upstream", "http://127.0.0.1:7000", "team/app:v1"]
    )
    assert len(load(warm, {}).store.upstreams) == 2
    _parser().parse_args(["import", "src", "team/app:v1"])  # import and export: the bucket only
    with pytest.raises(SystemExit):
        _parser().parse_args(
            ["import", "--upstream", "http://127.0.0.1:7000", "src", "team/app:v1"]
        )
    exporter = _parser().parse_args(["export", "--config", str(config), "team/app:v1", "out"])
    assert load(exporter, {}).store.upstreams == ()


async def test_a_registry_neither_an_origin_nor_the_buckets_is_refused_at_once(
    start_cache: StartCache,
    tmp_path: Path,
    direct_store: StoreSettings,
    s3proxy: S3Proxy,
    bucket: str,
    image: Image,
) -> None:
    """containerd's `_default` mirror names every registry with ?ns=: by default
    (`--bucket-registries *`) any registry is looked up in the bucket, as before;
    with the bucket's registries listed, another one is answered 404 without
    asking S3, so that containerd goes to that registry itself."""
    await seed(direct_store, "team/pushed", "v1", image)
    manifest = "/v2/team/pushed/manifests/v1"
    as_before = await start_cache(tmp_path / "default", s3_settings(s3proxy.url, bucket))
    status, _, _ = await fetch(f"{as_before.url}{manifest}?ns=elsewhere.test")
    assert status == 200

    store = s3_settings(
        s3proxy.url,
        bucket,
        upstreams=(OriginSettings("http://127.0.0.1:9", "a.test"),),
        bucket_registries=("images.test",),
    )
    listed = await start_cache(tmp_path / "listed", store)
    s3proxy.requests.clear()
    for ns in ("elsewhere.test", "docker.io"):
        status, _, body = await fetch(f"{listed.url}{manifest}?ns={ns}")
        assert status == 404 and b"NAME_UNKNOWN" in body and ns.encode() in body
        status, _, _ = await fetch(f"{listed.url}/v2/team/pushed/blobs/{image.top}?ns={ns}")
        assert status == 404
    assert s3proxy.requests == []  # refused before the cache was asked
    for query in ("?ns=images.test", ""):  # the bucket's registry, and no registry named
        status, _, _ = await fetch(f"{listed.url}{manifest}{query}")
        assert status == 200
