"""Operator mistakes and bad environments get one clear line, never a traceback.

Each case runs `registry-local` as a real process, as an operator would, and
checks the exit status (2 for a usage mistake, 1 for the environment) and that
stderr is one line naming the cause.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry_local import __version__

from .support.processes import free_port, run_cli, sealed_env


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another process (here: this one) listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def _cases(tmp: Path, busy: int) -> list[tuple[list[str], int, str]]:
    bad_utf8 = tmp / "bad-utf8.htpasswd"
    bad_utf8.write_bytes(b"user:\xff\xfe\n")
    bad_bcrypt = tmp / "bad-bcrypt.htpasswd"
    bad_bcrypt.write_text("user:$2y$05$short\n")
    a_file = tmp / "a-file"
    a_file.write_text("not a directory")
    cache = ["--cache-dir", str(tmp / "cache"), "--fs-root", str(tmp / "store")]
    port = free_port()
    return [
        (["serve", "--listen", f"127.0.0.1:{busy}", *cache], 1, "is in use"),
        (
            ["serve", "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{port}"],
            2,
            "--metrics-listen needs a listener of its own",
        ),
        (["serve", "--s3-bucket", "b", "--s3-endpoint", "127.0.0.1:9000"], 2, "http(s)://"),
        (["serve", "--listen", "nosuchhost.invalid:5000", *cache], 1, "cannot listen on"),
        (["serve", "--auth-htpasswd", str(bad_utf8), *cache], 2, "is not UTF-8 text"),
        (["serve", "--auth-htpasswd", str(bad_bcrypt), *cache], 2, "not a bcrypt entry"),
        (["serve", "--allow-delete", *cache], 2, "--allow-delete needs --allow-push"),
        (["serve", "--cache-max-bytes", "10", *cache], 2, "too small to cache anything"),
        (["sample", str(a_file)], 2, "is not a directory"),
        (["export", "team/app:v1", str(a_file), "--fs-root", str(tmp)], 2, "is not a directory"),
        (
            [
                "import",
                str(tmp),
                "team/app:v1",
                "--fs-root",
                str(tmp / "s"),
                "--scratch-dir",
                str(tmp / "nowhere"),
            ],
            2,
            "--scratch-dir",
        ),
        (["verify", "--cache-dir", str(tmp / "no-such-cache")], 2, "is not a directory"),
        (["prune", "--cache-dir", str(tmp / "no-such-cache")], 2, "is not a directory"),
        (
            ["serve", "--cache-dir", str(a_file / "cache"), "--listen", f"127.0.0.1:{port}"],
            1,
            "Not a directory",
        ),
    ]


async def test_every_mistake_is_one_clear_line(tmp_path: Path, busy_port: int):
    for argv, status, message in _cases(tmp_path, busy_port):
        code, _, err = await run_cli(*argv, env=sealed_env())
        lines = [line for line in err.splitlines() if not line[:4].isdigit()]  # log lines
        assert code == status, (argv, code, err)
        assert len(lines) == 1 and lines[0].startswith("registry-local: "), (argv, err)
        assert message in lines[0], (argv, err)
        assert "Traceback" not in err, (argv, err)


async def test_version_and_case_insensitive_choices(tmp_path: Path):
    code, out, _ = await run_cli("--version", env=sealed_env())
    assert code == 0 and out.strip() == f"registry-local {__version__}"
    port = free_port()
    code, _, err = await run_cli(
        "serve",
        "--log-format",
        "JSON",
        "--listen",
        f"127.0.0.1:{port}",
        "--metrics-listen",
        f"127.0.0.1:{port}",
        env=sealed_env(),
    )
    assert code == 2 and "--log-format" not in err  # JSON accepted; the next mistake reported


async def test_a_misspelt_variable_is_named_not_ignored(tmp_path: Path):
    env = sealed_env({"REGISTRY_LOCAL_CACHEDIR": str(tmp_path)})
    code, _, err = await run_cli("verify", "--cache-dir", str(tmp_path), env=env)
    assert code == 0
    assert (
        "registry-local: warning: REGISTRY_LOCAL_CACHEDIR is not an option and is ignored "
        "(did you mean REGISTRY_LOCAL_CACHE_DIR?)"
    ) in err


async def test_commands_take_only_the_options_they_use(tmp_path: Path):
    for argv in (
        ["check", "--allow-push"],
        ["verify", "--tag-ttl", "5"],
        ["prune", "--upstream", "x"],
    ):
        code, _, err = await run_cli(*argv, env=sealed_env())
        assert code == 2 and "unrecognized arguments" in err, (argv, err)
