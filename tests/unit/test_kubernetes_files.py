"""deploy/kubernetes/, read from the files (no cluster here): every manifest parses, the
kustomization lists them all, the ConfigMap's signalgate.toml is a valid PostgreSQL config once
the Deployment's environment (filled from the Secrets' placeholders) is applied, every
`env:NAME` it reads is provided from a Secret key that exists, the probes and ports agree with
the config and the Service, the pod runs as the image's non-root user and the grace period
covers the gateway's own shutdown grace."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from deployfiles import ROOT, stages

from gateway.config import Config, ConfigError, parse

K8S = ROOT / "deploy" / "kubernetes"
CONFIG_DIR = "/etc/signalgate"
CONFIG_FILE = f"{CONFIG_DIR}/signalgate.toml"
SHUTDOWN_MARGIN = 5.0
"""Seconds the kubelet must wait past the gateway's own grace before its SIGKILL."""


def documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert isinstance(doc, dict), path
            docs.append(doc | {"__file__": path.name})
    return docs


def only(kind: str) -> dict[str, Any]:
    (doc,) = [d for d in documents() if d["kind"] == kind]
    return doc


def secrets() -> dict[str, dict[str, str]]:
    return {
        d["metadata"]["name"]: dict(d["stringData"]) for d in documents() if d["kind"] == "Secret"
    }


def container() -> dict[str, Any]:
    (c,) = only("Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(c)


def pod_spec() -> dict[str, Any]:
    return dict(only("Deployment")["spec"]["template"]["spec"])


def toml_text() -> str:
    return str(only("ConfigMap")["data"]["signalgate.toml"])


def env_refs(node: Any) -> Iterator[str]:
    """Every NAME of an `env:NAME` secret in a parsed TOML document."""
    if isinstance(node, dict):
        for value in node.values():
            yield from env_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from env_refs(value)
    elif isinstance(node, str) and node.startswith("env:"):
        yield node.removeprefix("env:")


def deployment_environ() -> dict[str, str]:
    """The container's environment as the kubelet would set it from the Secrets."""
    found = secrets()
    environ = {}
    for var in container()["env"]:
        ref = var["valueFrom"]["secretKeyRef"]
        assert ref["name"] in found, f"{var['name']}: no Secret {ref['name']}"
        assert ref["key"] in found[ref["name"]], f"{var['name']}: no key {ref['key']}"
        environ[var["name"]] = found[ref["name"]][ref["key"]]
    return environ


def config(tmp_path: Path) -> Config:
    return parse(tomllib.loads(toml_text()), deployment_environ(), tmp_path)


def port_of(name_or_number: Any) -> int:
    """A probe's or Service's container port: a number, or the name of a container port."""
    if isinstance(name_or_number, int):
        return name_or_number
    (port,) = [p for p in container()["ports"] if p["name"] == name_or_number]
    return int(port["containerPort"])


def test_every_manifest_parses_and_the_kustomization_lists_them() -> None:
    docs = documents()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ConfigMap", "Deployment", "Kustomization", "Secret", "Secret", "Service"]
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(only("Kustomization")["resources"]) == files


def test_the_configmap_is_a_valid_postgres_config(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    assert cfg.storage.backend == "postgres"
    assert cfg.storage.dsn is not None
    assert cfg.server.cookie_secret is not None  # shared by every replica
    assert cfg.server.host == "0.0.0.0"
    assert cfg.sites
    assert cfg.proxy_networks, "behind a load balancer: trusted_proxies must be set"


def test_every_env_secret_the_config_reads_is_provided() -> None:
    wanted = set(env_refs(tomllib.loads(toml_text())))
    assert {"SIGNALGATE_PG_DSN", "SIGNALGATE_COOKIE_SECRET"} <= wanted
    provided = deployment_environ()
    assert wanted <= set(provided), f"not provided: {sorted(wanted - set(provided))}"
    assert "file:" not in toml_text()  # nothing read from a file the pod does not mount


def test_secrets_are_placeholders_only() -> None:
    for name, values in secrets().items():
        for key, value in values.items():
            assert "CHANGE-ME" in value, f"{name}.{key} looks like a real value"


def test_a_missing_secret_key_would_fail_the_config(tmp_path: Path) -> None:
    """The check above is meaningful: without the DSN the config is refused."""
    environ = deployment_environ()
    del environ["SIGNALGATE_PG_DSN"]
    with pytest.raises(ConfigError, match="SIGNALGATE_PG_DSN"):
        parse(tomllib.loads(toml_text()), environ, tmp_path)


def test_the_config_file_comes_from_the_configmap_where_the_image_reads_it() -> None:
    c = container()
    assert c["args"] == ["run", "--config", CONFIG_FILE]
    final = stages((ROOT / "Dockerfile").read_text())[-1]
    assert final.all("CMD")[-1].words() == c["args"]  # the image's own default, spelled out
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "config"]
    assert mount["mountPath"] == CONFIG_DIR
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod_spec()["volumes"] if v["name"] == "config"]
    assert volume["configMap"]["name"] == only("ConfigMap")["metadata"]["name"]
    assert volume["configMap"]["items"] == [{"key": "signalgate.toml", "path": "signalgate.toml"}]


def test_probes_and_ports_match_the_config(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    c = container()
    ready, alive = c["readinessProbe"]["httpGet"], c["livenessProbe"]["httpGet"]
    assert ready["path"] == "/readyz"
    assert alive["path"] == "/healthz"
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    for probe in (ready, alive, c["startupProbe"]["httpGet"]):
        assert port_of(probe["port"]) == cfg.server.port
    service = only("Service")
    (port,) = service["spec"]["ports"]
    assert port_of(port["targetPort"]) == cfg.server.port
    labels = only("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert only("Deployment")["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_grace_period_covers_the_gateways_shutdown(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    c = container()
    pre_stop = 0.0
    command = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    if command:
        assert command[0] == "sleep"
        pre_stop = float(command[1])
    grace = pod_spec()["terminationGracePeriodSeconds"]
    assert grace >= pre_stop + cfg.server.shutdown_grace_seconds + SHUTDOWN_MARGIN


def test_replicas_non_root_and_resources() -> None:
    deployment = only("Deployment")
    assert deployment["spec"]["replicas"] >= 2
    final = stages((ROOT / "Dockerfile").read_text())[-1]
    user = final.all("USER")[-1].args.split(":")[0]
    security = pod_spec()["securityContext"]
    assert security["runAsNonRoot"] is True
    assert str(security["runAsUser"]) == user
    c = container()
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    resources = c["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]
    image = c["image"]
    assert re.fullmatch(r"[\w.\-/:]+:[\w.\-]+", image), image
    assert not image.endswith(":latest")
    # a read-only root needs writable scratch: /tmp and the image's working directory
    if c["securityContext"].get("readOnlyRootFilesystem"):
        mounted = {m["mountPath"] for m in c["volumeMounts"]}
        assert {"/tmp", "/var/lib/signalgate"} <= mounted
