"""L7 benchmark: the waypoint's HTTP engine against nginx as a reverse proxy, in one run.

Run as root from the repository root (needs nginx and wrk from Debian, taskset):

    .venv/bin/python bench/l7_bench.py            # full run (~15 min), bench/results/l7-full.{json,md}
    .venv/bin/python bench/l7_bench.py --quick    # smoke run (~2 min), bench/results/l7-quick.{json,md}

Everything listens on free 127.0.0.1 ports and every process is started by this script:

* backend: an nginx (one worker) answering ``200 ok`` (3 bytes) with a response header that echoes
  the request header ``x-bench-route`` (so the checks see that a proxy's route set it);
* ``nginx``: a second nginx, one worker, as reverse proxy: ``location /bench`` (the route) with
  ``proxy_set_header x-bench-route l7``, ``limit_except GET { deny all; }`` (the L7 policy),
  ``proxy_pass`` to the backend with upstream keep-alive, access log on (nginx's default);
* ``engine``: ``bench/l7/engine_server.py``, the waypoint's ``HttpEngine`` as a plain-HTTP
  process in the same position, with a VirtualService route (prefix ``/bench``, request header
  set) and an AuthorizationPolicy ALLOW ``methods: [GET]`` (targetRefs: the Service) in force,
  access log on (one JSON line per request, as the real waypoint); ``engine-uvloop``: the same on
  uvloop, when uvloop can be imported (it is not a project dependency: see bench/README.md).

Before measuring, each proxy must answer GET /bench/ok with 200 and the route's header, POST with
403 and GET /other with 404.

1. Saturation: ``wrk -t1 -cN`` (N = 1, 8, 32; keep-alive) for a fixed time against the backend
   (``direct``) and through each proxy. ``wrk`` runs on CPU 0; the proxy under test on CPU 1; the
   backend on CPU 0 beside wrk (on CPU 1 for ``direct``). Configurations are interleaved within
   each repetition, so a slow spell of the shared machine hits them alike. At N = 32 also
   ``nginx-nolog`` / ``engine-nolog``: both with access logging off.
2. Latency at half of the peak rate: ``bench/l7/paced_client.py``, an open-loop client (latency
   counted from when a request was due), on CPU 0, 32 keep-alive connections, at half of the
   engine's peak (its best median over N); the same offered rate through nginx and direct; nginx
   also at half of its own peak; engine-uvloop at half of its own peak.
3. Profile: py-spy (sampling) of the engine process under ``wrk -c32``, and a separate engine
   run under cProfile; top functions by self and cumulative time.
4. In the mesh (orientation, ``--no-mesh`` skips it): a 2-node cluster, wrk in a client pod to a
   Service whose pod runs the same nginx backend, with no mesh, the ztunnel only, and the
   ztunnel plus a waypoint (``zeromesh waypoint apply --enroll-namespace``) enforcing the same
   route and policy.

A measurement during which processes that are not ours used more than 10 % of a CPU is repeated
(at most twice) and the least disturbed attempt kept. Every process is stopped by PID in a
``finally`` block (also on an error, SIGINT or SIGTERM); every load run is bounded in count and
time; traffic goes only to 127.0.0.0/8.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import platform
import pstats
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from l4_bench import (
    STEP_TIMEOUT,
    BenchError,
    Cluster,
    ForeignCpu,
    Procs,
    Terminated,
    cpu_seconds,
    log,
    run,
    source_info,
)

BENCH = Path(__file__).resolve().parent
HELPERS = BENCH / "l7"
VENV_PY = sys.executable
SYS_PY = "/usr/bin/python3"
UVLOOP_DIR = Path("/var/tmp/zeromesh-l7-uvloop")
CPU_LOAD, CPU_PROXY = "0", "1"
PATH = "/bench/ok"
QUIET_WAIT = 10.0
PACED_CEILING = 12000.0            # the paced client's own limit on one CPU (see bench/README.md)
NOLOG = ("nginx-nolog", "engine-nolog")
CONCURRENCY = (1, 8, 32)
TARGET_RATIO, TARGET_P99_US = 0.7, 2000.0
# event-loop plumbing that every stack passes through: left out of the cumulative tops
PLUMBING = ("asyncio/runners.py", "asyncio/base_events.py", "asyncio/events.py", "_contextvars",
            "engine_server.py", "<module>", "builtins.exec", "cProfile")
FRAME_PREFIX = re.compile(r"\((?:[^()]*/)?(?:site-packages|src|lib/python3\.\d+)/")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def pin_all(pids: Sequence[int], cpu: str) -> None:
    for pid in pids:
        run(["taskset", "-a", "-p", "-c", cpu, str(pid)], timeout=10)


def http_check(port: int, method: str, path: str) -> tuple[int, str, dict[str, str]]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request(method, path, body=b"x" if method == "POST" else None)
        r = c.getresponse()
        return r.status, r.read().decode(errors="replace"), {k.lower(): v for k, v in r.getheaders()}
    finally:
        c.close()


def quiet(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs during which other processes stayed under ForeignCpu.DISTURBED (all if none did)."""
    return [r for r in runs if r["foreign_cpu_share"] <= ForeignCpu.DISTURBED] or runs


def start_nginx(procs: Procs, work: Path, role: str, server: str, access_log: str,
                prefix: list[str]) -> list[int]:
    """nginx with ``server`` (a filled-in ``*.server.in``), one worker, its pid file, logs and temp
    files in ``work``; ``prefix`` execs (taskset, ip netns exec). Returns [master, worker]."""
    conf = (HELPERS / "nginx.conf.in").read_text().replace("@SERVER@", server)
    conf = conf.replace("@ROLE@", role).replace("@DIR@", str(work)).replace("@ACCESS_LOG@", access_log)
    path = work / f"{role}.conf"
    path.write_text(conf)
    base = ["nginx", "-p", str(work), "-e", str(work / f"{role}-error.log"), "-c", str(path)]
    run([*base, "-t"], timeout=10)
    p = procs.start(role, [*prefix, *base, "-g", "daemon off;"])
    deadline = time.monotonic() + 10
    while not children(p.pid):
        if p.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"nginx {role} did not start: {procs.log_text(role)} "
                             f"{(work / f'{role}-error.log').read_text(errors='replace')[-500:]}")
        time.sleep(0.05)
    return [p.pid, *children(p.pid)]


