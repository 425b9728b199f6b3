"""Operator mistakes and bad environments get one clear line, never a traceback.

Each case runs `registry-local` as a real process, as an operator would, and
checks the exit status (2 for a usage mistake, 1 for the environment) and that
stderr is one line naming the cause.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry_local import __version__
from registry_local.config import StoreSettings

from .support.harness import fetch
from .support.processes import StderrLog, free_port, require_tool, run_cli, sealed_env, serving
from .support.s3proxy import Fault, S3Proxy


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another process (here: this one) listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def _cases(tmp: Path, busy: int) -> list[tuple[list[str], int, str]]:
    bad_utf8 = tmp / "bad-utf8.htpasswd"
    bad_utf8.write_bytes(b"user:\xff\xfe\n")
    bad_bcrypt = tmp / "bad-bcrypt.htpasswd"
    bad_bcrypt.write_text("user:$2y$05$short\n")
    a_file = tmp / "a-file"
    a_file.write_text("not a directory")
    (tmp / "store").mkdir()
    cache = ["--cache-dir", str(tmp / "cache"), "--fs-root", str(tmp / "store")]
    port = free_port()
    return [
        (["serve", "--listen", f"127.0.0.1:{busy}", *cache], 1, "is in use"),
        (
            ["serve", "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{port}"],
            2,
            "--metrics-listen needs a listener of its own",
        ),
        (["serve", "--s3-bucket", "b", "--s3-endpoint", "127.0.0.1:9000"], 2, "http(s)://"),
        (
            ["import", str(tmp), "a:v1", "--s3-bucket", "b", "--s3-endpoint", "127.0.0.1:9000"],
            2,
            "http(s)://",
        ),
        (["warm", "a:v1", "--s3-bucket", "b", "--s3-endpoint", "127.0.0.1:9000"], 2, "http(s)://"),
        (["serve", "--tag-ttl", "abc", *cache], 2, "--tag-ttl 'abc': a number of seconds"),
        (["serve", "--listen", "nosuchhost.invalid:5000", *cache], 1, "cannot listen on"),
        (["serve", "--auth-htpasswd", str(bad_utf8), *cache], 2, "is not UTF-8 text"),
        (["serve", "--auth-htpasswd", str(bad_bcrypt), *cache], 2, "not a bcrypt entry"),
        (["serve", "--allow-delete", *cache], 2, "--allow-delete needs --allow-push"),
        (["serve", "--cache-max-bytes", "10", *cache], 2, "too small to cache anything"),
        (
            ["serve", "--fs-root", str(tmp / "typo"), "--cache-dir", str(tmp / "cache")],
            1,
            "does not exist",
        ),
        (["sample", str(a_file)], 2, "is not a directory"),
        (["export", "team/app:v1", str(a_file), "--fs-root", str(tmp)], 2, "is not a directory"),
        (
            [
                "import",
                str(tmp),
                "team/app:v1",
                "--fs-root",
                str(tmp / "s"),
                "--scratch-dir",
                str(tmp / "nowhere"),
            ],
            2,
            "--scratch-dir",
        ),
        (["verify", "--cache-dir", str(tmp / "no-such-cache")], 2, "is not a directory"),
        (["prune", "--cache-dir", str(tmp / "no-such-cache")], 2, "is not a directory"),
        (
            [
                "serve",
                "--cache-dir",
                str(a_file / "cache"),
                "--fs-root",
                str(tmp / "store"),
                "--listen",
                f"127.0.0.1:{port}",
            ],
            1,
            "Not a directory",
        ),
    ]


async def test_every_mistake_is_one_clear_line(tmp_path: Path, busy_port: int) -> None:
    for argv, status, message in _cases(tmp_path, busy_port):
        code, _, err = await run_cli(*argv, env=sealed_env())
        lines = [line for line in err.splitlines() if not line[:4].isdigit()]  # log lines
        assert code == status, (argv, code, err)
        assert len(lines) == 1 and lines[0].startswith("registry-local: "), (argv, err)
        assert message in lines[0], (argv, err)
        assert "Traceback" not in err, (argv, err)


async def test_a_backing_store_that_refuses_us_stops_the_start(
    tmp_path: Path, moto: str, bucket: str, s3proxy: S3Proxy
) -> None:
    """Permanent faults refuse to start, in one line naming the fault and the fix."""
    s3 = ["--cache-dir", str(tmp_path / "cache"), "--listen", f"127.0.0.1:{free_port()}"]
    nobody = sealed_env(
        {
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
            "AWS_CONFIG_FILE": str(tmp_path / "none"),
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        nobody.pop(name, None)
    s3proxy.add(Fault(lambda method, key: method == "HEAD", status=403, code="AccessDenied"))
    cases = [
        (["--s3-endpoint", moto, "--s3-bucket", "no-such-bucket"], sealed_env(), "no such bucket"),
        (["--s3-endpoint", moto, "--s3-bucket", bucket], nobody, "no AWS credentials found"),
        (["--s3-endpoint", s3proxy.url, "--s3-bucket", bucket], sealed_env(), "access denied"),
    ]
    for argv, env, message in cases:
        code, _, err = await run_cli("serve", *s3, *argv, env=env)
        lines = [line for line in err.splitlines() if not line[:4].isdigit()]
        assert code == 1 and len(lines) == 1, (argv, err)
        assert lines[0].startswith("registry-local: cannot use s3://"), err
        assert message in lines[0] and "Traceback" not in err, err


async def test_an_unreachable_store_starts_not_ready_and_says_why(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    argv = ("--cache-dir", str(tmp_path / "c"), "--s3-endpoint", dead, "--s3-bucket", "b")
    stderr = StderrLog()
    async with serving(*argv, log=stderr) as (url, _):
        port = url.rpartition(":")[2]
        code, _, err = await run_cli(
            "check", "--ready", "--listen", f"127.0.0.1:{port}", env=sealed_env()
        )
        assert code == 1 and f'cannot connect to "{dead}' in err, err
        status, _, body = await fetch(f"{url}/v2/app/manifests/v1")
        assert status == 503 and b"try again" in body  # transient: worth a retry
    log = stderr.data.decode()
    assert "starting not ready: backing store unreachable: cannot connect to" in log


async def test_a_store_refusing_us_later_tells_clients_it_is_not_their_fault(
    tmp_path: Path, direct_store: StoreSettings, s3proxy: S3Proxy, bucket: str
) -> None:
    argv = ("--cache-dir", str(tmp_path / "c"), "--s3-endpoint", s3proxy.url, "--s3-bucket", bucket)
    async with serving(*argv) as (url, _):
        s3proxy.add(Fault(lambda method, key: True, status=403, code="AccessDenied"))
        status, _, body = await fetch(f"{url}/v2/app/manifests/v1")
        [error] = json.loads(body)["errors"]
        assert status == 503 and error["code"] == "UNAVAILABLE"
        assert "(access denied)" in error["message"] and "operator" in error["message"]
        assert bucket not in error["message"] and "try again" not in error["message"]
        status, _, body = await fetch(f"{url}/readyz")
        assert status == 503
        assert json.loads(body)["checks"]["store"].startswith(
            "backing store refuses registry-local: access denied (403): check the credentials"
        )


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory that others may read (outside root's 0700 homes), holding a
    store and a cache dir; it and the cache dir are read-only (mode 0555)."""
    shared = Path(tempfile.mkdtemp(prefix="registry-local-"))
    (shared / "cache").mkdir()
    (shared / "store").mkdir()
    for path in (shared / "cache", shared):
        path.chmod(0o555)
    yield shared
    for path in (shared, shared / "cache"):
        path.chmod(0o755)
    shutil.rmtree(shared)


