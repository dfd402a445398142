"""Benchmark of the control plane's configuration push: `apply` → every proxy has ACKed it.

Run as root from the repository root:

    .venv/bin/python bench/push_bench.py            # full run, writes bench/results/push.json
    .venv/bin/python bench/push_bench.py --quick    # (2, 100) only, 3 repetitions

For each (proxies, workloads) configuration it starts one control plane (and nothing else:
no network namespaces, no runners, no node agents) with state and runtime directories in
a temporary directory, loads the workloads as Pod objects through the API, connects real
`PushClient`s over mTLS WebSockets from a second process, and then times how long an
`apply` takes to be acknowledged by every proxy, as `GET /v1/proxies` reports it.

The control plane is pinned to CPU 0 (`taskset -c 0`); the proxies and this script to CPU 1.
Every process it starts is stopped by PID in a `finally`, and the temporary directories are
removed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
CONFIGS = ((2, 100), (2, 2000), (20, 100), (20, 2000))
REPEATS = 10
NAMESPACES = 10
PODS_PER_SERVICE = 10
APPLY_BATCH = 500
PODS_PER_NODE = 200          # a node's pod range is a /24 (253 usable addresses)
WAIT_LIMIT = 60.0            # seconds: every wait is bounded
POLL_INTERVAL = 0.002        # seconds between GETs of /v1/proxies while timing
CP_CPU, CLIENT_CPU = 0, 1


class BenchError(RuntimeError):
    """A step failed or ran out of time: the run stops (and still tears down)."""


# ---- child processes: the control plane and the proxies ------------------------------
def child_controlplane(cluster: str) -> int:
    """`zeromesh controlplane`, but a missing node namespace only costs that node's listener.

    MeshService.start catches OSError around opening the per-node listeners, but
    call_in_netns raises NetnsError (not an OSError) when the namespace does not exist, so
    the unmodified control plane exits at start in a cluster without namespaces. This shim
    turns that error into an OSError; nothing else of the control plane is changed.
    """
    from zeromesh.cli.main import main as zeromesh_main
    from zeromesh.controlplane import mesh
    from zeromesh.errors import NetnsError

    real = mesh.call_in_netns

    def call_in_netns(name: str, fn: Any) -> Any:
        try:
            return real(name, fn)
        except NetnsError as e:
            raise OSError(str(e)) from e

    mesh.call_in_netns = call_in_netns  # type: ignore[assignment]
    return zeromesh_main(["--cluster", cluster, "controlplane"])


def child_proxies(cluster: str, nodes: Sequence[str], port: int, ready_file: str,
                  stats_file: str) -> int:
    """One PushClient per node, as the node agent builds it, in one asyncio loop."""
    import asyncio
    import logging

    from zeromesh.local.state import Paths
    from zeromesh.nodeagent.agent import validate
    from zeromesh.push import protocol as p
    from zeromesh.push.client import PushClient, client_tls

    logging.basicConfig(level=logging.WARNING, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    paths = Paths(cluster)
    url = f"https://127.0.0.1:{port}/v1/stream"

    class TimedPushClient(PushClient):
        """Records how long the proxy takes to accept each update (copy, validate, swap)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.handled: list[tuple[bool, float]] = []

        async def _consider(self, upd: p.Update) -> p.Ack | p.Nack:
            t0 = time.perf_counter()
            try:
                return await super()._consider(upd)
            finally:
                self.handled.append((upd.full, time.perf_counter() - t0))

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        clients = []
        for node in nodes:
            cred = paths.node_credential(node)

            def tls(cred: Path = cred) -> Any:
                return client_tls(str(cred / "node-chain.pem"), str(cred / "node-key.pem"),
                                  str(paths.root_cert))
            clients.append(TimedPushClient(url, tls, p.Hello(p.NODE_AGENT, f"ztunnel-{node}", node),
                                           validate=validate))
        t0 = loop.time()
        tasks = [asyncio.create_task(c.run()) for c in clients]
        synced: list[float] = []

        async def first_sync(c: PushClient) -> None:
            await c.synced.wait()
            synced.append(loop.time() - t0)
        try:
            await asyncio.wait_for(asyncio.gather(*(first_sync(c) for c in clients)), WAIT_LIMIT)
        except TimeoutError:
            print(f"proxies: only {len(synced)}/{len(clients)} synced in {WAIT_LIMIT:.0f}s", flush=True)
        tmp = ready_file + ".tmp"
        Path(tmp).write_text(json.dumps({
            "synced_s": sorted(synced),
            "workloads": [len(c.state.get("workload", {})) for c in clients],
            "services": [len(c.state.get("service", {})) for c in clients]}))
        os.replace(tmp, ready_file)
        await stop.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        Path(tmp).write_text(json.dumps({
            "full_s": [s for c in clients for full, s in c.handled if full],
            "incremental_s": [s for c in clients for full, s in c.handled if not full]}))
        os.replace(tmp, stats_file)

    asyncio.run(run())
    return 0


