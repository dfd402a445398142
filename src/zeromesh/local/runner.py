"""The per-node runner: kubelet (pod namespaces, processes, restarts, readiness), kube-proxy
(ClusterIP translation in the node namespace) and cluster DNS for its node's pods.

It follows the control plane with a watch and acts on what concerns its node.
It is not the mesh's node agent: restarting a node agent never touches it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import ipaddress
import json
import logging
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from zeromesh.controlplane import objects as o
from zeromesh.errors import ClusterError, NetnsError, NotFound
from zeromesh.gateway.forwarded import PROXY_CONFIG_ANNOTATION, trusted_hops_from_annotations
from zeromesh.local import images, servicerules
from zeromesh.local.cpclient import ControlPlaneClient
from zeromesh.local.dns import DnsServer
from zeromesh.local.dnsanswer import DnsRecords
from zeromesh.local.plan import ClusterPlan, veth_name
from zeromesh.local.state import ClusterConfig, Paths
from zeromesh.netns import cmd, topology
from zeromesh.netns.enter import call_in_netns

log = logging.getLogger("zeromesh.runner")

POD_UID = 65534                # nobody: pod processes never run as root
POD_GID = 65534
PROXY_UID_BASE = 1_000_000     # mesh proxies: one uid per pod, far from any real account
XDS_NODE_PORT = 15012          # the control plane's mTLS endpoint on every node's gateway address
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
# Images that are zeromesh's own components, run from this installation (not the image table).
COMPONENT_IMAGES = {"zeromesh/waypoint": ["-m", "zeromesh", "--cluster", "{cluster}", "waypoint-proxy"],
                    "zeromesh/ingressgateway": ["-m", "zeromesh.gateway.process", "--cluster", "{cluster}"]}
INGRESS_IMAGE = "zeromesh/ingressgateway"


def proxy_uid(pod_ip: str) -> int:
    """Unique per pod address within a cluster, so proxies cannot read each other's keys."""
    return PROXY_UID_BASE + int(ipaddress.IPv4Address(pod_ip)) % (1 << 24)
WATCHED = ("pods", "services", "endpoints", "secrets", "configmaps")
BACKOFF_START, BACKOFF_MAX, BACKOFF_RESET = 1.0, 30.0, 10.0
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def resolv_conf(namespace: str, nameserver: str) -> str:
    return (f"nameserver {nameserver}\n"
            f"search {namespace}.svc.cluster.local svc.cluster.local cluster.local\n"
            "options ndots:5\n")


