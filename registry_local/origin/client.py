"""An origin registry, read over the Registry v2 API: manifests and blobs.

Requests go out anonymously first. A 401 challenge is answered the way engines
answer it: `Bearer realm=..,service=..,scope=..` gets a token from the realm
(with our credentials as basic auth, if any), cached per scope until it expires;
`Basic` gets the credentials on every request. 429 and 503 are retried after
their Retry-After (bounded). Errors are translated here, once: unreachable, 5xx
or still throttled -> BackendUnavailable (so stale-if-error applies above);
refused credentials -> UpstreamDenied; 404 -> None.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ..backoff import ExponentialBackoff
from ..config import OriginSettings
from ..errors import BackendError, BackendUnavailable, DigestInvalid, UpstreamDenied
from ..oci.digest import Digest
from ..oci.mediatypes import MANIFEST_MEDIA_TYPES, MAX_MANIFEST_BYTES, OCI_INDEX
from .challenge import Challenge
from .credentials import AuthFile, Credentials, Ecr, Secret, Static, ecr_client

__all__ = ["Origin", "UpstreamDenied", "open_origin"]

log = logging.getLogger(__name__)

_ATTEMPTS = 4  # tries of one request that is throttled (429) or unavailable (503)
_MAX_RETRY_AFTER = 30.0  # seconds we wait at most for one Retry-After
_BACKOFF = ExponentialBackoff(base=0.5, cap=_MAX_RETRY_AFTER)  # when it gives none
_TOKEN_MARGIN = 10.0  # seconds before its expiry a token is fetched anew
_CHUNK = 1 << 20
_TAG_PAGE = 1000  # tags asked for a page
_TAG_PAGES = 100  # pages followed at most


@dataclass
class _Token:
    value: str
    expires: float


@dataclass
class _Auth:
    """What the origin asked for, and what we hold for it."""

    basic: bool = False
    bearer: dict[str, str] | None = None  # the challenge's realm and service
    tokens: dict[str, _Token] = field(default_factory=dict)  # by scope


class Origin:
    """One origin registry. Create with `open_origin`."""

    def __init__(
        self,
        settings: OriginSettings,
        session: aiohttp.ClientSession,
        credentials: Credentials | None = None,
    ) -> None:
        self.settings = settings
        self.url = settings.url.rstrip("/")
        self._session = session
        self._auth = _Auth()
        self._credentials = credentials
        # Whether its blob GETs honour Range: known from the first answer to one.
        self.honours_ranges: bool | None = None
        # The auth it asked of clients whose access it was asked about
        # (origin.authorize), so later checks skip the anonymous round trip.
        self.client_challenge: Challenge | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """Its HTTP session, for requests made with credentials other than ours."""
        return self._session

    # -- what the cache asks -----------------------------------------------------

    async def manifest(self, name: str, reference: str) -> tuple[bytes, str, Digest] | None:
        """The manifest (bytes, media type, digest) by tag or digest, or None.
        The digest is computed, and checked against the one asked for or the
        origin's Docker-Content-Digest. Raises BackendError."""
        path = f"/v2/{name}/manifests/{reference}"
        headers = {"Accept": ", ".join(MANIFEST_MEDIA_TYPES)}
        response = await self._send("GET", path, name, headers)
        try:
            if response.status == 404:
                return None
            _check(response, self.url + path)
            data = await _read_limited(response, path)
            media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
            claimed = response.headers.get("Docker-Content-Digest")
        finally:
            response.release()
        wanted = _digest_or_none(reference)
        if wanted is None and claimed:
            wanted = _digest_or_none(claimed)
        algorithm = wanted.algorithm if wanted is not None else "sha256"
        digest = Digest.of(data, algorithm)
        if wanted is not None and digest != wanted:
            raise BackendError("GET", path, f"manifest hashed to {digest}, not {wanted}")
        return data, media_type, digest

    async def referrers(self, name: str, digest: Digest) -> bytes | None:
        """The origin's referrers index for the digest: from its referrers API, else
        from the referrers tag schema (`<alg>-<hex>`); None if it has neither.
        Raises BackendError."""
        path = f"/v2/{name}/referrers/{digest}"
        response = await self._send("GET", path, name, {"Accept": OCI_INDEX})
        try:
            if response.status != 404:
                _check(response, self.url + path)
                return await _read_limited(response, path)
        finally:
            response.release()
        found = await self.manifest(name, f"{digest.algorithm}-{digest.hex}")
        return None if found is None else found[0]

    async def open_blob(
        self, name: str, digest: Digest, offset: int = 0, end: int | None = None
    ) -> _BlobStream | None:
        """A stream of the blob's bytes [offset, end), or None if the origin has
        no such blob. Raises BackendError. Every read asks for a range, from 0 too,
        so the first answer says whether this origin honours ranges
        (`honours_ranges`); one that does not sends the whole blob, and the
        bytes before `offset` are skipped."""
        path = f"/v2/{name}/blobs/{digest}"
        headers = {"Range": f"bytes={offset}-" + ("" if end is None else str(end - 1))}
        response = await self._send("GET", path, name, headers)
        try:
            if response.status == 404:
                response.release()
                return None
            if response.status == 416:  # a range at or past the end
                response.release()
                size = await self.blob_size(name, digest)
                return None if size is None else _BlobStream(None, path, size, 0)
            _check(response, self.url + path)
            size, skip = _extent(response, offset)
            self.honours_ranges = response.status == 206
            stop = size if end is None else min(end, size)
            stream = _BlobStream(response, path, size, max(0, stop - offset))
            await stream.skip(skip)
        except BaseException:
            response.release()
            raise
        return stream

    async def tags(self, name: str) -> list[str] | None:
        """The repository's tags at the origin, sorted, following its pages (at
        most _TAG_PAGES of them); None if it has no such repository. Raises
        BackendError."""
        found: list[str] = []
        path: str | None = f"/v2/{name}/tags/list?n={_TAG_PAGE}"
        for _ in range(_TAG_PAGES):
            if path is None:
                break
            response = await self._send("GET", path, name, {})
            try:
                if response.status == 404:
                    return None
                _check(response, self.url + path)
                body = json.loads(await _read_limited(response, path))
                link = response.headers.get("Link", "")
            except ValueError:
                raise BackendError("GET", path, "origin's tag list is not JSON") from None
            finally:
                response.release()
            tags = body.get("tags") if isinstance(body, dict) else None
            found += [t for t in tags or [] if isinstance(t, str)]
            path = _next_page(link)
        return sorted(set(found))

    async def blob_size(self, name: str, digest: Digest) -> int | None:
        """The blob's size at the origin, or None. Raises BackendError."""
        path = f"/v2/{name}/blobs/{digest}"
        response = await self._send("HEAD", path, name, {})
        try:
            if response.status == 404:
                return None
            _check(response, self.url + path)
            return int(response.headers.get("Content-Length", "0"))
        finally:
            response.release()

    # -- requests, with auth and back-off ---------------------------------------------

    async def _send(
        self, method: str, path: str, name: str, headers: dict[str, str]
    ) -> aiohttp.ClientResponse:
        """The origin's answer, past auth challenges and back-off requests; the
        caller releases it."""
        scope = f"repository:{name}:pull"
        answered_challenge = refreshed = False
        for attempt in range(1, _ATTEMPTS + 1):
            auth = await self._authorization(scope)
            try:
                response = await self._session.request(
                    method, self.url + path, headers={**headers, **auth}
                )
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise BackendUnavailable(method, path, f"origin unreachable: {exc}") from None
            if response.status == 401 and not answered_challenge:
                challenge = response.headers.get("WWW-Authenticate", "")
                response.release()
                self._challenged(challenge, self.url + path)
                answered_challenge = True
                continue
            if response.status == 401 and not refreshed and self._credentials is not None:
                # Refused: the credentials may have changed (a new ECR token, a
                # helper's rotation, an edited file): fetch them afresh, once.
                response.release()
                self._credentials.refused()
                self._auth.tokens.clear()
                refreshed = True
                continue
            if response.status in (429, 503) and attempt < _ATTEMPTS:
                delay = _retry_after(response.headers.get("Retry-After"), attempt)
                response.release()
                log.info("origin %s answered %d; again in %.1f s", path, response.status, delay)
                await asyncio.sleep(delay)  # the origin asked us to wait
                continue
            return response
        raise BackendUnavailable(method, path, "origin kept asking us to back off")

    async def _authorization(self, scope: str) -> dict[str, str]:
        if self._auth.bearer is not None:
            token = self._auth.tokens.get(scope)
            if token is None or token.expires <= time.monotonic():
                token = await self._fetch_token(scope)
            return {"Authorization": f"Bearer {token.value}"}
        if self._auth.basic:
            secret = await self._secret()
            if secret is None or secret.identity_token is not None:
                raise UpstreamDenied("GET", self.url, "origin wants a password and none is set")
            return {"Authorization": secret.basic()}
        return {}

    async def _secret(self) -> Secret | None:
        if self._credentials is None:
            return None
        try:
            return await self._credentials.get()
        except BackendError as exc:
            exc.key = f"{self.url} ({exc.key})"
            raise

    def _challenged(self, challenge: str, path: str) -> None:
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() == "bearer":
            fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
            if "realm" not in fields:
                raise UpstreamDenied("GET", path, "origin's bearer challenge has no realm")
            self._auth.bearer = fields
            self._auth.tokens.clear()
        elif scheme.lower() == "basic":
            if self._credentials is None:
                raise UpstreamDenied("GET", path, "origin wants credentials and none are set")
            self._auth.basic = True
        else:
            raise UpstreamDenied("GET", path, f"origin wants {scheme or 'an unknown'} auth")

    async def _fetch_token(self, scope: str) -> _Token:
        assert self._auth.bearer is not None
        realm = self._auth.bearer["realm"]
        query = {"scope": scope}
        if "service" in self._auth.bearer:
            query["service"] = self._auth.bearer["service"]
        secret = await self._secret()
        try:
            if secret is not None and secret.identity_token is not None:
                # An identity token is an OAuth2 refresh token (docker login's).
                form = {
                    "grant_type": "refresh_token",
                    "refresh_token": secret.identity_token,
                    "client_id": "registry-local",
                    **query,
                }
                request = self._session.post(realm, data=form)
            else:
                headers = {"Authorization": secret.basic()} if secret is not None else {}
                request = self._session.get(realm, params=query, headers=headers)
            async with request as response:
                if response.status in (401, 403):
                    if self._credentials is not None:
                        self._credentials.refused()
                    raise UpstreamDenied("token", realm, "origin refused our credentials")
                if response.status != 200:
                    raise BackendUnavailable("token", realm, f"token server: {response.status}")
                body: dict[str, Any] = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise BackendUnavailable("token", realm, f"token server: {exc}") from None
        value = body.get("token") or body.get("access_token")
        if not isinstance(value, str):
            raise BackendError("token", realm, "token server answered without a token")
        lifetime = float(body.get("expires_in") or 60)
        token = _Token(value, time.monotonic() + max(1.0, lifetime - _TOKEN_MARGIN))
        self._auth.tokens[scope] = token
        return token


