"""Real container engines and a real S3 server, started by the tests.

dockerd, containerd and podman run on private sockets and directories, use
registry-local through the deploy/ files (daemon.json, hosts.toml,
registries.conf), and cannot fall back to a public registry: their HTTP(S)
proxy is a closed local port, with NO_PROXY for loopback. SeaweedFS (`weed
mini`) is a second, real S3 implementation, every port of it on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
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
    "Ctr",
    "Docker",
    "Podman",
    "podman_pull",
    "private_dir",
    "run_containerd",
    "run_dockerd",
    "run_seaweedfs",
    "write_auths",
    "write_hosts_toml",
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
    """The docker CLI of the Debian package, talking to one private dockerd;
    with `config`, a private DOCKER_CONFIG directory (its config.json holds the
    `auths` the CLI sends the daemon with each pull, in X-Registry-Auth)."""

    def __init__(self, socket: Path, config: Path | None = None) -> None:
        self.socket = socket
        self.config = config
        cli = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else require_tool("docker")
        self._cli = cli

    def with_config(self, config: Path) -> Docker:
        """The same daemon, the CLI reading its credentials from `config`."""
        return Docker(self.socket, config)

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        extra = {"DOCKER_HOST": f"unix://{self.socket}", "DOCKER_API_VERSION": "1.41"}
        if self.config is not None:
            extra["DOCKER_CONFIG"] = str(self.config)
        env = sealed_env(extra)
        result = subprocess.run([self._cli, *args], env=env, capture_output=True, timeout=300)
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: {result.stderr.decode()}")
        return result


def _config_with_mirror(source: Path, target: Path, mirror: str) -> None:
    """A deploy/ file with its registry-local address replaced by the test's."""
    target.write_text(source.read_text().replace("127.0.0.1:5000", mirror))


@contextmanager
def run_dockerd(
    mirror: str, log_dir: Path, daemon: Mapping[str, object] | None = None
) -> Iterator[Docker]:
    """dockerd configured by deploy/docker/daemon.json, mirror -> registry-local,
    or by `daemon` (daemon.json's settings) if given, when `mirror` is unused.
    It blocks while dockerd starts: async code enters it with `in_thread`."""
    dockerd = require_tool("dockerd")
    with private_dir("rl-dockerd-") as root:
        config = root / "daemon.json"
        if daemon is None:
            _config_with_mirror(DEPLOY / "docker" / "daemon.json", config, mirror)
        else:
            config.write_text(json.dumps(daemon))
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


def write_hosts_toml(hosts_dir: Path, host: str, server: str, mirrors: Sequence[str]) -> Path:
    """`hosts_dir/host/hosts.toml`: pulls of `host`'s images try each mirror URL
    in order (pull and resolve), then `server` (a URL, `http://` for plain HTTP)."""
    lines = [f'server = "{server}"', ""]
    for mirror in mirrors:
        lines += [f'[host."{mirror}"]', '  capabilities = ["pull", "resolve"]', ""]
    path = hosts_dir / host / "hosts.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path


class Ctr:
    """containerd's `ctr` on one private containerd, resolving hosts through
    `hosts_dir` (a certs.d-style directory, see `write_hosts_toml`)."""

    def __init__(self, socket: Path, hosts_dir: Path) -> None:
        self.socket = socket
        self.hosts_dir = hosts_dir

    def pull(
        self, reference: str, *options: str, user: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """`ctr images pull` onto the native snapshotter; `user` is `name:password`."""
        ctr = require_tool("ctr")
        credentials = ["--user", user] if user is not None else []
        result = subprocess.run(
            [
                ctr,
                "--address",
                str(self.socket),
                "images",
                "pull",
                "--hosts-dir",
                str(self.hosts_dir),
                "--snapshotter",
                "native",
                *credentials,
                *options,
                reference,
            ],
            env=sealed_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"ctr images pull {reference}: {result.stderr}")
        return result


def containerd_snapshot_file(socket: Path, name: str) -> list[Path]:
    """Files called `name` in containerd's native snapshots (unpacked layers)."""
    root = socket.parent / "root" / "io.containerd.snapshotter.v1.native" / "snapshots"
    return sorted(root.glob(f"*/{name}"))


def write_auths(path: Path, credentials: Mapping[str, tuple[str, str]]) -> Path:
    """An `auths` file (docker's config.json, podman's auth.json): for each
    registry key (a host, or docker's `https://index.docker.io/v1/`) a user and
    password, as `docker login` / `podman login` would have stored them."""
    auths = {
        key: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
        for key, (user, password) in credentials.items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": auths}))
    return path


class Podman:
    """podman on private storage under `workdir`, with its own registries.conf
    (none: podman's defaults apply) and its own auth file, `workdir/auth.json`."""

    def __init__(self, workdir: Path, registries: Path | None = None) -> None:
        self.workdir = workdir
        self.registries = registries
        self.auth_file = workdir / "auth.json"

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        podman = require_tool("podman")
        storage = self.workdir / "storage.conf"
        storage.write_text(
            f'[storage]\ndriver = "vfs"\nrunroot = "{self.workdir / "run"}"\n'
            f'graphroot = "{self.workdir / "graph"}"\n'
        )
        base = [
            podman,
            "--root",
            str(self.workdir / "graph"),
            "--runroot",
            str(self.workdir / "run"),
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
        ]
        if not self.auth_file.exists():  # podman refuses a REGISTRY_AUTH_FILE that is missing
            write_auths(self.auth_file, {})
        extra = {"CONTAINERS_STORAGE_CONF": str(storage), "REGISTRY_AUTH_FILE": str(self.auth_file)}
        if self.registries is not None:
            extra["CONTAINERS_REGISTRIES_CONF"] = str(self.registries)
        result = subprocess.run(
            [*base, *args], env=sealed_env(extra), capture_output=True, text=True, timeout=300
        )
        if check and result.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: {result.stderr}")
        return result

    def pull(
        self, reference: str, *options: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """`podman pull` with an accept-anything signature policy."""
        policy = self.workdir / "policy.json"
        policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        return self("pull", "--signature-policy", str(policy), *options, reference, check=check)


def podman_pull(mirror: str, workdir: Path, reference: str, arch: str = "amd64") -> Path:
    """Pull with podman through deploy's registries.conf; the mounted image's root."""
    registries = workdir / "registries.conf"
    _config_with_mirror(DEPLOY / "podman" / "registries.conf", registries, mirror)
    podman = Podman(workdir, registries)
    podman.pull(reference, "--arch", arch)
    return Path(podman("image", "mount", reference).stdout.strip())
