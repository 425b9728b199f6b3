"""Hostile input against a running server: never a 5xx, never a traceback, always
the OCI error envelope.

Requests are written as raw bytes (no client tidies them up), their paths,
queries, headers and bodies drawn by hypothesis from the API's shapes and from
hostile pieces: traversal, encodings, control characters, oversized values.
The server has every feature on (push, delete, warm-up) over the embedded store.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry_local.transfer.imagebuild import sample_image
from registry_local.transfer.oci_layout import write_oci_layout

from .support.processes import free_port, sealed_env, serve_argv


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    root = tmp_path_factory.mktemp("hostile")
    write_oci_layout(root / "sample", sample_image(), "latest")
    env = {
        **sealed_env(),
        "REGISTRY_LOCAL_FS_ROOT": str(root / "store"),
        "REGISTRY_LOCAL_CACHE_DIR": str(root / "cache"),
    }
    subprocess.run(
        [
            sys.executable,
            "-m",
            "registry_local",
            "import",
            str(root / "sample"),
            "library/hello:latest",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    port = free_port()
    command = serve_argv(port, "--allow-push", "--allow-delete", "--warm-endpoint")
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    assert process.stderr is not None
    log = []
    for line in process.stderr:
        log.append(line)
        if b"listening on" in line:
            break
    else:
        raise AssertionError(b"".join(log).decode())
    # Keep reading its log, so a full pipe never blocks the server; keep errors.
    errors: list[bytes] = []
    stderr = process.stderr
    reader = threading.Thread(
        target=lambda: errors.extend(line for line in stderr if b" ERROR " in line), daemon=True
    )
    reader.start()
    try:
        yield port
    finally:
        process.terminate()
        process.wait(30)
        reader.join(10)
        stderr.close()
    assert not errors, b"".join(errors).decode()  # no unexpected error was logged


def exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(raw)  # with "Connection: close": the server closes when done
        data = b""
        while chunk := sock.recv(1 << 16):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


HOSTILE = st.sampled_from(
    [
        "..",
        ".",
        "%2e%2e",
        "%2E%2E",
        "..%2f..",
        "%2f",
        "%00",
        "%ff",
        "~",
        "a" * 300,
        "_x",
        "library/hello",
        "library",
        "hello",
        "UPPER",
        "a b",
        "%20",
        "é",
        "%c3%a9",
        "\\",
        "//",
        "sha256:" + "0" * 64,
        "sha256:" + "g" * 64,
        "md5:abc",
        "latest",
        "uploads",
        "-",
    ]
)
SEGMENT = st.one_of(HOSTILE, st.text(min_size=1, max_size=20))
NAME = st.lists(SEGMENT, min_size=1, max_size=4).map("/".join)
REFERENCE = st.one_of(HOSTILE, st.text(max_size=80))


def _quote(text: str) -> str:
    # Keep '%' so hostile encodings reach the server as written.
    return urllib.parse.quote(text, safe="/%:@")


PATHS = st.one_of(
    st.builds(lambda n, r: f"/v2/{_quote(n)}/manifests/{_quote(r)}", NAME, REFERENCE),
    st.builds(lambda n, r: f"/v2/{_quote(n)}/blobs/{_quote(r)}", NAME, REFERENCE),
    st.builds(lambda n, r: f"/v2/{_quote(n)}/blobs/uploads/{_quote(r)}", NAME, REFERENCE),
    st.builds(lambda n: f"/v2/{_quote(n)}/tags/list", NAME),
    st.builds(lambda n, r: f"/v2/{_quote(n)}/referrers/{_quote(r)}", NAME, REFERENCE),
    st.sampled_from(
        [
            "/v2/",
            "/v2",
            "/-/warm",
            "/metrics",
            "/healthz",
            "/readyz",
            "/",
            "/v2/..",
            "/v2/library/hello/manifests/latest",
            "/v2/library/hello/tags/list",
            "/v2/_catalog",
        ]
    ),
    st.text(max_size=60).map(lambda t: "/" + _quote(t)),
)
QUERY = st.dictionaries(
    st.sampled_from(["n", "last", "digest", "mount", "from", "ns", "artifactType", "x"]),
    st.one_of(HOSTILE, st.text(max_size=30), st.integers(-5, 10**12).map(str)),
    max_size=3,
).map(lambda q: ("?" + urllib.parse.urlencode(q)) if q else "")
HEADER_VALUE = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
    max_size=100,
)
HEADERS = st.dictionaries(
    st.sampled_from(
        [
            "Accept",
            "Range",
            "Content-Range",
            "If-None-Match",
            "Content-Type",
            "Authorization",
            "X-Anything",
        ]
    ),
    st.one_of(
        HEADER_VALUE,
        st.sampled_from(
            [
                "bytes=0-10",
                "bytes=-5",
                "bytes=99999999999-",
                "bytes=5-1",
                "0-100",
                "bytes 0-9/10",
                "application/vnd.oci.image.index.v1+json",
                "*/*",
                "application/json",
                "0-0",
            ]
        ),
    ),
    max_size=4,
)
METHOD = st.sampled_from(
    ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND"]
)


@settings(
    # REGISTRY_LOCAL_FUZZ_EXAMPLES=20000 for a long run; CI runs the same 600 each time.
    max_examples=int(os.environ.get("REGISTRY_LOCAL_FUZZ_EXAMPLES", "600")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(METHOD, PATHS, QUERY, HEADERS, st.binary(max_size=1500))
def test_no_input_gets_a_5xx_or_a_traceback(
    server: int, method: str, path: str, query: str, headers: dict[str, str], body: bytes
) -> None:
    lines = [
        f"{method} {path}{query} HTTP/1.1",
        "Host: 127.0.0.1",
        "Connection: close",
        f"Content-Length: {len(body)}",
    ]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    status, response_headers, response_body = exchange(server, raw)
    assert status < 500, (status, response_body[:300])
    assert b"Traceback" not in response_body
    if status >= 400 and method != "HEAD":
        assert response_headers.get("content-type") == "application/json", response_headers
        errors = json.loads(response_body)["errors"]
        assert errors and all({"code", "message"} <= set(e) for e in errors)


def test_oversized_headers_and_bodies_are_refused(server: int) -> None:
    status, _, _ = exchange(
        server,
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: "
        + b"a" * 20000
        + b"\r\nConnection: close\r\n\r\n",
    )
    assert 400 <= status < 500  # aiohttp refuses before any handler runs
    huge = b"{" + b" " * (4 * 1024 * 1024 + 10) + b"}"
    status, _, body = exchange(
        server,
        b"PUT /v2/library/hello/manifests/big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/vnd.oci.image.manifest.v1+json\r\n"
        + f"Content-Length: {len(huge)}\r\n\r\n".encode()
        + huge,
    )
    assert status == 413 and json.loads(body)["errors"][0]["code"] == "MANIFEST_INVALID"
    warm = b'{"images": [' + b'"x",' * 30000 + b'"x"]}'
    status, _, body = exchange(
        server,
        b"POST /-/warm HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        + f"Content-Length: {len(warm)}\r\n\r\n".encode()
        + warm,
    )
    assert status == 413 and json.loads(body)["errors"]


def test_traversal_never_reaches_the_disk(server: int, tmp_path: Path) -> None:
    for target in [
        "/v2/..%2f..%2f..%2fetc/passwd/manifests/latest",
        "/v2/library/hello/blobs/sha256:..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/v2/library/hello/blobs/uploads/..%2f..%2finfo.json",
        "/v2/%2e%2e/%2e%2e/tags/list",
    ]:
        status, _, body = exchange(
            server, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        )
        assert status in (400, 404) and b"root:" not in body
