"""Faults from clients and from the process: aborts, SIGTERM, kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp

from registry_local.config import StoreSettings
from registry_local.oci.digest import Digest
from registry_local.server.state import BLOBS, INFLIGHT
from registry_local.transfer.imagebuild import build_image

from .support.harness import StartCache, pull_image, seed
from .support.images import cached_blob
from .support.processes import AWS_ENV, free_port, sealed_env
from .support.s3proxy import Fault, S3Proxy, key_endswith

MIB = 1 << 20
BOUND = 60


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _abort_after_first_bytes(session: aiohttp.ClientSession, url: str) -> None:
    response = await session.get(url)
    await response.content.readany()
    response.close()  # drops the connection mid-body


async def test_a_thousand_aborted_requests_leak_nothing(
    start_cache: StartCache, direct_store: StoreSettings
) -> None:
    images = [build_image([{"f": os.urandom(4 * MIB)}]) for _ in range(10)]
    for number, image in enumerate(images):
        await seed(direct_store, f"app{number}", "v1", image)
    layers = [max(i.blobs, key=lambda d: len(i.blobs[d])) for i in images]
    cache = await start_cache()
    app = cache.app
    assert app is not None

    async def client(number: int) -> None:
        blob = number % 10  # cold fills at first, committed blobs later
        url = f"{cache.url}/v2/app{blob}/blobs/{layers[blob]}"
        async with aiohttp.ClientSession() as session:
            if number % 7 == 0:
                await session.head(url)
            elif number % 11 == 0:
                await _abort_after_first_bytes(session, f"{cache.url}/v2/app{blob}/manifests/v1")
            else:
                await _abort_after_first_bytes(session, url)

    async def round_of(count: int) -> tuple[int, int]:
        """Aborted requests, 50 at a time; then, once all is quiet, fds and tasks."""
        for batch in range(0, count, 50):
            await asyncio.wait_for(
                asyncio.gather(*(client(n) for n in range(batch, batch + 50))), BOUND
            )
        await asyncio.wait_for(app[INFLIGHT].idle(), BOUND)
        for layer in layers:  # fills nobody waits for any more still finish
            fill = app[BLOBS].fills.in_flight(layer)
            if fill is not None:
                await asyncio.wait_for(asyncio.shield(fill.task), BOUND)
        return _open_fds(), len(asyncio.all_tasks())

    # Connection pools (to S3, in the proxy) grow to their working size in a
    # first round; a leak would go on growing with every request after that.
    fds, tasks = await round_of(200)
    after_fds, after_tasks = await round_of(1000)
    assert after_fds <= fds + 2, (fds, after_fds)
    assert after_tasks <= tasks + 1, (tasks, after_tasks)
    assert all(cache.blob_path(layer).exists() for layer in layers)  # fills completed
    assert len(await pull_image(cache.url, "app3", "v1")) == 3  # and it still serves


class Server:
    """`registry-local serve` as a process whose log lines can be awaited."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = ("serve", "--listen", f"127.0.0.1:{self.port}", *args)
        self.lines: list[str] = []
        self._new_line = asyncio.Event()

    async def start(self) -> Server:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "registry_local",
            *self.args,
            stderr=asyncio.subprocess.PIPE,
            env=sealed_env(AWS_ENV),
        )
        self._reader = asyncio.create_task(self._read())
        await self.line("listening on")
        return self

    async def _read(self) -> None:
        assert self.process.stderr is not None
        while line := await self.process.stderr.readline():
            self.lines.append(line.decode())
            self._new_line.set()

    async def line(self, text: str) -> None:
        while not any(text in line for line in self.lines):
            if self._reader.done():
                raise AssertionError(f"no {text!r} in:\n{''.join(self.lines)}")
            self._new_line.clear()
            await asyncio.wait_for(self._new_line.wait(), BOUND)

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.kill()
        code = await self.process.wait()
        await self._reader
        return code


async def test_sigterm_finishes_requests_in_flight_and_refuses_new_ones(
    direct_store: StoreSettings, s3proxy: S3Proxy, bucket: str, tmp_path: Path
) -> None:
    image = build_image([{"f": os.urandom(2 * MIB)}])
    layer = max(image.blobs, key=lambda d: len(image.blobs[d]))
    await seed(direct_store, "app", "v1", image)
    gate = s3proxy.add(Fault(key_endswith(f"{layer.hex}/data"), gate_at=256 << 10))
    server = await Server(
        "--cache-dir",
        str(tmp_path / "cache"),
        "--s3-endpoint",
        s3proxy.url,
        "--s3-bucket",
        bucket,
        "--shutdown-timeout",
        "30",
    ).start()
    try:
        async with aiohttp.ClientSession() as session:
            response = await session.get(f"{server.url}/v2/app/blobs/{layer}")
            head = await response.content.readany()  # a fill is under way, held at the gate
            server.process.send_signal(signal.SIGTERM)
            await server.line("shutting down")
            try:
                await asyncio.open_connection("127.0.0.1", server.port)
                refused = False
            except ConnectionRefusedError:
                refused = True
            assert refused  # no new connections
            gate.gate.set()
            body = head + await response.read()  # the one in flight finishes
        assert Digest.of(body) == layer
        assert await asyncio.wait_for(server.process.wait(), BOUND) == 0
    finally:
        await server.stop()
    assert cached_blob(tmp_path / "cache", layer).exists()
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


async def test_sigterm_cuts_what_outlasts_the_deadline(
    direct_store: StoreSettings, s3proxy: S3Proxy, bucket: str, tmp_path: Path
) -> None:
    image = build_image([{"f": os.urandom(48 * MIB)}])
    layer = max(image.blobs, key=lambda d: len(image.blobs[d]))
    other = build_image([{"g": os.urandom(2 * MIB)}])
    other_layer = max(other.blobs, key=lambda d: len(other.blobs[d]))
    await seed(direct_store, "app", "v1", image)
    await seed(direct_store, "other", "v1", other)
    s3proxy.add(Fault(key_endswith(f"{other_layer.hex}/data"), gate_at=256 << 10))  # never opens
    server = await Server(
        "--cache-dir",
        str(tmp_path / "cache"),
        "--s3-endpoint",
        s3proxy.url,
        "--s3-bucket",
        bucket,
        "--shutdown-timeout",
        "1",
    ).start()
    try:
        async with aiohttp.ClientSession() as session:
            await (await session.get(f"{server.url}/v2/app/blobs/{layer}")).read()  # cached
            stuck = await session.get(f"{server.url}/v2/app/blobs/{layer}")
            await stuck.content.readany()  # ...and this client stops reading
            filling = await session.get(f"{server.url}/v2/other/blobs/{other_layer}")
            await filling.content.readany()  # a fill held at its gate forever
            server.process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(server.process.wait(), BOUND) == 0
            for response in (stuck, filling):
                try:
                    cut = len(await response.read()) < int(response.headers["Content-Length"])
                except aiohttp.ClientPayloadError:
                    cut = True
                assert cut
    finally:
        await server.stop()
    cache = tmp_path / "cache"
    assert list((cache / "tmp").iterdir()) == []  # the unfinished fill left nothing
    assert not cached_blob(cache, other_layer).exists()
    assert any("stopped" in line for line in server.lines)
