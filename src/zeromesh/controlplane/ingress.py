"""What the control plane installs for the ingress gateway, as `istioctl install` does (pure).

The default profile of Istio runs one ingress gateway in `istio-system`: a
ServiceAccount, a Deployment whose pods carry `istio: ingressgateway` (what
Istio `Gateway` resources select) and a `LoadBalancer` Service. The local
cluster has no load balancer; its counterpart is the host's loopback address:
each Service port gets a loopback port (recorded in `cluster.json` as
`ingress_ports`, written into the Service as its `nodePort`) and the Service's
`status.loadBalancer.ingress` says `127.0.0.1`. The runner of the gateway pod's
node opens those host sockets. This module decides; the controllers write the
store (`Controllers._reconcile_ingress`).

Vocabulary: *managed* objects are the three kinds above, named `NAME` in
`NAMESPACE`; *owned* means they carry our `OWNER_LABEL` (there is no owner
object: the installation itself owns them, as Istio's operator labels its own);
*published* ports are Service ports reachable on the host's loopback.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from zeromesh.controlplane.model import DATAPLANE_MODE

Obj = dict[str, Any]

# ---- what others import (the runner, the gateway, the CLI, tests) ------------------------------
NAMESPACE = "istio-system"
NAME = "istio-ingressgateway"                               # the Deployment and the Service
SERVICE_ACCOUNT = "istio-ingressgateway-service-account"
IMAGE = "zeromesh/ingressgateway"
PROXY_CONTAINER = "istio-proxy"
GATEWAY_CLASS = "istio"                     # Gateway API Gateways of this class are served here too
SELECTOR = {"istio": "ingressgateway"}      # what Istio `Gateway` resources put in `selector`
LOOPBACK = "127.0.0.1"                      # the local counterpart of the load balancer's IP
OWNER_LABEL = "install.operator.istio.io/owning-resource"   # Istio's operator label, our value
OWNER = "zeromesh"
COMPONENT_LABEL = "operator.istio.io/component"
COMPONENT = "IngressGateways"
STATUS_PORT = 15021                          # /healthz/ready
METRICS_PORT = 15020
METRICS_PATH = "/stats/prometheus"


@dataclass(frozen=True, slots=True)
class ServicePort:
    """One port of the ingress Service: `port` is what Gateways listen on, `target` the pod's port;
    `published` ones get a host-loopback port (the gateway accepts on it itself)."""

    name: str
    port: int
    target: int
    published: bool = True


# Istio's ingress Service ports, in its order. `ClusterConfig.ingress_ports` is keyed by
# `str(port)` of the published ones: the gateway's traffic ports. The status port stays inside
# the cluster (no nodePort): nothing on the host would answer it.
SERVICE_PORTS = (
    ServicePort("status-port", STATUS_PORT, STATUS_PORT, published=False),
    ServicePort("http2", 80, 8080),
    ServicePort("https", 443, 8443),
)
PORT_KEYS = tuple(str(p.port) for p in SERVICE_PORTS if p.published)     # ("80", "443")
TARGET_PORT = {p.port: p.target for p in SERVICE_PORTS}
# Store resources the ingress gets, in the order they are created.
MANAGED_RESOURCES = ("serviceaccounts", "services", "deployments.apps")


def _common_labels() -> dict[str, str]:
    return {"app": NAME, **SELECTOR, "istio.io/rev": "default",
            OWNER_LABEL: OWNER, COMPONENT_LABEL: COMPONENT}


def pod_labels() -> dict[str, str]:
    """Istio's ingress gateway pod labels; `dataplane-mode: none` because the gateway speaks HBONE
    itself, so the ztunnel must not capture it."""
    return {**_common_labels(),
            "sidecar.istio.io/inject": "false",
            DATAPLANE_MODE: "none",
            "service.istio.io/canonical-name": NAME,
            "service.istio.io/canonical-revision": "latest"}


def selector() -> dict[str, str]:
    return {"app": NAME, **SELECTOR}


def _meta(name: str) -> Obj:
    return {"name": name, "namespace": NAMESPACE, "labels": _common_labels()}


def owned(obj: Obj) -> bool:
    """Made by this installation (a same-named object of the user's is left alone)."""
    lbls = obj.get("metadata", {}).get("labels") or {}
    return bool(lbls.get(OWNER_LABEL) == OWNER and lbls.get(COMPONENT_LABEL) == COMPONENT)


def namespace() -> Obj:
    """`istio-system`, if it is missing: unlabelled, so it is simply not enrolled in the mesh."""
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": NAMESPACE, "labels": {"kubernetes.io/metadata.name": NAMESPACE}},
            "spec": {}}