class Container:
    """One container's process, restarts and status."""

    def __init__(self, pod: PodRuntime, spec: dict[str, Any]) -> None:
        self.pod = pod
        self.spec = spec
        self.name: str = spec["name"]
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.state: dict[str, Any] = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: dict[str, Any] = {}
        self.task: asyncio.Task[None] | None = None
        self.stopping = False

    async def supervise(self) -> None:
        backoff = BACKOFF_START
        policy = self.pod.obj["spec"].get("restartPolicy", "Always")
        while not self.stopping:
            argv_env = self.pod.runner.command_for(self.pod.obj, self.spec)
            if isinstance(argv_env, images.ImageMissing):
                self.state = {"waiting": {"reason": argv_env.reason, "message": argv_env.message}}
                self.pod.changed()
                await self.pod.runner.event(self.pod.obj, "Warning", "Failed",
                                            f"container {self.name}: {argv_env.message}")
                return
            argv, env = argv_env
            started = time.monotonic()
            try:
                await self._start(argv, env)
            except (OSError, NetnsError) as e:
                self.state = {"waiting": {"reason": "StartError", "message": str(e)}}
                self.pod.changed()
                await self.pod.runner.event(self.pod.obj, "Warning", "Failed",
                                            f"container {self.name} failed to start: {e}")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            assert self.proc is not None
            code = await self.proc.wait()
            finished = o.now()
            if self.stopping:
                return
            ran = time.monotonic() - started
            reason = "Completed" if code == 0 else "Error"
            self.last_state = {"terminated": {"exitCode": code, "reason": reason,
                                              "startedAt": self.state.get("running", {}).get(
                                                  "startedAt", finished),
                                              "finishedAt": finished}}
            log.info("pod %s container %s exited with %s after %.1fs",
                     self.pod.key, self.name, code, ran)
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                self.state = copy.deepcopy(self.last_state)
                self.last_state = {}
                self.pod.changed()
                return
            if ran >= BACKOFF_RESET:
                backoff = BACKOFF_START
            self.restarts += 1
            self.state = {"waiting": {"reason": "CrashLoopBackOff",
                                      "message": f"back-off {backoff:.0f}s restarting failed "
                                                 f"container={self.name} pod={self.pod.name}"}}
            self.pod.changed()
            await self.pod.runner.event(self.pod.obj, "Warning", "BackOff",
                                        f"Back-off restarting failed container {self.name}")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _start(self, argv: list[str], extra_env: dict[str, str]) -> None:
        pod = self.pod
        env = pod.env_for(self.spec, extra_env)
        argv = [images.expand(a, env) for a in argv]
        logfile = pod.runner.paths.pod_log(pod.namespace, pod.name, self.name)
        logfile.parent.mkdir(parents=True, exist_ok=True)
        if images.image_key(self.spec.get("image", "")) in COMPONENT_IMAGES:
            await self._start_component(argv, env, logfile)
        else:
            with open(logfile, "ab", buffering=0) as out:
                self.proc = await asyncio.create_subprocess_exec(
                    "ip", "netns", "exec", pod.netns,
                    "setpriv", f"--reuid={POD_UID}", f"--regid={POD_GID}", "--clear-groups",
                    "--", *argv,
                    stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                    cwd=self.spec.get("workingDir") or "/", start_new_session=True)
        self.state = {"running": {"startedAt": o.now()}}
        log.info("pod %s container %s started pid %d: %s", pod.key, self.name, self.proc.pid,
                 " ".join(argv))
        pod.changed()

    async def _start_component(self, argv: list[str], env: dict[str, str], logfile: Path) -> None:
        """A mesh proxy (waypoint): it starts as root in the pod's netns, reads the pod's bootstrap
        credential from a pipe, and drops to a uid of its own (never the apps' 65534)."""
        pod = self.pod
        cred = await pod.runner.cp.call("POST", "/v1/bootstrap-credential",
                                        json={"namespace": pod.namespace, "pod": pod.name})
        uid = proxy_uid(pod.ip)
        private = pod.runner.paths.run / "proxies" / f"{pod.namespace}.{pod.name}"
        if private.exists():
            shutil.rmtree(private)
        private.mkdir(parents=True, mode=0o700)
        os.chown(private, uid, uid)
        env = {**env, "ZEROMESH_PROXY_DIR": str(private), "PYTHONUNBUFFERED": "1",
               "TRUST_DOMAIN": pod.runner.cfg.trust_domain,
               "ZEROMESH_XDS": f"{pod.runner.plan.node_gateway(pod.runner.node)}:{XDS_NODE_PORT}",
               "GATEWAY_NAME": o.labels(pod.obj).get(GATEWAY_NAME_LABEL, pod.name)}
        argv = [a.replace("{cluster}", pod.runner.cfg.name) for a in argv]
        # The ingress gateway accepts on the host's loopback itself (the local LoadBalancer
        # address), so it sees every client's real address: the runner opens those sockets.
        listeners: list[socket.socket] = []
        if images.image_key(self.spec.get("image", "")) == INGRESS_IMAGE:
            # Asked afresh: `install --ingress` may have allocated the ports after this runner started.
            current = await pod.runner.cp.call("GET", "/v1/config")
            env["TRUSTED_HOPS"] = str(await pod.runner.mesh_trusted_hops())
            for gw_port, host_port in sorted((current.get("ingress_ports") or {}).items()):
                ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    ls.bind(("127.0.0.1", int(host_port)))
                    ls.listen(1024)
                except OSError as e:
                    ls.close()
                    log.error("ingress gateway: cannot listen on 127.0.0.1:%s: %s", host_port, e)
                    continue
                listeners.append(ls)
                argv += ["--listen", f"{gw_port}={ls.fileno()}"]
        r, w = os.pipe()
        try:
            with open(logfile, "ab", buffering=0) as out:
                self.proc = await asyncio.create_subprocess_exec(
                    "ip", "netns", "exec", pod.netns, sys.executable, *argv,
                    "--credential-fd", str(r), "--uid", str(uid),
                    stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                    pass_fds=(r, *(ls.fileno() for ls in listeners)), cwd="/", start_new_session=True)
            os.close(r)
            r = -1
            with os.fdopen(w, "wb") as f:
                w = -1
                f.write(json.dumps(cred).encode())
        finally:
            for fd in (r, w):
                if fd >= 0:
                    os.close(fd)
            for ls in listeners:       # the gateway holds its own copies now
                ls.close()

    async def stop(self, grace: float = 3.0) -> None:
        self.stopping = True
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task

    def status(self) -> dict[str, Any]:
        st: dict[str, Any] = {
            "name": self.name, "image": self.spec.get("image", ""),
            "ready": "running" in self.state and self.pod.ports_ready,
            "restartCount": self.restarts, "started": "running" in self.state,
            "state": copy.deepcopy(self.state)}
        if self.last_state:
            st["lastState"] = copy.deepcopy(self.last_state)
        if self.proc is not None and "running" in self.state:
            st["containerID"] = f"process://{self.proc.pid}"
        return st


