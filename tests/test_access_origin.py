"""The origin decides (--authorize-at-origin): each client pulls through the cache
only what its own credentials may pull at the origin, while content is filled
once with the host's own credentials.

The origin is the CNCF registry with token auth and a token server of the tests'
own (tests/support/token_origin.py): alice may pull team-a/*, bob team-b/*,
carol nothing, anonymous public/*; the host's own `cache` user everything.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from registry_local.access import gate
from registry_local.config import OriginSettings, StoreSettings
from registry_local.origin import client
from registry_local.transfer.imagebuild import build_image

from .support.harness import RegistryLocal, StartCache, pull_image, s3_settings, seed
from .support.processes import StderrLog, serving
from .support.pushing import error_code, send
from .support.token_origin import PASSWORDS, TokenOrigin, basic, token_origin

pytestmark = pytest.mark.tool("docker-registry")


def _auth(user: str) -> dict[str, str]:
    return {"Authorization": basic(user, PASSWORDS[user])}


ALICE, BOB, CAROL = _auth("alice"), _auth("bob"), _auth("carol")
NOBODY: dict[str, str] = {}


@pytest.fixture
async def origin(tmp_path: Path) -> AsyncIterator[TokenOrigin]:
    async with token_origin(tmp_path) as served:
        yield served


@pytest.fixture
def store(origin: TokenOrigin, moto: str, bucket: str) -> StoreSettings:
    upstream = OriginSettings(
        origin.url, "*", "cache", PASSWORDS["cache"], authorize_at_origin=True
    )
    return s3_settings(moto, bucket, upstreams=(upstream,))


async def _get(
    cache: RegistryLocal, path: str, headers: dict[str, str], method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    return await send(method, cache.url + path, None, headers)


async def test_each_client_pulls_only_what_its_credentials_may_pull_at_the_origin(
    start_cache: StartCache, store: StoreSettings, origin: TokenOrigin
) -> None:
    cache = await start_cache(store=store)
    # alice pulls team-a/app cold: filled from the origin with the host's credentials.
    got = await pull_image(cache.url, "team-a/app", "v1", ALICE)
    assert {str(d) for d in origin.images["team-a/app"].blobs} <= set(got)
    # bob, with valid credentials, is refused it although it is cached now.
    status, _, body = await _get(cache, "/v2/team-a/app/manifests/v1", BOB)
    assert status == 403 and error_code(body) == "DENIED"
    layer = str(next(iter(origin.images["team-a/app"].blobs)))
    assert (await _get(cache, f"/v2/team-a/app/blobs/{layer}", BOB))[0] == 403
    # ...and a client without credentials is asked for them.
    status, headers, body = await _get(cache, "/v2/team-a/app/manifests/v1", NOBODY)
    assert status == 401 and error_code(body) == "UNAUTHORIZED"
    assert headers["WWW-Authenticate"].startswith("Bearer realm=")
    # Anyone pulls public/app; bob pulls his own.
    await pull_image(cache.url, "public/app", "v1", NOBODY)
    await pull_image(cache.url, "team-b/app", "v1", BOB)
    # A blob of team-a/app asked for under team-b/app is not served to bob.
    status, _, body = await _get(cache, f"/v2/team-b/app/blobs/{layer}", BOB)
    assert status == 404 and error_code(body) == "BLOB_UNKNOWN"
    # Tags and the catalog: each sees only its own.
    status, _, body = await _get(cache, "/v2/team-a/app/tags/list", ALICE)
    assert status == 200 and json.loads(body)["tags"] == ["v1"]
    assert (await _get(cache, "/v2/team-a/app/tags/list", BOB))[0] == 403
    catalogs = {}
    for who, headers in (("alice", ALICE), ("bob", BOB), ("anonymous", NOBODY)):
        status, _, body = await _get(cache, "/v2/_catalog", headers)
        assert status == 200
        catalogs[who] = json.loads(body)["repositories"]
    assert catalogs == {
        "alice": ["team-a/app"],
        "bob": ["team-b/app"],
        "anonymous": ["public/app"],
    }
    # carol may pull nothing; a missing tag is a 404 for alice, not a denial.
    assert (await _get(cache, "/v2/public/app/manifests/v1", CAROL))[0] == 200
    assert (await _get(cache, "/v2/team-a/app/manifests/v1", CAROL))[0] == 403
    status, _, body = await _get(cache, "/v2/team-a/app/manifests/nope", ALICE)
    assert status == 404 and error_code(body) == "MANIFEST_UNKNOWN"
    assert (await _get(cache, "/v2/team-a/app/manifests/v1", ALICE))[0] == 200


async def test_fifty_concurrent_pulls_with_one_credential_cost_one_origin_check(
    start_cache: StartCache, store: StoreSettings, origin: TokenOrigin
) -> None:
    cache = await start_cache(store=store)
    pulls = [pull_image(cache.url, "team-a/app", "v1", ALICE) for _ in range(50)]
    results = await asyncio.gather(*pulls)
    assert len({json.dumps(sorted(r)) for r in results}) == 1
    assert origin.tokens.token_requests["alice"] == 1
    assert cache.metrics.sample("access_origin_checks", answer="granted") == 1
    assert cache.metrics.sample("access_decisions", by="origin", verdict="granted") >= 50


async def test_an_origin_that_cannot_be_asked_refuses_unless_a_grant_is_recent(
    start_cache: StartCache,
    store: StoreSettings,
    origin: TokenOrigin,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gate, "_DOWN_FOR", 0.0)  # asked again at once when it is back
    # Every request asks the origin (no decision is remembered), so the grace decides.
    graced = await start_cache(store=store, decision_ttl=0.0, offline_grace=3600.0)
    strict = await start_cache(tmp_path / "strict", store=store, decision_ttl=0.0)
    for cache in (graced, strict):
        await pull_image(cache.url, "team-a/app", "v1", ALICE)
    origin.tokens.fail(503)
    # alice's recent grant still pulls where a grace is configured...
    await pull_image(graced.url, "team-a/app", "v1", ALICE)
    assert graced.metrics.sample("access_decisions", by="origin", verdict="grace") > 0
    # ...and nowhere else; carol's first ask is refused, saying why.
    for cache, user, headers in ((strict, "alice", ALICE), (graced, "carol", CAROL)):
        status, _, body = await _get(cache, "/v2/team-a/app/manifests/v1", headers)
        assert status == 503 and error_code(body) == "UNAVAILABLE", user
        message = json.loads(body)["errors"][0]["message"]
        assert "its origin could not be asked" in message, message
    assert strict.metrics.sample("access_decisions", by="origin", verdict="unavailable") == 1
    origin.tokens.fail(None)
    assert (await _get(strict, "/v2/team-a/app/manifests/v1", ALICE))[0] == 200


async def test_an_origin_that_did_not_answer_is_not_asked_again_at_once(
    start_cache: StartCache,
    store: StoreSettings,
    origin: TokenOrigin,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While it is down, each request is answered at once, not after a timeout."""
    monkeypatch.setattr(gate, "_DOWN_FOR", 3600.0)
    cache = await start_cache(store=store, decision_ttl=0.0)
    await pull_image(cache.url, "team-a/app", "v1", ALICE)
    origin.tokens.fail(503)
    for _ in range(3):
        assert (await _get(cache, "/v2/team-a/app/manifests/v1", ALICE))[0] == 503
    assert cache.metrics.sample("access_origin_checks", answer="unavailable") == 1
    assert cache.metrics.sample("access_decisions", by="origin", verdict="unavailable") == 3


