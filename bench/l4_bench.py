"""L4 data-plane benchmark: no mesh vs zeromesh (ztunnel HBONE mTLS) vs a stunnel mTLS pair.

Run as root from the repository root (needs iperf3, stunnel4, openssl, taskset, prlimit):

    .venv/bin/python bench/l4_bench.py            # full run (~5 min), writes bench/results/l4.json
    .venv/bin/python bench/l4_bench.py --quick    # smoke run (~1 min), bench/results/l4-quick.json

One 2-node cluster (`l4<6 hex>`), two pods: a client pod on node1 and a server pod
on node2. In the server pod's network namespace the script starts `iperf3 -s` and
`bench/l4/echo_server.py`; in the client pod's namespace it runs `iperf3 -c` and
`bench/l4/load_client.py` (processes started with `ip netns exec`, as root). The
same two pods carry three configurations, measured in this order:

1. `nomesh`: namespaces unlabelled, the client connects to the server pod's IP.
2. `stunnel`: namespaces unlabelled; a client stunnel in the client pod
   (127.0.0.1:15442/15445) speaks TLS 1.3 with client certificates to a server
   stunnel in the server pod (:15443/:15444), which forwards to 127.0.0.1:5201/9100.
3. `zeromesh`: both namespaces labelled `istio.io/dataplane-mode=ambient`; the
   client connects to the server pod's IP, the ztunnel captures it (15001), HBONE
   mTLS to 15008 on node2, which connects to the app.

Pinning (see bench/README.md): for bulk throughput and connections per second,
everything on the client side (client app, client stunnel / node1's agent) runs on
CPU 0 and everything on the server side on CPU 1; for request/response latency,
every process of the path is on CPU 0.

Every process the script starts is stopped by PID, and the cluster is torn down,
in `finally` blocks (also on an error, SIGINT or SIGTERM). Every loop is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import resource
import secrets
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
HELPERS = BENCH / "l4"
PY = "/usr/bin/python3"            # the helpers run under the system interpreter, stdlib only
CLIENT_NS, SERVER_NS = "l4-client", "l4-server"
IPERF_PORT, ECHO_PORT = 5201, 9100
ST_SRV_IPERF, ST_SRV_ECHO = 15443, 15444       # server stunnel, in the server pod
ST_CLI_IPERF, ST_CLI_ECHO = 15442, 15445       # client stunnel, on the client pod's loopback
CONFIGS = ("nomesh", "stunnel", "zeromesh")
AMBIENT = "istio.io/dataplane-mode=ambient"
STEP_TIMEOUT = 120.0
CPU_CLIENT, CPU_SERVER = "0", "1"
# open-files limit of every process we start: the hard limit we have (raising it needs CAP_SYS_RESOURCE)
_HARD = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
NOFILE = 65536 if _HARD == resource.RLIM_INFINITY else min(65536, _HARD)

MANIFEST = f"""\
apiVersion: v1
kind: Namespace
metadata: {{name: {CLIENT_NS}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: client, namespace: {CLIENT_NS}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: client, namespace: {CLIENT_NS}}}
spec:
  selector: {{matchLabels: {{app: client}}}}
  template:
    metadata: {{labels: {{app: client}}}}
    spec:
      serviceAccountName: client
      nodeSelector: {{name: node1}}
      containers: [{{name: client, image: curlimages/curl, command: [/bin/sleep, infinity]}}]
---
apiVersion: v1
kind: Namespace
metadata: {{name: {SERVER_NS}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: server, namespace: {SERVER_NS}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: server, namespace: {SERVER_NS}}}
spec:
  selector: {{matchLabels: {{app: server}}}}
  template:
    metadata: {{labels: {{app: server}}}}
    spec:
      serviceAccountName: server
      nodeSelector: {{name: node2}}
      containers: [{{name: echo, image: zeromesh/tcp-echo, ports: [{{containerPort: 9000}}]}}]
"""


class BenchError(RuntimeError):
    pass


class Terminated(BaseException):
    """SIGTERM: unwind through the finally blocks like Ctrl-C."""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(argv: Sequence[str], timeout: float = STEP_TIMEOUT, check: bool = True,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"`{' '.join(argv)}` timed out after {timeout:.0f}s") from e
    if check and proc.returncode != 0:
        raise BenchError(f"`{' '.join(argv)}` failed ({proc.returncode}): "
                         f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
    return proc


def zeromesh_cli() -> str:
    beside = Path(sys.executable).parent / "zeromesh"
    if beside.exists():
        return str(beside)
    found = shutil.which("zeromesh")
    if found is None:
        raise BenchError("zeromesh CLI not found; run with .venv/bin/python")
    return found


# ---- processes we start ---------------------------------------------------------------------
class Procs:
    """Every process this script starts; all are stopped by PID at the end."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: dict[str, subprocess.Popen[Any]] = {}

    def start(self, name: str, argv: Sequence[str]) -> subprocess.Popen[Any]:
        out = open(self.logdir / f"{name}.log", "wb")  # noqa: SIM115 - the child owns it
        try:
            p = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            out.close()
        self.procs[name] = p
        return p

    def stop(self, name: str) -> None:
        p = self.procs.pop(name, None)
        if p is None or p.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGTERM)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
            p.wait(5)

    def stop_all(self) -> None:
        for name in list(self.procs):
            try:
                self.stop(name)
            except Exception as e:  # keep going: every process must get its signal
                log(f"stopping {name}: {e}")

    def log_text(self, name: str) -> str:
        path = self.logdir / f"{name}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""


