"""Credentials for an origin registry, found the way engines find them.

Three sources, each a `Credentials` that the origin client asks before it
answers a challenge, and tells when the origin refused what it got (401):

- `Static`: USER:PASSWORD from --upstream-credentials or the environment;
- `AuthFile`: a docker `config.json` or containers `auth.json`: `credHelpers`
  for this registry first, then its `auths` entry (base64 `auth`, or an
  `identitytoken`), then `credsStore`, exactly the order docker follows. A
  helper is `docker-credential-<name> get`, found on PATH, given the registry
  host on stdin, with a timeout; its stderr goes into the error. The file is
  read again whenever it changes;
- `Ecr`: Amazon ECR's 12-hour token from the AWS API, through the same async
  AWS client as the S3 backend (standard credential chain; region from the
  registry host), fetched again before it expires and once more on a 401.

A secret never appears in a log line, an error or a repr: `Secret` hides it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import BackendError, BackendUnavailable, UpstreamDenied

__all__ = ["AuthFile", "Credentials", "Ecr", "Secret", "Static", "registry_keys"]

log = logging.getLogger(__name__)

_HELPER_REUSE = 300.0  # seconds a helper's answer is reused before asking again
_ECR_MARGIN = 300.0  # seconds before an ECR token expires that it is fetched anew
_ECR_HOST = re.compile(r"(\d{12})\.dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?")
_DOCKER_HUB = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}


@dataclass(frozen=True)
class Secret:
    """A username and password, or an identity (refresh) token."""

    username: str
    password: str = field(repr=False, default="")
    identity_token: str | None = field(repr=False, default=None)

    def basic(self) -> str:
        pair = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode()


class Credentials(Protocol):
    """Where an origin's credentials come from."""

    async def get(self) -> Secret | None:
        """The credentials to present, or None (anonymous). Raises UpstreamDenied
        when the source cannot give any (a failing helper), BackendError when it
        cannot be asked now."""

    def refused(self) -> None:
        """The origin refused what `get` gave: fetch afresh next time."""


class Static:
    """A fixed USER:PASSWORD (from --upstream-credentials or the environment)."""

    def __init__(self, username: str, password: str) -> None:
        self._secret = Secret(username, password)

    async def get(self) -> Secret | None:
        return self._secret

    def refused(self) -> None:
        """Nothing to refresh."""


def registry_keys(host: str) -> set[str]:
    """The names a docker config may file this registry under (Docker Hub has several)."""
    keys = {host}
    if host in _DOCKER_HUB:
        keys |= _DOCKER_HUB | {"https://index.docker.io/v1/"}
    return keys


def _host_of(key: str) -> str:
    """`https://host:port/v1/` -> `host:port`, as docker normalises auth keys."""
    return re.sub(r"^[a-z]+://", "", key).split("/", 1)[0]