async def test_client_credentials_never_reach_the_debug_log(
    origin: TokenOrigin, moto: str, bucket: str, tmp_path: Path
) -> None:
    credentials = tmp_path / "origin-credentials"
    credentials.write_text(f"cache:{PASSWORDS['cache']}")
    stderr = StderrLog()
    bodies: list[bytes] = []
    async with serving(
        "--s3-bucket",
        bucket,
        "--s3-endpoint",
        moto,
        "--cache-dir",
        str(tmp_path / "c"),
        "--upstream",
        origin.url,
        "--upstream-credentials",
        str(credentials),
        "--authorize-at-origin",
        "--log-level",
        "debug",
        "--log-format",
        "json",
        log=stderr,
    ) as (url, _):
        _, _, body = await send("GET", f"{url}/-/token", None, ALICE)
        token: Any = json.loads(body)["token"]
        bodies.append(body)
        with_token = {"Authorization": f"Bearer {token}"}
        for headers in (ALICE, BOB, with_token, _auth_wrong()):
            for path in ("team-a/app/manifests/v1", "team-b/app/manifests/v1"):
                bodies.append((await send("GET", f"{url}/v2/{path}", None, headers))[2])
        bodies.append((await send("GET", f"{url}/metrics", None, None))[2])
    log = stderr.data
    assert b"access" in log  # the debug log did say things
    secrets = [PASSWORDS[u].encode() for u in ("alice", "bob", "cache")]
    secrets += [base64.b64encode(f"alice:{PASSWORDS['alice']}".encode()), token.encode()]
    for text in (log, *bodies[1:]):
        for secret in secrets:
            assert secret not in text