def netns_exec(netns: str, cpu: str, *argv: str) -> list[str]:
    """`ip netns exec` and `taskset` exec in place, so the Popen pid is the program's own."""
    return ["ip", "netns", "exec", netns, "prlimit", f"--nofile={NOFILE}:{NOFILE}",
            "taskset", "-c", cpu, *argv]


def pin(pids: Sequence[int], cpu: str) -> None:
    for pid in pids:
        run(["taskset", "-a", "-p", "-c", cpu, str(pid)], timeout=10)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


def cpu_seconds(pids: Sequence[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])          # utime, stime (all threads)
    return total / tick


class ForeignCpu:
    """CPU time used by processes that are not part of the measurement (other people's tests on a
    shared machine), short-lived ones included: the machine's busy time (user + nice + system in
    /proc/stat) minus what our processes (the cluster's daemons, our servers and tunnels, our
    clients, this script) and kernel threads (they carry our own traffic's softirq work) used.
    A run during which that exceeded DISTURBED of one CPU is repeated (at most RETRIES times);
    every attempt is recorded and the least disturbed one is kept."""

    DISTURBED = 0.10
    RETRIES = 2

    def __init__(self, cluster: str) -> None:
        self.markers = (f"--cluster {cluster} ", str(HELPERS), "iperf3", "stunnel",
                        f"/run/zeromesh/{cluster}/")
        self.tick = os.sysconf("SC_CLK_TCK")

    Snap = tuple[int, float, dict[int, tuple[int, int]]]

    def snapshot(self) -> Snap:
        """(machine busy ticks, our children's CPU seconds, {pid: (starttime, ticks)} of ours)."""
        ours: dict[int, tuple[int, int]] = {}
        me = os.getpid()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                raw = Path(f"/proc/{entry}/cmdline").read_bytes()
                cmd = raw.replace(b"\0", b" ").decode(errors="replace")
                if cmd and int(entry) != me and not any(m in cmd for m in self.markers):
                    continue            # someone else's
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ours[int(entry)] = (int(fields[19]), int(fields[11]) + int(fields[12]))   # starttime, cpu
        cpu = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        busy = int(cpu[0]) + int(cpu[1]) + int(cpu[2])
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return busy, ru.ru_utime + ru.ru_stime, ours

    def seconds(self, before: Snap) -> float:
        busy0, children0, ours0 = before
        busy1, children1, ours1 = self.snapshot()
        mine = 0
        for pid, (start, cpu) in ours1.items():
            old = ours0.get(pid)
            mine += cpu - old[1] if old is not None and old[0] == start else cpu
        return max(0.0, (busy1 - busy0 - mine) / self.tick - (children1 - children0))


