"""Security defaults: refusing exposed writes, authentication, TLS, no leaked secrets."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest

from registry_local.config import StoreSettings
from registry_local.oci.digest import Digest
from registry_local.oci.mediatypes import OCI_MANIFEST
from registry_local.transfer.imagebuild import build_image
from registry_local.transfer.oci_layout import write_oci_layout

from .support.harness import StartCache, pull_image, seed
from .support.images import blob_key
from .support.processes import AWS_ENV, StderrLog, sealed_env, serving, skopeo
from .support.s3proxy import Fault, S3Proxy, key_endswith

PASSWORD = "correct horse battery staple"
TOKEN = "tok-5f1c0a0d9b8e4a37b2c1"
LEGACY = "svc:0123456789abcdef0123"  # a token with a colon, from before tokens had names
# TEST-NET-1: not on any interface here, so nothing could be exposed even by a bug.
NOT_LOOPBACK = "192.0.2.1:5999"


@pytest.fixture
def credentials(tmp_path: Path) -> tuple[Path, Path]:
    htpasswd = tmp_path / "htpasswd"
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    htpasswd.write_text(f"# CI pushers\nci:{hashed}\n")
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN}\n{LEGACY}\n")
    return htpasswd, tokens


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "registry_local", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=sealed_env(),
    )


def test_refuses_to_expose_writes_or_credentials(
    credentials: tuple[Path, Path], certificate: tuple[Path, Path]
) -> None:
    htpasswd, _ = credentials
    cert, _ = certificate
    cases = [
        (["--allow-push"], "needs authentication"),
        (["--warm-endpoint"], "needs authentication"),
        (["--allow-push", "--auth-htpasswd", str(htpasswd)], "in clear text"),
        (["--tls-cert", str(cert)], "go together"),
    ]
    for args, message in cases:
        result = _serve("--listen", NOT_LOOPBACK, *args)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    md5 = htpasswd.with_name("md5")
    md5.write_text("ci:$apr1$abc$def\n")
    result = _serve("--auth-htpasswd", str(md5))
    assert result.returncode == 2 and "only bcrypt" in result.stderr


async def test_authentication_guards_the_api(
    start_cache: StartCache, credentials: tuple[Path, Path], direct_store: StoreSettings
) -> None:
    htpasswd, tokens = credentials
    image = build_image([{"f": b"guarded"}])
    await seed(direct_store, "app", "v1", image)
    cache = await start_cache(auth_htpasswd=htpasswd, auth_token_file=tokens)

    async def get(path: str, authorization: str | None = None) -> tuple[int, dict[str, Any], bytes]:
        headers = {"Authorization": authorization} if authorization else {}
        async with (
            aiohttp.ClientSession() as session,
            session.get(cache.url + path, headers=headers) as response,
        ):
            return response.status, dict(response.headers), await response.read()

    basic = "Basic " + base64.b64encode(f"ci:{PASSWORD}".encode()).decode()
    wrong = "Basic " + base64.b64encode(b"ci:guess").decode()
    status, headers, body = await get("/v2/")
    assert status == 401 and json.loads(body)["errors"][0]["code"] == "UNAUTHORIZED"
    assert (
        headers["WWW-Authenticate"] == 'Basic realm="registry-local", Bearer realm="registry-local"'
    )
    for authorization in (wrong, "Bearer nope-nope-nope-nope", "Basic !!!", "Digest x"):
        status, _, body = await get("/v2/app/manifests/v1", authorization)
        assert status == 401 and b"guess" not in body and b"nope" not in body
    for authorization in (basic, basic, f"Bearer {TOKEN}", f"Bearer {LEGACY}"):
        assert (await get("/v2/app/manifests/v1", authorization))[0] == 200  # basic twice:
    # the remembered path. A token is its whole line: a part of it is not one.
    assert (await get("/v2/app/manifests/v1", "Bearer 0123456789abcdef0123"))[0] == 401
    for open_path in ("/metrics", "/healthz", "/readyz"):
        assert (await get(open_path))[0] == 200
    # Credentials first, as before access control: a bad name or the token
    # realm of access control is no way around the 401.
    for path in ("/v2/Bad_Name/manifests/v1", "/-/token"):
        status, _, body = await get(path)
        assert status == 401 and b"Bad_Name" not in body, path


async def test_push_and_pull_over_tls_with_credentials(
    start_cache: StartCache,
    credentials: tuple[Path, Path],
    certificate: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    htpasswd, _ = credentials
    cert, key = certificate
    cache = await start_cache(allow_push=True, auth_htpasswd=htpasswd, tls_cert=cert, tls_key=key)
    assert cache.url.startswith("https://")
    # Larger than the in-memory small-blob cache, so it goes out by the sendfile path.
    image = build_image([{"layer": os.urandom(400_000)}], media_type=OCI_MANIFEST)
    write_oci_layout(tmp_path / "src", image, "v1")
    address = cache.url.removeprefix("https://")
    certs = str(cert.parent)
    await asyncio.to_thread(
        skopeo,
        tmp_path,
        "copy",
        "--dest-cert-dir",
        certs,
        "--dest-creds",
        f"ci:{PASSWORD}",
        f"oci:{tmp_path / 'src'}:v1",
        f"docker://{address}/team/app:v1",
    )
    await asyncio.to_thread(
        skopeo,
        tmp_path,
        "copy",
        "--src-cert-dir",
        certs,
        "--src-creds",
        f"ci:{PASSWORD}",
        f"docker://{address}/team/app:v1",
        f"oci:{tmp_path / 'out'}:v1",
    )
    pulled = {f"sha256:{p.name}" for p in (tmp_path / "out" / "blobs" / "sha256").iterdir()}
    assert pulled == {str(d) for d in [*image.blobs, *image.manifests]}
    refused = await asyncio.to_thread(
        skopeo,
        tmp_path,
        "inspect",
        "--cert-dir",
        certs,
        f"docker://{address}/team/app:v1",
        check=False,
    )
    assert refused.returncode != 0 and "unauthorized" in refused.stderr.lower()
    # A blob over TLS: sendfile cannot run there, and the fallback sends every byte.
    layer = max(image.blobs, key=lambda d: len(image.blobs[d]))
    context = ssl.create_default_context(cafile=str(cert))
    basic = "Basic " + base64.b64encode(f"ci:{PASSWORD}".encode()).decode()
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{cache.url}/v2/team/app/blobs/{layer}", ssl=context, headers={"Authorization": basic}
        ) as response,
    ):
        assert Digest.of(await response.read()) == layer


async def test_secrets_stay_out_of_logs_metrics_and_errors(
    credentials: tuple[Path, Path], tmp_path: Path
) -> None:
    htpasswd, tokens = credentials
    stderr = StderrLog()
    async with serving(
        "--fs-root",
        str(tmp_path),  # an empty store
        "--cache-dir",
        str(tmp_path / "c"),
        "--auth-htpasswd",
        str(htpasswd),
        "--auth-token-file",
        str(tokens),
        "--log-format",
        "json",
        "--log-level",
        "debug",
        log=stderr,
    ) as (url, _):
        async with aiohttp.ClientSession() as session:
            bodies = []
            for authorization in (
                f"Bearer {TOKEN}x",
                "Basic " + base64.b64encode(f"ci:{PASSWORD}x".encode()).decode(),
                f"Bearer {TOKEN}",
            ):
                async with session.get(
                    f"{url}/v2/nothing/manifests/x", headers={"Authorization": authorization}
                ) as response:
                    bodies.append(await response.read())
            async with session.get(f"{url}/metrics") as response:
                metrics = await response.read()
    log = stderr.data
    encoded = base64.b64encode(f"ci:{PASSWORD}x".encode())
    for text in (log, metrics, *bodies):
        for secret in (PASSWORD.encode(), TOKEN.encode(), encoded):
            assert secret not in text


async def test_presigned_reads_stay_out_of_the_debug_log(
    direct_store: StoreSettings, bucket: str, s3proxy: S3Proxy, tmp_path: Path
) -> None:
    """S3 reads are GETs of presigned URLs, whose query carries the access key
    and a signature: not a line of the debug log shows one, failures included."""
    image = build_image([{"layer.bin": os.urandom(64 * 1024)}])
    await seed(direct_store, "team/app", "v1", image)
    # Three failures in a row: the fill retries, and says so. One blob only: the
    # failures of two would pass the circuit breaker's five, and whether a retry
    # then came after its cool-down would be timing's to decide.
    layer = max(image.blobs, key=lambda d: len(image.blobs[d]))
    s3proxy.add(Fault(key_endswith(blob_key(layer)), times=3, status=500, code="InternalError"))
    stderr = StderrLog()
    async with serving(
        "--s3-endpoint",
        s3proxy.url,
        "--s3-bucket",
        bucket,
        "--cache-dir",
        str(tmp_path / "c"),
        "--log-format",
        "json",
        "--log-level",
        "debug",
        log=stderr,
    ) as (url, _):
        pulled = await pull_image(url, "team/app", "v1")
    assert all(pulled[str(d)] == data for d, data in image.blobs.items())
    log = stderr.data
    assert b"500 InternalError" in log  # the failures were logged
    for secret in (
        b"X-Amz-Signature",
        b"X-Amz-Credential",
        b"Signature=",
        AWS_ENV["AWS_SECRET_ACCESS_KEY"].encode(),
    ):
        assert secret not in log
