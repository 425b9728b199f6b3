"""The origin decides who may pull: asked with each client's own credentials.

The origin is Debian's docker-registry (the CNCF registry) with token auth, its
tokens signed by a token server of the tests' own (tests/support/token_origin.py),
or with htpasswd basic auth. A counting proxy (tests/support/s3proxy.py relays
any HTTP) sits in front of the registry where a test counts what it was asked.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from registry_local.config import OriginSettings
from registry_local.errors import BackendUnavailable
from registry_local.oci.mediatypes import MANIFEST_MEDIA_TYPES
from registry_local.origin import authorize
from registry_local.origin.authorize import Probe, Verdict, ask_origin
from registry_local.origin.challenge import Challenge
from registry_local.origin.client import Origin, open_origin
from registry_local.transfer.imagebuild import build_image

from .support.harness import htpasswd_origin
from .support.s3proxy import S3Proxy, serve_app
from .support.token_origin import PASSWORDS, TokenOrigin, basic, token_origin

pytestmark = pytest.mark.tool("docker-registry")

V1: Probe = ("manifests", "v1")
ALICE = basic("alice", PASSWORDS["alice"])
BOB = basic("bob", PASSWORDS["bob"])
CAROL = basic("carol", PASSWORDS["carol"])


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[TokenOrigin]:
    async with token_origin(tmp_path) as served:
        yield served


@pytest.fixture
async def origin(served: TokenOrigin) -> AsyncIterator[Origin]:
    """The origin as the cache opens it: with the host's own credentials, which may
    read everything, and which no check of a client's access may use."""
    settings = OriginSettings(served.url, username="cache", password=PASSWORDS["cache"])
    async with open_origin(settings) as opened:
        yield opened


def _layer(served: TokenOrigin, name: str) -> str:
    image = served.images[name]
    return str(max(image.blobs, key=lambda d: len(image.blobs[d])))


async def _status(
    session: aiohttp.ClientSession, served: TokenOrigin, path: str, user: str | None
) -> int:
    """A request's status at the registry, with a token fetched as a client would
    fetch it for the repository the path names (by `user`, or anonymously)."""
    name = path.split("/manifests/")[0].split("/blobs/")[0]
    query = {"service": served.tokens.service, "scope": f"repository:{name}:pull"}
    auth = {} if user is None else {"Authorization": basic(user, PASSWORDS[user])}
    async with session.get(served.tokens.realm, params=query, headers=auth) as response:
        assert response.status == 200
        token = (await response.json())["token"]
    headers = {"Authorization": f"Bearer {token}", "Accept": ", ".join(MANIFEST_MEDIA_TYPES)}
    async with session.get(f"{served.url}/v2/{path}", headers=headers) as response:
        await response.read()
        return response.status


async def test_the_token_origin_lets_each_user_pull_only_its_own(served: TokenOrigin) -> None:
    team_a_layer, team_b_layer = _layer(served, "team-a/app"), _layer(served, "team-b/app")
    assert team_a_layer != team_b_layer  # no blob of one team is in the other's repository
    async with aiohttp.ClientSession() as session:
        async with session.head(f"{served.url}/v2/public/app/manifests/v1") as response:
            assert response.status == 401  # nothing without a token, not even public/
            assert response.headers["WWW-Authenticate"].startswith("Bearer ")
        assert await _status(session, served, "public/app/manifests/v1", None) == 200
        assert await _status(session, served, "team-a/app/manifests/v1", "alice") == 200
        assert await _status(session, served, f"team-a/app/blobs/{team_a_layer}", "alice") == 200
        assert await _status(session, served, "team-a/app/manifests/v1", "bob") == 401
        assert await _status(session, served, f"team-a/app/blobs/{team_a_layer}", "bob") == 401
        assert await _status(session, served, "team-a/app/manifests/v1", None) == 401
        wrong = {"Authorization": basic("alice", "not-her-password")}
        async with session.get(served.tokens.realm, headers=wrong) as response:
            assert response.status == 401
    assert served.tokens.token_requests == {"": 2, "alice": 3, "bob": 2}


async def test_each_client_is_answered_for_itself(served: TokenOrigin, origin: Origin) -> None:
    layer = _layer(served, "team-a/app")

    assert await ask_origin(origin, ALICE, "team-a/app", V1) is Verdict.GRANTED
    assert await ask_origin(origin, ALICE, "team-a/app", ("blobs", layer)) is Verdict.GRANTED
    assert await ask_origin(origin, ALICE, "team-a/app", ("tags", "")) is Verdict.GRANTED
    assert await ask_origin(origin, BOB, "team-a/app", V1) is Verdict.REFUSED
    assert await ask_origin(origin, BOB, "team-a/app", ("blobs", layer)) is Verdict.REFUSED
    assert await ask_origin(origin, BOB, "team-b/app", V1) is Verdict.GRANTED
    assert await ask_origin(origin, CAROL, "team-a/app", V1) is Verdict.REFUSED
    assert await ask_origin(origin, CAROL, "public/app", V1) is Verdict.GRANTED
    assert await ask_origin(origin, None, "team-a/app", V1) is Verdict.REFUSED
    assert await ask_origin(origin, None, "public/app", V1) is Verdict.GRANTED
    assert await ask_origin(origin, ALICE, "team-a/app", ("manifests", "v2")) is Verdict.ABSENT
    wrong = basic("alice", "not-her-password")
    assert await ask_origin(origin, wrong, "team-a/app", V1) is Verdict.REFUSED

    # Every check asked the token server with the client's credentials, none
    # with the host's own, and no client's token was kept for the next check.
    assert served.tokens.token_requests == {"alice": 5, "bob": 3, "carol": 2, "": 2}


