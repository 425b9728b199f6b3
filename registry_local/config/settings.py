"""What each component is configured with: frozen dataclasses, parsed once.

Every default is stated here, once: the option table (options.py) shows these
values in `--help` and docs/configuration.md, and components never carry
defaults of their own for what an option sets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "CacheSettings",
    "FleetSettings",
    "GcSettings",
    "LoadSettings",
    "OriginSettings",
    "PushSettings",
    "S3Settings",
    "ServerSettings",
    "Settings",
    "StoreSettings",
    "WarmSettings",
    "default_cache_dir",
    "default_fs_root",
]


# Seconds a read may stall before it is given up and retried: of S3, and of
# another host of the fleet (both set by --s3-read-timeout).
_READ_TIMEOUT = 30.0


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base, "registry-local")


def default_fs_root() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(base, "registry-local", "store")


@dataclass(frozen=True)
class S3Settings:
    """What the S3 backend needs; credentials come from the standard AWS chain."""

    bucket: str
    endpoint: str | None = None
    region: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = _READ_TIMEOUT
    attempts: int = 3  # per request, for failures a retry may fix
    circuit_threshold: int = 5  # consecutive failures that open the circuit breaker
    circuit_cooldown: float = 1.0  # seconds it stays open before a probe (doubling)


@dataclass(frozen=True)
class OriginSettings:
    """An origin registry that fills S3 on a miss, for the names it matches: `*`
    (all), or a registry host given by containerd's `?ns=` or as the first part
    of the name (then stripped from the name asked of the origin)."""

    url: str
    match: str = "*"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    auth_file: Path | None = None  # a docker config.json or containers auth.json
    ecr: bool = False  # Amazon ECR: the token from the AWS API
    helper_timeout: float = 10.0  # seconds a credential helper may take
    # Each client's own credentials are asked at this origin whether it may pull.
    authorize_at_origin: bool = False


@dataclass(frozen=True)
class StoreSettings:
    """The backing store: an S3 bucket, or else a directory (the embedded default)."""

    s3: S3Settings | None = None
    fs_root: Path = field(default_factory=default_fs_root)
    prefix: str = ""
    max_concurrency: int = 32  # blob bodies read at once
    part_size: int = 8 << 20  # fills of larger blobs read parts at once; 0: one stream
    fill_concurrency: int = 8  # parts of one fill read at once
    upstreams: tuple[OriginSettings, ...] = ()
    # Registries (containerd's ?ns=) the bucket serves without an origin; `*`: all.
    bucket_registries: tuple[str, ...] = ("*",)

    @property
    def origins_decide(self) -> bool:
        """Some origin decides who may pull its repositories (authorize_at_origin)."""
        return any(origin.authorize_at_origin for origin in self.upstreams)


@dataclass(frozen=True)
class CacheSettings:
    """The cache dir and how the cache uses it: tag TTL, fill attempts, size limits,
    ranges, use records."""

    directory: Path = field(default_factory=default_cache_dir)
    tag_ttl: float = 30.0
    fill_attempts: int = 5  # consecutive failed reads of one blob before a fill gives up
    max_bytes: int = 0  # 0 and max_share 0: no limit
    max_share: float = 0.0  # of the cache dir's filesystem
    # Ranges only from verified content: a range of a blob still filling waits
    # for its digest check (default: sent as the backing store holds them).
    verified_ranges: bool = False
    # A served manifest's use is noted in the bucket at most this often per
    # manifest (for `registry-local gc --unused-for`); 0: never.
    record_use_every: float = 3600.0


@dataclass(frozen=True)
class PushSettings:
    """Whether pushes and deletes are allowed, and how long idle uploads are kept."""

    allow_push: bool = False
    allow_delete: bool = False
    upload_expiry: float = 86400.0  # idle seconds before an upload session is removed


@dataclass(frozen=True)
class ServerSettings:
    """The server: listeners, shutdown, TLS, authentication, readiness, logging, prefetch."""

    host: str = "127.0.0.1"
    port: int = 5000
    metrics_listen: tuple[str, int] | None = None
    shutdown_timeout: float = 30.0
    warm_endpoint: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    auth_htpasswd: Path | None = None
    auth_token_file: Path | None = None
    ready_interval: float = 2.0  # seconds a readiness probe's answer is reused
    log_level: str = "info"
    log_format: str = "text"
    prefetch: bool = True  # fill an image's blobs when its manifest is served
    prefetch_concurrency: int = 16  # prefetch fills at once (they yield S3 slots to clients)


@dataclass(frozen=True)
class AccessSettings:
    """Who may read and write which repository: a policy file, and how long the
    answers of origins that decide (`authorize_at_origin`) are trusted."""

    policy: Path | None = None  # YAML rules of subjects, repositories and actions
    decision_ttl: float = 300.0  # seconds an origin's yes or no is remembered
    offline_grace: float = 0.0  # a grant this recent still holds while the origin is down
    max_decisions: int = 10_000  # decisions remembered at most


@dataclass(frozen=True)
class FleetSettings:
    """Coordinating with the other hosts of the bucket: one origin read per blob
    for the fleet. On when a peer listener is configured."""

    peer_host: str
    peer_port: int
    advertise_url: str  # how other hosts reach this one's peer listener
    token: str | None = field(default=None, repr=False)  # shared secret of the fleet
    lease_ttl: float = 15.0  # seconds a lease stays valid without renewal
    read_timeout: float = _READ_TIMEOUT  # a stalled read from another host is retried
    max_streams: int = 2  # followers a holder streams its fill to at once; the rest: staged
    part_size: int = 32 << 20  # a blob larger than this is staged in the bucket in parts
    tls_cert: Path | None = None  # the peer listener speaks TLS with this certificate...
    tls_key: Path | None = None  # ...and key
    ca: Path | None = None  # peers' certificates are checked against this CA
    tls_name: str | None = None  # ...for this name, not their address (one cert for all)
    insecure: bool = False  # the token may cross the network in clear (plain HTTP off loopback)


@dataclass(frozen=True)
class WarmSettings:
    """`registry-local warm` and the server's POST /-/warm."""

    concurrency: int = 4  # blobs fetched at once


@dataclass(frozen=True)
class LoadSettings:
    """`registry-local loadtest`: the storm to make."""

    clients: int = 20  # pulls at once
    waves: int = 1  # rounds of `clients` pulls
    ramp: float = 0.0  # seconds each wave's starts are spread over
    platform: str = "linux/amd64"  # the image of a multi-platform index to pull
    layer_concurrency: int = 3  # layers a pull fetches at once: dockerd's and containerd's


@dataclass(frozen=True)
class GcSettings:
    """`registry-local gc`: what to remove from the bucket."""

    unused_for: float  # seconds nobody used a manifest for, before it goes
    grace: float = 3600.0  # anything written less than this long ago stays (in flight)
    dry_run: bool = False
    include_pushed: bool = False  # pushed content too (no origin can fill it again)


@dataclass(frozen=True)
class Settings:
    """The whole configuration, one part per component."""

    server: ServerSettings = field(default_factory=ServerSettings)
    access: AccessSettings = field(default_factory=AccessSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    push: PushSettings = field(default_factory=PushSettings)
    fleet: FleetSettings | None = None
    warm: WarmSettings = field(default_factory=WarmSettings)

    @property
    def confined(self) -> bool:
        """Clients may read only some repositories: a policy, or origins deciding."""
        return self.access.policy is not None or self.store.origins_decide
