"""`registry-local status`: a running host's summary, read from its /metrics."""

from __future__ import annotations

import json
from pathlib import Path

from registry_local.config import StoreSettings
from registry_local.transfer.imagebuild import build_image

from .support.harness import pull_image, seed
from .support.processes import free_port, run_cli, sealed_env, serving
from .support.s3proxy import S3Proxy


async def _status(url: str, *extra: str) -> tuple[int, str, str]:
    port = url.rpartition(":")[2]
    return await run_cli("status", "--listen", f"127.0.0.1:{port}", *extra, env=sealed_env())


async def test_status_sums_up_a_running_host(
    tmp_path: Path, direct_store: StoreSettings, s3proxy: S3Proxy, bucket: str
) -> None:
    image = build_image([{"a.bin": b"a" * 300_000}, {"b.bin": b"b" * 200_000}])
    await seed(direct_store, "app", "v1", image)
    args = (
        *("--cache-dir", str(tmp_path / "cache"), "--cache-max-bytes", "10MiB"),
        *("--s3-endpoint", s3proxy.url, "--s3-bucket", bucket),
        *("--peer-listen", f"127.0.0.1:{free_port()}"),
    )
    async with serving(*args) as (url, _):
        code, out, err = await _status(url)
        assert code == 0, out + err
        assert "nothing filled yet" in out and "no lookups yet" in out
        await pull_image(url, "app", "v1")
        await pull_image(url, "app", "v1")
        code, out, err = await _status(url)
        assert code == 0, err
        code, as_json, _ = await _status(url, "--json")
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "ready        yes" in lines["ready"]
    blobs = len(image.blobs)  # the config and the layers
    assert f"of {2 * blobs})" in lines["hit"]  # two pulls, the second all hits
    assert f"{blobs} committed" in lines["fills"]
    assert "1.00 bytes filled per blob byte" in lines["fan-out"]
    assert "of 10.0 MiB (" in lines["disk"]
    assert "fleet        coordinating: held 0 leases" in lines["fleet"]  # no origin here
    summary = json.loads(as_json)
    assert summary["ready"] is True and summary["fan_out"] == 1.0
    assert summary["blob_hits"] == blobs and summary["fills_committed"] == blobs
    assert summary["s3_read_bytes"] >= sum(len(d) for d in image.blobs.values()) - 1000


async def test_status_says_when_nothing_or_something_else_answers(moto: str) -> None:
    code, out, err = await _status(f"http://127.0.0.1:{free_port()}")
    assert code == 1 and out == "" and "Connection refused" in err and "Traceback" not in err
    code, out, err = await _status(moto)  # an HTTP server, but not registry-local
    assert code == 1 and "something else answers there" in err and "Traceback" not in err
