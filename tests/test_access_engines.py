"""Real engines pull through the cache while the origin decides who may pull.

The origin is `token_origin` (the CNCF registry with token auth: alice may pull
team-a/*, bob team-b/*, anyone public/*). The cache runs as a process of its own
(`registry-local serve --log-level debug`) with that origin as an upstream marked
`authorize_at_origin`, filling with its own origin credentials (cache/cache-pw).
Each test checks what the engine got, what the cache's access metrics say
decided it, which requests the cache answered (its request log), and that the
debug log holds no password, Basic value or token any engine sent.

Where an engine gives up on a mirror it goes to the registry it names: Docker
Hub for dockerd (a refused proxy connection in the sealed environment), the
origin itself for containerd.
"""

from __future__ import annotations

import asyncio
import base64
import re
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from registry_local.access.tokens import TOKEN_PREFIX

from .support.engines import (
    Ctr,
    Docker,
    Podman,
    private_dir,
    run_containerd,
    run_dockerd,
    write_auths,
    write_hosts_toml,
)
from .support.harness import metric
from .support.processes import StderrLog, in_thread, serving, skopeo
from .support.token_origin import PASSWORDS, TokenOrigin, token_origin

pytestmark = pytest.mark.tool("docker-registry")

HUB = "https://index.docker.io/v1/"  # docker's key for Docker Hub in config.json
HUB_UNREACHABLE = b'Get "https://registry-1.docker.io/v2/": proxyconnect tcp'
DECISIONS = "registry_local_access_decisions_total"
# One line of the cache's request log: "GET /v2/team-a/app/manifests/v1 200 event=request"
_REQUEST = re.compile(r"registry_local\.access: (\S+) (\S+) (\d{3}) event=request")


@dataclass(frozen=True)
class Answered:
    """A request the cache answered, read from its request log."""

    method: str
    path: str
    status: int

    @property
    def repository(self) -> str:
        return re.sub(r"^/v2/|/(manifests|blobs|tags)/.*$", "", self.path.split("?")[0])


@dataclass
class Cache:
    """The cache process: its URL, and its stderr once it stopped."""

    url: str
    log: StderrLog

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")

    async def decided(self, by: str, verdict: str) -> float:
        """registry_local_access_decisions_total{by, verdict} now."""
        return await metric(self.url, DECISIONS, by=by, verdict=verdict)

    def answered(self) -> list[Answered]:
        """Every request the cache answered (after it stopped)."""
        text = self.log.data.decode(errors="replace")
        return [Answered(m, p, int(s)) for m, p, s in _REQUEST.findall(text)]

    def tokens_issued(self) -> int:
        """Tokens the cache's realm, /-/token, handed out."""
        return sum(a.path.startswith("/-/token") and a.status == 200 for a in self.answered())

    def served(self, repository: str) -> list[Answered]:
        """Manifests and blobs of `repository` the cache answered with content."""
        return [
            a
            for a in self.answered()
            if a.repository == repository and a.status == 200 and "/tags/" not in a.path
        ]


def _cache_config(origin: TokenOrigin, workdir: Path, match: str) -> Path:
    """The cache's config file (and an empty store beside it): one upstream, the
    origin, for registry `match`, deciding pulls; its own credentials for fills."""
    (workdir / "store").mkdir(parents=True)
    credentials = workdir / "origin-credentials"
    credentials.write_text(f"cache:{PASSWORDS['cache']}\n")
    config = workdir / "registry-local.yaml"
    config.write_text(
        "upstreams:\n"
        f"  - match: {match!r}\n"
        f"    url: {origin.url}\n"
        f"    credentials_file: {credentials}\n"
        "    authorize_at_origin: true\n"
    )
    return config


@asynccontextmanager
async def cache_before(origin: TokenOrigin, workdir: Path, match: str) -> AsyncIterator[Cache]:
    """registry-local serving `origin`'s images for registry `match` (`*`: any),
    the origin deciding every pull with the client's own credentials. After the
    block, its log is checked for secrets."""
    config = _cache_config(origin, workdir, match)
    log = StderrLog()
    cache = Cache("", log)
    async with serving(
        "--config",
        str(config),
        "--fs-root",
        str(workdir / "store"),
        "--cache-dir",
        str(workdir / "cache"),
        "--log-level",
        "debug",
        log=log,
    ) as (url, _):
        cache.url = url
        yield cache
    _assert_no_secret(log.data.decode(errors="replace"))


