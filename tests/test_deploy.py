"""The files operators install: parsed, validated, and consistent with the code."""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from aiohttp import web
from dockerfile_parse import DockerfileParser

from registry_local.config import OPTIONS, Settings, load, reference_markdown

from .support.processes import free_port, require_tool, run_cli, sealed_env, serving
from .support.s3proxy import serve_app

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes" / "registry-local.yaml"


def _manifests() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(KUBERNETES.read_text()) if d]


def test_every_deploy_file_parses() -> None:
    files = sorted(p for p in DEPLOY.rglob("*") if p.is_file())
    assert files
    for path in files:
        if "templates" in path.relative_to(DEPLOY).parts:
            continue  # the chart's templates are YAML once helm renders them (test_helm.py)
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            assert list(yaml.safe_load_all(text)), path
        elif path.suffix == ".json":
            json.loads(text)
        elif path.suffix in (".toml", ".conf") or path.name.endswith(".toml.snippet"):
            tomllib.loads(text)


def test_kubernetes_manifests_pass_the_schema() -> None:
    for document in _manifests():
        kubernetes_validate.validate(document, "1.30.0", strict=True)
    # The check bites: a misspelt field is refused.
    daemonset = copy.deepcopy(next(d for d in _manifests() if d["kind"] == "DaemonSet"))
    daemonset["spec"]["template"]["spec"]["hostNetwrk"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, "1.30.0", strict=True)


def test_the_daemonset_is_what_a_node_needs() -> None:
    by_kind = {d["kind"]: d for d in _manifests()}
    pod = by_kind["DaemonSet"]["spec"]["template"]
    spec = pod["spec"]
    container = spec["containers"][0]
    assert spec["hostNetwork"] is True
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert any(v.get("hostPath") for v in spec["volumes"])
    # The ConfigMap is a valid registry-local config, listening on loopback only,
    # with the environment the pod gives it: the advertised peer URL from the
    # node's IP, and the peer token from its Secret.
    config = yaml.safe_load(by_kind["ConfigMap"]["data"]["config.yaml"])
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
    advertised = env["REGISTRY_LOCAL_ADVERTISE_URL"]["value"].replace("$(NODE_IP)", "10.1.2.3")
    mount = next(m for m in container["volumeMounts"] if m["name"] == "peer")
    assert config["peer-token-file"].startswith(mount["mountPath"] + "/")
    with tempfile.TemporaryDirectory() as directory:
        token = Path(directory) / "token"
        token.write_text("secret\n")
        config["peer-token-file"] = str(token)
        settings = _load_config(config, {"REGISTRY_LOCAL_ADVERTISE_URL": advertised})
    assert settings.fleet is not None
    assert settings.fleet.advertise_url == "https://10.1.2.3:5002"
    # Peers speak TLS, one certificate for every node, checked by name.
    assert (settings.fleet.tls_cert, settings.fleet.tls_key, settings.fleet.ca) == tuple(
        Path(mount["mountPath"]) / name for name in ("tls.crt", "tls.key", "ca.crt")
    )
    assert settings.fleet.tls_name == "registry-local-peer"
    assert not settings.fleet.insecure
    peer_port = next(p for p in container["ports"] if p["name"] == "peers")["containerPort"]
    assert settings.fleet.peer_port == peer_port
    assert settings.server.host == "127.0.0.1"
    assert settings.server.metrics_listen == ("0.0.0.0", 5001)
    assert (
        str(settings.server.metrics_listen[1])
        == pod["metadata"]["annotations"]["prometheus.io/port"]
    )


