"""Controllers: Deployments make Pods, the scheduler binds them, Services get addresses and Endpoints,
waypoint Gateways get their Deployment, Service and ServiceAccount, and the ingress gateway is installed.

Each reconciler is idempotent and writes only when something differs, so a
change ripples through the queue and then settles. They run synchronously on
the store; the control plane's loop feeds them from store events.
"""

from __future__ import annotations

import copy
import ipaddress
import logging
from collections.abc import Callable, Mapping
from typing import Any

from zeromesh.controlplane import ingress
from zeromesh.controlplane import objects as o
from zeromesh.controlplane import waypoints as wp
from zeromesh.controlplane.model import GATEWAYS
from zeromesh.controlplane.store import Obj, SqliteStore
from zeromesh.local import naming
from zeromesh.local.plan import SERVICE_CIDR, ClusterPlan, allocate
from zeromesh.local.scheduling import NodeView, Unschedulable, schedule

log = logging.getLogger("zeromesh.controllers")

SERVICE_RESERVED = 9        # 10.96.0.1-9 stay free, as clusters keep .1 and .10 for themselves
DEPLOY_LABEL = "zeromesh.io/deployment"
Work = tuple[str, str, str]   # (task, namespace, name)


class Controllers:
    def __init__(self, store: SqliteStore, plan: ClusterPlan,
                 emit_event: Callable[[Obj, str, str, str], None],
                 ingress_ports: Mapping[str, int] | None = None) -> None:
        self.store = store
        self.plan = plan
        self.emit_event = emit_event
        self.queue: dict[Work, None] = {}
        self._pod_labels: dict[tuple[str, str], dict[str, str]] = {}
        # The ingress gateway: installed with these loopback ports, or (None) not installed. Checked
        # at every start, so a cluster restarted without it loses what an earlier run made.
        self.ingress_ports: dict[str, int] | None = None
        self.set_ingress(ingress_ports)
        # Waypoints stored before this controller last ran (a restart, an upgrade) are checked once.
        for gw in store.iter_raw(GATEWAYS):
            self.queue[("waypoint", gw["metadata"]["namespace"], gw["metadata"]["name"])] = None

    # ---- feeding -------------------------------------------------------
    def on_change(self, type_: str, resource: str, obj: Obj) -> None:
        md = obj["metadata"]
        ns, name = md.get("namespace", ""), md["name"]
        q = self.queue
        if resource == "services":
            q[("service", ns, name)] = None
        elif resource == "pods":
            q[("pod", ns, name)] = None
            # Only services selecting the pod before or after this change need new endpoints.
            old = self._pod_labels.pop((ns, name), {})
            new = {} if type_ == "DELETED" else dict(md.get("labels") or {})
            if type_ != "DELETED":
                self._pod_labels[(ns, name)] = new
            for svc in self.store.iter_raw("services", ns):
                sel = svc.get("spec", {}).get("selector")
                if o.map_matches(sel, old) or o.map_matches(sel, new):
                    q[("endpoints", ns, svc["metadata"]["name"])] = None
            for ref in md.get("ownerReferences") or []:
                if ref.get("kind") == "Deployment":
                    q[("deployment", ns, ref["name"])] = None
            if type_ == "DELETED" and ns:
                q[("namespace", "", ns)] = None
        elif resource == "deployments.apps":
            q[("deployment", ns, name)] = None
        elif resource == "nodes":
            q[("pending-pods", "", "")] = None
        elif resource == "namespaces":
            q[("namespace", "", name)] = None
        elif resource == GATEWAYS:
            q[("waypoint", ns, name)] = None
        # The ingress gateway's objects come back when deleted and are set right when edited.
        if (resource in ingress.MANAGED_RESOURCES and ns == ingress.NAMESPACE
                and name in (ingress.NAME, ingress.SERVICE_ACCOUNT)) \
                or (resource == "namespaces" and name == ingress.NAMESPACE):
            q[("ingress", "", "")] = None
        # A waypoint follows its objects: a ClusterIP, a ready replica, a deletion, a pod's state,
        # or a same-named object of someone else's going away.
        if resource in wp.MANAGED_RESOURCES or resource == "pods":
            owner = wp.gateway_owner(obj)
            if owner:
                q[("waypoint", ns, owner)] = None
            elif resource != "pods" and any(g["metadata"]["name"] == name
                                            for g in self.store.iter_raw(GATEWAYS, ns)):
                q[("waypoint", ns, name)] = None

    def drain(self, limit: int = 100000) -> int:
        """Run queued work until the queue is empty; returns how many items ran."""
        n = 0
        while self.queue and n < limit:
            item = next(iter(self.queue))
            del self.queue[item]
            n += 1
            task, ns, name = item
            try:
                getattr(self, f"_reconcile_{task.replace('-', '_')}")(ns, name)
            except Exception:
                log.exception("reconcile %s %s/%s failed", task, ns, name)
        return n

    def set_ingress(self, ports: Mapping[str, int] | None) -> None:
        """Install the ingress gateway with these loopback ports (Service port → host port), or
        remove what we installed (None); the next drain does it."""
        self.ingress_ports = dict(ports) if ports is not None else None
        self.queue[("ingress", "", "")] = None

    # ---- namespaces ------------------------------------------------------
    def _reconcile_namespace(self, _: str, name: str) -> None:
        nsobj = self.store.get("namespaces", "", name)
        if nsobj is None:
            return
        if not o.is_terminating(nsobj):
            if self.store.get("serviceaccounts", name, "default") is None:
                self.store.put("serviceaccounts", {
                    "apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": "default", "namespace": name, "uid": o.new_uid(),
                                 "creationTimestamp": o.now()}})
            lbls = nsobj["metadata"].setdefault("labels", {})
            if nsobj.get("status", {}).get("phase") != "Active" \
                    or lbls.get("kubernetes.io/metadata.name") != name:
                lbls["kubernetes.io/metadata.name"] = name   # as Kubernetes labels every namespace
                nsobj["status"] = {"phase": "Active"}
                self.store.put("namespaces", nsobj)
            return
        # Terminating: remove everything inside; pods go through their node first.
        remaining = 0
        for resource in list(self.store._by_resource):
            if resource in ("namespaces", "nodes"):
                continue
            for obj in self.store.list(resource, name):
                if resource == "pods":
                    remaining += 1
                    self.delete_pod(obj)
                else:
                    self.store.delete(resource, name, obj["metadata"]["name"])
        if remaining == 0 or not self.store.list("pods", name):
            self.store.delete("namespaces", "", name)
        elif nsobj.get("status", {}).get("phase") != "Terminating":
            nsobj["status"] = {"phase": "Terminating"}
            self.store.put("namespaces", nsobj)

    # ---- pods ------------------------------------------------------------
    def delete_pod(self, pod: Obj) -> None:
        """A bound pod is marked and its node's runner finishes the job; others go at once."""
        md = pod["metadata"]
        if o.is_terminating(pod):
            return
        node = pod.get("spec", {}).get("nodeName")
        node_obj = self.store.get("nodes", "", node) if node else None
        if node_obj is None or not _node_ready(node_obj):
            self.store.delete("pods", md["namespace"], md["name"])
            return
        md["deletionTimestamp"] = o.now()
        self.store.put("pods", pod)

    def _reconcile_pod(self, ns: str, name: str) -> None:
        pod = self.store.get("pods", ns, name)
        if pod is None or o.is_terminating(pod):
            return
        spec, status = pod.setdefault("spec", {}), pod.setdefault("status", {})
        changed = False
        if not spec.get("nodeName"):
            owner = _owner_uid(pod)
            counts: dict[str, int] = {}
            siblings: dict[str, int] = {}
            for p in self.store.iter_raw("pods"):
                n = p.get("spec", {}).get("nodeName")
                if n:
                    counts[n] = counts.get(n, 0) + 1
                    if owner and _owner_uid(p) == owner:
                        siblings[n] = siblings.get(n, 0) + 1
            views = [NodeView(name=n["metadata"]["name"], labels=o.labels(n), ready=_node_ready(n),
                              pods=counts.get(n["metadata"]["name"], 0),
                              same_owner_pods=siblings.get(n["metadata"]["name"], 0))
                     for n in self.store.iter_raw("nodes")]
            choice = schedule(spec.get("nodeSelector") or {}, views)
            if isinstance(choice, Unschedulable):
                status.setdefault("phase", "Pending")
                if o.set_condition(status, "PodScheduled", "False", "Unschedulable", choice.reason):
                    self.store.put("pods", pod)
                    self.emit_event(pod, "Warning", "FailedScheduling", choice.reason)
                return
            spec["nodeName"] = choice
            changed = True
            o.set_condition(status, "PodScheduled", "True")
            self.emit_event(pod, "Normal", "Scheduled",
                            f"Successfully assigned {ns}/{name} to {choice}")
        node = spec["nodeName"]
        if not status.get("podIP"):
            try:
                cidr = self.plan.node_pod_cidr(node)
            except ValueError:
                if o.set_condition(status, "PodScheduled", "False", "NodeNotFound",
                                   f"spec.nodeName: node {node!r} is not part of this cluster"):
                    self.store.put("pods", pod)
                return
            used = [p["status"]["podIP"] for p in self.store.iter_raw("pods")
                    if p.get("spec", {}).get("nodeName") == node and p.get("status", {}).get("podIP")]
            ip = allocate(cidr, used, reserved=1)
            if ip is None:
                if o.set_condition(status, "PodScheduled", "False", "AddressesExhausted",
                                   f"no free pod address left in {cidr} on {node}"):
                    self.store.put("pods", pod)
                return
            status["podIP"] = str(ip)
            status["podIPs"] = [{"ip": str(ip)}]
            status["hostIP"] = str(self.plan.node_underlay_ip(node))
            status.setdefault("phase", "Pending")
            changed = True
        if changed:
            self.store.put("pods", pod)

    def _reconcile_pending_pods(self, _: str, __: str) -> None:
        for pod in list(self.store.iter_raw("pods")):
            if not pod.get("spec", {}).get("nodeName"):
                md = pod["metadata"]
                self.queue[("pod", md["namespace"], md["name"])] = None

    # ---- deployments -----------------------------------------------------
    def _reconcile_deployment(self, ns: str, name: str) -> None:
        dep = self.store.get("deployments.apps", ns, name)
        owned = [copy.deepcopy(p) for p in self.store.iter_raw("pods", ns) if _owned_by(p, name, dep)]
        if dep is None or o.is_terminating(dep):
            for p in owned:
                self.delete_pod(p)
            return
        spec = dep.get("spec", {})
        template = spec.get("template", {})
        thash = naming.template_hash(template)
        live = [p for p in owned if not o.is_terminating(p)]
        current = [p for p in live if o.labels(p).get("pod-template-hash") == thash]
        for p in live:
            if o.labels(p).get("pod-template-hash") != thash:
                self.delete_pod(p)
        want = int(spec.get("replicas", 1))
        for p in sorted(current, key=lambda p: p["metadata"]["creationTimestamp"],
                        reverse=True)[: max(0, len(current) - want)]:
            self.delete_pod(p)
        for _ in range(want - len(current)):
            self._create_pod(dep, template, thash)
        # Status
        pods = [p for p in self.store.iter_raw("pods", ns) if _owned_by(p, name, dep)
                and not o.is_terminating(p)]
        updated = [p for p in pods if o.labels(p).get("pod-template-hash") == thash]
        ready = [p for p in pods if o.is_ready(p)]
        status = {
            "observedGeneration": dep["metadata"].get("generation", 1),
            "replicas": len(pods),
            "updatedReplicas": len(updated),
            "readyReplicas": len(ready),
            "availableReplicas": len(ready),
        }
        if len(pods) - len(ready):
            status["unavailableReplicas"] = len(pods) - len(ready)
        old = dep.get("status", {})
        conds = copy.deepcopy(old.get("conditions") or [])
        new_status = {**status, "conditions": conds}
        o.set_condition(new_status, "Available", "True" if len(ready) >= want else "False",
                        "MinimumReplicasAvailable" if len(ready) >= want
                        else "MinimumReplicasUnavailable")
        if {k: v for k, v in new_status.items() if k != "conditions"} != \
                {k: v for k, v in old.items() if k != "conditions"} or \
                _conds_key(new_status) != _conds_key(old):
            dep["status"] = new_status
            self.store.put("deployments.apps", dep)

    def _create_pod(self, dep: Obj, template: Obj, thash: str) -> None:
        md = dep["metadata"]
        ns = md["namespace"]
        for _ in range(20):
            pname = naming.pod_name(md["name"], thash, naming.random_suffix())
            if self.store.get("pods", ns, pname) is None:
                break
        tmeta = template.get("metadata", {})
        pod_labels = dict(tmeta.get("labels") or {})
        pod_labels["pod-template-hash"] = thash
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": pname, "namespace": ns, "uid": o.new_uid(),
                "creationTimestamp": o.now(), "labels": pod_labels,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": md["name"], "uid": md.get("uid", ""),
                                     "controller": True, "blockOwnerDeletion": True}],
            },
            "spec": copy.deepcopy(template.get("spec", {})),
            "status": {"phase": "Pending"},
        }
        if tmeta.get("annotations"):
            pod["metadata"]["annotations"] = dict(tmeta["annotations"])
        self.store.put("pods", pod)

    # ---- waypoints -------------------------------------------------------
    def _reconcile_waypoint(self, ns: str, name: str) -> None:
        """Create, update or remove what a waypoint Gateway owns, then say so in its status.

        Status is written only when it changes, and only once the objects are in place (their
        own changes queue this again), so a reconcile never retriggers itself endlessly."""
        gw = self.store.get(GATEWAYS, ns, name)
        nsobj = self.store.get("namespaces", "", ns)
        if gw is not None and (not wp.is_waypoint_gateway(gw) or nsobj is None
                               or o.is_terminating(nsobj)):
            gw = None          # another class (e.g. the ingress) is not ours; a dying namespace gets nothing
        plan = wp.plan_for(gw) if gw is not None else wp.Plan({}, "deleted")
        changed = False
        conflicts: list[str] = []
        for resource in wp.MANAGED_RESOURCES:
            live = self.store.get(resource, ns, name)
            want = plan.objects.get(resource)
            if live is not None and not wp.owned_by(live, name):
                if want is not None and resource != "serviceaccounts":   # a user's SA is simply used
                    conflicts.append(f"{live.get('kind', resource)} {ns}/{name} already exists and "
                                     "is not owned by this Gateway")
                continue
            if want is None:
                if live is not None:
                    self.store.delete(resource, ns, name)
                    changed = True
            elif live is None:
                obj = copy.deepcopy(want)
                obj["metadata"].update(uid=o.new_uid(), creationTimestamp=o.now())
                if resource == "deployments.apps":
                    obj["metadata"]["generation"] = 1
                self.store.put(resource, obj)
                changed = True
            else:
                new = wp.updated(resource, live, want)
                if new is not None:
                    self.store.put(resource, new)
                    changed = True
        if gw is None or changed:
            return
        svc = self.store.get("services", ns, name)
        dep = self.store.get("deployments.apps", ns, name)
        mine = not conflicts
        pods = [p for p in self.store.iter_raw("pods", ns) if _owned_by(p, name, dep)] if mine else []
        cond = wp.programmed(gw, plan, svc if mine else None, dep if mine else None, pods,
                             "; ".join(conflicts))
        if wp.set_status(gw.setdefault("status", {}), wp.addresses(svc) if mine else [], cond):
            self.store.put(GATEWAYS, gw)

    # ---- the ingress gateway ----------------------------------------------
    def _reconcile_ingress(self, _: str, __: str) -> None:
        """Create, update or remove the ingress gateway's objects in istio-system.

        Objects of the same name that we did not make are left alone (and logged), as is a
        namespace being deleted; its removal queues this again and the namespace is recreated."""
        want = ingress.objects(self.ingress_ports)
        ns = ingress.NAMESPACE
        nsobj = self.store.get("namespaces", "", ns)
        if want and nsobj is None:
            obj = ingress.namespace()
            obj["metadata"].update(uid=o.new_uid(), creationTimestamp=o.now())
            self.store.put("namespaces", obj)
        elif nsobj is not None and o.is_terminating(nsobj):
            return
        for resource in ingress.MANAGED_RESOURCES:
            wanted = want.get(resource)
            name = ingress.SERVICE_ACCOUNT if resource == "serviceaccounts" else ingress.NAME
            live = self.store.get(resource, ns, name)
            if live is not None and not ingress.owned(live):
                if wanted is not None:
                    log.warning("ingress gateway: %s %s/%s already exists and was not made by "
                                "zeromesh; leaving it alone", live.get("kind", resource), ns, name)
                continue
            if wanted is None:
                if live is not None:
                    self.store.delete(resource, ns, name)
            elif live is None:
                obj = copy.deepcopy(wanted)
                obj["metadata"].update(uid=o.new_uid(), creationTimestamp=o.now())
                if resource == "deployments.apps":
                    obj["metadata"]["generation"] = 1
                self.store.put(resource, obj)
            else:
                new = ingress.updated(resource, live, wanted)
                if new is not None:
                    self.store.put(resource, new)

    # ---- services and endpoints -----------------------------------------
    def _reconcile_service(self, ns: str, name: str) -> None:
        svc = self.store.get("services", ns, name)
        if svc is None:
            self.store.delete("endpoints", ns, name)
            return
        spec = svc.setdefault("spec", {})
        if not spec.get("clusterIP"):
            used = [s.get("spec", {}).get("clusterIP") for s in self.store.iter_raw("services")]
            ip = allocate(SERVICE_CIDR, [u for u in used if u and u != "None"],
                          reserved=SERVICE_RESERVED)
            if ip is None:
                log.error("service range %s exhausted; %s/%s has no address", SERVICE_CIDR, ns, name)
                return
            spec["clusterIP"] = str(ip)
            spec["clusterIPs"] = [str(ip)]
            self.store.put("services", svc)
        self._reconcile_endpoints(ns, name)

    def _reconcile_endpoints(self, ns: str, name: str) -> None:
        svc = self.store.get("services", ns, name)
        if svc is None:
            return
        selector = svc.get("spec", {}).get("selector")
        if not selector:
            return      # selector-less services keep user-managed Endpoints
        subsets = endpoint_subsets(svc, list(self.store.iter_raw("pods", ns)))
        old = self.store.get("endpoints", ns, name)
        if old is not None and old.get("subsets", []) == subsets:
            return
        ep = old or {"apiVersion": "v1", "kind": "Endpoints",
                     "metadata": {"name": name, "namespace": ns, "uid": o.new_uid(),
                                  "creationTimestamp": o.now(),
                                  "labels": dict(o.labels(svc))}}
        ep["subsets"] = subsets
        self.store.put("endpoints", ep)


