"""Proxy benchmark: added latency of the hit proxy, proxied hits/s, cached scripts vs nginx.

Run on demand (never in CI), on Linux with 2+ cores, ``wrk`` and ``nginx`` on PATH::

    .venv/bin/python bench/proxy.py                    # 2 s warm-up + 10 s per case
    .venv/bin/python bench/proxy.py --quick            # 1 s + 3 s per case
    .venv/bin/python bench/proxy.py --json out.json

Issue #4's acceptance item: added latency of the proxied hit (p50/p99) against direct calls to
the same local upstream, and requests/s of cached script serving against nginx serving the same
file, same run. Targets: <= 1 ms added p50 at 8 connections, >= 10,000 proxied hits/s on one
core, cached script >= 50% of nginx's requests/s.

Processes and cores (two cores are assumed): the gateway (``python -m gateway run
--no-delivery``, i.e. ``signalgate run``) and the script nginx are pinned to ``--server-cpu``
(default 0); wrk (``-t1``) and the upstreams share ``--client-cpu`` (default 1). So the direct
baseline runs wrk and the upstream on one core, while the proxied case adds the gateway on the
other core: the latency difference is the gateway's hop (its CPU time plus one extra loopback
round trip), not a contention artefact of the gateway sharing a core.

Upstreams: the hit upstream (every ``*_hits_upstream``, and the direct case) is an nginx worker
answering the vendors' hit paths with a fixed 200 like the vendors do (``/tr/``: the 1x1 GIF,
``/api/v2/pixel``: ``{"code":0}``, ``/p``: ``ok``, ``/g/collect``: 204; GET only for ``/tr/``,
which is all the cases send). An aiohttp upstream sharing wrk's core tops out at 7-9k requests/s
by itself, below the 10,000 hits/s target, so it would measure itself rather than the gateway.
The script upstream (every script ``*_upstream``) stays the fake CDN
(``gateway.sandbox.cdn.FakeCdn`` run by the ``_cdn`` mode of this file, aiohttp + uvloop, no
access log), which only serves the warm-up fetch of the script cases; the functional tests use the
same FakeCdn for hits too.

Cases (each a wrk Lua script, ``Host: track.shop.test``):

* **direct c8**: ``GET /tr/?id=1234567890&ev=PageView&eid=<n>&dl=https%3A%2F%2Fwww.shop.test%2F
  &ts=<ms>`` straight to the hit upstream, 8 connections;
* **proxied c8**: the same query on ``GET /p/m/tr`` through the gateway (forwarded to
  ``<meta_hits_upstream>/tr/`` and mirrored to the SQLite outbox), 8 connections;
* **proxied c64**: the same at 64 connections: proxied hits/s;
* **script gw**: ``GET /p/s/e.js`` (Snap alias of ``/scevent.min.js``) with ``Accept-Encoding:
  gzip`` through the gateway after a warm-up request (cache ``HIT``), 64 connections;
* **script nginx**: the same request to nginx (``worker_processes 1``, ``gzip_static on``, no
  access log) serving the very bytes the gateway serves (gzip and plain copies taken from the
  gateway's answers) from a temporary directory, 64 connections.

Every answer must be 200 (more than 0.1% other answers or socket errors fails the run, exit 1).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import http.client
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import benchservers
from benchlib import (
    MAX_BAD_FRACTION,
    child_env,
    children_cpu,
    cpu_model,
    fmt,
    free_port,
    nginx_conf,
    pinned,
    proc_times,
    run_dirs,
    wait_quiet,
    wrk_script,
)
from benchservers import run_forever, serve_app

HOST = "track.shop.test"
PIXEL_ID = "1234567890"
HIT_QUERY = "id=1234567890&ev=PageView&eid={eid}&dl=https%3A%2F%2Fwww.shop.test%2F&ts={ts}"
SCRIPT_PATH = "/p/s/e.js"
MAX_OTHER_PCT = 10.0
TARGET_ADDED_P50_MS = 1.0
TARGET_HITS_PER_S = 10_000.0
TARGET_SCRIPT_RATIO = 0.5


# -- processes ---------------------------------------------------------------------------------


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its direct children (nginx: master + worker)."""
    total = proc_times(pid)[1]
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            total += proc_times(int(child))[1]
    return total


