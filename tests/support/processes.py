"""Real programs the tests run: moto's S3 server, the CNCF registry, skopeo.

Each listens on 127.0.0.1 on a free port and is stopped afterwards. Programs that
are missing fail the test in CI and skip it elsewhere, with the reason.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

__all__ = [
    "AWS_ENV",
    "TokenAuth",
    "free_port",
    "free_ports",
    "in_thread",
    "refuse_the_loop",
    "require_tool",
    "run_cli",
    "run_docker_registry",
    "run_moto",
    "sealed_env",
    "serve_argv",
    "serving",
    "skopeo",
    "start_cli",
    "stop_process",
]

T = TypeVar("T")

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def serve_argv(port: int, *args: str) -> list[str]:
    """The command line of `registry-local serve` on 127.0.0.1:port, this Python's."""
    return [sys.executable, "-m", "registry_local", "serve", "--listen", f"127.0.0.1:{port}", *args]


def stop_process(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def start_cli(*args: str, env: dict[str, str], **options: Any) -> asyncio.subprocess.Process:
    """`python -m registry_local ARGS` started, stdout and stderr piped."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "registry_local",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        **options,
    )


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """`python -m registry_local ARGS`: exit status, stdout, stderr."""
    process = await start_cli(*args, env=env)
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """Distinct free ports: every socket stays bound until all are chosen, so the
    kernel cannot hand the same port out twice."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def require_tool(name: str) -> str:
    """The program's path; fail in CI, skip elsewhere, if it is not installed."""
    # Programs from PyPI (weed) sit beside the interpreter, which may not be on PATH.
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        message = f"{name} is not installed (.ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def sealed_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """An environment in which nothing can reach beyond loopback by accident:
    proxies point at a closed local port, with NO_PROXY for loopback."""
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    closed = f"http://127.0.0.1:{free_port()}"
    env.update(
        {
            "HTTP_PROXY": closed,
            "HTTPS_PROXY": closed,
            "http_proxy": closed,
            "https_proxy": closed,
            "NO_PROXY": "127.0.0.1,localhost,::1",
            "no_proxy": "127.0.0.1,localhost,::1",
            **AWS_ENV,
        }
    )
    env.update(extra or {})
    return env


def _on_the_loop() -> bool:
    """Whether this thread runs an event loop now: a blocking wait here would
    stall every task on it (the server under test among them)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def refuse_the_loop(what: str) -> None:
    """Fail at once when a blocking helper is called on a running event loop."""
    if _on_the_loop():
        raise AssertionError(f"{what} blocks: call it from a thread, or use its async form")


def _answers(url: str) -> bool:
    """Whether something answers HTTP at `url` yet (any status will do)."""
    try:
        urllib.request.urlopen(url, timeout=1).close()
    except urllib.error.HTTPError:
        return True  # it answers
    except OSError:
        return False
    return True


def _wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    refuse_the_loop("_wait_http")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        if _answers(url):
            return
        time.sleep(0.05)  # polling a process that is starting up, off any event loop
    raise RuntimeError(f"{url} did not answer within {timeout}s")


@contextmanager
def _running(cmd: list[str], ready_url: str, env: dict[str, str], log: Path) -> Iterator[None]:
    """`cmd` started, once it answers at `ready_url`; stopped afterwards.
    Blocking: for sync fixtures (no event loop runs); async code uses `_started`."""
    refuse_the_loop("_running")
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_http(ready_url, process)
        yield
    finally:
        stop_process(process, 10)


async def _until_http(url: str, process: asyncio.subprocess.Process) -> None:
    """Wait until `process` answers at `url`: each probe runs in a thread, and
    the pause between probes lets the loop's other tasks run."""
    while True:
        if process.returncode is not None:
            raise RuntimeError(f"{url}: the process exited with {process.returncode}")
        if await asyncio.to_thread(_answers, url):
            return
        await asyncio.sleep(0.05)  # polling a process that is starting up


@asynccontextmanager
async def _started(
    cmd: list[str], ready_url: str, env: dict[str, str], log: Path
) -> AsyncIterator[None]:
    """`_running` for async callers: nothing in it blocks the event loop."""
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            *cmd, stdout=out, stderr=subprocess.STDOUT, env=env
        )
    try:
        try:
            async with asyncio.timeout(30):
                await _until_http(ready_url, process)
        except TimeoutError:
            raise RuntimeError(f"{ready_url} did not answer within 30s") from None
        yield
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(10):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


