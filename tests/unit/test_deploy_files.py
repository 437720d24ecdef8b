"""The Docker image and compose.yaml, read from the files (no Docker engine here): multi-stage,
pinned slim base, non-root, volumes, container defaults that the config accepts, a health check
that runs `signalgate healthcheck`, a build context that holds what the build copies, and a
compose file whose nginx config and gateway config exist and agree with each other.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from deployfiles import (
    ROOT,
    context_sources,
    dockerignore_patterns,
    dockerignored,
    stages,
)

from gateway.config import load, parse

DOCKERFILE = (ROOT / "Dockerfile").read_text()
STAGES = stages(DOCKERFILE)
FINAL = STAGES[-1]
PINNED_SLIM_PYTHON = re.compile(r"python:3\.11\.\d+-slim-(bookworm|trixie)(@sha256:[0-9a-f]{64})?")
CONFIG_FILE = "/etc/signalgate/signalgate.toml"
DATA_DIR = "/var/lib/signalgate"


def compose() -> Any:
    doc = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def service(name: str) -> Any:
    return compose()["services"][name]


class TestDockerfile:
    def test_multi_stage_build_then_slim_pinned_runtime(self) -> None:
        assert len(STAGES) >= 2
        for stage in STAGES:
            assert PINNED_SLIM_PYTHON.fullmatch(stage.base), stage.base
        builder = STAGES[0]
        assert builder.name
        assert any("pip wheel" in run.args for run in builder.all("RUN"))

    def test_runtime_installs_only_the_built_wheel(self) -> None:
        assert context_sources(FINAL) == []  # no source enters the runtime image
        copies = [c.words() for c in FINAL.all("COPY")]
        assert copies
        assert all(f"--from={STAGES[0].name}" in words for words in copies)
        installs = [r.args for r in FINAL.all("RUN") if "pip install" in r.args]
        assert len(installs) == 1
        assert re.search(r"pip install [^&]*\S+\.whl", installs[0])
        assert "-e " not in installs[0]
        assert " ." not in installs[0]

    def test_runs_as_a_non_root_user(self) -> None:
        users = FINAL.all("USER")
        assert users, "the runtime stage sets no USER"
        user = users[-1].args.split(":")[0]
        assert user not in ("root", "0")
        if user.isdigit():
            assert any(f"--uid {user}" in r.args for r in FINAL.all("RUN"))

    def test_data_and_config_volumes(self) -> None:
        volumes = [v for inst in FINAL.all("VOLUME") for v in inst.words()]
        assert DATA_DIR in volumes
        assert "/etc/signalgate" in volumes
        # the unprivileged user owns the data volume's directory
        assert any(f"chown signalgate:signalgate {DATA_DIR}" in r.args for r in FINAL.all("RUN"))

    def test_container_defaults_are_valid_config(self, tmp_path: Path) -> None:
        env = FINAL.env()
        assert env["SIGNALGATE__SERVER__HOST"] == "0.0.0.0"
        assert env["SIGNALGATE__STORAGE__PATH"].startswith(DATA_DIR + "/")
        environ = {k: v for k, v in env.items() if k.startswith("SIGNALGATE__")}
        config = parse({}, environ, tmp_path)
        assert config.server.host == "0.0.0.0"
        assert config.storage.path == f"{DATA_DIR}/signalgate.db"

    def test_healthcheck_runs_the_asset_aware_check(self) -> None:
        (check,) = FINAL.all("HEALTHCHECK")
        command = check.args.split("CMD", 1)[1].strip()
        assert command.startswith("[")  # exec form: no shell needed in the image
        assert json.loads(command) == ["signalgate", "healthcheck", "--config", CONFIG_FILE]
        assert re.search(r"--timeout=\d+s", check.args)

    def test_serves_the_config_the_healthcheck_reads(self) -> None:
        entry = FINAL.all("ENTRYPOINT")[-1].words()
        command = FINAL.all("CMD")[-1].words()
        assert entry + command == ["signalgate", "run", "--config", CONFIG_FILE]
        assert any(inst.args == "8080" for inst in FINAL.all("EXPOSE"))

    def test_build_context_holds_what_the_build_copies(self) -> None:
        patterns = dockerignore_patterns()
        sources = context_sources(STAGES[0])
        assert {"pyproject.toml", "setup.py", "README.md", "LICENSE"} <= set(sources)
        assert {"gateway", "static_js"} <= set(sources)
        for source in sources:
            path = ROOT / source
            assert path.exists(), source
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            for file in files:
                rel = file.relative_to(ROOT).as_posix()
                if "__pycache__" in rel or ".egg-info" in rel:
                    assert dockerignored(rel, patterns), rel
                else:
                    assert not dockerignored(rel, patterns), rel
        for private in (".venv/bin/python", ".git/HEAD", "data/signalgate.db", "tests/conftest.py"):
            assert dockerignored(private, patterns), private


class TestCompose:
    def test_gateway_service(self) -> None:
        gateway = service("signalgate")
        assert gateway["build"] == "."
        volumes = [str(v) for v in gateway["volumes"]]
        assert any(v.endswith(f":{CONFIG_FILE}:ro") for v in volumes)
        assert any(v.endswith(f":{DATA_DIR}") and not v.startswith(("/", ".")) for v in volumes)
        named = {v.split(":")[0] for v in volumes}
        assert named & set(compose()["volumes"])
        assert "ports" not in gateway, "only nginx is published"

    def test_default_config_file_exists_and_loads(self, tmp_path: Path) -> None:
        volumes = [str(v) for v in service("signalgate")["volumes"]]
        (mount,) = [v for v in volumes if CONFIG_FILE in v]
        default = re.fullmatch(r"\$\{SIGNALGATE_CONFIG:-(.+)\}:" + CONFIG_FILE + ":ro", mount)
        assert default, mount
        env = {k: str(v) for k, v in service("signalgate")["environment"].items()}
        env = {k: "x" * 24 if v.startswith("${") else v for k, v in env.items()}
        env.update({k: v for k, v in FINAL.env().items() if k.startswith("SIGNALGATE__")})
        config = load(ROOT / default[1], env)
        assert config.sites, "the default config serves no site"

    def test_gateway_trusts_exactly_the_nginx_container(self) -> None:
        env = service("signalgate")["environment"]
        raw = env["SIGNALGATE__SERVER__TRUSTED_PROXIES"]
        config = parse({}, {"SIGNALGATE__SERVER__TRUSTED_PROXIES": raw}, Path("."))
        nginx_ip = service("nginx")["networks"]["edge"]["ipv4_address"]
        (network,) = config.proxy_networks
        assert network.num_addresses == 1
        assert ipaddress.ip_address(nginx_ip) in network
        subnet = compose()["networks"]["edge"]["ipam"]["config"][0]["subnet"]
        assert ipaddress.ip_address(nginx_ip) in ipaddress.ip_network(subnet)

    def test_nginx_in_front_waits_for_a_healthy_gateway(self) -> None:
        nginx = service("nginx")
        image = str(nginx["image"])
        assert re.fullmatch(r"nginx:\d+\.\d+\.\d+(-[a-z]+)?", image), "pin nginx's version"
        assert nginx["depends_on"] == {"signalgate": {"condition": "service_healthy"}}
        (mount,) = [str(v) for v in nginx["volumes"]]
        host_path, target, mode = mount.split(":")
        assert (ROOT / host_path).is_file()
        assert target == "/etc/nginx/conf.d/default.conf"
        assert mode == "ro"
        conf = (ROOT / host_path).read_text()
        assert "server signalgate:8080;" in conf
        assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in conf


@pytest.mark.parametrize(
    ("path", "ignored"),
    [
        ("gateway/app.py", False),
        ("gateway/__pycache__/app.cpython-311.pyc", True),
        ("static_js/loader.js", False),
        ("tests/conftest.py", True),
        ("README.md", False),
        ("Makefile", True),
    ],
)
def test_dockerignore_reader(path: str, ignored: bool) -> None:
    assert dockerignored(path, ["*", "!gateway", "!static_js", "!README.md", "**/__pycache__"]) is (
        ignored
    )
