"""The Helm chart (deploy/helm/registry-local), with the real helm: linted,
rendered with its defaults and with every option on, each object checked
against the Kubernetes schema, the config it renders read by `serve`'s own
loader, its access policy by the policy loader and by a running `serve` as
the kubelet updates it, its alert rules by promtool, and its containerd mirror
file used by a real containerd pulling from several registries through one
`_default` entry."""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tomllib
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import boto3
import kubernetes_validate
import pytest
import yaml

from registry_local.access.policy import ACTIONS, Policy
from registry_local.config import AccessSettings, Settings, StoreSettings, load
from registry_local.transfer.imagebuild import Image, build_image

from .support.engines import containerd_snapshot_file, run_containerd
from .support.fleet import until
from .support.harness import fetch, s3_settings, seed
from .support.processes import (
    free_port,
    in_thread,
    require_tool,
    run_docker_registry,
    sealed_env,
    serving,
)
from .support.s3proxy import S3Proxy

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "registry-local"
ALL_ON = CHART / "ci" / "all-values.yaml"
PLAIN = ROOT / "deploy" / "kubernetes" / "registry-local.yaml"
KUBERNETES = "1.30.0"
# Kinds of other projects' CRDs: no schema in kubernetes-validate, checked below.
CUSTOM = {"ServiceMonitor", "PrometheusRule", "Certificate"}


