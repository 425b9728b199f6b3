"""Configuration: one table of options, read from flags, environment and a YAML file.

Each option in `OPTIONS` is a command-line flag `--name`, an environment variable
`REGISTRY_LOCAL_NAME` (dashes become underscores) and a key `name` in the file
given by `--config`. Flags win over the environment, the environment over the
file, the file over the defaults. The result is parsed once into frozen
dataclasses; each component receives only its own part.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

__all__ = [
    "OPTIONS",
    "CacheSettings",
    "Option",
    "PushSettings",
    "S3Settings",
    "ServerSettings",
    "Settings",
    "StoreSettings",
    "add_options",
    "load",
]

ENV_PREFIX = "REGISTRY_LOCAL_"


@dataclass(frozen=True)
class S3Settings:
    """What the S3 backend needs; credentials come from the standard AWS chain."""

    bucket: str
    endpoint: str | None = None
    region: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_connections: int = 64
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


@dataclass(frozen=True)
class StoreSettings:
    """The backing store: an S3 bucket, or else a directory (the embedded default)."""

    s3: S3Settings | None
    fs_root: Path
    prefix: str = ""
    max_concurrency: int = 32  # blob bodies read at once
    part_size: int = 8 << 20  # fills of larger blobs read parts at once; 0: one stream
    fill_concurrency: int = 8  # parts of one fill read at once
    upstreams: tuple[OriginSettings, ...] = ()


@dataclass(frozen=True)
class CacheSettings:
    directory: Path
    tag_ttl: float = 30.0
    fill_attempts: int = 5
    max_bytes: int = 0  # 0 and max_share 0: no limit
    max_share: float = 0.0  # of the cache dir's filesystem


@dataclass(frozen=True)
class PushSettings:
    allow_push: bool = False
    allow_delete: bool = False
    upload_expiry: float = 86400.0  # idle seconds before an upload session is removed


@dataclass(frozen=True)
class ServerSettings:
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


@dataclass(frozen=True)
class Settings:
    server: ServerSettings
    cache: CacheSettings
    store: StoreSettings
    push: PushSettings = PushSettings()


# -- value parsers -------------------------------------------------------------


def _listen(value: str) -> tuple[str, int]:
    match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([^:\[\]]+):(\d+)", value.strip())
    if not match:
        raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:5000 or [::1]:5000")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 0 <= port <= 65535:
        raise ValueError("port out of range")
    return host, port


def _seconds(value: str) -> float:
    seconds = float(value)
    if seconds < 0 or seconds != seconds:
        raise ValueError("must be a number of seconds >= 0")
    return seconds


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError("must be at least 1")
    return number


_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}


def parse_size(text: str) -> tuple[int, float]:
    """`50GiB`, `500MB`, `1024` (bytes) or `80%` (of the filesystem): (bytes, share)."""
    value = text.strip().lower().replace(" ", "")
    if value.endswith("%"):
        share = float(value[:-1])
        if not 0 < share <= 100:
            raise ValueError("a percentage between 0 and 100")
        return 0, share / 100
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([a-z]*)", value)
    if match is None or match.group(2) not in _UNITS:
        raise ValueError("a size like 50GiB, 500MB, 1073741824 or 80%")
    return int(float(match.group(1)) * _UNITS[match.group(2)]), 0.0


MIN_PART_SIZE = 64 * 1024


def _part_size(text: str) -> int:
    size, share = parse_size(text)
    if share or 0 < size < MIN_PART_SIZE:
        raise ValueError("0 (off) or a size of at least 64KiB, like 8MiB")
    return size


def _url(value: str) -> str:
    if not re.fullmatch(r"https?://[^/\s]+/?", value.strip()):
        raise ValueError("expected http(s)://host[:port]")
    return value.strip().rstrip("/")


def _level(value: str) -> str:
    level = value.lower()
    if level not in ("debug", "info", "warning", "error"):
        raise ValueError("one of debug, info, warning, error")
    return level


def _boolean(value: str) -> bool:
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("true or false")


def _log_format(value: str) -> str:
    if value not in ("json", "text"):
        raise ValueError("json or text")
    return value


def _default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "registry-local")


def _default_fs_root() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return os.path.join(base, "registry-local", "store")


@dataclass(frozen=True)
class Option:
    """One setting: a flag, an environment variable and a config-file key."""

    name: str
    help: str
    default: Callable[[], str | None] | str | None = None
    parse: Callable[[str], Any] = str
    metavar: str | None = None
    group: str = "store"  # which commands take it: see COMMANDS
    flag: bool = False  # a switch: `--name` alone means true

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper().replace("-", "_")

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    def default_text(self) -> str | None:
        return self.default() if callable(self.default) else self.default


# The commands that take each group of options.
COMMANDS = {
    "store": "serve, import, export, warm",
    "origin": "serve, warm",
    "cache": "serve, warm, verify, prune",
    "serve": "serve, check",
}

OPTIONS: tuple[Option, ...] = (
    Option(
        "s3-endpoint",
        "S3 endpoint URL (omit for AWS); path-style addressing is used",
        metavar="URL",
    ),
    Option(
        "s3-bucket",
        "S3 bucket holding distribution's layout; without it the backing "
        "store is the directory --fs-root",
        metavar="NAME",
    ),
    Option("s3-region", "S3 region", metavar="REGION"),
    Option(
        "s3-prefix", "key prefix in the bucket (distribution's rootdirectory)", "", metavar="PREFIX"
    ),
    Option(
        "s3-read-timeout",
        "seconds a read from S3 may stall before it is retried",
        "30",
        _seconds,
        metavar="SECONDS",
    ),
    Option(
        "s3-max-concurrency",
        "blob bodies read from S3 at once; more wait their turn, fill by fill in turn",
        "32",
        _positive_int,
        metavar="N",
    ),
    Option(
        "s3-part-size",
        "fills of blobs larger than this read them as parts of this size, several at "
        "once (ranged GETs), e.g. 8MiB; 0 reads every blob as one stream",
        "8MiB",
        _part_size,
        metavar="SIZE",
    ),
    Option(
        "s3-fill-concurrency",
        "parts of one fill read at once (within --s3-max-concurrency, shared in turn "
        "with other fills)",
        "8",
        _positive_int,
        metavar="N",
    ),
    Option(
        "upstream",
        "origin registry (http(s)://host[:port]) that fills the bucket on a miss: "
        "manifests, tags and blobs not in S3 are fetched from it once and written "
        "through; per-registry origins go in the config file's `upstreams` list",
        None,
        _url,
        metavar="URL",
        group="origin",
    ),
    Option(
        "upstream-credentials",
        "file holding USER:PASSWORD for --upstream (or set REGISTRY_LOCAL_UPSTREAM_USERNAME "
        "and REGISTRY_LOCAL_UPSTREAM_PASSWORD)",
        None,
        str,
        metavar="FILE",
        group="origin",
    ),
    Option(
        "fs-root",
        "directory of the embedded backing store (distribution's filesystem "
        "layout), used when no --s3-bucket is given",
        _default_fs_root,
        metavar="DIR",
    ),
    Option("listen", "address to serve on", "127.0.0.1:5000", _listen, "HOST:PORT", "serve"),
    Option(
        "cache-dir",
        "directory of this host's cache",
        _default_cache_dir,
        metavar="DIR",
        group="cache",
    ),
    Option(
        "tag-ttl",
        "seconds a tag's target is trusted before it is checked again",
        "30",
        _seconds,
        "SECONDS",
        "cache",
    ),
    Option(
        "fill-attempts",
        "consecutive failed reads of one blob before its fill gives up",
        "5",
        _positive_int,
        "N",
        "cache",
    ),
    Option(
        "cache-max-bytes",
        "limit of the cache dir, e.g. 50GiB, 500MB or 80% (of its filesystem); least "
        "recently used blobs are evicted past it; none if unset",
        None,
        parse_size,
        "SIZE",
        "cache",
    ),
    Option(
        "warm-endpoint",
        "accept POST /-/warm to fetch images into the cache ahead of a deploy",
        "false",
        _boolean,
        group="serve",
        flag=True,
    ),
    Option(
        "allow-push",
        "accept pushes (blob uploads, manifest PUTs), written through to the backing store",
        "false",
        _boolean,
        group="serve",
        flag=True,
    ),
    Option(
        "allow-delete",
        "with --allow-push, also accept DELETE of manifests, tags and blob links",
        "false",
        _boolean,
        group="serve",
        flag=True,
    ),
    Option(
        "upload-expiry",
        "seconds an idle upload session is kept before it is removed",
        "86400",
        _seconds,
        "SECONDS",
        "serve",
    ),
    Option(
        "tls-cert",
        "serve HTTPS with this certificate (PEM, with its chain); needs --tls-key",
        None,
        metavar="FILE",
        group="serve",
    ),
    Option("tls-key", "the private key of --tls-cert (PEM)", None, metavar="FILE", group="serve"),
    Option(
        "auth-htpasswd",
        "require credentials for the registry API: users from an htpasswd file "
        "(bcrypt entries, htpasswd -B)",
        None,
        metavar="FILE",
        group="serve",
    ),
    Option(
        "auth-token-file",
        "require credentials for the registry API: bearer tokens, one a line",
        None,
        metavar="FILE",
        group="serve",
    ),
    Option(
        "metrics-listen",
        "also serve /metrics, /healthz and /readyz on this address",
        None,
        _listen,
        "HOST:PORT",
        "serve",
    ),
    Option(
        "shutdown-timeout",
        "seconds requests in progress get to finish on SIGTERM",
        "30",
        _seconds,
        "SECONDS",
        "serve",
    ),
    Option("log-level", "debug, info, warning or error", "info", _level, "LEVEL", "serve"),
    Option(
        "log-format", "json (one object per line) or text", "text", _log_format, "FORMAT", "serve"
    ),
)


def add_options(parser: argparse.ArgumentParser, groups: Iterable[str]) -> None:
    """Add the flags of the given option groups, plus --config."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help=f"YAML file with any of these options as keys (env {ENV_PREFIX}CONFIG)",
    )
    wanted = set(groups)
    for option in OPTIONS:
        if option.group in wanted:
            default = option.default_text()
            shown = f" (default: {default})" if default and not option.flag else ""
            help_text = f"{option.help}{shown}; env {option.env}".replace("%", "%%")
            if option.flag:
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


