"""May this client pull this repository? The origin decides, asked with the client's
own credentials.

The cache fetches content with its own origin credentials, which may read more
than any one client may. For an origin marked `authorize_at_origin` the cache
first asks the origin, with the credentials the client sent the cache, for one
small thing of the repository (a probe): a manifest's head, a blob's head, or
one tag. The origin's answer is the verdict:

    2xx, or a redirect to the bytes      GRANTED  (it answers only whom it let in)
    401, 403; or its token server        REFUSED  (these credentials, or anonymity,
      refused the credentials                      may not pull)
    404 and any other 4xx                ABSENT   (not there, or not visible to them)
    unreachable, 5xx, 429, no answer     BackendUnavailable: it could not be asked
      within _BOUND seconds

The probe goes the way an engine's pull would. The first goes out anonymously,
and the origin's 401 says which auth it wants (a Challenge), kept on the Origin
(`client_challenge`) so later checks go straight to it. A `Bearer` challenge
sends the client's basic credentials (or none, for an anonymous client: some
origins give anonymous tokens) to the token server for `repository:NAME:pull`,
and the probe is sent again with the token; a `Basic` challenge sends the
client's basic credentials to the origin itself. A client that sent the cache a
token of its own (`Bearer ...`) has it sent to the origin as it is.

A client's token lives for one check: nothing here keeps it. No credential of a
client (header, password or token) reaches a log line, an exception or a repr.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import Any, Literal

import aiohttp

from ..errors import BackendUnavailable
from ..oci.mediatypes import MANIFEST_MEDIA_TYPES
from .challenge import Challenge
from .client import Origin

__all__ = ["Probe", "Verdict", "ask_origin"]

log = logging.getLogger(__name__)

_BOUND = 10.0  # seconds one whole check may take, token and all
_CHALLENGES = 2  # new challenges answered in one check: the first, and a changed one

# What to ask for: a manifest by tag or digest, a blob by digest, or the tags ("").
Probe = tuple[Literal["manifests", "blobs", "tags"], str]


class Verdict(enum.Enum):
    """The origin's answer to one probe with one client's credentials."""

    GRANTED = "granted"  # it answered the probe 200 (or 206, or a redirect)
    REFUSED = "refused"  # 401 or 403: the credentials (or anonymity) do not allow the pull
    ABSENT = "absent"  # 404: not there, or not visible to these credentials


async def ask_origin(
    origin: Origin, authorization: str | None, remote: str, probe: Probe
) -> Verdict:
    """Whether the origin lets the holder of `authorization` (the client's
    Authorization header; None: anonymous) pull `remote`, by asking it for the
    probe. Raises BackendUnavailable when the origin or its token server cannot
    answer (see the module docstring)."""
    method, path, headers = _request(remote, probe)
    try:
        async with asyncio.timeout(_BOUND):
            verdict = await _check(origin, authorization, remote, (method, path, headers))
    except TimeoutError:
        raise _unavailable(origin, path, f"no answer within {_BOUND:g} s") from None
    log.debug("origin %s: %s %s -> %s", origin.url, method, path, verdict.value)
    return verdict


_Request = tuple[str, str, dict[str, str]]  # method, path, headers


def _request(remote: str, probe: Probe) -> _Request:
    kind, reference = probe
    if kind == "manifests":
        accept = {"Accept": ", ".join(MANIFEST_MEDIA_TYPES)}
        return "HEAD", f"/v2/{remote}/manifests/{reference}", accept
    if kind == "blobs":
        return "HEAD", f"/v2/{remote}/blobs/{reference}", {}
    return "GET", f"/v2/{remote}/tags/list?n=1", {}


async def _check(
    origin: Origin, authorization: str | None, remote: str, request: _Request
) -> Verdict:
    challenge = origin.client_challenge
    sent: dict[str, str] | None = None
    for _ in range(1 + _CHALLENGES):
        auth = await _authorization(origin, challenge, authorization, remote)
        if auth is None or auth == sent:  # refused for a token; or asking again is futile
            return Verdict.REFUSED
        status, header = await _probe(origin, request, auth)
        if status != 401:
            return _verdict(origin, request[1], status)
        sent = auth
        seen = Challenge.parse(header)
        if seen is None or seen == challenge:
            return Verdict.REFUSED
        # New to us (the first check, or the origin changed): answer it.
        origin.client_challenge = challenge = seen
    return Verdict.REFUSED  # it keeps asking for something else: a no


async def _authorization(
    origin: Origin, challenge: Challenge | None, authorization: str | None, remote: str
) -> dict[str, str] | None:
    """The headers that carry the client's credentials to the origin as its challenge
    asks, or None if its token server refused them."""
    if authorization is not None and not _is_basic(authorization):
        return {"Authorization": authorization}  # the client's own token, as it is
    if challenge is None:
        return {}  # anonymously, to learn what the origin asks
    if challenge.scheme == "basic":
        return {} if authorization is None else {"Authorization": authorization}
    token = await _token(origin, challenge, authorization, remote)
    return None if token is None else {"Authorization": f"Bearer {token}"}


def _is_basic(authorization: str) -> bool:
    return authorization.partition(" ")[0].lower() == "basic"


async def _token(
    origin: Origin, challenge: Challenge, authorization: str | None, remote: str
) -> str | None:
    """A token for pulling `remote` with the client's basic credentials (or none),
    from the challenge's realm; None if the token server refused them."""
    query = {"scope": f"repository:{remote}:pull"}
    if challenge.service is not None:
        query["service"] = challenge.service
    # Its session leaves bodies as they come (for blobs): ask for JSON unencoded.
    headers = {"Accept-Encoding": "identity"}
    if authorization is not None:
        headers["Authorization"] = authorization
    try:
        async with origin.session.get(
            challenge.realm, params=query, headers=headers, allow_redirects=False
        ) as response:
            if response.status in (401, 403):
                return None
            if response.status != 200:
                raise _unavailable(origin, "token", f"its token server answered {response.status}")
            body: Any = await response.json(content_type=None)
    except (aiohttp.ClientError, ValueError) as exc:
        what = f"its token server failed ({type(exc).__name__})"
        raise _unavailable(origin, "token", what) from None
    token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise _unavailable(origin, "token", "its token server answered without a token")
    return token


async def _probe(origin: Origin, request: _Request, auth: dict[str, str]) -> tuple[int, str]:
    """The origin's status for the probe, and its challenge if any."""
    method, path, headers = request
    try:
        async with origin.session.request(
            method, origin.url + path, headers={**headers, **auth}, allow_redirects=False
        ) as response:
            return response.status, response.headers.get("WWW-Authenticate", "")
    except aiohttp.ClientError as exc:
        raise _unavailable(origin, path, f"unreachable ({type(exc).__name__})") from None


def _verdict(origin: Origin, path: str, status: int) -> Verdict:
    if status == 429 or status >= 500:
        raise _unavailable(origin, path, f"it answered {status}")
    if 200 <= status < 400:
        return Verdict.GRANTED
    if status in (401, 403):
        return Verdict.REFUSED
    return Verdict.ABSENT


def _unavailable(origin: Origin, where: str, what: str) -> BackendUnavailable:
    """The error for an origin that could not be asked: says where and why, never
    with whose credentials (exceptions of aiohttp are named, not quoted)."""
    reason = f"the origin could not be asked whether the client may pull: {what}"
    return BackendUnavailable("authorize", f"{origin.url} {where}", reason)
