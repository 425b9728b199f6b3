"""Origin credentials the way engines find them: docker config, helpers, ECR.

The origin is Debian's docker-registry (the CNCF registry) with htpasswd auth,
behind a counting proxy. Credential helpers are small programs the tests write;
ECR's token comes from moto's ECR API, its password written into the origin's
htpasswd.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from registry_local.config import OriginSettings, StoreSettings
from registry_local.transfer.imagebuild import Image, build_image

from .support.harness import StartCache, fetch, htpasswd_origin, pull_image, s3_settings, seed
from .support.processes import require_tool, run_docker_registry, sealed_env
from .support.s3proxy import S3Proxy
from .support.tokens import TokenGate

USER, PASSWORD = "puller", "s3cret-pass"
ECR_PASSWORD = "123456789012-auth-token"  # what moto's GetAuthorizationToken hands out


@pytest.fixture
def image() -> Image:
    return build_image([{"a.bin": os.urandom(100 * 1024)}])


def _host(url: str) -> str:
    return url.removeprefix("http://")


def _store(moto: str, bucket: str, **origin: Any) -> StoreSettings:
    return s3_settings(moto, bucket, upstreams=(OriginSettings(match="*", **origin),))


def _docker_config(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(json.dumps(doc))
    return path


def _auth(user: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def _helper(bin_dir: Path, name: str, script: str) -> None:
    """A docker-credential-NAME program on PATH (the tests put bin_dir there)."""
    program = bin_dir / f"docker-credential-{name}"
    program.write_text("#!/bin/sh\n" + script)
    program.chmod(program.stat().st_mode | stat.S_IXUSR)


async def test_a_docker_config_auths_entry_is_used_and_read_again_when_it_changes(
    start_cache: StartCache,
    tmp_path: Path,
    moto: str,
    bucket: str,
    image: Image,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with htpasswd_origin(tmp_path, image, USER, PASSWORD) as url:
        config = _docker_config(
            tmp_path / "config.json", {"auths": {_host(url): _auth(USER, "wrong")}}
        )
        cache = await start_cache(store=_store(moto, bucket, url=url, auth_file=config))
        status, _, body = await fetch(f"{cache.url}/v2/team/app/manifests/v1")
        assert status == 503 and f"upstream registry at {url}".encode() in body
        assert b"wrong" not in body

        # Fixed in the file: taken up without a restart.
        _docker_config(config, {"auths": {f"https://{_host(url)}/v1/": _auth(USER, PASSWORD)}})
        with caplog.at_level(logging.DEBUG):
            assert await pull_image(cache.url, "team/app", "v1") == _expected(image)
        _, _, metrics = await fetch(f"{cache.url}/metrics")
    secrets = (PASSWORD, _auth(USER, PASSWORD)["auth"])
    assert not any(s in caplog.text or s.encode() in metrics for s in secrets)
    assert PASSWORD not in repr(cache.settings.store.upstreams)


async def test_a_credential_helper_is_asked_with_the_registry_host(
    start_cache: StartCache,
    tmp_path: Path,
    moto: str,
    bucket: str,
    image: Image,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    asked = tmp_path / "asked"
    _helper(
        bin_dir,
        "vault",
        f'[ "$1" = get ] || exit 2\ncat > {asked}\n'
        f'echo \'{{"ServerURL": "x", "Username": "{USER}", "Secret": "{PASSWORD}"}}\'\n',
    )
    async with htpasswd_origin(tmp_path, image, USER, PASSWORD) as url:
        config = _docker_config(
            tmp_path / "config.json",
            {"auths": {_host(url): _auth(USER, "not-this")}, "credHelpers": {_host(url): "vault"}},
        )
        cache = await start_cache(store=_store(moto, bucket, url=url, auth_file=config))
        assert await pull_image(cache.url, "team/app", "v1") == _expected(image)
    assert asked.read_text() == _host(url)  # credHelpers win over auths, as in docker


async def test_an_identity_token_is_exchanged_at_the_token_realm(
    start_cache: StartCache, tmp_path: Path, moto: str, bucket: str, image: Image
) -> None:
    """What `docker login` leaves for registries with OAuth2: an identitytoken,
    sent to the realm as a refresh token (POST), never as a password."""
    root = tmp_path / "origin"
    await seed(StoreSettings(s3=None, fs_root=root), "team/app", "v1", image)
    async with run_docker_registry(tmp_path, fs_root=root) as registry:
        gate = await TokenGate(registry, USER, PASSWORD, refresh_token="refresh-me").start()
        try:
            entry = {"identitytoken": "refresh-me"}
            config = _docker_config(tmp_path / "config.json", {"auths": {_host(gate.url): entry}})
            cache = await start_cache(store=_store(moto, bucket, url=gate.url, auth_file=config))
            assert await pull_image(cache.url, "team/app", "v1") == _expected(image)
            assert gate.tokens_issued["repository:team/app:pull"] >= 1
        finally:
            await gate.close()


@pytest.mark.parametrize(
    ("script", "logged"),
    [
        ('echo "vault is sealed" >&2\nexit 1\n', "vault is sealed"),
        ("exec sleep 60\n", "gave no answer in 0.5 s"),
    ],
    ids=["failing", "hanging"],
)
async def test_a_helper_that_fails_or_hangs_is_a_clear_error(
    start_cache: StartCache,
    tmp_path: Path,
    moto: str,
    bucket: str,
    image: Image,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    script: str,
    logged: str,
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    _helper(bin_dir, "broken", script)
    async with htpasswd_origin(tmp_path, image, USER, PASSWORD) as url:
        config = _docker_config(tmp_path / "config.json", {"credsStore": "broken"})
        store = _store(moto, bucket, url=url, auth_file=config, helper_timeout=0.5)
        cache = await start_cache(store=store)
        with caplog.at_level(logging.WARNING):
            status, _, body = await fetch(f"{cache.url}/v2/team/app/manifests/v1")
    assert status == 503 and b"UNAVAILABLE" in body
    assert logged in caplog.text and "docker-credential-broken" in caplog.text
    assert b"Traceback" not in body


async def test_ecr_tokens_come_from_the_aws_api_and_are_fetched_again_when_expired(
    start_cache: StartCache,
    tmp_path: Path,
    moto: str,
    bucket: str,
    image: Image,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """moto's tokens are born expired (2015): each use asks the API again, as a
    real token is asked again five minutes before its twelve hours are up."""
    ecr = await S3Proxy(moto).start()  # counts the ECR API calls
    monkeypatch.setenv("AWS_ENDPOINT_URL_ECR", ecr.url)
    try:
        async with htpasswd_origin(tmp_path, image, "AWS", ECR_PASSWORD) as url:
            cache = await start_cache(store=_store(moto, bucket, url=url, ecr=True))
            assert await pull_image(cache.url, "team/app", "v1") == _expected(image)
        calls = [r for r in ecr.requests if r.method == "POST"]
        assert len(calls) >= 2  # fetched, expired, fetched again
    finally:
        await ecr.close()


async def test_the_debian_ecr_helper_runs_through_the_helper_protocol(
    start_cache: StartCache,
    tmp_path: Path,
    moto: str,
    bucket: str,
    image: Image,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Amazon's docker-credential-ecr-login (Debian's package) cannot be pointed at
    a local ECR API: for this registry it answers "credentials not found", which
    means anonymous, as docker takes it; the origin wants a password, so clients
    get the clear 503 naming the origin. A shim on PATH records the call."""
    helper = require_tool("docker-credential-ecr-login")
    for name, value in sealed_env().items():  # it must not reach beyond loopback
        monkeypatch.setenv(name, value)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    calls = tmp_path / "calls"
    _helper(bin_dir, "ecr-login", f'echo "$1" >> {calls}\nexec {helper} "$@"\n')
    async with htpasswd_origin(tmp_path, image, USER, PASSWORD) as url:
        doc = {"credHelpers": {_host(url): "ecr-login"}}
        config = _docker_config(tmp_path / "config.json", doc)
        cache = await start_cache(store=_store(moto, bucket, url=url, auth_file=config))
        status, _, body = await fetch(f"{cache.url}/v2/team/app/manifests/v1")
    assert calls.read_text().split() == ["get"]
    assert status == 503 and f"upstream registry at {url}".encode() in body