def helm(*args: str) -> str:
    result = subprocess.run(
        [require_tool("helm"), *args],
        capture_output=True,
        text=True,
        env=sealed_env(),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(*values: Path, release: str = "registry-local") -> list[dict[str, Any]]:
    flags = [f for path in values for f in ("-f", str(path))]
    text = helm("template", release, str(CHART), "--namespace", "registry-local", *flags)
    return [d for d in yaml.safe_load_all(text) if d]


def one(documents: list[dict[str, Any]], kind: str, suffix: str = "") -> dict[str, Any]:
    [found] = [d for d in documents if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
    return found


@pytest.fixture(scope="module")
def defaults() -> list[dict[str, Any]]:
    return render()


@pytest.fixture(scope="module")
def all_on() -> list[dict[str, Any]]:
    return render(ALL_ON)


def _rule(**changes: object) -> dict[str, object]:
    """A rule of the access policy, as the chart's values take it."""
    return {"subjects": ["anonymous"], "repositories": ["public/**"], "actions": ["pull"]} | changes


def test_the_chart_lints_strictly_and_its_schema_refuses_bad_values(tmp_path: Path) -> None:
    helm("lint", "--strict", str(CHART))
    helm("lint", "--strict", str(CHART), "-f", str(ALL_ON))
    admins = {"name": "tenants-access", "key": "policy.yaml"}
    bad: dict[str, Any]
    for bad in (
        {"port": "5000"},
        {"upstreams": [{"match": "*", "url": "https://registry-1.docker.io"}]},
        {"fleet": {"tls": {"secretName": "x", "serverName": "y", "issuer": "z"}}},
        {"upstreams": [{"match": "ghcr.io", "url": "https://ghcr.io", "authorizeAtOrigin": "yes"}]},
        {"access": {"policy": {"rule": []}}},  # a policy without `rules`
        {"access": {"policy": {"rules": [{"subjects": ["anonymous"], "actions": ["pull"]}]}}},
        {"access": {"policy": {"rules": [_rule(actions=["read"])]}}},
        {"access": {"policy": {"rules": [_rule()]}, "existingConfigMap": admins}},
        {"access": {"cacheTTL": "5 minutes"}},
    ):
        values = tmp_path / "bad.yaml"
        values.write_text(yaml.safe_dump(bad))
        result = subprocess.run(
            [require_tool("helm"), "lint", "--strict", str(CHART), "-f", str(values)],
            capture_output=True,
            text=True,
            env=sealed_env(),
        )
        assert result.returncode != 0 and "schema" in result.stdout + result.stderr, bad


def test_the_schema_knows_the_policys_actions() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    actions = schema["definitions"]["policy"]["properties"]["rules"]["items"]["properties"]
    one_or_list = actions["actions"]["anyOf"]
    assert one_or_list[0]["enum"] == one_or_list[1]["items"]["enum"] == list(ACTIONS)


def test_every_rendered_object_passes_the_kubernetes_schema(
    defaults: list[dict[str, Any]], all_on: list[dict[str, Any]]
) -> None:
    assert {d["kind"] for d in defaults} == {"ServiceAccount", "ConfigMap", "DaemonSet", "CronJob"}
    assert {d["kind"] for d in all_on} == {
        "ServiceAccount",
        "ConfigMap",
        "DaemonSet",
        "CronJob",
        "Service",
        *CUSTOM,
    }
    for document in defaults + all_on:
        if document["kind"] not in CUSTOM:
            kubernetes_validate.validate(document, KUBERNETES, strict=True)
    # Objects of other projects' CRDs: the fields their operators read.
    monitor = one(all_on, "ServiceMonitor")
    service = one(all_on, "Service")
    selected = monitor["spec"]["selector"]["matchLabels"]
    assert selected.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    certificate = one(all_on, "Certificate")
    assert certificate["spec"]["secretName"] == "registry-local-peer-tls"
    assert certificate["spec"]["dnsNames"] == ["peers.registry-local.internal"]
    assert certificate["spec"]["issuerRef"]["kind"] == "ClusterIssuer"


def _pod_files(daemonset: dict[str, Any]) -> dict[str, str]:
    """Each file the registry-local container sees from a projected Secret or
    from a ConfigMap's listed items: its path in the pod -> the Secret or
    ConfigMap and the key it comes from."""
    spec = daemonset["spec"]["template"]["spec"]
    container = next(c for c in spec["containers"] if c["name"] == "registry-local")
    volumes = {v["name"]: v for v in spec["volumes"]}
    files = {}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        sources = [s["secret"] for s in volume.get("projected", {}).get("sources", [])]
        sources += [volume["configMap"]] if "configMap" in volume else []
        for source in sources:
            for item in source.get("items", []):
                files[f"{mount['mountPath']}/{item['path']}"] = f"{source['name']}/{item['key']}"
    return files


_CONTENT = {"token": "fleet-secret\n", "credentials": "puller:s3cret\n", "config.json": "{}"}


def _content(documents: list[dict[str, Any]], source: str) -> str:
    """What a mounted file holds: a rendered ConfigMap's key, or a stand-in for
    a Secret's."""
    name, key = source.split("/", 1)
    for document in documents:
        if document["kind"] == "ConfigMap" and document["metadata"]["name"] == name:
            return str(document["data"][key])
    return _CONTENT.get(Path(key).name, "-----BEGIN CERTIFICATE-----\n")


def _load_as_the_pod(documents: list[dict[str, Any]], work: Path) -> Settings:
    """The ConfigMap's config.yaml read by `serve`'s loader, with the files it
    names taken from where the pod has them (each must be one it mounts), and
    the environment the pod sets."""
    config = yaml.safe_load(one(documents, "ConfigMap", "local")["data"]["config.yaml"])
    daemonset = one(documents, "DaemonSet")
    files = _pod_files(daemonset)

    def local(path: str) -> str:
        assert path in files, f"{path} is not a file the pod mounts"
        copy = work / path.lstrip("/")
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(_content(documents, files[path]))
        return str(copy)

    for key in ("peer-token-file", "peer-tls-cert", "peer-tls-key", "peer-ca", "access-policy"):
        if key in config:
            config[key] = local(config[key])
    for entry in config.get("upstreams", []):
        for key in ("credentials_file", "auth_file"):
            if key in entry:
                entry[key] = local(entry[key])
    container = daemonset["spec"]["template"]["spec"]["containers"][0]
    env = {
        e["name"]: e["value"].replace("$(NODE_IP)", "10.1.2.3")
        for e in container.get("env", [])
        if "value" in e
    }
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return load(argparse.Namespace(command="serve", config=str(path)), env)


def test_the_rendered_config_is_one_serve_takes(
    defaults: list[dict[str, Any]], all_on: list[dict[str, Any]], tmp_path: Path
) -> None:
    settings = _load_as_the_pod(defaults, tmp_path / "defaults")
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 5000)
    assert [(o.match, o.url) for o in settings.store.upstreams] == [
        ("docker.io", "https://registry-1.docker.io")
    ]
    assert settings.store.bucket_registries == ()  # other registries: 404 at once
    assert settings.fleet is not None and settings.fleet.advertise_url == "https://10.1.2.3:5002"
    assert settings.access == AccessSettings()  # no policy; origins do not decide
    assert not any(o.authorize_at_origin for o in settings.store.upstreams)

    settings = _load_as_the_pod(all_on, tmp_path / "all-on")
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 5050)
    assert settings.server.metrics_listen == ("0.0.0.0", 5051)
    origins = {o.match: o for o in settings.store.upstreams}
    assert list(origins) == [
        "docker.io",
        "ghcr.io",
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
        "quay.io",
    ]
    assert (origins["docker.io"].username, origins["docker.io"].password) == ("puller", "s3cret")
    assert origins["ghcr.io"].auth_file is not None
    assert origins["123456789012.dkr.ecr.eu-west-1.amazonaws.com"].ecr
    assert settings.store.bucket_registries == ("images.example.com",)
    assert settings.store.s3 is not None and settings.store.s3.endpoint == "https://s3.example.com"
    assert settings.store.max_concurrency == 64  # from extraConfig
    assert settings.fleet is not None and settings.fleet.tls_name == "peers.registry-local.internal"
    assert settings.fleet.advertise_url == "https://10.1.2.3:5052"
    deciding = {match for match, origin in origins.items() if origin.authorize_at_origin}
    assert deciding == {"ghcr.io", "123456789012.dkr.ecr.eu-west-1.amazonaws.com"}
    assert (settings.access.decision_ttl, settings.access.offline_grace) == (120, 900)
    # The policy file the pod mounts is one the loader takes, rule for rule.
    assert settings.access.policy is not None
    policy = Policy.read(settings.access.policy)
    assert policy.allows(None, "public/team/app", "pull")
    assert policy.allows(None, "tools/jq", "pull")
    assert not policy.allows(None, "private/app", "pull")
    assert not policy.allows(None, "public/team/app", "push")
    daemonset = one(all_on, "DaemonSet")
    pod = daemonset["spec"]["template"]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "5051"
    assert {"hub-pull/credentials", "ghcr-pull/.dockerconfigjson"} <= set(
        _pod_files(daemonset).values()
    )
    container = pod["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "registry-local-s3"}}]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "metrics": 5051,
        "peers": 5052,
    }
    cronjob = one(all_on, "CronJob")["spec"]
    gc = cronjob["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert gc["args"][-4:] == ["--unused-for", "14d", "--grace", "2h"]


def test_a_new_access_policy_rolls_no_pod(all_on: list[dict[str, Any]], tmp_path: Path) -> None:
    """The policy is its own ConfigMap, outside the pods' checksum: the running
    pods read the changed file (a ConfigMap volume without subPath, which the
    kubelet updates) rather than being replaced."""
    values = yaml.safe_load(ALL_ON.read_text())
    values["access"]["policy"]["rules"].append(_rule(repositories=["more/*"]))
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(values))
    again = render(changed)
    policies = [one(d, "ConfigMap", "-access")["data"]["policy.yaml"] for d in (all_on, again)]
    assert policies[0] != policies[1]
    pods = [one(d, "DaemonSet")["spec"]["template"] for d in (all_on, again)]
    assert pods[0] == pods[1]
    container = pods[0]["spec"]["containers"][0]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "access-policy")
    assert "subPath" not in mount and mount["readOnly"]


