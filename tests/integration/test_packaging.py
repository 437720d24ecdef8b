"""Acceptance of the packaged install (issue #10, item 1): build the wheel, install it into a fresh
venv, run `signalgate run` from a directory outside the repository, and get the loader and the
shim with the repository's bytes; then remove the loader from the installed package and see
start-up stop with one line instead of a silent 404 behind a green /healthz.

The wheel is built from a copy of the Docker build context (the files the Dockerfile's build
stage copies), so the build leaves nothing in the checkout and the image's build is covered too.
Dependencies come from pip's cache (or the package index, which CI reaches).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from deployfiles import context_sources, dockerignore_patterns, dockerignored, stages

from gateway.web.static import PLACEHOLDER, collect_reference

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]  # the first test builds and installs

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "sg_pkg_test_key_0123456789"
STARTUP_TIMEOUT = 30.0


def copy_build_context(destination: Path) -> None:
    """Copy what the Dockerfile's build stage copies, minus what .dockerignore leaves out, so
    this wheel is built from the same files as the image's."""
    patterns = dockerignore_patterns()
    for source in context_sources(stages((ROOT / "Dockerfile").read_text())[0]):
        path = ROOT / source
        for file in [path] if path.is_file() else sorted(path.rglob("*")):
            rel = file.relative_to(ROOT)
            if file.is_file() and not dockerignored(rel.as_posix(), patterns):
                (destination / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, destination / rel)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env() -> dict[str, str]:
    """This environment without SIGNALGATE* overrides, PYTHONPATH or an active venv."""
    hidden = ("SIGNALGATE", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    return {k: v for k, v in os.environ.items() if not k.startswith(hidden)}


def sh(*args: str | Path, cwd: Path, timeout: float = 120) -> str:
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a fresh venv with only the built wheel (and its dependencies) installed."""
    base = tmp_path_factory.mktemp("pkg")
    source = base / "src"
    copy_build_context(source)
    wheels = base / "wheels"
    sh(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, source, cwd=base)
    (wheel,) = wheels.glob("signalgate-*.whl")
    venv = base / "venv"
    sh(sys.executable, "-m", "venv", venv, cwd=base)
    sh(venv / "bin" / "python", "-m", "pip", "install", "-q", wheel, cwd=base, timeout=300)
    return venv


def write_config(folder: Path, port: int) -> Path:
    path = folder / "signalgate.toml"
    path.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n'
        '[storage]\npath = "data/signalgate.db"\n'
        f'[[sites]]\nid = "shop"\napi_keys = ["{API_KEY}"]\n'
        'loader_path = "/t/sg.js"\ncollect_path = "/t/e"\nshim_path = "/t/i.js"\n'
        '[sites.destinations.meta]\npixel_id = "1234567890"\naccess_token = "token"\n'
        'api_base = "http://127.0.0.1:9"\n'
    )
    return path


def get(url: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Accept-Encoding": "identity"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return int(answer.status), answer.read()


def wait_listening(proc: subprocess.Popen[str], url: str) -> None:
    """Poll /healthz until it answers, the process exits, or the deadline passes."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"signalgate exited {proc.returncode}:\n{out}\n{err}")
        try:
            if get(url + "/healthz")[0] == 200:
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"signalgate did not answer /healthz within {STARTUP_TIMEOUT}s")


def test_installed_wheel_serves_the_repository_assets(installed: Path, tmp_path: Path) -> None:
    site_packages = sh(
        installed / "bin" / "python",
        "-c",
        "import gateway, pathlib; print(pathlib.Path(gateway.__file__).parent)",
        cwd=tmp_path,
    ).strip()
    assert Path(site_packages).is_relative_to(installed), "the venv imported the checkout"
    port = free_port()
    config = write_config(tmp_path, port)
    proc = subprocess.Popen(
        [str(installed / "bin" / "signalgate"), "run", "--config", str(config)],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_listening(proc, url)
        loader = (ROOT / "static_js" / "loader.js").read_bytes()
        fill = collect_reference("/t/sg.js", "/t/e").encode()
        assert fill == b"e"  # relative to the loader: works behind a path prefix
        assert get(url + "/t/sg.js") == (200, loader.replace(PLACEHOLDER.encode(), fill))
        assert get(url + "/t/i.js") == (200, (ROOT / "static_js" / "shim.js").read_bytes())
        health = subprocess.run(
            [str(installed / "bin" / "signalgate"), "healthcheck", "--config", str(config)],
            cwd=tmp_path,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert (health.returncode, health.stderr) == (0, "")
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert (tmp_path / "data" / "signalgate.db").exists(), "store not under the config's folder"


def test_installed_wheel_without_its_loader_refuses_to_start(
    installed: Path, tmp_path: Path
) -> None:
    site_packages = next(installed.glob("lib/python3*/site-packages"))
    loader = site_packages / "gateway" / "static_js" / "loader.js"
    kept = tmp_path / "loader.js.kept"
    shutil.move(loader, kept)
    config = write_config(tmp_path, free_port())
    try:
        done = subprocess.run(
            [str(installed / "bin" / "signalgate"), "run", "--config", str(config)],
            cwd=tmp_path,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        shutil.move(kept, loader)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "signalgate: loader asset gateway/static_js/loader.js is missing from the installed package"
    ]