# ---- helpers -------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    """Terminate one process we started (by its PID), then kill it if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=10)


def rss_kib(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def namespace_doc(i: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": f"pbns{i}", "labels": {"istio.io/dataplane-mode": "ambient"}}}


def pod_doc(ns: int, k: int, node: str, extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    labels = {"app": f"svc{k // PODS_PER_SERVICE}", **(extra_labels or {})}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"w{k}", "namespace": f"pbns{ns}", "labels": labels},
            "spec": {"nodeName": node, "containers": [{
                "name": "main", "image": "zeromesh/sleep", "command": ["/bin/sleep", "infinity"],
                "ports": [{"containerPort": 8080}]}]}}


def service_doc(ns: int, j: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"svc{j}", "namespace": f"pbns{ns}"},
            "spec": {"selector": {"app": f"svc{j}"}, "ports": [{"port": 80, "targetPort": 8080}]}}


def policy_doc(n: int) -> dict[str, Any]:
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": f"pb-allow-{n}", "namespace": "pbns0"},
            "spec": {"selector": {"matchLabels": {"app": "svc0"}}, "action": "ALLOW",
                     "rules": [{"from": [{"source": {
                         "principals": [f"cluster.local/ns/pbns1/sa/client{n}"]}}]}]}}


def wire(docs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {"documents": [{"file": "<push_bench>", "document": i, "body": d}
                          for i, d in enumerate(docs)]}


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def fmt_mib(kib: int) -> str:
    return f"{kib / 1024:.0f} MiB"


# ---- one configuration ---------------------------------------------------------------
class Config:
    """One control plane with W workloads and P proxies, torn down by `close`."""

    def __init__(self, proxies: int, workloads: int, repeats: int, root: Path) -> None:
        self.proxies = proxies
        self.workloads = workloads
        self.repeats = repeats
        self.root = root
        self.cluster = "pb" + secrets.token_hex(3)
        # Pods are spread over enough nodes that every pod gets an address (/24 per node);
        # only the first `proxies` nodes get a connected proxy. Every node agent receives
        # every workload, so the push does not depend on where the pods are.
        self.nodes = max(proxies, math.ceil(workloads / PODS_PER_NODE))
        self.cp: subprocess.Popen[bytes] | None = None
        self.px: subprocess.Popen[bytes] | None = None
        self.logs: list[Any] = []
        self.client: Any = None
        self.result: dict[str, Any] = {"proxies": proxies, "workloads": workloads,
                                       "nodes": self.nodes, "cluster": self.cluster}

    def log(self, msg: str) -> None:
        print(f"[P={self.proxies} W={self.workloads}] {msg}", file=sys.stderr, flush=True)

    def spawn(self, cpu: int, args: list[str], logname: str) -> subprocess.Popen[bytes]:
        f = open(self.root / logname, "wb")  # noqa: SIM115 - closed in close()
        self.logs.append(f)
        return subprocess.Popen(["taskset", "-c", str(cpu), sys.executable, str(Path(__file__).resolve()),
                                 *args], stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=os.environ.copy())

    def wait_for(self, what: str, check: Any, limit: float = WAIT_LIMIT, every: float = 0.05) -> Any:
        deadline = time.monotonic() + limit
        while True:
            for proc, name in ((self.cp, "control plane"), (self.px, "proxies")):
                if proc is not None and proc.poll() is not None:
                    raise BenchError(f"{name} exited ({proc.returncode}) while waiting for {what}; "
                                     f"see {self.root}")
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise BenchError(f"timed out after {limit:.0f}s waiting for {what}")
            time.sleep(every)

    def start_controlplane(self) -> None:
        from zeromesh.cli.client import Client
        from zeromesh.errors import ZeromeshError
        from zeromesh.local.state import ClusterConfig, Paths, save_config

        self.port = free_port()
        save_config(Paths(self.cluster), ClusterConfig(
            name=self.cluster, nodes=self.nodes, python="/usr/bin/python3", xds_port=self.port))
        self.cp = self.spawn(CP_CPU, ["_controlplane", "--cluster", self.cluster], "controlplane.log")
        self.client = Client(self.cluster, timeout=WAIT_LIMIT)

        def up() -> bool:
            try:
                return bool(self.client.call("GET", "/v1/info", timeout=2))
            except ZeromeshError:
                return False
        t0 = time.monotonic()
        self.wait_for("the control plane's API", up)
        self.result["cp_start_s"] = time.monotonic() - t0
        self.result["rss_empty_kib"] = rss_kib(self.cp.pid)["VmRSS"]

    def load(self) -> None:
        per_ns = self.workloads // NAMESPACES
        docs: list[dict[str, Any]] = [namespace_doc(i) for i in range(NAMESPACES)]
        node_names = [f"node{i}" for i in range(1, self.nodes + 1)]
        self.pods: list[tuple[int, int, str]] = []
        for n in range(self.workloads):
            ns, k = n % NAMESPACES, n // NAMESPACES
            self.pods.append((ns, k, node_names[n % self.nodes]))
        docs += [pod_doc(ns, k, node) for ns, k, node in self.pods]
        docs += [service_doc(ns, j) for ns in range(NAMESPACES)
                 for j in range(math.ceil(per_ns / PODS_PER_SERVICE))]
        t0 = time.monotonic()
        for i in range(0, len(docs), APPLY_BATCH):
            self.client.call("POST", "/v1/apply", wire(docs[i:i + APPLY_BATCH]), timeout=120)
        self.result["load_s"] = time.monotonic() - t0
        self.result["documents"] = len(docs)
        wl = self.client.call("GET", "/v1/mesh/workload")
        svc = self.client.call("GET", "/v1/mesh/service")
        self.result["mesh_workloads"] = len(wl)
        self.result["mesh_services"] = len(svc)
        self.result["mesh_hbone_workloads"] = sum(1 for w in wl.values() if w.get("protocol") == "HBONE")
        self.result["full_state_bytes"] = len(json.dumps({"workload": wl, "service": svc},
                                                         separators=(",", ":")))
        if len(wl) != self.workloads:
            raise BenchError(f"expected {self.workloads} mesh workloads, the model has {len(wl)}")
        if self.cp is not None:
            self.result["rss_loaded_kib"] = rss_kib(self.cp.pid)["VmRSS"]

    def proxies_view(self) -> list[dict[str, Any]]:
        return list(self.client.call("GET", "/v1/proxies")["proxies"])

    def all_acked(self, view: list[dict[str, Any]], revision: int) -> bool:
        if len(view) != self.proxies:
            return False
        for p in view:
            if p["nacks"]:
                raise BenchError(f"proxy {p['id']} NACKed: {p['last_nack']}")
            if not (p["in_sync"] and p["acked_version"] and int(p["acked_version"]) >= revision):
                return False
        return True

    def connect_proxies(self) -> None:
        ready = self.root / "proxies-ready.json"
        nodes = ",".join(f"node{i}" for i in range(1, self.proxies + 1))
        revision = int(self.client.call("GET", "/v1/info")["revision"])
        t0 = time.monotonic()
        self.px = self.spawn(CLIENT_CPU, ["_proxies", "--cluster", self.cluster, "--nodes", nodes,
                                          "--port", str(self.port), "--ready-file", str(ready),
                                          "--stats-file", str(self.root / "proxies-stats.json")],
                             "proxies.log")
        self.wait_for("every proxy in sync", lambda: self.all_acked(self.proxies_view(), revision),
                      every=0.01)
        self.result["initial_sync_s"] = time.monotonic() - t0
        info = json.loads(self.wait_for("the proxies' report", lambda: ready.exists() and ready.read_text()))
        self.result["initial_sync_in_client_s"] = max(info["synced_s"]) if info["synced_s"] else None
        if set(info["workloads"]) != {self.workloads}:
            raise BenchError(f"proxies hold {info['workloads']} workloads, expected {self.workloads}")
        self.connected_at = {p["id"]: p["connected_at"] for p in self.proxies_view()}
        assert self.cp is not None
        mem = rss_kib(self.cp.pid)
        self.result["rss_connected_kib"] = mem["VmRSS"]
        self.result["hwm_connected_kib"] = mem["VmHWM"]

    def time_apply(self, docs: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """t0 before the apply call; done when every proxy has ACKed the returned revision."""
        body = wire(docs)
        polls = 0
        t0 = time.perf_counter()
        res = self.client.call("POST", "/v1/apply", body)
        t_apply = time.perf_counter() - t0
        revision = int(res["revision"])
        if not any(r["action"] != "unchanged" for r in res["results"]):
            raise BenchError(f"apply changed nothing: {res['results']}")
        while True:
            view = self.proxies_view()
            polls += 1
            if self.all_acked(view, revision):
                elapsed = time.perf_counter() - t0
                break
            if time.perf_counter() - t0 > WAIT_LIMIT:
                raise BenchError(f"revision {revision} not ACKed by every proxy in {WAIT_LIMIT:.0f}s: "
                                 f"{view}")
            time.sleep(POLL_INTERVAL)
        if {p["id"]: p["connected_at"] for p in view} != self.connected_at:
            raise BenchError("a proxy reconnected during the measurement")
        return {"all_acked_s": elapsed, "apply_call_s": t_apply, "revision": revision, "polls": polls}

    def settle(self) -> None:
        time.sleep(0.1)
        revision = int(self.client.call("GET", "/v1/info")["revision"])
        self.wait_for("proxies to settle", lambda: self.all_acked(self.proxies_view(), revision), every=0.01)

    def measure(self) -> None:
        runs: dict[str, list[dict[str, Any]]] = {"policy": [], "pod_label": []}
        for n in range(self.repeats):
            self.settle()
            runs["policy"].append(self.time_apply([policy_doc(n)]))
        ns, k, node = self.pods[len(self.pods) // 2]
        for n in range(self.repeats):
            self.settle()
            runs["pod_label"].append(self.time_apply([pod_doc(ns, k, node, {"bench-rev": str(n)})]))
        self.result["runs"] = runs
        for kind, rs in runs.items():
            acked = [r["all_acked_s"] for r in rs]
            calls = [r["apply_call_s"] for r in rs]
            self.result[kind] = {"median_s": statistics.median(acked), "max_s": max(acked),
                                 "min_s": min(acked), "apply_call_median_s": statistics.median(calls)}
        assert self.cp is not None
        mem = rss_kib(self.cp.pid)
        self.result["rss_end_kib"] = mem["VmRSS"]
        self.result["hwm_end_kib"] = mem["VmHWM"]

    def run(self) -> dict[str, Any]:
        self.log(f"cluster {self.cluster}, {self.nodes} nodes, state in {self.root}")
        self.start_controlplane()
        self.log(f"control plane up in {self.result['cp_start_s']:.2f}s; loading workloads")
        self.load()
        self.log(f"loaded {self.result['documents']} documents in {self.result['load_s']:.2f}s; "
                 "connecting proxies")
        self.connect_proxies()
        self.log(f"all proxies in sync after {self.result['initial_sync_s']:.2f}s; measuring")
        self.measure()
        self.log(f"policy median {fmt_ms(self.result['policy']['median_s'])}, "
                 f"pod label median {fmt_ms(self.result['pod_label']['median_s'])}")
        self.stop_proxies()
        return self.result

    def stop_proxies(self) -> None:
        """Stop the proxies' process and read how long they took to handle each update."""
        stop_process(self.px)
        stats = self.root / "proxies-stats.json"
        if self.px is None or not stats.exists():
            raise BenchError(f"the proxies left no statistics (exit {self.px and self.px.returncode})")
        data = json.loads(stats.read_text())
        self.px = None
        inc = data["incremental_s"]
        self.result["proxy_update"] = {
            "full_median_s": statistics.median(data["full_s"]),
            "incremental_median_s": statistics.median(inc) if inc else None,
            "incremental_max_s": max(inc) if inc else None,
            "incremental_count": len(inc)}

    def close(self) -> None:
        for proc in (self.px, self.cp):
            with contextlib.suppress(Exception):
                stop_process(proc)
        for f in self.logs:
            f.close()


# ---- report ---------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    import zeromesh

    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    source = Path(zeromesh.__file__).resolve().parent
    repo = BENCH_DIR.parent
    commit, dirty = "", []
    if source.is_relative_to(repo):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            git = ["git", "-C", str(repo)]
            commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True, timeout=10).stdout.strip()
            dirty = subprocess.run([*git, "status", "--porcelain", "--", "src"],
                                   capture_output=True, text=True, timeout=10).stdout.splitlines()
    others = []
    with contextlib.suppress(OSError):
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                with contextlib.suppress(OSError):
                    cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    if "-m zeromesh" in cmd:
                        others.append(cmd.strip())
    return {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "hostname": socket.gethostname(), "cpu": cpu, "cpus": os.cpu_count(),
            "mem_gib": round(mem_kb / 1024 / 1024, 1), "kernel": platform.release(),
            "python": platform.python_version(), "zeromesh_source": str(source),
            "commit": commit, "src_uncommitted_changes": dirty,
            "loadavg_at_start": list(os.getloadavg()),
            "other_zeromesh_processes_at_start": len(others)}


def markdown(rows: list[dict[str, Any]]) -> str:
    out = ["| proxies | workloads | policy apply→all ACK (median / max) | pod label apply→all ACK "
           "(median / max) | `apply` call: policy / pod (median) | initial full sync "
           "| CP RSS (empty → loaded → proxies connected) | CP peak RSS |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        pol, pod = r["policy"], r["pod_label"]
        out.append(
            f"| {r['proxies']} | {r['workloads']} | {fmt_ms(pol['median_s'])} / {fmt_ms(pol['max_s'])} "
            f"| {fmt_ms(pod['median_s'])} / {fmt_ms(pod['max_s'])} "
            f"| {fmt_ms(pol['apply_call_median_s'])} / {fmt_ms(pod['apply_call_median_s'])} "
            f"| {fmt_ms(r['initial_sync_s'])} "
            f"| {fmt_mib(r['rss_empty_kib'])} → {fmt_mib(r['rss_loaded_kib'])} → "
            f"{fmt_mib(r['rss_connected_kib'])} | {fmt_mib(r['hwm_end_kib'])} |")
    out.append("")
    out.append("| proxies | workloads | nodes | documents | load time | full state (JSON) "
               "| one proxy accepts an update: full / incremental (median) |")
    out.append("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        pu = r["proxy_update"]
        inc = pu["incremental_median_s"]
        out.append(f"| {r['proxies']} | {r['workloads']} | {r['nodes']} | {r['documents']} "
                   f"| {r['load_s']:.1f} s | {r['full_state_bytes'] / 1024:.0f} KiB "
                   f"| {pu['full_median_s'] * 1000:.1f} ms / "
                   f"{'-' if inc is None else f'{inc * 1000:.2f} ms'} |")
    return "\n".join(out)


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd")
    c = sub.add_parser("_controlplane")
    c.add_argument("--cluster", required=True)
    c = sub.add_parser("_proxies")
    c.add_argument("--cluster", required=True)
    c.add_argument("--nodes", required=True)
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--ready-file", required=True)
    c.add_argument("--stats-file", required=True)
    parser.add_argument("--quick", action="store_true", help="(2, 100) only, 3 repetitions")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--out", default=None, help="JSON file (default bench/results/push.json)")
    parser.add_argument("--note", default="", help="free text stored with the results")
    args = parser.parse_args(argv)
    if args.cmd == "_controlplane":
        return child_controlplane(args.cluster)
    if args.cmd == "_proxies":
        return child_proxies(args.cluster, args.nodes.split(","), args.port, args.ready_file,
                             args.stats_file)

    if os.geteuid() != 0:
        raise SystemExit("run as root (the control plane keeps root-only state)")
    if shutil.which("taskset") is None:
        raise SystemExit("taskset (util-linux) is needed to pin the processes")
    configs = CONFIGS[:1] if args.quick else CONFIGS
    repeats = args.repeats or (3 if args.quick else REPEATS)
    out = Path(args.out) if args.out else BENCH_DIR / "results" / ("push-quick.json" if args.quick
                                                                 else "push.json")
    signal.signal(signal.SIGTERM, _sigterm)
    base = Path(tempfile.mkdtemp(prefix="zm-pushbench-"))
    os.chmod(base, 0o700)
    # Relocate state and runtime directories before anything imports zeromesh.local.state.
    os.environ["ZEROMESH_STATE_ROOT"] = str(base / "state")
    os.environ["ZEROMESH_RUN_ROOT"] = str(base / "run")
    os.sched_setaffinity(0, {CLIENT_CPU})
    machine = machine_info()
    rows: list[dict[str, Any]] = []
    try:
        for proxies, workloads in configs:
            root = base / f"p{proxies}-w{workloads}"
            root.mkdir()
            cfg = Config(proxies, workloads, repeats, root)
            try:
                rows.append(cfg.run())
            finally:
                cfg.close()
    except BenchError as e:
        print(f"push_bench: {e}", file=sys.stderr)
        for log in sorted(base.glob("*/*.log")):
            print(f"--- {log} (tail)", file=sys.stderr)
            print("\n".join(log.read_text(errors="replace").splitlines()[-15:]), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("push_bench: interrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(base, ignore_errors=True)
    table = markdown(rows)
    print(table)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "note": args.note, "repeats": repeats,
                               "poll_interval_s": POLL_INTERVAL, "results": rows,
                               "table": table}, indent=2) + "\n")
    print(f"\nwrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