class PodRuntime:
    def __init__(self, runner: Runner, obj: dict[str, Any]) -> None:
        self.runner = runner
        self.obj = obj
        md = obj["metadata"]
        self.namespace: str = md["namespace"]
        self.name: str = md["name"]
        self.uid: str = md["uid"]
        self.key = f"{self.namespace}/{self.name}"
        self.netns = runner.plan.pod_netns(self.namespace, self.name)
        self.ip: str = obj["status"]["podIP"]
        self.containers = [Container(self, c) for c in obj["spec"].get("containers", [])]
        self.ports_ready = False
        self.started_at = o.now()
        self.tasks: list[asyncio.Task[Any]] = []
        self._dirty = asyncio.Event()
        self.last_reported: dict[str, Any] | None = None

    def changed(self) -> None:
        self._dirty.set()

    def env_for(self, spec: dict[str, Any], extra: dict[str, str]) -> dict[str, str]:
        ports = [str(p["containerPort"]) for p in spec.get("ports") or []]
        pod = self.obj
        env = {
            "PATH": PATH, "HOME": "/tmp", "HOSTNAME": self.name, "LANG": "C.UTF-8",
            "POD_NAME": self.name, "POD_NAMESPACE": self.namespace, "POD_IP": self.ip,
            "NODE_NAME": self.runner.node,
            "SERVICE_ACCOUNT": pod["spec"].get("serviceAccountName", "default"),
            "PORTS": ",".join(ports), "ZEROMESH_SERVICES": ",".join(self.runner.services_of(pod)),
        }
        if ports:
            env["PORT"] = ports[0]
        env.update(extra)
        for e in spec.get("env") or []:
            if "value" in e:
                env[e["name"]] = images.expand(str(e["value"]), env)
            elif "valueFrom" in e:
                val = self.runner.value_from(pod, e["valueFrom"])
                if val is not None:
                    env[e["name"]] = val
        return env

    async def start(self) -> None:
        plan = self.runner.plan
        node = self.runner.node
        net = topology.PodNetwork(
            netns=self.netns, node_netns=plan.node_netns(node), veth=veth_name(self.uid),
            ip=ipaddress.IPv4Address(self.ip), gateway=plan.node_gateway(node),
            resolv_conf=resolv_conf(self.namespace, str(plan.node_gateway(node))),
            hosts=f"127.0.0.1\tlocalhost\n::1\tlocalhost\n{self.ip}\t{self.name}\n")
        # A namespace left by an earlier runner may still hold its processes: stop them.
        for pid in cmd.netns_pids(self.netns) if topology.exists(self.netns) else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await asyncio.to_thread(topology.create_pod, net)
        for c in self.containers:
            c.task = asyncio.create_task(c.supervise())
        self.tasks.append(asyncio.create_task(self._probe_loop()))
        self.tasks.append(asyncio.create_task(self._report_loop()))
        self.changed()

    async def _probe_loop(self) -> None:
        """Ready when every declared TCP containerPort accepts; fast at first, then every second."""
        ports = [int(p["containerPort"]) for c in self.obj["spec"].get("containers", [])
                 for p in c.get("ports") or [] if p.get("protocol", "TCP") == "TCP"]
        t0 = time.monotonic()
        while True:
            running = all("running" in c.state for c in self.containers)
            ok = running and (not ports or await self._ports_open(ports))
            if ok != self.ports_ready:
                self.ports_ready = ok
                self.changed()
            await asyncio.sleep(0.05 if time.monotonic() - t0 < 5 and not ok else 1.0)

    async def _ports_open(self, ports: list[int]) -> bool:
        def make() -> list[socket.socket]:
            return [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in ports]
        try:
            socks = await asyncio.to_thread(call_in_netns, self.netns, make)
        except (OSError, NetnsError):
            return False
        loop = asyncio.get_running_loop()
        try:
            for s, port in zip(socks, ports, strict=True):
                s.setblocking(False)
                try:
                    await asyncio.wait_for(loop.sock_connect(s, (self.ip, port)), 0.5)
                except (OSError, TimeoutError):
                    return False
            return True
        finally:
            for s in socks:
                s.close()

    def build_status(self) -> dict[str, Any]:
        base = self.obj.get("status", {})
        st: dict[str, Any] = {k: copy.deepcopy(base[k]) for k in ("podIP", "podIPs", "hostIP")
                              if k in base}
        cs = [c.status() for c in self.containers]
        terminated = [c for c in self.containers if "terminated" in c.state]
        if self.containers and len(terminated) == len(self.containers):
            ok = all(c.state["terminated"].get("exitCode") == 0 for c in terminated)
            st["phase"] = "Succeeded" if ok else "Failed"
        elif all("running" in c.state or c.restarts for c in self.containers):
            st["phase"] = "Running"
        else:
            st["phase"] = "Pending"
        st["startTime"] = self.started_at
        ready = bool(cs) and all(c["ready"] for c in cs)
        conds: dict[str, Any] = {"conditions": copy.deepcopy(base.get("conditions") or [])}
        o.set_condition(conds, "PodScheduled", "True")
        o.set_condition(conds, "Initialized", "True")
        reason = "" if ready else "ContainersNotReady"
        msg = "" if ready else "containers with unready status: [" + " ".join(
            c["name"] for c in cs if not c["ready"]) + "]"
        o.set_condition(conds, "ContainersReady", "True" if ready else "False", reason, msg)
        o.set_condition(conds, "Ready", "True" if ready else "False", reason, msg)
        st["conditions"] = conds["conditions"]
        st["containerStatuses"] = cs
        return st

    async def _report_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            status = self.build_status()
            if status == self.last_reported:
                continue
            try:
                await self.runner.cp.call(
                    "PUT", "/v1/status/pods", json=status,
                    params={"namespace": self.namespace, "name": self.name, "uid": self.uid})
                self.last_reported = status
            except NotFound:
                return
            except ClusterError as e:
                log.warning("pod %s: status not reported (%s); retrying", self.key, e)
                await asyncio.sleep(1)
                self._dirty.set()

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*(c.stop() for c in self.containers), return_exceptions=True)
        for t in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        # Anything the containers left behind in the namespace goes with it.
        for pid in cmd.netns_pids(self.netns) if topology.exists(self.netns) else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        plan = self.runner.plan
        await asyncio.to_thread(topology.delete_pod, self.netns,
                                plan.node_netns(self.runner.node), veth_name(self.uid), self.ip)