# ---- the cluster ----------------------------------------------------------------------------
class Cluster:
    def __init__(self, name: str) -> None:
        self.name = name
        self.cli = zeromesh_cli()
        self.started = False

    def z(self, *args: str, timeout: float = STEP_TIMEOUT, input: str | None = None,
          check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([self.cli, "--cluster", self.name, *args], timeout=timeout, input=input, check=check)

    def up(self) -> None:
        self.started = True
        self.z("up", "--nodes", "2")

    def down(self) -> str:
        if not self.started:
            return ""
        proc = self.z("down", check=False, timeout=60)
        return "" if proc.returncode == 0 else (proc.stderr or proc.stdout)

    def pod(self, ns: str) -> dict[str, Any]:
        items = [p for p in json.loads(self.z("get", "pods", "-n", ns, "-o", "json").stdout)["items"]
                 if not p["metadata"].get("deletionTimestamp")]
        if len(items) != 1:
            raise BenchError(f"expected one pod in {ns}, got {len(items)}")
        return items[0]

    def wait_ready(self, ns: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(BenchError):
                p = self.pod(ns)
                if any(c.get("type") == "Ready" and c.get("status") == "True"
                       for c in p.get("status", {}).get("conditions") or []):
                    return p
            if time.monotonic() > deadline:
                raise BenchError(f"pod in {ns} not Ready after {timeout}s")
            time.sleep(0.2)

    def config(self) -> dict[str, Any]:
        return json.loads(Path(f"/var/lib/zeromesh/{self.name}/cluster.json").read_text())

    def agent_pid(self, node: str) -> int:
        pid = int(Path(f"/run/zeromesh/{self.name}/pids/nodeagent-{node}.pid").read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        if f"--cluster {self.name} nodeagent" not in cmdline:
            raise BenchError(f"pid {pid} is not {node}'s node agent: {cmdline}")
        return pid

    def _get(self, node: str, kind: str, path: str) -> bytes:
        port = self.config()["node_ports"][node][kind]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.read()

    def enrolled(self) -> set[str]:
        return {w["name"] for n in ("node1", "node2")
                for w in json.loads(self._get(n, "admin", "/config_dump"))["workloads"]
                if w.get("enrolled_here")}

    def wait_enrolled(self, pods: set[str], enrolled: bool, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            here = self.enrolled()
            if (pods <= here) if enrolled else not (pods & here):
                return
            if time.monotonic() > deadline:
                raise BenchError(f"enrollment of {pods} (want {enrolled}) not reached: {here}")
            time.sleep(0.2)

    def opened_total(self, node: str, reporter: str) -> float:
        text = self._get(node, "metrics", "/metrics").decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("istio_tcp_connections_opened_total{")
                   and f'reporter="{reporter}"' in line)


# ---- certificates for stunnel ---------------------------------------------------------------
def make_certs(d: Path, trust_domain: str = "cluster.local") -> None:
    """A mesh-like CA (EC P-256, as zeromesh's) and two leaf certificates with SPIFFE URI SANs."""
    ossl = "openssl"
    run([ossl, "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(d / "ca.key")])
    run([ossl, "req", "-x509", "-new", "-key", str(d / "ca.key"), "-subj", f"/O={trust_domain}",
         "-days", "2", "-out", str(d / "ca.pem"),
         "-addext", "basicConstraints=critical,CA:true",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    for name, ns, sa in (("client", CLIENT_NS, "client"), ("server", SERVER_NS, "server")):
        key, csr, ext = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.ext"
        run([ossl, "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key)])
        run([ossl, "req", "-new", "-key", str(key), "-subj", f"/O={trust_domain}", "-out", str(csr)])
        ext.write_text(f"subjectAltName=critical,URI:spiffe://{trust_domain}/ns/{ns}/sa/{sa}\n"
                       "keyUsage=critical,digitalSignature,keyEncipherment\n"
                       "extendedKeyUsage=serverAuth,clientAuth\n"
                       "basicConstraints=critical,CA:false\n")
        run([ossl, "x509", "-req", "-in", str(csr), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
             "-CAcreateserial", "-days", "1", "-extfile", str(ext), "-out", str(d / f"{name}.pem")])


def stunnel_conf(d: Path, side: str, server_ip: str, resume: bool = True) -> Path:
    """stunnel's defaults, except: TLS 1.3 only, client certificates required and verified against
    the CA, TCP_NODELAY on both sides, and the log (default level, one line per event) to stderr only:
    with syslog on, a pod namespace without /dev/log makes syslog(3) fall back to /dev/console,
    about 1 ms per line, which cut stunnel to ~90 connections/s."""
    common = (f"cert = {d / side}.pem\nkey = {d / side}.key\nCAfile = {d / 'ca.pem'}\n"
              "verifyChain = yes\nsslVersionMin = TLSv1.3\n"
              "socket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\n")
    if not resume:
        common += "sessionResume = no\n"
    text = "foreground = yes\npid =\nsyslog = no\ndebug = 5\n"
    if side == "server":
        for svc, acc, dst in (("iperf", ST_SRV_IPERF, IPERF_PORT), ("echo", ST_SRV_ECHO, ECHO_PORT)):
            text += (f"[{svc}]\naccept = 0.0.0.0:{acc}\nconnect = 127.0.0.1:{dst}\n"
                     f"requireCert = yes\n{common}")
    else:
        for svc, acc, dst in (("iperf", ST_CLI_IPERF, ST_SRV_IPERF), ("echo", ST_CLI_ECHO, ST_SRV_ECHO)):
            text += f"[{svc}]\nclient = yes\naccept = 127.0.0.1:{acc}\nconnect = {server_ip}:{dst}\n{common}"
    path = d / f"stunnel-{side}{'' if resume else '-noresume'}.conf"
    path.write_text(text)
    return path


# ---- measurements ---------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace, cluster: Cluster, procs: Procs, work: Path) -> None:
        self.a = args
        self.c = cluster
        self.procs = procs
        self.work = work
        self.client_netns = self.server_netns = self.server_ip = ""
        self.client_pod = self.server_pod = ""
        self.tunnel_pids: dict[str, list[int]] = {}   # config -> [client-side, server-side]
        self.foreign = ForeignCpu(cluster.name)

    def attempt(self, what: str, fn: Any) -> dict[str, Any]:
        """Run one measurement; again (bounded) if other processes took CPU meanwhile."""
        tries: list[dict[str, Any]] = []
        for _ in range(1 + ForeignCpu.RETRIES):
            before = self.foreign.snapshot()
            t0 = time.monotonic()
            r = fn()
            wall = time.monotonic() - t0
            r["foreign_cpu_share"] = self.foreign.seconds(before) / wall
            tries.append(r)
            if r["foreign_cpu_share"] <= ForeignCpu.DISTURBED:
                break
            log(f"  ({what}: other processes used {r['foreign_cpu_share']:.0%} of a CPU meanwhile; again)")
        best = min(tries, key=lambda x: x["foreign_cpu_share"])
        best["disturbed_attempts"] = [t for t in tries if t is not best]
        return best

    # where a configuration sends its traffic
    def target(self, cfg: str, kind: str) -> tuple[str, int]:
        if cfg == "stunnel":
            return "127.0.0.1", ST_CLI_IPERF if kind == "iperf" else ST_CLI_ECHO
        return self.server_ip, IPERF_PORT if kind == "iperf" else ECHO_PORT

    def client_run(self, cpu: str, *argv: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return run(netns_exec(self.client_netns, cpu, *argv), timeout=timeout, check=False)

    def helper(self, cpu: str, *argv: str, timeout: float = STEP_TIMEOUT) -> dict[str, Any]:
        proc = self.client_run(cpu, PY, str(HELPERS / "load_client.py"), *argv, timeout=timeout)
        try:
            out = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError) as e:
            raise BenchError(f"load_client {argv[0]}: {proc.stdout[-500:]} {proc.stderr[-1000:]}") from e
        if "error" in out:
            raise BenchError(f"load_client {argv[0]}: {out['error']}")
        return out

    def iperf(self, cfg: str, streams: int) -> dict[str, Any]:
        host, port = self.target(cfg, "iperf")
        pids = self.tunnel_pids.get(cfg, [])
        cpu0 = cpu_seconds(pids) if pids else 0.0
        proc = self.client_run(CPU_CLIENT, "iperf3", "-c", host, "-p", str(port), "-t", str(self.a.seconds),
                               "-P", str(streams), "-J", timeout=self.a.seconds + 60)
        cpu = (cpu_seconds(pids) - cpu0) if pids else None
        try:
            data = json.loads(proc.stdout)
        except json.JSONDecodeError as e:
            raise BenchError(f"iperf3 {cfg} -P {streams}: {proc.stdout[-500:]} {proc.stderr[-500:]}") from e
        if data.get("error"):
            raise BenchError(f"iperf3 {cfg} -P {streams}: {data['error']}")
        recv = data["end"]["sum_received"]
        out = {"streams": streams, "bytes": recv["bytes"], "seconds": recv["seconds"],
               "MBps": recv["bits_per_second"] / 8e6,
               "retransmits": data["end"].get("sum_sent", {}).get("retransmits")}
        if cpu is not None:
            out["tunnel_cpu_s"] = cpu
            out["tunnel_cpu_s_per_GB"] = cpu / (recv["bytes"] / 1e9) if recv["bytes"] else None
        time.sleep(0.3)
        return out

    def throughput(self, cfg: str) -> dict[str, Any]:
        res: dict[str, Any] = {}
        for streams in (1, 8):
            runs = []
            for i in range(self.a.bulk_repeats):
                r = self.attempt(f"{cfg} bulk", lambda s=streams: self.iperf(cfg, s))
                log(f"  {cfg}: {streams} stream(s), run {i + 1}: {r['MBps']:.0f} MB/s")
                runs.append(r)
            res[f"P{streams}"] = {"runs": runs, "median_MBps": statistics.median(r["MBps"] for r in runs)}
        return res

    def cps(self, cfg: str) -> dict[str, Any]:
        host, port = self.target(cfg, "echo")
        res: dict[str, Any] = {}
        for conc in (1, 8):
            runs = []
            for i in range(self.a.repeats):
                r = self.attempt(f"{cfg} conn/s", lambda c=conc: self.helper(
                    CPU_CLIENT, "cps", "--host", host, "--port", str(port), "--count", str(self.a.conns),
                    "--concurrency", str(c)))
                if r["failed"]:
                    raise BenchError(f"cps {cfg}: {r['failed']} connections failed: {r['errors']}")
                log(f"  {cfg}: conn/s (concurrency {conc}), run {i + 1}: {r['conn_per_s']:.0f}")
                runs.append(r)
            res[f"c{conc}"] = {"runs": runs, "median": statistics.median(r["conn_per_s"] for r in runs)}
        return res

    def latency(self, cfg: str) -> dict[str, Any]:
        """Everything of the path on CPU 0, then back to the node pinning."""
        server_side = [self.procs.procs["echo-server"].pid]
        tunnels = self.tunnel_pids.get(cfg, [])
        pin(server_side + tunnels, "0")
        try:
            host, port = self.target(cfg, "echo")
            runs = []
            for i in range(self.a.repeats):
                r = self.attempt(f"{cfg} latency", lambda: self.helper(
                    "0", "rr", "--host", host, "--port", str(port), "--size", "1024",
                    "--count", str(self.a.rtts), "--warmup", "200"))
                log(f"  {cfg}: 1 KB request/response, run {i + 1}: p50 {r['p50_us']:.0f} µs, "
                    f"p99 {r['p99_us']:.0f} µs")
                runs.append(r)
        finally:
            pin(server_side, CPU_SERVER)
            if tunnels:
                pin(tunnels[:1], CPU_CLIENT)
                pin(tunnels[1:], CPU_SERVER)
        return {"runs": runs, "p50_us": statistics.median(r["p50_us"] for r in runs),
                "p99_us": statistics.median(r["p99_us"] for r in runs)}

    def memory(self, cfg: str) -> dict[str, Any]:
        """RSS of the tunnel processes before / while holding N idle connections / after closing."""
        pids = self.tunnel_pids[cfg]
        host, port = self.target(cfg, "echo")
        before = [rss_kb(p) for p in pids]
        argv = netns_exec(self.client_netns, CPU_CLIENT, PY, str(HELPERS / "load_client.py"), "hold",
                          "--host", host, "--port", str(port), "--count", str(self.a.idle),
                          "--timeout", "300")
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
        try:
            assert p.stdout is not None and p.stdin is not None
            r, _, _ = select.select([p.stdout], [], [], 240)
            line = p.stdout.readline() if r else ""
            try:
                ready = json.loads(line)
            except json.JSONDecodeError as e:
                raise BenchError(f"hold {cfg}: {line!r} {p.stderr.read() if p.poll() is not None else ''}") \
                    from e
            if "ready" not in ready:
                raise BenchError(f"hold {cfg}: {ready}")
            time.sleep(1.5)
            during = [rss_kb(pid) for pid in pids]
            p.stdin.write("close\n")
            p.stdin.flush()
            out, _err = p.communicate(timeout=60)
            summary = json.loads(out.strip().splitlines()[-1])
        finally:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(5)
        time.sleep(1.5)
        after = [rss_kb(pid) for pid in pids]
        n = ready["ready"]
        per = [(d - b) / n for b, d in zip(before, during, strict=True)]
        log(f"  {cfg}: {n} idle connections: RSS KB {before} -> {during} -> {after} after closing "
            f"({sum(per):.1f} KB per connection)")
        return {"connections": n, "open_seconds": ready["open_seconds"], "rss_kb_before": before,
                "rss_kb_holding": during, "rss_kb_after_close": after, "kb_per_conn": per,
                "kb_per_conn_total": sum(per), "sample_alive": summary.get("sample_alive")}

    # ---- configurations ---------------------------------------------------------------------
    def setup(self) -> None:
        self.c.up()
        self.c.z("apply", "-f", "-", input=MANIFEST)
        client = self.c.wait_ready(CLIENT_NS)
        server = self.c.wait_ready(SERVER_NS)
        self.client_pod, self.server_pod = client["metadata"]["name"], server["metadata"]["name"]
        self.client_netns = f"zm.{self.c.name}.{CLIENT_NS}.{self.client_pod}"
        self.server_netns = f"zm.{self.c.name}.{SERVER_NS}.{self.server_pod}"
        self.server_ip = server["status"]["podIP"]
        if client["spec"].get("nodeName") != "node1" or server["spec"].get("nodeName") != "node2":
            raise BenchError("pods not on node1 / node2")
        log(f"client pod {self.client_pod} ({client['status']['podIP']}, node1), "
            f"server pod {self.server_pod} ({self.server_ip}, node2)")
        self.procs.start("iperf3-server", netns_exec(self.server_netns, CPU_SERVER, "iperf3", "-s",
                                                     "-p", str(IPERF_PORT)))
        self.procs.start("echo-server", netns_exec(self.server_netns, CPU_SERVER, PY,
                                                   str(HELPERS / "echo_server.py"), "--port", str(ECHO_PORT),
                                                   "--lifetime", "3600"))
        self.wait_listening()
        self.agents = [self.c.agent_pid("node1"), self.c.agent_pid("node2")]

    def wait_listening(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for name in ("iperf3-server", "echo-server"):
                if self.procs.procs[name].poll() is not None:
                    raise BenchError(f"{name} exited: {self.procs.log_text(name)}")
            ss = run(["ip", "netns", "exec", self.server_netns, "ss", "-Htln"], timeout=10).stdout
            if f":{IPERF_PORT} " in ss and f":{ECHO_PORT} " in ss:
                return
            if time.monotonic() > deadline:
                raise BenchError(f"servers not listening: {ss}")
            time.sleep(0.1)

    def start_stunnel(self, resume: bool = True) -> None:
        srv = stunnel_conf(self.work, "server", self.server_ip, resume)
        cli = stunnel_conf(self.work, "client", self.server_ip, resume)
        ps = self.procs.start("stunnel-server",
                              netns_exec(self.server_netns, CPU_SERVER, "stunnel", str(srv)))
        pc = self.procs.start("stunnel-client",
                              netns_exec(self.client_netns, CPU_CLIENT, "stunnel", str(cli)))
        deadline = time.monotonic() + 10
        while True:
            for name, p in (("stunnel-server", ps), ("stunnel-client", pc)):
                if p.poll() is not None:
                    raise BenchError(f"{name} exited: {self.procs.log_text(name)}")
            s1 = run(["ip", "netns", "exec", self.server_netns, "ss", "-Htln"], timeout=10).stdout
            s2 = run(["ip", "netns", "exec", self.client_netns, "ss", "-Htln"], timeout=10).stdout
            if f":{ST_SRV_ECHO} " in s1 and f":{ST_CLI_ECHO} " in s2:
                break
            if time.monotonic() > deadline:
                raise BenchError("stunnels not listening")
            time.sleep(0.1)
        self.tunnel_pids["stunnel"] = [pc.pid, ps.pid]

    def stop_stunnel(self) -> None:
        self.procs.stop("stunnel-client")
        self.procs.stop("stunnel-server")
        self.tunnel_pids.pop("stunnel", None)

    def enter_mesh(self) -> dict[str, Any]:
        self.c.z("label", "namespace", CLIENT_NS, AMBIENT)
        self.c.z("label", "namespace", SERVER_NS, AMBIENT)
        self.c.wait_enrolled({self.client_pod, self.server_pod}, True)
        pin(self.agents[:1], CPU_CLIENT)
        pin(self.agents[1:], CPU_SERVER)
        self.tunnel_pids["zeromesh"] = list(self.agents)
        # the traffic is tunnelled: the source reporter counts a probe connection
        before = self.c.opened_total("node1", "source")
        deadline = time.monotonic() + 20
        while True:
            self.helper(CPU_CLIENT, "cps", "--host", self.server_ip, "--port", str(ECHO_PORT), "--count", "3")
            if self.c.opened_total("node1", "source") >= before + 3:
                break
            if time.monotonic() > deadline:
                raise BenchError("probe connections were not counted by node1's ztunnel")
            time.sleep(0.5)
        limits = {n: Path(f"/proc/{pid}/limits").read_text() for n, pid in zip(("node1", "node2"),
                                                                             self.agents, strict=True)}
        return {"agent_nofile": {n: next((ln.split()[3:5] for ln in t.splitlines()
                                          if ln.startswith("Max open files")), None)
                                 for n, t in limits.items()}}

    def measure(self) -> dict[str, Any]:
        results: dict[str, Any] = {}
        for cfg in CONFIGS:
            log(f"== {cfg}")
            extra: dict[str, Any] = {}
            if cfg == "zeromesh":
                extra = self.enter_mesh()
                opened0 = (self.c.opened_total("node1", "source"),
                           self.c.opened_total("node2", "destination"))
            else:
                self.c.wait_enrolled({self.client_pod, self.server_pod}, False)
                if cfg == "stunnel":
                    self.start_stunnel()
            r: dict[str, Any] = {"throughput": self.throughput(cfg), "cps": self.cps(cfg),
                                 "latency": self.latency(cfg), **extra}
            if cfg != "nomesh":
                r["memory"] = self.memory(cfg)
            if cfg == "zeromesh":
                r["tunnelled_connections_counted"] = {
                    "node1_source": self.c.opened_total("node1", "source") - opened0[0],
                    "node2_destination": self.c.opened_total("node2", "destination") - opened0[1]}
            if cfg == "stunnel":
                self.stop_stunnel()
                log("  stunnel with sessionResume = no (a full handshake per connection):")
                self.start_stunnel(resume=False)
                r["cps_no_resumption"] = self.cps(cfg)
                self.stop_stunnel()
            results[cfg] = r
        return results


# ---- report ---------------------------------------------------------------------------------
def summarize(res: dict[str, Any]) -> dict[str, Any]:
    nm, st, zm = res["nomesh"], res["stunnel"], res["zeromesh"]

    def ratio(a: float, b: float) -> float | None:
        return a / b if b else None

    added = {c: {q: res[c]["latency"][f"{q}_us"] - nm["latency"][f"{q}_us"] for q in ("p50", "p99")}
             for c in ("stunnel", "zeromesh")}
    s: dict[str, Any] = {
        "bulk_1_ratio": ratio(zm["throughput"]["P1"]["median_MBps"], st["throughput"]["P1"]["median_MBps"]),
        "bulk_8_ratio": ratio(zm["throughput"]["P8"]["median_MBps"], st["throughput"]["P8"]["median_MBps"]),
        "cps_c1_ratio": ratio(zm["cps"]["c1"]["median"], st["cps"]["c1"]["median"]),
        "cps_c8_ratio": ratio(zm["cps"]["c8"]["median"], st["cps"]["c8"]["median"]),
        "cps_c1_ratio_vs_full_handshake": ratio(zm["cps"]["c1"]["median"],
                                                 st["cps_no_resumption"]["c1"]["median"]),
        "cps_c8_ratio_vs_full_handshake": ratio(zm["cps"]["c8"]["median"],
                                                 st["cps_no_resumption"]["c8"]["median"]),
        "added_latency_us": added,
        "added_p50_ratio": ratio(added["zeromesh"]["p50"], added["stunnel"]["p50"]),
        "zeromesh_kb_per_idle_conn": zm["memory"]["kb_per_conn_total"],
        "stunnel_kb_per_idle_conn": st["memory"]["kb_per_conn_total"],
    }
    def at_least(keys: tuple[str, str], bound: float) -> bool:
        vals = [s[k] for k in keys]
        return all(v is not None for v in vals) and min(vals) >= bound

    s["targets"] = {
        "bulk >= 0.8x stunnel (1 and 8 connections)": at_least(("bulk_1_ratio", "bulk_8_ratio"), 0.8),
        "new conn/s >= 2x stunnel (concurrency 1 and 8)": at_least(("cps_c1_ratio", "cps_c8_ratio"), 2.0),
        "p50 added latency <= 2x stunnel's": bool(s["added_p50_ratio"] is not None
                                                    and s["added_p50_ratio"] <= 2),
        "node-agent memory < 20 KB per idle connection (each agent)": max(zm["memory"]["kb_per_conn"]) < 20,
        "node-agent memory < 20 KB per idle connection (both agents together)":
            s["zeromesh_kb_per_idle_conn"] < 20,
    }
    return s


def markdown(res: dict[str, Any], s: dict[str, Any], meta: dict[str, Any]) -> str:
    def f0(x: float | None) -> str:
        return "-" if x is None else f"{x:,.0f}"

    def f2(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}x"

    lines = [f"L4 data plane, {meta['date']}, commit {meta['source']['head'][:8]}"
             f"{' + uncommitted src/ changes' if meta['source']['src_dirty'] else ''}"
             f"{' (quick)' if meta['quick'] else ''}", "",
             "| configuration | bulk, 1 conn (MB/s) | bulk, 8 conns (MB/s) | new conn/s (c=1) "
             "| new conn/s (c=8) | 1 KB RR p50 (µs) | p99 (µs) | added p50 / p99 (µs) "
             "| tunnel CPU s/GB (1 conn) "
             "| tunnel RSS per idle conn |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for cfg in CONFIGS:
        r = res[cfg]
        lat = r["latency"]
        added = ("-" if cfg == "nomesh" else
                 f"{s['added_latency_us'][cfg]['p50']:.0f} / {s['added_latency_us'][cfg]['p99']:.0f}")
        cpu = [x.get("tunnel_cpu_s_per_GB") for x in r["throughput"]["P1"]["runs"]]
        cpu_txt = "-" if None in cpu or not cpu else f"{statistics.median(cpu):.2f}"
        mem = r.get("memory")
        mem_txt = "-" if mem is None else (
            f"{mem['kb_per_conn_total']:.1f} KB ({' + '.join(f'{k:.1f}' for k in mem['kb_per_conn'])})")
        lines.append(f"| {cfg} | {f0(r['throughput']['P1']['median_MBps'])} "
                     f"| {f0(r['throughput']['P8']['median_MBps'])} | {f0(r['cps']['c1']['median'])} "
                     f"| {f0(r['cps']['c8']['median'])} | {lat['p50_us']:.0f} | {lat['p99_us']:.0f} "
                     f"| {added} "
                     f"| {cpu_txt} | {mem_txt} |")
        if cfg == "stunnel":
            nr = r["cps_no_resumption"]
            lines.append(f"| stunnel, sessionResume = no | | | {f0(nr['c1']['median'])} "
                         f"| {f0(nr['c8']['median'])} | | | | | |")
    lines += ["", "| zeromesh vs stunnel | measured | target | met |", "|---|---:|---:|---|"]
    t = list(s["targets"].values())
    lines.append(f"| bulk throughput, 1 / 8 connections | {f2(s['bulk_1_ratio'])} / {f2(s['bulk_8_ratio'])} "
                 f"| ≥ 0.8x | {'yes' if t[0] else 'no'} |")
    lines.append(f"| new connections/s, concurrency 1 / 8 "
                 f"| {f2(s['cps_c1_ratio'])} / {f2(s['cps_c8_ratio'])} (vs stunnel without resumption: "
                 f"{f2(s['cps_c1_ratio_vs_full_handshake'])} / {f2(s['cps_c8_ratio_vs_full_handshake'])}) "
                 f"| ≥ 2x | {'yes' if t[1] else 'no'} |")
    a = s["added_latency_us"]
    lines.append(f"| p50 latency added over no mesh "
                 f"| {a['zeromesh']['p50']:.0f} µs vs {a['stunnel']['p50']:.0f} µs "
                 f"= {f2(s['added_p50_ratio'])} | ≤ 2x | {'yes' if t[2] else 'no'} |")
    per_agent = res["zeromesh"]["memory"]["kb_per_conn"]
    lines.append(f"| node-agent memory per idle connection: node1 / node2 agent | "
                 f"{per_agent[0]:.1f} / {per_agent[1]:.1f} KB | < 20 KB each | {'yes' if t[3] else 'no'} |")
    lines.append(f"| ... both agents together (stunnel pair: {s['stunnel_kb_per_idle_conn']:.1f} KB) | "
                 f"{s['zeromesh_kb_per_idle_conn']:.1f} KB | < 20 KB | {'yes' if t[4] else 'no'} |")
    return "\n".join(lines)


def source_info() -> dict[str, Any]:
    def git(*args: str) -> str:
        return run(["git", "-C", str(ROOT), *args], timeout=30, check=False).stdout.strip()
    dirty = git("status", "--porcelain", "--", "src").splitlines()
    return {"head": git("rev-parse", "HEAD"), "src_dirty": bool(dirty), "src_status": dirty}


def machine_info() -> dict[str, Any]:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "?")
    tools = {}
    for cmd in (["iperf3", "--version"], ["stunnel", "-version"], ["openssl", "version"]):
        p = run(cmd, timeout=10, check=False)
        tools[cmd[0]] = ((p.stdout or "") + (p.stderr or "")).strip().splitlines()[0:3]
    return {"host": platform.node(), "cpu": cpu, "cpus": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "loadavg": os.getloadavg(), "tools": tools}


def other_clusters() -> list[str]:
    return [p.name for p in Path("/run/zeromesh").iterdir()] if Path("/run/zeromesh").exists() else []


def _sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: short and few")
    ap.add_argument("--out", type=Path, help="JSON output (default bench/results/l4[-quick].json)")
    ap.add_argument("--note", default="", help="free text stored with the results")
    a = ap.parse_args(argv)
    a.seconds = 2 if a.quick else 5
    a.repeats = 1 if a.quick else 3
    a.bulk_repeats = 1 if a.quick else 5
    a.conns = 200 if a.quick else 2000
    a.rtts = 1000 if a.quick else 5000
    a.idle = 100 if a.quick else 1000
    out = a.out or BENCH / "results" / ("l4-quick.json" if a.quick else "l4.json")
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 2
    missing = [t for t in ("iperf3", "stunnel", "openssl", "taskset", "prlimit", "ip", "ss")
               if shutil.which(t) is None]
    if missing or not Path(PY).exists():
        print(f"missing: {' '.join(missing) or PY} (apt-get install -y iperf3 stunnel4)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _sigterm)

    meta = {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "quick": a.quick,
            "note": a.note, "source": source_info(), "machine": machine_info(),
            "other_clusters_at_start": other_clusters(),
            "parameters": {"iperf_seconds": a.seconds, "repeats": a.repeats, "bulk_repeats": a.bulk_repeats,
                           "cps_connections": a.conns,
                           "rr_exchanges": a.rtts, "rr_size": 1024, "idle_connections": a.idle}}
    log(f"source {meta['source']['head'][:8]}, src dirty: {meta['source']['src_dirty']}")
    cluster = Cluster(f"l4{secrets.token_hex(3)}")
    work = Path(tempfile.mkdtemp(prefix="l4bench-"))
    procs = Procs(work)
    results: dict[str, Any] | None = None
    error: BaseException | None = None
    try:
        make_certs(work)
        bench = Bench(a, cluster, procs, work)
        log(f"cluster {cluster.name}: up")
        bench.setup()
        results = bench.measure()
    except (Exception, KeyboardInterrupt, Terminated) as e:
        error = e
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        procs.stop_all()
        down_err = cluster.down()
        leftover = [n for n in run(["ip", "netns", "list"], timeout=10, check=False).stdout.split()
                    if n.startswith(f"zm.{cluster.name}.")]
        if down_err or leftover:
            log(f"teardown of {cluster.name}: {down_err.strip()} leftovers: {leftover}")
        if error is None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"logs kept in {work}")
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if error is not None or results is None:
        log(f"failed: {type(error).__name__}: {error}")
        return 1
    summary = summarize(results)
    meta["loadavg_end"] = os.getloadavg()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": results, "summary": summary}, indent=2) + "\n")
    print(markdown(results, summary, meta))
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