def machine_busy() -> float:
    """Busy CPU seconds of all cores (user + nice + system + irq + softirq + steal)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/stat").read_text().splitlines():
            fields = line.split()
            if fields and fields[0] == "cpu":
                values = [int(v) for v in fields[1:9]]
                return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")
    return float("nan")


class Server(benchservers.Server):
    """A child process pinned to a core (by taskset only), run in `workdir` with the environment
    `env` (None: this process's), its log file and a graceful stop by `stop_signal` (nginx:
    SIGQUIT)."""

    def __init__(
        self,
        name: str,
        cmd: list[str],
        cpu: int | None,
        port: int,
        workdir: Path,
        env: dict[str, str] | None = None,
        stop_signal: int = signal.SIGINT,
    ) -> None:
        self.stop_signal = stop_signal
        self._env = env
        super().__init__(name, cmd, cpu, port, workdir, workdir)

    def _spawn(self, cmd: list[str], cpu: int | None, source: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, env=self._env, cwd=source
        )


GATEWAY_TOML = """
[server]
host = "127.0.0.1"
port = {port}
cookie_secret = "bench-cookie-secret-0123456789abcdef"

[storage]
backend = "sqlite"
path = "{db}"
synchronous = "NORMAL"

[[sites]]
id = "shop"
hosts = ["{host}"]
allowed_origins = ["https://www.shop.test"]

[sites.proxy]
enabled = true
cache_seconds = 3600.0
{upstreams}

[sites.destinations.meta]
pixel_id = "{pixel}"
access_token = "bench-access-token"
api_base = "http://127.0.0.1:9"
"""
UPSTREAM_KEYS = (
    "meta_upstream",
    "tiktok_upstream",
    "google_upstream",
    "snap_upstream",
    "pinterest_upstream",
    "microsoft_upstream",
    "reddit_upstream",
    "meta_hits_upstream",
    "tiktok_hits_upstream",
    "snap_hits_upstream",
    "google_hits_upstream",
)


def start_gateway(
    workdir: Path, source: Path, cdn_url: str, hits_url: str, cpu: int | None
) -> Server:
    port = free_port()
    config = workdir / "signalgate.toml"
    upstreams = "\n".join(
        f'{key} = "{hits_url if "_hits_" in key else cdn_url}"' for key in UPSTREAM_KEYS
    )
    config.write_text(
        GATEWAY_TOML.format(
            port=port, db=workdir / "outbox.db", host=HOST, upstreams=upstreams, pixel=PIXEL_ID
        )
    )
    cmd = [sys.executable, "-m", "gateway", "run", "--config", str(config), "--no-delivery"]
    return Server("gateway", cmd, cpu, port, workdir, env=child_env(source))


def start_cdn(workdir: Path, source: Path, cpu: int | None) -> Server:
    port = free_port()
    cmd = [sys.executable, str(Path(__file__).resolve()), "_cdn", "--port", str(port)]
    return Server("cdn", cmd, cpu, port, workdir, env=child_env(source))


NGINX_CONF = """
  sendfile on;
  tcp_nopush on;
  server {{
    listen 127.0.0.1:{port};
    root {dir}/www;
    location / {{
      default_type application/javascript;
      gzip_static on;
      add_header Cache-Control "public, max-age=3600";
      add_header Vary "Accept-Encoding";
      add_header X-Content-Type-Options nosniff;
    }}
  }}
"""


HITS_NGINX_CONF = """
  keepalive_timeout 75s;
  server {{
    listen 127.0.0.1:{port};
    location = /tr/ {{
      default_type image/gif;
      add_header Cache-Control "no-cache, must-revalidate, max-age=0";
      root {dir}/www;
      try_files /tr.gif =404;
    }}
    location = /api/v2/pixel {{ default_type application/json; return 200 '{{"code":0}}'; }}
    location = /p {{ default_type text/plain; return 200 'ok'; }}
    location = /g/collect {{ return 204; }}
    location / {{ return 404; }}
  }}
