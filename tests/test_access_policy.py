"""An access policy (--access-policy): each subject reads and writes only what a rule
grants it, on every route, and the policy file is reloaded when it changes."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from registry_local.access.policy import Policy
from registry_local.config import StoreSettings
from registry_local.errors import ConfigError
from registry_local.server.app import build_app
from registry_local.transfer.imagebuild import Image, build_image

from .support.fleet import until
from .support.harness import RegistryLocal, StartCache, seed
from .support.processes import sealed_env
from .support.pushing import error_code, push_image, send

TOKEN = "tok-ci-5f1c0a0d9b8e4a37"
POLICY = """
rules:
  - subjects: [alice]
    repositories: ["team-a/*"]
    actions: [pull, push]
  - subjects: [bob]
    repositories: ["team-b/**"]
    actions: [pull]
  - subjects: [ci]
    repositories: ["team-a/*"]
    actions: [pull, push, delete]
  - subjects: [anonymous]
    repositories: ["public/**"]
    actions: [pull]
"""


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


ALICE, BOB = _basic("alice", "alice-pw"), _basic("bob", "bob-pw")
CI = {"Authorization": f"Bearer ci:{TOKEN}"}  # the whole line of the token file
NOBODY: dict[str, str] = {}


@pytest.fixture
def auth_files(tmp_path: Path) -> dict[str, Any]:
    htpasswd = tmp_path / "htpasswd"
    lines = [
        f"{user}:{bcrypt.hashpw(f'{user}-pw'.encode(), bcrypt.gensalt(rounds=4)).decode()}"
        for user in ("alice", "bob")
    ]
    htpasswd.write_text("\n".join(lines) + "\n")
    tokens = tmp_path / "tokens"
    tokens.write_text(f"ci:{TOKEN}\n")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    return {"auth_htpasswd": htpasswd, "auth_token_file": tokens, "policy": policy}


@pytest.fixture
async def images(direct_store: StoreSettings) -> dict[str, Image]:
    made = {
        name: build_image([{"f": name.encode() * 10}])
        for name in ("team-a/app", "team-b/app", "public/app")
    }
    for name, image in made.items():
        await seed(direct_store, name, "v1", image)
    return made


async def _status(
    cache: RegistryLocal, path: str, headers: dict[str, str], method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    return await send(method, cache.url + path, None, headers)


async def test_each_subject_reads_only_what_a_rule_grants(
    start_cache: StartCache, auth_files: dict[str, Any], images: dict[str, Image]
) -> None:
    cache = await start_cache(**auth_files)
    blob_a = next(iter(images["team-a/app"].blobs))
    # alice: her team's image, manifests, tags and blobs; nothing of team-b.
    assert (await _status(cache, "/v2/team-a/app/manifests/v1", ALICE))[0] == 200
    assert (await _status(cache, f"/v2/team-a/app/blobs/{blob_a}", ALICE))[0] == 200
    status, _, body = await _status(cache, "/v2/team-a/app/tags/list", ALICE)
    assert status == 200 and json.loads(body)["tags"] == ["v1"]
    for path in ("/v2/team-b/app/manifests/v1", "/v2/team-b/app/tags/list"):
        status, _, body = await _status(cache, path, ALICE)
        assert status == 403 and error_code(body) == "DENIED", path
    # A named token is a subject too.
    assert (await _status(cache, "/v2/team-a/app/manifests/v1", CI))[0] == 200
    status, _, body = await _status(cache, "/v2/team-b/app/manifests/v1", CI)
    assert status == 403 and error_code(body) == "DENIED"
    # bob: refused team-a although it is cached; a team-a blob under team-b is unknown.
    status, _, body = await _status(cache, "/v2/team-a/app/manifests/v1", BOB)
    assert status == 403 and error_code(body) == "DENIED"
    status, _, body = await _status(cache, f"/v2/team-b/app/blobs/{blob_a}", BOB)
    assert status == 404 and error_code(body) == "BLOB_UNKNOWN"
    status, _, body = await _status(cache, f"/v2/team-a/app/blobs/{blob_a}", BOB, "HEAD")
    assert status == 403
    referrers = f"/v2/team-a/app/referrers/{images['team-a/app'].top}"
    assert (await _status(cache, referrers, BOB))[0] == 403
    assert (await _status(cache, referrers, ALICE))[0] == 200
    # No credentials: 401 with a challenge, except where anonymous is granted.
    status, headers, body = await _status(cache, "/v2/team-a/app/manifests/v1", NOBODY)
    assert status == 401 and error_code(body) == "UNAUTHORIZED"
    assert headers["WWW-Authenticate"] == (
        f'Bearer realm="{cache.url}/-/token",service="registry-local"'
    )
    assert (await _status(cache, "/v2/public/app/manifests/v1", NOBODY))[0] == 200
    # Wrong or unknown credentials are never anyone.
    for wrong in (
        _basic("alice", "guess"),
        _basic("mallory", "x"),
        {"Authorization": "Bearer nope"},
    ):
        status, _, body = await _status(cache, "/v2/public/app/manifests/v1", wrong)
        assert status == 401 and b"guess" not in body and b"nope" not in body
    # The ping challenges anonymous clients, so that engines log in.
    assert (await _status(cache, "/v2/", NOBODY))[0] == 401
    assert (await _status(cache, "/v2/", ALICE))[0] == 200


async def test_the_token_realm_hands_out_tokens_standing_for_the_credentials(
    start_cache: StartCache, auth_files: dict[str, Any], images: dict[str, Image]
) -> None:
    """As engines follow a Bearer challenge: a token from the realm, with their
    credentials or none, then the request with the token."""
    cache = await start_cache(**auth_files)

    async def token(headers: dict[str, str]) -> dict[str, str]:
        status, answer, body = await send("GET", f"{cache.url}/-/token?service=x", None, headers)
        assert status == 200 and answer["Cache-Control"] == "no-store", body
        document = json.loads(body)
        assert document["token"] == document["access_token"] and document["expires_in"] == 300
        return {"Authorization": f"Bearer {document['token']}"}

    anonymous, alice = await token(NOBODY), await token(ALICE)
    assert (await _status(cache, "/v2/", anonymous))[0] == 200  # a ping with a token passes
    assert (await _status(cache, "/v2/public/app/manifests/v1", anonymous))[0] == 200
    status, headers, _ = await _status(cache, "/v2/team-a/app/manifests/v1", anonymous)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer realm=")
    assert (await _status(cache, "/v2/team-a/app/manifests/v1", alice))[0] == 200
    assert (await _status(cache, "/v2/team-b/app/manifests/v1", alice))[0] == 403
    # Wrong credentials get no token; a token not handed out here is nobody's.
    status, _, body = await send("GET", f"{cache.url}/-/token", None, _basic("alice", "guess"))
    assert status == 401 and error_code(body) == "UNAUTHORIZED"
    # The secret part of a named token alone is not the token.
    assert (
        await _status(cache, "/v2/team-a/app/manifests/v1", {"Authorization": f"Bearer {TOKEN}"})
    )[0] == 401
    forged = {"Authorization": "Bearer rl1.forged-forged-forged-forged"}
    assert (await _status(cache, "/v2/public/app/manifests/v1", forged))[0] == 401
    assert cache.metrics.sample("http_requests", route="token", method="GET", status="200") == 2
    # containerd's OAuth2 form first: a password grant stands for those credentials.
    form = b"grant_type=password&username=alice&password=alice-pw&service=x&client_id=c"
    urlencoded = {"Content-Type": "application/x-www-form-urlencoded"}
    status, _, body = await send("POST", f"{cache.url}/-/token", form, urlencoded)
    granted = {"Authorization": f"Bearer {json.loads(body)['access_token']}"}
    assert (
        status == 200 and (await _status(cache, "/v2/team-a/app/manifests/v1", granted))[0] == 200
    )
    wrong = form.replace(b"alice-pw", b"guess")
    assert (await send("POST", f"{cache.url}/-/token", wrong, urlencoded))[0] == 401
    refresh = b"grant_type=refresh_token&refresh_token=x"
    status, _, body = await send("POST", f"{cache.url}/-/token", refresh, urlencoded)
    assert status == 400 and error_code(body) == "UNSUPPORTED"
    # What skopeo sends without credentials (Basic of ":") is no one: anonymous.
    empty = {"Authorization": "Basic Og=="}
    assert (await _status(cache, "/v2/public/app/manifests/v1", empty))[0] == 200


async def test_the_catalog_lists_only_what_the_subject_may_pull(
    start_cache: StartCache, auth_files: dict[str, Any], images: dict[str, Image]
) -> None:
    cache = await start_cache(**auth_files)
    seen = {}
    for who, headers in (("alice", ALICE), ("bob", BOB), ("ci", CI), ("anonymous", NOBODY)):
        status, _, body = await _status(cache, "/v2/_catalog", headers)
        assert status == 200, who
        seen[who] = json.loads(body)["repositories"]
    assert seen == {
        "alice": ["team-a/app"],
        "bob": ["team-b/app"],
        "ci": ["team-a/app"],
        "anonymous": ["public/app"],
    }
    status, headers, body = await _status(cache, "/v2/_catalog?n=1", NOBODY)
    assert json.loads(body)["repositories"] == ["public/app"] and "Link" not in headers


async def test_push_mount_and_delete_need_their_own_grants(
    start_cache: StartCache, auth_files: dict[str, Any], images: dict[str, Image]
) -> None:
    cache = await start_cache(allow_push=True, allow_delete=True, **auth_files)
    new = build_image([{"f": b"new layer of team a"}])
    await push_image(cache.url, "team-a/new", "v1", new, ALICE)
    assert (await _status(cache, "/v2/team-a/new/manifests/v1", ALICE))[0] == 200
    # bob may pull team-b but not push there; nobody may push anywhere.
    for headers, code in ((BOB, 403), (NOBODY, 401)):
        status, _, _ = await send(
            "POST", f"{cache.url}/v2/team-b/new/blobs/uploads/", None, headers
        )
        assert status == code
    # A mount needs pull on the repository it mounts from.
    blob_b = next(iter(images["team-b/app"].blobs))
    mount = f"{cache.url}/v2/team-a/new/blobs/uploads/?mount={blob_b}&from=team-b/app"
    status, _, body = await send("POST", mount, None, ALICE)
    assert status == 403 and error_code(body) == "DENIED"
    blob_a = next(iter(images["team-a/app"].blobs))
    mount = f"{cache.url}/v2/team-a/new/blobs/uploads/?mount={blob_a}&from=team-a/app"
    assert (await send("POST", mount, None, ALICE))[0] == 201
    # A mount from anywhere (no `from`) would read any blob: an upload session instead.
    for anywhere in (f"?mount={blob_b}", f"?mount={blob_b}&from="):
        url = f"{cache.url}/v2/team-a/new/blobs/uploads/{anywhere}"
        assert (await send("POST", url, None, ALICE))[0] == 202
    status, _, _ = await _status(cache, f"/v2/team-a/new/blobs/{blob_b}", ALICE)
    assert status == 404
    # Deletes: the ci token may, alice (pull and push) may not.
    manifest = f"{cache.url}/v2/team-a/new/manifests/{new.top}"
    status, _, body = await send("DELETE", manifest, None, ALICE)
    assert status == 403 and error_code(body) == "DENIED"
    assert (await send("DELETE", manifest, None, CI))[0] == 202


async def _metric_reaches(cache: RegistryLocal, name: str, value: float, **labels: str) -> None:
    """The policy watcher looks at the file each second; its metric says when it did."""

    async def read() -> float:
        return cache.metrics.sample(name, **labels)

    await until(read, value)


def _replace(path: Path, text: str) -> None:
    """A new file renamed into place, as editors and the kubelet do: the watcher
    never sees it half written."""
    new = path.with_name(path.name + ".new")
    new.write_text(text)
    os.replace(new, path)


async def test_the_policy_is_reloaded_and_a_broken_one_keeps_the_last_good(
    start_cache: StartCache, auth_files: dict[str, Any], images: dict[str, Image]
) -> None:
    cache = await start_cache(**auth_files)
    path = "/v2/team-a/app/manifests/v1"
    assert (await _status(cache, path, BOB))[0] == 403
    policy = auth_files["policy"]
    _replace(
        policy,
        POLICY + '  - subjects: [bob]\n    repositories: ["team-*/*"]\n    actions: [pull]\n',
    )
    await _metric_reaches(cache, "access_policy_reloads", 1, outcome="applied")
    assert (await _status(cache, path, BOB))[0] == 200
    _replace(policy, "rules:\n  - subjects: [bob]\n    repositories: [Team-A]\n")
    await _metric_reaches(cache, "access_policy_reloads", 1, outcome="rejected")
    assert (await _status(cache, path, BOB))[0] == 200  # the last good policy stays
    assert cache.metrics.sample("access_policy_rules") == 5


def test_a_broken_policy_refuses_to_start(tmp_path: Path) -> None:
    cases = {
        "missing.yaml": "cannot read --access-policy",
        "syntax.yaml": "not valid YAML",
        "keys.yaml": "unknown ['action']",
        "action.yaml": "unknown actions ['pul']",
        "pattern.yaml": "is not a repository pattern",
    }
    (tmp_path / "syntax.yaml").write_text("rules: [\n")
    (tmp_path / "keys.yaml").write_text(
        "rules:\n  - {subjects: [a], repositories: [x], actions: [pull], action: [push]}\n"
    )
    (tmp_path / "action.yaml").write_text(
        "rules:\n  - {subjects: [a], repositories: [x], actions: [pul]}\n"
    )
    (tmp_path / "pattern.yaml").write_text(
        "rules:\n  - {subjects: [a], repositories: [Team/../x], actions: [pull]}\n"
    )
    for name, message in cases.items():
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "registry_local",
                "serve",
                "--access-policy",
                str(tmp_path / name),
                "--cache-dir",
                str(tmp_path / "cache"),
                "--allow-push",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=sealed_env(),
        )
        assert result.returncode == 2, (name, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("pattern", "matches", "misses"),
    [
        ("team-a/*", ["team-a/app"], ["team-a", "team-a/x/app", "team-ab/app"]),
        ("team-a/**", ["team-a/app", "team-a/x/app"], ["team-a", "team-b/app"]),
        ("*", ["alpine"], ["library/alpine"]),
        ("**", ["alpine", "a/b/c"], []),
        ("team-*/app", ["team-a/app", "team-/app"], ["team-a/b/app"]),
        ("library/alpine", ["library/alpine"], ["library/alpine2"]),
    ],
)
def test_patterns(pattern: str, matches: list[str], misses: list[str]) -> None:
    policy = Policy.parse(
        f"rules:\n  - {{subjects: ['*'], repositories: ['{pattern}'], actions: [pull]}}\n", "t"
    )
    for name in matches:
        assert policy.allows("someone", name, "pull"), name
    for name in misses:
        assert not policy.allows("someone", name, "pull"), name
    assert not policy.allows(None, matches[0], "pull")  # `*` never means anonymous
    assert not policy.allows("someone", matches[0], "push")


def test_a_user_called_anonymous_is_refused_with_a_policy(
    tmp_path: Path, auth_files: dict[str, Any], direct_store: StoreSettings
) -> None:
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    auth_files["auth_htpasswd"].write_text(f"anonymous:{hashed}\n")
    with pytest.raises(ConfigError, match="reserves it for clients without credentials"):
        build_app(RegistryLocal(tmp_path / "cache", direct_store, **auth_files).settings)


async def test_warming_needs_pull_on_every_image_it_names(
    start_cache: StartCache, auth_files: dict[str, Any], images: dict[str, Image]
) -> None:
    cache = await start_cache(warm_endpoint=True, **auth_files)

    async def warm(headers: dict[str, str], *names: str) -> tuple[int, bytes]:
        body = json.dumps({"images": [f"{n}:v1" for n in names]}).encode()
        status, _, answer = await send("POST", f"{cache.url}/-/warm", body, headers)
        return status, answer

    assert (await warm(ALICE, "team-a/app"))[0] == 200
    status, body = await warm(ALICE, "team-a/app", "team-b/app")
    assert status == 403 and error_code(body) == "DENIED"
    assert (await warm(NOBODY, "public/app"))[0] == 200
    assert (await warm(NOBODY, "team-a/app"))[0] == 401
