"""The loadtest tool: its report agrees with the server, and it catches corruption."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sys
from collections import Counter
from pathlib import Path

import bcrypt
import boto3
import pytest
from aiohttp import web

from registry_local.config import StoreSettings
from registry_local.loadtest.client import Target
from registry_local.loadtest.run import run_load
from registry_local.loadtest.workers import ClientProcesses, LoadWorkerDied
from registry_local.oci.digest import Digest
from registry_local.progress import Progress
from registry_local.transfer.imagebuild import Image, Platform, build_image, build_index

from .support.harness import StartCache, metric, seed
from .support.images import blob_key
from .support.processes import AWS_ENV, run_cli, run_docker_registry, sealed_env
from .support.s3proxy import S3Proxy, serve_app


def _index() -> tuple[Image, Image]:
    per_platform = {
        Platform("linux", arch): build_image(
            [{"a": os.urandom(300_000)}, {"b": os.urandom(100_000)}], Platform("linux", arch)
        )
        for arch in ("amd64", "arm64")
    }
    return build_index(per_platform), per_platform[Platform("linux", "amd64")]


async def test_the_report_matches_what_the_server_and_s3_saw(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy
) -> None:
    image, amd64 = _index()
    await seed(direct_store, "team/app", "v1", image)
    cache = await start_cache()

    # Shared among three worker processes, as a storm bigger than one core can pull.
    report = await run_load(cache.url, "team/app:v1", clients=20, processes=3)

    assert (report.pulls_ok, report.pulls_failed, report.processes) == (20, 0, 3)
    assert report.unique_blobs == len(amd64.blobs)  # config and two layers
    assert report.bytes == 20 * sum(len(d) for d in amd64.blobs.values())
    assert report.unique_bytes == sum(len(d) for d in amd64.blobs.values())
    assert report.s3 is not None and report.s3["fan_out"] == 1.0
    assert report.s3["blob_reads"] == len(amd64.blobs)
    assert report.s3["reads_per_blob"] == 1.0  # blobs below one part: one GET each
    assert report.s3["blob_bytes"] == report.unique_bytes
    gets = Counter(r.method for r in s3proxy.requests)["GET"]
    assert report.s3["get_requests"] == gets  # the proxy at the S3 boundary agrees
    assert report.s3["read_bytes"] == await metric(cache.url, "registry_local_s3_read_bytes_total")
    assert set(report.latency) == {"p50", "p90", "p99", "max"}
    assert 0 < report.first_layer_byte["p50"] <= report.latency["max"]
    # Again, in this process: all hits, no S3 blob read at all.
    warm = await run_load(cache.url, "team/app:v1", clients=10, waves=2)
    assert warm.pulls_ok == 20 and warm.s3 is not None and warm.s3["blob_reads"] == 0
    assert warm.bytes == 20 * report.unique_bytes


async def test_a_worker_process_that_dies_fails_the_run_clearly() -> None:
    target = Target("http://127.0.0.1:9", "team/app", "v1", ("linux", "amd64"))
    workers = ClientProcesses(target, 2, 4, 0.0)
    await asyncio.to_thread(workers.start)
    processes = [process for process, _ in workers._workers]
    try:
        processes[0].kill()
        with pytest.raises(LoadWorkerDied):
            await asyncio.to_thread(workers.wave, Progress("t", 0, 4, lines_when_piped=False))
    finally:
        await asyncio.to_thread(workers.stop)
    assert [process.poll() is not None for process in processes] == [True, True]


async def _cli(*args: str) -> tuple[int, str, str]:
    return await run_cli("loadtest", *args, env=sealed_env(AWS_ENV))


async def test_ctrl_c_stops_the_run_and_its_workers_quietly() -> None:
    arrived, gone = asyncio.Event(), asyncio.Event()
    open_requests = 0

    async def never_answers(request: web.Request) -> web.Response:
        nonlocal open_requests
        open_requests += 1
        if open_requests == 4:  # every client, so both workers are pulling
            arrived.set()
        try:
            await asyncio.Event().wait()  # hold every client mid-pull
        finally:
            open_requests -= 1
            if open_requests == 0:
                gone.set()
        raise AssertionError("unreachable")

    app = web.Application()
    app.router.add_get("/v2/", never_answers)
    runner, url = await serve_app(app)  # cancels a handler when its client goes
    try:
        # As from a terminal: SIGINT at its default, whatever this test inherited
        # (a shell running it in the background ignores SIGINT, and so would the
        # load tester).
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _WITH_DEFAULT_SIGINT,
            "loadtest",
            *(url, "team/app:v1", "--clients", "4", "--processes", "2"),
            env=sealed_env(AWS_ENV),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        await arrived.wait()
        os.killpg(process.pid, signal.SIGINT)  # a terminal's Ctrl-C: the whole group

        out, err = await process.communicate()
        assert (process.returncode, out, err) == (130, b"", b"")  # no tracebacks
        await gone.wait()  # every worker's connection closed: no process left pulling
    finally:
        await runner.cleanup()


_WITH_DEFAULT_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.executable, [sys.executable, '-m', 'registry_local', *sys.argv[1:]])"
)


async def test_a_corrupt_blob_fails_the_run(
    start_cache: StartCache, direct_store: StoreSettings, moto: str, bucket: str
) -> None:
    image, amd64 = _index()
    await seed(direct_store, "team/app", "v1", image)
    cache = await start_cache()
    code, out, err = await _cli(
        cache.url, "team/app:v1", "--clients", "5", "--processes", "2", "--json"
    )
    assert code == 0 and err == ""  # quiet when not on a terminal
    assert (json.loads(out)["pulls_ok"], json.loads(out)["processes"]) == (5, 2)

    layer = max(amd64.blobs, key=lambda d: len(amd64.blobs[d]))
    bad = bytearray(amd64.blobs[layer])
    bad[1000] ^= 1
    key = blob_key(layer)
    boto3.client("s3", endpoint_url=moto).put_object(Bucket=bucket, Key=key, Body=bytes(bad))
    fresh = await start_cache(cache_dir=cache.settings.cache.directory.parent / "fresh")
    code, out, _ = await _cli(fresh.url, "team/app:v1", "--clients", "5")
    assert code == 1
    assert "pulls: 0 ok, 5 failed" in out
    assert "ClientPayloadError" in out or "digest mismatch" in out


async def test_workers_import_the_parents_copy_whatever_the_directory_holds(
    start_cache: StartCache, direct_store: StoreSettings, tmp_path: Path
) -> None:
    """Run from a directory holding another registry_local (a source checkout
    beside an installed copy): the workers still import the parent's copy."""
    image, _ = _index()
    await seed(direct_store, "team/app", "v1", image)
    cache = await start_cache()
    decoy = tmp_path / "checkout" / "registry_local"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text(
        "raise SystemExit('the decoy registry_local was imported')\n"
    )
    process = await asyncio.create_subprocess_exec(
        # -P: the parent itself does not see the decoy, as an installed script would not
        *(sys.executable, "-P", "-m", "registry_local", "loadtest", cache.url, "team/app:v1"),
        *("--clients", "4", "--processes", "2", "--json"),
        cwd=decoy.parent,
        env=sealed_env(AWS_ENV),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert json.loads(out)["pulls_ok"] == 4


async def test_it_pulls_from_any_registry(tmp_path: Path, moto: str, bucket: str) -> None:
    image, amd64 = _index()
    async with run_docker_registry(tmp_path, s3_endpoint=moto, bucket=bucket) as registry2:
        from .support.harness import s3_settings

        await seed(s3_settings(moto, bucket), "team/app", "v1", image)
        report = await run_load(registry2, "team/app:v1", clients=4, platform="linux/arm64")
    assert report.pulls_ok == 4 and report.s3 is None  # no registry-local metrics there
    assert report.unique_blobs == len(amd64.blobs)


def test_the_live_line_names_a_total_only_when_one_is_known() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for total, line in (
        (0, "loadtest: 2.0 KiB, 1/3 items"),
        (4096, "x: 2.0 KiB / 4.0 KiB, 1/3 items"),
    ):
        screen = Terminal()
        progress = Progress("loadtest" if not total else "x", total, 3, stream=screen)
        progress.advance(2048)
        progress.item_done("ok")
        assert screen.getvalue().split("\r")[-1] == line


@pytest.mark.parametrize("layers_at_once", [1, 2])
async def test_each_pull_fetches_layer_concurrency_layers_at_once(layers_at_once: int) -> None:
    """A registry that holds every blob answer until `layers_at_once` are asked
    for at once: the pull finishes only if it asks that many, and never more."""
    image = build_image([{f"l{n}": os.urandom(1000)} for n in range(4)])
    config = json.loads(image.top_manifest)["config"]["digest"]
    active, peak = 0, 0
    enough = asyncio.Event()

    async def manifest(request: web.Request) -> web.Response:
        data = image.manifests[image.top]
        headers = {"Docker-Content-Digest": str(image.top), "Content-Type": image.media_type}
        return web.Response(body=data, headers=headers)

    async def blob(request: web.Request) -> web.Response:
        nonlocal active, peak
        digest = Digest.parse(request.match_info["digest"])
        data = image.blobs[digest]
        if str(digest) != config:
            active += 1
            peak = max(peak, active)
            if active >= layers_at_once:
                enough.set()
            await enough.wait()
            active -= 1
        return web.Response(body=data, headers={"Docker-Content-Digest": str(digest)})

    async def base(request: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/v2/", base)
    app.router.add_get("/v2/team/app/manifests/{reference}", manifest)
    app.router.add_get("/v2/team/app/blobs/{digest}", blob)
    runner, url = await serve_app(app)
    try:
        report = await run_load(url, "team/app:v1", clients=1, layer_concurrency=layers_at_once)
    finally:
        await runner.cleanup()
    assert report.pulls_ok == 1 and peak == layers_at_once


async def test_auth_file_credentials_reach_every_request_and_no_output(
    start_cache: StartCache, direct_store: StoreSettings, tmp_path: Path
) -> None:
    image = build_image([{"a": os.urandom(50_000)}, {"b": os.urandom(20_000)}])
    await seed(direct_store, "team-a/app", "v1", image)
    htpasswd, policy = tmp_path / "htpasswd", tmp_path / "policy.yaml"
    hashed = bcrypt.hashpw(b"s3cret-pw", bcrypt.gensalt(rounds=4)).decode()
    htpasswd.write_text(f"alice:{hashed}\n")
    policy.write_text(
        'rules:\n  - subjects: [alice]\n    repositories: ["team-a/*"]\n    actions: [pull]\n'
    )
    cache = await start_cache(auth_htpasswd=htpasswd, policy=policy)
    auth_file = tmp_path / "alice"
    auth_file.write_text("alice:s3cret-pw\n")

    # Two worker processes: the credentials travel with the target, not in argv.
    args = (cache.url, "team-a/app:v1", "--clients", "4", "--processes", "2", "--json")
    code, out, err = await _cli(*args, "--auth-file", str(auth_file))
    assert code == 0, err
    assert json.loads(out)["pulls_ok"] == 4
    assert "s3cret" not in out + err

    code, out, _ = await _cli(*args)  # anonymous: the policy grants nothing
    assert code == 1 and json.loads(out)["pulls_failed"] == 4

    auth_file.write_text("no colon here\n")
    code, out, err = await _cli(*args, "--auth-file", str(auth_file))
    assert code != 0 and "USER:PASSWORD" in err and "no colon" not in out + err
