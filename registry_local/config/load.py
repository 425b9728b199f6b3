"""Reading the options: flags win over the environment, the environment over the
file, the file over the defaults. The result is parsed once into the frozen
settings (settings.py); each component receives only its own part."""

from __future__ import annotations

import argparse
import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

import yaml

from ..errors import ConfigError
from . import options as o
from .options import COMMANDS, ENV_PREFIX, OPTIONS, Command, Option
from .settings import (
    AccessSettings,
    CacheSettings,
    FleetSettings,
    OriginSettings,
    PushSettings,
    S3Settings,
    ServerSettings,
    Settings,
    StoreSettings,
)
from .values import is_loopback, origin_url

__all__ = ["check_exposure", "load", "unknown_variables"]

T = TypeVar("T")

_MIN_CACHE_BYTES = 1 << 20


class _Values:
    """The raw text each option was given, and where (a flag, a variable, a key
    of the config file), parsed on request."""

    def __init__(self, raw: Mapping[str, tuple[str, str]]) -> None:
        self._raw = raw

    def __getitem__(self, option: Option[T]) -> T:
        given = self._raw.get(option.name)
        if given is None:
            return option.default()
        raw, where = given
        try:
            return option.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{where} {raw!r}: {exc}") from None


class _File:
    """The config file: option values as text, and the `upstreams` list."""

    def __init__(
        self, options: dict[str, str] | None = None, upstreams: list[OriginSettings] | None = None
    ) -> None:
        self.options = options or {}
        self.upstreams = upstreams or []

    @classmethod
    def read(cls, path: str | None) -> _File:
        """The file at `path` (None: no file). Raises ConfigError."""
        if path is None:
            return cls()
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must be a mapping of option names to values")
        known = {option.name for option in OPTIONS}
        found = cls()
        for key, value in data.items():
            name = str(key).replace("_", "-")
            if name == "upstreams":
                found.upstreams = _upstream_mappings(value, path)
            elif name in known:
                found.options[name] = "" if value is None else str(value)
            else:
                raise ConfigError(f"config file {path}: unknown option {key!r}")
        return found


_UPSTREAM_KEYS = frozenset(
    {"match", "url", "credentials_file", "auth_file", "credentials", "authorize_at_origin"}
)


def _upstream_mappings(value: object, path: str) -> list[OriginSettings]:
    """The config file's `upstreams`: a list of {match, url, credentials_file}."""
    if not isinstance(value, list):
        raise ConfigError(f"config file {path}: upstreams must be a list")
    mappings = []
    for entry in value:
        if not isinstance(entry, dict) or not {"match", "url"} <= set(entry):
            raise ConfigError(f"config file {path}: each upstream needs match and url")
        unknown = set(entry) - _UPSTREAM_KEYS
        if unknown:
            raise ConfigError(f"config file {path}: unknown upstream keys {sorted(unknown)}")
        try:
            url = origin_url(str(entry["url"]))
        except ValueError as exc:
            raise ConfigError(f"config file {path}: upstream url: {exc}") from None
        kind = entry.get("credentials")
        if kind not in (None, "ecr"):
            raise ConfigError(f"config file {path}: upstream credentials: only 'ecr' is known")
        sources = [k for k in ("credentials_file", "auth_file", "credentials") if entry.get(k)]
        if len(sources) > 1:
            raise ConfigError(f"config file {path}: an upstream takes one of {sources}")
        username, password = _credentials(entry.get("credentials_file"), {})
        mappings.append(
            OriginSettings(
                url,
                str(entry["match"]),
                username,
                password,
                auth_file=_auth_file(entry.get("auth_file")),
                ecr=kind == "ecr",
                authorize_at_origin=_flag(entry.get("authorize_at_origin", False), path),
            )
        )
    return mappings


def _flag(value: object, path: str) -> bool:
    """An upstream's yes/no key: YAML's true or false, nothing else."""
    if not isinstance(value, bool):
        raise ConfigError(f"config file {path}: upstream authorize_at_origin: true or false")
    return value


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