def _as_a_user_who_cannot_write(shared: Path) -> list[str]:
    """The command prefix that runs a program as a user the read-only
    directories bind: this user, unless it is root, who writes anywhere; then
    nobody (allowed to read everything, so that it can run this interpreter
    wherever it is installed, but to write nothing of root's)."""
    if os.getuid() != 0:
        assert not os.access(shared / "cache", os.W_OK), "this user writes read-only dirs"
        return []
    setpriv = require_tool("setpriv")
    return [
        *(setpriv, "--reuid", "65534", "--regid", "65534", "--clear-groups"),
        *("--inh-caps", "+dac_read_search", "--ambient-caps", "+dac_read_search"),
    ]


async def test_a_cache_dir_the_service_user_cannot_write(shared: Path) -> None:
    """A cache dir the service user cannot write, or cannot create, is one line
    and exit 1. Any user runs this: root runs it as nobody."""
    user = _as_a_user_who_cannot_write(shared)
    store = ["--fs-root", str(shared / "store")]
    for argv in (
        ["serve", "--cache-dir", str(shared / "cache"), *store],
        ["serve", "--cache-dir", str(shared / "new"), *store],
        ["warm", "library/x:1", "--cache-dir", str(shared / "cache"), *store],
    ):
        process = await asyncio.create_subprocess_exec(
            *user,
            sys.executable,
            "-m",
            "registry_local",
            *argv,
            env=sealed_env({"HOME": str(shared)}),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await process.communicate()
        lines = [line for line in err.decode().splitlines() if not line[:4].isdigit()]
        assert process.returncode == 1, (argv, err)
        assert len(lines) == 1 and lines[0].startswith("registry-local: "), (argv, err)
        assert "Permission denied" in lines[0], (argv, err)


async def test_version_and_case_insensitive_choices(tmp_path: Path) -> None:
    code, out, _ = await run_cli("--version", env=sealed_env())
    assert code == 0 and out.strip() == f"registry-local {__version__}"
    port = free_port()
    code, _, err = await run_cli(
        "serve",
        "--log-format",
        "JSON",
        "--listen",
        f"127.0.0.1:{port}",
        "--metrics-listen",
        f"127.0.0.1:{port}",
        env=sealed_env(),
    )
    assert code == 2 and "--log-format" not in err  # JSON accepted; the next mistake reported


async def test_a_misspelt_variable_is_named_not_ignored(tmp_path: Path) -> None:
    env = sealed_env({"REGISTRY_LOCAL_CACHEDIR": str(tmp_path)})
    code, _, err = await run_cli("verify", "--cache-dir", str(tmp_path), env=env)
    assert code == 0
    assert (
        "registry-local: warning: REGISTRY_LOCAL_CACHEDIR is not an option and is ignored "
        "(did you mean REGISTRY_LOCAL_CACHE_DIR?)"
    ) in err


async def test_commands_take_only_the_options_they_use(tmp_path: Path) -> None:
    for argv in (
        ["check", "--allow-push"],
        ["verify", "--tag-ttl", "5"],
        ["prune", "--upstream", "x"],
    ):
        code, _, err = await run_cli(*argv, env=sealed_env())
        assert code == 2 and "unrecognized arguments" in err, (argv, err)


async def test_a_bug_is_one_line_and_its_traceback_only_on_request(tmp_path: Path) -> None:
    """A real bug (here: one planted in `sample`) is not the operator's doing:
    one line saying so; the traceback only with debug logging."""
    plant = (
        "import sys, registry_local.cli as cli, registry_local.commands.sample as sample\n"
        "def broken(): raise ZeroDivisionError('planted')\n"
        "sample.sample_image = broken\n"
        "sys.exit(cli.main(['sample', sys.argv[1]]))\n"
    )
    for level, traced in (("info", False), ("debug", True)):
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            plant,
            str(tmp_path / "out"),
            env=sealed_env({"REGISTRY_LOCAL_LOG_LEVEL": level}),
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await process.communicate()
        text = err.decode()
        assert process.returncode == 1, text
        assert text.splitlines()[-1].startswith(
            "registry-local: internal error (a bug; please report it): ZeroDivisionError: planted"
        )
        assert ("Traceback" in text) is traced, text


async def test_a_bug_in_a_handler_is_an_error_line_and_a_500_envelope(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from registry_local.server.middleware import errors

    async def broken(request: web.Request) -> web.Response:
        raise ZeroDivisionError("planted")

    app = web.Application(middlewares=[errors])
    app.router.add_get("/v2/", broken)
    caplog.set_level(logging.DEBUG, logger="registry_local.server.middleware")
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/v2/")
        assert response.status == 500
        assert (await response.json())["errors"][0]["code"] == "UNKNOWN"
        assert "planted" not in await response.text()
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert error.exc_info is None and "ZeroDivisionError: planted" in error.getMessage()
    assert [r.exc_info is not None for r in caplog.records if r.levelno == logging.DEBUG] == [True]


def _many_cached_repositories(cache: Path, count: int) -> None:
    for number in range(count):
        (cache / "repositories" / f"team/app{number}" / "_tags").mkdir(parents=True)


async def test_a_reader_that_stops_reading_ends_the_command_quietly(tmp_path: Path) -> None:
    """`registry-local cached --json | head -1`: no 'Broken pipe' line, no traceback."""
    await asyncio.to_thread(_many_cached_repositories, tmp_path / "cache", 3000)
    read, write = os.pipe()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "registry_local",
        "cached",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--json",
        stdout=write,
        stderr=asyncio.subprocess.PIPE,
        env=sealed_env(),
    )
    os.close(write)
    os.close(read)  # the reader is gone before the first byte
    _, err = await process.communicate()
    assert err == b"" and process.returncode == 141
