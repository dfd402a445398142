"""Benchmark of the local cluster: apply→Ready latency of pods and `up`/`down` wall time.

Run as root from the repository root:

    .venv/bin/python bench/cluster_bench.py            # full run, writes bench/results/cluster.json
    .venv/bin/python bench/cluster_bench.py --quick    # 1 repetition, 1/10 pods, 2 nodes

This is a benchmark, not a test: it prints a Markdown table and records JSON. Every
cluster it makes gets a fresh `bench<6 hex>` name and is torn down in a `finally`, so an
error, a timeout or Ctrl-C never leaves namespaces or daemons behind.
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
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import zeromesh
from zeromesh.cli.client import ApiError, Client
from zeromesh.local.state import RUN_ROOT

STEP_TIMEOUT = 120.0      # seconds: any single step (up, down, apply→Ready, delete) is bounded
POLL_INTERVAL = 0.010     # seconds between GETs of the pod list
IMAGE = "zeromesh/http-echo"
PORT = 8080
BENCH_DIR = Path(__file__).resolve().parent


class BenchError(RuntimeError):
    """A step failed or ran out of time: the run stops (and still tears down)."""


# ---- helpers -------------------------------------------------------------------
def zeromesh_cli() -> str:
    """The CLI next to this interpreter, so the venv's zeromesh is the one measured."""
    beside = Path(sys.executable).parent / "zeromesh"
    if beside.exists():
        return str(beside)
    found = shutil.which("zeromesh")
    if found is None:
        raise BenchError("zeromesh CLI not found; run with .venv/bin/python")
    return found