def _assert_no_secret(text: str) -> None:
    """No password, Basic value or bearer token of anyone in the cache's log."""
    assert "DEBUG" in text, "the cache logged nothing at debug level"
    for user, password in PASSWORDS.items():
        encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
        assert password not in text and encoded not in text, user
    assert "Og==" not in text  # base64(":"), containers/image's "no credentials"
    assert "eyJ" not in text  # a JWT of the origin's token server
    assert not re.search(re.escape(TOKEN_PREFIX) + r"[A-Za-z0-9_-]", text)  # one of the cache's
    assert not re.search(r"Bearer (?!realm)\S", text)
    assert not re.search(r"(access_)?token[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9._~+/-]{16,}", text)


@pytest.fixture
async def origin(tmp_path: Path) -> AsyncIterator[TokenOrigin]:
    async with token_origin(tmp_path) as served:
        yield served


def _failed(result: subprocess.CompletedProcess[str] | subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode != 0, "it should have failed"
    err = result.stderr
    return err.decode(errors="replace") if isinstance(err, bytes) else err


# skopeo


def _skopeo(
    cache: Cache, workdir: Path, command: str, name: str, user: str | None
) -> subprocess.CompletedProcess[str]:
    """`skopeo inspect` or `copy` of NAME:v1 from the cache, as `user` (None:
    no credentials). It blocks: call it in a thread."""
    workdir.mkdir(parents=True)
    source = f"docker://{cache.host}/{name}:v1"
    if command == "inspect":  # inspect spells its source options without `src-`
        creds = ["--no-creds"] if user is None else ["--creds", f"{user}:{PASSWORDS[user]}"]
        args = ["inspect", "--raw", "--tls-verify=false", *creds, source]
    else:
        creds = ["--src-no-creds"] if user is None else ["--src-creds", f"{user}:{PASSWORDS[user]}"]
        args = ["copy", "--src-tls-verify=false", *creds, source, f"dir:{workdir / 'out'}"]
    return skopeo(workdir, *args, check=False)


@pytest.mark.parametrize("command", ["inspect", "copy"])
async def test_skopeo_pulls_what_the_origin_lets_its_credentials_pull(
    command: str, origin: TokenOrigin, tmp_path: Path
) -> None:
    async with cache_before(origin, tmp_path / "cache", "*") as cache:

        async def pull(user: str | None, name: str) -> subprocess.CompletedProcess[str]:
            workdir = tmp_path / f"{user}-{name.replace('/', '-')}"
            return await asyncio.to_thread(_skopeo, cache, workdir, command, name, user)

        alice = await pull("alice", "team-a/app")
        assert alice.returncode == 0, alice.stderr
        # team-a/app is in the cache now; bob may still not have it.
        assert "denied" in _failed(await pull("bob", "team-a/app"))
        assert await cache.decided("origin", "refused") >= 1
        assert "unauthorized" in _failed(await pull(None, "team-a/app"))
        public = await pull(None, "public/app")
        assert public.returncode == 0, public.stderr
        assert await cache.decided("origin", "granted") >= 2
    assert cache.served("team-a/app") and cache.served("public/app")


# podman


async def test_podman_login_then_pull_is_decided_by_the_origin(
    origin: TokenOrigin, tmp_path: Path
) -> None:
    async with cache_before(origin, tmp_path, "*") as cache:
        reference = f"{cache.host}/team-a/app:v1"
        for user in ("alice", "bob"):
            with private_dir("rl-podman-") as workdir:
                podman = Podman(workdir)
                login = ("login", "--tls-verify=false", "-u", user, "-p", PASSWORDS[user])
                await asyncio.to_thread(podman, *login, cache.host)
                pulled = await asyncio.to_thread(
                    podman.pull, reference, "--tls-verify=false", check=False
                )
            if user == "alice":
                assert pulled.returncode == 0, pulled.stderr
            else:
                assert "denied" in _failed(pulled)
        assert await cache.decided("origin", "granted") >= 1
        assert await cache.decided("origin", "refused") >= 1
    assert cache.served("team-a/app")


# dockerd


def _docker_as(dockerd: Docker, workdir: Path, auths: dict[str, tuple[str, str]]) -> Docker:
    """The CLI with a config.json of its own holding `auths`."""
    return dockerd.with_config(write_auths(workdir / "config.json", auths).parent)


async def test_dockerd_login_then_pull_is_decided_by_the_origin(
    origin: TokenOrigin, tmp_path: Path
) -> None:
    async with cache_before(origin, tmp_path / "cache", "*") as cache:
        daemon = {"insecure-registries": [cache.host]}
        async with in_thread(run_dockerd("", tmp_path, daemon)) as dockerd:
            reference = f"{cache.host}/team-a/app:v1"
            alice = _docker_as(dockerd, tmp_path / "alice", {})
            await asyncio.to_thread(alice, "login", "-u", "alice", "-p", "alice-pw", cache.host)
            await asyncio.to_thread(alice, "pull", reference)
            await asyncio.to_thread(alice, "rmi", reference)
            bob = _docker_as(dockerd, tmp_path / "bob", {})
            await asyncio.to_thread(bob, "login", "-u", "bob", "-p", "bob-pw", cache.host)
            refused = await asyncio.to_thread(bob, "pull", reference, check=False)
            assert "denied" in _failed(refused)
        assert await cache.decided("origin", "refused") >= 1
    assert cache.served("team-a/app")


async def test_dockerd_with_the_cache_as_registry_mirror(
    origin: TokenOrigin, tmp_path: Path
) -> None:
    """Docker Hub names (team-a/app) through `registry-mirrors`: dockerd sends
    the cache its Docker Hub credentials, and goes to Docker Hub when refused."""
    async with cache_before(origin, tmp_path / "cache", "*") as cache:
        daemon = {"registry-mirrors": [cache.url]}
        async with in_thread(run_dockerd("", tmp_path, daemon)) as dockerd:
            alice = _docker_as(dockerd, tmp_path / "alice", {HUB: ("alice", "alice-pw")})
            await asyncio.to_thread(alice, "pull", "team-a/app:v1")
            await asyncio.to_thread(alice, "rmi", "team-a/app:v1")

            refused_before = await cache.decided("origin", "refused")
            bob = _docker_as(dockerd, tmp_path / "bob", {HUB: ("bob", "bob-pw")})
            fell_back = await asyncio.to_thread(bob, "pull", "team-a/app:v1", check=False)
            assert HUB_UNREACHABLE.decode() in _failed(fell_back)
            assert await cache.decided("origin", "refused") > refused_before

            # No credentials: the cache's Bearer challenge keeps dockerd on the
            # mirror (it gets an anonymous token), where a Basic one would not.
            nobody = _docker_as(dockerd, tmp_path / "nobody", {})
            await asyncio.to_thread(nobody, "pull", "public/app:v1")
    assert cache.served("team-a/app") and cache.served("public/app")
    assert cache.tokens_issued() >= 3


# containerd


async def test_ctr_through_the_cache_as_mirror_of_the_origin(
    origin: TokenOrigin, tmp_path: Path
) -> None:
    """hosts.toml names the cache first, then the origin; the cache matches the
    origin's host, which containerd names with ?ns=."""
    origin_host = origin.url.removeprefix("http://")
    async with (
        cache_before(origin, tmp_path / "cache", origin_host) as cache,
        in_thread(run_containerd("", tmp_path)) as (socket, hosts),
    ):
        write_hosts_toml(hosts, origin_host, origin.url, [cache.url])
        ctr = Ctr(socket, hosts)
        await asyncio.to_thread(
            ctr.pull, f"{origin_host}/team-b/app:v1", "--plain-http", user="bob:bob-pw"
        )
        by_containerd = origin.tokens.token_requests_by_agent
        asked_by_bob = by_containerd["bob", "containerd"]
        refused = await asyncio.to_thread(
            ctr.pull,
            f"{origin_host}/team-a/app:v1",
            "--plain-http",
            user="bob:bob-pw",
            check=False,
        )
        _failed(refused)
        assert await cache.decided("origin", "refused") >= 1
        # containerd asked the origin itself (after the cache refused), and it refused too.
        # (The cache asks the same token server for bob too, as aiohttp: not counted.)
        assert by_containerd["bob", "containerd"] > asked_by_bob

        await asyncio.to_thread(ctr.pull, f"{origin_host}/public/app:v1", "--plain-http")
    assert cache.served("team-b/app")
    assert cache.served("team-a/app") == []
    assert any("/blobs/" in a.path for a in cache.served("public/app"))