class LocalForeign(ForeignCpu):
    """ForeignCpu (bench/l4_bench.py) with this benchmark's processes as ours."""

    def __init__(self, work: Path) -> None:
        self.markers = (str(work), str(HELPERS), "nginx: worker", "wrk ", "py-spy")
        self.tick = os.sysconf("SC_CLK_TCK")


class Servers:
    """The backend, the proxies and their pinning."""

    def __init__(self, a: argparse.Namespace, procs: Procs, work: Path) -> None:
        self.a = a
        self.procs = procs
        self.work = work
        self.ports: dict[str, int] = {}
        self.pids: dict[str, list[int]] = {}          # name -> [master?, worker] or [engine]
        self.facts: dict[str, Any] = {}

    def nginx(self, role: str, server: str, access_log: str, cpu: str) -> None:
        self.pids[role] = start_nginx(self.procs, self.work, role, server, access_log, ["taskset", "-c", cpu])

    def python(self, name: str, script: str, uvloop: bool, *extra: str) -> None:
        """engine_server.py or bare_proxy.py on CPU_PROXY; waits for its ready line."""
        argv = [VENV_PY, str(HELPERS / script), "--port", str(self.ports[name]),
                "--backend-port", str(self.ports["backend"]), "--lifetime", str(self.a.lifetime), *extra]
        if uvloop:
            argv.append("--uvloop")
        prefix = ["env", f"PYTHONPATH={self.a.uvloop_path}"] if uvloop else []
        p = self.procs.start(name, [*prefix, "taskset", "-c", CPU_PROXY, *argv])
        deadline = time.monotonic() + 20
        while True:
            text = self.procs.log_text(name)
            line = next((ln for ln in text.splitlines() if ln.startswith('{"ready"')), None)
            if line is not None:
                self.facts[name] = json.loads(line)
                break
            if p.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"{name} did not start: {text}")
            time.sleep(0.05)
        self.pids[name] = [p.pid]

    def engine(self, name: str, access_log: bool, uvloop: bool) -> None:
        self.python(name, "engine_server.py", uvloop, "--access-log",
                    str(self.work / f"{name}-access.log") if access_log else "none")

    def start(self, uvloop: bool) -> None:
        names = ["backend", "nginx", "engine", *NOLOG, "bare"]
        names += ["engine-uvloop", "bare-uvloop"] if uvloop else []
        for n in names:
            self.ports[n] = free_port()
        backend = (HELPERS / "backend.server.in").read_text().replace(
            "@LISTEN@", f"127.0.0.1:{self.ports['backend']}")
        self.nginx("backend", backend, "off", CPU_LOAD)
        for n in ("nginx", "nginx-nolog"):
            server = (HELPERS / "proxy.server.in").read_text().replace("@PORT@", str(self.ports[n]))
            server = server.replace("@BACKEND_PORT@", str(self.ports["backend"]))
            self.nginx(n, server, "off" if n.endswith("nolog") else str(self.work / f"{n}-access.log"),
                       CPU_PROXY)
        self.engine("engine", True, False)
        self.engine("engine-nolog", False, False)
        self.python("bare", "bare_proxy.py", False)
        if uvloop:
            self.engine("engine-uvloop", True, True)
            self.python("bare-uvloop", "bare_proxy.py", True)

    def check(self) -> dict[str, Any]:
        """Each proxy routes (header set), enforces the policy (POST 403) and refuses unrouted paths."""
        out: dict[str, Any] = {}
        status, body, _ = http_check(self.ports["backend"], "GET", PATH)
        if status != 200 or body != "ok\n":
            raise BenchError(f"backend answered {status} {body!r}")
        for name in self.ports:
            if name == "backend":
                continue
            got = {"GET": http_check(self.ports[name], "GET", PATH),
                   "POST": http_check(self.ports[name], "POST", PATH),
                   "GET /other": http_check(self.ports[name], "GET", "/other")}
            ok = (got["GET"][0] == 200 and got["GET"][1] == "ok\n" and got["GET"][2].get("x-route") == "l7"
                  and got["POST"][0] == 403 and got["GET /other"][0] == 404)
            out[name] = {k: v[0] for k, v in got.items()}
            out[name]["route_header_seen"] = got["GET"][2].get("x-route")
            if not ok:
                raise BenchError(f"{name}: sanity check failed: {got}")
        log("checks: every proxy answers GET 200 (route header set), POST 403 (policy), /other 404")
        return out

    def place(self, cfg: str) -> tuple[int, list[int]]:
        """Pin the backend for ``cfg``; the port to load and the pids whose CPU counts."""
        backend = self.pids["backend"]
        if cfg == "direct":
            pin_all(backend, CPU_PROXY)
            return self.ports["backend"], backend[1:]
        pin_all(backend, CPU_LOAD)
        return self.ports[cfg], self.pids[cfg][1:] if cfg.startswith("nginx") else self.pids[cfg]