"""
GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00"
    b"\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
"""The 1x1 GIF Meta's /tr/ answers (gateway.sandbox.cdn.GIF's bytes)."""


def _nginx_binary() -> str:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise RuntimeError("nginx not found (apt-get install -y nginx)")
    return nginx


def start_hits_nginx(workdir: Path, cpu: int | None) -> Server:
    """The hit upstream: fixed vendor-like answers from one nginx worker (see the docstring)."""
    base = workdir / "nginx-hits"
    (base / "www").mkdir(parents=True)
    (base / "www" / "tr.gif").write_bytes(GIF)
    port = free_port()
    user = "user root;" if os.geteuid() == 0 else ""
    conf = base / "nginx.conf"
    conf.write_text(nginx_conf(HITS_NGINX_CONF, user=user, dir=base, port=port))
    cmd = [_nginx_binary(), "-c", str(conf), "-p", str(base)]
    return Server("nginx-hits", cmd, cpu, port, workdir, stop_signal=signal.SIGQUIT)


def start_nginx(workdir: Path, plain: bytes, gz: bytes, cpu: int | None) -> Server:
    nginx = _nginx_binary()
    base = workdir / "nginx"
    target = base / "www" / SCRIPT_PATH.lstrip("/")
    target.parent.mkdir(parents=True)
    target.write_bytes(plain)
    target.with_name(target.name + ".gz").write_bytes(gz)
    port = free_port()
    user = "user root;" if os.geteuid() == 0 else ""  # workers read a 0700 temporary directory
    conf = base / "nginx.conf"
    conf.write_text(nginx_conf(NGINX_CONF, user=user, dir=base, port=port))
    cmd = [nginx, "-c", str(conf), "-p", str(base)]
    return Server("nginx", cmd, cpu, port, workdir, stop_signal=signal.SIGQUIT)


def fetch(port: int, path: str, gzip_ok: bool) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Host": HOST}
        if gzip_ok:
            headers["Accept-Encoding"] = "gzip"
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


# -- wrk ---------------------------------------------------------------------------------------

LUA_START = """
-- generated by bench/proxy.py
function start(args)
  base = tid * 1000000000 + RUN_NUMBER * 1000000
end
"""
LUA_HIT = """
local headers = {["Host"] = "%(host)s", ["User-Agent"] = "Mozilla/5.0 (bench) Chrome/126.0",
  ["Referer"] = "https://www.shop.test/"}
function request()
  counter = counter + 1
  local ms = string.format("%%d", os.time() * 1000 + counter %% 1000)
  local q = string.format("%(query)s", base + counter, ms)
  return wrk.format("GET", "%(path)s?" .. q, headers)
end
"""
LUA_SCRIPT = """
local req = wrk.format("GET", "%(path)s", {["Host"] = "%(host)s",
  ["Accept-Encoding"] = "gzip, deflate, br", ["User-Agent"] = "Mozilla/5.0 (bench)"})