class _BlobStream:
    """A blob body from the origin, in the ObjectStream protocol (backend.py)."""

    def __init__(
        self, response: aiohttp.ClientResponse | None, path: str, size: int, wanted: int
    ) -> None:
        self._response = response
        self._path = path
        self._left = wanted if response is not None else 0  # bytes still to hand out
        self.size = size

    async def skip(self, count: int) -> None:
        """Drop leading bytes: the origin ignored our Range and sent it all."""
        while count > 0:
            count -= len(await self._body(min(count, _CHUNK)))

    async def read(self, n: int) -> bytes:
        if self._left <= 0:
            return b""
        chunk = await self._body(min(n, self._left))
        self._left -= len(chunk)
        return chunk

    async def _body(self, n: int) -> bytes:
        assert self._response is not None
        try:
            chunk = await self._response.content.read(n)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BackendUnavailable("GET", self._path, f"origin body broke: {exc}") from None
        if not chunk:
            raise BackendUnavailable("GET", self._path, "origin body ended early")
        return chunk

    async def close(self) -> None:
        if self._response is not None:
            self._response.release()
            self._response = None


def _check(response: aiohttp.ClientResponse, path: str) -> None:
    if response.status in (401, 403):
        raise UpstreamDenied("GET", path, f"origin refused access ({response.status})")
    if response.status >= 500 or response.status == 429:
        raise BackendUnavailable("GET", path, f"origin answered {response.status}")
    if response.status not in (200, 206):
        raise BackendError("GET", path, f"origin answered {response.status}")