def test_the_config_takes_auth_files_and_ecr_per_origin(tmp_path: Path) -> None:
    from registry_local.cli import _parser
    from registry_local.config import load
    from registry_local.errors import ConfigError

    config = _docker_config(tmp_path / "config.json", {"auths": {}})
    file = tmp_path / "c.yaml"
    file.write_text(
        "upstreams:\n"
        "  - match: ecr\n    url: https://123456789012.dkr.ecr.eu-west-1.amazonaws.com\n"
        "    credentials: ecr\n"
        f"  - match: ghcr.io\n    url: https://ghcr.io\n    auth_file: {config}\n"
    )
    args = ["serve", "--config", str(file), "--upstream", "http://127.0.0.1:1"]
    settings = load(_parser().parse_args([*args, "--upstream-auth-file", str(config)]), {})
    ecr, ghcr, default = settings.store.upstreams
    assert (ecr.ecr, ghcr.auth_file, default.auth_file) == (True, config, config)
    with pytest.raises(ConfigError, match="cannot read upstream auth file"):
        load(_parser().parse_args([*args, "--upstream-auth-file", "/nonexistent"]), {})
    file.write_text("upstreams:\n  - match: x\n    url: https://x\n    credentials: magic\n")
    with pytest.raises(ConfigError, match="only 'ecr'"):
        load(_parser().parse_args(["serve", "--config", str(file)]), {})


def _expected(image: Image) -> dict[str, bytes]:
    return {str(d): data for d, data in [*image.blobs.items(), *image.manifests.items()]}