function request() return req end
"""


_RUNS = iter(range(1, 1000))
"""wrk runs of this process: each numbers its event ids from a fresh base (run_wrk), so no
hit repeats an earlier run's id — warm-up included; a repeat would take the store's
duplicate-merge path, which real pixel hits (one id per event) rarely do."""


def hit_lua(path: str) -> str:
    # Lua's string.format pattern: the query's own "%" doubled, "%d"/"%s" for eid and ts (the
    # value is inserted verbatim by Python's "%" formatting, so it is escaped once only).
    query = HIT_QUERY.replace("%", "%%").format(eid="%d", ts="%s")
    body = LUA_HIT % {"host": HOST, "path": path, "query": query}
    return wrk_script(LUA_START + body, 200)


def script_lua(path: str) -> str:
    return wrk_script(LUA_START + LUA_SCRIPT % {"host": HOST, "path": path}, 200)


def run_wrk(
    workdir: Path, name: str, lua: str, port: int, conns: int, seconds: float, cpu: int | None
) -> dict[str, Any]:
    script = workdir / f"{name.replace(' ', '_')}.lua"
    script.write_text(lua.replace("RUN_NUMBER", str(next(_RUNS))))
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--latency"]
    cmd += ["--timeout", "10s", "-s", str(script), f"http://127.0.0.1:{port}/"]
    done = subprocess.run(
        pinned(cmd, cpu), capture_output=True, text=True, check=False, timeout=seconds + 120
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr}")
    load: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
    load["rps"] = load["requests"] / load["duration_s"] if load["duration_s"] else 0.0
    return load


def check(name: str, load: dict[str, Any]) -> None:
    wrong = load["bad"] + load["socket_errors"]
    if load["ok"] == 0 or wrong > MAX_BAD_FRACTION * max(1, load["requests"]):
        raise RuntimeError(
            f"{name}: {load['ok']} x 200, {load['bad']} other answers, {load['socket_errors']} "
            f"socket errors; first other answer: {load['sample']!r}"
        )


def measure(
    args: argparse.Namespace,
    workdir: Path,
    name: str,
    lua: str,
    server: Server,
    conns: int,
    cpu_pids: Sequence[int] = (),
) -> dict[str, Any]:
    warm = run_wrk(workdir, name, lua, server.port, conns, args.warmup, args.client_cpu)
    check(f"{name} warm-up", warm)
    time.sleep(0.5)
    wait_quiet(max_wait=45.0)
    pids = [server.proc.pid, *cpu_pids]
    cpu0 = [tree_cpu(p) for p in pids]
    all0, wrk0 = machine_busy(), children_cpu()
    load = run_wrk(workdir, name, lua, server.port, conns, args.duration, args.client_cpu)
    cpu1 = [tree_cpu(p) for p in pids]
    all1, wrk1 = machine_busy(), children_cpu()
    check(name, load)
    seconds = load["duration_s"]
    ours = sum(cpu1) - sum(cpu0) + (wrk1 - wrk0)
    load["case"] = name
    load["connections"] = conns
    load["server_cpu_pct"] = 100 * (cpu1[0] - cpu0[0]) / seconds
    load["upstream_cpu_pct"] = 100 * (cpu1[1] - cpu0[1]) / seconds if len(pids) > 1 else None
    load["wrk_cpu_pct"] = 100 * (wrk1 - wrk0) / seconds
    load["other_cpu_pct"] = max(0.0, 100 * (all1 - all0 - ours) / seconds)
    return load


# -- fake upstream (child mode) ----------------------------------------------------------------


async def _serve_cdn(port: int) -> None:
    from gateway.sandbox.cdn import FakeCdn

    await serve_app(FakeCdn().app(), port, "fake cdn")


def cdn_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="proxy.py _cdn")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    run_forever(_serve_cdn(args.port))
    return 0


# -- main --------------------------------------------------------------------------------------


def report(cases: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    direct, prox, tput = cases["direct c8"], cases["proxied c8"], cases["proxied c64"]
    gw, ng = cases["script gw"], cases["script nginx"]
    added_p50 = prox["p50_ms"] - direct["p50_ms"]
    added_p99 = prox["p99_ms"] - direct["p99_ms"]
    ratio = gw["rps"] / ng["rps"] if ng["rps"] else float("nan")
    verdict = {
        "added_p50_ms": added_p50,
        "added_p99_ms": added_p99,
        "proxied_hits_per_s": tput["rps"],
        "script_vs_nginx": ratio,
        "pass_added_p50": added_p50 <= TARGET_ADDED_P50_MS,
        "pass_hits_per_s": tput["rps"] >= TARGET_HITS_PER_S,
        "pass_script_ratio": ratio >= TARGET_SCRIPT_RATIO,
    }
    head = f"{'case':<14}{'conns':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'200s':>10}"
    head += f"{'srv CPU':>9}{'up CPU':>8}{'wrk CPU':>9}{'other':>7}"
    lines = [head, "-" * len(head)]
    for name, c in cases.items():
        up = c["upstream_cpu_pct"] if c["upstream_cpu_pct"] is not None else float("nan")
        lines.append(
            f"{name:<14}{c['connections']:>6}{fmt(c['rps']):>10}{fmt(c['p50_ms'], 3):>9}"
            f"{fmt(c['p99_ms'], 3):>9}{c['ok']:>10}{fmt(c['server_cpu_pct']) + '%':>9}"
            f"{(fmt(up) + '%') if up == up else '-':>8}{fmt(c['wrk_cpu_pct']) + '%':>9}"
            f"{fmt(c['other_cpu_pct']) + '%':>7}"
        )
    noisy = [n for n, c in cases.items() if c["other_cpu_pct"] > MAX_OTHER_PCT]
    if noisy:
        lines.append(
            f"WARNING: other processes used > {MAX_OTHER_PCT:g}% of a core during "
            f"{', '.join(noisy)}: those figures are not comparable"
        )

    def mark(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    lines += [
        "",
        f"{'target':<44}{'measured':>14}{'':>4}verdict",
        f"{'added p50 at 8 conns <= 1 ms':<44}{fmt(added_p50, 3) + ' ms':>14}{'':>4}"
        f"{mark(verdict['pass_added_p50'])}",
        f"{'(added p99 at 8 conns, informational)':<44}{fmt(added_p99, 3) + ' ms':>14}",
        f"{'proxied hits/s (64 conns, 1 core) >= 10,000':<44}{fmt(tput['rps']):>14}{'':>4}"
        f"{mark(verdict['pass_hits_per_s'])}",
        f"{'cached script / nginx req/s >= 50%':<44}{fmt(100 * ratio, 1) + '%':>14}{'':>4}"
        f"{mark(verdict['pass_script_ratio'])}",
    ]
    return "\n".join(lines), verdict


def environment(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    cpu = cpu_model()
    nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=False).stderr
    return {
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "nginx": nginx.strip().rpartition("/")[2],
        "cpu": cpu,
        "cores": os.cpu_count(),
        "server_cpu": args.server_cpu,
        "client_cpu": args.client_cpu,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
    }


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per case")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per case")
    parser.add_argument("--quick", action="store_true", help="1 s warm-up + 3 s per case")
    parser.add_argument("--server-cpu", type=int, default=0, help="core of gateway and nginx")
    parser.add_argument("--client-cpu", type=int, default=1, help="core of wrk and upstream")
    parser.add_argument("--no-snapshot", action="store_true", help="run the work tree's gateway")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 3.0, 1.0
    for name in ("server_cpu", "client_cpu"):
        if getattr(args, name) < 0:
            setattr(args, name, None)
    return args


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            print(f"{tool} is not installed", file=sys.stderr)
            return 1
    workdir, source = run_dirs("bench-proxy-", args.no_snapshot)
    env = environment(args)
    print(
        f"gateway + nginx on core {args.server_cpu}, wrk + upstreams on core "
        f"{args.client_cpu}; {args.warmup:g} s warm-up + {args.duration:g} s per case; "
        f"Python {env['python']}, aiohttp {env['aiohttp']}, nginx {env['nginx']}",
        flush=True,
    )
    servers: list[Server] = []
    cases: dict[str, dict[str, Any]] = {}
    try:
        cdn = start_cdn(workdir, source, args.client_cpu)
        servers.append(cdn)
        upstream = start_hits_nginx(workdir, args.client_cpu)
        servers.append(upstream)
        gateway = start_gateway(
            workdir,
            source,
            f"http://127.0.0.1:{cdn.port}",
            f"http://127.0.0.1:{upstream.port}",
            args.server_cpu,
        )
        servers.append(gateway)
        query = HIT_QUERY.format(eid=1, ts=int(time.time() * 1000))
        for port, path in ((upstream.port, "/tr/"), (gateway.port, "/p/m/tr")):
            status, _, body = fetch(port, f"{path}?{query}", gzip_ok=False)
            if status != 200 or not body.startswith(b"GIF"):
                raise RuntimeError(f"hit {path} on {port}: {status} {body[:120]!r}")
        plain_status, _, plain = fetch(gateway.port, SCRIPT_PATH, gzip_ok=False)
        gz_status, gz_headers, gz = fetch(gateway.port, SCRIPT_PATH, gzip_ok=True)
        if plain_status != 200 or gz_status != 200 or gz_headers.get("X-Cache") != "HIT":
            raise RuntimeError(f"script warm-up: {plain_status} {gz_status} {gz_headers}")
        if gz_headers.get("Content-Encoding") == "gzip" and gzip.decompress(gz) != plain:
            raise RuntimeError("the gateway's gzip and plain script bodies differ")
        if gz_headers.get("Content-Encoding") != "gzip":
            gz = gzip.compress(plain)
        print(f"script {SCRIPT_PATH}: {len(plain)} bytes, {len(gz)} gzipped", flush=True)

        hit_direct, hit_proxied = hit_lua("/tr/"), hit_lua("/p/m/tr")
        plan = (
            ("direct c8", hit_direct, upstream, 8, ()),
            ("proxied c8", hit_proxied, gateway, 8, (upstream.proc.pid,)),
            ("proxied c64", hit_proxied, gateway, 64, (upstream.proc.pid,)),
            ("script gw", script_lua(SCRIPT_PATH), gateway, 64, ()),
        )
        for name, lua, server, conns, extra in plan:
            cases[name] = measure(args, workdir, name, lua, server, conns, extra)
            print(f"  {name}: {cases[name]['rps']:,.0f} req/s", flush=True)
        nginx = start_nginx(workdir, plain, gz, args.server_cpu)
        servers.append(nginx)
        status, headers, body = fetch(nginx.port, SCRIPT_PATH, gzip_ok=True)
        if status != 200 or body != gz or headers.get("Content-Encoding") != "gzip":
            raise RuntimeError(f"nginx does not serve the gateway's bytes: {status} {headers}")
        cases["script nginx"] = measure(
            args, workdir, "script nginx", script_lua(SCRIPT_PATH), nginx, 64
        )
        print(f"  script nginx: {cases['script nginx']['rps']:,.0f} req/s", flush=True)
    except RuntimeError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        for server in reversed(servers):
            server.stop()
    text, verdict = report(cases)
    print()
    print(text)
    print(
        "\n(srv CPU: gateway, or nginx master + worker, on its core; up CPU: the hit upstream "
        "(nginx), which shares wrk's core; other: CPU of everything else on the machine)"
    )
    if args.json:
        out = {"environment": env, "cases": cases, "verdict": verdict}
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_cdn":
        sys.exit(cdn_main(sys.argv[2:]))
    sys.exit(main(sys.argv[1:]))