def _read_file(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of option names to values")
    known = {o.name for o in OPTIONS}
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("_", "-")
        if name == "upstreams":
            values[name] = _upstream_mappings(value, path)
            continue
        if name not in known:
            raise ConfigError(f"config file {path}: unknown option {key!r}")
        values[name] = "" if value is None else str(value)
    return values


def _upstream_mappings(value: Any, path: str) -> list[OriginSettings]:
    """The config file's `upstreams`: a list of {match, url, credentials_file}."""
    if not isinstance(value, list):
        raise ConfigError(f"config file {path}: upstreams must be a list")
    mappings = []
    for entry in value:
        if not isinstance(entry, dict) or not {"match", "url"} <= set(entry):
            raise ConfigError(f"config file {path}: each upstream needs match and url")
        unknown = set(entry) - {"match", "url", "credentials_file"}
        if unknown:
            raise ConfigError(f"config file {path}: unknown upstream keys {sorted(unknown)}")
        try:
            url = _url(str(entry["url"]))
        except ValueError as exc:
            raise ConfigError(f"config file {path}: upstream url: {exc}") from None
        username, password = _credentials(entry.get("credentials_file"), {})
        mappings.append(OriginSettings(url, str(entry["match"]), username, password))
    return mappings


def _credentials(path: str | None, environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    """USER:PASSWORD from a file (never a flag: flags show in ps), else from the env."""
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read credentials file {path}: {exc.strerror}") from None
        username, sep, password = text.partition(":")
        if not sep or not username:
            raise ConfigError(f"credentials file {path} must hold USER:PASSWORD")
        return username, password
    from_env = environ.get(ENV_PREFIX + "UPSTREAM_USERNAME")
    if not from_env:
        return None, None
    return from_env, environ.get(ENV_PREFIX + "UPSTREAM_PASSWORD", "")


def _raw_values(
    args: argparse.Namespace, environ: Mapping[str, str], groups: Iterable[str]
) -> dict[str, Any]:
    flags = vars(args)
    config_path = flags.get("config") or environ.get(ENV_PREFIX + "CONFIG")
    from_file = _read_file(config_path) if config_path else {}
    wanted = set(groups)
    values: dict[str, str | None] = {}
    for option in OPTIONS:
        if option.group not in wanted:
            continue
        if option.dest in flags:
            values[option.name] = flags[option.dest]
        elif option.env in environ:
            values[option.name] = environ[option.env]
        elif option.name in from_file:
            values[option.name] = from_file[option.name]
        else:
            values[option.name] = option.default_text()
    if "origin" in wanted:
        values["upstreams"] = from_file.get("upstreams", [])
        username, password = _credentials(values.get("upstream-credentials"), environ)
        values["upstream-username"], values["upstream-password"] = username, password
    return values


def _parsed(values: dict[str, Any]) -> dict[str, Any]:
    by_name = {o.name: o for o in OPTIONS}
    parsed: dict[str, Any] = {}
    for name, raw in values.items():
        if name not in by_name:  # already parsed: upstream mappings and credentials
            parsed[name] = raw
            continue
        if raw is None or (raw == "" and by_name[name].parse is not str):
            parsed[name] = None
            continue
        try:
            parsed[name] = by_name[name].parse(raw)
        except ValueError as exc:
            raise ConfigError(f"--{name} {raw!r}: {exc}") from None
    return parsed


def load(
    args: argparse.Namespace,
    environ: Mapping[str, str] = os.environ,
    groups: Iterable[str] = ("store", "origin", "cache", "serve"),
) -> Settings:
    """Settings from parsed flags, the environment and the config file; the parts
    for option groups a command does not take keep their defaults."""
    groups = tuple(groups)
    v = _parsed(_raw_values(args, environ, groups))
    store = _store(v) if "store" in groups else StoreSettings(None, Path(_default_fs_root()))
    cache = CacheSettings(Path(_default_cache_dir()))
    if "cache" in groups:
        limit = v["cache-max-bytes"] or (0, 0.0)
        cache = CacheSettings(
            directory=Path(v["cache-dir"]),
            tag_ttl=v["tag-ttl"],
            fill_attempts=v["fill-attempts"],
            max_bytes=limit[0],
            max_share=limit[1],
        )
    if "serve" not in groups:
        return Settings(ServerSettings(), cache, store)
    host, port = v["listen"]
    settings = Settings(
        server=ServerSettings(
            host=host,
            port=port,
            metrics_listen=v["metrics-listen"],
            shutdown_timeout=v["shutdown-timeout"],
            warm_endpoint=v["warm-endpoint"],
            tls_cert=_path(v["tls-cert"]),
            tls_key=_path(v["tls-key"]),
            auth_htpasswd=_path(v["auth-htpasswd"]),
            auth_token_file=_path(v["auth-token-file"]),
            log_level=v["log-level"],
            log_format=v["log-format"],
        ),
        cache=cache,
        store=store,
        push=PushSettings(
            allow_push=v["allow-push"],
            allow_delete=v["allow-delete"],
            upload_expiry=v["upload-expiry"],
        ),
    )
    check_exposure(settings)
    return settings


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_exposure(settings: Settings) -> None:
    """Refuse set-ups that would expose writes or credentials to the network."""
    server = settings.server
    if (server.tls_cert is None) != (server.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    auth = server.auth_htpasswd is not None or server.auth_token_file is not None
    writes = settings.push.allow_push or server.warm_endpoint
    if is_loopback(server.host):
        return
    if writes and not auth:
        raise ConfigError(
            f"--allow-push or --warm-endpoint on {server.host}, which is not a loopback "
            "address, needs authentication: --auth-htpasswd or --auth-token-file"
        )
    if auth and server.tls_cert is None:
        raise ConfigError(
            f"credentials would cross the network to {server.host} in clear text: "
            "give --tls-cert and --tls-key"
        )


def _store(v: dict[str, Any]) -> StoreSettings:
    if v["s3-endpoint"] and not v["s3-bucket"]:
        raise ConfigError("--s3-endpoint needs --s3-bucket")
    s3 = None
    concurrency = v["s3-max-concurrency"]
    if v["s3-bucket"]:
        s3 = S3Settings(
            bucket=v["s3-bucket"],
            endpoint=v["s3-endpoint"] or None,
            region=v["s3-region"] or None,
            read_timeout=v["s3-read-timeout"],
            # Blob reads, plus room for the small requests that never wait for them.
            max_connections=concurrency + 16,
        )
    return StoreSettings(
        s3=s3,
        fs_root=Path(v["fs-root"]),
        prefix=v["s3-prefix"] or "",
        max_concurrency=concurrency,
        part_size=v["s3-part-size"],
        fill_concurrency=v["s3-fill-concurrency"],
        upstreams=_upstreams(v),
    )


def _upstreams(v: dict[str, Any]) -> tuple[OriginSettings, ...]:
    """The file's mappings first (most specific), then --upstream for every name;
    none for a command that does not take the origin options."""
    if "upstreams" not in v:
        return ()
    mappings = list(v["upstreams"])
    if v["upstream"]:
        username, password = v["upstream-username"], v["upstream-password"]
        mappings.append(OriginSettings(v["upstream"], "*", username, password))
    return tuple(mappings)


def reference_markdown() -> str:
    """The table of every option, for docs/configuration.md (a test keeps it current)."""
    rows = [
        "| flag | environment | config key | default | commands | what |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for option in OPTIONS:
        default = option.default_text()
        if default and default.startswith(os.path.expanduser("~")):
            default = "~" + default[len(os.path.expanduser("~")) :]
        flag = f"`--{option.name}`" + ("" if option.flag else f" {option.metavar or 'VALUE'}")
        commands = COMMANDS[option.group]
        rows.append(
            f"| {flag} | `{option.env}` | `{option.name}` | "
            f"{f'`{default}`' if default else '-'} | {commands} | {option.help} |"
        )
    return "\n".join(rows) + "\n"