def load(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> Settings:
    """Settings for `args.command` from its flags, the environment and the config
    file; the parts for option groups the command does not take keep their
    defaults."""
    command: Command = args.command
    groups = COMMANDS[command]
    flags = vars(args)
    file = _File.read(flags.get("config") or environ.get(ENV_PREFIX + "CONFIG"))
    raw: dict[str, tuple[str, str]] = {}
    for option in OPTIONS:
        if option.group not in groups:
            continue
        if option.dest in flags:
            given = flags[option.dest]  # text, or a bool from --[no-]name
            text = str(given).lower() if isinstance(given, bool) else given
            raw[option.name] = (text, f"--{option.name}")
        elif option.env in environ:
            raw[option.name] = (environ[option.env], option.env)
        elif option.name in file.options:
            raw[option.name] = (file.options[option.name], f"config file key {option.name}")
    v = _Values(raw)
    settings = Settings(
        store=_store(v, file, environ, "origin" in groups)
        if "store" in groups
        else StoreSettings(),
        cache=_cache(v) if {"cachedir", "cache", "limit"} & set(groups) else CacheSettings(),
    )
    if "listen" not in groups:
        return settings
    # Options of groups the command does not take read their defaults here.
    host, port = v[o.LISTEN]
    settings = Settings(
        server=ServerSettings(
            host=host,
            port=port,
            metrics_listen=v[o.METRICS_LISTEN],
            shutdown_timeout=v[o.SHUTDOWN_TIMEOUT],
            warm_endpoint=v[o.WARM_ENDPOINT],
            tls_cert=v[o.TLS_CERT],
            tls_key=v[o.TLS_KEY],
            auth_htpasswd=v[o.AUTH_HTPASSWD],
            auth_token_file=v[o.AUTH_TOKEN_FILE],
            log_level=v[o.LOG_LEVEL],
            log_format=v[o.LOG_FORMAT],
            prefetch=v[o.PREFETCH],
            prefetch_concurrency=v[o.PREFETCH_CONCURRENCY],
        ),
        access=AccessSettings(
            policy=v[o.ACCESS_POLICY],
            decision_ttl=v[o.AUTHORIZE_CACHE_TTL],
            offline_grace=v[o.AUTHORIZE_OFFLINE_GRACE],
        ),
        cache=settings.cache,
        store=settings.store,
        push=PushSettings(
            allow_push=v[o.ALLOW_PUSH],
            allow_delete=v[o.ALLOW_DELETE],
            upload_expiry=v[o.UPLOAD_EXPIRY],
        ),
        fleet=_fleet(v, (host, port)) if "serve" in groups else None,
    )
    if settings.server.metrics_listen == (host, port):
        raise ConfigError("--metrics-listen needs a listener of its own, not the --listen address")
    if settings.push.allow_delete and not settings.push.allow_push:
        raise ConfigError("--allow-delete needs --allow-push")
    check_exposure(settings)
    return settings


def _cache(v: _Values) -> CacheSettings:
    max_bytes, max_share = v[o.CACHE_MAX_BYTES]
    if 0 < max_bytes < _MIN_CACHE_BYTES:
        # A limit this small holds nothing: every blob would bypass the cache
        # and the log would say so for each one.
        raise ConfigError(
            f"--cache-max-bytes {max_bytes}: too small to cache anything; 1MiB or more"
        )
    return CacheSettings(
        directory=v[o.CACHE_DIR],
        tag_ttl=v[o.TAG_TTL],
        fill_attempts=v[o.FILL_ATTEMPTS],
        verified_ranges=v[o.VERIFIED_RANGES],
        record_use_every=v[o.RECORD_USE_EVERY],
        max_bytes=max_bytes,
        max_share=max_share,
    )


def _store(
    v: _Values, file: _File, environ: Mapping[str, str], with_origins: bool
) -> StoreSettings:
    bucket, endpoint = v[o.S3_BUCKET], v[o.S3_ENDPOINT]
    if endpoint and not bucket:
        raise ConfigError("--s3-endpoint needs --s3-bucket")
    s3 = None
    if bucket:
        s3 = S3Settings(
            bucket=bucket,
            endpoint=endpoint,
            region=v[o.S3_REGION],
            read_timeout=v[o.S3_READ_TIMEOUT],
        )
    return StoreSettings(
        s3=s3,
        fs_root=v[o.FS_ROOT],
        prefix=v[o.S3_PREFIX],
        max_concurrency=v[o.S3_MAX_CONCURRENCY],
        part_size=v[o.S3_PART_SIZE],
        fill_concurrency=v[o.S3_FILL_CONCURRENCY],
        upstreams=_upstreams(v, file, environ) if with_origins else (),
        bucket_registries=v[o.BUCKET_REGISTRIES],
    )


def _upstreams(v: _Values, file: _File, environ: Mapping[str, str]) -> tuple[OriginSettings, ...]:
    """The file's mappings first (most specific), then --upstream for every name."""
    mappings = list(file.upstreams)
    auth_file = v[o.UPSTREAM_AUTH_FILE]
    if auth_file is not None and v[o.UPSTREAM_CREDENTIALS]:
        raise ConfigError("--upstream-credentials and --upstream-auth-file: give one")
    username, password = _credentials(v[o.UPSTREAM_CREDENTIALS], environ)
    url = v[o.UPSTREAM]
    if url:
        mappings.append(
            OriginSettings(
                url,
                "*",
                username,
                password,
                auth_file=_auth_file(auth_file),
                authorize_at_origin=v[o.AUTHORIZE_AT_ORIGIN],
            )
        )
    elif v[o.AUTHORIZE_AT_ORIGIN]:
        raise ConfigError("--authorize-at-origin needs --upstream")
    return tuple(mappings)


def _auth_file(path: object) -> Path | None:
    """A docker config.json given for an origin: it must be readable now (it is
    read again whenever it changes)."""
    if not path:
        return None
    file = Path(str(path))
    try:
        file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read upstream auth file {file}: {exc.strerror}") from None
    return file


def _fleet(v: _Values, listen: tuple[str, int]) -> FleetSettings | None:
    peer = v[o.PEER_LISTEN]
    advertise, token_file = v[o.ADVERTISE_URL], v[o.PEER_TOKEN_FILE]
    cert, key, ca = v[o.PEER_TLS_CERT], v[o.PEER_TLS_KEY], v[o.PEER_CA]
    if peer is None:
        if advertise or token_file or cert or key or ca:
            raise ConfigError(
                "--advertise-url, --peer-token-file, --peer-tls-cert, --peer-tls-key and "
                "--peer-ca need --peer-listen"
            )
        return None
    if (cert is None) != (key is None):
        raise ConfigError("--peer-tls-cert and --peer-tls-key go together")
    host, port = peer
    if peer == listen:
        raise ConfigError("--peer-listen needs a listener of its own, not the --listen address")
    scheme = "http" if cert is None else "https"
    if advertise is None:
        if host in ("0.0.0.0", "::", ""):
            raise ConfigError(
                f"--peer-listen {host} is every address: give --advertise-url, the one "
                "the other hosts reach this host at"
            )
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        advertise = f"{scheme}://{address}"
    elif advertise.startswith("http://") and cert is not None:
        raise ConfigError("--advertise-url is http:// but the peer listener speaks TLS: https://")
    token = _secret(token_file) if token_file else None
    insecure = v[o.PEER_INSECURE]
    if not is_loopback(host):
        if token is None:
            raise ConfigError(
                f"--peer-listen on {host}, which is not a loopback address, needs "
                "--peer-token-file: peers must prove they belong to the fleet"
            )
        if cert is None and not insecure:
            raise ConfigError(
                f"--peer-listen on {host} without --peer-tls-cert/--peer-tls-key would "
                "have peers send the fleet token in clear: give them (and --peer-ca), "
                "or --peer-insecure on a network you trust end to end"
            )
    return FleetSettings(
        host,
        port,
        advertise,
        token,
        v[o.LEASE_TTL],
        v[o.S3_READ_TIMEOUT],
        v[o.PEER_MAX_STREAMS],
        v[o.FLEET_PART_SIZE],
        cert,
        key,
        ca,
        v[o.PEER_TLS_NAME],
        insecure,
    )


def _secret(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"cannot read --peer-token-file {path}: {reason}") from None
    if not token:
        raise ConfigError(f"--peer-token-file {path} is empty")
    return token


# REGISTRY_LOCAL_* variables that are not options but are read all the same.
_OTHER_VARIABLES = frozenset(
    {"CONFIG", "UPSTREAM_USERNAME", "UPSTREAM_PASSWORD", "DEMO_DIR"}  # DEMO_DIR: quickstart
)


def unknown_variables(environ: Mapping[str, str] = os.environ) -> list[str]:
    """One warning per REGISTRY_LOCAL_* variable that nothing reads (a typo is
    otherwise silently ignored), with the option it probably meant."""
    known = {option.env for option in OPTIONS} | {ENV_PREFIX + n for n in _OTHER_VARIABLES}
    warnings = []
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            warnings.append(f"{name} is not an option and is ignored{hint}")
    return warnings


def check_exposure(settings: Settings) -> None:
    """Refuse set-ups that would expose writes or credentials to the network."""
    server = settings.server
    if (server.tls_cert is None) != (server.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    auth = server.auth_htpasswd is not None or server.auth_token_file is not None
    # Clients hand their origin credentials to an origin that decides.
    forwarded = settings.store.origins_decide
    writes = settings.push.allow_push or server.warm_endpoint
    if is_loopback(server.host):
        return
    if writes and not auth:
        raise ConfigError(
            f"--allow-push or --warm-endpoint on {server.host}, which is not a loopback "
            "address, needs authentication: --auth-htpasswd or --auth-token-file"
        )
    if (auth or forwarded) and server.tls_cert is None:
        raise ConfigError(
            f"credentials would cross the network to {server.host} in clear text: "
            "give --tls-cert and --tls-key"
        )