def endpoint_subsets(svc: Obj, pods: list[Obj]) -> list[Obj]:
    """Endpoints subsets as Kubernetes builds them; named target ports resolve per pod."""
    spec = svc.get("spec", {})
    groups: dict[tuple[tuple[str, int, str], ...], dict[str, list[Obj]]] = {}
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        ip = pod.get("status", {}).get("podIP")
        if not ip or o.is_terminating(pod) or not o.map_matches(spec.get("selector"), o.labels(pod)):
            continue
        ports = []
        for sp in spec.get("ports") or []:
            target = resolve_target_port(sp, pod)
            if target is None:
                continue
            ports.append((sp.get("name", ""), target, sp.get("protocol", "TCP")))
        key = tuple(ports)
        g = groups.setdefault(key, {"addresses": [], "notReadyAddresses": []})
        addr = {"ip": ip, "nodeName": pod["spec"].get("nodeName", ""),
                "targetRef": {"kind": "Pod", "name": pod["metadata"]["name"],
                              "namespace": pod["metadata"]["namespace"],
                              "uid": pod["metadata"].get("uid", "")}}
        g["addresses" if o.is_ready(pod) else "notReadyAddresses"].append(addr)
    subsets = []
    for ports_key, g in groups.items():
        subset: dict[str, Any] = {}
        if g["addresses"]:
            subset["addresses"] = g["addresses"]
        if g["notReadyAddresses"]:
            subset["notReadyAddresses"] = g["notReadyAddresses"]
        subset["ports"] = [{**({"name": n} if n else {}), "port": p, "protocol": pr}
                           for n, p, pr in ports_key]
        subsets.append(subset)
    return subsets


def resolve_target_port(service_port: Obj, pod: Obj) -> int | None:
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    for c in pod.get("spec", {}).get("containers") or []:
        for cp in c.get("ports") or []:
            if cp.get("name") == target:
                return int(cp["containerPort"])
    return None


def _node_ready(node: Obj) -> bool:
    c = o.condition(node, "Ready")
    return bool(c and c.get("status") == "True")


def _owner_uid(pod: Obj) -> str:
    for ref in pod["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid", ""))
    return ""


def _owned_by(pod: Obj, dep_name: str, dep: Obj | None) -> bool:
    for ref in pod["metadata"].get("ownerReferences") or []:
        if ref.get("kind") == "Deployment" and ref.get("name") == dep_name:
            return dep is None or not ref.get("uid") or ref.get("uid") == dep["metadata"].get("uid")
    return False


def _conds_key(status: Obj) -> list[tuple[Any, ...]]:
    return [(c.get("type"), c.get("status"), c.get("reason")) for c in status.get("conditions") or []]


def ip_in(cidr: str, ip: str) -> bool:
    return ipaddress.IPv4Address(ip) in ipaddress.IPv4Network(cidr)