def run_cli(cluster: str, *args: str, timeout: float = STEP_TIMEOUT) -> float:
    """Run one CLI command; returns its wall time. Output is kept only to explain a failure."""
    argv = [zeromesh_cli(), "--cluster", cluster, *args]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"`{' '.join(argv[1:])}` timed out after {timeout:.0f}s") from e
    elapsed = time.monotonic() - t0
    if proc.returncode != 0:
        raise BenchError(f"`{' '.join(argv[1:])}` failed ({proc.returncode}): "
                         f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
    return elapsed


def new_cluster_name() -> str:
    """`bench` + 6 hex chars = 11 chars: within the 20-char cluster name limit."""
    return f"bench{secrets.token_hex(3)}"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: defined for a single value, never interpolates past the data."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def is_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in pod.get("status", {}).get("conditions") or [])


def manifest(namespace: str, replicas: int) -> str:
    """Namespace + Deployment of the sample echo image with a containerPort + its Service."""
    return f"""\
apiVersion: v1
kind: Namespace
metadata:
  name: {namespace}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: echo
  namespace: {namespace}
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: echo
  template:
    metadata:
      labels:
        app: echo
    spec:
      containers:
        - name: echo
          image: {IMAGE}
          ports:
            - name: http
              containerPort: {PORT}
---
apiVersion: v1
kind: Service
metadata:
  name: echo
  namespace: {namespace}
spec:
  selector:
    app: echo
  ports:
    - name: http
      port: 80
      targetPort: http
"""


# ---- pod apply→Ready -----------------------------------------------------------
@dataclass
class PodRun:
    """One apply of N pods; times are seconds since the apply command was started."""

    pods: int
    namespace: str
    apply_cmd_s: float = math.nan
    all_ready_s: float = math.nan
    pod_ready_s: list[float] = field(default_factory=list)
    scheduled_median_s: float = math.nan   # first poll showing spec.nodeName
    running_median_s: float = math.nan     # first poll showing phase Running
    polls: int = 0
    poll_get_median_ms: float = math.nan
    poll_get_max_ms: float = math.nan
    delete_s: float = math.nan

    @property
    def pod_median(self) -> float:
        return statistics.median(self.pod_ready_s) if self.pod_ready_s else math.nan

    @property
    def pod_p90(self) -> float:
        return percentile(self.pod_ready_s, 90)

    @property
    def pod_max(self) -> float:
        return max(self.pod_ready_s, default=math.nan)


def measure_pods(cluster: str, replicas: int, run_no: int, workdir: Path) -> PodRun:
    """Apply N pods and poll the control plane every 10 ms, noting when each pod turns Ready.

    The apply runs in a thread so polling starts at once: a pod that is Ready before the CLI
    process has exited is still timed correctly.
    """
    ns = f"bench-{replicas}-{run_no}-{secrets.token_hex(2)}"
    path = workdir / f"{ns}.yaml"
    path.write_text(manifest(ns, replicas))
    run = PodRun(pods=replicas, namespace=ns)
    client = Client(cluster, timeout=10)
    apply_result: dict[str, Any] = {}

    def do_apply() -> None:
        try:
            apply_result["elapsed"] = run_cli(cluster, "apply", "-f", str(path))
        except BenchError as e:
            apply_result["error"] = e

    ready_at: dict[str, float] = {}
    scheduled_at: dict[str, float] = {}
    running_at: dict[str, float] = {}
    get_times: list[float] = []
    t0 = time.monotonic()
    applier = threading.Thread(target=do_apply, daemon=True)
    applier.start()
    deadline = t0 + STEP_TIMEOUT
    while True:
        g0 = time.monotonic()
        items = client.get("pods", ns)["items"]
        now = time.monotonic()
        get_times.append(now - g0)
        run.polls += 1
        for pod in items:
            name = pod["metadata"]["name"]
            if pod.get("spec", {}).get("nodeName"):
                scheduled_at.setdefault(name, now - t0)
            if pod.get("status", {}).get("phase") == "Running":
                running_at.setdefault(name, now - t0)
            if name not in ready_at and is_ready(pod) and not pod["metadata"].get(
                    "deletionTimestamp"):
                ready_at[name] = now - t0
        if "error" in apply_result:
            raise apply_result["error"]
        live = [p for p in items if not p["metadata"].get("deletionTimestamp")]
        if (len(live) == replicas and all(p["metadata"]["name"] in ready_at for p in live)
                and not applier.is_alive()):
            run.all_ready_s = max(ready_at[p["metadata"]["name"]] for p in live)
            break
        if now > deadline:
            raise BenchError(f"{ns}: only {len(ready_at)}/{replicas} pods Ready after "
                             f"{STEP_TIMEOUT:.0f}s")
        time.sleep(max(0.0, POLL_INTERVAL - (time.monotonic() - g0)))
    applier.join(timeout=STEP_TIMEOUT)
    run.apply_cmd_s = apply_result.get("elapsed", math.nan)
    run.pod_ready_s = sorted(ready_at[p["metadata"]["name"]] for p in live)
    run.poll_get_median_ms = statistics.median(get_times) * 1000
    run.poll_get_max_ms = max(get_times) * 1000
    names = [p["metadata"]["name"] for p in live]
    run.scheduled_median_s = statistics.median(scheduled_at.get(n, math.nan) for n in names)
    run.running_median_s = statistics.median(running_at.get(n, math.nan) for n in names)
    run.delete_s = delete_namespace(cluster, client, ns)
    return run


def delete_namespace(cluster: str, client: Client, ns: str) -> float:
    """Delete the run's namespace and wait until its pods and the namespace itself are gone,
    so the next run starts on an idle cluster."""
    t0 = time.monotonic()
    run_cli(cluster, "delete", "namespace", ns)
    deadline = t0 + STEP_TIMEOUT
    while time.monotonic() < deadline:
        if not client.get("pods", ns)["items"]:
            try:
                client.get("namespaces", "", ns)
            except ApiError as e:
                if e.status == 404:
                    return time.monotonic() - t0
                raise
        time.sleep(0.05)
    raise BenchError(f"namespace {ns} still not gone after {STEP_TIMEOUT:.0f}s")


# ---- up / down ---------------------------------------------------------------------
@dataclass
class UpDownRun:
    nodes: int
    cluster: str
    up_s: float = math.nan
    down_s: float = math.nan


class Clusters:
    """Every cluster name this process used, so `finally` can take each one down."""

    def __init__(self) -> None:
        self.live: list[str] = []
        self.made: list[str] = []

    def up(self, nodes: int) -> tuple[str, float]:
        name = new_cluster_name()
        self.live.append(name)      # recorded first: a half-made cluster is still torn down
        self.made.append(name)
        elapsed = run_cli(name, "up", "--nodes", str(nodes), "--timeout", str(STEP_TIMEOUT),
                          timeout=STEP_TIMEOUT + 30)
        return name, elapsed

    def down(self, name: str) -> float:
        elapsed = run_cli(name, "down", timeout=STEP_TIMEOUT)
        self.live.remove(name)
        return elapsed

    def teardown_all(self) -> None:
        """Take down every cluster still listed, then check nothing of them is left.

        A second Ctrl-C or SIGTERM is ignored meanwhile: interrupting a `down` halfway is
        exactly how namespaces and daemons would be left behind.
        """
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if self.live:
            print(f"tearing down {', '.join(self.live)}", file=sys.stderr, flush=True)
        for name in list(self.live):
            try:
                self.down(name)
                print(f"  tore down {name}", file=sys.stderr, flush=True)
            except BenchError as e:
                print(f"  WARNING: teardown of {name} failed: {e}", file=sys.stderr, flush=True)
        left = leftovers(self.made)
        if left:
            print(f"  WARNING: left behind: {', '.join(left)}; run `zeromesh --cluster NAME down`",
                  file=sys.stderr, flush=True)


def leftovers(names: Sequence[str]) -> list[str]:
    """Runtime directories or network namespaces that still carry one of `names`."""
    netns_dir = Path("/run/netns")
    spaces = [p.name for p in netns_dir.iterdir()] if netns_dir.is_dir() else []
    left = []
    for name in names:
        if (RUN_ROOT / name).exists():
            left.append(str(RUN_ROOT / name))
        left += [s for s in spaces if s.startswith(f"zm.{name}.")]
    return left


def measure_up_down(clusters: Clusters, nodes: int) -> UpDownRun:
    name, up_s = clusters.up(nodes)
    run = UpDownRun(nodes=nodes, cluster=name, up_s=up_s)
    run.down_s = clusters.down(name)
    return run


# ---- reporting -----------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    """Enough context to compare runs across machines and to spot a busy host."""
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
    if source.is_relative_to(repo):     # else: a snapshot on PYTHONPATH, named by --note
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            git = ["git", "-C", str(repo)]
            commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True, timeout=10).stdout.strip()
            dirty = subprocess.run([*git, "status", "--porcelain", "--", "src"],
                                   capture_output=True, text=True, timeout=10).stdout.splitlines()
    return {
        "hostname": socket.gethostname(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "mem_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "zeromesh_source": str(source),
        "commit": commit,
        "src_uncommitted_changes": dirty,
        "loadavg_at_start": list(os.getloadavg()),
    }


def other_clusters(mine: Sequence[str]) -> list[str]:
    """Clusters that are not ours but share the CPUs: they can skew the figures."""
    if not RUN_ROOT.is_dir():
        return []
    return sorted(p.name for p in RUN_ROOT.iterdir() if p.is_dir() and p.name not in mine)


def fmt(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.0f} ms"


def summarize_pods(runs: list[PodRun]) -> list[dict[str, Any]]:
    """One row per pod count: medians across runs; per-pod figures pooled over all runs."""
    rows = []
    for n in sorted({r.pods for r in runs}):
        rs = [r for r in runs if r.pods == n]
        pooled = [t for r in rs for t in r.pod_ready_s]
        rows.append({
            "pods": n, "runs": len(rs),
            "apply_cmd_median_s": statistics.median(r.apply_cmd_s for r in rs),
            "all_ready_median_s": statistics.median(r.all_ready_s for r in rs),
            "all_ready_min_s": min(r.all_ready_s for r in rs),
            "all_ready_max_s": max(r.all_ready_s for r in rs),
            "pod_median_s": statistics.median(pooled),
            "pod_p90_s": percentile(pooled, 90),
            "pod_max_s": max(pooled),
            "delete_median_s": statistics.median(r.delete_s for r in rs),
        })
    return rows


def summarize_up_down(runs: list[UpDownRun]) -> list[dict[str, Any]]:
    rows = []
    for n in sorted({r.nodes for r in runs}):
        rs = [r for r in runs if r.nodes == n]
        rows.append({
            "nodes": n, "runs": len(rs),
            "up_median_s": statistics.median(r.up_s for r in rs),
            "up_min_s": min(r.up_s for r in rs), "up_max_s": max(r.up_s for r in rs),
            "down_median_s": statistics.median(r.down_s for r in rs),
            "down_min_s": min(r.down_s for r in rs), "down_max_s": max(r.down_s for r in rs),
        })
    return rows


def markdown(pod_rows: list[dict[str, Any]], pod_runs: list[PodRun],
             ud_rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    m = meta["machine"]
    out = [
        f"Date {meta['date']}, {m['cpus']} CPU(s) {m['cpu'] or '?'}, {m['mem_gib']} GiB, "
        f"kernel {m['kernel']}, Python {m['python']}, "
        f"source {m['commit'] or m['zeromesh_source']}"
        f"{' + uncommitted changes' if m['src_uncommitted_changes'] else ''}; "
        f"pod cluster: {meta['pod_cluster_nodes']} nodes."
        + (f" Note: {meta['note']}" if meta["note"] else ""),
        "",
        "**Pods: apply → Ready** (per-pod figures pooled over all runs of a row)",
        "",
        "| pods | runs | `apply` cmd (median) | all Ready (median, min..max) "
        "| per-pod median | per-pod p90 | per-pod max | delete ns (median) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in pod_rows:
        out.append(
            f"| {r['pods']} | {r['runs']} | {fmt(r['apply_cmd_median_s'])} "
            f"| {fmt(r['all_ready_median_s'])} ({fmt(r['all_ready_min_s'])}.."
            f"{fmt(r['all_ready_max_s'])}) | {fmt(r['pod_median_s'])} | {fmt(r['pod_p90_s'])} "
            f"| {fmt(r['pod_max_s'])} | {fmt(r['delete_median_s'])} |")
    out += ["", "**Pods: every run** (scheduled/Running: median over the run's pods of the "
            "first poll that showed `spec.nodeName` / phase Running)", "",
            "| pods | run | `apply` cmd | scheduled | Running | all Ready | per-pod median "
            "| p90 | max | polls | GET median / max |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    counter: dict[int, int] = {}
    for r in pod_runs:
        counter[r.pods] = counter.get(r.pods, 0) + 1
        out.append(f"| {r.pods} | {counter[r.pods]} | {fmt(r.apply_cmd_s)} "
                   f"| {fmt(r.scheduled_median_s)} | {fmt(r.running_median_s)} "
                   f"| {fmt(r.all_ready_s)} | {fmt(r.pod_median)} | {fmt(r.pod_p90)} "
                   f"| {fmt(r.pod_max)} | {r.polls} "
                   f"| {r.poll_get_median_ms:.1f} / {r.poll_get_max_ms:.0f} ms |")
    out += ["", "**Cluster `up` / `down`** (fresh cluster each run)", "",
            "| nodes | runs | up median (min..max) | down median (min..max) |",
            "|---:|---:|---:|---:|"]
    for r in ud_rows:
        out.append(f"| {r['nodes']} | {r['runs']} | {fmt(r['up_median_s'])} "
                   f"({fmt(r['up_min_s'])}..{fmt(r['up_max_s'])}) | {fmt(r['down_median_s'])} "
                   f"({fmt(r['down_min_s'])}..{fmt(r['down_max_s'])}) |")
    return "\n".join(out)


# ---- main ----------------------------------------------------------------------------
def _sigterm(signum: int, frame: Any) -> None:
    """Turn SIGTERM into an exception so the `finally` teardown runs."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 repetition each, 1/10 pods, 2 nodes")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON output (default bench/results/cluster.json, "
                        "cluster-quick.json with --quick)")
    p.add_argument("--note", default="",
                   help="free text recorded with the results (e.g. which source snapshot ran)")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("error: the local cluster needs root", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _sigterm)

    if args.quick:
        pod_plan, node_plan = [(1, 1), (10, 1)], [(2, 1)]
    else:
        pod_plan, node_plan = [(1, 10), (10, 3), (50, 3)], [(2, 3), (5, 3)]
    pod_cluster_nodes = 2
    out_path = args.out or BENCH_DIR / "results" / (
        "cluster-quick.json" if args.quick else "cluster.json")

    meta: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "quick": args.quick,
        "note": args.note,
        "pod_cluster_nodes": pod_cluster_nodes,
        "poll_interval_s": POLL_INTERVAL,
        "step_timeout_s": STEP_TIMEOUT,
        "image": IMAGE,
    }
    clusters = Clusters()
    pod_runs: list[PodRun] = []
    ud_runs: list[UpDownRun] = []
    try:
        name, up_s = clusters.up(pod_cluster_nodes)
        meta["other_clusters_running"] = other_clusters([name])
        print(f"pod cluster {name} up in {up_s:.1f}s; other clusters on this host: "
              f"{meta['other_clusters_running'] or 'none'}", file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix="zm-bench-") as tmp:
            for replicas, reps in pod_plan:
                for i in range(1, reps + 1):
                    r = measure_pods(name, replicas, i, Path(tmp))
                    pod_runs.append(r)
                    print(f"  {replicas:>2} pod(s) run {i}/{reps}: apply {fmt(r.apply_cmd_s)}, "
                          f"all Ready {fmt(r.all_ready_s)}, per-pod median "
                          f"{fmt(r.pod_median)}, delete {fmt(r.delete_s)}", file=sys.stderr)
        clusters.down(name)
        for nodes, reps in node_plan:
            for i in range(1, reps + 1):
                u = measure_up_down(clusters, nodes)
                ud_runs.append(u)
                print(f"  {nodes} node(s) run {i}/{reps}: up {u.up_s:.2f}s, "
                      f"down {u.down_s:.2f}s", file=sys.stderr)
    finally:
        clusters.teardown_all()

    meta["loadavg_at_end"] = list(os.getloadavg())
    pod_rows = summarize_pods(pod_runs)
    ud_rows = summarize_up_down(ud_runs)
    table = markdown(pod_rows, pod_runs, ud_rows, meta)
    print(table)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps({
        **meta,
        "pods_summary": pod_rows,
        "pod_runs": [{**asdict(r), "pod_median_s": r.pod_median, "pod_p90_s": r.pod_p90,
                      "pod_max_s": r.pod_max} for r in pod_runs],
        "up_down_summary": ud_rows,
        "up_down_runs": [asdict(u) for u in ud_runs],
        "markdown": table,
    }, indent=2) + "\n")
    print(f"\nwrote {out_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