def _auth_wrong() -> dict[str, str]:
    return {"Authorization": basic("alice", "not-her-password")}


async def test_repositories_no_origin_decides_fall_under_the_policy(
    start_cache: StartCache,
    origin: TokenOrigin,
    moto: str,
    bucket: str,
    direct_store: StoreSettings,
    tmp_path: Path,
) -> None:
    """One origin decides the names under `origin/`; the bucket's own `local/app`
    is the policy's, and origin credentials count there as anonymous."""
    await seed(direct_store, "local/app", "v1", build_image([{"f": b"local"}]))
    await seed(direct_store, "private/app", "v1", build_image([{"f": b"private"}]))
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "rules:\n  - {subjects: [anonymous], repositories: ['local/**'], actions: [pull]}\n"
    )
    upstream = OriginSettings(
        origin.url, "origin", "cache", PASSWORDS["cache"], authorize_at_origin=True
    )
    store = s3_settings(moto, bucket, upstreams=(upstream,))
    cache = await start_cache(store=store, policy=policy)
    await pull_image(cache.url, "origin/team-a/app", "v1", ALICE)
    assert (await _get(cache, "/v2/origin/team-a/app/manifests/v1", BOB))[0] == 403
    for headers in (ALICE, NOBODY):
        await pull_image(cache.url, "local/app", "v1", headers)
    status, _, body = await _get(cache, "/v2/private/app/manifests/v1", ALICE)
    assert status == 403 and error_code(body) == "DENIED"
    assert (await _get(cache, "/v2/private/app/manifests/v1", NOBODY))[0] == 401
    status, _, body = await _get(cache, "/v2/_catalog", ALICE)
    assert json.loads(body)["repositories"] == ["local/app", "origin/team-a/app"]


async def test_naming_another_registry_or_none_cannot_choose_who_decides(
    start_cache: StartCache,
    origin: TokenOrigin,
    moto: str,
    bucket: str,
    direct_store: StoreSettings,
) -> None:
    """The bucket keeps names without their registry: whatever `?ns=` a client
    gives, it gets only what the deciding origin holds for it, and nothing the
    origin does not decide without a policy granting it."""
    upstream = OriginSettings(
        origin.url, "reg.test", "cache", PASSWORDS["cache"], authorize_at_origin=True
    )
    cache = await start_cache(store=s3_settings(moto, bucket, upstreams=(upstream,)))
    ns = "?ns=reg.test"
    await pull_image(cache.url, "team-a/app", "v1", ALICE, ns)  # the cache holds it now
    layer = str(next(iter(origin.images["team-a/app"].blobs)))
    # Without ns (or with another registry's) no origin decides, and no policy grants.
    for query in ("", "?ns=other.test"):
        for path in ("manifests/v1", f"blobs/{layer}", "tags/list"):
            status, _, _ = await _get(cache, f"/v2/team-a/app/{path}{query}", NOBODY)
            assert status == 401, (query, path)
    status, _, body = await _get(cache, "/v2/_catalog", NOBODY)
    assert json.loads(body)["repositories"] == []
    # A private tag kept in the bucket under a name the origin holds publicly is
    # not served under the origin, by tag or by digest, nor its blobs.
    private = build_image([{"f": b"private to the bucket"}])
    await seed(direct_store, "public/app", "internal", private)
    for path in ("manifests/internal", f"manifests/{private.top}", "manifests/v1"):
        status, _, _ = await _get(cache, f"/v2/public/app/{path}{ns}", NOBODY)
        assert status == (200 if path == "manifests/v1" else 404), path
    for digest in private.blobs:
        status, _, body = await _get(cache, f"/v2/public/app/blobs/{digest}{ns}", NOBODY)
        assert status == 404 and error_code(body) == "BLOB_UNKNOWN"
    # The tag list is the origin's: not even the private tag's name shows.
    status, _, body = await _get(cache, f"/v2/public/app/tags/list{ns}", NOBODY)
    assert status == 200 and json.loads(body)["tags"] == ["v1"]
    status, _, body = await _get(cache, f"/v2/nothing/here/tags/list{ns}", ALICE)
    assert status in (403, 404)


def test_the_tag_list_follows_the_origins_link_header() -> None:
    link = '</v2/team-a/app/tags/list?last=v1&n=1000>; rel="next"'
    assert client._next_page(link) == "/v2/team-a/app/tags/list?last=v1&n=1000"
    absolute = "<https://reg.test/v2/a/tags/list?n=2&last=b>; rel=next"
    assert client._next_page(absolute) == "/v2/a/tags/list?n=2&last=b"
    assert client._next_page("") is None
    assert client._next_page('</v2/a/tags/list?n=2>; rel="prev"') is None