async def _read_limited(response: aiohttp.ClientResponse, path: str) -> bytes:
    data = bytearray()
    try:
        async for chunk in response.content.iter_chunked(64 * 1024):
            data += chunk
            if len(data) > MAX_MANIFEST_BYTES:
                raise BackendError("GET", path, "manifest larger than 4 MiB")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise BackendUnavailable("GET", path, f"origin body broke: {exc}") from None
    return bytes(data)


def _extent(response: aiohttp.ClientResponse, offset: int) -> tuple[int, int]:
    """The blob's whole size, and how many leading bytes to skip to reach `offset`."""
    content_range = response.headers.get("Content-Range")
    if response.status == 206 and content_range:  # "bytes 100-199/1000"
        return int(content_range.rpartition("/")[2]), 0
    length = response.headers.get("Content-Length")
    if length is None:
        raise BackendError("GET", str(response.url.path), "origin sent no Content-Length")
    return int(length), offset  # a whole body: skip to where we are


def _next_page(link: str) -> str | None:
    """The path of the next page in a Link header (`</v2/..?last=x>; rel="next"`)."""
    found = re.match(r'\s*<([^>]+)>\s*;\s*rel="?next"?', link)
    if found is None:
        return None
    target = urllib.parse.urlsplit(found[1])
    return target.path + (f"?{target.query}" if target.query else "")


def _digest_or_none(text: str) -> Digest | None:
    try:
        return Digest.parse(text)
    except DigestInvalid:
        return None


def _retry_after(value: str | None, attempt: int) -> float:
    try:
        seconds = float(value) if value is not None else _BACKOFF.delay(attempt)
    except ValueError:
        seconds = 1.0  # an HTTP date: not worth parsing, wait a little
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER)


@contextlib.asynccontextmanager
async def open_origin(settings: OriginSettings) -> AsyncIterator[Origin]:
    timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=60)
    host = urllib.parse.urlsplit(settings.url).netloc
    async with (
        aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session,
        contextlib.AsyncExitStack() as stack,
    ):
        credentials: Credentials | None = None
        if settings.ecr:
            credentials = Ecr(host, await stack.enter_async_context(ecr_client(host)))
        elif settings.auth_file is not None:
            credentials = AuthFile(settings.auth_file, host, settings.helper_timeout)
        elif settings.username is not None:
            credentials = Static(settings.username, settings.password or "")
        yield Origin(settings, session, credentials)