class Runner:
    def __init__(self, cluster: str, node: str) -> None:
        self.paths = Paths(cluster)
        self.node = node
        self.cp = ControlPlaneClient(str(self.paths.socket))
        self.cfg: ClusterConfig
        self.plan: ClusterPlan
        self.table: dict[str, dict[str, Any]] = {}
        self.objs: dict[str, dict[tuple[str, str], dict[str, Any]]] = {r: {} for r in WATCHED}
        self.pods: dict[str, PodRuntime] = {}
        self.revision = 0
        self.dns: DnsServer | None = None
        self.dns_records = DnsRecords(zone="cluster.local", services={})
        self._rules_dirty = asyncio.Event()
        self._pod_lock = asyncio.Lock()
        self._removing: set[str] = set()
        self._background: set[asyncio.Task[Any]] = set()

    def _spawn(self, coro: Any) -> None:
        """Keep a reference so background work is not garbage-collected mid-flight."""
        t = asyncio.create_task(coro)
        self._background.add(t)
        t.add_done_callback(self._background.discard)

    # ---- lookups used by pods --------------------------------------------
    def command_for(self, pod: dict[str, Any], spec: dict[str, Any]
                    ) -> tuple[list[str], dict[str, str]] | images.ImageMissing:
        component = COMPONENT_IMAGES.get(images.image_key(spec.get("image", "")))
        if component is not None:
            return list(component), {}
        return images.resolve_command(spec, self.table, self.paths.samples, self.cfg.python)

    async def mesh_trusted_hops(self) -> int:
        """Istio's mesh-wide ``defaultConfig.gatewayTopology.numTrustedProxies`` from the
        ``istio`` ConfigMap in ``istio-system`` (key ``mesh``); read when the gateway starts."""
        try:
            found = await self.cp.call("GET", "/v1/objects/configmaps",
                                       params={"namespace": "istio-system", "name": "istio"})
        except (ClusterError, NotFound):
            return 0
        items = found.get("items") or []
        mesh = ((items[0].get("data") or {}).get("mesh") if items else None) or ""
        try:
            doc = yaml.safe_load(mesh) or {}
        except yaml.YAMLError as e:
            log.warning("ConfigMap istio-system/istio: key mesh is not YAML: %s", e)
            return 0
        default = doc.get("defaultConfig") if isinstance(doc, dict) else None
        if not isinstance(default, dict):
            return 0
        return trusted_hops_from_annotations({PROXY_CONFIG_ANNOTATION: yaml.safe_dump(default)})

    def services_of(self, pod: dict[str, Any]) -> list[str]:
        ns = pod["metadata"]["namespace"]
        return sorted(name for (sns, name), svc in self.objs["services"].items()
                      if sns == ns and o.map_matches(svc.get("spec", {}).get("selector"),
                                                     o.labels(pod)))

    def value_from(self, pod: dict[str, Any], ref: dict[str, Any]) -> str | None:
        if "fieldRef" in ref:
            path = ref["fieldRef"].get("fieldPath", "")
            values = {"metadata.name": pod["metadata"]["name"],
                      "metadata.namespace": pod["metadata"]["namespace"],
                      "metadata.uid": pod["metadata"].get("uid", ""),
                      "spec.nodeName": self.node,
                      "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
                      "status.podIP": pod["status"].get("podIP", ""),
                      "status.hostIP": pod["status"].get("hostIP", "")}
            if path.startswith("metadata.labels['"):
                return o.labels(pod).get(path[len("metadata.labels['"):-2])
            return values.get(path)
        for kind, resource in (("secretKeyRef", "secrets"), ("configMapKeyRef", "configmaps")):
            if kind in ref:
                obj = self.objs[resource].get((pod["metadata"]["namespace"], ref[kind]["name"]))
                if obj is None:
                    return None
                data = obj.get("data") or {}
                if resource == "secrets":
                    raw = data.get(ref[kind]["key"])
                    if raw is None:
                        return (obj.get("stringData") or {}).get(ref[kind]["key"])
                    return base64.b64decode(raw).decode(errors="replace")
                return data.get(ref[kind]["key"])
        return None

    async def event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        with contextlib.suppress(ClusterError, NotFound):
            await self.cp.call("POST", "/v1/events", json={
                "involved": obj, "type": type_, "reason": reason, "message": message})

    # ---- main loop ---------------------------------------------------------
    async def run(self) -> None:
        cfgd = await self._retry(lambda: self.cp.call("GET", "/v1/config"))
        self.cfg = ClusterConfig(**cfgd)
        self.plan = self.cfg.plan
        self.table = {**images.default_table(), **cfgd["image_table"]}
        if not topology.exists(self.plan.node_netns(self.node)):
            raise SystemExit(f"node namespace {self.plan.node_netns(self.node)} is missing; "
                             "run `zeromesh up` again")
        await self._start_dns()
        tasks = [asyncio.create_task(self._heartbeat()), asyncio.create_task(self._rules_loop()),
                 asyncio.create_task(self._watch())]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("runner %s stopping: stopping %d pods", self.node, len(self.pods))
        for t in tasks:
            t.cancel()
        await asyncio.gather(*(p.stop() for p in self.pods.values()), return_exceptions=True)
        if self.dns is not None:
            await self.dns.close()
        await self.cp.close()

    async def _retry(self, fn: Any) -> Any:
        delay = 0.1
        while True:
            try:
                return await fn()
            except ClusterError as e:
                log.warning("%s; retrying in %.1fs", e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)

    async def _start_dns(self) -> None:
        gw = str(self.plan.node_gateway(self.node))
        netns = self.plan.node_netns(self.node)

        def make() -> tuple[socket.socket, socket.socket]:
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            u.bind((gw, 53))
            t.bind((gw, 53))
            t.listen(128)
            return u, t
        udp, tcp = await asyncio.to_thread(call_in_netns, netns, make)
        self.dns = DnsServer(lambda: self.dns_records)
        await self.dns.start(udp, tcp)
        log.info("cluster DNS for %s on %s:53", self.node, gw)

    async def _heartbeat(self) -> None:
        while True:
            with contextlib.suppress(ClusterError, NotFound):
                await self.cp.call("POST", f"/v1/heartbeat/{self.node}")
            await asyncio.sleep(5)

    async def _watch(self) -> None:
        resources = ",".join(WATCHED)
        need_list = True
        while True:
            try:
                if need_list:
                    snap = await self.cp.call("GET", "/v1/snapshot", params={"resources": resources})
                    self.objs = {r: {(x["metadata"].get("namespace", ""), x["metadata"]["name"]): x
                                     for x in snap["items"].get(r, [])} for r in WATCHED}
                    self.revision = snap["revision"]
                    need_list = False
                    await self._sync_all()
                w = await self.cp.call("GET", "/v1/watch", params={
                    "since": str(self.revision), "resources": resources, "timeout": "25"},
                    timeout=40)
                if w.get("reset"):
                    need_list = True
                    continue
                for ev in w["events"]:
                    md = ev["object"]["metadata"]
                    key = (md.get("namespace", ""), md["name"])
                    if ev["type"] == "DELETED":
                        self.objs[ev["resource"]].pop(key, None)
                    else:
                        self.objs[ev["resource"]][key] = ev["object"]
                self.revision = w["revision"]
                if w["events"]:
                    await self._sync_all()
            except ClusterError as e:
                log.warning("watch interrupted (%s); keeping pods as they are, resyncing", e)
                need_list = True
                await asyncio.sleep(1)

    async def _sync_all(self) -> None:
        async with self._pod_lock:
            mine = {p["metadata"]["uid"]: p for p in self.objs["pods"].values()
                    if p.get("spec", {}).get("nodeName") == self.node
                    and p.get("status", {}).get("podIP")}
            starting: list[PodRuntime] = []
            for uid, pod in mine.items():
                rt = self.pods.get(uid)
                if o.is_terminating(pod):
                    if uid not in self._removing:
                        self._removing.add(uid)
                        self._spawn(self._remove(uid, pod))
                elif rt is None:
                    rt = PodRuntime(self, pod)
                    self.pods[uid] = rt
                    starting.append(rt)
                else:
                    rt.obj = pod
            # Sandboxes are independent: set them up side by side, not one after another.
            await asyncio.gather(*(self._start_pod(rt) for rt in starting))
            for uid in [u for u in self.pods if u not in mine]:
                rt = self.pods.pop(uid)
                self._spawn(rt.stop())
        self._rebuild_dns()
        self._rules_dirty.set()

    async def _start_pod(self, rt: PodRuntime) -> None:
        try:
            await rt.start()
        except NetnsError as e:
            log.error("pod %s: network setup failed: %s", rt.key, e)
            await self.event(rt.obj, "Warning", "FailedCreatePodSandBox", str(e))

    async def _remove(self, uid: str, pod: dict[str, Any]) -> None:
        rt = self.pods.pop(uid, None)
        if rt is not None:
            await rt.stop()
        else:
            await asyncio.to_thread(topology.delete_pod,
                                    self.plan.pod_netns(pod["metadata"]["namespace"],
                                                        pod["metadata"]["name"]),
                                    self.plan.node_netns(self.node), veth_name(uid))
        md = pod["metadata"]
        shutil.rmtree(self.paths.run / "proxies" / f"{md['namespace']}.{md['name']}", ignore_errors=True)
        with contextlib.suppress(ClusterError, NotFound):
            await self.cp.call("POST", "/v1/finalize-pod", json={
                "namespace": pod["metadata"]["namespace"], "name": pod["metadata"]["name"],
                "uid": uid})
        self._removing.discard(uid)

    def _rebuild_dns(self) -> None:
        services: dict[tuple[str, str], tuple[str, ...]] = {}
        for (ns, name), svc in self.objs["services"].items():
            ip = svc.get("spec", {}).get("clusterIP")
            if ip and ip != "None":
                services[(ns, name)] = (ip,)
            elif ip == "None":
                ep = self.objs["endpoints"].get((ns, name), {})
                services[(ns, name)] = tuple(a["ip"] for s in ep.get("subsets", [])
                                             for a in s.get("addresses", []))
        self.dns_records = DnsRecords(zone="cluster.local", services=services)

    def service_rules(self) -> list[servicerules.ServicePortRule]:
        rules = []
        for (ns, name), svc in self.objs["services"].items():
            spec = svc.get("spec", {})
            vip = spec.get("clusterIP")
            if not vip or vip == "None":
                continue
            ep = self.objs["endpoints"].get((ns, name), {})
            for sp in spec.get("ports") or []:
                eps: list[tuple[str, int]] = []
                for subset in ep.get("subsets", []):
                    port = _subset_port(subset, sp)
                    if port is None:
                        continue
                    eps += [(a["ip"], port) for a in subset.get("addresses", [])]
                rules.append(servicerules.ServicePortRule(
                    vip, int(sp["port"]), sp.get("protocol", "TCP"), eps))
        return rules

    async def _rules_loop(self) -> None:
        last = None
        netns = self.plan.node_netns(self.node)
        while True:
            await self._rules_dirty.wait()
            self._rules_dirty.clear()
            local = [rt.ip for rt in self.pods.values()]
            script = servicerules.render(self.service_rules(), local)
            if script == last:
                continue
            try:
                await asyncio.to_thread(cmd.nft, netns, script)
                last = script
            except NetnsError as e:
                log.error("service rules not applied on %s: %s", self.node, e)
                await asyncio.sleep(1)
                self._rules_dirty.set()


def _subset_port(subset: dict[str, Any], service_port: dict[str, Any]) -> int | None:
    ports = subset.get("ports") or []
    name = service_port.get("name", "")
    for p in ports:
        if p.get("name", "") == name and p.get("protocol", "TCP") == service_port.get("protocol", "TCP"):
            return int(p["port"])
    return None


async def run_runner(cluster: str, node: str) -> None:
    await Runner(cluster, node).run()

