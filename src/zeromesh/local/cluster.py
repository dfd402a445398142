"""`zeromesh up` and `zeromesh down`: build the namespaces, start and stop the daemons.

Everything a cluster makes is found again from its name alone (namespace prefix,
state and runtime directories, pid files), so `down` cleans up even after a crash.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from zeromesh.controlplane import ingress as ingress_gw
from zeromesh.errors import ClusterError
from zeromesh.local import images
from zeromesh.local.plan import ClusterPlan
from zeromesh.local.state import RUN_ROOT, ClusterConfig, Paths, load_config, save_config
from zeromesh.netns import cmd, topology
from zeromesh.samples import SAMPLES, sample_path

if TYPE_CHECKING:
    from zeromesh.cli.client import Client

REQUIRED_TOOLS = ("ip", "nft", "setpriv")
PLUGIN_FILES = ("ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem")
Progress = Callable[[str], None]


def check_host() -> None:
    if os.geteuid() != 0:
        raise ClusterError("the local cluster needs root (network namespaces, nftables): "
                           "run zeromesh as root")
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if missing:
        raise ClusterError(f"missing host tools: {', '.join(missing)} "
                           "(apt-get install iproute2 nftables util-linux)")


def pod_python() -> str:
    """An interpreter the unprivileged pod user can run (the sample apps need only the stdlib)."""
    for cand in ("/usr/bin/python3", sys.executable):
        if cand and _world_usable(cand):
            return cand
    raise ClusterError("no Python interpreter is usable by unprivileged users "
                       "(apt-get install python3)")


def _world_usable(path: str) -> bool:
    p = Path(path).resolve()
    if not p.exists() or not os.stat(p).st_mode & 0o001:
        return False
    return all(os.stat(parent).st_mode & 0o001 for parent in p.parents)


def pid_alive(pid: int, marker: str) -> bool:
    """Alive *and* still ours: a recycled pid must never be signalled. A child that was just
    spawned can show an empty command line for an instant (its exec is still completing), so
    an empty one is read again briefly before the process counts as gone (a zombie stays empty)."""
    for _ in range(50):
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        if raw:
            return marker in raw.replace(b"\0", b" ").decode(errors="replace")
        time.sleep(0.002)
    return False


def _pidfile(paths: Paths, daemon: str) -> Path:
    return paths.pids / f"{daemon}.pid"


def _read_pid(paths: Paths, daemon: str) -> int | None:
    try:
        return int(_pidfile(paths, daemon).read_text().strip())
    except (OSError, ValueError):
        return None


def _daemon_args(daemon: str) -> list[str]:
    for kind in ("runner", "nodeagent"):
        if daemon.startswith(kind + "-"):
            return [kind, "--node", daemon.removeprefix(kind + "-")]
    return [daemon]


def free_port(preferred: int = 0) -> int:
    """A loopback port for the control plane's proxy endpoint, kept across restarts if free."""
    for port in ([preferred] if preferred else []) + [0]:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as the server binds it
        try:
            s.bind(("127.0.0.1", port))
            return int(s.getsockname()[1])
        except OSError:
            continue
        finally:
            s.close()
    raise ClusterError("no free loopback port")


def pick_ports(keys: Iterable[str], have: Mapping[str, int], free: Callable[[int], int],
               taken: Iterable[int] = ()) -> dict[str, int]:
    """A port per key: the recorded one when `free` gives it back, else a new one; never one in
    `taken` nor two alike (`free(0)` may hand the same ephemeral port out twice)."""
    used = set(taken)
    out: dict[str, int] = {}
    for key in keys:
        port = free(have.get(key, 0))
        for _ in range(100):
            if port not in used:
                break
            port = free(0)
        else:
            raise ClusterError("no free loopback port")
        used.add(port)
        out[key] = port
    return out


def _ports_in_use(cfg: ClusterConfig) -> set[int]:
    """The other loopback ports this cluster recorded (control plane, node agents)."""
    return {cfg.xds_port, cfg.cp_metrics_port,
            *(p for ports in cfg.node_ports.values() for p in ports.values())} - {0}


def _allocate_ingress(cfg: ClusterConfig, bound: bool) -> None:
    """Give the ingress Service ports their loopback ports; `bound`: a runner may hold the recorded
    ones open right now, so they are kept as they are."""
    if not cfg.ingress:
        cfg.ingress_ports = {}
    elif not (bound and set(cfg.ingress_ports) == set(ingress_gw.PORT_KEYS)):
        cfg.ingress_ports = pick_ports(ingress_gw.PORT_KEYS, cfg.ingress_ports, free_port,
                                       _ports_in_use(cfg))


def _sync_ingress(client: Client, cfg: ClusterConfig) -> None:
    """Tell a (possibly already running) control plane what cluster.json now says."""
    client.call("PUT", "/v1/ingress", {"ports": cfg.ingress_ports if cfg.ingress else None})


