"""What each real engine sends a registry (or a mirror) as Authorization.

Facts for per-repository access control, found with the programs of this
machine (skopeo 1.9, podman 4.3, dockerd 20.10, containerd 1.6) against a
`RecordingRegistry`: a registry whose `/v2/` answers a request without
Authorization with a 401 `Basic` challenge. Each test pins one fact; where an
engine gives up on a mirror it falls back to the public registry, which the
sealed environment turns into a refused proxy connection.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from registry_local.transfer.imagebuild import Image, Platform, build_image

from .support.engines import (
    Ctr,
    Podman,
    private_dir,
    run_containerd,
    run_dockerd,
    write_auths,
    write_hosts_toml,
)
from .support.processes import in_thread, skopeo
from .support.recording import RecordingRegistry, Seen, recording_registry

HUB = "https://index.docker.io/v1/"  # docker's key for Docker Hub in config.json
EMPTY_BASIC = "Basic Og=="  # base64(":"): containers/image's "no credentials"
REFUSALS = [401, 403, 404, 503]


def _image() -> Image:
    """A one-layer image unlike any other, so no engine has its blobs yet."""
    return build_image([{"id": uuid.uuid4().hex.encode()}], Platform("linux", "amd64"))


def _after_base(registry: RecordingRegistry) -> list[Seen]:
    """Every request but the anonymous `GET /v2/` probes."""
    return [seen for seen in registry.seen if seen.kind != "base"]


def _registries_conf(workdir: Path, mirror: str) -> Path:
    """docker.io mirrored by `mirror`, as deploy/podman/registries.conf does."""
    path = workdir / "registries.conf"
    path.write_text(
        'unqualified-search-registries = ["docker.io"]\n\n'
        '[[registry]]\nprefix = "docker.io"\nlocation = "docker.io"\n\n'
        f'[[registry.mirror]]\nlocation = "{mirror}"\ninsecure = true\n'
    )
    return path


# skopeo


@pytest.mark.parametrize("command", ["inspect", "copy"])
async def test_skopeo_asks_v2_anonymously_then_sends_basic_on_every_request(
    command: str, tmp_path: Path
) -> None:
    async with recording_registry(_image()) as registry:
        source = f"docker://{registry.host}/team-a/app:v1"
        options = ["--src-tls-verify=false", "--src-creds", "alice:pw"]
        if command == "inspect":
            # inspect spells its source options without `src-`; --raw skips the tags list
            args = ["inspect", "--raw", "--tls-verify=false", "--creds", "alice:pw", source]
        else:
            args = ["copy", *options, source, f"dir:{tmp_path / 'out'}"]
        await asyncio.to_thread(skopeo, tmp_path, *args)
    first, *rest = registry.seen
    assert (first.method, first.path, first.authorization, first.status) == (
        "GET",
        "/v2/",
        None,
        401,
    )
    assert rest and {(seen.kind, seen.user) for seen in rest} <= {
        ("manifest", "alice"),
        ("blob", "alice"),
    }
    assert registry.of_kind("manifest")


async def test_skopeo_without_credentials_sends_an_empty_basic(tmp_path: Path) -> None:
    async with recording_registry(_image()) as registry:
        await asyncio.to_thread(
            skopeo,
            tmp_path,
            "copy",
            "--src-tls-verify=false",
            "--src-authfile",
            str(tmp_path / "no-auth.json"),
            f"docker://{registry.host}/team-a/app:v1",
            f"dir:{tmp_path / 'out'}",
        )
    assert registry.seen[0].authorization is None
    assert {seen.authorization for seen in _after_base(registry)} == {EMPTY_BASIC}


# podman


async def test_podman_login_then_pull_sends_the_login_on_every_request() -> None:
    async with recording_registry(_image()) as registry:
        with private_dir("rl-podman-") as workdir:
            podman = Podman(workdir)
            login = "login", "--tls-verify=false", "-u", "alice", "-p", "pw", registry.host
            await asyncio.to_thread(podman, *login)
            assert [(s.path, s.user, s.status) for s in registry.seen] == [
                ("/v2/", None, 401),
                ("/v2/", "alice", 200),
            ]
            registry.seen.clear()
            await asyncio.to_thread(
                podman.pull, f"{registry.host}/team-a/app:v1", "--tls-verify=false"
            )
    assert registry.seen[0].authorization is None
    assert {seen.user for seen in _after_base(registry)} == {"alice"}


async def test_podman_does_not_send_docker_io_credentials_to_its_mirror() -> None:
    async with recording_registry(_image()) as registry:
        with private_dir("rl-podman-") as workdir:
            podman = Podman(workdir, _registries_conf(workdir, registry.host))
            write_auths(podman.auth_file, {"docker.io": ("bob", "pw")})
            await asyncio.to_thread(podman.pull, "docker.io/team-a/app:v1")
    assert registry.of_kind("blob")  # the pull went through the mirror
    assert {seen.authorization for seen in _after_base(registry)} == {EMPTY_BASIC}


async def test_podman_sends_the_mirror_hosts_own_credentials_to_it() -> None:
    async with recording_registry(_image()) as registry:
        with private_dir("rl-podman-") as workdir:
            podman = Podman(workdir, _registries_conf(workdir, registry.host))
            write_auths(
                podman.auth_file, {"docker.io": ("bob", "pw"), registry.host: ("carol", "pw")}
            )
            await asyncio.to_thread(podman.pull, "docker.io/team-a/app:v1")
    assert {seen.user for seen in _after_base(registry)} == {"carol"}


@pytest.mark.parametrize("status", REFUSALS)
async def test_podman_falls_back_to_docker_io_when_its_mirror_refuses_the_manifest(
    status: int,
) -> None:
    async with recording_registry(_image(), refuse=status) as registry:
        with private_dir("rl-podman-") as workdir:
            podman = Podman(workdir, _registries_conf(workdir, registry.host))
            write_auths(podman.auth_file, {"docker.io": ("bob", "pw")})
            result = await asyncio.to_thread(podman.pull, "docker.io/team-a/app:v1", check=False)
    assert result.returncode != 0
    assert "Mirrors also failed" in result.stderr
    assert 'Get "https://registry-1.docker.io/v2/": proxyconnect tcp' in result.stderr
    manifests = registry.of_kind("manifest")
    assert manifests and {(s.status, s.authorization) for s in manifests} == {(status, EMPTY_BASIC)}


# dockerd


async def test_dockerd_login_then_pull_sends_the_login_on_every_request(tmp_path: Path) -> None:
    async with recording_registry(_image()) as registry:
        daemon = {"insecure-registries": [registry.host]}
        async with in_thread(run_dockerd("", tmp_path, daemon)) as dockerd:
            docker = dockerd.with_config(tmp_path / "docker-config")
            login = "login", "-u", "alice", "-p", "pw", registry.host
            await asyncio.to_thread(docker, *login)
            registry.seen.clear()
            await asyncio.to_thread(docker, "pull", f"{registry.host}/team-a/app:v1")
    first, *rest = registry.seen
    assert (first.path, first.authorization) == ("/v2/", None)
    assert rest and {seen.user for seen in rest} == {"alice"}
    assert [s.method for s in rest if s.kind == "manifest"] == ["HEAD", "GET"]


async def test_dockerd_sends_docker_hub_credentials_to_its_mirror(tmp_path: Path) -> None:
    async with recording_registry(_image()) as registry:
        daemon = {"registry-mirrors": [registry.url]}
        async with in_thread(run_dockerd("", tmp_path, daemon)) as dockerd:
            for name, auths in (
                ("hub", {HUB: ("bob", "pw")}),
                # The mirror host's own entry changes nothing: the CLI sends
                # the daemon only the credentials of the image's registry.
                ("both", {HUB: ("bob", "pw"), registry.host: ("carol", "pw")}),
            ):
                registry.seen.clear()
                docker = dockerd.with_config(
                    write_auths(tmp_path / name / "config.json", auths).parent
                )
                await asyncio.to_thread(docker, "pull", "team-a/app:v1")
                await asyncio.to_thread(docker, "rmi", "team-a/app:v1")
                assert registry.seen[0].authorization is None
                assert registry.of_kind("blob")
                assert {seen.user for seen in _after_base(registry)} == {"bob"}, name


async def test_dockerd_without_hub_credentials_skips_a_mirror_that_challenges(
    tmp_path: Path,
) -> None:
    """A 401 on `/v2/` and nothing to answer it with: dockerd asks the mirror
    nothing more and goes to Docker Hub, even with credentials for the mirror."""
    async with recording_registry(_image()) as registry:
        daemon = {"registry-mirrors": [registry.url]}
        async with in_thread(run_dockerd("", tmp_path, daemon)) as dockerd:
            for name, auths in (
                ("none", {}),
                ("mirror", {registry.host: ("carol", "pw"), registry.url: ("dave", "pw")}),
            ):
                registry.seen.clear()
                docker = dockerd.with_config(
                    write_auths(tmp_path / name / "config.json", auths).parent
                )
                result = await asyncio.to_thread(docker, "pull", "team-a/app:v1", check=False)
                assert result.returncode != 0
                assert b'Get "https://registry-1.docker.io/v2/": proxyconnect' in result.stderr
                assert [(s.path, s.authorization) for s in registry.seen] == [("/v2/", None)], name


async def test_dockerd_falls_back_to_docker_hub_when_its_mirror_refuses_the_manifest(
    tmp_path: Path,
) -> None:
    async with recording_registry(_image()) as registry:
        daemon = {"registry-mirrors": [registry.url]}
        async with in_thread(run_dockerd("", tmp_path, daemon)) as dockerd:
            docker = dockerd.with_config(
                write_auths(tmp_path / "config.json", {HUB: ("bob", "pw")}).parent
            )
            for status in REFUSALS:
                registry.seen.clear()
                registry.refuse = status
                result = await asyncio.to_thread(docker, "pull", "team-a/app:v1", check=False)
                assert result.returncode != 0
                assert b'Get "https://registry-1.docker.io/v2/": proxyconnect' in result.stderr
                manifests = [(s.method, s.status, s.user) for s in registry.of_kind("manifest")]
                assert manifests == [("HEAD", status, "bob"), ("GET", status, "bob")], status


# containerd


async def test_ctr_sends_user_only_after_a_challenge_on_each_request(tmp_path: Path) -> None:
    async with recording_registry(_image(), challenge_all=True) as registry:
        async with in_thread(run_containerd("", tmp_path)) as (socket, hosts):
            ctr = Ctr(socket, hosts)
            await asyncio.to_thread(
                ctr.pull, f"{registry.host}/team-a/app:v1", "--plain-http", user="alice:pw"
            )
            assert not registry.of_kind("base")  # containerd never asks /v2/
            manifests = [(s.method, s.user, s.status) for s in registry.of_kind("manifest")]
            assert manifests == [
                ("HEAD", None, 401),
                ("HEAD", "alice", 200),
                ("GET", None, 401),
                ("GET", "alice", 200),
            ]
            assert {(s.user, s.status) for s in registry.of_kind("blob")} == {("alice", 200)}
            # Without --user, the challenge is the end of it.
            registry.seen.clear()
            failed = await asyncio.to_thread(
                ctr.pull, f"{registry.host}/team-a/app:v2", "--plain-http", check=False
            )
            assert failed.returncode != 0 and "401 Unauthorized" in failed.stderr
            assert [(s.method, s.user) for s in registry.seen] == [("HEAD", None)]


async def test_ctr_sends_user_to_the_mirror_naming_the_origin_in_ns(tmp_path: Path) -> None:
    image = _image()
    async with (
        recording_registry(image, challenge_all=True) as origin,
        recording_registry(image, challenge_all=True) as mirror,
        in_thread(run_containerd("", tmp_path)) as (socket, hosts),
    ):
        write_hosts_toml(hosts, origin.host, origin.url, [mirror.url])
        await asyncio.to_thread(
            Ctr(socket, hosts).pull, f"{origin.host}/team-a/app:v1", "--plain-http", user="alice:pw"
        )
    assert origin.seen == []
    assert {seen.query for seen in mirror.seen} == {f"ns={origin.host}"}
    assert {seen.user for seen in mirror.seen if seen.status == 200} == {"alice"}
    assert mirror.of_kind("blob")


@pytest.mark.parametrize("status", REFUSALS)
async def test_ctr_falls_back_to_the_origin_when_the_mirror_refuses_manifests(
    status: int, tmp_path: Path
) -> None:
    """Per request: manifests come from the origin, blobs still from the mirror."""
    image = _image()
    async with (
        recording_registry(image, challenge_all=True) as origin,
        recording_registry(image, refuse=status, challenge_all=True) as mirror,
        in_thread(run_containerd("", tmp_path)) as (socket, hosts),
    ):
        write_hosts_toml(hosts, origin.host, origin.url, [mirror.url])
        await asyncio.to_thread(
            Ctr(socket, hosts).pull, f"{origin.host}/team-a/app:v1", "--plain-http", user="alice:pw"
        )
    refused = [s for s in mirror.of_kind("manifest") if s.authorization is not None]
    assert refused and {(s.user, s.status) for s in refused} == {("alice", status)}
    # A 401 to credentials is asked again before containerd moves on.
    assert (len(refused) > 2) == (status == 401)
    assert {(s.user, s.status) for s in mirror.of_kind("blob")} == {("alice", 200)}
    assert [(s.method, s.user, s.status) for s in origin.seen] == [
        ("HEAD", None, 401),
        ("HEAD", "alice", 200),
        ("GET", None, 401),
        ("GET", "alice", 200),
    ]
    assert {s.kind for s in origin.seen} == {"manifest"}
