"""What the control plane deploys for a waypoint Gateway, as istiod's deployment controller does (pure).

A Gateway API `Gateway` of class `istio-waypoint` with a valid HBONE listener
gets a ServiceAccount, a Deployment and a ClusterIP Service, all named after the
Gateway and owned by it (ownerReferences), with the labels istiod puts on them
(`manifests/charts/istio-control/istio-discovery/files/waypoint.yaml`). The pod
template depends on the Gateway's name only, so relabelling the Gateway (e.g.
`istio.io/waypoint-for`) never restarts the waypoint pod. This module decides;
`zeromesh.controlplane.controllers` writes the store.

Vocabulary: *managed* objects are the three kinds above; *owned* means an
ownerReference to a Gateway of that name; the Gateway's status gets
`addresses` (the Service's ClusterIP) and a `Programmed` condition.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from zeromesh.api.names import dns1035_label_error
from zeromesh.controlplane import objects as o
from zeromesh.controlplane.model import (
    DATAPLANE_MODE,
    GATEWAY_NAME_LABEL,
    HBONE_PORT,
    WAYPOINT_CLASS,
    waypoint_of,
)

Obj = dict[str, Any]

# ---- what others import (the waypoint runtime, the CLI, tests) ---------------------------------
WAYPOINT_IMAGE = "zeromesh/waypoint"
PROXY_CONTAINER = "istio-proxy"
STATUS_PORT = 15021                  # /healthz/ready in Istio's waypoint
METRICS_PORT = 15020
METRICS_PATH = "/stats/prometheus"   # what Istio's pod annotations advertise
GATEWAY_API_VERSION = "gateway.networking.k8s.io/v1"
ISTIO_GATEWAY_NAME_LABEL = "istio.io/gateway-name"          # the older selector label (Istio ≤ 1.21)
GATEWAY_CLASS_LABEL = "gateway.networking.k8s.io/gateway-class-name"
MANAGED_LABEL = "gateway.istio.io/managed"
MESH_CONTROLLER = "istio.io-mesh-controller"                # istiod's controller label for waypoints
PROGRAMMED = "Programmed"
# Store resources a waypoint gets, in the order they are created (Service first, so its
# ClusterIP exists by the time the Gateway's status is written).
MANAGED_RESOURCES = ("services", "deployments.apps", "serviceaccounts")


@dataclass(frozen=True, slots=True)
class Plan:
    """What a Gateway should have: the objects by resource, or why it gets none."""

    objects: Mapping[str, Obj]
    problem: str = ""


def is_waypoint_gateway(gw: Obj) -> bool:
    return gw.get("spec", {}).get("gatewayClassName") == WAYPOINT_CLASS


def plan_for(gw: Obj) -> Plan:
    """The managed objects of a valid waypoint Gateway; none (with the reason) otherwise."""
    md = gw["metadata"]
    if not is_waypoint_gateway(gw):
        return Plan({}, f"gatewayClassName is not {WAYPOINT_CLASS}")
    problems = list(waypoint_of(gw).problems)
    name_problem = dns1035_label_error(md["name"])
    if name_problem:
        problems.append(f"the name names the waypoint's Service and must be a DNS-1035 label: "
                        f"{name_problem}")
    if problems:
        return Plan({}, "; ".join(problems))
    return Plan({"services": service(gw), "deployments.apps": deployment(gw),
                 "serviceaccounts": service_account(gw)})


def owner_reference(gw: Obj) -> Obj:
    md = gw["metadata"]
    return {"apiVersion": GATEWAY_API_VERSION, "kind": "Gateway", "name": md["name"],
            "uid": md.get("uid", ""), "controller": True}


def gateway_owner(obj: Obj) -> str:
    """The waypoint Gateway a managed object or a waypoint pod belongs to, or "".

    Objects need a controlling ownerReference to a Gateway *and* the waypoint class label, so
    what another Gateway controller (the ingress, class `istio`) makes is never taken for ours."""
    md = obj.get("metadata", {})
    lbls = md.get("labels") or {}
    if lbls.get(GATEWAY_CLASS_LABEL) != WAYPOINT_CLASS:
        return ""
    if obj.get("kind") == "Pod":
        return str(lbls.get(GATEWAY_NAME_LABEL, ""))
    for ref in md.get("ownerReferences") or []:
        if ref.get("kind") == "Gateway" and ref.get("controller") \
                and str(ref.get("apiVersion", "")).startswith("gateway.networking.k8s.io/"):
            return str(ref.get("name", ""))
    return ""


def owned_by(obj: Obj, gateway_name: str) -> bool:
    """Made for the waypoint Gateway of that name; a stale uid (a Gateway deleted and re-created)
    still counts, as Kubernetes' garbage collector would have removed the object in between."""
    return gateway_owner(obj) == gateway_name