@asynccontextmanager
async def in_thread(blocking: AbstractContextManager[T]) -> AsyncIterator[T]:
    """A blocking context manager (a daemon started and waited for) entered and
    left in a worker thread, so that the event loop runs on meanwhile."""
    value = await asyncio.to_thread(blocking.__enter__)
    try:
        yield value
    except BaseException as exc:
        if not await asyncio.to_thread(blocking.__exit__, type(exc), exc, exc.__traceback__):
            raise
    else:
        await asyncio.to_thread(blocking.__exit__, None, None, None)


@contextmanager
def run_moto(log: Path) -> Iterator[str]:
    """moto's S3 server; yields its endpoint URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with _running(cmd, url + "/moto-api/", sealed_env(), log):
        yield url


@dataclass(frozen=True)
class TokenAuth:
    """Distribution's `auth: token:` settings: where clients get tokens, the
    service and issuer the tokens must name, and the certificates that sign them."""

    realm: str
    service: str
    issuer: str
    rootcertbundle: Path

    def config(self) -> str:
        """The `auth:` section of a registry's configuration file."""
        return (
            f"auth:\n  token:\n    realm: {self.realm}\n    service: {self.service}\n"
            f"    issuer: {self.issuer}\n    rootcertbundle: {self.rootcertbundle}\n"
        )


@asynccontextmanager
async def run_docker_registry(
    workdir: Path,
    *,
    s3_endpoint: str | None = None,
    bucket: str | None = None,
    fs_root: Path | None = None,
    prefix: str = "",
    htpasswd: Path | None = None,
    token_auth: TokenAuth | None = None,
) -> AsyncIterator[str]:
    """The CNCF registry (Debian's docker-registry) on S3 or a directory, with
    htpasswd or token auth if given; yields its URL."""
    assert htpasswd is None or token_auth is None, "a registry has one kind of auth"
    binary = require_tool("docker-registry")
    port = free_port()
    if s3_endpoint is not None:
        storage = (
            f"  s3:\n    region: us-east-1\n    bucket: {bucket}\n"
            f"    regionendpoint: {s3_endpoint}\n    accesskey: testing\n"
            f"    secretkey: testing\n    secure: false\n    v4auth: true\n"
            + (f"    rootdirectory: {prefix}\n" if prefix else "")
        )
    else:
        storage = f"  filesystem:\n    rootdirectory: {fs_root}\n"
    config = workdir / f"registry-{port}.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: info\nstorage:\n"
        + storage
        + "  delete:\n    enabled: true\n  redirect:\n    disable: true\n"
        + f"http:\n  addr: 127.0.0.1:{port}\n"
        + (f"auth:\n  htpasswd:\n    realm: test\n    path: {htpasswd}\n" if htpasswd else "")
        + (token_auth.config() if token_auth is not None else "")
    )
    url = f"http://127.0.0.1:{port}"
    # Its S3 driver panics at start when AWS_CA_BUNDLE is set; sealed_env drops it.
    async with _started(
        [binary, "serve", str(config)], url + "/v2/", sealed_env(), workdir / f"registry-{port}.log"
    ):
        yield url


@dataclass
class StderrLog:
    """What a served process wrote to stderr: all of it once the block ended."""

    data: bytes = b""


@asynccontextmanager
async def serving(
    *args: str, env: dict[str, str] | None = None, log: StderrLog | None = None
) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """`python -m registry_local serve ...` on a free port, once it says it listens.

    With `log`, everything it wrote to stderr is in `log.data` afterwards.
    """
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *serve_argv(port, *args),
        stderr=asyncio.subprocess.PIPE,
        env=sealed_env({**AWS_ENV, **(env or {})}),
    )
    assert process.stderr is not None
    lines: list[bytes] = []
    try:
        async with asyncio.timeout(60):  # a serve that never listens fails, not hangs
            while b"listening on" not in (line := await process.stderr.readline()):
                lines.append(line)
                assert line, b"".join(lines).decode()
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    lines.append(line)
    drain = asyncio.create_task(process.stderr.read())
    try:
        yield f"http://127.0.0.1:{port}", process
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()
        rest = await drain
        if log is not None:
            log.data = b"".join(lines) + rest


def skopeo(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run skopeo with an accept-anything policy, plain HTTP to loopback only."""
    binary = require_tool("skopeo")
    policy = workdir / "policy.json"
    if not policy.exists():
        policy.write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
    result = subprocess.run(
        [binary, "--policy", str(policy), *args],
        env=sealed_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"skopeo {' '.join(args)} failed:\n{result.stderr}")
    return result