async def test_the_challenge_is_remembered_and_a_client_token_goes_as_it_is(
    served: TokenOrigin,
) -> None:
    proxy = await S3Proxy(served.url).start()  # counts what the registry is asked
    try:
        async with open_origin(OriginSettings(proxy.url)) as origin:
            assert await ask_origin(origin, ALICE, "team-a/app", V1) is Verdict.GRANTED
            assert len(proxy.requests) == 2  # anonymously, then with alice's token
            assert origin.client_challenge == Challenge(
                "bearer", served.tokens.realm, served.tokens.service
            )
            assert await ask_origin(origin, None, "public/app", V1) is Verdict.GRANTED
            assert await ask_origin(origin, BOB, "team-a/app", V1) is Verdict.REFUSED
            assert len(proxy.requests) == 4  # straight to the token: one request each

            token = await _token(served, "alice", "team-a/app")
            assert await ask_origin(origin, f"Bearer {token}", "team-a/app", V1) is Verdict.GRANTED
            token = await _token(served, "bob", "team-a/app")
            assert await ask_origin(origin, f"Bearer {token}", "team-a/app", V1) is Verdict.REFUSED
            assert len(proxy.requests) == 6
    finally:
        await proxy.close()
    assert served.tokens.token_requests == {"alice": 2, "bob": 2, "": 1}


async def _token(served: TokenOrigin, user: str, name: str) -> str:
    """A token a client fetched on its own."""
    query = {"service": served.tokens.service, "scope": f"repository:{name}:pull"}
    auth = {"Authorization": basic(user, PASSWORDS[user])}
    async with (
        aiohttp.ClientSession() as session,
        session.get(served.tokens.realm, params=query, headers=auth) as response,
    ):
        token: str = (await response.json())["token"]
        return token


async def test_a_token_server_that_fails_makes_the_origin_unavailable(
    served: TokenOrigin, origin: Origin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert await ask_origin(origin, ALICE, "team-a/app", V1) is Verdict.GRANTED
    served.tokens.fail(503)

    with pytest.raises(BackendUnavailable) as raised:
        await ask_origin(origin, ALICE, "team-a/app", V1)

    assert "could not be asked" in str(raised.value)
    for secret in (ALICE, ALICE.removeprefix("Basic "), PASSWORDS["alice"]):
        assert secret not in str(raised.value) and secret not in repr(raised.value)
        assert secret not in caplog.text
    served.tokens.fail(None)
    assert await ask_origin(origin, ALICE, "team-a/app", V1) is Verdict.GRANTED


async def test_an_origin_that_is_gone_is_unavailable(tmp_path: Path) -> None:
    async with token_origin(tmp_path) as served:
        settings = OriginSettings(served.url)
    async with open_origin(settings) as origin:  # the registry and its tokens stopped
        with pytest.raises(BackendUnavailable, match="could not be asked"):
            await ask_origin(origin, ALICE, "team-a/app", V1)
        origin.client_challenge = Challenge("bearer", served.tokens.realm, "test-origin")
        with pytest.raises(BackendUnavailable, match=r"could not be asked.*token server"):
            await ask_origin(origin, ALICE, "team-a/app", V1)


async def test_an_origin_that_does_not_answer_in_time_is_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    released = asyncio.Event()

    async def stall(request: web.Request) -> web.Response:
        await released.wait()
        return web.Response(status=200)

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", stall)
    runner, url = await serve_app(app)
    monkeypatch.setattr(authorize, "_BOUND", 0.2)
    try:
        async with open_origin(OriginSettings(url)) as origin:
            with pytest.raises(BackendUnavailable, match=r"could not be asked.*no answer within"):
                await ask_origin(origin, None, "public/app", V1)
    finally:
        released.set()
        await runner.cleanup()


async def test_an_origin_with_basic_auth_is_asked_with_the_clients_password(
    tmp_path: Path,
) -> None:
    image = build_image([{"a.bin": os.urandom(1024)}])
    async with (
        htpasswd_origin(tmp_path, image, "dana", "dana-pw") as url,
        open_origin(OriginSettings(url)) as origin,
    ):
        dana = basic("dana", "dana-pw")
        assert await ask_origin(origin, dana, "team/app", V1) is Verdict.GRANTED
        assert origin.client_challenge == Challenge("basic")
        assert await ask_origin(origin, dana, "team/app", ("tags", "")) is Verdict.GRANTED
        assert await ask_origin(origin, dana, "team/app", ("manifests", "v9")) is Verdict.ABSENT
        wrong = basic("dana", "not-the-password")
        assert await ask_origin(origin, wrong, "team/app", V1) is Verdict.REFUSED
        assert await ask_origin(origin, None, "team/app", V1) is Verdict.REFUSED
