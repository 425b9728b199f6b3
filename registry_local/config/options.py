"""The option table: every setting's flag, environment variable and file key.

Each option in `OPTIONS` is a command-line flag `--name`, an environment variable
`REGISTRY_LOCAL_NAME` (dashes become underscores) and a key `name` in the file
given by `--config`. Its default is read from the settings field it sets
(settings.py), so `--help`, docs/configuration.md and the program agree.
`COMMANDS` is the one table of which option groups each command takes.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Literal, Protocol, TypeVar

from . import values
from .flags import add_flags, flags_markdown
from .settings import (
    AccessSettings,
    CacheSettings,
    FleetSettings,
    OriginSettings,
    PushSettings,
    S3Settings,
    ServerSettings,
    StoreSettings,
)

__all__ = [
    "COMMANDS",
    "ENV_PREFIX",
    "OPTIONS",
    "Command",
    "Group",
    "Option",
    "Setting",
    "add_options",
    "reference_markdown",
]

T = TypeVar("T")
ENV_PREFIX = "REGISTRY_LOCAL_"

Group = Literal["store", "origin", "cachedir", "cache", "limit", "listen", "serve"]
Command = Literal[
    "serve", "import", "export", "warm", "verify", "cached", "prune", "check", "status", "gc"
]

# The option groups each command takes.
COMMANDS: dict[Command, tuple[Group, ...]] = {
    "serve": ("store", "origin", "cachedir", "cache", "limit", "listen", "serve"),
    "import": ("store",),
    "export": ("store",),
    "warm": ("store", "origin", "cachedir", "cache", "limit"),
    "verify": ("cachedir",),
    "cached": ("cachedir",),
    "prune": ("cachedir", "limit"),
    "check": ("listen",),
    "status": ("listen",),
    "gc": ("store",),
}


# Defaults are read from the settings (settings.py) when asked, as some depend
# on $HOME; the attribute reads are checked against each option's type.
def _s3() -> S3Settings:
    return S3Settings(bucket="")


def _fleet() -> FleetSettings:
    return FleetSettings(peer_host="", peer_port=0, advertise_url="")


def _unset() -> None:
    return None


class Setting(Protocol):
    """What the tables of every option need of one, whatever its type."""

    @property
    def name(self) -> str: ...
    @property
    def help(self) -> str: ...
    @property
    def metavar(self) -> str | None: ...
    @property
    def group(self) -> Group: ...
    @property
    def flag(self) -> bool: ...
    @property
    def negatable(self) -> bool: ...
    @property
    def env(self) -> str: ...
    @property
    def dest(self) -> str: ...
    def default_text(self) -> str | None: ...


@dataclass(frozen=True)
class Option(Generic[T]):
    """One setting: a flag, an environment variable and a config-file key."""

    name: str
    help: str
    parse: Callable[[str], T]
    default: Callable[[], T]
    show: Callable[[T], str | None] = lambda value: None if value is None else str(value)
    metavar: str | None = None
    group: Group = "store"
    flag: bool = False  # a switch: `--name` alone means true
    negatable: bool = False  # a switch that is on by default: `--no-name` turns it off

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper().replace("-", "_")

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    def default_text(self) -> str | None:
        return self.show(self.default())


def _show_bool(value: bool) -> str:
    return "true" if value else "false"


S3_ENDPOINT: Option[str | None] = Option(
    "s3-endpoint",
    "S3 endpoint URL (omit for AWS); path-style addressing is used",
    values.optional(values.endpoint_url),
    lambda: _s3().endpoint,
    metavar="URL",
)
S3_BUCKET: Option[str | None] = Option(
    "s3-bucket",
    "S3 bucket holding distribution's layout; without it the backing "
    "store is the directory --fs-root",
    values.optional(values.text),
    _unset,
    metavar="NAME",
)
S3_REGION: Option[str | None] = Option(
    "s3-region",
    "S3 region",
    values.optional(values.text),
    lambda: _s3().region,
    metavar="REGION",
)
S3_PREFIX: Option[str] = Option(
    "s3-prefix",
    "key prefix in the bucket (distribution's rootdirectory)",
    values.text,
    lambda: StoreSettings().prefix,
    metavar="PREFIX",
)
S3_READ_TIMEOUT: Option[float] = Option(
    "s3-read-timeout",
    "seconds a read from S3 may stall before it is retried",
    values.seconds,
    lambda: _s3().read_timeout,
    values.show_seconds,
    metavar="SECONDS",
)
S3_MAX_CONCURRENCY: Option[int] = Option(
    "s3-max-concurrency",
    "blob bodies read from S3 at once; more wait their turn, fill by fill in turn",
    values.positive_int,
    lambda: StoreSettings().max_concurrency,
    metavar="N",
)
S3_PART_SIZE: Option[int] = Option(
    "s3-part-size",
    "fills of blobs larger than this read them as parts of this size, several at "
    "once (ranged GETs), e.g. 8MiB; 0 reads every blob as one stream",
    values.part_size,
    lambda: StoreSettings().part_size,
    values.show_size,
    metavar="SIZE",
)
S3_FILL_CONCURRENCY: Option[int] = Option(
    "s3-fill-concurrency",
    "parts of one fill read at once (within --s3-max-concurrency, shared in turn with other fills)",
    values.positive_int,
    lambda: StoreSettings().fill_concurrency,
    metavar="N",
)
UPSTREAM: Option[str | None] = Option(
    "upstream",
    "origin registry (http(s)://host[:port]) that fills the bucket on a miss: "
    "manifests, tags and blobs not in S3 are fetched from it once and written "
    "through; per-registry origins go in the config file's `upstreams` list",
    values.optional(values.origin_url),
    _unset,
    metavar="URL",
    group="origin",
)
UPSTREAM_CREDENTIALS: Option[str | None] = Option(
    "upstream-credentials",
    "file holding USER:PASSWORD for --upstream (or set REGISTRY_LOCAL_UPSTREAM_USERNAME "
    "and REGISTRY_LOCAL_UPSTREAM_PASSWORD)",
    values.optional(values.text),
    _unset,
    metavar="FILE",
    group="origin",
)
UPSTREAM_AUTH_FILE: Option[Path | None] = Option(
    "upstream-auth-file",
    "credentials for --upstream the way engines find them: a docker config.json or "
    "containers auth.json (auths, credHelpers, credsStore; helpers run as "
    "docker-credential-NAME); read again when it changes",
    values.optional(values.path),
    _unset,
    metavar="FILE",
    group="origin",
)
BUCKET_REGISTRIES: Option[tuple[str, ...]] = Option(
    "bucket-registries",
    "registries (as containerd names them with ?ns=) whose images the bucket holds "
    "without an origin, pushed or imported, comma-separated; `*` takes every registry "
    "no upstream matches. With containerd's `_default` mirror, list only these (or give "
    "an empty value): a request naming any other registry no upstream matches is then "
    "answered 404 at once, and containerd asks that registry itself",
    values.registries,
    lambda: StoreSettings().bucket_registries,
    values.show_registries,
    metavar="HOSTS",
    group="origin",
)
FS_ROOT: Option[Path] = Option(
    "fs-root",
    "directory of the embedded backing store (distribution's filesystem "
    "layout), used when no --s3-bucket is given",
    values.path,
    lambda: StoreSettings().fs_root,
    metavar="DIR",
)
LISTEN: Option[tuple[str, int]] = Option(
    "listen",
    "address to serve on",
    values.listen,
    lambda: (ServerSettings().host, ServerSettings().port),
    values.show_listen,
    "HOST:PORT",
    "listen",
)
CACHE_DIR: Option[Path] = Option(
    "cache-dir",
    "directory of this host's cache",
    values.path,
    lambda: CacheSettings().directory,
    metavar="DIR",
    group="cachedir",
)
TAG_TTL: Option[float] = Option(
    "tag-ttl",
    "seconds a tag's target is trusted before it is checked again",
    values.seconds,
    lambda: CacheSettings().tag_ttl,
    values.show_seconds,
    "SECONDS",
    "cache",
)
FILL_ATTEMPTS: Option[int] = Option(
    "fill-attempts",
    "consecutive failed reads of one blob before its fill gives up",
    values.positive_int,
    lambda: CacheSettings().fill_attempts,
    metavar="N",
    group="cache",
)
VERIFIED_RANGES: Option[bool] = Option(
    "verified-ranges",
    "answer Range requests only from verified content: a range of a blob still "
    "filling waits for its digest check, and without room in the cache a range "
    "short of the end gets the whole blob (default: ranges are sent as the backing "
    "store holds them, as the CNCF registry sends them; see docs/security.md)",
    values.boolean,
    lambda: CacheSettings().verified_ranges,
    _show_bool,
    group="cache",
    flag=True,
)
RECORD_USE_EVERY: Option[float] = Option(
    "record-use-every",
    "note in the bucket that a manifest this host serves is in use, at most this "
    "often per manifest (e.g. 1h, 30m, 90s; 0 never), so that `registry-local gc "
    "--unused-for` keeps what the fleet runs",
    values.duration,
    lambda: CacheSettings().record_use_every,
    values.show_duration,
    "DURATION",
    "cache",
)
CACHE_MAX_BYTES: Option[tuple[int, float]] = Option(
    "cache-max-bytes",
    "limit of the cache dir, e.g. 50GiB, 500MB or 80% (of its filesystem); least "
    "recently used blobs are evicted past it; none if unset",
    values.size_limit,
    lambda: (CacheSettings().max_bytes, CacheSettings().max_share),
    values.show_limit,
    metavar="SIZE",
    group="limit",
)
WARM_ENDPOINT: Option[bool] = Option(
    "warm-endpoint",
    "accept POST /-/warm to fetch images into the cache ahead of a deploy",
    values.boolean,
    lambda: ServerSettings().warm_endpoint,
    _show_bool,
    group="serve",
    flag=True,
)
ALLOW_PUSH: Option[bool] = Option(
    "allow-push",
    "accept pushes (blob uploads, manifest PUTs), written through to the backing store",
    values.boolean,
    lambda: PushSettings().allow_push,
    _show_bool,
    group="serve",
    flag=True,
)
ALLOW_DELETE: Option[bool] = Option(
    "allow-delete",
    "with --allow-push, also accept DELETE of manifests, tags and blob links",
    values.boolean,
    lambda: PushSettings().allow_delete,
    _show_bool,
    group="serve",
    flag=True,
)
UPLOAD_EXPIRY: Option[float] = Option(
    "upload-expiry",
    "seconds an idle upload session is kept before it is removed",
    values.seconds,
    lambda: PushSettings().upload_expiry,
    values.show_seconds,
    "SECONDS",
    "serve",
)
TLS_CERT: Option[Path | None] = Option(
    "tls-cert",
    "serve HTTPS with this certificate (PEM, with its chain); needs --tls-key",
    values.optional(values.path),
    lambda: ServerSettings().tls_cert,
    metavar="FILE",
    group="listen",
)
TLS_KEY: Option[Path | None] = Option(
    "tls-key",
    "the private key of --tls-cert (PEM)",
    values.optional(values.path),
    lambda: ServerSettings().tls_key,
    metavar="FILE",
    group="listen",
)
AUTH_HTPASSWD: Option[Path | None] = Option(
    "auth-htpasswd",
    "require credentials for the registry API: users from an htpasswd file "
    "(bcrypt entries, htpasswd -B)",
    values.optional(values.path),
    lambda: ServerSettings().auth_htpasswd,
    metavar="FILE",
    group="serve",
)
AUTH_TOKEN_FILE: Option[Path | None] = Option(
    "auth-token-file",
    "require credentials for the registry API: bearer tokens, one a line",
    values.optional(values.path),
    lambda: ServerSettings().auth_token_file,
    metavar="FILE",
    group="serve",
)
ACCESS_POLICY: Option[Path | None] = Option(
    "access-policy",
    "who may pull, push and delete which repositories: a YAML file of rules (subjects: "
    "htpasswd users, token names, anonymous; repositories: patterns such as team-a/*; "
    "actions); what no rule grants is refused. Read again when it changes",
    values.optional(values.path),
    lambda: AccessSettings().policy,
    metavar="FILE",
    group="serve",
)
AUTHORIZE_AT_ORIGIN: Option[bool] = Option(
    "authorize-at-origin",
    "ask --upstream, with each client's own credentials, whether it may pull a "
    "repository (content is still fetched once with the host's own credentials); "
    "a config-file upstream says so with authorize_at_origin: true",
    values.boolean,
    lambda: OriginSettings("-").authorize_at_origin,
    _show_bool,
    group="serve",
    flag=True,
)
AUTHORIZE_CACHE_TTL: Option[float] = Option(
    "authorize-cache-ttl",
    "how long an origin's answer to one credential for one repository is remembered (e.g. 5m, 30s)",
    values.duration,
    lambda: AccessSettings().decision_ttl,
    values.show_duration,
    "DURATION",
    "serve",
)
AUTHORIZE_OFFLINE_GRACE: Option[float] = Option(
    "authorize-offline-grace",
    "while an origin cannot be asked, still allow a credential it granted the "
    "repository this recently (e.g. 1h); 0 refuses",
    values.duration,
    lambda: AccessSettings().offline_grace,
    values.show_duration,
    "DURATION",
    "serve",
)
METRICS_LISTEN: Option[tuple[str, int] | None] = Option(
    "metrics-listen",
    "also serve /metrics, /healthz and /readyz on this address",
    values.optional(values.listen),
    lambda: ServerSettings().metrics_listen,
    values.show_listen,
    "HOST:PORT",
    "serve",
)
SHUTDOWN_TIMEOUT: Option[float] = Option(
    "shutdown-timeout",
    "seconds requests in progress get to finish on SIGTERM",
    values.seconds,
    lambda: ServerSettings().shutdown_timeout,
    values.show_seconds,
    "SECONDS",
    "serve",
)
LOG_LEVEL: Option[str] = Option(
    "log-level",
    "debug, info, warning or error",
    values.log_level,
    lambda: ServerSettings().log_level,
    metavar="LEVEL",
    group="serve",
)
LOG_FORMAT: Option[str] = Option(
    "log-format",
    "json (one object per line) or text",
    values.log_format,
    lambda: ServerSettings().log_format,
    metavar="FORMAT",
    group="serve",
)

PEER_LISTEN: Option[tuple[str, int] | None] = Option(
    "peer-listen",
    "coordinate with the other hosts of the bucket, so the fleet reads each blob from "
    "the origin once: serve fills in progress to them on this address (a listener of "
    "its own, reachable from the other hosts)",
    values.optional(values.listen),
    _unset,
    values.show_listen,
    "HOST:PORT",
    "serve",
)
ADVERTISE_URL: Option[str | None] = Option(
    "advertise-url",
    "how the other hosts reach this host's --peer-listen, e.g. http://10.0.0.7:5001 "
    "(default: http://HOST:PORT of --peer-listen)",
    values.optional(values.origin_url),
    _unset,
    metavar="URL",
    group="serve",
)
PEER_TOKEN_FILE: Option[Path | None] = Option(
    "peer-token-file",
    "file holding the fleet's shared secret: peers must present it (needed when "
    "--peer-listen is not a loopback address)",
    values.optional(values.path),
    _unset,
    metavar="FILE",
    group="serve",
)
LEASE_TTL: Option[float] = Option(
    "lease-ttl",
    "seconds a host's lease on a blob or tag stays valid without renewal; a host that "
    "dies holding one is taken over after this",
    values.positive_seconds,
    lambda: _fleet().lease_ttl,
    values.show_seconds,
    "SECONDS",
    "serve",
)
PEER_MAX_STREAMS: Option[int] = Option(
    "peer-max-streams",
    "other hosts that may stream a blob from this host's fill at once; the rest read "
    "the parts it stages in the bucket (0: only staged parts)",
    values.count,
    lambda: _fleet().max_streams,
    metavar="N",
    group="serve",
)
FLEET_PART_SIZE: Option[int] = Option(
    "fleet-part-size",
    "a lease holder stages blobs larger than this in the bucket in parts of this size "
    "as it fills them, for the other hosts to read as they land (at least 5MiB)",
    values.staged_part_size,
    lambda: _fleet().part_size,
    values.show_size,
    "SIZE",
    "serve",
)
PEER_TLS_CERT: Option[Path | None] = Option(
    "peer-tls-cert",
    "the peer listener speaks TLS with this certificate (PEM, with its chain); needs "
    "--peer-tls-key",
    values.optional(values.path),
    lambda: _fleet().tls_cert,
    metavar="FILE",
    group="serve",
)
PEER_TLS_KEY: Option[Path | None] = Option(
    "peer-tls-key",
    "the private key of --peer-tls-cert (PEM)",
    values.optional(values.path),
    lambda: _fleet().tls_key,
    metavar="FILE",
    group="serve",
)
PEER_CA: Option[Path | None] = Option(
    "peer-ca",
    "CA certificates (PEM) the other hosts' peer listeners are checked against "
    "(default: the system's)",
    values.optional(values.path),
    lambda: _fleet().ca,
    metavar="FILE",
    group="serve",
)
PEER_TLS_NAME: Option[str | None] = Option(
    "peer-tls-name",
    "the name the fleet's peer certificates are issued for, checked instead of each "
    "peer's address, so that one certificate can serve every host (default: the "
    "address in the peer's URL)",
    values.optional(values.text),
    lambda: _fleet().tls_name,
    metavar="NAME",
    group="serve",
)
PEER_INSECURE: Option[bool] = Option(
    "peer-insecure",
    "let the fleet token cross the network in clear: plain-HTTP peer listeners off "
    "loopback (only on a network you trust end to end)",
    values.boolean,
    lambda: _fleet().insecure,
    _show_bool,
    group="serve",
    flag=True,
)

PREFETCH: Option[bool] = Option(
    "prefetch",
    "when an image manifest is served, start filling its config and layers at once, "
    "behind client reads (--no-prefetch: only what clients ask for)",
    values.boolean,
    lambda: ServerSettings().prefetch,
    _show_bool,
    group="serve",
    negatable=True,
)
PREFETCH_CONCURRENCY: Option[int] = Option(
    "prefetch-concurrency",
    "prefetch fills at once (within --s3-max-concurrency, after client reads)",
    values.positive_int,
    lambda: ServerSettings().prefetch_concurrency,
    metavar="N",
    group="serve",
)

OPTIONS: tuple[Setting, ...] = (
    S3_ENDPOINT,
    S3_BUCKET,
    S3_REGION,
    S3_PREFIX,
    S3_READ_TIMEOUT,
    S3_MAX_CONCURRENCY,
    S3_PART_SIZE,
    S3_FILL_CONCURRENCY,
    UPSTREAM,
    UPSTREAM_CREDENTIALS,
    UPSTREAM_AUTH_FILE,
    BUCKET_REGISTRIES,
    FS_ROOT,
    LISTEN,
    CACHE_DIR,
    TAG_TTL,
    FILL_ATTEMPTS,
    VERIFIED_RANGES,
    RECORD_USE_EVERY,
    CACHE_MAX_BYTES,
    WARM_ENDPOINT,
    ALLOW_PUSH,
    ALLOW_DELETE,
    UPLOAD_EXPIRY,
    TLS_CERT,
    TLS_KEY,
    AUTH_HTPASSWD,
    AUTH_TOKEN_FILE,
    ACCESS_POLICY,
    AUTHORIZE_AT_ORIGIN,
    AUTHORIZE_CACHE_TTL,
    AUTHORIZE_OFFLINE_GRACE,
    METRICS_LISTEN,
    SHUTDOWN_TIMEOUT,
    LOG_LEVEL,
    LOG_FORMAT,
    PEER_LISTEN,
    ADVERTISE_URL,
    PEER_TOKEN_FILE,
    LEASE_TTL,
    PEER_MAX_STREAMS,
    FLEET_PART_SIZE,
    PEER_TLS_CERT,
    PEER_TLS_KEY,
    PEER_CA,
    PEER_TLS_NAME,
    PEER_INSECURE,
    PREFETCH,
    PREFETCH_CONCURRENCY,
)


def add_options(parser: argparse.ArgumentParser, command: Command) -> None:
    """Add the flags of the option groups `command` takes, plus --config, then
    the flags of its own (flags.py)."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help=f"YAML file with any of these options as keys (env {ENV_PREFIX}CONFIG)",
    )
    wanted = COMMANDS[command]
    for option in OPTIONS:
        if option.group not in wanted:
            continue
        default = option.default_text()
        shown = f" (default: {default})" if default and not option.flag else ""
        help_text = f"{option.help}{shown}; env {option.env}".replace("%", "%%")
        if option.negatable:
            parser.add_argument(
                f"--{option.name}",
                dest=option.dest,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        elif option.flag:
            parser.add_argument(
                f"--{option.name}",
                dest=option.dest,
                action="store_const",
                const="true",
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            parser.add_argument(
                f"--{option.name}",
                dest=option.dest,
                metavar=option.metavar,
                default=argparse.SUPPRESS,
                help=help_text,
            )
    add_flags(parser, command)


def reference_markdown() -> str:
    """The table of every option, then of every command's flags, for
    docs/configuration.md (a test keeps it current)."""
    rows = [
        "| flag | environment | config key | default | commands | what |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    home = os.path.expanduser("~")
    for option in OPTIONS:
        default = option.default_text()
        if default and default.startswith(home):
            default = "~" + default[len(home) :]
        if option.negatable:
            flag = f"`--[no-]{option.name}`"
        else:
            flag = f"`--{option.name}`" + ("" if option.flag else f" {option.metavar or 'VALUE'}")
        commands = ", ".join(c for c, groups in COMMANDS.items() if option.group in groups)
        rows.append(
            f"| {flag} | `{option.env}` | `{option.name}` | "
            f"{f'`{default}`' if default else '-'} | {commands} | {option.help} |"
        )
    return "\n".join(rows) + "\n\n" + flags_markdown()