def service_account() -> Obj:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(SERVICE_ACCOUNT)}


def pod_template() -> Obj:
    """Fixed: the pod-template-hash only moves when this code does, never with the ports."""
    return {
        "metadata": {
            "labels": pod_labels(),
            "annotations": {"istio.io/rev": "default", "prometheus.io/path": METRICS_PATH,
                            "prometheus.io/port": str(METRICS_PORT), "prometheus.io/scrape": "true"},
        },
        "spec": {
            "serviceAccountName": SERVICE_ACCOUNT,
            "containers": [{
                "name": PROXY_CONTAINER,
                "image": IMAGE,
                "ports": [
                    {"containerPort": 8080, "name": "http2", "protocol": "TCP"},
                    {"containerPort": 8443, "name": "https", "protocol": "TCP"},
                    {"containerPort": STATUS_PORT, "name": "status-port", "protocol": "TCP"},
                    {"containerPort": METRICS_PORT, "name": "metrics", "protocol": "TCP"},
                ],
            }],
        },
    }


def deployment() -> Obj:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(NAME),
        "spec": {"replicas": 1, "selector": {"matchLabels": selector()}, "template": pod_template()},
    }


def service(ports: Mapping[str, int]) -> Obj:
    """`ports`: Service port (as a string) → loopback port; a port missing there gets no nodePort.
    kubectl then prints `15021/TCP,80:P/TCP,443:Q/TCP`."""
    spec_ports = []
    for p in SERVICE_PORTS:
        entry: Obj = {"name": p.name, "port": p.port, "targetPort": p.target, "protocol": "TCP"}
        if p.published and ports.get(str(p.port)):
            entry["nodePort"] = int(ports[str(p.port)])
        spec_ports.append(entry)
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _meta(NAME),
        "spec": {"type": "LoadBalancer", "selector": selector(), "ports": spec_ports},
        "status": {"loadBalancer": {"ingress": [{"ip": LOOPBACK}]}},
    }


def objects(ports: Mapping[str, int] | None) -> dict[str, Obj]:
    """What the cluster should hold by resource: everything when installed (`ports` given), else
    nothing (so what we made before is removed)."""
    if ports is None:
        return {}
    return {"serviceaccounts": service_account(), "services": service(ports),
            "deployments.apps": deployment()}


def updated(resource: str, live: Obj, want: Obj) -> Obj | None:
    """`live` with the fields we manage set as `want` says, or None when nothing differs.

    Labels others added stay; a Service keeps its ClusterIP and only its `loadBalancer` status is
    ours (the mesh's conditions stay); a Deployment's generation moves when its spec does."""
    new = copy.deepcopy(live)
    md = new.setdefault("metadata", {})
    md["labels"] = {**(md.get("labels") or {}), **want["metadata"]["labels"]}
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
    if resource == "services":
        new.setdefault("status", {})["loadBalancer"] = copy.deepcopy(want["status"]["loadBalancer"])
    return None if new == live else new


# ---- which gateways the ingress serves, and where (the CLI's ADDRESS column, the gateway) -------
def selects_ingress(istio_gateway: Mapping[str, Any]) -> bool:
    """An Istio `networking.istio.io` Gateway applies to the ingress pods when its selector is a
    subset of their labels; no selector at all applies to every gateway (istiod's rule)."""
    sel = (istio_gateway.get("spec") or {}).get("selector")
    if not sel:
        return True
    lbls = pod_labels()
    return all(lbls.get(k) == v for k, v in sel.items())


def serves_class(gateway_class: str | None) -> bool:
    """A Gateway API Gateway of this class is served by the ingress gateway."""
    return gateway_class == GATEWAY_CLASS


def published_ports(svc: Mapping[str, Any] | None) -> dict[int, int]:
    """Service port → loopback port for the traffic ports of the ingress Service (not status-port)."""
    out: dict[int, int] = {}
    for p in (svc or {}).get("spec", {}).get("ports") or []:
        if p.get("name") != "status-port" and p.get("nodePort") and p.get("port"):
            out[int(p["port"])] = int(p["nodePort"])
    return out


def loopback_address(gateway_ports: Iterable[int], svc: Mapping[str, Any] | None) -> str:
    """`127.0.0.1:PORT` of the first of `gateway_ports` the ingress Service publishes, else ""."""
    ingress = ((svc or {}).get("status", {}).get("loadBalancer") or {}).get("ingress") or []
    host = next((str(i["ip"]) for i in ingress if i.get("ip")), "")
    published = published_ports(svc)
    for port in gateway_ports:
        if host and port in published:
            return f"{host}:{published[port]}"
    return ""