def _meta(gw: Obj, labels: Mapping[str, str]) -> Obj:
    md = gw["metadata"]
    return {"name": md["name"], "namespace": md["namespace"], "labels": dict(labels),
            "ownerReferences": [owner_reference(gw)]}


def _base_labels(name: str) -> dict[str, str]:
    return {GATEWAY_NAME_LABEL: name, GATEWAY_CLASS_LABEL: WAYPOINT_CLASS}


def selector(name: str) -> dict[str, str]:
    return {GATEWAY_NAME_LABEL: name}


def pod_labels(name: str) -> dict[str, str]:
    """Istio's waypoint pod labels, plus the older `istio.io/gateway-name`; `dataplane-mode: none`
    keeps the ztunnel from capturing the waypoint itself."""
    return {
        "sidecar.istio.io/inject": "false",
        DATAPLANE_MODE: "none",
        "service.istio.io/canonical-name": name,
        "service.istio.io/canonical-revision": "latest",
        GATEWAY_NAME_LABEL: name,
        ISTIO_GATEWAY_NAME_LABEL: name,
        GATEWAY_CLASS_LABEL: WAYPOINT_CLASS,
        MANAGED_LABEL: MESH_CONTROLLER,
    }


def service_account(gw: Obj) -> Obj:
    return {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": _meta(gw, _base_labels(gw["metadata"]["name"]))}


def pod_template(name: str) -> Obj:
    """Depends on the name alone: the same Gateway always yields the same pod-template-hash."""
    return {
        "metadata": {
            "labels": pod_labels(name),
            "annotations": {"istio.io/rev": "default", "prometheus.io/path": METRICS_PATH,
                            "prometheus.io/port": str(METRICS_PORT), "prometheus.io/scrape": "true"},
        },
        "spec": {
            "serviceAccountName": name,
            "containers": [{
                "name": PROXY_CONTAINER,
                "image": WAYPOINT_IMAGE,
                "ports": [
                    {"containerPort": HBONE_PORT, "name": "mesh", "protocol": "TCP"},
                    {"containerPort": STATUS_PORT, "name": "status-port", "protocol": "TCP"},
                    {"containerPort": METRICS_PORT, "name": "metrics", "protocol": "TCP"},
                ],
            }],
        },
    }


def deployment(gw: Obj) -> Obj:
    name = gw["metadata"]["name"]
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(gw, {**_base_labels(name), MANAGED_LABEL: MESH_CONTROLLER}),
        "spec": {"replicas": 1, "selector": {"matchLabels": selector(name)},
                 "template": pod_template(name)},
    }


def service(gw: Obj) -> Obj:
    """Ports as istiod derives them: status-port first, then the Gateway's HBONE listener."""
    name = gw["metadata"]["name"]
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _meta(gw, {**_base_labels(name), MANAGED_LABEL: MESH_CONTROLLER}),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(name),
            "ports": [
                {"name": "status-port", "port": STATUS_PORT, "targetPort": STATUS_PORT,
                 "protocol": "TCP", "appProtocol": "tcp"},
                {"name": "mesh", "port": HBONE_PORT, "targetPort": HBONE_PORT,
                 "protocol": "TCP", "appProtocol": "hbone"},
            ],
        },
    }