class Bench:
    def __init__(self, a: argparse.Namespace, servers: Servers, work: Path) -> None:
        self.a = a
        self.s = servers
        self.work = work
        self.foreign = LocalForeign(work)

    def wait_quiet(self) -> float:
        """Wait (at most QUIET_WAIT s) until other processes use under 5 % of a CPU for 0.3 s."""
        deadline = time.monotonic() + QUIET_WAIT
        while True:
            before = self.foreign.snapshot()
            time.sleep(0.3)
            share = self.foreign.seconds(before) / 0.3
            if share < 0.05 or time.monotonic() > deadline:
                return share
            time.sleep(0.5)

    def attempt(self, what: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        tries: list[dict[str, Any]] = []
        for _ in range(1 + self.a.retries):
            self.wait_quiet()
            before = self.foreign.snapshot()
            t0 = time.monotonic()
            r = fn()
            r["foreign_cpu_share"] = self.foreign.seconds(before) / (time.monotonic() - t0)
            tries.append(r)
            if r["foreign_cpu_share"] <= ForeignCpu.DISTURBED:
                break
            log(f"  ({what}: other processes used {r['foreign_cpu_share']:.0%} of a CPU meanwhile; again)")
        best = min(tries, key=lambda x: x["foreign_cpu_share"])
        best["disturbed_attempts"] = len(tries) - 1
        return best

    # ---- saturation ---------------------------------------------------------------------------
    def wrk(self, cfg: str, conc: int, seconds: float | None = None) -> dict[str, Any]:
        port, pids = self.s.place(cfg)
        secs = seconds or self.a.seconds
        cpu0 = cpu_seconds(pids)
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        proc = run(["taskset", "-c", CPU_LOAD, "wrk", "-t1", f"-c{conc}", f"-d{secs}s", "--timeout", "5s",
                    "-s", str(HELPERS / "wrk_report.lua"), f"http://127.0.0.1:{port}{PATH}"],
                   timeout=secs + 30)
        wall = time.monotonic() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = cpu_seconds(pids) - cpu0
        try:
            r = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError) as e:
            raise BenchError(f"wrk {cfg} c={conc}: {proc.stdout[-500:]} {proc.stderr[-500:]}") from e
        errors = sum(r["errors"].values())
        if errors:
            raise BenchError(f"wrk {cfg} c={conc}: errors {r['errors']}")
        dur = r["duration_us"] / 1e6
        return {"connections": conc, "requests": r["requests"], "seconds": dur, "rps": r["requests"] / dur,
                "latency_us": r["latency_us"], "server_cpu_share": cpu / dur,
                "requests_per_server_cpu_s": r["requests"] / cpu if cpu else None,
                "wrk_cpu_share": ((ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)) / wall}

    def saturation(self, configs: Sequence[str]) -> dict[str, Any]:
        runs: dict[str, dict[int, list[dict[str, Any]]]] = {c: {n: [] for n in CONCURRENCY} for c in configs}
        for n in NOLOG:
            runs[n] = {32: []}
        for rep in range(self.a.repeats):
            for conc in CONCURRENCY:
                for cfg in runs:
                    if conc not in runs[cfg]:
                        continue
                    r = self.attempt(f"{cfg} c={conc}", lambda c=cfg, k=conc: self.wrk(c, k))
                    log(f"  {cfg:14} c={conc:<3} run {rep + 1}: {r['rps']:9,.0f} req/s, p50 "
                        f"{r['latency_us']['p50']} µs, p99 {r['latency_us']['p99']} µs, server CPU "
                        f"{r['server_cpu_share']:.0%}, wrk CPU {r['wrk_cpu_share']:.0%}")
                    runs[cfg][conc].append(r)
        out: dict[str, Any] = {}
        for cfg, by in runs.items():
            out[cfg] = {}
            for k, v in by.items():
                use = quiet(v)
                out[cfg][f"c{k}"] = {"runs": v, "median_rps": statistics.median(x["rps"] for x in use),
                                 "max_rps": max(x["rps"] for x in v), "runs_used": len(use),
                                 "only_disturbed_runs": not any(x["foreign_cpu_share"] <= ForeignCpu.DISTURBED
                                                                for x in v)}
            out[cfg]["peak_rps"] = max(x["median_rps"] for x in out[cfg].values())
        return out

    # ---- latency at a fixed rate ------------------------------------------------------------
    def paced(self, cfg: str, rate: float) -> dict[str, Any]:
        port, _ = self.s.place(cfg)
        proc = run(["taskset", "-c", CPU_LOAD, SYS_PY, str(HELPERS / "paced_client.py"), "--port", str(port),
                    "--path", PATH, "--rate", f"{rate:.0f}", "--seconds", str(self.a.lat_seconds),
                    "--warmup", "1", "--connections", "32", "--spin", "0.002",
                    "--timeout", str(self.a.lat_seconds + 30)],
                   timeout=self.a.lat_seconds + 60)
        try:
            r = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError) as e:
            raise BenchError(f"paced {cfg}: {proc.stdout[-500:]} {proc.stderr[-500:]}") from e
        if r.get("error") or r["non_200"]:
            raise BenchError(f"paced {cfg} at {rate:.0f}/s: {r.get('error')} statuses {r['statuses']}")
        return r

    def latency(self, sat: dict[str, Any]) -> dict[str, Any]:
        plan: list[tuple[str, str, float]] = []
        half_engine = sat["engine"]["peak_rps"] / 2
        half_nginx = sat["nginx"]["peak_rps"] / 2
        plan += [("direct", "engine_half_peak", half_engine), ("nginx", "engine_half_peak", half_engine),
                 ("engine", "engine_half_peak", half_engine)]
        if half_nginx <= PACED_CEILING:
            plan.append(("nginx", "own_half_peak", half_nginx))
        else:
            plan.append(("nginx", "paced_client_ceiling", PACED_CEILING))
        if "engine-uvloop" in sat:
            plan.append(("engine-uvloop", "own_half_peak", sat["engine-uvloop"]["peak_rps"] / 2))
        out: dict[str, Any] = {}
        for rep in range(self.a.lat_repeats):
            for cfg, label, rate in plan:
                r = self.attempt(f"{cfg} latency", lambda c=cfg, x=rate: self.paced(c, x))
                lat = r["latency"]
                log(f"  {cfg:14} at {rate:7,.0f}/s ({label}) run {rep + 1}: p50 {lat['p50_us']:.0f} µs, "
                    f"p99 {lat['p99_us']:.0f} µs (client dispatch lag p99 {r['dispatch_lag']['p99_us']:.0f} "
                    f"µs, achieved {r['achieved_rate']:,.0f}/s)")
                out.setdefault(f"{cfg}@{label}", {"config": cfg, "rate": rate, "runs": []})["runs"].append(r)
        for v in out.values():
            use = quiet(v["runs"])
            v["runs_used"] = len(use)
            v["only_disturbed_runs"] = len(use) == len(v["runs"]) and not any(
                r["foreign_cpu_share"] <= ForeignCpu.DISTURBED for r in v["runs"])
            v["p50_us"] = statistics.median(r["latency"]["p50_us"] for r in use)
            v["p99_us"] = statistics.median(r["latency"]["p99_us"] for r in use)
            v["service_p99_us"] = statistics.median(r["service"]["p99_us"] for r in use)
            v["lag_p99_us"] = statistics.median(r["dispatch_lag"]["p99_us"] for r in use)
            v["achieved_rate"] = statistics.median(r["achieved_rate"] for r in use)
            v["waited"] = statistics.median(r["waited_for_connection"] for r in use)
        return out

    # ---- profiles -----------------------------------------------------------------------------
    def pyspy(self) -> dict[str, Any] | None:
        spy = shutil.which("py-spy") or str(Path(VENV_PY).parent / "py-spy")
        if not Path(spy).exists():
            return None
        out = self.work / "pyspy.txt"
        secs = self.a.profile_seconds
        _, pids = self.s.place("engine")
        p = subprocess.Popen(["taskset", "-c", CPU_LOAD, spy, "record", "--function",
                              "--format", "raw", "--rate", "200", "--duration", str(secs),
                              "--pid", str(pids[0]), "--output", str(out)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        try:
            time.sleep(0.5)
            load = self.wrk("engine", 32, seconds=secs + 1)
            p.wait(secs + 30)
        finally:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(5)
        if not out.exists():
            return {"error": (p.stderr.read().decode(errors="replace") if p.stderr else "")[-500:]}
        return {"rps_while_sampled": load["rps"], **folded_top(out.read_text(), 10)}

    def cprofile(self) -> dict[str, Any]:
        name = "engine-cprofile"
        stats = self.work / "engine.pstats"
        self.s.ports[name] = free_port()
        argv = [VENV_PY, str(HELPERS / "engine_server.py"), "--port", str(self.s.ports[name]),
                "--backend-port", str(self.s.ports["backend"]), "--lifetime", "300",
                "--access-log", str(self.work / f"{name}-access.log"), "--profile", str(stats)]
        p = self.s.procs.start(name, ["taskset", "-c", CPU_PROXY, *argv])
        deadline = time.monotonic() + 20
        while '{"ready"' not in self.s.procs.log_text(name):
            if p.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"{name}: {self.s.procs.log_text(name)}")
            time.sleep(0.05)
        self.s.pids[name] = [p.pid]
        load = self.wrk(name, 32, seconds=self.a.profile_seconds)
        self.s.procs.stop(name)                  # SIGTERM: the engine writes its stats and exits
        if not stats.exists():
            raise BenchError(f"{name} wrote no stats: {self.s.procs.log_text(name)}")
        st = pstats.Stats(str(stats))
        total = st.total_tt    # type: ignore[attr-defined]
        rows = []
        for (file, line, fn), (_cc, nc, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
            rows.append({"function": f"{fn} ({short(file)}:{line})", "calls": nc, "self_s": tt, "cum_s": ct})
        top_self = sorted(rows, key=lambda r: -r["self_s"])[:10]
        top_cum = sorted((r for r in rows if not any(m in r["function"] for m in PLUMBING)),
                         key=lambda r: -r["cum_s"])[:10]
        return {"rps_under_cprofile": load["rps"], "requests": load["requests"], "total_s": total,
                "top_self": top_self, "top_cumulative": top_cum}


# ---- part 2: in a local cluster (orientation) -----------------------------------------------------
MESH_CLIENT_NS, MESH_SERVER_NS = "l7-client", "l7-server"
MESH_APP_PORT = 8081                # the nginx backend inside the server pod
AMBIENT = "istio.io/dataplane-mode=ambient"
MESH_MANIFEST = f"""\
apiVersion: v1
kind: Namespace
metadata: {{name: {MESH_CLIENT_NS}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: client, namespace: {MESH_CLIENT_NS}}}
spec:
  selector: {{matchLabels: {{app: client}}}}
  template:
    metadata: {{labels: {{app: client}}}}
    spec:
      nodeSelector: {{name: node1}}
      containers: [{{name: client, image: curlimages/curl, command: [/bin/sleep, infinity]}}]
---
apiVersion: v1
kind: Namespace
metadata: {{name: {MESH_SERVER_NS}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: server, namespace: {MESH_SERVER_NS}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: server, namespace: {MESH_SERVER_NS}}}
spec:
  selector: {{matchLabels: {{app: server}}}}
  template:
    metadata: {{labels: {{app: server}}}}
    spec:
      serviceAccountName: server
      nodeSelector: {{name: node2}}
      containers: [{{name: echo, image: zeromesh/http-echo, ports: [{{containerPort: 8080}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: server, namespace: {MESH_SERVER_NS}}}
spec:
  selector: {{app: server}}
  ports: [{{name: http, port: 80, targetPort: {MESH_APP_PORT}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: server, namespace: {MESH_SERVER_NS}}}
spec:
  hosts: [server]
  http:
  - name: bench
    match: [{{uri: {{prefix: /bench}}}}]
    headers: {{request: {{set: {{x-bench-route: l7}}}}}}
    route: [{{destination: {{host: server}}}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: get-only, namespace: {MESH_SERVER_NS}}}
spec:
  targetRefs: [{{kind: Service, group: "", name: server}}]
  action: ALLOW
  rules: [{{to: [{{operation: {{methods: [GET]}}}}]}}]
"""


class MeshStage:
    """One 2-node cluster: a client pod on node1 and, in the server pod on node2, an nginx backend
    (one worker, port 8081) behind Service ``server``; small GETs with wrk from the client pod to
    the Service's VIP with no mesh, with the ztunnel only, and with the ztunnel and a waypoint
    (``zeromesh waypoint apply --enroll-namespace``) that enforces the same route and policy as
    in part 1. Only wrk is pinned (CPU 0); the cluster's processes are left to the scheduler."""

    def __init__(self, a: argparse.Namespace, procs: Procs, work: Path, foreign: LocalForeign) -> None:
        self.a = a
        self.procs = procs
        self.work = work
        self.c = Cluster(f"l7{secrets.token_hex(3)}")
        self.foreign = foreign
        foreign.markers = (*foreign.markers, f"--cluster {self.c.name} ", f"/run/zeromesh/{self.c.name}/")
        self.client_netns = self.server_netns = self.vip = ""

    def pods(self, ns: str, label: tuple[str, str] | None = None) -> list[dict[str, Any]]:
        items = json.loads(self.c.z("get", "pods", "-n", ns, "-o", "json").stdout)["items"]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")
                and (label is None or p["metadata"].get("labels", {}).get(label[0]) == label[1])]

    def ready_pod(self, ns: str, label: tuple[str, str], timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for p in self.pods(ns, label):
                if any(c.get("type") == "Ready" and c.get("status") == "True"
                       for c in p.get("status", {}).get("conditions") or []):
                    return p
            if time.monotonic() > deadline:
                raise BenchError(f"no Ready pod {label} in {ns} after {timeout:.0f}s")
            time.sleep(0.2)

    def curl(self, method: str, path: str) -> tuple[int, str]:
        """One request from the client pod (curl of the host, in the pod's network namespace)."""
        p = run(["ip", "netns", "exec", self.client_netns, "curl", "-s", "-m", "5", "-X", method,
                 "-o", "/dev/null", "-D", "-", f"http://{self.vip}{path}"], timeout=20, check=False)
        head = p.stdout.lower()
        status = int(head.split()[1]) if head.startswith("http/") else 0
        route = next((ln.split(":", 1)[1].strip() for ln in head.splitlines() if ln.startswith("x-route:")),
                     "")
        return status, route

    def setup(self) -> None:
        self.c.started = True
        self.c.z("up", "--nodes", "2")
        self.c.z("apply", "-f", "-", input=MESH_MANIFEST)
        client = self.ready_pod(MESH_CLIENT_NS, ("app", "client"))
        server = self.ready_pod(MESH_SERVER_NS, ("app", "server"))
        self.client_netns = f"zm.{self.c.name}.{MESH_CLIENT_NS}.{client['metadata']['name']}"
        self.server_netns = f"zm.{self.c.name}.{MESH_SERVER_NS}.{server['metadata']['name']}"
        self.pod_names = {client["metadata"]["name"], server["metadata"]["name"]}
        svc = json.loads(self.c.z("get", "services", "server", "-n", MESH_SERVER_NS, "-o", "json").stdout)
        self.vip = svc["spec"]["clusterIP"]
        backend = (HELPERS / "backend.server.in").read_text().replace("@LISTEN@", f"0.0.0.0:{MESH_APP_PORT}")
        self.backend = start_nginx(self.procs, self.work, "mesh-backend", backend, "off",
                                   ["ip", "netns", "exec", self.server_netns])
        deadline = time.monotonic() + 20
        while self.curl("GET", PATH)[0] != 200:
            if time.monotonic() > deadline:
                raise BenchError("the backend in the server pod is not reachable through the VIP")
            time.sleep(0.3)
        self.agents = [self.c.agent_pid("node1"), self.c.agent_pid("node2")]
        log(f"cluster {self.c.name}: client pod on node1, nginx backend in the server pod on node2, "
            f"Service VIP {self.vip}")

    def waypoint_pids(self) -> list[int]:
        out = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                    if f"--cluster {self.c.name} waypoint-proxy" in cmd:
                        out.append(int(entry))
        return out

    def wrk(self, conc: int, pids: dict[str, list[int]]) -> dict[str, Any]:
        secs = self.a.mesh_seconds
        cpu0 = {k: cpu_seconds(v) for k, v in pids.items()}
        proc = run(["ip", "netns", "exec", self.client_netns, "taskset", "-c", CPU_LOAD, "wrk", "-t1",
                    f"-c{conc}", f"-d{secs}s", "--timeout", "5s", "-s", str(HELPERS / "wrk_report.lua"),
                    f"http://{self.vip}{PATH}"], timeout=secs + 30)
        try:
            r = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError) as e:
            raise BenchError(f"wrk in the client pod: {proc.stdout[-500:]} {proc.stderr[-500:]}") from e
        if sum(r["errors"].values()):
            raise BenchError(f"wrk in the client pod, c={conc}: errors {r['errors']}")
        dur = r["duration_us"] / 1e6
        return {"connections": conc, "requests": r["requests"], "rps": r["requests"] / dur,
                "latency_us": r["latency_us"],
                "cpu_us_per_request": {k: (cpu_seconds(v) - cpu0[k]) / r["requests"] * 1e6
                                       for k, v in pids.items()}}

    def measure(self, cfg: str, bench: Bench) -> dict[str, Any]:
        pids = {"node1 agent": self.agents[:1], "node2 agent": self.agents[1:], "backend": self.backend[1:]}
        if cfg == "waypoint":
            pids["waypoint"] = self.waypoint_pids()
        out: dict[str, Any] = {}
        for conc in self.a.mesh_concurrency:
            runs = []
            for rep in range(self.a.mesh_repeats):
                r = bench.attempt(f"mesh {cfg} c={conc}", lambda k=conc: self.wrk(k, pids))
                cpu = ", ".join(f"{k} {v:.0f}" for k, v in r["cpu_us_per_request"].items())
                log(f"  {cfg:9} c={conc:<3} run {rep + 1}: {r['rps']:8,.0f} req/s, p50 "
                    f"{r['latency_us']['p50']} µs, p99 {r['latency_us']['p99']} µs; CPU µs/request: {cpu}")
                runs.append(r)
            use = quiet(runs)
            med = sorted(use, key=lambda x: x["rps"])[len(use) // 2]
            out[f"c{conc}"] = {"runs": runs, "median_rps": med["rps"], "p50_us": med["latency_us"]["p50"],
                               "p99_us": med["latency_us"]["p99"],
                               "cpu_us_per_request": med["cpu_us_per_request"]}
        return out

    def run(self, bench: Bench) -> dict[str, Any]:
        res: dict[str, Any] = {"cluster": self.c.name, "vip": self.vip}
        log("  no mesh")
        res["checks_nomesh"] = {"GET": self.curl("GET", PATH), "POST": self.curl("POST", PATH)}
        res["nomesh"] = self.measure("nomesh", bench)
        self.c.z("label", "namespace", MESH_CLIENT_NS, AMBIENT)
        self.c.z("label", "namespace", MESH_SERVER_NS, AMBIENT)
        self.c.wait_enrolled(self.pod_names, True)
        before = self.c.opened_total("node1", "source")
        self.curl("GET", PATH)
        deadline = time.monotonic() + 20
        while self.c.opened_total("node1", "source") <= before:
            if time.monotonic() > deadline:
                raise BenchError("requests from the client pod are not counted by node1's ztunnel")
            self.curl("GET", PATH)
            time.sleep(0.3)
        log("  ztunnel only (both namespaces ambient)")
        res["ztunnel"] = self.measure("ztunnel", bench)
        self.c.z("waypoint", "apply", "-n", MESH_SERVER_NS, "--name", "waypoint", "--enroll-namespace",
                 "--wait", timeout=STEP_TIMEOUT)
        deadline = time.monotonic() + 60
        while (got := (self.curl("POST", PATH), self.curl("GET", PATH), self.curl("GET", "/other"))) != (
                (403, ""), (200, "l7"), (404, "")):
            if time.monotonic() > deadline:
                raise BenchError(f"the waypoint's route and policy are not in force: {got}")
            time.sleep(0.5)
        res["checks_waypoint"] = {"POST": got[0], "GET": got[1], "GET /other": got[2]}
        log("  ztunnel + waypoint (POST 403, GET 200 with the route's header, /other 404)")
        res["waypoint"] = self.measure("waypoint", bench)
        return res

    def down(self) -> None:
        err = self.c.down()
        leftover = [n for n in run(["ip", "netns", "list"], timeout=10, check=False).stdout.split()
                    if n.startswith(f"zm.{self.c.name}.")]
        if err or leftover:
            log(f"teardown of {self.c.name}: {err.strip()} leftovers: {leftover}")


def short(file: str) -> str:
    for marker in ("/site-packages/", "/src/", "/lib/python3.11/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def folded_top(text: str, n: int) -> dict[str, Any]:
    """Self and cumulative shares of py-spy's folded stacks (``f1;f2;... count``)."""
    own: Counter[str] = Counter()
    cum: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        k = int(count)
        frames = [FRAME_PREFIX.sub("(", f) for f in stack.split(";")]
        total += k
        own[frames[-1]] += k
        for f in set(frames):
            cum[f] += k
    return {"samples": total,
            "top_self": [{"function": f, "share": c / total} for f, c in own.most_common(n)] if total else [],
            "top_cumulative": [{"function": f, "share": c / total} for f, c in cum.most_common()
                               if not any(m in f for m in PLUMBING)][:n] if total else []}


# ---- report -------------------------------------------------------------------------------------
def summarize(sat: dict[str, Any], lat: dict[str, Any]) -> dict[str, Any]:
    ng, en = sat["nginx"], sat["engine"]

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    s: dict[str, Any] = {
        "engine_vs_nginx_peak": ratio(en["peak_rps"], ng["peak_rps"]),
        "engine_vs_nginx_by_concurrency": {k: ratio(en[k]["median_rps"], ng[k]["median_rps"])
                                           for k in (f"c{c}" for c in CONCURRENCY)},
        "engine_nolog_vs_nginx_nolog_c32": ratio(sat["engine-nolog"]["c32"]["median_rps"],
                                                 sat["nginx-nolog"]["c32"]["median_rps"]),
        "engine_p99_us_at_half_peak": lat["engine@engine_half_peak"]["p99_us"],
        "engine_half_peak_rate": lat["engine@engine_half_peak"]["rate"],
    }
    s["bare_vs_nginx_peak"] = ratio(sat["bare"]["peak_rps"], ng["peak_rps"])
    s["engine_vs_bare_peak"] = ratio(en["peak_rps"], sat["bare"]["peak_rps"])
    if "engine-uvloop" in sat:
        s["engine_uvloop_vs_nginx_peak"] = ratio(sat["engine-uvloop"]["peak_rps"], ng["peak_rps"])
        s["engine_uvloop_p99_us_at_half_peak"] = lat["engine-uvloop@own_half_peak"]["p99_us"]
        s["bare_uvloop_vs_nginx_peak"] = ratio(sat["bare-uvloop"]["peak_rps"], ng["peak_rps"])
    s["targets"] = {
        f"engine >= {TARGET_RATIO}x nginx requests/s (one worker each)":
            bool(s["engine_vs_nginx_peak"] and s["engine_vs_nginx_peak"] >= TARGET_RATIO),
        "engine p99 < 2 ms at half of its peak rate": s["engine_p99_us_at_half_peak"] < TARGET_P99_US,
    }
    return s


def markdown(sat: dict[str, Any], lat: dict[str, Any], s: dict[str, Any], meta: dict[str, Any]) -> str:
    def f2(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}x"

    src = meta["source"]
    lines = [f"L7, {meta['date']}, commit {src['head'][:8]}"
             f"{' + uncommitted src/ changes' if src['src_dirty'] else ''}"
             f"{' (quick)' if meta['quick'] else ''}"
             f", {meta['parameters']['seconds']} s per run, {meta['parameters']['repeats']} repetition(s), "
             "medians", "",
             "| configuration | req/s c=1 | req/s c=8 | req/s c=32 | p50 / p99 at c=32 (µs, wrk) "
             "| server CPU at c=32 | req per server CPU-s | wrk CPU at c=32 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    def star(x: dict[str, Any]) -> str:
        return " *" if x.get("only_disturbed_runs") else ""

    for cfg, by in sat.items():
        cells = [f"{by[f'c{c}']['median_rps']:,.0f}{star(by[f'c{c}'])}" if f"c{c}" in by else ""
                 for c in CONCURRENCY]
        runs32 = by["c32"]["runs"]
        med = sorted(runs32, key=lambda r: r["rps"])[len(runs32) // 2]
        per_cpu = med["requests_per_server_cpu_s"]
        lines.append(f"| {cfg} | {' | '.join(cells)} "
                     f"| {med['latency_us']['p50']} / {med['latency_us']['p99']} "
                     f"| {med['server_cpu_share']:.0%} | {'-' if per_cpu is None else f'{per_cpu:,.0f}'} "
                     f"| {med['wrk_cpu_share']:.0%} |")
    lines += ["", "Open loop (latency from when each request was due), 32 connections:", "",
              "| configuration | offered rate | achieved | p50 (µs) | p99 (µs) | p99 service time (µs) "
              "| dispatch lag p99 (µs) | requests that found all 32 connections busy |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key, v in lat.items():
        label = key.split("@", 1)[1].replace("_", " ")
        lines.append(f"| {v['config']}{star(v)} | {v['rate']:,.0f}/s ({label}) | {v['achieved_rate']:,.0f}/s "
                     f"| {v['p50_us']:,.0f} | {v['p99_us']:,.0f} | {v['service_p99_us']:,.0f} "
                     f"| {v['lag_p99_us']:,.0f} | {v['waited']:,} |")
    t = list(s["targets"].values())
    by_c = s["engine_vs_nginx_by_concurrency"]
    lines += ["", "\\* every attempt of that measurement was disturbed by other processes (over 10 % of a "
                  "CPU).",
              "", "| engine vs nginx | measured | target | met |", "|---|---:|---:|---|",
              f"| requests/s at peak (best concurrency of each) | {f2(s['engine_vs_nginx_peak'])} "
              f"(c=1 / 8 / 32: {' / '.join(f2(by_c[f'c{c}']) for c in CONCURRENCY)}) "
              f"| ≥ {TARGET_RATIO}x | {'yes' if t[0] else 'no'} |",
              f"| p99 at half of the engine's peak ({s['engine_half_peak_rate']:,.0f}/s) "
              f"| {s['engine_p99_us_at_half_peak']:,.0f} µs | < 2,000 µs | {'yes' if t[1] else 'no'} |",
              f"| requests/s at c=32, both without access log | {f2(s['engine_nolog_vs_nginx_nolog_c32'])} "
              "| (orientation) | |"]
    if "engine_uvloop_vs_nginx_peak" in s:
        lines.append(f"| engine on uvloop: requests/s at peak | {f2(s['engine_uvloop_vs_nginx_peak'])} "
                     f"| (orientation) | p99 at its half peak: "
                     f"{s['engine_uvloop_p99_us_at_half_peak']:,.0f} µs |")
    lines.append(f"| bare Python proxy (asyncio streams + httptools): requests/s at peak "
                 f"| {f2(s['bare_vs_nginx_peak'])} | (orientation) | engine / bare = "
                 f"{f2(s['engine_vs_bare_peak'])} |")
    if "bare_uvloop_vs_nginx_peak" in s:
        lines.append("| bare Python proxy on uvloop: requests/s at peak "
                     f"| {f2(s['bare_uvloop_vs_nginx_peak'])} | (orientation) | |")
    return "\n".join(lines)


def markdown_mesh(mesh: dict[str, Any]) -> str:
    if not mesh:
        return ""
    concs = [k for k in mesh["nomesh"] if k.startswith("c")]
    heads = " | ".join(f"req/s {k.replace('c', 'c=')} | p50 / p99 (µs)" for k in concs)
    lines = ["", "In a local cluster (orientation): wrk -t1 in the client pod (node1) to the Service VIP, "
                 "nginx backend in the server pod (node2):", "",
             f"| configuration | {heads} | CPU µs per request (last concurrency) |",
             "|---|" + "---:|---:|" * len(concs) + "---|"]
    for cfg in ("nomesh", "ztunnel", "waypoint"):
        r = mesh[cfg]
        cells = " | ".join(f"{r[k]['median_rps']:,.0f} | {r[k]['p50_us']} / {r[k]['p99_us']}" for k in concs)
        cpu = ", ".join(f"{n} {v:.0f}" for n, v in r[concs[-1]]["cpu_us_per_request"].items())
        lines.append(f"| {cfg} | {cells} | {cpu} |")
    return "\n" + "\n".join(lines)


def markdown_profile(prof: dict[str, Any]) -> str:
    lines: list[str] = []
    spy = prof.get("pyspy")
    if spy and "top_self" in spy:
        lines += ["", f"py-spy, engine under wrk -c32 ({spy['rps_while_sampled']:,.0f} req/s while sampled, "
                      f"{spy['samples']} busy samples):", "",
                  "| # | self | function | | cumulative | function |", "|---:|---:|---|---|---:|---|"]
        for i, (a, b) in enumerate(zip(spy["top_self"], spy["top_cumulative"], strict=False)):
            lines.append(f"| {i + 1} | {a['share']:.1%} | `{a['function']}` | | {b['share']:.1%} "
                         f"| `{b['function']}` |")
    cp = prof.get("cprofile")
    if cp:
        lines += ["", f"cProfile, engine under wrk -c32 ({cp['rps_under_cprofile']:,.0f} req/s under the "
                      f"profiler, {cp['requests']:,} requests):", "",
                  "| # | self s | calls | function | | cum s | function |",
                  "|---:|---:|---:|---|---|---:|---|"]
        for i, (a, b) in enumerate(zip(cp["top_self"], cp["top_cumulative"], strict=False)):
            lines.append(f"| {i + 1} | {a['self_s']:.2f} | {a['calls']:,} | `{a['function']}` | "
                         f"| {b['cum_s']:.2f} | `{b['function']}` |")
    return "\n" + "\n".join(lines) if lines else ""


def machine_info() -> dict[str, Any]:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "?")
    tools = {}
    for cmd in (["nginx", "-v"], ["wrk", "-v"]):
        p = run(cmd, timeout=10, check=False)
        tools[cmd[0]] = ((p.stdout or "") + (p.stderr or "")).strip().splitlines()[:1]
    return {"host": platform.node(), "cpu": cpu, "cpus": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "loadavg": os.getloadavg(), "tools": tools}


def uvloop_available(path: Path) -> str | None:
    """uvloop's version if the venv's interpreter can import it with ``path`` on PYTHONPATH."""
    p = subprocess.run([VENV_PY, "-c", "import uvloop; print(uvloop.__version__)"], capture_output=True,
                       text=True, timeout=30, env={**os.environ, "PYTHONPATH": str(path)},
                       stdin=subprocess.DEVNULL, check=False)
    return p.stdout.strip() if p.returncode == 0 else None


def _sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: short and few (~2 min)")
    ap.add_argument("--out", type=Path, help="JSON output (default bench/results/l7-{full,quick}.json; "
                                             "the Markdown table goes beside it as .md)")
    ap.add_argument("--uvloop-path", type=Path, default=UVLOOP_DIR,
                    help="directory put on PYTHONPATH for the engine-uvloop configuration")
    ap.add_argument("--no-profile", action="store_true", help="skip the py-spy and cProfile runs")
    ap.add_argument("--no-mesh", action="store_true", help="skip part 2 (the local cluster)")
    ap.add_argument("--mesh-only", action="store_true", help="only part 2 (the local cluster)")
    ap.add_argument("--note", default="", help="free text stored with the results")
    a = ap.parse_args(argv)
    a.seconds = 2 if a.quick else 5
    a.repeats = 1 if a.quick else 3
    a.lat_seconds = 3 if a.quick else 5
    a.lat_repeats = 1 if a.quick else 3
    a.profile_seconds = 3 if a.quick else 5
    a.retries = 1 if a.quick else ForeignCpu.RETRIES
    a.lifetime = 1800
    a.mesh_seconds = 2 if a.quick else 5
    a.mesh_concurrency = (8,) if a.quick else CONCURRENCY
    a.mesh_repeats = 1 if a.quick else 2
    out = a.out or BENCH / "results" / ("l7-quick.json" if a.quick else "l7-full.json")
    if a.mesh_only and a.out is None:
        out = out.with_name(out.stem + "-mesh.json")
    if os.geteuid() != 0:
        print("run as root (taskset of other processes, py-spy)", file=sys.stderr)
        return 2
    missing = [t for t in ("nginx", "wrk", "taskset") if shutil.which(t) is None]
    if missing or not Path(SYS_PY).exists():
        print(f"missing: {' '.join(missing) or SYS_PY} (apt-get install -y nginx wrk)", file=sys.stderr)
        return 2
    uv = uvloop_available(a.uvloop_path)
    signal.signal(signal.SIGTERM, _sigterm)
    meta: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "quick": a.quick, "note": a.note,
        "source": source_info(), "machine": machine_info(), "uvloop": uv,
        "parameters": {"seconds": a.seconds, "repeats": a.repeats, "concurrency": list(CONCURRENCY),
                       "latency_seconds": a.lat_seconds, "latency_repeats": a.lat_repeats,
                       "latency_connections": 32, "path": PATH, "cpu_load": CPU_LOAD, "cpu_proxy": CPU_PROXY}}
    log(f"source {meta['source']['head'][:8]}, src dirty: {meta['source']['src_dirty']}, "
        f"uvloop: {uv or f'not importable from {a.uvloop_path} (engine-uvloop skipped)'}")
    work = Path(tempfile.mkdtemp(prefix="l7bench-"))
    os.chmod(work, 0o755)          # nginx workers run as nobody
    procs = Procs(work)
    error: BaseException | None = None
    sat: dict[str, Any] = {}
    lat: dict[str, Any] = {}
    prof: dict[str, Any] = {}
    mesh: dict[str, Any] = {}
    mesh_stage: MeshStage | None = None
    try:
        servers = Servers(a, procs, work)
        bench = Bench(a, servers, work)
        if not a.mesh_only:
            servers.start(uv is not None)
            meta["checks"] = servers.check()
            meta["engine_facts"] = servers.facts
            log("== saturation (wrk, keep-alive)")
            sat = bench.saturation(["direct", "nginx", "engine", "bare"]
                                   + (["engine-uvloop", "bare-uvloop"] if uv else []))
            log("== latency at half of the peak rate (open loop)")
            lat = bench.latency(sat)
            if not a.no_profile:
                log("== profiles of the engine under load")
                prof["pyspy"] = bench.pyspy()
                prof["cprofile"] = bench.cprofile()
            meta["access_log_lines"] = {n: sum(1 for _ in (work / f"{n}-access.log").open("rb"))
                                        for n in ("nginx", "engine") if (work / f"{n}-access.log").exists()}
            meta["engine_gc"] = {}
            for name in [n for n in procs.procs if n.startswith("engine")]:
                procs.stop(name)                 # at exit each engine prints its GC passes and pauses
                line = next((ln for ln in procs.log_text(name).splitlines() if ln.startswith('{"gc"')), None)
                meta["engine_gc"][name] = json.loads(line)["gc"] if line else None
        if not a.no_mesh:
            log("== part 2: in a local cluster (orientation)")
            for name in list(procs.procs):
                procs.stop(name)                 # part 1's servers: out of the way
            mesh_stage = MeshStage(a, procs, work, bench.foreign)
            mesh_stage.setup()
            mesh = mesh_stage.run(bench)
    except (Exception, KeyboardInterrupt, Terminated) as e:
        error = e
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        workers = {pid for name, pids in getattr(locals().get("servers"), "pids", {}).items()
                   if name == "backend" or name.startswith("nginx") for pid in pids[1:]}
        procs.stop_all()
        if mesh_stage is not None:
            mesh_stage.down()
        for pid in workers:                  # an nginx worker outlives a master that had to be killed
            with contextlib.suppress(OSError):
                if b"nginx: worker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)
        if error is None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"logs kept in {work}")
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if error is not None:
        log(f"failed: {type(error).__name__}: {error}")
        return 1
    summary = summarize(sat, lat) if sat else {}
    meta["loadavg_end"] = os.getloadavg()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "saturation": sat, "latency": lat, "profile": prof,
                               "mesh": mesh, "summary": summary}, indent=2) + "\n")
    md = ((markdown(sat, lat, summary, meta) if sat else "") + markdown_mesh(mesh) + markdown_profile(prof)
          + "\n")
    out.with_suffix(".md").write_text(md)
    print(md)
    log(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