def _install_ca_plugin(paths: Paths, ca_dir: str) -> None:
    """Istio's plug-in CA layout, copied into the root-only state directory."""
    src = Path(ca_dir)
    missing = [f for f in PLUGIN_FILES if not (src / f).is_file()]
    if missing:
        raise ClusterError(f"--ca-dir {ca_dir}: missing {', '.join(missing)} "
                           f"(expected {', '.join(PLUGIN_FILES)})")
    if paths.ca_plugin.exists():
        shutil.rmtree(paths.ca_plugin)
    paths.ca_plugin.mkdir(parents=True, mode=0o700)
    for f in PLUGIN_FILES:
        shutil.copyfile(src / f, paths.ca_plugin / f)
        os.chmod(paths.ca_plugin / f, 0o600)


def _marker(cluster: str, daemon: str) -> str:
    """The daemon's command-line tail; the trailing space keeps node1 from matching node10."""
    return " ".join(["--cluster", cluster, *_daemon_args(daemon)]) + " "


def _daemon_running(paths: Paths, daemon: str) -> bool:
    pid = _read_pid(paths, daemon)
    return pid is not None and pid_alive(pid, _marker(paths.cluster, daemon))


def _start_daemon(paths: Paths, daemon: str) -> int:
    paths.logs.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths.pids.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(paths.logs / f"{daemon}.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "zeromesh", "--cluster", paths.cluster, *_daemon_args(daemon)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            close_fds=True, cwd="/")
    _pidfile(paths, daemon).write_text(str(proc.pid))
    return proc.pid


def _install_samples(paths: Paths) -> None:
    RUN_ROOT.mkdir(parents=True, exist_ok=True)
    os.chmod(RUN_ROOT, 0o755)
    paths.run.mkdir(parents=True, exist_ok=True)
    os.chmod(paths.run, 0o755)       # traversable: the sample apps live below; the socket is 0600
    paths.samples.mkdir(exist_ok=True)
    os.chmod(paths.samples, 0o755)
    for name in SAMPLES:
        src = sample_path(name)
        dst = paths.samples / src.name
        shutil.copyfile(src, dst)
        os.chmod(dst, 0o644)


def up(cluster: str, nodes: int | None, image_table: str | None, progress: Progress,
       timeout: float = 60.0, ca_dir: str | None = None,
       workload_cert_ttl: int | None = None, ingress: bool | None = None) -> ClusterConfig:
    """Start (or restart) the cluster. `ingress`: None keeps what the cluster had (a new one gets
    the ingress gateway), False leaves it out (`--no-ingress`), True installs it."""
    check_host()
    paths = Paths(cluster)
    cfg = load_config(paths)
    table = None
    if image_table:
        try:
            text = Path(image_table).read_text()
        except OSError as e:
            raise ClusterError(f"--image-table {image_table}: cannot read: {e.strerror}") from e
        try:
            table = images.parse_table(text, image_table)
        except ValueError as e:
            raise ClusterError(str(e)) from e
    if cfg is None:
        cfg = ClusterConfig(name=cluster, nodes=2 if nodes is None else nodes, image_table=table or {},
                            python=pod_python())
        ClusterPlan(cfg.name, cfg.nodes)   # validates the node count before anything is made
    else:
        if nodes is not None and nodes != cfg.nodes:
            raise ClusterError(
                f"cluster {cluster!r} was created with {cfg.nodes} nodes (state in {paths.state}); "
                f"run `zeromesh up --cluster {cluster}` without --nodes, or "
                f"`zeromesh down --cluster {cluster}` first to start over")
        if table is not None:
            cfg.image_table = table
        cfg.python = pod_python()
    if ca_dir:
        if (paths.ca / "root-cert.pem").exists() or paths.ca_plugin.exists():
            raise ClusterError(f"cluster {cluster!r} already has a CA; `zeromesh down --cluster "
                               f"{cluster}` first to start over with --ca-dir")
        _install_ca_plugin(paths, ca_dir)
    if workload_cert_ttl is not None:
        if workload_cert_ttl < 0:
            raise ClusterError("--workload-cert-ttl must be a number of seconds >= 0")
        cfg.workload_cert_ttl = workload_cert_ttl
    if not _daemon_running(paths, "controlplane"):
        cfg.xds_port = free_port(cfg.xds_port)
    for node in cfg.plan.node_names():
        if not _daemon_running(paths, f"nodeagent-{node}"):
            have = cfg.node_ports.get(node, {})
            cfg.node_ports[node] = {"metrics": free_port(have.get("metrics", 0)),
                                    "admin": free_port(have.get("admin", 0))}
    if not _daemon_running(paths, "controlplane"):
        # After the node agents' ports, so a fresh pick cannot collide with one of them.
        cfg.cp_metrics_port = pick_ports(["metrics"], {"metrics": cfg.cp_metrics_port}, free_port,
                                         _ports_in_use(cfg) - {cfg.cp_metrics_port})["metrics"]
    if ingress is not None:
        cfg.ingress = ingress
    _allocate_ingress(cfg, bound=any(_daemon_running(paths, f"runner-{n}")
                                     for n in cfg.plan.node_names()))
    save_config(paths, cfg)
    plan = cfg.plan
    progress(f"creating network: underlay and {plan.nodes} node namespace(s)")
    topology.create_underlay(plan)
    for node in plan.node_names():
        topology.create_node(plan, node)
    _install_samples(paths)
    if not _daemon_running(paths, "controlplane"):
        progress("starting control plane")
        _start_daemon(paths, "controlplane")
    from zeromesh.cli.client import Client  # the sync client lives with the CLI
    client = Client(cluster)
    deadline = time.monotonic() + timeout
    while not client.alive():
        if time.monotonic() > deadline or not _daemon_running(paths, "controlplane"):
            raise ClusterError(f"control plane did not start; see {paths.logs / 'controlplane.log'}")
        time.sleep(0.05)
    _sync_ingress(client, cfg)
    for node in plan.node_names():
        for daemon in (f"runner-{node}", f"nodeagent-{node}"):
            if not _daemon_running(paths, daemon):
                progress(f"starting the node agent of {node}" if daemon.startswith("nodeagent")
                         else f"starting {node}")
                _start_daemon(paths, daemon)
    waiting: set[str] = set(plan.node_names())
    shown = ""
    while waiting:
        nodes_objs = client.get("nodes").get("items", [])
        for n in nodes_objs:
            for c in n.get("status", {}).get("conditions", []):
                if c.get("type") == "Ready" and c.get("status") == "True":
                    waiting.discard(n["metadata"]["name"])
        msg = f"waiting for nodes: {', '.join(sorted(waiting))}" if waiting else ""
        if msg and msg != shown:
            progress(msg)
            shown = msg
        if not waiting:
            break
        if time.monotonic() > deadline:
            raise ClusterError(f"nodes not ready after {timeout:.0f}s: {', '.join(sorted(waiting))};"
                               f" see {paths.logs}")
        time.sleep(0.05)
    agents = {f"nodeagent~{n}~ztunnel-{n}" for n in plan.node_names()}
    shown = ""
    while True:
        synced = {px["id"] for px in client.call("GET", "/v1/proxies")["proxies"] if px["in_sync"]}
        waiting = agents - synced
        if not waiting:
            break
        msg = f"waiting for node agents: {', '.join(sorted(w.split('~')[1] for w in waiting))}"
        if msg != shown:
            progress(msg)
            shown = msg
        if time.monotonic() > deadline:
            raise ClusterError(f"node agents not in sync after {timeout:.0f}s: "
                               f"{', '.join(sorted(waiting))}; see {paths.logs}")
        time.sleep(0.05)
    return cfg


def install_ingress(cluster: str) -> tuple[ClusterConfig, bool]:
    """`zeromesh install --ingress` on a running cluster: record it (a restart keeps it), allocate
    its loopback ports, have the control plane create it. Returns (config, newly installed)."""
    check_host()
    from zeromesh.cli.client import Client
    paths = Paths(cluster)
    client = Client(cluster)
    cfg = load_config(paths)
    if cfg is None or not client.alive():
        raise client.not_running()
    fresh = not (cfg.ingress and set(cfg.ingress_ports) == set(ingress_gw.PORT_KEYS))
    if fresh:
        cfg.ingress = True
        _allocate_ingress(cfg, bound=False)    # not installed: no runner holds these ports
        save_config(paths, cfg)
    _sync_ingress(client, cfg)
    return cfg, fresh


def _stop_pid(pid: int, marker: str, grace: float) -> None:
    if not pid_alive(pid, marker):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not pid_alive(pid, marker):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def down(cluster: str, keep_state: bool, progress: Progress) -> None:
    check_host()
    paths = Paths(cluster)
    prefix = f"zm.{cluster}."
    daemons = sorted(p.stem for p in paths.pids.glob("*.pid")) if paths.pids.exists() else []
    runners = sorted((d for d in daemons if d != "controlplane"),
                     key=lambda d: not d.startswith("nodeagent"))
    if runners:
        progress(f"stopping {len(runners)} node daemon(s) and their pods")
    for d in runners:
        pid = _read_pid(paths, d)
        if pid is not None:
            _stop_pid(pid, _marker(cluster, d), grace=10)
    pid = _read_pid(paths, "controlplane")
    if pid is not None:
        progress("stopping control plane")
        _stop_pid(pid, _marker(cluster, "controlplane"), grace=5)
    names = topology.cluster_netns(prefix)
    if names:
        progress(f"removing {len(names)} network namespace(s)")
    # Pods first, then nodes, then the underlay: veth peers disappear with their namespace.
    order = sorted(names, key=lambda n: (n.endswith(".underlay"), n.count(".") == 2, n))
    for name in order:
        if topology.exists(name):
            for p in cmd.netns_pids(name):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
        topology.delete_netns(name)
    shutil.rmtree(paths.run, ignore_errors=True)
    if not keep_state:
        shutil.rmtree(paths.state, ignore_errors=True)
    left = topology.cluster_netns(prefix)
    if left:
        raise ClusterError(f"could not remove: {', '.join(left)}")
