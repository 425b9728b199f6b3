"""Flags win over the environment, the environment over the file, the file over defaults."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from registry_local.cli import _parser
from registry_local.config import OPTIONS, Settings, load
from registry_local.errors import ConfigError


def _load(argv: list[str], env: dict[str, str] | None = None) -> Settings:
    return load(_parser().parse_args(["serve", *argv]), env or {})


def test_defaults() -> None:
    settings = _load([])
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 5000)
    assert settings.cache.tag_ttl == 30
    assert settings.store.s3 is None  # the embedded directory store


def test_precedence(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "s3_bucket: from-file\ns3-endpoint: http://127.0.0.1:1\ntag-ttl: 5\n"
        "listen: 127.0.0.1:7000\ns3-prefix: file-prefix\n"
    )
    env = {"REGISTRY_LOCAL_TAG_TTL": "7", "REGISTRY_LOCAL_S3_BUCKET": "from-env"}
    settings = _load(["--config", str(config), "--s3-bucket", "from-flag"], env)
    assert settings.store.s3 is not None
    assert settings.store.s3.bucket == "from-flag"  # flag > env > file
    assert settings.cache.tag_ttl == 7  # env > file
    assert settings.server.port == 7000  # file > default
    assert settings.store.prefix == "file-prefix"
    assert settings.store.s3.endpoint == "http://127.0.0.1:1"


def test_config_file_from_env(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("listen: '[::1]:6000'\n")
    settings = _load([], {"REGISTRY_LOCAL_CONFIG": str(config)})
    assert (settings.server.host, settings.server.port) == ("::1", 6000)


def test_access_settings_from_flags_and_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "access_policy: /etc/policy.yaml\nauthorize_offline_grace: 1h\nupstreams:\n"
        "  - {match: ghcr.io, url: 'https://ghcr.io', authorize_at_origin: true}\n"
        "  - {match: quay.io, url: 'https://quay.io'}\n"
    )
    argv = ["--config", str(config), "--upstream", "http://127.0.0.1:1", "--authorize-at-origin"]
    settings = _load([*argv, "--authorize-cache-ttl", "30s"])
    assert settings.access.policy == Path("/etc/policy.yaml")
    assert (settings.access.decision_ttl, settings.access.offline_grace) == (30.0, 3600.0)
    assert [o.authorize_at_origin for o in settings.store.upstreams] == [True, False, True]
    assert _load([]).access.decision_ttl == 300.0


@pytest.mark.parametrize(
    ("argv", "file_text", "message"),
    [
        (["--listen", "nowhere"], None, "--listen"),
        (["--tag-ttl", "-1"], None, "--tag-ttl"),
        (["--s3-endpoint", "http://127.0.0.1:1"], None, "needs --s3-bucket"),
        ([], "no_such_option: 1\n", "unknown option"),
        ([], "- a list\n", "mapping"),
        ([], "listen: [unclosed\n", "not valid YAML"),
        (["--peer-listen", "127.0.0.1:5000"], None, "listener of its own"),
        (
            ["--peer-listen", "0.0.0.0:5002", "--advertise-url", "http://10.0.0.7:5002"],
            None,
            "needs --peer-token-file",
        ),
        (["--peer-listen", "0.0.0.0:5002"], None, "give --advertise-url"),
        (["--advertise-url", "http://10.0.0.7:5002"], None, "need --peer-listen"),
        (
            ["--peer-listen", "127.0.0.1:5002", "--advertise-url", "10.0.0.7"],
            None,
            "--advertise-url",
        ),
        (["--peer-listen", "127.0.0.1:5002", "--lease-ttl", "0"], None, "--lease-ttl"),
        (
            ["--peer-listen", "127.0.0.1:5002", "--peer-token-file", "/nonexistent/token"],
            None,
            "cannot read --peer-token-file",
        ),
        (["--peer-listen", "127.0.0.1:5002", "--peer-max-streams", "-1"], None, "0 or more"),
        (["--peer-listen", "127.0.0.1:5002", "--fleet-part-size", "1MiB"], None, "5MiB"),
        (["--peer-listen", "127.0.0.1:5002", "--peer-tls-cert", "c.pem"], None, "go together"),
        (["--peer-ca", "ca.pem"], None, "need --peer-listen"),
        (["--authorize-at-origin"], None, "needs --upstream"),
        (["--authorize-cache-ttl", "soon"], None, "--authorize-cache-ttl"),
        (
            ["--listen", "0.0.0.0:5000", "--upstream", "http://127.0.0.1:1"],
            "authorize_at_origin: true\n",
            "in clear text",
        ),
        (
            [],
            "upstreams:\n  - {match: x, url: 'http://127.0.0.1:1', authorize_at_origin: 'yes'}\n",
            "true or false",
        ),
        (
            [
                *("--peer-listen", "127.0.0.1:5002", "--advertise-url", "http://127.0.0.1:5002"),
                *("--peer-tls-cert", "c.pem", "--peer-tls-key", "k.pem"),
            ],
            None,
            "speaks TLS",
        ),
    ],
)
def test_bad_configuration(
    tmp_path: Path, argv: list[str], file_text: str | None, message: str
) -> None:
    if file_text is not None:
        (tmp_path / "c.yaml").write_text(file_text)
        argv = [*argv, "--config", str(tmp_path / "c.yaml")]
    with pytest.raises(ConfigError, match=message):
        _load(argv)


def test_serve_help_documents_every_option() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "registry_local", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    text = " ".join(result.stdout.split())
    for option in OPTIONS:
        assert f"--{option.name}" in text
        assert option.env in text.replace("- ", "-").replace(" _", "_")


def test_bad_flag_exits_2_with_a_message() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "registry_local", "serve", "--listen", "x"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "--listen 'x'" in result.stderr and "Traceback" not in result.stderr


def test_switches_from_flags_env_and_file(tmp_path: Path) -> None:
    assert _load([]).push.allow_push is False
    assert _load(["--allow-push"]).push.allow_push is True
    env = {"REGISTRY_LOCAL_ALLOW_DELETE": "yes", "REGISTRY_LOCAL_ALLOW_PUSH": "on"}
    assert _load([], env).push.allow_delete is True
    config = tmp_path / "c.yaml"
    config.write_text("allow-push: true\nupload-expiry: 60\n")
    settings = _load(["--config", str(config)])
    assert settings.push.allow_push is True and settings.push.upload_expiry == 60
    with pytest.raises(ConfigError, match="REGISTRY_LOCAL_ALLOW_PUSH 'maybe': true or false"):
        _load([], {"REGISTRY_LOCAL_ALLOW_PUSH": "maybe"})  # named where it was given
    config.write_text("tag-ttl: soon\n")
    with pytest.raises(ConfigError, match="config file key tag-ttl 'soon': a number of seconds"):
        _load(["--config", str(config)])
    with pytest.raises(ConfigError, match="--s3-max-concurrency 'x': a whole number"):
        _load(["--s3-max-concurrency", "x"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("50GiB", (50 << 30, 0.0)),
        ("500MB", (500_000_000, 0.0)),
        ("1024", (1024, 0.0)),
        ("1.5 GiB", (3 << 29, 0.0)),
        ("80%", (0, 0.8)),
        ("2t", (2 * 10**12, 0.0)),
    ],
)
def test_cache_sizes(text: str, expected: tuple[int, float]) -> None:
    from registry_local.config import parse_size

    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["lots", "5XB", "0%", "120%", "-5GB", "%"])
def test_bad_cache_sizes(text: str) -> None:
    with pytest.raises(ConfigError, match="--cache-max-bytes"):
        _load([f"--cache-max-bytes={text}"])


def test_fleet_settings(tmp_path: Path) -> None:
    assert _load([]).fleet is None  # off unless a peer listener is asked for
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    fleet = _load(["--peer-listen", "127.0.0.1:5002"]).fleet
    assert fleet is not None
    assert (fleet.advertise_url, fleet.token, fleet.lease_ttl) == (
        "http://127.0.0.1:5002",
        None,
        15,
    )
    assert (fleet.max_streams, fleet.part_size, fleet.tls_cert, fleet.insecure) == (
        2,
        32 << 20,
        None,
        False,
    )
    off_loopback = ["--peer-listen", "0.0.0.0:5002", "--peer-token-file", str(token)]
    with pytest.raises(ConfigError, match="token in clear"):
        _load(off_loopback, {"REGISTRY_LOCAL_ADVERTISE_URL": "http://10.0.0.7:5002"})
    fleet = _load(
        [*off_loopback, "--peer-insecure", "--peer-max-streams", "0"],
        {"REGISTRY_LOCAL_ADVERTISE_URL": "http://10.0.0.7:5002", "REGISTRY_LOCAL_LEASE_TTL": "4"},
    ).fleet
    assert fleet is not None
    assert (fleet.peer_host, fleet.peer_port) == ("0.0.0.0", 5002)
    assert (fleet.advertise_url, fleet.token, fleet.lease_ttl) == (
        "http://10.0.0.7:5002",
        "s3cret",
        4,
    )
    assert (fleet.insecure, fleet.max_streams) == (True, 0)
    assert "s3cret" not in repr(fleet)  # the secret never shows in a repr or a log line
    tls = ["--peer-tls-cert", "c.pem", "--peer-tls-key", "k.pem", "--peer-ca", "ca.pem"]
    fleet = _load(
        ["--peer-listen", "10.0.0.7:5002", "--peer-token-file", str(token), *tls],
        {"REGISTRY_LOCAL_FLEET_PART_SIZE": "8MiB"},
    ).fleet
    assert fleet is not None
    assert (fleet.advertise_url, fleet.part_size) == ("https://10.0.0.7:5002", 8 << 20)
    assert (fleet.tls_cert, fleet.tls_key, fleet.ca) == (
        Path("c.pem"),
        Path("k.pem"),
        Path("ca.pem"),
    )