def _publish(mounted: Path, data: dict[str, str], generation: int) -> None:
    """Update a ConfigMap volume as the kubelet does: the files in a new
    directory, `..data` switched to it by a rename, each key a symlink through
    `..data`."""
    version = mounted / f"..generation-{generation}"
    version.mkdir(parents=True)
    for key, text in data.items():
        (version / key).write_text(text)
    switch = mounted / "..data_tmp"
    switch.symlink_to(version.name)
    switch.replace(mounted / "..data")
    for key in data:
        if not (mounted / key).is_symlink():
            (mounted / key).symlink_to(f"..data/{key}")


async def test_a_running_cache_reads_the_updated_policy_configmap(tmp_path: Path) -> None:
    """The chart's policy ConfigMap, updated in place as the kubelet updates a
    mounted one, changes what a running `serve` allows: no restart."""
    values = tmp_path / "values.yaml"
    first = {"policy": {"rules": [_rule(repositories=["public/*"])]}}
    values.write_text(yaml.safe_dump({"access": first, "fleet": {"enabled": False}}))
    documents = render(values)
    config = yaml.safe_load(one(documents, "ConfigMap", "local")["data"]["config.yaml"])
    mounted = tmp_path / "mounted"
    assert config["access-policy"] == "/etc/registry-local-access/policy.yaml"
    _publish(mounted, one(documents, "ConfigMap", "-access")["data"], 1)
    (tmp_path / "store").mkdir()
    store = ("--fs-root", str(tmp_path / "store"), "--cache-dir", str(tmp_path / "cache"))
    policy = ("--access-policy", str(mounted / "policy.yaml"))
    async with serving(*store, *policy) as (url, _):

        async def anonymous(repository: str) -> int:
            status, _, _ = await fetch(f"{url}/v2/{repository}/tags/list", accept=())
            return status

        assert await anonymous("public/app") == 404  # allowed; there is no such repository
        assert await anonymous("tools/jq") == 401
        widened = {"rules": [*first["policy"]["rules"], _rule(repositories=["tools/*"])]}
        values.write_text(yaml.safe_dump({"access": {"policy": widened}}))
        rendered = await asyncio.to_thread(render, values)  # helm runs off the loop
        _publish(mounted, one(rendered, "ConfigMap", "-access")["data"], 2)

        async def allowed() -> float:
            return float(await anonymous("tools/jq") == 404)

        await until(allowed, 1)  # the policy file is looked at every second
        assert await anonymous("public/app") == 404