class AuthFile:
    """A docker config.json or containers auth.json, for one registry host."""

    def __init__(self, path: Path, host: str, helper_timeout: float) -> None:
        """`helper_timeout`: seconds a credential helper may take (OriginSettings)."""
        self._path = path
        self._host = host
        self._keys = registry_keys(host)
        self._timeout = helper_timeout
        self._stamp: tuple[float, int] | None = None
        self._entry: tuple[str, Any] = ("none", None)  # ("auths", Secret) or ("helper", name)
        self._helped: tuple[float, Secret | None] | None = None

    async def get(self) -> Secret | None:
        self._reload()
        kind, value = self._entry
        if kind == "auths":
            secret: Secret | None = value
            return secret
        if kind == "helper":
            if self._helped is not None and time.monotonic() - self._helped[0] < _HELPER_REUSE:
                return self._helped[1]
            found = await self._ask_helper(str(value))
            self._helped = (time.monotonic(), found)
            return found
        return None

    def refused(self) -> None:
        self._helped = None  # a helper may have a fresh one
        self._stamp = None  # and the file may have changed under the same mtime

    def _reload(self) -> None:
        try:
            st = self._path.stat()
        except OSError as exc:
            raise UpstreamDenied("auth", str(self._path), f"cannot read: {exc.strerror}") from None
        stamp = (st.st_mtime, st.st_size)
        if stamp == self._stamp:
            return
        try:
            doc = json.loads(self._path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UpstreamDenied("auth", str(self._path), f"not a docker config: {exc}") from None
        if not isinstance(doc, dict):
            raise UpstreamDenied("auth", str(self._path), "not a docker config: not a mapping")
        self._entry = self._pick(doc)
        self._stamp = stamp
        self._helped = None
        log.info("origin credentials for %s from %s (%s)", self._host, self._path, self._entry[0])

    def _pick(self, doc: dict[str, Any]) -> tuple[str, Any]:
        helpers = doc.get("credHelpers") or {}
        for key, helper in helpers.items():
            if _host_of(key) in self._keys and isinstance(helper, str):
                return "helper", helper
        auths = doc.get("auths") or {}
        for key, entry in auths.items():
            if _host_of(key) in self._keys and isinstance(entry, dict):
                secret = _from_auths_entry(entry, self._path)
                if secret is not None:
                    return "auths", secret
        store = doc.get("credsStore")
        if isinstance(store, str) and store:
            return "helper", store
        return "none", None

    async def _ask_helper(self, name: str) -> Secret | None:
        program = shutil.which(f"docker-credential-{name}")
        where = f"docker-credential-{name}"
        if program is None:
            raise UpstreamDenied("auth", where, "credential helper not found on PATH")
        try:
            process = await asyncio.create_subprocess_exec(
                program,
                "get",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise UpstreamDenied("auth", where, f"cannot run: {exc.strerror}") from None
        try:
            async with asyncio.timeout(self._timeout):
                out, err = await process.communicate(self._host.encode())
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise BackendUnavailable(
                "auth", where, f"credential helper gave no answer in {self._timeout:g} s"
            ) from None
        if process.returncode != 0:
            message = err.decode(errors="replace").strip() or out.decode(errors="replace").strip()
            if "credentials not found" in message.lower():
                return None  # the helper knows nothing of this registry: anonymous
            raise UpstreamDenied("auth", where, f"credential helper failed: {message[:200]}")
        try:
            answer = json.loads(out)
            username, secret = str(answer["Username"]), str(answer["Secret"])
        except (ValueError, KeyError, TypeError):
            raise UpstreamDenied(
                "auth", where, "credential helper answered no credentials"
            ) from None
        if username == "<token>":
            return Secret(username, identity_token=secret)
        return Secret(username, secret)


def _from_auths_entry(entry: dict[str, Any], path: Path) -> Secret | None:
    token = entry.get("identitytoken")
    if isinstance(token, str) and token:
        return Secret(str(entry.get("username") or "<token>"), identity_token=token)
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            username, sep, password = base64.b64decode(encoded).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise UpstreamDenied("auth", str(path), "an auths entry is not base64") from None
        if sep and username:
            return Secret(username, password)
    user, word = entry.get("username"), entry.get("password")
    if isinstance(user, str) and isinstance(word, str) and user:
        return Secret(user, word)
    return None


class Ecr:
    """Amazon ECR's authorization token for one registry, from the AWS API."""

    def __init__(self, host: str, client: Any) -> None:
        match = _ECR_HOST.fullmatch(host)
        self._registry = match.group(1) if match else None
        self._client = client
        self._token: tuple[float, Secret] | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Secret | None:
        async with self._lock:
            if self._token is not None and time.time() < self._token[0]:
                return self._token[1]
            secret, expires = await self._fetch()
            self._token = (expires - _ECR_MARGIN, secret)
            return secret

    def refused(self) -> None:
        self._token = None

    async def _fetch(self) -> tuple[Secret, float]:
        from botocore.exceptions import BotoCoreError, ClientError

        kwargs = {"registryIds": [self._registry]} if self._registry else {}
        try:
            answer = await self._client.get_authorization_token(**kwargs)
            data = answer["authorizationData"][0]
            username, _, password = (
                base64.b64decode(data["authorizationToken"]).decode().partition(":")
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            raise UpstreamDenied("ecr", "GetAuthorizationToken", f"AWS refused: {code}") from None
        except (BotoCoreError, OSError) as exc:
            raise BackendUnavailable("ecr", "GetAuthorizationToken", type(exc).__name__) from None
        except (KeyError, IndexError, ValueError) as exc:
            raise BackendError("ecr", "GetAuthorizationToken", f"odd answer: {exc}") from None
        expires = data.get("expiresAt")
        return Secret(username, password), expires.timestamp() if expires else time.time()


@contextlib.asynccontextmanager
async def ecr_client(host: str) -> AsyncIterator[Any]:
    """An aiobotocore ECR client for the region in `host` (else the AWS chain's)."""
    from aiobotocore.session import get_session

    match = _ECR_HOST.fullmatch(host)
    region = match.group(2) if match else os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    async with get_session().create_client("ecr", region_name=region) as client:
        yield client