def updated(resource: str, live: Obj, want: Obj) -> Obj | None:
    """`live` with the fields we manage set as `want` says, or None when nothing differs.

    Labels others added stay (istiod applies server-side and only owns its own fields); a
    Service keeps its ClusterIP; a Deployment's generation moves when its spec does."""
    new = copy.deepcopy(live)
    md = new.setdefault("metadata", {})
    md["labels"] = {**(md.get("labels") or {}), **want["metadata"]["labels"]}
    md["ownerReferences"] = copy.deepcopy(want["metadata"]["ownerReferences"])
    if "spec" in want:
        spec = copy.deepcopy(want["spec"])
        if resource == "services":
            for k in ("clusterIP", "clusterIPs"):
                if k in (live.get("spec") or {}):
                    spec[k] = copy.deepcopy(live["spec"][k])
        if spec != live.get("spec"):
            new["spec"] = spec
            if resource == "deployments.apps":
                md["generation"] = int(md.get("generation", 1)) + 1
    return None if new == live else new


# ---- Gateway status ------------------------------------------------------------------------
def _waiting_reason(pod: Obj) -> str:
    for cs in pod.get("status", {}).get("containerStatuses") or []:
        reason = (cs.get("state") or {}).get("waiting", {}).get("reason")
        if reason:
            return str(reason)
    return str(pod.get("status", {}).get("phase") or "Pending")


def programmed(gw: Obj, plan: Plan, svc: Obj | None, dep: Obj | None, pods: Iterable[Obj],
               conflict: str = "") -> tuple[str, str, str]:
    """(status, reason, message) of the Gateway's Programmed condition (Gateway API reasons)."""
    md = gw["metadata"]
    where = f"{md['namespace']}/{md['name']}"
    if plan.problem:
        return "False", "Invalid", f"waypoint {where} is not deployed: {plan.problem}"
    if conflict:
        return "False", "Invalid", f"waypoint {where} is not deployed: {conflict}"
    if svc is None or not svc.get("spec", {}).get("clusterIP"):
        return "False", "AddressNotAssigned", f"the waypoint Service {where} has no ClusterIP yet"
    ready = int((dep or {}).get("status", {}).get("readyReplicas", 0) or 0)
    if dep is None or ready < 1:
        want = int((dep or {}).get("spec", {}).get("replicas", 1))
        live = sorted((p for p in pods if not o.is_terminating(p)), key=lambda p: p["metadata"]["name"])
        detail = "; ".join(f"pod {p['metadata']['name']}: {_waiting_reason(p)}" for p in live[:3])
        return ("False", "NoResources",
                f"the waypoint pod is not ready yet (Deployment {where}: {ready}/{want} ready"
                + (f"; {detail})" if detail else ")"))
    host = f"{md['name']}.{md['namespace']}.svc.cluster.local:{HBONE_PORT}"
    return "True", PROGRAMMED, f"Resource programmed, assigned to service(s) {host}"


def addresses(svc: Obj | None) -> list[Obj]:
    ip = (svc or {}).get("spec", {}).get("clusterIP")
    return [{"type": "IPAddress", "value": ip}] if ip and ip != "None" else []


def set_status(status: Obj, addrs: list[Obj], cond: tuple[str, str, str]) -> bool:
    """Write our part of a Gateway's status in place (other conditions untouched); True if changed."""
    changed = False
    if addrs and status.get("addresses") != addrs:
        status["addresses"] = addrs
        changed = True
    elif not addrs and "addresses" in status:
        del status["addresses"]
        changed = True
    return o.set_condition(status, PROGRAMMED, *cond) or changed