def test_an_access_policy_of_the_cluster_admins(tmp_path: Path) -> None:
    """access.existingConfigMap: the pod mounts that ConfigMap's key as the
    policy file, and the chart renders no policy of its own."""
    values = tmp_path / "values.yaml"
    admins = {"name": "tenants-access", "key": "rules.yaml"}
    values.write_text(yaml.safe_dump({"access": {"existingConfigMap": admins}}))
    documents = render(values)
    assert not [d for d in documents if d["metadata"]["name"].endswith("-access")]
    config = yaml.safe_load(one(documents, "ConfigMap", "local")["data"]["config.yaml"])
    files = _pod_files(one(documents, "DaemonSet"))
    assert files[config["access-policy"]] == "tenants-access/rules.yaml"


def test_the_rules_and_the_dashboard_are_the_one_copy(
    all_on: list[dict[str, Any]], tmp_path: Path
) -> None:
    rule = one(all_on, "PrometheusRule")
    alerts = yaml.safe_load((CHART / "files" / "alerts.yml").read_text())
    assert rule["spec"] == alerts
    rendered = tmp_path / "rules.yml"
    rendered.write_text(yaml.safe_dump(rule["spec"]))
    promtool = require_tool("promtool")
    result = subprocess.run(
        [promtool, "check", "rules", str(rendered)], capture_output=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    dashboard = one(all_on, "ConfigMap", "-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["registry-local.json"]) == json.loads(
        (CHART / "files" / "registry-local.json").read_text()
    )


def test_the_plain_manifest_is_the_chart_rendered_with_its_defaults() -> None:
    """deploy/kubernetes/registry-local.yaml is `helm template` of the defaults
    (scripts/render-kubernetes writes it)."""
    text = helm("template", "registry-local", str(CHART), "--namespace", "registry-local")
    plain = PLAIN.read_text()
    assert plain.endswith(text), "deploy/kubernetes is stale: run scripts/render-kubernetes"
    assert all(line.startswith("#") for line in plain.removesuffix(text).splitlines())


def _write_hosts(documents: list[dict[str, Any]], certs: Path, work: Path) -> None:
    """Run the init container's own program on this machine: the ConfigMap's
    files as the pod mounts them, into `certs` as the node's certs.d."""
    hosts = one(documents, "ConfigMap", "-containerd-hosts")["data"]
    mounted = work / "hosts-configmap"
    mounted.mkdir(parents=True)
    (mounted / "..data").mkdir()  # what a ConfigMap volume also holds
    for name, text in hosts.items():
        (mounted / name).write_text(text)
    spec = one(documents, "DaemonSet")["spec"]["template"]["spec"]
    init = next(c for c in spec["initContainers"] if c["name"] == "containerd-hosts")
    program, source, target = init["command"][2:]
    mounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
    assert (source, target) == (mounts["containerd-hosts"], mounts["certs-d"])
    subprocess.run([sys.executable, "-c", program, str(mounted), str(certs)], check=True)


def test_the_init_container_writes_containerd_hosts_files(
    all_on: list[dict[str, Any]], tmp_path: Path
) -> None:
    certs = tmp_path / "certs.d"
    (certs / "docker.io").mkdir(parents=True)
    (certs / "docker.io" / "hosts.toml").write_text("old")
    _write_hosts(all_on, certs, tmp_path)
    written = {p.parent.name: tomllib.loads(p.read_text()) for p in certs.glob("*/hosts.toml")}
    assert set(written) == {"_default", "docker.io", "ghcr.io"}
    assert "server" not in written["_default"]  # the image's own registry is the fallback
    assert written["docker.io"]["server"] == "https://registry-1.docker.io"
    assert written["ghcr.io"]["server"] == "https://ghcr.io"
    for hosts in written.values():
        assert hosts["host"] == {"http://127.0.0.1:5050": {"capabilities": ["pull", "resolve"]}}
    assert not list(certs.glob("*/.hosts.toml*"))  # written whole, renamed into place


def _small_image(text: str) -> Image:
    return build_image([{"hello.txt": f"{text}\n".encode()}], cmd=("/bin/cat", "/hello.txt"))


@pytest.fixture
async def origins(tmp_path: Path) -> AsyncIterator[list[tuple[str, Path]]]:
    """Three CNCF registries on directories: two origins and one registry the
    cache is not told about. Yields (url, directory) of each."""
    async with AsyncExitStack() as stack:
        found: list[tuple[str, Path]] = []
        for name in ("a", "b", "c"):
            root = tmp_path / f"registry-{name}"
            work = tmp_path / f"work-{name}"
            work.mkdir()
            url = await stack.enter_async_context(run_docker_registry(work, fs_root=root))
            found.append((url, root))
        yield found


async def test_containerd_pulls_every_registry_through_one_default_entry(
    tmp_path: Path, moto: str, origins: list[tuple[str, Path]]
) -> None:
    """One `_default` hosts.toml (rendered by the chart, written by its init
    container's program) sends every registry to registry-local: two registries
    with an origin are served through their origins, one whose images are in the
    bucket (pushed) from the bucket, and one it does not serve is answered 404
    without asking S3, so containerd pulls from that registry itself."""
    ctr = require_tool("ctr")
    bucket = f"helm-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=moto, region_name="us-east-1").create_bucket(Bucket=bucket)
    (url_a, root_a), (url_b, root_b), (url_c, root_c) = origins
    images = {ref: _small_image(ref) for ref in ("a", "b", "pushed", "direct")}
    # Names differ between the origins: the bucket keeps a repository by its name
    # alone, so two registries' team/app:v1 would share one tag (docs/install.md).
    await seed(StoreSettings(s3=None, fs_root=root_a), "team/app-a", "v1", images["a"])
    await seed(StoreSettings(s3=None, fs_root=root_b), "team/app-b", "v1", images["b"])
    await seed(StoreSettings(s3=None, fs_root=root_c), "team/direct", "v1", images["direct"])
    await seed(s3_settings(moto, bucket), "team/pushed", "v1", images["pushed"])
    proxy = await S3Proxy(moto).start()  # sees every request the cache makes of S3
    values = {
        "port": 5999,
        "s3": {"bucket": bucket, "region": "us-east-1", "endpoint": proxy.url},
        "upstreams": [{"match": "a.test", "url": url_a}, {"match": "b.test", "url": url_b}],
        "bucketRegistries": ["images.test"],
        "fleet": {"enabled": False},
        "containerd": {"configureHosts": True},
    }
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    documents = render(tmp_path / "values.yaml")
    config = tmp_path / "config.yaml"
    config.write_text(one(documents, "ConfigMap", "local")["data"]["config.yaml"])
    flags = ("--metrics-listen", f"127.0.0.1:{free_port()}", "--cache-dir", str(tmp_path / "c"))
    try:
        async with serving("--config", str(config), *flags) as (url, _):
            mirror = url.removeprefix("http://")
            async with in_thread(run_containerd(mirror, tmp_path)) as (socket, hosts):
                for entry in hosts.iterdir():  # only what the chart writes
                    (entry / "hosts.toml").unlink()
                    entry.rmdir()
                _write_hosts(documents, hosts, tmp_path)
                default = hosts / "_default" / "hosts.toml"
                default.write_text(default.read_text().replace("127.0.0.1:5999", mirror))

                async def pull(reference: str) -> None:
                    result = await asyncio.to_thread(
                        subprocess.run,
                        [
                            *(ctr, "--address", str(socket), "images", "pull", "--plain-http"),
                            *("--hosts-dir", str(hosts), "--snapshotter", "native", reference),
                        ],
                        env=sealed_env(),
                        capture_output=True,
                        text=True,
                        timeout=300,
                    )
                    assert result.returncode == 0, result.stderr

                # Their own hosts (a.test, images.test) lead nowhere: only the cache can answer.
                await pull("a.test/team/app-a:v1")
                await pull("b.test/team/app-b:v1")
                await pull("images.test/team/pushed:v1")
                direct = f"{url_c.removeprefix('http://')}/team/direct:v1"
                await pull(direct)
                files = containerd_snapshot_file(socket, "hello.txt")
                assert sorted(f.read_text() for f in files) == sorted(f"{ref}\n" for ref in images)
            # The registry it does not serve: refused by name, S3 never asked.
            status, _, body = await fetch(
                f"{url}/v2/team/direct/manifests/v1?ns={direct.split('/')[0]}"
            )
            assert status == 404 and json.loads(body)["errors"][0]["code"] == "NAME_UNKNOWN"
            assert not [r for r in proxy.requests if "team/direct" in r.key]
            # The origins' images were written through to the bucket.
            assert [r for r in proxy.requests if r.method == "PUT" and "team/app-b/" in r.key]
    finally:
        await proxy.close()


def test_the_plain_default_mirror_file_is_the_charts(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"containerd": {"configureHosts": True}}))
    rendered = render(values)
    text = one(rendered, "ConfigMap", "-containerd-hosts")["data"]["_default"]
    plain = (ROOT / "deploy" / "containerd" / "certs.d" / "_default" / "hosts.toml").read_text()
    assert tomllib.loads(plain) == tomllib.loads(text)