def _load_config(values: dict[str, Any], environ: dict[str, str] | None = None) -> Settings:
    """Settings from a config file with these values, as `serve --config` reads it."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "config.yaml"
        path.write_text(yaml.safe_dump(values))
        return load(argparse.Namespace(command="serve", config=str(path)), environ or {})


def test_the_systemd_config_example_is_valid() -> None:
    settings = _load_config(yaml.safe_load((DEPLOY / "systemd" / "config.yaml").read_text()))
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 5000)
    assert settings.store.s3 is not None


def test_systemd_unit_verifies_and_is_hardened(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze")
    unit = (DEPLOY / "systemd" / "registry-local.service").read_text()
    for setting in (
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "StateDirectory=registry-local",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
    ):
        assert setting in unit
    executable = Path(sys.executable).parent / "registry-local"
    local = tmp_path / "registry-local.service"
    local.write_text(unit.replace("/usr/local/bin/registry-local", str(executable)))
    result = subprocess.run([analyze, "verify", str(local)], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    broken = tmp_path / "broken.service"
    broken.write_text(local.read_text().replace("ProtectSystem=strict", "ProtectSystem=bogus"))
    result = subprocess.run([analyze, "verify", str(broken)], capture_output=True, text=True)
    assert "bogus" in result.stderr  # the check bites
    result = subprocess.run(
        [analyze, "security", "--offline=yes", str(local)], capture_output=True, text=True
    )
    exposure = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert exposure and float(exposure.group(1)) < 2.0, result.stdout[-400:]


def test_the_gc_timer_and_its_service_verify(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze")
    executable = Path(sys.executable).parent / "registry-local"
    for name in ("registry-local-gc.service", "registry-local-gc.timer"):
        text = (DEPLOY / "systemd" / name).read_text()
        (tmp_path / name).write_text(text.replace("/usr/local/bin/registry-local", str(executable)))
    service = (tmp_path / "registry-local-gc.service").read_text()
    assert "Type=oneshot" in service and "DynamicUser=yes" in service
    result = subprocess.run(
        [
            analyze,
            "verify",
            *(str(tmp_path / n) for n in ("registry-local-gc.service", "registry-local-gc.timer")),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    command = re.search(r"^ExecStart=(\S+) (.*)$", service, re.M)
    assert command is not None
    _gc_arguments_parse(command.group(2).split())


def _gc_arguments_parse(args: list[str]) -> None:
    """The arguments are ones `registry-local gc` takes (its parser says so)."""
    from registry_local.cli import _parser

    parsed = _parser().parse_args(args)
    assert parsed.command == "gc" and parsed.unused_for >= 86400


def test_the_gc_cronjob_runs_one_gc_with_the_nodes_config() -> None:
    by_kind = {d["kind"]: d for d in _manifests()}
    job = by_kind["CronJob"]["spec"]
    assert job["concurrencyPolicy"] == "Forbid"
    pod = job["jobTemplate"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    _gc_arguments_parse(container["args"])
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    config = yaml.safe_load(by_kind["ConfigMap"]["data"]["config.yaml"])
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        settings = load(argparse.Namespace(command="gc", config=str(path)), {})
    assert settings.store.s3 is not None and settings.store.s3.bucket == config["s3-bucket"]


def test_engine_files_point_at_the_default_listen_address() -> None:
    assert json.loads((DEPLOY / "docker" / "daemon.json").read_text()) == {
        "registry-mirrors": ["http://127.0.0.1:5000"]
    }
    hosts = tomllib.loads(
        (DEPLOY / "containerd" / "certs.d" / "docker.io" / "hosts.toml").read_text()
    )
    assert hosts["host"]["http://127.0.0.1:5000"]["capabilities"] == ["pull", "resolve"]
    registries = tomllib.loads((DEPLOY / "podman" / "registries.conf").read_text())
    mirror = registries["registry"][0]["mirror"][0]
    assert mirror == {"location": "127.0.0.1:5000", "insecure": True}
    for lazy in ("stargz", "soci"):  # the lazy-pulling snapshotters' own resolvers
        resolver = tomllib.loads((DEPLOY / lazy / "config.toml").read_text())["resolver"]
        assert resolver["host"]["docker.io"]["mirrors"] == [
            {"host": "127.0.0.1:5000", "insecure": True}
        ]
    snippet = tomllib.loads((DEPLOY / "containerd" / "config.toml.snippet").read_text())
    assert (
        snippet["plugins"]["io.containerd.grpc.v1.cri"]["registry"]["config_path"]
        == "/etc/containerd/certs.d"
    )


def test_dockerfile() -> None:
    parser = DockerfileParser(path=str(ROOT / "Dockerfile"))
    stages = [i for i in parser.structure if i["instruction"] == "FROM"]
    assert all(re.fullmatch(r"python:3\.1[1-9]-slim( AS \w+)?", s["value"]) for s in stages)
    final = parser.structure[parser.structure.index(stages[-1]) :]

    def values(instruction: str) -> list[str]:
        return [i["value"] for i in final if i["instruction"] == instruction]

    user = values("USER")[-1]
    assert user.split(":")[0] not in ("0", "root")
    assert "/var/lib/registry-local" in values("VOLUME")[0]
    healthcheck = values("HEALTHCHECK")[0]
    assert '"registry-local", "check"' in healthcheck
    env = parser.envs
    assert env["REGISTRY_LOCAL_LISTEN"] == "127.0.0.1:5000"
    for key in env:
        if key.startswith("REGISTRY_LOCAL_"):
            assert any(o.env == key for o in OPTIONS), key  # each is a real option
    assert values("ENTRYPOINT") == ['["registry-local"]']
    for instruction in (i for i in parser.structure if i["instruction"] == "COPY"):
        words = instruction["value"].split()
        if words[0].startswith("--from"):
            continue  # from another stage, not from the build context
        for source in words[:-1]:
            assert (ROOT / source).exists(), source


async def test_the_check_command_probes_a_running_server(tmp_path: Path) -> None:
    async with serving("--fs-root", str(tmp_path), "--cache-dir", str(tmp_path / "cache")) as (
        url,
        _,
    ):
        listen = url.removeprefix("http://")
        for extra in ([], ["--ready"]):
            result = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "registry_local", "check", "--listen", listen, *extra],
                capture_output=True,
                text=True,
            )
            assert result.returncode == 0, result.stderr
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "registry_local", "check", "--listen", listen],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "refused" in result.stderr


async def test_check_speaks_tls_and_knows_registry_local_from_other_programs(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    tls = ("--tls-cert", str(cert), "--tls-key", str(key))
    async with serving(
        "--fs-root", str(tmp_path), "--cache-dir", str(tmp_path / "cache"), *tls
    ) as (url, _):
        listen = url.removeprefix("http://")
        code, _, err = await run_cli("check", "--listen", listen, *tls, env=sealed_env())
        assert code == 0, err

    # Another program answering 200 on the port is not a healthy registry-local.
    async def anything(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/healthz", anything)
    runner, other = await serve_app(app)
    try:
        code, _, err = await run_cli(
            "check", "--listen", other.removeprefix("http://"), env=sealed_env()
        )
    finally:
        await runner.cleanup()
    assert code == 1 and "something else answers there" in err


def test_configuration_reference_is_generated_from_the_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable in ("XDG_CACHE_HOME", "XDG_DATA_HOME"):
        monkeypatch.delenv(variable, raising=False)
    text = (ROOT / "docs" / "configuration.md").read_text()
    block = text.split("<!-- generated: begin -->\n", 1)[1].split("<!-- generated: end -->")[0]
    assert block == reference_markdown()


def test_readme_quick_start_is_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in quick.strip().splitlines()]
    assert commands == ["scripts/quickstart", "scripts/test"]
    for script in commands:
        assert (ROOT / script).stat().st_mode & 0o111


async def test_check_ready_says_why_not(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # an S3 endpoint nobody answers
    args = ("--s3-bucket", "b", "--s3-endpoint", closed, "--cache-dir", str(tmp_path / "c"))
    async with serving(*args) as (url, _):
        listen = url.removeprefix("http://")
        code, _, err = await run_cli("check", "--listen", listen, "--ready", env=sealed_env())
    assert code == 1 and "not ready (store: backing store unreachable" in err


# Placeholders and quoted values in a documented message, and parts the code
# takes from elsewhere (an OS error, S3's own code in parentheses).
_VARIABLE = re.compile(r"\.\.\.|s3://\S+|\b[A-Z][A-Z_:]+\b|\"[^\"]*\"|'[^']*'|\([^)]*\)|: ")
_SYSTEM_WORDS = {os.strerror(n) for n in range(1, 134)} | {"Name or service not known"}


def test_every_message_troubleshooting_quotes_is_one_the_code_says() -> None:
    """docs/troubleshooting.md's tables quote what operators see: each quoted
    message's fixed words must still be in the code, so the table cannot drift."""
    source = "\n".join(p.read_text() for p in (ROOT / "registry_local").rglob("*.py"))
    doc = (ROOT / "docs" / "troubleshooting.md").read_text()
    quoted = [
        message
        for row in re.findall(r"^\| (`.+?`(?: / `.+?`)*) \|", doc, re.MULTILINE)
        for message in re.findall(r"`([^`]+)`", row)
    ]
    assert len(quoted) >= 15
    for message in quoted:
        for words in _VARIABLE.split(message):
            words = words.strip(" :")
            if len(words) >= 4 and words not in _SYSTEM_WORDS:
                assert words in source, f"{message!r}: {words!r} is not in the code"
