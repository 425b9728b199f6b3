"""Real container engines and a real S3 server, started by the tests.

dockerd, containerd and podman run on private sockets and directories, use
registry-local through the deploy/ files (daemon.json, hosts.toml,
registries.conf), and cannot fall back to a public registry: their HTTP(S)
proxy is a closed local port, with NO_PROXY for loopback. SeaweedFS (`weed
mini`) is a second, real S3 implementation, every port of it on 127.0.0.1.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .processes import (
    _running,
    free_ports,
    refuse_the_loop,
    require_tool,
    sealed_env,
    stop_process,
)

__all__ = [
    "DEPLOY",
    "Docker",
    "podman_pull",
    "private_dir",
    "run_containerd",
    "run_dockerd",
    "run_seaweedfs",
]

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@contextmanager
def private_dir(prefix: str) -> Iterator[Path]:
    """A short path under /tmp: unix socket paths must stay under 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def run_seaweedfs(log_dir: Path) -> Iterator[str]:
    """SeaweedFS's all-in-one server with S3; yields the S3 endpoint URL."""
    weed = require_tool("weed")
    names = (
        "master.port",
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port",
        "filer.port.grpc",
        "s3.port",
        "s3.port.grpc",
        "admin.port",
        "admin.port.grpc",
        "metricsPort",
        "s3.metricsPort",
        "s3.port.iceberg",
        "debug.port",
        "s3.debug.port",
    )
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    with private_dir("rl-weed-") as data:
        cmd = [
            weed,
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-webdav=false",
            "-master.telemetry=false",
            *(f"-{name}={port}" for name, port in ports.items()),
        ]
        url = f"http://127.0.0.1:{ports['s3.port']}"
        with _running(cmd, url, sealed_env(), log_dir / "weed.log"):
            yield url


class Docker:
    """The docker CLI of the Debian package, talking to one private dockerd."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket
        cli = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else require_tool("docker")
        self._cli = cli

    def __call__(self, *args: str, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        env = sealed_env({"DOCKER_HOST": f"unix://{self.socket}", "DOCKER_API_VERSION": "1.41"})
        result = subprocess.run([self._cli, *args], env=env, capture_output=True, timeout=300)
        if result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: {result.stderr.decode()}")
        return result


def _config_with_mirror(source: Path, target: Path, mirror: str) -> None:
    """A deploy/ file with its registry-local address replaced by the test's."""
    target.write_text(source.read_text().replace("127.0.0.1:5000", mirror))


@contextmanager
def run_dockerd(mirror: str, log_dir: Path) -> Iterator[Docker]:
    """dockerd configured by deploy/docker/daemon.json, mirror -> registry-local.
    It blocks while dockerd starts: async code enters it with `in_thread`."""
    dockerd = require_tool("dockerd")
    with private_dir("rl-dockerd-") as root:
        config = root / "daemon.json"
        _config_with_mirror(DEPLOY / "docker" / "daemon.json", config, mirror)
        socket = root / "docker.sock"
        cmd = [
            dockerd,
            "--config-file",
            str(config),
            "--storage-driver",
            "vfs",
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            "--exec-opt",
            "native.cgroupdriver=cgroupfs",
            "--data-root",
            str(root / "data"),
            "--exec-root",
            str(root / "exec"),
            "--host",
            f"unix://{socket}",
            "--pidfile",
            str(root / "docker.pid"),
        ]
        with log_dir.joinpath("dockerd.log").open("wb") as log:
            process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=sealed_env())
        try:
            docker = Docker(socket)
            _wait_for(lambda: socket.exists() and _answers(docker), process, "dockerd")
            yield docker
        finally:
            stop_process(process)


def _answers(docker: Docker) -> bool:
    try:
        docker("version")
    except AssertionError:
        return False
    return True


def _wait_for(ready: Callable[[], bool], process: subprocess.Popen[bytes], what: str) -> None:
    refuse_the_loop(f"waiting for {what}")  # async callers enter run_* with in_thread
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        if ready():
            return
        time.sleep(0.1)  # polling a daemon that is starting up, off any event loop
    raise RuntimeError(f"{what} did not start")


@contextmanager
def run_containerd(mirror: str, log_dir: Path) -> Iterator[tuple[Path, Path]]:
    """containerd on private paths; yields (socket, hosts dir with deploy's hosts.toml).
    It blocks while containerd starts: async code enters it with `in_thread`."""
    containerd = require_tool("containerd")
    require_tool("ctr")
    with private_dir("rl-containerd-") as root:
        socket = root / "containerd.sock"
        config = root / "config.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{root / "root"}"\nstate = "{root / "state"}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{socket}"\n'
            f'[ttrpc]\n  address = "{socket}.ttrpc"\n'
            f'[debug]\n  address = "{root / "debug.sock"}"\n'
            '[metrics]\n  address = ""\n'
        )
        hosts = root / "certs.d"
        (hosts / "docker.io").mkdir(parents=True)
        _config_with_mirror(
            DEPLOY / "containerd" / "certs.d" / "docker.io" / "hosts.toml",
            hosts / "docker.io" / "hosts.toml",
            mirror,
        )
        with log_dir.joinpath("containerd.log").open("wb") as log:
            process = subprocess.Popen(
                [containerd, "--config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=sealed_env(),
            )
        try:
            _wait_for(socket.exists, process, "containerd")
            yield socket, hosts
        finally:
            stop_process(process)


def containerd_snapshot_file(socket: Path, name: str) -> list[Path]:
    """Files called `name` in containerd's native snapshots (unpacked layers)."""
    root = socket.parent / "root" / "io.containerd.snapshotter.v1.native" / "snapshots"
    return sorted(root.glob(f"*/{name}"))


def podman_pull(mirror: str, workdir: Path, reference: str, arch: str = "amd64") -> Path:
    """Pull with podman through deploy's registries.conf; the mounted image's root."""
    podman = require_tool("podman")
    registries = workdir / "registries.conf"
    _config_with_mirror(DEPLOY / "podman" / "registries.conf", registries, mirror)
    policy = workdir / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    base = [
        podman,
        "--root",
        str(workdir / "graph"),
        "--runroot",
        str(workdir / "run"),
        "--storage-driver",
        "vfs",
        "--cgroup-manager",
        "cgroupfs",
        "--events-backend",
        "file",
    ]
    storage = workdir / "storage.conf"
    storage.write_text(
        f'[storage]\ndriver = "vfs"\nrunroot = "{workdir / "run"}"\n'
        f'graphroot = "{workdir / "graph"}"\n'
    )
    env = sealed_env(
        {"CONTAINERS_REGISTRIES_CONF": str(registries), "CONTAINERS_STORAGE_CONF": str(storage)}
    )
    for args in (
        [*base, "pull", "--arch", arch, "--signature-policy", str(policy), reference],
        [*base, "image", "mount", reference],
    ):
        result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise AssertionError(f"podman {' '.join(args[len(base) :])}: {result.stderr}")
    return Path(result.stdout.strip())
